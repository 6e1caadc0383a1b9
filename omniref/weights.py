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
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

__all__ = ["SafetensorsError", "SafetensorsFile", "Weights", "WeightView", "load_weights",
           "save_safetensors", "bf16_to_f32", "f32_to_bf16", "take_rows", "BF16Weight", "as_float32"]


class SafetensorsError(ValueError):
    """A checkpoint file is corrupt, truncated or inconsistent (the message names the file and tensor)."""


# safetensors dtype tag -> (numpy dtype of the raw bytes, bytes per element)
# BF16 has no NumPy dtype: we read its raw 16 bits as uint16 and widen them ourselves (bf16_to_f32).
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
MAX_HEADER = 100 * 1024 * 1024  # the format's own limit on the JSON header (100 MB)


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


class SafetensorsFile:
    """One memory-mapped .safetensors file. `raw(key)` is a zero-copy view; `[key]` is float32 (or the int dtype)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            fh = open(self.path, "rb")
        except OSError as e:
            raise SafetensorsError(f"{self.path}: cannot open checkpoint file ({e.strerror})") from None
        with fh:
            head = fh.read(8)
            if len(head) < 8:
                raise SafetensorsError(f"{self.path}: truncated file ({size} bytes; a safetensors file starts "
                                       "with an 8-byte header length)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise SafetensorsError(f"{self.path}: header length {n} is larger than the file "
                                       f"({size} bytes): truncated or not a safetensors file")
            try:
                header = json.loads(fh.read(n).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise SafetensorsError(f"{self.path}: header is not valid JSON ({e})") from None
            if not isinstance(header, dict):
                raise SafetensorsError(f"{self.path}: header is not a JSON object")
            self.metadata = header.pop("__metadata__", None) or {}
            self._data_start = 8 + n
            data_len = size - self._data_start
            self.entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
            for key, e in header.items():
                self.entries[key] = self._check_entry(key, e, data_len)
            self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else None

    def _check_entry(self, key: str, e: dict, data_len: int) -> tuple[str, tuple[int, ...], int, int]:
        where = f"{self.path}: tensor '{key}'"
        try:
            dtype, shape, (begin, end) = e["dtype"], tuple(int(s) for s in e["shape"]), e["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{where}: malformed header entry {e!r}") from None
        if dtype not in DTYPES:
            raise SafetensorsError(f"{where}: unknown dtype '{dtype}' (known: {', '.join(DTYPES)})")
        if any(s < 0 for s in shape):
            raise SafetensorsError(f"{where}: negative dimension in shape {list(shape)}")
        if not (0 <= begin <= end):
            raise SafetensorsError(f"{where}: bad data_offsets [{begin}, {end}]")
        if end > data_len:
            raise SafetensorsError(f"{where}: data_offsets [{begin}, {end}] lie outside the data "
                                   f"({data_len} bytes): truncated file")
        expected = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype].itemsize
        if end - begin != expected:
            raise SafetensorsError(f"{where}: {end - begin} bytes for shape {list(shape)} {dtype} "
                                   f"(expected {expected})")
        return dtype, shape, begin, end

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
            raise KeyError(f"{self.path}: no tensor '{key}'")
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
        """Round a float32 matrix to bfloat16 (round to nearest even, NaN kept NaN)."""
        w = np.ascontiguousarray(w, dtype=np.float32)
        u = w.view(np.uint32)
        rounded = ((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
        nan = np.isnan(w)
        rounded[nan] = ((u[nan] >> 16) | np.uint32(0x40)).astype(np.uint16)  # keep a quiet NaN
        return cls(rounded)

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
        return (self.bits.astype(np.uint32) << 16).view(np.float32)

    def __array__(self, dtype=None, copy=None):
        out = self.to_float32()
        return out if dtype is None else out.astype(dtype)

    @property
    def T(self) -> np.ndarray:  # lets `x @ w.T` in NumPy code work unchanged
        return self.to_float32().T

    def __getitem__(self, index) -> np.ndarray:  # embedding lookups `table[ids]`: only those rows are widened
        return (self.bits[index].astype(np.uint32) << 16).view(np.float32)

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
    """All tensors of a checkpoint directory (single file or sharded), float32 on access, cached.

    w = load_weights("tiny_omni"); w["thinker.lm_head.weight"] -> [V, H] float32
    w.scope("thinker.audio_tower.")["conv2d1.weight"] -> the same as w["thinker.audio_tower.conv2d1.weight"]
    """

    def __init__(self, files: dict[str, SafetensorsFile], key_to_file: dict[str, str], where: str):
        self.files, self.key_to_file, self.where = files, key_to_file, where
        self._cache: dict[str, np.ndarray] = {}
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
        if key not in self._cache:
            if key not in self.key_to_file:
                raise KeyError(f"{self.where}: checkpoint has no tensor '{key}'")
            a = self.file_of(key)[key]
            a.setflags(write=False)     # shared by every caller: a constant (copy it to experiment with it)
            self._cache[key] = a
        return self._cache[key]

    def _bf16(self, key: str):
        """`BF16Weight` of a 2-D BF16 tensor when the cpp backend is active, else None."""
        if key not in self._bf16_cache:
            f = self.file_of(key)
            self._bf16_cache[key] = None
            if f.dtype(key) == "BF16" and len(f.shape(key)) == 2:
                self._bf16_cache[key] = BF16Weight(f.raw(key))
        w = self._bf16_cache[key]
        if w is None:
            return None
        return w if keeps_bf16() else None

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
    if path.is_file():
        f = SafetensorsFile(path)
        return Weights({path.name: f}, {k: path.name for k in f.keys()}, str(path))
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such checkpoint directory or file")
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise SafetensorsError(f"{index}: not a valid index (needs a 'weight_map' object): {e}") from None
        files = {name: SafetensorsFile(path / name) for name in sorted(set(weight_map.values()))}
        for key, name in weight_map.items():
            if key not in files[name]:
                raise SafetensorsError(f"{path / name}: tensor '{key}' listed in the index is missing")
        for name, f in files.items():
            for key in f.keys():
                if weight_map.get(key) != name:
                    raise SafetensorsError(f"{path / name}: tensor '{key}' is not in the index's weight_map")
        return Weights(files, dict(weight_map), str(path))
    single = path / "model.safetensors"
    candidates = [single] if single.exists() else sorted(path.glob("*.safetensors"))
    if len(candidates) != 1:
        raise FileNotFoundError(f"{path}: expected model.safetensors or model.safetensors.index.json "
                                f"(found {len(candidates)} .safetensors files)")
    f = SafetensorsFile(candidates[0])
    return Weights({candidates[0].name: f}, {k: candidates[0].name for k in f.keys()}, str(path))


def save_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray], *,
                     dtype: str | None = None, metadata: dict | None = None) -> None:
    """Write tensors to one .safetensors file (keys sorted, 8-byte aligned header, as the reference writer).

    dtype="BF16" stores float tensors as bf16 (round to nearest even); otherwise each array's own dtype.
    """
    inv = {np.dtype(v).str: k for k, v in DTYPES.items() if k not in ("BF16", "U16")}
    inv[np.dtype("<u2").str] = "U16"
    header: dict = {"__metadata__": {str(k): str(v) for k, v in (metadata or {}).items()}} if metadata else {}
    blobs, offset = [], 0
    for key in sorted(tensors):
        arr = np.asarray(tensors[key])
        if dtype == "BF16" and arr.dtype.kind == "f":
            tag, data = "BF16", f32_to_bf16(arr.astype(np.float32))
        else:
            data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
            tag = inv.get(data.dtype.str)
            if tag is None:
                raise TypeError(f"save_safetensors: tensor '{key}' has unsupported dtype {arr.dtype}")
        b = np.ascontiguousarray(data).tobytes()
        header[key] = {"dtype": tag, "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for b in blobs:
            fh.write(b)
