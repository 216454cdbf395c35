// Block-masked attention (ops.h Backend::attention) for pi0's three shapes:
//   prefix   8 query heads x ~816 over ~816 keys of 1 KV head, head_dim 256, block mask
//   actions  8 query heads x 51 over ~867 keys of 1 KV head, head_dim 256, block mask (180 calls)
//   SigLIP   3 images x 16 heads x 256 over 256, head_dim 72, no mask
//
// The fast kernel is flash-attention 2 style on mma.sync (bf16 in, fp32 accumulate):
// - Query heads that share a KV head are packed into one tile: packed row r = t * G + g, G = Hq / Hkv,
//   so the 8 heads x 51 action queries form 408 rows over one K/V stream.
// - A block is 4 warps x 16 rows; K/V tiles of 64 keys are double-buffered through cp.async.
// - When the query tiles alone cannot fill the GPU (the action steps: 7 tiles), keys are split across
//   blocks (flash-decoding); each split writes unnormalised fp32 outputs with its running max and sum,
//   and a second kernel merges them.
// - The mask is per token: key j is visible to query i iff k_block[j] <= q_block[i]. Scores are
//   fp32 (scaled by scale*log2(e), exp2), probabilities are rounded to bf16 for P.V, the row sum
//   is kept in fp32. Rows that see no key output zero.
#include <cooperative_groups.h>

#include <cfloat>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/mma.cuh"
#include "backends/cuda/split_merge.cuh"

namespace pirt::cuda {

// Test and bench knobs (not in kernels.h): 0 picks the kernel, 1 the flash kernel only, 2.. the split
// kernel wherever it applies: its default is 2 row groups x 4 key parts (8 warps); head dim 256 only:
// 2 = 4x2, 3 = 3x2, 4 = 4x4, 5 = 2x4, 6 = 3x4, 7 = 2x2.
int attention_kernel_variant = 0;
int attention_debug_phase = 0;  // split kernel timing breakdown (wrong results): see FastParams::debug

namespace {

constexpr int kWarps = 4;
constexpr int kBR = kWarps * 16;  // query rows a block
constexpr int kBK = 64;           // keys a tile
constexpr int kMaskedKey = 0x3fffffff;
constexpr float kLog2e = 1.4426950408889634f;

struct FastParams {
  const bf16* q;
  const bf16* k;
  const bf16* v;
  bf16* out;
  const int32_t* q_block;
  const int32_t* k_block;
  float* ws_o;   // [S*Hkv][nsplit][R][DHP] (nsplit > 1)
  float* ws_ml;  // [S*Hkv][nsplit][R][2]
  int S, Tq, Tk, Hq, Hkv, dh, G, R;
  int64_t q_stride, kv_stride;  // elements from one token's q (k, v) to the next's; out is contiguous
  int nsplit, tiles_per_split;
  float scale_log2;
  int debug = 0;  // split kernel, bench only: 1 no loads, 2 no mma, 4 no merge, 8 return at once
};

template <int DHP>
struct Smem {
  static constexpr int kStride = DHP + 8;  // bf16 elements a row: 16-byte pad, conflict-free ldmatrix
  bf16 q[kBR * kStride];
  bf16 k[kBK * kStride];
  bf16 v[kBK * kStride];  // k and v adjacent: the cluster merge reuses them as fp32 O [kBR][DHP]
  int kb[2][kBK];
  float ml[kBR][2];  // the cluster merge: each row's running max and sum
};

// Row r of the packed tile of KV head `kvh` in sequence s -> element offset of its head vector in q,
// and in out (contiguous).
__device__ __forceinline__ int64_t q_offset(const FastParams& p, int s, int kvh, int r) {
  const int t = r / p.G, g = r % p.G;
  return ((int64_t)s * p.Tq + t) * p.q_stride + (int64_t)(kvh * p.G + g) * p.dh;
}
__device__ __forceinline__ int64_t out_offset(const FastParams& p, int s, int kvh, int r) {
  const int t = r / p.G, g = r % p.G;
  return (((int64_t)s * p.Tq + t) * p.Hq + kvh * p.G + g) * p.dh;
}

// K rows of one tile (and its mask blocks into kb[buf]), or V rows: zeros past the key range and dh.
template <int DHP, bool IsK>
__device__ __forceinline__ void load_tile(const FastParams& p, Smem<DHP>& sm, int buf, int s, int kvh, int key0,
                                          int key_end) {
  constexpr int chunks = DHP / 8;
  bf16* dst = IsK ? sm.k : sm.v;
  const bf16* src = IsK ? p.k : p.v;
  for (int i = threadIdx.x; i < kBK * chunks; i += kWarps * 32) {
    const int kr = i / chunks, c = i % chunks, key = key0 + kr;
    const bool ok = key < key_end && c * 8 < p.dh;
    const int64_t off = ((int64_t)s * p.Tk + (ok ? key : 0)) * p.kv_stride + (int64_t)kvh * p.dh + (ok ? c * 8 : 0);
    cp_async16(&dst[kr * Smem<DHP>::kStride + c * 8], src + off, ok ? 16 : 0);
  }
  if (IsK)
    for (int kr = threadIdx.x; kr < kBK; kr += kWarps * 32) {
      const int key = key0 + kr;
      sm.kb[buf][kr] = key < key_end ? (p.k_block ? p.k_block[(int64_t)s * p.Tk + key] : 0) : kMaskedKey;
    }
}

constexpr int kMaxCluster = 8;  // portable cluster size

// kCluster: the key splits of one query tile form a thread-block cluster (along z) and merge their
// partial outputs through distributed shared memory; otherwise partials go to ws for merge_kernel.
template <int DHP, bool kCluster>
__global__ void __launch_bounds__(kWarps * 32, 2) attention_kernel(const FastParams p) {
  constexpr int NT_O = DHP / 8;   // output column tiles
  constexpr int KS = DHP / 16;    // k-steps of Q.K^T
  constexpr int ST = Smem<DHP>::kStride;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Smem<DHP>& sm = *reinterpret_cast<Smem<DHP>*>(smem_raw);

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int bh = blockIdx.y, s = bh / p.Hkv, kvh = bh % p.Hkv;
  const int split = blockIdx.z;
  const int row0 = blockIdx.x * kBR;

  const int ntiles_total = (p.Tk + kBK - 1) / kBK;
  const int tile_begin = split * p.tiles_per_split;
  const int tile_end = min(ntiles_total, tile_begin + p.tiles_per_split);
  const int key_end = min(p.Tk, tile_end * kBK);

  // Q tile (zeros past R and past dh).
  {
    constexpr int chunks = DHP / 8;
    for (int i = threadIdx.x; i < kBR * chunks; i += kWarps * 32) {
      const int r = i / chunks, c = i % chunks, row = row0 + r;
      const bool ok = row < p.R && c * 8 < p.dh;
      const int64_t off = ok ? q_offset(p, s, kvh, row) + c * 8 : 0;
      cp_async16(&sm.q[r * ST + c * 8], p.q + off, ok ? 16 : 0);
    }
  }
  // Single K and V buffers, loads staggered: K(i+1) streams in during softmax and P.V of tile i,
  // V(i+1) during Q.K^T of tile i+1 (two blocks fit an SM at head_dim 256). Groups: {Q, K0}, {V0},
  // then per tile {K(i+1)}, {V(i+1)}; a wait for "all but the newest group" finds the one needed.
  if (tile_begin < tile_end) load_tile<DHP, true>(p, sm, 0, s, kvh, tile_begin * kBK, key_end);
  cp_async_commit();
  if (tile_begin < tile_end) load_tile<DHP, false>(p, sm, 0, s, kvh, tile_begin * kBK, key_end);
  cp_async_commit();

  // Per-thread rows: g and g + 8 of this warp's 16.
  int qb[2];
  float m_run[2], l_run[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = row0 + warp * 16 + g + 8 * h;
    qb[h] = -1;
    if (row < p.R) qb[h] = p.q_block ? p.q_block[(int64_t)s * p.Tq + row / p.G] : 0;
    m_run[h] = -INFINITY;
    l_run[h] = 0.f;
  }
  float o[NT_O][4];
#pragma unroll
  for (int i = 0; i < NT_O; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[i][e] = 0.f;

  for (int tile = tile_begin; tile < tile_end; ++tile) {
    const int buf = (tile - tile_begin) & 1;
    cp_async_wait<1>();  // K(tile) (and Q)
    __syncthreads();

    // S = Q K^T for this warp's 16 rows x 64 keys.
    float sc[kBK / 8][4];
#pragma unroll
    for (int i = 0; i < kBK / 8; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) sc[i][e] = 0.f;
    const bf16* kt = sm.k;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      uint32_t a0, a1, a2, a3;
      ldmatrix_x4(a0, a1, a2, a3, &sm.q[(warp * 16 + (lane & 15)) * ST + ks * 16 + (lane >> 4) * 8]);
#pragma unroll
      for (int np = 0; np < kBK / 16; ++np) {
        uint32_t b0, b1, b2, b3;
        const int key = np * 16 + (lane >> 4) * 8 + (lane & 7);
        ldmatrix_x4(b0, b1, b2, b3, &kt[key * ST + ks * 16 + ((lane >> 3) & 1) * 8]);
        mma_bf16_16816(sc[2 * np], a0, a1, a2, a3, b0, b1);
        mma_bf16_16816(sc[2 * np + 1], a0, a1, a2, a3, b2, b3);
      }
    }

    __syncthreads();  // every warp is done with K(tile)
    if (tile + 1 < tile_end) load_tile<DHP, true>(p, sm, buf ^ 1, s, kvh, (tile + 1) * kBK, key_end);
    cp_async_commit();

    // Mask, scale, online softmax.
    const int* kb = sm.kb[buf];
    float tmax[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < kBK / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e >> 1, key = nt * 8 + 2 * t + (e & 1);
        const float x = kb[key] <= qb[h] ? sc[nt][e] * p.scale_log2 : -INFINITY;
        sc[nt][e] = x;
        tmax[h] = fmaxf(tmax[h], x);
      }
    float alpha[2], m_use[2];
    online_softmax_max(tmax, m_run, m_use, alpha);
    float rsum[2] = {0.f, 0.f};
    uint32_t pa[kBK / 8][2];  // P as bf16 pairs: [n tile][row half]
#pragma unroll
    for (int nt = 0; nt < kBK / 8; ++nt) {
      const float p0 = exp2f(sc[nt][0] - m_use[0]), p1 = exp2f(sc[nt][1] - m_use[0]);
      const float p2 = exp2f(sc[nt][2] - m_use[1]), p3 = exp2f(sc[nt][3] - m_use[1]);
      rsum[0] += p0 + p1;
      rsum[1] += p2 + p3;
      pa[nt][0] = pack_bf16x2(p0, p1);
      pa[nt][1] = pack_bf16x2(p2, p3);
    }
    online_softmax_sum(rsum, alpha, l_run);
#pragma unroll
    for (int i = 0; i < NT_O; ++i) {
      o[i][0] *= alpha[0];
      o[i][1] *= alpha[0];
      o[i][2] *= alpha[1];
      o[i][3] *= alpha[1];
    }

    // O += P V: P from registers (the S accumulator layout is the A fragment layout), V^T by ldmatrix.trans.
    cp_async_wait<1>();  // V(tile)
    __syncthreads();
    const bf16* vt = sm.v;
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
      const uint32_t a0 = pa[2 * kk][0], a1 = pa[2 * kk][1], a2 = pa[2 * kk + 1][0], a3 = pa[2 * kk + 1][1];
#pragma unroll
      for (int np = 0; np < NT_O / 2; ++np) {
        uint32_t b0, b1, b2, b3;
        const int key = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
        ldmatrix_x4_trans(b0, b1, b2, b3, &vt[key * ST + np * 16 + (lane >> 4) * 8]);
        mma_bf16_16816(o[2 * np], a0, a1, a2, a3, b0, b1);
        mma_bf16_16816(o[2 * np + 1], a0, a1, a2, a3, b2, b3);
      }
    }
    __syncthreads();  // every warp is done with V(tile)
    if (tile + 1 < tile_end) load_tile<DHP, false>(p, sm, 0, s, kvh, (tile + 1) * kBK, key_end);
    cp_async_commit();
  }
  cp_async_wait<0>();

  if constexpr (kCluster) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
    __trap();  // thread-block clusters need sm_90; the host launches this variant only there
#else
    // Each block leaves its unnormalised O and (max, sum) in its shared memory for the cluster merge
    // (split_merge.cuh).
    __shared__ float wts[kBR][kMaxCluster];
    float* obuf = reinterpret_cast<float*>(sm.k);
    __syncthreads();
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int rl = warp * 16 + g + 8 * h;
#pragma unroll
      for (int i = 0; i < NT_O; ++i)
        *reinterpret_cast<float2*>(obuf + rl * DHP + i * 8 + 2 * t) = make_float2(o[i][2 * h], o[i][2 * h + 1]);
      if (t == 0) sm.ml[rl][0] = m_run[h], sm.ml[rl][1] = l_run[h];
    }
    cluster_merge<kBR, DHP, kWarps * 32, kMaxCluster>(obuf, DHP, sm.ml, wts, p.dh, [&](int rl) -> bf16* {
      const int row = row0 + rl;
      return row < p.R ? p.out + out_offset(p, s, kvh, row) : nullptr;
    });
#endif
  } else {
  // Write: the normalised output, or this split's partial state.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = row0 + warp * 16 + g + 8 * h;
    if (row >= p.R) continue;
    if (p.nsplit == 1) {
      const float inv = l_run[h] > 0.f ? 1.f / l_run[h] : 0.f;
      bf16* dst = p.out + out_offset(p, s, kvh, row);
#pragma unroll
      for (int i = 0; i < NT_O; ++i) {
        const int col = i * 8 + 2 * t;
        if (col < p.dh)
          *reinterpret_cast<uint32_t*>(dst + col) = pack_bf16x2(o[i][2 * h] * inv, o[i][2 * h + 1] * inv);
      }
    } else {
      const int64_t base = ((int64_t)bh * p.nsplit + split) * p.R + row;
      float* dst = p.ws_o + base * DHP;
#pragma unroll
      for (int i = 0; i < NT_O; ++i) {
        const int col = i * 8 + 2 * t;
        *reinterpret_cast<float2*>(dst + col) = make_float2(o[i][2 * h], o[i][2 * h + 1]);
      }
      if (t == 0) *reinterpret_cast<float2*>(p.ws_ml + base * 2) = make_float2(m_run[h], l_run[h]);
    }
  }
  }
}

// One block per (packed row, sequence x KV head): combine the splits' partial outputs. The first warp
// turns the splits' (max, sum) into weights; then every split's column is loaded at once.
constexpr int kMaxSplits = 64;

template <int DHP>
__global__ void merge_kernel(const FastParams p) {
  __shared__ float wgt[kMaxSplits];
  const int row = blockIdx.x, bh = blockIdx.y, s = bh / p.Hkv, kvh = bh % p.Hkv;
  const int64_t base0 = (int64_t)bh * p.nsplit * p.R + row;  // + split * R
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    float m[2], l[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int sp = lane + 32 * h;
      m[h] = -INFINITY;
      l[h] = 0.f;
      if (sp < p.nsplit) {
        const float2 ml = *reinterpret_cast<const float2*>(p.ws_ml + (base0 + (int64_t)sp * p.R) * 2);
        m[h] = ml.x;
        l[h] = ml.y;
      }
    }
    const float mx = warp_max(fmaxf(m[0], m[1]));
    const float m_use = mx == -INFINITY ? 0.f : mx;
    const float w0 = exp2f(m[0] - m_use), w1 = exp2f(m[1] - m_use);
    const float total = warp_sum(l[0] * w0 + l[1] * w1);
    const float inv = total > 0.f ? 1.f / total : 0.f;
    if (lane < p.nsplit) wgt[lane] = w0 * inv;
    if (lane + 32 < p.nsplit) wgt[lane + 32] = w1 * inv;
  }
  __syncthreads();
  bf16* dst = p.out + out_offset(p, s, kvh, row);
  for (int c = threadIdx.x; c < p.dh; c += blockDim.x) {
    float acc = 0.f;
#pragma unroll 8
    for (int sp = 0; sp < p.nsplit; ++sp) acc += wgt[sp] * p.ws_o[(base0 + (int64_t)sp * p.R) * DHP + c];
    dst[c] = __float2bfloat16(acc);
  }
}

int padded_head_dim(int dh) {
  if (dh % 8 != 0 || dh > 256) return 0;
  for (int d : {16, 32, 64, 80, 128, 256})
    if (dh <= d) return d;
  return 0;
}

struct Split {
  int nsplit, tiles_per_split;
  bool cluster = false;  // merge the splits inside a cluster (2..8 splits)
};

Split choose_split(const AttentionArgs& a, int num_sms, int force_splits, bool cluster) {
  const int G = a.Hq / a.Hkv, R = a.Tq * G;
  const int row_tiles = (R + kBR - 1) / kBR;
  const int base = row_tiles * a.S * a.Hkv;
  const int ntiles = (a.Tk + kBK - 1) / kBK;
  if (ntiles == 0) return {1, 0, false};
  int ns = 1;
  if (force_splits > 0)
    ns = force_splits;
  else if (2 * base < num_sms)
    ns = (2 * num_sms + base - 1) / base;  // about two blocks an SM
  ns = std::max(1, std::min({ns, ntiles, cluster ? kMaxCluster : kMaxSplits}));
  const int per = (ntiles + ns - 1) / ns;
  ns = (ntiles + per - 1) / per;  // no empty splits
  return {ns, per, cluster && ns > 1};
}

template <int DHP>
void launch_fast(const FastParams& p, int row_tiles, bool cluster, cudaStream_t s) {
  const size_t smem = sizeof(Smem<DHP>);
  static bool attr_set = false;
  if (!attr_set) {
    CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<DHP, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<DHP, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    attr_set = true;
  }
  dim3 grid(row_tiles, p.S * p.Hkv, p.nsplit);
  if (cluster) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = dim3(kWarps * 32);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = 1;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = p.nsplit;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    CUDA_CHECK(cudaLaunchKernelEx(&cfg, attention_kernel<DHP, true>, p));
    return;
  }
  attention_kernel<DHP, false><<<grid, kWarps * 32, smem, s>>>(p);
  CUDA_CHECK_LAUNCH();
  if (p.nsplit > 1) {
    merge_kernel<DHP><<<dim3(p.R, p.S * p.Hkv), 128, 0, s>>>(p);
    CUDA_CHECK_LAUNCH();
  }
}

// ---- the split kernel: few query tiles (the action steps), keys split over a cluster of up to 16 ----
// A block is RW*KQ warps over RW*16 query rows and one 64-key tile at a time (K and V single-buffered;
// with one tile a split, as for pi0's action steps, every cp.async of Q, K and V is issued up front).
// Warp w = (rg = w % RW, kh = w / RW): Q.K^T of its 16 rows x keys [kh, kh+1) * 64/KQ; the KQ parts
// agree on the row max through shared memory; P goes to shared memory as bf16; then P.V of its 16 rows
// x all 64 keys x columns [kh, kh+1) * DHP/KQ. More warps in flight than the flash kernel at fewer
// registers each; a query tile's key splits (up to 16: a non-portable cluster size) merge through DSMEM.
// Default 2 x 4 (32 rows, 8 warps): pi0's action step is 13 query tiles x 7 splits (2 tiles each).
// Measured on H100 (kernel_bench): the merge (~64 KB a block over DSMEM) and fixed costs dominate; a
// merge through L2 (workspace) was slower, more splits (14, one tile each) no faster.

template <int DHP, int RW, int KQ>
struct SplitSmem {
  static constexpr int kBRs = RW * 16;
  static constexpr int kStride = DHP + 8;   // bf16 a row of Q, K, V
  static constexpr int kPStride = kBK + 8;  // bf16 a row of P
  static constexpr int kOStride = DHP + 8;  // fp32 a row of the merge's O (aliases k and v)
  bf16 q[kBRs * kStride];
  bf16 k[kBK * kStride];
  bf16 v[kBK * kStride];
  bf16 pm[kBRs * kPStride];
  int kb[kBK];
  float xmax[KQ][kBRs];
  float xsum[KQ][kBRs];
  float ml[kBRs][2];
  static_assert(sizeof(float) * kBRs * kOStride <= sizeof(bf16) * 2 * kBK * kStride, "O buffer must fit in k+v");
  static_assert(sizeof(float) * kMaxMergeSplits <= sizeof(bf16) * kPStride, "merge weights must fit in pm");
};

template <int DHP, int RW, int KQ, bool IsK>
__device__ __forceinline__ void split_load_tile(const FastParams& p, SplitSmem<DHP, RW, KQ>& sm, int s, int kvh, int key0,
                                                int key_end) {
  constexpr int chunks = DHP / 8, NT = RW * KQ * 32, ST = SplitSmem<DHP, RW, KQ>::kStride;
  bf16* dst = IsK ? sm.k : sm.v;
  const bf16* src = IsK ? p.k : p.v;
#pragma unroll 4
  for (int i = threadIdx.x; i < kBK * chunks; i += NT) {
    const int kr = i / chunks, c = i % chunks, key = key0 + kr;
    const bool ok = key < key_end && c * 8 < p.dh;
    const int64_t off = ((int64_t)s * p.Tk + (ok ? key : 0)) * p.kv_stride + (int64_t)kvh * p.dh + (ok ? c * 8 : 0);
    cp_async16(&dst[kr * ST + c * 8], src + off, ok ? 16 : 0);
  }
}

template <int DHP, int RW, int KQ>
__global__ void __launch_bounds__(RW * KQ * 32, RW * KQ <= 8 ? 2 : 1) attention_split_kernel(const FastParams p) {
  using SM = SplitSmem<DHP, RW, KQ>;
  constexpr int NT = RW * KQ * 32, BR = RW * 16;
  constexpr int KW = kBK / KQ;     // Q.K^T keys a warp
  constexpr int ST = SM::kStride, PST = SM::kPStride;
  constexpr int KS = DHP / 16;     // k-steps of Q.K^T
  constexpr int HALF = DHP / KQ;   // P.V columns a warp
  constexpr int NTH = HALF / 8;    // its n tiles
  static_assert(NTH % 2 == 0 && KW % 16 == 0, "head dim parts and key parts must be multiples of 16");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  SM& sm = *reinterpret_cast<SM*>(smem_raw);
  pdl_wait();
  pdl_trigger();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int rg = warp % RW, kh = warp / RW;  // row group, key part (Q.K^T) and column part (P.V)
  if (p.debug & 8) return;
  const int bh = blockIdx.y, s = bh / p.Hkv, kvh = bh % p.Hkv;
  const int split = blockIdx.z;
  const int row0 = blockIdx.x * BR;

  const int ntiles_total = (p.Tk + kBK - 1) / kBK;
  const int tile_begin = split * p.tiles_per_split;
  const int tile_end = min(ntiles_total, tile_begin + p.tiles_per_split);
  const int key_end = min(p.Tk, tile_end * kBK);

  // Groups: {K0, Q}, {V0}, then per tile {K(i+1)}, {V(i+1)}.
  const bool do_load = !(p.debug & 1), do_mma = !(p.debug & 2);
  if (tile_begin < tile_end && do_load) split_load_tile<DHP, RW, KQ, true>(p, sm, s, kvh, tile_begin * kBK, key_end);
  if (do_load) {
    constexpr int chunks = DHP / 8;
#pragma unroll 4
    for (int i = threadIdx.x; i < BR * chunks; i += NT) {
      const int r = i / chunks, c = i % chunks, row = row0 + r;
      const bool ok = row < p.R && c * 8 < p.dh;
      const int64_t off = ok ? q_offset(p, s, kvh, row) + c * 8 : 0;
      cp_async16(&sm.q[r * ST + c * 8], p.q + off, ok ? 16 : 0);
    }
  }
  cp_async_commit();
  if (tile_begin < tile_end && do_load) split_load_tile<DHP, RW, KQ, false>(p, sm, s, kvh, tile_begin * kBK, key_end);
  cp_async_commit();

  int qb[2];
  float m_run[2], l_run[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = row0 + rg * 16 + g + 8 * h;
    qb[h] = -1;
    if (row < p.R) qb[h] = p.q_block ? p.q_block[(int64_t)s * p.Tq + row / p.G] : 0;
    m_run[h] = -INFINITY;
    l_run[h] = 0.f;
  }
  float o[NTH][4];
#pragma unroll
  for (int i = 0; i < NTH; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[i][e] = 0.f;

  for (int tile = tile_begin; tile < tile_end; ++tile) {
    if (threadIdx.x < kBK) {
      const int key = tile * kBK + threadIdx.x;
      sm.kb[threadIdx.x] = key < key_end ? (p.k_block ? p.k_block[(int64_t)s * p.Tk + key] : 0) : kMaskedKey;
    }
    cp_async_wait<1>();  // K(tile) (and Q)
    __syncthreads();

    // S = Q K^T: this warp's 16 rows x KW keys.
    float sc[KW / 8][4];
#pragma unroll
    for (int i = 0; i < KW / 8; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) sc[i][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < (do_mma ? KS : 0); ++ks) {
      uint32_t a0, a1, a2, a3;
      ldmatrix_x4(a0, a1, a2, a3, &sm.q[(rg * 16 + (lane & 15)) * ST + ks * 16 + (lane >> 4) * 8]);
#pragma unroll
      for (int np = 0; np < KW / 16; ++np) {
        uint32_t b0, b1, b2, b3;
        const int key = kh * KW + np * 16 + (lane >> 4) * 8 + (lane & 7);
        ldmatrix_x4(b0, b1, b2, b3, &sm.k[key * ST + ks * 16 + ((lane >> 3) & 1) * 8]);
        mma_bf16_16816(sc[2 * np], a0, a1, a2, a3, b0, b1);
        mma_bf16_16816(sc[2 * np + 1], a0, a1, a2, a3, b2, b3);
      }
    }

    // Mask, scale; the row max over both key halves.
    float tmax[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < KW / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e >> 1, key = kh * KW + nt * 8 + 2 * t + (e & 1);
        const float x = sm.kb[key] <= qb[h] ? sc[nt][e] * p.scale_log2 : -INFINITY;
        sc[nt][e] = x;
        tmax[h] = fmaxf(tmax[h], x);
      }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      tmax[h] = fmaxf(tmax[h], __shfl_xor_sync(0xffffffffu, tmax[h], 1));
      tmax[h] = fmaxf(tmax[h], __shfl_xor_sync(0xffffffffu, tmax[h], 2));
      if (t == 0) sm.xmax[kh][rg * 16 + g + 8 * h] = tmax[h];
    }
    __syncthreads();  // xmax visible; every warp is done with K(tile) and kb
    if (tile + 1 < tile_end && do_load) split_load_tile<DHP, RW, KQ, true>(p, sm, s, kvh, (tile + 1) * kBK, key_end);
    cp_async_commit();

    float alpha[2], m_use[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float other = tmax[h];
#pragma unroll
      for (int j = 0; j < KQ; ++j) other = fmaxf(other, sm.xmax[j][rg * 16 + g + 8 * h]);
      const float m_new = fmaxf(m_run[h], other);
      m_use[h] = m_new == -INFINITY ? 0.f : m_new;
      alpha[h] = exp2f(m_run[h] - m_use[h]);  // 0 when m_run is -inf
      m_run[h] = m_new;
    }
    float rsum[2] = {0.f, 0.f};
#pragma unroll
    for (int nt = 0; nt < KW / 8; ++nt) {
      const float p0 = exp2f(sc[nt][0] - m_use[0]), p1 = exp2f(sc[nt][1] - m_use[0]);
      const float p2 = exp2f(sc[nt][2] - m_use[1]), p3 = exp2f(sc[nt][3] - m_use[1]);
      rsum[0] += p0 + p1;
      rsum[1] += p2 + p3;
      const int col = kh * KW + nt * 8 + 2 * t;
      *reinterpret_cast<uint32_t*>(&sm.pm[(rg * 16 + g) * PST + col]) = pack_bf16x2(p0, p1);
      *reinterpret_cast<uint32_t*>(&sm.pm[(rg * 16 + g + 8) * PST + col]) = pack_bf16x2(p2, p3);
    }
    online_softmax_sum(rsum, alpha, l_run);  // (this warp's key part only)
#pragma unroll
    for (int i = 0; i < NTH; ++i) {
      o[i][0] *= alpha[0];
      o[i][1] *= alpha[0];
      o[i][2] *= alpha[1];
      o[i][3] *= alpha[1];
    }

    cp_async_wait<1>();  // V(tile)
    __syncthreads();     // V and P visible
    // O += P V: this warp's 16 rows x 64 keys x its column half.
#pragma unroll
    for (int kk = 0; kk < (do_mma ? kBK / 16 : 0); ++kk) {
      uint32_t a0, a1, a2, a3;
      ldmatrix_x4(a0, a1, a2, a3, &sm.pm[(rg * 16 + (lane & 15)) * PST + kk * 16 + (lane >> 4) * 8]);
#pragma unroll
      for (int np = 0; np < NTH / 2; ++np) {
        uint32_t b0, b1, b2, b3;
        const int key = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
        ldmatrix_x4_trans(b0, b1, b2, b3, &sm.v[key * ST + kh * HALF + np * 16 + (lane >> 4) * 8]);
        mma_bf16_16816(o[2 * np], a0, a1, a2, a3, b0, b1);
        mma_bf16_16816(o[2 * np + 1], a0, a1, a2, a3, b2, b3);
      }
    }
    __syncthreads();  // every warp is done with V(tile) and P
    if (tile + 1 < tile_end && do_load) split_load_tile<DHP, RW, KQ, false>(p, sm, s, kvh, (tile + 1) * kBK, key_end);
    cp_async_commit();
  }
  cp_async_wait<0>();

  // The row sums of both key halves (same running max).
#pragma unroll
  for (int h = 0; h < 2; ++h)
    if (t == 0) sm.xsum[kh][rg * 16 + g + 8 * h] = l_run[h];
  __syncthreads();

  if (p.nsplit == 1) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int rl = rg * 16 + g + 8 * h, row = row0 + rl;
      if (row >= p.R) continue;
      float l = 0.f;
#pragma unroll
      for (int j = 0; j < KQ; ++j) l += sm.xsum[j][rl];
      const float inv = l > 0.f ? 1.f / l : 0.f;
      bf16* dst = p.out + out_offset(p, s, kvh, row);
#pragma unroll
      for (int i = 0; i < NTH; ++i) {
        const int col = kh * HALF + i * 8 + 2 * t;
        if (col < p.dh)
          *reinterpret_cast<uint32_t*>(dst + col) = pack_bf16x2(o[i][2 * h] * inv, o[i][2 * h + 1] * inv);
      }
    }
    return;
  }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  __trap();  // thread-block clusters need sm_90; the host launches split clusters only there
#else
  // Each block leaves its unnormalised O and (max, sum) in its shared memory for the cluster merge
  // (split_merge.cuh).
  float(*wts)[kMaxMergeSplits] = reinterpret_cast<float(*)[kMaxMergeSplits]>(sm.pm);  // P is free
  float* obuf = reinterpret_cast<float*>(sm.k);  // k and v are free (synced above)
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int rl = rg * 16 + g + 8 * h;
#pragma unroll
    for (int i = 0; i < NTH; ++i)
      *reinterpret_cast<float2*>(obuf + rl * SM::kOStride + kh * HALF + i * 8 + 2 * t) =
          make_float2(o[i][2 * h], o[i][2 * h + 1]);
  }
  if (kh == 0 && t == 0) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int rl = rg * 16 + g + 8 * h;
      sm.ml[rl][0] = m_run[h];
      float l = 0.f;
#pragma unroll
      for (int j = 0; j < KQ; ++j) l += sm.xsum[j][rl];
      sm.ml[rl][1] = l;
    }
  }
  if (p.debug & 4) {  // (the merge's two cluster barriers, without the merge)
    cooperative_groups::this_cluster().sync();
    cooperative_groups::this_cluster().sync();
    return;
  }
  cluster_merge<BR, DHP, NT>(obuf, SM::kOStride, sm.ml, wts, p.dh, [&](int rl) -> bf16* {
    const int row = row0 + rl;
    return row < p.R ? p.out + out_offset(p, s, kvh, row) : nullptr;
  });
#endif
}

template <int DHP, int RW, int KQ>
void launch_split(const FastParams& p, cudaStream_t s) {
  const size_t smem = sizeof(SplitSmem<DHP, RW, KQ>);
  static bool attr_set = false, nonportable_set = false;
  if (!attr_set) {
    CUDA_CHECK(cudaFuncSetAttribute(attention_split_kernel<DHP, RW, KQ>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    attr_set = true;
  }
  if (p.nsplit > kMaxCluster && !nonportable_set) {
    CUDA_CHECK(cudaFuncSetAttribute(attention_split_kernel<DHP, RW, KQ>, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
    nonportable_set = true;
  }
  const int row_tiles = (p.R + RW * 16 - 1) / (RW * 16);
  // (with --pdl: starts during the previous kernel's tail; waits for it before any load)
  launch(attention_split_kernel<DHP, RW, KQ>, dim3(row_tiles, p.S * p.Hkv, p.nsplit), dim3(RW * KQ * 32), smem, s,
         dim3(1, 1, p.nsplit), p);
}

// Whether the device takes a non-portable cluster of 16 split blocks (queried once).
bool big_clusters_ok() {
  static const bool ok =
      big_merge_clusters_ok(attention_split_kernel<256, 2, 4>, 256, sizeof(SplitSmem<256, 2, 4>));  // 2 x 4 warps
  return ok;
}


// Which kernel takes a shape. The split kernel needs clusters for its merge (cluster = true: sm_90)
// and head dims whose halves are multiples of 16; it takes the shapes with few query tiles.
struct Plan {
  bool split_kernel = false;
  int rw = 2;  // split kernel: 16-row groups a block
  int kq = 4;  // split kernel: key / column parts (warps = rw * kq)
  Split sp;
};

Plan choose_plan(const AttentionArgs& a, int num_sms, int force_splits, bool cluster) {
  Plan pl;
  pl.sp = choose_split(a, num_sms, force_splits, cluster);
  const int dhp = padded_head_dim(a.Dh);
  const int variant = attention_kernel_variant;
  if (variant == 1 || !cluster || a.Tk == 0 || !(dhp == 64 || dhp == 128 || dhp == 256)) return pl;
  const int G = a.Hq / a.Hkv, R = a.Tq * G;
  const bool few = 2 * ((R + kBR - 1) / kBR) * a.S * a.Hkv < num_sms;  // the flash kernel would split keys
  if (variant == 0 && !few) return pl;
  pl.split_kernel = true;
  if (dhp == 256 && variant >= 2) {
    static const int kCfg[][2] = {{4, 2}, {3, 2}, {4, 4}, {2, 4}, {3, 4}, {2, 2}};  // variants 2..7
    if (variant > 7) return Plan{false, 2, 4, pl.sp};
    pl.rw = kCfg[variant - 2][0];
    pl.kq = kCfg[variant - 2][1];
  }
  const int base = (R + pl.rw * 16 - 1) / (pl.rw * 16) * a.S * a.Hkv;
  const int ntiles = (a.Tk + kBK - 1) / kBK;
  const int maxc = big_clusters_ok() ? kMaxMergeSplits : kMaxCluster;
  int ns = force_splits > 0 ? force_splits : (few ? (num_sms + base - 1) / base : 1);
  ns = std::max(1, std::min({ns, ntiles, maxc}));
  const int per = (ntiles + ns - 1) / ns;
  ns = (ntiles + per - 1) / per;
  pl.sp = {ns, per, ns > 1};
  return pl;
}

// ---- the simple kernel: one warp per (sequence, query, head), three passes over the keys ----
constexpr int kRefMaxDh = 512;

__host__ __device__ __forceinline__ int64_t q_stride(const AttentionArgs& a) {
  return a.q_stride ? a.q_stride : (int64_t)a.Hq * a.Dh;
}
__host__ __device__ __forceinline__ int64_t kv_stride(const AttentionArgs& a) {
  return a.kv_stride ? a.kv_stride : (int64_t)a.Hkv * a.Dh;
}

__device__ float ref_score(const AttentionArgs& a, int s, int tq, int h, int j) {
  const int kvh = h / (a.Hq / a.Hkv);
  const bf16* q = static_cast<const bf16*>(a.q) + ((int64_t)s * a.Tq + tq) * q_stride(a) + (int64_t)h * a.Dh;
  const bf16* k = static_cast<const bf16*>(a.k) + ((int64_t)s * a.Tk + j) * kv_stride(a) + (int64_t)kvh * a.Dh;
  float d = 0.f;
  for (int c = threadIdx.x & 31; c < a.Dh; c += 32) d += __bfloat162float(q[c]) * __bfloat162float(k[c]);
  return warp_sum(d) * a.scale;
}

__global__ void attention_reference_kernel(const AttentionArgs a) {
  const int warps = blockDim.x / 32;
  const int64_t idx = (int64_t)blockIdx.x * warps + threadIdx.x / 32;  // (s, tq, h)
  if (idx >= (int64_t)a.S * a.Tq * a.Hq) return;
  const int h = idx % a.Hq, tq = (idx / a.Hq) % a.Tq, s = idx / ((int64_t)a.Hq * a.Tq);
  const int kvh = h / (a.Hq / a.Hkv), lane = threadIdx.x & 31;
  const int qb = a.q_block ? a.q_block[(int64_t)s * a.Tq + tq] : 0;
  auto visible = [&](int j) { return !a.q_block || a.k_block[(int64_t)s * a.Tk + j] <= qb; };
  float mx = -INFINITY;
  for (int j = 0; j < a.Tk; ++j)
    if (visible(j)) mx = fmaxf(mx, ref_score(a, s, tq, h, j));
  float l = 0.f;
  for (int j = 0; j < a.Tk; ++j)
    if (visible(j)) l += expf(ref_score(a, s, tq, h, j) - mx);
  float acc[kRefMaxDh / 32];
  for (int i = 0; i < kRefMaxDh / 32; ++i) acc[i] = 0.f;
  if (l > 0.f) {
    for (int j = 0; j < a.Tk; ++j) {
      if (!visible(j)) continue;
      const float pr = __bfloat162float(__float2bfloat16(expf(ref_score(a, s, tq, h, j) - mx) / l));
      const bf16* v = static_cast<const bf16*>(a.v) + ((int64_t)s * a.Tk + j) * kv_stride(a) + (int64_t)kvh * a.Dh;
#pragma unroll
      for (int i = 0; i < kRefMaxDh / 32; ++i) {
        const int c = lane + 32 * i;
        if (c < a.Dh) acc[i] += pr * __bfloat162float(v[c]);
      }
    }
  }
  bf16* o = static_cast<bf16*>(a.out) + (((int64_t)s * a.Tq + tq) * a.Hq + h) * a.Dh;
#pragma unroll
  for (int i = 0; i < kRefMaxDh / 32; ++i) {
    const int c = lane + 32 * i;
    if (c < a.Dh) o[c] = __float2bfloat16(acc[i]);
  }
}

}  // namespace

int64_t attention_workspace_bytes(const AttentionArgs& a, int num_sms, int force_splits, bool cluster) {
  const int dhp = padded_head_dim(a.Dh);
  if (!dhp) return 0;
  const Plan pl = choose_plan(a, num_sms, force_splits, cluster);
  const Split sp = pl.sp;
  if (pl.split_kernel || sp.nsplit == 1 || sp.cluster) return 0;  // the split kernel merges through DSMEM
  const int64_t R = (int64_t)a.Tq * (a.Hq / a.Hkv);
  return (int64_t)a.S * a.Hkv * sp.nsplit * R * (dhp + 2) * 4;
}

bool attention_fast(const AttentionArgs& a, float* ws, int64_t ws_bytes, int num_sms, cudaStream_t s,
                    int force_splits, bool cluster, bool wgmma) {
  const int dhp = padded_head_dim(a.Dh);
  if (!dhp || a.Hq % a.Hkv != 0 || a.Tq == 0 || a.S == 0) return false;
  // Many query tiles of one KV head of 256 (the prefix): the wgmma kernel, where the build and the
  // device have it (the caller says) and no test knob picks another.
  if (wgmma && attention_kernel_variant == 0 && force_splits == 0 && attention_wgmma_supported(a) &&
      2 * ((a.Tq * a.Hq + kBR - 1) / kBR) * a.S >= num_sms) {
    attention_wgmma(a, s);
    return true;
  }
  // Few query tiles over one KV head of 256 (the action steps): the wgmma split kernel (clusters).
  if (wgmma && cluster && attention_kernel_variant == 0 && attention_wgmma_supported(a)) {
    attention_wgmma_split(a, s, force_splits);
    return true;
  }
  if (reinterpret_cast<uintptr_t>(a.q) % 16 || reinterpret_cast<uintptr_t>(a.k) % 16 ||
      reinterpret_cast<uintptr_t>(a.v) % 16 || reinterpret_cast<uintptr_t>(a.out) % 4 || q_stride(a) % 8 ||
      kv_stride(a) % 8)
    return false;
  const int64_t need = attention_workspace_bytes(a, num_sms, force_splits, cluster);
  if (need > ws_bytes) return false;
  const Plan pl = choose_plan(a, num_sms, force_splits, cluster);
  FastParams p;
  p.q = static_cast<const bf16*>(a.q);
  p.k = static_cast<const bf16*>(a.k);
  p.v = static_cast<const bf16*>(a.v);
  p.out = static_cast<bf16*>(a.out);
  p.q_block = a.q_block;
  p.k_block = a.k_block;
  p.S = a.S;
  p.Tq = a.Tq;
  p.Tk = a.Tk;
  p.Hq = a.Hq;
  p.Hkv = a.Hkv;
  p.dh = a.Dh;
  p.G = a.Hq / a.Hkv;
  p.R = a.Tq * p.G;
  p.q_stride = q_stride(a);
  p.kv_stride = kv_stride(a);
  const Split sp = pl.sp;
  p.nsplit = sp.nsplit;
  p.tiles_per_split = sp.tiles_per_split;
  p.ws_o = ws;
  p.ws_ml = ws ? ws + (int64_t)a.S * a.Hkv * sp.nsplit * p.R * dhp : nullptr;
  p.scale_log2 = a.scale * kLog2e;
  const int row_tiles = (p.R + kBR - 1) / kBR;
  if (a.Tk == 0) p.nsplit = 1, p.tiles_per_split = 0;
  if (pl.split_kernel) {
    p.debug = attention_debug_phase;
    p.ws_o = p.ws_ml = nullptr;
    switch (dhp * 100 + pl.rw * 10 + pl.kq) {
      case 6424: launch_split<64, 2, 4>(p, s); break;
      case 12824: launch_split<128, 2, 4>(p, s); break;
      case 25642: launch_split<256, 4, 2>(p, s); break;
      case 25632: launch_split<256, 3, 2>(p, s); break;
      case 25644: launch_split<256, 4, 4>(p, s); break;
      case 25624: launch_split<256, 2, 4>(p, s); break;
      case 25634: launch_split<256, 3, 4>(p, s); break;
      case 25622: launch_split<256, 2, 2>(p, s); break;
      default: return false;
    }
    return true;
  }
  const bool use_cluster = sp.cluster && p.nsplit > 1;
  switch (dhp) {
    case 16: launch_fast<16>(p, row_tiles, use_cluster, s); break;
    case 32: launch_fast<32>(p, row_tiles, use_cluster, s); break;
    case 64: launch_fast<64>(p, row_tiles, use_cluster, s); break;
    case 80: launch_fast<80>(p, row_tiles, use_cluster, s); break;
    case 128: launch_fast<128>(p, row_tiles, use_cluster, s); break;
    case 256: launch_fast<256>(p, row_tiles, use_cluster, s); break;
    default: return false;
  }
  return true;
}

void attention_reference(const AttentionArgs& a, cudaStream_t s) {
  PIRT_CHECK(a.Dh <= kRefMaxDh, "attention: head_dim %d > %d", a.Dh, kRefMaxDh);
  const int64_t rows = (int64_t)a.S * a.Tq * a.Hq;
  if (rows == 0) return;
  const int warps = 4;
  attention_reference_kernel<<<blocks_for(rows, warps), warps * 32, 0, s>>>(a);
  CUDA_CHECK_LAUNCH();
}

}  // namespace pirt::cuda
