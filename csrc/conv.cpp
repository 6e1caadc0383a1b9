// conv.cpp -- the convolutions of Code2Wav's decoder (conv_kernels.inc: each one GEMM with an implicit im2col
// on the packed micro-kernel of gemm_kernels.inc), plus their Python entry points.
//   conv1d(x [M, Cin] f32, weight [N, Cin, T] f32, bias [N] | None, dilation, residual [M, N] | None, naive)
//     -> y [M, N] f32 = causal conv (left zero padding d·(T-1)) + bias (+ residual)
//   trans_conv1d(x [n, Cin] f32, weight [Cin, Cout, K] f32, bias [Cout] | None, stride r, naive)
//     -> y [(n+1)·r - K, Cout] f32 = ConvTranspose1d(stride r) trimmed K - r samples at both ends
// The NumPy definitions are omniref/codec/code2wav.py: causal_conv and causal_trans_conv; `naive=True` runs
// the plain loops below.
#include "bindings.h"
#include "cpu.h"
#include "simd.h"
#include <type_traits>
#include <vector>
#ifdef OMNIREF_OPENMP
#include <omp.h>
#endif

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"  // the linear entry points of gemm_kernels.inc are unused
#define OMNI_KERNELS "gemm_kernels.inc"
#define OMNI_KERNELS_2 "conv_kernels.inc"
#include "isa_instantiate.h"
#pragma GCC diagnostic pop

namespace omni {
namespace {
// Reference: one sum per output, taps in order, channels in order (what a textbook loop does).
void conv1d_naive(const float* x, const float* W, const float* bias, const float* residual, float* y, int64_t M,
                  int64_t N, int64_t Cin, int64_t T, int64_t dil) {
  for (int64_t t = 0; t < M; ++t)
    for (int64_t o = 0; o < N; ++o) {
      float s = 0.f;
      for (int64_t j = 0; j < T; ++j) {
        const int64_t src = t - dil * (T - 1 - j);
        if (src < 0) continue;
        for (int64_t c = 0; c < Cin; ++c) s += W[(o * Cin + c) * T + j] * x[src * Cin + c];
      }
      y[t * N + o] = s + (bias ? bias[o] : 0.f) + (residual ? residual[t * N + o] : 0.f);
    }
}

// Reference: scatter every input sample into the full output (ConvTranspose1d), then keep the trimmed part.
void trans_conv1d_naive(const float* x, const float* W, const float* bias, float* y, int64_t n, int64_t Cin,
                        int64_t Cout, int64_t K, int64_t r) {
  const int64_t L = (n + 1) * r - K, trim = K - r;
  for (int64_t s = 0; s < L * Cout; ++s) y[s] = 0.f;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t s = t * r + k - trim;                    // output sample this tap of input t reaches
      if (s < 0 || s >= L) continue;
      for (int64_t o = 0; o < Cout; ++o) {
        float acc = 0.f;
        for (int64_t c = 0; c < Cin; ++c) acc += W[(c * Cout + o) * K + k] * x[t * Cin + c];
        y[s * Cout + o] += acc;
      }
    }
  if (bias)
    for (int64_t s = 0; s < L; ++s)
      for (int64_t o = 0; o < Cout; ++o) y[s * Cout + o] += bias[o];
}

void trans_conv1d_fast(const float* x, const float* W, const float* b, float* y, int64_t n, int64_t Cin,
                       int64_t Cout, int64_t K, int64_t r) {
  switch (isa()) {
#ifdef OMNI_HAVE_X86_ISAS
    case Isa::avx512: return isa_avx512::trans_conv1d(x, W, b, y, n, Cin, Cout, K, r);
    case Isa::avx2: return isa_avx2::trans_conv1d(x, W, b, y, n, Cin, Cout, K, r);
#endif
    default: return isa_generic::trans_conv1d(x, W, b, y, n, Cin, Cout, K, r);
  }
}

void conv1d_fast(const float* x, const float* W, const float* b, const float* r, float* y, int64_t M, int64_t N,
                 int64_t Cin, int64_t T, int64_t dil) {
  switch (isa()) {
#ifdef OMNI_HAVE_X86_ISAS
    case Isa::avx512: return isa_avx512::conv1d(x, W, b, r, y, M, N, Cin, T, dil);
    case Isa::avx2: return isa_avx2::conv1d(x, W, b, r, y, M, N, Cin, T, dil);
#endif
    default: return isa_generic::conv1d(x, W, b, r, y, M, N, Cin, T, dil);
  }
}

const float* optional_f32(const py::object& o, py::array& keep, const char* name, int ndim) {
  if (o.is_none()) return nullptr;
  keep = py::reinterpret_borrow<py::array>(o);
  check_array<float>(keep, name, ndim);
  return static_cast<const float*>(keep.data());
}

py::array_t<float> conv1d_py(const py::array& x, const py::array& W, const py::object& bias, int64_t dilation,
                             const py::object& residual, bool naive) {
  check_array<float>(x, "x", 2);
  check_array<float>(W, "weight", 3);
  const int64_t M = x.shape(0), Cin = x.shape(1), N = W.shape(0), T = W.shape(2);
  if (W.shape(1) != Cin)
    throw py::value_error("conv1d: x " + shape_str(x) + " has " + std::to_string(Cin) + " channels, weight " +
                          shape_str(W) + " expects " + std::to_string(W.shape(1)));
  if (T < 1) throw py::value_error("conv1d: weight " + shape_str(W) + " has no taps");
  if (dilation < 1) throw py::value_error("conv1d: dilation must be >= 1, got " + std::to_string(dilation));
  py::array bias_arr, res_arr;
  const float* b = optional_f32(bias, bias_arr, "bias", 1);
  if (b && bias_arr.shape(0) != N)
    throw py::value_error("conv1d: bias " + shape_str(bias_arr) + " must have " + std::to_string(N) + " entries");
  const float* r = optional_f32(residual, res_arr, "residual", 2);
  if (r && (res_arr.shape(0) != M || res_arr.shape(1) != N))
    throw py::value_error("conv1d: residual " + shape_str(res_arr) + " must have the output's shape (" +
                          std::to_string(M) + ", " + std::to_string(N) + ")");
  py::array_t<float> y({M, N});
  const float* xp = static_cast<const float*>(x.data());
  const float* wp = static_cast<const float*>(W.data());
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release nogil;
    (naive ? conv1d_naive : conv1d_fast)(xp, wp, b, r, yp, M, N, Cin, T, dilation);
  }
  return y;
}
py::array trans_conv1d_py(const py::array& x, const py::array& W, const py::object& bias, int64_t stride,
                          bool naive) {
  check_array<float>(x, "x", 2);
  check_array<float>(W, "weight", 3);
  const int64_t n = x.shape(0), Cin = x.shape(1), Cout = W.shape(1), K = W.shape(2), r = stride;
  if (W.shape(0) != Cin)
    throw py::value_error("trans_conv1d: x " + shape_str(x) + " has " + std::to_string(Cin) +
                          " channels, weight " + shape_str(W) + " [Cin, Cout, K] expects " +
                          std::to_string(W.shape(0)));
  if (r < 1 || K < r)
    throw py::value_error("trans_conv1d: need stride >= 1 and kernel K >= stride, got stride " +
                          std::to_string(r) + " and weight " + shape_str(W));
  py::array bias_arr;
  const float* b = optional_f32(bias, bias_arr, "bias", 1);
  if (b && bias_arr.shape(0) != Cout)
    throw py::value_error("trans_conv1d: bias " + shape_str(bias_arr) + " must have " + std::to_string(Cout) +
                          " entries");
  const int64_t L = std::max<int64_t>(0, (n + 1) * r - K);    // trimmed output samples
  const int64_t u0 = (K - r) / r, rows = L > 0 ? (n - u0) * r : 0, off = (K - r) - u0 * r;
  py::array_t<float> y({naive ? L : rows, Cout});
  const float* xp = static_cast<const float*>(x.data());
  const float* wp = static_cast<const float*>(W.data());
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release nogil;
    if (naive) trans_conv1d_naive(xp, wp, b, yp, n, Cin, Cout, K, r);
    else if (L > 0) trans_conv1d_fast(xp, wp, b, yp, n, Cin, Cout, K, r);
  }
  if (naive || L == 0) return std::move(y);
  return y[py::slice(off, off + L, 1)];                      // drop the first (K - r) mod r samples: a view
}
}  // namespace

void register_conv(py::module_& m) {
  m.def("trans_conv1d", &trans_conv1d_py, py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(),
        py::arg("stride") = 1, py::arg("naive") = false,
        "trimmed transposed conv: y[(n+1)r-K, Cout] from x[n, Cin], weight[Cin, Cout, K], stride r");
  m.def("conv1d", &conv1d_py, py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(),
        py::arg("dilation") = 1, py::arg("residual") = py::none(), py::arg("naive") = false,
        "causal dilated conv: y[M,N] = sum_j,c weight[N,Cin,T] x[t - d(T-1-j), c] + bias (+ residual)");
}
}  // namespace omni
