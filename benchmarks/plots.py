"""The PNG plots of RESULTS.md (matplotlib, Agg) from the JSON of a run; ``report.py`` writes the
text that links them. Without matplotlib no plot is drawn and the report has none.
"""

from __future__ import annotations

import math
from pathlib import Path

from .accuracy import ABLATION_LABELS, voc_pair


def _ok(x) -> bool:
    """``x`` is a number and not NaN (a value to plot)."""
    return isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x))


def make_plots(results: dict, folder: Path) -> dict[str, str]:
    """PNG plots (matplotlib, Agg) into ``folder``; returns ``{key: path relative to the report}``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}

    def save(fig, key: str, name: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        made[key] = f"{folder.name}/{name}"

    lat = results.get("latency")
    if lat:
        avail = [(n, m) for n, m in lat["models"].items() if m.get("available")]
        if avail:
            fig, ax = plt.subplots(figsize=(9, 1.2 + 0.7 * len(avail)))
            colours = plt.get_cmap("tab20").colors
            labels_seen = set()
            for i, (name, m) in enumerate(avail):
                left = 0.0
                for j, (stage, v) in enumerate(m["breakdown_s"].items()):
                    label = stage if stage not in labels_seen else None
                    labels_seen.add(stage)
                    colour = colours[j % 20] if name.startswith("fcis") else colours[(j + 10) % 20]
                    ax.barh(i, 1000 * v, left=left, color=colour, label=label)
                    left += 1000 * v
                ax.plot([1000 * m["end_to_end_s"]] * 2, [i - 0.4, i + 0.4], color="k", lw=2)
            ax.set_yticks(range(len(avail)), [n for n, _ in avail])
            ax.set_xlabel("ms (bars: stages; black line: end to end)")
            ax.set_title(f"Inference latency, CPU, batch 1, {lat.get('detections_target', 100)} detections")
            ax.legend(fontsize=6, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.35))
            save(fig, "latency", "latency_breakdown.png")
    roi = results.get("roi_scaling")
    if roi:
        n = roi["counts"]
        fig, ax = plt.subplots(figsize=(6, 4.5))
        ax.loglog(n, [1000 * roi["fcis"]["median_s"][str(k)] for k in n], "o-",
                  label="FCIS assembling + scoring (1 pass)")
        mr = roi.get("maskrcnn", {})
        if mr.get("available"):
            ax.loglog(n, [1000 * mr["box_median_s"][str(k)] for k in n], "s--", label="Mask R-CNN box head")
            ax.loglog(n, [1000 * mr["mask_median_s"][str(k)] for k in n], "^--", label="Mask R-CNN mask head")
            ax.loglog(n, [1000 * mr["total_median_s"][str(k)] for k in n], "d-", label="Mask R-CNN box + mask")
        ax.set_xlabel("RoIs")
        ax.set_ylabel("ms (median)")
        ax.set_title("Per-RoI stage vs number of RoIs (CPU)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, "roi", "roi_scaling.png")
    acc = results.get("accuracy")
    if acc and "datasets" in acc:
        dsets = [(ds, d) for ds, d in acc["datasets"].items() if not d.get("skipped")]
        if dsets:
            fig, axes = plt.subplots(1, len(dsets), figsize=(5.5 * len(dsets), 4), squeeze=False)
            metrics = [("segm", "AP", "mask AP"), ("voc", "mAP@0.5", "mAP^r@0.5"), ("voc", "mAP@0.7", "mAP^r@0.7"),
                       ("ar", "AR@100", "AR@100")]
            for ax, (ds, d) in zip(axes[0], dsets):
                runs = [(k, r) for k, r in d["runs"].items() if r.get("metrics")]
                width = 0.8 / max(len(runs), 1)
                multi = len(d["info"].get("classes", [])) > 1
                top = 1.0
                for i, (_k, r) in enumerate(runs):
                    agnostic = r.get("class_agnostic") and multi  # class-aware AP is not its metric
                    vals = [math.nan if agnostic and t != "ar" else 100 * ((r["metrics"].get(t) or {}).get(key) or 0.0)
                            for t, key, _ in metrics]
                    top = max([top] + [v for v in vals if _ok(v)])
                    ax.bar([x + i * width for x in range(len(metrics))], vals, width, label=r["model"])
                ax.set_ylim(0, 1.15 * top)
                ax.set_xticks([x + 0.4 - width / 2 for x in range(len(metrics))], [m[2] for m in metrics])
                ax.set_title(f"{ds}: equal budget ({d['iterations']} it.)")
                ax.set_ylabel("×100")
                ax.legend(fontsize=8)
            save(fig, "accuracy", "accuracy.png")
            fig, axes = plt.subplots(1, len(dsets), figsize=(5.5 * len(dsets), 4), squeeze=False)
            for ax, (ds, d) in zip(axes[0], dsets):
                for r in d["runs"].values():
                    if r.get("loss_curve"):
                        xs, ys = zip(*r["loss_curve"])
                        ax.plot(xs, ys, label=r["model"])
                ax.set_yscale("log")
                ax.set_xlabel("iteration")
                ax.set_ylabel("training loss (window mean)")
                ax.set_title(ds)
                ax.legend(fontsize=8)
            save(fig, "losses", "training_losses.png")
    abl = results.get("ablation")
    if abl and "datasets" in abl:
        dsets = [(ds, d) for ds, d in abl["datasets"].items() if not d.get("skipped")]
        if dsets:
            fig, axes = plt.subplots(1, len(dsets), figsize=(5.5 * len(dsets), 4), squeeze=False)
            for ax, (ds, d) in zip(axes[0], dsets):
                keys = list(ABLATION_LABELS)
                ours = [voc_pair(d["variants"].get(k, {})) for k in keys]
                xs = range(len(keys))
                ax.bar([x - 0.2 for x in xs], [o[0] or 0 for o in ours], 0.4, label="mAP^r@0.5")
                ax.bar([x + 0.2 for x in xs], [o[1] or 0 for o in ours], 0.4, label="mAP^r@0.7")
                ax.set_xticks(list(xs), ["joint", "k=1", "separate", "no OHEM", "no voting"], fontsize=8)
                ax.set_ylim(0, 1.15 * max([1.0] + [v for o in ours for v in o if _ok(v)]))
                ax.set_title(f"{ds}: FCIS ablation")
                ax.legend(fontsize=8)
            save(fig, "ablation", "ablation.png")
    return made
