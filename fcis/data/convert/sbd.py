"""SBD (Semantic Boundaries Dataset, Hariharan et al. 2011) to COCO JSON: the FCIS paper's VOC
2012 instance masks (train 5623 / val 5732 images in the paper's SDS split; the release's
``train.txt`` / ``val.txt`` hold 8498 / 2857).

Release layout (``benchmark_RELEASE/dataset/``, which may also be given as its parent)::

    img/<id>.jpg      the images
    inst/<id>.mat     GTinst: Segmentation (H×W, pixel = instance index 1..N, 0 background),
                      Categories (N×1, VOC class 1..20 of each instance), Boundaries
    cls/<id>.mat      GTcls: the semantic (class) labels; checked against Categories if present
    train.txt, val.txt  one image id per line

Reading ``.mat`` files needs scipy (``pip install "fcis[sbd]"``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import data_error
from ._common import file_name_for, image_record, image_size, mask_record, write_coco

__all__ = ["VOC_CLASSES", "convert_sbd", "read_sbd_instances"]

#: The 20 PASCAL VOC classes, in their index order (category id = index + 1).
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")


def _dataset_dir(root: Path) -> Path:
    for candidate in (root, root / "dataset", root / "benchmark_RELEASE" / "dataset"):
        if (candidate / "inst").is_dir() and (candidate / "img").is_dir():
            return candidate
    raise data_error(root, "not an SBD folder: expected img/ and inst/ here or in dataset/ "
                           "or benchmark_RELEASE/dataset/")


def read_sbd_instances(mat_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(segmentation (H, W) int, categories (N,) int in 1..20)`` of one ``inst/<id>.mat``.

    DataError (naming the file) when it is missing or unreadable, has no ``GTinst`` struct or one
    without ``Segmentation`` / ``Categories``, or holds an invalid category."""
    try:
        from scipy.io import loadmat
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError('reading SBD .mat files needs scipy: pip install "fcis[sbd]"') from None
    path = Path(mat_path)
    if not path.is_file():
        raise data_error(path, "instance annotation file not found")
    try:
        raw = loadmat(str(path))
    except Exception as e:
        raise data_error(path, f"cannot read .mat file ({type(e).__name__}: {e})") from None
    st = raw.get("GTinst")
    names = getattr(getattr(st, "dtype", None), "names", None) or ()
    if st is None or not {"Segmentation", "Categories"} <= set(names) or st.size != 1:
        raise data_error(path, "malformed SBD annotation: expected a GTinst struct with fields "
                               f"Segmentation and Categories, found {sorted(names) or 'no GTinst struct'}")
    seg = np.asarray(st["Segmentation"].flat[0])
    cats = np.asarray(st["Categories"].flat[0]).reshape(-1)
    if seg.ndim != 2:
        raise data_error(path, f"GTinst.Segmentation must be a 2-D instance map, got shape {seg.shape}")
    if cats.size and (not np.issubdtype(cats.dtype, np.number) or np.any(cats != np.round(cats))
                      or cats.min() < 1 or cats.max() > len(VOC_CLASSES)):
        raise data_error(path, f"GTinst.Categories must be VOC class ids 1..{len(VOC_CLASSES)}, got {cats.tolist()}")
    return seg.astype(np.int64), cats.astype(np.int64)


def _read_classes(path: Path) -> np.ndarray | None:
    """GTcls.Segmentation (H, W) of ``cls/<id>.mat``, or None when the file is absent."""
    if not path.is_file():
        return None
    from scipy.io import loadmat

    try:
        st = loadmat(str(path)).get("GTcls")
        return np.asarray(st["Segmentation"].flat[0]).astype(np.int64)
    except Exception as e:
        raise data_error(path, f"malformed SBD class annotation: expected a GTcls struct with a "
                               f"Segmentation field ({type(e).__name__}: {e})") from None


def convert_sbd(sbd_root: str | os.PathLike, out_json: str | os.PathLike, *, split: str = "train",
                ids_file: str | os.PathLike | None = None) -> Path:
    """Convert one split of SBD to a COCO instances JSON with the 20 VOC categories; return its path.

    Instance k of image ``<id>`` is the pixels ``GTinst.Segmentation == k`` with class
    ``GTinst.Categories[k-1]``; masks are stored as compressed RLE. Value 255 (VOC's "void")
    is ignored if present. Where ``cls/<id>.mat`` exists, each instance's pixels must carry its
    class in ``GTcls.Segmentation`` (the official loader takes the class from there).
    ``ids_file`` replaces ``<split>.txt``, e.g. the SDS lists the paper uses (5623 / 5732 ids,
    msracver/FCIS ``data/VOCdevkit/VOCSDS/ImageSets/Main``).
    ``file_name`` is relative to the JSON's folder. DataError for a
    missing split list, image or ``.mat`` file, a malformed struct, a map whose size differs from
    the image's, a pixel of an instance without a category, or an instance without pixels.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    root = _dataset_dir(Path(sbd_root))
    list_path = Path(ids_file) if ids_file is not None else root / f"{split}.txt"
    if not list_path.is_file():
        raise data_error(list_path, "split list not found (the SBD release has train.txt and val.txt)")
    ids = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
    if not ids:
        raise data_error(list_path, "split list is empty")
    out_json = Path(out_json)
    images: list[dict] = []
    annotations: list[dict] = []
    for name in ids:
        img_path = root / "img" / f"{name}.jpg"
        if not img_path.is_file():
            raise data_error(img_path, f"image of {list_path.name} entry {name!r} not found")
        width, height = image_size(img_path)
        mat_path = root / "inst" / f"{name}.mat"
        seg, cats = read_sbd_instances(mat_path)
        if seg.shape != (height, width):
            raise data_error(mat_path, f"instance map {seg.shape[1]}x{seg.shape[0]} does not match image "
                                       f"{img_path.name} ({width}x{height})")
        present = set(np.unique(seg).tolist()) - {0, 255}
        stray = sorted(k for k in present if k > len(cats))
        if stray:
            raise data_error(mat_path, f"instance ids {stray} have pixels but no category "
                                       f"(GTinst.Categories lists {len(cats)})")
        classes = _read_classes(root / "cls" / f"{name}.mat")
        if classes is not None and classes.shape != seg.shape:
            raise data_error(root / "cls" / f"{name}.mat", f"class map shape {classes.shape} differs from "
                                                          f"the instance map's {seg.shape}")
        image_id = len(images) + 1
        images.append(image_record(image_id, file_name_for(img_path, out_json), width, height))
        for k, cat in enumerate(cats.tolist(), start=1):
            if k not in present:
                raise data_error(mat_path, f"instance {k} ({VOC_CLASSES[cat - 1]}) has no pixels")
            mask = seg == k
            if classes is not None and set(np.unique(classes[mask]).tolist()) != {cat}:
                raise data_error(root / "cls" / f"{name}.mat", f"instance {k} is {VOC_CLASSES[cat - 1]} in "
                                 f"GTinst.Categories but its pixels have classes {np.unique(classes[mask]).tolist()} "
                                 "in GTcls.Segmentation")
            annotations.append(mask_record(len(annotations) + 1, image_id, int(cat), mask))
    categories = [{"id": i + 1, "name": n, "supercategory": "voc"} for i, n in enumerate(VOC_CLASSES)]
    return write_coco(out_json, images, annotations, categories)
