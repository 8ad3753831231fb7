"""Helpers shared by tests (not a test module)."""

import numpy as np
import torch


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's crowd format: counts as a list of run lengths, column-major, starting with zeros."""
    flat = mask.flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


def box_target(h: int, w: int, boxes: list, labels: list) -> dict:
    """A training target whose masks fill the (integer xyxy) boxes: boxes (G, 4), labels (G,),
    masks (G, H, W) uint8."""
    masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
    for m, (x1, y1, x2, y2) in zip(masks, boxes):
        m[y1:y2, x1:x2] = 1
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64), "masks": masks}


def assert_empty_image_trains(losses: dict, head: torch.nn.Module) -> None:
    """The losses of an image without objects: no mask, box or RPN box loss, a positive
    classification loss (background), and a backward pass that gives ``head`` finite gradients."""
    assert losses["loss_mask"].item() == 0.0 and losses["loss_box_reg"].item() == 0.0
    assert losses["loss_rpn_box_reg"].item() == 0.0
    assert losses["loss_classifier"].item() > 0
    sum(losses.values()).backward()
    grads = [p.grad for p in head.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
