"""The stride of FCIS's score maps (``FCISConfig.head_stride``) for a run from random weights.

At the paper's stride 16 an object of 32 input pixels spans two cells of the score maps, and its
mask is assembled from a fraction of a cell per position-sensitive bin. At stride 8
(:mod:`fcis.models.fcis.fine_features`) the maps have four times the cells. Measured from random
weights, 300 iterations of 2 images with ``fcis_resnet18`` (benchmarks/ABLATION.md):

- on sets of **small objects** the finer maps are what lets the small class be found at all:
  TreePheno's branch bases (median 30 px, 315 held out) went from mask AP 0.1 (AP50 0.6) to 1.8
  (AP50 9.1);
- on **large objects** they gain too, where the masks' detail is what AP75 asks for:
  PennFudanPed 32.0 -> 35.5, 33.7 -> 38.0 and 30.9 -> 35.0 at seeds 0, 1 and 2 (a mean of
  32.2 -> 36.2); balloon's 13 held-out photos move both ways (19.1 -> 17.0, 11.5 -> 12.2), within
  its spread across seeds.

So :func:`choose_head_stride` takes stride 8 from random weights whenever one image's stride-8 maps
fit :data:`MAP_BUDGET_BYTES`: their 2·k²·(C+1) + 4·k² channels on four times the cells are cheap
for a few classes (a training step costs about ×1.2, benchmarks/HEAD-STRIDE.md), 0.3 GB per
600 x 1000 image for COCO's 80 (whose 1×1 score-map conv then counts about 78 G multiply-adds per
image, twice a dilated ResNet-18's). With ImageNet weights (the paper's recipe, whose heads start
from stride-16 features), or when the user gives ``--set head_stride=…``, the stride stays as given
or as the paper's 16.

The choice and its reason are printed at the start of ``fcis train`` and by ``fcis inspect-data``,
and recorded in ``config.json`` (``head_stride``); the model's config keeps the value, so
evaluation, prediction, export and a resumed run use it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["HeadStrideChoice", "choose_head_stride", "score_map_bytes", "MAP_BUDGET_BYTES", "FINE_STRIDE"]

#: The finer stride the choice may take.
FINE_STRIDE = 8
#: At most this many bytes of float32 score maps (inside/outside, box, separate detection maps) for
#: one image at the largest input (min_size x max_size) at stride 8 (k = 7): up to 33 classes fit at
#: 600 x 1000, 18 at 1000 x 1000; COCO's 80 do not.
MAP_BUDGET_BYTES = 128 * 2 ** 20


def score_map_bytes(num_classes: int, group_size: int, min_size: int, max_size: int, stride: int,
                    separate: bool = False) -> int:
    """float32 bytes of one image's score maps at ``stride`` for an input of min_size x max_size:
    2·k²·(C+1) inside/outside, 4·k² box and (``separate``) k²·(C+1) detection channels."""
    k2, classes = group_size ** 2, num_classes + 1
    channels = 2 * k2 * classes + 4 * k2 + (k2 * classes if separate else 0)
    return 4 * channels * math.ceil(min_size / stride) * math.ceil(max_size / stride)


@dataclass
class HeadStrideChoice:
    """``stride`` of the score maps and why; ``source``: "data" (chosen here), "given", "model"
    (the model's default, the paper's 16); ``map_bytes``: one image's maps at that stride."""

    stride: int
    source: str
    reason: str
    map_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return f"head stride {self.stride} ({self._words()}): {self.reason}"

    def _words(self) -> str:
        return {"data": "chosen", "given": "given", "model": "the model's"}.get(self.source, self.source)


def choose_head_stride(config: Any, *, pretrained: bool, given: bool) -> HeadStrideChoice:
    """The head stride of a run of FCIS model ``config`` (its ``num_classes``, ``group_size``,
    ``min_size``, ``max_size``, ``score_maps``, ``head_stride``, ``dilate_conv5``): stride 8 from
    random weights when one image's stride-8 maps fit :data:`MAP_BUDGET_BYTES`; else the config's."""
    separate = getattr(config, "score_maps", "joint") == "separate"

    def size(stride: int) -> int:
        return score_map_bytes(config.num_classes, config.group_size, config.min_size, config.max_size, stride,
                               separate)

    def keep(source: str, reason: str) -> HeadStrideChoice:
        return HeadStrideChoice(config.head_stride, source, reason, size(config.head_stride))

    fine = size(FINE_STRIDE)
    if given:
        return keep("given", "--set head_stride given")
    if pretrained:
        return keep("model", "ImageNet weights or a trained model: the paper's head on conv5")
    if not config.dilate_conv5:
        return keep("model", "conv5 is not dilated (stride 8 needs it)")
    mib = f"{fine / 2 ** 20:.0f} MiB"
    budget = f"{MAP_BUDGET_BYTES // 2 ** 20} MiB"
    image = f"{config.min_size}x{config.max_size} image"
    if fine > MAP_BUDGET_BYTES:
        return keep("model", f"stride 8 would need {mib} of score maps per {image} ({config.num_classes} "
                    f"classes), over the {budget} budget: the paper's stride 16")
    return HeadStrideChoice(FINE_STRIDE, "data", f"random weights: finer score maps for small objects and mask "
                            f"detail; {mib} per {image}, within the {budget} budget", fine)
