"""The recipe's augmentation and run length (issue 22 items 3-4): defaults by how the network
starts, given values winning, the length from the data with its printed reason, the flags, resume."""

from __future__ import annotations

import json

import pytest

from fcis.cli.config_flags import given_fields
from fcis.cli.main import build_parser
from fcis.engine import TrainConfig
from fcis.engine.errors import CheckpointError
from fcis.engine.recipe import SCRATCH_AUGMENTATION, resolve_recipe, scratch_warmup
from fcis.engine.resume import resume_config
from fcis.engine.run_length import iterations_for_data
from fcis.engine.run_plan import plan_resumed_run

OFF = {"scale_jitter": (1.0, 1.0), "photometric": False, "copy_paste": 0.0}


def _aug(cfg):
    return {k: getattr(cfg, k) for k in OFF}


def test_length_from_images_and_instances():
    # 73 epochs (COCO 6x) from scratch, 12 (1x) from ImageNet weights, ceil(epochs x images / per step)
    assert iterations_for_data(130, 320, 2, pretrained=False)[0] == 73 * 130 / 2 == 4745
    assert iterations_for_data(61, 255, 2, pretrained=True)[0] == 12 * 61 / 2 == 366
    assert iterations_for_data(200, 255, 3, pretrained=False)[0] == 4867         # ceil(4866.67)
    assert iterations_for_data(61, 255, 3, pretrained=True)[0] == 300            # 244: below the minimum
    assert iterations_for_data(61, 255, 4, pretrained=False)[0] == 2000          # ceil(1113.25): the minimum
    # 33 objects per image: counted as 2178 / 7.27 = 299.6 images of COCO's density
    n, reason = iterations_for_data(66, 2178, 2, pretrained=False)
    assert n == 10935 and "300 images of COCO's density" in reason and "66 images with 2178 instances" in reason
    n, reason = iterations_for_data(10, 20, 2, pretrained=False)
    assert n == 2000 and "= 365, raised to the minimum of 2000" in reason
    assert iterations_for_data(10, 0, 1, pretrained=True)[0] == 300
    with pytest.raises(ValueError):
        iterations_for_data(0, 0, 2, pretrained=False)


def test_auto_recipe_takes_the_length_from_the_data_unless_given():
    cfg, rec = resolve_recipe(TrainConfig(batch_size=2), pretrained=False, num_train_images=130,
                              num_train_instances=320)
    assert cfg.iterations == 4745 and cfg.warmup_iters == scratch_warmup(4745) and rec.sources["iterations"] == "recipe"
    assert "iterations 4745 from the data: 130 images with 320 instances" in rec.describe()
    cfg, rec = resolve_recipe(TrainConfig(batch_size=2), pretrained=True, num_train_images=130,
                              num_train_instances=320, world_size=2)
    assert cfg.iterations == 390 and "at 4 per step" in rec.length
    cfg, rec = resolve_recipe(TrainConfig(batch_size=2, iterations=300), pretrained=False, num_train_images=130,
                              num_train_instances=320)
    assert cfg.iterations == 300 and rec.length == "" and "from the data" not in rec.describe()
    assert rec.sources["iterations"] == "given"
    # the paper recipes keep their epochs
    cfg, rec = resolve_recipe(TrainConfig(recipe="paper-voc"), pretrained=True, num_train_images=100,
                              num_train_instances=5000)
    assert cfg.iterations == 22 * 200 and rec.length == ""


def test_augmentation_by_recipe_and_given_values_win():
    cfg, rec = resolve_recipe(TrainConfig(iterations=10), pretrained=False, num_train_images=10)
    assert _aug(cfg) == SCRATCH_AUGMENTATION and all(rec.sources[k] == "recipe" for k in OFF)
    assert "augmentation: hflip_prob=0.5, scale_jitter=1.0 1.0, photometric=False, copy_paste=1.0" in rec.describe()
    for pretrained, recipe in ((True, "auto"), (True, "paper-coco"), (False, "paper-voc")):
        cfg, rec = resolve_recipe(TrainConfig(iterations=10, recipe=recipe, allow_random_init=True),
                                  pretrained=pretrained, num_train_images=10)
        assert _aug(cfg) == OFF, recipe
    cfg, rec = resolve_recipe(TrainConfig(iterations=10, copy_paste=0.0, scale_jitter=(0.8, 1.25)),
                              pretrained=False, num_train_images=10)
    assert _aug(cfg) == {"scale_jitter": (0.8, 1.25), "photometric": SCRATCH_AUGMENTATION["photometric"],
                         "copy_paste": 0.0}
    assert rec.sources["copy_paste"] == "given" and rec.sources["photometric"] == "recipe"
    assert "scale_jitter=0.8 1.25 (given)" in rec.describe() and "copy_paste=0.0 (given)" in rec.describe()
    cfg, rec = resolve_recipe(TrainConfig(iterations=10, recipe="paper-voc", copy_paste=1.0), pretrained=True,
                              num_train_images=10)
    assert cfg.copy_paste == 1.0 and any("copy_paste given (the official runs flip only)" in n for n in rec.notes)
    assert json.loads(json.dumps(rec.to_dict()))["train"]["scale_jitter"] == [1.0, 1.0]   # recorded


def test_config_checks_the_augmentation_fields():
    assert TrainConfig(scale_jitter=[0.5, 2]).scale_jitter == (0.5, 2.0)
    for bad in ((0.05, 1.0), (1.0, 2.5), (1.5, 1.0), (1.0,), (0.5, 1.0, 1.5)):
        with pytest.raises(ValueError, match="scale_jitter"):
            TrainConfig(scale_jitter=bad)
    with pytest.raises(ValueError, match="copy_paste"):
        TrainConfig(copy_paste=1.5)


def test_flags_turn_each_lever_on_or_off():
    base = ["train", "--model", "m", "--train", "t.json", "--output", "o"]
    args = build_parser().parse_args([*base, "--scale-jitter", "1", "1", "--no-photometric", "--copy-paste", "0"])
    assert given_fields(args, TrainConfig) == {"scale_jitter": (1.0, 1.0), "photometric": False, "copy_paste": 0.0}
    args = build_parser().parse_args([*base, "--scale-jitter", "0.1", "2", "--photometric", "--copy-paste", "1"])
    assert given_fields(args, TrainConfig) == {"scale_jitter": (0.1, 2.0), "photometric": True, "copy_paste": 1.0}


def test_resume_keeps_the_augmentation_of_the_checkpoint():
    old, _ = resolve_recipe(TrainConfig(iterations=100), pretrained=False, num_train_images=10)
    plan = plan_resumed_run(TrainConfig(iterations=200), {"train_config": old.to_dict()})
    assert _aug(plan.cfg) == SCRATCH_AUGMENTATION
    before = {k: v for k, v in old.to_dict().items() if k not in OFF}   # written before these fields
    plan = plan_resumed_run(TrainConfig(iterations=200), {"train_config": before})
    assert _aug(plan.cfg) == OFF   # it trained with the flip only, and goes on so
    with pytest.raises(CheckpointError, match="--copy-paste 0"):
        resume_config({"train_config": old.to_dict()}, TrainConfig(copy_paste=0.0), "last.pt", explicit=["copy_paste"])


def test_a_fresh_run_prints_its_length_and_augmentation(tmp_path):
    from fcis.data import CocoInstances, make_shapes
    from fcis.engine.run_plan import plan_fresh_run
    from fcis.models import BUILDERS

    data = make_shapes(tmp_path, num_images=6, seed=4, image_size=(64, 80), max_objects=3, val_fraction=0.0)
    ds = CocoInstances(data["train"])
    instances = len(json.loads(data["train"].read_text())["annotations"])
    lines: list[str] = []
    plan = plan_fresh_run(BUILDERS["fcis_resnet18"], ds, TrainConfig(batch_size=2, min_size=64, max_size=80),
                          {}, pretrained=False, world_size=1, log=lines.append)
    text = "\n".join(lines)
    assert plan.cfg.iterations == 2000
    assert f"iterations 2000 from the data: 6 images with {instances} instances" in text
    assert "raised to the minimum of 2000" in text and "augmentation: hflip_prob=0.5, scale_jitter=1.0 1.0" in text
    assert plan.record["recipe"]["length"] and plan.record["recipe"]["train"]["copy_paste"] == 1.0
