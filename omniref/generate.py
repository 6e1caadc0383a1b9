"""`python -m omniref generate`: a checkpoint + audio/image/video + a prompt -> generated token ids (and text).

    omniref generate --checkpoint DIR [--audio A.wav ...] [--image I.png ...] [--video V.npy [--video-fps F]
                     [--video-audio V.wav]] --prompt "..." [--system "..."] [--max-new-tokens N]
                     [--temperature T --top-k K --top-p P --repetition-penalty R --seed S] [--wav OUT.wav]
                     [--trace OUT.npz [--tap PATTERN]... [--all-calls] [--force]]

The arrow: media -> features (mel / patches) -> chat prompt with expanded placeholders -> Thinker.generate
(prefill + KV-cached decoding) -> ids -> text (when DIR holds a tokenizer) [-> talker -> code2wav -> WAV].

Without a tokenizer (the random-weight tiny checkpoint has none) the prompt text is turned into ids byte by
byte inside the non-special id range, which is enough to exercise the computation; `--prompt-ids` gives
exact ids instead. A video is a .npy file of uint8 frames [T, H, W, 3] (already sampled at --video-fps).

`--trace OUT.npz` (or `omniref trace --checkpoint DIR ... -o OUT.npz`) also saves every tap of the run, with the
prompt's ids and features as its inputs, for `omniref compare` against a trace of the reference
(tools/record_reference.py DIR --inputs OUT.npz replays the same inputs; docs/porting.md).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np

__all__ = ["main", "main_trace", "prompt_from_args", "prompt_arrays"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="omniref generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="directory with config.json and safetensors weights")
    p.add_argument("--audio", action="append", default=[], help="WAV file (any rate; resampled to 16 kHz)")
    p.add_argument("--image", action="append", default=[], help="image file (PNG/JPEG)")
    p.add_argument("--video", help=".npy uint8 frames [T, H, W, 3]")
    p.add_argument("--video-fps", type=float, default=1.0, help="frame rate of the --video frames (default 1)")
    p.add_argument("--video-audio", help="WAV of the video's own sound, interleaved with it (use_audio_in_video)")
    p.add_argument("--prompt", default="", help="user text (after the media)")
    p.add_argument("--prompt-ids", help="user text as comma-separated token ids (instead of --prompt)")
    p.add_argument("--system", help="optional system turn text")
    p.add_argument("--nl-id", type=int, help="newline token id (default: from the tokenizer or meta.json)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wav", help="also speak the answer: write the 24 kHz waveform here (talker + code2wav)")
    p.add_argument("--speaker", default="ethan", help="talker speaker name (with --wav)")
    p.add_argument("--talker-max-new-tokens", type=int, default=4096,
                   help="most codec frames the talker may generate (with --wav; 4096 as the reference, "
                        "about 5.5 minutes of speech; random-weight checkpoints rarely emit the codec eos)")
    p.add_argument("--trace", metavar="OUT.npz", help="also save every tap of the run (docs/taps.md)")
    p.add_argument("--tap", action="append", help="with --trace: keep only names matching this glob (repeatable)")
    p.add_argument("--all-calls", action="store_true", help="with --trace: also keep later calls as NAME@n")
    p.add_argument("--force", action="store_true", help="overwrite the --trace file if it exists")
    return p


def _byte_ids(text: str, cfg) -> list[int]:
    """Tokenizer-less fallback: each UTF-8 byte -> an id in the range above every special id."""
    th = cfg.thinker_config
    special = [cfg.im_start_token_id, cfg.im_end_token_id, cfg.system_token_id, cfg.user_token_id,
               cfg.assistant_token_id, cfg.tts_pad_token_id, cfg.tts_bos_token_id, cfg.tts_eos_token_id,
               th.audio_token_id, th.image_token_id, th.video_token_id, th.audio_start_token_id,
               th.audio_end_token_id, th.vision_start_token_id, th.vision_end_token_id]
    lo, vocab = max(special) + 1, th.text_config.vocab_size
    if lo >= vocab:
        raise ValueError("no tokenizer and no free id range above the special ids: pass --prompt-ids")
    return [lo + b % (vocab - lo) for b in text.encode("utf-8")]


def _newline_id(args, ckpt: Path, cfg, tokenizer) -> int:
    """--nl-id, else the tokenizer's or meta.json's (thinker.prompt.newline_token_id), else the tiny model's."""
    from omniref.thinker.prompt import newline_token_id
    nl = args.nl_id if args.nl_id is not None else newline_token_id(ckpt, tokenizer)
    if nl is not None:
        return nl
    from omniref.tiny import TINY_TOKEN_IDS as T       # the bundled tiny checkpoint uses these ids
    if (cfg.im_start_token_id, cfg.user_token_id, cfg.assistant_token_id) == (T["im_start"], T["user"],
                                                                             T["assistant"]):
        return T["nl"]
    raise ValueError("cannot tell the newline token id (no tokenizer, no meta.json token_ids): pass --nl-id")


def prompt_from_args(args, cfg, tokenizer, nl_id: int):
    """Media files + text of the command line -> ThinkerPrompt (thinker.prompt.build_prompt)."""
    from omniref.thinker.prompt import PromptIds, build_prompt
    encode = tokenizer.encode if tokenizer is not None else (lambda s: _byte_ids(s, cfg))
    text = [int(t) for t in args.prompt_ids.split(",")] if args.prompt_ids else (encode(args.prompt) if args.prompt else [])
    if args.video_audio and not args.video:
        raise ValueError("--video-audio needs --video")
    return build_prompt(PromptIds.from_config(cfg, nl_id), cfg.thinker_config.vision_config, audio=args.audio,
                        images=args.image, video=np.load(args.video) if args.video else None,
                        video_fps=args.video_fps, video_audio=args.video_audio or None, text=text,
                        system=encode(args.system) if args.system else None)


def prompt_arrays(prompt) -> dict[str, np.ndarray]:
    """A ThinkerPrompt under the golden-case names (FORMAT.md) a trace stores its inputs with."""
    arrays = {"thinker.input_ids": np.asarray(prompt.input_ids, np.int64)[None],
              "thinker.use_audio_in_video": np.array(int(prompt.use_audio_in_video), np.int64)}
    for key, value in (("mel.input_features", prompt.input_features),
                       ("mel.attention_mask", prompt.feature_attention_mask),
                       ("image.pixel_values", prompt.pixel_values), ("image.grid_thw", prompt.image_grid_thw),
                       ("video.pixel_values", prompt.video_pixel_values), ("video.grid_thw", prompt.video_grid_thw),
                       ("video.second_per_grid", prompt.video_second_per_grid)):
        if value is not None:
            arrays[key] = np.asarray(value)
    return arrays


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.trace and Path(args.trace).exists() and not args.force:
        print(f"omniref generate: {args.trace}: already exists (use --force to overwrite)", file=sys.stderr)
        return 2
    from omniref.config import load_config
    from omniref.thinker.model import Thinker
    from omniref.thinker.sampling import SamplingConfig
    from omniref.thinker.tokenizer import load_tokenizer
    from omniref.weights import load_weights
    ckpt = Path(args.checkpoint)
    try:
        cfg, weights = load_config(ckpt), load_weights(ckpt)
        tokenizer = load_tokenizer(ckpt)
        prompt = prompt_from_args(args, cfg, tokenizer, _newline_id(args, ckpt, cfg, tokenizer))
        sampling = SamplingConfig(do_sample=args.temperature > 0, temperature=args.temperature, top_k=args.top_k,
                                  top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"omniref generate: {e}", file=sys.stderr)
        return 2
    accept = cfg.talker_config.accept_hidden_layer if args.wav else None
    print(f"prompt: {prompt.input_ids.shape[0]} tokens", file=sys.stderr)
    trace = _trace_for(args, cfg, prompt)                                     # None without --trace
    with trace if trace is not None else contextlib.nullcontext():
        res = Thinker(weights, cfg).generate(prompt, args.max_new_tokens, sampling, record_layer=accept)
        print(" ".join(str(int(t)) for t in res.generated_ids))
        if tokenizer is not None:
            print(tokenizer.decode(res.generated_ids, skip_special=True))

        # ---- speech output: talker + code predictor + code2wav turn this thinker run into a 24 kHz waveform
        if args.wav:
            from omniref.pipeline import SAMPLE_RATE, speak
            speech = speak(weights, cfg, prompt, res, speaker=args.speaker,
                           max_new_tokens=args.talker_max_new_tokens)
            from omniref.audio.wav import write_wav
            write_wav(args.wav, speech.wav, SAMPLE_RATE)
            print(f"wrote {args.wav}: {speech.wav.shape[0] / SAMPLE_RATE:.2f} s at {SAMPLE_RATE} Hz",
                  file=sys.stderr)
    if trace is not None:
        trace.save(args.trace, force=args.force)
        print(f"wrote {len(trace)} arrays ({len(trace.inputs)} inputs) to {args.trace}", file=sys.stderr)
    return 0


def _trace_for(args, cfg, prompt):
    """With --trace: an omniref.trace.Trace holding the prompt as its inputs and the settings a replay
    of the reference needs (greedy decoding only: a sampled run cannot be replayed token for token)."""
    if not args.trace:
        return None
    from omniref.trace import Trace
    generation = {"thinker": {"max_new_tokens": args.max_new_tokens, "eos_token_id": cfg.im_end_token_id,
                              "do_sample": args.temperature > 0},
                  "talker": {"max_new_tokens": args.talker_max_new_tokens, "speaker": args.speaker,
                             "repetition_penalty": 1.05},
                  "return_audio": bool(args.wav)}
    trace = Trace(args.tap, calls="all" if args.all_calls else "first", meta={"generation": generation})
    for key, value in prompt_arrays(prompt).items():
        trace.add(key, value, is_input=True)
    return trace


def main_trace(argv: list[str] | None = None) -> int:
    """`omniref trace`: a golden case's stages (omniref.trace), or with --checkpoint a generate run whose
    `-o/--out` is the trace file."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not any(a == "--checkpoint" or a.startswith("--checkpoint=") for a in argv):
        from omniref.trace import main_trace as trace_case
        return trace_case(argv)
    argv = ["--trace" if a in ("-o", "--out") else a for a in argv]
    if "--trace" not in argv:
        print("omniref trace: -o/--out OUT.npz is required", file=sys.stderr)
        return 2
    return main(argv)


if __name__ == "__main__":
    sys.exit(main())
