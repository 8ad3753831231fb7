"""ChainerCV's FCIS npz back to the official names and layouts (fcis/weights/chainercv_npz.py), and
the class-name tables (fcis/weights/class_names.py).

The forward direction is a transcription, written here from reading ChainerCV's
examples/fcis/mxnet2npz.py (``convert``), of what it does to each official array: the key it stores
the array under in FCISResNet101 and the channel permutation it applies. chainercv is not installed
(and not imported); the transcription keeps its logic branch by branch."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from fcis.weights.chainercv_npz import read_chainercv_fcis_npz
from fcis.weights.class_names import COCO_CATEGORY_IDS, COCO_CLASSES, VOC_CLASSES, class_names_of
from fcis.weights.errors import WeightsFileError

OFFICIAL_SYMBOL = Path("/work/ref/msracver+FCIS/fcis/symbols/resnet_v1_101_fcis.py")
CHAINERCV = Path("/work/ref/chainer+chainercv")

#: The official ResNet-101's blocks per stage and their names (res2/res5 a, b, c; res3/res4 a, b1..bN).
STAGES = {2: ["a", "b", "c"], 3: ["a"] + [f"b{i}" for i in range(1, 4)],
          4: ["a"] + [f"b{i}" for i in range(1, 23)], 5: ["a", "b", "c"]}


def official_names(num_anchors: int) -> dict[str, str]:
    """Official name -> "arg" / "aux" of the FCIS ResNet-101 (train symbol's parameters)."""
    names = {"conv1_weight": "arg"}
    bns = ["bn_conv1"]
    for stage, blocks in STAGES.items():
        for block in blocks:
            branches = (["branch1"] if block == "a" else []) + ["branch2a", "branch2b", "branch2c"]
            for branch in branches:
                names[f"res{stage}{block}_{branch}_weight"] = "arg"
                bns.append(f"bn{stage}{block}_{branch}")
    for bn in bns:
        names.update({f"{bn}_gamma": "arg", f"{bn}_beta": "arg", f"{bn}_moving_mean": "aux", f"{bn}_moving_var": "aux"})
    for conv in ("rpn_conv_3x3", "rpn_cls_score", "rpn_bbox_pred", "conv_new_1", "fcis_cls_seg", "fcis_bbox"):
        names[f"{conv}_weight"] = names[f"{conv}_bias"] = "arg"
    return names


def official_shapes(num_classes: int, num_anchors: int, small: bool = True) -> dict[str, tuple[int, ...]]:
    """Shapes of the official arrays; ``small`` shrinks the backbone's channels (no layout changes
    there) so the test stays fast. The RPN and head keep the official sizes."""
    shapes: dict[str, tuple[int, ...]] = {}
    width = 4 if small else 64
    shapes["conv1_weight"] = (width, 3, 7, 7)
    for name in official_names(num_anchors):
        if name.startswith(("res", "bn")) and name.endswith("_weight"):
            shapes[name] = (width, width, 1, 1)
        elif name.startswith("bn"):
            shapes[name] = (width,)
    k2 = 49
    shapes.update({
        "rpn_conv_3x3_weight": (512, width, 3, 3), "rpn_conv_3x3_bias": (512,),
        "rpn_cls_score_weight": (2 * num_anchors, 512, 1, 1), "rpn_cls_score_bias": (2 * num_anchors,),
        "rpn_bbox_pred_weight": (4 * num_anchors, 512, 1, 1), "rpn_bbox_pred_bias": (4 * num_anchors,),
        "conv_new_1_weight": (1024 if not small else 16, width, 1, 1), "conv_new_1_bias": (1024 if not small else 16,),
        "fcis_cls_seg_weight": (k2 * num_classes * 2, 16, 1, 1), "fcis_cls_seg_bias": (k2 * num_classes * 2,),
        "fcis_bbox_weight": (k2 * 4 * 2, 16, 1, 1), "fcis_bbox_bias": (k2 * 4 * 2,),
    })
    return shapes


def seeded_official(num_classes: int, num_anchors: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in official_shapes(num_classes, num_anchors).items()}


# --- mxnet2npz.py's convert(), transcribed --------------------------------------------------------

def _block(name: str) -> str:
    if name == "a":
        return "a"
    if name == "b":
        return "b1"
    if name.startswith("b"):
        return name
    if name == "c":
        return "b2"
    raise AssertionError(name)


_CONV_BN = {"branch1": "residual_conv", "branch2a": "conv1", "branch2b": "conv2", "branch2c": "conv3"}


def mxnet2npz(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``params``: "arg:NAME"/"aux:NAME" -> array (as mx.nd.load gives them); returns the npz
    dict ``chainer.serializers.save_npz(out, model)`` writes for those arrays (keys of the links
    the script writes into). The reshapes are the script's with its literal channel counts
    (512, 1024, 7*7) taken from the array's own shape."""
    out: dict[str, np.ndarray] = {}
    for key, value in params.items():
        param_type, param_name = key.split(":")
        if param_type == "arg":
            if param_name.endswith("_test"):
                continue
            elif param_name.startswith("rpn"):
                if param_name == "rpn_bbox_pred_bias":
                    out["rpn/loc/b"] = value.reshape((-1, 4))[:, [1, 0, 3, 2]].reshape(-1)
                elif param_name == "rpn_bbox_pred_weight":
                    c = value.shape[1:]
                    out["rpn/loc/W"] = value.reshape((-1, 4) + c)[:, [1, 0, 3, 2]].reshape((-1,) + c)
                elif param_name == "rpn_cls_score_bias":
                    out["rpn/score/b"] = value.reshape((2, -1)).transpose((1, 0)).reshape(-1)
                elif param_name == "rpn_cls_score_weight":
                    c = value.shape[1:]
                    out["rpn/score/W"] = value.reshape((2, -1) + c).transpose((1, 0, 2, 3, 4)).reshape((-1,) + c)
                elif param_name == "rpn_conv_3x3_bias":
                    out["rpn/conv1/b"] = value
                elif param_name == "rpn_conv_3x3_weight":
                    out["rpn/conv1/W"] = value
            elif param_name.startswith("conv1"):
                if param_name == "conv1_weight":
                    out["extractor/conv1/conv/W"] = value
            elif param_name.startswith("bn_conv1"):
                if param_name == "bn_conv1_beta":
                    out["extractor/conv1/bn/beta"] = value
                elif param_name == "bn_conv1_gamma":
                    out["extractor/conv1/bn/gamma"] = value
            elif param_name.startswith("fcis"):
                if param_name == "fcis_bbox_bias":
                    out["head/ag_loc/b"] = value.reshape((2, 4, 7 * 7))[:, [1, 0, 3, 2]].reshape(392)
                elif param_name == "fcis_bbox_weight":
                    c = value.shape[1:]
                    out["head/ag_loc/W"] = value.reshape((2, 4, 7 * 7) + c)[:, [1, 0, 3, 2]].reshape((392,) + c)
                elif param_name == "fcis_cls_seg_bias":
                    out["head/cls_seg/b"] = value
                elif param_name == "fcis_cls_seg_weight":
                    out["head/cls_seg/W"] = value
            elif param_name.startswith("conv_new_1"):
                out["head/conv1/" + ("b" if param_name == "conv_new_1_bias" else "W")] = value
            elif param_name.startswith("res"):
                block_name, branch_name, prm_name = param_name.split("_")
                assert prm_name == "weight"
                path = f"extractor/{block_name[:4]}/{_block(block_name[4:])}/{_CONV_BN[branch_name]}"
                out[path + "/conv/W"] = value
            elif param_name.startswith("bn"):
                block_name, branch_name, prm_name = param_name.split("_")
                path = f"extractor/res{block_name[2]}/{_block(block_name[3:])}/{_CONV_BN[branch_name]}"
                out[path + "/bn/" + prm_name] = value        # beta / gamma
        elif param_type == "aux":
            if param_name.startswith("bn_conv1"):
                out["extractor/conv1/bn/" + ("avg_mean" if param_name == "bn_conv1_moving_mean" else "avg_var")] = value
            elif param_name.startswith("bn"):
                block_name, branch_name, _, prm_name = param_name.split("_")
                path = f"extractor/res{block_name[2]}/{_block(block_name[3:])}/{_CONV_BN[branch_name]}"
                out[path + "/bn/" + ("avg_mean" if prm_name == "mean" else "avg_var")] = value
    # chainer's BatchNormalization also saves its persistent counter N
    for key in [k for k in out if k.endswith("/bn/avg_mean")]:
        out[key[: -len("avg_mean")] + "N"] = np.array(0)
    return out


def _prefixed(official: dict[str, np.ndarray], num_anchors: int) -> dict[str, np.ndarray]:
    kinds = official_names(num_anchors)
    return {f"{kinds[n]}:{n}": v for n, v in official.items()}


@pytest.mark.parametrize("num_classes,num_anchors", [(81, 12), (21, 9)])
def test_npz_of_mxnet2npz_reads_back_to_the_official_arrays(tmp_path, num_classes, num_anchors):
    official = seeded_official(num_classes, num_anchors)
    mx_params = _prefixed(official, num_anchors)
    mx_params["arg:fcis_bbox_weight_test"] = official["fcis_bbox_weight"] * 0.2   # skipped by the script
    npz = mxnet2npz(mx_params)
    assert len(npz) > 400 and "extractor/res4/b22/conv3/bn/avg_var" in npz and "extractor/res5/b2/conv1/conv/W" in npz
    path = tmp_path / "fcis_resnet101_coco_converted.npz"
    np.savez_compressed(path, **npz)      # what chainer.serializers.save_npz does with the dict
    back = read_chainercv_fcis_npz(path)
    assert set(back) == set(official)
    for name, value in official.items():
        assert back[name].dtype == value.dtype and back[name].shape == value.shape, name
        np.testing.assert_array_equal(back[name], value, err_msg=name)
    # the permutations are real: the npz differs from the official arrays where the script permutes
    assert not np.array_equal(npz["rpn/score/W"], official["rpn_cls_score_weight"])
    assert not np.array_equal(npz["head/ag_loc/b"], official["fcis_bbox_bias"])
    assert not np.array_equal(npz["rpn/loc/b"], official["rpn_bbox_pred_bias"])


def test_permutations_by_meaning(tmp_path):
    """Independent of the transcription: ChainerCV's RPN scores are (anchor, bg/fg) pairs and
    its deltas (dy, dx, dh, dw); the official ones all backgrounds first and (dx, dy, dw, dh)."""
    official = seeded_official(81, 12)
    npz = mxnet2npz(_prefixed(official, 12))
    a = 12
    for anchor in range(a):
        for s in range(2):    # chainercv channel 2a + s == official s·A + a
            assert npz["rpn/score/b"][2 * anchor + s] == official["rpn_cls_score_bias"][s * a + anchor]
        dy, dx, dh, dw = npz["rpn/loc/b"][4 * anchor:4 * anchor + 4]
        np.testing.assert_array_equal([dx, dy, dw, dh], official["rpn_bbox_pred_bias"][4 * anchor:4 * anchor + 4])
    loc = npz["head/ag_loc/b"].reshape(2, 4, 49)
    ref = official["fcis_bbox_bias"].reshape(2, 4, 49)
    np.testing.assert_array_equal(loc[:, 0], ref[:, 1])      # dy from the official's second coordinate
    np.testing.assert_array_equal(loc[:, 3], ref[:, 2])      # dw


def test_chainer_chain_prefix_and_bad_files(tmp_path):
    official = seeded_official(21, 9)
    npz = mxnet2npz(_prefixed(official, 9))
    np.savez(tmp_path / "wrapped.npz", **{f"fcis/{k}": v for k, v in npz.items()})
    back = read_chainercv_fcis_npz(tmp_path / "wrapped.npz")
    np.testing.assert_array_equal(back["rpn_cls_score_weight"], official["rpn_cls_score_weight"])

    np.savez(tmp_path / "extra.npz", **npz, **{"head/mystery/W": np.zeros(3)})
    with pytest.raises(WeightsFileError, match=r"'head/mystery/W' is not a parameter"):
        read_chainercv_fcis_npz(tmp_path / "extra.npz")
    np.savez(tmp_path / "other.npz", w=np.zeros(3))
    with pytest.raises(WeightsFileError, match="not a ChainerCV FCIS npz"):
        read_chainercv_fcis_npz(tmp_path / "other.npz")
    bad = dict(npz)
    bad["rpn/loc/b"] = np.zeros(7, np.float32)
    np.savez(tmp_path / "shape.npz", **bad)
    with pytest.raises(WeightsFileError, match="rpn_bbox_pred_bias"):
        read_chainercv_fcis_npz(tmp_path / "shape.npz")
    data = (tmp_path / "wrapped.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsFileError, match="cut.npz"):
        read_chainercv_fcis_npz(tmp_path / "cut.npz")
    with pytest.raises(WeightsFileError, match="not found"):
        read_chainercv_fcis_npz(tmp_path / "none.npz")


def _official_symbol_parameters(text: str) -> set[str]:
    """Parameter names of the Convolution and BatchNorm layers of the official symbol file."""
    names = set()
    for m in re.finditer(r"\b(Convolution|BatchNorm)\(", text):
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        call = text[m.end():i]
        name = re.search(r"name=['\"](\w+)['\"]", call)
        if name is None:
            continue
        if m.group(1) == "BatchNorm":
            names |= {f"{name.group(1)}_{s}" for s in ("gamma", "beta", "moving_mean", "moving_var")}
        else:
            names.add(f"{name.group(1)}_weight")
            if not re.search(r"no_bias\s*=\s*True", call):
                names.add(f"{name.group(1)}_bias")
    return names


@pytest.mark.skipif(not OFFICIAL_SYMBOL.exists(), reason="official FCIS checkout not present")
def test_official_name_list_matches_the_official_symbol():
    """The names the reader returns are the official symbol's (resnet_v1_101_fcis.py)."""
    expected = _official_symbol_parameters(OFFICIAL_SYMBOL.read_text())
    assert expected == set(official_names(12))


def test_coco_and_voc_class_tables():
    import torchvision

    assert len(COCO_CLASSES) == 80 == len(COCO_CATEGORY_IDS) == len(set(COCO_CLASSES))
    assert list(COCO_CATEGORY_IDS) == sorted(COCO_CATEGORY_IDS)       # the official order: by id
    assert COCO_CATEGORY_IDS[0] == 1 and COCO_CATEGORY_IDS[-1] == 90
    # torchvision's COCO category list is indexed by the original id ("N/A" in the gaps)
    categories = torchvision.models.detection.MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    assert [categories[i] for i in COCO_CATEGORY_IDS] == list(COCO_CLASSES)
    assert {c for i, c in enumerate(categories) if i not in COCO_CATEGORY_IDS} <= {"__background__", "N/A"}
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[-1] == "tvmonitor"
    assert class_names_of(" COCO ") == (COCO_CLASSES, COCO_CATEGORY_IDS)
    assert class_names_of("voc")[1] == tuple(range(1, 21))
    with pytest.raises(ValueError, match="coco or voc"):
        class_names_of("ade20k")


@pytest.mark.skipif(not CHAINERCV.exists(), reason="ChainerCV checkout not present")
def test_class_tables_match_chainercv_and_the_official_voc_list():
    coco_utils = (CHAINERCV / "chainercv/datasets/coco/coco_utils.py").read_text()
    block = coco_utils.split("coco_bbox_label_names = (", 1)[1].split(")", 1)[0]
    assert tuple(re.findall(r"'([^']+)'", block)) == COCO_CLASSES
    voc_utils = (CHAINERCV / "chainercv/datasets/voc/voc_utils.py").read_text()
    block = voc_utils.split("voc_bbox_label_names = (", 1)[1].split(")", 1)[0]
    assert tuple(re.findall(r"'([^']+)'", block)) == VOC_CLASSES
    official_voc = Path("/work/ref/msracver+FCIS/lib/dataset/pascal_voc.py")
    if official_voc.exists():
        block = official_voc.read_text().split("self.classes = [", 1)[1].split("]", 1)[0]
        assert tuple(re.findall(r"'([^']+)'", block))[1:] == VOC_CLASSES
