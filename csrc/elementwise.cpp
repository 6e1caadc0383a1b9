// elementwise.cpp -- activation kernels that NumPy runs on one thread with a slow scalar libm, here SIMD over
// both cores: exact GELU (erf) of the audio encoder and ConvNeXt blocks, the tanh GELU of the vision
// encoder, SnakeBeta of Code2Wav's decoder.
//
//   gelu(x [n] f32) -> y [n] f32                 y = 0.5x (1 + erf(x / sqrt2))          (omniref/nn.py: gelu)
//   gelu_tanh(x [n] f32) -> y [n] f32            y = 0.5x (1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))
//                                                (omniref/nn.py: gelu_tanh, the vision encoder's MLP)
//   snake_beta(x [M, C] f32, a [C], inv_b [C]) -> y [M, C] f32
//                                                y = x + sin(x a)^2 inv_b, a = e^alpha, inv_b = 1/(e^beta + 1e-9)
//                                                (omniref/codec/code2wav.py: snake_beta; the caller computes a
//                                                and inv_b with NumPy, so they are bit-identical to the spec)
// Layout: row-major, C-contiguous; y is a fresh array. The fast loops are in elementwise_kernels.inc (compiled
// per instruction set); `naive=True` runs the plain libm loops below, the reference the tests hold them to.
// NaN and infinities propagate as in NumPy: gelu(+inf) = inf, gelu(-inf) = nan (-inf * 0), sin(+-inf) = nan.
#include "bindings.h"
#include "cpu.h"
#include "simd.h"
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>
#ifdef OMNIREF_OPENMP
#include <omp.h>
#endif

#define OMNI_KERNELS "elementwise_kernels.inc"
#include "isa_instantiate.h"

namespace omni {
namespace {
constexpr int64_t kBlock = 1 << 14;  // elements per parallel work item: 64 KiB in, 64 KiB out (stays in L2)

// ---- references: one libm call per element, double precision, rounded once ------------------------------
void gelu_naive(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float t = x[i] * 0.7071067811865476f;
    y[i] = (0.5f * x[i]) * (1.0f + float(std::erf(double(t))));
  }
}
void gelu_tanh_naive(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float inner = x[i] + 0.044715f * x[i] * x[i] * x[i];
    y[i] = (0.5f * x[i]) * (1.0f + float(std::tanh(double(0.7978845608028654f * inner))));
  }
}
void snake_naive(const float* x, const float* a, const float* inv_b, float* y, int64_t rows, int64_t C) {
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t c = 0; c < C; ++c) {
      const float xv = x[t * C + c];
      float s = float(std::sin(double(xv * a[c])));
      y[t * C + c] = (s * s) * inv_b[c] + xv;
    }
}

// ---- fast paths -------------------------------------------------------------------------------------------
// One block of n elements / of rows x C channels on the selected instruction set (elementwise_kernels.inc);
// snake_block returns true when some |x a| needs the libm fix-up below.
void gelu_block(const float* x, float* y, int64_t n) { OMNI_DISPATCH(gelu_block(x, y, n)); }
void gelu_tanh_block(const float* x, float* y, int64_t n) { OMNI_DISPATCH(gelu_tanh_block(x, y, n)); }
bool snake_block(const float* x, const float* a, const float* inv_b, float* y, int64_t rows, int64_t C) {
  OMNI_DISPATCH(snake_block(x, a, inv_b, y, rows, C));
}

// An elementwise map over n floats, kBlock at a time on all threads (block = gelu_block or gelu_tanh_block).
template <void (*block)(const float*, float*, int64_t)>
void map_fast(const float* x, float* y, int64_t n) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#ifdef OMNIREF_OPENMP
#pragma omp parallel for schedule(static) if (blocks > 1)
#endif
  for (int64_t b = 0; b < blocks; ++b) block(x + b * kBlock, y + b * kBlock, std::min(kBlock, n - b * kBlock));
}

void snake_fast(const float* x, const float* a, const float* inv_b, float* y, int64_t rows, int64_t C) {
  // Work items are whole rows (the channel vectors a, inv_b line up with each row), about kBlock elements each.
  const int64_t step = std::max<int64_t>(1, kBlock / std::max<int64_t>(C, 1));
  const int64_t items = (rows + step - 1) / step;
#ifdef OMNIREF_OPENMP
#pragma omp parallel for schedule(static) if (items > 1)
#endif
  for (int64_t it = 0; it < items; ++it) {
    const int64_t t0 = it * step, m = std::min(step, rows - t0);
    const float* xb = x + t0 * C;
    float* yb = y + t0 * C;
    if (snake_block(xb, a, inv_b, yb, m, C))
      for (int64_t t = 0; t < m; ++t)  // rare: |x a| >= 1e6 needs libm's full (Payne-Hanek) reduction
        for (int64_t c = 0; c < C; ++c) {
          const float arg = xb[t * C + c] * a[c];
          if (std::fabs(arg) >= OMNI_SIN_LIMIT) snake_naive(xb + t * C + c, a + c, inv_b + c, yb + t * C + c, 1, 1);
        }
  }
}

// ---- Python entry points (omniref/_native.py validates first; these checks are the second wall) -----------
// y = f(x) elementwise for f = gelu or gelu_tanh (`name`): the fast map, or the libm reference with naive=True.
template <void (*fast)(const float*, float*, int64_t), void (*reference)(const float*, float*, int64_t)>
py::array_t<float> map_py(const std::string& name, const py::array& x, bool naive) {
  if (!x.dtype().is(py::dtype::of<float>())) throw py::type_error(name + ": x must be float32, got " +
                                                                   std::string(py::str(x.dtype())));
  if (!(x.flags() & py::array::c_style)) throw py::value_error(name + ": x must be C-contiguous");
  if (!(x.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
    throw py::value_error(name + ": x must be aligned to its element size");
  std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
  py::array_t<float> y(shape);
  const int64_t n = x.size();
  const float* xp = static_cast<const float*>(x.data());
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release nogil;
    naive ? reference(xp, yp, n) : fast(xp, yp, n);
  }
  return y;
}

py::array_t<float> snake_py(const py::array& x, const py::array& a, const py::array& inv_b, bool naive) {
  check_array<float>(x, "snake_beta: x", 2);
  check_array<float>(a, "snake_beta: a", 1);
  check_array<float>(inv_b, "snake_beta: inv_b", 1);
  const int64_t rows = x.shape(0), C = x.shape(1);
  if (a.shape(0) != C || inv_b.shape(0) != C)
    throw py::value_error("snake_beta: x " + shape_str(x) + " has C=" + std::to_string(C) + " channels but a " +
                          shape_str(a) + " and inv_b " + shape_str(inv_b));
  py::array_t<float> y({rows, C});
  const float* xp = static_cast<const float*>(x.data());
  const float* ap = static_cast<const float*>(a.data());
  const float* bp = static_cast<const float*>(inv_b.data());
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release nogil;
    naive ? snake_naive(xp, ap, bp, yp, rows, C) : snake_fast(xp, ap, bp, yp, rows, C);
  }
  return y;
}
}  // namespace

void register_elementwise(py::module_& m) {
  m.def("gelu", [](const py::array& x, bool naive) { return map_py<map_fast<gelu_block>, gelu_naive>("gelu", x, naive); },
        py::arg("x"), py::arg("naive") = false, "y = 0.5 x (1 + erf(x / sqrt 2)), float32, any shape (C-contiguous)");
  m.def("gelu_tanh",
        [](const py::array& x, bool naive) {
          return map_py<map_fast<gelu_tanh_block>, gelu_tanh_naive>("gelu_tanh", x, naive);
        },
        py::arg("x"), py::arg("naive") = false,
        "y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), float32, any shape (C-contiguous)");
  m.def("snake_beta", &snake_py, py::arg("x"), py::arg("a"), py::arg("inv_b"), py::arg("naive") = false,
        "y[M, C] = x + sin(x a)^2 inv_b with per-channel a = e^alpha, inv_b = 1/(e^beta + 1e-9)");
}
}  // namespace omni
