"""COCO-format instance segmentation dataset and its collate function."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from ..image_io import ImageReadError, read_rgb
from .cocofile import check_annotation, load_coco_json
from .errors import DataWarning, data_error
from .index import CocoIndex, build_index
from .transforms import resized_size

Target = dict[str, Any]
_PYCOCOTOOLS_NUMPY2 = "__array__ implementation doesn't accept a copy keyword"
Transforms = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]


def read_image(path: str | os.PathLike) -> tuple[np.ndarray | None, str | None]:
    """Read an image file as RGB ``uint8[H, W, 3]``; returns ``(array, None)`` or ``(None, reason)``.

    The picture as displayed: EXIF orientation applied (annotations refer to the rotated picture),
    16-bit images scaled to 8 bits; see :func:`fcis.image_io.read_rgb`, the one reader of the package.
    """
    try:
        return read_rgb(path), None
    except ImageReadError as e:
        return None, e.reason


def _tight_box(mask: np.ndarray) -> list[float] | None:
    """xyxy pixel-edge box of a non-empty ``[H, W]`` mask (x2 = last column + 1), else None."""
    cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
    if cols.size == 0:
        return None
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def _nearest(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """``mask`` ``[H, W]`` resampled to ``[h, w]`` by nearest neighbour (pixel centres)."""
    rows = np.minimum(((np.arange(h) + 0.5) * (mask.shape[0] / h)).astype(np.int64), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * (mask.shape[1] / w)).astype(np.int64), mask.shape[1] - 1)
    return mask[rows[:, None], cols[None, :]]


class CocoInstances(Dataset):
    """Instance segmentation samples from a COCO instances JSON file.

    Each item is ``(image, target)`` or ``None`` for an unreadable image in ``"skip"`` mode:

    - ``image``: ``float32[3, H, W]`` RGB in [0, 1];
    - ``target["boxes"]``: ``float32[N, 4]`` xyxy absolute pixels, the tight box of the decoded
      mask (pixel edges, so ``x2 = last column + 1``), or the COCO ``bbox`` when the mask is empty;
    - ``target["labels"]``: ``int64[N]`` contiguous labels in ``1..num_classes``;
    - ``target["masks"]``: ``uint8[N, H, W]`` in {0, 1};
    - ``target["image_id"]``: ``int``, the COCO image id.

    ``H, W`` are the photo's size, or with ``input_size`` the network's input size (below).
    Crowd annotations (``iscrowd=1``) are left out of the target (COCOeval handles them from
    :attr:`coco`). Images without annotations are kept and give N = 0. Category ids (any integers,
    any order) map to labels ``1..C`` in increasing id order.

    Args:
        json_path: COCO instances JSON (``images``, ``annotations``, ``categories``).
        image_root: folder of the images; default: the JSON's folder. Image path =
            ``image_root / file_name``.
        transforms: ``(image, target) -> (image, target)``, applied last (see ``build_transforms``).
        on_bad_sample: ``"skip"`` drops bad annotations at construction and returns ``None`` for bad
            images (recorded in :attr:`bad_samples`, warned once); ``"raise"`` raises
            :class:`DataError`. A structurally broken file (unknown category...) always raises.
        input_size: ``(min_size, max_size)`` for training: the image is resized to
            :func:`fcis.data.transforms.resized_size` and the masks are rasterised directly at that
            size (polygons scaled before rasterising, RLE masks decoded one at a time and resampled),
            so a sample's memory follows the network's input, not the photo; ``transforms`` then see
            the input-scale sample. None (evaluation): the photo's size.

    The file is held as flat arrays (:attr:`index`, a :class:`fcis.data.index.CocoIndex`): no
    Python object per annotation, so DataLoader workers share it without copying it. :attr:`coco`,
    a ``pycocotools`` COCO object of the file minus the dropped annotations (COCOeval's ground
    truth), is built on first access. With DataLoader workers, images found bad inside a worker
    are recorded in that worker's copy of the dataset only.
    """

    def __init__(
        self,
        json_path: str | os.PathLike,
        image_root: str | os.PathLike | None = None,
        transforms: Transforms | None = None,
        on_bad_sample: str = "skip",
        *,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        if on_bad_sample not in ("skip", "raise"):
            raise ValueError(f"on_bad_sample must be 'skip' or 'raise', got {on_bad_sample!r}")
        self.json_path = Path(json_path)
        self.image_root = Path(image_root) if image_root is not None else self.json_path.parent
        self.transforms = transforms
        self.on_bad_sample = on_bad_sample
        self.input_size = input_size
        self.bad_samples: list[tuple[str, str]] = []
        self._bad_images: set[int] = set()  # image ids
        self._coco: COCO | None = None

        build = build_index(self.json_path, on_bad=on_bad_sample)
        self.index: CocoIndex = build.index
        if build.dropped:
            self.bad_samples.extend((str(self.json_path), r) for r in build.dropped)
            shown = "; ".join(build.dropped[:3]) + ("; ..." if len(build.dropped) > 3 else "")
            warnings.warn(f"{self.json_path}: dropped {len(build.dropped)} bad annotation(s): {shown}",
                          DataWarning, stacklevel=2)

        ix = self.index
        order = np.argsort(ix.category_ids, kind="stable")
        self.num_classes: int = len(order)
        self.class_names: list[str] = [ix.category_names[i] for i in order]
        self.label_to_cat_id: dict[int, int] = {lab + 1: int(ix.category_ids[i]) for lab, i in enumerate(order)}
        self.cat_id_to_label: dict[int, int] = {c: lab for lab, c in self.label_to_cat_id.items()}
        self.image_ids: list[int] = ix.image_ids.tolist()
        #: int64[A]: the label of each annotation row of :attr:`index`
        self.ann_labels: np.ndarray = np.searchsorted(ix.category_ids[order], ix.ann_category) + 1

    @property
    def coco(self) -> COCO:
        """pycocotools' COCO of the file minus the dropped annotations, built on first access
        (the file is read again, each annotation cleaned by ``check_annotation`` as the index's)."""
        if self._coco is None:
            self._coco = self._build_coco()
        return self._coco

    @coco.setter
    def coco(self, value: COCO) -> None:
        self._coco = value

    def _build_coco(self) -> COCO:
        data = load_coco_json(self.json_path)
        sizes = {img["id"]: (img["height"], img["width"]) for img in data["images"]}
        kept = [c for c in (check_annotation(a, *sizes[a["image_id"]])[0] for a in data["annotations"])
                if c is not None]
        if [a["id"] for a in kept] != self.index.ann_ids.tolist():
            raise data_error(self.json_path, "the file changed after the dataset was built from it; "
                                             "build the dataset again")
        coco = COCO()
        coco.dataset = {**data, "annotations": kept}
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_coco"] = None   # rebuilt on demand: a worker seldom needs it, and it is large
        return state

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_path(self, index: int) -> Path:
        """Path of the image of sample ``index``."""
        return self.image_root / self.index.file_name(index)

    def image_size(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of sample ``index``'s photo, as the annotation file gives it."""
        return int(self.index.heights[index]), int(self.index.widths[index])

    def sample_size(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of sample ``index``'s image as returned: the input size with
        :attr:`input_size`, else the photo's (before ``transforms``)."""
        h, w = self.image_size(index)
        return resized_size(h, w, *self.input_size) if self.input_size is not None else (h, w)

    def _bad_image(self, image_id: int, path: Path, reason: str) -> None:
        if self.on_bad_sample == "raise":
            raise data_error(path, reason)
        if image_id not in self._bad_images:
            self._bad_images.add(image_id)
            self.bad_samples.append((str(path), reason))
            warnings.warn(f"{path}: {reason}; sample skipped", DataWarning, stacklevel=3)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target] | None:
        image_id = self.image_ids[index]
        if image_id in self._bad_images:  # found bad before: skip without re-reading or re-warning
            return None
        path = self.image_path(index)
        array, reason = read_image(path)
        if array is None:
            assert reason is not None  # read_image says why it read nothing
            self._bad_image(image_id, path, reason)
            return None
        h, w = self.image_size(index)
        if array.shape[:2] != (h, w):
            got = f"{array.shape[1]}x{array.shape[0]}"
            self._bad_image(image_id, path, f"image size {got} does not match the annotation file ({w}x{h})")
            return None
        with warnings.catch_warnings():   # read-only pixels: only read here, never written
            warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
            chw = torch.from_numpy(array).permute(2, 0, 1)   # uint8, a view
        size = self.sample_size(index)
        if size != (h, w):   # resized as uint8: the float copy is made at the input size only
            chw = F.resize(chw, list(size), antialias=True)
        image = chw.contiguous().float().div_(255)
        del array, chw
        target = self.target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def target(self, index: int) -> Target:
        """The target of sample ``index`` without reading its image (see the class docstring), at
        :meth:`sample_size`."""
        ix = self.index
        h, w = self.image_size(index)
        nh, nw = self.sample_size(index)
        rows = ix.annotations_of(index)
        rows = rows[~ix.ann_crowd[rows]]
        masks = np.zeros((len(rows), nh, nw), dtype=np.uint8)
        boxes = np.zeros((len(rows), 4), dtype=np.float32)
        sx, sy = nw / w, nh / h
        for k, a in enumerate(rows):
            masks[k] = self._mask(int(a), h, w, nh, nw)
            box = _tight_box(masks[k])
            if box is None:  # polygon too thin to cover a pixel centre: fall back to the COCO box
                x, y, bw, bh = (float(v) for v in ix.ann_bbox[a])
                box = [max(x * sx, 0.0), max(y * sy, 0.0), min((x + bw) * sx, nw), min((y + bh) * sy, nh)]
            boxes[k] = box
        return {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(self.ann_labels[rows].astype(np.int64)),
            "masks": torch.from_numpy(masks),
            "image_id": int(self.image_ids[index]),
        }

    def _mask(self, a: int, h: int, w: int, nh: int, nw: int) -> np.ndarray:
        """Annotation row ``a`` of an ``h x w`` photo as a ``uint8[nh, nw]`` mask: polygons
        rasterised at that size (scaled first), an RLE decoded at the photo's size and resampled."""
        with warnings.catch_warnings():  # pycocotools' decode trips a numpy 2 DeprecationWarning
            warnings.filterwarnings("ignore", _PYCOCOTOOLS_NUMPY2, DeprecationWarning)
            counts = self.index.rle_counts(a)
            if counts is not None:
                mask = mask_utils.decode({"size": [h, w], "counts": counts})
                return mask if (nh, nw) == (h, w) else _nearest(mask, nh, nw)
            parts = self.index.polygons(a)
            if (nh, nw) != (h, w):
                scale = np.array([nw / w, nh / h])
                parts = [(p.reshape(-1, 2) * scale).ravel() for p in parts]
            return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(parts, nh, nw)))


def collate(batch: list[tuple[torch.Tensor, Target] | None]) -> tuple[list[torch.Tensor], list[Target]]:
    """DataLoader ``collate_fn``: drop ``None`` samples, return ``(images, targets)`` lists.

    Images keep their own sizes (``float32[3, H_i, W_i]``); the batch may be empty.
    """
    kept = [s for s in batch if s is not None]
    return [s[0] for s in kept], [s[1] for s in kept]
