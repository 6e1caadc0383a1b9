"""Shared fixtures: where the golden cases are.

The project's own cases live in tests/golden/ (committed, so a clone verifies itself); the shared cases in
../shared/golden are used too when that folder exists next to the checkout.
"""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OWN_GOLDEN = ROOT / "tests" / "golden"
SHARED_GOLDEN = ROOT.parent / "shared" / "golden"


def _cases(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if (p / "golden.npz").is_file()) if folder.is_dir() else []


def all_golden_cases() -> list[Path]:
    """Own cases first, then the shared ones (when present)."""
    return _cases(OWN_GOLDEN) + _cases(SHARED_GOLDEN)


@pytest.fixture(scope="session")
def shared_golden() -> Path:
    if not SHARED_GOLDEN.is_dir():
        pytest.skip("../shared/golden is not present next to this checkout")
    return SHARED_GOLDEN


@pytest.fixture(scope="session")
def own_golden() -> Path:
    return OWN_GOLDEN


@pytest.fixture(scope="session")
def golden_cases() -> list[Path]:
    cases = all_golden_cases()
    assert cases, "no golden cases found (tests/golden/ should be committed)"
    return cases


def _native_isas() -> list[str]:
    from omniref import _native
    return _native.supported_isas() if _native.available() else []


@pytest.fixture(params=_native_isas())
def isa(request):
    """Run a kernel test once per instruction set the CPU supports (generic, avx2, avx512), restoring the
    run-time choice afterwards."""
    from omniref import _native
    before = _native.isa()
    _native.set_isa(request.param)
    yield request.param
    _native.set_isa(before)


def model_cases() -> list[Path]:
    """Golden cases with a checkpoint (config.json)."""
    return [c for c in all_golden_cases() if (c / "config.json").is_file()]
