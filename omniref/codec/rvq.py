"""Residual vector quantization (RVQ), small enough to read in one sitting: where the talker's codes come from.

A vector quantizer replaces a vector by the nearest of V codebook vectors and transmits only its index
(log2 V bits). One codebook of V entries is coarse; RVQ (SoundStream, Zeghidour et al. 2021; EnCodec; the
Qwen3-Omni codec) stacks Q of them, each quantizing what the previous ones left over:

    r_0 = x
    for q in 0..Q-1:   c_q = argmin_v ||r_q - C_q[v]||²      r_{q+1} = r_q - C_q[c_q]       (greedy encode)
    x̂ = Σ_q C_q[c_q]                                                                       (decode by summing)

Q codebooks of V entries address V^Q points with only Q·V stored vectors. On the data the codebooks were
fitted to, the mean error never grows as quantizers are added: a k-means centroid is the mean of its
members, which serves them in total at least as well as the zero vector ("send nothing more"), and the
nearest-entry rule can only do better than that assignment. Code2Wav embeds codes the same way: one table with a
block of rows per quantizer, combined over Q (it averages; see code2wav.embed_codes).

Codebooks are fitted stage by stage with k-means (Lloyd's algorithm, k-means++ seeding) on the residuals of
the previous stages. Everything is seeded, so the tutorial's numbers are reproducible.

Legend: N vectors, D dimensions, V codebook_size (entries per codebook), Q quantizers.
"""
from __future__ import annotations

import numpy as np

__all__ = ["kmeans", "nearest", "fit_rvq", "rvq_encode", "rvq_decode", "rvq_errors"]


def _check_data(x: np.ndarray, name: str = "x") -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"rvq: {name} must be a non-empty [N, D] array, got shape {list(x.shape)}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"rvq: {name} contains NaN or infinite values")
    return x


def nearest(x: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index of the closest codebook entry (squared Euclidean) for every row.  x [N, D], codebook [V, D] -> [N]

    ||x - c||² = ||x||² - 2 x·c + ||c||²; ||x||² is the same for every entry, so it is dropped from the argmin.
    """
    scores = codebook @ x.T                                          # [V, N]  x·c
    scores = 0.5 * np.sum(codebook * codebook, axis=1)[:, None] - scores   # [V, N]  ½||c||² - x·c
    return np.argmin(scores, axis=0)                                 # [N]


def kmeans(x: np.ndarray, k: int, *, iters: int = 25, seed: int = 0) -> np.ndarray:
    """k-means (Lloyd) with k-means++ seeding.  x [N, D] -> centroids [k, D] (float64)

    k-means++ (Arthur & Vassilvitskii 2007) picks each new seed with probability proportional to its squared
    distance from the seeds so far, which spreads the seeds out. A cluster that loses all its points is
    re-seeded at the point currently worst served, so no codebook entry is wasted.
    """
    x = _check_data(x)
    N = x.shape[0]
    if not 1 <= k <= N:
        raise ValueError(f"kmeans: need 1 <= k <= N (number of vectors), got k={k}, N={N}")
    rng = np.random.default_rng(seed)
    centroids = np.empty((k, x.shape[1]))
    centroids[0] = x[rng.integers(N)]
    d2 = np.sum((x - centroids[0]) ** 2, axis=1)                     # [N] squared distance to nearest seed
    for j in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(N, 1.0 / N)
        centroids[j] = x[rng.choice(N, p=p)]
        d2 = np.minimum(d2, np.sum((x - centroids[j]) ** 2, axis=1))
    for _ in range(iters):
        assign = nearest(x, centroids)                               # [N]
        counts = np.bincount(assign, minlength=k)                    # [k]
        sums = np.zeros_like(centroids)
        np.add.at(sums, assign, x)                                   # [k, D] Σ of the members
        new = sums / np.maximum(counts, 1)[:, None]
        err = np.sum((x - centroids[assign]) ** 2, axis=1)           # [N]
        for j in np.flatnonzero(counts == 0):                        # empty cluster: take the worst-served point
            worst = int(np.argmax(err))
            new[j], err[worst] = x[worst], 0.0
        if np.allclose(new, centroids):
            break
        centroids = new
    return centroids


def fit_rvq(x: np.ndarray, num_quantizers: int, codebook_size: int, *, iters: int = 25,
            seed: int = 0) -> np.ndarray:
    """Fit Q codebooks greedily: codebook q is k-means on the residuals left by codebooks 0..q-1.
    x [N, D] -> codebooks [Q, V, D]"""
    x = _check_data(x)
    if num_quantizers < 1:
        raise ValueError(f"fit_rvq: num_quantizers must be >= 1, got {num_quantizers}")
    residual = x.copy()
    books = []
    for q in range(num_quantizers):
        book = kmeans(residual, codebook_size, iters=iters, seed=seed + q)   # [V, D]
        residual -= book[nearest(residual, book)]                    # what stage q could not explain
        books.append(book)
    return np.stack(books)


def _check_books(codebooks: np.ndarray) -> np.ndarray:
    codebooks = np.asarray(codebooks, dtype=np.float64)
    if codebooks.ndim != 3:
        raise ValueError(f"rvq: codebooks must be [Q, V, D], got shape {list(codebooks.shape)}")
    return codebooks


def rvq_encode(x: np.ndarray, codebooks: np.ndarray, num_quantizers: int | None = None) -> np.ndarray:
    """Greedy residual encoding with the first `num_quantizers` codebooks (all by default).
    x [N, D], codebooks [Q, V, D] -> codes [N, Q'] int64"""
    x, codebooks = _check_data(x), _check_books(codebooks)
    Q = codebooks.shape[0] if num_quantizers is None else int(num_quantizers)
    if not 1 <= Q <= codebooks.shape[0]:
        raise ValueError(f"rvq_encode: num_quantizers must be in [1, {codebooks.shape[0]}], got {Q}")
    if x.shape[1] != codebooks.shape[2]:
        raise ValueError(f"rvq_encode: vectors have D={x.shape[1]}, codebooks have D={codebooks.shape[2]}")
    residual = x.copy()
    codes = np.empty((x.shape[0], Q), dtype=np.int64)
    for q in range(Q):
        codes[:, q] = nearest(residual, codebooks[q])                # [N]
        residual -= codebooks[q][codes[:, q]]                        # pass the leftover to stage q+1
    return codes


def rvq_decode(codes: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Sum of the chosen codebook vectors.  codes [N, Q'] (Q' <= Q), codebooks [Q, V, D] -> x̂ [N, D]"""
    codebooks = _check_books(codebooks)
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.dtype.kind not in "iu":
        raise ValueError(f"rvq_decode: codes must be an integer [N, Q] array, got {codes.dtype} "
                         f"{list(codes.shape)}")
    Q, V, _ = codebooks.shape
    if codes.shape[1] > Q:
        raise ValueError(f"rvq_decode: codes use {codes.shape[1]} quantizers, only {Q} codebooks exist")
    if codes.size and (codes.min() < 0 or codes.max() >= V):
        raise ValueError(f"rvq_decode: codes must lie in [0, {V}) (codebook_size {V}), "
                         f"got range [{codes.min()}, {codes.max()}]")
    out = np.zeros((codes.shape[0], codebooks.shape[2]))
    for q in range(codes.shape[1]):
        out += codebooks[q][codes[:, q]]                             # [N, D]
    return out


def rvq_errors(x: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Mean squared reconstruction error using 0, 1, ..., Q quantizers.  x [N, D] -> [Q + 1]

    Entry 0 is the error of sending nothing (mean ||x||²). On the codebooks' own training data the curve is
    non-increasing (see the module docstring); on other data a stage can occasionally make it worse.
    """
    x, codebooks = _check_data(x), _check_books(codebooks)
    codes = rvq_encode(x, codebooks)                                 # [N, Q]
    errors = [np.mean(np.sum(x * x, axis=1))]
    for q in range(1, codebooks.shape[0] + 1):
        diff = x - rvq_decode(codes[:, :q], codebooks)
        errors.append(np.mean(np.sum(diff * diff, axis=1)))
    return np.array(errors)
