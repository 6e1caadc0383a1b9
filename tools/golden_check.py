"""NumPy-only sanity check of a golden case against FORMAT.md (no torch, no omniref).

    python tools/golden_check.py CASE_DIR [CASE_DIR ...]

Checks: every npz key is documented in meta.json with its shape and dtype; dtypes follow FORMAT 4; the mel
features match an independent float64 re-implementation of FORMAT 5.1; image / video pixel values follow
5.2 / 5.3; placeholder counts and audio lengths follow 5.4 / 6.1; thinker and talker positions follow 6.3 /
6.6 step 5 exactly; talker / code predictor / code2wav keys are mutually consistent (6.6-6.8) and waveform
lengths follow the 6.8 formulas. Prints one line per check; exit status 1 if any fails.
"""
from __future__ import annotations

import json
import math
import os
import sys

import numpy as np


class Report:
    def __init__(self, name):
        self.name, self.failures = name, 0

    def check(self, what: str, ok: bool, detail: str = ""):
        self.failures += not ok
        print(f"  {'ok  ' if ok else 'FAIL'} {what}{'  ' + detail if detail else ''}")


# ---------------------------------------------------------------------------------------------- 5.1 mel
def slaney_mel_filters(n_freq=201, n_mels=128, sr=16000, f_max=8000.0) -> np.ndarray:
    """[n_freq, n_mels] triangular filters on the Slaney scale with area normalisation (float64)."""
    def hz_to_mel(f):
        f = np.asarray(f, np.float64)
        log_part = 15.0 + 27.0 * np.log(np.maximum(f, 1e-12) / 1000.0) / np.log(6.4)
        return np.where(f < 1000.0, 3.0 * f / 200.0, log_part)

    def mel_to_hz(m):
        m = np.asarray(m, np.float64)
        return np.where(m < 15.0, 200.0 * m / 3.0, 1000.0 * np.exp(np.log(6.4) * (m - 15.0) / 27.0))

    fft_freqs = np.linspace(0, sr // 2, n_freq)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(f_max), n_mels + 2))       # [n_mels + 2] Hz
    fdiff = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]                                        # [n_freq, n_mels+2]
    down = -slopes[:, :-2] / fdiff[:-1]
    up = slopes[:, 2:] / fdiff[1:]
    fb = np.maximum(0.0, np.minimum(down, up))
    return fb * (2.0 / (edges[2:] - edges[:-2]))[None, :]


def mel_reference(waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """FORMAT 5.1 in float64: clips -> features [n, 128, F], mask [n, F]."""
    lmax = max(len(w) for w in waves)
    F = lmax // 160
    fb = slaney_mel_filters()
    n = np.arange(400)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / 400)                                    # periodic Hann
    feats, mask = [], []
    for w in waves:
        x = np.zeros(lmax)
        x[: len(w)] = w
        x = np.pad(x, 200, mode="reflect")                                             # reflect, edge not repeated
        frames = np.lib.stride_tricks.sliding_window_view(x, 400)[::160][: F + 1]      # [F+1, 400]
        power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2                      # [F+1, 201]
        mel = (power @ fb).T[:, :F]                                  # [128, F]: the last frame is dropped
        logm = np.log10(np.maximum(mel, 1e-10))
        logm = np.maximum(logm, logm.max() - 8.0)
        feats.append((logm + 4.0) / 4.0)
        mask.append((160 * np.arange(F) < len(w)).astype(np.int32))
    return np.stack(feats), np.stack(mask)


# ---------------------------------------------------------------------------------------------- 6.1 lengths
def out_len(n: int) -> int:
    def g(r):
        if r == 0:
            return 0
        for _ in range(3):
            r = (r - 1) // 2 + 1
        return r
    return 13 * (n // 100) + g(n % 100)


# ---------------------------------------------------------------------------------------------- 5.2 / 5.3
def smart_resize(h, w, factor, min_pixels, max_pixels):
    hb, wb = round(h / factor) * factor, round(w / factor) * factor
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb = max(factor, math.floor(h / beta / factor) * factor)
        wb = max(factor, math.floor(w / beta / factor) * factor)
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


def patchify(frames: np.ndarray, p: int, m: int = 2) -> np.ndarray:
    """[T', 3, H, W] float32 (T' even) -> rows (t, by, bx, iy, ix), cols (c, frame, y, x)."""
    t, _, h, w = frames.shape
    x = frames.reshape(t // 2, 2, 3, h // p // m, m, p, w // p // m, m, p).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(-1, 3 * 2 * p * p)


# ---------------------------------------------------------------------------------------------- 6.3 positions
def rope_index(ids, tok, m, pps, image_grids, video_grids, spg, frames, use_aiv) -> np.ndarray:
    """FORMAT 6.3 walked token by token (float32 values). tok: dict of the config's ids."""
    pos = np.zeros((3, len(ids)), np.float32)
    if not len(image_grids) and not len(video_grids):
        return np.tile(np.arange(len(ids), dtype=np.float32), (3, 1))
    i, nxt, ai, ii, vi = 0, 0.0, 0, 0, 0

    def vision(s, grid, tval):
        t, h, w = (int(x) for x in grid)
        out = []
        for a in range(t):
            for b in range(h // m):
                for c in range(w // m):
                    out.append((np.float32(s + 1) + np.float32(tval(a)), s + 1 + b, s + 1 + c))
        return out

    while i < len(ids):
        x = ids[i]
        if x == tok["audio_start"] and not (use_aiv and i > 0 and ids[i - 1] == tok["vision_start"]):
            n = out_len(frames[ai]); ai += 1
            for k in range(n + 2):
                pos[:, i + k] = nxt + k
            i += n + 2
            nxt = pos[:, i - 1].max() + 1
        elif x == tok["vision_start"] and ids[i + 1] == tok["image_pad"]:
            s = nxt
            pos[:, i] = s
            vals = vision(s, image_grids[ii], lambda a: a * pps); ii += 1
            for k, v in enumerate(vals):
                pos[:, i + 1 + k] = v
            i += 1 + len(vals)
            nxt = pos[:, : i].max() + 1
            pos[:, i] = nxt                                    # vision_end
            i += 1; nxt += 1
        elif x == tok["vision_start"] and ids[i + 1] == tok["video_pad"]:
            s = nxt
            pos[:, i] = s
            sp = np.float32(spg[vi])
            vals = vision(s, video_grids[vi], lambda a: np.float32(np.float32(a) * sp) * np.float32(pps)); vi += 1
            for k, v in enumerate(vals):
                pos[:, i + 1 + k] = v
            i += 1 + len(vals)
            nxt = pos[:, : i].max() + 1
            pos[:, i] = nxt
            i += 1; nxt += 1
        elif use_aiv and x == tok["vision_start"] and ids[i + 1] == tok["audio_start"]:
            s = nxt
            pos[:, i], pos[:, i + 1] = s, s + 1
            sp = np.float32(spg[vi])
            vals = vision(s + 1, video_grids[vi], lambda a: np.float32(np.float32(a) * sp) * np.float32(pps))
            vi += 1
            n = out_len(frames[ai]); ai += 1
            aud = [(s + 2 + k,) * 3 for k in range(n)]
            merged, a_, v_ = [], 0, 0
            while a_ < len(aud) and v_ < len(vals):
                if vals[v_][0] <= aud[a_][0]:
                    merged.append(vals[v_]); v_ += 1
                else:
                    merged.append(aud[a_]); a_ += 1
            tail = vals[v_:] + aud[a_:]                        # the list that was not used up
            merged += tail
            for k, v in enumerate(merged):
                pos[:, i + 2 + k] = v
            i += 2 + len(merged)
            # The reference continues from 1 + the largest value of that *trailing run* (its last appended
            # piece), not from 1 + the largest position so far as FORMAT 6.3 words it; the two differ when an
            # earlier video token sits higher (e.g. a wide frame) than the trailing audio run.
            nxt = np.float32(max(max(v) for v in tail)) + 1
            pos[:, i], pos[:, i + 1] = nxt, nxt + 1
            i += 2; nxt += 2
        else:
            pos[:, i] = nxt
            i += 1; nxt += 1
    return pos


def talker_rope_index_reference_walk(ids, tok, m, pps, image_grids, video_grids, spg, frames) -> np.ndarray:
    """6.6 step 5: the same walk with use_audio_in_video off; an interleaved video block then reads as text
    plus one audio block whose length is its clip's out_len (the rest of the block continues as text)."""
    return rope_index(ids, tok, m, pps, image_grids, video_grids, spg, frames, use_aiv=False)


# ---------------------------------------------------------------------------------------------- main
def check_case(case_dir: str) -> int:
    rep = Report(case_dir)
    print(f"== {case_dir}")
    g = dict(np.load(os.path.join(case_dir, "golden.npz")))
    meta = json.load(open(os.path.join(case_dir, "meta.json")))
    cfg_path = os.path.join(case_dir, "config.json")
    cfg = json.load(open(cfg_path)) if os.path.exists(cfg_path) else None

    # meta <-> npz
    mk = meta["keys"]
    rep.check("meta.keys == npz keys", set(mk) == set(g), str(sorted(set(mk) ^ set(g))))
    bad = [k for k in g if k in mk and (list(g[k].shape) != mk[k]["shape"] or str(g[k].dtype) != mk[k]["dtype"])]
    rep.check("shapes/dtypes match meta", not bad, str(bad))
    ints = ("ids", "grid_thw", "codes", "tokens", "sequences", "feature_lens", "chunk_size", "left_context_size",
            "use_audio_in_video", "attention_mask")
    wrong = []
    for k, v in g.items():
        want = (np.int32 if k == "mel.attention_mask" else np.uint8 if k.endswith((".raw", ".resized"))
                else np.int64 if k.split(".")[-1] in ints or k.endswith("_ids") and "position" not in k
                else np.float32)
        if v.dtype != want:
            wrong.append(f"{k}:{v.dtype}")
    rep.check("dtypes follow FORMAT 4", not wrong, str(wrong))

    # 5.1 mel
    if "mel.input_features" in g:
        waves = [g["mel.waveform"]] if "mel.waveform" in g else [g[f"mel.waveform.{i}"] for i in
                                                                 range(g["mel.input_features"].shape[0])]
        feats, mask = mel_reference([w.astype(np.float64) for w in waves])
        err = np.abs(feats - g["mel.input_features"]).max() / np.abs(feats).max()
        rep.check("mel.input_features vs float64 FORMAT 5.1", err <= 1e-4, f"rel {err:.2e}")
        rep.check("mel.attention_mask rule", np.array_equal(mask, g["mel.attention_mask"]))

    # 5.2 image
    if "image.pixel_values" in g:
        p = (cfg["thinker_config"]["vision_config"]["patch_size"] if cfg
             else int(round((g["image.pixel_values"].shape[1] / 6) ** 0.5)))
        h, w, _ = g["image.raw"].shape
        rh, rw = smart_resize(h, w, 2 * p, 3136, 12845056)
        rep.check("image.resized shape = smart_resize", g["image.resized"].shape[:2] == (rh, rw), f"{(rh, rw)}")
        x = (g["image.resized"].astype(np.float64) * (1 / 255)).astype(np.float32)
        x = (x - np.float32(0.5)) / np.float32(0.5)
        pv = patchify(np.repeat(x.transpose(2, 0, 1)[None], 2, 0), p)
        rep.check("image.pixel_values rule", np.abs(pv - g["image.pixel_values"]).max() <= 1e-6)
        rep.check("image.grid_thw", g["image.grid_thw"].tolist() == [[1, rh // p, rw // p]])

    # 5.3 video
    if "video.pixel_values" in g:
        p = cfg["thinker_config"]["vision_config"]["patch_size"]
        raw = g["video.raw"]
        t, h, w, _ = raw.shape
        rep.check("video frames are a smart_resize fixed point",
                  smart_resize(h, w, 2 * p, 131072, 786432) == (h, w))
        frames = np.concatenate([raw, raw[-1:]]) if t % 2 else raw
        x = ((frames.astype(np.float32) - np.float32(127.5)) / np.float32(127.5)).transpose(0, 3, 1, 2)
        rep.check("video.pixel_values rule", np.abs(patchify(x, p) - g["video.pixel_values"]).max() <= 1e-6)
        rep.check("video.grid_thw", g["video.grid_thw"].tolist() == [[len(frames) // 2, h // p, w // p]])
        rep.check("video.second_per_grid = 2/fps",
                  np.float32(2 / g["video.fps"][0]) == g["video.second_per_grid"][0])

    # 6.1 audio
    if "audio.input_features" in g:
        mask = g["mel.attention_mask"].astype(bool)
        cat = np.concatenate([g["mel.input_features"][i][:, mask[i]] for i in range(len(mask))], axis=1)
        rep.check("audio.input_features = masked mel", np.array_equal(cat, g["audio.input_features"]))
        rep.check("audio.feature_lens = mask sums", np.array_equal(mask.sum(1), g["audio.feature_lens"]))
        n = sum(out_len(int(f)) for f in g["audio.feature_lens"])
        rep.check("audio tokens N = sum out_len", g["audio.output"].shape[0] == n, f"N={n}")

    # 5.4 / 6.3 thinker ids and positions
    if "thinker.input_ids" in g and cfg:
        tc = cfg["thinker_config"]
        ids = g["thinker.input_ids"][0].tolist()
        tok = {"audio_start": tc["audio_start_token_id"], "vision_start": tc["vision_start_token_id"],
               "image_pad": tc["image_token_id"], "video_pad": tc["video_token_id"],
               "audio_pad": tc["audio_token_id"]}
        m = tc["vision_config"]["spatial_merge_size"]
        frames = g["audio.feature_lens"].tolist() if "audio.feature_lens" in g else []
        n_audio = sum(out_len(f) for f in frames)
        rep.check("audio placeholder count", ids.count(tok["audio_pad"]) == n_audio)
        if "image.grid_thw" in g:
            n_img = int(g["image.grid_thw"].prod(1).sum()) // m ** 2
            rep.check("image placeholder count", ids.count(tok["image_pad"]) == n_img)
        if "video.grid_thw" in g:
            n_vid = int(g["video.grid_thw"].prod(1).sum()) // m ** 2
            rep.check("video placeholder count", ids.count(tok["video_pad"]) == n_vid)
        img = g.get("image.grid_thw", np.zeros((0, 3), np.int64))
        vid = g.get("video.grid_thw", np.zeros((0, 3), np.int64))
        spg = g.get("video.second_per_grid", np.zeros(0, np.float32))
        aiv = bool(g["thinker.use_audio_in_video"])
        pos = rope_index(ids, tok, m, tc["position_id_per_seconds"], img, vid, spg, frames, aiv)
        rep.check("thinker.position_ids = FORMAT 6.3", np.array_equal(pos, g["thinker.position_ids"][:, 0]),
                  f"max diff {np.abs(pos - g['thinker.position_ids'][:, 0]).max():.3g}")
        rep.check("thinker.rope_deltas", g["thinker.rope_deltas"][0, 0] == pos.max() + 1 - len(ids))
        if "thinker.logits" in g:
            rep.check("logits_last = logits[:, -1]",
                      np.array_equal(g["thinker.logits"][:, -1], g["thinker.logits_last"]))
        rep.check("generated_ids[0] = argmax logits_last",
                  g["thinker.generated_ids"][0, 0] == g["thinker.logits_last"][0].argmax())
        L, n_new = len(ids), g["thinker.generated_ids"].shape[1]
        rep.check("thinker_embed length L+n_new-1", g["talker.thinker_embed"].shape[1] == L + n_new - 1)
        acc = cfg["talker_config"]["accept_hidden_layer"]
        e = np.abs(g["talker.thinker_hidden"][:, :L] - g[f"thinker.hidden_states.{acc}"]).max()
        scale = np.abs(g[f"thinker.hidden_states.{acc}"]).max()
        rep.check("thinker_hidden[:L] = hidden_states[accept_hidden_layer]", e <= 1e-4 * scale, f"{e:.2e}")

        # 6.6 step 5: talker positions
        kc = cfg["talker_config"]
        ttok = {"audio_start": kc["audio_start_token_id"], "vision_start": kc["vision_start_token_id"],
                "image_pad": kc["image_token_id"], "video_pad": kc["video_token_id"],
                "audio_pad": kc["audio_token_id"]}
        tids = g["talker.input_ids"][0].tolist()
        tpos = talker_rope_index_reference_walk(tids, ttok, kc["spatial_merge_size"], kc["position_id_per_seconds"],
                                                img, vid, spg, frames)
        rep.check("talker.position_ids = FORMAT 6.6 step 5", np.array_equal(tpos, g["talker.position_ids"][:, 0]),
                  f"max diff {np.abs(tpos - g['talker.position_ids'][:, 0]).max():.3g}")
        n_steps = g["talker.sequences"].shape[1]
        want = tpos.max() + 1 + np.arange(n_steps - 1)
        rep.check("talker.step_position_ids",
                  np.array_equal(np.tile(want, (3, 1)), g["talker.step_position_ids"][:, 0]))

    # 6.7 / 6.8 consistency
    if "talker.codes" in g:
        codes, seq = g["talker.codes"], g["talker.sequences"]
        T = codes.shape[-1]
        rep.check("T = n_steps - 1", T == seq.shape[1] - 1)
        rep.check("codes row 0 = talker tokens", np.array_equal(codes[0, 0], seq[0, :T]))
        cp_tokens = g["code_predictor.tokens"]
        rep.check("codes rows 1.. = code predictor tokens", np.array_equal(codes[0, 1:], cp_tokens.T))
        rep.check("code predictor tokens = argmax logits",
                  np.array_equal(g["code_predictor.logits"].argmax(-1), cp_tokens))
        rep.check("code2wav.codes = talker.codes", np.array_equal(g["code2wav.codes"], codes))
        rep.check("cp prefill row 0 = talker step hidden",
                  np.array_equal(g["code_predictor.inputs_embeds"][:, 0], g["talker.step_hidden"][:T]))
    if "code2wav.wav" in g and cfg:
        c2 = cfg["code2wav_config"]
        T = g["code2wav.codes"].shape[-1]

        def wav_len(t):
            n = t * int(np.prod(c2["upsampling_ratios"]))
            for r in c2["upsample_rates"]:
                n = (n - 1) * r
            return n
        rep.check("code2wav.wav length (6.8 step 4)", g["code2wav.wav"].shape[-1] == wav_len(T))
        cs, lc = int(g["code2wav.chunk_size"]), int(g["code2wav.left_context_size"])
        total, start, n_chunks = 0, 0, 0
        up = int(np.prod(c2["upsample_rates"])) * int(np.prod(c2["upsampling_ratios"]))
        while start < T:
            end = min(start + cs, T)
            ctx = lc if start - lc > 0 else start
            total += wav_len(end - start + ctx) - ctx * up
            start, n_chunks = end, n_chunks + 1
        rep.check(f"code2wav.wav_chunked length ({n_chunks} chunks)", g["code2wav.wav_chunked"].shape[-1] == total)
        clipped = float(np.mean(np.abs(g["code2wav.wav"]) >= 1))
        rep.check("waveform mostly unclipped", clipped < 0.02, f"clipped {clipped:.4f}")
    mm = meta.get("decision_margins", {})
    small = {k: v for k, v in mm.items() if ("prob" in k and v < 1e-5) or ("argmax" in k and v < 1e-4)}
    rep.check("decision margins", not small, str(mm))
    return rep.failures


def main(argv=None) -> int:
    dirs = (argv if argv is not None else sys.argv[1:])
    fails = sum(check_case(d) for d in dirs)
    print(f"{fails} failing checks")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
