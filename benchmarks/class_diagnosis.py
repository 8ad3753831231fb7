"""Where FCIS's classification loss comes from, on a trained checkpoint (issue 11, item 3).

    python -m benchmarks.class_diagnosis CKPT VAL_JSON [--images 25]

Runs the training-time RoI path (RPN proposals at the training counts + the GT boxes, labelled
at ``roi_fg_iou``) on validation images without gradients and prints, averaged over images:
the class loss over all RoIs, over the 128 that OHEM would select, over foreground and
background RoIs; the foreground share of all RoIs and of OHEM's pick; how foreground RoIs are
classified (correct / as background / as another class) and the mean probability of the true
class. Backbone BatchNorm in eval mode (running statistics), as at test time.
"""

from __future__ import annotations

import argparse
import json

import torch

from fcis.data import CocoInstances, build_transforms
from fcis.engine import load_model
from fcis.models.fcis.fine_features import head_input
from fcis.models.fcis.losses import per_roi_losses, select_hard
from fcis.models.fcis.targets import assign_targets, mask_targets


def diagnose(ckpt: str, val_json: str, images: int) -> dict[str, float]:
    model, _ = load_model(ckpt, torch.device("cpu"))
    model.eval()
    model.rpn.train()   # training proposal counts (and its sampling needs the targets)
    cfg = model.config
    ds = CocoInstances(val_json, transforms=build_transforms(False))
    rows: list[dict[str, float]] = []
    with torch.no_grad():
        for i in range(min(images, len(ds))):
            img, tgt = ds[i]
            if len(tgt["labels"]) == 0:
                continue
            batch, targets = model.transform([img], [tgt])
            c4, c5 = head_input(model.backbone, model.fine, batch.tensors)
            proposals, _ = model.rpn(batch, {"0": c4}, targets)
            maps = model.head(c5)
            t = assign_targets(proposals, targets, model.box_coder, cfg.roi_fg_iou, cfg.add_gt_to_proposals)
            masks = mask_targets(t, targets, cfg.mask_size, cfg.mask_target_threshold)
            sc = model.head.score_rois(maps, t.rois)
            cls, mask, box = per_roi_losses(sc, t.labels, t.box_targets, masks, cfg.smooth_l1_beta)
            total = cfg.cls_loss_weight * cls + cfg.mask_loss_weight * mask + cfg.box_loss_weight * box
            pick = select_hard(total, t.rois[:, 0], cfg.ohem_rois)
            fg, pred, prob = t.labels > 0, sc.class_logits.argmax(1), sc.class_logits.softmax(1)
            rows.append({
                "cls_all": cls.mean(), "cls_ohem": cls[pick].mean(), "cls_fg": cls[fg].mean(), "cls_bg": cls[~fg].mean(),
                "mask_fg": mask[fg].mean(), "fg_share_all": fg.float().mean(), "fg_share_ohem": fg[pick].float().mean(),
                "fg_correct": (pred[fg] == t.labels[fg]).float().mean(), "fg_as_bg": (pred[fg] == 0).float().mean(),
                "fg_other_class": ((pred[fg] != t.labels[fg]) & (pred[fg] > 0)).float().mean(),
                "bg_correct": (pred[~fg] == 0).float().mean(), "p_true_class_fg": prob[fg, t.labels[fg]].mean(),
            })
    out = {k: round(float(sum(float(r[k]) for r in rows) / max(len(rows), 1)), 4) for k in (rows[0] if rows else {})}
    out["images"] = len(rows)
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ckpt")
    p.add_argument("val_json")
    p.add_argument("--images", type=int, default=25)
    a = p.parse_args()
    print(json.dumps(diagnose(a.ckpt, a.val_json, a.images)))
