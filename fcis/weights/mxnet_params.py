"""MXNet's NDArray list files (``.params``, ``mx.nd.save``) read and written with NumPy alone.

The layout, from MXNet's ``src/ndarray/ndarray.cc`` (``NDArray::Save``/``Load``/``LegacyLoad``,
the list ``NDArray::Save(fo, data, names)``), ``include/mxnet/tuple.h`` (``Tuple::Save``/``Load``)
and ``include/mxnet/base.h`` (``Context::Save``); every integer little-endian:

- the list: ``uint64`` magic ``0x112``, ``uint64`` reserved (0), ``uint64`` array count, the
  arrays, then ``uint64`` name count (0, or the array count) and each name as ``uint64`` length
  plus its bytes. Parameter files name each array ``arg:NAME`` or ``aux:NAME``.
- one array, in the variant its writer used:

  ========== ========================= ===============================================
  variant    written by                record
  ========== ========================= ===============================================
  legacy     MXNet before mid-2017     ``uint32`` ndim, ndim ``uint32`` dims, context, dtype flag, values
  V1         MXNet 0.10 (mid-2017)     ``uint32`` 0xF993fac8, shape, context, dtype flag, values
  V2         MXNet >= 0.11 (sparse)    ``uint32`` 0xF993fac9, ``int32`` storage type, [sparse: storage
                                       shape], shape, context, dtype flag, [sparse: aux types and
                                       shapes], values, [sparse: aux values]
  V3         MXNet >= 1.5, np-shape    ``uint32`` 0xF993faca, then as V2 (dense only); ndim 0 is a
                                       0-d array, ndim -1 or a dim -1 an unknown shape
  ========== ========================= ===============================================

  where shape is ``int32`` ndim then ndim ``int64`` dims, context ``int32`` device type (1 cpu,
  2 gpu, 3 cpu pinned, 5 cpu shared) and ``int32`` device id, and the dtype flag mshadow's
  (0 float32, 1 float64, 2 float16, 3 uint8, 4 int32, 5 int8, 6 int64, 7 bool, 8 int16,
  9 uint16, 10 uint32, 11 uint64; 12 bfloat16 has no NumPy type and is refused). An array with an
  empty shape (ndim 0 before V3, an unknown shape in V3) is a "none" array: its record ends after
  the shape.

Sparse arrays (storage types 1 row_sparse, 2 csr) are parsed past and refused by
:func:`read_mxnet_params` with their name: no model file of the official code holds one.
"""

from __future__ import annotations

import io
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Mapping

import numpy as np

from .errors import WeightsFileError

__all__ = ["read_mxnet_params", "write_mxnet_params", "read_ndarray_list", "NDArrayList",
           "LIST_MAGIC", "V1_MAGIC", "V2_MAGIC", "V3_MAGIC", "DTYPE_FLAGS"]

LIST_MAGIC = 0x112
V1_MAGIC = 0xF993FAC8
V2_MAGIC = 0xF993FAC9
V3_MAGIC = 0xF993FACA

#: mshadow's type flags (3rdparty/mshadow/mshadow/base.h) -> NumPy dtypes (little-endian).
DTYPE_FLAGS: dict[int, np.dtype] = {
    0: np.dtype("<f4"), 1: np.dtype("<f8"), 2: np.dtype("<f2"), 3: np.dtype("u1"), 4: np.dtype("<i4"),
    5: np.dtype("i1"), 6: np.dtype("<i8"), 7: np.dtype("?"), 8: np.dtype("<i2"), 9: np.dtype("<u2"),
    10: np.dtype("<u4"), 11: np.dtype("<u8"),
}
_FLAG_OF = {dt.newbyteorder("="): flag for flag, dt in DTYPE_FLAGS.items()}
_STORAGE = {0: "dense", 1: "row_sparse", 2: "csr"}
_AUX_ARRAYS = {1: 1, 2: 2}          # row_sparse: row indices; csr: indptr and column indices
_DEVICES = {1: "cpu", 2: "gpu", 3: "cpu_pinned", 5: "cpu_shared"}
_PREFIXES = ("arg:", "aux:")


@dataclass
class NDArrayList:
    """What an NDArray list file holds, as stored.

    ``arrays[i]`` is the i-th array (C-order, native byte order), or None for a "none" array or a
    sparse one (``storage[i]`` says which: "dense", "row_sparse", "csr" or "none"); ``names`` the
    stored names with their ``arg:``/``aux:`` prefixes (empty when the file stores none);
    ``variants[i]`` the record variant ("legacy", "v1", "v2" or "v3")."""

    arrays: list[np.ndarray | None]
    names: list[str]
    variants: list[str]
    storage: list[str]


class _Reader:
    """Exact reads from a binary file, each failure a :class:`WeightsFileError` naming the file."""

    def __init__(self, f: io.BufferedReader, path: str, size: int) -> None:
        self.f, self.path, self.size = f, path, size

    @property
    def left(self) -> int:
        return self.size - self.f.tell()

    def truncated(self, what: str) -> WeightsFileError:
        return WeightsFileError(f"{self.path}: truncated MXNet file: it ends inside {what} "
                                f"(at byte {self.f.tell()} of {self.size})")

    def bytes(self, n: int, what: str) -> bytes:
        if n > self.left:
            raise self.truncated(what)
        return self.f.read(n)

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack(fmt, self.bytes(struct.calcsize(fmt), what))

    def u32(self, what: str) -> int:
        return self.unpack("<I", what)[0]

    def i32(self, what: str) -> int:
        return self.unpack("<i", what)[0]

    def u64(self, what: str) -> int:
        return self.unpack("<Q", what)[0]

    def values(self, dtype: np.dtype, shape: tuple[int, ...], what: str) -> np.ndarray:
        count = math.prod(shape)          # Python ints: no overflow on a corrupt shape
        nbytes = count * dtype.itemsize
        if nbytes > self.left:
            raise self.truncated(what)
        buf = bytearray(nbytes)
        if self.f.readinto(buf) != nbytes:
            raise self.truncated(what)
        return np.frombuffer(buf, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def read_ndarray_list(path: str | os.PathLike) -> NDArrayList:
    """Every array and name of an MXNet NDArray list file (``mx.nd.save``, a ``.params`` file),
    in any record variant MXNet has written (see the module docstring).

    Raises :class:`WeightsFileError` (a ``ValueError``) naming the file for a file that is not an
    NDArray list, a truncated one, an unknown dtype flag, storage type or device, or a name count
    that differs from the array count."""
    path_s = os.fspath(path)
    p = Path(path_s)
    if not p.is_file():
        raise WeightsFileError(f"MXNet parameter file not found: {path_s}")
    with open(p, "rb") as f:
        r = _Reader(f, path_s, p.stat().st_size)
        if r.size < 24:
            raise WeightsFileError(f"{path_s}: not an MXNet NDArray file ({r.size} bytes, shorter than its header)")
        magic, _reserved = r.unpack("<QQ", "the header")
        if magic != LIST_MAGIC:
            raise WeightsFileError(f"{path_s}: not an MXNet NDArray file (header magic 0x{magic:x}, expected "
                                   f"0x{LIST_MAGIC:x}; a .params file of mx.nd.save / save_checkpoint is)")
        count = r.u64("the array count")
        if count > r.left // 4:       # every record takes at least 4 bytes
            raise WeightsFileError(f"{path_s}: not an MXNet NDArray file or truncated (it claims {count} arrays "
                                   f"in {r.left} bytes)")
        out = NDArrayList([], [], [], [])
        for i in range(count):
            array, variant, storage = _read_array(r, i)
            out.arrays.append(array)
            out.variants.append(variant)
            out.storage.append(storage)
        num_names = r.u64(f"the name count (after {count} arrays)")
        if num_names not in (0, count):
            raise WeightsFileError(f"{path_s}: {count} arrays but {num_names} names (MXNet requires 0 or one per "
                                   "array): corrupt file")
        for i in range(num_names):
            length = r.u64(f"the length of name {i}")
            raw = r.bytes(length, f"name {i} ({length} bytes)")
            try:
                out.names.append(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise WeightsFileError(f"{path_s}: name {i} is not UTF-8 text ({e}): corrupt file") from None
    return out


def _shape(r: _Reader, what: str) -> tuple[int, ...] | None:
    """A ``Tuple<int64>``: int32 ndim then int64 dims. None: an unknown shape (V3 semantics)."""
    ndim = r.i32(what)
    if ndim < -1 or ndim > 32:
        raise WeightsFileError(f"{r.path}: {what} has {ndim} dimensions: not an MXNet NDArray record (corrupt file)")
    if ndim == -1:
        return None
    dims = r.unpack(f"<{ndim}q", what) if ndim else ()
    if any(d < -1 for d in dims):
        raise WeightsFileError(f"{r.path}: {what} {dims} has a negative size: corrupt file")
    if any(d == -1 for d in dims):
        return None
    return tuple(int(d) for d in dims)


def _context_and_dtype(r: _Reader, what: str) -> np.dtype:
    dev_type, _dev_id = r.unpack("<ii", f"the context of {what}")
    if dev_type not in _DEVICES:
        raise WeightsFileError(f"{r.path}: {what} has device type {dev_type} (MXNet's are "
                               f"{sorted(_DEVICES)}): not an MXNet NDArray record, or a corrupt one")
    flag = r.i32(f"the dtype flag of {what}")
    if flag not in DTYPE_FLAGS:
        extra = " (bfloat16, which NumPy has no type for)" if flag == 12 else ""
        raise WeightsFileError(f"{r.path}: {what} has dtype flag {flag}{extra}; readable flags are "
                               + ", ".join(f"{k} {v.name}" for k, v in DTYPE_FLAGS.items()))
    return DTYPE_FLAGS[flag]


def _read_array(r: _Reader, i: int) -> tuple[np.ndarray | None, str, str]:
    what = f"array {i}"
    magic = r.u32(f"the record of {what}")
    if magic not in (V1_MAGIC, V2_MAGIC, V3_MAGIC):
        # legacy: the uint32 just read is ndim, then ndim uint32 dims
        if magic > 32:
            raise WeightsFileError(f"{r.path}: {what} starts with 0x{magic:08x}, neither an NDArray magic "
                                   "(0xf993fac8/9/a) nor a legacy dimension count: corrupt or not an MXNet file")
        dims = r.unpack(f"<{magic}I", f"the shape of {what}") if magic else ()
        if not dims:
            return None, "legacy", "none"
        dtype = _context_and_dtype(r, what)
        return r.values(dtype, tuple(dims), f"the values of {what}"), "legacy", "dense"
    if magic == V1_MAGIC:
        shape = _shape(r, f"the shape of {what}")
        if not shape:
            return None, "v1", "none"
        dtype = _context_and_dtype(r, what)
        return r.values(dtype, shape, f"the values of {what}"), "v1", "dense"
    v3 = magic == V3_MAGIC
    variant = "v3" if v3 else "v2"
    stype = r.i32(f"the storage type of {what}")
    if stype not in _STORAGE or (v3 and stype != 0):
        raise WeightsFileError(f"{r.path}: {what} has storage type {stype} ({variant} record; MXNet's are 0 dense, "
                               "1 row_sparse, 2 csr, and V3 records are dense): corrupt file")
    storage_shape = _shape(r, f"the storage shape of {what}") if stype else None
    shape = _shape(r, f"the shape of {what}")
    if shape is None or (not v3 and shape == ()):
        return None, variant, "none"
    dtype = _context_and_dtype(r, what)
    if stype == 0:
        return r.values(dtype, shape, f"the values of {what}"), variant, "dense"
    # sparse: read past it (aux types and shapes, the values, the aux values); refused by name later
    aux = []
    for j in range(_AUX_ARRAYS[stype]):
        flag = r.i32(f"aux type {j} of {what}")
        aux_shape = _shape(r, f"aux shape {j} of {what}")
        if flag not in DTYPE_FLAGS:
            raise WeightsFileError(f"{r.path}: {what} has aux dtype flag {flag}: corrupt file")
        aux.append((DTYPE_FLAGS[flag], aux_shape or ()))
    r.values(dtype, storage_shape or (0,), f"the values of {what}")
    for j, (aux_dtype, aux_shape) in enumerate(aux):
        r.values(aux_dtype, aux_shape or (0,), f"aux values {j} of {what}")
    return None, variant, _STORAGE[stype]


def read_mxnet_params(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """name -> array of an MXNet parameter file (``prefix-0000.params``), names as stored minus
    the ``arg:``/``aux:`` prefix (``conv1_weight``, ``bn_conv1_moving_mean``), in file order.

    Raises :class:`WeightsFileError` (a ``ValueError``) naming the file and, where known, the
    parameter: not an NDArray list, truncated, unknown dtype flag, a name count that differs
    from the array count, arrays without names, a sparse or empty array, a name stored twice."""
    path_s = os.fspath(path)
    stored = read_ndarray_list(path_s)
    if not stored.names and stored.arrays:
        raise WeightsFileError(f"{path_s}: an MXNet list of {len(stored.arrays)} unnamed arrays (mx.nd.save of a "
                               "list), not a parameter file: a model's .params file names each array")
    out: dict[str, np.ndarray] = {}
    for name, array, storage in zip(stored.names, stored.arrays, stored.storage):
        short = name[4:] if name.startswith(_PREFIXES) else name
        if storage in ("row_sparse", "csr"):
            raise WeightsFileError(f"{path_s}: parameter {name!r} is a sparse ({storage}) array; only dense "
                                   "parameters are read (no model file of the official code holds a sparse one)")
        if array is None:
            raise WeightsFileError(f"{path_s}: parameter {name!r} holds no data (an empty NDArray)")
        if short in out:
            raise WeightsFileError(f"{path_s}: parameter {short!r} is stored twice (as arg: and aux:?)")
        out[short] = array
    return out


def write_mxnet_params(path: str | os.PathLike, params: Mapping[str, np.ndarray], *,
                       aux: Collection[str] = ()) -> None:
    """Write ``params`` as MXNet 1.x's ``mx.nd.save`` does (V2 records, dense, on the CPU): each
    name prefixed ``aux:`` when in ``aux`` (BatchNorm moving statistics), else ``arg:``.

    Arrays must have a dtype MXNet has a flag for and at least one dimension (V2 cannot store a
    0-d array: ndim 0 means "none"). Raises ``ValueError`` otherwise, or for ``aux`` names that
    are not in ``params``."""
    missing = sorted(set(aux) - set(params))
    if missing:
        raise ValueError(f"aux names not in params: {missing[:5]}")
    buf = io.BytesIO()
    buf.write(struct.pack("<QQQ", LIST_MAGIC, 0, len(params)))
    for name, value in params.items():
        arr = np.asarray(value)
        flag = _FLAG_OF.get(arr.dtype.newbyteorder("="))
        if flag is None:
            raise ValueError(f"{name}: dtype {arr.dtype} has no MXNet type flag")
        if arr.ndim == 0:
            raise ValueError(f"{name}: a 0-d array cannot be stored in a V2 record (give it shape (1,))")
        buf.write(struct.pack("<Iii", V2_MAGIC, 0, arr.ndim))
        buf.write(struct.pack(f"<{arr.ndim}q", *arr.shape))
        buf.write(struct.pack("<iii", 1, 0, flag))
        buf.write(np.ascontiguousarray(arr, dtype=DTYPE_FLAGS[flag]).tobytes())
    buf.write(struct.pack("<Q", len(params)))
    for name in params:
        raw = (("aux:" if name in aux else "arg:") + name).encode("utf-8")
        buf.write(struct.pack("<Q", len(raw)) + raw)
    Path(path).write_bytes(buf.getvalue())
