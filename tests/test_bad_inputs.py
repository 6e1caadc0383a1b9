"""Every example of the hardening issue, refused in one clear error (or fixed), as explicit regression tests.

The fuzz suite (test_fuzz.py) covers the same ground at random; these pin the named examples down so that a
regression names itself.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from omniref import cli
from omniref.audio import wav
from omniref.config import load_config
from omniref.errors import CheckpointError, ConfigError, InputError, MediaError
from omniref.vision import preprocess as pp
from omniref.weights import SafetensorsError, SafetensorsFile, load_weights, save_safetensors

ROOT = Path(__file__).resolve().parent.parent
F32 = ROOT / "tests" / "golden" / "tiny_f32"


@contextlib.contextmanager
def deadline(seconds: int = 10):
    """Fail (instead of hanging the suite) if the body blocks, e.g. on opening a FIFO."""
    def expired(signum, frame):
        raise TimeoutError(f"blocked for more than {seconds} s")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------------------------------ safetensors
def _file(tmp_path, header: dict, data: bytes, name="m.safetensors") -> Path:
    text = json.dumps(header).encode()
    p = tmp_path / name
    p.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return p


def _two(a=(0, 8), b=(8, 16), dtype_b="F32") -> dict:
    return {"a": {"dtype": "F32", "shape": [2], "data_offsets": list(a)},
            "b": {"dtype": dtype_b, "shape": [2], "data_offsets": list(b)}}


@pytest.mark.parametrize("header, data, match", [
    (_two(b=(4, 12)), bytes(16), r"'b'.*overlap tensor 'a'"),                       # overlapping offsets
    (_two(a=(4, 12), b=(12, 20)), bytes(20), r"'a'.*gap of 4 bytes.*start of the data"),  # header-data gap
    (_two(), bytes(24), r"8 bytes after the last tensor"),                          # a tail no tensor owns
    (_two(b=(8, 16), dtype_b="F64"), bytes(16), r"'b'.*8 bytes for shape \[2\] F64 \(expected 16\)"),
    ({"a": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}, bytes(8), r"'a'.*shape"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0.0, 8]}}, bytes(8), r"'a'.*data_offsets"),
    ({"a": {"dtype": "F32", "shape": [True, 2], "data_offsets": [0, 8]}}, bytes(8), r"'a'.*shape"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "x": 1}}, bytes(8), r"'a'.*exactly"),
    ({"a": [1]}, bytes(0), r"'a'"),
    ({"__metadata__": {"format": 1}}, b"", r"__metadata__"),
])
def test_safetensors_layout_is_checked(tmp_path, header, data, match):
    with pytest.raises(SafetensorsError, match=match):
        SafetensorsFile(_file(tmp_path, header, data))


def test_safetensors_duplicate_key_nesting_and_utf8(tmp_path):
    entry = '{"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}'
    for text, match in [(f'{{"a": {entry}, "a": {entry}}}'.encode(), "names 'a' twice"),
                        (b'{"a": ' + b"[" * 50 + b"]" * 50 + b"}", "nests deeper"),
                        (b'{"\xff": 1}', r"not UTF-8 \(byte 2"),
                        (b"[" * 100000 + b"]" * 100000, "nests deeper")]:
        p = tmp_path / "m.safetensors"
        p.write_bytes(struct.pack("<Q", len(text)) + text + bytes(8))
        with pytest.raises(SafetensorsError, match=match) as e:
            SafetensorsFile(p)
        assert str(p) in str(e.value)


def test_safetensors_good_files_still_read(tmp_path):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    save_safetensors(tmp_path / "m.safetensors", {"x": x, "empty": np.zeros((0, 3), np.float32)})
    f = SafetensorsFile(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(f["x"], x)
    assert f["empty"].shape == (0, 3)


@pytest.mark.parametrize("kind", ["fifo", "dir", "dev_zero"])
def test_non_regular_files_refused_before_open(tmp_path, kind):
    p = tmp_path / "model.safetensors"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "dir":
        p.mkdir()
    else:
        p.symlink_to("/dev/zero")
    with deadline(), pytest.raises(CheckpointError, match="expected a regular file"):
        SafetensorsFile(p)
    cfg = tmp_path / "config.json"
    os.replace(p, cfg)
    match = "no config.json" if kind == "dir" else "config.json: the config is a .*expected a regular file"
    with deadline(), pytest.raises(ConfigError, match=match):
        load_config(cfg)


def test_index_weight_map_checked(tmp_path):
    save_safetensors(tmp_path / "a.safetensors", {"x": np.zeros(2, np.float32)})
    index = tmp_path / "model.safetensors.index.json"
    for weight_map, match in [({"x": "../a.safetensors"}, r"weight_map\['x'\]"), ({"x": 3}, r"weight_map\['x'\]"),
                              ([], "weight_map"), ({}, "weight_map"), ({"x": "b.safetensors"}, "b.safetensors")]:
        index.write_text(json.dumps({"weight_map": weight_map}))
        with pytest.raises(CheckpointError, match=match):
            load_weights(tmp_path)


def test_missing_tensor_is_a_checkpoint_error_and_a_key_error():
    w = load_weights(F32)
    with pytest.raises(CheckpointError, match="no tensor 'thinker.nope'"):
        w["thinker.nope"]
    assert w.get("thinker.nope") is None             # Mapping.get still works (a KeyError underneath)


# ------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("path, value, field", [
    (("thinker_config", "text_config", "num_experts_per_tok"), 0, "num_experts_per_tok"),
    (("thinker_config", "text_config", "num_experts_per_tok"), -1, "num_experts_per_tok"),
    (("thinker_config", "text_config", "num_experts_per_tok"), 7, "num_experts_per_tok"),    # > num_experts = 6
    (("thinker_config", "text_config", "num_experts_per_tok"), 100, "num_experts_per_tok"),
    (("thinker_config", "audio_config", "encoder_layers"), 0, "encoder_layers"),
    (("thinker_config", "text_config", "rope_parameters", "rope_theta"), 0, "rope_theta"),
    (("thinker_config", "text_config", "rope_parameters", "rope_theta"), -10.0, "rope_theta"),
    (("thinker_config", "text_config", "hidden_act"), "relu", "hidden_act"),
    (("thinker_config", "text_config", "rope_parameters", "mrope_section"), [4, 2, 1], "mrope_section"),
    (("thinker_config", "text_config", "num_hidden_layers"), 1e9, "num_hidden_layers"),
    (("thinker_config", "text_config", "num_hidden_layers"), 10 ** 9, "num_hidden_layers"),
    (("thinker_config", "text_config", "num_key_value_heads"), 3, "num_key_value_heads"),
])
def test_config_values_validated_at_load(tmp_path, path, value, field):
    cfg = json.loads((F32 / "config.json").read_text())
    d = cfg
    for p in path[:-1]:
        d = d[p]
    d[path[-1]] = value
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=rf"config.json: .*{field} = {value!r}".replace("[", r"\[")) as e:
        load_config(tmp_path)
    assert e.value.field.endswith(field) and e.value.value == value


def test_config_duplicate_key_and_types(tmp_path):
    text = (F32 / "config.json").read_text()
    (tmp_path / "config.json").write_text(text[:text.rindex("}")] + ', "user_token_id": 1}')
    with pytest.raises(ConfigError, match="names 'user_token_id' twice"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text('{"thinker_config": 5}')
    with pytest.raises(ConfigError, match="thinker_config = 5: expected an object"):
        load_config(tmp_path)


# ------------------------------------------------------------------------------------------ media
def _wav(tmp_path, fmt=(1, 1, 16000, 32000, 2, 16), data=bytes(200), riff_size=None, chunks=b"") -> Path:
    f = struct.pack("<HHIIHH", *fmt)
    body = b"WAVE" + chunks + b"fmt " + struct.pack("<I", len(f)) + f + b"data" + struct.pack("<I", len(data)) + data
    p = tmp_path / "x.wav"
    p.write_bytes(b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body)
    return p


@pytest.mark.parametrize("kwargs, match", [
    (dict(riff_size=0), "RIFF size 0"),
    (dict(fmt=(1, 0, 16000, 0, 0, 16)), "channels is 0"),
    (dict(fmt=(1, 1, 16000, 0, 0, 0)), "bits per sample is 0"),
    (dict(fmt=(1, 1, 16000, 0, 0, 16)), "block_align is 0"),
    (dict(fmt=(1, 1, 1, 2, 2, 16)), r"sample rate 1 Hz is outside"),        # would upsample 16000-fold
])
def test_wav_zero_fields_and_rates(tmp_path, kwargs, match):
    with pytest.raises(MediaError, match=match) as e:
        wav.read_wav(_wav(tmp_path, **kwargs))
    assert e.value.file.endswith("x.wav")


def test_wav_junk_chunk_of_odd_size_reads_like_the_plain_file(tmp_path):
    pcm = (np.sin(np.arange(800) / 7) * 9000).astype("<i2")
    plain = wav.read_wav(_wav(tmp_path, data=pcm.tobytes()))
    junk = b"JUNK" + struct.pack("<I", 27) + bytes(28)                         # 27 bytes + 1 pad byte
    np.testing.assert_array_equal(wav.read_wav(_wav(tmp_path, data=pcm.tobytes(), chunks=junk)), plain)
    np.testing.assert_allclose(plain, pcm / 32768.0, atol=1e-7)


def test_wav_duration_limit(tmp_path):
    p = tmp_path / "long.wav"
    wavfile.write(p, 8000, np.zeros(8000 * 3, np.int16))
    with pytest.raises(MediaError, match="3.0 s of audio, more than the limit of 2 s"):
        wav.read_wav(p, max_seconds=2)
    assert wav.read_wav(p, max_seconds=4).shape == (16000 * 3,)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels over a few bytes of data: a decompression bomb."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


def test_huge_png_is_a_media_error(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_claiming(20000, 20000))
    with pytest.raises(MediaError, match=r"bomb.png: image (of 20000x20000 pixels is above the limit|is too large)"):
        pp.load_image(tmp_path / "bomb.png")


@pytest.mark.parametrize("arr, match", [(np.zeros((0, 32, 32, 3), np.uint8), r"\[0, 32, 32, 3\]"),
                                        (np.zeros((2, 32, 32, 3), np.float32), "float32"),
                                        (np.array([None], dtype=object), "object")])
def test_video_files_checked_from_the_header(tmp_path, arr, match):
    p = tmp_path / "v.npy"
    np.save(p, arr, allow_pickle=True)
    with pytest.raises(MediaError, match=match):
        pp.load_video(p)
    os.remove(p)
    os.mkfifo(p)
    with deadline(), pytest.raises(MediaError, match="FIFO"):
        pp.load_video(p)


# ------------------------------------------------------------------------------------------ CLI boundary
def test_cli_prints_one_line_with_the_class_exit_code(tmp_path, capsys):
    assert cli.main(["summary", str(tmp_path / "none.json")]) == ConfigError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("omniref summary: ") and "none.json" in err[0]


def test_cli_unexpected_error_hints_at_debug(monkeypatch, capsys):
    from omniref import summary

    def boom(argv):
        raise RuntimeError("boom")
    monkeypatch.setattr(summary, "main", boom)
    assert cli.main(["summary"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RuntimeError: boom" in err[0] and "--debug" in err[0]
    with pytest.raises(RuntimeError):
        cli.main(["summary", "--debug"])


def test_error_classes_keep_callers_working():
    for cls in (CheckpointError, ConfigError, MediaError, InputError):
        assert issubclass(cls, ValueError)
    assert len({c.exit_code for c in (CheckpointError, ConfigError, MediaError, InputError)}) == 4



# ------------------------------------------------------------------------------------------ verify / compare
@pytest.mark.parametrize("ours, ref, ok", [
    ([1.0, np.nan], [1.0, np.nan], True),            # the same NaN passes
    ([1.0, np.inf], [1.0, np.inf], True),
    ([1.0, 2.0], [1.0, np.nan], False),              # a NaN golden used to PASS against any value
    ([1.0, np.nan], [1.0, np.inf], False),
    ([1.0, -np.inf], [1.0, np.inf], False),
    ([1.0, np.nan], [1.0, 2.0], False),
])
def test_verify_non_finite_values_must_match(ours, ref, ok):
    from omniref.verify import compare_arrays
    problem, err, _ = compare_arrays(np.array(ours, np.float32), np.array(ref, np.float32))
    assert (problem is None) == ok
    if not ok:
        assert "non-finite values differ at 1 of 2 positions (first at flat index 1" in problem


def test_verify_integer_keys_need_integers(tmp_path):
    from omniref.golden import Case
    from omniref.verify import compare_arrays
    problem, _, _ = compare_arrays(np.array([1.0, 2.0]), np.array([1, 2]))
    assert problem.startswith("dtype float64, expected integers")
    shutil.copytree(F32, tmp_path / "case")
    g = dict(np.load(F32 / "golden.npz"))
    g["thinker.input_ids"] = g["thinker.input_ids"].astype(np.float32)
    np.savez(tmp_path / "case" / "golden.npz", **g)
    with pytest.raises(InputError, match=r"golden.npz: key 'thinker.input_ids' has dtype float32, expected integers"):
        Case(tmp_path / "case").golden


def test_nan_golden_fails_verify_end_to_end(tmp_path, capsys):
    case = tmp_path / "case"
    shutil.copytree(ROOT / "tests" / "golden" / "code2wav_q8", case)
    g = dict(np.load(case / "golden.npz"))
    g["code2wav.wav"] = np.full_like(g["code2wav.wav"], np.nan)
    np.savez(case / "golden.npz", **g)
    assert cli.main(["verify", str(case), "--stage", "code2wav"]) == 1
    out = capsys.readouterr().out
    assert "code2wav.wav" in out and "FAIL  non-finite values differ" in out


@pytest.mark.parametrize("rtol", ["nan", "inf", "0", "-1"])
def test_compare_rtol_must_be_finite_positive(tmp_path, capsys, rtol):
    np.savez(tmp_path / "t.npz", a=np.zeros(3, np.float32))
    assert cli.main(["compare", str(tmp_path / "t.npz"), str(tmp_path / "t.npz"), "--rtol", rtol]) == 6
    assert "--rtol" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ nothing lost
def test_trace_never_writes_into_a_golden_case(tmp_path, capsys):
    case = tmp_path / "case"
    shutil.copytree(F32, case)
    before = (case / "golden.npz").read_bytes()
    for out in (case / "golden.npz", case / "trace.npz"):
        assert cli.main(["trace", str(case), "-o", str(out), "--force"]) == InputError.exit_code
        assert "golden case" in capsys.readouterr().err
    assert (case / "golden.npz").read_bytes() == before and not (case / "trace.npz").exists()


def test_generate_wav_never_overwrites_its_input_or_an_existing_file(tmp_path, capsys):
    audio = tmp_path / "in.wav"
    shutil.copy(ROOT / "omniref" / "data" / "speech.wav", audio)
    before = audio.read_bytes()
    gen = ["generate", "--checkpoint", str(F32), "--prompt-ids", "5", "--max-new-tokens", "1", "--audio", str(audio)]
    assert cli.main(gen + ["--wav", str(audio), "--force"]) == InputError.exit_code
    assert "would overwrite one of this command's inputs" in capsys.readouterr().err
    (tmp_path / "old.wav").write_bytes(b"keep")
    assert cli.main(gen + ["--wav", str(tmp_path / "old.wav")]) == InputError.exit_code
    assert "exists; pass --force" in capsys.readouterr().err
    assert audio.read_bytes() == before and (tmp_path / "old.wav").read_bytes() == b"keep"


# ------------------------------------------------------------------------------------------ bounded memory
@pytest.mark.parametrize("kw", [dict(causal=True), dict(segments=np.repeat(np.arange(4), 75)),
                                dict(causal=True, sliding_window=20), dict(mask=np.tri(300, 300, 5, dtype=bool))])
def test_numpy_attention_in_query_blocks_matches_one_block(monkeypatch, kw):
    """Blocks see the same keys and sum the same products: equal to float32 rounding (BLAS may pick another
    kernel for a shorter matrix, so the last bit of a score can differ)."""
    from omniref import nn
    rng = np.random.default_rng(0)
    q = rng.standard_normal((4, 300, 16), dtype=np.float32)
    k, v = rng.standard_normal((2, 2, 300, 16), dtype=np.float32)
    whole = nn.attention(q, k, v, **kw)
    monkeypatch.setattr(nn, "QUERY_BLOCK_SCORES", 4 * 300 * 7)          # blocks of 7 queries
    blocked = nn.attention(q, k, v, **kw)
    np.testing.assert_allclose(blocked, whole, rtol=0, atol=1e-6)


def test_numpy_attention_memory_grows_linearly(monkeypatch):
    import tracemalloc

    from omniref import nn
    rng = np.random.default_rng(1)
    L = 1024
    q, k, v = rng.standard_normal((3, 4, L, 8), dtype=np.float32)
    monkeypatch.setattr(nn, "QUERY_BLOCK_SCORES", 1 << 16)               # 256 KiB of scores per block
    tracemalloc.start()
    nn.attention(q, k, v, causal=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    full_scores = 4 * L * L * 4                                          # 16 MiB for one [nh, L, L] matrix
    assert peak < full_scores / 8, f"peak {peak / 2**20:.1f} MiB"


def test_prompt_longer_than_the_positions_is_refused_up_front(capsys):
    assert cli.main(["generate", "--checkpoint", str(F32), "--prompt-ids", "5", "--max-new-tokens", "40000"]) == 6
    assert "exceeds max_position_embeddings = 32768" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ checkpoint vs config
def _rewrite(tmp_path, drop=(), relabel=None) -> Path:
    """A copy of tiny_f32 whose model.safetensors lacks `drop` or stores `relabel` = (key, dtype) bytes as is."""
    case = tmp_path / "ckpt"
    case.mkdir()
    for p in F32.iterdir():
        if p.name != "model.safetensors":
            (case / p.name).symlink_to(p)
    raw = (F32 / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header, data = json.loads(raw[8:8 + n]), raw[8 + n:]
    out, blobs, pos = {}, [], 0
    for k, e in header.items():
        if k == "__metadata__" or k in drop:
            continue
        b = data[e["data_offsets"][0]:e["data_offsets"][1]]
        dtype = relabel[1] if relabel and relabel[0] == k else e["dtype"]
        out[k] = {"dtype": dtype, "shape": e["shape"], "data_offsets": [pos, pos + len(b)]}
        blobs.append(b)
        pos += len(b)
    text = json.dumps(out).encode()
    (case / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return case


def test_missing_q_norm_is_named_by_generate_and_by_the_class(tmp_path, capsys):
    key = "thinker.model.layers.1.self_attn.q_norm.weight"
    case = _rewrite(tmp_path, drop={key})
    assert cli.main(["generate", "--checkpoint", str(case), "--prompt-ids", "5"]) == CheckpointError.exit_code
    assert f"missing key '{key}'" in capsys.readouterr().err
    from omniref.thinker.model import Thinker
    with pytest.raises(CheckpointError, match=f"missing key '{key}'"):
        Thinker(load_weights(case), load_config(case))


@pytest.mark.parametrize("dtype", ["I32", "U32"])
def test_same_size_dtype_relabel_is_refused(tmp_path, capsys, dtype):
    key = "thinker.model.layers.0.mlp.gate.weight"
    case = _rewrite(tmp_path, relabel=(key, dtype))
    assert cli.main(["generate", "--checkpoint", str(case), "--prompt-ids", "5"]) == CheckpointError.exit_code
    assert f"'{key}' stored as {dtype}, but the other" in capsys.readouterr().err
