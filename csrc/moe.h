// moe.h -- fused sparse mixture-of-experts feed-forward (the Thinker's and the Talker's routed experts).
//
// Legend: L tokens, H hidden, k slots per token (num_experts_per_tok), U experts that some token chose (local
// ids 0..U-1, in ascending checkpoint expert id), I_u the width of expert u.
//
//   out[t, :] = Σ_{j < k}  mix[t, j] · down_u( silu(gate_u · x[t]) ⊙ (up_u · x[t]) ),   u = local[t, j]
//
// with the terms added in ascending u (= ascending expert id), like the NumPy loop over experts.
//   x [L, H] float32 row-major; local [L, k] int64 in [0, U), no repeats within a row; mix [L, k] float32;
//   gate[u], up[u] [I_u, H] and down[u] [H, I_u] row-major, float32 or bfloat16 bits (uint16), all of one kind;
//   out [L, H] float32 (written, never read).
// Only the U experts passed are read: the router's unchosen experts never reach this code.
// moe.cpp runs the fast kernel (moe_kernels.inc) for the selected instruction set, or the scalar reference
// `naive` beside it (naive=True); its Python entry point validates shapes and ranges, the kernels trust them.
#pragma once
#include <cstdint>

namespace omni {
template <class WT>
struct MoeCall {
  const float* x;          // [L, H]
  const int64_t* local;    // [L, k]
  const float* mix;        // [L, k]
  const WT* const* gate;   // U pointers, each [I_u, H]
  const WT* const* up;     // U pointers, each [I_u, H]
  const WT* const* down;   // U pointers, each [H, I_u]
  const int64_t* inter;    // [U] I_u
  // Optional pre-packed float32 weights (omni::pack_weight_f32 layout of the current instruction set): null,
  // or 3·U pointers (gate, up, down of expert u at 3u .. 3u+2), each null or packed. Used for experts with
  // more than a few tokens, which then skip packing their weights (float32 only).
  const float* const* packed;
  float* out;              // [L, H]
  int64_t L, H, k, U;
};
}  // namespace omni
