"""The ``fcis`` command: train, inspect-data, evaluate, predict, export, convert, make-shapes, demo, serve.

Bad input (a malformed dataset, a missing checkpoint, an unreadable image, ...) prints one line
``fcis: error: <message>`` to stderr and exits with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import ast
import glob
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from ..json_io import write_json

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class UsageError(ValueError):
    """A problem with the command line that argparse cannot see."""


# --- train ---------------------------------------------------------------------------------------

def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are Python literals when they parse as one, else strings."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.strip()] = value
    return out


def _weights_arg(value: str | None):
    """A torchvision weights enum name (``ResNet50_Weights.IMAGENET1K_V1``) or a file path."""
    if value is None:
        return None
    if os.path.exists(value):
        return value
    import torchvision

    try:
        return torchvision.models.get_weight(value)
    except (ValueError, KeyError, AttributeError) as e:
        raise UsageError(f"--weights-backbone {value!r} is neither an existing file nor a torchvision "
                         f"weights name such as ResNet50_Weights.IMAGENET1K_V1 ({e})") from None


def cmd_train(args: argparse.Namespace) -> int:
    from fcis.engine import TrainConfig, train
    from fcis.evaluation import format_metrics_table

    from .config_flags import given_fields

    given = given_fields(args, TrainConfig)  # the flags given; on --resume the rest comes from last.pt
    cfg = TrainConfig(**given)
    summary = train(args.model, args.train, args.val, args.output, cfg, model_overrides=_parse_set(args.set),
                    resume=args.resume, image_root=args.image_root,
                    weights_backbone=_weights_arg(args.weights_backbone), overwrite=args.overwrite,
                    progress=not args.no_progress, explicit=list(given))
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 reports
        return 0
    if summary["metrics"]:
        print(format_metrics_table(summary["metrics"]))
    loss = summary["losses"].get("loss")
    print(f"trained to iteration {summary['iterations']} in {summary['time_s']:.0f} s"
          + (f" (final loss {loss:.4f})" if loss is not None else ""))
    print(f"checkpoint: {summary['last_checkpoint']}")
    if summary["best_checkpoint"]:
        print(f"best:       {summary['best_checkpoint']} (segm AP {100 * summary['best_metric']:.1f} "
              f"at iteration {summary['best_iteration']})")
    if summary.get("curves"):
        print(f"curves:     {summary['curves']}")
    if summary.get("tensorboard"):  # without the package, the line at the start said how to get it
        print(f"tensorboard: tensorboard --logdir {summary['output_dir']}")
    return 0


def cmd_inspect_data(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from fcis.data import CocoInstances
    from fcis.engine import TrainConfig
    from fcis.engine.anchor_fit import box_table, fit_for_model
    from fcis.engine.inspect_data import draw_report, inspect_dataset
    from fcis.engine.run_plan import plan_head_stride, plan_input_size
    from fcis.models import BUILDERS

    if args.model not in BUILDERS:
        raise UsageError(f"unknown model {args.model!r}; choose one of {', '.join(sorted(BUILDERS))}")
    data = CocoInstances(args.data, args.image_root)
    num_classes = max(1, data.num_classes)
    sizes = {k: v for k, v in (("min_size", args.min_size), ("max_size", args.max_size)) if v is not None}
    table = box_table(data)
    # the input size as `fcis train` would choose it (given sizes win)
    size = plan_input_size(BUILDERS[args.model], num_classes, False, sizes, {},
                           TrainConfig(input_size=args.input_size), table)
    if size is not None:
        sizes = {"min_size": size.min_size, "max_size": size.max_size}
        print(size.describe())
    with torch.device("meta"):
        mcfg: Any = BUILDERS[args.model](num_classes=num_classes, **sizes).config
    stride = plan_head_stride(mcfg, {f.name for f in dataclasses.fields(mcfg)}, False, {}, TrainConfig())
    if stride is not None:   # FCIS's score-map stride as a run from random weights would choose it
        print(stride.describe())
    fit = fit_for_model(args.model, mcfg, data, given={}, table=table, paper=args.anchors == "paper",
                        balanced=args.anchors != "fit-boxes")
    # the summary with the anchors `fcis train` would use (the model's own with --anchors paper)
    report = inspect_dataset(data, dataclasses.replace(mcfg, **fit.fields) if fit is not None else mcfg,
                             check_images=True)
    print(report.describe())
    if fit is not None:
        print(fit.describe())
    png = Path(args.output) if args.output else Path(args.data).with_name(Path(args.data).stem + "_inspect.png")
    defaults = tuple(getattr(mcfg, "anchor_sizes", getattr(mcfg, "window_sizes", ())))
    draw_report(report, png, default_anchors=defaults if fit is not None and fit.source != "paper" else ())
    print(f"picture: {png}")
    return 0


# --- evaluate ------------------------------------------------------------------------------------

def cmd_evaluate(args: argparse.Namespace) -> int:
    from fcis.evaluation import evaluate_results, format_metrics_table, load_results, write_metrics

    out = Path(args.output)
    if args.predictions:
        path = Path(args.predictions)
        if not path.is_file():
            raise UsageError(f"{path}: predictions file not found")
        from fcis.data import CocoInstances

        gt = CocoInstances(args.data, args.image_root)
        metrics = evaluate_results(gt.coco, load_results(path), proposal_recall=args.proposal_recall,
                                   max_dets=args.max_detections)
    else:
        from fcis.data import CocoInstances
        from fcis.engine import load_model
        from fcis.engine.evaluator import predict_dataset_with_skips
        from fcis.runtime.device import resolve_device

        device = resolve_device(args.device)
        model, meta = load_model(args.weights, device)
        _override_config(model, _parse_set(args.set))
        data = CocoInstances(args.data, args.image_root, on_bad_sample=args.on_bad_sample)
        agnostic: bool = model.config.class_agnostic  # type: ignore[union-attr, assignment]  # proposals: one class
        if meta["class_names"] and not agnostic and meta["class_names"] != data.class_names:
            raise UsageError(f"{args.data}: categories {data.class_names} differ from those the checkpoint "
                             f"{args.weights} was trained on ({meta['class_names']})")
        # unreadable images are skipped, named, and their ground truth left out of the scores
        results, skipped = predict_dataset_with_skips(model, data, device, batch_size=args.batch_size,
                                                      progress=not args.no_progress, amp=args.amp,
                                                      amp_dtype=args.amp_dtype)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "predictions.json", results, indent=None)
        if skipped and len(skipped) == len(data):
            raise UsageError(f"{args.data}: no image could be read ({skipped[0]['file_name']}: "
                             f"{skipped[0]['reason']}; ...)")
        metrics = evaluate_results(data.coco, results, proposal_recall=args.proposal_recall or agnostic,
                                   class_agnostic=agnostic, max_dets=args.max_detections, skipped_images=skipped)
    path = write_metrics(out, metrics)
    print(format_metrics_table(metrics))
    print(f"metrics: {path}")
    return 0


def _override_config(model, overrides: dict[str, Any]) -> None:
    """``fcis evaluate --set``: change inference fields of a loaded model's config in place (e.g.
    ``detections_per_img``, ``pre_nms_top_n``, ``voting_binarize``); validated by the config class."""
    import dataclasses

    if not overrides:
        return
    overrides = type(model.config).current_names(overrides)   # a former name (box_nms_thresh) too
    names = {f.name for f in dataclasses.fields(model.config)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise UsageError(f"--set: {type(model.config).__name__} has no field {', '.join(unknown)}")
    checked = dataclasses.replace(model.config, **overrides)
    for key in overrides:
        setattr(model.config, key, getattr(checked, key))


# --- predict -------------------------------------------------------------------------------------

def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files as given, folders -> their images (sorted), globs -> matching images (sorted)."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise UsageError(f"{p}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        elif glob.has_magic(item):
            found = sorted(Path(q) for q in glob.glob(item, recursive=True)
                           if Path(q).is_file() and Path(q).suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise UsageError(f"{item}: the pattern matches no images")
            paths.extend(found)
        else:
            raise UsageError(f"{p}: no such file or folder")
    return paths


def _unique_stems(paths: Sequence[Path]) -> list[str]:
    seen: dict[str, int] = {}
    stems = []
    for p in paths:
        n = seen.get(p.stem, 0)
        seen[p.stem] = n + 1
        stems.append(p.stem if n == 0 else f"{p.stem}_{n}")
    return stems


def cmd_predict(args: argparse.Namespace) -> int:
    """Overlays and predictions.json; an unreadable image is skipped (named, with the reason, in
    skipped.json) and the others go on; predictions.json is written for the images done even
    when something else stops the run."""
    from tqdm import tqdm

    from fcis.runtime.errors import InputError
    from fcis.visualize import draw_predictions

    paths = expand_inputs(args.inputs)
    if args.onnx:
        from fcis.inference.onnx_runner import OnnxPredictor  # NumPy + onnxruntime: no torch

        predictor = OnnxPredictor(args.onnx, score_threshold=args.score_threshold)
    else:
        from fcis.inference import Predictor

        predictor = Predictor.from_checkpoint(args.weights, device=args.device, score_threshold=args.score_threshold,
                                              amp=args.amp, amp_dtype=args.amp_dtype)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    results, skipped, n_det = [], [], 0
    try:
        for index, (path, stem) in enumerate(tqdm(list(zip(paths, _unique_stems(paths))), desc="predict",
                                                  unit="img", disable=args.no_progress)):
            try:
                pred = _predict_rle(predictor, path)
            except InputError as e:                      # unreadable image: name it, go on
                skipped.append({"file_name": str(path), "reason": str(e)})
                print(f"fcis: skipped {e}", file=sys.stderr)
                continue
            n_det += len(pred["scores"])
            draw_predictions(path, pred).save(out / f"{stem}.png")
            for k, rle in enumerate(pred["rles"]):
                x0, y0, x1, y1 = (float(v) for v in pred["boxes"][k])
                cat_id = int(predictor.label_to_cat_id[int(pred["labels"][k])])
                results.append({"image_id": index, "category_id": cat_id, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "score": float(pred["scores"][k]), "segmentation": rle, "file_name": str(path)})
    finally:
        write_json(out / "predictions.json", results, indent=None)
        if skipped:
            write_json(out / "skipped.json", skipped)
    done = len(paths) - len(skipped)
    print(f"{n_det} detections in {done} images (score >= {args.score_threshold}); "
          f"overlays and predictions.json in {out}")
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s), listed in {out / 'skipped.json'}:", file=sys.stderr)
        for item in skipped:
            print(f"  {item['reason']}", file=sys.stderr)
        if not done:
            raise InputError(f"none of the {len(paths)} images could be read")
    return 0


def _predict_rle(predictor, path: Path) -> dict:
    """``predictor.predict_rle(path)``, or for a predictor without it (ONNX) ``predict`` with its
    masks encoded as RLE."""
    if hasattr(predictor, "predict_rle"):
        return predictor.predict_rle(path)
    from fcis.evaluation.coco_results import encode_masks

    pred = predictor.predict(path)
    masks = pred.pop("masks")
    pred["rles"] = encode_masks(masks) if len(masks) else []
    return pred


# --- export --------------------------------------------------------------------------------------

def cmd_export(args: argparse.Namespace) -> int:
    from fcis.export import export_checkpoint

    path = export_checkpoint(args.weights, args.output, opset=args.opset)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): ONNX, dynamic image size; "
          f"run it with: fcis predict --onnx {path} IMAGES... --output DIR")
    return 0


# --- convert / make-shapes / demo ----------------------------------------------------------------

def _class_names_arg(value: str) -> list[str]:
    p = Path(value)
    if p.is_file():
        names = [line.strip() for line in p.read_text().splitlines() if line.strip()]
    else:
        names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise UsageError(f"--class-names {value!r} gives no class names")
    return names


def cmd_convert(args: argparse.Namespace) -> int:
    if args.format == "weights":
        from fcis.weights.convert_official import convert_weights

        print(convert_weights(args.src, args.out, classes=args.classes, model=args.model,
                              overrides=_parse_set(args.set)).describe())
        return 0
    from fcis.data import convert

    if args.format == "masks":
        path = convert.convert_instance_masks(args.image_dir, args.mask_dir, args.out_json,
                                              mask_suffix=args.mask_suffix, category=args.category)
    elif args.format == "via":
        path = convert.convert_via(args.via_json, args.out_json, image_dir=args.image_dir, category=args.category)
    elif args.format == "sbd":
        path = convert.convert_sbd(args.sbd_root, args.out_json, split=args.split, ids_file=args.ids)
    else:
        path = convert.convert_yolo_seg(args.image_dir, args.label_dir, args.out_json,
                                        class_names=_class_names_arg(args.class_names))
    data = json.loads(Path(path).read_text())
    print(f"wrote {path}: {len(data.get('images', []))} images, {len(data.get('annotations', []))} "
          f"annotations, {len(data.get('categories', []))} categories")
    return 0


def cmd_make_shapes(args: argparse.Namespace) -> int:
    from fcis.data import make_shapes

    paths = make_shapes(args.out, num_images=args.num_images, seed=args.seed, image_size=tuple(args.image_size),
                        max_objects=args.max_objects, val_fraction=args.val_fraction,
                        min_object_size=args.min_object_size, max_object_fraction=args.max_object_fraction)
    for name, p in paths.items():
        print(f"{name}: {p}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.output, quick=args.quick, device=args.device, workers=args.workers, progress=not args.no_progress)
    return 0


# --- serve (issue 16) ----------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from fcis.serve import ModelBackend, ServeConfig, create_app
        from fcis.serve.config import split_threads
    except ImportError as e:
        raise UsageError(f"fcis serve needs the serve extra (pip install 'fcis[serve]'): {e}") from None
    key = args.api_key or os.environ.get("FCIS_API_KEY") or None
    config = ServeConfig(workers=args.workers, max_queue=args.max_queue, max_upload_mb=args.max_upload_mb,
                         max_image_pixels=args.max_image_pixels, api_key=key)
    threads = split_threads(args.workers, args.threads)
    if args.onnx:
        backend = ModelBackend.from_onnx(args.onnx, score_threshold=args.score_threshold, threads=threads,
                                         max_side=args.max_side)
    else:
        backend = ModelBackend.from_checkpoint(args.weights, device=args.device, score_threshold=args.score_threshold,
                                               threads=threads, amp=args.amp, amp_dtype=args.amp_dtype,
                                               max_side=args.max_side)
    print(f"fcis serve: {backend.name} ({backend.backend}), {args.workers} worker(s) x {threads} thread(s), "
          f"queue {args.max_queue}{', API key required' if key else ''}: http://{args.host}:{args.port}/", flush=True)
    # uvicorn answers 503 beyond this many open requests: bounds the uploads held before the queue
    connections = 2 * (args.workers + args.max_queue) + 8
    uvicorn.run(create_app(backend, config), host=args.host, port=args.port, log_level=args.log_level,
                limit_concurrency=connections)
    return 0


# --- parser --------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fcis", description="Instance segmentation: FCIS and friends.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p, progress=True, device=True):
        if device:
            p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
        if progress:
            p.add_argument("--no-progress", action="store_true", help="no progress bars")

    t = sub.add_parser("train", help="train a model on COCO-format data",
                       description="Train a model. Unset options are chosen by the recipe (--recipe) and printed "
                                   "at the start, with the anchors fitted to the data and a data summary. Under torchrun (torchrun --nproc_per_node N "
                                   "-m fcis train ...; several machines: --nnodes M --rdzv_backend c10d --rdzv_endpoint "
                                   "HOST:PORT, see docs/slurm_train.sbatch) it trains data-parallel, one process per device. "
                                   "OUTPUT/curves.png shows the losses, learning rate and validation AP as training goes; "
                                   "with the tensorboard package, tensorboard --logdir OUTPUT too.")
    t.add_argument("--model", required=True, help="model name, e.g. fcis_resnet50")
    t.add_argument("--train", required=True, metavar="JSON", help="COCO instances JSON of the training set")
    t.add_argument("--val", metavar="JSON", help="COCO instances JSON of the validation set")
    t.add_argument("--output", required=True, metavar="DIR", help="checkpoints and logs go here")
    t.add_argument("--image-root", metavar="DIR", help="image folder (default: each JSON's folder)")
    t.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.pt")
    t.add_argument("--overwrite", action="store_true", help="start afresh even if OUTPUT/last.pt exists")
    t.add_argument("--weights-backbone", metavar="ENUM_NAME_OR_PATH",
                   help="ImageNet weights: torchvision enum name (ResNet50_Weights.IMAGENET1K_V1) or a file")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="model config override, e.g. --set anchor_sizes='(32, 64, 128)' (repeatable)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    # one flag per TrainConfig field (fcis/cli/config_flags.py): --iterations, --lr, --momentum,
    # --sync-bn/--no-sync-bn, ...; unset ones are the recipe's (printed at the start) or the defaults
    from fcis.engine.config import TrainConfig

    from .config_flags import add_config_flags

    add_config_flags(t.add_argument_group("training settings (fields of fcis.engine.TrainConfig)"), TrainConfig)
    t.set_defaults(func=cmd_train)

    i = sub.add_parser("inspect-data", help="summarise a COCO dataset as a model will see it (+ PNG)",
                       description="Images, instances per image and per class, images without objects, the input "
                                   "size fcis train would choose, box sizes at that scale against the anchors "
                                   "(fitted and the paper's; coverage per class), the problems the data loader "
                                   "finds; writes a PNG of the histograms.")
    i.add_argument("data", metavar="JSON", help="COCO instances JSON")
    i.add_argument("--model", default="fcis_resnet50", help="whose input size and anchors to measure against")
    i.add_argument("--min-size", type=int, help="short side of the network input (default: chosen from the data "
                   "as fcis train chooses it)")
    i.add_argument("--max-size", type=int, help="long side limit of the network input")
    i.add_argument("--input-size", choices=("auto", "model"), default="auto",
                   help="without --min-size/--max-size: auto chooses it from the data (as fcis train), model "
                        "takes the model's default")
    i.add_argument("--anchors", choices=("fit", "fit-boxes", "paper"), default="fit",
                   help="fit: class-balanced, as fcis train; fit-boxes: fitted by box count; paper: the model's")
    i.add_argument("--image-root", metavar="DIR")
    i.add_argument("--output", metavar="PNG", help="the picture (default: JSON's name + _inspect.png beside it)")
    i.set_defaults(func=cmd_inspect_data)

    e = sub.add_parser("evaluate", help="COCO/VOC metrics of a checkpoint or of a results file")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", metavar="CKPT", help="checkpoint to run on the data")
    src.add_argument("--predictions", metavar="RESULTS_JSON", help="COCO results file to score")
    e.add_argument("--data", required=True, metavar="JSON", help="COCO instances JSON (ground truth)")
    e.add_argument("--output", required=True, metavar="DIR", help="metrics.json goes here")
    e.add_argument("--image-root", metavar="DIR")
    e.add_argument("--batch-size", type=int, default=1)
    e.add_argument("--proposal-recall", action="store_true", help="add class-agnostic mask AR")
    e.add_argument("--on-bad-sample", choices=("skip", "raise"), default="skip")
    e.add_argument("--max-detections", type=int, default=100, metavar="N",
                   help="COCO AP counts the N best detections per image and category (COCO's 100); "
                        "a warning says when an image has more objects or predictions")
    e.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="with --weights: an inference field of the model config, e.g. --set "
                        "detections_per_img=1000 or --set voting_binarize=False (repeatable)")
    _amp_args(e)
    common(e)
    e.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predict on images; write overlays and predictions.json")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    model_src = p.add_mutually_exclusive_group(required=True)
    model_src.add_argument("--weights", metavar="CKPT", help="checkpoint written by fcis train")
    model_src.add_argument("--onnx", metavar="MODEL_ONNX",
                           help="model written by fcis export: onnxruntime on the CPU, no checkpoint needed "
                                "(--device and the AMP options do not apply)")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--score-threshold", type=float, default=0.5)
    _amp_args(p)
    common(p)
    p.set_defaults(func=cmd_predict)

    x = sub.add_parser("export", help="export a trained FCIS model to ONNX",
                       description="Export FCIS inference to one self-contained ONNX file (standard ai.onnx "
                                   "operators only) with a DYNAMIC image size: any input size runs with the "
                                   "same file, one image per run. The graph ends with the candidate boxes, "
                                   "class probabilities and PxP mask probabilities; fcis predict --onnx does "
                                   "the resizing and the post-processing (per-class NMS, mask voting, "
                                   "pasting) in NumPy. Class names, category ids and the model configuration "
                                   "are stored in the file's metadata. Only FCIS models export. Needs the "
                                   "onnx and onnxscript packages (pip install 'fcis[onnx]').")
    x.add_argument("--weights", required=True, metavar="CKPT", help="checkpoint written by fcis train")
    x.add_argument("--format", choices=("onnx",), default="onnx", help="export format (onnx)")
    x.add_argument("--output", required=True, metavar="FILE", help="the .onnx file to write")
    x.add_argument("--opset", type=int, default=18, help="ONNX opset version (default 18)")
    x.set_defaults(func=cmd_export)

    c = sub.add_parser("convert", help="convert annotations to COCO instances JSON, or trained weights to a checkpoint")
    csub = c.add_subparsers(dest="format", required=True, metavar="FORMAT")
    cm = csub.add_parser("masks", help="images + PNG instance-id masks")
    cm.add_argument("image_dir")
    cm.add_argument("mask_dir")
    cm.add_argument("out_json")
    cm.add_argument("--mask-suffix", default="_mask")
    cm.add_argument("--category", default="object")
    cv = csub.add_parser("via", help="VGG Image Annotator JSON")
    cv.add_argument("via_json")
    cv.add_argument("out_json")
    cv.add_argument("--image-dir")
    cv.add_argument("--category", default="object")
    cy = csub.add_parser("yolo", help="YOLO segmentation labels")
    cy.add_argument("image_dir")
    cy.add_argument("label_dir")
    cy.add_argument("out_json")
    cy.add_argument("--class-names", required=True, help="comma-separated names, or a file with one per line")
    cs = csub.add_parser("sbd", help="SBD release (img/, inst/*.mat, train.txt, val.txt): VOC instances, 20 classes")
    cs.add_argument("sbd_root", metavar="SBD_ROOT", help="benchmark_RELEASE/dataset (or a folder above it)")
    cs.add_argument("out_json")
    cs.add_argument("--split", choices=("train", "val"), default="train")
    cs.add_argument("--ids", metavar="FILE", help="image id list instead of SBD's <split>.txt (e.g. the paper's SDS lists)")
    cw = csub.add_parser(
        "weights", help="official FCIS weights (MXNet .params, ChainerCV .npz) -> an fcis checkpoint",
        description="Convert the official FCIS model (msracver/FCIS, MXNet fcis_coco-0000.params) or ChainerCV's "
                    "npz of it into an fcis checkpoint that runs the official test arithmetic (variant='official'): "
                    "fcis predict/evaluate/export/serve --weights OUT.pt then take it. The format is detected from "
                    "the file. A backbone-only file (the ImageNet resnet_v1_101-0000.params) is written as a "
                    "torchvision-named state dict for --weights-backbone instead; the command says which it wrote.")
    cw.add_argument("src", metavar="SRC", help="MXNet .params or ChainerCV .npz file")
    cw.add_argument("out", metavar="OUT.pt", help="the checkpoint (or backbone state dict) to write")
    cw.add_argument("--classes", metavar="coco|voc|FILE",
                    help="class names: coco (80, with the original COCO category ids), voc (20), or a file with one "
                         "name per line (default: coco for 80 classes, voc for 20)")
    cw.add_argument("--model", metavar="NAME", help="model name to write (default fcis_resnet<depth> of the file)")
    cw.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="a model config field recorded in the checkpoint, e.g. --set min_size=480 (repeatable; "
                         "the defaults are the official test setting)")
    c.set_defaults(func=cmd_convert)

    m = sub.add_parser("make-shapes", help="write a synthetic shapes dataset")
    m.add_argument("out", metavar="OUT")
    m.add_argument("--num-images", type=int, default=200)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--image-size", type=int, nargs=2, default=(256, 320), metavar=("H", "W"))
    m.add_argument("--max-objects", type=int, default=4)
    m.add_argument("--val-fraction", type=float, default=0.2)
    m.add_argument("--min-object-size", type=int, default=24, help="smallest object side in px")
    m.add_argument("--max-object-fraction", type=float, default=0.45,
                   help="largest object side as a fraction of the image's short side")
    m.set_defaults(func=cmd_make_shapes)

    d = sub.add_parser("demo", help="shapes -> train fcis_resnet18 -> evaluate -> overlays")
    d.add_argument("--output", default="runs/demo", metavar="DIR")
    d.add_argument("--quick", action="store_true", help="a tiny run (smoke test)")
    d.add_argument("--workers", type=int)
    common(d)
    d.set_defaults(func=cmd_demo)

    v = sub.add_parser("serve", help="serve a model: HTTP API (/v1/predict) and a web page (/)",
                       description="Serve a checkpoint or an ONNX file over HTTP (FastAPI + uvicorn; needs the "
                                   "serve extra): POST /v1/predict, GET /v1/model, /healthz, /readyz, the page "
                                   "at / and the API docs at /docs.")
    vsrc = v.add_mutually_exclusive_group(required=True)
    vsrc.add_argument("--weights", metavar="CKPT", help="checkpoint written by fcis train")
    vsrc.add_argument("--onnx", metavar="MODEL_ONNX", help="model written by fcis export (onnxruntime, CPU)")
    v.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1: this machine only; "
                                                       "0.0.0.0 listens on all)")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--score-threshold", type=float, default=0.5, help="instances below it are not returned")
    v.add_argument("--api-key", help="require this key (X-API-Key header) on every request but the health "
                                     "checks and the page's files (default: $FCIS_API_KEY, else none)")
    v.add_argument("--max-upload-mb", type=float, default=20.0, help="larger uploads get 413 (default 20)")
    v.add_argument("--max-image-pixels", type=int, default=40_000_000,
                   help="images with more pixels (width x height) get 413 (default 40e6)")
    v.add_argument("--max-side", type=int, help="a photo with a longer side is run at this size and its results "
                                                "scaled back (default: max(1024, 2 x the model's max_size)); "
                                                "bounds the memory of full-size masks")
    v.add_argument("--workers", type=int, default=1, help="inferences run at once (threads sharing the model)")
    v.add_argument("--threads", type=int, help="CPU threads per inference (default: CPUs / workers)")
    v.add_argument("--max-queue", type=int, default=16, help="requests that may wait; more get 503 (default 16)")
    v.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    _amp_args(v)
    common(v, progress=False)
    v.set_defaults(func=cmd_serve)
    return parser


def _amp_args(p: argparse.ArgumentParser) -> None:
    """``--amp`` and ``--amp-dtype`` (see fcis.runtime.amp)."""
    p.add_argument("--amp", action="store_true",
                   help="mixed precision (torch.autocast); CUDA: bf16 or fp16, CPU: bf16 only")
    p.add_argument("--amp-dtype", choices=("bf16", "fp16"), default="bf16",
                   help="autocast dtype with --amp (default bf16; fp16 trains with loss scaling)")


def _user_errors() -> tuple[type[BaseException], ...]:
    from fcis.runtime.errors import CheckpointError, InputError

    errors: list[type[BaseException]] = [UsageError, CheckpointError, InputError, ValueError, OSError]
    try:
        from fcis.data import DataError
        errors.insert(0, DataError)
    except ImportError:
        pass
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fcis`` command; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error (argparse printed it)
        return int(e.code or 0)
    from fcis.runtime.errors import TrainingError

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("fcis: interrupted", file=sys.stderr)
        return 130
    except TrainingError as e:
        if args.debug:
            raise
        print(f"fcis: error: {e}", file=sys.stderr)
        return 1
    except ImportError as e:  # e.g. torch missing in a deployment: only predict --onnx runs without it
        if args.debug or (e.name or "").split(".")[0] not in ("torch", "torchvision", "onnxruntime", "onnx"):
            raise
        print(f"fcis: error: fcis {args.command} needs the {(e.name or '').split('.')[0]} package, which is not "
              f"installed (without torch, only fcis predict --onnx runs)", file=sys.stderr)
        return 2
    except _user_errors() as e:
        if args.debug:
            raise
        print(f"fcis: error: {_message(e)}", file=sys.stderr)
        return 2


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in str(e):
        return f"{e.filename}: {e.strerror or e}"
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    text = str(e) if str(e) else type(e).__name__
    return " ".join(text.split("\n")) if "\n" in text else text


if __name__ == "__main__":
    sys.exit(main())
