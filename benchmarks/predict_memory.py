"""Inputs for the `fcis predict` peak-memory measurement (benchmarks/PREDICT-MEMORY.md): a large
photo (a real photo upscaled, or a synthetic one without ../shared/data) and a checkpoint of a
randomly initialised model. Prints the command to measure with ``/usr/bin/time -v``.

    python -m benchmarks.predict_memory --out /tmp/predmem --size 8000 6000 --model fcis_resnet50
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fcis.engine import save_checkpoint
from fcis.models import build_model

REPO = Path(__file__).resolve().parents[1]


def make_photo(path: Path, width: int, height: int) -> Path:
    """A ``width`` x ``height`` JPEG: the first balloon photo of ../shared/data upscaled, else noise."""
    photos = sorted((REPO.parent / "shared" / "data" / "balloon" / "val").glob("*.jpg"))
    if photos:
        with Image.open(photos[0]) as im:
            big = im.convert("RGB").resize((width, height), Image.BILINEAR)
    else:
        rng = np.random.default_rng(0)
        big = Image.fromarray(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)).resize(
            (width, height), Image.BILINEAR)
    big.save(path, quality=90)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--size", type=int, nargs=2, default=(8000, 6000), metavar=("W", "H"))
    p.add_argument("--model", default="fcis_resnet50")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    photo = make_photo(args.out / f"photo_{args.size[0]}x{args.size[1]}.jpg", *args.size)
    model = build_model(args.model, num_classes=2)
    ckpt = args.out / f"{args.model}.pt"
    save_checkpoint(ckpt, model=model.state_dict(), model_name=args.model, model_config=model.config.to_dict(),
                    dataset={"class_names": ["a", "b"], "label_to_cat_id": {1: 1, 2: 2}})
    print(f"OMP_NUM_THREADS=1 /usr/bin/time -v python -m fcis predict --weights {ckpt} {photo} "
          f"--output {args.out / 'pred'} --device cpu --no-progress --score-threshold 0.5")


if __name__ == "__main__":
    main()
