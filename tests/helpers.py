"""Helpers shared by tests (not a test module)."""

import numpy as np
import torch


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's crowd format: counts as a list of run lengths, column-major, starting with zeros."""
    flat = mask.flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


def box_target(h: int, w: int, boxes: list, labels: list) -> dict:
    """A training target whose masks fill the (integer xyxy) boxes: boxes (G, 4), labels (G,),
    masks (G, H, W) uint8."""
    masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
    for m, (x1, y1, x2, y2) in zip(masks, boxes):
        m[y1:y2, x1:x2] = 1
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64), "masks": masks}


def assert_empty_image_trains(losses: dict, head: torch.nn.Module) -> None:
    """The losses of an image without objects: no mask, box or RPN box loss, a positive
    classification loss (background), and a backward pass that gives ``head`` finite gradients."""
    assert losses["loss_mask"].item() == 0.0 and losses["loss_box_reg"].item() == 0.0
    assert losses["loss_rpn_box_reg"].item() == 0.0
    assert losses["loss_classifier"].item() > 0
    sum(losses.values()).backward()
    grads = [p.grad for p in head.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def assert_onnx_candidates_match(session, model, image: torch.Tensor) -> None:
    """An exported FCIS graph (an onnxruntime ``session``) gives the eager ``model``'s candidates on
    ``image``: boxes, class probabilities and mask probabilities of ``score_candidates``."""
    from fcis.inference.onnx_runner import preprocess
    from fcis.models.fcis.fine_features import head_input

    with torch.no_grad():
        batch, _ = model.transform([image])
        c4, maps = head_input(model.backbone, model.fine, batch.tensors)
        proposals, _ = model.rpn(batch, {"0": c4})
        rois, probs, scores = model.score_candidates(model.head(maps), proposals, batch.image_sizes)
    boxes, class_probs, mask_probs = session.run(None, {"image": preprocess(image.numpy(), model.config.to_dict())})
    assert len(boxes) == len(rois) > 0
    np.testing.assert_allclose(boxes, rois[:, 1:].numpy(), atol=1e-3)
    np.testing.assert_allclose(class_probs, probs.numpy(), atol=1e-4)
    np.testing.assert_allclose(mask_probs, scores.mask_probs().numpy(), atol=1e-4)
