"""Smoke test of the benchmark harness (benchmarks.run): every section at toy sizes (ResNet-18
models, 64-128 px images, 1 repeat, 1 training iteration), the report with all its sections, the
JSON and the plots. No timing is asserted."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from benchmarks import common, gpu, run

TINY = dataclasses.replace(
    common.QUICK, repeats=1, warmup=0, num_classes=3,
    latency_image=(96, 128), latency_min_size=96, latency_max_size=128,
    latency_models=("fcis_resnet18", "maskrcnn_resnet18_fpn"),
    roi_models=("fcis_resnet18", "maskrcnn_resnet18_fpn"), roi_counts=(4, 8), roi_repeats=1,
    throughput_models=("fcis_resnet18", "maskrcnn_resnet18_fpn"), throughput_image=(64, 80), throughput_batch=1,
    throughput_steps=1,
    shapes_num_images=6, shapes_image=(64, 80), shapes_min_object_size=16, shapes_iterations=1, penn_iterations=1, shapes_val_limit=0,
    warmup_iters=0, train_workers=0,
    limit_models=("fcis_resnet18",), limit_image=(64, 80), matmul_sizes=(64,), detections=10, eval_detections=5,
    gpu_model="fcis_resnet18", gpu_image=(64, 96), gpu_repeats=1, gpu_warmup=0, gpu_num_rois=4,
    gpu_train_models=("fcis_resnet18", "maskrcnn_resnet18_fpn"),
    model_overrides={  # few proposals and sampled RoIs: the per-RoI heads dominate at toy sizes
        "fcis_resnet18": {"rpn_post_nms_top_n_test": 30, "rpn_post_nms_top_n_train": 30, "ohem_rois": 16},
        "maskrcnn_resnet18_fpn": {"rpn_pre_nms_top_n_test": 60, "rpn_post_nms_top_n_test": 30,
                                  "rpn_pre_nms_top_n_train": 60, "rpn_post_nms_top_n_train": 30,
                                  "roi_batch_size_per_image": 16},
        "instancefcn_resnet18": {"pre_nms_top_n": 30, "windows_per_image": 32},
    },
)

SECTION_HEADINGS = ["## 1. Inference latency", "## 2. Per-RoI stage", "## 3. Training throughput",
                    "## 4. Accuracy at equal training budget", "## 5. The paper's ablation", "## 6. The limit",
                    "## 7. GPU"]


@pytest.mark.slow
def test_run_writes_report_with_every_section(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "QUICK", TINY)
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    try:  # one thread: on a shared CI machine two threads can be several times slower
        assert run.main(["--quick", "--out", str(out), "--data", str(tmp_path / "no-data"), "--strict",
                         "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)

    results = json.loads((out / "results" / "results.json").read_text())
    for key in ("latency", "roi_scaling", "throughput", "accuracy", "ablation", "limit", "gpu"):
        assert key in results and "error" not in results[key], key
    lat = results["latency"]["models"]
    assert lat["fcis_resnet18"]["breakdown_matches_end_to_end"]
    assert lat["maskrcnn_resnet18_fpn"]["breakdown_matches_end_to_end"]
    shapes = results["accuracy"]["datasets"]["shapes"]["runs"]
    assert "segm" in shapes["fcis"]["metrics"] and "voc" in shapes["fcis"]["metrics"]
    assert "AR@100" in shapes["fcis"]["metrics"]["ar"]
    assert results["accuracy"]["datasets"]["pennfudan"]["skipped"]
    variants = results["ablation"]["datasets"]["shapes"]["variants"]
    assert set(variants) == {"joint", "k1", "separate", "no_ohem", "no_voting"}
    assert variants["joint"] == shapes["fcis"]  # trained once, shared by sections 4 and 5
    assert results["throughput"]["models"]["fcis_resnet18"]["peak_rss_mib"] > 0

    md = (out / "RESULTS.md").read_text()
    assert "QUICK MODE" in md
    assert "## Summary" in md and "**Per RoI**" in md and "**Accuracy at equal budget, shapes**" in md
    for heading in SECTION_HEADINGS:
        assert heading in md, heading
    if not torch.cuda.is_available():
        assert "No GPU was available to this run" in md
    for png in ("latency_breakdown.png", "roi_scaling.png", "accuracy.png", "ablation.png"):
        assert (out / "results" / png).stat().st_size > 0, png

    # The GPU section's code path (run on the CPU here), merged into the report from its own JSON.
    gpu_json = tmp_path / "gpu.json"
    gpu_json.write_text(json.dumps(run.jsonable({"gpu": gpu.run(TINY, device="cpu")})))
    assert run.main(["--out", str(out), "--report-only", "--merge", str(gpu_json)]) == 0
    md = (out / "RESULTS.md").read_text()
    assert "paper (K40" in md and "`ps_roi_assemble`" in md
    assert "## 1. Inference latency" in md and "Not run in this run." not in md


def test_budget_overrides_and_unknown_field():
    b = common.FULL.with_overrides(["repeats=2", "roi_counts=[10, 20]", "clip_grad_norm=None"])
    assert b.repeats == 2 and b.roi_counts == (10, 20) and b.clip_grad_norm is None
    with pytest.raises(SystemExit):
        common.FULL.with_overrides(["no_such_field=1"])


def test_ablation_reading_from_numbers():
    from benchmarks import report

    def rec(a, b):
        return {"metrics": {"voc": {"mAP@0.5": a / 100, "mAP@0.7": b / 100}}}

    text = report.ablation_reading({"joint": rec(60, 50), "separate": rec(55, 45), "k1": rec(40, 30),
                                    "no_ohem": rec(58, 49), "no_voting": rec(59, 47)}, "shapes")
    assert "at IoU 0.5 it holds" in text and "at IoU 0.7 it holds" in text
    text = report.ablation_reading({"joint": rec(50, 50), "separate": rec(55, 45), "k1": rec(40, 30)}, "shapes")
    assert "at IoU 0.5 it does not hold" in text


@pytest.mark.data
def test_pennfudan_split_is_fixed(tmp_path, shared_data):
    from benchmarks import accuracy

    b = dataclasses.replace(common.QUICK, penn_val_limit=0)
    first = accuracy.prepare_pennfudan(b, tmp_path / "a", shared_data)
    if first is None:
        pytest.skip("PennFudanPed not in the shared data")
    assert first["info"]["train_images"] == 130 and first["info"]["held_out_images"] == 40
    again = accuracy.prepare_pennfudan(b, tmp_path / "b", shared_data)
    assert again["info"]["held_out_files"] == first["info"]["held_out_files"]


def test_budget_json_round_trip():
    b = TINY.with_overrides(["datasets=('shapes',)"])
    again = common.Budget.from_dict(json.loads(json.dumps(b.to_dict())))
    assert again == b
    assert again.model_overrides["fcis_resnet18"]["ohem_rois"] == 16


def _fake_pennfudan(root: Path, n: int = 6) -> Path:
    """A PennFudanPed-shaped folder: n 64×80 images with two rectangular 'pedestrians' each."""
    import numpy as np
    from PIL import Image

    src = root / "PennFudanPed"
    (src / "PNGImages").mkdir(parents=True)
    (src / "PedMasks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
        mask = np.zeros((64, 80), dtype=np.uint8)
        mask[8:50, 6:26] = 1
        mask[12:60, 40:62] = 2
        image[mask > 0] = 200
        Image.fromarray(image).save(src / "PNGImages" / f"Ped{i:05d}.png")
        Image.fromarray(mask).save(src / "PedMasks" / f"Ped{i:05d}_mask.png")
    return root


@pytest.mark.slow
def test_datasets_train_side_by_side(tmp_path):
    """With both datasets present, sections 4 and 5 run in one worker process per dataset and
    their results are merged as if run in this process."""
    data_root = _fake_pennfudan(tmp_path / "data")
    budget = dataclasses.replace(TINY, penn_train=4, penn_min_size=64, penn_max_size=80)
    results, durations = run.run_sections(["accuracy", "ablation"], budget, work=tmp_path / "work",
                                          data_root=data_root, strict=True)
    assert set(durations) == {"accuracy+ablation"}
    for key in ("accuracy", "ablation"):
        sec = results[key]
        assert set(sec["datasets"]) == {"shapes", "pennfudan"}, sec
        assert sec["settings"]["parallel"] == {"processes": 2, "torch_threads_each": 1,
                                               "datasets": ["shapes", "pennfudan"]}
    penn = results["accuracy"]["datasets"]["pennfudan"]
    assert penn["info"]["train_images"] == 4 and penn["info"]["held_out_images"] == 2
    for ds in ("shapes", "pennfudan"):
        runs = results["accuracy"]["datasets"][ds]["runs"]
        assert {"fcis", "maskrcnn", "instancefcn"} <= set(runs)
        assert all("segm" in r["metrics"] for r in runs.values()), ds
        variants = results["ablation"]["datasets"][ds]["variants"]
        assert set(variants) == {"joint", "k1", "separate", "no_ohem", "no_voting"}
        assert variants["joint"]["metrics"] == runs["fcis"]["metrics"]


def test_hand_reading_shown_only_for_its_run(tmp_path):
    from benchmarks import report

    results = {"meta": {"started": "2026-01-02T03:04:05+00:00"}}
    assert report.hand_reading(results, tmp_path) == []  # no READING.md
    (tmp_path / "READING.md").write_text("<!-- run: 2026-01-02T03:04:05+00:00 -->\nFCIS wins here.\n")
    assert "FCIS wins here." in report.hand_reading(results, tmp_path)
    other = report.hand_reading({"meta": {"started": "2027-01-01T00:00:00+00:00"}}, tmp_path)
    assert "FCIS wins here." not in other and "written for another run" in " ".join(other)


def test_real_photos_section_is_opt_in_and_renders_its_table():
    from benchmarks import real_photos, report

    assert "real_photos" in run.SECTIONS and "real_photos" in run.OPT_IN
    metrics = lambda ap, voc: {"segm": {"AP": ap}, "bbox": {"AP": ap / 2},  # noqa: E731
                               "voc": {"mAP@0.5": voc, "mAP@0.7": voc / 2}}
    section = {"settings": real_photos.settings("fcis_resnet18", {"pennfudan": 300}),
               "datasets": {"pennfudan": {"bare": {"metrics": metrics(0.268, 0.717), "train_s": 2501.0},
                                          "old_defaults": {"metrics": metrics(0.001, 0.01), "train_s": 2400.0}},
                            "balloon": {"skipped": "no data/balloon"}}}
    text = report._real_photos(section)
    assert "| pennfudan | bare command | 300 | 26.8 | 13.4 | 71.7 | 35.9 | 2501 s |" in text
    assert "| pennfudan | old defaults | 300 | 0.1 | 0.1 | 1.0 | 0.5 | 2400 s |" in text
    assert "| balloon | skipped: no data/balloon |" in text
    assert " ".join(real_photos.OLD_DEFAULTS) in text
    bullets = report.summary({"real_photos": section})
    assert bullets == ["**The bare `fcis train`, PennFudanPed** (300 iterations from random weights): mask AP 26.8 "
                       "against 0.1 with the defaults it replaced, mAP^r@0.5 71.7 against 1.0."]
    assert "--only real_photos" in report._real_photos(None)


def test_report_names_each_later_partial_run():
    from benchmarks import report

    results = {"meta": {"started": "2026-11-21T13:15:39+00:00",
                        "updates": [{"started": "2026-12-02T01:14:52+00:00", "duration_s": 378.0,
                                     "sections": ["latency", "roi"], "command": "python -m benchmarks.run --only latency,roi"}]},
               "roi_scaling": {"error": "x", "measured": {"date": "2026-12-02T01:14:52+00:00",
                                                           "machine": {"cpu_busy_before_start": 0.03}}}}
    md = report.render(results, {})
    assert ("- Re-measured from 2026-12-02T01:14:52+00:00 (6.3 min): latency, roi, by "
            "`python -m benchmarks.run --only latency,roi`; other processes' CPU use before it 3%") in md
