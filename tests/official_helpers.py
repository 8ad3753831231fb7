"""Helpers of the official-variant tests (not a test module): small official-variant models with
calibrated BatchNorm, written in the official MXNet layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from fcis.models import BUILDERS
from fcis.models.fcis.official import OfficialFCIS, official_config
from fcis.weights.mxnet_params import write_mxnet_params
from fcis.weights.official_layout import fcis_to_official


def small_official_model(num_classes: int = 2, seed: int = 0, depth: int = 50, **overrides) -> OfficialFCIS:
    """An official-variant FCIS on ResNet-``depth`` (50: the smallest official ResNet v1) with random weights
    and each frozen BatchNorm calibrated on a random image (its statistics set to those of its
    input, layer by layer in one pass), so activations stay O(1) and the RPN and head give
    non-degenerate boxes and scores; ``overrides`` are FCISConfig fields (e.g. min_size)."""
    torch.manual_seed(seed)
    cfg = official_config(num_classes)
    cfg.pop("num_classes"), cfg.pop("depth")
    cfg.update(overrides)
    model = BUILDERS[f"fcis_resnet{depth}"](num_classes=num_classes, **cfg).eval()

    def calibrate(module: FrozenBatchNorm2d, inputs: tuple[torch.Tensor]) -> None:
        x = inputs[0].detach()
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False))

    hooks = [m.register_forward_pre_hook(calibrate) for m in model.backbone.modules()
             if isinstance(m, FrozenBatchNorm2d)]
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(seed)) * 60
    with torch.enable_grad():                # the modules' own forward (no BatchNorm folding)
        model.backbone(x)
    for h in hooks:
        h.remove()
    return model


def write_official_params(model: OfficialFCIS, path: Path) -> dict[str, np.ndarray]:
    """Write ``model`` as an official MXNet ``.params`` file (V2 records, arg:/aux: names, the
    trainer's ``fcis_bbox_*_test`` pair included); returns the official-named arrays."""
    params = fcis_to_official(model.state_dict(), depth=model.config.depth)
    stds = np.repeat(np.tile(np.array([0.2, 0.2, 0.5, 0.5], np.float32), 2), params["fcis_bbox_bias"].size // 8)
    params["fcis_bbox_weight_test"] = params["fcis_bbox_weight"] * stds[:, None, None, None]
    params["fcis_bbox_bias_test"] = params["fcis_bbox_bias"] * stds
    write_mxnet_params(path, params, aux={k for k in params if "_moving_" in k})
    return params
