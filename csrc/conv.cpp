// conv.cpp -- the convolutions of Code2Wav's decoder (conv_kernels.inc: each one GEMM with an implicit im2col
// on the packed micro-kernel of gemm_core.inc), plus their Python entry points.
//   conv1d(x [M, Cin] f32, weight [N, Cin, T] f32, bias [N] | None, dilation, residual [M, N] | None, naive)
//     -> y [M, N] f32 = causal conv (left zero padding d·(T-1)) + bias (+ residual)
//   trans_conv1d(x [n, Cin] f32, weight [Cin, Cout, K] f32, bias [Cout] | None, stride r, naive)
//     -> y [(n+1)·r - K, Cout] f32 = ConvTranspose1d(stride r) trimmed K - r samples at both ends
//   conv2d_s2(x [B, H, W, Cin] f32, weight [Cout, Cin, 3, 3] f32, bias [Cout] | None, naive)
//     -> y [B, (H-1)/2+1, (W-1)/2+1, Cout] f32: 3x3 conv, stride 2, zero padding 1 (the audio encoder's stem)
// The NumPy definitions are omniref/codec/code2wav.py: causal_conv and causal_trans_conv, and
// omniref/audio/encoder.py: conv2d_stride2; `naive=True` runs the plain loops below.
#include "bindings.h"
#include "cpu.h"
#include "simd.h"
#include <type_traits>
#include <vector>
#ifdef OMNIREF_OPENMP
#include <omp.h>
#endif

#define OMNI_KERNELS "gemm_core.inc"
#define OMNI_KERNELS_2 "conv_kernels.inc"
#include "isa_instantiate.h"

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
  OMNI_DISPATCH(trans_conv1d(x, W, b, y, n, Cin, Cout, K, r));
}

// Reference: one sum per output pixel and channel, taps and channels in order.
void conv2d_s2_naive(const float* x, const float* W, const float* bias, float* y, int64_t B, int64_t H, int64_t Wd,
                     int64_t Cin, int64_t Cout) {
  const int64_t oh = (H - 1) / 2 + 1, ow = (Wd - 1) / 2 + 1;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox)
        for (int64_t o = 0; o < Cout; ++o) {
          float s = 0.f;
          for (int64_t ky = 0; ky < 3; ++ky)
            for (int64_t kx = 0; kx < 3; ++kx) {
              const int64_t iy = 2 * oy + ky - 1, ix = 2 * ox + kx - 1;
              if (iy < 0 || iy >= H || ix < 0 || ix >= Wd) continue;
              for (int64_t c = 0; c < Cin; ++c)
                s += W[((o * Cin + c) * 3 + ky) * 3 + kx] * x[((b * H + iy) * Wd + ix) * Cin + c];
            }
          y[((b * oh + oy) * ow + ox) * Cout + o] = s + (bias ? bias[o] : 0.f);
        }
}

void conv2d_s2_fast(const float* x, const float* W, const float* b, float* y, int64_t B, int64_t H, int64_t Wd,
                    int64_t Cin, int64_t Cout) {
  OMNI_DISPATCH(conv2d_s2(x, W, b, y, B, H, Wd, Cin, Cout));
}

void conv1d_fast(const float* x, const float* W, const float* b, const float* r, float* y, int64_t M, int64_t N,
                 int64_t Cin, int64_t T, int64_t dil) {
  OMNI_DISPATCH(conv1d(x, W, b, r, y, M, N, Cin, T, dil));
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
  // A dilation of M or more leaves every tap but the last in the zero padding, like M itself: clamping keeps
  // d·(T-1) far from int64 overflow (a huge dilation used to wrap it into an out-of-bounds row).
  dilation = std::min<int64_t>(dilation, std::max<int64_t>(x.shape(0), 1));
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
    // The GEMM multiplies the zero padding before the input by the weights; the NumPy specification never
    // does (each tap adds only rows with a real input), so with a non-finite weight (0 · inf = NaN) only
    // the reference loop, which skips the padding the same way, gives its result.
    const bool exact_padding = naive || !omni::all_finite(wp, N * Cin * T);
    (exact_padding ? conv1d_naive : conv1d_fast)(xp, wp, b, r, yp, M, N, Cin, T, dilation);
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
py::array_t<float> conv2d_s2_py(const py::array& x, const py::array& W, const py::object& bias, bool naive) {
  check_array<float>(x, "x", 4);
  check_array<float>(W, "weight", 4);
  const int64_t B = x.shape(0), H = x.shape(1), Wd = x.shape(2), Cin = x.shape(3), Cout = W.shape(0);
  if (W.shape(1) != Cin || W.shape(2) != 3 || W.shape(3) != 3)
    throw py::value_error("conv2d_s2: x " + shape_str(x) + " [B, H, W, Cin] needs weight [Cout, " +
                          std::to_string(Cin) + ", 3, 3], got " + shape_str(W));
  py::array bias_arr;
  const float* b = optional_f32(bias, bias_arr, "bias", 1);
  if (b && bias_arr.shape(0) != Cout)
    throw py::value_error("conv2d_s2: bias " + shape_str(bias_arr) + " must have " + std::to_string(Cout) +
                          " entries");
  const int64_t oh = H > 0 ? (H - 1) / 2 + 1 : 0, ow = Wd > 0 ? (Wd - 1) / 2 + 1 : 0;
  py::array_t<float> y({B, oh, ow, Cout});
  const float* xp = static_cast<const float*>(x.data());
  const float* wp = static_cast<const float*>(W.data());
  float* yp = y.mutable_data();
  if (B * oh * ow * Cout > 0 && Cin == 0) {  // an empty sum: the bias alone
    for (int64_t i = 0; i < B * oh * ow; ++i)
      for (int64_t o = 0; o < Cout; ++o) yp[i * Cout + o] = b ? b[o] : 0.f;
    return y;
  }
  {
    py::gil_scoped_release nogil;
    if (B * oh * ow * Cout > 0) (naive ? conv2d_s2_naive : conv2d_s2_fast)(xp, wp, b, yp, B, H, Wd, Cin, Cout);
  }
  return y;
}
}  // namespace

void register_conv(py::module_& m) {
  m.def("conv2d_s2", &conv2d_s2_py, py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(),
        py::arg("naive") = false,
        "3x3 conv, stride 2, zero padding 1, channels-last: y[B,H',W',Cout] from x[B,H,W,Cin], weight[Cout,Cin,3,3]");
  m.def("trans_conv1d", &trans_conv1d_py, py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(),
        py::arg("stride") = 1, py::arg("naive") = false,
        "trimmed transposed conv: y[(n+1)r-K, Cout] from x[n, Cin], weight[Cin, Cout, K], stride r");
  m.def("conv1d", &conv1d_py, py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(),
        py::arg("dilation") = 1, py::arg("residual") = py::none(), py::arg("naive") = false,
        "causal dilated conv: y[M,N] = sum_j,c weight[N,Cin,T] x[t - d(T-1-j), c] + bias (+ residual)");
}
}  // namespace omni
