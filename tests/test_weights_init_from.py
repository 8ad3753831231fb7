"""``fcis train --init-from``: a model for the user's classes started from a trained one
(fcis/weights/init_from.py and its use in fcis/engine/run_state.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from fcis.cli.main import main
from fcis.data.shapes import make_shapes
from fcis.engine.checkpoint import save_checkpoint
from fcis.models import BUILDERS, fcis_resnet18
from fcis.weights.errors import WeightsFileError
from fcis.weights.init_from import (
    carried_fields,
    inherited_config,
    init_model,
    load_init_source,
    match_classes,
    normalise_class_name,
    parse_class_map,
)

SMALL = {"min_size": 128, "max_size": 160, "anchor_sizes": (32, 64, 128), "rpn_post_nms_top_n_test": 40,
         "rpn_pre_nms_top_n_test": 400}


def _photo(shared: Path | None) -> torch.Tensor:
    """A real photo (PennFudanPed, when ../shared/data is there) or a synthetic image, (3, H, W) in [0, 1]."""
    if shared is not None:
        from PIL import Image

        path = sorted((shared / "PennFudanPed" / "PNGImages").glob("*.png"))[0]
        img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
        return torch.from_numpy(img).permute(2, 0, 1).contiguous()
    g = torch.Generator().manual_seed(3)
    img = torch.rand(3, 150, 200, generator=g) * 0.3
    img[:, 40:110, 60:140] += 0.6     # an object-like blob
    return img.clamp(0, 1)


def _source_fcis(tmp_path: Path, names: list[str], **extra) -> tuple[torch.nn.Module, Path]:
    """A random fcis_resnet18 with spread class and mask scores, saved as an fcis checkpoint."""
    torch.manual_seed(7)
    src = fcis_resnet18(num_classes=len(names), **{**SMALL, **extra})
    with torch.no_grad():
        src.head.inside_outside.weight.normal_(0, 0.05)    # the init's 0.01 gives near-equal scores
        src.head.inside_outside.bias.uniform_(-1, 1)
        src.head.boxes.weight.normal_(0, 0.02)
    path = tmp_path / "source.pt"
    save_checkpoint(path, model=src.state_dict(), model_name="fcis_resnet18", model_config=src.config.to_dict(),
                    dataset={"class_names": names, "label_to_cat_id": {i + 1: 10 + i for i in range(len(names))}})
    return src, path


def test_class_names_match_by_normalised_name_and_map():
    assert normalise_class_name("  Traffic_Light ") == "traffic light" == normalise_class_name("traffic -  light")
    assert match_classes(["Car", "cat", "person"], ["person", "car", "dog"]) == [2, None, 1]
    assert match_classes(["pedestrian", "car"], ["person", "car"], parse_class_map("Pedestrian=person")) == [1, 2]
    assert match_classes(["x"], ["N/A", "x", "x"]) == [2]             # placeholder skipped, first label wins
    with pytest.raises(ValueError, match="not classes of the source"):
        match_classes(["pedestrian"], ["person"], parse_class_map("pedestrian=human"))
    with pytest.raises(ValueError, match="not classes of the training data"):
        match_classes(["pedestrian"], ["person"], parse_class_map("walker=person"))
    with pytest.raises(ValueError, match="USER=SOURCE"):
        parse_class_map("pedestrian")
    assert parse_class_map(None) == {}


def test_class_map_from_json_file(tmp_path):
    (tmp_path / "map.json").write_text(json.dumps({"Motor_Bike": "motorcycle"}))
    assert parse_class_map(str(tmp_path / "map.json")) == {"motor bike": "motorcycle"}
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        parse_class_map(str(tmp_path / "bad.json"))


@pytest.mark.parametrize("use_photo", [True, False])
def test_fcis_matched_class_keeps_channels_and_its_outputs_on_a_photo(tmp_path, use_photo, request):
    """Source classes (person, car, dog) -> target (car, cat): car's inside/outside channels are the
    source's, bit for bit; background and cat keep the builder's fresh initialisation; on a photo
    the proposals, and per RoI car's class logit, mask probabilities and the box deltas are the
    source's (float64). Car's class *probability* differs: its softmax runs over other classes."""
    shared = None
    if use_photo:
        shared = request.getfixturevalue("shared_data")
    src, path = _source_fcis(tmp_path, ["person", "car", "dog"])
    source = load_init_source(path)
    inherited = inherited_config(source, "fcis_resnet18", BUILDERS)
    assert inherited["anchor_sizes"] == (32, 64, 128) and inherited["min_size"] == 128
    torch.manual_seed(1)
    proposals = {k: SMALL[k] for k in ("rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test")}   # not inherited
    tgt = fcis_resnet18(num_classes=2, backbone_pretrained=True, **inherited, **proposals)
    fresh = {k: v.clone() for k, v in tgt.state_dict().items()}
    report = init_model(tgt, source, ["Car", "cat"], inherited=inherited)
    assert report.kept == [(1, "Car", 2, "car")] and report.new == ["cat"]
    assert "kept 1 of 2 classes from the source: Car (from car); new: cat" in report.describe()

    k2 = 49
    w_src, w_tgt, w_fresh = (m["head.inside_outside.weight"] for m in (src.state_dict(), tgt.state_dict(), fresh))
    io_src = w_src.view(4, 2, k2, -1)            # (class, inside/outside, position, in): channel (2c + s)k² + p
    io_tgt = w_tgt.view(3, 2, k2, -1)
    assert torch.equal(io_tgt[1], io_src[2])                 # car <- car
    assert torch.equal(io_tgt[0], w_fresh.view(3, 2, k2, -1)[0])  # background: fresh
    assert torch.equal(io_tgt[2], w_fresh.view(3, 2, k2, -1)[2])  # cat: fresh
    b_src, b_tgt = src.state_dict()["head.inside_outside.bias"], tgt.state_dict()["head.inside_outside.bias"]
    assert torch.equal(b_tgt.view(3, 2, k2)[1], b_src.view(4, 2, k2)[2])
    for name, value in tgt.state_dict().items():           # everything else is the source's
        if not name.startswith("head.inside_outside") and not name.endswith("num_batches_tracked"):
            assert torch.equal(value, src.state_dict()[name]), name

    image = _photo(shared).double()
    src.double().eval()
    tgt.double().eval()
    with torch.no_grad():
        outs = []
        for model in (src, tgt):
            batch, _ = model.transform([image])
            c4, c5 = model.backbone(batch.tensors)
            proposals, _ = model.rpn(batch, {"0": c4})
            rois, probs, scores = model.score_candidates(model.head(c5), proposals, batch.image_sizes)
            outs.append((rois, probs, scores))
    (rois_s, probs_s, sc_s), (rois_t, probs_t, sc_t) = outs
    assert rois_s.shape[0] >= 20 and torch.equal(rois_s, rois_t)         # both passes' RoIs
    torch.testing.assert_close(sc_t.class_logits[:, 1], sc_s.class_logits[:, 2], rtol=0, atol=1e-10)
    torch.testing.assert_close(sc_t.mask_probs()[:, 1], sc_s.mask_probs()[:, 2], rtol=0, atol=1e-10)
    torch.testing.assert_close(sc_t.box_deltas, sc_s.box_deltas, rtol=0, atol=1e-10)
    # the comparison is not between constants: car's scores and masks spread over the RoIs
    assert sc_s.class_logits[:, 2].std() > 0.05
    assert sc_s.mask_probs()[:, 2].std() > 0.05
    # ... and its probability is another: the other classes' logits differ
    assert not torch.allclose(probs_t[:, 1], probs_s[:, 2])


def test_errors_name_the_source_and_the_problem(tmp_path):
    _, path = _source_fcis(tmp_path, ["person", "car"])
    source = load_init_source(path)
    with pytest.raises(ValueError, match="holds a fcis_resnet18 model: train --model fcis_resnet18"):
        inherited_config(source, "fcis_resnet50", BUILDERS)
    inherited = inherited_config(source, "fcis_resnet18", BUILDERS)
    tgt = fcis_resnet18(num_classes=1, backbone_pretrained=True, **{**inherited, "head_channels": 256})
    with pytest.raises(ValueError, match=r"source\.pt.*shapes differ: head\.reduce\.weight"):
        init_model(tgt, source, ["car"])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsFileError, match="junk.pt"):
        load_init_source(tmp_path / "junk.pt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(WeightsFileError, match="neither an fcis checkpoint nor a state dict of torchvision"):
        load_init_source(tmp_path / "plain.pt")
    with pytest.raises(WeightsFileError, match="not found"):
        load_init_source(tmp_path / "missing.pt")


def test_carried_fields_include_fields_marked_architecture():
    import dataclasses

    from fcis.models import FCISConfig

    assert {"anchor_sizes", "group_size", "image_mean", "min_size"} <= set(carried_fields(FCISConfig))
    assert "num_classes" not in carried_fields(FCISConfig) and "ohem" not in carried_fields(FCISConfig)

    @dataclasses.dataclass
    class Variant(FCISConfig):
        official_arithmetic: bool = dataclasses.field(default=False, metadata={"architecture": True})

    assert "official_arithmetic" in carried_fields(Variant)


def _tv_state_dict(old_layout: bool = False) -> dict[str, torch.Tensor]:
    """torchvision's maskrcnn_resnet50_fpn (91 COCO slots) as its COCO file holds it; with
    ``old_layout`` the key names of the files torchvision < 0.13 wrote (that COCO file's)."""
    torch.manual_seed(5)
    tv = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    sd = tv.state_dict()
    if not old_layout:
        return sd
    renamed = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        k = re.sub(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.0\.", r"\1.", k)
        k = re.sub(r"^rpn\.head\.conv\.0\.0\.", "rpn.head.conv.", k)
        k = re.sub(r"^roi_heads\.mask_head\.(\d+)\.0\.", lambda m: f"roi_heads.mask_head.mask_fcn{int(m.group(1)) + 1}.", k)
        renamed[k] = v
    assert len(renamed) < len(sd) and "rpn.head.conv.weight" in renamed and "roi_heads.mask_head.mask_fcn4.bias" in renamed
    return renamed


@pytest.mark.slow
def test_torchvision_file_of_the_old_key_layout_reads_as_the_new(tmp_path):
    """The real COCO file was written by torchvision < 0.13 (FPN, RPN head and mask head keys of
    the old layout, no num_batches_tracked): loaded through torchvision's model, it is the same."""
    # and of torch's legacy (non-zip) serialisation, as torch 1.1-1.3 wrote that file
    torch.save(_tv_state_dict(old_layout=True), tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    assert (tmp_path / "old.pth").read_bytes()[:4] != b"PK\x03\x04"
    source = load_init_source(tmp_path / "old.pth")
    ref = {k: v for k, v in _tv_state_dict().items() if not k.endswith("num_batches_tracked")}
    assert set(source.state_dict) == set(ref)
    assert all(torch.equal(source.state_dict[k], v) for k, v in ref.items())


@pytest.mark.slow
def test_maskrcnn_from_torchvision_coco_state_dict(tmp_path):
    """torchvision's COCO Mask R-CNN file -> maskrcnn_resnet50_fpn for (cat, Person, unicorn):
    cat and person keep their cls_score / bbox_pred / mask_fcn_logits rows (COCO labels 17 and 1),
    unicorn and the background start fresh; on an image the matched classes' box logits, box
    deltas and mask logits per RoI are torchvision's."""
    path = tmp_path / "maskrcnn_resnet50_fpn_coco-test.pth"
    torch.save(_tv_state_dict(), path)
    source = load_init_source(path)
    assert source.kind == "torchvision Mask R-CNN state dict" and len(source.class_names) == 90
    assert source.class_names[0] == "person" and source.class_names[16] == "cat"
    inherited = inherited_config(source, "maskrcnn_resnet50_fpn", BUILDERS)
    assert inherited["min_size"] == 800 and inherited["anchor_sizes"] == (32, 64, 128, 256, 512)
    torch.manual_seed(2)
    small = {"min_size": 128, "max_size": 160, "rpn_pre_nms_top_n_test": 300, "rpn_post_nms_top_n_test": 30}
    tgt = BUILDERS["maskrcnn_resnet50_fpn"](num_classes=3, backbone_pretrained=True, **{**inherited, **small})
    fresh = {k: v.clone() for k, v in tgt.state_dict().items()}
    report = init_model(tgt, source, ["cat", "Person", "unicorn"], inherited=inherited)
    assert [(a, c) for a, _, c, _ in report.kept] == [(1, 17), (2, 1)] and report.new == ["unicorn"]
    new = tgt.state_dict()
    ref = _tv_state_dict()
    pred = "roi_heads.box_predictor."
    for t, s in ((1, 17), (2, 1)):
        assert torch.equal(new[pred + "cls_score.weight"][t], ref[pred + "cls_score.weight"][s])
        assert torch.equal(new[pred + "bbox_pred.weight"][4 * t:4 * t + 4], ref[pred + "bbox_pred.weight"][4 * s:4 * s + 4])
        assert torch.equal(new["roi_heads.mask_predictor.mask_fcn_logits.weight"][t],
                           ref["roi_heads.mask_predictor.mask_fcn_logits.weight"][s])
    for t in (0, 3):   # background and unicorn: the builder's initialisation
        assert torch.equal(new[pred + "cls_score.weight"][t], fresh[pred + "cls_score.weight"][t])
        assert torch.equal(new[pred + "bbox_pred.bias"][4 * t:4 * t + 4], fresh[pred + "bbox_pred.bias"][4 * t:4 * t + 4])

    tv = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=small["min_size"], max_size=small["max_size"],
        rpn_pre_nms_top_n_test=small["rpn_pre_nms_top_n_test"], rpn_post_nms_top_n_test=small["rpn_post_nms_top_n_test"])
    tv.load_state_dict(ref)
    image = _photo(None).double()
    outs = []
    with torch.no_grad():
        for model in (tv.double().eval(), tgt.double().eval()):
            batch, _ = model.transform([image])
            feats = model.backbone(batch.tensors)
            proposals, _ = model.rpn(batch, feats)
            heads = model.roi_heads
            x = heads.box_head(heads.box_roi_pool(feats, proposals, batch.image_sizes))
            logits, deltas = heads.box_predictor(x)
            masks = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(feats, proposals, batch.image_sizes)))
            outs.append((proposals[0], logits, deltas, masks))
    (p_s, l_s, d_s, m_s), (p_t, l_t, d_t, m_t) = outs
    assert len(p_s) > 10
    torch.testing.assert_close(p_t, p_s, rtol=0, atol=1e-8)
    for t, s in ((1, 17), (2, 1)):
        torch.testing.assert_close(l_t[:, t], l_s[:, s], rtol=0, atol=1e-9)
        torch.testing.assert_close(d_t[:, 4 * t:4 * t + 4], d_s[:, 4 * s:4 * s + 4], rtol=0, atol=1e-9)
        torch.testing.assert_close(m_t[:, t], m_s[:, s], rtol=0, atol=1e-9)
    assert l_s[:, 17].std() > 0 and m_s[:, 1].std() > 0


def _shapes(tmp_path: Path) -> dict[str, Path]:
    return make_shapes(tmp_path / "shapes", num_images=6, seed=0, image_size=(96, 128))


@pytest.mark.slow
def test_cli_train_init_from_prints_kept_classes_and_the_fine_tuning_recipe(tmp_path, capsys):
    data = _shapes(tmp_path)
    src, path = _source_fcis(tmp_path, ["Circle", "star", "square"], min_size=96, max_size=128,
                             anchor_sizes=(24, 48, 96))
    run = tmp_path / "run"
    args = ["train", "--model", "fcis_resnet18", "--train", str(data["train"]), "--output", str(run),
            "--iterations", "3", "--device", "cpu", "--workers", "0", "--no-progress", "--init-from", str(path)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "kept 2 of 3 classes from the source: circle (from Circle), square; new: triangle" in err
    assert "the paper's fine-tuning recipe" in err and "optimizer=sgd, lr=0.0005" in err
    assert "anchors (the source model's (--init-from" in err
    record = json.loads((run / "config.json").read_text())
    assert record["init_from"]["source"] == str(path)
    assert [k["name"] for k in record["init_from"]["kept"]] == ["circle", "square"]
    assert record["model_config"]["anchor_sizes"] == [24, 48, 96] and record["model_config"]["backbone_pretrained"]
    assert record["train_config"]["init_from"] == str(path) and record["train_config"]["optimizer"] == "sgd"
    assert record["recipe"]["train"]["lr"] == 5e-4
    # resumed: the checkpoint's weights, the record kept
    assert main(args[:8] + ["5", *args[9:], "--resume"]) == 0
    assert json.loads((run / "config.json").read_text())["init_from"]["kept"] == record["init_from"]["kept"]
    # a --set that contradicts the source's shapes is an error naming the parameter
    capsys.readouterr()
    assert main([*args[:6], str(tmp_path / "run2"), *args[7:], "--set", "head_channels=256"]) == 2
    assert "shapes differ: head.reduce.weight (1024, 512, 1, 1) in the source" in capsys.readouterr().err
    assert main([*args[:6], str(tmp_path / "run3"), *args[7:], "--weights-backbone", str(path)]) == 2
    assert "--init-from and --weights-backbone" in capsys.readouterr().err
    assert main([*args[:6], str(tmp_path / "run4"), *args[7:], "--init-class-map", "triangle=hexagon"]) == 2
    assert "not classes of the source: ['hexagon']" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.data
def test_cli_init_from_on_pennfudan_photos(tmp_path, shared_data, capsys):
    """PennFudanPed's pedestrians from a source with (person, car, dog): 10 iterations on 4 real
    photos, pedestrian taken from person with --init-class-map."""
    root = shared_data / "PennFudanPed"
    full = tmp_path / "pennfudan.json"
    assert main(["convert", "masks", str(root / "PNGImages"), str(root / "PedMasks"), str(full),
                 "--category", "pedestrian"]) == 0
    data = json.loads(full.read_text())
    keep = {im["id"] for im in data["images"][:4]}
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    train = tmp_path / "train.json"
    train.write_text(json.dumps(data))
    _, path = _source_fcis(tmp_path, ["person", "car", "dog"])
    run = tmp_path / "run"
    assert main(["train", "--model", "fcis_resnet18", "--train", str(train), "--output", str(run),
                 "--iterations", "10", "--device", "cpu", "--workers", "0", "--no-progress", "--init-from", str(path), "--init-class-map", "pedestrian=person"]) == 0
    err = capsys.readouterr().err
    assert "kept 1 of 1 classes from the source: pedestrian (from person)" in err
    assert "optimizer=sgd" in err
    assert (run / "last.pt").is_file()


@pytest.mark.slow
def test_official_variant_source_becomes_a_trainable_fcis_with_the_same_arithmetic(tmp_path):
    """A converted checkpoint runs the official variant (inference only); --init-from makes a
    trainable FCIS of it that computes the same: the Caffe-style ResNet, the official input
    normalisation, the same features, and RPN scores and boxes equal to the official RPN's for
    every anchor (its 2-way softmax as one logit, its deltas re-expressed for torchvision's anchors)."""
    from torchvision.models.detection._utils import BoxCoder

    from fcis.models.fcis.official import official_config
    from fcis.models.fcis.official_rpn import decode_boxes, foreground_probs

    torch.manual_seed(11)
    config = {**official_config(3), "min_size": 160, "max_size": 200}
    config.pop("num_classes")
    config["depth"] = 50            # ResNet-50: the same code, a lighter test
    src = BUILDERS["fcis_resnet50"](num_classes=3, **config).eval()
    image = _photo(None).double()
    official_input = image * 255 - torch.tensor(src.config.image_mean, dtype=torch.float64).view(3, 1, 1)
    with torch.no_grad():   # RPN outputs of a useful size: scores spread, deltas of ~0.3 (the random
        t = src.rpn.head.conv(src.backbone(official_input[None].float())[0]).relu()   # backbone's c4 is large)
        src.rpn.head.cls_logits.weight.normal_(0, 2.0 / float(t.std() * t.shape[1] ** 0.5))
        src.rpn.head.bbox_pred.weight.normal_(0, 0.3 / float(t.std() * t.shape[1] ** 0.5))
        src.rpn.head.bbox_pred.bias.uniform_(-0.3, 0.3)
    path = tmp_path / "converted.pt"
    save_checkpoint(path, model=src.state_dict(), model_name="fcis_resnet50", model_config=src.config.to_dict(),
                    dataset={"class_names": ["person", "car", "dog"], "label_to_cat_id": {1: 1, 2: 3, 3: 18}})
    source = load_init_source(path)
    inherited = inherited_config(source, "fcis_resnet50", BUILDERS)
    assert inherited["resnet_style"] == "caffe" and inherited["assemble_mode"] == "average"
    assert inherited["image_std"] == pytest.approx((1 / 255,) * 3)
    tgt = BUILDERS["fcis_resnet50"](num_classes=2, backbone_pretrained=True, **inherited)
    assert type(tgt).__name__ == "FCIS" and tgt.config.variant == "torchvision"
    report = init_model(tgt, source, ["dog", "person"], inherited=inherited)
    assert [k[3] for k in report.kept] == ["dog", "person"] and "official variant" in report.describe()
    src.double().eval()          # float64: the comparison is of the arithmetic, not of float32 rounding
    tgt.double().eval()

    torch.testing.assert_close(tgt.transform.normalize(image), official_input, rtol=0, atol=1e-9)
    x = official_input[None]
    with torch.no_grad():
        c4_s, c5_s = src.backbone(x)
        c4_t, c5_t = tgt.backbone(x)
        torch.testing.assert_close(c4_t, c4_s, rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(c5_t, c5_s, rtol=1e-12, atol=1e-9)
        scores, deltas = src.rpn.head(c4_s)                     # (1, 2A, H, W), (1, 4A, H, W)
        logits, deltas_t = tgt.rpn.head([c4_t])
    num, (h, w) = scores.shape[1] // 2, c4_s.shape[-2:]
    # the translated weights are stored in float32 (as the model's): equal to float32 rounding
    torch.testing.assert_close(torch.sigmoid(logits[0]), foreground_probs(scores), rtol=0, atol=1e-6)
    per_anchor = lambda d: d[0].permute(1, 2, 0).reshape(-1, 4).double()          # noqa: E731
    official = decode_boxes(src.rpn.anchors(h, w, torch.device("cpu")), per_anchor(deltas))
    official[:, 2:] += 1                                        # inclusive -> continuous
    cell = tgt.rpn.anchor_generator.cell_anchors[0].double()
    sy, sx = torch.meshgrid(torch.arange(h, dtype=torch.float64) * 16, torch.arange(w, dtype=torch.float64) * 16,
                            indexing="ij")
    anchors = (torch.stack([sx, sy, sx, sy], -1).reshape(-1, 1, 4) + cell.view(1, -1, 4)).reshape(-1, 4)
    mine = BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(per_anchor(deltas_t[0]), anchors)
    assert len(mine) == h * w * num and (official[:, 2] - official[:, 0]).std() > 10   # boxes of many sizes
    assert float(foreground_probs(scores).std()) > 0.1
    torch.testing.assert_close(mine, official, rtol=0, atol=1e-4)              # pixels (measured: 2e-5)
    # and it trains (the official variant refuses to)
    tgt.float().train()
    target = {"boxes": torch.tensor([[60.0, 40.0, 140.0, 110.0]]), "labels": torch.tensor([2]),
              "masks": torch.zeros(1, 150, 200, dtype=torch.uint8)}
    target["masks"][0, 40:110, 60:140] = 1
    losses = tgt([image.float()], [target])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert tgt.head.inside_outside.weight.grad is not None


def test_maskrcnn_from_an_fcis_maskrcnn_checkpoint_and_instancefcn_refused(tmp_path):
    torch.manual_seed(4)
    src = BUILDERS["maskrcnn_resnet18_fpn"](num_classes=2, min_size=128, max_size=160)
    path = tmp_path / "mrcnn.pt"
    save_checkpoint(path, model=src.state_dict(), model_name="maskrcnn_resnet18_fpn", model_config=src.config.to_dict(),
                    dataset={"class_names": ["balloon", "kite"], "label_to_cat_id": {1: 1, 2: 2}})
    source = load_init_source(path)
    inherited = inherited_config(source, "maskrcnn_resnet18_fpn", BUILDERS)
    assert inherited["min_size"] == 128
    tgt = BUILDERS["maskrcnn_resnet18_fpn"](num_classes=2, backbone_pretrained=True, **inherited)
    report = init_model(tgt, source, ["kite", "Balloon"])
    assert [(a, c) for a, _, c, _ in report.kept] == [(1, 2), (2, 1)] and report.new == []
    w_t = tgt.state_dict()["roi_heads.box_predictor.bbox_pred.weight"]
    w_s = src.state_dict()["roi_heads.box_predictor.bbox_pred.weight"]
    assert torch.equal(w_t[4:8], w_s[8:12]) and torch.equal(w_t[8:12], w_s[4:8])

    ifcn = BUILDERS["instancefcn_resnet18"](num_classes=1)
    save_checkpoint(tmp_path / "ifcn.pt", model=ifcn.state_dict(), model_name="instancefcn_resnet18",
                    model_config=ifcn.config.to_dict(), dataset={"class_names": ["object"], "label_to_cat_id": {1: 1}})
    with pytest.raises(ValueError, match="supports FCIS and Mask R-CNN"):
        inherited_config(load_init_source(tmp_path / "ifcn.pt"), "instancefcn_resnet18", BUILDERS)
