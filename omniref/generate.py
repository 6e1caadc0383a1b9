"""`python -m omniref generate`: a checkpoint + audio/image/video + a prompt -> generated token ids (and text).

    omniref generate --checkpoint DIR [--audio A.wav ...] [--image I.png ...] [--video V.npy [--video-fps F]
                     [--video-audio V.wav]] --prompt "..." [--system "..."] [--max-new-tokens N]
                     [--temperature T --top-k K --top-p P --repetition-penalty R --seed S] [--wav OUT.wav]

The arrow: media -> features (mel / patches) -> chat prompt with expanded placeholders -> Thinker.generate
(prefill + KV-cached decoding) -> ids -> text (when DIR holds a tokenizer) [-> talker -> code2wav -> WAV].

Without a tokenizer (the random-weight tiny checkpoint has none) the prompt text is turned into ids byte by
byte inside the non-special id range, which is enough to exercise the computation; `--prompt-ids` gives
exact ids instead. A video is a .npy file of uint8 frames [T, H, W, 3] (already sampled at --video-fps).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

__all__ = ["main", "build_prompt"]


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
    if args.nl_id is not None:
        return args.nl_id
    if tokenizer is not None:
        ids = tokenizer.encode("\n")
        if len(ids) == 1:
            return ids[0]
    meta = ckpt / "meta.json"
    if meta.is_file():
        nl = (json.loads(meta.read_text()).get("token_ids") or {}).get("nl")
        if nl is not None:
            return int(nl)
    from omniref.tiny import TINY_TOKEN_IDS as T       # the bundled tiny checkpoint uses these ids
    if (cfg.im_start_token_id, cfg.user_token_id, cfg.assistant_token_id) == (T["im_start"], T["user"],
                                                                             T["assistant"]):
        return T["nl"]
    raise ValueError("cannot tell the newline token id (no tokenizer, no meta.json token_ids): pass --nl-id")


def build_prompt(args, cfg, tokenizer, nl_id: int, processor=None):
    """Media files + text -> ThinkerPrompt (features, patches, expanded ids).

    processor: the checkpoint's `ProcessorSettings` (preprocessor_config.json; default the published values).
    """
    from omniref.config import ProcessorSettings
    from omniref.audio import mel, wav
    from omniref.thinker.model import ThinkerPrompt
    from omniref.thinker.prompt import Audio, Image, PromptIds, Video, chat_prompt
    from omniref.vision.preprocess import preprocess_image, preprocess_video
    vc, ps = cfg.thinker_config.vision_config, processor or ProcessorSettings()
    encode = tokenizer.encode if tokenizer is not None else (lambda s: _byte_ids(s, cfg))
    items, clips = [], []
    prompt = ThinkerPrompt(input_ids=np.zeros(0, np.int64))
    for path in args.audio:
        clips.append(wav.read_wav(path, ps.sampling_rate))                  # [N] 16 kHz
    if args.video_audio and not args.video:
        raise ValueError("--video-audio needs --video")
    if args.video_audio:
        clips.append(wav.read_wav(args.video_audio, ps.sampling_rate))                        # the video's clip comes last
    if clips:
        prompt.input_features, prompt.feature_attention_mask = mel.extract_features(
            clips, ps.feature_size, ps.n_fft, ps.hop_length, ps.sampling_rate)               # [n, 128, F]
        items += [Audio(int(n)) for n in prompt.feature_attention_mask.sum(1)[:len(args.audio)]]
    grids, pixels = [], []
    for path in args.image:
        vi = preprocess_image(path, vc.patch_size, vc.spatial_merge_size, vc.temporal_patch_size,
                              ps.min_pixels, ps.max_pixels)
        pixels.append(vi.pixel_values); grids.append(vi.grid_thw[0]); items.append(Image(vi.grid_thw[0]))
    if pixels:
        prompt.pixel_values, prompt.image_grid_thw = np.concatenate(pixels), np.stack(grids)
    if args.video:
        frames = np.load(args.video)
        vi = preprocess_video(frames, vc.patch_size, vc.spatial_merge_size, vc.temporal_patch_size, fps=args.video_fps,
                              min_pixels=ps.video_min_pixels, max_pixels=ps.video_max_pixels)
        prompt.video_pixel_values, prompt.video_grid_thw = vi.pixel_values, vi.grid_thw
        prompt.video_second_per_grid = np.array([vi.second_per_grid], np.float32)
        own = int(prompt.feature_attention_mask[-1].sum()) if args.video_audio else None
        prompt.use_audio_in_video = own is not None
        items.append(Video(vi.grid_thw[0], vi.second_per_grid, audio_frames=own))
    text = [int(t) for t in args.prompt_ids.split(",")] if args.prompt_ids else (encode(args.prompt) if args.prompt else [])
    system = encode(args.system) if args.system else None
    prompt.input_ids = chat_prompt(PromptIds.from_config(cfg, nl_id), items + [text], system=system)
    return prompt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from omniref.hub import open_checkpoint, require_talker
    from omniref.thinker.model import Thinker
    from omniref.thinker.sampling import SamplingConfig
    ckpt = Path(args.checkpoint)
    try:
        hub = open_checkpoint(ckpt, check=False)
        cfg, weights, tokenizer = hub.config, hub.weights, hub.tokenizer
        if args.wav:
            require_talker(cfg, "--wav")
        prompt = build_prompt(args, cfg, tokenizer, _newline_id(args, ckpt, cfg, tokenizer), hub.processor)
        sampling = SamplingConfig(do_sample=args.temperature > 0, temperature=args.temperature, top_k=args.top_k,
                                  top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"omniref generate: {e}", file=sys.stderr)
        return 2
    accept = cfg.talker_config.accept_hidden_layer if args.wav else None
    print(f"prompt: {prompt.input_ids.shape[0]} tokens", file=sys.stderr)
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
        print(f"wrote {args.wav}: {speech.wav.shape[0] / SAMPLE_RATE:.2f} s at {SAMPLE_RATE} Hz", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
