// simd.h -- one vector interface `V`, three instruction sets, chosen at run time.
//
// Every fast kernel in csrc/ is written once as a template over `V` (kernels read like scalar code with
// `V::fma`, `V::load`, ...). Each kernel file then compiles its template body three times, inside
//   OMNI_ISA_BEGIN(avx512) ... OMNI_ISA_END   -> namespace isa_avx512, 16 float lanes (AVX-512F/BW/DQ/VL)
//   OMNI_ISA_BEGIN(avx2)   ... OMNI_ISA_END   -> namespace isa_avx2,    8 float lanes (AVX2 + FMA)
//   namespace isa_generic                      -> 1 lane, plain C++ (any CPU; the compiler may vectorize)
// The regions use `#pragma GCC target(...)`, i.e. per-function target attributes: the whole build stays
// plain x86-64 (no -march=native), and cpu.cpp picks the widest set the CPU reports (cpuid) at import.
//
// Interface of V (R = register of N floats):
//   N, zero(), set1(x), load/loadu(p), storeu(p, r), loadu_part(p, n) / storeu_part(p, r, n) (first n<N
//   lanes, rest zero / untouched), add, sub, mul, fma(a, b, c) = a*b + c, rounded(r) = r, through which the
//   compiler cannot fuse the multiply that made r into a later add (GCC contracts a*b + c into one FMA where it
//   sees fit, -ffp-contract=fast; a kernel whose bits must not depend on that choice states it with fma or
//   rounded), max, reduce_add, reduce_max (max of a
//   NaN depends on the operand order, as x86's maxps: kernels that must propagate NaN check for it themselves),
//   exp(r) (Cephes-style expf, ~2 ulp, exp(x < -87) = 0, exp(+inf) = +inf, NaN stays NaN, as std::exp),
//   exp_nonpos(r): the same exp for x <= 0 or NaN only (a softmax's x - max), 14 instead of 28 operations:
//   no overflow branch, n = round(x log2 e) and 2^n from one magic-number FMA, x clamped to -88 where n = -127
//   makes 2^n's exponent field, and so the result, exactly 0 (also for -inf); NaN stays NaN; may differ from
//   exp in the last bit, and in (-88, -87) by less than FLT_MIN (exp gives 0 there),
//   load_bf16(p) / load_bf16_part(p, n): N bfloat16
//   (uint16) widened exactly to float32 (bf16 bits are the high half of the float32 word);
//   load_cols(p, stride, rows, cols, out[N]): an N x N block of a row-major matrix transposed, out[j] lane i =
//   p[i * stride + j] (zero past `rows` / `cols`): N weight rows read contiguously, delivered column by column.
#pragma once
#include "cpu.h"
#include <cmath>
#include <cstdint>
#include <cstring>
#include <algorithm>
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#define OMNI_X86 1
#endif

#if defined(OMNI_X86) && defined(__GNUC__)
#define OMNI_STR2(x) #x
#define OMNI_PRAGMA(x) _Pragma(OMNI_STR2(x))
#define OMNI_TARGET_avx512 "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi2"
#define OMNI_TARGET_avx2 "avx2,fma,f16c,bmi2"
#define OMNI_ISA_BEGIN(name)                                 \
  OMNI_PRAGMA(GCC push_options)                              \
  OMNI_PRAGMA(GCC target(OMNI_TARGET_##name))                \
  namespace isa_##name {
#define OMNI_ISA_END                                         \
  }                                                          \
  OMNI_PRAGMA(GCC pop_options)
#define OMNI_HAVE_X86_ISAS 1
#endif

// OMNI_DISPATCH(call): `return isa_<set>::call;` for the instruction set selected in cpu.h (the one switch
// every kernel's entry point goes through). Use it where the isa_* namespaces exist, i.e. after
// isa_instantiate.h, e.g.  void gelu(...) { OMNI_DISPATCH(gelu_block(x, y, n)); }
#ifdef OMNI_HAVE_X86_ISAS
#define OMNI_DISPATCH(call)                                  \
  switch (::omni::isa()) {                                   \
    case ::omni::Isa::avx512: return isa_avx512::call;       \
    case ::omni::Isa::avx2: return isa_avx2::call;           \
    default: return isa_generic::call;                       \
  }
#else
#define OMNI_DISPATCH(call) return isa_generic::call;
#endif

namespace omni {
// bfloat16 -> float32, exact: bf16 bits are the high half of the float32 word. `widen(float)` is the identity,
// so code templated over the weight type (float or uint16_t bf16 bits) reads one element as `widen(W[i])`.
inline float widen(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float widen(float v) { return v; }

// No inf or NaN among n floats: an all-ones exponent field marks both (integer ops, so the loop vectorizes).
inline bool all_finite(const float* p, int64_t n) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, p + i, 4);
    bad |= uint32_t((u & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}
}  // namespace omni

// Cephes expf constants: exp(x) = 2^n * exp(r), n = round(x*log2(e)), r = x - n*ln2 (ln2 split in two parts
// so r is exact), exp(r) by a degree-6 minimax polynomial on [-ln2/2, ln2/2].
#define OMNI_EXP_HI 88.72283172607421875f  // the largest float whose exp is finite; above it exp = +inf
#define OMNI_EXP_LO (-87.0f)
#define OMNI_LOG2E 1.44269504088896341f
#define OMNI_LN2_HI 0.693359375f
#define OMNI_LN2_LO (-2.12194440e-4f)
#define OMNI_EXP_P0 1.9875691500E-4f
#define OMNI_EXP_P1 1.3981999507E-3f
#define OMNI_EXP_P2 8.3334519073E-3f
#define OMNI_EXP_P3 4.1665795894E-2f
#define OMNI_EXP_P4 1.6666665459E-1f
#define OMNI_EXP_P5 5.0000001201E-1f

namespace isa_generic {
struct V {
  static constexpr int N = 1;
  using R = float;
  static inline R zero() { return 0.f; }
  static inline R set1(float x) { return x; }
  static inline R load(const float* p) { return *p; }
  static inline R loadu(const float* p) { return *p; }
  static inline void storeu(float* p, R r) { *p = r; }
  static inline R loadu_part(const float* p, int n) { return n > 0 ? *p : 0.f; }
  static inline void storeu_part(float* p, R r, int n) { if (n > 0) *p = r; }
  static inline R add(R a, R b) { return a + b; }
  static inline R sub(R a, R b) { return a - b; }
  static inline R mul(R a, R b) { return a * b; }
  static inline R fma(R a, R b, R c) { return std::fma(a, b, c); }
  static inline R max(R a, R b) { return a > b ? a : b; }
  static inline R rounded(R a) {
    volatile float v = a;  // a store and a load: nothing to fuse across
    return v;
  }
  static inline float reduce_add(R a) { return a; }
  static inline float reduce_max(R a) { return a; }
  static inline R exp(R x) { return x < OMNI_EXP_LO ? 0.f : std::exp(x); }
  static inline R exp_nonpos(R x) { return exp(x); }
  static inline R load_bf16(const uint16_t* p) { return omni::widen(*p); }
  static inline R load_bf16_part(const uint16_t* p, int n) { return n > 0 ? omni::widen(*p) : 0.f; }
  static inline void load_cols(const float* p, int64_t stride, int rows, int cols, R* out) {
    out[0] = (rows > 0 && cols > 0) ? *p : 0.f;
  }
};
}  // namespace isa_generic

#ifdef OMNI_HAVE_X86_ISAS
OMNI_ISA_BEGIN(avx512)
struct V {
  static constexpr int N = 16;
  using R = __m512;
  static inline __mmask16 m(int n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n < 0 ? 0 : n)) - 1u); }
  static inline R zero() { return _mm512_setzero_ps(); }
  static inline R set1(float x) { return _mm512_set1_ps(x); }
  static inline R load(const float* p) { return _mm512_loadu_ps(p); }
  static inline R loadu(const float* p) { return _mm512_loadu_ps(p); }
  static inline void storeu(float* p, R r) { _mm512_storeu_ps(p, r); }
  static inline R loadu_part(const float* p, int n) { return _mm512_maskz_loadu_ps(m(n), p); }
  static inline void storeu_part(float* p, R r, int n) { _mm512_mask_storeu_ps(p, m(n), r); }
  static inline R add(R a, R b) { return _mm512_add_ps(a, b); }
  static inline R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static inline R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static inline R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static inline R max(R a, R b) { return _mm512_max_ps(a, b); }
  static inline R rounded(R a) {
    __asm__("" : "+v"(a));  // an empty asm the value passes through: opaque to the optimizer, no instruction
    return a;
  }
  static inline float reduce_add(R a) { return _mm512_reduce_add_ps(a); }
  static inline float reduce_max(R a) { return _mm512_reduce_max_ps(a); }
  // e^r for r = x - n ln2 (Cody-Waite, two parts of ln2), |r| <= ln2 / 2: the polynomial both exps share.
  static inline R exp_reduced(R x, R n) {
    R r = _mm512_fnmadd_ps(n, _mm512_set1_ps(OMNI_LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(OMNI_LN2_LO), r);
    R p = _mm512_set1_ps(OMNI_EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(OMNI_EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(OMNI_EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(OMNI_EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(OMNI_EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(OMNI_EXP_P5));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
    return p;
  }
  static inline R exp(R x0) {
    const __mmask16 tiny = _mm512_cmp_ps_mask(x0, _mm512_set1_ps(OMNI_EXP_LO), _CMP_LT_OQ);  // also -inf
    const __mmask16 big = _mm512_cmp_ps_mask(x0, _mm512_set1_ps(OMNI_EXP_HI), _CMP_GT_OQ);   // also +inf
    const __mmask16 nan = _mm512_cmp_ps_mask(x0, x0, _CMP_UNORD_Q);
    R x = _mm512_min_ps(x0, _mm512_set1_ps(OMNI_EXP_HI));
    x = _mm512_max_ps(x, _mm512_set1_ps(OMNI_EXP_LO));
    R n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(OMNI_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const R p = exp_reduced(x, n);
    // 2^n = 2^n1 · 2^n2 (n1 = n >> 1): n reaches 128 just below ln(FLT_MAX), one past the exponent field.
    const __m512i ni = _mm512_cvtps_epi32(n), n1 = _mm512_srai_epi32(ni, 1), n2 = _mm512_sub_epi32(ni, n1);
    const __m512i e1 = _mm512_slli_epi32(_mm512_add_epi32(n1, _mm512_set1_epi32(127)), 23);
    const __m512i e2 = _mm512_slli_epi32(_mm512_add_epi32(n2, _mm512_set1_epi32(127)), 23);
    R y = _mm512_mul_ps(_mm512_mul_ps(p, _mm512_castsi512_ps(e1)), _mm512_castsi512_ps(e2));
    y = _mm512_mask_blend_ps(tiny, y, _mm512_setzero_ps());
    y = _mm512_mask_blend_ps(big, y, _mm512_set1_ps(INFINITY));
    return _mm512_mask_blend_ps(nan, y, x0);
  }
  static inline R exp_nonpos(R x0) {
    // x >= -88: n >= -127, whose 2^n (exponent field 0) is 0. (A NaN x0 is kept: maxps returns it.)
    const R x = _mm512_max_ps(_mm512_set1_ps(-88.f), x0);
    // t = x log2(e) + 1.5 * 2^23 + 127 rounds to an integer: n = t - magic, and the low bits of t are n + 127
    const R magic = _mm512_set1_ps(12582912.f + 127.f);
    const R t = _mm512_fmadd_ps(x, _mm512_set1_ps(OMNI_LOG2E), magic), n = _mm512_sub_ps(t, magic);
    const R p = exp_reduced(x, n);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(t), 23)));  // p 2^n
  }
  static inline R load_bf16(const uint16_t* p) {
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  }
  static inline R load_bf16_part(const uint16_t* p, int n) {
    __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m(n), p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  }
  // out[j][i] = p[i * stride + j] for rows i < rows, columns j < cols (zero elsewhere): a 16 x 16 block
  // read row by row (contiguous) and transposed in registers (4 rounds of unpack/shuffle).
  static inline void load_cols(const float* p, int64_t stride, int rows, int cols, R* out) {
    R r[16];
    for (int i = 0; i < 16; ++i) r[i] = i < rows ? _mm512_maskz_loadu_ps(m(cols), p + i * stride) : zero();
    R t[16];
    for (int i = 0; i < 16; i += 2) {
      t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
      r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
      r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
      r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
      r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; ++i) {
      t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
      t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);
      t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
      t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
    }
    for (int i = 0; i < 4; ++i) {
      out[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
      out[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
      out[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
      out[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xDD);
    }
  }
};
OMNI_ISA_END

OMNI_ISA_BEGIN(avx2)
struct V {
  static constexpr int N = 8;
  using R = __m256;
  static inline __m256i m(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static inline R zero() { return _mm256_setzero_ps(); }
  static inline R set1(float x) { return _mm256_set1_ps(x); }
  static inline R load(const float* p) { return _mm256_loadu_ps(p); }
  static inline R loadu(const float* p) { return _mm256_loadu_ps(p); }
  static inline void storeu(float* p, R r) { _mm256_storeu_ps(p, r); }
  static inline R loadu_part(const float* p, int n) { return _mm256_maskload_ps(p, m(n)); }
  static inline void storeu_part(float* p, R r, int n) { _mm256_maskstore_ps(p, m(n), r); }
  static inline R add(R a, R b) { return _mm256_add_ps(a, b); }
  static inline R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static inline R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static inline R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static inline R max(R a, R b) { return _mm256_max_ps(a, b); }
  static inline R rounded(R a) {
    __asm__("" : "+x"(a));  // an empty asm the value passes through: opaque to the optimizer, no instruction
    return a;
  }
  static inline float reduce_add(R a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static inline float reduce_max(R a) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  // e^r for r = x - n ln2 (Cody-Waite, two parts of ln2), |r| <= ln2 / 2: the polynomial both exps share.
  static inline R exp_reduced(R x, R n) {
    R r = _mm256_fnmadd_ps(n, _mm256_set1_ps(OMNI_LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(OMNI_LN2_LO), r);
    R p = _mm256_set1_ps(OMNI_EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(OMNI_EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(OMNI_EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(OMNI_EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(OMNI_EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(OMNI_EXP_P5));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
    return p;
  }
  static inline R exp(R x0) {
    const R tiny = _mm256_cmp_ps(x0, _mm256_set1_ps(OMNI_EXP_LO), _CMP_LT_OQ);  // also -inf
    const R big = _mm256_cmp_ps(x0, _mm256_set1_ps(OMNI_EXP_HI), _CMP_GT_OQ);   // also +inf
    const R nan = _mm256_cmp_ps(x0, x0, _CMP_UNORD_Q);
    R x = _mm256_min_ps(x0, _mm256_set1_ps(OMNI_EXP_HI));
    x = _mm256_max_ps(x, _mm256_set1_ps(OMNI_EXP_LO));
    R n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(OMNI_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const R p = exp_reduced(x, n);
    const __m256i ni = _mm256_cvtps_epi32(n), n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256i e1 = _mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23);
    const __m256i e2 = _mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23);
    R y = _mm256_mul_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e1)), _mm256_castsi256_ps(e2));
    y = _mm256_andnot_ps(tiny, y);
    y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), big);
    return _mm256_blendv_ps(y, x0, nan);
  }
  static inline R exp_nonpos(R x0) {
    // x >= -88: n >= -127, whose 2^n (exponent field 0) is 0. (A NaN x0 is kept: maxps returns it.)
    const R x = _mm256_max_ps(_mm256_set1_ps(-88.f), x0);
    // t = x log2(e) + 1.5 * 2^23 + 127 rounds to an integer: n = t - magic, and the low bits of t are n + 127
    const R magic = _mm256_set1_ps(12582912.f + 127.f);
    const R t = _mm256_fmadd_ps(x, _mm256_set1_ps(OMNI_LOG2E), magic), n = _mm256_sub_ps(t, magic);
    const R p = exp_reduced(x, n);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t), 23)));  // p 2^n
  }
  static inline R load_bf16(const uint16_t* p) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
  static inline R load_bf16_part(const uint16_t* p, int n) {
    alignas(16) uint16_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < n && i < 8; ++i) tmp[i] = p[i];
    return load_bf16(tmp);
  }
  static inline void load_cols(const float* p, int64_t stride, int rows, int cols, R* out) {
    R r[8];
    for (int i = 0; i < 8; ++i) r[i] = i < rows ? loadu_part(p + i * stride, cols) : zero();
    R t[8];
    for (int i = 0; i < 8; i += 2) {
      t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
      r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
      r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
      r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
      r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; ++i) {
      out[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
      out[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
    }
  }
};
OMNI_ISA_END
#endif  // OMNI_HAVE_X86_ISAS
