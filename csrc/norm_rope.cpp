// norm_rope.cpp -- the two small per-token ops of every decoder layer that NumPy runs as several passes with
// temporaries: RMSNorm and the rotary position embedding (omniref/nn.py: rms_norm, apply_rotary).
//
//   rms_norm(x [M, H] f32, w [H] f32, eps) -> y [M, H]
//       y = w * (x / sqrt(mean(x^2) + eps))          per row; the sum of squares in double, rounded once
//   rotary(x [B, L, D] f32 with any row strides, cos [L, D], sin [L, D]) -> y [B, L, D] (C-contiguous)
//       y = x * cos + rotate_half(x) * sin,  rotate_half(x) = [-x[h:], x[:h]], h = D / 2
//       x may be a strided view (e.g. q[L, nh, D].transpose(1, 0, 2)) as long as its last axis is contiguous,
//       so the transpose copy the NumPy code pays is fused into this single pass.
//
// Legend: M rows, H features, B batch (heads), L positions, D head dim.
// The float32 steps follow the NumPy specification's order with no FMA contraction, so results agree with it
// to about 1 ulp (the only difference is how mean(x^2) is summed). `naive=True` runs the same maths one
// element at a time without threads (the reference the tests hold the threaded loops to).
#include "bindings.h"
#include <cfloat>
#include <cmath>
#include <vector>
#ifdef OMNIREF_OPENMP
#include <omp.h>
#endif

#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")

namespace omni {
namespace {
constexpr int64_t kParallelMin = 1 << 15;  // elements below which threads cost more than they save

inline void rms_row(const float* __restrict x, const float* __restrict w, float* __restrict y, int64_t H,
                    float eps) {
  double ss = 0.0;
  for (int64_t c = 0; c < H; ++c) ss += double(x[c]) * double(x[c]);
  // NumPy sums the squares in float32: past FLT_MAX that sum is inf, the row's norm inf, the output 0 (or NaN
  // for an inf x). The double sum would not overflow, so say so explicitly to give the same result.
  const float var = ss > double(FLT_MAX) ? INFINITY : float(ss / double(H));
  const float r = std::sqrt(var + eps);  // float32 add, float32 sqrt, as NumPy does
  for (int64_t c = 0; c < H; ++c) y[c] = w[c] * (x[c] / r);
}

void rms_norm_rows(const float* x, const float* w, float* y, int64_t M, int64_t H, float eps, bool naive) {
#ifdef OMNIREF_OPENMP
#pragma omp parallel for schedule(static) if (!naive && M > 1 && M * H >= kParallelMin)
#endif
  for (int64_t t = 0; t < M; ++t) rms_row(x + t * H, w, y + t * H, H, eps);
}

// One row of D: out[d] = x[d] cos[d] + rot[d] sin[d] with rot = [-x[h:], x[:h]] (h2 = D - h entries first).
inline void rotary_row(const float* __restrict x, const float* __restrict cs, const float* __restrict sn,
                       float* __restrict y, int64_t D) {
  const int64_t h = D / 2, h2 = D - h;
  for (int64_t d = 0; d < h2; ++d) y[d] = x[d] * cs[d] + (-x[d + h]) * sn[d];
  for (int64_t d = h2; d < D; ++d) y[d] = x[d] * cs[d] + x[d - h2] * sn[d];
}

void rotary_rows(const float* x, int64_t sb, int64_t sl, const float* cs, const float* sn, float* y, int64_t B,
                 int64_t L, int64_t D, bool naive) {
#ifdef OMNIREF_OPENMP
#pragma omp parallel for schedule(static) if (!naive && B * L > 1 && B * L * D >= kParallelMin)
#endif
  for (int64_t r = 0; r < B * L; ++r) {
    const int64_t b = r / L, l = r % L;
    rotary_row(x + b * sb + l * sl, cs + l * D, sn + l * D, y + r * D, D);
  }
}

py::array_t<float> rms_norm_py(const py::array& x, const py::array& w, double eps, bool naive) {
  check_array<float>(x, "rms_norm: x", 2);
  check_array<float>(w, "rms_norm: weight", 1);
  const int64_t M = x.shape(0), H = x.shape(1);
  if (w.shape(0) != H)
    throw py::value_error("rms_norm: x " + shape_str(x) + " has H=" + std::to_string(H) + " but weight " +
                          shape_str(w));
  if (!std::isfinite(eps) || eps < 0) throw py::value_error("rms_norm: eps must be finite and >= 0");
  py::array_t<float> y({M, H});
  const float* xp = static_cast<const float*>(x.data());
  const float* wp = static_cast<const float*>(w.data());
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release nogil;
    rms_norm_rows(xp, wp, yp, M, H, float(eps), naive);
  }
  return y;
}

py::array_t<float> rotary_py(const py::array& x, const py::array& cs, const py::array& sn, bool naive) {
  if (!x.dtype().is(py::dtype::of<float>()))
    throw py::type_error("rotary: x must be float32, got " + std::string(py::str(x.dtype())));
  if (x.ndim() != 3) throw py::value_error("rotary: x must be 3-D [B, L, D], got " + shape_str(x));
  if (!(x.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
    throw py::value_error("rotary: x must be aligned to its element size");
  check_dims(x, "rotary: x");
  check_array<float>(cs, "rotary: cos", 2);
  check_array<float>(sn, "rotary: sin", 2);
  const int64_t B = x.shape(0), L = x.shape(1), D = x.shape(2);
  if (cs.shape(0) != L || cs.shape(1) != D || sn.shape(0) != L || sn.shape(1) != D)
    throw py::value_error("rotary: x " + shape_str(x) + " needs cos and sin of shape [" + std::to_string(L) +
                          ", " + std::to_string(D) + "], got " + shape_str(cs) + " and " + shape_str(sn));
  const int64_t f = sizeof(float);
  if (B * L * D > 0 && ((D > 1 && x.strides(2) != f) || x.strides(0) % f || x.strides(1) % f))
    throw py::value_error("rotary: x's last axis must be contiguous and its strides whole floats");
  py::array_t<float> y({B, L, D});
  const float* xp = static_cast<const float*>(x.data());
  const float* cp = static_cast<const float*>(cs.data());
  const float* sp = static_cast<const float*>(sn.data());
  float* yp = y.mutable_data();
  const int64_t sb = x.strides(0) / f, sl = x.strides(1) / f;
  if (B * L * D > 0) {
    py::gil_scoped_release nogil;
    rotary_rows(xp, sb, sl, cp, sp, yp, B, L, D, naive);
  }
  return y;
}
}  // namespace

void register_norm_rope(py::module_& m) {
  m.def("rms_norm", &rms_norm_py, py::arg("x"), py::arg("weight"), py::arg("eps"), py::arg("naive") = false,
        "y[M, H] = w * (x / sqrt(mean(x^2) + eps)) per row, float32");
  m.def("rotary", &rotary_py, py::arg("x"), py::arg("cos"), py::arg("sin"), py::arg("naive") = false,
        "y[B, L, D] = x cos + rotate_half(x) sin; x may have any row strides (last axis contiguous)");
}
}  // namespace omni

#pragma GCC pop_options
