// gemm_bind.cpp -- Python entry points for the linear kernels (gemm.h).
//   linear(x [M, K] f32, W [N, K] f32 | uint16 (bf16 bits), bias [N] f32 | None, naive=False, packed=None)
//     -> y [M, N] f32 (packed: pack_weight(W) for a float32 W, read instead of packing W when M > 8)
//   linear_many(x [1, K] f32, [W_i [N_i, K] f32 | uint16]) -> [y_i [1, N_i]]  (decode's q, k, v in one region)
//   pack_weight(W [N, K] f32) -> the GEMM's panel layout of W (1-D f32), for kernels that take pre-packed weights
#include "bindings.h"
#include "gemm.h"
#include <algorithm>
#include <vector>

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
// x [1, K] and a list of weights (all float32 or all uint16 bf16 bits, each [N_i, K]) -> list of y_i [1, N_i].
py::list linear_many_py(const py::array& x, const py::list& weights) {
  check_array<float>(x, "x", 2);
  if (x.shape(0) != 1) throw py::value_error("linear_many: x must be one token [1, K], got " + shape_str(x));
  const int64_t K = x.shape(1);
  const int n = int(weights.size());
  if (n < 1 || n > 16) throw py::value_error("linear_many: 1 to 16 weights, got " + std::to_string(n));
  std::vector<py::array> ws, ys;
  std::vector<int64_t> N;
  std::vector<const void*> wp;
  std::vector<float*> yp;
  bool bf16 = false;
  for (int i = 0; i < n; ++i) {
    py::array w = py::reinterpret_borrow<py::array>(weights[size_t(i)]);
    const bool b = w.dtype().is(py::dtype::of<uint16_t>());
    if (i == 0) bf16 = b;
    if (b != bf16) throw py::value_error("linear_many: weights must be all float32 or all bf16");
    if (b) check_array<uint16_t>(w, "weight", 2);
    else check_array<float>(w, "weight", 2);
    if (w.shape(1) != K)
      throw py::value_error("linear_many: x " + shape_str(x) + " and weight " + shape_str(w) +
                            " disagree on the input size K");
    py::array_t<float> y({int64_t(1), int64_t(w.shape(0))});
    N.push_back(w.shape(0));
    wp.push_back(w.data());
    yp.push_back(y.mutable_data());
    ws.push_back(w);
    ys.push_back(y);
  }
  const float* xp = static_cast<const float*>(x.data());
  {
    py::gil_scoped_release nogil;
    if (bf16) {
      std::vector<const uint16_t*> w16(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) w16[size_t(i)] = static_cast<const uint16_t*>(wp[size_t(i)]);
      if (K > 0) gemv_many_bf16(xp, w16.data(), yp.data(), N.data(), n, K);
    } else {
      std::vector<const float*> w32(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) w32[size_t(i)] = static_cast<const float*>(wp[size_t(i)]);
      if (K > 0) gemv_many_f32(xp, w32.data(), yp.data(), N.data(), n, K);
    }
  }
  if (K == 0)
    for (auto& y : ys) std::fill_n(static_cast<float*>(y.mutable_data()), y.size(), 0.f);  // empty sum
  py::list out;
  for (auto& y : ys) out.append(y);
  return out;
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
  m.def("linear_many", &linear_many_py, py::arg("x"), py::arg("weights"),
        "[y_i[1,N_i] = x[1,K] @ weights[i][N_i,K]^T]: one token through several weights (all float32 or all "
        "uint16 bfloat16 bits) in one parallel region, the same bits as one linear call each");
  m.def("linear", &linear_py, py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(),
        py::arg("naive") = false, py::arg("packed") = py::none(),
        "y[M,N] = x[M,K] @ weight[N,K]^T + bias[N]; weight float32 or uint16 bfloat16 bits; packed: "
        "pack_weight(weight), read by a GEMM (M > 8) instead of packing");
}
}  // namespace omni
