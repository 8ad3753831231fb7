"""The Markdown of ``benchmarks/scratch_levers.py``'s results (rows x datasets, details, per class).

:func:`render` reads only the results dict (``OUT/scratch_levers.json``), so the tables can be
rendered again without running anything (``python -m benchmarks.scratch_levers --out DIR
--report-only``).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["render", "cell"]


def _get(record: dict[str, Any], *keys: str) -> float | None:
    node: Any = record
    for k in keys:
        if not isinstance(node, dict) or node.get(k) is None:
            return None
        node = node[k]
    v = float(node)
    return None if math.isnan(v) else v


def cell(record: dict[str, Any] | None, *keys: str, scale: float = 100.0, digits: int = 1) -> str:
    """``record[keys...]`` x ``scale`` as text; ``-`` when missing or nan, ``failed`` for an error."""
    if record is None:
        return ""
    if "error" in record:
        return "failed"
    v = _get(record, *keys)
    return "-" if v is None else f"{scale * v:.{digits}f}"


def _row_keys(results: dict[str, Any]) -> list[str]:
    """Row keys in first-seen order over the datasets (the harness's order)."""
    keys: list[str] = []
    for entry in results.get("datasets", {}).values():
        keys += [k for k in entry.get("rows", {}) if k not in keys]
    return keys


def _label(results: dict[str, Any], key: str) -> str:
    for entry in results.get("datasets", {}).values():
        rec = entry.get("rows", {}).get(key)
        if rec and rec.get("label"):
            return rec["label"]
    return key


def _summary_table(results: dict[str, Any]) -> list[str]:
    names = list(results.get("datasets", {}))
    lines = ["| row | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in _row_keys(results):
        cells = []
        for name in names:
            rec = results["datasets"][name].get("rows", {}).get(key)
            if rec is None or "error" in rec:
                cells.append(cell(rec, "metrics", "segm", "AP"))
                continue
            cells.append(f"{cell(rec, 'metrics', 'segm', 'AP')} ({cell(rec, 'metrics', 'segm', 'AP50')})")
        lines.append(f"| {_label(results, key)} | " + " | ".join(cells) + " |")
    return lines


def _times(rec: dict[str, Any]) -> str:
    if "error" in rec or rec.get("loop_s") is None:
        return ""
    text = f"{rec['iterations']} it, {rec['loop_s']:.0f} s, {rec['sec_per_iter']:.2f} s/it"
    eq = rec.get("equal_time")
    if eq:
        text += (f"; equal time to '{eq['reference_row']}' ({eq['reference_loop_s']:.0f} s): calibrated "
                 f"{eq['calibration_sec_per_iter']:.2f} s/it over {eq['calibration_iterations']} it, "
                 f"achieved x{eq.get('achieved_loop_ratio', float('nan')):.2f}")
    return text


def _details(name: str, entry: dict[str, Any]) -> list[str]:
    rows = entry.get("rows", {})
    before = _get(rows.get("before", {}), "metrics", "segm", "AP")
    lines = [f"### {name}", "",
             "| row | segm AP | AP50 | AP75 | APs | box AP | mAP^r@0.5 | mAP^r@0.7 | x before | training | "
             "command wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, rec in rows.items():
        if "error" in rec:
            lines.append(f"| {rec.get('label', key)} | failed: {rec['error'][:120]} |||||||||")
            continue
        ap = _get(rec, "metrics", "segm", "AP")
        ratio = f"{ap / before:.2f}" if ap is not None and before else "-"
        wall = rec.get("train_wall_s")
        lines.append(
            f"| {rec.get('label', key)} | {cell(rec, 'metrics', 'segm', 'AP')} | {cell(rec, 'metrics', 'segm', 'AP50')} "
            f"| {cell(rec, 'metrics', 'segm', 'AP75')} | {cell(rec, 'metrics', 'segm', 'APs')} "
            f"| {cell(rec, 'metrics', 'bbox', 'AP')} | {cell(rec, 'metrics', 'voc', 'mAP@0.5')} "
            f"| {cell(rec, 'metrics', 'voc', 'mAP@0.7')} | {ratio} | {_times(rec)} "
            f"| {'' if wall is None else f'{wall:.0f}'} |")
    return lines


def _chosen(name: str, entry: dict[str, Any]) -> list[str]:
    fields = ("min_size", "max_size", "anchor_sizes", "aspect_ratios", "anchor_coverage", "norm", "head_stride",
              "mask_loss_normalization", "scale_jitter", "photometric", "copy_paste")
    lines = [f"What each run chose on {name} (its config.json; a field the code lacks is blank):", "",
             "| row | " + " | ".join(fields) + " |", "|---" * (len(fields) + 1) + "|"]
    for key, rec in entry.get("rows", {}).items():
        chosen = rec.get("chosen") or {}
        vals = []
        for f in fields:
            v = chosen.get(f)
            vals.append("" if v is None else (f"{100 * v:.1f}%" if f == "anchor_coverage" else str(v)))
        lines.append(f"| {rec.get('label', key)} | " + " | ".join(vals) + " |")
    return lines


def _per_class(name: str, entry: dict[str, Any]) -> list[str]:
    rows = entry.get("rows", {})
    classes: list[tuple[str, int]] = []
    for rec in rows.values():
        for cls, v in (rec.get("per_class", {}).get("segm") or {}).items():
            if cls not in [c for c, _ in classes]:
                classes.append((cls, v.get("instances", 0)))
    if not classes:
        return []
    lines = [f"### {name}", "", "| row | " + " | ".join(f"{c} ({n})" for c, n in classes) + " | mean = segm AP |",
             "|---" * (len(classes) + 2) + "|"]
    for key, rec in rows.items():
        per = rec.get("per_class", {}).get("segm") or {}
        missing = "failed" if "error" in rec else "-"
        cells = [cell(per[c], "AP") if c in per else missing for c, _ in classes]
        check = rec.get("per_class_mean_matches_overall")
        lines.append(f"| {rec.get('label', key)} | " + " | ".join(cells)
                     + f" | {'yes' if check else ('NO' if check is False else '-')} |")
    return lines


def render(results: dict[str, Any]) -> str:
    """The Markdown of a results dict of ``benchmarks.scratch_levers``."""
    s = results.get("settings", {})
    out = ["# Issue 22: the from-scratch levers one by one (benchmarks/scratch_levers.py)", "",
           "Generated from scratch_levers.json; every FCIS row trains `fcis_resnet18` from random weights for "
           f"{s.get('iterations', '?')} iterations of {s.get('batch_size', 2)} images on the CPU "
           f"(OMP_NUM_THREADS={s.get('threads') or 'unset'}), Mask R-CNN rows for the same training-loop time "
           "as the row they name; each row is the new bare command plus its flags, scored by `fcis evaluate` "
           "on the held-out images." + (f" Extra flags on every run: `{s['extra']}`." if s.get("extra") else ""), ""]
    for k, c in results.get("code", {}).items():
        out.append(f"- code '{k}': {c.get('path')} at {c.get('commit', '')[:12]}"
                   + (" (uncommitted changes)" if c.get("dirty") else "") + f", imports {c.get('fcis_imported_from')}")
    levers = s.get("levers", {})
    if levers:
        out.append("- levers of the bare command (flags that turn each off): " + "; ".join(
            f"{v['label']}: `{' '.join(v['off'])}`" for v in levers.values() if v.get("off")))
        extra = [v for v in levers.values() if v.get("on")]
        if extra:
            out.append("- levers measured and left off (flags that turn each on): " + "; ".join(
                f"{v['label']}: `{' '.join(v['on'])}`" for v in extra))
    for name, entry in results.get("datasets", {}).items():
        summ = (entry.get("data") or {}).get("summary") or {}
        if summ:
            tr, va = summ.get("train", {}), summ.get("val", {})
            out.append(f"- {name}: train {tr.get('images')} images / {tr.get('instances')} instances, held out "
                       f"{va.get('images')} / {va.get('instances')}; classes {va.get('per_class')}")
    out += ["", "## Mask AP (AP50) per row and dataset", "", *_summary_table(results), "",
            "## Details", ""]
    for name, entry in results.get("datasets", {}).items():
        out += [*_details(name, entry), "", *_chosen(name, entry), ""]
    out += ["## Mask AP per class (COCOeval per category; the last column checks their mean against the "
            "overall AP)", ""]
    for name, entry in results.get("datasets", {}).items():
        block = _per_class(name, entry)
        if block:
            out += [*block, ""]
    return "\n".join(out).rstrip() + "\n"
