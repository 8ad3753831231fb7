"""Aspect-ratio grouped batches against the plain order (``TrainConfig.group_aspect``, issue 23):
the share of each padded batch that is padding, and training images/s, on a mixed-aspect set of
real photos (balloon train: landscape and portrait photos from 1024 to 2048 px; PennFudanPed:
170 street photos of 300-550 px, converted with the project's converters into one COCO file).

Padding: for every batch of several epochs of each order, the images as the model sees them
(``GeneralizedRCNNTransform``: short side ``min_size``, long side at most ``max_size``, floor) are
padded to the batch's largest height and width rounded up to 32; the padding share is 1 - (sum of
the image areas) / (batch size x padded area), averaged over the batches (sizes only, exact).

Images/s: ``fcis_resnet18`` from random weights (AdamW), the same ``TrainStream`` as ``fcis
train`` (DataLoader, no workers), one step = loading the batch + forward + backward + update;
the two orders alternate in rounds of ``--steps`` steps (after ``--warmup`` untimed steps each)
so that a load change on the machine hits both alike; the median step time is reported.

    python -m benchmarks.aspect_grouping --work /tmp/grouping [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def mixed_aspect_set(data: Path, work: Path) -> Path:
    """balloon train + PennFudanPed as one COCO file (absolute file names) under ``work``."""
    from fcis.data.convert import convert_instance_masks, convert_via

    work.mkdir(parents=True, exist_ok=True)
    out = work / "mixed.json"
    if out.exists():
        return out
    balloon = convert_via(data / "balloon" / "train" / "via_region_data.json", work / "balloon.json",
                          category="object")
    penn = convert_instance_masks(data / "PennFudanPed" / "PNGImages", data / "PennFudanPed" / "PedMasks",
                                  work / "penn.json", category="object")
    merged: dict[str, Any] = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "object"}]}
    for src in (balloon, penn):   # their file names are relative to their JSON's folder
        folder = src.parent
        d = json.loads(src.read_text())
        img_off, ann_off = len(merged["images"]), len(merged["annotations"])
        ids = {}
        for img in d["images"]:
            ids[img["id"]] = img_off + len(ids) + 1
            path = Path(img["file_name"])
            merged["images"].append({**img, "id": ids[img["id"]],
                                     "file_name": str(path if path.is_absolute() else (folder / path).resolve())})
        for k, a in enumerate(d["annotations"]):
            merged["annotations"].append({**a, "id": ann_off + k + 1, "image_id": ids[a["image_id"]], "category_id": 1})
    out.write_text(json.dumps(merged))
    return out


def padding_share(batches: list[list[int]], heights: np.ndarray, widths: np.ndarray,
                  min_size: int, max_size: int) -> float:
    """Mean share of padding in the padded batches (see the module docstring)."""
    scale = np.minimum(min_size / np.minimum(heights, widths), max_size / np.maximum(heights, widths))
    h, w = np.floor(heights * scale), np.floor(widths * scale)
    shares = []
    for b in batches:
        ph, pw = math.ceil(h[b].max() / 32) * 32, math.ceil(w[b].max() / 32) * 32
        shares.append(1.0 - float((h[b] * w[b]).sum()) / (len(b) * ph * pw))
    return float(np.mean(shares))


def measure(json_path: Path, *, batch_sizes: tuple[int, ...], epochs: int, min_size: int, max_size: int,
            steps: int, rounds: int, warmup: int, train_batch: int) -> dict[str, Any]:
    import torch

    from fcis.data import CocoInstances, build_transforms, collate
    from fcis.engine.data import TrainStream, aspect_groups, epoch_batches
    from fcis.engine.step import train_step
    from fcis.models import build_model

    torch.set_num_threads(1)
    ds = CocoInstances(json_path, input_size=(min_size, max_size))
    ds.transforms = build_transforms(True, min_size=min_size, max_size=max_size)
    hs, ws = ds.index.heights.astype(np.float64), ds.index.widths.astype(np.float64)
    groups = aspect_groups(ds.index.heights, ds.index.widths)
    out: dict[str, Any] = {"images": len(ds), "group_sizes": np.bincount(groups).tolist(),
                           "input": [min_size, max_size], "padding": {}}
    for bs in batch_sizes:
        row = {}
        for name, g in (("plain", None), ("grouped", groups)):
            batches = [b for e in range(epochs) for b in epoch_batches(len(ds), bs, 0, e, g)]
            row[name] = padding_share(batches, hs, ws, min_size, max_size)
        out["padding"][bs] = row

    model = build_model("fcis_resnet18", num_classes=1, min_size=min_size, max_size=max_size)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    streams = {name: TrainStream(ds, train_batch, 0, collate_fn=collate, groups=g)
               for name, g in (("plain", None), ("grouped", groups))}
    times: dict[str, list[float]] = {"plain": [], "grouped": []}
    padded: dict[str, list[float]] = {"plain": [], "grouped": []}
    for r in range(rounds):
        for name, stream in streams.items():
            for s in range(steps + (warmup if r == 0 else 0)):
                t0 = time.perf_counter()
                images, targets = stream.next()
                train_step(model, opt, params, images, targets, torch.device("cpu"))
                dt = time.perf_counter() - t0
                if r > 0 or s >= warmup:
                    times[name].append(dt)
                    with torch.no_grad():
                        seen = model.transform(images)[0]   # the padded batch the step ran on
                    area = sum(hh * ww for hh, ww in seen.image_sizes)
                    n, _, ph, pw = seen.tensors.shape
                    padded[name].append(1.0 - area / (n * ph * pw))
    out["training"] = {name: {"batch": train_batch, "steps": len(t), "median_step_s": statistics.median(t),
                              "images_per_s": train_batch / statistics.median(t),
                              "padding_of_the_steps": float(np.mean(padded[name]))}
                       for name, t in times.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/fcis_grouping")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--min-size", type=int, default=320)
    ap.add_argument("--max-size", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=20, help="epochs of batches for the padding share")
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per order and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the JSON here")
    args = ap.parse_args(argv)
    json_path = mixed_aspect_set(Path(args.data), Path(args.work))
    t0 = time.time()
    res = measure(json_path, batch_sizes=(2, 4, 8), epochs=args.epochs, min_size=args.min_size,
                  max_size=args.max_size, steps=args.steps, rounds=args.rounds, warmup=args.warmup,
                  train_batch=args.train_batch)
    res["machine"] = {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()}
    res["seconds"] = round(time.time() - t0, 1)
    print(f"{res['images']} images, aspect groups {res['group_sizes']}, input {args.min_size}/{args.max_size}")
    print("| images per batch | padding, plain order | padding, grouped |")
    print("| --- | --- | --- |")
    for bs, row in res["padding"].items():
        print(f"| {bs} | {100 * row['plain']:.1f}% | {100 * row['grouped']:.1f}% |")
    tr = res["training"]
    print(f"training fcis_resnet18, batch {args.train_batch}, {tr['plain']['steps']} timed steps each:")
    for name in ("plain", "grouped"):
        print(f"  {name}: {tr[name]['images_per_s']:.2f} images/s (median step {tr[name]['median_step_s']:.2f} s), "
              f"padding {100 * tr[name]['padding_of_the_steps']:.1f}%")
    print(f"  grouped / plain: {tr['grouped']['images_per_s'] / tr['plain']['images_per_s']:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
