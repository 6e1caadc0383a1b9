// attention.cu -- flash-style attention on an NVIDIA GPU (float32), same contract as ../attention.h.
//
// One warp per query row, 8 rows per block. The block walks the keys in tiles of 32 staged in shared memory
// (k and v of the row's kv head; the 8 rows of a block belong to one query head, so they share the tiles).
// Lane l owns dims l, l+32, ... of the row: a score is a warp-wide sum of the lanes' partial dots
// (shuffle reduction), and the online softmax (running max m, sum l, rescaled accumulator) follows FlashAttention.
#include <cuda_runtime.h>
#include <math.h>
#include "kernels.cuh"

namespace omni_cuda {
namespace {
constexpr int ROWS = 8, BKT = 32, MAXD = 256, PER = MAXD / 32;

__global__ void attention_kernel(const float* __restrict__ q, const float* __restrict__ k,
                                 const float* __restrict__ v, float* __restrict__ out, int Hq, int Hkv, int Lq,
                                 int Lk, int D, bool causal, int window, const long long* __restrict__ seg,
                                 const unsigned char* __restrict__ mask, float scale) {
  extern __shared__ float sh[];  // ks [BKT][D], vs [BKT][D]
  float* ks = sh;
  float* vs = sh + BKT * D;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int h = blockIdx.y, i = blockIdx.x * ROWS + warp, kh = h / (Hq / Hkv);
  const bool active = i < Lq;
  const long long p = (long long)Lk - Lq + i;
  float qr[PER], o[PER];
  for (int t = 0; t < PER; ++t) {
    int d = lane + 32 * t;
    qr[t] = (active && d < D) ? q[((size_t)h * Lq + i) * D + d] : 0.f;
    o[t] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  const long long last_row = (long long)Lk - Lq + min(Lq - 1, (int)blockIdx.x * ROWS + ROWS - 1);
  const int jend = causal ? (int)min((long long)Lk, last_row + 1) : Lk;
  for (int j0 = 0; j0 < jend; j0 += BKT) {
    const int bk = min(BKT, jend - j0);
    for (int e = threadIdx.x; e < bk * D; e += blockDim.x) {
      ks[e] = k[((size_t)kh * Lk + j0) * D + e];
      vs[e] = v[((size_t)kh * Lk + j0) * D + e];
    }
    __syncthreads();
    if (active) {
      for (int j = 0; j < bk; ++j) {
        const int key = j0 + j;
        bool ok = !(causal && key > p) && !(window > 0 && key <= p - window) && !(seg && seg[key] != seg[i]) &&
                  !(mask && !mask[(size_t)i * Lk + key]);
        if (!ok) continue;  // uniform across the warp: no divergence
        float s = 0.f;
        for (int t = 0; t < PER; ++t) {
          int d = lane + 32 * t;
          if (d < D) s += qr[t] * ks[j * D + d];
        }
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        s *= scale;
        const float mn = fmaxf(m, s), alpha = expf(m - mn), pj = expf(s - mn);
        l = l * alpha + pj;
        for (int t = 0; t < PER; ++t) {
          int d = lane + 32 * t;
          if (d < D) o[t] = o[t] * alpha + pj * vs[j * D + d];
        }
        m = mn;
      }
    }
    __syncthreads();
  }
  if (active)
    for (int t = 0; t < PER; ++t) {
      int d = lane + 32 * t;
      if (d < D) out[((size_t)h * Lq + i) * D + d] = l > 0.f ? o[t] / l : 0.f;
    }
}
}  // namespace

std::string attention(const float* q, const float* k, const float* v, float* out, int64_t Hq, int64_t Hkv,
                      int64_t Lq, int64_t Lk, int64_t D, bool causal, int64_t window, const int64_t* seg,
                      const uint8_t* mask, float scale, float* ms) {
  if (D > MAXD) return "CUDA attention supports head dim <= 256";
  const size_t nq = Hq * Lq * D, nk = Hkv * Lk * D;
  float *dq = nullptr, *dk = nullptr, *dv = nullptr, *dout = nullptr;
  long long* dseg = nullptr;
  unsigned char* dmask = nullptr;
  cudaError_t err = cudaSuccess;
  auto chk = [&](cudaError_t e) { if (err == cudaSuccess) err = e; };
  chk(cudaMalloc(&dq, sizeof(float) * nq + 4));
  chk(cudaMalloc(&dk, sizeof(float) * nk + 4));
  chk(cudaMalloc(&dv, sizeof(float) * nk + 4));
  chk(cudaMalloc(&dout, sizeof(float) * nq + 4));
  chk(cudaMemcpy(dq, q, sizeof(float) * nq, cudaMemcpyHostToDevice));
  chk(cudaMemcpy(dk, k, sizeof(float) * nk, cudaMemcpyHostToDevice));
  chk(cudaMemcpy(dv, v, sizeof(float) * nk, cudaMemcpyHostToDevice));
  if (seg) {
    chk(cudaMalloc(&dseg, sizeof(long long) * Lq));
    chk(cudaMemcpy(dseg, seg, sizeof(long long) * Lq, cudaMemcpyHostToDevice));
  }
  if (mask) {
    chk(cudaMalloc(&dmask, Lq * Lk + 1));
    chk(cudaMemcpy(dmask, mask, Lq * Lk, cudaMemcpyHostToDevice));
  }
  cudaEvent_t e0, e1;
  chk(cudaEventCreate(&e0));
  chk(cudaEventCreate(&e1));
  if (err == cudaSuccess && nq > 0) {
    const size_t shmem = sizeof(float) * 2 * BKT * D;
    cudaEventRecord(e0);
    attention_kernel<<<dim3((Lq + ROWS - 1) / ROWS, Hq), ROWS * 32, shmem>>>(
        dq, dk, dv, dout, int(Hq), int(Hkv), int(Lq), int(Lk), int(D), causal, int(window), dseg, dmask, scale);
    chk(cudaGetLastError());
    cudaEventRecord(e1);
    chk(cudaEventSynchronize(e1));
    if (ms) cudaEventElapsedTime(ms, e0, e1);
  }
  chk(cudaMemcpy(out, dout, sizeof(float) * nq, cudaMemcpyDeviceToHost));
  cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dout);
  if (dseg) cudaFree(dseg);
  if (dmask) cudaFree(dmask);
  cudaEventDestroy(e0); cudaEventDestroy(e1);
  return err == cudaSuccess ? std::string() : std::string(cudaGetErrorString(err));
}
}  // namespace omni_cuda
