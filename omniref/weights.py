"""Checkpoint weights: a from-scratch safetensors reader and the Hub key layout.

A safetensors file is three things back to back (https://github.com/huggingface/safetensors, "Format"):

    [ 8 bytes: N, little-endian u64 ][ N bytes: JSON header ][ raw tensor bytes ...................... ]
                                      {"key": {"dtype": "BF16", "shape": [o, i], "data_offsets": [b, e]}, ...,
                                       "__metadata__": {...}}

`data_offsets` are relative to the first byte after the header. Nothing is compressed, so a tensor is just a
view into the file: we memory-map each file and only touch the bytes of the tensors a computation asks for.
Checkpoints stay in their on-disk dtype (bf16 halves the bytes); an access widens to float32, which is exact
for bf16 (its 16 bits become the high half of the float32 word) and for f16.

A sharded checkpoint (`model-00001-of-00003.safetensors`, ...) comes with `model.safetensors.index.json`
whose `weight_map` names the file of every key.

Every error names the file and the tensor, because "shape mismatch" without a name is useless in a
470-tensor checkpoint.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from .errors import CheckpointError, parse_json, regular_file

__all__ = ["SafetensorsError", "MissingTensorError", "SafetensorsFile", "Weights", "WeightView", "load_weights",
           "save_safetensors", "write_safetensors", "bf16_to_f32", "f32_to_bf16", "take_rows", "BF16Weight",
           "as_float32"]


class SafetensorsError(CheckpointError):
    """A checkpoint file is corrupt, truncated or inconsistent (the message names the file and tensor)."""


class MissingTensorError(SafetensorsError, KeyError):
    """A tensor the model asks for is not in the checkpoint: a CheckpointError naming the key, and still a
    KeyError so that Mapping code (`weights.get(key)`) keeps working."""

    __str__ = Exception.__str__                 # KeyError would quote the message


# safetensors dtype tag -> (numpy dtype of the raw bytes, bytes per element)
# BF16 has no NumPy dtype: we read its raw 16 bits as uint16 and widen them ourselves (bf16_to_f32).
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
MAX_HEADER = 100 * 1024 * 1024  # the format's own limit on the JSON header (100 MB)
MAX_DEPTH = 4                   # {key: {"shape": [..]}}: anything nested deeper is not a safetensors header
MAX_INDEX = 64 * 1024 * 1024    # model.safetensors.index.json is a flat map; 64 MB is ~1M keys


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """[...] uint16 bf16 bit patterns -> [...] float32, exactly (bf16 = the top 16 bits of an f32).

    The result owns its memory (not a float32 view of a uint32 temporary), so once made read-only it provably
    cannot change and the cpp backend may keep its GEMM packing (omniref/_native.py `packed_weight`)."""
    out = np.empty(np.shape(raw), np.float32)                                 # [...]
    np.left_shift(raw, 16, out=out.view(np.uint32), dtype=np.uint32)          # bits into the high half
    return out


def take_rows(table: np.ndarray, ids) -> np.ndarray:
    """Rows `ids` of a [V, H] table in its on-disk dtype (bf16 as uint16) -> [n, H] float32.

    An embedding lookup widens only the rows it reads: a 152064-row bf16 table is ~1.2 GB once widened whole.
    """
    rows = table[np.asarray(ids, np.int64)]                     # [n, H] on-disk dtype
    return bf16_to_f32(rows) if rows.dtype == np.uint16 else rows.astype(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """[...] float32 -> [...] uint16 bf16 bit patterns, round-to-nearest-even (as torch's .to(bfloat16))."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + 0x7FFF            # ties go to the even bf16 value
    out = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    out[nan] = 0x7FC0                                   # keep NaN a NaN (rounding could carry into inf)
    return out


def _is_uint(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


class SafetensorsFile:
    """One memory-mapped .safetensors file. `raw(key)` is a zero-copy view; `[key]` is float32 (or the int dtype)."""

    def __init__(self, path: str | os.PathLike):
        self.path = regular_file(path, "checkpoint file", SafetensorsError)
        try:
            fh = open(self.path, "rb")
        except OSError as e:
            raise SafetensorsError(f"{self.path}: cannot open checkpoint file ({e.strerror})",
                                   file=self.path) from None
        with fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(8)
            if len(head) < 8:
                raise self._error(f"truncated file ({size} bytes; a safetensors file starts with an 8-byte "
                                  "header length)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise self._error(f"header length {n} is larger than the file ({size} bytes) or the format's "
                                  f"limit ({MAX_HEADER}): truncated or not a safetensors file")
            header = parse_json(fh.read(n), self.path, "header", SafetensorsError, MAX_DEPTH)
            if not isinstance(header, dict):
                raise self._error(f"header is a JSON {type(header).__name__}, expected an object")
            self.metadata = header.pop("__metadata__", None) or {}
            if not isinstance(self.metadata, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()):
                raise self._error("__metadata__ must be an object of string values", field="__metadata__")
            self._data_start = 8 + n
            data_len = size - self._data_start
            self.entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
            for key, e in header.items():
                self.entries[key] = self._check_entry(key, e)
            self._check_layout(data_len)
            self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else None

    def _error(self, message: str, field: str | None = None, value=None) -> SafetensorsError:
        return SafetensorsError(f"{self.path}: {message}", file=self.path, field=field, value=value)

    def _check_entry(self, key: str, e) -> tuple[str, tuple[int, ...], int, int]:
        """One header entry -> (dtype, shape, begin, end), its JSON types checked (as the reference's serde)."""
        def bad(what: str):
            return self._error(f"tensor '{key}': {what}", field=key, value=e)
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"header entry {e!r} must be an object with exactly dtype, shape and data_offsets")
        dtype, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise bad(f"unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
        if not isinstance(shape, list) or not all(_is_uint(s) for s in shape):
            raise bad(f"shape {shape!r} must be a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_uint(o) for o in offsets)):
            raise bad(f"data_offsets {offsets!r} must be two non-negative integers [begin, end]")
        begin, end = offsets
        if begin > end:
            raise bad(f"data_offsets [{begin}, {end}] end before they begin")
        expected = int(np.prod(shape, dtype=object)) * DTYPES[dtype].itemsize
        if end - begin != expected:
            raise bad(f"{end - begin} bytes for shape {shape} {dtype} (expected {expected})")
        return dtype, tuple(shape), begin, end

    def _check_layout(self, data_len: int) -> None:
        """Tensors tile the data area exactly: sorted by offset, each starts where the previous ended, the first
        at 0 and the last at the end of the file (the reference's `validate`): no gap, no overlap, no tail.
        Checked in that order of blame: a tensor past the end, then two tensors sharing bytes, then gaps."""
        order = sorted(self.entries.items(), key=lambda kv: kv[1][2:])      # [(key, (dtype, shape, b, e))]
        for key, (_, _, begin, end) in order:
            if end > data_len:
                raise self._error(f"tensor '{key}': data_offsets [{begin}, {end}] lie outside the data "
                                  f"({data_len} bytes): truncated file", field=key, value=[begin, end])
        for (prev, (_, _, _, prev_end)), (key, (_, _, begin, end)) in zip(order, order[1:]):
            if begin < prev_end:
                raise self._error(f"tensor '{key}': data_offsets [{begin}, {end}] overlap tensor '{prev}' "
                                  f"(which ends at {prev_end})", field=key, value=[begin, end])
        pos, prev = 0, None
        for key, (_, _, begin, end) in order:
            if begin != pos:
                where = f"after tensor '{prev}'" if prev else "at the start of the data"
                raise self._error(f"tensor '{key}': data_offsets [{begin}, {end}] leave a gap of {begin - pos} "
                                  f"bytes ({where}, expected begin {pos})", field=key, value=[begin, end])
            pos, prev = end, key
        if pos != data_len:
            raise self._error(f"the tensors cover {pos} bytes but the data area holds {data_len}: "
                              f"{data_len - pos} bytes after the last tensor")

    def keys(self) -> list[str]:
        return list(self.entries)

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def dtype(self, key: str) -> str:
        return self.entries[key][0]

    def shape(self, key: str) -> tuple[int, ...]:
        return self.entries[key][1]

    def raw(self, key: str) -> np.ndarray:
        """The stored bytes as a read-only array view (bf16 as uint16) without copying."""
        dtype, shape, begin, end = self.entries[key]
        if end == begin:
            return np.zeros(shape, DTYPES[dtype])
        buf = np.frombuffer(self._mm, dtype=DTYPES[dtype], count=(end - begin) // DTYPES[dtype].itemsize,
                            offset=self._data_start + begin)
        return buf.reshape(shape)

    def __getitem__(self, key: str) -> np.ndarray:
        """Float tensors widen to float32 (exact for bf16/f16); integer tensors keep their dtype."""
        if key not in self.entries:
            raise MissingTensorError(f"{self.path}: no tensor '{key}'", file=self.path, field=key)
        dtype = self.entries[key][0]
        raw = self.raw(key)
        if dtype == "BF16":
            return bf16_to_f32(raw)
        if dtype in ("F16", "F64", "F32"):
            return raw.astype(np.float32)   # a private, writable copy
        return raw.copy()


# ---------------------------------------------------------------------------------------------------------
# bfloat16 weights kept as their bits (the kernels read them; NumPy sees the exact float32 values)
# ---------------------------------------------------------------------------------------------------------
class BF16Weight:
    """A weight matrix kept as bfloat16 bits (uint16 [N, K]) so decoding streams half the bytes.

    bf16 is the top half of a float32 word, so widening is exact: `float32 = bits << 16`. The weights loader
    may hand these to `linear` instead of float32 arrays; NumPy code sees the widened float32 matrix through
    `np.asarray(w)` (or `.to_float32()`), which is exactly the value a float32 checkpoint load would give.
    """

    __array_priority__ = 10.0

    def __init__(self, bits: np.ndarray):
        bits = np.asarray(bits)
        if bits.dtype != np.uint16:
            raise TypeError(f"BF16Weight needs uint16 bfloat16 bits, got dtype {bits.dtype}")
        if bits.ndim != 2:
            raise ValueError(f"BF16Weight must be 2-D [N, K], got shape {bits.shape}")
        self.bits = np.ascontiguousarray(bits)  # [N, K] uint16

    @classmethod
    def from_float32(cls, w: np.ndarray) -> "BF16Weight":
        """Round a float32 matrix to bfloat16 (round to nearest even, NaN kept NaN): `f32_to_bf16`."""
        return cls(f32_to_bf16(w))

    @property
    def shape(self) -> tuple[int, int]:
        return self.bits.shape

    @property
    def ndim(self) -> int:
        return 2

    @property
    def dtype(self):
        return np.dtype(np.float32)  # what it means to the maths: float32 values

    @property
    def nbytes(self) -> int:
        return self.bits.nbytes

    def to_float32(self) -> np.ndarray:
        """[N, K] float32, exact."""
        return bf16_to_f32(self.bits)

    def __array__(self, dtype=None, copy=None):
        out = self.to_float32()
        return out if dtype is None else out.astype(dtype)

    @property
    def T(self) -> np.ndarray:  # lets `x @ w.T` in NumPy code work unchanged
        return self.to_float32().T

    def __getitem__(self, index) -> np.ndarray:  # embedding lookups `table[ids]`: only those rows are widened
        return bf16_to_f32(self.bits[index])

    def __repr__(self) -> str:
        return f"BF16Weight(shape={self.shape})"


def as_float32(w) -> np.ndarray:
    """float32 view of a weight that may be a BF16Weight (for NumPy code paths)."""
    return w.to_float32() if isinstance(w, BF16Weight) else w



def keeps_bf16() -> bool:
    """Whether the active compute backend takes BF16Weight as it is. The kernels layer (omniref.backend)
    replaces this when it loads; until then every tensor widens to float32."""
    return False


class Weights(Mapping):
    """All tensors of a checkpoint directory (single file or sharded), float32 on access.

    Widened tensors are kept in a least-recently-used cache of at most `OMNIREF_WIDEN_CACHE_MB` (512 MB):
    a small model stays widened once, while a checkpoint bigger than the budget is widened per use (a layer
    at a time, as the forward pass asks for it) so the NumPy path never holds a float32 copy of the whole
    model next to the memory-mapped bf16 one.

    w = load_weights("tiny_omni"); w["thinker.lm_head.weight"] -> [V, H] float32
    w.scope("thinker.audio_tower.")["conv2d1.weight"] -> the same as w["thinker.audio_tower.conv2d1.weight"]
    """

    def __init__(self, files: dict[str, SafetensorsFile], key_to_file: dict[str, str], where: str):
        self.files, self.key_to_file, self.where = files, key_to_file, where
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()     # least recently used first
        self._cache_bytes = 0
        self.cache_budget = int(float(os.environ.get("OMNIREF_WIDEN_CACHE_MB", "512")) * 2**20)
        # keep_bf16: on the cpp backend a 2-D BF16 tensor comes back as `BF16Weight` (the file's own
        # bits, zero-copy) so matmuls stream half the bytes; exact, since widening bf16 is. On by default;
        # OMNIREF_BF16_WEIGHTS=0 widens everything to float32 instead. The NumPy backend always gets float32.
        self.keep_bf16 = os.environ.get("OMNIREF_BF16_WEIGHTS", "1").strip().lower() not in ("0", "false", "no")
        self._bf16_cache: dict[str, object] = {}

    def file_of(self, key: str) -> SafetensorsFile:
        return self.files[self.key_to_file[key]]

    def __getitem__(self, key: str) -> np.ndarray:
        if self.keep_bf16 and key in self.key_to_file:
            w = self._bf16(key)
            if w is not None:
                return w
        a = self._cache.get(key)
        if a is not None:
            self._cache.move_to_end(key)
            return a
        if key not in self.key_to_file:
            raise MissingTensorError(f"{self.where}: checkpoint has no tensor '{key}'", file=self.where, field=key)
        a = self.file_of(key)[key]
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            self._non_finite(key, int(np.count_nonzero(~np.isfinite(a))))
        a.setflags(write=False)         # shared by every caller: a constant (copy it to experiment with it)
        if a.nbytes <= self.cache_budget:   # keep it, dropping the least recently used beyond the budget
            while self._cache and self._cache_bytes + a.nbytes > self.cache_budget:
                self._cache_bytes -= self._cache.popitem(last=False)[1].nbytes
            self._cache[key] = a
            self._cache_bytes += a.nbytes
        return a

    def _bf16(self, key: str):
        """`BF16Weight` of a 2-D BF16 tensor when the cpp backend is active, else None."""
        if key not in self._bf16_cache:
            f = self.file_of(key)
            self._bf16_cache[key] = None
            if f.dtype(key) == "BF16" and len(f.shape(key)) == 2:
                raw = f.raw(key)
                bad = (raw & np.uint16(0x7F80)) == np.uint16(0x7F80)     # all exponent bits set: inf or NaN
                if bad.any():
                    self._non_finite(key, int(np.count_nonzero(bad)))
                self._bf16_cache[key] = BF16Weight(raw)
        w = self._bf16_cache[key]
        if w is None:
            return None
        return w if keeps_bf16() else None

    def _non_finite(self, key: str, n: int) -> None:
        """A NaN or inf weight would flow silently into every output: refuse it when the tensor is first read
        (one pass over each tensor, once; the bytes have the right size, so only their values tell)."""
        raise SafetensorsError(f"{self.file_of(key).path}: tensor '{key}' holds {n} NaN or inf values",
                               file=self.file_of(key).path, field=key, value=n)

    def shape(self, key: str) -> tuple[int, ...]:
        return self.file_of(key).shape(key)

    def dtype(self, key: str) -> str:
        return self.file_of(key).dtype(key)

    def raw(self, key: str) -> np.ndarray:
        """The on-disk array (bf16 as uint16), zero-copy: for kernels that multiply bf16 weights directly."""
        return self.file_of(key).raw(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.key_to_file)

    def __len__(self) -> int:
        return len(self.key_to_file)

    def __contains__(self, key: object) -> bool:
        return key in self.key_to_file

    def scope(self, prefix: str) -> "WeightView":
        return WeightView(self, prefix)

    def drop_cache(self) -> None:
        self._cache.clear()
        self._cache_bytes = 0
        self._bf16_cache.clear()


class WeightView(Mapping):
    """The tensors under one key prefix, addressed by the rest of the key (`view["layers.0.fc1.weight"]`)."""

    def __init__(self, weights: Weights, prefix: str):
        self.weights, self.prefix = weights, prefix

    def __getitem__(self, key: str) -> np.ndarray:
        return self.weights[self.prefix + key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (self.prefix + key) in self.weights

    def __iter__(self) -> Iterator[str]:
        n = len(self.prefix)
        return (k[n:] for k in self.weights if k.startswith(self.prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def scope(self, prefix: str) -> "WeightView":
        return WeightView(self.weights, self.prefix + prefix)

    def shape(self, key: str) -> tuple[int, ...]:
        return self.weights.shape(self.prefix + key)

    def raw(self, key: str) -> np.ndarray:
        return self.weights.raw(self.prefix + key)


def load_weights(path: str | os.PathLike) -> Weights:
    """A checkpoint directory (or one .safetensors file) -> Weights.

    Directory rules (as `from_pretrained`): `model.safetensors.index.json` if present (sharded), else
    `model.safetensors`, else the only `*.safetensors` file.
    """
    path = Path(path)
    if not path.is_dir():
        f = SafetensorsFile(path)                   # a regular file, or a CheckpointError naming it
        return Weights({path.name: f}, {k: path.name for k in f.keys()}, str(path))
    index = path / "model.safetensors.index.json"
    if os.path.lexists(index):
        weight_map = _read_index(index)
        files = {name: SafetensorsFile(path / name) for name in sorted(set(weight_map.values()))}
        for key, name in weight_map.items():
            if key not in files[name]:
                raise SafetensorsError(f"{path / name}: tensor '{key}' listed in the index is missing",
                                       file=path / name, field=key)
        for name, f in files.items():
            for key in f.keys():
                if weight_map.get(key) != name:
                    raise SafetensorsError(f"{path / name}: tensor '{key}' is not in the index's weight_map",
                                           file=path / name, field=key)
        return Weights(files, dict(weight_map), str(path))
    single = path / "model.safetensors"
    candidates = [single] if os.path.lexists(single) else sorted(path.glob("*.safetensors"))
    if len(candidates) != 1:
        raise SafetensorsError(f"{path}: expected model.safetensors or model.safetensors.index.json "
                               f"(found {len(candidates)} .safetensors files)", file=path)
    f = SafetensorsFile(candidates[0])
    return Weights({candidates[0].name: f}, {k: candidates[0].name for k in f.keys()}, str(path))


def _read_index(index: Path) -> dict[str, str]:
    """model.safetensors.index.json -> its weight_map {key: shard file name}, every entry checked.

    A shard must be a plain file name in the same directory: a path ("../x", "/etc/passwd") would read
    outside the checkpoint.
    """
    regular_file(index, "checkpoint index", SafetensorsError, MAX_INDEX)
    data = parse_json(index.read_bytes(), index, "index", SafetensorsError, max_depth=3)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise SafetensorsError(f"{index}: needs a non-empty 'weight_map' object {{key: shard file name}}",
                               file=index, field="weight_map")
    for key, name in weight_map.items():
        if not (isinstance(name, str) and name.endswith(".safetensors") and Path(name).name == name
                and name not in (".", "..")):
            raise SafetensorsError(f"{index}: weight_map['{key}'] = {name!r}, expected a .safetensors file name "
                                   "in the checkpoint directory", file=index, field=key, value=name)
    return weight_map


def save_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray], *,
                     dtype: str | None = None, metadata: dict | None = None) -> None:
    """Write tensors to one .safetensors file (keys sorted, 8-byte aligned header, as the reference writer).

    dtype="BF16" stores float tensors as bf16 (round to nearest even); otherwise each array's own dtype.
    """
    inv = {np.dtype(v).str: k for k, v in DTYPES.items() if k not in ("BF16", "U16")}
    inv[np.dtype("<u2").str] = "U16"
    entries, blobs = [], {}
    for key in sorted(tensors):
        arr = np.asarray(tensors[key])
        if dtype == "BF16" and arr.dtype.kind == "f":
            tag, data = "BF16", f32_to_bf16(arr.astype(np.float32))
        else:
            data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
            tag = inv.get(data.dtype.str)
            if tag is None:
                raise TypeError(f"save_safetensors: tensor '{key}' has unsupported dtype {arr.dtype}")
        entries.append((key, tag, arr.shape))
        blobs[key] = np.ascontiguousarray(data).tobytes()
    write_safetensors(path, entries, lambda key: [blobs[key]], metadata=metadata)


def write_safetensors(path: str | os.PathLike, entries, chunks, *, metadata: dict | None = None) -> int:
    """Stream one .safetensors file from its table of contents, without holding the tensors.

    entries: [(key, dtype tag, shape)] in file order; chunks(key): the tensor's raw little-endian bytes as an
    iterable of bytes-like pieces (a large tensor can be produced slice by slice). Returns the data bytes.
    """
    header: dict = {"__metadata__": {str(k): str(v) for k, v in (metadata or {}).items()}} if metadata else {}
    offset = 0
    for key, tag, shape in entries:
        nbytes = int(np.prod(shape, dtype=np.int64)) * DTYPES[tag].itemsize
        header[key] = {"dtype": tag, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for key, _, _ in entries:
            for piece in chunks(key):
                fh.write(piece)
    return offset
