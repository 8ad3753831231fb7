"""A COCO-train2017-sized annotation file whose images exist: the data of ``benchmarks/coco_scale.py``.

:func:`make_coco_scale` writes ``<out>/train.json`` with ``images`` image entries (COCO train2017:
118,287) holding about 7 polygon annotations each (827k in all at full size, 386 MB of compact
JSON like the real file: 80 categories with COCO's non-contiguous ids, 2-decimal coordinates, a
polygon of 8 to 37 points per object, 1% crowd regions as uncompressed RLE as COCO stores them).
The images are symlinks ``<out>/images/<12 digits>.jpg`` to a few JPEGs of COCO's usual sizes
(640x480, 480x640, 640x427...) made from real photos of ``../shared/data`` (balloon, resized), so
that training reads real files while the folder stays a few MB.

Streams the JSON out (bounded memory); deterministic from ``seed``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

#: COCO's 80 category ids (1..90 with gaps) and the sizes of its photos (width, height).
COCO_CAT_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
SIZES = [(640, 480), (480, 640), (640, 427), (427, 640), (640, 360), (612, 612)]
TRAIN2017_IMAGES = 118_287
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def base_images(out: Path, data: Path = DEFAULT_DATA) -> list[tuple[str, int, int]]:
    """JPEGs of :data:`SIZES` made from real photos (``data/balloon/train/*.jpg``, centre-cropped to
    the aspect ratio and resized) under ``out/base``; returns ``[(file, width, height)]``."""
    from PIL import Image

    photos = sorted((data / "balloon" / "train").glob("*.jpg"))
    if not photos:
        raise FileNotFoundError(f"{data}/balloon/train: no photos (the shared data folder is needed)")
    (out / "base").mkdir(parents=True, exist_ok=True)
    made = []
    for k, (w, h) in enumerate(SIZES):
        path = out / "base" / f"{k}_{w}x{h}.jpg"
        if not path.exists():
            with Image.open(photos[k % len(photos)]) as im:
                im = im.convert("RGB")
                scale = max(w / im.width, h / im.height)
                im = im.resize((max(w, round(im.width * scale)), max(h, round(im.height * scale))))
                x0, y0 = (im.width - w) // 2, (im.height - h) // 2
                im.crop((x0, y0, x0 + w, y0 + h)).save(path, quality=90)
        made.append((path.name, w, h))
    return made


def _polygon(rng: np.random.Generator, w: int, h: int) -> tuple[list[float], list[float], float]:
    """A star-shaped polygon inside a ``w x h`` image: flat coordinates, xywh box, area."""
    n = int(rng.integers(8, 38))
    size = float(np.exp(rng.uniform(np.log(8), np.log(0.6 * min(w, h)))))   # COCO: many small objects
    cx, cy = rng.uniform(size / 2, w - size / 2), rng.uniform(size / 2, h - size / 2)
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = size / 2 * rng.uniform(0.5, 1.0, n)
    xs = np.clip(cx + rad * np.cos(ang), 0, w - 0.01).round(2)
    ys = np.clip(cy + rad * np.sin(ang), 0, h - 0.01).round(2)
    area = 0.5 * abs(float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))))
    box = [round(float(xs.min()), 2), round(float(ys.min()), 2),
           round(float(xs.max() - xs.min()), 2), round(float(ys.max() - ys.min()), 2)]
    return np.stack([xs, ys], 1).ravel().tolist(), box, area


def _crowd_rle(rng: np.random.Generator, w: int, h: int) -> tuple[dict, list[float], float]:
    """An uncompressed RLE rectangle (column-major runs, as COCO stores crowd regions)."""
    x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    x1, y1 = int(rng.integers(x0 + 8, w)), int(rng.integers(y0 + 8, h))
    counts = [x0 * h + y0]
    for _ in range(x1 - x0 - 1):
        counts += [y1 - y0, h - (y1 - y0)]
    counts += [y1 - y0, h * w - sum(counts) - (y1 - y0)]
    return {"counts": counts, "size": [h, w]}, [x0, y0, x1 - x0, y1 - y0], float((x1 - x0) * (y1 - y0))


def make_coco_scale(out: str | os.PathLike, images: int = TRAIN2017_IMAGES, *, seed: int = 0,
                    data: Path = DEFAULT_DATA, name: str = "train.json", crowd_share: float = 0.01) -> Path:
    """Write ``out/name`` (see the module docstring) and ``out/images``; returns the JSON path.
    An existing JSON of the same name is kept (delete it to remake)."""
    out = Path(out)
    path = out / name
    bases = base_images(out, data)
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, len(bases), images)
    for i in range(images):
        link = img_dir / f"{i + 1:012d}.jpg"
        if not link.is_symlink():
            link.symlink_to(Path("..") / "base" / bases[sizes[i]][0])
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write('{"info":{"description":"synthetic COCO-train2017-sized file (benchmarks/coco_scale_data.py)"},')
        f.write('"licenses":[],"images":[')
        for i in range(images):
            _, w, h = bases[sizes[i]]
            f.write(("," if i else "") + json.dumps(
                {"license": 1, "file_name": f"{i + 1:012d}.jpg", "coco_url": "", "height": h, "width": w,
                 "date_captured": "2013-11-14 11:18:45", "flickr_url": "", "id": i + 1}, separators=(",", ":")))
        f.write('],"annotations":[')
        aid, first = 0, True
        per_image = rng.poisson(7.0, images)
        for i in range(images):
            _, w, h = bases[sizes[i]]
            chunk = []
            for _ in range(int(per_image[i])):
                aid += 1
                crowd = rng.random() < crowd_share
                seg, box, area = _crowd_rle(rng, w, h) if crowd else _polygon(rng, w, h)
                chunk.append(json.dumps({"segmentation": seg if crowd else [seg], "area": area, "iscrowd": int(crowd),
                                         "image_id": i + 1, "bbox": box,
                                         "category_id": COCO_CAT_IDS[int(rng.integers(0, 80))], "id": aid},
                                        separators=(",", ":")))
            if chunk:
                f.write(("" if first else ",") + ",".join(chunk))
                first = False
        f.write('],"categories":[')
        f.write(",".join(json.dumps({"supercategory": "thing", "id": c, "name": f"class{c}"}, separators=(",", ":"))
                         for c in COCO_CAT_IDS))
        f.write("]}")
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/work/scratch/coco_scale")
    ap.add_argument("--images", type=int, default=TRAIN2017_IMAGES)
    ap.add_argument("--name", default=None, help="JSON file name (default: train_<images>.json)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    path = make_coco_scale(args.out, args.images, seed=args.seed, name=args.name or f"train_{args.images}.json")
    print(f"{path}: {path.stat().st_size / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
