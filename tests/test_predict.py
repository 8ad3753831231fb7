"""Predictor inputs and the overlay drawing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_engine import tiny, tiny_builder  # noqa: F401 - the fixture registers the stand-in model

from fcis.engine import InputError, save_checkpoint
from fcis.inference import Predictor
from fcis.visualize import draw_predictions


@pytest.fixture
def checkpoint(tmp_path, tiny):  # noqa: F811
    model = tiny_builder(num_classes=2)
    path = tmp_path / "model.pt"
    save_checkpoint(path, model=model.state_dict(), model_name=tiny, model_config=model.config.to_dict(),
                    dataset={"class_names": ["cat", "dog"], "label_to_cat_id": {1: 17, 2: 18}})
    return path


def test_predictor_accepts_path_pil_numpy_tensor(tmp_path, checkpoint):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    path = tmp_path / "img.png"
    Image.fromarray(array).save(path)
    predictor = Predictor.from_checkpoint(checkpoint, score_threshold=0.0)
    inputs = [path, str(path), Image.fromarray(array), array, torch.from_numpy(array).permute(2, 0, 1).float() / 255]
    preds = [predictor.predict(x) for x in inputs]
    first = preds[0]
    assert first["masks"].dtype == torch.bool and first["masks"].shape == (2, 40, 50)
    assert first["boxes"].shape == (2, 4) and first["labels"].tolist() == [1, 2]
    assert first["class_names"] == ["cat", "dog"]
    for p in preds[1:]:
        assert torch.allclose(p["scores"], first["scores"], atol=1e-6)
        assert (p["masks"] != first["masks"]).float().mean() < 0.01
    assert predictor.label_to_cat_id == {1: 17, 2: 18}

    high = Predictor.from_checkpoint(checkpoint, score_threshold=1.01).predict(array)
    assert len(high["scores"]) == 0 and high["masks"].shape == (0, 40, 50) and high["class_names"] == []

    many = predictor.predict_many([path, array], progress=False)
    assert len(many) == 2


def test_predictor_rejects_bad_inputs(tmp_path, checkpoint):
    predictor = Predictor.from_checkpoint(checkpoint)
    with pytest.raises(InputError, match="nope.png"):
        predictor.predict(tmp_path / "nope.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(InputError, match="text.png"):
        predictor.predict(tmp_path / "text.png")
    with pytest.raises(InputError, match="3xHxW"):
        predictor.predict(torch.zeros(1, 10, 10))


def test_overlay_changes_pixels_where_masks_are():
    image = np.zeros((60, 90, 3), dtype=np.uint8)
    masks = torch.zeros(2, 60, 90, dtype=torch.bool)
    masks[0, 5:15, 5:20] = True
    masks[1, 40:55, 50:80] = True
    pred = {"boxes": torch.tensor([[5.0, 5, 20, 15], [50, 40, 80, 55]]), "labels": torch.tensor([1, 2]),
            "scores": torch.tensor([0.93, 0.5]), "masks": masks}
    out = draw_predictions(image, pred, class_names=["circle", "square"])
    assert isinstance(out, Image.Image) and out.size == (90, 60)
    px = np.asarray(out)
    assert (px[8:12, 8:17] != 0).any(-1).all()          # inside mask 0: coloured
    assert (px[48:53, 53:77] != 0).any(-1).all()        # inside mask 1: coloured
    assert not px[24:38].any() and not px[40:, :40].any()  # away from masks, boxes and labels: untouched
    assert not np.array_equal(px[10, 10], px[50, 60])   # distinct colours per instance

    no_boxes = np.asarray(draw_predictions(image, pred, draw_boxes=False))
    assert np.array_equal(no_boxes.any(-1), masks.any(0).numpy())  # exactly the mask pixels
    empty = draw_predictions(image, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "scores": torch.zeros(0),
                                     "masks": torch.zeros(0, 60, 90, dtype=torch.bool)})
    assert np.array_equal(np.asarray(empty), image)
