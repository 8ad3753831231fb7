"""Deployment without PyTorch: the modules of ``fcis predict --onnx`` import with torch blocked,
the other commands say that they need it, and the torch-free overlay drawing gives torchvision's
pixels. (tests/test_onnx.py runs ``python -m fcis predict --onnx`` itself with torch blocked.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from fcis.visualize import draw_predictions, instance_colors

REPO = Path(__file__).resolve().parents[1]


def run_without_torch(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -c code`` with torch, torchvision and onnxscript unimportable (tests/no_torch)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "no_torch"), str(REPO)])}
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_onnx_path_imports_without_torch(tmp_path):
    code = ("import sys\n"
            "try:\n    import torch\nexcept ImportError:\n    pass\nelse:\n    sys.exit('torch was not blocked')\n"
            "import fcis.cli.main, fcis.inference, fcis.inference.numpy_ops, fcis.visualize, fcis.evaluation\n"
            "import fcis.json_io, fcis.runtime\n"
            "from fcis.inference import OnnxPredictor\n"
            "from fcis.evaluation import predictions_to_coco_results\n"
            "import numpy as np\n"
            "out = {'boxes': np.array([[1., 2., 5., 6.]]), 'labels': np.array([1]), 'scores': np.array([.9]),\n"
            "       'masks': np.ones((1, 8, 8), dtype=bool)}\n"
            "(entry,) = predictions_to_coco_results([out], [3], {1: 7})\n"
            "assert entry['category_id'] == 7 and entry['segmentation']['size'] == [8, 8], entry\n"
            "fcis.json_io.write_json('r.json', [entry])\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))\n")
    run = run_without_torch(code, tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
    assert (tmp_path / "r.json").is_file()


def test_commands_that_need_torch_say_so(tmp_path):
    run = run_without_torch("import sys\nfrom fcis.cli.main import main\n"
                            "sys.exit(main(['train', '--model', 'fcis_resnet18', '--train', 'x.json', "
                            "'--output', 'out']))", tmp_path)
    assert run.returncode == 2, run.stderr
    assert "fcis train needs the torch package" in run.stderr and "Traceback" not in run.stderr


def _reference_drawing(image: np.ndarray, pred: dict, names: list[str]) -> np.ndarray:
    """What fcis drew with torchvision's drawing functions (before it drew without torch)."""
    canvas = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    colors = instance_colors(len(pred["boxes"]))
    canvas = draw_segmentation_masks(canvas, pred["masks"], alpha=0.5, colors=colors)
    boxes = pred["boxes"].clone()
    h, w = image.shape[:2]
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h - 1)
    texts = [f"{names[int(l) - 1]} {s:.2f}" for l, s in zip(pred["labels"].tolist(), pred["scores"].tolist())]
    canvas = draw_bounding_boxes(canvas, boxes, labels=texts, colors=colors, width=2, fill_labels=True,
                                 label_colors="white")
    return canvas.permute(1, 2, 0).numpy()


def test_overlay_pixels_equal_torchvisions_drawing():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (70, 110, 3), dtype=np.uint8)
    masks = torch.zeros(3, 70, 110, dtype=torch.bool)
    masks[0, 5:30, 5:40] = True
    masks[1, 20:60, 30:90] = True                                       # overlaps mask 0
    masks[2, 50:70, 95:110] = True                                      # at the image's corner
    pred = {"boxes": torch.tensor([[5.0, 5, 40, 30], [30, 20, 90, 60], [95.5, 50.2, 112, 75]]),
            "labels": torch.tensor([1, 2, 1]), "scores": torch.tensor([0.93, 0.5, 0.31]), "masks": masks}
    names = ["circle", "square"]
    ref = _reference_drawing(image, pred, names)
    ours = np.asarray(draw_predictions(image, pred, class_names=names))
    np.testing.assert_array_equal(ours, ref)
    as_numpy = {k: v.numpy() for k, v in pred.items()}                 # the ONNX runner's arrays
    np.testing.assert_array_equal(np.asarray(draw_predictions(image, as_numpy, class_names=names)), ref)
    probabilities = {**pred, "masks": masks.float()[:, None] * 0.7}     # (N, 1, H, W) probabilities
    np.testing.assert_array_equal(np.asarray(draw_predictions(image, probabilities, class_names=names)), ref)
