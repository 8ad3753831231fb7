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
