"""The talker: thinker states -> codec frames (HF `Qwen3OmniMoeTalkerForConditionalGeneration`).

    inputs.py          thinker embeddings / hidden states -> talker prefill input, trailing text, positions
    model.py           talker MoE decoder + codec head + the generation loop
    code_predictor.py  per frame: talker state + codebook 0 -> codebooks 1..G-1

The frames then go to `omniref.codec.code2wav` to become a 24 kHz waveform.
"""
from .code_predictor import CodePredictor, FrameCodes
from .inputs import TalkerInputs, build_talker_inputs, tts_special_embeds
from .model import Talker, TalkerOutput

__all__ = ["CodePredictor", "FrameCodes", "TalkerInputs", "build_talker_inputs", "tts_special_embeds",
           "Talker", "TalkerOutput"]
