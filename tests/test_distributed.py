"""Distributed data-parallel training under torchrun (2 CPU processes, gloo).

The torchrun tests start ``python -m torch.distributed.run --nproc_per_node 2 --standalone -m fcis
train ...`` as a subprocess (two launches, about a minute on two busy cores); the others are
in-process checks of the sampler sharding, the single-process no-ops and the premise behind
``find_unused_parameters=False``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcis.engine import TrainConfig, load_checkpoint, train
from fcis.engine import distributed as dist_utils
from fcis.engine.data import ResumableBatchSampler, epoch_batches, shard_batch
from fcis.engine.resume import seed_everything as _seed_everything

REPO = Path(__file__).resolve().parents[1]

# A configuration where every sampling step of FCIS is deterministic and every image of a batch
# contributes the same counts to the batch-normalised losses (see the test's docstring).
DETERMINISTIC = {"anchor_sizes": (16, 32), "rpn_post_nms_top_n_train": 16, "ohem_rois": 100000,
                 "roi_fg_iou": 1.0}
INPUT = ["--min-size", "64", "--max-size", "80"]


# --- data and launching ---------------------------------------------------------------------------


def _twin_dataset(root: Path) -> dict[str, Path]:
    """``make_shapes(num_images=4, image_size=(64, 80))`` plus ``twins.json``: its first training
    image and a colour-inverted copy with the same annotations (same geometry, other pixels)."""
    from fcis.data import make_shapes

    paths = make_shapes(root, num_images=4, seed=0, image_size=(64, 80))
    coco = json.loads(Path(paths["train"]).read_text())
    first = coco["images"][0]
    src = Path(paths["train"]).parent / first["file_name"]
    twin_file = str(Path(first["file_name"]).parent / f"twin_{Path(first['file_name']).name}")
    Image.fromarray(255 - np.asarray(Image.open(src).convert("RGB"))).save(Path(paths["train"]).parent / twin_file)
    twin = dict(first, id=first["id"] + 10_000, file_name=twin_file)
    anns = [a for a in coco["annotations"] if a["image_id"] == first["id"]]
    twin_anns = [dict(a, id=a["id"] + 10_000, image_id=twin["id"]) for a in anns]
    twins = Path(paths["train"]).parent / "twins.json"
    twins.write_text(json.dumps(dict(coco, images=[first, twin], annotations=anns + twin_anns)))
    return {**paths, "twins": twins}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return _twin_dataset(tmp_path_factory.mktemp("shapes"))


def _set_args(overrides: dict) -> list[str]:
    return [a for k, v in overrides.items() for a in ("--set", f"{k}={v!r}")]


def _torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 --standalone -m fcis train ARGS`` on the CPU; asserts success."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "fcis", "train", "--device", "cpu", "--workers", "0", "--no-progress", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _dist_cmd(data: dict[str, Path], out: Path, iterations: int, *extra: str) -> list[str]:
    return ["--model", "fcis_resnet18", "--train", str(data["twins"]), "--output", str(out),
            "--iterations", str(iterations), "--batch-size", "1", "--hflip-prob", "0", "--warmup-iters", "0", "--optimizer", "sgd",
            "--log-every", "1", "--checkpoint-every", "100", "--scale-jitter", "1", "1", "--no-photometric",
            "--copy-paste", "0", *INPUT, *_set_args(DETERMINISTIC), *extra]


def _single(data: dict[str, Path], out: Path, iterations: int) -> dict:
    """The single-process reference: the same global batch (batch_size 2) in this process."""
    cfg = TrainConfig(iterations=iterations, batch_size=2, min_size=64, max_size=80, workers=0, device="cpu",
                      hflip_prob=0.0, warmup_iters=0, log_every=1, checkpoint_every=100, optimizer="sgd",
                      scale_jitter=(1.0, 1.0), photometric=False, copy_paste=0.0)
    train("fcis_resnet18", data["twins"], None, out, cfg, model_overrides=DETERMINISTIC, progress=False)
    return load_checkpoint(out / "last.pt")


def _initial_state() -> dict[str, torch.Tensor]:
    """The weights both runs start from (train() seeds with TrainConfig.seed, then builds)."""
    from fcis.models import fcis_resnet18

    _seed_everything(TrainConfig().seed)
    return fcis_resnet18(num_classes=3, min_size=64, max_size=80, **DETERMINISTIC).state_dict()


def _relative_update_error(start: dict, a: dict, b: dict) -> float:
    """``||(a - start) - (b - start)|| / ||a - start||`` over all floating tensors."""
    num = den = 0.0
    for k, v in start.items():
        if v.is_floating_point():
            da, db = a[k].double() - v.double(), b[k].double() - v.double()
            num += float((da - db).pow(2).sum())
            den += float(da.pow(2).sum())
    assert den > 0, "the step changed nothing"
    return (num / den) ** 0.5


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def one_step(data, tmp_path_factory) -> Path:
    """One distributed step (2 processes x batch 1) on the twin images, by torchrun."""
    out = tmp_path_factory.mktemp("dist") / "run"
    _torchrun(*_dist_cmd(data, out, 1))
    return out


# --- torchrun -------------------------------------------------------------------------------------


def test_one_distributed_step_equals_one_single_process_step(data, one_step, tmp_path):
    """2 processes x batch 1 after one step hold the parameters of 1 process x batch 2.

    Exact agreement needs more than DDP's gradient averaging, because FCIS (like torchvision's
    detectors) normalises its losses over the *batch* and samples randomly:

    - BatchNorm: fcis_resnet18 without ImageNet weights has trainable BatchNorm; per-process
      statistics differ from the joint batch's, so the run must (and does) synchronise them
      (``CPUSyncBatchNorm`` on gloo). Without it this test fails (relative error ~0.3).
    - Loss normalisation: RPN losses are divided by the sampled anchors of the batch, RoI
      classification by its RoIs and the mask loss by its foreground RoIs. DDP averages the
      per-process means, which equals the joint mean only when every image contributes the
      same counts. The two images therefore share their geometry (a colour-inverted twin with
      the same annotations, so BatchNorm statistics still differ), and ``roi_fg_iou=1.0`` makes
      only the GT boxes foreground, ``rpn_post_nms_top_n_train=16`` gives each image 16
      proposals, ``ohem_rois`` large keeps all RoIs (OHEM's top-k then selects all of them).
    - Random sampling: RPN fg/bg sampling draws ``torch.randperm``, whose draws for the second
      image of a joint batch cannot equal the draws of a second process. With
      ``anchor_sizes=(16, 32)`` a 64x96 input has 144 anchors, fewer than the 256 sampled per
      image, so every labelled anchor is taken whatever the permutation; OHEM over all RoIs is
      deterministic. ``hflip_prob=0`` and the random-init recipe's augmentation off (scale jitter,
      colour jitter, copy-paste): no augmentation.

    Both runs use SGD (the recipe's AdamW would magnify float noise in near-zero gradients) at
    its default learning rate, 5e-4 x images per step (2 in each), so this also checks the
    linear scaling rule with the world size. Compared are the parameter updates.
    """
    start = _initial_state()
    single = _single(data, tmp_path / "single", 1)
    dist = load_checkpoint(one_step / "last.pt")
    assert dist["iteration"] == single["iteration"] == 1
    assert _relative_update_error(start, single["model"], dist["model"]) < 1e-4
    for k, v in single["model"].items():  # BatchNorm running statistics included
        assert torch.allclose(v.double(), dist["model"][k].double(), rtol=1e-4, atol=1e-6), k
    # rank 0 logged the mean over the processes of the per-process losses
    (dist_line,), (single_line,) = _log(one_step), _log(tmp_path / "single")
    assert dist_line["iteration"] == 1
    for k, v in single_line["losses"].items():
        assert dist_line["losses"][k] == pytest.approx(v, rel=1e-5, abs=1e-7), k
    assert dist_line["lr"] == single_line["lr"] == pytest.approx(5e-4 * 2)


def test_distributed_run_writes_from_rank_0_and_resumes(data, one_step, tmp_path):
    """The one-step run's files come from rank 0 alone (one log line per iteration, no temporary
    litter, every process's RNG state in the checkpoint); ``--resume`` takes it to 3 iterations
    with validation (each process predicts its shard, rank 0 scores them all), at the same data
    position on every process; and, in the deterministic configuration, 1 + 2 resumed
    distributed iterations match 3 single-process ones in one go (the learning rate follows
    the schedule of the resumed run's ``--iterations``)."""
    ckpt = load_checkpoint(one_step / "last.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng_per_rank"]) == 2
    assert ckpt["data_state"] == {"epoch": 1, "batch": 0}  # 2 images = one global batch per epoch
    assert sorted(p.name for p in one_step.iterdir() if p.name != "tb") == [
        "config.json", "curves.png", "last.pt", "log.jsonl", "summary.json"]

    out = tmp_path / "run"
    shutil.copytree(one_step, out)
    proc = _torchrun(*_dist_cmd(data, out, 3, "--resume", "--val", str(data["train"])))
    assert proc.stdout.count("trained to iteration 3") == 1  # rank 0 reports, once

    resumed = load_checkpoint(out / "last.pt")
    assert resumed["iteration"] == 3 and resumed["data_state"] == {"epoch": 3, "batch": 0}
    lines = _log(out)
    assert [r["iteration"] for r in lines if "loss" in r] == [1, 2, 3]
    (metrics,) = [r["metrics"] for r in lines if "metrics" in r]
    assert metrics["num_images"] == 3  # the 3 validation images of both shards were scored
    assert json.loads((out / "metrics.json").read_text())["num_images"] == 3
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]

    single = _single(data, tmp_path / "single", 3)
    assert _relative_update_error(_initial_state(), single["model"], resumed["model"]) < 1e-4
    assert [r["lr"] for r in _log(tmp_path / "single")] == [r["lr"] for r in lines if "loss" in r]


# --- in-process -----------------------------------------------------------------------------------


def test_shards_are_disjoint_parts_of_the_single_process_batch():
    n, bs, ws, seed = 11, 2, 3, 5
    for epoch in range(3):
        for global_batch in epoch_batches(n, bs * ws, seed, epoch):
            shards = [shard_batch(global_batch, r, ws, bs) for r in range(ws)]
            assert [i for s in shards for i in s] == global_batch  # disjoint, together the batch
    assert shard_batch([4, 7], 1, 1, 2) == [4, 7]  # a single process: unchanged
    assert [shard_batch([3, 1], r, 2, 2) for r in range(2)] == [[3, 1], [3, 1]]  # tiny data: cycled


def test_distributed_sampler_resumes_at_the_global_position():
    n, bs, ws, seed = 7, 1, 2, 3
    per_rank = []
    for r in range(ws):
        it = iter(ResumableBatchSampler(n, bs, seed, rank=r, world_size=ws))
        per_rank.append([next(it) for _ in range(8)])  # 3 global batches per epoch: crosses epochs
    for step in range(8):
        union = sorted(i for r in range(ws) for _, i in per_rank[r][step])
        epochs = {e for r in range(ws) for e, _ in per_rank[r][step]}
        assert len(union) == len(set(union)) == bs * ws and len(epochs) == 1
    # resuming at (epoch 1, batch 1) = step 4 continues identically on every rank
    for r in range(ws):
        it = iter(ResumableBatchSampler(n, bs, seed, epoch=1, batch=1, rank=r, world_size=ws))
        assert [next(it) for _ in range(4)] == per_rank[r][4:]


def test_helpers_are_single_process_no_ops(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert dist_utils.init_distributed("cpu") is None
    assert not dist_utils.is_distributed() and dist_utils.world_size() == 1 and dist_utils.is_main_process()
    dist_utils.barrier()
    x = torch.tensor([1.0, float("nan")])
    y = dist_utils.all_reduce_mean(x)
    assert y is not x and torch.equal(y[:1], x[:1]) and torch.isnan(y[1])
    assert dist_utils.gather({"a": 1}) == [{"a": 1}] and dist_utils.broadcast_object(3) == 3
    assert dist_utils.all_reduce_min(True) == 1 and dist_utils.all_reduce_min(0) == 0
    assert TrainConfig(batch_size=2).resolved_lr(world_size=4) == pytest.approx(5e-4 * 8)


def test_cpu_sync_batchnorm_converts_and_falls_back_to_batchnorm():
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), FrozenBatchNorm2d(4))
    ref = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ref.load_state_dict(net[:2].state_dict())
    assert dist_utils.has_trainable_batchnorm(net)
    assert not dist_utils.has_trainable_batchnorm(torch.nn.Sequential(FrozenBatchNorm2d(4)))
    weight = net[1].weight
    converted = dist_utils._convert_cpu(net, None)
    assert isinstance(converted[1], dist_utils.CPUSyncBatchNorm) and isinstance(converted[2], FrozenBatchNorm2d)
    assert converted[1].weight is weight  # the same parameters: an optimizer built before still works
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(converted[:2](x), ref(x), atol=1e-6)  # one process: plain BatchNorm
    assert torch.allclose(converted[1].running_var, ref[1].running_var)
    assert set(converted.state_dict()) == set(net.state_dict())  # checkpoints load either way


@pytest.mark.parametrize("ohem", [True, False])
def test_every_trainable_parameter_gets_a_gradient_from_an_image_without_objects(data, ohem):
    """Why DDP runs with ``find_unused_parameters=False``: even a process whose batch has no
    object gives every trainable parameter a gradient (zero losses stay in the graph)."""
    from fcis.data import CocoInstances, build_transforms
    from fcis.models import fcis_resnet18

    ds = CocoInstances(data["train"])
    ds.transforms = build_transforms(True, min_size=64, max_size=80, hflip_prob=0.0)
    image, target = ds[0]
    empty = {**target, "boxes": target["boxes"][:0], "labels": target["labels"][:0], "masks": target["masks"][:0]}
    model = fcis_resnet18(num_classes=3, min_size=64, max_size=80, ohem=ohem).train()
    sum(model([image], [empty]).values()).backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
