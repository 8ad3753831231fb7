"""RESULTS.md, as text, from the JSON of a run (``results/results.json``); the PNG plots it links
are drawn by ``plots.py``.

Everything here reads the JSON only, so a report can be rebuilt (``python -m benchmarks.run
--report-only``), with sections merged from another machine (``--merge``), without measuring
anything again.
"""

from __future__ import annotations

import math
from pathlib import Path

from .accuracy import ABLATION_LABELS, PAPER_NOTES, PAPER_VOC, voc_pair
from .latency import FCIS_STAGES, MASKRCNN_STAGES

SECTION_TITLES = {
    "latency": "1. Inference latency (CPU, batch 1)",
    "roi_scaling": "2. Per-RoI stage against the number of RoIs",
    "throughput": "3. Training throughput and peak memory",
    "accuracy": "4. Accuracy at equal training budget",
    "ablation": "5. The paper's ablation",
    "limit": "6. The limit: backbone GFLOP/s beside the matmul peak",
    "gpu": "7. GPU",
    "real_photos": "8. The bare `fcis train` on real photos",
    "coco_val": "9. A converted model on COCO val2017",
}


# --- formatting ----------------------------------------------------------------------------------

def _ok(x) -> bool:
    return isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x))


def ms(x) -> str:
    return f"{1000 * x:.1f}" if _ok(x) else "-"


def sec(x, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if _ok(x) else "-"


def num(x, digits: int = 1) -> str:
    return f"{x:.{digits}f}" if _ok(x) else "-"


def pct(x) -> str:
    """A fraction as ×100 with one decimal."""
    return f"{100 * x:.1f}" if _ok(x) else "-"


def times(x) -> str:
    return f"{x:.2f}×" if _ok(x) else "-"


def _ratio(a, b):
    return a / b if _ok(a) and _ok(b) and b else None


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- sections ------------------------------------------------------------------------------------

def _stage_table(models: list[tuple[str, dict]], stages) -> str:
    """Milliseconds and share of each stage per model, then the sum and the end-to-end time."""
    header = ["stage"] + [x for n, _ in models for x in (f"`{n}` ms", "%")]
    rows = []
    for stage in stages:
        row = [stage]
        for _, m in models:
            v = m["breakdown_s"].get(stage)
            row += [ms(v), pct(_ratio(v, m["breakdown_sum_s"]))]
        rows.append(row)
    rows.append(["**sum of the stages**"] + [x for _, m in models for x in (ms(m["breakdown_sum_s"]), "100")])
    rows.append(["end to end (`model([image])`)"] + [x for _, m in models for x in (ms(m["end_to_end_s"]), "")])
    return table(header, rows)


def _latency(sec_: dict, plots: dict) -> str:
    models = sec_["models"]
    h, w = sec_["image"]
    out = [f"Image {h}×{w} (short side {sec_['min_size']}, long side <= {sec_['max_size']}), "
           f"{sec_['num_classes']} classes, random weights, no score threshold so that every model keeps "
           f"exactly {sec_.get('detections_target', 100)} detections; masks pasted at full image size. "
           f"The backbones' BatchNorm statistics are taken from one pass over the image (weights stay "
           f"random: in eval mode with the initial statistics a random ResNet-101's activations reach "
           f"~1e5 and FCIS's softmax saturates to no detection at all). Without a score threshold every "
           f"class of every candidate enters the per-class NMS (FCIS: 600 × C, Mask R-CNN: 1000 × C "
           f"boxes), so the NMS rows are larger than with a trained model's thresholds. "
           f"Median of {sec_['repeats']} runs after "
           f"{sec_['warmup']} warm-up. Ratios are to `{sec_.get('peer')}` measured in this run.", ""]
    rows = []
    for name, m in models.items():
        if not m.get("available"):
            rows.append([f"`{name}`", "not available", "", "", "", ""])
            continue
        rows.append([f"`{name}`", ms(m["end_to_end_s"]), times(m.get("ratio_over_peer")),
                     ms(m["breakdown_sum_s"]),
                     str(m["detections"]) if m["detections"] == sec_.get("detections_target", 100)
                     else f"**{m['detections']}**",
                     "yes" if m.get("breakdown_matches_end_to_end") else "**no**"])
    out.append(table(["model", "end to end (ms)", f"× `{sec_.get('peer')}`", "sum of the stages (ms)", "detections",
                      "stages give the same detections"], rows))
    fcis = [(n, m) for n, m in models.items() if n.startswith("fcis") and m.get("available")]
    if fcis:
        out += ["", "**FCIS stages** (each piece of the model called in sequence on the same input; "
                "the stages of one run add up to its total):", ""]
        out.append(_stage_table(fcis, FCIS_STAGES))
        for n, m in fcis:
            if _ok(m.get("pasting_only_no_voting_s")):
                out.append(f"\n`{n}`: pasting only the 100 detections' own masks (mask voting off) takes "
                           f"{ms(m['pasting_only_no_voting_s'])} ms; with voting, every candidate of the class "
                           f"with box IoU >= 0.5 is pasted and averaged (with random weights and no score "
                           f"threshold that is most of the 600 candidates).")
    mr = [(n, m) for n, m in models.items() if n.startswith("maskrcnn") and m.get("available")]
    if mr:
        out += ["", "**Mask R-CNN stages** (torchvision's pieces in sequence):", ""]
        out.append(_stage_table(mr, MASKRCNN_STAGES))
    if "latency" in plots:
        out += ["", f"![latency breakdown]({plots['latency']})"]
    return "\n".join(out)


def _roi(sec_: dict, plots: dict) -> str:
    h, w = sec_["image"]
    out = [f"Per-RoI stage on the precomputed maps of one {h}×{w} image, {sec_['num_classes']} classes, "
           f"random boxes (the same for both models). FCIS: `head.score_rois` (assembling of the "
           f"inside/outside maps, k = 7, P = 21, and of the box maps, plus the scoring), one pass — at "
           f"inference FCIS runs it twice (300 proposals, then the 300 refined boxes). `{sec_['fcis']['model']}` "
           f"beside `{sec_.get('maskrcnn', {}).get('model', 'Mask R-CNN')}`: "
           f"box head (MultiScaleRoIAlign 7×7 + TwoMLPHead + predictor) and mask head (MultiScaleRoIAlign "
           f"14×14 + 4 convs + deconv + predictor) on all the RoIs (at inference the mask head sees the "
           f"<= 100 detections only). Median of {sec_['repeats']} runs after {sec_['warmup']} warm-up.", ""]
    f = sec_["fcis"]["median_s"]
    mr = sec_.get("maskrcnn", {})
    rows = []
    for n in sec_["counts"]:
        k = str(n)
        if mr.get("available"):
            rows.append([k, ms(f[k]), num(1000 * f[k] / n, 3), ms(mr["box_median_s"][k]), ms(mr["mask_median_s"][k]),
                         ms(mr["total_median_s"][k]), num(1000 * mr["total_median_s"][k] / n, 3),
                         times(sec_["ratio_maskrcnn_box_over_fcis"][k]),
                         times(sec_["ratio_maskrcnn_total_over_fcis"][k])])
        else:
            rows.append([k, ms(f[k]), num(1000 * f[k] / n, 3), "not available", "", "", "", "", ""])
    out.append(table(["RoIs", "FCIS (ms)", "FCIS ms/RoI", "Mask R-CNN box head (ms)", "mask head (ms)",
                      "box + mask (ms)", "Mask R-CNN ms/RoI", "box head / FCIS", "box + mask / FCIS"], rows))
    if "roi" in plots:
        out += ["", f"![per-RoI scaling]({plots['roi']})"]
    return "\n".join(out)


def _throughput(sec_: dict, plots: dict) -> str:
    h, w = sec_["image"]
    out = [f"One training step (forward, backward, SGD) on {sec_['batch']} random {h}×{w} image(s) with three "
           f"boxes/masks each, {sec_['num_classes']} classes, random weights, each model at its default "
           f"configuration (FCIS: OHEM 128 of the 300 proposals + GT; Mask R-CNN: 512 sampled RoIs), median of "
           f"{sec_['steps']} steps after {sec_['warmup']} warm-up, each model in a fresh subprocess.", "",
           "Memory method: in that subprocess, after the model, optimizer and inputs exist, the resident set "
           "(`VmRSS`) is read, the kernel's high-water mark is reset (`5` written to `/proc/self/clear_refs`), "
           "the steps run, and the high-water mark (`VmHWM`; `getrusage().ru_maxrss` agrees) is read again. "
           "*Peak growth* = high-water mark − resident set before the first step: activations, gradients, "
           "momentum buffers and allocator slack, everything torch takes from the OS (tracemalloc does not "
           "see torch's allocations).", ""]
    rows = []
    ms_ = sec_["models"]
    peer = ms_.get(sec_.get("peer"), {})
    for name, m in ms_.items():
        if not m.get("available"):
            rows.append([f"`{name}`", "not available"] + [""] * 7)
            continue
        if m.get("error"):
            rows.append([f"`{name}`", "failed: " + " ".join(m["error"])] + [""] * 7)
            continue
        rows.append([f"`{name}`", sec(m["step_s"]), num(m["images_per_s"], 3),
                     times(_ratio(m["images_per_s"], peer.get("images_per_s"))),
                     num(m["peak_growth_mib"], 0), times(_ratio(m["peak_growth_mib"], peer.get("peak_growth_mib"))),
                     num(m["peak_rss_mib"], 0), num(m["rss_before_mib"], 0), num(m["params_m"], 1)
                     + ("" if m.get("hwm_reset") else " (HWM not reset)")])
    out.append(table(["model", "step (s)", "images/s", f"images/s × `{sec_.get('peer')}`", "peak growth (MiB)",
                      f"growth × `{sec_.get('peer')}`", "peak RSS (MiB)", "RSS before (MiB)", "params (M)"], rows))
    return "\n".join(out)


def _metric_row(key: str, r: dict, fcis: dict, num_classes: int) -> list[str]:
    name = f"`{r.get('model', key)}`"
    if not r.get("available", True):
        return [name, "not available (not in `fcis.models.BUILDERS`)"] + [""] * 11
    if r.get("error"):
        return [name, f"failed: {r['error'][:160]}"] + [""] * 11
    m = r.get("metrics") or {}
    segm, voc, ar = m.get("segm") or {}, m.get("voc") or {}, m.get("ar") or {}
    if r.get("class_agnostic") and num_classes > 1:  # one label for every class: AP is not its metric
        segm, voc = {}, {}
        name += " (class-agnostic)"
    return [name, sec(r.get("train_s_per_iter")),
            times(_ratio(r.get("train_s_per_iter"), fcis.get("train_s_per_iter"))),
            sec(r.get("train_time_s"), 0), ms(r.get("inference_s_per_image")),
            times(_ratio(r.get("inference_s_per_image"), fcis.get("inference_s_per_image"))),
            pct(segm.get("AP")), pct(segm.get("AP50")), pct(segm.get("AP75")), pct(voc.get("mAP@0.5")),
            pct(voc.get("mAP@0.7")), pct(ar.get("AR@100")), num((r.get("final_losses") or {}).get("loss"), 3)]


def _parallel_text(settings: dict) -> str:
    par = settings.get("parallel")
    if not par:
        return ""
    return (f" The datasets ({', '.join(par['datasets'])}) were trained side by side, one process each with "
            f"{par['torch_threads_each']} torch thread(s): every time in this section and the next is a "
            f"{par['torch_threads_each']}-thread time with the other process on the other core, so compare "
            f"times within a dataset, not with sections 1-3.")


def _accuracy(sec_: dict, plots: dict) -> str:
    s = sec_["settings"]
    fo = s["family_overrides"]
    out = [f"Trained from scratch (random backbones) through `fcis.engine.train` with one `TrainConfig` for "
           f"every model: batch {s['batch_size']}, {_optimizer_text(s)}, "
           f"{s['warmup_iters']} warm-up iterations, ×0.1 at {', '.join(str(x) for x in s['lr_steps'])} of "
           f"the run, gradient norm clipped at {s['clip_grad_norm']}, seed {s['seed']}, same data order; "
           f"{s['shapes_iterations']} iterations on shapes, {s['penn_iterations']} on PennFudanPed. "
           f"Anchors chosen for the objects: shapes — FCIS {tuple(fo['shapes']['fcis']['anchor_sizes'])} on "
           f"its single stride-16 map (as the demo), Mask R-CNN {tuple(fo['shapes']['maskrcnn']['anchor_sizes'])} "
           f"(one per FPN level P2..P6: torchvision's 32..512 halved); PennFudanPed — FCIS "
           f"{tuple(fo['pennfudan']['fcis']['anchor_sizes'])}, Mask R-CNN torchvision's (32, 64, 128, 256, 512). "
           f"Mask R-CNN samples 128 RoIs per image for its box/mask losses (torchvision: 512) as FCIS's OHEM "
           f"keeps 128. Everything else is each model's default (FCIS: 300 proposals, OHEM; Mask R-CNN: "
           f"2000/1000 proposals in training/test; InstanceFCN: stride 8, window sizes 33..567 px). "
           f"Metrics ×100 on the held-out images: COCO mask AP, the paper's VOC mAP^r at IoU 0.5 "
           f"and 0.7, class-agnostic mask AR@100 (InstanceFCN's metric, given for all). Train time: the "
           f"training loop's wall time; inference: median `model([image])` time per image during the "
           f"evaluation (masks pasted at full size). Ratios are to FCIS on the same data."
           + _parallel_text(s), ""]
    header = ["model", "train s/iter", "× FCIS", "train total (s)", "inference ms/image", "× FCIS", "mask AP",
              "AP50", "AP75", "mAP^r@0.5", "mAP^r@0.7", "AR@100", "final loss"]
    for ds, d in sec_["datasets"].items():
        title = "Synthetic shapes" if ds == "shapes" else "PennFudanPed"
        out.append(f"\n**{title}**")
        if d.get("skipped"):
            out.append(f"\nSkipped: {d['skipped']}.")
            continue
        info = d["info"]
        if ds == "shapes":
            out.append(f"\n{info['images']} images {info['image_size'][0]}×{info['image_size'][1]} (seed "
                       f"{info['seed']}): {info['train_images']} train, {info['val_images']} held out "
                       f"({info['val_instances']} instances), classes {', '.join(info['classes'])}; "
                       f"{d['iterations']} iterations.\n")
        else:
            out.append(f"\n{info['train_images']} train / {info['held_out_images']} held out ({info['split']}); "
                       f"evaluated on {info['evaluated_images']} held-out images ({info['val_instances']} "
                       f"pedestrians); resized by the models to short side {info['resize'][0]} (long side <= "
                       f"{info['resize'][1]}); {d['iterations']} iterations.\n")
        fcis = d["runs"].get("fcis", {})
        ncls = len(info.get("classes", [])) or 1
        out.append(table(header, [_metric_row(k, r, fcis, ncls) for k, r in d["runs"].items()]))
        if ncls > 1 and any(r.get("class_agnostic") for r in d["runs"].values()):
            out.append("\nClass-agnostic models (InstanceFCN's proposals carry one label) have no class-aware AP "
                       "on this multi-class set: AR@100 is their metric.")
        if ds != "shapes":
            out.append("\n<details><summary>held-out files</summary>\n\n" + ", ".join(info["held_out_files"])
                       + "\n\n</details>")
    for key in ("accuracy", "losses"):
        if key in plots:
            out += ["", f"![{key}]({plots[key]})"]
    return "\n".join(out)


def ablation_reading(variants: dict[str, dict], dataset: str) -> str:
    """One paragraph generated from the numbers: does the paper's joint > separate > k=1 order hold?"""
    pairs = {k: voc_pair(v) for k, v in variants.items()}
    j, s, k = pairs.get("joint"), pairs.get("separate"), pairs.get("k1")
    parts = []
    for idx, iou in ((0, "0.5"), (1, "0.7")):
        vals = [p[idx] if p else None for p in (j, s, k)]
        if any(v is None for v in vals):
            parts.append(f"at IoU {iou} the order cannot be read (a variant has no result)")
            continue
        holds = vals[0] > vals[1] > vals[2]
        order = " > ".join(name for name, _ in sorted(zip(("joint", "separate", "k=1"), vals), key=lambda t: -t[1]))
        parts.append(f"at IoU {iou} it {'holds' if holds else 'does not hold'} (ours: joint {vals[0]:.1f}, "
                     f"separate {vals[1]:.1f}, k=1 {vals[2]:.1f}; order {order})")
    text = f"On {dataset}, the paper's ordering joint > separate score maps > k=1 " + "; ".join(parts) + "."
    for key, what in (("no_ohem", "OHEM"), ("no_voting", "Mask voting")):
        a, b = pairs.get("joint"), pairs.get(key)
        if a and b and a[0] is not None and b[0] is not None:
            d5, d7 = a[0] - b[0], (a[1] - b[1]) if a[1] is not None and b[1] is not None else None
            text += (f" {what} changes mAP^r by {d5:+.1f} at 0.5"
                     + (f" and {d7:+.1f} at 0.7" if d7 is not None else "") + " (joint minus without).")
    text += (" One seed per variant, trained from scratch on a small budget: differences of a point or two "
             "are within what another seed could change, so only large gaps say anything.")
    return text


def _ablation(sec_: dict, plots: dict, quick: bool) -> str:
    out = ["FCIS R-18 variants trained with the budget and `TrainConfig` of section 4 (the joint row *is* "
           "section 4's FCIS); the no-voting row evaluates the joint weights again with "
           "`config.mask_voting = False`. mAP^r ×100 on the held-out images, beside the paper's VOC 2012 val "
           "numbers (R-101, ImageNet-initialised, SBD masks; docs/ARCHITECTURE.md §5.1). The paper's naive-MNC row is not "
           "reproduced here.", ""]
    for ds, d in sec_["datasets"].items():
        title = "Synthetic shapes" if ds == "shapes" else "PennFudanPed"
        out.append(f"\n**{title}**\n")
        if d.get("skipped"):
            out.append(f"Skipped: {d['skipped']}.")
            continue
        v = d["variants"]
        j = voc_pair(v.get("joint", {}))
        pj = PAPER_VOC["joint"]
        rows = []
        for key, label in ABLATION_LABELS.items():
            r = v.get(key, {})
            p = PAPER_VOC[key]
            if not r.get("available", True):
                rows.append([label, "not available"] + [""] * 6)
                continue
            if r.get("error"):
                rows.append([label, f"failed: {r['error'][:120]}"] + [""] * 6)
                continue
            o = voc_pair(r)
            d5 = o[0] - j[0] if o[0] is not None and j[0] is not None else None
            d7 = o[1] - j[1] if o[1] is not None and j[1] is not None else None
            pd5 = p[0] - pj[0] if p[0] is not None else None
            pd7 = p[1] - pj[1] if p[1] is not None else None
            paper = (f"{p[0]} / {p[1]}" if p[0] is not None else PAPER_NOTES.get(key, "-"))
            rows.append([label, num(o[0]), num(o[1]), f"{num(d5, 1)} / {num(d7, 1)}" if key != "joint" else "",
                         paper, f"{num(pd5, 1)} / {num(pd7, 1)}" if key != "joint" and pd5 is not None else "",
                         pct(((r.get("metrics") or {}).get("segm") or {}).get("AP")),
                         ms(r.get("inference_s_per_image"))])
        out.append(table(["variant", "mAP^r@0.5", "mAP^r@0.7", "Δ vs joint (0.5 / 0.7)", "paper @0.5 / @0.7",
                          "paper Δ", "mask AP", "inference ms/image"], rows))
        reading = ablation_reading(v, title)
        out.append("\n" + ("*Quick mode: the reading below is generated from smoke numbers and means nothing.* "
                           if quick else "") + "Reading: " + reading)
    if "ablation" in plots:
        out += ["", f"![ablation]({plots['ablation']})"]
    return "\n".join(out)


def _limit(sec_: dict, plots: dict) -> str:
    h, w = sec_["image"]
    out = [f"FLOPs counted with `torch.utils.flop_counter.FlopCounterMode` (2 per multiply-add; convolutions "
           f"and matrix products only) over one forward of `model.backbone` on a {h}×{w} image (FCIS: the "
           f"dilated ResNet to conv5, stride 16; Mask R-CNN: ResNet + FPN); time: median of {sec_['repeats']}. "
           f"Peak: median time of a float32 `torch.matmul` of two n×n matrices (2n³ FLOPs), the best n.", ""]
    out.append(table(["matmul n", "median (ms)", "GFLOP/s"],
                     [[k, ms(m["median_s"]), num(m["gflops_per_s"])] for k, m in sec_["matmul"].items()]))
    out.append("")
    rows = []
    for name, m in sec_["models"].items():
        if not m.get("available"):
            rows.append([f"`{name}`", "not available", "", "", "", ""])
            continue
        rows.append([f"`{name}`", num(m["backbone_gflops"]), ms(m["backbone_s"]), num(m["achieved_gflops_per_s"]),
                     pct(m["fraction_of_matmul_peak"]) + " %", num(m["inference_counted_gflops"])])
    out.append(table(["model", "backbone GFLOPs", "backbone time (ms)", "achieved GFLOP/s",
                      f"of the matmul peak ({num(sec_['matmul_peak_gflops_per_s'])} GFLOP/s)",
                      "whole inference, counted GFLOPs"], rows))
    return "\n".join(out)


def _gpu(sec_: dict | None) -> str:
    if not sec_ or not sec_.get("available"):
        reason = (sec_ or {}).get("reason", "the GPU section was not run")
        return (f"No GPU was available to this run ({reason}); no GPU figure is reported. On a GPU machine: "
                f"`python -m benchmarks.run --only gpu --out DIR`, then here `python -m benchmarks.run "
                f"--report-only --merge DIR/results/results.json`.")
    m = sec_["machine"]
    h, w = sec_["image"]
    op = sec_["assemble_op"]
    out = [f"Measured on {m.get('gpu', sec_['device'])} (CPU {m['cpu']}, {op['cpu_threads']} torch threads, "
           f"torch {m['torch']}), {m['date']}. `{sec_.get('model')}`, random weights, 100 detections forced, one "
           f"{h}×{w} image, CUDA-synchronised, median of {sec_['repeats']} after {sec_['warmup']} warm-up.", ""]
    out.append(table(["", "s/image", "× paper (K40, 0.24 s)"], [
        [f"`{sec_.get('model')}`, this GPU", sec(sec_["latency_s"], 3), times(sec_["ratio_over_paper_k40"])],
        [f"`{sec_.get('model')}`, this GPU, mask voting off", sec(sec_["no_voting_s"], 3),
         times(_ratio(sec_["no_voting_s"], sec_["paper_k40_s"]))],
        ["paper (K40, R-101, trained weights)", sec(sec_["paper_k40_s"], 3), "1.00×"]]))
    out += ["", "Stages on the GPU (ms): " + ", ".join(f"{k} {ms(v)}" for k, v in sec_["breakdown_s"].items())
            + f"; sum {ms(sec_['breakdown_sum_s'])}.", ""]
    c, g = op["cpu"], op["gpu"]
    out.append(f"`ps_roi_assemble`, {op['gpu']['rois']} RoIs on a {tuple(op['gpu']['map'])} map (k = 7, P = 21):\n")
    out.append(table(["", "CPU (ms)", "GPU (ms)", "CPU / GPU"], [
        ["forward", ms(c["forward_s"]), ms(g["forward_s"]), times(op["forward_ratio_cpu_over_gpu"])],
        ["forward + backward", ms(c["fwd_bwd_s"]), ms(g["fwd_bwd_s"]), times(op["fwd_bwd_ratio_cpu_over_gpu"])]]))
    gs = op.get("gpu_grid_sample")
    if gs:
        out.append(f"\nOn the GPU, the `grid_sample` path (the one export takes): forward {ms(gs['forward_s'])} ms, "
                   f"forward + backward {ms(gs['fwd_bwd_s'])} ms.")
    train = sec_.get("training")
    if train and train.get("models"):
        out += ["", f"Training step on the GPU (batch {sec_.get('gpu_train_batch', 2)}, {h}×{w}):", ""]
        out.append(table(["model", "step (ms)", "images/s", "peak allocated growth (MiB)"], [
            [f"`{name}`", ms(r["step_s"]), num(r["images_per_s"], 2), num(r.get("peak_allocated_growth_mib"))]
            for name, r in train["models"].items()]))
        out.append(f"\nImages/s FCIS / Mask R-CNN: {times(train.get('ratio_images_per_s_fcis_over_maskrcnn'))}; "
                   f"peak memory FCIS / Mask R-CNN: {times(train.get('ratio_peak_fcis_over_maskrcnn'))}.")
    return "\n".join(out)


# --- plots ---------------------------------------------------------------------------------------

def _range(values: list[float], fmt: str = "{:.1f}") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"


def _faster(r: float) -> str:
    """'1.13× the time (slower)' style wording of a time ratio FCIS / peer."""
    return f"{r:.2f}× the time ({'faster' if r < 1 else 'slower'})"


def summary(results: dict) -> list[str]:
    """Bullets of the headline figures, generated from the sections present: where FCIS wins and
    where it loses in this run."""
    out = []
    lat = results.get("latency") or {}
    models = lat.get("models") or {}
    peer = lat.get("peer")
    rows = [(name, m.get("ratio_over_peer")) for name, m in models.items() if name != peer and _ok(m.get("ratio_over_peer"))]
    if rows:
        out.append(f"**Inference (CPU, batch 1, {lat['image'][0]}×{lat['image'][1]}, 100 detections, masks pasted):** "
                   + "; ".join(f"`{n}` {_faster(r)} of `{peer}`" for n, r in rows) + ".")
    roi = results.get("roi_scaling") or {}
    if roi.get("fcis") and (roi.get("maskrcnn") or {}).get("available"):
        counts = [str(c) for c in roi["counts"]]
        f = [1000 * roi["fcis"]["median_s"][c] / int(c) for c in counts]
        m = [1000 * roi["maskrcnn"]["total_median_s"][c] / int(c) for c in counts]
        box = [roi["ratio_maskrcnn_box_over_fcis"][c] for c in counts]
        out.append(f"**Per RoI** ({counts[0]}-{counts[-1]} RoIs): FCIS's assembling + scoring {_range(f, '{:.2f}')} ms "
                   f"against {_range(m, '{:.2f}')} ms for Mask R-CNN's box + mask heads, "
                   f"{_range([b / a for a, b in zip(f, m)])}× cheaper; Mask R-CNN's box head alone costs "
                   f"{_range(box, '{:.2f}')}× FCIS's stage, and at inference its mask head sees only the detections.")
    thr = results.get("throughput") or {}
    if _ok(thr.get("ratio_images_per_s_fcis_over_maskrcnn")):
        out.append(f"**Training** (batch {thr['batch']}, {thr['image'][0]}×{thr['image'][1]}): `{thr['fcis']}` "
                   f"{thr['ratio_images_per_s_fcis_over_maskrcnn']:.2f}× the images/s of `{thr['peer']}`, "
                   f"{thr['ratio_peak_growth_fcis_over_maskrcnn']:.2f}× its peak memory growth.")
    acc = (results.get("accuracy") or {}).get("datasets") or {}
    for ds, d in acc.items():
        runs = d.get("runs") or {}
        fcis, mrcnn, ifcn = (runs.get(k) or {} for k in ("fcis", "maskrcnn", "instancefcn"))
        if not (fcis.get("metrics") and mrcnn.get("metrics")):
            continue
        ap = lambda r: 100 * r["metrics"]["segm"]["AP"]  # noqa: E731
        voc = lambda r: 100 * r["metrics"]["voc"]["mAP@0.5"]  # noqa: E731
        text = (f"**Accuracy at equal budget, {'shapes' if ds == 'shapes' else 'PennFudanPed'}** "
                f"({d['iterations']} iterations): mask AP FCIS {ap(fcis):.1f} vs Mask R-CNN {ap(mrcnn):.1f}, "
                f"mAP^r@0.5 {voc(fcis):.1f} vs {voc(mrcnn):.1f}")
        if ifcn.get("metrics"):
            text += f"; InstanceFCN's class-agnostic mask AR@100 {100 * ifcn['metrics']['ar']['AR@100']:.1f}"
        if _ok(fcis.get("train_s_per_iter")) and _ok(mrcnn.get("train_s_per_iter")):
            text += (f"; a Mask R-CNN training iteration took {mrcnn['train_s_per_iter'] / fcis['train_s_per_iter']:.2f}× "
                     f"FCIS's")
        out.append(text + ".")
    abl = (results.get("ablation") or {}).get("datasets") or {}
    for ds, d in abl.items():
        v = d.get("variants") or {}
        pairs = [voc_pair(v.get(k) or {}) for k in ("joint", "separate", "k1")]
        if all(p[0] is not None for p in pairs):
            holds = pairs[0][0] > pairs[1][0] > pairs[2][0]
            out.append(f"**Ablation, {'shapes' if ds == 'shapes' else 'PennFudanPed'}:** the paper's joint > separate > "
                       f"k=1 {'holds' if holds else 'does not hold'} at mAP^r@0.5 (joint {pairs[0][0]:.1f}, separate "
                       f"{pairs[1][0]:.1f}, k=1 {pairs[2][0]:.1f}; paper 65.7, 63.9, 52.5).")
    lim = results.get("limit") or {}
    fr = [(n, m["fraction_of_matmul_peak"]) for n, m in (lim.get("models") or {}).items() if _ok(m.get("fraction_of_matmul_peak"))]
    if fr:
        out.append("**The limit:** the backbones run at " + ", ".join(f"{100 * x:.0f}% (`{n}`)" for n, x in fr)
                   + f" of the measured {lim['matmul_peak_gflops_per_s']:.0f} GFLOP/s matmul peak.")
    for ds, runs in ((results.get("real_photos") or {}).get("datasets") or {}).items():
        bare, old = (runs.get(k) or {} for k in ("bare", "old_defaults"))
        if bare.get("metrics") and old.get("metrics"):
            ap = lambda r: 100 * r["metrics"]["segm"]["AP"]  # noqa: E731
            voc = lambda r: 100 * r["metrics"]["voc"]["mAP@0.5"]  # noqa: E731
            its = ((results["real_photos"].get("settings") or {}).get("iterations") or {}).get(ds, "?")
            out.append(f"**The bare `fcis train`, {'PennFudanPed' if ds == 'pennfudan' else ds}** ({its} iterations "
                       f"from random weights): mask AP {ap(bare):.1f} against {ap(old):.1f} with the defaults it "
                       f"replaced, mAP^r@0.5 {voc(bare):.1f} against {voc(old):.1f}.")
    gpu = results.get("gpu") or {}
    if gpu and not gpu.get("available", True):
        out.append("**GPU:** none was available to this run; no GPU figure is given.")
    return out


# --- the whole report ----------------------------------------------------------------------------

def _real_photos(sec_: dict | None) -> str:
    if sec_ is None:
        return ("Opt-in, about 2 h on 2 cores: `python -m benchmarks.run --only real_photos`; this run's results "
                "hold no such section.")
    from .real_photos import OLD_DEFAULTS, table

    st = sec_.get("settings") or {}
    sizes = ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in (st.get("sizes") or {}).items())
    return (f"`{st.get('model', '?')}` from random weights, 2 images per step, input (short/long side) {sizes}; "
            "PennFudanPed on the fixed 130/40 split of section 4, balloon on its own train/val. Each run is "
            "`fcis train` as a user types it, then `fcis evaluate` on the held-out images. **bare command**: "
            "only model, data, output, iterations, batch size, input size and device. **old defaults**: the "
            "training defaults before issue 11 spelled out as flags (`" + " ".join(OLD_DEFAULTS) + "`); "
            "the model itself is today's in both.\n\n" + table(sec_))


def _minutes(seconds: float | None) -> str:
    return f"{seconds / 60:.1f} min" if _ok(seconds) else "?"


def render(results: dict, plots: dict[str, str], reading: list[str] | None = None) -> str:
    meta, mach = results.get("meta", {}), results.get("machine", {})
    quick = meta.get("mode") == "quick"
    lines = ["# Benchmarks: results", ""]
    if quick:
        lines += ["> **QUICK MODE — smoke run.** One repeat, a few training iterations, small RoI counts: "
                  "the numbers below only show that every section runs; they are not results. "
                  "The real run is `python -m benchmarks.run` (without `--quick`).", ""]
    dur = meta.get("duration_s")
    lines += [
        f"- Command: `{meta.get('command', '?')}`",
        f"- Date: {meta.get('started', '?')} to {meta.get('finished', '?')}"
        + (f"; the run took {dur / 60:.1f} min" if _ok(dur) else ""),
        f"- Machine: {mach.get('cpu', '?')}, {mach.get('logical_cpus', '?')} logical CPUs "
        f"({mach.get('usable_cpus', '?')} usable), {mach.get('platform', '?')}; Python {mach.get('python', '?')}, "
        f"torch {mach.get('torch', '?')}, torchvision {mach.get('torchvision', '?')}, "
        f"torch threads: {mach.get('torch_threads', '?')}"
        + (f"; load average at start {', '.join(f'{x:.2f}' for x in mach['load_average_at_start'])}"
           if mach.get("load_average_at_start") else ""),
        "- Method: every timing is the median of repeated runs after a warm-up; every ratio compares two "
        "figures measured in the same run. Raw numbers: `results/results.json`.",
    ]
    load = mach.get("load_average_at_start")
    cpus = mach.get("usable_cpus") or mach.get("logical_cpus") or 1
    threads_note = (" (with several torch threads on shared cores a step can be several times slower: OpenMP "
                    "threads wait for a descheduled peer; `--threads 1` helps there)."
                    if (mach.get("torch_threads") or 1) > 1 else ".")
    other = mach.get("cpu_busy_before_start")
    if _ok(other):
        lines.append(f"- Other processes' CPU use in the 3 s before the run: {100 * other:.0f}% of the CPUs"
                     + (" — **the machine was busy**: the absolute timings of this run are not representative; "
                        "ratios suffer less" + threads_note if other > 0.25 else " (a quiet machine)."))
    else:  # runs recorded before that measurement: the load averages
        busy = [x for x in (load[0] if load else None, (meta.get("load_average_at_end") or [None])[0]) if _ok(x)]
        if busy and max(busy) > 0.5 * cpus:
            lines.append(f"- **The machine was busy** (1-minute load average {', '.join(f'{x:.1f}' for x in busy)} at "
                         f"start/end on {cpus} CPUs, other processes included): the absolute timings of this run are "
                         f"not representative; ratios suffer less" + threads_note)
    for up in meta.get("updates") or []:   # later runs of some sections (`--only`) over this one
        busy = next((m["machine"].get("cpu_busy_before_start") for sec_ in results.values()
                     if isinstance(sec_, dict) and isinstance(m := sec_.get("measured"), dict)
                     and m.get("date") == up.get("started") and m.get("machine")), None)
        lines.append(f"- Re-measured from {up.get('started', '?')} ({_minutes(up.get('duration_s'))}): "
                     f"{', '.join(up.get('sections') or [])}, by `{up.get('command', '?')}`"
                     + (f"; other processes' CPU use before it {100 * busy:.0f}%" if _ok(busy) else ""))
    if meta.get("merged"):
        lines.append(f"- Merged from other runs: {', '.join(meta['merged'])}")
    if meta.get("section_durations_s"):
        lines.append("- Section times: " + ", ".join(f"{k} {v / 60:.1f} min"
                                                    for k, v in meta["section_durations_s"].items()))
    bullets = summary(results)
    if bullets:
        lines += ["", "## Summary", "", "Generated from the tables below" + (" (smoke numbers)" if quick else "")
                  + ": where FCIS wins and where it loses in this run.", ""] + [f"- {b}" for b in bullets]
    lines += reading or []
    for key, title in SECTION_TITLES.items():
        lines += ["", f"## {title}", ""]
        sec_ = results.get(key)
        if key == "gpu":
            lines.append(_gpu(sec_))
            continue
        if key == "real_photos":
            lines.append(_real_photos(sec_))
            continue
        if key == "coco_val":
            from .coco_val_converted import render

            lines.append(render(sec_))
            continue
        if sec_ is None:
            lines.append("Not run in this run.")
            continue
        if sec_.get("error"):
            lines.append(f"The section failed: `{sec_['error']}`")
            continue
        render_fn = {"latency": _latency, "roi_scaling": _roi, "throughput": _throughput, "accuracy": _accuracy,
                     "limit": _limit}.get(key)
        lines.append(_ablation(sec_, plots, quick) if key == "ablation" else render_fn(sec_, plots))
    return "\n".join(lines) + "\n"


def hand_reading(results: dict, folder: Path) -> list[str]:
    """``folder/READING.md``, the reading written by hand for one run, when it names this run's
    start (its first line ``<!-- run: STARTED -->``); otherwise a line saying it is for another run."""
    path = Path(folder) / "READING.md"
    if not path.exists():
        return []
    text = path.read_text().strip().splitlines()
    started = (results.get("meta") or {}).get("started")
    head = text[0].strip() if text else ""
    if not started or head != f"<!-- run: {started} -->":
        return ["", "## Reading", "", f"`READING.md` was written for another run ({head or 'no run named'}); "
                "read the summary and the tables of this one instead."]
    return ["", "## Reading (written by hand for this run)", ""] + text[1:]


def write_report(results: dict, out_dir: Path, plots: dict[str, str]) -> Path:
    """Write ``out_dir/RESULTS.md``, linking ``plots`` (``{key: path relative to out_dir}``, as
    ``plots.make_plots`` returns; ``{}`` for none)."""
    out_dir = Path(out_dir)
    path = out_dir / "RESULTS.md"
    path.write_text(render(results, plots, reading=hand_reading(results, out_dir)))
    return path


def _optimizer_text(settings: dict) -> str:
    """"AdamW lr 0.001 (weight decay 5e-4)" or "SGD lr 0.01 (momentum 0.9, weight decay 5e-4)"."""
    if settings.get("optimizer", "sgd") == "adamw":
        return f"AdamW lr {settings['lr']} (weight decay 5e-4)"
    return f"SGD lr {settings['lr']} (momentum 0.9, weight decay 5e-4)"
