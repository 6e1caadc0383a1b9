"""The errors omniref raises on bad input: each a ValueError, each message naming the file, field or key and the
value that was expected. The CLI prints one line for these, never a traceback."""
from __future__ import annotations

__all__ = ["OmnirefError", "CheckpointError", "ConfigError", "MediaError", "InputError"]


class OmnirefError(ValueError):
    """Base class: bad input that the message names."""


class CheckpointError(OmnirefError):
    """A checkpoint lacks a tensor the config requires, or holds one of the wrong shape (names the key)."""


class ConfigError(OmnirefError):
    """A config field is missing, of the wrong type, or asks for a variant omniref does not implement."""


class MediaError(OmnirefError):
    """An audio, image or video input cannot be read or has the wrong shape."""


class InputError(OmnirefError):
    """Another input (ids, codes, prompt) is out of range or inconsistent."""
