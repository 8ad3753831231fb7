"""The exported graph of an official-variant FCIS (``FCISConfig(variant="official")``).

``image`` float32 (1, 3, h, w): the official input (``fcis.inference.official_ops.official_input``:
resized by the official rule and OpenCV's bilinear 8-bit resize, RGB minus the pixel means, no
std), not padded
-> backbone (Caffe-style ResNet v1) -> RPN (2-way softmax) and the proposal op -> score maps ->
the box maps pooled for the 300 proposals -> BoxParser -> both passes' 600 RoIs pooled (PS-RoI
average pooling, float32 bin geometry) -> outputs:

``boxes`` float32 (M, 4): both passes' RoIs, inclusive pixels of the network input (the official
``rois``); ``class_probs`` float32 (M, C+1); ``mask_probs`` float32 (M, P, P): each RoI's top
foreground class's mask (the official ``seg_pred[:, 1]``). The official post-processing (drop of
small boxes, scaling back, per-class NMS, ``cpu_mask_voting``, mask pasting) runs in NumPy in
:class:`fcis.inference.OnnxPredictor` (:func:`fcis.inference.official_ops.official_detections`),
the same code the PyTorch model runs.

Export re-statements (tests/test_official_variant.py compares with the eager model): the proposal
op in PyTorch (:meth:`fcis.models.fcis.official_rpn.OfficialRPN.export_proposals`: NMS by
``torchvision.ops.nms`` on boxes widened by one pixel, ``topk``'s order among equal scores) and
the BoxParser in PyTorch (``exp`` in float32 as NumPy's; PyTorch's and NumPy's float32 ``exp`` may
differ in the last bit); the eager model runs both in NumPy.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.fcis.official import OfficialFCIS
from ..ops.ps_roi_pool_avg import summed_area_table

__all__ = ["OfficialOnnxGraph"]


class OfficialOnnxGraph(nn.Module):
    """``forward(image (1, 3, h, w))`` -> ``(boxes (M, 4), class_probs (M, C+1), mask_probs (M, P,
    P))`` of an :class:`OfficialFCIS` (module docstring). M = 2 × ``rpn_post_nms_top_n_test``, or 0
    when no proposal survives."""

    #: no padding (the official input is one image at its size); conv4 and conv5 at stride 16
    size_divisible = 1
    rpn_stride = 16
    feature_stride = 16

    def __init__(self, model: OfficialFCIS) -> None:
        super().__init__()
        if model.feature_stride != 16:
            raise ValueError(f"the official variant runs at feature stride 16, the model at {model.feature_stride}")
        self.model = model
        # the RoIs are pooled in a fixed number of chunks (M <= 2 × post_nms_top_n)
        self.chunks = max(1, -(-2 * int(model.config.rpn_post_nms_top_n_test) // _EXPORT_CHUNK))

    @staticmethod
    def metadata() -> dict:
        """The file's ``inputs``/``outputs`` descriptions (the ONNX metadata; OnnxPredictor reads
        ``model_config['variant']``)."""
        return {
            "inputs": {"image": "float32 (1, 3, h, w): the official input (lib/utils/image.py resize with OpenCV's "
                                "8-bit bilinear, RGB minus image_mean on 0-255, no std), not padded"},
            "outputs": {"boxes": "float32 (M, 4) both passes' RoIs, inclusive pixels of the network input",
                        "class_probs": "float32 (M, C+1) softmax class probabilities, column 0 background",
                        "mask_probs": "float32 (M, P, P) foreground probability of each RoI's top class"},
        }

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        m = self.model
        h, w = image.shape[-2:]
        c4, c5 = m.backbone(image)
        rois = m.rpn(c4, (h, w), exportable=True)
        maps = m.head(c5)
        refined = m.box_parser(rois, m.box_deltas(maps, rois), (h, w), exportable=True)
        both = torch.cat([rois, refined])
        table = summed_area_table(maps.inside_outside.float(), m.config.group_size)
        probs, masks = [], []
        for i in range(self.chunks):
            p, k = m.score(maps, both[i * _EXPORT_CHUNK:(i + 1) * _EXPORT_CHUNK], chunk=None, table=table)
            probs.append(p)
            masks.append(k)
        return both, torch.cat(probs), torch.cat(masks)


#: RoIs per pooled chunk in the exported graph.
_EXPORT_CHUNK = 100
