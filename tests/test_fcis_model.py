"""FCIS model: output contract, losses (also for images without objects), parts and builders."""

import pytest
import torch
from helpers import assert_empty_image_trains, box_target
from torchvision.models import resnet18

from fcis.models import BUILDERS, FCISConfig, build_model, fcis_resnet18
from fcis.models.fcis.losses import select_hard, select_random
from fcis.models.fcis.mask_voting import masks_to_boxes_or_keep, vote_masks
from fcis.models.mask_paste import paste_masks_in_frame

SMALL = dict(min_size=96, max_size=128, anchor_sizes=(16, 32, 64), rpn_pre_nms_top_n_test=500,
             rpn_post_nms_top_n_test=50, rpn_post_nms_top_n_train=50, ohem_rois=32)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return fcis_resnet18(num_classes=3, **SMALL)


def test_eval_output_contract(model):
    model.eval()
    images = [torch.rand(3, 90, 120), torch.rand(3, 70, 64)]
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for o, img in zip(out, images):
        n = len(o["boxes"])
        assert set(o) == {"boxes", "labels", "scores", "masks"}
        assert o["boxes"].shape == (n, 4) and o["boxes"].dtype == torch.float32
        assert o["labels"].dtype == torch.int64 and o["scores"].dtype == torch.float32
        assert o["masks"].shape == (n, 1, *img.shape[-2:]) and o["masks"].dtype == torch.float32
        assert 0 < n <= model.config.detections_per_img       # random weights: many weak detections
        assert int(o["labels"].min()) >= 1 and int(o["labels"].max()) <= 3
        assert torch.all(o["scores"][:-1] >= o["scores"][1:])
        assert float(o["masks"].min()) >= 0.0 and float(o["masks"].max()) <= 1.0
        assert torch.all(o["boxes"][:, 2] >= o["boxes"][:, 0]) and torch.all(o["boxes"][:, 3] >= o["boxes"][:, 1])
        assert float(o["boxes"][:, 2].max()) <= img.shape[-1] and float(o["boxes"][:, 3].max()) <= img.shape[-2]


def test_detections_equal_the_all_classes_reference(model):
    """model(images) computes mask probabilities only for the voting candidates' classes and
    scores both passes in one call; the result equals the original formulation written out:
    two separate passes, then every class's mask probabilities of every candidate."""
    from torchvision.models.detection.transform import resize_boxes
    from torchvision.ops import clip_boxes_to_image

    from fcis.models.fcis.head import RoIScores
    from fcis.models.fcis.inference import select_detections

    model.eval()
    images = [torch.rand(3, 90, 120), torch.rand(3, 70, 64)]
    with torch.no_grad():
        out = model(images)
        batch, _ = model.transform(images)
        c4, c5 = model.backbone(batch.tensors)
        proposals, _ = model.rpn(batch, {"0": c4})
        maps = model.head(c5)
        rois = torch.cat([torch.cat([torch.full_like(p[:, :1], i), p], 1) for i, p in enumerate(proposals)])
        first = model.head.score_rois(maps, rois)
        refined = model.box_coder.decode_single(first.box_deltas, rois[:, 1:])
        for i, size in enumerate(batch.image_sizes):
            refined[rois[:, 0] == i] = clip_boxes_to_image(refined[rois[:, 0] == i], size)
        rois2 = torch.cat([rois[:, :1], refined], 1)
        scores = RoIScores.cat([first, model.head.score_rois(maps, rois2)])
        all_rois, probs, mask_probs = torch.cat([rois, rois2]), scores.class_logits.softmax(-1), scores.mask_probs()
        for i, (img, o) in enumerate(zip(images, out)):
            sel = torch.nonzero(all_rois[:, 0] == i).flatten()
            boxes = resize_boxes(all_rois[sel, 1:], batch.image_sizes[i], tuple(img.shape[-2:]))
            want = select_detections(boxes, probs[sel], mask_probs[sel], tuple(img.shape[-2:]), model.config)
            assert len(want["boxes"]) > 0 and set(o) == set(want)
            for key in want:
                torch.testing.assert_close(o[key], want[key], rtol=0, atol=1e-5)


def test_losses_finite_and_zero_without_objects(model):
    model.train()
    images = [torch.rand(3, 96, 128), torch.rand(3, 96, 128)]
    with_objects = box_target(96, 128, [[10, 10, 60, 50], [70, 40, 120, 90]], [1, 3])
    empty = box_target(96, 128, [], [])
    losses = model(images, [with_objects, empty])
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_mask", "loss_box_reg"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    assert losses["loss_mask"].item() > 0 and losses["loss_classifier"].item() > 0

    only_empty = model(images[1:], [empty])
    assert_empty_image_trains(only_empty, model.head)         # an image without objects trains
    model.zero_grad()


def test_training_requires_targets(model):
    model.train()
    with pytest.raises(ValueError, match="targets"):
        model([torch.rand(3, 64, 64)])


@pytest.mark.parametrize("overrides", [dict(ohem=False), dict(score_maps="separate"), dict(group_size=1),
                                       dict(two_pass=False, mask_voting=False)])
def test_variants_train_and_predict(overrides):
    m = fcis_resnet18(num_classes=2, **{**SMALL, **overrides})
    m.train()
    losses = m([torch.rand(3, 96, 96)], [box_target(96, 96, [[20, 20, 70, 80]], [2])])
    assert all(torch.isfinite(v) for v in losses.values())
    m.eval()
    with torch.no_grad():
        (o,) = m([torch.rand(3, 96, 96)])
    assert o["masks"].shape[1:] == (1, 96, 96)


def test_ohem_keeps_the_hardest_per_image():
    total = torch.tensor([0.1, 5.0, 0.3, 2.0, 9.0, 0.2, 1.0])
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    chosen = select_hard(total, batch, keep=2)
    assert sorted(chosen.tolist()) == [1, 3, 4, 6]
    labels = torch.tensor([1] * 10 + [0] * 90)
    picked = select_random(labels, torch.zeros(100), keep=40, fg_fraction=0.25)
    assert len(picked) == 40 and int((labels[picked] > 0).sum()) == 10


def test_paste_and_vote():
    ones = torch.ones(1, 21, 21)
    pasted = paste_masks_in_frame(ones, torch.tensor([[4.0, 2.0, 12.0, 10.0]]), (0, 0, 16, 16))[0]
    assert pasted[3:9, 5:11].min() > 0.99                       # inside the box
    assert pasted[12:, :].max() == 0 and pasted[:, 14:].max() == 0  # outside it

    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 8.0, 8.0], [20.0, 20.0, 30.0, 30.0]])
    masks = torch.zeros(3, 2, 21, 21)
    masks[0, 1], masks[1, 1, :, :10], masks[2, 1] = 1.0, 1.0, 1.0
    scores = torch.tensor([[0.1, 0.9], [0.7, 0.3], [0.2, 0.8]])
    voted = vote_masks(boxes[:1], torch.tensor([1]), boxes, scores, masks, (32, 32), iou=0.5, min_score=0.01)
    # candidates 0 and 1 vote (IoU 1), candidate 2 is elsewhere: left half 1.0, right half 0.9/(0.9+0.3)
    assert abs(float(voted[0, 4, 1]) - 1.0) < 1e-5 and abs(float(voted[0, 4, 6]) - 0.75) < 1e-5
    assert float(voted[0, 20:, 20:].max()) == 0.0
    own = vote_masks(boxes[1:2], torch.tensor([1]), boxes, scores, masks, (32, 32), iou=0.5, min_score=0.01,
                     voting=False, kept_index=torch.tensor([1]))
    assert float(own[0, 4, 6]) == 0.0 and float(own[0, 4, 1]) == 1.0
    tight = masks_to_boxes_or_keep(voted, boxes[:1], 0.4)
    assert tight.tolist() == [[0.0, 0.0, 8.0, 8.0]]


def test_tight_boxes_match_a_loop_reference():
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(6, 20, 30, generator=gen) * (torch.rand(6, 20, 30, generator=gen) > 0.97)
    masks[2] = 0.0                                               # empty: keeps its box
    masks[3] = 0.0
    masks[3, 19, 29] = 1.0                                       # one pixel in the corner
    boxes = torch.rand(6, 4, generator=gen) * 20
    want = boxes.clone()
    for n in range(len(masks)):
        ys, xs = torch.nonzero(masks[n] >= 0.4, as_tuple=True)
        if ys.numel():
            want[n] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=boxes.dtype)
    got = masks_to_boxes_or_keep(masks, boxes, 0.4)
    assert torch.equal(got, want) and got[3].tolist() == [29.0, 19.0, 30.0, 20.0]
    assert masks_to_boxes_or_keep(masks[:0], boxes[:0], 0.4).shape == (0, 4)


@pytest.mark.parametrize("voting", [True, False])
def test_select_detections_boxes_are_the_voted_masks_tight_boxes(voting):
    """select_detections finds each tight box inside its mask's window; the result equals
    masks_to_boxes_or_keep over the full-image masks (the voted boxes), or the candidates' own
    boxes without voting; and detect_windows' path gives the same boxes."""
    from fcis.models.fcis.inference import select_detection_windows, select_detections

    gen = torch.Generator().manual_seed(3)
    cfg = FCISConfig(num_classes=3, mask_voting=voting, score_thresh=0.0)
    xy = torch.rand(40, 2, generator=gen) * 60
    boxes = torch.cat([xy, xy + 5 + torch.rand(40, 2, generator=gen) * 30], dim=1)
    probs = torch.rand(40, 4, generator=gen).softmax(-1)
    masks = torch.rand(40, 4, 21, 21, generator=gen) ** 3                # many pixels below 0.4
    masks[:5] = 0.0                                                     # masks with nothing set
    out = select_detections(boxes, probs, masks, (80, 100), cfg)
    assert len(out["boxes"]) > 10
    if voting:                      # -1 marks an empty mask, whose detection keeps its own box
        want = masks_to_boxes_or_keep(out["masks"][:, 0], -torch.ones(len(out["boxes"]), 4), cfg.mask_threshold)
        tight = want[:, 0] >= 0
        assert bool(tight.any())
        torch.testing.assert_close(out["boxes"][tight], want[tight], rtol=0, atol=0)
    else:
        assert all(bool((boxes == b).all(dim=1).any()) for b in out["boxes"])
    windows = list(select_detection_windows(boxes, probs, masks, (80, 100), cfg))
    torch.testing.assert_close(torch.stack([w.box for w in windows]), out["boxes"], rtol=0, atol=0)


def test_config_defaults_are_the_papers():
    c = FCISConfig()
    assert (c.group_size, c.mask_size, c.head_channels) == (7, 21, 1024)
    assert (c.rpn_nms_iou, c.rpn_pre_nms_top_n_test, c.rpn_post_nms_top_n_test) == (0.7, 6000, 300)
    assert (c.roi_fg_iou, c.ohem_rois, c.nms_iou, c.voting_iou, c.mask_threshold) == (0.5, 128, 0.3, 0.5, 0.4)
    assert c.anchor_sizes == (64, 128, 256, 512) and (c.min_size, c.max_size) == (600, 1000)
    assert FCISConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown FCISConfig fields"):
        FCISConfig.from_dict({"num_classes": 2, "colour": 1})


def test_builders_and_backbone_weights_from_file(tmp_path):
    assert set(BUILDERS) >= {"fcis_resnet18", "fcis_resnet50", "fcis_resnet101"}
    with pytest.raises(TypeError):
        fcis_resnet18(3)                                   # keyword-only
    with pytest.raises(ValueError, match="unknown model"):
        build_model("fcis_vgg16", num_classes=2)
    reference = resnet18()
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    m = fcis_resnet18(num_classes=2, weights_backbone=path)
    assert m.config.backbone_pretrained
    torch.testing.assert_close(m.backbone.body.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    assert not m.backbone.body.conv1.weight.requires_grad      # conv1 + res2 frozen, as the original
    assert m.backbone.layer4[0].conv1.weight.requires_grad
    rebuilt = BUILDERS["fcis_resnet18"](**m.config.to_dict())   # a checkpoint rebuilds the same layers
    rebuilt.load_state_dict(m.state_dict())
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        fcis_resnet18(num_classes=2, weights_backbone=tmp_path / "nope.pth")


def test_conv5_is_dilated_to_stride_16(model):
    c4, c5 = model.backbone(torch.rand(1, 3, 64, 96))
    assert c4.shape[-2:] == (4, 6) and c5.shape[-2:] == (4, 6)
    assert (c4.shape[1], c5.shape[1]) == (256, 512)


def test_head_rows_layout_equals_the_convolution(model, monkeypatch):
    """The head writes the inside/outside maps as the assembling op's table (a matmul with
    reordered weights); the maps it stands for, the RoI scores and the gradients of the head's
    weights equal those of the 1×1 convolution's (N, 2·k²·(C+1), H, W) maps."""
    import fcis.models.fcis.head as head_module

    head = model.head
    gen = torch.Generator().manual_seed(0)
    c5 = torch.randn(2, head.reduce.in_channels, 5, 7, generator=gen)
    rois = torch.tensor([[0, 3.0, 5.0, 60.0, 70.0], [1, 0.0, 0.0, 111.0, 80.0], [0, 40.0, 20.0, 50.0, 30.0]]
                        + [[i % 2, 2.0 * i, 1.0 * i, 30.0 + 3 * i, 20.0 + 2 * i] for i in range(20)])
    results = []
    for rows_layout in (True, False):
        monkeypatch.setattr(head_module, "rows_layout_applies", lambda *args: rows_layout)  # noqa: B023
        head.zero_grad()
        maps = head(c5)
        assert (maps.inside_outside_rows is not None) == rows_layout
        scores = head.score_rois(maps, rois)
        (scores.class_logits.sum() + scores.mask_logits.square().sum()).backward()
        results.append((maps.inside_outside.detach(), scores.class_logits.detach(), scores.mask_logits.detach(),
                        head.inside_outside.weight.grad.clone(), head.reduce.weight.grad.clone()))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    monkeypatch.setattr(head_module, "rows_layout_applies", lambda *args: True)
    with torch.no_grad():                    # without gradients the max + mean runs in chunks of RoIs
        chunked = head.score_rois(head(c5), rois).class_logits
    torch.testing.assert_close(chunked, results[0][1], rtol=0, atol=1e-6)
    # Without gradients the reordered weight is kept between calls: a changed weight is seen.
    with torch.no_grad():
        maps_before = head(c5).inside_outside
        head.inside_outside.weight.mul_(-2.0)
        head.inside_outside.bias.add_(0.5)
        want = head.inside_outside(head.reduce(c5).relu())
        torch.testing.assert_close(head(c5).inside_outside, want, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(maps_before, want)
        head.inside_outside.weight.div_(-2.0)
        head.inside_outside.bias.sub_(0.5)


def test_rpn_nms_stops_at_the_kept_count_with_the_same_boxes():
    """first_kept_nms gives torchvision nms's first k indices (ties in the scores included), and
    the RPN's filter_proposals (which uses it on the CPU) the proposals of torchvision's own
    (whose batched_nms re-sorts the kept boxes with an unstable sort above 1000 boxes: equal
    scores may come in another order there, so the objectness here has no ties)."""
    from torchvision.models.detection.rpn import RegionProposalNetwork
    from torchvision.ops import nms

    from fcis.models.rpn import first_kept_nms

    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(3000, 2, generator=gen) * 500
    boxes = torch.cat([xy, xy + torch.rand(3000, 2, generator=gen) * 120 + 1], 1)
    scores = (torch.rand(3000, generator=gen) * 50).round() / 50          # many ties
    for iou in (0.3, 0.7):
        full = nms(boxes, scores, iou)
        for k in (1, 10, 300, 100000):
            assert torch.equal(first_kept_nms(boxes, scores, iou, k, block=128), full[:k])
    assert first_kept_nms(boxes[:0], scores[:0], 0.7, 300).shape == (0,)
    model = fcis_resnet18(num_classes=3, **{**SMALL, "rpn_pre_nms_top_n_test": 2000,
                                            "rpn_post_nms_top_n_test": 100}).eval()
    rpn = model.rpn
    props = torch.cat([xy, xy + torch.rand(3000, 2, generator=gen) * 120 + 1], 1)[None].repeat(2, 1, 1)
    objectness = torch.randn(2 * 3000, 1, generator=gen)
    ours = rpn.filter_proposals(props, objectness, [(500, 600), (400, 300)], [3000])
    want = RegionProposalNetwork.filter_proposals(rpn, props, objectness, [(500, 600), (400, 300)], [3000])
    for a, b in zip(ours, want):
        for x, y in zip(a, b):
            assert torch.equal(x, y) and len(x) == 100


def test_ohem_pass_in_chunks_gives_the_same_losses(model, monkeypatch):
    """OHEM's gradient-free pass scores the RoIs a chunk at a time; the chosen RoIs and so the
    losses are those of scoring all at once."""
    import fcis.models.fcis.model as model_module

    model.train()
    images = [torch.rand(3, 96, 128), torch.rand(3, 96, 128)]
    targets = [box_target(96, 128, [[10, 10, 60, 50], [70, 40, 120, 90]], [1, 3]),
               box_target(96, 128, [[5, 30, 50, 90]], [2])]
    results = []
    for chunk in (7, 10 ** 6):
        monkeypatch.setattr(model_module, "_OHEM_CHUNK", chunk)
        torch.manual_seed(0)
        with torch.no_grad():
            results.append(model(images, targets))
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key], rtol=0, atol=0)


def test_mean_of_max_matches_torch_maximum_with_ties():
    """The class score's max + mean (chunked, one byte per cell saved) has torch.maximum(...).mean's
    values and gradients, ties (half the gradient each way) included; gradcheck in float64."""
    from fcis.models.fcis.head import ScoreMaps, _MeanOfMax

    gen = torch.Generator().manual_seed(1)
    base = torch.randn(40, 21, 21, 5, 2, generator=gen, dtype=torch.float64)
    base[..., 1][base[..., 0] > 1.0] = base[..., 0][base[..., 0] > 1.0]               # ties
    logits = base.permute(0, 3, 4, 1, 2).requires_grad_()                              # (R, C+1, 2, P, P), strided
    weights = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    got = _MeanOfMax.apply(logits)
    (g_got,) = torch.autograd.grad((got * weights).sum(), logits)
    want = torch.maximum(logits[:, :, 0], logits[:, :, 1]).mean(dim=(2, 3))
    (g_want,) = torch.autograd.grad((want * weights).sum(), logits)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(g_got, g_want, rtol=0, atol=0)
    small = torch.randn(3, 2, 2, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _MeanOfMax.apply(t), (small,))
    maps = ScoreMaps(None, torch.zeros(1), None, torch.zeros(1, 2, 2, 4, 6))
    maps.release_inside_outside()
    with pytest.raises(RuntimeError, match="released"):
        _ = maps.inside_outside
    # the head's 1×1 convolution written as the table's matmul (its own backward): gradcheck
    from fcis.models.fcis.head import _RowsLinear

    x = torch.randn(2, 3, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2 * 2 * 4, 3, 1, 1, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2 * 2 * 4, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: _RowsLinear.apply(*t, 2, 4), (x, w, b))
    conv = torch.nn.functional.conv2d(x, w, b)                                # (N, (class, io, p), H, W)
    want = conv.view(2, 2, 2, 4, 6).permute(0, 4, 3, 2, 1).reshape(2, 6, 16)  # (N, H·W, (p, io, class))
    torch.testing.assert_close(_RowsLinear.apply(x, w, b, 2, 4), want, rtol=0, atol=1e-12)


def test_scores_after_releasing_the_maps_take_the_mean_of_max_path(model):
    """Training's gradient pass releases the maps as it assembles (release_maps=True); its class
    logits still come from the hand-written mean of max (not autograd's torch.maximum, which was
    the slow path taken by mistake), with the same values and gradients."""
    model.train()
    gen = torch.Generator().manual_seed(0)
    c5 = torch.rand(1, model.backbone.c5_channels, 6, 8, generator=gen)
    rois = torch.tensor([[0.0, 4.0, 8.0, 60.0, 70.0], [0.0, 20.0, 10.0, 90.0, 40.0]])
    results = []
    for release in (False, True):
        maps = model.head(c5)
        scores = model.head.score_rois(maps, rois, release_maps=release)
        assert scores.class_logits.grad_fn.name() == "_MeanOfMaxBackward"
        assert (maps.inside_outside_rows is None) == release
        model.zero_grad(set_to_none=True)
        (scores.class_logits.square().sum() + scores.mask_logits.sum()).backward()
        results.append((scores.class_logits.detach(), model.head.inside_outside.weight.grad.clone()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_detection_scores_equal_score_rois(model, monkeypatch):
    """Inference scores RoIs in chunks, reduced at once (class logits; mask logits as inside -
    outside): the values of score_rois, chunk boundaries or not; with autograd on it is score_rois."""
    import fcis.models.fcis.head as head_module

    model.eval()
    gen = torch.Generator().manual_seed(1)
    c5 = torch.rand(2, model.backbone.c5_channels, 6, 8, generator=gen)
    xy = torch.rand(37, 2, generator=gen) * 80
    rois = torch.cat([torch.randint(0, 2, (37, 1), generator=gen).float(), xy,
                      xy + 8 + torch.rand(37, 2, generator=gen) * 40], dim=1)
    with torch.no_grad():
        maps = model.head(c5)
        want = model.head.score_rois(maps, rois)
        for chunk in (16, 5):
            monkeypatch.setattr(head_module, "_DETECT_CHUNK", chunk)
            got = model.head.score_rois_for_detection(maps, rois)
            torch.testing.assert_close(got.class_logits, want.class_logits, rtol=0, atol=1e-6)
            torch.testing.assert_close(got.mask_diff, want.mask_logits[:, :, 0] - want.mask_logits[:, :, 1],
                                       rtol=0, atol=0)
            torch.testing.assert_close(got.box_deltas, want.box_deltas, rtol=0, atol=0)
            torch.testing.assert_close(got.mask_probs(), want.mask_probs(), rtol=0, atol=1e-6)  # sigmoid: by layout
            lazy = got.lazy_mask_probs().select(torch.tensor([3, 7, 30]))
            torch.testing.assert_close(lazy[torch.tensor([0, 2]), torch.tensor([1, 2])],
                                       want.mask_probs()[torch.tensor([3, 30]), torch.tensor([1, 2])], rtol=0, atol=1e-6)
    graded = model.head.score_rois_for_detection(model.head(c5), rois)          # autograd on
    assert graded.class_logits.grad_fn is not None


def _random_training_rois(model, n: int, seed: int):
    """conv5 features of one 6×8 map, ``n`` random RoIs on it, labels in 0..3, box targets and
    21×21 mask targets: the inputs of per_roi_losses for the head of ``model``."""
    gen = torch.Generator().manual_seed(seed)
    c5 = torch.rand(1, model.backbone.c5_channels, 6, 8, generator=gen)
    xy = torch.rand(n, 2, generator=gen) * 80
    rois = torch.cat([torch.zeros(n, 1), xy, xy + 8 + torch.rand(n, 2, generator=gen) * 40], dim=1)
    labels = torch.randint(0, 4, (n,), generator=gen)
    box_targets = torch.randn(n, 4, generator=gen)
    masks = (torch.rand(n, 21, 21, generator=gen) > 0.5).float()
    return c5, rois, labels, box_targets, masks


def test_ohem_losses_from_detection_scores_equal_those_from_roi_scores(model):
    """OHEM's gradient-free pass scores RoIs as inference does (DetectionScores); its per-RoI
    losses are those of the gradient pass's RoIScores, so the same RoIs are chosen."""
    from fcis.models.fcis.losses import per_roi_losses

    model.train()
    c5, rois, labels, box_targets, masks = _random_training_rois(model, 40, seed=2)
    with torch.no_grad():
        maps = model.head(c5)
        want = per_roi_losses(model.head.score_rois(maps, rois), labels, box_targets, masks, 1.0)
        got = per_roi_losses(model.head.score_rois_for_detection(maps, rois), labels, box_targets, masks, 1.0)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_picked_label_logits_give_the_same_losses_and_gradients(model):
    """The gradient pass assembles 16 RoIs at a time and keeps only the labels' mask logits with
    the class scores (_AssembleAndPick); losses and gradients equal those of assembling every
    mask logit and indexing them; gradcheck of the function itself in float64 (ties included)."""
    from fcis.models.fcis.head import _AssembleAndPick
    from fcis.models.fcis.losses import per_roi_losses
    from fcis.ops import ps_roi_assemble_rows

    model.train()
    c5, rois, labels, box_targets, masks = _random_training_rois(model, 30, seed=4)
    results = []
    for pick in (False, True):
        model.zero_grad(set_to_none=True)
        scores = model.head.score_rois(model.head(c5), rois, labels=labels if pick else None)
        assert (scores.label_mask_logits is not None) == pick and (scores.mask_logits is None) == pick
        cls, mask, box = per_roi_losses(scores, labels, box_targets, masks, 1.0)
        (cls.sum() + 3.0 * mask.sum() + box.sum()).backward()
        results.append((cls.detach(), mask.detach(), model.head.inside_outside.weight.grad.clone(),
                        model.head.reduce.weight.grad.clone()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    gen = torch.Generator().manual_seed(4)
    table = torch.randn(2, 5, 6, 4, 2 * 3, dtype=torch.float64, generator=gen)   # k = 2, C+1 = 3
    table[0, 1:3, 1:4, :, :3] = table[0, 1:3, 1:4, :, 3:]                  # ties between inside and outside
    boxes = torch.tensor([[0, 0.5, 1.0, 4.0, 3.5], [1, 1.0, 0.0, 5.5, 4.0], [0, 0.0, 0.0, 2.0, 2.0],
                          [1, 2.0, 1.0, 3.0, 4.5], [0, 1.0, 1.0, 5.0, 4.0]], dtype=torch.float64)
    labels5 = torch.tensor([0, 2, 1, 1, 0])
    cls_got, picked = _AssembleAndPick.apply(table, boxes, labels5, 2, 4, 1.0, 2, 2)   # chunks of 2 RoIs
    io = ps_roi_assemble_rows(table, boxes, 2, 4, 1.0, 2).view(5, 2, 3, 4, 4)
    torch.testing.assert_close(cls_got, torch.maximum(io[:, 0], io[:, 1]).mean(dim=(2, 3)), rtol=0, atol=1e-12)
    torch.testing.assert_close(picked, io[torch.arange(5), :, labels5], rtol=0, atol=1e-12)
    table.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: _AssembleAndPick.apply(t, boxes, labels5, 2, 4, 1.0, 2, 2), (table,))


def test_per_class_nms_stops_at_the_kept_count_with_the_same_detections():
    """first_kept_nms with class indices gives the per-class NMS's (torchvision's nms run class by
    class) first k kept boxes in score order, over several blocks and with every block boundary
    inside a class's run; select_detections keeps those."""
    from torchvision.ops import nms

    from fcis.models.nms import first_kept_nms

    gen = torch.Generator().manual_seed(5)
    xy = torch.rand(2400, 2, generator=gen) * 300
    boxes = torch.cat([xy, xy + torch.rand(2400, 2, generator=gen) * 120 + 1], 1)
    scores = torch.rand(2400, generator=gen)                                # no ties
    classes = torch.randint(0, 7, (2400,), generator=gen)
    for iou in (0.3, 0.7):
        kept = torch.cat([torch.nonzero(classes == c).flatten()[nms(boxes[classes == c], scores[classes == c], iou)]
                          for c in range(7)])
        want = kept[scores[kept].sort(descending=True)[1]]
        for k in (1, 100, 500, 100000):
            for block in (64, 512):
                got = first_kept_nms(boxes, scores, iou, k, block=block, idxs=classes)
                assert torch.equal(got, want[:k])
    assert first_kept_nms(boxes[:0], scores[:0], 0.3, 100, idxs=classes[:0]).shape == (0,)
