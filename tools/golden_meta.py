"""meta.json for generated golden cases (FORMAT.md section 8): per-key documentation, provenance, versions."""
from __future__ import annotations

import platform
import re

import numpy as np

# (regex on the key, meaning). First match wins; `{i}` style suffixes are matched by \d+.
MEANINGS = [
    (r"mel\.waveform$", "Mono float32 waveform at 16 kHz, [samples] (16-bit PCM levels stored as float32)."),
    (r"mel\.waveform\.\d+$", "Clip i of the prompt (mono float32, 16 kHz), [samples_i]; clips are numbered in "
                             "the order of their placeholders in the prompt."),
    (r"mel\.input_features$", "WhisperFeatureExtractor output with the Qwen3-Omni settings (128 mel bins, n_fft "
                              "400, hop 160, one call over all clips, padding=True -> longest clip, "
                              "truncation=False): [n_clips, 128, max_samples // 160] float32."),
    (r"mel\.attention_mask$", "Valid-frame mask [n_clips, frames] int32 (clip i: min(ceil(samples_i/160), "
                              "frames) ones); thinker input feature_attention_mask."),
    (r"image\.raw$", "Input image, uint8 [H, W, 3] RGB."),
    (r"image\.resized$", "Image after smart_resize + Pillow bicubic resize (Qwen2VLImageProcessorPil), uint8 "
                         "[H', W', 3]."),
    (r"image\.pixel_values$", "Image processor output [grid_h*grid_w, 3*2*p*p] float32, rows in merge-block "
                              "order, each row (channel, temporal copy, y, x)."),
    (r"image\.grid_thw$", "[1, 3] int64 = (1, H'/p, W'/p)."),
    (r"video\.raw$", "Input video frames, uint8 [T, H, W, 3] RGB (already a smart_resize fixed point)."),
    (r"video\.pixel_values$", "Video pixel values [grid_t*grid_h*grid_w, 3*2*p*p] float32 computed by the "
                              "FORMAT.md 5.3 rule ((x-127.5)/127.5, odd T repeats the last frame, rows (t, "
                              "block_y, block_x, in_y, in_x), columns (channel, frame in pair, y, x)); the "
                              "torchvision video processor is not installed here, see meta.preprocessing."),
    (r"video\.grid_thw$", "[1, 3] int64 = (ceil(T/2), H/p, W/p)."),
    (r"video\.fps$", "fps given to the processor, [1] float32."),
    (r"video\.second_per_grid$", "temporal_patch_size / fps, [1] float32; thinker input video_second_per_grid."),
    (r"audio\.input_features$", "Audio encoder input: valid mel frames of all clips concatenated along time, "
                                "[128, sum(audio.feature_lens)]."),
    (r"audio\.feature_lens$", "Valid mel frames of each clip (prompt order), [n_clips] int64."),
    (r"audio\.hidden_states\.0$", "Audio encoder transformer input [N, d_model]: conv stem + conv_out + "
                                  "per-chunk sinusoid positions, padding rows removed."),
    (r"audio\.hidden_states\.\d+$", "Output of audio encoder layer i-1 [N, d_model] (the last one before "
                                    "ln_post)."),
    (r"audio\.output$", "Audio encoder output [N, output_dim] (ln_post, proj1, GELU, proj2), clips "
                        "concatenated; replaces the audio placeholders in order."),
    (r"vision(_video)?\.pixel_values$", "Vision encoder input (= the processor's pixel values)."),
    (r"vision(_video)?\.grid_thw$", "[n, 3] int64 (t, h, w) patch grid of each image/video."),
    (r"vision(_video)?\.hidden_states\.0$", "Patch embedding + interpolated position embedding [P, hidden]."),
    (r"vision(_video)?\.hidden_states\.\d+$", "Output of vision block i-1 [P, hidden]."),
    (r"vision(_video)?\.output$", "Merged tokens [P/m^2, out_hidden_size]; replace the image/video "
                                  "placeholders in order."),
    (r"vision(_video)?\.deepstack\.\d+$", "DeepStack feature k: merger_list[k] applied after vision block "
                                          "deepstack_visual_indexes[k]; added to thinker layer k's output at the "
                                          "visual positions."),
    (r"thinker\.input_ids$", "Prompt ids [1, L] (chat layout of FORMAT 5.4, placeholders expanded as the "
                             "Qwen3OmniMoeProcessor does)."),
    (r"thinker\.attention_mask$", "All ones [1, L]."),
    (r"thinker\.use_audio_in_video$", "1 if the prompt's video carries its own interleaved audio, else 0."),
    (r"thinker\.position_ids$", "Multimodal rope positions [3, 1, L] float32 (get_rope_index)."),
    (r"thinker\.rope_deltas$", "max position + 1 - L, [1, 1] float32."),
    (r"thinker\.hidden_states\.0$", "inputs_embeds [1, L, H] with audio/image/video features spliced in."),
    (r"thinker\.hidden_states\.\d+$", "Raw output of decoder layer i-1 [1, L, H] before its DeepStack addition; "
                                      "the last index is the final-RMSNorm output (what lm_head sees)."),
    (r"thinker\.logits$", "Prefill logits [1, L, V]."),
    (r"thinker\.logits_last$", "Logits of the last prompt position [1, V]."),
    (r"thinker\.generated_ids$", "Greedy thinker continuation [1, n_new] (stops at im_end or max_new_tokens)."),
    (r"talker\.thinker_embed$", "hidden_states[0] of every thinker forward of generate, concatenated "
                                "[1, L+n_new-1, Th]."),
    (r"talker\.thinker_hidden$", "hidden_states[accept_hidden_layer] of the same forwards [1, L+n_new-1, Th]."),
    (r"talker\.tts_special_embeds$", "text_projection(embed_tokens([tts_bos, tts_eos, tts_pad])) [3, Dt]."),
    (r"talker\.input_ids$", "Talker rope-index ids [1, Lt]: user-turn ids then 9 x tts_pad_token_id."),
    (r"talker\.attention_mask$", "All ones [1, Lt]."),
    (r"talker\.inputs_embeds$", "Talker prefill input [1, Lt, Dt] (user part + 9-row assistant prefix)."),
    (r"talker\.trailing_text_hidden$", "Per-decode-step text conditioning [1, n_new-1, Dt]."),
    (r"talker\.position_ids$", "Talker prefill positions [3, 1, Lt] float32 (rope index over talker.input_ids, "
                               "use_audio_in_video always off)."),
    (r"talker\.prefill_hidden$", "Final-norm hidden states of the talker prefill [1, Lt, Dt]."),
    (r"talker\.step_logits$", "Raw codec_head logits of the last position of every talker forward "
                              "[n_steps, Vt] (row 0 = prefill)."),
    (r"talker\.step_hidden$", "Matching final-norm hidden rows [n_steps, Dt]."),
    (r"talker\.step_inputs_embeds$", "Input of talker decode step k [n_steps-1, Dt]."),
    (r"talker\.step_position_ids$", "Positions of the talker decode steps [3, 1, n_steps-1] float32."),
    (r"talker\.sequences$", "Greedy talker tokens [1, n_steps] (first codebook; may end with "
                            "codec_eos_token_id)."),
    (r"talker\.codes$", "Codes handed to code2wav [1, G, T] (row 0 talker tokens, rows 1.. code predictor)."),
    (r"talker\.wav$", "Waveform returned by the reference generate() [1, 1, S] "
                      "(= code2wav.chunked_decode(codes, 300, 25))."),
    (r"code_predictor\.inputs_embeds$", "Code predictor prefill of frame t [T, 2, Dt]: [talker last hidden, "
                                        "talker codec_embedding(token)]."),
    (r"code_predictor\.logits$", "Raw logits of the G-1 code predictor steps of frame t [T, G-1, C]."),
    (r"code_predictor\.tokens$", "Greedy code predictor tokens [T, G-1] (= talker.codes[0, 1:, :].T)."),
    (r"code2wav\.codes$", "code2wav input codes [1, Q, T] int64."),
    (r"code2wav\.wav$", "code2wav forward of all codes at once, clamped to [-1, 1]: [1, 1, S]."),
    (r"code2wav\.wav_chunked$", "code2wav.chunked_decode(codes, chunk_size, left_context_size): [1, 1, S']."),
    (r"code2wav\.chunk_size$", "chunk_size used for code2wav.wav_chunked, [] int64."),
    (r"code2wav\.left_context_size$", "left_context_size used for code2wav.wav_chunked, [] int64."),
]


def meaning(key: str) -> str:
    for pattern, text in MEANINGS:
        if re.fullmatch(pattern, key):
            return text
    raise KeyError(f"no meaning documented for golden key {key!r}")


def keys_table(arrays: dict[str, np.ndarray]) -> dict:
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype), "meaning": meaning(k)}
            for k, v in sorted(arrays.items())}


def versions() -> dict:
    import PIL
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__,
            "pillow": PIL.__version__, "python": platform.python_version()}


def preprocessing(patch_size: int | None) -> dict:
    from golden_media import IMAGE_INIT, MEL_CALL, MEL_INIT, VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS

    pre = {"feature_extractor": {"cls": "WhisperFeatureExtractor", "init": MEL_INIT, "call": MEL_CALL},
           "processor": "placeholders expanded as Qwen3OmniMoeProcessor does (n_window=50, "
                        "position_id_per_seconds=13.0 for audio-in-video interleaving, its own "
                        "replace_video_with_audio_token); token ids are the case's tiny ids (no tokenizer)"}
    if patch_size is not None:
        pre["image_processor"] = {"cls": "Qwen2VLImageProcessorPil (PIL backend)",
                                  "init": dict(IMAGE_INIT, patch_size=patch_size, merge_size=2)}
        pre["video_processor"] = {
            "cls": "none: FORMAT.md 5.3 rule in numpy (tools/golden_media.video_pixel_values)",
            "why": "torchvision is not installed with the golden generator; the frames are a smart_resize "
                   "fixed point, so the torchvision processor would only normalise and patchify",
            "checked": "reproduces the shared image_basic video.pixel_values (torchvision) with max abs diff 0",
            "call_size": {"shortest_edge": VIDEO_MIN_PIXELS, "longest_edge": VIDEO_MAX_PIXELS}}
    return pre
