// The weight-streaming bf16 GEMM for few rows (the action expert's steps: m = 51).
//
// out[m, n] = ep(sum_k x[m, k] w[n, k] + bias[n]) + residual[m, n], m <= 64.
//
// Each step of the action expert reads every weight once (0.62 GB a step) and does little arithmetic
// per byte, so the floor is HBM bandwidth. cuBLASLt streams these shapes at 0.56-2 TB/s (too few
// output tiles to fill 132 SMs; see shared/perf/cublaslt-h100.md). Here:
// - A block owns BN columns of n (rows of w) and a contiguous range of 64-wide k chunks; the plan
//   picks BN and the number of k splits so that every SM streams about the same number of bytes.
// - Weights and x flow through a cp.async pipeline in shared memory (16-byte copies into the
//   128-byte-swizzled layout wgmma reads; 96 KB, two blocks an SM). The math is wgmma m64nBNk16
//   (sm_90a): x is the 64-row A operand (rows past m unused), w the B operand; each of the two
//   warpgroups takes half of every chunk's k, so issuing the math costs a few instructions a chunk.
// - The k splits of one column tile are a thread-block cluster: each block leaves its fp32 partial
//   tiles in its shared memory and, after a cluster barrier, block r adds slice r of the tile over
//   all blocks through distributed shared memory, in a fixed order (deterministic), and applies the
//   epilogue (bias, GELU, residual; bf16 or f32 out). No workspace, no second kernel.
// - Programmatic dependent launch: the weight loads of the first stages are issued before waiting
//   for the previous kernel (weights never depend on it), so the pipeline fills during its tail.
#include <cooperative_groups.h>

#include <algorithm>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/mma.cuh"
#include "backends/cuda/wgmma.cuh"

namespace pirt::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBK = 64;  // k a chunk: 128 bytes a row, eight 16-byte pieces
constexpr int kMaxCluster = 8;
constexpr int kMaxPartialSplits = 16;

struct Params {
  const bf16* x;
  const bf16* w;
  const void* bias;
  const void* residual;
  void* out;
  int M, N, K;
  int nchunks;
  int bias_bf16, res_bf16, out_bf16;
  int gelu;
  float* partials;  // partials mode: fp32 [splits][M][N] sums, no reduction or epilogue (no cluster)
  int debug;        // kernel_bench's breakdown only (bits): 1 no reduction or epilogue, 2 no data wait,
                    // 4 stop after the first cluster barrier, 8 no epilogue loads or stores
};

// Pipeline depth: 96 KB of stages a block, so that two blocks fit an SM.
template <int BN>
constexpr int stages_for() {
  return BN >= 128 ? 4 : BN >= 64 ? 6 : 8;
}

// The partial tile's row stride in floats: padded so that the 8 rows a warp's fragment store touches
// fall in different banks.
template <int BN>
constexpr int red_stride() {
  return BN + 8;
}

template <int BN>
constexpr size_t smem_bytes() {
  constexpr size_t stage = (size_t)(BN + 64) * kBK * 2;
  constexpr size_t pipe = stage * stages_for<BN>();
  constexpr size_t red = (size_t)64 * red_stride<BN>() * 4;
  return (pipe > red ? pipe : red) + 1024;  // + alignment of the tiles to 1024 bytes (swizzle atoms)
}

#if !defined(__CUDA_ARCH__) || defined(__CUDA_ARCH_FEAT_SM90_ALL)  // used by the sm_90a kernel only
// Element offset of 16-byte piece j of row r in a swizzled [rows][64] bf16 tile.
__device__ __forceinline__ int swz(int r, int j) { return r * kBK + ((j ^ (r & 7)) << 3); }

__device__ __forceinline__ float ld_any(const void* p, int is_bf16, int64_t i) {
  return is_bf16 ? __bfloat162float(static_cast<const bf16*>(p)[i]) : static_cast<const float*>(p)[i];
}
#endif

// Block: 2 warpgroups; warpgroup wg multiplies all of every chunk's k into columns
// [wg, wg + 1) * BN / 2 of the tile (wgmma m64n(BN/2)k16, x as A with rows >= MT * 16 unused, w as B).
template <int BN, int MT>
__global__ void __launch_bounds__(kThreads, 2) stream_gemm_kernel(const Params p) {
#if !defined(__CUDA_ARCH_FEAT_SM90_ALL)
  __trap();  // wgmma, clusters and griddepcontrol need sm_90a; the host uses this kernel only there
#else
  namespace cg = cooperative_groups;
  constexpr int MP = MT * 16;
  constexpr int S = stages_for<BN>();
  constexpr int HN = BN / 2;  // columns a warpgroup
  constexpr int RS = red_stride<BN>();
  constexpr int W_ELEMS = BN * kBK, X_ELEMS = 64 * kBK, STAGE = W_ELEMS + X_ELEMS;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* base = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  bf16* smem = reinterpret_cast<bf16*>(base);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2;
  const int n0 = blockIdx.x * BN;
  const int cs = gridDim.y, rank = blockIdx.y;  // k splits = cluster size along y
  const int c_begin = (int)((int64_t)rank * p.nchunks / cs), c_end = (int)((int64_t)(rank + 1) * p.nchunks / cs);
  const int nch = c_end - c_begin;

  auto load_w = [&](int c, int slot) {
    bf16* dst = smem + slot * STAGE;
    const int k0 = (c_begin + c) * kBK;
#pragma unroll
    for (int i = tid; i < BN * 8; i += kThreads) {
      const int r = i >> 3, j = i & 7, n = n0 + r, k = k0 + j * 8;
      const bool ok = n < p.N && k < p.K;
      cp_async16(dst + swz(r, j), ok ? p.w + (int64_t)n * p.K + k : p.w, ok ? 16 : 0);
    }
  };
  auto load_x = [&](int c, int slot) {
    bf16* dst = smem + slot * STAGE + W_ELEMS;
    const int k0 = (c_begin + c) * kBK;
#pragma unroll
    for (int i = tid; i < MP * 8; i += kThreads) {
      const int r = i >> 3, j = i & 7, k = k0 + j * 8;
      const bool ok = r < p.M && k < p.K;
      cp_async16(dst + swz(r, j), ok ? p.x + (int64_t)r * p.K + k : p.x, ok ? 16 : 0);
    }
  };

  // Prologue: weights of the first S-1 chunks before the wait (they do not depend on the previous
  // kernel), then x. Group i = {x(i)} (+ all the early weights in group 0).
  pdl_trigger();
#pragma unroll
  for (int c = 0; c < S - 1; ++c)
    if (c < nch) load_w(c, c);
  pdl_wait();
#pragma unroll
  for (int c = 0; c < S - 1; ++c) {
    if (c < nch) load_x(c, c);
    cp_async_commit();
  }

  float acc[HN / 2];
#pragma unroll
  for (int i = 0; i < HN / 2; ++i) acc[i] = 0.f;

  for (int c = 0; c < nch; ++c) {
    if (p.debug & 2) break;
    cp_async_wait<S - 2>();
    fence_proxy_async_smem();  // the copies into chunk c's slot, visible to wgmma
    __syncthreads();           // chunk c is in; every warpgroup is done with chunk c - 1's slot
    {
      const int cn = c + S - 1;
      if (cn < nch) {
        load_w(cn, cn % S);
        load_x(cn, cn % S);
      }
      cp_async_commit();
    }
    const bf16* ws = smem + (c % S) * STAGE;
    const bf16* xs = ws + W_ELEMS;
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < 4; ++ks)
      wgmma_bf16<HN>(acc, wgmma_desc(xs + ks * 16), wgmma_desc(ws + wg * HN * kBK + ks * 16), 1);
    wgmma_commit();
    wgmma_wait_all();
  }
  cp_async_wait<0>();
  __syncthreads();  // the pipeline's shared memory becomes the partial tiles
  if (p.debug & 1) {
    if (acc[0] == 12345.f) static_cast<float*>(p.out)[0] = acc[1];  // keeps the math
    return;
  }

  // Thread (warp w of warpgroup wg, lane 4g + t) holds rows 16w + g (+ 8), columns wg * HN + 8j + 2t (+ 1).
  const int g = lane >> 2, t = lane & 3, row = (warp & 3) * 16 + g;
  if (p.partials) {  // partials mode: this split's sums straight to global memory
    float* dst = p.partials + (int64_t)rank * p.M * p.N + n0 + wg * HN + 2 * t;
#pragma unroll
    for (int j = 0; j < HN / 8; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int m = row + 8 * h, n = n0 + wg * HN + j * 8 + 2 * t;
        if (m < p.M && n < p.N)
          *reinterpret_cast<float2*>(dst + (int64_t)m * p.N + j * 8) =
              make_float2(acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]);
      }
    return;
  }
  // The partial tile red[m][RS] in fp32 (rows m >= M are never read).
  float* red = reinterpret_cast<float*>(base);
#pragma unroll
  for (int j = 0; j < HN / 8; ++j) {
    float* dst = red + (size_t)row * RS + wg * HN + j * 8 + 2 * t;
    *reinterpret_cast<float2*>(dst) = make_float2(acc[4 * j], acc[4 * j + 1]);
    *reinterpret_cast<float2*>(dst + 8 * RS) = make_float2(acc[4 * j + 2], acc[4 * j + 3]);
  }
  cg::cluster_group cluster = cg::this_cluster();
  if (cs > 1)
    cluster.sync();
  else
    __syncthreads();
  if (p.debug & 4) {
    if (cs > 1) cluster.sync();
    return;
  }

  // Block `rank` finishes quads [q_begin, q_end) of the M x BN tile (4 columns a quad): the
  // partials of every block of the cluster are loaded at once (DSMEM latency overlaps), then added
  // in rank order.
  const int quads = p.M * (BN / 4);
  const int q_begin = (int)((int64_t)rank * quads / cs), q_end = (int)((int64_t)(rank + 1) * quads / cs);
  const float* peer[kMaxCluster];
#pragma unroll
  for (int r = 0; r < kMaxCluster; ++r) peer[r] = cs > 1 ? cluster.map_shared_rank(red, r < cs ? r : 0) : red;
  for (int q = q_begin + tid; q < q_end; q += kThreads) {
    const int m = q / (BN / 4), c4 = (q % (BN / 4)) * 4;
    float4 u[kMaxCluster];
#pragma unroll
    for (int r = 0; r < kMaxCluster; ++r)
      if (r < cs) u[r] = *reinterpret_cast<const float4*>(peer[r] + (size_t)m * RS + c4);
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int r = 0; r < kMaxCluster; ++r)
      if (r < cs) v.x += u[r].x, v.y += u[r].y, v.z += u[r].z, v.w += u[r].w;
    if (p.debug & 8) {
      if (v.x == 12345.f) static_cast<float*>(p.out)[0] = v.y;
      continue;
    }
    float o[4] = {v.x, v.y, v.z, v.w};
    const int n = n0 + c4;
    const int64_t i0 = (int64_t)m * p.N + n;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (n + e >= p.N) break;
      float y = o[e];
      if (p.bias) y += ld_any(p.bias, p.bias_bf16, n + e);
      if (p.gelu) y = gelu_tanh(y);
      if (p.residual) y += ld_any(p.residual, p.res_bf16, i0 + e);
      o[e] = y;
    }
    if (p.out_bf16) {
      bf16* dst = static_cast<bf16*>(p.out) + i0;
      if (n + 4 <= p.N && (p.N & 3) == 0) {
        uint2 u;
        u.x = pack_bf16x2(o[0], o[1]);
        u.y = pack_bf16x2(o[2], o[3]);
        *reinterpret_cast<uint2*>(dst) = u;
      } else {
        for (int e = 0; e < 4 && n + e < p.N; ++e) dst[e] = __float2bfloat16(o[e]);
      }
    } else {
      float* dst = static_cast<float*>(p.out) + i0;
      if (n + 4 <= p.N && (p.N & 3) == 0)
        *reinterpret_cast<float4*>(dst) = make_float4(o[0], o[1], o[2], o[3]);
      else
        for (int e = 0; e < 4 && n + e < p.N; ++e) dst[e] = o[e];
    }
  }
  if (cs > 1) cluster.sync();  // the other blocks may still read this block's partial tile
#endif
}

template <int BN, int MT>
void launch_bn_mt(const SmallGemmPlan& plan, const Params& p, cudaStream_t s) {
  auto kernel = stream_gemm_kernel<BN, MT>;
  constexpr size_t smem = smem_bytes<BN>();
  static bool attr_set = false;  // per instantiation
  if (!attr_set) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    attr_set = true;
  }
  launch(kernel, dim3(plan.col_tiles, plan.splits), dim3(kThreads), smem, s, dim3(1, plan.cluster ? plan.splits : 1), p);
}

template <int BN>
void launch_bn(const SmallGemmPlan& plan, const Params& p, cudaStream_t s) {
  switch (plan.mt) {
    case 1:
      launch_bn_mt<BN, 1>(plan, p, s);
      break;
    case 2:
      launch_bn_mt<BN, 2>(plan, p, s);
      break;
    case 3:
      launch_bn_mt<BN, 3>(plan, p, s);
      break;
    case 4:
      launch_bn_mt<BN, 4>(plan, p, s);
      break;
    default:
      PIRT_CHECK(false, "small_gemm: mt %d", plan.mt);
  }
}

}  // namespace

int small_gemm_debug = 0;

bool small_gemm_supported(int64_t m, int64_t n, int64_t k) {
  return m >= 1 && m <= 64 && n >= 1 && k >= 8 && k % 8 == 0 && n < (1 << 30) && k < (1 << 30);
}

// Cost of a plan: the bytes the busiest SM streams (two blocks fit an SM, so ceil(blocks / SMs)
// blocks share one), weights plus a quarter for x (from L2), plus a little per split for the
// cluster reduction. The cheapest wins; ties go to the wider tile and fewer splits.
SmallGemmPlan small_gemm_plan(int64_t m, int64_t n, int64_t k, int num_sms, int force_bn, int force_splits) {
  SmallGemmPlan best;
  best.mt = static_cast<int>((m + 15) / 16);
  const int64_t nch = (k + kBK - 1) / kBK;
  double best_cost = 1e300;
  for (int bn : {128, 64, 32}) {
    if (force_bn && bn != force_bn) continue;
    const int64_t tiles = (n + bn - 1) / bn;
    for (int cs = 1; cs <= kMaxCluster; ++cs) {
      if (force_splits && cs != force_splits) continue;
      if (cs > nch) break;
      const int64_t blocks = tiles * cs, per_sm = (blocks + num_sms - 1) / num_sms;
      const int64_t per = (nch + cs - 1) / cs;
      const double cost = (double)per_sm * per * (bn + 16) + 2.0 * cs;
      if (cost < best_cost - 1e-9) {
        best_cost = cost;
        best.bn = bn;
        best.splits = cs;
        best.col_tiles = static_cast<int>(tiles);
      }
    }
  }
  if (best.bn == 0) {  // a forced configuration that cannot run: the default
    return small_gemm_plan(m, n, k, num_sms, 0, 0);
  }
  best.stages = best.bn >= 128 ? 4 : best.bn >= 64 ? 6 : 8;
  return best;
}

SmallGemmPlan small_gemm_plan_partials(int64_t m, int64_t n, int64_t k, int num_sms, int force_bn, int force_splits) {
  SmallGemmPlan best;
  best.mt = static_cast<int>((m + 15) / 16);
  const int64_t nch = (k + kBK - 1) / kBK;
  double best_cost = 1e300;
  for (int bn : {128, 64, 32}) {
    if (force_bn && bn != force_bn) continue;
    const int64_t tiles = (n + bn - 1) / bn;
    for (int cs = 1; cs <= kMaxPartialSplits; ++cs) {
      if (force_splits && cs != force_splits) continue;
      if (cs > nch) break;
      // Blocks an SM (two fit; a second one shares the SM's bandwidth but hides latency, so it counts
      // fractionally) times the chunk rows a block streams, plus a little per split for the consumer.
      // Fitted to kernel_bench's sweep on an H100 (within 10% of the best configuration measured).
      const double per_sm = std::max(1.0, (double)(tiles * cs) / num_sms);
      const int64_t per = (nch + cs - 1) / cs;
      const double cost = per_sm * per * (bn + 16) + 16.0 * cs;
      if (cost < best_cost - 1e-9) {
        best_cost = cost;
        best.bn = bn;
        best.splits = cs;
        best.col_tiles = static_cast<int>(tiles);
      }
    }
  }
  if (best.bn == 0) return small_gemm_plan_partials(m, n, k, num_sms, 0, 0);
  best.stages = best.bn >= 128 ? 4 : best.bn >= 64 ? 6 : 8;
  return best;
}

namespace {

// The Params both entry points share; the rest is theirs to set.
Params base_params(const void* x, const void* w, int64_t m, int64_t n, int64_t k) {
  Params p{};
  p.x = static_cast<const bf16*>(x);
  p.w = static_cast<const bf16*>(w);
  p.M = static_cast<int>(m);
  p.N = static_cast<int>(n);
  p.K = static_cast<int>(k);
  p.nchunks = static_cast<int>((k + kBK - 1) / kBK);
  p.debug = small_gemm_debug;
  return p;
}

void launch_plan(const SmallGemmPlan& plan, const Params& p, cudaStream_t s) {
  switch (plan.bn) {
    case 32:
      launch_bn<32>(plan, p, s);
      break;
    case 64:
      launch_bn<64>(plan, p, s);
      break;
    case 128:
      launch_bn<128>(plan, p, s);
      break;
    default:
      PIRT_CHECK(false, "small_gemm: bn %d", plan.bn);
  }
}

}  // namespace

void small_gemm_partials(const SmallGemmPlan& plan, const void* x, const void* w, float* partials, int64_t m, int64_t n,
                         int64_t k, cudaStream_t s) {
  PIRT_CHECK(n % 8 == 0, "small_gemm_partials: n %lld", (long long)n);
  Params p = base_params(x, w, m, n, k);
  p.partials = partials;
  SmallGemmPlan unclustered = plan;
  unclustered.cluster = false;
  launch_plan(unclustered, p, s);
}

void small_gemm(const SmallGemmPlan& plan, const void* x, const void* w, const void* bias, DType bt, Epilogue ep,
                const void* residual, DType rt, void* out, DType ot, int64_t m, int64_t n, int64_t k, cudaStream_t s) {
  Params p = base_params(x, w, m, n, k);
  p.bias = bias;
  p.residual = residual;
  p.out = out;
  p.bias_bf16 = bt == DType::BF16;
  p.res_bf16 = rt == DType::BF16;
  p.out_bf16 = ot == DType::BF16;
  p.gelu = ep == Epilogue::GeluTanh;
  launch_plan(plan, p, s);
}

}  // namespace pirt::cuda
