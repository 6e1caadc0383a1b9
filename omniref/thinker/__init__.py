"""The Thinker: the multimodal MoE language model that reads text, audio, images and video and writes text.

    positions.py  token ids -> 3-D multimodal rope positions (time, height, width) and rope_deltas
    prompt.py     a conversation -> prompt ids with media placeholders expanded to their token counts
    model.py      embeddings + fused media features -> MoE decoder (DeepStack, MRoPE, KV cache) -> logits
    sampling.py   logits -> next token (greedy, temperature, top-k, top-p, repetition penalty)
    tokenizer.py  text <-> ids, a from-scratch byte-level BPE reading the Hub tokenizer files
"""
from .model import GenerateResult, Media, Thinker, ThinkerPrompt, encode_media
from .positions import RopeIds, decode_positions, rope_ids_from_config, rope_index
from .prompt import Audio, Image, PromptIds, Video, chat_prompt
from .sampling import SamplingConfig, next_token

__all__ = ["Thinker", "ThinkerPrompt", "Media", "GenerateResult", "encode_media", "RopeIds", "rope_index",
           "rope_ids_from_config", "decode_positions", "Audio", "Image", "Video", "PromptIds", "chat_prompt",
           "SamplingConfig", "next_token"]
