// The merge of an attention's key splits inside a thread-block cluster, shared by the split kernels
// of attention.cu (mma.sync) and attention_wgmma.cu (wgmma).
#pragma once

#include <cooperative_groups.h>

#include <type_traits>

#include "backends/cuda/common.cuh"
#include "backends/cuda/mma.cuh"

namespace pirt::cuda {

constexpr int kMaxMergeSplits = 16;  // a non-portable cluster size (sm_90)

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
// The cs blocks of a cluster are the key splits of one query tile. Each has left in its shared memory
// its unnormalised O (ROWS rows of `ostride` elements of T at `ob`: fp32, or bf16 to halve what
// crosses between the blocks) and each row's running (max, sum) in ml[row]. Block `rank` finishes
// the column groups of G (4 for fp32, 8 for bf16: one 16-byte load a split) [rank, rank + 1) * DH / G
// / cs of every row through DSMEM: sum_s w_s O_s with w_s = exp2(m_s - m) / sum_s l_s exp2(m_s - m),
// rounded to bf16 at out(row) + column; out(row) null: a padding row; columns at or past dh are
// skipped (dh % G == 0). wts: ROWS x MAXS (>= cs) floats of scratch. Starts with a cluster barrier
// (the partials written) and ends with one (no block may leave while the others still read its
// shared memory).
template <int ROWS, int DH, int NT, int MAXS = kMaxMergeSplits, class T, class Out>
__device__ void cluster_merge(const T* ob, int ostride, const float (*ml)[2], float (*wts)[MAXS], int dh, Out out) {
  constexpr bool kBf16 = std::is_same_v<T, bf16>;
  constexpr int G = kBf16 ? 8 : 4;
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();
  const int cs = static_cast<int>(cluster.num_blocks()), rank = static_cast<int>(cluster.block_rank());
  if (threadIdx.x < ROWS) {  // row threadIdx.x's weight of each split
    const int rl = threadIdx.x;
    float ms[MAXS], ls[MAXS], mx = -INFINITY;
#pragma unroll
    for (int sp = 0; sp < MAXS; ++sp) {
      ms[sp] = -INFINITY, ls[sp] = 0.f;
      if (sp < cs) {
        const float2 r = *cluster.map_shared_rank(reinterpret_cast<const float2*>(&ml[rl][0]), sp);
        ms[sp] = r.x, ls[sp] = r.y;
        mx = fmaxf(mx, ms[sp]);
      }
    }
    const float m_use = mx == -INFINITY ? 0.f : mx;
    float total = 0.f;
#pragma unroll
    for (int sp = 0; sp < MAXS; ++sp) total += ls[sp] * exp2f(ms[sp] - m_use);
    const float inv = total > 0.f ? 1.f / total : 0.f;
#pragma unroll
    for (int sp = 0; sp < MAXS; ++sp) wts[rl][sp] = exp2f(ms[sp] - m_use) * inv;
  }
  __syncthreads();
  const int cg_begin = rank * (DH / G) / cs, cg_end = (rank + 1) * (DH / G) / cs, width = cg_end - cg_begin;
  for (int idx = threadIdx.x; idx < ROWS * width; idx += NT) {
    const int rl = idx / width, c = (cg_begin + idx % width) * G;
    bf16* dst = out(rl);
    if (!dst || c >= dh) continue;
    if constexpr (kBf16) {
      uint4 v[MAXS];
#pragma unroll
      for (int sp = 0; sp < MAXS; ++sp)
        if (sp < cs) v[sp] = *reinterpret_cast<const uint4*>(cluster.map_shared_rank(ob + rl * ostride + c, sp));
      float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int sp = 0; sp < MAXS; ++sp)
        if (sp < cs) {
          const float w = wts[rl][sp];
          const bf16* e = reinterpret_cast<const bf16*>(&v[sp]);
#pragma unroll
          for (int q = 0; q < 8; ++q) acc[q] += w * __bfloat162float(e[q]);
        }
#pragma unroll
      for (int q = 0; q < 8; q += 2)  // (the output is only 4-byte aligned: attention_wgmma_supported)
        *reinterpret_cast<uint32_t*>(dst + c + q) = pack_bf16x2(acc[q], acc[q + 1]);
    } else {
      float4 v[MAXS];
#pragma unroll
      for (int sp = 0; sp < MAXS; ++sp)
        if (sp < cs) v[sp] = *reinterpret_cast<const float4*>(cluster.map_shared_rank(ob + rl * ostride + c, sp));
      float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
      for (int sp = 0; sp < MAXS; ++sp)
        if (sp < cs) {
          const float w = wts[rl][sp];
          acc.x += w * v[sp].x, acc.y += w * v[sp].y, acc.z += w * v[sp].z, acc.w += w * v[sp].w;
        }
      *reinterpret_cast<uint32_t*>(dst + c) = pack_bf16x2(acc.x, acc.y);  // (dh % 8 == 0: all 4 columns are in)
      *reinterpret_cast<uint32_t*>(dst + c + 2) = pack_bf16x2(acc.z, acc.w);
    }
  }
  cluster.sync();
}
#endif

// Whether the device runs `kernel` (`threads` a block, `smem` bytes of dynamic shared memory) as
// clusters of kMaxMergeSplits blocks along z, at least 4 at once: a non-portable size, sm_90 only.
// Sets the kernel's shared-memory limit and its non-portable-cluster attribute on the way.
template <class Kernel>
bool big_merge_clusters_ok(Kernel kernel, int threads, size_t smem) {
  int dev = 0, major = 0, n = 0;
  bool ok = cudaGetDevice(&dev) == cudaSuccess &&
            cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major >= 9 &&
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) == cudaSuccess &&
            cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess;
  if (ok) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(1, 1, kMaxMergeSplits);
    cfg.blockDim = dim3(threads);
    cfg.dynamicSmemBytes = smem;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = 1;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = kMaxMergeSplits;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    ok = cudaOccupancyMaxActiveClusters(&n, kernel, &cfg) == cudaSuccess && n >= 4;
  }
  cudaGetLastError();  // clear a failed query
  return ok;
}

}  // namespace pirt::cuda
