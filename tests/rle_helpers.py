"""Helpers shared by tests (not a test module)."""

import numpy as np


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
