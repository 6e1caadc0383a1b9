// gemm.cu -- y[M, N] = x[M, K] @ W[N, K]^T + bias[N] on an NVIDIA GPU (float32).
//
// linear_tiled: each 256-thread block computes a 64 x 64 tile of y; x and W tiles of 64 x 16 are staged in
// shared memory (W stored transposed so both reads are conflict-free), every thread accumulates a 4 x 4
// register block over k. linear_naive: one thread per output, the reference the tiled kernel is checked
// against (and the fallback for tiny shapes).
#include <cuda_runtime.h>
#include "kernels.cuh"

namespace omni_cuda {
namespace {
constexpr int TM = 64, TN = 64, TK = 16;

__global__ void linear_naive(const float* x, const float* W, const float* b, float* y, int M, int N, int K) {
  int n = blockIdx.x * blockDim.x + threadIdx.x, m = blockIdx.y;
  if (n >= N || m >= M) return;
  float s = 0.f;
  for (int k = 0; k < K; ++k) s += x[(size_t)m * K + k] * W[(size_t)n * K + k];
  y[(size_t)m * N + n] = s + (b ? b[n] : 0.f);
}

__global__ void __launch_bounds__(256) linear_tiled(const float* __restrict__ x, const float* __restrict__ W,
                                                    const float* __restrict__ b, float* __restrict__ y, int M,
                                                    int N, int K) {
  __shared__ float xs[TK][TM + 4];  // [k][m]
  __shared__ float ws[TK][TN + 4];  // [k][n]
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;  // 16 x 16 threads, 4 x 4 outputs each
  const int m0 = blockIdx.y * TM, n0 = blockIdx.x * TN;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < K; k0 += TK) {
    for (int i = threadIdx.x; i < TM * TK; i += 256) {  // load x[m0:m0+64, k0:k0+16] and W alike, transposed
      int r = i / TK, c = i % TK;
      xs[c][r] = (m0 + r < M && k0 + c < K) ? x[(size_t)(m0 + r) * K + k0 + c] : 0.f;
      ws[c][r] = (n0 + r < N && k0 + c < K) ? W[(size_t)(n0 + r) * K + k0 + c] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < TK; ++k) {
      float a[4], w[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) { a[i] = xs[k][ty * 4 + i]; w[i] = ws[k][tx * 4 + i]; }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], w[j], acc[i][j]);
    }
    __syncthreads();
  }
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      int m = m0 + ty * 4 + i, n = n0 + tx * 4 + j;
      if (m < M && n < N) y[(size_t)m * N + n] = acc[i][j] + (b ? b[n] : 0.f);
    }
}
}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

std::string linear(const float* x, const float* W, const float* bias, float* y, int64_t M, int64_t N, int64_t K,
                   bool naive, float* ms) {
  float *dx = nullptr, *dw = nullptr, *db = nullptr, *dy = nullptr;
  cudaEvent_t e0, e1;
  cudaError_t err = cudaSuccess;
  auto chk = [&](cudaError_t e) { if (err == cudaSuccess) err = e; };
  chk(cudaMalloc(&dx, sizeof(float) * M * K + 4));
  chk(cudaMalloc(&dw, sizeof(float) * N * K + 4));
  chk(cudaMalloc(&dy, sizeof(float) * M * N + 4));
  if (bias) chk(cudaMalloc(&db, sizeof(float) * N));
  chk(cudaMemcpy(dx, x, sizeof(float) * M * K, cudaMemcpyHostToDevice));
  chk(cudaMemcpy(dw, W, sizeof(float) * N * K, cudaMemcpyHostToDevice));
  if (bias) chk(cudaMemcpy(db, bias, sizeof(float) * N, cudaMemcpyHostToDevice));
  chk(cudaEventCreate(&e0));
  chk(cudaEventCreate(&e1));
  if (err == cudaSuccess && M > 0 && N > 0) {
    cudaEventRecord(e0);
    if (naive) linear_naive<<<dim3((N + 127) / 128, M), 128>>>(dx, dw, db, dy, int(M), int(N), int(K));
    else linear_tiled<<<dim3((N + TN - 1) / TN, (M + TM - 1) / TM), 256>>>(dx, dw, db, dy, int(M), int(N), int(K));
    chk(cudaGetLastError());
    cudaEventRecord(e1);
    chk(cudaEventSynchronize(e1));
    if (ms) cudaEventElapsedTime(ms, e0, e1);
  }
  chk(cudaMemcpy(y, dy, sizeof(float) * M * N, cudaMemcpyDeviceToHost));
  cudaFree(dx); cudaFree(dw); cudaFree(dy); if (db) cudaFree(db);
  cudaEventDestroy(e0); cudaEventDestroy(e1);
  return err == cudaSuccess ? std::string() : std::string(cudaGetErrorString(err));
}
}  // namespace omni_cuda
