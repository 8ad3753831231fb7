"""What one redraw of ``curves.png`` costs (fcis.engine.curves), for a demo-sized log and a
COCO-sized one, and how often a run therefore redraws (CurvePlotter waits at least
``min_interval_s`` and at least draw time / ``max_share`` between two redraws on log lines).

    OMP_NUM_THREADS=1 python -m benchmarks.curves_cost [--repeats 7]

Prints the median and minimum time of a redraw (curves from the records, the picture, the PNG
written atomically) and of its parts.
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import tempfile
import time
from pathlib import Path

from fcis.engine.curves import CurvePlotter, curves_from_records, draw_curves, render_curves

TERMS = ("loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "loss_mask")


def synthetic_log(iterations: int, log_every: int, eval_every: int) -> list[dict]:
    """Records shaped like a run's log.jsonl: five falling loss terms and their total, a stepped
    learning rate, and validations."""
    records = []
    for it in range(log_every, iterations + 1, log_every):
        t = it / iterations
        losses = {k: (i + 1) * 0.2 * math.exp(-2 * t) * (1 + 0.1 * math.sin(it * (i + 1))) for i, k in enumerate(TERMS)}
        losses["loss"] = sum(losses.values())
        lr = 0.02 * (0.1 if t > 2 / 3 else 1.0)
        records.append({"iteration": it, "loss": losses["loss"], "losses": losses, "lr": lr, "time": 0.0})
        if it % eval_every == 0:
            records.append({"iteration": it, "metrics": {"segm": {"AP": 0.3 * t}, "bbox": {"AP": 0.32 * t},
                                                         "voc": {"mAP@0.5": 0.5 * t, "mAP@0.7": 0.4 * t}}})
    return records


def _times(fn, repeats: int) -> tuple[float, float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out), min(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    cases = {"demo (600 it, a line every 20, 1 validation)": synthetic_log(600, 20, 600),
             "COCO paper run (90k it, a line every 20, validation every 10k)": synthetic_log(90_000, 20, 10_000)}
    print(f"{'log':<66} {'lines':>6} {'records->curves':>16} {'picture':>9} {'PNG':>7} {'redraw':>16}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, records in cases.items():
            curves = curves_from_records(records)
            image = render_curves(curves, total_iterations=records[-1]["iteration"])
            parse = _times(lambda r=records: curves_from_records(r), args.repeats)
            picture = _times(lambda c=curves: render_curves(c, total_iterations=90_000), args.repeats)
            png = _times(lambda im=image: im.save(io.BytesIO(), format="PNG", compress_level=3), args.repeats)
            plotter = CurvePlotter(Path(tmp) / "curves.png", records, total_iterations=records[-1]["iteration"])
            redraw = _times(plotter.draw, args.repeats)
            _times(lambda r=records: draw_curves(r, Path(tmp) / "c2.png"), 1)
            print(f"{name:<66} {len(records):>6} {1e3 * parse[0]:>13.0f} ms {1e3 * picture[0]:>6.0f} ms "
                  f"{1e3 * png[0]:>4.0f} ms {1e3 * redraw[0]:>6.0f} ms (min {1e3 * redraw[1]:.0f})")
            wait = max(plotter.min_interval_s, redraw[0] / plotter.max_share)
            print(f"{'':<66} a training run redraws at most every {wait:.0f} s "
                  f"(<= {100 * redraw[0] / wait:.1f}% of its time; on a log line, besides validations and the end)")


if __name__ == "__main__":
    main()
