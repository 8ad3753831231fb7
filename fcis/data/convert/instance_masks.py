"""Instance-id PNG masks (PennFudanPed layout) to COCO JSON."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...image_io import ImageReadError, verified_open
from ..errors import data_error
from ._common import file_name_for, image_record, image_size, list_images, mask_record, write_coco


def _read_mask(path: Path) -> np.ndarray:
    """Instance ids ``[H, W]`` of a mask file whose integrity ``PIL.Image.verify`` checked (a PNG
    with zeroed bytes still decodes, into garbage; its chunk checksums give it away)."""
    try:
        with verified_open(path, "mask") as im:
            mode, arr = im.mode, np.asarray(im)
    except ImageReadError as e:
        raise data_error(path, e.reason) from None
    if arr.ndim != 2:
        raise data_error(path, f"instance mask must have one channel (pixel value = instance id), got mode {mode}")
    return arr


def convert_instance_masks(
    image_dir: str | os.PathLike,
    mask_dir: str | os.PathLike,
    out_json: str | os.PathLike,
    *,
    mask_suffix: str = "_mask",
    category: str = "object",
) -> Path:
    """Convert images + instance-id masks to a one-class COCO instances JSON; return its path.

    For each image ``<stem>.<ext>`` in ``image_dir`` the mask is ``mask_dir/<stem><mask_suffix>.png``,
    a single-channel PNG where pixel value k > 0 is instance k and 0 is background. Each instance
    becomes an annotation with a compressed RLE mask (category id 1 named ``category``).
    ``file_name`` is stored relative to the JSON's folder, so ``CocoInstances(out_json)`` finds the
    images. Raises DataError for a missing, unreadable, multi-channel or wrongly sized mask.
    """
    out_json = Path(out_json)
    same_dir = os.path.abspath(image_dir) == os.path.abspath(mask_dir)
    images: list[dict] = []
    annotations: list[dict] = []
    for path in list_images(image_dir):
        if same_dir and mask_suffix and path.stem.endswith(mask_suffix):
            continue
        image_id = len(images) + 1
        mask_path = Path(mask_dir) / f"{path.stem}{mask_suffix}.png"
        if not mask_path.is_file():
            raise data_error(path, f"no instance mask file (expected {mask_path})")
        width, height = image_size(path)
        ids = _read_mask(mask_path)
        if ids.shape != (height, width):
            raise data_error(mask_path, f"mask size {ids.shape[1]}x{ids.shape[0]} does not match "
                                        f"image size {width}x{height} of {path.name}")
        images.append(image_record(image_id, file_name_for(path, out_json), width, height))
        for k in np.unique(ids):
            if k > 0:
                annotations.append(mask_record(len(annotations) + 1, image_id, 1, ids == k))
    return write_coco(out_json, images, annotations, [{"id": 1, "name": category}])
