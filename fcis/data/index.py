"""A COCO instances file as flat NumPy arrays: no Python object per annotation or per image.

:func:`build_index` reads a COCO JSON once and returns a :class:`CocoIndex`: the images (id,
height, width, file name bytes with offsets) and the kept annotations (image row, category id,
``bbox``, ``area``, ``iscrowd``, the polygon parts as one ``float32`` coordinate buffer with
offsets, compressed RLE counts as one byte buffer with offsets), grouped by image. Training, the
data summary and the anchor fit read it; pycocotools' COCO object is built only where evaluation
needs ground truth (:attr:`fcis.data.CocoInstances.coco`).

Why: DataLoader workers share the dataset with the main process by ``fork``; reading a Python
object writes its reference count, which copies the page holding it into the reading worker (the
copy-on-read growth: every worker ends up with its own copy of every annotation it touched).
NumPy buffers are never written, so all processes keep sharing one copy. The arrays also make
the data summary and the anchor fit vectorised.

Parsing: the ``images`` and ``annotations`` arrays are parsed a few MB at a time (never the whole
tree of Python objects at once) with orjson when it is installed, else the standard library's parser. Checking: as
:func:`fcis.data.cocofile.load_coco_json` and :func:`~fcis.data.cocofile.check_annotation` do,
with the same messages in the same order. The common annotation (integer ids, polygon parts of at
least 3 points, a 4-number ``bbox``, a number ``area``) is checked in bulk, one chunk at a time;
any annotation that the bulk checks cannot clear (an RLE, a missing ``bbox``, a degenerate part, a
box outside its image, a value that is no number...) goes to ``check_annotation`` itself, which
decides and cleans it exactly as before.
"""

from __future__ import annotations

import gc
import json
import os
import re
from array import array
from dataclasses import dataclass, fields
from typing import Any, Callable

import numpy as np
from pycocotools import mask as mask_utils

from .cocofile import check_annotation, read_json
from .errors import data_error

__all__ = ["CocoIndex", "IndexBuild", "build_index"]

_WS = re.compile(r"[ \t\n\r]*")
_SCAN = json.JSONDecoder().scan_once   # type: ignore[attr-defined]  # the C scanner: (text, i) -> (value, end)
try:   # orjson, when installed (the `fast` extra), parses a chunk in about half the time
    import orjson as _orjson

    _loads: Callable[[str], Any] = _orjson.loads   # its JSONDecodeError is json's
except ImportError:   # pragma: no cover - the standard library's parser
    _loads = json.loads
_NUMBER = {int, float}
_CHUNK_CHARS = 1 << 22   # characters of an array parsed at a time (about 9000 COCO annotations)
_FED = object()          # the value of a top-level key whose array was fed in chunks
_BETWEEN = re.compile(r"\}[ \t\n\r]*,[ \t\n\r]*\{")   # where two objects of an array may meet


@dataclass
class CocoIndex:
    """The images and kept annotations of a COCO file. Shapes: I images, A kept annotations (rows
    in file order), P polygon parts, C coordinate values.

    ``image_ann_order[image_ann_start[i]:image_ann_start[i + 1]]`` are image ``i``'s annotation
    rows in file order. Annotation ``a``'s polygon parts are ``ann_part_first[a] ...
    + ann_part_count[a] - 1`` (none for an RLE); part ``p`` is ``coords[part_start[p]:part_start[p
    + 1]]``, flat ``x1, y1, x2, y2, ...``. Its compressed RLE counts (of its image's size) are
    ``rle_bytes[rle_start[a]:rle_start[a] + rle_len[a]]`` (length 0 for a polygon)."""

    image_ids: np.ndarray        # int64[I]
    heights: np.ndarray          # int64[I]
    widths: np.ndarray           # int64[I]
    name_bytes: np.ndarray       # uint8[total]: the file names, UTF-8, one after the other
    name_start: np.ndarray       # int64[I + 1]
    category_ids: np.ndarray     # int64[K] in file order
    category_names: list[str]    # K names (the only Python objects, one per category)
    ann_ids: np.ndarray          # int64[A]
    ann_image: np.ndarray        # int64[A]: image row
    ann_category: np.ndarray     # int64[A]: category id
    ann_bbox: np.ndarray         # float64[A, 4]: x, y, w, h as in the file (or filled in)
    ann_area: np.ndarray         # float64[A] (NaN where the file's is no number)
    ann_crowd: np.ndarray        # bool[A]: iscrowd
    ann_part_first: np.ndarray   # int64[A]
    ann_part_count: np.ndarray   # int64[A]
    part_start: np.ndarray       # int64[P + 1]
    coords: np.ndarray           # float32[C]
    rle_start: np.ndarray        # int64[A]
    rle_len: np.ndarray          # int64[A]
    rle_bytes: np.ndarray        # uint8[total]
    image_ann_start: np.ndarray  # int64[I + 1]
    image_ann_order: np.ndarray  # int64[A]

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    @property
    def num_annotations(self) -> int:
        return len(self.ann_ids)

    def file_name(self, row: int) -> str:
        """The ``file_name`` of image ``row``."""
        raw = bytes(self.name_bytes[self.name_start[row]:self.name_start[row + 1]])
        return raw.decode("utf-8", "surrogatepass")

    def annotations_of(self, row: int) -> np.ndarray:
        """int64[n]: the annotation rows of image ``row``, in file order."""
        return self.image_ann_order[self.image_ann_start[row]:self.image_ann_start[row + 1]]

    def polygons(self, a: int) -> list[np.ndarray]:
        """The polygon parts of annotation ``a``: ``float64[2k]`` flat ``[x1, y1, ...]`` each."""
        first = int(self.ann_part_first[a])
        ends = self.part_start[first:first + int(self.ann_part_count[a]) + 1]
        return [self.coords[s:e].astype(np.float64) for s, e in zip(ends[:-1], ends[1:])]

    def rle_counts(self, a: int) -> bytes | None:
        """The compressed RLE counts of annotation ``a``, or None for a polygon."""
        n = int(self.rle_len[a])
        if n == 0:
            return None
        s = int(self.rle_start[a])
        return bytes(self.rle_bytes[s:s + n])

    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return sum(int(v.nbytes) for f in fields(self) if isinstance(v := getattr(self, f.name), np.ndarray))


@dataclass
class IndexBuild:
    """What :func:`build_index` found: the index and the dropped annotations' reasons
    (``"annotation <id>: <problem>"``, in file order)."""

    index: CocoIndex
    dropped: list[str]


# --- the parse ----------------------------------------------------------------------------------

def _skip(text: str, i: int) -> int:
    """The position after the blanks at ``i``."""
    m = _WS.match(text, i)
    return m.end() if m is not None else i


class _Malformed(Exception):
    """The streaming walk met something it does not handle; the whole-file parse decides."""


def _walk(text: str, feeds: dict[str, Any]) -> dict[str, Any]:
    """Walk the top-level JSON object of ``text``. The elements of the arrays of the keys in
    ``feeds`` are given to ``feeds[key](elements, span)`` a few MB at a time (``span``: where they
    stand in ``text``: ``json.loads("[" + text[a:b] + "]")`` gives them again), then
    ``feeds[key].close()`` is called; other values are returned (a fed key maps to :data:`_FED`).
    Raises :class:`_Malformed` on anything unexpected (invalid JSON, a top level that is no
    object, a repeated key): the caller then parses the file whole."""
    scan, ws = _SCAN, _skip
    out: dict[str, Any] = {}
    try:
        i = ws(text, 0)
        if not text.startswith("{", i):
            raise _Malformed
        i = ws(text, i + 1)
        if text.startswith("}", i):
            i += 1
        else:
            while True:
                if not text.startswith('"', i):
                    raise _Malformed
                key, i = scan(text, i)
                if key in out:
                    raise _Malformed
                i = ws(text, i)
                if not text.startswith(":", i):
                    raise _Malformed
                i = ws(text, i + 1)
                feed = feeds.get(key)
                if feed is not None and text.startswith("[", i):
                    i = _walk_array(text, ws(text, i + 1), feed)
                    feed.close()
                    out[key] = _FED
                else:
                    out[key], i = scan(text, i)
                i = ws(text, i)
                c = text[i:i + 1]
                if c == ",":
                    i = ws(text, i + 1)
                elif c == "}":
                    i += 1
                    break
                else:
                    raise _Malformed
        if ws(text, i) != len(text):
            raise _Malformed
    except (StopIteration, json.JSONDecodeError, RecursionError):   # the C scanner's failures
        raise _Malformed from None
    return out


def _walk_array(text: str, i: int, feed: Callable[[list, tuple[int, int]], None]) -> int:
    """Feed the elements of the array whose first element starts at ``i`` (after ``[`` and
    blanks); returns the position after its ``]``.

    A chunk ends at a ``},{`` (blanks allowed) found past :data:`_CHUNK_CHARS`: ``json.loads("[" + chunk + "]")``
    succeeds only if that ``}`` closes an element of this array (inside a string or a nested value
    the text would be left unterminated or unbalanced, after the array's end it would hold a
    ``]``), and then gives exactly those elements. Where it fails, and for the array's last
    chunk, the elements are read one by one with the C scanner."""
    scan, ws = _SCAN, _skip
    if text.startswith("]", i):
        return i + 1
    while True:
        m = _BETWEEN.search(text, i + _CHUNK_CHARS)
        if m is not None:
            try:
                chunk = _loads("[" + text[i:m.start() + 1] + "]")
            except json.JSONDecodeError:
                chunk = None
            if chunk is not None:
                feed(chunk, (i, m.start() + 1))
                i = m.end() - 1
                continue
        start, stop, chunk = i, i + _CHUNK_CHARS, []
        while True:
            value, end = scan(text, i)
            chunk.append(value)
            i = ws(text, end)
            c = text[i:i + 1]
            if c == "]":
                feed(chunk, (start, end))
                return i + 1
            if c != ",":
                raise _Malformed
            i = ws(text, i + 1)
            if i >= stop:
                feed(chunk, (start, end))
                break


class _Images:
    """Collects the ``images`` entries, checked as ``load_coco_json`` checks them (the first
    problem in file order is kept in :attr:`error`)."""

    def __init__(self) -> None:
        self.ids, self.heights, self.widths = array("q"), array("q"), array("q")
        self.names: list[bytes] = []
        self.seen: set[int] = set()
        self.error: str | None = None
        self.n = 0
        self.complete = False
        self._sorted_ids = self._order = np.zeros(0, dtype=np.int64)

    def __call__(self, chunk: list, span: Any = None) -> None:
        for img in chunk:
            if self.error is None:
                self.error = self._take(img)
            self.n += 1

    def _take(self, img: Any) -> str | None:
        if not isinstance(img, dict) or type(img.get("id")) is not int:
            return f"image entry {self.n} has no integer 'id'"
        iid = img["id"]
        if not isinstance(img.get("file_name"), str):
            return f"image {iid} has no 'file_name'"
        for k in ("height", "width"):
            if type(img.get(k)) is not int or img[k] <= 0:
                return f"image {iid} has no positive integer '{k}'"
        if iid in self.seen:
            return f"duplicate image id {iid}"
        self.seen.add(iid)
        try:
            self.ids.append(iid)
            self.heights.append(img["height"])
            self.widths.append(img["width"])
        except OverflowError:
            return f"image {iid}: id, height or width beyond 64-bit integers"
        self.names.append(img["file_name"].encode("utf-8", "surrogatepass"))
        return None

    def close(self) -> None:
        ids = np.frombuffer(self.ids, dtype=np.int64)
        self._order = np.argsort(ids, kind="stable")
        self._sorted_ids = ids[self._order]
        self.complete = True

    def rows_of(self, image_ids: np.ndarray) -> np.ndarray:
        """int64[n]: the row of each image id, -1 where unknown (only once :attr:`complete`)."""
        if len(self._sorted_ids) == 0:
            return np.full(len(image_ids), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._sorted_ids, image_ids), len(self._sorted_ids) - 1)
        return np.where(self._sorted_ids[pos] == image_ids, self._order[pos], -1)


class _Kept:
    """Annotations ``check_annotation`` cleared: their cleaned values, in columns."""

    def __init__(self) -> None:
        self.k: list[int] = []
        self.bbox: list[list[float]] = []
        self.area: list[float] = []
        self.part_first: list[int] = []
        self.part_count: list[int] = []
        self.part_len: list[int] = []
        self.coords: list[np.ndarray] = []
        self.rle: list[tuple[int, int]] = []
        self.rle_bytes: list[bytes] = []
        self.rle_pos = 0

    def add(self, k: int, clean: dict, h: int, w: int) -> None:
        self.k.append(k)
        self.bbox.append([float(v) for v in clean["bbox"]])
        area = clean["area"]
        self.area.append(float(area) if type(area) in _NUMBER else np.nan)
        seg = clean["segmentation"]
        if isinstance(seg, list):
            self.part_first.append(len(self.part_len))
            self.part_count.append(len(seg))
            for p in seg:
                self.part_len.append(len(p))
                self.coords.append(np.asarray(p, dtype=np.float32))
            self.rle.append((0, 0))
            return
        counts = seg["counts"]
        if isinstance(counts, list):
            counts = mask_utils.frPyObjects(seg, h, w)["counts"]
        elif isinstance(counts, str):
            counts = counts.encode()
        self.part_first.append(0)
        self.part_count.append(0)
        self.rle.append((self.rle_pos, len(counts)))
        self.rle_bytes.append(counts)
        self.rle_pos += len(counts)


class _Annotations:
    """Collects the ``annotations`` entries into flat columns and checks them (see the module
    docstring). An entry is *resolved* once its image is known: kept by the bulk checks (state
    1), or given to ``check_annotation`` (state 2: kept in :attr:`kept` or dropped with a reason).
    Entries whose image is not known when they are read (the file lists annotations before
    images, or an image id that is no plain integer) are resolved at the end (:meth:`finish`)."""

    def __init__(self, images: _Images, reparse: Callable[[tuple[int, int]], list] | None) -> None:
        self.images, self.reparse = images, reparse
        self.n = 0
        self.ids, self.image_ids, self.cat_ids = array("q"), array("q"), array("q")
        self.crowd, self.fast, self.state = array("b"), array("b"), array("b")
        self.entry_errors: dict[int, str] = {}       # k -> problem of an entry without an integer id
        self.odd_refs: dict[int, Any] = {}           # k -> the entry, whose image/category id is no plain int
        self.area = array("d")                       # 0 for slow entries
        self.part_count = array("q")                 # polygon parts (0 for slow entries)
        self.part_first = array("q")                 # index of the first of them
        self.part_len = array("q")                   # values of each part
        self.bbox = array("d")                       # 4 per entry
        self.coord_chunks: list[np.ndarray] = []     # float32
        self.part_ok = array("b")                    # per part: finite, area clearly above zero
        self.part_ext = array("d")                   # per part: xmin, xmax, ymin, ymax
        self.chunks: list[tuple[int, int, Any]] = []  # (first k, end k, span)
        self.kept = _Kept()
        self.reasons: list[tuple[int, str]] = []     # (k, "annotation <id>: <problem>")

    def __call__(self, chunk: list, span: Any) -> None:
        first, p0 = self.n, len(self.part_len)
        coords: list[Any] = []
        boxes: list[Any] = []
        ids, img_ids, cat_ids, crowds, fasts = self.ids, self.image_ids, self.cat_ids, self.crowd, self.fast
        areas, counts, part_len = self.area, self.part_count, self.part_len
        number = _NUMBER
        k = first
        aid: Any
        iid: Any
        cid: Any
        area: Any
        seg: Any
        box: Any
        for ann in chunk:
            fast = False
            if type(ann) is not dict or type(ann.get("id")) is not int:
                self.entry_errors[k] = f"annotation entry {k} has no integer 'id'"
                aid = iid = cid = crowd = 0
            else:
                aid, iid, cid = ann["id"], ann.get("image_id"), ann.get("category_id")
                if type(iid) is not int or type(cid) is not int:
                    self.odd_refs[k] = ann
                    iid = iid if type(iid) is int else -(1 << 63)
                    cid = cid if type(cid) is int else -(1 << 63)
                crowd = 1 if ann.get("iscrowd", 0) else 0
                seg, box, area = ann.get("segmentation"), ann.get("bbox"), ann.get("area")
                if type(seg) is list and seg and type(box) is list and len(box) == 4 and type(area) in number:
                    fast = True
                    for p in seg:
                        if type(p) is not list or len(p) < 6 or len(p) & 1:
                            fast = False
                            break
            try:
                ids.append(aid)
                img_ids.append(iid)
                cat_ids.append(cid)
            except OverflowError:
                for col in (ids, img_ids, cat_ids):
                    del col[k:]
                    col.append(0)
                self.entry_errors[k] = f"annotation entry {k}: id, image_id or category_id beyond 64-bit integers"
                fast = False
            crowds.append(crowd)
            self.part_first.append(len(part_len))
            if fast:
                fasts.append(1)
                areas.append(area)
                counts.append(len(seg))
                boxes.extend(box)
                for p in seg:
                    part_len.append(len(p))
                    coords.extend(p)
            else:
                fasts.append(0)
                areas.append(0.0)
                counts.append(0)
            k += 1
        self.n = k
        self.state.frombytes(bytes(k - first))
        self._numbers(first, p0, coords, boxes)
        self.chunks.append((first, k, span))
        if self.images.complete and self.images.error is None:
            self._resolve(np.arange(first, k), chunk, first, self.images.rows_of(self._col(self.image_ids)[first:k]))

    def close(self) -> None:
        pass

    @staticmethod
    def _col(col: array) -> np.ndarray:
        return np.frombuffer(col, dtype=np.int64 if col.typecode == "q" else
                             np.float64 if col.typecode == "d" else np.int8)

    def _numbers(self, first: int, p0: int, coords: list, boxes: list) -> None:
        """Convert a chunk's coordinates and boxes to arrays; per part, whether it is clearly fine
        (finite, area above zero) and its extent."""
        fast = self._col(self.fast)[first:self.n].astype(bool)
        plen = self._col(self.part_len)[p0:]
        rows = first + np.flatnonzero(fast)
        if not (set(map(type, coords)) <= _NUMBER and set(map(type, boxes)) <= _NUMBER):
            coords, boxes = self._not_numbers(rows, self._col(self.part_count)[rows], plen, coords, boxes)
        try:
            xy = np.array(coords, dtype=np.float64)
            bb = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        except OverflowError:     # an integer beyond float64: check_annotation says what to do
            self._unfast(rows)
            xy, bb = np.full(len(coords), np.nan), np.full((len(boxes) // 4, 4), np.nan)
        del coords, boxes
        chunk_boxes = np.zeros((self.n - first, 4))
        chunk_boxes[fast] = bb
        self.bbox.frombytes(chunk_boxes.tobytes())
        self.coord_chunks.append(xy.astype(np.float32))
        self.part_ok.frombytes(_parts_ok(xy, plen).astype(np.int8).tobytes())
        self.part_ext.frombytes(_part_extents(xy, plen).tobytes())

    def _unfast(self, rows) -> None:
        for r in rows:
            self.fast[int(r)] = 0

    def _not_numbers(self, rows, nparts, plen, coords, boxes):
        """A chunk holding a value that is no number: its entries go to check_annotation (NaN
        takes the places of their values)."""
        coords, boxes = list(coords), list(boxes)
        offset, p = 0, 0
        for j, row in enumerate(rows):
            n = int(plen[p:p + nparts[j]].sum())
            p += int(nparts[j])
            bad = not set(map(type, coords[offset:offset + n])) <= _NUMBER
            if bad or not set(map(type, boxes[4 * j:4 * j + 4])) <= _NUMBER:
                self.fast[int(row)] = 0
                coords[offset:offset + n] = [np.nan] * n
                boxes[4 * j:4 * j + 4] = [np.nan] * 4
            offset += n
        return coords, boxes

    def _resolve(self, ks: np.ndarray, entries: list, first: int, rows: np.ndarray) -> None:
        """Resolve entries ``ks`` (``entries[k - first]`` is entry k) of images ``rows``: the
        bulk checks keep the plain ones, ``check_annotation`` decides the others."""
        heights, widths = self._col(self.images.heights), self._col(self.images.widths)
        known = (rows >= 0) & np.isin(ks, list(self.entry_errors), invert=True)
        ks, rows = ks[known], rows[known]
        h, w = heights[rows], widths[rows]
        good = self._col(self.fast)[ks].astype(bool)
        # every part clearly fine and meeting the image; the box fine
        kp = ks[good]
        counts = self._col(self.part_count)[kp]
        pidx = np.repeat(self._col(self.part_first)[kp] - counts.cumsum() + counts, counts) + np.arange(int(counts.sum()))
        pann = np.repeat(np.arange(len(kp)), counts)
        ext = self._col(self.part_ext).reshape(-1, 4)[pidx]
        ph, pw = h[good][pann], w[good][pann]
        part_good = (self._col(self.part_ok)[pidx].astype(bool) & (ext[:, 0] < pw) & (ext[:, 1] > 0)
                     & (ext[:, 2] < ph) & (ext[:, 3] > 0))
        ok = np.bincount(pann[~part_good], minlength=len(kp)) == 0
        x, y, bw, bh = self._col(self.bbox).reshape(-1, 4)[kp].T
        hk, wk = h[good], w[good]
        with np.errstate(invalid="ignore", over="ignore"):
            ok &= np.isfinite(x + y + bw + bh) & (bw > 0) & (bh > 0) & (x < wk) & (y < hk) & (x + bw > 0) & (y + bh > 0)
        state = np.full(len(ks), 2, dtype=np.int8)
        state[np.flatnonzero(good)[ok]] = 1
        for j in np.flatnonzero(state == 2):
            k = int(ks[j])
            ann = entries[k - first]
            hh, ww = int(h[j]), int(w[j])
            clean, reason = check_annotation(ann, hh, ww)
            if clean is None:
                self.reasons.append((k, f"annotation {ann['id']}: {reason}"))
            else:
                self.kept.add(k, clean, hh, ww)
        st = self._col(self.state)
        st[ks] = state

    def finish(self, cat_ids_known: set) -> tuple[str | None, np.ndarray, np.ndarray]:
        """After the whole file: the first structural problem in ``load_coco_json``'s order (None
        if none), and each entry's image row and category id; then the entries not resolved yet
        are resolved."""
        n = self.n
        ids = self._col(self.ids)
        img_ids = self._col(self.image_ids).copy()
        cat_ids = self._col(self.cat_ids).copy()
        errors: list[tuple[int, int, str]] = [(k, 0, p) for k, p in sorted(self.entry_errors.items())[:1]]
        skip = np.zeros(n, dtype=bool)
        skip[list(self.entry_errors)] = True
        order = np.argsort(ids, kind="stable")
        o = order[~skip[order]]
        dup = np.zeros(n, dtype=bool)
        dup[o[1:][ids[o[1:]] == ids[o[:-1]]]] = True
        errors += [(int(k), 1, f"duplicate annotation id {int(ids[k])}") for k in np.flatnonzero(dup)[:1]]
        known_img = np.ones(n, dtype=bool)
        known_cat = np.ones(n, dtype=bool)
        shown = {}
        for k, ann in self.odd_refs.items():   # not plain ints: Python's `in` decides, as load_coco_json's
            iid, cid = ann.get("image_id"), ann.get("category_id")
            shown[k] = (iid, cid)
            if iid in self.images.seen:
                img_ids[k] = next(v for v in self.images.seen if v == iid)
            else:
                known_img[k] = False
            if cid in cat_ids_known:
                cat_ids[k] = next(v for v in cat_ids_known if v == cid)
            else:
                known_cat[k] = False
        rows = self.images.rows_of(img_ids)
        known_img &= rows >= 0
        known_cat &= np.isin(cat_ids, np.fromiter(cat_ids_known, dtype=np.int64, count=len(cat_ids_known)))
        for k in np.flatnonzero(~known_img & ~skip)[:1]:
            errors.append((int(k), 2, f"annotation {int(ids[k])} refers to unknown image "
                                      f"{shown.get(int(k), (int(img_ids[k]),))[0]!r}"))
        for k in np.flatnonzero(~known_cat & known_img & ~skip)[:1]:
            errors.append((int(k), 3, f"annotation {int(ids[k])} refers to unknown category "
                                      f"{shown.get(int(k), (0, int(cat_ids[k])))[1]!r}"))
        if errors:
            return min(errors)[2], rows, cat_ids
        pending = np.flatnonzero(self._col(self.state) == 0)
        pending = pending[~skip[pending]]
        for first, end, span in self.chunks:
            ks = pending[(pending >= first) & (pending < end)]
            if len(ks) == 0:
                continue
            if all(int(k) in self.odd_refs for k in ks):
                entries: Any = _Lookup(self.odd_refs, first)
            else:
                assert self.reparse is not None, "entries left unresolved without their text"
                entries = self.reparse(span)
            self._resolve(ks, entries, first, rows[ks])
        return None, rows, cat_ids


class _Lookup:
    """``entries[k - first]`` over a dict of entries by k."""

    def __init__(self, by_k: dict[int, Any], first: int) -> None:
        self.by_k, self.first = by_k, first

    def __getitem__(self, j: int) -> Any:
        return self.by_k[j + self.first]


def _part_bounds(plen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Point index starts of the parts (int64[p]) and each point's successor on its ring."""
    npts = plen // 2
    starts = np.zeros(len(npts), dtype=np.int64)
    np.cumsum(npts[:-1], out=starts[1:])
    nxt = np.arange(1, int(npts.sum()) + 1, dtype=np.int64)
    if len(npts):
        nxt[starts + npts - 1] = starts
    return starts, nxt


def _parts_ok(xy: np.ndarray, plen: np.ndarray) -> np.ndarray:
    """bool[p]: the part's values are finite and its shoelace area is clearly above zero (above
    what rounding could make of a zero area; ``check_annotation`` decides the others). Every
    part has at least 3 points."""
    if len(plen) == 0:
        return np.zeros(0, dtype=bool)
    x, y = xy[0::2], xy[1::2]
    starts, nxt = _part_bounds(plen)
    with np.errstate(invalid="ignore", over="ignore"):
        a, b = x * y[nxt], y * x[nxt]
        twice_area = np.abs(np.add.reduceat(a - b, starts))
        scale = np.add.reduceat(np.abs(a) + np.abs(b), starts)
        finite = np.logical_and.reduceat(np.isfinite(x) & np.isfinite(y), starts)
    return finite & (twice_area > 1e-9 * scale + 1e-300)


def _part_extents(xy: np.ndarray, plen: np.ndarray) -> np.ndarray:
    """float64[p, 4]: xmin, xmax, ymin, ymax of each part."""
    if len(plen) == 0:
        return np.zeros((0, 4))
    x, y = xy[0::2], xy[1::2]
    starts, _ = _part_bounds(plen)
    return np.stack([np.minimum.reduceat(x, starts), np.maximum.reduceat(x, starts),
                     np.minimum.reduceat(y, starts), np.maximum.reduceat(y, starts)], 1)


def _check_categories(cats: list) -> str | None:
    seen: set[int] = set()
    for i, cat in enumerate(cats):
        if not isinstance(cat, dict) or type(cat.get("id")) is not int or "name" not in cat:
            return f"category entry {i} needs an integer 'id' and a 'name'"
        if cat["id"] in seen:
            return f"duplicate category id {cat['id']}"
        seen.add(cat["id"])
    return None if seen else "no categories"


# --- the build ----------------------------------------------------------------------------------

def build_index(path: str | os.PathLike, *, on_bad: str = "skip") -> IndexBuild:
    """Read and check the COCO instances file ``path`` (see the module docstring).

    Raises :class:`~fcis.data.DataError` for a structural problem (the messages and their order
    are ``load_coco_json``'s) and, with ``on_bad="raise"``, for the first bad annotation (its
    ``check_annotation`` reason); with ``"skip"`` the bad annotations are left out and listed in
    :attr:`IndexBuild.dropped`."""
    if on_bad not in ("skip", "raise"):
        raise ValueError(f"on_bad must be 'skip' or 'raise', got {on_bad!r}")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise data_error(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise data_error(path, f"cannot read file ({e})") from None
    enabled = gc.isenabled()
    gc.disable()   # nothing here makes cycles; collections over the parsed chunks would cost seconds
    try:
        images = _Images()
        anns = _Annotations(images, lambda span: json.loads("[" + text[span[0]:span[1]] + "]"))
        try:
            top = _walk(text, {"images": images, "annotations": anns})
        except _Malformed:
            text = ""
            images, anns, top = _parse_whole(path)
        return _finish(path, images, anns, top, on_bad)
    finally:
        if enabled:
            gc.enable()


def _parse_whole(path) -> tuple[_Images, _Annotations, dict[str, Any]]:
    """The whole-file parse (``json.load``'s errors), fed to the same collectors."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise data_error(path, f"not a COCO instances file: top level is a {type(data).__name__}, "
                               "expected an object")
    images = _Images()
    anns = _Annotations(images, None)
    top = dict(data)
    if isinstance(top.get("images"), list):
        images(top["images"])
        images.close()
        top["images"] = _FED
    if isinstance(top.get("annotations"), list):
        entries = top["annotations"]
        for i in range(0, len(entries), 8192):
            anns(entries[i:i + 8192], None)
        top["annotations"] = _FED
    return images, anns, top


def _finish(path, images: _Images, anns: _Annotations, top: dict[str, Any], on_bad: str) -> IndexBuild:
    for key in ("images", "annotations", "categories"):
        if key not in top:
            raise data_error(path, f"not a COCO instances file: missing key '{key}'")
        if top[key] is not _FED and not isinstance(top[key], list):
            raise data_error(path, f"not a COCO instances file: '{key}' is a {type(top[key]).__name__}, "
                                   "expected a list")
    if images.error:
        raise data_error(path, images.error)
    cats = top["categories"]
    problem = _check_categories(cats)
    if problem:
        raise data_error(path, problem)
    problem, rows, cat_ids = anns.finish({c["id"] for c in cats})
    if problem:
        raise data_error(path, problem)
    reasons = [r for _, r in sorted(anns.reasons)]
    if reasons and on_bad == "raise":
        raise data_error(path, reasons[0])
    return IndexBuild(_assemble(images, anns, cats, rows, cat_ids), reasons)


def _assemble(images: _Images, anns: _Annotations, cats: list[dict], rows: np.ndarray,
              cat_ids: np.ndarray) -> CocoIndex:
    col = anns._col
    n = anns.n
    state = col(anns.state)
    fast_k = np.flatnonzero(state == 1)
    kept = anns.kept
    slow_k = np.asarray(kept.k, dtype=np.int64)
    nparts = col(anns.part_count)
    part_first = col(anns.part_first)
    n_main_parts = len(anns.part_len)
    plen = np.concatenate([col(anns.part_len), np.asarray(kept.part_len, dtype=np.int64)])
    part_start = np.zeros(len(plen) + 1, dtype=np.int64)
    np.cumsum(plen, out=part_start[1:])
    coords = np.concatenate(anns.coord_chunks + kept.coords) if anns.coord_chunks or kept.coords \
        else np.zeros(0, dtype=np.float32)
    anns.coord_chunks = []
    ks = np.concatenate([fast_k, slow_k])
    order = np.argsort(ks, kind="stable")        # rows in file order
    ks = ks[order]
    rle = np.asarray(kept.rle, dtype=np.int64).reshape(-1, 2)
    nf = len(fast_k)

    def both(a: np.ndarray, b: Any, dtype) -> np.ndarray:
        return np.concatenate([a, np.asarray(b, dtype=dtype).reshape((-1,) + a.shape[1:])])[order]

    index = CocoIndex(
        image_ids=col(images.ids).copy(), heights=col(images.heights).copy(), widths=col(images.widths).copy(),
        name_bytes=np.frombuffer(b"".join(images.names), dtype=np.uint8).copy(),
        name_start=np.concatenate([[0], np.cumsum([len(s) for s in images.names])]).astype(np.int64),
        category_ids=np.asarray([c["id"] for c in cats], dtype=np.int64),
        category_names=[str(c["name"]) for c in cats],
        ann_ids=col(anns.ids)[ks].copy(), ann_image=rows[ks].astype(np.int64), ann_category=cat_ids[ks].copy(),
        ann_bbox=both(col(anns.bbox).reshape(n, 4)[fast_k], kept.bbox, np.float64),
        ann_area=both(col(anns.area)[fast_k], kept.area, np.float64),
        ann_crowd=col(anns.crowd)[ks].astype(bool),
        ann_part_first=both(part_first[fast_k], np.asarray(kept.part_first, dtype=np.int64) + n_main_parts, np.int64),
        ann_part_count=both(nparts[fast_k], kept.part_count, np.int64),
        part_start=part_start, coords=coords,
        rle_start=both(np.zeros(nf, dtype=np.int64), rle[:, 0], np.int64),
        rle_len=both(np.zeros(nf, dtype=np.int64), rle[:, 1], np.int64),
        rle_bytes=np.frombuffer(b"".join(kept.rle_bytes), dtype=np.uint8).copy(),
        image_ann_start=np.zeros(0, dtype=np.int64), image_ann_order=np.zeros(0, dtype=np.int64))
    index.image_ann_order = np.argsort(index.ann_image, kind="stable").astype(np.int64)
    index.image_ann_start = np.concatenate([[0], np.cumsum(np.bincount(index.ann_image, minlength=index.num_images))]
                                           ).astype(np.int64)
    return index
