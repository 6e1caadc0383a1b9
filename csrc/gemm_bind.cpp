// gemm_bind.cpp -- Python entry points for the linear kernels (gemm.h).
//   linear(x [M, K] f32, W [N, K] f32 | uint16 (bf16 bits), bias [N] f32 | None, naive=False, packed=None)
//     -> y [M, N] f32 (packed: pack_weight(W) for a float32 W, read instead of packing W when M > 8)
//   pack_weight(W [N, K] f32) -> the GEMM's panel layout of W (1-D f32), for kernels that take pre-packed weights
#include "bindings.h"
#include "gemm.h"

namespace omni {
namespace {
py::array_t<float> linear_py(const py::array& x, const py::array& W, const py::object& bias, bool naive,
                             const py::object& packed) {
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
  const float* pk = nullptr;
  py::array pk_arr;
  if (!packed.is_none()) {
    if (bf16) throw py::value_error("linear: packed= is for float32 weights");
    pk_arr = py::reinterpret_borrow<py::array>(packed);
    check_array<float>(pk_arr, "packed", 1);
    if (pk_arr.shape(0) != packed_weight_size(N, K))
      throw py::value_error("linear: packed has " + std::to_string(pk_arr.shape(0)) + " floats, the current "
                            "instruction set's layout of weight " + shape_str(W) + " needs " +
                            std::to_string(packed_weight_size(N, K)));
    pk = static_cast<const float*>(pk_arr.data());
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
      naive ? linear_naive_f32(xp, wp, b, yp, M, N, K) : linear_f32(xp, wp, b, yp, M, N, K, pk);
    }
  }
  return y;
}
py::array_t<float> pack_weight_py(const py::array& W) {
  check_array<float>(W, "weight", 2);
  const int64_t N = W.shape(0), K = W.shape(1);
  py::array_t<float> out(packed_weight_size(N, K));
  const float* wp = static_cast<const float*>(W.data());
  float* op = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    pack_weight_f32(wp, N, K, op);
  }
  return out;
}
}  // namespace

void register_gemm(py::module_& m) {
  m.def("pack_weight", &pack_weight_py, py::arg("weight"),
        "weight[N,K] float32 in the GEMM's panel layout of the current instruction set (1-D, for moe's packed=)");
  m.def("packed_weight_size", &packed_weight_size, py::arg("N"), py::arg("K"),
        "floats of pack_weight's result for an [N, K] weight on the current instruction set");
  m.def("linear", &linear_py, py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(),
        py::arg("naive") = false, py::arg("packed") = py::none(),
        "y[M,N] = x[M,K] @ weight[N,K]^T + bias[N]; weight float32 or uint16 bfloat16 bits; packed: "
        "pack_weight(weight), read by a GEMM (M > 8) instead of packing");
}
}  // namespace omni
