"""Export FCIS inference to ONNX (standard ``ai.onnx`` operators only) for onnxruntime.

Where the graph is cut
----------------------
The exported graph holds everything with fixed semantics and heavy arithmetic:

    input ``image`` float32 (1, 3, h, w): the image already normalised ((x - mean) / std) and
    resized as GeneralizedRCNNTransform does (short side ``min_size``, long side at most
    ``max_size``), NOT padded;
    -> zero padding to a multiple of 32 (GeneralizedRCNNTransform.batch_images) -> backbone -> RPN (anchors, box decoding, top
    ``rpn_pre_nms_top_n_test``, clipping, small-box removal, NMS, top ``rpn_post_nms_top_n_test``)
    -> position-sensitive score maps -> assembling of every proposal and (``two_pass``) of the
    boxes it regresses to;
    outputs ``boxes`` float32 (M, 4) xyxy candidate boxes in the resized image's pixels,
    ``class_probs`` float32 (M, C+1) softmax class probabilities (column 0 background) and
    ``mask_probs`` float32 (M, C+1, P, P) per-class inside probabilities over each box.

The data-dependent end of FCIS inference (per-class NMS, top-k, mask voting, pasting into the
image, tight boxes of the voted masks) and the resizing run in NumPy, outside the graph:
:class:`fcis.inference.OnnxPredictor`. They are loops over a variable number of detections with
image-sized outputs, which ONNX expresses poorly and onnxruntime runs no faster than NumPy.

Image size: the graph is exported with a DYNAMIC height and width (any size works with one
file; the runner feeds whatever size the resizing rule gives). The batch is fixed to one image.
Export-friendly re-statements (same results as the eager model, checked by tests/test_onnx.py):
the RPN's filtering is written out for one image (small boxes are dropped after NMS instead of
before, with a score that sorts them last, which keeps the same boxes in the same order), and
``ps_roi_assemble`` takes its single-bucket path (one image, fixed ``sampling_ratio``).

Metadata (``metadata_props``, all JSON strings) make the file self-contained for the runner:
``fcis_format`` ("fcis-onnx"), ``fcis_format_version``, ``fcis_version``, ``model_name``,
``model_config`` (the full FCISConfig: min/max size, mean/std, mask_threshold and the
post-processing fields score_thresh, nms_iou, detections_per_img, mask_voting, voting_iou),
``class_names``, ``label_to_cat_id`` (keys are strings), ``size_divisible`` (the graph pads to
it), ``rpn_stride`` and ``feature_stride`` (of conv4 and conv5, measured on the backbone), ``dynamic_size``,
``inputs`` and ``outputs`` (descriptions).

The exporter is torch.onnx's dynamo-based exporter (``torch.onnx.export(..., dynamo=True)``),
which needs the ``onnxscript`` package (``pip install "fcis[onnx]"``).
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import nms

from ..models.fcis import FCIS
from ..models.fcis.fine_features import head_input
from ..models.fcis.head import RoIScores

__all__ = ["FCISOnnxGraph", "export_onnx", "export_checkpoint", "onnx_op_domains", "FORMAT",
           "SIZE_DIVISIBLE", "ExportError"]

FORMAT = "fcis-onnx"
FORMAT_VERSION = 1
SIZE_DIVISIBLE = 32
DEFAULT_OPSET = 18
OUTPUTS = ("boxes", "class_probs", "mask_probs")


class ExportError(ValueError):
    """The model cannot be exported (not an FCIS model, exporter missing, ...)."""


class FCISOnnxGraph(nn.Module):
    """The exported part of :class:`fcis.models.FCIS` inference (see the module docstring).

    ``forward(image (1, 3, h, w) normalised and resized)`` -> ``(boxes (M, 4), class_probs
    (M, C+1), mask_probs (M, C+1, P, P))``; candidates in the order of
    :meth:`FCIS.score_candidates` (the proposals, then their refined boxes with ``two_pass``),
    boxes in the resized image's pixels.
    """

    cell_anchors: Tensor  # a buffer, registered in __init__

    def __init__(self, model: FCIS) -> None:
        super().__init__()
        if not isinstance(model, FCIS):
            raise ExportError(f"only FCIS models export to ONNX, got {type(model).__name__}")
        cfg = model.config
        self.config = cfg
        self.backbone = model.backbone
        self.fine = model.fine
        self.head = model.head
        self.rpn_head = model.rpn.head
        self.rpn_box_coder = model.rpn.box_coder
        self.box_coder = model.box_coder
        self.rpn_min_size = float(model.rpn.min_size)
        self.rpn_nms_iou = float(model.rpn.nms_thresh)
        self.rpn_score_thresh = float(model.rpn.score_thresh)
        self.pre_nms_top_n = int(cfg.rpn_pre_nms_top_n_test)
        self.post_nms_top_n = int(cfg.rpn_post_nms_top_n_test)
        (cell,) = model.rpn.anchor_generator.cell_anchors
        self.register_buffer("cell_anchors", cell.detach().clone().float(), persistent=False)
        # The strides of conv4 (the RPN's map; torchvision's AnchorGenerator derives it from the
        # sizes) and conv5 (the score maps), measured on the backbone: stored in the metadata.
        self.rpn_stride, self.feature_stride = feature_strides(model.backbone, model.fine)
        self.size_divisible = int(model.transform.size_divisible)   # the batch padding of the eager model
        if self.feature_stride != model.feature_stride:
            raise ExportError(f"the head's input is at stride {self.feature_stride}, but the head assembles "
                              f"at stride {model.feature_stride}")

    def anchors(self, fh: int, fw: int) -> Tensor:
        """torchvision AnchorGenerator's anchors for a (fh, fw) map: (fh·fw·A, 4), location-major."""
        dev = self.cell_anchors.device
        sx = torch.arange(fw, dtype=torch.int32, device=dev) * self.rpn_stride
        sy = torch.arange(fh, dtype=torch.int32, device=dev) * self.rpn_stride
        shift_y, shift_x = torch.meshgrid(sy, sx, indexing="ij")
        shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
        return (shifts.view(-1, 1, 4) + self.cell_anchors.view(1, -1, 4)).reshape(-1, 4)

    @staticmethod
    def clip(boxes: Tensor, h: int, w: int) -> Tensor:
        x = boxes[:, 0::2].clamp(min=0.0, max=w * 1.0)
        y = boxes[:, 1::2].clamp(min=0.0, max=h * 1.0)
        return torch.stack((x[:, 0], y[:, 0], x[:, 1], y[:, 1]), dim=1)

    def proposals(self, c4: Tensor, h: int, w: int) -> Tensor:
        """torchvision RegionProposalNetwork.filter_proposals for one image, export-friendly:
        small boxes get score -1 (sorted last, so they suppress nothing that is kept) and are
        dropped after NMS instead of before it; the kept boxes and their order are the same."""
        (logits,), (deltas,) = self.rpn_head([c4])
        _, a, fh, fw = logits.shape
        objectness = logits[0].permute(1, 2, 0).reshape(-1)                    # (fh·fw·A,)
        deltas = deltas[0].view(a, 4, fh, fw).permute(2, 3, 0, 1).reshape(-1, 4)
        boxes = self.rpn_box_coder.decode_single(deltas.detach(), self.anchors(fh, fw))
        k = min(self.pre_nms_top_n, fh * fw * a)
        top, idx = objectness.detach().topk(k)
        boxes = self.clip(boxes[idx], h, w)
        scores = torch.sigmoid(top)
        ws, hs = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        valid = (ws >= self.rpn_min_size) & (hs >= self.rpn_min_size) & (scores >= self.rpn_score_thresh)
        keep = nms(boxes, torch.where(valid, scores, torch.full_like(scores, -1.0)), self.rpn_nms_iou)
        keep = keep[: self.post_nms_top_n]
        keep = keep[valid[keep]]
        return boxes[keep]

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h, w = image.shape[-2:]
        padded = F.pad(image, (0, (-w) % self.size_divisible, 0, (-h) % self.size_divisible))
        c4, c5 = head_input(self.backbone, self.fine, padded)
        proposals = self.proposals(c4, h, w)
        maps = self.head(c5)
        rois = torch.cat([torch.zeros_like(proposals[:, :1]), proposals], dim=1)
        first = self.head.score_rois(maps, rois)
        if self.config.two_pass:
            refined = self.clip(self.box_coder.decode_single(first.box_deltas, proposals), h, w)
            rois2 = torch.cat([rois[:, :1], refined], dim=1)
            second = self.head.score_rois(maps, rois2)
            scores = RoIScores.cat([first, second])
            boxes = torch.cat([proposals, refined])
        else:
            scores, boxes = first, proposals
        return boxes, scores.class_logits.softmax(-1), scores.mask_probs()


def feature_strides(backbone: nn.Module, fine: nn.Module | None = None) -> tuple[int, int]:
    """(conv4 stride, the head input's stride) of a :class:`fcis.models.backbone.ResNetC4C5` (conv5,
    or with ``fine`` the stride-8 merge of :mod:`fcis.models.fcis.fine_features`), measured: the
    input size over the map sizes of one zero image (in eval mode, without gradients)."""
    size = 2 * SIZE_DIVISIBLE
    was_training = backbone.training
    param = next(backbone.parameters())
    try:
        with torch.no_grad():
            c4, c5 = head_input(backbone.eval(), fine,  # type: ignore[arg-type]
                                torch.zeros(1, 3, size, size, dtype=param.dtype, device=param.device))
    finally:
        backbone.train(was_training)
    return size // c4.shape[-1], size // c5.shape[-1]


def preprocess_torch(image: Tensor, cfg) -> Tensor:
    """(3, H, W) float [0, 1] -> (1, 3, h, w): GeneralizedRCNNTransform's normalise and resize."""
    from fcis.models.rcnn_transform import RCNNTransform

    t = RCNNTransform(cfg.min_size, cfg.max_size, list(cfg.image_mean), list(cfg.image_std))
    t.eval()
    x, _ = t.resize(t.normalize(image), None)
    return x[None]


def onnx_op_domains(model: Any) -> dict[str, set[str]]:
    """``{domain: {op types}}`` of an ONNX model (path or ModelProto), subgraphs and functions
    included; the standard domain is ``"ai.onnx"`` (stored as "")."""
    import onnx

    proto = onnx.load(os.fspath(model), load_external_data=False) if isinstance(model, (str, os.PathLike)) else model
    found: dict[str, set[str]] = {}

    def visit(graph) -> None:
        for node in graph.node:
            found.setdefault(node.domain or "ai.onnx", set()).add(node.op_type)
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    visit(attr.g)
                for g in attr.graphs:
                    visit(g)

    visit(proto.graph)
    for fn in proto.functions:
        for node in fn.node:
            found.setdefault(node.domain or "ai.onnx", set()).add(node.op_type)
    return found


def export_onnx(model: nn.Module, path: str | os.PathLike, *, class_names: list[str] | None = None,
                label_to_cat_id: dict[int, int] | None = None, model_name: str | None = None,
                example_size: tuple[int, int] | None = None, opset: int = DEFAULT_OPSET,
                verbose: bool = False) -> Path:
    """Export an FCIS model's inference to ``path`` (one self-contained ``.onnx`` file).

    Args:
        model: an :class:`fcis.models.FCIS` (other models raise :class:`ExportError`).
        class_names, label_to_cat_id: stored in the metadata for ``fcis predict --onnx``
            (defaults: "1".."C" and the identity).
        example_size: (h, w) of the example input traced (default: the model's min/max size
            box); the exported graph accepts any size.
        opset: ONNX opset (default 18).

    Raises ExportError when the model is not FCIS, onnxscript is missing, or the graph would
    hold operators outside the standard ``ai.onnx`` domain.
    """
    if not isinstance(model, FCIS):
        raise ExportError(f"only FCIS models export to ONNX (got {type(model).__name__})")
    official = getattr(model.config, "variant", "torchvision") == "official"
    if model.config.assemble_mode != "bilinear" and not official:  # the average pooling's export is not tested
        raise ExportError(f"ONNX export supports assemble_mode='bilinear' only, the model has "
                          f"{model.config.assemble_mode!r}")
    try:
        import onnx
        import onnxscript  # noqa: F401 - needed by torch.onnx's dynamo exporter
    except ImportError as e:
        raise ExportError(f"ONNX export needs the onnx and onnxscript packages "
                          f"(pip install 'fcis[onnx]'): {e}") from None
    cfg = model.config
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph: nn.Module
    if official:   # the official test arithmetic (fcis/export/official_onnx.py)
        from .official_onnx import OfficialOnnxGraph

        graph = OfficialOnnxGraph(copy.deepcopy(model)).eval().cpu()  # type: ignore[arg-type]
    else:
        graph = FCISOnnxGraph(copy.deepcopy(model)).eval().cpu()      # the caller's model is left as it is
    if example_size is None:
        example_size = (cfg.min_size, min(cfg.max_size, cfg.min_size * 4 // 3))
    example = torch.randn(1, 3, *example_size) * (60.0 if official else 1.0)   # the official input is on 0-255
    dims = {2: torch.export.Dim("height", min=SIZE_DIVISIBLE, max=8192),
            3: torch.export.Dim("width", min=SIZE_DIVISIBLE, max=8192)}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            if not verbose:
                warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, (example,), dynamo=True, opset_version=opset,
                                        input_names=["image"], output_names=list(OUTPUTS),
                                        dynamic_shapes=({2: dims[2], 3: dims[3]},), external_data=False,
                                        optimize=True, verbose=verbose)
    except Exception as e:  # noqa: BLE001 - the exporter raises many types; keep the cause chained
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ExportError(f"torch.onnx.export failed: {reason}") from e
    assert program is not None  # dynamo=True returns the program
    proto = program.model_proto
    custom = {d: ops for d, ops in onnx_op_domains(proto).items() if d != "ai.onnx"}
    if custom:
        raise ExportError(f"the exported graph holds non-standard operators: {custom}")
    n = cfg.num_classes
    names = list(class_names) if class_names else [str(i + 1) for i in range(n)]
    if len(names) != n:
        raise ExportError(f"{len(names)} class names for a model of {n} classes")
    cat_ids = {int(k): int(v) for k, v in (label_to_cat_id or {i + 1: i + 1 for i in range(n)}).items()}
    try:
        from importlib.metadata import version

        fcis_version = version("fcis")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        fcis_version = "unknown"
    meta = {
        "fcis_format": FORMAT,
        "fcis_format_version": FORMAT_VERSION,
        "fcis_version": fcis_version,
        "model_name": model_name or f"fcis_resnet{cfg.depth}",
        "model_config": cfg.to_dict(),
        "class_names": names,
        "label_to_cat_id": {str(k): v for k, v in cat_ids.items()},
        "size_divisible": graph.size_divisible,
        "rpn_stride": graph.rpn_stride,
        "feature_stride": graph.feature_stride,
        "dynamic_size": True,
        "inputs": {"image": "float32 (1, 3, h, w): normalised ((x - mean) / std), resized (short side "
                            "min_size, long side <= max_size, bilinear), not padded"},
        "outputs": {"boxes": "float32 (M, 4) xyxy candidate boxes in the resized image's pixels",
                    "class_probs": "float32 (M, C+1) softmax class probabilities, column 0 background",
                    "mask_probs": "float32 (M, C+1, P, P) per-class inside probabilities over each box"},
    }
    if official:
        meta.update(graph.metadata())  # type: ignore[operator]
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    proto.doc_string = "FCIS instance segmentation: candidate boxes, class and mask probabilities"
    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(proto, os.fspath(tmp))
    os.replace(tmp, path)
    return path


def export_checkpoint(weights: str | os.PathLike, output: str | os.PathLike, **kwargs: Any) -> Path:
    """:func:`export_onnx` of a checkpoint written by ``fcis train`` (class names and category
    ids from its dataset entry)."""
    from ..engine.checkpoint import load_model

    model, meta = load_model(weights, "cpu")
    if not isinstance(model, FCIS):
        raise ExportError(f"{weights}: holds a {meta.get('model_name')!r} model; only FCIS models export "
                          "to ONNX")
    return export_onnx(model, output, class_names=meta["class_names"] or None,
                       label_to_cat_id=meta["label_to_cat_id"] or None, model_name=meta.get("model_name"),
                       **kwargs)
