"""Mixed precision (``--amp``): configuration, GradScaler checkpointing, a CPU bfloat16 smoke run
(train step, evaluation, ``fcis predict``/``fcis evaluate``), and CUDA train + inference tests
that run only where a GPU is present."""

from __future__ import annotations

import json

import pytest
import torch

from fcis.engine import TrainConfig, load_checkpoint, save_checkpoint, train
from fcis.engine.amp import amp_dtype, autocast, check_amp, make_grad_scaler

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
INPUT = {"min_size": 64, "max_size": 80}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from fcis.data import make_shapes

    return make_shapes(tmp_path_factory.mktemp("shapes"), num_images=4, seed=0, image_size=(64, 80))


def _cfg(device: str, **kw) -> TrainConfig:
    base = dict(iterations=2, batch_size=1, workers=0, device=device, warmup_iters=0, log_every=1,
                checkpoint_every=100, hflip_prob=0.0, **INPUT)
    return TrainConfig(**{**base, **kw})


# --- configuration -------------------------------------------------------------------------------


def test_amp_configuration_is_validated():
    assert TrainConfig().amp is False and TrainConfig().amp_dtype == "bf16"
    with pytest.raises(ValueError, match="amp_dtype must be 'bf16' or 'fp16'"):
        TrainConfig(amp=True, amp_dtype="fp32")
    assert amp_dtype("bf16") is torch.bfloat16 and amp_dtype("fp16") is torch.float16
    assert check_amp(False, "fp16", "cpu") is None  # off: nothing to check
    assert check_amp(True, "bf16", "cpu") is torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        check_amp(True, "fp16", "cpu")
    with pytest.raises(ValueError, match="must be one of"):
        check_amp(True, "half", "cpu")


def test_fp16_training_on_the_cpu_is_refused_before_any_work(tmp_path, shapes):
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        train("fcis_resnet18", shapes["train"], None, tmp_path, _cfg("cpu", amp=True, amp_dtype="fp16"), progress=False)
    assert not (tmp_path / "last.pt").exists()


def test_cli_amp_flags(tmp_path, shapes, capsys):
    from fcis.cli.main import build_parser, main

    args = build_parser().parse_args(["train", "--model", "m", "--train", "t.json", "--output", "o", "--amp",
                                      "--amp-dtype", "fp16"])
    assert args.amp and args.amp_dtype == "fp16"
    assert build_parser().parse_args(["predict", "x.jpg", "--weights", "w", "--output", "o"]).amp is False
    code = main(["train", "--model", "fcis_resnet18", "--train", str(shapes["train"]), "--output", str(tmp_path),
                 "--amp", "--amp-dtype", "fp16", "--device", "cpu", "--no-progress"])
    assert code == 2 and "fp16 needs a CUDA device" in capsys.readouterr().err


# --- GradScaler state ----------------------------------------------------------------------------


def test_grad_scaler_state_round_trips_through_a_checkpoint(tmp_path):
    """An fp16 run's scaler (scale lowered by an overflow, growth tracker) is saved under
    ``"scaler"``, loads with ``weights_only`` and is restored by ``make_grad_scaler``."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scaler = torch.amp.GradScaler(device, init_scale=2.0**10, growth_interval=3)
    param = torch.nn.Parameter(torch.ones(2, device=device))
    opt = torch.optim.SGD([param], lr=0.1)
    for grad in (float("inf"), 1.0, 1.0):  # one overflow (scale halves), then two good steps
        scaler.scale(param.sum())  # (what a step does first; also creates the scale lazily)
        param.grad = torch.full_like(param, grad)
        scaler.step(opt)
        scaler.update()
    state = scaler.state_dict()
    assert state["scale"] == 2.0**9 and state["_growth_tracker"] == 2
    save_checkpoint(tmp_path / "last.pt", model={}, model_name="m", model_config={}, scaler=state)
    loaded = load_checkpoint(tmp_path / "last.pt")["scaler"]
    restored = make_grad_scaler(device, torch.float16, loaded)
    assert restored.is_enabled() and restored.state_dict() == state
    assert not make_grad_scaler(device, torch.bfloat16, loaded).is_enabled()  # bf16: no scaling
    assert not make_grad_scaler(device, None).is_enabled()


# --- CPU bfloat16 autocast -----------------------------------------------------------------------


def test_cpu_bf16_train_evaluate_and_predict(tmp_path, shapes):
    """``--amp`` on the CPU runs bfloat16 autocast: training steps are finite, validation and
    ``fcis evaluate``/``fcis predict`` run under autocast and give float32 results."""
    from fcis.cli.main import main
    from fcis.inference import Predictor

    out = tmp_path / "run"
    summary = train("fcis_resnet18", shapes["train"], shapes["val"], out, _cfg("cpu", amp=True), progress=False)
    assert summary["iterations"] == 2 and summary["nonfinite_steps"] == 0
    assert torch.isfinite(torch.tensor(summary["losses"]["loss"]))
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["train_config"]["amp"] is True and "scaler" not in ckpt  # bf16: no GradScaler
    assert all(v.dtype in (torch.float32, torch.int64) for v in ckpt["model"].values())  # weights stay fp32
    assert "segm" in summary["metrics"]

    predictor = Predictor.from_checkpoint(out / "last.pt", device="cpu", score_threshold=0.0, amp=True)
    pred = predictor.predict(torch.rand(3, 64, 80))
    assert pred["scores"].dtype == torch.float32 and pred["masks"].dtype == torch.bool

    assert main(["evaluate", "--weights", str(out / "last.pt"), "--data", str(shapes["val"]), "--output",
                 str(tmp_path / "eval"), "--amp", "--device", "cpu", "--no-progress"]) == 0
    assert "segm" in json.loads((tmp_path / "eval" / "metrics.json").read_text())
    image = next(p for p in (shapes["images"]).iterdir() if p.suffix == ".png")
    assert main(["predict", str(image), "--weights", str(out / "last.pt"), "--output", str(tmp_path / "pred"),
                 "--amp", "--device", "cpu", "--no-progress"]) == 0
    assert (tmp_path / "pred" / "predictions.json").exists()


def test_autocast_helper_is_a_no_op_without_a_dtype():
    with autocast("cpu", None):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("cpu", torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


# --- CUDA ----------------------------------------------------------------------------------------


@CUDA
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_cuda_amp_train_resume_and_infer(tmp_path, shapes, dtype):
    """On a GPU: AMP training steps are finite; fp16's GradScaler state is checkpointed and
    restored on resume; inference (Predictor, validation) under AMP gives float32 outputs close
    to fp32 inference of the same weights."""
    from fcis.inference import Predictor

    if dtype == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    out = tmp_path / "run"
    cfg = _cfg("cuda", amp=True, amp_dtype=dtype, iterations=2)
    summary = train("fcis_resnet18", shapes["train"], shapes["val"], out, cfg, progress=False)
    assert summary["iterations"] == 2 and "segm" in summary["metrics"]
    ckpt = load_checkpoint(out / "last.pt")
    if dtype == "fp16":
        assert ckpt["scaler"]["scale"] > 0
        # a distinctive state, to see that the resumed run continues from it
        ckpt["scaler"] = dict(ckpt["scaler"], scale=2.0**10, _growth_tracker=7)
        save_checkpoint(out / "last.pt", **{k: v for k, v in ckpt.items() if k not in ("format", "version", "saved_at")})
    else:
        assert "scaler" not in ckpt
    resumed = train("fcis_resnet18", shapes["train"], shapes["val"], out,
                    _cfg("cuda", amp=True, amp_dtype=dtype, iterations=3), resume=True, progress=False)
    assert resumed["start_iteration"] == 2 and resumed["iterations"] == 3 and resumed["nonfinite_steps"] == 0
    if dtype == "fp16":
        state = load_checkpoint(out / "last.pt")["scaler"]
        # restored, then one step: grown tracker, or halved scale after an overflow (fresh: 65536)
        assert (state["scale"], state["_growth_tracker"]) in ((2.0**10, 8), (2.0**9, 0))

    image = torch.rand(3, 64, 80)
    amp_pred = Predictor.from_checkpoint(out / "last.pt", device="cuda", score_threshold=0.0, amp=True,
                                         amp_dtype=dtype).predict(image)
    fp32_pred = Predictor.from_checkpoint(out / "last.pt", device="cuda", score_threshold=0.0).predict(image)
    assert amp_pred["scores"].dtype == torch.float32 and amp_pred["boxes"].dtype == torch.float32
    assert amp_pred["masks"].dtype == torch.bool and torch.isfinite(amp_pred["scores"]).all()
    if len(amp_pred["scores"]) and len(fp32_pred["scores"]):
        assert float(amp_pred["scores"][0]) == pytest.approx(float(fp32_pred["scores"][0]), abs=0.05)


@CUDA
def test_cuda_amp_predict_dataset_matches_fp32_roughly(shapes):
    from fcis.data import CocoInstances
    from fcis.engine import predict_dataset
    from fcis.models import fcis_resnet18

    torch.manual_seed(0)
    ds = CocoInstances(shapes["val"])
    model = fcis_resnet18(num_classes=ds.num_classes, **INPUT).cuda()
    fp32 = predict_dataset(model, ds, "cuda", progress=False)
    amp = predict_dataset(model, ds, "cuda", progress=False, amp=True,
                          amp_dtype="bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert {r["image_id"] for r in amp} <= {int(i) for i in ds.coco.getImgIds()}
    assert abs(len(amp) - len(fp32)) <= max(2, len(fp32) // 5)
    assert all(isinstance(r["score"], float) for r in amp)
