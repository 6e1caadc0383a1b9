// cuda_bind.cpp -- Python entry points of the optional CUDA kernels (csrc/cuda, -DOMNIREF_CUDA=ON):
//   cuda_device_count() -> int
//   cuda_linear(x [M,K] f32, W [N,K] f32, bias|None, naive=False) -> (y [M,N], kernel milliseconds)
//   cuda_attention(q, k, v, causal, window, segments|None, mask|None, scale) -> (out, kernel milliseconds)
// Compiled to nothing unless OMNIREF_CUDA is defined.
#ifdef OMNIREF_CUDA
#include "bindings.h"
#include "cuda/kernels.cuh"

namespace omni {
void register_cuda(py::module_& m) {
  m.def("cuda_device_count", &omni_cuda::device_count);
  m.def("cuda_linear", [](const py::array& x, const py::array& W, const py::object& bias, bool naive) {
    check_array<float>(x, "x", 2);
    check_array<float>(W, "weight", 2);
    const int64_t M = x.shape(0), K = x.shape(1), N = W.shape(0);
    if (W.shape(1) != K) throw py::value_error("cuda_linear: x " + shape_str(x) + " and weight " + shape_str(W) + " disagree on K");
    py::array b;
    if (!bias.is_none()) {
      b = py::reinterpret_borrow<py::array>(bias);
      check_array<float>(b, "bias", 1);
      if (b.shape(0) != N) throw py::value_error("cuda_linear: bias must have N entries");
    }
    py::array_t<float> y({M, N});
    float ms = 0.f;
    std::string e = omni_cuda::linear(static_cast<const float*>(x.data()), static_cast<const float*>(W.data()),
                                      bias.is_none() ? nullptr : static_cast<const float*>(b.data()),
                                      y.mutable_data(), M, N, K, naive, &ms);
    if (!e.empty()) throw std::runtime_error("CUDA: " + e);
    return py::make_tuple(y, ms);
  }, py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(), py::arg("naive") = false);
  m.def("cuda_attention", [](const py::array& q, const py::array& k, const py::array& v, bool causal,
                             int64_t window, const py::object& segments, const py::object& mask, double scale) {
    check_array<float>(q, "q", 3);
    check_array<float>(k, "k", 3);
    check_array<float>(v, "v", 3);
    const int64_t Hq = q.shape(0), Lq = q.shape(1), D = q.shape(2), Hkv = k.shape(0), Lk = k.shape(1);
    if (k.shape(2) != D || v.shape(0) != Hkv || v.shape(1) != Lk || v.shape(2) != D || Hkv == 0 || Hq % Hkv)
      throw py::value_error("cuda_attention: bad shapes q " + shape_str(q) + " k " + shape_str(k) + " v " + shape_str(v));
    if (window < 0) throw py::value_error("cuda_attention: window must be >= 0");
    py::array s, mk;
    const int64_t* sp = nullptr;
    const uint8_t* mp = nullptr;
    if (!segments.is_none()) {
      s = py::reinterpret_borrow<py::array>(segments);
      check_array<int64_t>(s, "segments", 1);
      if (Lq != Lk || s.shape(0) != Lq) throw py::value_error("cuda_attention: segments need Lq == Lk == len");
      sp = static_cast<const int64_t*>(s.data());
    }
    if (!mask.is_none()) {
      mk = py::reinterpret_borrow<py::array>(mask);
      if (!mk.dtype().is(py::dtype::of<bool>())) check_array<uint8_t>(mk, "mask", 2);
      if (mk.ndim() != 2 || mk.shape(0) != Lq || mk.shape(1) != Lk || !(mk.flags() & py::array::c_style))
        throw py::value_error("cuda_attention: mask must be C-contiguous [Lq, Lk]");
      mp = static_cast<const uint8_t*>(mk.data());
    }
    py::array_t<float> out({Hq, Lq, D});
    float ms = 0.f;
    std::string e = omni_cuda::attention(static_cast<const float*>(q.data()), static_cast<const float*>(k.data()),
                                         static_cast<const float*>(v.data()), out.mutable_data(), Hq, Hkv, Lq, Lk,
                                         D, causal, window, sp, mp, float(scale), &ms);
    if (!e.empty()) throw std::runtime_error("CUDA: " + e);
    return py::make_tuple(out, ms);
  });
}
}  // namespace omni
#endif
