"""``fcis train``'s flags are generated from TrainConfig's fields (fcis/cli/config_flags.py): every
field has one, the flags that existed before keep their spelling, a flag not given is not given
(so --resume can tell), and a setting given on the command line reaches config.json."""

from __future__ import annotations

import dataclasses
import json

import pytest

from fcis.cli.config_flags import add_config_flags, flag_name, given_fields, on_command_line
from fcis.cli.main import build_parser, main
from fcis.engine import load_checkpoint
from fcis.engine.config import TrainConfig

BASE = ["train", "--model", "m", "--train", "t.json", "--output", "o"]


def _train_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["train"]


def test_every_train_config_field_has_a_flag():
    actions = {a.dest: a for a in _train_parser()._actions}
    for field in dataclasses.fields(TrainConfig):
        assert "help" in field.metadata and field.metadata["help"], f"{field.name} has no help text"
        if not on_command_line(field):
            continue
        assert field.name in actions, f"TrainConfig.{field.name} has no fcis train flag"
        assert flag_name(field.name) in actions[field.name].option_strings
        assert actions[field.name].default is None  # not given, so that --resume can tell
    args = build_parser().parse_args(BASE)
    assert given_fields(args, TrainConfig) == {}


def test_the_flags_that_existed_keep_their_spelling():
    argv = [*BASE, "--iterations", "7", "--batch-size", "3", "--optimizer", "sgd", "--lr", "0.01",
            "--warmup-iters", "5", "--min-size", "64", "--max-size", "80", "--device", "cpu", "--workers", "0",
            "--seed", "4", "--eval-every", "2", "--checkpoint-every", "3", "--log-every", "1",
            "--clip-grad-norm", "5", "--on-bad-sample", "raise", "--hflip-prob", "0.25", "--amp",
            "--amp-dtype", "fp16", "--find-unused-parameters", "--recipe", "paper-voc", "--anchors", "paper",
            "--allow-random-init", "--weight-decay", "1e-4", "--warmup-factor", "0.2", "--lr-steps", "0.5", "0.8",
            "--resume", "--overwrite", "--no-progress", "--set", "anchor_sizes=(8,)"]
    args = build_parser().parse_args(argv)
    assert given_fields(args, TrainConfig) == {
        "iterations": 7, "batch_size": 3, "optimizer": "sgd", "lr": 0.01, "warmup_iters": 5, "min_size": 64,
        "max_size": 80, "device": "cpu", "workers": 0, "seed": 4, "eval_every": 2, "checkpoint_every": 3,
        "log_every": 1, "clip_grad_norm": 5.0, "on_bad_sample": "raise", "hflip_prob": 0.25, "amp": True,
        "amp_dtype": "fp16", "find_unused_parameters": True, "recipe": "paper-voc", "anchors": "paper",
        "allow_random_init": True, "weight_decay": 1e-4, "warmup_factor": 0.2, "lr_steps": (0.5, 0.8)}
    assert args.resume and args.overwrite and args.no_progress and args.set == ["anchor_sizes=(8,)"]
    TrainConfig(**given_fields(args, TrainConfig))  # a valid configuration
    new = build_parser().parse_args([*BASE, "--no-sync-bn", "--bias-weight-decay", "--no-amp"])
    assert given_fields(new, TrainConfig) == {"sync_bn": False, "bias_weight_decay": True, "amp": False}
    with pytest.raises(SystemExit):
        build_parser().parse_args([*BASE, "--optimizer", "adam"])  # choices come from the field


def test_generated_flags_follow_the_annotations():
    import argparse

    @dataclasses.dataclass
    class Settings:
        count: int = dataclasses.field(default=1, metadata={"help": "how many"})
        ratios: tuple[float, ...] | None = None
        name: str | None = dataclasses.field(default=None, metadata={"choices": ("a", "b")})
        table: dict = dataclasses.field(default_factory=dict, metadata={"cli": False})

    parser = argparse.ArgumentParser()
    add_config_flags(parser, Settings)
    args = parser.parse_args(["--count", "3", "--ratios", "0.5", "2", "--name", "b"])
    assert given_fields(args, Settings) == {"count": 3, "ratios": (0.5, 2.0), "name": "b"}
    assert "--table" not in parser.format_help() and "how many (default: 1)" in parser.format_help()

    @dataclasses.dataclass
    class Unsupported:
        table: dict = dataclasses.field(default_factory=dict)

    with pytest.raises(TypeError, match=r"Unsupported\.table.*cli"):
        add_config_flags(argparse.ArgumentParser(), Unsupported)


def test_settings_given_as_flags_reach_config_json(tmp_path, capsys):
    data = tmp_path / "shapes"
    assert main(["make-shapes", str(data), "--num-images", "3", "--seed", "1", "--image-size", "64", "80",
                 "--max-objects", "1", "--val-fraction", "0.34"]) == 0
    run = tmp_path / "run"
    argv = ["train", "--model", "fcis_resnet18", "--train", str(data / "train.json"), "--output", str(run),
            "--iterations", "1", "--device", "cpu", "--workers", "0", "--no-progress", "--min-size", "64",
            "--max-size", "80", "--set", "anchor_sizes=(16, 32, 64)"]
    assert main([*argv, "--optimizer", "sgd", "--momentum", "0.8", "--gamma", "0.5", "--lr-steps", "0.5", "0.8",
                 "--weight-decay", "1e-4", "--no-sync-bn", "--max-nonfinite", "3"]) == 0
    cfg = json.loads((run / "config.json").read_text())["train_config"]
    assert (cfg["momentum"], cfg["gamma"], cfg["lr_steps"], cfg["weight_decay"]) == (0.8, 0.5, [0.5, 0.8], 1e-4)
    assert cfg["sync_bn"] is False and cfg["max_nonfinite"] == 3 and cfg["optimizer"] == "sgd"
    groups = load_checkpoint(run / "last.pt")["optimizer"]["param_groups"]
    assert {g["momentum"] for g in groups} == {0.8}  # and the optimizer used it
    capsys.readouterr()
    # on --resume a new flag is checked against the checkpoint like the old ones
    assert main([*argv, "--resume", "--momentum", "0.7"]) == 2
    err = capsys.readouterr().err
    assert "--momentum 0.7" in err and "0.8" in err and "last.pt" in err
    assert main([*argv, "--resume", "--momentum", "0.8"]) == 0


def test_train_flags_build_without_torch(tmp_path):
    """The flags come from TrainConfig, which imports without torch: the parser (built for every
    command, also ``fcis predict --onnx`` in a deployment) needs no torch."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "tests" / "no_torch"), str(repo)])}
    run = subprocess.run([sys.executable, "-m", "fcis", "train", "--help"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "--momentum" in run.stdout and "--sync-bn, --no-sync-bn" in run.stdout
