"""End to end: FCIS (ResNet-18, random init) overfits four generated images on the CPU.

The loss must fall and every ground-truth instance must be found with mask IoU > 0.7 on average.
About 1-2 minutes on 2 cores.
"""

import pytest
import torch

from fcis.models import fcis_resnet18


def _images(n: int, size: int = 128, seed: int = 0):
    """Ellipses (class 1, red) and rectangles (class 2, blue) on a noisy grey background."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, targets = [], []
    for _ in range(n):
        img = torch.rand(3, size, size, generator=g) * 0.2 + 0.4
        masks = []
        for cls in (1, 2):
            w, h = torch.randint(30, 60, (2,), generator=g).tolist()
            x0 = int(torch.randint(0, size - w, (1,), generator=g))
            y0 = int(torch.randint(0, size - h, (1,), generator=g))
            if cls == 1:
                m = ((xx - x0 - w / 2) / (w / 2)) ** 2 + ((yy - y0 - h / 2) / (h / 2)) ** 2 <= 1
            else:
                m = (xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)
            for earlier in masks:                   # the later shape occludes
                earlier &= ~m
            img[:, m] = torch.tensor([0.9, 0.1, 0.1] if cls == 1 else [0.1, 0.2, 0.9])[:, None]
            masks.append(m)
        masks = torch.stack(masks)
        boxes = []
        for m in masks:
            ys, xs = torch.nonzero(m, as_tuple=True)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        images.append(img)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor([1, 2]),
                        "masks": masks.to(torch.uint8)})
    return images, targets


def _best_iou(pred: dict, gt_mask: torch.Tensor, label: int, threshold: float) -> float:
    sel = (pred["labels"] == label) & (pred["scores"] >= 0.3)
    if not sel.any():
        return 0.0
    masks = pred["masks"][sel, 0] >= threshold
    inter = (masks & gt_mask).flatten(1).sum(1).float()
    union = (masks | gt_mask).flatten(1).sum(1).float()
    return float((inter / union).max())


@pytest.mark.slow
def test_fcis_overfits_a_few_images():
    torch.manual_seed(0)
    torch.set_flush_denormal(True)          # as the trainer does: denormals stall CPU arithmetic
    images, targets = _images(4)
    model = fcis_resnet18(num_classes=2, min_size=128, max_size=128, anchor_sizes=(32, 64),
                          rpn_pre_nms_top_n_test=1000)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=1e-4)
    model.train()
    history = []
    for it in range(250):
        idx = [it % 4, (it + 1) % 4]
        losses = model([images[i] for i in idx], [targets[i] for i in idx])
        loss = sum(losses.values())
        assert torch.isfinite(loss), f"non-finite loss at iteration {it}: {losses}"
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss))
    first, last = sum(history[:10]) / 10, sum(history[-10:]) / 10
    assert last < 0.3 * first, f"loss fell only from {first:.3f} to {last:.3f}"

    model.eval()
    with torch.no_grad():
        preds = model(images)
    ious = [_best_iou(p, gm.bool(), int(gl), model.config.mask_threshold)
            for p, t in zip(preds, targets) for gm, gl in zip(t["masks"], t["labels"])]
    assert min(ious) > 0.3, f"an instance was missed: IoUs {ious}"
    assert sum(ious) / len(ious) > 0.7, f"mean mask IoU {sum(ious) / len(ious):.3f}: {ious}"
