"""Training curves (``curves.png``, :mod:`fcis.engine.curves`) and TensorBoard events: written by
a tiny training run, continued on resume, drawn where the axes say, redrawn at a bounded rate,
never able to stop training. The run uses test_engine's tiny stand-in model (seconds)."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
from PIL import Image
from test_engine import tiny_builder

from fcis.engine import TrainConfig, train
from fcis.engine.curves import (
    SIZE,
    CurvePlotter,
    Curves,
    _Axis,
    _thin,
    _value_axis,
    curves_from_records,
    layout,
    read_log,
)
from fcis.engine.curves import render_curves as render
from fcis.engine.run_log import RunLog


@pytest.fixture
def tiny(monkeypatch):
    import fcis.models

    monkeypatch.setitem(fcis.models.BUILDERS, "tiny", tiny_builder)
    return "tiny"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from fcis.data import make_shapes

    return make_shapes(tmp_path_factory.mktemp("shapes"), num_images=8, seed=3, image_size=(64, 80), max_objects=2,
                       val_fraction=0.25)


def _cfg(iterations: int, checkpoint_every: int = 100) -> TrainConfig:
    return TrainConfig(iterations=iterations, batch_size=2, lr=0.05, warmup_iters=1, lr_steps=(0.5,), workers=0,
                       seed=1, checkpoint_every=checkpoint_every, log_every=1, eval_every=2, device="cpu")


def _shown(path) -> dict:
    """The PNG's own account of what it shows (its ``fcis-curves`` text chunk)."""
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG" and im.size == SIZE and im.mode == "RGB"
        return json.loads(im.text["fcis-curves"])


def _run(tiny, shapes, out, iterations, checkpoint_every=100, **kw):
    return train(tiny, shapes["train"], shapes["val"], out, _cfg(iterations, checkpoint_every), progress=False, **kw)


def test_a_run_draws_its_curves_and_a_resumed_run_continues_them(tmp_path, tiny, shapes, capsys):
    out = tmp_path / "run"
    summary = _run(tiny, shapes, out, 4)
    assert summary["curves"] == str(out / "curves.png")
    assert f"curves: {out / 'curves.png'}" in capsys.readouterr().err  # said at the start
    with Image.open(out / "curves.png") as im:
        im.verify()  # a whole, valid PNG
    shown = _shown(out / "curves.png")
    assert shown["iterations"] == [1, 4] and shown["log_points"] == 4 and shown["validations"] == [2, 4]
    assert shown["losses"] == ["loss", "loss_noise", "loss_seg"] and "segm AP" in shown["metrics"]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left
    first = np.asarray(Image.open(out / "curves.png"))

    (out / ".curves.k3j4h5.png.tmp").write_bytes(b"half a picture")  # a process killed mid-write
    resumed = _run(tiny, shapes, out, 6, resume=True)
    assert resumed["start_iteration"] == 4
    shown = _shown(out / "curves.png")
    assert shown["iterations"] == [1, 6] and shown["log_points"] == 6 and shown["validations"] == [2, 4, 6]
    assert not np.array_equal(first, np.asarray(Image.open(out / "curves.png")))
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # its temporary file removed
    # the picture shows exactly the log, which reads as one run
    assert curves_from_records(read_log(out / "log.jsonl")).summary() == shown


def test_a_fresh_run_over_an_old_folder_starts_new_curves(tmp_path, tiny, shapes):
    out = tmp_path / "run"
    _run(tiny, shapes, out, 4)
    _run(tiny, shapes, out, 2, overwrite=True)
    assert _shown(out / "curves.png")["iterations"] == [1, 2]


def test_points_are_drawn_where_the_axes_say():
    """Two flat loss curves (1.0 and 0.1) land on the rows the log axis maps them to."""
    c = Curves()
    for it in range(10, 101, 10):
        c.add({"iteration": it, "loss": 1.0, "losses": {"loss": 1.0, "loss_a": 0.1}, "lr": 1e-3})
    image = np.asarray(render(c, total_iterations=100)).astype(int)
    box = layout()[0]
    ya = _value_axis([1.0, 0.1], True, box[3] - 1, box[1] + 1)
    xa = _Axis(0.0, 100.0, False, box[0] + 1, box[2] - 1)
    column = image[int(box[1]) + 2:int(box[3]) - 2, round(xa(55))]   # between two points
    dark = np.nonzero(column.max(axis=1) < 60)[0] + int(box[1]) + 2     # the total: near-black
    blue = np.nonzero((column[:, 2] > 140) & (column[:, 0] < 90))[0] + int(box[1]) + 2  # loss_a: the first colour
    assert dark.size and abs(dark.mean() - ya(1.0)) < 2.5
    assert blue.size and abs(blue.mean() - ya(0.1)) < 2.5
    assert ya(0.1) - ya(1.0) > 100  # a decade is well apart on the log scale


def test_axes_ticks_and_gaps():
    lin = _value_axis([0.0, 0.37], False, 100, 0)
    assert lin.lo == 0 and lin.hi >= 0.37 and lin.ticks()[0] == 0 and len(lin.ticks()) >= 3
    log = _value_axis([0.02, 3.0], True, 100, 0)
    assert log.lo < 0.02 and log.hi > 3.0 and {0.1, 1.0} <= set(log.ticks())
    narrow = _value_axis([0.5, 0.6], True, 100, 0)
    assert len(narrow.ticks()) >= 2
    # a NaN/inf log line is a gap (None), and a NaN/inf step is counted apart
    c = curves_from_records([{"iteration": 1, "loss": 1.0, "losses": {"loss": 1.0}, "lr": 0.1},
                             {"iteration": 2, "loss": None, "losses": {"loss": None}, "lr": 0.1},
                             {"iteration": 3, "nonfinite": True, "losses": {"loss": None}, "lr": 0.1},
                             {"iteration": 3, "metrics": {"segm": {"AP": math.nan}, "bbox": {"AP": 0.25}}}])
    assert c.losses["loss"] == [(1, 1.0), (2, None)] and c.nonfinite == [3]
    assert c.metrics == {"bbox AP": [(3, 0.25)]} and c.last_iteration == 3
    render(c, total_iterations=None)  # draws gaps, single points and a lone validation
    # a long log is averaged to fewer points than the plot has pixel columns; an all-gap group stays a gap
    assert _thin([(1, 1.0), (2, None), (3, 3.0), (4, 5.0), (5, None), (6, None)], 3) == [
        (1.5, 1.0), (3.5, 4.0), (5.5, None)]
    render(Curves())  # nothing yet: empty panels with a message


def _line(it: int) -> dict:
    return {"iteration": it, "loss": 1.0 / it, "losses": {"loss": 1.0 / it}, "lr": 0.1}


def test_the_plotter_redraws_at_a_bounded_rate(tmp_path):
    now = [0.0]
    plotter = CurvePlotter(tmp_path / "c.png", total_iterations=100, min_interval_s=5.0, max_share=1.0,
                           clock=lambda: now[0])
    for it in range(1, 13):  # a log line every second
        now[0] = float(it)
        plotter.add(_line(it))
    assert len(plotter.draw_seconds) == 3          # at 1 s, 6 s and 11 s
    assert _shown(tmp_path / "c.png")["iterations"] == [1, 11]
    plotter.add({"iteration": 12, "metrics": {"segm": {"AP": 0.5}}})  # a validation draws at once
    assert len(plotter.draw_seconds) == 4 and _shown(tmp_path / "c.png")["validations"] == [12]
    plotter.max_share, plotter.draw_seconds[-1] = 0.01, 1.0  # a slow drawing: wait 1 s / 1% = 100 s
    for it in range(13, 60):
        now[0] = float(it)
        plotter.add(_line(it))
    assert len(plotter.draw_seconds) == 4
    plotter.close()  # the final picture has everything
    assert len(plotter.draw_seconds) == 5 and _shown(tmp_path / "c.png")["iterations"] == [1, 59]


def test_a_drawing_that_fails_never_stops_training(tmp_path):
    (tmp_path / "file").write_text("")
    plotter = CurvePlotter(tmp_path / "file" / "c.png")  # its folder is a file
    with pytest.warns(RuntimeWarning, match="could not draw the training curves"):
        plotter.add(_line(1))
    plotter.add(_line(2))   # no second warning, no error
    plotter.close()
    assert plotter.draw_seconds == []


def test_without_tensorboard_one_line_says_how_to_get_it(tmp_path, monkeypatch):
    """The base install: no tensorboard, no matplotlib (the curves need Pillow only)."""
    for name in ("torch.utils.tensorboard", "tensorboard", "matplotlib", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it fails
    log = RunLog(tmp_path, 0)
    log.write(_line(1))
    log.close()
    assert log.tb is None and log.tensorboard_dir is None and not (tmp_path / "tb").exists()
    assert "pip install tensorboard" in log.where() and (tmp_path / "curves.png").exists()


def _scalars(folder, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


class _Interrupt(Exception):
    pass


def test_tensorboard_events_follow_the_log_and_a_crashed_run_resumed(tmp_path, tiny, shapes, monkeypatch):
    """A run killed in iteration 5 (its last.pt at 3, its log and events up to 4), resumed to 6:
    TensorBoard shows each iteration once, the resumed run's where they were written twice,
    like ``log.jsonl`` and ``curves.png``."""
    pytest.importorskip("tensorboard")
    from fcis.engine import trainer as trainer_module

    real_step, calls = trainer_module.train_step, []

    def crashing_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise _Interrupt
        return real_step(*args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(trainer_module, "train_step", crashing_step)
    with pytest.raises(_Interrupt):
        _run(tiny, shapes, out, 6, checkpoint_every=3)
    monkeypatch.setattr(trainer_module, "train_step", real_step)
    before = {s: v for s, v in _scalars(out / "tb", "loss/loss")}
    assert sorted(before) == [1, 2, 3, 4] and _shown(out / "curves.png")["iterations"] == [1, 4]

    summary = _run(tiny, shapes, out, 6, checkpoint_every=3, resume=True)
    assert summary["tensorboard"] == str(out / "tb") and summary["start_iteration"] == 3
    lines = [r for r in read_log(out / "log.jsonl") if "loss" in r]
    assert [r["iteration"] for r in lines] == [1, 2, 3, 4, 5, 6]
    assert _scalars(out / "tb", "loss/loss") == [(r["iteration"], pytest.approx(r["loss"])) for r in lines]
    assert [s for s, _ in _scalars(out / "tb", "lr")] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in _scalars(out / "tb", "segm/AP")] == [2, 4, 6]
    assert _shown(out / "curves.png")["iterations"] == [1, 6]
    assert _shown(out / "curves.png")["validations"] == [2, 4, 6]
