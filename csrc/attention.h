// attention.h -- scaled dot-product attention with GQA and the masks the model needs.
//   q [Hq, Lq, D], k/v [Hkv, Lk, D] row-major float32, Hq % Hkv == 0 (query head h uses kv head h / (Hq/Hkv)).
//   k/v heads may lie ks / vs floats apart (>= Lk*D): a KV cache's [Hkv, capacity, D] buffer sliced to
//   [:, :Lk] is read in place, without a copy.
//   causal: query i is at absolute position p = Lk - Lq + i and sees keys j <= p.
//   window > 0: additionally only keys j > p - window (sliding window, Code2Wav).
//   seg [L] (needs Lq == Lk): query i sees key j only if seg[i] == seg[j] (block-diagonal, cu_seqlens).
//   mask [Lq, Lk] uint8: 1 = may attend.   out [Hq, Lq, D] = softmax(scale * q k^T + masks) v.
// A row that may see no key at all is 0. Callers validate shapes; these functions trust them.
#pragma once
#include <cstdint>

namespace omni {
struct AttentionCall {
  const float *q, *k, *v;
  float* out;
  int64_t Hq, Hkv, Lq, Lk, D;
  bool causal;
  int64_t window;        // 0 = none; else key j visible from position p iff p - window < j
  const int64_t* seg;    // [L] block ids or null (then Lq == Lk)
  const uint8_t* mask;   // [Lq, Lk] 1 = may attend, or null
  float scale;
  int64_t ks, vs;        // floats from one kv head to the next in k / v (>= Lk * D; a KV cache's capacity * D)
};
void attention(const AttentionCall& c);        // flash-style, fastest instruction set
void attention_naive(const AttentionCall& c);  // full score row per query, the reference
}  // namespace omni
