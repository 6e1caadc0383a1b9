"""`python -m omniref demo`: the whole Qwen3-Omni chain on a bundled default, traced stage by stage.

Default input: the tiny checkpoint of `omniref.tiny` (seeded random weights, written once into the output
folder), the real speech clip `omniref/data/speech.wav` and the photo `omniref/data/photo.jpg`. Output
(default folder `omniref_demo_out/`): `speech.wav` (24 kHz, 16-bit PCM), `speech.png` (waveform and
spectrogram) and `codes.npy` (the codec frames).

RANDOM WEIGHTS PRODUCE NOISE: the tiny model has never been trained, so its "answer" is arbitrary token
ids and its "speech" sounds like buzzing. What the demo shows is the traced computation: every shape, every
special token and every stage of the 30B model, running end to end in seconds on a laptop.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

__all__ = ["main", "save_figure"]

DATA = Path(__file__).resolve().parent / "data"
# A tiny vocabulary has no tokenizer: the user's text is a few arbitrary ids standing for a question.
DEMO_TEXT_IDS = [40, 41, 42, 43, 44]

BANNER = """\
omniref demo: speech + photo + text in, text + speech out, through every stage of Qwen3-Omni-MoE.
NOTE: the default checkpoint has RANDOM weights (seeded, never trained). Its text is arbitrary ids and its
speech is noise. The point is the traced computation: real shapes, real special tokens, every stage run."""


def save_figure(wav: np.ndarray, sample_rate: int, path, title: str = "") -> None:
    """Waveform (top) and log-power spectrogram (bottom) of a mono waveform [S] -> PNG file."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import signal
    t = np.arange(wav.shape[0]) / sample_rate
    f, tt, p = signal.spectrogram(wav.astype(np.float64), fs=sample_rate, nperseg=512, noverlap=384)
    fig, (a, b) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    a.plot(t, wav, lw=0.4)
    a.set(ylabel="amplitude", ylim=(-1.05, 1.05), title=title or "waveform")
    b.pcolormesh(tt, f / 1000, 10 * np.log10(p + 1e-12), shading="auto", cmap="magma")
    b.set(xlabel="time (s)", ylabel="frequency (kHz)", title="spectrogram (dB)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="omniref demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="omniref_demo_out", help="output folder (default: omniref_demo_out/)")
    ap.add_argument("--checkpoint", help="a checkpoint folder instead of the tiny random model "
                                         "(e.g. a golden case; it must use the same chat token layout)")
    ap.add_argument("--nl-id", type=int, help="newline token id of --checkpoint (default: its meta.json)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the tiny random weights (default 0)")
    ap.add_argument("--audio", default=str(DATA / "speech.wav"), help="a WAV file (any rate; resampled)")
    ap.add_argument("--image", default=str(DATA / "photo.jpg"), help="an image file")
    ap.add_argument("--speaker", default="ethan")
    ap.add_argument("--thinker-max-new-tokens", type=int, default=12)
    ap.add_argument("--talker-max-new-tokens", type=int, default=40)
    ap.add_argument("--force", action="store_true", help="overwrite the outputs of an earlier run in --out")
    args = ap.parse_args(argv)

    from . import pipeline
    from .audio.wav import write_wav
    from .checkpoint import check_weights
    from .config import load_config
    from .errors import InputError, MediaError, output_file, regular_file
    from .thinker.prompt import newline_token_id
    from .tiny import TINY_TOKEN_IDS, write_tiny_checkpoint
    from .weights import load_weights

    # ---- every input and output checked before the first computation (errors: one line, see omniref.cli)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: --out must be a folder, and this is a file", file=out)
    outputs = [out / "speech.wav", out / "speech.png", out / "codes.npy"]
    if out.is_dir():
        inputs = [args.audio, args.image] + (list(Path(args.checkpoint).glob("*")) if args.checkpoint else [])
        for path in outputs:
            output_file(path, "demo output", force=args.force, inputs=inputs)
    for option in ("thinker_max_new_tokens", "talker_max_new_tokens"):
        if getattr(args, option) < 1:
            raise InputError(f"--{option.replace('_', '-')} {getattr(args, option)}: expected an integer >= 1",
                             field=option)
    regular_file(args.audio, "WAV file", MediaError)
    regular_file(args.image, "image file", MediaError)
    print(BANNER, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
        nl = args.nl_id if args.nl_id is not None else newline_token_id(ckpt)
        if nl is None:
            raise InputError(f"{ckpt}: cannot tell the newline token id; pass --nl-id", field="--nl-id")
    else:
        ckpt = out / f"tiny_checkpoint_seed{args.seed}"
        if not (ckpt / "model.safetensors").is_file():
            write_tiny_checkpoint(ckpt, seed=args.seed)
        nl = TINY_TOKEN_IDS["nl"]
    cfg, weights = load_config(ckpt), load_weights(ckpt)
    check_weights(weights, cfg)                          # every tensor the config implies, by name and shape
    cfg.talker_config.speaker(args.speaker)              # an unknown --speaker before the thinker runs
    print(f"\ncheckpoint {ckpt} ({len(weights)} tensors)\naudio      {args.audio}\nimage      {args.image}\n",
          flush=True)

    res = pipeline.run(weights, cfg, nl_token_id=nl, audio=args.audio, image=args.image,
                       text_ids=DEMO_TEXT_IDS, thinker_max_new_tokens=args.thinker_max_new_tokens,
                       talker_max_new_tokens=args.talker_max_new_tokens, speaker=args.speaker,
                       log=lambda m: print(m, flush=True))
    wav = res.speech.wav
    wav_path, png_path, codes_path = out / "speech.wav", out / "speech.png", out / "codes.npy"
    write_wav(wav_path, wav, pipeline.SAMPLE_RATE)
    np.save(codes_path, res.speech.codes)
    save_figure(wav, pipeline.SAMPLE_RATE, png_path,
                title=f"talker speech: {res.speech.codes.shape[1]} frames -> {wav.shape[0]} samples at 24 kHz")
    total = sum(res.timings.values())
    print(f"\nprompt {res.input_ids.shape[0]} tokens; thinker answered ids {res.text_ids.tolist()}")
    print(f"codes [{res.speech.codes.shape[0]} codebooks x {res.speech.codes.shape[1]} frames] -> "
          f"{wav.shape[0] / pipeline.SAMPLE_RATE:.2f} s of audio; total {total:.2f} s")
    print(f"wrote {wav_path} (24 kHz 16-bit PCM), {png_path}, {codes_path}")
    if not args.checkpoint:
        print("Reminder: random weights -> the audio is noise; the traced computation is the point.")
    return 0
