"""Real photo sets of many small objects for issue 22's ablation, re-created from a fetched snapshot.

The sets are public COCO-format exports (Roboflow) committed to public GitHub repositories; the
benchmarks never ship them. :func:`prepare_snapshot_set` re-creates a set from a local snapshot of
its repository (a bare git directory such as ``/work/.mirror/owner+name/repo``, or a clone) into

    OUT/train.json, OUT/val.json   COCO instances; ``file_name`` = ``images/<name>`` (relative to OUT)
    OUT/images/                    the photos, copied byte for byte from the snapshot
    OUT/SOURCE.json                repository, commit read, license, which export splits went where

Each :class:`SnapshotSet` names the export's own split files that make up our ``train`` and
``val`` (held-out) sets; nothing is re-split, so the held-out images are exactly the export's.
Two repairs, counted in SOURCE.json: an image's ``width``/``height`` are read from the file (one
export says 1714 rows for photos of 1713), and polygons of fewer than 3 points are dropped (an
annotation left without any polygon is dropped).
Categories that no annotation uses in any of the set's splits (Roboflow adds the project's name
as category 0) are dropped, the rest renumbered 1..K in the export's order, identically in both
JSONs (``fcis evaluate`` requires the checkpoint's classes to equal the data's). benchmarks/
datasets.md describes each set, its statistics and how to fetch it.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

__all__ = ["SnapshotSet", "SETS", "prepare_snapshot_set", "read_snapshot_file"]


@dataclass(frozen=True)
class SnapshotSet:
    """A COCO export inside a public repository.

    Attributes:
        name: short name (the dataset's key in the ablation).
        repo: ``owner/name`` on GitHub.
        commit: the commit the statistics in benchmarks/datasets.md were taken from.
        license: the export's license as it states it.
        train: the export's annotation files (paths in the repository) merged into ``train.json``;
            each file's images lie in its own folder.
        val: likewise for the held-out ``val.json``.
        about: one line on what the photos show.
    """

    name: str
    repo: str
    commit: str
    license: str
    train: tuple[str, ...]
    val: tuple[str, ...]
    about: str


SETS: dict[str, SnapshotSet] = {s.name: s for s in (
    SnapshotSet(
        name="bnflakes", repo="cdavidgutierrez/2D-Microscopy-Segmentation",
        commit="9f0d3ed8e16dcfa9e94bf1f5159209ce59127721",
        license="CC BY 4.0 (Roboflow export 'MonArk_BN_Modified_Classes' v6, Roboflow Universe)",
        train=("data/train/_annotations.coco.json",),
        val=("data/valid/_annotations.coco.json", "data/test/_annotations.coco.json"),
        about="optical-microscope photos of hexagonal boron nitride flakes on SiO2, three thickness "
              "classes; train: 61 source photos x 3 Roboflow augmentations (flip, brightness)"),
    SnapshotSet(
        name="treepheno", repo="NarimanNiknejad/TreePheno",
        commit="d4a708b32a542c11ad316869c497f616cea864ac",
        license="CC BY 4.0 (as the export's 'licenses' field states; the repository has no LICENSE file)",
        train=("valid/_annotations.coco.json",),
        val=("test/_annotations.coco.json",),
        about="stereo-camera photos of loblolly pines: branch bases ('Limb', small) and the stem "
              "('Trunk', one per photo, the full height); the export's train JSON is over the "
              "snapshot's 4 MiB file limit, so its valid split trains and its test split is held out"),
)}


def _git(snapshot: Path, *args: str, text: bool = False) -> Any:
    proc = subprocess.run(["git", "-C", str(snapshot), *args], capture_output=True, text=text)
    if proc.returncode:
        err = proc.stderr if text else proc.stderr.decode(errors="replace")
        raise FileNotFoundError(f"{snapshot}: git {' '.join(args)} failed: {err.strip()}")
    return proc.stdout


def _revision(snapshot: Path, commit: str) -> str:
    """``commit`` if the snapshot holds it, else its HEAD (the statistics may then differ)."""
    probe = subprocess.run(["git", "-C", str(snapshot), "cat-file", "-e", f"{commit}^{{commit}}"],
                           capture_output=True)
    if probe.returncode == 0:
        return commit
    return _git(snapshot, "rev-parse", "HEAD", text=True).strip()


def read_snapshot_file(snapshot: Path, revision: str, path: str) -> bytes:
    """The bytes of ``path`` at ``revision`` in the git directory ``snapshot`` (bare or not)."""
    return _git(snapshot, "show", f"{revision}:{path}")


def _polygons(segmentation: Any) -> Any:
    """``segmentation`` without the polygons of fewer than 3 points (RLE dicts pass unchanged);
    None when nothing is left."""
    if isinstance(segmentation, dict):
        return segmentation
    kept = [p for p in segmentation or [] if len(p) >= 6]
    return kept or None


def _merge(snapshot: Path, revision: str, files: tuple[str, ...], images_dir: Path,
           category_ids: dict[int, int], repairs: dict[str, int]) -> dict[str, Any]:
    """One COCO dict from the export files ``files``: images copied into ``images_dir``, ids
    renumbered from 1, categories mapped by ``category_ids`` (export id -> ours); the repairs made
    are counted into ``repairs``."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for path in files:
        data = json.loads(read_snapshot_file(snapshot, revision, path))
        folder = PurePosixPath(path).parent
        new_ids: dict[int, int] = {}
        for im in data["images"]:
            name = PurePosixPath(im["file_name"]).name
            target = images_dir / name
            if target.exists() and any(Path(i["file_name"]).name == name for i in images):
                raise ValueError(f"{path}: image {name} appears twice in the set")
            target.write_bytes(read_snapshot_file(snapshot, revision, str(folder / name)))
            with Image.open(target) as pil:
                width, height = pil.size
            if (width, height) != (im["width"], im["height"]):
                repairs["image_size_from_file"] += 1
            new_ids[im["id"]] = len(images) + 1
            images.append({"id": len(images) + 1, "file_name": f"images/{name}", "width": width,
                           "height": height, "source": f"{path}#{im['id']}"})
        for a in data["annotations"]:
            if a["category_id"] not in category_ids:
                raise ValueError(f"{path}: annotation {a['id']} has category {a['category_id']}, which no "
                                 "other split of the set uses consistently")
            segmentation = _polygons(a.get("segmentation"))
            if segmentation != a.get("segmentation"):
                repairs["polygons_under_3_points_dropped"] += 1
            if segmentation is None:
                repairs["annotations_without_polygon_dropped"] += 1
                continue
            annotations.append({**a, "segmentation": segmentation, "id": len(annotations) + 1,
                                "image_id": new_ids[a["image_id"]], "category_id": category_ids[a["category_id"]]})
    return {"images": images, "annotations": annotations}


def prepare_snapshot_set(spec: SnapshotSet, snapshot: str | Path, out: str | Path) -> tuple[Path, Path]:
    """Write ``out/{train.json,val.json,images/,SOURCE.json}`` for ``spec`` from ``snapshot`` (a
    git directory of ``spec.repo``, bare or a clone). Returns ``(train_json, val_json)``.

    Raises FileNotFoundError naming the snapshot and the file git could not show, ValueError when
    the splits disagree on their categories or an image name repeats.
    """
    snapshot, out = Path(snapshot), Path(out)
    revision = _revision(snapshot, spec.commit)
    files = spec.train + spec.val
    exports = {p: json.loads(read_snapshot_file(snapshot, revision, p)) for p in files}
    categories = None
    for path, data in exports.items():
        cats = [(c["id"], c["name"]) for c in data["categories"]]
        if categories is not None and cats != categories:
            raise ValueError(f"{path}: categories {cats} differ from {files[0]}'s {categories}")
        categories = cats
    used = {a["category_id"] for data in exports.values() for a in data["annotations"]}
    kept = [(cid, name) for cid, name in categories or [] if cid in used]
    category_ids = {cid: i + 1 for i, (cid, _) in enumerate(kept)}
    (out / "images").mkdir(parents=True, exist_ok=True)
    paths = []
    repairs = dict.fromkeys(("image_size_from_file", "polygons_under_3_points_dropped",
                             "annotations_without_polygon_dropped"), 0)
    for split, split_files in (("train", spec.train), ("val", spec.val)):
        merged = _merge(snapshot, revision, split_files, out / "images", category_ids, repairs)
        doc = {"info": {"description": f"{spec.name} {split}: {spec.repo}@{revision[:12]} "
                                       f"{', '.join(split_files)} (benchmarks/photo_sets.py)"},
               "licenses": [{"id": 1, "name": spec.license}],
               "categories": [{"id": category_ids[cid], "name": name, "supercategory": "none"}
                              for cid, name in kept],
               **merged}
        target = out / f"{split}.json"
        target.write_text(json.dumps(doc))
        paths.append(target)
    (out / "SOURCE.json").write_text(json.dumps({
        "name": spec.name, "repo": spec.repo, "commit_read": revision, "commit_documented": spec.commit,
        "license": spec.license, "train_files": list(spec.train), "val_files": list(spec.val),
        "repairs": repairs, "about": spec.about}, indent=1))
    return paths[0], paths[1]
