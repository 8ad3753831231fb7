"""Converters from common annotation layouts to COCO instances JSON (read by ``CocoInstances``).

Each returns the written JSON path and raises :class:`fcis.data.DataError` (file + problem) for
malformed input. Image ``file_name`` entries are stored relative to the JSON's folder.
"""

from .instance_masks import convert_instance_masks
from .sbd import VOC_CLASSES, convert_sbd
from .via import convert_via
from .yolo_seg import convert_yolo_seg

__all__ = ["convert_instance_masks", "convert_via", "convert_yolo_seg", "convert_sbd", "VOC_CLASSES"]
