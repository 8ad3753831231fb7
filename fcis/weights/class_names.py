"""Class names of the datasets the released FCIS models were trained on, in their label order.

- COCO (80 classes): labels 1..80 of the official FCIS COCO model (``lib/dataset/coco.py`` of
  msracver/FCIS takes ``coco.getCatIds()``, the category order of the instances file, which is by
  ascending id) and of ChainerCV's (``coco_instance_segmentation_label_names``, the same order).
  ``COCO_CATEGORY_IDS[i]`` is the original COCO category id of ``COCO_CLASSES[i]`` (1..90 with
  gaps: the ids of the 2014/2017 annotation files), so results can be written for COCO's evaluator.
- VOC (20 classes): labels 1..20 of the official VOC/SBD model (``lib/dataset/pascal_voc.py``)
  and ChainerCV's ``sbd_instance_segmentation_label_names``.

Label 0 is the background in both models and is not listed here.
"""

from __future__ import annotations

__all__ = ["COCO_CLASSES", "COCO_CATEGORY_IDS", "VOC_CLASSES", "class_names_of"]

_COCO = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
    (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"), (13, "stop sign"),
    (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"),
    (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"),
    (36, "snowboard"), (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"),
    (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"),
    (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"),
    (67, "dining table"), (70, "toilet"), (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"),
    (76, "keyboard"), (77, "cell phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"),
    (89, "hair drier"), (90, "toothbrush"),
)

#: The 80 COCO classes, label 1 first (``COCO_CLASSES[label - 1]``).
COCO_CLASSES: tuple[str, ...] = tuple(name for _, name in _COCO)
#: Their original COCO category ids, in the same order.
COCO_CATEGORY_IDS: tuple[int, ...] = tuple(cat_id for cat_id, _ in _COCO)

#: The 20 PASCAL VOC classes, label 1 first, spelt as the official code and ChainerCV spell them.
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def class_names_of(dataset: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """``(names, category ids)`` of ``"coco"`` (original ids) or ``"voc"`` (ids 1..20)."""
    key = dataset.strip().lower()
    if key == "coco":
        return COCO_CLASSES, COCO_CATEGORY_IDS
    if key == "voc":
        return VOC_CLASSES, tuple(range(1, len(VOC_CLASSES) + 1))
    raise ValueError(f"unknown class list {dataset!r}: choose coco or voc")
