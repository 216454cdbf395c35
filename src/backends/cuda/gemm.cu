// GEMM helpers around cuBLASLt: an fp32 epilogue kernel (for combinations that cuBLASLt's fused
// epilogues cannot express) and a plain tiled GEMM for dtype combinations it has no kernel for.
#include <atomic>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace pirt::cuda {
namespace {

template <class TB, class TR, class TO>
__global__ void epilogue_kernel(const float* __restrict__ acc, const TB* __restrict__ bias, bool gelu,
                                const TR* residual, TO* out, int64_t m, int64_t n) {
  pdl_wait();
  pdl_trigger();
  const int64_t total = m * n;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    float v = acc[i];
    if (bias) v += ld(&bias[i % n]);
    if (gelu) v = gelu_tanh(v);
    if (residual) v += ld(&residual[i]);
    st(&out[i], v);
  }
}

// 16x16 threads, each one output; k in tiles of 16 through shared memory.
template <class TX, class TW>
__global__ void simple_gemm_kernel(const TX* __restrict__ x, const TW* __restrict__ w, float* __restrict__ acc,
                                   int64_t m, int64_t n, int64_t k) {
  pdl_wait();
  pdl_trigger();
  __shared__ float xs[16][17];
  __shared__ float ws[16][17];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t row = blockIdx.y * 16 + ty, col = blockIdx.x * 16 + tx;
  float sum = 0.f;
  for (int64_t k0 = 0; k0 < k; k0 += 16) {
    const int64_t xr = blockIdx.y * 16 + ty, wr = blockIdx.x * 16 + ty;
    xs[ty][tx] = (xr < m && k0 + tx < k) ? ld(&x[xr * k + k0 + tx]) : 0.f;
    ws[ty][tx] = (wr < n && k0 + tx < k) ? ld(&w[wr * k + k0 + tx]) : 0.f;
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 16; ++i) sum += xs[ty][i] * ws[tx][i];
    __syncthreads();
  }
  if (row < m && col < n) acc[row * n + col] = sum;
}

}  // namespace

void linear_epilogue(const float* acc, const void* bias, DType bt, Epilogue ep, const void* residual, DType rt,
                     void* out, DType ot, int64_t m, int64_t n, cudaStream_t s) {
  if (m * n == 0) return;
  dispatch_floats([&](auto a, auto b, auto c) {
    using TB = decltype(a);
    using TR = decltype(b);
    using TO = decltype(c);
    launch(epilogue_kernel<TB, TR, TO>, dim3(blocks_for(m * n, 256)), dim3(256), 0, s, 1, acc,
           static_cast<const TB*>(bias), ep == Epilogue::GeluTanh, static_cast<const TR*>(residual),
           static_cast<TO*>(out), m, n);
  }, bt, rt, ot);
  CUDA_CHECK_LAUNCH();
}

void simple_gemm(const void* x, DType xt, const void* w, DType wt, float* acc, int64_t m, int64_t n, int64_t k,
                 cudaStream_t s) {
  if (m * n == 0) return;
  dispatch_floats([&](auto a, auto b) {
    using TX = decltype(a);
    using TW = decltype(b);
    dim3 grid(static_cast<unsigned>((n + 15) / 16), static_cast<unsigned>((m + 15) / 16));
    launch(simple_gemm_kernel<TX, TW>, dim3(grid), dim3(dim3(16, 16)), 0, s, 1, static_cast<const TX*>(x),
           static_cast<const TW*>(w), acc, m, n, k);
  }, xt, wt);
  CUDA_CHECK_LAUNCH();
}

}  // namespace pirt::cuda

namespace pirt::cuda {
namespace {
std::atomic<bool> g_pdl{false};
}  // namespace
bool pdl_enabled() { return g_pdl.load(std::memory_order_relaxed); }
void set_pdl_enabled(bool on) { g_pdl.store(on, std::memory_order_relaxed); }
}  // namespace pirt::cuda
