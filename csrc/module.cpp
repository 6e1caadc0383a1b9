// module.cpp -- the `omniref._C` extension: one register_* call per source file, plus CPU/ISA controls.
#include "bindings.h"
#include "cpu.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "omniref native kernels (validated wrappers live in omniref/_native.py)";
  m.def("isa", []() { return std::string(omni::isa_name(omni::isa())); }, "instruction set the kernels use now");
  m.def("best_isa", []() { return std::string(omni::isa_name(omni::best_isa())); });
  m.def("set_isa", [](const std::string& name) {
    if (name == "avx512") omni::set_isa(omni::Isa::avx512);
    else if (name == "avx2") omni::set_isa(omni::Isa::avx2);
    else if (name == "generic") omni::set_isa(omni::Isa::generic);
    else throw py::value_error("unknown instruction set '" + name + "' (avx512, avx2, generic)");
  });
  m.def("cpu_has", &omni::cpu_has);
  m.def("max_threads", &omni::max_threads);
  m.def("set_threads", &omni::set_threads);
#ifdef OMNIREF_SANITIZE
  m.attr("sanitized") = true;
#else
  m.attr("sanitized") = false;
#endif
  omni::register_gemm(m);
  omni::register_attention(m);
  omni::register_elementwise(m);
  omni::register_moe(m);
  omni::register_norm_rope(m);
  omni::register_conv(m);
#ifdef OMNIREF_CUDA
  omni::register_cuda(m);
  m.attr("has_cuda") = true;
#else
  m.attr("has_cuda") = false;
#endif
}
