"""What FCIS's score maps at stride 8 cost (``head_stride=8``, benchmarks/HEAD-STRIDE.md).

``fcis_resnet18`` at head stride 16 and at 8 take training steps (AdamW, as the random-init recipe)
and inference passes alternately in one process, on the same two images with three rectangles each,
for a few settings of input size and class count; the ratio of each adjacent pair (stride 8's time
over stride 16's) is taken and the median reported, with the one-image score-map size that
:func:`fcis.engine.head_stride.score_map_bytes` computes (what the run's choice compares with its
budget).

    python -m benchmarks.head_stride                 # 3 rounds per setting, one torch thread
    python -m benchmarks.head_stride --threads 2 --rounds 5 --json benchmarks/results/head_stride.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from fcis.engine.head_stride import score_map_bytes

from .common import alternate, build, random_image, synthetic_target

#: (label, height, width, foreground classes): PennFudanPed's chosen input and one class; balloon's
#: 600/1000 and one class; a 10-class street-like set at 0.9 Mpx; 33 classes, the budget's edge.
SETTINGS = (("pennfudan-like", 381, 635, 1), ("600x1000, 1 class", 600, 1000, 1),
            ("948x948, 10 classes", 948, 948, 10), ("600x1000, 33 classes", 600, 1000, 33))


def measure(height: int, width: int, classes: int, rounds: int) -> dict:
    images = [random_image(height, width, seed=i + 1) for i in range(2)]
    targets = [synthetic_target(height, width, classes) for _ in range(2)]
    models, optims = {}, {}
    for stride in (16, 8):
        torch.manual_seed(0)
        models[stride] = build("fcis_resnet18", classes, min_size=min(height, width), max_size=max(height, width),
                               head_stride=stride)
        optims[stride] = torch.optim.AdamW([p for p in models[stride].parameters() if p.requires_grad], lr=1e-4)

    def train_step(stride: int) -> None:
        model = models[stride].train()
        loss = sum(model(images, targets).values())
        optims[stride].zero_grad(set_to_none=True)
        loss.backward()                                                  # type: ignore[union-attr]
        optims[stride].step()

    def infer(stride: int) -> None:
        model = models[stride].eval()
        with torch.no_grad():
            model(images[:1])

    out: dict = {"height": height, "width": width, "classes": classes,
                 "map_mib": {s: score_map_bytes(classes, 7, min(height, width), max(height, width), s) / 2 ** 20
                             for s in (16, 8)}}
    for name, fn in (("train_step", train_step), ("inference", infer)):
        times = alternate({f"stride {s}": (lambda s=s, fn=fn: fn(s)) for s in (16, 8)}, rounds,
                          lambda i, t, name=name: f"  {name} round {i}: stride 16 {t[0]:.2f} s, stride 8 {t[1]:.2f} s")
        t16, t8 = times.values()
        ratios = [b / a for a, b in zip(t16, t8)]
        out[name] = {"stride16_s": statistics.median(t16), "stride8_s": statistics.median(t8),
                     "ratio_median": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)]}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    results = {"threads": args.threads, "rounds": args.rounds, "settings": {}}
    print("| setting | score maps per image, stride 16 / 8 | train step 16 → 8 (ratio) | inference 16 → 8 (ratio) |")
    print("|---|---|---|---|")
    for label, h, w, c in SETTINGS:
        r = measure(h, w, c, args.rounds)
        results["settings"][label] = r
        tr, inf = r["train_step"], r["inference"]
        print(f"| {label} | {r['map_mib'][16]:.0f} / {r['map_mib'][8]:.0f} MiB | {tr['stride16_s']:.2f} → "
              f"{tr['stride8_s']:.2f} s (×{tr['ratio_median']:.2f}) | {inf['stride16_s']:.2f} → {inf['stride8_s']:.2f} s "
              f"(×{inf['ratio_median']:.2f}) |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
