"""Fuzz cases: bad (and benign) inputs generated from the committed golden cases into a temporary folder.

Each generator returns `fuzz_harness.Case`s: CLI arguments plus the expected outcome, either an omniref error
class and a regex for the culprit the message must name, or "same output as the unmutated baseline". Every
choice is drawn from one seeded `random.Random`, so a seed reproduces a run exactly.

    checkpoint   the safetensors header and layout of tests/golden/tiny_f32 (one file) and tiny_bf16_sharded
                 (index + shards): truncation, bad JSON, duplicate keys, offsets out of order / overlapping /
                 with gaps, dtype relabels, shape edits, missing / renamed / extra tensors, non-regular files
    config       every validated field of config.json set to a wrong type, out of range, or inconsistent;
                 JSON-level damage; valid values the checkpoint disagrees with
    media        WAV headers and chunks (zero fields, odd sizes, JUNK, truncation, rates), images, videos
    tokens       --prompt-ids and sampling options out of range
    cli          unknown commands, missing arguments, outputs onto inputs or existing files, bad env values
"""
from __future__ import annotations

import functools
import json
import os
import random
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np

from fuzz_harness import Case

ROOT = Path(__file__).resolve().parent.parent
F32 = ROOT / "tests" / "golden" / "tiny_f32"
SHARDED = ROOT / "tests" / "golden" / "tiny_bf16_sharded"
SPEECH = ROOT / "omniref" / "data" / "speech.wav"

CKPT = "checkpoint mutants (generate)"
CONFIG = "config mutants (generate)"
CONFIG_VERIFY = "config mutants (verify)"
MEDIA = "media (WAV / image / video)"
TOKENS = "token / code inputs"
CLI = "CLI misuse"


def generate_argv(ckpt, *extra) -> list:
    return ["generate", "--checkpoint", str(ckpt), "--prompt-ids", "5,6,7", "--max-new-tokens", "2", *extra]


def _case_dir(src: Path, dst: Path, replace: tuple = ()) -> Path:
    """A copy of case `src` made of symlinks, except the names in `replace` (the caller writes those)."""
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.name not in replace:
            (dst / p.name).symlink_to(p)
    return dst


SPECIAL_FILES = ("fifo", "dir", "dev_zero", "missing")


def special_file(path: Path, kind: str) -> None:
    """Put a non-regular file (or nothing) at `path`: what every command must refuse before opening it."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    elif kind == "dev_zero":
        path.symlink_to("/dev/zero")
    elif kind == "dangling":
        path.symlink_to(path.parent / "nowhere")


def _esc(s: str) -> str:
    return re.escape(str(s))


# ---------------------------------------------------------------------------------------------- safetensors
def read_st(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def st_bytes(header, data: bytes, header_text: bytes | None = None, n: int | None = None) -> bytes:
    text = header_text if header_text is not None else json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text) if n is None else n) + text + data


def _relayout(header: dict, data: bytes, drop=(), add=None) -> tuple[dict, bytes]:
    """Rebuild a consistent file without the keys in `drop` and with `add` {key: (dtype, shape, bytes)}."""
    meta = header.get("__metadata__")
    out, blobs, pos = ({"__metadata__": meta} if meta else {}), [], 0
    entries = [(k, v) for k, v in header.items() if k != "__metadata__" and k not in drop]
    items = [(k, v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in entries]
    items += [(k, d, s, b) for k, (d, s, b) in (add or {}).items()]
    for k, d, s, b in items:
        out[k] = {"dtype": d, "shape": s, "data_offsets": [pos, pos + len(b)]}
        blobs.append(b)
        pos += len(b)
    return out, b"".join(blobs)


def checkpoint_cases(tmp: Path, rng: random.Random) -> list[Case]:
    cases: list[Case] = []
    header, data = read_st(F32 / "model.safetensors")
    keys = [k for k in header if k != "__metadata__"]
    by_begin = sorted(keys, key=lambda k: header[k]["data_offsets"])
    counter = iter(range(10 ** 6))

    def add(name, content: bytes | None, error="CheckpointError", culprit=None, same=False, setup=None):
        d = _case_dir(F32, tmp / f"ckpt_{next(counter):04d}", replace=("model.safetensors",))
        target = d / "model.safetensors"
        if setup is not None:
            setup(target)
        else:
            target.write_bytes(content)
        cases.append(Case(CKPT, name, generate_argv(d), error=None if same else error,
                          culprit=None if same else (culprit or "model.safetensors"),
                          baseline="f32" if same else None))

    def mutate_entry(k, fn):
        h = json.loads(json.dumps(header))
        fn(h[k])
        return st_bytes(h, data)

    # --- whole-file damage
    size = 8 + len(json.dumps(header, separators=(",", ":"))) + len(data)
    full = st_bytes(header, data)
    for cut in sorted(rng.sample(range(0, size), 12)):
        add(f"truncated at {cut}", full[:cut])
    add("header length past the file", st_bytes(header, data, n=size))
    add("header length 2^63", st_bytes(header, data, n=1 << 63))
    add("header length zero", st_bytes(header, data, n=0))
    text = json.dumps(header, separators=(",", ":")).encode()
    add("header length one short", st_bytes(None, data, header_text=text, n=len(text) - 1))
    add("header not UTF-8", st_bytes(None, data, header_text=text.replace(b'"thinker', b'"\xffhinker', 1)))
    add("header not JSON", st_bytes(None, data, header_text=text[:-1] + b"]"))
    add("header a JSON list", st_bytes([1, 2], data))
    add("header a JSON string", st_bytes("x", data))
    add("metadata not strings", st_bytes({**header, "__metadata__": {"a": 1}}, data), culprit="__metadata__")
    add("metadata nested deep", st_bytes({**header, "__metadata__": {"a": json.loads("[" * 60 + "]" * 60)}}, data))
    add("header nested 100000 deep", st_bytes(None, data, header_text=b"[" * 100000 + b"]" * 100000))
    dup = keys[rng.randrange(len(keys))]
    entry = json.dumps(header[dup], separators=(",", ":")).encode()
    dup_text = text[:-1] + b',"' + dup.encode() + b'":' + entry + b"}"
    add("duplicate key", st_bytes(None, data, header_text=dup_text), culprit=_esc(dup))
    add("data after the last tensor", st_bytes(header, data + b"\0" * 16))
    add("empty file", b"")
    add("all zeros", b"\0" * 4096)
    for kind in SPECIAL_FILES + ("dangling",):
        add(f"model.safetensors is {kind}", None, setup=lambda t, kind=kind: special_file(t, kind))

    # --- one tensor's header entry
    ops = {
        "dtype unknown": (lambda e: e.update(dtype="F8"), None),
        "dtype lowercase": (lambda e: e.update(dtype="f32"), None),
        "dtype a number": (lambda e: e.update(dtype=4), None),
        "dtype F64 (size)": (lambda e: e.update(dtype="F64"), None),
        "dtype I32 relabel": (lambda e: e.update(dtype="I32"), None),
        "dtype U32 relabel": (lambda e: e.update(dtype="U32"), None),
        "shape negative": (lambda e: e.update(shape=[-1] + e["shape"][1:]), None),
        "shape float": (lambda e: e.update(shape=[float(s) for s in e["shape"]]), None),
        "shape string": (lambda e: e.update(shape=[str(s) for s in e["shape"]]), None),
        "shape bool": (lambda e: e.update(shape=[True] + e["shape"][1:]), "bool"),
        "shape a number": (lambda e: e.update(shape=7), None),
        "shape extra 1": (lambda e: e.update(shape=e["shape"] + [1]), None),
        "shape flattened": (lambda e: e.update(shape=[int(np.prod(e["shape"]))]), "multi"),
        "shape transposed": (lambda e: e.update(shape=e["shape"][::-1]), "nonsquare"),
        "shape doubled": (lambda e: e.update(shape=[e["shape"][0] * 2] + e["shape"][1:]), None),
        "offsets float": (lambda e: e.update(data_offsets=[float(x) for x in e["data_offsets"]]), None),
        "offsets string": (lambda e: e.update(data_offsets=[str(x) for x in e["data_offsets"]]), None),
        "offsets reversed": (lambda e: e.update(data_offsets=e["data_offsets"][::-1]), "nonempty"),
        "offsets three": (lambda e: e.update(data_offsets=e["data_offsets"] + [0]), None),
        "offsets negative": (lambda e: e.update(data_offsets=[-4, e["data_offsets"][1] - e["data_offsets"][0] - 4]),
                             None),
        "offsets shifted +4": (lambda e: e.update(data_offsets=[x + 4 for x in e["data_offsets"]]), "big"),
        "offsets shifted -4": (lambda e: e.update(data_offsets=[x - 4 for x in e["data_offsets"]]), "notfirst"),
        "offsets past the end": (lambda e: e.update(data_offsets=[len(data), len(data) + e["data_offsets"][1]
                                                                  - e["data_offsets"][0]]), None),
        "entry missing dtype": (lambda e: e.pop("dtype"), None),
        "entry missing shape": (lambda e: e.pop("shape"), None),
        "entry missing offsets": (lambda e: e.pop("data_offsets"), None),
        "entry extra field": (lambda e: e.update(stride=[1]), None),
    }
    for op, (fn, need) in ops.items():
        pool = [k for k in keys if _fits(header[k], need, by_begin, k)]
        for k in rng.sample(pool, min(len(pool), 6)):
            add(f"{op}: {k}", mutate_entry(k, fn), culprit=_esc(k))
    # an entry aliasing another tensor's bytes (same size): whichever sorts second overlaps
    sizes: dict[int, list[str]] = {}
    for k in keys:
        sizes.setdefault(header[k]["data_offsets"][1] - header[k]["data_offsets"][0], []).append(k)
    twins = [v for v in sizes.values() if len(v) > 1]
    for group in rng.sample(twins, min(6, len(twins))):
        a, b = rng.sample(group, 2)
        h = json.loads(json.dumps(header))
        h[a]["data_offsets"] = list(h[b]["data_offsets"])
        add(f"overlapping offsets: {a} = {b}", st_bytes(h, data), culprit=f"({_esc(a)}|{_esc(b)})")
    # an entry dropped from the header (its bytes stay): the layout names the gap
    for k in rng.sample(keys, 6):
        h = {kk: v for kk, v in header.items() if kk != k}
        add(f"entry dropped: {k}", st_bytes(h, data), culprit=r"gap|after the last tensor")
    # --- consistent files whose tensors disagree with the config (checked against checkpoint.expected_shapes)
    thinker = [k for k in keys if k.startswith("thinker.model.")]
    for k in rng.sample(thinker, 8) + ["thinker.model.layers.1.self_attn.q_norm.weight"]:
        h, d = _relayout(header, data, drop={k})
        add(f"tensor missing: {k}", st_bytes(h, d), culprit=_esc(k))
    for k in rng.sample(thinker, 6):
        h, d = _relayout(header, data, drop={k}, add={k + "_renamed": (header[k]["dtype"], header[k]["shape"],
                                                      data[slice(*header[k]["data_offsets"])])})
        add(f"tensor renamed: {k}", st_bytes(h, d), culprit=_esc(k))
    for k in ("thinker.model.layers.0.extra.weight", "thinker.model.layers.9.mlp.gate.weight", "unrelated.weight"):
        h, d = _relayout(header, data, add={k: ("F32", [2], b"\0" * 8)})
        add(f"extra tensor: {k}", st_bytes(h, d), culprit=_esc(k))
    # --- a consistent file with non-finite weights: the numbers break, which must not pass as an answer
    for k, value, where in (("thinker.model.norm.weight", np.nan, "all"), ("thinker.lm_head.weight", np.nan, "one"),
                            ("thinker.model.embed_tokens.weight", np.inf, "all"),
                            ("thinker.model.layers.0.self_attn.q_proj.weight", np.inf, "one")):
        b, e = header[k]["data_offsets"]
        arr = np.frombuffer(data[b:e], "<f4").copy()
        if where == "all":
            arr[:] = value
        else:
            arr[len(arr) // 2] = value
        add(f"{where} {value} in {k}", st_bytes(header, data[:b] + arr.tobytes() + data[e:]),
            culprit=rf"{_esc(k)}.*NaN or inf|non-finite")

    # --- benign: the same tensors in another header order / data order, with metadata, padded header
    for i in range(3):
        order = keys[:]
        rng.shuffle(order)
        add(f"header order shuffled {i}", st_bytes({k: header[k] for k in order}, data), same=True)
    h, d = _relayout({k: header[k] for k in reversed(by_begin)}, data)
    add("data stored in reverse order", st_bytes(h, d), same=True)
    add("metadata changed", st_bytes({**header, "__metadata__": {"format": "pt", "note": "fuzz"}}, data), same=True)
    add("header padded with spaces", st_bytes(None, data, header_text=text + b" " * 13), same=True)

    cases += sharded_cases(tmp, rng)
    return cases


def _fits(entry: dict, need, by_begin: list, key: str) -> bool:
    shape, (b, e) = entry["shape"], entry["data_offsets"]
    if need == "multi":
        return len(shape) >= 2 and all(s > 1 for s in shape)
    if need == "nonsquare":
        return len(shape) >= 2 and shape != shape[::-1]
    if need == "nonempty":
        return e > b
    if need == "big":
        return e - b > 8
    if need == "notfirst":
        return b >= 4 and e - b > 8
    if need == "bool":
        return len(shape) >= 1 and shape[0] != 1
    return True


def sharded_cases(tmp: Path, rng: random.Random) -> list[Case]:
    cases: list[Case] = []
    index = json.loads((SHARDED / "model.safetensors.index.json").read_text())
    wm = index["weight_map"]
    shards = sorted(set(wm.values()))
    counter = iter(range(10 ** 6))

    def add(name, index_text=None, culprit=None, shard=None, shard_bytes=None, setup=None, same=False):
        replace = ("model.safetensors.index.json",) + ((shard,) if shard else ())
        d = _case_dir(SHARDED, tmp / f"shard_{next(counter):04d}", replace=replace)
        if setup is not None:
            setup(d / "model.safetensors.index.json")
        else:
            (d / "model.safetensors.index.json").write_text(index_text if index_text is not None else json.dumps(index))
        if shard:
            (d / shard).write_bytes(shard_bytes)
        cases.append(Case(CKPT, f"sharded: {name}", generate_argv(d), error=None if same else "CheckpointError",
                          culprit=None if same else culprit, baseline="bf16" if same else None))

    idx = "model.safetensors.index.json"
    add("index not JSON", "{", culprit=idx)
    add("index a list", "[]", culprit=idx)
    add("index without weight_map", json.dumps({"metadata": {}}), culprit="weight_map")
    add("weight_map a list", json.dumps({"weight_map": list(wm)}), culprit="weight_map")
    add("weight_map empty", json.dumps({"weight_map": {}}), culprit="weight_map")
    add("index not UTF-8", None, setup=lambda p: p.write_bytes(b'{"weight_map": {"\xff": 1}}'), culprit=idx)
    k = rng.choice(list(wm))
    add("index duplicate key", json.dumps(index)[:-2] + f', "{k}": "{wm[k]}"}}}}', culprit=_esc(k))
    for bad in ("../model-00001-of-00002.safetensors", "/etc/passwd", "sub/x.safetensors", 7, None, "x.bin"):
        w = dict(wm)
        k = rng.choice(list(wm))
        w[k] = bad
        add(f"weight_map entry {bad!r}", json.dumps({"weight_map": w}), culprit=_esc(k))
    for k in rng.sample(list(wm), 4):
        w = dict(wm)
        w[k] = shards[1] if wm[k] == shards[0] else shards[0]
        add(f"key mapped to the other shard: {k}", json.dumps({"weight_map": w}), culprit=_esc(k))
    for k in rng.sample(list(wm), 3):
        w = {kk: v for kk, v in wm.items() if kk != k}
        add(f"key left out of the index: {k}", json.dumps({"weight_map": w}), culprit=_esc(k))
    w = dict(wm)
    w["thinker.model.ghost.weight"] = shards[0]
    add("index lists a tensor no shard has", json.dumps({"weight_map": w}), culprit="ghost")
    w = dict(wm)
    w["thinker.model.norm.weight"] = "model-00003-of-00002.safetensors"
    add("index names a missing shard", json.dumps({"weight_map": w}), culprit="00003")
    for kind in ("fifo", "dir", "dev_zero"):
        add(f"index is a {kind}", setup=lambda p, kind=kind: special_file(p, kind), culprit=idx)
    # shard damage
    for shard in shards:
        header, data = read_st(SHARDED / shard)
        keys = [k for k in header if k != "__metadata__"]
        full = st_bytes(header, data)
        for cut in rng.sample(range(len(full)), 4):
            add(f"{shard} truncated at {cut}", shard=shard, shard_bytes=full[:cut], culprit=_esc(shard))
        for k in rng.sample(keys, 3):
            h = json.loads(json.dumps(header))
            h[k]["dtype"] = "F16"                       # BF16 -> F16 relabel: same size, other numbers
            add(f"{shard} BF16->F16 relabel: {k}", shard=shard, shard_bytes=st_bytes(h, data), culprit=_esc(k))
        for k in rng.sample(keys, 3):
            h = json.loads(json.dumps(header))
            h[k]["dtype"] = "F32"
            add(f"{shard} BF16->F32 (size): {k}", shard=shard, shard_bytes=st_bytes(h, data), culprit=_esc(k))
        order = keys[:]
        rng.shuffle(order)
        add(f"{shard} header order shuffled", shard=shard, shard_bytes=st_bytes({k: header[k] for k in order}, data),
            same=True)
    return cases


# ---------------------------------------------------------------------------------------------- config
# (JSON path, kind, low, high) of the fields config.validate checks, with the tiny case's consistent range
def _config_fields(cfg: dict) -> list[tuple[tuple, str]]:
    th, tk, c2w = "thinker_config", "talker_config", "code2wav_config"
    pos = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
           "vocab_size", "max_position_embeddings", "head_dim"]
    fields = [((th, "text_config", f), "pos_int") for f in pos + ["moe_intermediate_size", "num_experts_per_tok",
                                                                  "decoder_sparse_step"]]
    fields += [((tk, "text_config", f), "pos_int") for f in pos + ["moe_intermediate_size", "num_experts_per_tok",
                                                                  "shared_expert_intermediate_size"]]
    fields += [((tk, "code_predictor_config", f), "pos_int") for f in pos + ["num_code_groups"]]
    fields += [((th, "audio_config", f), "pos_int") for f in
               ("num_mel_bins", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "d_model",
                "max_source_positions", "n_window", "n_window_infer", "output_dim", "downsample_hidden_size")]
    fields += [((th, "vision_config", f), "pos_int") for f in
               ("depth", "hidden_size", "intermediate_size", "num_heads", "patch_size", "spatial_merge_size",
                "temporal_patch_size", "out_hidden_size", "num_position_embeddings")]
    fields += [((c2w, f), "pos_int") for f in
               ("codebook_size", "hidden_size", "num_attention_heads", "num_key_value_heads", "sliding_window",
                "intermediate_size", "num_hidden_layers", "num_quantizers", "decoder_dim",
                "max_position_embeddings")]
    fields += [((th, "text_config", "rms_norm_eps"), "pos_float"), ((tk, "text_config", "rms_norm_eps"), "pos_float"),
               ((c2w, "rms_norm_eps"), "pos_float"), ((th, "position_id_per_seconds"), "pos_float"),
               ((th, "text_config", "rope_parameters", "rope_theta"), "pos_float"),
               ((c2w, "rope_parameters", "rope_theta"), "pos_float")]
    fields += [((th, f), "id") for f in ("audio_token_id", "image_token_id", "video_token_id",
                                         "audio_start_token_id", "audio_end_token_id", "vision_start_token_id",
                                         "vision_end_token_id")]
    fields += [((f,), "id") for f in ("im_start_token_id", "im_end_token_id", "system_token_id", "user_token_id",
                                      "assistant_token_id", "tts_pad_token_id", "tts_bos_token_id",
                                      "tts_eos_token_id")]
    fields += [((tk, f), "codec_id") for f in ("codec_eos_token_id", "codec_pad_id", "codec_bos_id",
                                               "codec_nothink_id", "codec_think_bos_id", "codec_think_eos_id")]
    fields += [((th, "text_config", "norm_topk_prob"), "bool"), ((th, "audio_config", "scale_embedding"), "bool")]
    return [(p, k) for p, k in fields if _get(cfg, p) is not None or p[-1] == "head_dim"]


def _get(d, path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _set(d, path, value):
    for p in path[:-1]:
        d = d.setdefault(p, {})
    d[path[-1]] = value


def _bad_values(kind: str, cfg: dict, path: tuple) -> list:
    if kind == "pos_int":
        vals = [0, -1, 2.5, "8", True, 10 ** 12, 1e9]
        if path[-1] == "head_dim":
            vals.remove(0)            # (0 and -1 still wrong; keep the list distinct from null)
            vals.append(0)
        return vals
    if kind == "pos_float":
        return [0, -1.0, "1e6", True, float("nan"), float("inf"), None]
    if kind == "id":
        return [-1, _get(cfg, ("thinker_config", "text_config", "vocab_size")), 1.5, "5", None]
    if kind == "codec_id":
        return [-1, _get(cfg, ("talker_config", "text_config", "vocab_size")), "5"]
    if kind == "bool":
        return ["yes", 1, None]
    raise ValueError(kind)


def _structural(cfg: dict) -> list[tuple[str, tuple, object, str]]:
    """(name, path, value, culprit) of inconsistent or unsupported settings (the issue's examples first)."""
    th_text = ("thinker_config", "text_config")
    ne = _get(cfg, th_text + ("num_experts",))
    hd = _get(cfg, th_text + ("head_dim",))
    out = [("num_experts_per_tok 0", th_text + ("num_experts_per_tok",), 0, "num_experts_per_tok"),
           ("num_experts_per_tok -1", th_text + ("num_experts_per_tok",), -1, "num_experts_per_tok"),
           ("num_experts_per_tok > num_experts", th_text + ("num_experts_per_tok",), ne + 1, "num_experts_per_tok"),
           ("num_experts_per_tok 100", th_text + ("num_experts_per_tok",), 100, "num_experts_per_tok"),
           ("encoder_layers 0", ("thinker_config", "audio_config", "encoder_layers"), 0, "encoder_layers"),
           ("rope_theta 0", th_text + ("rope_parameters", "rope_theta"), 0.0, "rope_theta"),
           ("rope_theta -1", th_text + ("rope_parameters", "rope_theta"), -1e6, "rope_theta"),
           ("hidden_act relu", th_text + ("hidden_act",), "relu", "hidden_act"),
           ("talker hidden_act gelu", ("talker_config", "text_config", "hidden_act"), "gelu", "hidden_act"),
           ("code2wav hidden_act tanh", ("code2wav_config", "hidden_act"), "tanh", "hidden_act"),
           ("audio activation relu", ("thinker_config", "audio_config", "activation_function"), "relu",
            "activation_function"),
           ("vision hidden_act quick_gelu", ("thinker_config", "vision_config", "hidden_act"), "quick_gelu",
            "hidden_act"),
           ("mrope_section short of head_dim/2", th_text + ("rope_parameters", "mrope_section"), [1, 1, 1],
            "mrope_section"),
           ("mrope_section too long", th_text + ("rope_parameters", "mrope_section"), [hd // 2, 0, 0, 0],
            "mrope_section"),
           ("mrope_section strings", th_text + ("rope_parameters", "mrope_section"), ["4", "2", "2"], "mrope_section"),
           ("mrope_section negative", th_text + ("rope_parameters", "mrope_section"), [hd // 2 + 1, -1, 0],
            "mrope_section"),
           ("num_hidden_layers 1e9", th_text + ("num_hidden_layers",), 1e9, "num_hidden_layers"),
           ("num_hidden_layers 10^9", th_text + ("num_hidden_layers",), 10 ** 9, "num_hidden_layers"),
           ("heads not divisible by kv heads", th_text + ("num_key_value_heads",), 3, "num_key_value_heads"),
           ("talker heads not divisible", ("talker_config", "text_config", "num_key_value_heads"), 3,
            "num_key_value_heads"),
           ("odd head_dim", th_text + ("head_dim",), 15, "head_dim"),
           ("audio heads not dividing d_model", ("thinker_config", "audio_config", "encoder_attention_heads"), 5,
            "encoder_attention_heads"),
           ("vision heads not dividing", ("thinker_config", "vision_config", "num_heads"), 3, "num_heads"),
           ("code2wav heads not dividing", ("code2wav_config", "num_attention_heads"), 5, "num_attention_heads"),
           ("code2wav kv heads not dividing", ("code2wav_config", "num_key_value_heads"), 3, "num_key_value_heads"),
           ("n_window_infer below a chunk", ("thinker_config", "audio_config", "n_window_infer"), 10, "n_window_infer"),
           ("deepstack index past depth", ("thinker_config", "vision_config", "deepstack_visual_indexes"), [0, 99],
            "deepstack_visual_indexes"),
           ("deepstack index negative", ("thinker_config", "vision_config", "deepstack_visual_indexes"), [-1],
            "deepstack_visual_indexes"),
           ("mlp_only_layers past the last layer", th_text + ("mlp_only_layers",), [7], "mlp_only_layers"),
           ("mlp_only_layers a string", th_text + ("mlp_only_layers",), "0", "mlp_only_layers"),
           ("num_position_embeddings not square", ("thinker_config", "vision_config", "num_position_embeddings"), 35,
            "num_position_embeddings"),
           ("in_channels 4", ("thinker_config", "vision_config", "in_channels"), 4, "in_channels"),
           ("upsample_rates empty", ("code2wav_config", "upsample_rates"), [], "upsample_rates"),
           ("upsample_rates zero", ("code2wav_config", "upsample_rates"), [8, 0, 4, 3], "upsample_rates"),
           ("upsampling_ratios a string", ("code2wav_config", "upsampling_ratios"), "2,2", "upsampling_ratios"),
           ("decoder_dim odd", ("code2wav_config", "decoder_dim"), 33, "decoder_dim"),
           ("audio output_dim != hidden", ("thinker_config", "audio_config", "output_dim"), 48, "output_dim"),
           ("vision out_hidden_size != hidden", ("thinker_config", "vision_config", "out_hidden_size"), 48,
            "out_hidden_size"),
           ("talker thinker_hidden_size != hidden", ("talker_config", "thinker_hidden_size"), 48,
            "thinker_hidden_size"),
           ("accept_hidden_layer past the layers", ("talker_config", "accept_hidden_layer"), 99, "accept_hidden_layer"),
           ("accept_hidden_layer negative", ("talker_config", "accept_hidden_layer"), -1, "accept_hidden_layer"),
           ("num_code_groups != code predictor's", ("talker_config", "num_code_groups"), 8, "num_code_groups"),
           ("speaker_id a list", ("talker_config", "speaker_id"), ["ethan"], "speaker_id"),
           ("speaker id past the codec vocab", ("talker_config", "speaker_id"), {"ethan": 10 ** 6}, "speaker_id"),
           ("rope_type yarn", th_text + ("rope_parameters", "rope_type"), "yarn", "rope_type"),
           ("code2wav rope_type linear", ("code2wav_config", "rope_parameters", "rope_type"), "linear", "rope_type"),
           ("attention_bias true", th_text + ("attention_bias",), True, "attention_bias"),
           ("code2wav attention_bias true", ("code2wav_config", "attention_bias"), True, "attention_bias"),
           ("sliding_window 0", th_text + ("sliding_window",), 0, "sliding_window"),
           ("thinker_config a number", ("thinker_config",), 5, "thinker_config"),
           ("text_config a list", th_text, [], "text_config"),
           ("rope_parameters a string", th_text + ("rope_parameters",), "default", "rope_parameters"),
           ("enable_audio_output a string", ("enable_audio_output",), "yes", "enable_audio_output"),
           ("max_source_positions below a chunk", ("thinker_config", "audio_config", "max_source_positions"), 5,
            "max_source_positions"),
           ("n_window 25", ("thinker_config", "audio_config", "n_window"), 25, "n_window"),
           ("tie_word_embeddings true", th_text + ("tie_word_embeddings",), True, "tie_word_embeddings"),
           ("thinker tie_word_embeddings true", ("thinker_config", "tie_word_embeddings"), True, "tie_word_embeddings"),
           ("code predictor sliding_window", ("talker_config", "code_predictor_config", "sliding_window"), 4,
            "sliding_window"),
           ("code predictor sliding layers", ("talker_config", "code_predictor_config", "layer_types"),
            ["sliding_attention", "full_attention"], "layer_types"),
           ("code predictor attention_bias", ("talker_config", "code_predictor_config", "attention_bias"), True,
            "attention_bias"),
           ("dtype int8", ("dtype",), "int8", "dtype"),
           ("position_id_per_seconds 1e30", ("thinker_config", "position_id_per_seconds"), 1e30,
            "position_id_per_seconds"),
           ("rope_theta 1e300", th_text + ("rope_parameters", "rope_theta"), 1e300, "rope_theta"),
           ("rms_norm_eps 1e30", th_text + ("rms_norm_eps",), 1e30, "rms_norm_eps"),
           ("vision rope_type yarn", ("thinker_config", "vision_config", "rope_parameters", "rope_type"), "yarn",
            "rope_type"),
           ]
    return out


def config_cases(tmp: Path, rng: random.Random) -> list[Case]:
    cases: list[Case] = []
    base = json.loads((F32 / "config.json").read_text())
    counter = iter(range(10 ** 6))

    def add(name, cfg=None, culprit=None, error="ConfigError", text=None, setup=None, same=False):
        d = _case_dir(F32, tmp / f"cfg_{next(counter):04d}", replace=("config.json",))
        target = d / "config.json"
        if setup is not None:
            setup(target)
        elif text is not None:
            target.write_bytes(text)
        else:
            target.write_text(json.dumps(cfg))
        c = Case(CONFIG, name, generate_argv(d), error=None if same else error,
                 culprit=None if same else culprit, baseline="f32" if same else None)
        cases.append(c)
        return d

    for path, kind in _config_fields(base):
        for v in _bad_values(kind, base, path):
            cfg = json.loads(json.dumps(base))
            _set(cfg, path, v)
            add(f"{'.'.join(path)} = {v!r}", cfg, culprit=_esc(path[-1]))
    for name, path, v, culprit in _structural(base):
        cfg = json.loads(json.dumps(base))
        _set(cfg, path, v)
        add(name, cfg, culprit=_esc(culprit))
    # JSON-level damage
    text = json.dumps(base).encode()
    add("not JSON", text=text[:-1], culprit="config.json")
    add("not UTF-8", text=text.replace(b'"dtype"', b'"\xfftype"', 1), culprit="config.json")
    add("a JSON list", text=b"[]", culprit="config.json")
    add("duplicate key", text=text[:-1] + b', "im_start_token_id": 1}', culprit="im_start_token_id")
    add("nested 100000 deep", text=b'{"x": ' + b"[" * 100000 + b"]" * 100000 + b"}", culprit="config.json")
    add("empty", text=b"", culprit="config.json")
    add("17 MB of spaces", text=text + b" " * (17 << 20), culprit="config.json")
    for kind in SPECIAL_FILES:
        add(f"config.json is {kind}", setup=lambda t, kind=kind: special_file(t, kind), culprit="config.json")
    # valid configs that the checkpoint disagrees with: the checkpoint check names a tensor
    th_text = ("thinker_config", "text_config")
    for name, path, v, culprit in [
            ("one more thinker layer", th_text + ("num_hidden_layers",), 4, r"layers\.3\."),
            ("one more expert", th_text + ("num_experts",), 7, r"experts\.6|mlp\.gate"),
            ("wider experts", th_text + ("moe_intermediate_size",), 24, r"experts\.\d+\.(gate|up|down)_proj"),
            ("more kv heads", th_text + ("num_key_value_heads",), 2, r"[kv]_proj"),
            ("bigger vocab", th_text + ("vocab_size",), 300, r"embed_tokens|lm_head"),
            ("dense thinker", th_text + ("num_experts",), 0, r"mlp\."),
            ("more audio layers", ("thinker_config", "audio_config", "encoder_layers"), 3, r"audio_tower\.layers\.2"),
            ("more vision layers", ("thinker_config", "vision_config", "depth"), 4, r"visual\.blocks\.3"),
            ("first layer dense", th_text + ("mlp_only_layers",), [0], r"layers\.0\.mlp"),
            ("wider code2wav", ("code2wav_config", "hidden_size"), 32, "code2wav"),
            ("80 mel bins", ("thinker_config", "audio_config", "num_mel_bins"), 80, r"audio_tower\.conv"),
            ("patch size 8", ("thinker_config", "vision_config", "patch_size"), 8, r"patch_embed"),
            ("merge size 3", ("thinker_config", "vision_config", "spatial_merge_size"), 3, r"merger"),
            ("temporal patch 3", ("thinker_config", "vision_config", "temporal_patch_size"), 3, r"patch_embed"),
            ("16 vision positions", ("thinker_config", "vision_config", "num_position_embeddings"), 16, r"pos_embed"),
            ("bigger codebook", ("code2wav_config", "codebook_size"), 30, r"code_embedding"),
            ("more code2wav layers", ("code2wav_config", "num_hidden_layers"), 3, r"code2wav.*layers\.2"),
            ("fewer talker layers", ("talker_config", "text_config", "num_hidden_layers"), 1, r"talker.*layers\.1"),
]:
        cfg = json.loads(json.dumps(base))
        _set(cfg, path, v)
        add(name, cfg, culprit=culprit, error="CheckpointError")
    # benign: a stale `dtype` (the file's own dtypes decide), unknown fields (kept in `extra`), key order
    stale = json.loads(json.dumps(base))
    stale["dtype"] = "bfloat16"
    add("float32 checkpoint declared bf16", stale, same=True)
    for where in ((), ("thinker_config",), th_text, ("code2wav_config",)):
        cfg = json.loads(json.dumps(base))
        _set(cfg, where + ("omniref_fuzz_unknown_field",), {"a": [1, 2]})
        add(f"unknown field in {'.'.join(where) or 'top level'}", cfg, same=True)
    shuffled = json.loads(json.dumps(base))
    items = list(shuffled.items())
    rng.shuffle(items)
    add("key order shuffled", dict(items), same=True)
    add("pretty-printed", text=json.dumps(base, indent=4).encode(), same=True)
    return cases


def config_verify_cases(config_cases_: list[Case], rng: random.Random) -> list[Case]:
    """A sample of the config mutants run through `verify` (every golden stage of the case) instead."""
    out = []
    for c in rng.sample(config_cases_, min(60, len(config_cases_))):
        ckpt = c.argv[2]
        argv = ["verify", ckpt, "--stage", "thinker"]
        out.append(Case(CONFIG_VERIFY, c.name, argv, error=c.error, culprit=c.culprit,
                        baseline="verify_f32" if c.error is None else None))
    return out


# ---------------------------------------------------------------------------------------------- media
def wav_bytes(fmt_fields=None, data: bytes = b"", chunks=(), riff_size=None, fmt_size=None, extra_fmt=b"",
              data_size=None, order=("fmt ", "data")) -> bytes:
    """A WAV file from parts: fmt fields (tag, channels, rate, byte_rate, block_align, bits)."""
    fmt = struct.pack("<HHIIHH", *fmt_fields) + extra_fmt
    parts = {"fmt ": b"fmt " + struct.pack("<I", len(fmt) if fmt_size is None else fmt_size) + fmt,
             "data": b"data" + struct.pack("<I", len(data) if data_size is None else data_size) + data
             + (b"\0" if len(data) % 2 else b"")}
    body = b"WAVE" + b"".join(chunks) + b"".join(parts[o] for o in order)
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def _chunk(cid: bytes, payload: bytes) -> bytes:
    return cid + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) % 2 else b"")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels over a few bytes of data: a decompression bomb."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


def media_cases(tmp: Path, rng: random.Random) -> list[Case]:
    from scipy.io import wavfile
    cases: list[Case] = []
    d = tmp / "media"
    d.mkdir()
    rate, speech = wavfile.read(SPEECH)
    pcm = speech[:8000].astype("<i2")                       # 0.5 s, 16-bit mono
    good = d / "good.wav"
    wavfile.write(good, rate, pcm)
    data = pcm.tobytes()
    fields = (1, 1, rate, rate * 2, 2, 16)
    counter = iter(range(10 ** 6))

    def add(kind, name, content=None, culprit=None, same=False, setup=None, suffix=None):
        """One media case: `content` bytes (or an array, saved as .npy) at a fresh path given to generate."""
        option, ext, baseline = {"wav": ("--audio", ".wav", "audio"), "image": ("--image", ".png", "image"),
                                 "video": ("--video", ".npy", "video")}[kind]
        p = d / f"{kind[0]}{next(counter):04d}{suffix or ext}"
        if setup is not None:
            setup(p)
        elif isinstance(content, (np.ndarray, np.generic)):
            np.save(p, content, allow_pickle=True)
        else:
            p.write_bytes(content)
        culprit = None if same else _esc(p.name) + (f".*{culprit}" if culprit else "")
        cases.append(Case(MEDIA, f"{kind}: {name}", generate_argv(F32, option, p), error=None if same else "MediaError",
                          culprit=culprit, baseline=baseline if same else None))

    add_wav, add_img, add_vid = (functools.partial(add, kind) for kind in ("wav", "image", "video"))

    # the zero fields and friends
    add_wav("RIFF size 0", wav_bytes(fields, data, riff_size=0), "RIFF size")
    add_wav("RIFF size past the end", wav_bytes(fields, data, riff_size=10 ** 9), "RIFF size")
    add_wav("0 channels", wav_bytes((1, 0, rate, 0, 0, 16), data), "channels")
    add_wav("0 bits", wav_bytes((1, 1, rate, 0, 0, 0), data), "bits")
    add_wav("block_align 0", wav_bytes((1, 1, rate, 0, 0, 16), data), "block_align")
    add_wav("byte rate 0", wav_bytes((1, 1, rate, 0, 2, 16), data), "byte rate")
    add_wav("sample rate 0", wav_bytes((1, 1, 0, 0, 2, 16), data), "sample rate")
    add_wav("sample rate 1 Hz", wav_bytes((1, 1, 1, 2, 2, 16), data), "sample rate")
    add_wav("sample rate 2^31", wav_bytes((1, 1, 1 << 31, (1 << 31) * 2 % (1 << 32), 2, 16), data),
            "(sample rate|byte rate)")
    add_wav("12-bit samples", wav_bytes((1, 1, rate, rate * 2, 2, 12), data), "bits")
    add_wav("7-bit samples", wav_bytes((1, 1, rate, rate, 1, 7), data), "bits")
    add_wav("format tag 2 (ADPCM)", wav_bytes((2, 1, rate, rate * 2, 2, 16), data), "format")
    add_wav("float with 16 bits", wav_bytes((3, 1, rate, rate * 2, 2, 16), data), "bits")
    add_wav("block_align disagrees", wav_bytes((1, 1, rate, rate * 4, 4, 16), data), "block_align")
    add_wav("65535 channels", wav_bytes((1, 65535, rate, rate * 2 * 65535 % (1 << 32), 2 * 65535 % (1 << 16), 16),
                                        data), "channels")
    add_wav("fmt chunk 4 bytes", wav_bytes(fields, data, fmt_size=4), "fmt")
    add_wav("fmt chunk runs past the end", wav_bytes(fields, data, fmt_size=10 ** 6), "fmt")
    add_wav("data before fmt", wav_bytes(fields, data, order=("data", "fmt ")), "fmt")
    add_wav("no data chunk", wav_bytes(fields, data, order=("fmt ",)), "data")
    add_wav("no fmt chunk", wav_bytes(fields, data, order=("data",)), "fmt")
    add_wav("data size past the end", wav_bytes(fields, data, data_size=len(data) + 1000), "data")
    add_wav("data of half a frame", wav_bytes((1, 2, rate, rate * 4, 4, 16), data[:6]), "data")
    add_wav("empty data", wav_bytes(fields, b""), "empty")
    add_wav("not RIFF", b"RIFX" + wav_bytes(fields, data)[4:], "not a WAV")
    add_wav("not WAVE", wav_bytes(fields, data)[:8] + b"AVI " + wav_bytes(fields, data)[12:], "not a WAV")
    add_wav("empty file", b"", "not a WAV")
    add_wav("11 bytes", b"RIFF\0\0\0\0WAV", "not a WAV")
    add_wav("extensible, short fmt", wav_bytes((0xFFFE, 1, rate, rate * 2, 2, 16), data), "EXTENSIBLE|fmt")
    full = wav_bytes(fields, data)
    for cut in sorted(rng.sample(range(12, len(full) - 2), 24)):
        add_wav(f"truncated at {cut}", full[:cut])
    add_wav("RIFF size cuts the data chunk", wav_bytes(fields, data, riff_size=len(full) - 8 - 100), "data")
    add_wav("data size 0xFFFFFFFF (streaming writer)", wav_bytes(fields, data, data_size=0xFFFFFFFF), "data")
    add_wav("sample rate 400 kHz", wav_bytes((1, 1, 400000, 800000, 2, 16), data), "sample rate")
    guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    ext = struct.pack("<HHI", 22, 16, 4)                     # cbSize, valid bits, channel mask
    add_wav("extensible, ADPCM sub-format", wav_bytes((0xFFFE, 1, rate, rate * 2, 2, 16), data,
                                                      extra_fmt=ext + struct.pack("<H", 2) + guid_tail), "format")
    for kind in SPECIAL_FILES:
        add_wav(f"path is {kind}", setup=lambda p, kind=kind: special_file(p, kind))
    nan = np.full(100, np.nan, np.float32)
    add_wav("NaN samples", wav_bytes((3, 1, rate, rate * 4, 4, 32), nan.tobytes()), "NaN")
    # a duration limit: 21 minutes of 1 kHz 8-bit silence is 1.26 MB
    add_wav("21 minutes", wav_bytes((1, 1, 1000, 1000, 1, 8), b"\x80" * (21 * 60 * 1000)), "limit")
    # benign: the same samples stored differently -> the same tokens
    junk = _chunk(b"JUNK", b"\0" * 27)                      # odd size: padded to even
    add_wav("JUNK chunk (odd size) before fmt", wav_bytes(fields, data, chunks=(junk,)), same=True)
    add_wav("LIST chunk", wav_bytes(fields, data, chunks=(_chunk(b"LIST", b"INFOISFT\x05\0\0\0fuzz\0"),)), same=True)
    add_wav("fmt with cbSize", wav_bytes(fields, data, extra_fmt=b"\0\0"), same=True)
    add_wav("trailing bytes after RIFF", full + b"\0" * 7, same=True)
    stereo = np.stack([pcm, pcm], 1).astype("<i2")
    add_wav("stereo L = R", wav_bytes((1, 2, rate, rate * 4, 4, 16), stereo.tobytes()), same=True)
    i24 = (pcm.astype(np.int32) << 8).astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()  # pcm << 8
    add_wav("24-bit PCM", wav_bytes((1, 1, rate, rate * 3, 3, 24), i24), same=True)
    add_wav("32-bit float", wav_bytes((3, 1, rate, rate * 4, 4, 32), (pcm / 32768.0).astype("<f4").tobytes()),
            same=True)
    add_wav("32-bit PCM", wav_bytes((1, 1, rate, rate * 4, 4, 32), (pcm.astype("<i4") << 16).tobytes()), same=True)
    add_wav("extensible, PCM sub-format", wav_bytes((0xFFFE, 1, rate, rate * 2, 2, 16), data,
                                                    extra_fmt=ext + struct.pack("<H", 1) + guid_tail), same=True)
    add_wav("unknown chunk before fmt", wav_bytes(fields, data, chunks=(_chunk(b"ab12", b"0123456789"),)), same=True)
    body = full[8:] + _chunk(b"data", b"\1\2" * 50)       # the first data chunk is the audio; later ones are ignored
    add_wav("a second data chunk after the first", b"RIFF" + struct.pack("<I", len(body)) + body, same=True)

    # images
    from PIL import Image
    img = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    png = d / "good.png"
    Image.fromarray(img).save(png)

    raw = png.read_bytes()
    add_img("20000x20000 PNG header", _png_header_only(20000, 20000), "limit|large")
    add_img("65535x65535 PNG header", _png_header_only(65535, 65535), "limit|large")
    add_img("0x0 PNG header", _png_header_only(0, 0))
    for cut in sorted(rng.sample(range(8, len(raw) - 1), 8)):
        add_img(f"PNG truncated at {cut}", raw[:cut])
    add_img("text file", b"hello, not an image")
    add_img("empty file", b"")
    for kind in SPECIAL_FILES:
        add_img(f"path is {kind}", setup=lambda p, kind=kind: special_file(p, kind))
    flipped = bytearray(raw)
    flipped[40] ^= 0xFF                                      # inside the IDAT data: the CRC fails
    add_img("PNG with a bad CRC", bytes(flipped))
    add_img("aspect ratio 1:300", None, "aspect", setup=lambda p: Image.fromarray(
        np.zeros((2, 600, 3), np.uint8)).save(p, format="PNG"))
    add_img("same pixels as RGBA (opaque)", None, same=True, setup=lambda p: Image.fromarray(
        np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], 2)).save(p, format="PNG"))
    add_img("same pixels as BMP", None, same=True, suffix=".bmp",
            setup=lambda p: Image.fromarray(img).save(p, format="BMP"))

    # videos (.npy frames)
    frames = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    add_vid("no frames", np.zeros((0, 32, 32, 3), np.uint8))
    add_vid("zero height", np.zeros((2, 0, 32, 3), np.uint8))
    add_vid("float frames", frames.astype(np.float32))
    add_vid("int64 frames", frames.astype(np.int64))
    add_vid("one frame of 2-D", np.zeros((32, 32), np.uint8))
    add_vid("5-D", frames[None])
    add_vid("5 channels", np.zeros((2, 32, 32, 5), np.uint8))
    add_vid("a scalar", np.uint8(3))
    add_vid("object array (pickle)", np.array([{"a": 1}, None], dtype=object))
    add_vid("not .npy", b"just text")
    add_vid("truncated .npy", _npy(frames)[:200])
    add_vid("header claims 2^40 frames", _npy(frames).replace(b"(2, 32, 32, 3)", b"(1099511627776, 32, 32, 3)"))
    add_vid("empty file", b"")
    add_vid("1000 frames", np.zeros((1000, 2, 2, 3), np.uint8), culprit="frames")
    add_vid("aspect ratio 1:300", np.zeros((2, 2, 600, 3), np.uint8), culprit="aspect")
    for kind in SPECIAL_FILES:
        add_vid(f"path is {kind}", setup=lambda p, kind=kind: special_file(p, kind))
    add_vid("fortran order, same frames", np.asfortranarray(frames), same=True)
    return cases


def _npy(arr) -> bytes:
    import io
    b = io.BytesIO()
    np.save(b, arr)
    return b.getvalue()


def media_baselines(tmp: Path) -> list[Case]:
    d = tmp / "media"
    frames = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.save(d / "good_video.npy", frames)
    return [Case("baseline", "audio", generate_argv(F32, "--audio", d / "good.wav")),
            Case("baseline", "image", generate_argv(F32, "--image", d / "good.png")),
            Case("baseline", "video", generate_argv(F32, "--video", d / "good_video.npy"))]


# ---------------------------------------------------------------------------------------------- tokens
def token_cases(tmp: Path) -> list[Case]:
    cfg = json.loads((F32 / "config.json").read_text())
    vocab = cfg["thinker_config"]["text_config"]["vocab_size"]
    audio_id = cfg["thinker_config"]["audio_token_id"]
    image_id = cfg["thinker_config"]["image_token_id"]
    cases = []

    def add(name, argv, culprit, error="InputError"):
        cases.append(Case(TOKENS, name, argv, error=error, culprit=culprit))

    def gen(*extra, ids="5,6,7"):
        return ["generate", "--checkpoint", str(F32), "--prompt-ids", ids, "--max-new-tokens", "2", *extra]

    for ids, culprit in [(f"5,{vocab}", str(vocab)), ("5,-1", "-1"), (f"{10 ** 20}", "1" + "0" * 20),
                         ("5,1.5", "1.5"), ("5,x", "'x'|x"), ("", "prompt-ids"), ("5,,6", "prompt-ids"),
                         (" ", "prompt-ids"), ("0x10", "0x10"), (str(audio_id), "placeholder|audio"),
                         (str(image_id), "placeholder|image"), (f"5,{audio_id},{audio_id}", "placeholder|audio")]:
        add(f"--prompt-ids {ids!r}", gen(ids=ids), culprit)
    for opt, val, culprit in [("--max-new-tokens", "0", "max-new-tokens"), ("--max-new-tokens", "-5", "max-new-tokens"),
                              ("--max-new-tokens", str(10 ** 12), "max-new-tokens"),
                              ("--temperature", "-1", "temperature"), ("--temperature", "nan", "temperature"),
                              ("--temperature", "inf", "temperature"), ("--top-k", "-1", "top-k"),
                              ("--top-p", "0", "top-p"), ("--top-p", "1.5", "top-p"), ("--top-p", "nan", "top-p"),
                              ("--repetition-penalty", "0", "repetition-penalty"),
                              ("--repetition-penalty", "-1", "repetition-penalty"),
                              ("--seed", "-1", "seed"), ("--nl-id", str(vocab), "nl-id"), ("--nl-id", "-1", "nl-id"),
                              ("--video-fps", "0", "fps"), ("--video-fps", "nan", "fps"),
                              ("--talker-max-new-tokens", "0", "talker-max-new-tokens")]:
        argv = gen(opt, val)
        if opt == "--video-fps":
            argv = gen(opt, val, "--video", tmp / "media" / "good_video.npy")
        if opt == "--talker-max-new-tokens":
            argv = gen(opt, val, "--wav", tmp / "tok_out.wav")
        add(f"{opt} {val}", argv, _esc(culprit))
    add("--speaker nobody", gen("--wav", tmp / "spk.wav", "--speaker", "nobody"), "nobody")
    cases += golden_input_cases(tmp)
    add("--video-audio without --video", gen("--video-audio", tmp / "media" / "good.wav"), "video-audio")
    return cases


def golden_input_cases(tmp: Path) -> list[Case]:
    """Ids and codes read from a golden case (copies with one key edited), and golden values verify must not pass."""
    cases = []
    c2w = ROOT / "tests" / "golden" / "code2wav_q8"

    def add(name, src, key, fn, stage, error="InputError", culprit=None):
        d = _case_dir(src, tmp / f"golden_{len(cases):03d}", replace=("golden.npz",))
        g = dict(np.load(src / "golden.npz"))
        g[key] = fn(g[key])
        np.savez(d / "golden.npz", **g)
        cases.append(Case(TOKENS, name, ["verify", d, "--stage", stage], error=error,
                          culprit=culprit or _esc(key)))

    codebook = json.loads((c2w / "config.json").read_text())["code2wav_config"]["codebook_size"]
    add("codes past the codebook", c2w, "code2wav.codes", lambda a: a + codebook, "code2wav")
    add("negative codes", c2w, "code2wav.codes", lambda a: a - codebook, "code2wav")
    add("float codes", c2w, "code2wav.codes", lambda a: a.astype(np.float32) + 0.5, "code2wav")
    add("codes of the wrong rank", c2w, "code2wav.codes", lambda a: a[None], "code2wav")
    add("float input_ids", F32, "thinker.input_ids", lambda a: a.astype(np.float64), "thinker")
    add("input_ids past the vocabulary", F32, "thinker.input_ids", lambda a: a + 1000, "thinker")
    add("negative input_ids", F32, "thinker.input_ids", lambda a: -a - 1, "thinker")
    add("a NaN golden value", c2w, "code2wav.wav", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 7,
                                                                      np.nan, a).astype(a.dtype), "code2wav",
        error="FAIL")
    add("all-NaN golden values", c2w, "code2wav.wav", lambda a: np.full_like(a, np.nan), "code2wav", error="FAIL")
    add("an inf golden value", c2w, "code2wav.wav", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 3,
                                                                       np.inf, a).astype(a.dtype), "code2wav",
        error="FAIL")
    return cases


# ---------------------------------------------------------------------------------------------- CLI misuse
def cli_cases(tmp: Path) -> list[Case]:
    d = tmp / "cli"
    d.mkdir()
    existing = d / "existing.wav"
    existing.write_bytes(b"keep me")
    out_dir = d / "demo_out"
    out_dir.mkdir()
    (out_dir / "speech.wav").write_bytes(b"keep me too")
    bench_json = d / "bench.json"
    bench_json.write_text("{}")
    trace = d / "t.npz"
    np.savez(trace, a=np.zeros(3, np.float32))
    case = d / "tiny_f32_copy"                          # a real copy: a bug here must not touch tests/golden
    shutil.copytree(F32, case)
    golden = case / "golden.npz"
    audio = d / "input.wav"
    shutil.copy(tmp / "media" / "good.wav", audio)
    cases = []

    def add(name, argv, error, culprit=None, env=None, files=()):
        cases.append(Case(CLI, name, argv, error=error, culprit=culprit, env=env or {}, files=[str(f) for f in files]))

    gen = ["generate", "--checkpoint", str(F32), "--prompt-ids", "5,6,7", "--max-new-tokens", "2"]
    add("unknown subcommand", ["frobnicate"], "usage")
    add("generate without --checkpoint", ["generate"], "usage")
    add("generate --max-new-tokens abc", gen[:-1] + ["abc"], "usage")
    add("verify without a case", ["verify"], "usage")
    add("compare with one trace", ["compare", str(trace)], "usage")
    add("--checkpoint missing", ["generate", "--checkpoint", str(d / "nope"), "--prompt-ids", "5"],
        "CheckpointError", "nope")
    add("--checkpoint is a file", ["generate", "--checkpoint", str(existing), "--prompt-ids", "5"],
        "CheckpointError", "existing.wav")
    add("--checkpoint is an empty dir", ["generate", "--checkpoint", str(d), "--prompt-ids", "5"], "ConfigError",
        "config.json")
    add("--wav onto its own --audio", gen + ["--audio", audio, "--wav", audio], "InputError", "input.wav.*inputs",
        files=[audio])
    add("--wav onto an existing file", gen + ["--wav", existing], "InputError", "existing.wav|--force",
        files=[existing])
    add("--wav into a missing folder", gen + ["--wav", d / "no" / "x.wav"], "InputError", "x.wav|no")
    add("--wav into a golden case", gen + ["--wav", case / "out.wav"], "InputError", "golden|out.wav",
        files=[case / "out.wav"])
    add("--wav is a directory", gen + ["--wav", d], "InputError", "cli")
    add("trace -o onto the case's golden.npz", ["trace", str(case), "-o", str(golden)], "InputError", "golden",
        files=[golden])
    add("trace -o into the case", ["trace", str(case), "-o", str(case / "trace.npz")], "InputError", "golden|case",
        files=[case / "trace.npz"])
    add("trace -o onto an existing file", ["trace", str(case), "-o", str(trace)], "InputError", "t.npz|--force",
        files=[trace])
    add("trace of a missing case", ["trace", str(d / "nocase"), "-o", str(d / "new.npz")], "InputError", "nocase")
    add("bench --json onto an existing file", ["bench", "--quick", "--only", "kernels", "--json", str(bench_json)],
        "InputError", "bench.json|--force", files=[bench_json])
    add("demo --out with an earlier answer", ["demo", "--out", str(out_dir)], "InputError", "speech.wav.*--force",
        files=[out_dir / "speech.wav"])
    add("demo --out onto a file", ["demo", "--out", str(existing)], "InputError", "existing.wav", files=[existing])
    add("demo --audio missing", ["demo", "--out", str(d / "fresh"), "--audio", str(d / "nope.wav")], "MediaError",
        "nope.wav")
    add("demo --speaker nobody", ["demo", "--out", str(d / "fresh2"), "--speaker", "nobody"], "InputError", "nobody")
    add("summary of a missing config", ["summary", str(d / "nope.json")], "ConfigError", "nope")
    add("summary of a FIFO", ["summary", str(_fifo(d / "fifo.json"))], "ConfigError", "fifo.json")
    add("verify a missing case", ["verify", str(d / "nocase")], "InputError", "nocase")
    add("compare --rtol nan", ["compare", str(trace), str(trace), "--rtol", "nan"], "InputError", "rtol")
    add("compare --rtol -1", ["compare", str(trace), str(trace), "--rtol", "-1"], "InputError", "rtol")
    add("compare --rtol 0", ["compare", str(trace), str(trace), "--rtol", "0"], "InputError", "rtol")
    add("compare a missing trace", ["compare", str(trace), str(d / "none.npz")], "InputError", "none.npz")
    add("compare a text file", ["compare", str(trace), str(existing)], "InputError", "existing.wav")
    add("--audio is a directory", gen + ["--audio", d], "MediaError", "cli.*directory")
    add("--image is a FIFO", gen + ["--image", _fifo(d / "img.fifo")], "MediaError", "img.fifo")
    add("--video is /dev/zero", gen + ["--video", "/dev/zero"], "MediaError", "/dev/zero")
    add("--checkpoint is a FIFO", ["generate", "--checkpoint", str(_fifo(d / "ck.fifo")), "--prompt-ids", "5"],
        "CheckpointError", "ck.fifo")
    for name, content in (("meta.json", None), ("meta.json", b"[1, 2"), ("meta.json", b'{"token_ids": {"nl": "x"}}')):
        meta_case = _case_dir(F32, d / f"meta_{len(cases)}", replace=("meta.json",))
        special_file(meta_case / name, "fifo") if content is None else (meta_case / name).write_bytes(content)
        add(f"checkpoint meta.json {'a FIFO' if content is None else repr(content)}",
            ["generate", "--checkpoint", str(meta_case), "--prompt-ids", "5"], "CheckpointError", "meta.json")
    for name, content in (("tokenizer.json", None), ("tokenizer.json", b"{not json"), ("vocab.json", None)):
        tok_case = _case_dir(F32, d / f"tok_{len(cases)}")
        if content is None:
            special_file(tok_case / name, "fifo")
            if name == "vocab.json":
                (tok_case / "merges.txt").write_text("#version: 0.2\n")
        else:
            (tok_case / name).write_bytes(content)
        add(f"{name} is {'a FIFO' if content is None else 'not JSON'}",
            ["generate", "--checkpoint", str(tok_case), "--prompt-ids", "5"], "CheckpointError", name if content is
            None else "tokenizer")
    add("--checkpoint is /dev/null", ["generate", "--checkpoint", "/dev/null", "--prompt-ids", "5"],
        "CheckpointError", "/dev/null")
    add("--nl-id abc", gen + ["--nl-id", "abc"], "usage")
    add("--max-new-tokens 1.5", gen[:-1] + ["1.5"], "usage")
    add("--seed 2^64", gen + ["--seed", str(2 ** 64)], "InputError", "--seed")
    add("--wav with --force onto its own --audio", gen + ["--audio", audio, "--wav", audio, "--force"], "InputError",
        "input.wav.*inputs", files=[audio])
    add("--wav --force into a golden case", gen + ["--wav", golden, "--force"], "InputError", "golden",
        files=[golden])
    add("summary --context 0", ["summary", "--context", "0"], "InputError", "--context")
    add("summary --context abc", ["summary", "--context", "abc"], "usage")
    add("summary of a preset typo", ["summary", "qwen3-omni-30b"], "ConfigError", "qwen3-omni-30b")
    add("summary of a directory without config", ["summary", str(d)], "ConfigError", "config.json")
    add("summary of a binary file", ["summary", str(existing)], "ConfigError", "existing.wav")
    add("verify --backend bogus", ["verify", str(case), "--backend", "bogus"], "usage")
    add("verify --stage bogus", ["verify", str(case), "--stage", "bogus"], "InputError", "bogus")
    add("verify a file", ["verify", str(existing)], "InputError", "existing.wav")
    add("bench --only bogus", ["bench", "--only", "bogus"], "usage")
    add("bench --threads 0", ["bench", "--quick", "--only", "kernels", "--threads", "0"], "InputError", "--threads")
    add("bench --json into a missing folder", ["bench", "--quick", "--only", "kernels", "--json",
                                               str(d / "no" / "b.json")], "InputError", "b.json")
    add("demo --thinker-max-new-tokens 0", ["demo", "--out", str(d / "fresh3"), "--thinker-max-new-tokens", "0"],
        "InputError", "thinker-max-new-tokens")
    add("demo --image missing", ["demo", "--out", str(d / "fresh4"), "--image", str(d / "nope.png")], "MediaError",
        "nope.png")
    add("demo --checkpoint missing", ["demo", "--out", str(d / "fresh5"), "--checkpoint", str(d / "nock")],
        "OmnirefError|ConfigError|CheckpointError|InputError", "nock")
    add("trace -o into a missing folder", ["trace", str(case), "-o", str(d / "no" / "t.npz")], "InputError", "t.npz")
    add("trace --stage bogus", ["trace", str(case), "-o", str(d / "t2.npz"), "--stage", "bogus"], "InputError",
        "bogus")
    add("compare --rtol inf", ["compare", str(trace), str(trace), "--rtol", "inf"], "InputError", "rtol")
    add("compare a directory", ["compare", str(trace), str(d)], "InputError", "cli")
    add("compare a FIFO", ["compare", str(trace), str(_fifo(d / "tr.fifo"))], "InputError", "tr.fifo")
    add("OMNIREF_BACKEND=bogus", gen, "InputError", "OMNIREF_BACKEND|bogus", env={"OMNIREF_BACKEND": "bogus"})
    add("OMNIREF_MAX_AUDIO_SECONDS=abc", gen + ["--audio", audio], "InputError", "OMNIREF_MAX_AUDIO_SECONDS",
        env={"OMNIREF_MAX_AUDIO_SECONDS": "abc"})
    return cases


def _fifo(p: Path) -> Path:
    os.mkfifo(p)
    return p


# ---------------------------------------------------------------------------------------------- all
def all_cases(tmp: Path, seed: int = 0) -> list[Case]:
    rng = random.Random(seed)
    media = media_cases(tmp, rng)                            # first: writes the files the others reuse
    baselines = [Case("baseline", "f32", generate_argv(F32)), Case("baseline", "bf16", generate_argv(SHARDED)),
                 Case("baseline", "verify_f32", ["verify", str(F32), "--stage", "thinker"])]
    baselines += media_baselines(tmp)
    config = config_cases(tmp, rng)
    return (baselines + checkpoint_cases(tmp, rng) + config + config_verify_cases(config, rng) + media
            + token_cases(tmp) + cli_cases(tmp))

