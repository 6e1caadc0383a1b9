"""Backend switch (placeholder until the C++ backend lands): NumPy only."""
from __future__ import annotations
import contextlib
import os

_active = os.environ.get("OMNIREF_BACKEND", "numpy")


def active() -> str:
    return "numpy"


@contextlib.contextmanager
def use(name: str):
    yield


def kernel(name: str):
    return None
