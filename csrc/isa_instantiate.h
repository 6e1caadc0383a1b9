// isa_instantiate.h -- compile a kernel file once per instruction set, into namespaces isa_generic,
// isa_avx512 and isa_avx2 (the latter two only on x86, inside the target regions of simd.h); cpu.cpp picks one
// at run time. Include it after simd.h with the kernel file(s) named by macros:
//
//     #define OMNI_KERNELS "gemm_core.inc"
//     #define OMNI_KERNELS_2 "moe_kernels.inc"     // optional second file that builds on the first
//     #include "isa_instantiate.h"
//
// Entry points then pick the namespace with OMNI_DISPATCH(call) (simd.h).
// No include guard on purpose: each translation unit includes it once with its own files.
#ifndef OMNI_KERNELS
#error "define OMNI_KERNELS before including isa_instantiate.h"
#endif

namespace isa_generic {
#include OMNI_KERNELS
#ifdef OMNI_KERNELS_2
#include OMNI_KERNELS_2
#endif
}
#ifdef OMNI_HAVE_X86_ISAS
OMNI_ISA_BEGIN(avx512)
#include OMNI_KERNELS
#ifdef OMNI_KERNELS_2
#include OMNI_KERNELS_2
#endif
OMNI_ISA_END
OMNI_ISA_BEGIN(avx2)
#include OMNI_KERNELS
#ifdef OMNI_KERNELS_2
#include OMNI_KERNELS_2
#endif
OMNI_ISA_END
#endif

#undef OMNI_KERNELS
#undef OMNI_KERNELS_2
