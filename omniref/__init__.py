"""omniref: a from-scratch NumPy + C++ reference implementation of Qwen3-Omni-MoE, written to be read.

    waveform -> log-mel -> audio encoder ─┐
    pixels -> patches -> vision encoder ──┼─> Thinker (MoE decoder) -> text
    text tokens ──────────────────────────┘        └─> Talker -> code predictor -> Code2Wav -> 24 kHz speech

Each arrow is one module (omniref/audio, omniref/vision, omniref/thinker, omniref/talker, omniref/codec);
`omniref.nn` holds the primitives, `omniref.decoder` the decoder stack they share, `omniref.backend` picks
NumPy or the C++ kernels, and `python -m omniref verify` checks everything against golden tensors.
"""
__version__ = "0.1.0"

from .config import OmniConfig, load_config  # noqa: E402
from .weights import load_weights  # noqa: E402

__all__ = ["OmniConfig", "load_config", "load_weights", "__version__"]
