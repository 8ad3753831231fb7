"""Mask R-CNN (torchvision's) behind the library's API: output contract, losses (also for images
without objects), builders and backbone weights, and a tiny run through the real trainer."""

import pytest
import torch
from helpers import assert_empty_image_trains, box_target
from torchvision.models import resnet18
from torchvision.ops.misc import FrozenBatchNorm2d

from fcis.models import BUILDERS, MaskRCNN, MaskRCNNConfig, build_model, maskrcnn_resnet18_fpn

SMALL = dict(min_size=64, max_size=128, anchor_sizes=(8, 16, 32, 64, 128), rpn_pre_nms_top_n_test=200,
             rpn_post_nms_top_n_test=50, rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=50,
             roi_batch_size_per_image=64, detections_per_img=20)
LOSS_KEYS = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_mask", "loss_box_reg"}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return maskrcnn_resnet18_fpn(num_classes=3, **SMALL)


def _check_outputs(out, images, num_classes, detections_per_img):
    assert len(out) == len(images)
    for o, img in zip(out, images):
        n = len(o["boxes"])
        assert set(o) == {"boxes", "labels", "scores", "masks"}
        assert o["boxes"].shape == (n, 4) and o["boxes"].dtype == torch.float32
        assert o["labels"].shape == (n,) and o["labels"].dtype == torch.int64
        assert o["scores"].shape == (n,) and o["scores"].dtype == torch.float32
        assert o["masks"].shape == (n, 1, *img.shape[-2:]) and o["masks"].dtype == torch.float32
        assert n <= detections_per_img
        if n:
            assert int(o["labels"].min()) >= 1 and int(o["labels"].max()) <= num_classes
            assert torch.all(o["scores"][:-1] >= o["scores"][1:])
            assert float(o["masks"].min()) >= 0.0 and float(o["masks"].max()) <= 1.0
            assert torch.all(o["boxes"][:, 2] >= o["boxes"][:, 0]) and torch.all(o["boxes"][:, 3] >= o["boxes"][:, 1])
            assert float(o["boxes"][:, 2].max()) <= img.shape[-1] and float(o["boxes"][:, 3].max()) <= img.shape[-2]


def test_eval_output_contract(model):
    model.eval()
    images = [torch.rand(3, 90, 120), torch.rand(3, 70, 64)]
    with torch.no_grad():
        out = model(images)
    _check_outputs(out, images, 3, model.config.box_detections_per_img)
    assert len(out[0]["boxes"]) > 0  # random weights, score threshold 0.05: some weak detections


def test_blank_image_gives_valid_outputs(model):
    model.eval()
    images = [torch.zeros(3, 64, 80)]
    with torch.no_grad():
        out = model(images)
    _check_outputs(out, images, 3, model.config.box_detections_per_img)


def test_losses_finite_with_and_without_objects(model):
    model.train()
    images = [torch.rand(3, 96, 128), torch.rand(3, 80, 100)]
    with_objects = box_target(96, 128, [[10, 10, 60, 50], [70, 40, 120, 90]], [1, 3])
    empty = box_target(80, 100, [], [])
    losses = model(images, [with_objects, empty])
    assert set(losses) == LOSS_KEYS
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    assert losses["loss_mask"].item() > 0 and losses["loss_classifier"].item() > 0
    model.zero_grad()

    only_empty = model(images[1:], [empty])
    assert set(only_empty) == LOSS_KEYS
    assert all(torch.isfinite(v) for v in only_empty.values())
    assert_empty_image_trains(only_empty, model.roi_heads)         # an image without objects trains
    model.zero_grad()


def test_training_requires_targets(model):
    model.train()
    with pytest.raises(ValueError, match="targets"):
        model([torch.rand(3, 64, 64)])


def test_num_classes_counts_foreground(model):
    heads = model.roi_heads
    assert model.config.num_classes == 3
    assert heads.box_predictor.cls_score.out_features == 4
    assert heads.box_predictor.bbox_pred.out_features == 4 * 4
    assert heads.mask_predictor.mask_fcn_logits.out_channels == 4
    assert isinstance(model, MaskRCNN) and isinstance(model, torch.nn.Module)


def test_random_backbone_trains_everything_with_batchnorm(model):
    body = model.backbone.body
    assert isinstance(body.bn1, torch.nn.BatchNorm2d) and not isinstance(body.bn1, FrozenBatchNorm2d)
    assert all(p.requires_grad for p in model.parameters())
    assert model.config.backbone_pretrained is False


def test_config_round_trip_and_validation(model):
    cfg = model.config
    assert MaskRCNNConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.mask_threshold == 0.5 and cfg.anchor_sizes == (8, 16, 32, 64, 128)
    default = MaskRCNNConfig()
    assert (default.min_size, default.max_size, default.box_score_thresh, default.box_nms_thresh,
            default.box_detections_per_img, default.box_batch_size_per_image) == (800, 1333, 0.05, 0.5, 100, 512)
    with pytest.raises(ValueError, match="unknown MaskRCNNConfig fields"):
        MaskRCNNConfig.from_dict({**cfg.to_dict(), "ohem": True})
    with pytest.raises(ValueError, match="one size per FPN level"):
        MaskRCNNConfig(anchor_sizes=(16, 32, 64))
    with pytest.raises(ValueError, match="num_classes"):
        MaskRCNNConfig(num_classes=0)
    with pytest.raises(ValueError, match="ResNet-18"):
        maskrcnn_resnet18_fpn(num_classes=2, depth=50)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        maskrcnn_resnet18_fpn(num_classes=2, not_a_field=1)
    with pytest.raises(TypeError):
        maskrcnn_resnet18_fpn(2)  # keyword-only


def test_builders_registered():
    for name in ("maskrcnn_resnet18_fpn", "maskrcnn_resnet50_fpn", "maskrcnn_resnet101_fpn"):
        assert name in BUILDERS


def test_backbone_weights_from_path_and_rebuild_from_config(tmp_path):
    torch.manual_seed(1)
    state = resnet18().state_dict()
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    m = build_model("maskrcnn_resnet18_fpn", num_classes=2, weights_backbone=path, **SMALL)
    body = m.backbone.body
    assert torch.equal(body.conv1.weight, state["conv1.weight"])
    assert torch.equal(body.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    assert torch.equal(body.layer2[0].bn1.running_var, state["layer2.0.bn1.running_var"])
    # torchvision's default: 3 trainable stages (layer2..layer4), conv1 and layer1 frozen
    assert not body.conv1.weight.requires_grad and not any(p.requires_grad for p in body.layer1.parameters())
    assert all(p.requires_grad for p in body.layer2.parameters())
    assert m.config.backbone_pretrained is True and m.config.trainable_layers == 3

    rebuilt = BUILDERS["maskrcnn_resnet18_fpn"](**m.config.to_dict())  # as load_model does, no weights file
    assert isinstance(rebuilt.backbone.body.bn1, FrozenBatchNorm2d)
    assert not rebuilt.backbone.body.conv1.weight.requires_grad
    rebuilt.load_state_dict(m.state_dict(), strict=True)
    m.eval(), rebuilt.eval()
    image = [torch.rand(3, 64, 80)]
    with torch.no_grad():
        a, b = m(image)[0], rebuilt(image)[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])


def test_missing_backbone_weights_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        maskrcnn_resnet18_fpn(num_classes=1, weights_backbone=tmp_path / "nope.pth")


def test_trains_saves_and_predicts_through_the_engine(tmp_path):
    from fcis.data import make_shapes
    from fcis.engine import TrainConfig, load_model, train
    from fcis.inference import Predictor

    data = make_shapes(tmp_path / "data", num_images=4, seed=0, image_size=(64, 80), max_objects=2,
                       val_fraction=0.25)
    cfg = TrainConfig(iterations=2, batch_size=1, workers=0, min_size=64, max_size=80, lr=0.01, warmup_iters=1,
                      device="cpu", log_every=1, checkpoint_every=0)
    overrides = {k: v for k, v in SMALL.items() if k not in ("min_size", "max_size")}
    summary = train("maskrcnn_resnet18_fpn", data["train"], data["val"], tmp_path / "run", cfg,
                    model_overrides=overrides, progress=False)
    assert summary["iterations"] == 2 and summary["nonfinite_steps"] == 0
    assert set(summary["losses"]) >= LOSS_KEYS
    assert summary["metrics"] is not None and "segm" in summary["metrics"]

    model, meta = load_model(summary["last_checkpoint"], "cpu")
    assert isinstance(model, MaskRCNN) and not model.training
    assert (model.config.min_size, model.config.max_size) == (64, 80)
    assert model.config.anchor_sizes == (8, 16, 32, 64, 128)
    assert meta["class_names"] == ["circle", "square", "triangle"]

    predictor = Predictor.from_checkpoint(summary["last_checkpoint"], "cpu", score_threshold=0.0)
    image = next(iter(sorted(data["images"].iterdir())))
    pred = predictor.predict(image)
    n = len(pred["boxes"])
    assert pred["masks"].shape == (n, 64, 80) and pred["masks"].dtype == torch.bool
    assert len(pred["class_names"]) == n and set(pred["class_names"]) <= {"circle", "square", "triangle"}
