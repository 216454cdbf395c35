// Device-side helpers shared by the .cu files: element loads/stores in fp32, dtype dispatch,
// warp and block reductions, the tanh GELU.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include "backends/cuda/cuda_check.h"
#include "core/dtype.h"
#include "backends/cuda/kernels.h"

namespace pirt::cuda {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float ld(const float* p) { return *p; }
__device__ __forceinline__ float ld(const bf16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void st(float* p, float v) { *p = v; }
__device__ __forceinline__ void st(bf16* p, float v) { *p = __float2bfloat16(v); }  // nearest even

// Calls f(T{}) with T = float or bf16 for a float dtype; other dtypes are a caller bug.
template <class F>
void dispatch_float(DType t, F&& f) {
  switch (t) {
    case DType::F32: f(float{}); return;
    case DType::BF16: f(bf16{}); return;
    default: PIRT_CHECK(false, "CUDA backend: unsupported dtype %s", std::string(dtype_name(t)).c_str());
  }
}

// f(T1{}, T2{}, ...) for the float types of t1, t2, ...: one call instead of nested dispatch_float.
template <class F>
void dispatch_floats(F&& f) {
  f();
}
template <class F, class... Ts>
void dispatch_floats(F&& f, DType t, Ts... rest) {
  dispatch_float(t, [&](auto a) { dispatch_floats([&](auto... r) { f(a, r...); }, rest...); });
}

// v as it reads back after a store to T (one rounding to bf16; none for float).
template <class T>
__device__ __forceinline__ float ld_rounded(float v) {
  if constexpr (std::is_same_v<T, bf16>)
    return __bfloat162float(__float2bfloat16(v));
  else
    return v;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float part[32];
  __shared__ float total;
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // part[] may still be read by a previous call
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float t = lane < (int)(blockDim.x >> 5) ? part[lane] : 0.f;
    t = warp_sum(t);
    if (lane == 0) total = t;
  }
  __syncthreads();
  return total;
}

// VEC consecutive bf16 as one load / store.
template <int VEC>
struct BfVec;
template <>
struct BfVec<8> {
  using T = uint4;
};
template <>
struct BfVec<4> {
  using T = uint2;
};
template <>
struct BfVec<2> {
  using T = uint32_t;
};
template <>
struct BfVec<1> {
  using T = uint16_t;
};

// One row of the residual + RMSNorm after a k-split GEMM (small_gemm_partials' consumer kernel, the
// block tail's row phases): h = bf16(h + sum_s partials[s]) (splits added in order, then the
// residual), xn = rms_norm(h) * (1 + w) as rms_norm_kernel computes it from the bf16 h. The block's
// threads take VEC consecutive columns each: dim = VEC * blockDim.x; splits <= MAX_SPLITS. Every
// split's loads are issued before the first add (a loop over a run-time count issued them one by one),
// through L2 (__ldcg): in the block tail other blocks of the same launch wrote them.
// pi0.5's adaRMS variant (gate and shift set, w the scale): h = bf16(h + bf16(sum) * gate) as
// gated_residual computes it from the stored GEMM output, xn = rms_norm(h) * (1 + w) + shift.
template <int VEC, int MAX_SPLITS, class TW>
__device__ __forceinline__ void residual_rms_norm_row(const float* partials, int splits, int64_t split_stride,
                                                      bf16* h, const TW* w, bf16* xn, int64_t row, int dim,
                                                      float eps, const float* gate = nullptr,
                                                      const float* shift = nullptr) {
  using V = typename BfVec<VEC>::T;
  const int c = threadIdx.x * VEC;
  const int64_t off = row * dim + c;
  float part[MAX_SPLITS][VEC];
#pragma unroll
  for (int sp = 0; sp < MAX_SPLITS; ++sp) {
    if (sp >= splits) continue;  // (a break kept the loop rolled: part[] went to local memory)
    const float* src = partials + sp * split_stride + off;
    if constexpr (VEC % 4 == 0) {
#pragma unroll
      for (int q = 0; q < VEC / 4; ++q) {
        const float4 u = __ldcg(reinterpret_cast<const float4*>(src) + q);
        part[sp][4 * q] = u.x, part[sp][4 * q + 1] = u.y, part[sp][4 * q + 2] = u.z, part[sp][4 * q + 3] = u.w;
      }
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) part[sp][e] = __ldcg(src + e);
    }
  }
  float acc[VEC];
#pragma unroll
  for (int e = 0; e < VEC; ++e) {
    acc[e] = 0.f;
#pragma unroll
    for (int sp = 0; sp < MAX_SPLITS; ++sp)
      if (sp < splits) acc[e] += part[sp][e];
  }
  V hv = *reinterpret_cast<const V*>(h + off);
  bf16* he = reinterpret_cast<bf16*>(&hv);
  float v[VEC], ss = 0.f;
#pragma unroll
  for (int e = 0; e < VEC; ++e) {
    if (gate)
      he[e] = __float2bfloat16(__bfloat162float(he[e]) + ld_rounded<bf16>(acc[e]) * gate[c + e]);
    else
      he[e] = __float2bfloat16(acc[e] + __bfloat162float(he[e]));
    v[e] = __bfloat162float(he[e]);
    ss += v[e] * v[e];
  }
  *reinterpret_cast<V*>(h + off) = hv;
  const float r = rsqrtf(block_sum(ss) / (float)dim + eps);
  V ov;
  bf16* oe = reinterpret_cast<bf16*>(&ov);
#pragma unroll
  for (int e = 0; e < VEC; ++e)
    oe[e] = shift ? __float2bfloat16(v[e] * r * (1.f + ld(&w[c + e])) + shift[c + e])
                  : __float2bfloat16(v[e] * r * (1.f + ld(&w[c + e])));
  *reinterpret_cast<V*>(xn + off) = ov;
}

// Grid barrier over all blocks of a cooperative launch, on one 64-bit counter that only grows (one
// counter per kernel): every block adds 1 (release) and waits until the counter reaches its next
// multiple of the grid size (acquire): one round trip to L2 each way, no last-arriver hop and no
// reset. Every launch of a kernel arrives the same number of times a block (`per_block`), so a
// launch's base is the counter at its start rounded down to a multiple of per_block * grid (no block
// of this launch can have passed its first barrier yet). Thread 0 reads it; the others' copy is unused.
__device__ __forceinline__ unsigned long long grid_barrier_base(const unsigned long long* ctr, int per_block) {
  unsigned long long v;
  asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];\n" : "=l"(v) : "l"(ctr) : "memory");
  const unsigned long long per_launch = (unsigned long long)per_block * gridDim.x;
  return v - v % per_launch;
}

// Arrives, and waits for every block unless `wait` is false (a launch's last arrival). The block's
// writes are ordered before the release by __syncthreads (CTA scope) and the release's cumulativity,
// as in CUTLASS's GenericBarrier; a full __threadfence() in front of it cost ~0.4 us a barrier on the
// H100 (kernel_bench --block-tail, 39.7 -> 37.9 us a layer over five barriers). Data other blocks
// wrote before the barrier is read through L2 (__ldcg, TMA), not L1.
__device__ __forceinline__ void grid_barrier(unsigned long long* ctr, unsigned long long& target, bool wait = true) {
  __syncthreads();
  if (threadIdx.x == 0) {
    target += gridDim.x;
    asm volatile("red.release.gpu.global.add.u64 [%0], 1;\n" ::"l"(ctr) : "memory");
    if (wait) {
      unsigned long long now;
      do {
        asm volatile("ld.acquire.gpu.global.u64 %0, [%1];\n" : "=l"(now) : "l"(ctr) : "memory");
      } while (now < target);
    }
  }
  __syncthreads();
}

// kernel_bench's phase timelines: block b's globaltimer at point k of n (timing null: nothing).
__device__ __forceinline__ void stamp(unsigned long long* timing, int n, int k) {
  if (timing && threadIdx.x == 0) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t));
    timing[blockIdx.x * n + k] = t;
  }
}

// silu(v) = v * sigmoid(v), in fp32 as x / (1 + exp(-x)) (the CPU oracle's formula).
__device__ __forceinline__ float silu_f32(float v) { return v / (1.f + expf(-v)); }

// gelu with the tanh approximation, in fp32 (jax.nn.gelu(approximate=True), gelu_pytorch_tanh).
__device__ __forceinline__ float gelu_tanh(float x) {
  const float c = 0.7978845608028654f;  // sqrt(2/pi)
  return 0.5f * x * (1.f + tanhf(c * (x + 0.044715f * x * x * x)));
}

// RoPE's angle for pair (i, i + head_dim / 2) at position pos, in fp32 (theta 10000; ops.h qkv_rope).
__device__ __forceinline__ void rope_sincos(int pos, int i, int head_dim, float* s, float* c) {
  const float timescale = powf(10000.f, (2.f * (float)i) / (float)head_dim);
  sincosf((float)pos / timescale, s, c);
}

// Programmatic dependent launch (sm_90): kernels launched with launch() may start while the kernel
// before them in the stream is still running. Each such kernel calls pdl_wait() before it touches
// memory an earlier kernel writes or reads (everything except weights), and pdl_trigger() once all of
// its blocks are running so the next kernel can be scheduled. Both are no-ops before sm_90 and in a
// kernel launched without the attribute.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Launches kernel<<<grid, block, smem, s>>>(args...), with programmatic stream serialization when
// `pdl` and, when `cluster` has more than one block, as thread-block clusters of that shape.
template <class... KArgs, class... Args>
void launch_pdl(bool pdl, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, dim3 cluster,
                Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[2];
  int n = 0;
  if (pdl) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  if (cluster.x * cluster.y * cluster.z > 1) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = cluster.x;
    attr[n].val.clusterDim.y = cluster.y;
    attr[n].val.clusterDim.z = cluster.z;
    ++n;
  }
  cfg.attrs = attr;
  cfg.numAttrs = n;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

// The same, with programmatic stream serialization when pdl_enabled() (kernels.h).
template <class... KArgs, class... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, dim3 cluster,
            Args&&... args) {
  launch_pdl(pdl_enabled(), kernel, grid, block, smem, s, cluster, std::forward<Args>(args)...);
}

// Launches a persistent kernel (grid barriers: common.cuh grid_barrier) as a cooperative launch of
// `grid` blocks, which fails instead of deadlocking when they cannot all be resident; `pdl`: also a
// programmatic dependent of the kernel before it. The kernel's dynamic shared memory limit is raised
// to `smem` on the first call.
template <class KArg>
void launch_cooperative(void (*kernel)(KArg), int grid, int threads, size_t smem, cudaStream_t s, const KArg& arg,
                        bool pdl = false) {
  static bool attr_set = false;  // (one flag per kernel signature: every persistent kernel has its own)
  if (!attr_set) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    attr_set = true;
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(grid);
  cfg.blockDim = dim3(threads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeCooperative;
  attr[0].val.cooperative = 1;
  attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[1].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 2 : 1;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, arg));
}

inline unsigned blocks_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65535LL * 32 ? 65535LL * 32 : b));
}

}  // namespace pirt::cuda
