// gemm_bind.cpp -- Python entry points for the linear kernels (gemm.h).
//   linear(x [M, K] f32, W [N, K] f32 | uint16 (bf16 bits), bias [N] f32 | None, naive=False) -> y [M, N] f32
#include "bindings.h"
#include "gemm.h"

namespace omni {
namespace {
py::array_t<float> linear_py(const py::array& x, const py::array& W, const py::object& bias, bool naive) {
  check_array<float>(x, "x", 2);
  const bool bf16 = W.dtype().is(py::dtype::of<uint16_t>());
  if (bf16) check_array<uint16_t>(W, "weight", 2);
  else check_array<float>(W, "weight", 2);
  const int64_t M = x.shape(0), K = x.shape(1), N = W.shape(0);
  if (W.shape(1) != K)
    throw py::value_error("linear: x " + shape_str(x) + " and weight " + shape_str(W) +
                          " disagree on the input size K");
  const float* b = nullptr;
  py::array bias_arr;
  if (!bias.is_none()) {
    bias_arr = py::reinterpret_borrow<py::array>(bias);
    check_array<float>(bias_arr, "bias", 1);
    if (bias_arr.shape(0) != N)
      throw py::value_error("linear: bias " + shape_str(bias_arr) + " must have N=" + std::to_string(N) +
                            " entries");
    b = static_cast<const float*>(bias_arr.data());
  }
  py::array_t<float> y({M, N});
  const float* xp = static_cast<const float*>(x.data());
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release nogil;
    if (bf16) {
      const uint16_t* wp = static_cast<const uint16_t*>(W.data());
      naive ? linear_naive_bf16(xp, wp, b, yp, M, N, K) : linear_bf16(xp, wp, b, yp, M, N, K);
    } else {
      const float* wp = static_cast<const float*>(W.data());
      naive ? linear_naive_f32(xp, wp, b, yp, M, N, K) : linear_f32(xp, wp, b, yp, M, N, K);
    }
  }
  return y;
}
}  // namespace

void register_gemm(py::module_& m) {
  m.def("linear", &linear_py, py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(),
        py::arg("naive") = false,
        "y[M,N] = x[M,K] @ weight[N,K]^T + bias[N]; weight float32 or uint16 bfloat16 bits");
}
}  // namespace omni
