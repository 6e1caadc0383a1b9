"""Residual VQ (omniref/codec/rvq.py) and the WAV writer (omniref/codec/wavio.py)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.cluster.vq import vq

from omniref.codec.rvq import fit_rvq, kmeans, nearest, rvq_decode, rvq_encode, rvq_errors
from omniref.codec.wavio import read_wav, write_wav


def _data(n=600, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * np.linspace(2.0, 0.3, d)          # anisotropic Gaussian cloud


def test_nearest_matches_scipy_vq():
    x = _data()
    book = _data(20, seed=1)
    idx, _ = vq(x, book)                                                     # scipy's brute-force quantizer
    assert np.array_equal(nearest(x, book), idx)


def test_kmeans_recovers_separated_clusters_and_is_seeded():
    rng = np.random.default_rng(2)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    x = np.concatenate([c + 0.1 * rng.standard_normal((50, 2)) for c in centres])
    found = kmeans(x, 4, seed=0)
    # every true centre has a centroid within 0.1 (the clusters' spread), and vice versa
    dist = np.linalg.norm(found[:, None] - centres[None], axis=-1)          # [4, 4]
    assert dist.min(axis=0).max() < 0.1 and dist.min(axis=1).max() < 0.1
    assert np.array_equal(found, kmeans(x, 4, seed=0))                      # reproducible


def test_kmeans_centroids_are_member_means():
    x = _data()
    c = kmeans(x, 8, iters=100, seed=3)
    assign = nearest(x, c)
    for j in range(8):
        assert np.allclose(c[j], x[assign == j].mean(axis=0), atol=1e-8)   # Lloyd's fixed point


def test_encode_decode_roundtrip_and_greedy_residuals():
    x = _data()
    books = fit_rvq(x, 4, 16, seed=0)
    assert books.shape == (4, 16, 6)
    codes = rvq_encode(x, books)
    assert codes.shape == (600, 4) and codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() < 16
    # decode = sum of the chosen vectors, built here independently
    manual = sum(books[q][codes[:, q]] for q in range(4))
    assert np.allclose(rvq_decode(codes, books), manual)
    # greedy: stage q picks the nearest entry to what stages < q left over
    residual = x - books[0][codes[:, 0]]
    assert np.array_equal(codes[:, 1], vq(residual, books[1])[0])
    # a prefix of the quantizers gives a prefix of the codes
    assert np.array_equal(rvq_encode(x, books, num_quantizers=2), codes[:, :2])


def test_error_shrinks_as_quantizers_are_added():
    x = _data(800, 8)
    books = fit_rvq(x, 6, 16, seed=1)
    err = rvq_errors(x, books)
    assert err.shape == (7,)
    assert np.isclose(err[0], np.mean(np.sum(x * x, axis=1)))
    assert np.all(np.diff(err) < 0)                                          # strictly better with each stage
    assert err[-1] < 0.2 * err[0]
    # one stage of V entries is just k-means: its error equals k-means' own quantization error
    one = np.mean(np.sum((x - books[0][nearest(x, books[0])]) ** 2, axis=1))
    assert np.isclose(err[1], one)


def test_rvq_bad_input():
    x = _data()
    books = fit_rvq(x, 2, 4, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        rvq_decode(np.array([[4, 0]]), books)
    with pytest.raises(ValueError, match="only 2 codebooks"):
        rvq_decode(np.zeros((1, 3), np.int64), books)
    with pytest.raises(ValueError, match="D=5"):
        rvq_encode(np.zeros((3, 5)), books)
    with pytest.raises(ValueError, match="k <= N"):
        kmeans(x[:3], 4)
    with pytest.raises(ValueError, match="NaN"):
        fit_rvq(np.full((5, 2), np.nan), 1, 2)


# int16: half a step of rounding plus the 32767-vs-32768 gain (at most one step at full scale)
@pytest.mark.parametrize("fmt,tol", [("int16", 1.5 / 32768 + 1e-7), ("float32", 0.0)])
def test_wav_roundtrip(tmp_path, fmt, tol):
    t = np.arange(2400) / 24000
    wav = (0.8 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    wav[:3] = [1.0, -1.0, 0.0]
    path = write_wav(tmp_path / f"a_{fmt}.wav", wav[None, None], sample_format=fmt)   # [1, 1, S] accepted
    back, rate = read_wav(path)
    assert rate == 24000 and back.shape == wav.shape
    assert np.abs(back - wav).max() <= tol


def test_wav_bad_input(tmp_path):
    with pytest.raises(ValueError, match="mono"):
        write_wav(tmp_path / "x.wav", np.zeros((2, 10), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        write_wav(tmp_path / "x.wav", np.array([0.0, np.nan], np.float32))
    with pytest.raises(TypeError, match="float"):
        write_wav(tmp_path / "x.wav", np.zeros(10, np.int16))
