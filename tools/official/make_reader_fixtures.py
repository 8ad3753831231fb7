"""Write small REAL MXNet `.params` files for the tests of fcis's NumPy reader (`fcis/weights/mxnet_params.py`).

Run with the MXNet virtual environment (see tools/official/README.md), from the repository root:

    /work/venvs/mxnet-oracle/bin/python -m tools.official.make_reader_fixtures \
        --mxnet-repo /work/.mirror/apache+mxnet/repo --out tests/fixtures/mxnet

Every file is written by MXNet itself (`mx.nd.save` / `mx.npx.save`); MANIFEST.json records each
file's sha256 and size and, per array, its stored name, dtype, shape and the sha256 of its values
(C-order little-endian bytes of the array as MXNet loads it back) plus a float64 sum. The legacy
file `legacy_ndarray.v0` is copied from the MXNet source tree (Apache-2.0) with `git show`.

Layout of the files MXNet 1.9.1 writes (read from src/ndarray/ndarray.cc and checked on these files):
list header uint64 0x112, uint64 0, uint64 count, then per array: uint32 magic (0xF993fac9 = V2,
0xF993faca = V3 "np shape"), int32 storage type (0 dense, 1 row_sparse, 2 csr), [sparse: storage
shape], shape (int32 ndim + ndim int64 dims; V3 allows ndim 0 = a scalar), context (int32 dev_type,
int32 dev_id), int32 dtype flag, [sparse: aux types/shapes], the raw values, [sparse: aux values];
then uint64 name count and per name uint64 length + bytes. The legacy v0 record has no magic: its
first uint32 is ndim, followed by ndim uint32 dims, context, dtype flag, values.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
from pathlib import Path

import mxnet as mx
import numpy as np

# MXNet's dtype flags (mshadow/base.h): the numbers the files store.
DTYPE_FLAGS = {"float32": 0, "float64": 1, "float16": 2, "uint8": 3, "int32": 4, "int8": 5, "int64": 6, "bool": 7}


def _values(rng: np.random.Generator, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype.startswith("float"):
        return (rng.standard_normal(shape) * 3).astype(dtype)
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 1000) + 1, shape).astype(dtype)


def _describe(name: str, arr: np.ndarray) -> dict:
    arr = np.array(arr, order="C")  # (np.ascontiguousarray would turn a 0-d array into shape (1,))
    return {
        "name": name,
        "dtype": str(arr.dtype),
        "dtype_flag": DTYPE_FLAGS[str(arr.dtype)],
        "shape": list(arr.shape),
        "values_sha256": hashlib.sha256(arr.astype(arr.dtype.newbyteorder("<")).tobytes()).hexdigest(),
        "sum": float(arr.astype(np.float64).sum()),
        "first": arr.ravel()[:4].astype(np.float64).tolist(),
    }


def _file_entry(path: Path, loaded, note: str) -> dict:
    data = path.read_bytes()
    if isinstance(loaded, dict):
        arrays = [_describe(k, v.asnumpy()) for k, v in loaded.items()]
        names_stored = True
    else:
        arrays = [_describe(f"[{i}]", v.asnumpy()) for i, v in enumerate(loaded)]
        names_stored = False
    return {
        "file": path.name,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "magic_first_record": data[24:28][::-1].hex() if len(data) >= 28 else None,
        "names_stored": names_stored,
        "arrays": arrays,
        "note": note,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--mxnet-repo", type=Path, required=True, help="bare git mirror of apache/mxnet")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240521)
    files: list[dict] = []

    # --- V2 (the default of MXNet 1.x), named, one array per dtype MXNet saves ---
    v2_spec = [
        ("arg:conv1_weight", "float32", (4, 3, 3, 3)),
        ("arg:fc_bias", "float64", (2, 5)),
        ("aux:bn_conv1_moving_mean", "float16", (7,)),
        ("aux:bn_conv1_moving_var", "float32", (1,)),
        ("arg:u8", "uint8", (3, 4)),
        ("arg:i32", "int32", (2, 2, 2)),
        ("arg:i8", "int8", (5,)),
        ("arg:i64", "int64", (3,)),
        ("arg:flags", "bool", (2, 3)),
        ("arg:five_d", "float32", (1, 2, 1, 3, 2)),
    ]
    v2 = {name: mx.nd.array(_values(rng, dt, shape), dtype=dt) for name, dt, shape in v2_spec}
    p = out / "v2_named.params"
    mx.nd.save(str(p), v2)
    files.append(_file_entry(p, mx.nd.load(str(p)), "mx.nd.save(dict) with MXNet 1.9.1: V2 records (magic 0xF993fac9)"))

    # --- V2, a list without names (what mx.nd.save(list) writes) ---
    p = out / "v2_unnamed_list.params"
    mx.nd.save(str(p), [mx.nd.array(_values(rng, "float32", (2, 3))), mx.nd.array(_values(rng, "int32", (4,)), dtype="int32")])
    files.append(_file_entry(p, mx.nd.load(str(p)), "mx.nd.save(list): V2 records, name count 0"))

    # --- V2, sparse storage (row_sparse, csr): a reader of dense parameters should refuse these by name ---
    p = out / "v2_sparse.params"
    dense = np.zeros((4, 3), np.float32)
    dense[1] = [1, 2, 3]
    dense[3] = [4, 5, 6]
    sparse = {"arg:rsp": mx.nd.array(dense).tostype("row_sparse"), "arg:csr": mx.nd.array(dense).tostype("csr")}
    # NDArray::Save writes a sparse array's storage shape before it waits for the array: without this wait
    # the asynchronous tostype() may not have finished and the csr storage shape is written as 0.
    mx.nd.waitall()
    mx.nd.save(str(p), sparse)
    loaded = mx.nd.load(str(p))
    entry = _file_entry(p, {k: v.tostype("default") for k, v in loaded.items()}, "")
    entry["note"] = ("V2 records with storage type 1 (row_sparse, arg:rsp) and 2 (csr, arg:csr); values listed "
                     "densified. Not a parameter layout the official code writes: for the reader's error path.")
    entry["storage_types"] = {k: v.stype for k, v in loaded.items()}
    files.append(entry)

    # --- V3: numpy-shape semantics (mx.util.set_np_shape(True) then mx.nd.save): 0-d and empty shapes ---
    v3_spec = [
        ("arg:scalar", "float32", ()),
        ("arg:empty", "float32", (0, 3)),
        ("arg:weight", "float32", (2, 3)),
        ("aux:count", "int64", (2,)),
    ]
    prev = mx.util.set_np_shape(True)
    try:
        v3 = {name: mx.nd.array(_values(rng, dt, shape), dtype=dt) for name, dt, shape in v3_spec}
        p = out / "v3_np_shape.params"
        mx.nd.save(str(p), v3)
        files.append(_file_entry(p, mx.nd.load(str(p)),
                                 "mx.util.set_np_shape(True); mx.nd.save(dict): V3 records (magic 0xF993faca); "
                                 "a 0-d array (ndim 0) and an empty (0, 3) one. MXNet 1.9.1 refuses to load "
                                 "this file unless np-shape semantics are on."))
    finally:
        mx.util.set_np_shape(prev)

    # --- V3 written by the numpy front end (mx.npx.save of mx.np arrays) ---
    mx.npx.set_np()
    try:
        npx_arrays = {
            "arg:w": mx.np.array(_values(rng, "float64", (3, 2)), dtype="float64"),
            "aux:z": mx.np.zeros(()),
            "arg:h": mx.np.array(_values(rng, "float16", (2, 2)), dtype="float16"),
        }
        p = out / "v3_npx.params"
        mx.npx.save(str(p), npx_arrays)
        loaded = mx.npx.load(str(p))
        entry = {
            "file": p.name,
            "size": p.stat().st_size,
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
            "magic_first_record": p.read_bytes()[24:28][::-1].hex(),
            "names_stored": True,
            "arrays": [_describe(k, v.asnumpy()) for k, v in loaded.items()],
            "note": "mx.npx.set_np(); mx.npx.save(dict of mx.np arrays): V3 records",
        }
        files.append(entry)
    finally:
        mx.npx.reset_np()

    # --- truncated copies of the V2 file: cut inside the values, and inside the names table ---
    full = (out / "v2_named.params").read_bytes()
    names_start = full.rfind(b"arg:five_d") - 8  # the last name's length field
    truncations = [
        ("v2_named_truncated_values.params", len(full) // 2, "v2_named.params cut at half its size (inside a value block)"),
        ("v2_named_truncated_names.params", names_start + 4, "v2_named.params cut inside the last name's length field"),
    ]
    for fname, cut, note in truncations:
        tp = out / fname
        tp.write_bytes(full[:cut])
        try:
            mx.nd.load(str(tp))
            outcome = "MXNet 1.9.1 loaded it (unexpected)"
        except mx.base.MXNetError as err:
            outcome = "MXNet 1.9.1 refuses: " + str(err).strip().splitlines()[-1][:200]
        files.append({"file": fname, "size": cut, "sha256": hashlib.sha256(full[:cut]).hexdigest(),
                      "truncated_from": "v2_named.params", "cut_at_byte": cut, "note": note,
                      "mxnet_load": outcome})

    # --- the legacy (pre-V1) file from MXNet's own test suite ---
    legacy = subprocess.run(["git", "-C", str(args.mxnet_repo), "show", "HEAD:tests/python/unittest/legacy_ndarray.v0"],
                            check=True, capture_output=True).stdout
    commit = subprocess.run(["git", "-C", str(args.mxnet_repo), "rev-parse", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    p = out / "legacy_ndarray.v0"
    p.write_bytes(legacy)
    entry = _file_entry(p, mx.nd.load(str(p)), "")
    entry["note"] = ("Copied verbatim from apache/mxnet tests/python/unittest/legacy_ndarray.v0 "
                     f"(commit {commit}); Apache License 2.0 (https://www.apache.org/licenses/LICENSE-2.0), "
                     "Copyright The Apache Software Foundation. Legacy records: no magic, first uint32 = ndim, "
                     "uint32 dims. MXNet's test_ndarray_legacy_load expects 6 unnamed arange(128) float32 arrays; "
                     "'arrays' lists what MXNet 1.9.1 reads from it.")
    entry["origin"] = {"repository": "https://github.com/apache/mxnet", "path": "tests/python/unittest/legacy_ndarray.v0",
                       "commit": commit, "license": "Apache-2.0"}
    files.append(entry)

    manifest = {
        "written_by": f"tools/official/make_reader_fixtures.py with MXNet {mx.__version__}, NumPy {np.__version__}",
        "values_sha256": "sha256 of the array's C-order little-endian bytes as MXNet loads it (bool: 1 byte each)",
        "dtype_flags": DTYPE_FLAGS,
        "files": files,
        "not_covered": ("V1 records (magic 0xF993fac8: int64 shape, no storage type) are read by MXNet 1.9.1 "
                        "but no longer written by it (NDArray::Save writes V2, or V3 under np-shape); MXNet "
                        "releases that wrote V1 do not install on Python 3.11, so no real V1 file is here."),
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for f in files:
        print(f["file"], f["size"], f.get("mxnet_load", ""))


if __name__ == "__main__":
    main()
