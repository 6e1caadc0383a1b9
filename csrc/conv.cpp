// conv.cpp -- causal dilated 1-D convolution for Code2Wav's decoder (conv_kernels.inc, one GEMM with an
// implicit im2col on the packed micro-kernel of gemm_kernels.inc), plus its Python entry point.
//   conv1d(x [M, Cin] f32, weight [N, Cin, T] f32, bias [N] | None, dilation, residual [M, N] | None, naive)
//     -> y [M, N] f32 = causal conv (left zero padding d·(T-1)) + bias (+ residual)
// The NumPy definition is omniref/codec/code2wav.py: causal_conv; `naive=True` runs the plain loop below.
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
}  // namespace

void register_conv(py::module_& m) {
  m.def("conv1d", &conv1d_py, py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(),
        py::arg("dilation") = 1, py::arg("residual") = py::none(), py::arg("naive") = false,
        "causal dilated conv: y[M,N] = sum_j,c weight[N,Cin,T] x[t - d(T-1-j), c] + bias (+ residual)");
}
}  // namespace omni
