"""The backend switch: selection rules, the `ops` dispatch the models call (op name -> nn's definition or its
C++ kernel), validate mode, and both backends giving the same numbers."""
import subprocess
import sys
import threading

import numpy as np
import pytest

from omniref.errors import InputError

from omniref import _native, backend, nn
from omniref.backend import ops

needs_native = pytest.mark.skipif(not _native.available(), reason="C++ extension not built")


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown omniref backend 'fortran'"):
        backend.set_backend("fortran")
    with pytest.raises(ValueError, match="unknown"):
        with backend.use("gpu"):
            pass


def test_numpy_backend_has_no_kernels():
    with backend.use("numpy"):
        assert backend.active() == "numpy"
        assert backend.kernel("linear") is None and backend.kernel("attention") is None
    with pytest.raises(KeyError, match="no native kernel named 'conv'"):
        backend.kernel("conv")


def test_every_nn_op_dispatches_to_its_definition_on_numpy():
    with backend.use("numpy"):
        for name in nn.__all__:
            assert backend.op(name) is getattr(nn, name) and getattr(ops, name) is getattr(nn, name), name
    with pytest.raises(KeyError, match="no op named 'conv'"):
        ops.conv


@needs_native
def test_cpp_dispatch_takes_the_kernel_only_where_one_exists():
    with backend.use("cpp"):
        assert ops.linear is backend.kernel("linear") and ops.linear is not nn.linear
        assert ops.layer_norm is nn.layer_norm                       # no kernel: the definition on both backends
    assert set(backend.kernels()) == {"linear", "linear_many", "attention", "moe_experts", "gelu", "gelu_tanh", "snake_beta",
                                      "causal_conv", "causal_trans_conv", "conv2d_stride2", "rms_norm",
                                      "apply_rotary"}


@needs_native
def test_use_nests_and_restores():
    outer = backend.active()
    with backend.use("numpy"):
        with backend.use("cpp"):
            assert backend.active() == "cpp"
            assert callable(backend.kernel("linear"))
        assert backend.active() == "numpy"
    assert backend.active() == outer


@needs_native
def test_use_is_per_thread():
    seen = {}
    with backend.use("numpy"):
        t = threading.Thread(target=lambda: seen.setdefault("other", backend.active()))
        t.start()
        t.join()
        assert backend.active() == "numpy"
    assert seen["other"] == backend.active()  # the other thread never saw this thread's `use`


@needs_native
def test_set_backend_global():
    before = backend.active()
    try:
        backend.set_backend("numpy")
        assert backend.active() == "numpy"
        with backend.use("cpp"):
            assert backend.active() == "cpp"
    finally:
        backend.set_backend(before)


def _run(env_value, code):
    import os
    env = dict(os.environ)
    env.pop("OMNIREF_BACKEND", None)
    if env_value is not None:
        env["OMNIREF_BACKEND"] = env_value
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


@needs_native
def test_environment_selects_backend():
    code = "from omniref import backend; print(backend.active())"
    assert _run(None, code).stdout.strip() == "cpp"  # default when the extension loads
    assert _run("numpy", code).stdout.strip() == "numpy"
    assert _run("cpp", code).stdout.strip() == "cpp"
    bad = _run("cuda", code)
    assert bad.returncode != 0 and "unknown omniref backend 'cuda'" in bad.stderr


def test_missing_extension_falls_back_and_warns_once(monkeypatch):
    monkeypatch.setattr(_native, "_C", None)
    monkeypatch.setattr(_native, "IMPORT_ERROR", ImportError("simulated"))
    monkeypatch.setitem(backend._state, "global", None)
    monkeypatch.setitem(backend._state, "warned", False)
    monkeypatch.delenv("OMNIREF_BACKEND", raising=False)
    with pytest.warns(RuntimeWarning, match="simulated"):
        assert backend.active() == "numpy"
    assert backend.kernel("linear") is None
    with pytest.raises(InputError, match="not available"):
        backend.set_backend("cpp")
    with pytest.raises(RuntimeError, match="not available"):
        _native.linear(np.ones((1, 2), np.float32), np.ones((3, 2), np.float32))


@needs_native
def test_nn_ops_agree_across_backends():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 17, 40), dtype=np.float32)
    w = rng.standard_normal((24, 40), dtype=np.float32)
    b = rng.standard_normal(24, dtype=np.float32)
    q = rng.standard_normal((8, 17, 32), dtype=np.float32)
    k = rng.standard_normal((2, 17, 32), dtype=np.float32)
    v = rng.standard_normal((2, 17, 32), dtype=np.float32)
    seg = np.repeat([0, 1, 2], [5, 6, 6])
    out = {}
    for name in ("numpy", "cpp"):
        with backend.use(name):
            out[name] = (nn.linear(x, w, b),
                         nn.attention(q, k, v, causal=True),
                         nn.attention(q, k, v, segments=seg),
                         nn.attention(q, k, v, causal=True, sliding_window=4))
    for a, c in zip(out["numpy"], out["cpp"]):
        assert a.shape == c.shape
        assert np.max(np.abs(a - c)) <= 2e-6 * np.max(np.abs(a))


@needs_native
def test_validate_mode_records_differences():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 8), dtype=np.float32)
    w = rng.standard_normal((3, 8), dtype=np.float32)
    q = rng.standard_normal((2, 4, 8), dtype=np.float32)
    start = len(backend.validation_log)
    with backend.use("cpp"), backend.validate() as log:
        ops.linear(x, w)
        ops.attention(q, q, q, causal=True)
    new = log[start:]
    assert [r.op for r in new] == ["linear", "attention"]
    assert new[0].shape == (5, 3) and new[1].shape == (2, 4, 8)
    assert all(0.0 <= r.max_rel < 1e-5 for r in new)


@needs_native
def test_bf16_weight_through_nn():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 64), dtype=np.float32)
    wb = _native.BF16Weight.from_float32(rng.standard_normal((16, 64), dtype=np.float32))
    with backend.use("numpy"):
        ref = nn.linear(x, wb)  # NumPy path sees the widened float32 matrix
    with backend.use("cpp"):
        got = nn.linear(x, wb)
    assert np.max(np.abs(ref - got)) <= 2e-6 * np.max(np.abs(ref))
