"""Details that follow the official FCIS code (msracver/FCIS), issue 12: res5a dilation, the mask
loss scale and normalisation, optimizer groups, RPN border anchors and min size, voting options,
InstanceFCN's proposal count."""

import pytest
import torch
from torchvision.models.detection.image_list import ImageList

from fcis.engine import TrainConfig
from fcis.engine.step import build_optimizer, param_groups
from fcis.models import FCISConfig, fcis_resnet18, fcis_resnet50
from fcis.models.fcis.losses import reduce_losses
from fcis.models.fcis.mask_voting import vote_masks
from fcis.models.instancefcn.config import InstanceFCNConfig
from fcis.models.mask_paste import paste_masks_in_frame
from fcis.models.rpn import build_rpn


def test_res5a_is_dilated_like_the_rest_of_res5():
    r50 = fcis_resnet50(num_classes=2).backbone.layer4
    assert r50[0].conv2.dilation == (2, 2) and r50[0].conv2.padding == (2, 2) and r50[0].conv2.stride == (1, 1)
    assert all(block.conv2.dilation == (2, 2) for block in r50)
    r18 = fcis_resnet18(num_classes=2).backbone.layer4
    assert {c.dilation for b in r18 for c in (b.conv1, b.conv2)} == {(2, 2)}
    with torch.no_grad():  # stride 16 kept
        c4, c5 = fcis_resnet18(num_classes=2).backbone(torch.rand(1, 3, 64, 96))
    assert c4.shape[-2:] == c5.shape[-2:] == (4, 6)


def test_official_loss_weights_and_mask_normalisation():
    cfg = FCISConfig()
    assert (cfg.cls_loss_weight, cfg.mask_loss_weight, cfg.box_loss_weight) == (1.0, 10.0, 1.0)
    assert cfg.mask_loss_normalization == "rois"
    labels = torch.tensor([2, 0, 1, 0])                      # 2 foreground of 4 selected RoIs
    mask = torch.tensor([0.3, 0.0, 0.5, 0.0])
    cls, box = torch.ones(4), torch.zeros(4)
    rois = reduce_losses(cls, mask, box, labels, (1.0, 10.0, 1.0), "rois")
    fg = reduce_losses(cls, mask, box, labels, (1.0, 10.0, 1.0), "foreground")
    assert float(rois["loss_mask"]) == pytest.approx(10 * 0.8 / 4)      # grad_scale = 10 / #RoIs
    assert float(fg["loss_mask"]) == pytest.approx(10 * 0.8 / 2)
    with pytest.raises(ValueError, match="mask_loss_normalization"):
        FCISConfig(mask_loss_normalization="pixels")


def test_param_groups_no_bias_decay_and_3x_head_lr():
    model = fcis_resnet18(num_classes=2)
    cfg = TrainConfig(optimizer="sgd", weight_decay=5e-4, lr=0.01)  # resolved values (the recipe leaves none)
    opt = build_optimizer(param_groups(model, cfg), cfg)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_param[id(named["head.reduce.weight"])]["lr"] == pytest.approx(0.03)
    assert by_param[id(named["head.reduce.bias"])]["weight_decay"] == 0.0
    assert by_param[id(named["head.inside_outside.weight"])]["lr"] == pytest.approx(0.01)
    assert by_param[id(named["head.inside_outside.weight"])]["weight_decay"] == 5e-4
    assert by_param[id(named["rpn.head.conv.bias"])]["weight_decay"] == 0.0
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(by_param) == trainable                        # every trainable parameter, once
    decay_all = param_groups(model, TrainConfig(weight_decay=5e-4, bias_weight_decay=True))
    assert {g["weight_decay"] for g in decay_all} == {5e-4}
    # the schedule scales every group from its own base rate
    from fcis.engine.schedule import build_scheduler
    sched = build_scheduler(opt, TrainConfig(lr=0.01, warmup_iters=0, warmup_factor=0.1, iterations=10, lr_steps=(0.5,)))
    for _ in range(6):
        opt.step()
        sched.step()
    assert by_param[id(named["head.reduce.weight"])]["lr"] == pytest.approx(0.003)


def test_rpn_ignores_border_anchors_and_drops_small_proposals():
    cfg = FCISConfig(anchor_sizes=(32,), aspect_ratios=(1.0,), rpn_min_size=16.0)
    rpn = build_rpn(cfg, 8)
    assert rpn.min_size == 16.0 and rpn.allowed_border == 0
    rpn.train()
    rpn._image_sizes = [(64, 64)]
    anchors = torch.tensor([[-8.0, -8.0, 24.0, 24.0],     # crosses the border: the GT's best, ignored
                            [0.0, 0.0, 32.0, 32.0],       # inside, IoU 0.6 with the GT: low-quality fg
                            [32.0, 32.0, 64.0, 64.0]])    # inside, far: background
    gt = {"boxes": torch.tensor([[-4.0, -4.0, 26.0, 26.0]])}
    labels, matched = rpn.assign_targets_to_anchors([anchors], [gt])
    assert labels[0].tolist() == [-1.0, 1.0, 0.0]
    labels, _ = rpn.assign_targets_to_anchors([anchors], [{"boxes": torch.zeros(0, 4)}])
    assert labels[0].tolist() == [-1.0, 0.0, 0.0]
    rpn.allowed_border = None                              # torchvision's behaviour
    labels, _ = rpn.assign_targets_to_anchors([anchors], [gt])
    assert labels[0][0] == 1.0
    # proposals under the min size are dropped (torchvision's filter, with our size)
    rpn.eval()
    feats = {"0": torch.zeros(1, 8, 4, 4)}
    boxes, _ = rpn(ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)]), feats)
    w, h = boxes[0][:, 2] - boxes[0][:, 0], boxes[0][:, 3] - boxes[0][:, 1]
    assert len(boxes[0]) and bool(((w >= 16) & (h >= 16)).all())


def test_voting_on_binarised_or_probability_masks():
    kept = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    cand = kept.repeat(2, 1)
    scores = torch.tensor([[0.0, 0.75], [0.0, 0.25]])
    masks = torch.stack([torch.full((1, 2, 2), 0.5), torch.full((1, 2, 2), 0.3)])   # (2, C=1, P, P)
    masks = torch.cat([torch.zeros_like(masks), masks], dim=1)                       # class 0 = background
    kw = dict(iou=0.5, min_score=0.0)
    prob = vote_masks(kept, torch.tensor([1]), cand, scores, masks, (4, 4), **kw)
    binary = vote_masks(kept, torch.tensor([1]), cand, scores, masks, (4, 4), binarize=0.4, **kw)
    pasted = paste_masks_in_frame(masks[:, 1], cand, (0, 0, 4, 4))                    # (2, 4, 4)
    w = scores[:, 1, None, None]
    torch.testing.assert_close(prob[0], (w * pasted).sum(0))
    torch.testing.assert_close(binary[0], (w * (pasted >= 0.4).float()).sum(0))
    assert float(binary[0, 2, 2]) == pytest.approx(0.75)                    # 0.5 -> 1, 0.3 -> 0
    assert FCISConfig().voting_binarize is True


def test_instancefcn_keeps_up_to_1000_proposals():
    cfg = InstanceFCNConfig()
    assert cfg.detections_per_img >= 1000 and cfg.pre_nms_top_n >= cfg.detections_per_img


def test_evaluate_set_overrides_inference_fields():
    from fcis.cli.main import UsageError, _override_config

    model = fcis_resnet18(num_classes=2)
    head_cfg = model.head.cfg
    _override_config(model, {"detections_per_img": 300, "voting_binarize": False})
    assert model.config.detections_per_img == 300 and head_cfg.voting_binarize is False
    with pytest.raises(UsageError, match="no field"):
        _override_config(model, {"nonsense": 1})
    with pytest.raises(ValueError, match="assemble_mode"):
        _override_config(model, {"assemble_mode": "max"})


def test_onnx_export_refuses_average_assembling(tmp_path):
    from fcis.export.onnx_export import ExportError, export_onnx

    with pytest.raises(ExportError, match="assemble_mode"):
        export_onnx(fcis_resnet18(num_classes=1, assemble_mode="average"), tmp_path / "m.onnx")
