"""Recipes (fcis.engine.recipe), anchors fitted to the data (fcis.engine.anchor_fit) and the data
report (fcis.engine.inspect_data): exact coverage, recipe selection, warm-up scaling."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou

from fcis.engine import TrainConfig
from fcis.engine.anchor_fit import anchor_coverage, best_iou, fit_anchors, resized_size, window_coverage
from fcis.engine.recipe import SCRATCH_NORM, resolve_recipe, scratch_warmup
from fcis.engine.run_plan import plan_resumed_run
from fcis.engine.schedule import lr_factor_fn

# --- anchors -------------------------------------------------------------------------------------


def _rpn_best_iou(boxes: torch.Tensor, padded_hw: tuple[int, int], sizes, ratios, stride=16) -> torch.Tensor:
    """The reference: every anchor torchvision's RPN makes for one padded image, then box_iou."""
    gen = AnchorGenerator(sizes=(tuple(sizes),), aspect_ratios=(tuple(ratios),))
    h, w = padded_hw
    images = ImageList(torch.zeros(1, 3, h, w), [(h, w)])
    feats = [torch.zeros(1, 1, h // stride, w // stride)]
    anchors = gen(images, feats)[0]
    return box_iou(boxes, anchors).amax(dim=1)


def test_best_iou_equals_the_whole_grid():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 200, size=(300, 2))
    wh = np.exp(rng.uniform(math.log(8), math.log(250), size=(300, 2)))
    boxes = np.concatenate([xy, np.minimum(xy + wh, [320, 256])], axis=1)
    sizes, ratios = (24, 48, 96, 192), (0.5, 1.0, 2.0)
    padded = np.tile([256, 320], (len(boxes), 1))
    ours = best_iou(boxes, padded, [(16, sizes, ratios)])
    ref = _rpn_best_iou(torch.as_tensor(boxes, dtype=torch.float32), (256, 320), sizes, ratios)
    np.testing.assert_allclose(ours, ref.double().numpy(), atol=1e-6)


def test_coverage_of_a_known_box_set():
    padded = np.tile([64, 64], (3, 1))
    boxes = np.array([[0, 0, 32, 32],      # exactly the anchor at grid point (16, 16): IoU 1
                      [8, 8, 40, 40],      # 8 px off the grid on both axes: 24²/(2·32² - 24²) = 0.391
                      [16, 0, 48, 32]],    # the anchor at (32, 16): IoU 1
                     dtype=np.float64)
    iou = best_iou(boxes, padded, [(16, (32,), (1.0,))])
    np.testing.assert_allclose(iou, [1.0, 576 / 1472, 1.0], rtol=1e-6)
    assert anchor_coverage(boxes, padded, [(16, (32,), (1.0,))], 0.7) == pytest.approx(2 / 3)
    assert anchor_coverage(boxes[:0], padded[:0], [(16, (32,), (1.0,))], 0.7) == 1.0


def test_fit_covers_small_boxes_better_than_the_paper_anchors():
    rng = np.random.default_rng(1)
    s = np.exp(rng.uniform(math.log(40), math.log(110), size=400))
    r = np.exp(rng.uniform(-0.3, 0.3, size=400))
    w, h = s / np.sqrt(r), s * np.sqrt(r)
    xy = rng.uniform(0, 120, size=(400, 2))
    boxes = np.stack([xy[:, 0], xy[:, 1], xy[:, 0] + w, xy[:, 1] + h], axis=1)
    padded = np.tile([256, 256], (400, 1))
    sizes, ratios = fit_anchors(boxes, padded, num_sizes=4, default_ratios=(0.5, 1.0, 2.0), stride=16, fg_iou=0.7)
    assert len(sizes) == 4 and len(ratios) == 3 and list(sizes) == sorted(sizes)
    fitted = anchor_coverage(boxes, padded, [(16, sizes, ratios)], 0.7)
    paper = anchor_coverage(boxes, padded, [(16, (64, 128, 256, 512), (0.5, 1.0, 2.0))], 0.7)
    assert fitted > paper + 0.2
    # a given size ladder is kept; only the ratios are chosen
    kept, _ = fit_anchors(boxes, padded, num_sizes=4, default_ratios=(0.5, 1.0, 2.0), stride=16, fg_iou=0.7,
                          fixed_sizes=(16, 32, 64, 128))
    assert kept == (16, 32, 64, 128)


def test_resize_and_window_coverage():
    assert resized_size(480, 640, 600, 1000) == (600, 800)
    assert resized_size(100, 1000, 600, 1000) == (100, 1000)
    boxes = np.array([[0, 0, 66, 10], [0, 0, 20, 20]], dtype=np.float64)   # ideal windows 100 and ~30
    assert window_coverage(boxes, (100.0,), 0.66) == pytest.approx(0.5)


# --- recipes -------------------------------------------------------------------------------------

def test_auto_recipe_from_scratch_and_from_imagenet():
    cfg, rec = resolve_recipe(TrainConfig(iterations=1000, batch_size=2), pretrained=False, num_train_images=10)
    assert (cfg.optimizer, cfg.lr, cfg.warmup_iters, cfg.lr_steps) == ("adamw", 1e-3, 50, (0.75, 0.92))
    assert rec.sources["optimizer"] == "recipe" and rec.sources["iterations"] == "given"
    assert rec.model == {"cls_loss_balance": True, "norm": SCRATCH_NORM}
    cfg, rec = resolve_recipe(TrainConfig(iterations=1000, batch_size=2), pretrained=True, num_train_images=10,
                              world_size=4)
    assert rec.model == {}   # the paper's losses stay
    assert cfg.optimizer == "sgd" and cfg.lr == pytest.approx(5e-4 * 8) and cfg.warmup_iters == 50
    assert cfg.lr_steps == pytest.approx((2 / 3,))
    cfg, _ = resolve_recipe(TrainConfig(iterations=30000), pretrained=True, num_train_images=10)
    assert cfg.warmup_iters == 250 and not cfg.unresolved()


def test_given_values_win_and_the_rate_follows_the_optimizer():
    cfg, rec = resolve_recipe(TrainConfig(iterations=100, batch_size=2, optimizer="sgd", warmup_iters=7),
                              pretrained=False, num_train_images=10)
    assert cfg.optimizer == "sgd" and cfg.lr == pytest.approx(1e-3) and cfg.warmup_iters == 7
    assert rec.sources["warmup_iters"] == "given" and any("optimizer sgd given" in n for n in rec.notes)
    cfg, _ = resolve_recipe(TrainConfig(iterations=100, lr=0.05), pretrained=False, num_train_images=10)
    assert cfg.lr == 0.05 and cfg.optimizer == "adamw"


def test_warmup_scales_with_the_run():
    assert [scratch_warmup(n) for n in (2, 100, 1000, 30000)] == [0, 5, 50, 500]
    for n in (2, 40, 1000, 100000):
        assert scratch_warmup(n) <= 0.05 * n + 0.5
    cfg, _ = resolve_recipe(TrainConfig(iterations=200), pretrained=False, num_train_images=10)
    f = lr_factor_fn(cfg)
    assert f(0) == pytest.approx(0.1) and f(10) == pytest.approx(1.0) and f(160) == pytest.approx(0.1)


def test_paper_voc_recipe():
    with pytest.raises(ValueError, match="ImageNet"):
        resolve_recipe(TrainConfig(recipe="paper-voc"), pretrained=False, num_train_images=10)
    fields = {"ohem", "anchor_sizes", "aspect_ratios", "min_size", "max_size"}
    cfg, rec = resolve_recipe(TrainConfig(recipe="paper-voc", batch_size=1), pretrained=True,
                              num_train_images=5623, world_size=4, model_fields=fields)
    assert cfg.iterations == 22 * math.ceil(2 * 5623 / 4)
    assert cfg.lr == pytest.approx(5e-4 * 4) and cfg.optimizer == "sgd" and cfg.lr_steps == pytest.approx((14 / 22,))
    assert rec.model["ohem"] is False and rec.model["anchor_sizes"] == (128, 256, 512)
    assert any("rpn_min_size=16" in n for n in rec.notes)   # not a field of this model: recorded
    cfg, rec = resolve_recipe(TrainConfig(recipe="paper-coco", batch_size=1), pretrained=True,
                              num_train_images=1000, world_size=8)
    assert cfg.iterations == 8 * 250 and cfg.warmup_iters == 250 and cfg.warmup_factor == 0.1
    assert rec.model["ohem"] is True and rec.model["rpn_min_size"] == 2
    with pytest.raises(ValueError, match="FCIS"):
        resolve_recipe(TrainConfig(recipe="paper-coco"), pretrained=True, num_train_images=10,
                       model_fields={"anchor_sizes"})


def test_resume_takes_the_recipe_values_from_the_checkpoint():
    old, _ = resolve_recipe(TrainConfig(iterations=100), pretrained=False, num_train_images=10)
    plan = plan_resumed_run(TrainConfig(iterations=200), {"train_config": old.to_dict()})
    assert plan.cfg.iterations == 200 and plan.cfg.warmup_iters == old.warmup_iters and plan.cfg.lr == old.lr


# --- runs and the data report ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from fcis.data import make_shapes

    return make_shapes(tmp_path_factory.mktemp("shapes"), num_images=6, seed=4, image_size=(64, 80),
                       max_objects=3, min_object_size=16, val_fraction=0.0)


def test_inspect_report_counts_and_picture(tiny, tmp_path, capsys):
    from fcis.cli.main import main
    from fcis.data import CocoInstances
    from fcis.engine.inspect_data import inspect_dataset
    from fcis.models import FCISConfig

    data = json.loads(tiny["train"].read_text())
    report = inspect_dataset(CocoInstances(tiny["train"]), FCISConfig(num_classes=3, min_size=64, max_size=80))
    assert report.num_images == len(data["images"]) and report.num_instances == len(data["annotations"])
    assert sum(report.per_class.values()) == len(data["annotations"])
    with_objects = {a["image_id"] for a in data["annotations"]}
    assert report.empty_images == len(data["images"]) - len(with_objects)
    expect = sorted(math.sqrt(a["bbox"][2] * a["bbox"][3]) for a in data["annotations"])  # 64x80: no resize
    np.testing.assert_allclose(sorted(report.sizes), expect, rtol=1e-6)
    assert report.summary()["problems"] == []
    png = tmp_path / "report.png"
    assert main(["inspect-data", str(tiny["train"]), "--model", "fcis_resnet18", "--min-size", "64",
                 "--max-size", "80", "--output", str(png)]) == 0
    from PIL import Image

    assert Image.open(png).size[0] > 100
    assert "without objects" in capsys.readouterr().out


def test_train_paper_voc_two_iterations(tiny, tmp_path, capsys):
    from fcis.cli.main import main

    args = ["train", "--model", "fcis_resnet18", "--train", str(tiny["train"]), "--output", str(tmp_path / "run"),
            "--iterations", "2", "--min-size", "64", "--max-size", "80", "--workers", "0", "--no-progress",
            "--recipe", "paper-voc", "--device", "cpu"]
    assert main(args) == 2
    assert "ImageNet" in capsys.readouterr().err
    assert main(args + ["--allow-random-init"]) == 0
    run = json.loads((tmp_path / "run" / "config.json").read_text())
    assert run["recipe"]["name"] == "paper-voc" and run["model_config"]["ohem"] is False
    assert run["model_config"]["anchor_sizes"] == [128, 256, 512] and run["train_config"]["optimizer"] == "sgd"
    assert run["data"]["images"] == 6
    assert "recipe paper-voc" in capsys.readouterr().err


def test_bare_train_fits_anchors_and_records_them(tiny, tmp_path):
    from fcis.engine import train

    cfg = TrainConfig(iterations=1, workers=0, min_size=64, max_size=80, device="cpu")
    train("fcis_resnet18", tiny["train"], None, tmp_path / "run", cfg, progress=False)
    run = json.loads((tmp_path / "run" / "config.json").read_text())
    assert run["recipe"]["name"] == "auto" and run["train_config"]["optimizer"] == "adamw"
    assert run["model_config"]["cls_loss_balance"] is True and run["model_config"]["ohem"] is True
    assert run["recipe"]["model"] == {"cls_loss_balance": True, "norm": SCRATCH_NORM}
    assert run["model_config"]["norm"] == SCRATCH_NORM
    assert run["anchors"]["source"] == "fitted"
    assert run["model_config"]["anchor_sizes"] == run["anchors"]["fields"]["anchor_sizes"]
    assert run["anchors"]["coverage"] >= run["anchors"]["default_coverage"]
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ckpt["anchors"]["fields"]["anchor_sizes"] == run["anchors"]["fields"]["anchor_sizes"]
    assert run["model_config"]["head_stride"] == run["head_stride"]["stride"]    # chosen and recorded
    assert ckpt["head_stride"] == run["head_stride"]


def test_inspect_reports_the_loaders_problems(tiny, tmp_path):
    import warnings

    from fcis.data import CocoInstances
    from fcis.engine.inspect_data import inspect_dataset
    from fcis.models import FCISConfig

    data = json.loads(tiny["train"].read_text())
    data["images"].append({"id": 999, "file_name": "images/missing.png", "height": 64, "width": 80})
    bad = dict(data["annotations"][0], id=10**6, bbox=[1, 2, 3])
    data["annotations"].append(bad)
    path = tiny["train"].parent / "broken.json"
    path.write_text(json.dumps(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = CocoInstances(path)
    report = inspect_dataset(ds, FCISConfig(num_classes=3, min_size=64, max_size=80), check_images=True)
    text = " ".join(report.problems)
    assert "annotation 1000000" in text and "missing.png: image file not found" in text
    assert report.empty_images >= 1 and "problems (2)" in report.describe()


def test_balanced_class_loss():
    from fcis.models.fcis.losses import reduce_losses

    cls = torch.tensor([4.0, 1.0, 1.0, 1.0, 3.0])
    labels = torch.tensor([2, 0, 0, 0, 1])
    zeros = torch.zeros(5)
    plain = reduce_losses(cls, zeros, zeros, labels, (1.0, 1.0, 1.0))["loss_classifier"]
    balanced = reduce_losses(cls, zeros, zeros, labels, (1.0, 1.0, 1.0), balance_cls=True)["loss_classifier"]
    assert plain.item() == pytest.approx(10 / 5) and balanced.item() == pytest.approx((3.5 + 1.0) / 2)
    only_bg = reduce_losses(cls[1:4], zeros[:3], zeros[:3], labels[1:4], (1.0, 1.0, 1.0), balance_cls=True)
    assert only_bg["loss_classifier"].item() == pytest.approx(1.0)
