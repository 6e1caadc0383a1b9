"""Print the erf polynomial coefficients used by csrc/elementwise_kernels.inc (and how accurate they are).

    python tools/erf_coefficients.py

Two pieces, both Chebyshev interpolants of scipy's float64 erf converted to monomial coefficients (Horner in
double in the kernel):
    |x| < 1:       erf(x) = x * P(x²),   P(z) = erf(√z)/√z on z in [0, 1], degree 8
    1 <= |x| < 4:  erf(x) = Q(u),        u = (|x| - 2.5) / 1.5 in [-1, 1], degree 18
Chebyshev nodes make the interpolant nearly minimax; the printed errors are max |poly - erf| on a fine grid.
Beyond 4, erf rounds to ±1 in float32 (1 - erf(4) = 1.5e-8 < 2^-25).
"""
from __future__ import annotations

import numpy as np
from numpy.polynomial import chebyshev, polynomial
from scipy import special


def interpolate(f, degree: int) -> np.ndarray:
    """Monomial coefficients c[0..degree] in u of the Chebyshev interpolant of f(u) on [-1, 1]."""
    k = np.arange(degree + 1)
    u = np.cos(np.pi * (k + 0.5) / (degree + 1))                          # Chebyshev nodes of the first kind
    return chebyshev.cheb2poly(chebyshev.chebfit(u, f(u), degree))


def erf_over_sqrt(z: np.ndarray) -> np.ndarray:
    """erf(√z)/√z, with its limit 2/√π at z = 0."""
    s = np.sqrt(np.maximum(z, 1e-300))
    return np.where(z > 0, special.erf(s) / s, 2 / np.sqrt(np.pi))


def main() -> None:
    small = interpolate(lambda u: erf_over_sqrt((u + 1) / 2), 8)        # in u = 2z - 1
    # the kernel evaluates P at z directly: substitute u = 2z - 1
    small_z = np.zeros(9)
    for i, c in enumerate(small):                                          # c u^i = c (2z - 1)^i
        small_z[: i + 1] += c * polynomial.polypow([-1.0, 2.0], i)
    large = interpolate(lambda u: special.erf(2.5 + 1.5 * u), 18)
    z = np.linspace(0, 1, 200001)
    x = np.linspace(1, 4, 300001)
    err_small = np.max(np.abs(polynomial.polyval(z, small_z) - erf_over_sqrt(z)))
    err_large = np.max(np.abs(polynomial.polyval((x - 2.5) / 1.5, large) - special.erf(x)))
    for name, c, err in (("kErfSmall", small_z, err_small), ("kErfLarge", large, err_large)):
        print(f"// max abs error {err:.2g}")
        body = ", ".join(f"{v:.17g}" for v in c)
        print(f"static const double {name}[{len(c)}] = {{{body}}};")


if __name__ == "__main__":
    main()
