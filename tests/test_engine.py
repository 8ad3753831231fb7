"""Engine: LR schedule, atomic checkpoints, exact resume, evaluation hooks (with a tiny stand-in model)."""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcis.engine import (
    CheckpointError,
    TrainConfig,
    build_scheduler,
    load_checkpoint,
    load_model,
    save_checkpoint,
    train,
)
from fcis.engine import trainer as trainer_module
from fcis.engine.checkpoint import get_rng_state, set_rng_state
from fcis.engine.data import epoch_batches

# --- a tiny model that follows the models' contract --------------------------------------------


@dataclass
class TinyConfig:
    num_classes: int
    min_size: int = 64
    max_size: int = 80
    mask_threshold: float = 0.5
    class_agnostic: bool = False   # every model config says it (fcis.models.model_config.ModelConfig)
    channels: int = 4

    def to_dict(self):
        return asdict(self)


class TinyModel(nn.Module):
    """Per-pixel classifier; uses dropout and torch.rand in training (so RNG state matters) and
    returns one full-image detection per class in eval mode."""

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        self.conv1 = nn.Conv2d(3, config.channels, 3, padding=1)
        self.drop = nn.Dropout(0.3)
        self.conv2 = nn.Conv2d(config.channels, config.num_classes + 1, 1)

    def logits(self, image):
        return self.conv2(self.drop(F.relu(self.conv1(image[None]))))[0]

    def forward(self, images, targets=None):
        if self.training:
            seg = []
            for image, t in zip(images, targets):
                sem = torch.zeros(image.shape[-2:], dtype=torch.int64)
                for m, lab in zip(t["masks"], t["labels"]):
                    sem[m.bool()] = lab
                seg.append(F.cross_entropy(self.logits(image)[None], sem[None]))
            noise = (self.conv1.weight.sum() * torch.rand(())) * 1e-3
            return {"loss_seg": torch.stack(seg).mean(), "loss_noise": noise}
        outputs = []
        for image in images:
            probs = self.logits(image).softmax(0)[1:]
            c, h, w = probs.shape
            outputs.append({"boxes": torch.tensor([[0.0, 0.0, w, h]]).repeat(c, 1),
                            "labels": torch.arange(1, c + 1), "scores": probs.mean((1, 2)),
                            "masks": probs[:, None]})
        return outputs


def tiny_builder(*, num_classes, weights_backbone=None, **overrides):
    return TinyModel(TinyConfig(num_classes=num_classes, **overrides))


@pytest.fixture
def tiny(monkeypatch):
    """Registers ``"tiny"`` in ``fcis.models.BUILDERS`` for the test."""
    import fcis.models

    monkeypatch.setitem(fcis.models.BUILDERS, "tiny", tiny_builder)
    return "tiny"


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    from fcis.data import make_shapes

    return make_shapes(tmp_path_factory.mktemp("shapes"), num_images=8, seed=3, image_size=(64, 80), max_objects=2,
                       val_fraction=0.25)


def _cfg(**kw):
    base = dict(iterations=6, batch_size=2, lr=0.05, warmup_iters=2, lr_steps=(0.5,), workers=0, seed=1,
                checkpoint_every=3, log_every=1, eval_every=0, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


# --- schedule ----------------------------------------------------------------------------------


def test_lr_schedule_warmup_and_steps():
    cfg = TrainConfig(iterations=100, lr=1.0, warmup_iters=10, warmup_factor=0.1, lr_steps=(0.5, 0.8), gamma=0.1)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.resolved_lr())
    sched = build_scheduler(opt, cfg)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[5] == pytest.approx(0.55)
    assert lrs[10] == pytest.approx(1.0) and lrs[49] == pytest.approx(1.0)
    assert lrs[50] == pytest.approx(0.1) and lrs[79] == pytest.approx(0.1)
    assert lrs[80] == pytest.approx(0.01) and lrs[99] == pytest.approx(0.01)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:11]))  # monotone warm-up

    # the scheduler state round-trips
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.resolved_lr())
    sched2 = build_scheduler(opt2, cfg)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    assert sched2.last_epoch == 100 and opt2.param_groups[0]["lr"] == pytest.approx(0.01)


def test_default_lr_scales_linearly_with_images_per_step():
    assert TrainConfig(batch_size=1).resolved_lr() == pytest.approx(5e-4)
    assert TrainConfig(batch_size=4).resolved_lr() == pytest.approx(2e-3)
    assert TrainConfig(batch_size=2).resolved_lr(world_size=8) == pytest.approx(8e-3)
    assert TrainConfig(lr=0.02, batch_size=4).resolved_lr() == 0.02
    with pytest.raises(ValueError, match="lr_steps"):
        TrainConfig(lr_steps=(0.9, 0.5))


def test_data_order_is_seeded_per_epoch():
    assert epoch_batches(10, 3, seed=0, epoch=0) == epoch_batches(10, 3, seed=0, epoch=0)
    assert epoch_batches(10, 3, seed=0, epoch=0) != epoch_batches(10, 3, seed=0, epoch=1)
    batches = epoch_batches(10, 3, seed=0, epoch=0)
    assert len(batches) == 3 and all(len(b) == 3 for b in batches)
    assert epoch_batches(2, 3, seed=0, epoch=0)[0] in ([0, 1], [1, 0])


# --- checkpoints -------------------------------------------------------------------------------


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, model={"w": torch.ones(3)}, model_name="tiny", model_config={}, iteration=1)

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, model={"w": torch.zeros(3)}, model_name="tiny", model_config={}, iteration=2)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]  # no temporary litter
    state = load_checkpoint(path)
    assert state["iteration"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))


def test_load_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_checkpoint(bad)
    good = tmp_path / "good.pt"
    save_checkpoint(good, model={"w": torch.ones(1000)}, model_name="tiny", model_config={})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(truncated)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="other.pt is not an fcis checkpoint"):
        load_checkpoint(other)


def test_rng_state_round_trip():
    state = get_rng_state()
    a = (random.random(), float(np.random.rand()), float(torch.rand(())))
    set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == a


def test_load_model_rebuilds_through_builders(tmp_path, tiny):
    model = tiny_builder(num_classes=3, channels=5)
    save_checkpoint(tmp_path / "m.pt", model=model.state_dict(), model_name=tiny, model_config=model.config.to_dict(),
                    dataset={"class_names": ["a", "b", "c"], "label_to_cat_id": {1: 7, 2: 8, 3: 9}})
    loaded, meta = load_model(tmp_path / "m.pt", "cpu")
    assert not loaded.training and loaded.config.channels == 5
    assert meta["class_names"] == ["a", "b", "c"] and meta["label_to_cat_id"] == {1: 7, 2: 8, 3: 9}
    for p, q in zip(model.parameters(), loaded.parameters()):
        assert torch.equal(p, q)


# --- training ----------------------------------------------------------------------------------


class _Interrupt(Exception):
    pass


#: Every augmentation on (issue 22): its draws must be as reproducible as the rest.
AUGMENTED = {"scale_jitter": (0.5, 1.5), "photometric": True, "copy_paste": 1.0}


def test_resume_continues_exactly(tmp_path, tiny, shapes, monkeypatch):
    cfg = _cfg(eval_every=2, **AUGMENTED)
    one_go = train(tiny, shapes["train"], shapes["val"], tmp_path / "a", cfg, progress=False)
    assert one_go["iterations"] == 6 and one_go["best_checkpoint"]

    real_step, calls = trainer_module.train_step, []

    def crashing_step(*args, **kwargs):  # dies during iteration 5, after last.pt of iteration 3
        calls.append(1)
        if len(calls) == 5:
            raise _Interrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", crashing_step)
    with pytest.raises(_Interrupt):
        train(tiny, shapes["train"], shapes["val"], tmp_path / "b", cfg, progress=False)
    monkeypatch.setattr(trainer_module, "train_step", real_step)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["iteration"] == 3
    resumed = train(tiny, shapes["train"], shapes["val"], tmp_path / "b", cfg, resume=True, progress=False)
    assert resumed["start_iteration"] == 3 and resumed["iterations"] == 6

    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["iteration"] == b["iteration"] == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 6
    assert a["data_state"] == b["data_state"]
    assert a["best_iteration"] == b["best_iteration"]
    # the log reads as one run: the same iterations and losses
    def losses(d):
        lines = [json.loads(x) for x in (d / "log.jsonl").read_text().splitlines()]
        return [(r["iteration"], r.get("loss")) for r in lines if "loss" in r]
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert [i for i, _ in losses(tmp_path / "a")] == [1, 2, 3, 4, 5, 6]


def test_resume_without_checkpoint_and_refusal_to_overwrite(tmp_path, tiny, shapes):
    with pytest.raises(CheckpointError, match="cannot resume.*last.pt"):
        train(tiny, shapes["train"], None, tmp_path, _cfg(), resume=True, progress=False)
    train(tiny, shapes["train"], None, tmp_path, _cfg(iterations=1), progress=False)
    with pytest.raises(CheckpointError, match="already exists"):
        train(tiny, shapes["train"], None, tmp_path, _cfg(iterations=1), progress=False)


def test_nonfinite_losses_are_skipped_then_stop(tmp_path, tiny, shapes, monkeypatch):
    from fcis.engine import TrainingError

    def nan_forward(self, images, targets=None):
        return {"loss": self.conv1.weight.sum() * float("nan")}

    monkeypatch.setattr(TinyModel, "forward", nan_forward)
    with pytest.raises(TrainingError, match="NaN/inf for 3 consecutive"):
        train(tiny, shapes["train"], None, tmp_path, _cfg(max_nonfinite=3), progress=False)
    records = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if r.get("nonfinite")] == [1, 2, 3]


def test_predict_dataset_gives_coco_results(tiny, shapes):
    from fcis.data import CocoInstances
    from fcis.engine import evaluate_model, predict_dataset

    ds = CocoInstances(shapes["val"])
    model = tiny_builder(num_classes=ds.num_classes)
    model.train()
    results = predict_dataset(model, ds, "cpu", progress=False)
    assert model.training  # mode restored
    assert len(results) == len(ds) * ds.num_classes
    assert {r["category_id"] for r in results} == set(ds.label_to_cat_id.values())
    assert all(isinstance(r["segmentation"]["counts"], str) for r in results)
    metrics = evaluate_model(model, ds, "cpu", progress=False)
    assert set(metrics["segm"]) >= {"AP", "AP50", "AP75"}


def test_data_workers_do_not_change_the_result(tmp_path, tiny, shapes):
    """Augmentation is seeded per sample, so worker processes give the same run as the main process."""
    runs = []
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        train(tiny, shapes["train"], None, out, _cfg(iterations=4, workers=workers, hflip_prob=0.5, **AUGMENTED),
              progress=False)
        runs.append(load_checkpoint(out / "last.pt")["model"])
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k]), k
