// bindings.h -- shared argument checks for the pybind11 layer. The Python wrappers (omniref/_native.py)
// validate first with friendly messages; these checks are the second wall so a bad call from anywhere
// raises ValueError/TypeError instead of reading out of bounds.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <stdexcept>
#include <string>

namespace py = pybind11;

namespace omni {
// The largest dimension a kernel takes. Index arithmetic multiplies at most two dimensions (or a dimension and
// a clamped dilation / window, each <= a dimension) in int64, so with every dimension below 2^31 no index can
// overflow; larger products (work estimates for threading) are formed in double.
constexpr int64_t kMaxDim = (int64_t(1) << 31) - 1;

inline void check_dims(const py::array& a, const char* name) {
  for (py::ssize_t i = 0; i < a.ndim(); ++i)
    if (a.shape(i) > kMaxDim)
      throw py::value_error(std::string(name) + ": dimension " + std::to_string(i) + " is " +
                            std::to_string(a.shape(i)) + ", the kernels take at most " + std::to_string(kMaxDim));
}

template <class T>
inline void check_array(const py::array& a, const char* name, int ndim) {
  if (!a.dtype().is(py::dtype::of<T>()))
    throw py::type_error(std::string(name) + ": expected dtype " + std::string(py::str(py::dtype::of<T>())) +
                         ", got " + std::string(py::str(a.dtype())));
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + ": expected " + std::to_string(ndim) + " dimensions, got " +
                          std::to_string(a.ndim()));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + ": array must be C-contiguous");
  if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
    throw py::value_error(std::string(name) + ": array must be aligned to its element size");
  check_dims(a, name);
}
inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + ")";
}
void register_gemm(py::module_& m);
void register_attention(py::module_& m);
void register_elementwise(py::module_& m);
void register_moe(py::module_& m);
void register_norm_rope(py::module_& m);
void register_conv(py::module_& m);
void register_cuda(py::module_& m);
}  // namespace omni
