"""Data layer: COCO-format instance datasets, transforms, synthetic shapes, converters.

- :class:`CocoInstances`: ``(image float32[3, H, W], target)`` samples from a COCO JSON;
- :func:`build_transforms`: train (flip + resize + sanitize) / eval (identity) transforms;
- :func:`collate`: DataLoader ``collate_fn`` dropping ``None`` (bad) samples;
- :func:`make_shapes`: synthetic circle/square/triangle dataset in COCO format;
- :mod:`fcis.data.convert`: PNG instance masks, VIA and YOLO-seg to COCO JSON;
- :class:`DataError`: every bad-input error (message ``"<file>: <problem>"``).
"""

from .coco import CocoInstances, collate
from .errors import DataError, DataWarning
from .shapes import make_shapes
from .transforms import build_transforms

__all__ = ["CocoInstances", "DataError", "DataWarning", "build_transforms", "collate", "make_shapes"]
