"""A corpus of bad inputs and faults for training and checkpoints (issue 13), each generated here:
a validation that crashes, a run that diverges, a NaN step, a checkpoint with NaN weights, a
checkpoint with 4 KiB overwritten, a training set without annotations, a resume without the
original flags, the checkpoint of another model, an image skipped in a DataLoader worker, a
temporary file of an interrupted write. Tiny runs: fcis_resnet18 at 64x80, 1-3 iterations."""

from __future__ import annotations

import json
import shutil
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from fcis.cli.main import main
from fcis.data import DataError
from fcis.engine import CheckpointError, TrainConfig, TrainingError, load_checkpoint, load_model, save_checkpoint, train
from fcis.engine import trainer as trainer_module
from fcis.engine.step import train_step

MODEL = "fcis_resnet18"
SMALL = {"anchor_sizes": (16, 32, 64)}
TINY = ["--min-size", "64", "--max-size", "80", "--set", "anchor_sizes=(16, 32, 64)", "--device", "cpu",
        "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from fcis.data import make_shapes

    return make_shapes(tmp_path_factory.mktemp("bad_train") / "shapes", num_images=6, seed=1, image_size=(64, 80),
                       max_objects=2, val_fraction=0.34)


def _cfg(**kw) -> TrainConfig:
    base = dict(iterations=2, batch_size=1, lr=1e-3, workers=0, device="cpu", min_size=64, max_size=80,
                log_every=1, checkpoint_every=1000, warmup_iters=0)
    base.update(kw)
    return TrainConfig(**base)


def _train_argv(shapes, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", MODEL, "--train", str(shapes["train"]), "--output", str(out), *TINY, *extra]


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory) -> Path:
    """A finished 2-iteration AdamW run (its folder; copy it before changing anything)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(_train_argv(shapes, out, "--iterations", "2", "--optimizer", "adamw", "--lr", "1e-3")) == 0
    return out


def _copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def _stderr_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("fcis: error:"), err
    return err[-1]


# --- item 3: a crash in validation at the end of training keeps the weights ----------------------


def test_crashing_validation_keeps_the_trained_weights(shapes, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash in validation")

    monkeypatch.setattr(trainer_module, "validate", crash)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"validation at iteration 2 failed.*simulated.*last\.pt"):
        train(MODEL, shapes["train"], shapes["val"], out, _cfg(), model_overrides=SMALL, progress=False)
    assert load_checkpoint(out / "last.pt")["iteration"] == 2  # written before validation
    summary = json.loads((out / "summary.json").read_text())
    assert "simulated" in summary["validation_error"]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("simulated" in r.get("validation_error", "") for r in records)


def test_thin_validation_image_does_not_lose_the_run(shapes, tmp_path, capsys):
    """A 2x900 image in the validation set: validation either copes, or fails with the weights kept
    and a non-zero exit status that names last.pt."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "thin"
    root.mkdir()
    Image.fromarray(np.full((900, 2, 3), 128, np.uint8)).save(root / "thin.png")
    cats = json.loads(Path(shapes["train"]).read_text())["categories"]
    val = root / "val.json"
    val.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "thin.png", "height": 900, "width": 2}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": cats[0]["id"], "bbox": [0, 10, 2, 100], "area": 200,
                         "iscrowd": 0, "segmentation": [[0, 10, 2, 10, 2, 110, 0, 110]]}],
        "categories": cats}))
    out = tmp_path / "run"
    rc = main(_train_argv(shapes, out, "--iterations", "1", "--val", str(val)))
    assert load_checkpoint(out / "last.pt")["iteration"] == 1
    if rc != 0:
        assert rc == 1 and "last.pt" in _stderr_error(capsys)


# --- item 4: NaN/inf -------------------------------------------------------------------------------


class _BNNet(nn.Module):
    """A conv + BatchNorm net whose training loss is whatever ``self.loss_fn`` makes of its output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.loss_fn = lambda y: y.mean()

    def forward(self, images, targets=None):
        y = self.bn(self.conv(torch.stack(images)))
        return {"loss": self.loss_fn(y)}


@pytest.mark.parametrize("fault", ["nan_input", "inf_gradient"])
def test_a_nonfinite_step_leaves_the_model_exactly_as_it_was(fault):
    net = _BNNet().train()
    images = [torch.rand(3, 8, 8) for _ in range(2)]
    params = list(net.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    train_step(net, opt, params, images, [{}, {}], torch.device("cpu"))  # a normal step first
    if fault == "nan_input":  # a NaN pixel: NaN batch statistics and a NaN loss
        images[0][0, 0, 0] = float("nan")
    else:  # a finite loss (0) whose gradient is inf: sqrt at 0
        net.loss_fn = lambda y: torch.sqrt((y - y.detach()).abs().sum())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    losses, finite = train_step(net, opt, params, images, [{}, {}], torch.device("cpu"))
    assert not finite
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # weights and BatchNorm statistics untouched


def test_diverged_run_fails_without_a_good_checkpoint(shapes, trained, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(trained / "last.pt", out / "best.pt")  # an earlier run's: must not pass for this one's
    rc = main(_train_argv(shapes, out, "--lr", "1e6", "--iterations", "6"))
    err = _stderr_error(capsys)
    assert rc == 1 and "NaN/inf" in err and "nonfinite.pt" in err
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()
    state = load_checkpoint(out / "nonfinite.pt", require_finite=False)
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())  # BN restored


def _nan_checkpoint(trained: Path, dest: Path) -> Path:
    state = load_checkpoint(trained / "last.pt")
    key = next(k for k in state["model"] if k.endswith("running_var"))
    state["model"][key][0] = float("nan")
    save_checkpoint(dest, **{k: v for k, v in state.items() if k not in ("format", "version", "saved_at")})
    return dest


def test_evaluate_and_predict_refuse_a_checkpoint_with_nan(shapes, trained, tmp_path, capsys):
    bad = _nan_checkpoint(trained, tmp_path / "nan_weights.pt")
    with pytest.raises(CheckpointError, match=r"nan_weights\.pt.*NaN/inf.*running_var"):
        load_model(bad)
    assert main(["evaluate", "--weights", str(bad), "--data", str(shapes["val"]), "--output", str(tmp_path / "e"),
                 "--device", "cpu", "--no-progress"]) == 2
    assert "nan_weights.pt" in _stderr_error(capsys)
    images = Path(shapes["val"]).parent / "images"
    assert main(["predict", "--weights", str(bad), str(images), "--output", str(tmp_path / "p"), "--device", "cpu",
                 "--no-progress"]) == 2
    assert "nan_weights.pt" in _stderr_error(capsys)


# --- item 8: checkpoint integrity ------------------------------------------------------------------


def _overwrite_4k_of_weights(path: Path) -> None:
    """Overwrite 4 KiB inside the largest tensor record of the checkpoint's zip archive (so that
    torch.load still reads it: only the numbers change)."""
    with zipfile.ZipFile(path) as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    assert info.file_size > 8192
    offset = start + info.file_size // 2
    data[offset:offset + 4096] = b"\xff" * 4096  # NaN float32s
    path.write_bytes(bytes(data))


def test_checkpoint_with_4k_overwritten_is_refused(shapes, trained, tmp_path, capsys):
    run = _copy_run(trained, tmp_path / "run")
    _overwrite_4k_of_weights(run / "last.pt")
    with pytest.raises(CheckpointError, match=r"last\.pt is corrupt"):
        load_checkpoint(run / "last.pt")
    rc = main(_train_argv(shapes, run, "--iterations", "3", "--resume"))
    assert rc == 2 and "last.pt is corrupt" in _stderr_error(capsys)
    assert main(["evaluate", "--weights", str(run / "last.pt"), "--data", str(shapes["val"]),
                 "--output", str(tmp_path / "e"), "--device", "cpu", "--no-progress"]) == 2
    assert "last.pt is corrupt" in _stderr_error(capsys)
    images = Path(shapes["val"]).parent / "images"
    assert main(["predict", "--weights", str(run / "last.pt"), str(images), "--output", str(tmp_path / "p"),
                 "--device", "cpu", "--no-progress"]) == 2
    assert "last.pt is corrupt" in _stderr_error(capsys)


def test_checkpoint_without_digest_loads_with_a_warning(tmp_path):
    old = tmp_path / "old.pt"
    torch.save({"format": "fcis-checkpoint", "version": 1, "model": {"w": torch.ones(2)}, "model_name": "x",
                "model_config": {}}, old)
    with pytest.warns(UserWarning, match=r"old\.pt has no integrity digest"):
        state = load_checkpoint(old)
    assert torch.equal(state["model"]["w"], torch.ones(2))


def test_stale_temporary_checkpoint_files_are_removed(tmp_path):
    stale = tmp_path / ".last.pt.k3j4h5.tmp"  # what a process killed mid-write leaves
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".best.pt.aaaa.tmp"  # another file's: left alone by a write of last.pt
    other.write_bytes(b"x")
    save_checkpoint(tmp_path / "last.pt", model={"w": torch.ones(2)}, model_name="x", model_config={})
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".best.pt.aaaa.tmp", "last.pt"]


# --- item 9: a training set without annotations ---------------------------------------------------


def test_training_set_without_annotations_is_refused(shapes, tmp_path):
    data = json.loads(Path(shapes["train"]).read_text())
    empty = Path(shapes["train"]).parent / "no_annotations.json"
    empty.write_text(json.dumps({**data, "annotations": []}))
    with pytest.raises(DataError, match=r"no_annotations\.json: no object annotations"):
        train(MODEL, empty, None, tmp_path / "run", _cfg(), model_overrides=SMALL, progress=False)
    crowd_only = Path(shapes["train"]).parent / "crowd_only.json"
    crowd_only.write_text(json.dumps({**data, "annotations": [dict(a, iscrowd=1) for a in data["annotations"]]}))
    with pytest.raises(DataError, match=r"crowd_only\.json: no object annotations"):
        train(MODEL, crowd_only, None, tmp_path / "run", _cfg(), model_overrides=SMALL, progress=False)


# --- item 10: resume takes its configuration from the checkpoint ----------------------------------


def test_resume_without_the_original_flags(shapes, trained, tmp_path, capsys):
    run = _copy_run(trained, tmp_path / "run")
    # no --optimizer adamw, --lr, --min-size, --max-size, --set: all from last.pt
    argv = ["train", "--model", MODEL, "--train", str(shapes["train"]), "--output", str(run), "--device", "cpu",
            "--workers", "0", "--no-progress", "--resume"]
    assert main([*argv, "--iterations", "3"]) == 0
    state = load_checkpoint(run / "last.pt")
    assert state["iteration"] == 3
    assert state["train_config"]["optimizer"] == "adamw" and state["train_config"]["lr"] == 1e-3
    assert state["model_config"]["min_size"] == 64
    capsys.readouterr()
    # a flag that contradicts the checkpoint: one clear line naming the flag and the file
    assert main([*argv, "--iterations", "4", "--optimizer", "sgd"]) == 2
    err = _stderr_error(capsys)
    assert "last.pt" in err and "--optimizer sgd" in err and "adamw" in err
    assert main([*argv, "--iterations", "4", "--set", "anchor_sizes=(8, 16)"]) == 2
    assert "anchor_sizes" in _stderr_error(capsys)
    # a flag that agrees with it is fine; without --iterations the checkpoint's (3: done) is kept
    assert main([*argv, "--optimizer", "adamw"]) == 0
    assert load_checkpoint(run / "last.pt")["iteration"] == 3


# --- smaller items ---------------------------------------------------------------------------------


def test_checkpoint_of_another_model_names_the_file(shapes, trained, tmp_path, capsys):
    from dataclasses import asdict

    from fcis.models.maskrcnn.config import MaskRCNNConfig

    path = tmp_path / "mislabelled.pt"  # a Mask R-CNN configuration under an FCIS model name
    save_checkpoint(path, model={"w": torch.zeros(1)}, model_name=MODEL,
                    model_config=asdict(MaskRCNNConfig(num_classes=3)))
    with pytest.raises(CheckpointError, match=r"mislabelled\.pt.*another model"):
        load_model(path)
    state = load_checkpoint(trained / "last.pt")
    path2 = tmp_path / "wrong_weights.pt"  # an FCIS configuration, weights of something else
    save_checkpoint(path2, model={"w": torch.zeros(1)}, model_name=MODEL, model_config=state["model_config"])
    with pytest.raises(CheckpointError, match=r"wrong_weights\.pt"):
        load_model(path2)
    run = _copy_run(trained, tmp_path / "run")  # and on --resume
    save_checkpoint(run / "last.pt", **dict({k: v for k, v in state.items() if k not in ("format", "version", "saved_at")},
                                            model_config=asdict(MaskRCNNConfig(num_classes=3))))
    assert main(["train", "--model", MODEL, "--train", str(shapes["train"]), "--output", str(run), "--resume",
                 "--iterations", "3", "--no-progress"]) == 2
    err = _stderr_error(capsys)
    assert "last.pt" in err and "another model" in err


def test_images_skipped_in_a_dataloader_worker_are_counted(shapes, tmp_path):
    data = json.loads(Path(shapes["train"]).read_text())
    root = Path(shapes["train"]).parent
    broken = root / "images" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)  # a PNG signature, then nothing valid
    first = data["images"][0]
    bad = dict(first, id=max(i["id"] for i in data["images"]) + 1, file_name=str(Path(first["file_name"]).parent / "broken.png"))
    with_broken = root / "with_broken.json"
    with_broken.write_text(json.dumps({**data, "images": [*data["images"], bad]}))
    n = len(data["images"]) + 1
    # one epoch in a worker process: the main process's dataset never sees the broken image
    summary = train(MODEL, with_broken, None, tmp_path / "run", _cfg(iterations=n, workers=1),
                    model_overrides=SMALL, progress=False)
    assert summary["bad_samples"] == 1
    assert summary["skipped_images"] == [str(broken)]
