// gemm.cpp -- dispatch of the linear kernels (gemm_core.inc + gemm_kernels.inc, compiled per instruction set)
// and the naive reference kept beside them. Shapes and layout: see gemm.h.
#include "gemm.h"
#include "cpu.h"
#include "simd.h"
#include "shared_cores.h"
#include <type_traits>
#include <vector>
#ifdef OMNIREF_OPENMP
#include <omp.h>
#endif

#define OMNI_KERNELS "gemm_core.inc"
#define OMNI_KERNELS_2 "gemm_kernels.inc"
#include "isa_instantiate.h"

namespace omni {
namespace {
// Reference: one dot product per output, float32 accumulation in k order (what a textbook loop does).
template <class WT>
void naive(const float* x, const WT* W, const float* bias, float* y, int64_t M, int64_t N, int64_t K) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      float s = 0.f;
      for (int64_t k = 0; k < K; ++k) s += x[m * K + k] * widen(W[n * K + k]);
      y[m * N + n] = s + (bias ? bias[n] : 0.f);
    }
}
}  // namespace

void linear_naive_f32(const float* x, const float* W, const float* b, float* y, int64_t M, int64_t N, int64_t K) {
  naive(x, W, b, y, M, N, K);
}
void linear_naive_bf16(const float* x, const uint16_t* W, const float* b, float* y, int64_t M, int64_t N, int64_t K) {
  naive(x, W, b, y, M, N, K);
}

int64_t packed_weight_size(int64_t N, int64_t K) { OMNI_DISPATCH(packed_size(N, K)); }
void pack_weight_f32(const float* W, int64_t N, int64_t K, float* dst) {
  OMNI_DISPATCH(pack_weight(W, N, K, dst));
}

void linear_f32(const float* x, const float* W, const float* b, float* y, int64_t M, int64_t N, int64_t K,
                const float* Wp) {
  OMNI_DISPATCH(linear(x, W, b, y, M, N, K, Wp));
}
void linear_bf16(const float* x, const uint16_t* W, const float* b, float* y, int64_t M, int64_t N, int64_t K) {
  OMNI_DISPATCH(linear(x, W, b, y, M, N, K));
}
void gemv_many_f32(const float* x, const float* const* W, float* const* y, const int64_t* N, int n, int64_t K) {
  OMNI_DISPATCH(gemv_many(x, W, y, N, n, K));
}
void gemv_many_bf16(const float* x, const uint16_t* const* W, float* const* y, const int64_t* N, int n, int64_t K) {
  OMNI_DISPATCH(gemv_many(x, W, y, N, n, K));
}
}  // namespace omni
