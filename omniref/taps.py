"""Named taps: how model code shows an intermediate array to a trace without changing what it returns.

    from omniref import taps
    taps.record("thinker.model.layers.3.self_attn.q_proj", q, add_batch=True)   # [L, nh*hd] -> [1, L, nh*hd]

A tap is named after the Hugging Face module whose output it holds (`named_modules()` of
`Qwen3OmniMoeForConditionalGeneration`), so a trace of omniref and a trace of the reference (forward hooks,
tools/record_reference.py) line up name by name. `omniref.trace` lists every name, its shape and meaning.

Nothing happens unless a trace is active: `omniref.trace.Trace` sets `sink` while it runs. `record` tests that
one module global before touching its arguments, so a tap in the hottest loop costs a function call and no
copy, reshape or allocation (`omniref bench` shows the decode step with and without).

This module sits at the bottom of the layer table (it imports nothing), so every model module may call it.
"""
from __future__ import annotations

__all__ = ["record", "sink"]

sink = None    # callable(name, array) while a trace is active, else None


def record(name: str, array, add_batch: bool = False, axes: tuple | None = None) -> None:
    """Offer `array` to the active trace under `name` (a no-op when no trace is active).

    The trace holds the array in the reference's layout; these two say how omniref's differs:
    axes: the reference's axis order (e.g. NCHW where omniref computes channels-last): `array.transpose(axes)`;
    add_batch: the reference has a leading batch axis of 1 that omniref does not ([L, H] -> [1, L, H]).
    """
    if sink is None:
        return
    if axes is not None:
        array = array.transpose(axes)
    sink(name, array[None] if add_batch else array)
