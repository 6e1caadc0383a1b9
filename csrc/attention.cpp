// attention.cpp -- dispatch of the flash-style attention (attention_kernels.inc, compiled per instruction
// set), the naive reference beside it, and the Python entry point. Shapes and masks: see attention.h.
//   attention(q, k, v, causal, window, segments|None, mask|None, scale, naive=False) -> out [Hq, Lq, D]
#include "attention.h"
#include "bindings.h"
#include "cpu.h"
#include "simd.h"
#include <cfloat>
#include <climits>
#include <vector>
#ifdef OMNIREF_OPENMP
#include <omp.h>
#endif

#define OMNI_KERNELS "attention_kernels.inc"
#include "isa_instantiate.h"

namespace omni {
void attention(const AttentionCall& c) { OMNI_DISPATCH(attention(c)); }

// Reference: for each query, the whole score row, a max-subtracted softmax, then the weighted sum over every
// key, as the NumPy specification computes it (so NaN and inf travel the same way: a NaN max poisons the row,
// a masked key still adds 0 · v[j], which is NaN for a non-finite v[j]).
void attention_naive(const AttentionCall& c) {
  const int64_t G = c.Hq / c.Hkv, D = c.D, off = c.Lk - c.Lq;
  std::vector<float> s(size_t(c.Lk > 0 ? c.Lk : 1));
  for (int64_t h = 0; h < c.Hq; ++h)
    for (int64_t i = 0; i < c.Lq; ++i) {
      const float* q = c.q + (h * c.Lq + i) * D;
      const float* kb = c.k + (h / G) * c.ks;
      const float* vb = c.v + (h / G) * c.vs;
      const int64_t p = off + i;
      float mx = -INFINITY;
      bool any = false;  // some key visible
      for (int64_t j = 0; j < c.Lk; ++j) {
        bool ok = !(c.causal && j > p) && !(c.window > 0 && j <= p - c.window) &&
                  !(c.seg && c.seg[j] != c.seg[i]) && !(c.mask && !c.mask[i * c.Lk + j]);
        float acc = 0.f;
        if (ok)
          for (int64_t d = 0; d < D; ++d) acc += q[d] * kb[j * D + d];
        s[j] = ok ? acc * c.scale : -INFINITY;
        if (mx == mx && !(s[j] <= mx)) mx = s[j];  // a NaN-propagating max, like np.max
        any = any || ok;
      }
      float sum = 0.f;
      for (int64_t j = 0; j < c.Lk; ++j) {
        s[j] = any ? std::exp(s[j] - mx) : 0.f;  // nothing visible: every weight 0 (a 0 row, not 0/0)
        sum += s[j];
      }
      float* o = c.out + (h * c.Lq + i) * D;
      for (int64_t d = 0; d < D; ++d) o[d] = 0.f;
      for (int64_t j = 0; j < c.Lk; ++j)
        for (int64_t d = 0; d < D; ++d) o[d] += s[j] * vb[j * D + d];
      if (any)
        for (int64_t d = 0; d < D; ++d) o[d] /= sum;
    }
}

namespace {
// k / v: float32 [Hkv, Lk, D] whose rows are contiguous ([Lk, D] C-order inside each head) and whose heads lie
// any whole number of floats >= Lk*D apart, e.g. cache[:, :Lk] of a [Hkv, capacity, D] buffer. Returns that
// head stride in floats.
int64_t kv_head_stride(const py::array& a, const char* name) {
  if (!a.dtype().is(py::dtype::of<float>()))
    throw py::type_error(std::string(name) + ": expected dtype float32, got " + std::string(py::str(a.dtype())));
  if (a.ndim() != 3)
    throw py::value_error(std::string(name) + ": expected 3 dimensions, got " + std::to_string(a.ndim()));
  if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
    throw py::value_error(std::string(name) + ": array must be aligned to its element size");
  check_dims(a, name);
  if (a.flags() & py::array::c_style) return a.shape(1) * a.shape(2);
  const int64_t f = sizeof(float), L = a.shape(1), D = a.shape(2);
  const bool rows_ok = (D <= 1 || a.strides(2) == f) && (L <= 1 || a.strides(1) == D * f);
  if (!rows_ok || a.strides(0) % f || (a.shape(0) > 1 && a.strides(0) < L * D * f))
    throw py::value_error(std::string(name) + ": each head must be a C-contiguous [L, D] block and heads must "
                          "not overlap (got strides " + std::to_string(a.strides(0)) + ", " +
                          std::to_string(a.strides(1)) + ", " + std::to_string(a.strides(2)) + ")");
  return a.shape(0) > 1 ? a.strides(0) / f : L * D;
}

py::array_t<float> attention_py(const py::array& q, const py::array& k, const py::array& v, bool causal,
                                int64_t window, const py::object& segments, const py::object& mask, double scale,
                                bool naive) {
  check_array<float>(q, "q", 3);
  const int64_t ks = kv_head_stride(k, "k"), vs = kv_head_stride(v, "v");
  const int64_t Hq = q.shape(0), Lq = q.shape(1), D = q.shape(2), Hkv = k.shape(0), Lk = k.shape(1);
  if (k.shape(2) != D || v.shape(0) != Hkv || v.shape(1) != Lk || v.shape(2) != D)
    throw py::value_error("attention: q " + shape_str(q) + ", k " + shape_str(k) + ", v " + shape_str(v) +
                          " must be [Hq, Lq, D], [Hkv, Lk, D], [Hkv, Lk, D]");
  if (Hkv <= 0 || Hq % Hkv != 0)
    throw py::value_error("attention: query heads " + std::to_string(Hq) + " must be a multiple of kv heads " +
                          std::to_string(Hkv));
  if (window < 0) throw py::value_error("attention: sliding window must be >= 0 (0 = none), got " +
                                        std::to_string(window));
  // A window of Lk or more hides no key (j > p - window for every p < Lk): the same as Lk, which keeps
  // p - window far from int64 overflow whatever the caller passed.
  window = std::min<int64_t>(window, std::max<int64_t>(Lk, 1));
  if (!std::isfinite(scale)) throw py::value_error("attention: scale must be finite");
  AttentionCall c{static_cast<const float*>(q.data()), static_cast<const float*>(k.data()),
                  static_cast<const float*>(v.data()), nullptr, Hq, Hkv, Lq, Lk, D, causal, window, nullptr,
                  nullptr, float(scale), ks, vs};
  py::array seg_arr, mask_arr;
  if (!segments.is_none()) {
    seg_arr = py::reinterpret_borrow<py::array>(segments);
    check_array<int64_t>(seg_arr, "segments", 1);
    if (Lq != Lk || seg_arr.shape(0) != Lq)
      throw py::value_error("attention: segments " + shape_str(seg_arr) + " need Lq == Lk == len(segments), got Lq=" +
                            std::to_string(Lq) + " Lk=" + std::to_string(Lk));
    c.seg = static_cast<const int64_t*>(seg_arr.data());
  }
  if (!mask.is_none()) {
    mask_arr = py::reinterpret_borrow<py::array>(mask);
    if (mask_arr.dtype().is(py::dtype::of<bool>())) {
      if (mask_arr.ndim() != 2 || !(mask_arr.flags() & py::array::c_style))
        throw py::value_error("attention: mask must be a C-contiguous 2-D array");
      check_dims(mask_arr, "mask");
    } else {
      check_array<uint8_t>(mask_arr, "mask", 2);
    }
    if (mask_arr.shape(0) != Lq || mask_arr.shape(1) != Lk)
      throw py::value_error("attention: mask " + shape_str(mask_arr) + " must be [Lq, Lk] = [" +
                            std::to_string(Lq) + ", " + std::to_string(Lk) + "]");
    c.mask = static_cast<const uint8_t*>(mask_arr.data());
  }
  py::array_t<float> out({Hq, Lq, D});
  c.out = out.mutable_data();
  if (Hq * Lq * D > 0) {
    py::gil_scoped_release nogil;
    naive ? attention_naive(c) : attention(c);
  }
  return out;
}
}  // namespace

void register_attention(py::module_& m) {
  m.def("attention", &attention_py, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("causal") = false,
        py::arg("window") = 0, py::arg("segments") = py::none(), py::arg("mask") = py::none(),
        py::arg("scale") = 1.0, py::arg("naive") = false,
        "out[Hq,Lq,D] = softmax(scale q k^T + masks) v with GQA; see csrc/attention.h");
}
}  // namespace omni
