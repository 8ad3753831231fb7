"""The NumPy reader of MXNet NDArray files (fcis/weights/mxnet_params.py) on files written by MXNet
itself (tests/fixtures/mxnet, made by tools/official/make_reader_fixtures.py with MXNet 1.9.1, and
MXNet's own legacy_ndarray.v0), plus the writer's round trip."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fcis.weights.errors import WeightsFileError
from fcis.weights.mxnet_params import (
    V1_MAGIC,
    V2_MAGIC,
    read_mxnet_params,
    read_ndarray_list,
    write_mxnet_params,
)

FIXTURES = Path(__file__).parent / "fixtures" / "mxnet"
MANIFEST = json.loads((FIXTURES / "MANIFEST.json").read_text())
FILES = {f["file"]: f for f in MANIFEST["files"]}
VARIANT_OF_MAGIC = {"f993fac9": "v2", "f993faca": "v3", "f993fac8": "v1"}


def _sha(arr: np.ndarray) -> str:
    arr = np.array(arr, order="C")
    return hashlib.sha256(arr.astype(arr.dtype.newbyteorder("<")).tobytes()).hexdigest()


def _readable() -> list[str]:
    return [name for name, f in FILES.items() if "truncated_from" not in f]


@pytest.mark.parametrize("name", _readable())
def test_every_mxnet_written_file_reads_as_mxnet_loads_it(name):
    entry = FILES[name]
    stored = read_ndarray_list(FIXTURES / name)
    assert (FIXTURES / name).stat().st_size == entry["size"]
    assert len(stored.arrays) == len(entry["arrays"])
    assert bool(stored.names) == entry["names_stored"]
    first = entry["magic_first_record"]
    assert stored.variants[0] == VARIANT_OF_MAGIC.get(first, "legacy")
    assert len(set(stored.variants)) == 1
    sparse = entry.get("storage_types", {})
    for i, expected in enumerate(entry["arrays"]):
        if stored.names:
            assert stored.names[i] == expected["name"]
        key = expected["name"]
        if key in sparse:                      # parsed past, refused by read_mxnet_params
            assert stored.storage[i] == sparse[key] and stored.arrays[i] is None
            continue
        arr = stored.arrays[i]
        assert arr is not None and stored.storage[i] == "dense"
        assert str(arr.dtype) == expected["dtype"], key
        assert list(arr.shape) == expected["shape"], key
        assert _sha(arr) == expected["values_sha256"], key
        assert float(arr.astype(np.float64).sum()) == pytest.approx(expected["sum"], rel=1e-12, abs=1e-12)


def test_named_v2_file_strips_prefixes_and_keeps_order():
    params = read_mxnet_params(FIXTURES / "v2_named.params")
    expected = [a["name"].split(":", 1)[1] for a in FILES["v2_named.params"]["arrays"]]
    assert list(params) == expected
    assert params["conv1_weight"].dtype == np.float32 and params["conv1_weight"].shape == (4, 3, 3, 3)
    assert params["bn_conv1_moving_mean"].dtype == np.float16
    assert params["flags"].dtype == np.bool_
    assert params["conv1_weight"].flags.writeable and params["conv1_weight"].flags.c_contiguous


def test_v3_files_keep_zero_d_and_empty_arrays():
    params = read_mxnet_params(FIXTURES / "v3_np_shape.params")
    assert params["scalar"].shape == () and params["empty"].shape == (0, 3)
    npx = read_mxnet_params(FIXTURES / "v3_npx.params")
    assert npx["z"].shape == () and npx["w"].dtype == np.float64


def test_legacy_file_is_mxnets_own_test_expectation():
    """MXNet's test_ndarray_legacy_load: six unnamed float32 arange(128)."""
    stored = read_ndarray_list(FIXTURES / "legacy_ndarray.v0")
    assert stored.variants == ["legacy"] * 6 and stored.names == []
    for arr in stored.arrays:
        np.testing.assert_array_equal(arr, np.arange(128, dtype=np.float32))


@pytest.mark.parametrize("name", [n for n, f in FILES.items() if "truncated_from" in f])
def test_truncated_mxnet_files_are_errors_naming_the_file(name):
    with pytest.raises(WeightsFileError, match="truncated") as e:
        read_mxnet_params(FIXTURES / name)
    assert name in str(e.value)


def test_sparse_and_unnamed_are_refused_by_name():
    with pytest.raises(WeightsFileError, match=r"'arg:rsp' is a sparse \(row_sparse\)"):
        read_mxnet_params(FIXTURES / "v2_sparse.params")
    with pytest.raises(WeightsFileError, match="2 unnamed arrays"):
        read_mxnet_params(FIXTURES / "v2_unnamed_list.params")


def _records(data: bytes) -> tuple[list[tuple[int, int]], int]:
    """(start, end) of each V2 dense record of ``data`` and where the names start."""
    count = struct.unpack_from("<Q", data, 16)[0]
    pos, spans = 24, []
    sizes = {0: 4, 1: 8, 2: 2, 3: 1, 4: 4, 5: 1, 6: 8, 7: 1}
    for _ in range(count):
        start = pos
        magic, stype, ndim = struct.unpack_from("<Iii", data, pos)
        assert magic == V2_MAGIC and stype == 0
        dims = struct.unpack_from(f"<{ndim}q", data, pos + 12)
        pos += 12 + 8 * ndim + 8
        flag = struct.unpack_from("<i", data, pos)[0]
        pos += 4 + int(np.prod(dims)) * sizes[flag]
        spans.append((start, pos))
    return spans, pos


def _rewritten(variant: str) -> bytes:
    """v2_named.params (real, MXNet-written) with every record rewritten by hand as a V1 record
    (0xF993fac8, int32 ndim + int64 dims, no storage type) or a legacy one (uint32 ndim + uint32
    dims, no magic), layouts from tuple.h / ndarray.cc; values, names and order unchanged."""
    data = (FIXTURES / "v2_named.params").read_bytes()
    spans, names_at = _records(data)
    out = bytearray(data[:24])
    for start, end in spans:
        rec = data[start:end]
        ndim = struct.unpack_from("<i", rec, 8)[0]
        dims = struct.unpack_from(f"<{ndim}q", rec, 12)
        rest = rec[12 + 8 * ndim:]
        if variant == "v1":
            out += struct.pack("<Ii", V1_MAGIC, ndim) + struct.pack(f"<{ndim}q", *dims) + rest
        else:
            out += struct.pack("<I", ndim) + struct.pack(f"<{ndim}I", *dims) + rest
    return bytes(out + data[names_at:])


@pytest.mark.parametrize("variant", ["v1", "legacy"])
def test_v1_and_legacy_records_made_from_a_real_v2_file(tmp_path, variant):
    """MXNet 1.9.1 reads V1 (0xF993fac8) but no longer writes it, and no release that did installs
    here: the V1 and legacy files are the real V2 file's records rewritten (``_rewritten``); MXNet
    itself reads them alike (test_mxnet_itself_reads_...)."""
    (tmp_path / "x.params").write_bytes(_rewritten(variant))
    assert set(read_ndarray_list(tmp_path / "x.params").variants) == {variant}
    real = read_mxnet_params(FIXTURES / "v2_named.params")
    got = read_mxnet_params(tmp_path / "x.params")
    assert list(got) == list(real)
    for k in real:
        assert got[k].dtype == real[k].dtype and _sha(got[k]) == _sha(real[k]), k


def _corrupt(tmp_path, offset: int, fmt: str, value: int) -> Path:
    data = bytearray((FIXTURES / "v2_named.params").read_bytes())
    struct.pack_into(fmt, data, offset, value)
    out = tmp_path / "bad.params"
    out.write_bytes(bytes(data))
    return out


def test_bad_files_are_errors_naming_file_and_problem(tmp_path):
    data = (FIXTURES / "v2_named.params").read_bytes()
    spans, names_at = _records(data)
    ndim = struct.unpack_from("<i", data, spans[1][0] + 8)[0]
    flag_at = spans[1][0] + 12 + 8 * ndim + 8          # array 1's dtype flag
    cases = {
        "unknown dtype": (_corrupt(tmp_path, flag_at, "<i", 99), r"array 1 has dtype flag 99"),
    }
    for label, (path, pattern) in cases.items():
        with pytest.raises(WeightsFileError, match=pattern) as e:
            read_mxnet_params(path)
        assert "bad.params" in str(e.value), label
    bf16 = _corrupt(tmp_path, flag_at, "<i", 12)
    with pytest.raises(WeightsFileError, match="bfloat16"):
        read_mxnet_params(bf16)
    count = _corrupt(tmp_path, names_at, "<Q", 3)
    with pytest.raises(WeightsFileError, match="10 arrays but 3 names"):
        read_mxnet_params(count)
    header = _corrupt(tmp_path, 0, "<Q", 0x113)
    with pytest.raises(WeightsFileError, match="not an MXNet NDArray file"):
        read_mxnet_params(header)
    garbage = _corrupt(tmp_path, spans[0][0], "<I", 0x12345678)
    with pytest.raises(WeightsFileError, match="neither an NDArray magic"):
        read_mxnet_params(garbage)
    device = _corrupt(tmp_path, flag_at - 8, "<i", 7)
    with pytest.raises(WeightsFileError, match="device type 7"):
        read_mxnet_params(device)
    for blob in (b"", b"PK\x03\x04 a zip, not MXNet" * 3, np.arange(100, dtype=np.float32).tobytes()):
        (tmp_path / "x.params").write_bytes(blob)
        with pytest.raises(WeightsFileError, match="x.params"):
            read_mxnet_params(tmp_path / "x.params")
    with pytest.raises(WeightsFileError, match="not found"):
        read_mxnet_params(tmp_path / "missing.params")


def test_writer_round_trip_every_dtype(tmp_path):
    rng = np.random.default_rng(0)
    params = {
        "conv1_weight": rng.standard_normal((4, 3, 7, 7)).astype(np.float32),
        "fc_bias": rng.standard_normal(5),
        "half": rng.standard_normal((2, 2)).astype(np.float16),
        "u8": rng.integers(0, 255, (3,), dtype=np.uint8),
        "i32": rng.integers(-9, 9, (2, 3), dtype=np.int32),
        "i8": rng.integers(-9, 9, (1,), dtype=np.int8),
        "i64": rng.integers(-9, 9, (4,), dtype=np.int64),
        "flags": np.array([True, False]),
        "empty": np.zeros((0, 3), np.float32),
        "bn_conv1_moving_mean": rng.standard_normal(4).astype(np.float32),
    }
    path = tmp_path / "rt.params"
    write_mxnet_params(path, params, aux={"bn_conv1_moving_mean"})
    stored = read_ndarray_list(path)
    assert stored.variants == ["v2"] * len(params)
    assert stored.names[-1] == "aux:bn_conv1_moving_mean" and stored.names[0] == "arg:conv1_weight"
    back = read_mxnet_params(path)
    assert list(back) == list(params)
    for k, v in params.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        np.testing.assert_array_equal(back[k], v)
    with pytest.raises(ValueError, match="0-d"):
        write_mxnet_params(path, {"s": np.float32(1.0)})
    with pytest.raises(ValueError, match="aux names"):
        write_mxnet_params(path, {"a": np.zeros(1)}, aux={"b"})


def _mxnet_python() -> str | None:
    """A Python with MXNet 1.9.1 (a separate venv): $FCIS_MXNET_PYTHON, or /work/venvs/mxnet-*."""
    candidates = [os.environ.get("FCIS_MXNET_PYTHON", "")] + sorted(glob.glob("/work/venvs/mxnet-*/bin/python"))
    for c in candidates:
        if c and shutil.which(c):
            return c
    return None


@pytest.mark.slow
def test_mxnet_itself_reads_what_the_writer_writes(tmp_path):
    python = _mxnet_python()
    if python is None:
        pytest.skip("no MXNet venv (set FCIS_MXNET_PYTHON to a python with mxnet==1.9.1)")
    rng = np.random.default_rng(1)
    params = {"conv1_weight": rng.standard_normal((2, 3, 3, 3)).astype(np.float32),
              "fc_bias": rng.standard_normal(3), "i32": np.arange(6, dtype=np.int32).reshape(2, 3),
              "bn_moving_var": rng.random(2).astype(np.float16)}
    path = tmp_path / "w.params"
    write_mxnet_params(path, params, aux={"bn_moving_var"})
    script = ("import json, sys, hashlib, mxnet as mx\n"
              "d = mx.nd.load(sys.argv[1])\n"
              "print(json.dumps({k: [str(v.dtype.__name__ if hasattr(v.dtype, '__name__') else v.dtype), "
              "list(v.shape), hashlib.sha256(v.asnumpy().tobytes()).hexdigest()] for k, v in d.items()}))\n")
    try:
        done = subprocess.run([python, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"MXNet venv not usable: {e}")
    if done.returncode != 0 and "No module named 'mxnet'" in done.stderr:
        pytest.skip("that python has no mxnet")
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(loaded) == {f"arg:{k}" for k in params if k != "bn_moving_var"} | {"aux:bn_moving_var"}
    for k, v in params.items():
        key = ("aux:" if k == "bn_moving_var" else "arg:") + k
        dtype, shape, digest = loaded[key]
        assert shape == list(v.shape) and np.dtype(dtype) == v.dtype
        assert digest == hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest(), k
    # the hand-made V1 and legacy files: MXNet reads them as the reader does
    real = read_mxnet_params(FIXTURES / "v2_named.params")
    for variant in ("v1", "legacy"):
        (tmp_path / f"{variant}.params").write_bytes(_rewritten(variant))
        done = subprocess.run([python, "-c", script, str(tmp_path / f"{variant}.params")], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        loaded = json.loads(done.stdout.strip().splitlines()[-1])
        assert [k.split(":", 1)[1] for k in loaded] == list(real)
        for key, (dtype, shape, digest) in loaded.items():
            v = real[key.split(":", 1)[1]]
            assert shape == list(v.shape) and np.dtype(dtype) == v.dtype, (variant, key)
            assert digest == hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest(), (variant, key)


def test_the_reader_imports_no_mxnet():
    code = ("import sys; import fcis.weights.mxnet_params, fcis.weights.chainercv_npz, fcis.weights.class_names; "
            "print('mxnet' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parent.parent, check=True).stdout.split()
    assert out == ["False", "False"]
