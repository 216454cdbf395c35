// Attention on Hopper's warpgroup MMA (sm_90a): one KV head of head_dim 256, the query heads packed
// over it (packed row r = t * G + g, as attention.cu). Two kernels share one tile body (tile_softmax,
// tile_pv): the prefix's, many rows (pi0: 8 x 816), below; the action steps', few rows with the keys
// split over a cluster (attention_wgmma_split_kernel, further down).
//
// The prefix kernel:
// A block is two warpgroups over 64 packed rows and every key, in 64-key tiles: warpgroup w takes the
// tiles i with i % 2 == w, so that one's softmax runs while the other's wgmma do, and the two halves
// (running max, sum, unnormalised O) are merged through shared memory at the end.
// - Q (64 x 256) and double-buffered K and V tiles come in through TMA, 128-byte swizzled, each as one
//   copy of four 64-column chunks (tma.cuh tma_load_chunks; wgmma.cuh's layout): 25.0 against 26.0 us
//   with four 2D boxes (bench/RESULTS.md, session 10).
// - S = Q K^T is 16 wgmma m64n64k16 (K is the K-major B operand).
// - The online softmax runs on S's accumulator fragments (a row lives in one quad of a warp), as the
//   flash kernel's: fp32 scores scaled by scale * log2(e), exp2, the row sum in fp32 of the unrounded
//   probabilities, P rounded to bf16.
// - P goes to shared memory in the swizzled K-major layout and O += P V is 8 wgmma m64n128k16 with V
//   as an MN-major ("transposed") B operand: V's tiles are stored as they are, keys x head dim.
// - O (64 x 256 fp32, 128 registers a thread) is normalised and stored as bf16 at the end.
// No warp specialisation: a warpgroup issues the TMA of its next tile (i + 2, into the buffer it
// just freed) once it has consumed tile i, K as soon as S has read it and V after P V (K and V on
// their own barriers: 22.5 against 25.1 us when both waited for P V); the other warpgroup's tile
// covers the wait. (Overlapping
// within one warpgroup, S(i + 1) issued before the softmax of tile i, needs a second S in registers
// next to O's 128: ptxas then used 255 registers and spilled.)
#include <algorithm>
#include <cmath>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/split_merge.cuh"
#include "backends/cuda/tma.cuh"
#include "backends/cuda/wgmma.cuh"

namespace pirt::cuda {
namespace {

constexpr int kRows = 64;     // packed query rows a block
constexpr int kKeys = 64;     // keys a tile
constexpr int kDh = 256;
constexpr int kBox = 64 * 64;  // bf16 elements of one 64 x 64 box (8 KB)
constexpr int kThreads = 256;  // two warpgroups
constexpr int kMaskedKey = 0x3fffffff;  // ops.h AttentionMask::kMaskedKey

struct Smem {
  bf16 q[kDh / 64][kBox];
  bf16 k[2][kDh / 64][kBox];
  bf16 v[2][kDh / 64][kBox];
  bf16 p[2][kBox];  // a warpgroup's P
  uint64_t bar_q, full[2], full_v[2];
};
constexpr size_t kSmemBytes = sizeof(Smem) + 1024;  // (1024-byte alignment of the swizzled boxes)

struct WgmmaAttnArgs {
  CUtensorMap q, k, v;  // [S * R, 256], [S * Tk, 256] x 2
  bf16* out;            // [S * R, 256]
  const int32_t* q_block;
  const int32_t* k_block;
  int R, G, Tq, Tk;
  float scale_log2;
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// D (+)= A B^T-as-stored for V: B MN-major (tnsp-b 1), 128 columns = two 64-wide boxes LBO apart.
__device__ __forceinline__ void wgmma_bf16_n128_tb(float* d, uint64_t desc_a, uint64_t desc_b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b));
}

// Descriptor of an MN-major operand in 128-byte-swizzled 64-wide boxes: 8-row (k) groups 1024 bytes
// apart (stride byte offset), 64-wide boxes along MN `lbo` bytes apart (leading byte offset).
__device__ __forceinline__ uint64_t wgmma_desc_mn(const void* smem_ptr, uint32_t lbo) {
  const uint32_t addr = smem_addr(smem_ptr);
  uint64_t d = 0;
  d |= (uint64_t)((addr & 0x3FFFF) >> 4);
  d |= (uint64_t)((lbo & 0x3FFFF) >> 4) << 16;
  d |= (uint64_t)(1024 >> 4) << 32;
  d |= (uint64_t)1 << 62;
  return d;
}

// One 64-key tile of the online softmax, for a warpgroup's 64 rows (this thread's rows 16 w + g and
// + 8, w its warp in the warpgroup): S = Q K^T (16 wgmma m64n64k16), masked (key j visible to a row
// of block qb iff j < Tk and kblk[j] <= qb; kblk null: every key in range) and scaled by
// scale * log2(e); the running max and sum updated, o rescaled, and P = exp2(S - m) rounded to bf16
// into `p` (swizzled K-major: 16-byte piece c / 8 of row r at (c / 8) ^ (r % 8)). The caller syncs
// the warpgroup before tile_pv reads P.
__device__ __forceinline__ void tile_softmax(const bf16 (*q)[kBox], const bf16 (*k)[kBox], bf16* p, int key0, int Tk,
                                             const int32_t* kblk, const int* qb, float scale_log2, float* m_run,
                                             float* l_run, float (&o)[2][64]) {
  const int lane = threadIdx.x & 31, w = (threadIdx.x >> 5) & 3, g = lane >> 2, t = lane & 3;
  float sc[32];
#pragma unroll
  for (int e = 0; e < 32; ++e) sc[e] = 0.f;
  wgmma_fence();
#pragma unroll
  for (int c = 0; c < kDh / 64; ++c)
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) wgmma_bf16<64>(sc, wgmma_desc(q[c] + ks * 16), wgmma_desc(k[c] + ks * 16), 1);
  wgmma_commit();
  wgmma_wait<0>();
  // Mask and scale; this tile's row max over the quad.
  float tmax[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int e2 = 0; e2 < 2; ++e2) {
      const int key = key0 + 8 * j + 2 * t + e2;
      const int kb = key < Tk ? (kblk ? __ldg(kblk + key) : 0) : kMaskedKey;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        float& x = sc[4 * j + 2 * hh + e2];
        x = kb <= qb[hh] ? x * scale_log2 : -INFINITY;
        tmax[hh] = fmaxf(tmax[hh], x);
      }
    }
  float alpha[2], m_use[2];
  online_softmax_max(tmax, m_run, m_use, alpha);
  float rsum[2] = {0.f, 0.f};
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const float p0 = exp2f(sc[4 * j + 2 * hh] - m_use[hh]), p1 = exp2f(sc[4 * j + 2 * hh + 1] - m_use[hh]);
      rsum[hh] += p0 + p1;
      const int r = 16 * w + g + 8 * hh;
      *reinterpret_cast<uint32_t*>(&p[r * 64 + ((j ^ (r & 7)) << 3) + 2 * t]) = pack_bf16x2(p0, p1);
    }
  online_softmax_sum(rsum, alpha, l_run);
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      o[h][4 * j] *= alpha[0], o[h][4 * j + 1] *= alpha[0];
      o[h][4 * j + 2] *= alpha[1], o[h][4 * j + 3] *= alpha[1];
    }
  fence_proxy_async_smem();  // P's generic stores, before wgmma reads them
}

// O += P V for the tile: k = its 64 keys in four steps of 16 (16 rows of 128 bytes = 2048 bytes a step).
__device__ __forceinline__ void tile_pv(const bf16* p, const bf16 (*v)[kBox], float (&o)[2][64]) {
  wgmma_fence();
#pragma unroll
  for (int ks = 0; ks < 4; ++ks)
#pragma unroll
    for (int h = 0; h < 2; ++h)
      wgmma_bf16_n128_tb(o[h], wgmma_desc(p + ks * 16), wgmma_desc_mn(v[2 * h] + ks * 16 * 64, kBox * 2));
  wgmma_commit();
  wgmma_wait<0>();
}

// This thread's two rows (16 w + g and + 8 of the warpgroup's 64 from row0; packed rows of sequence s):
// their query blocks (-1 past R: they see no key), running max and sum, and O, at their start.
__device__ __forceinline__ void init_rows(const int32_t* q_block, int s, int Tq, int G, int R, int row0, int* qb,
                                          float* m_run, float* l_run, float (&o)[2][64]) {
  const int lane = threadIdx.x & 31, w = (threadIdx.x >> 5) & 3, g = lane >> 2;
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int row = row0 + 16 * w + g + 8 * hh;
    qb[hh] = row < R ? (q_block ? q_block[(int64_t)s * Tq + row / G] : 0) : -1;
    m_run[hh] = -INFINITY;
    l_run[hh] = 0.f;
  }
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int i = 0; i < 64; ++i) o[h][i] = 0.f;
}

// O / l of this thread's rows as bf16 into out (row 0 of the sequence; rows that saw no key: zeros,
// rows past R: not stored).
__device__ __forceinline__ void store_rows(const float (&o)[2][64], const float* l_run, int row0, int R, bf16* out) {
  const int lane = threadIdx.x & 31, w = (threadIdx.x >> 5) & 3, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int row = row0 + 16 * w + g + 8 * hh;
    if (row >= R) continue;
    const float inv = l_run[hh] > 0.f ? 1.f / l_run[hh] : 0.f;
    bf16* dst = out + (int64_t)row * kDh;
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int j = 0; j < 16; ++j)
        *reinterpret_cast<uint32_t*>(dst + h * 128 + 8 * j + 2 * t) =
            pack_bf16x2(o[h][4 * j + 2 * hh] * inv, o[h][4 * j + 2 * hh + 1] * inv);
  }
}
#endif

__global__ void __launch_bounds__(kThreads, 1) attention_wgmma_kernel(const __grid_constant__ WgmmaAttnArgs a) {
#if !defined(__CUDA_ARCH_FEAT_SM90_ALL)
  __trap();  // wgmma and TMA need sm_90a; the host uses this kernel only there
#else
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  Smem& sm = *reinterpret_cast<Smem*>(smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023));
  const int tid = threadIdx.x;
  const int wg = tid >> 7;  // warpgroup: tiles wg, wg + 2, ... in K/V buffer wg
  auto wg_sync = [&] { asm volatile("bar.sync %0, 128;\n" ::"r"(1 + wg) : "memory"); };
  const int row0 = blockIdx.x * kRows, s = blockIdx.y;
  const int ntiles = (a.Tk + kKeys - 1) / kKeys;
  if (tid == 0) {
    mbar_init(&sm.bar_q, 1);
    mbar_init(&sm.full[0], 1);
    mbar_init(&sm.full[1], 1);
    mbar_init(&sm.full_v[0], 1);
    mbar_init(&sm.full_v[1], 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  pdl_wait();
  // K and V of tile i on their own barriers (full, full_v): K is refilled as soon as S has read it.
  auto issue_k = [&](int i) {
    const int b = i & 1;
    mbar_arrive_expect(&sm.full[b], (kDh / 64) * kBox * 2);
    tma_load_chunks(sm.k[b][0], &a.k, s * a.Tk + i * kKeys, &sm.full[b]);
  };
  auto issue_v = [&](int i) {
    const int b = i & 1;
    mbar_arrive_expect(&sm.full_v[b], (kDh / 64) * kBox * 2);
    tma_load_chunks(sm.v[b][0], &a.v, s * a.Tk + i * kKeys, &sm.full_v[b]);
  };
  auto issue_kv = [&](int i) { issue_k(i), issue_v(i); };
  if (tid == 0) {
    mbar_arrive_expect(&sm.bar_q, (kDh / 64) * kBox * 2);
    tma_load_chunks(sm.q[0], &a.q, s * a.R + row0, &sm.bar_q);
    for (int i = 0; i < 2 && i < ntiles; ++i) issue_kv(i);
  }
  pdl_trigger();

  // This thread's two rows: 16 w + g and 16 w + g + 8 of the block's 64 (the same in both warpgroups).
  int qb[2];
  float m_run[2], l_run[2], o[2][64];
  init_rows(a.q_block, s, a.Tq, a.G, a.R, row0, qb, m_run, l_run, o);
  mbar_wait(&sm.bar_q, 0);

#pragma unroll 1
  for (int i = wg; i < ntiles; i += 2) {
    const int b = wg;
    mbar_wait(&sm.full[b], (i >> 1) & 1);
    tile_softmax(sm.q, sm.k[b], sm.p[wg], i * kKeys, a.Tk, a.k_block ? a.k_block + (int64_t)s * a.Tk : nullptr, qb,
                 a.scale_log2, m_run, l_run, o);
    wg_sync();
    if ((tid & 127) == 0 && i + 2 < ntiles) issue_k(i + 2);  // K (buffer b) read by the warpgroup's S
    mbar_wait(&sm.full_v[b], (i >> 1) & 1);
    tile_pv(sm.p[wg], sm.v[b], o);
    wg_sync();  // V (buffer b) and P consumed by the warpgroup
    if ((tid & 127) == 0 && i + 2 < ntiles) issue_v(i + 2);
  }

  // Merge: warpgroup 1 leaves its (max, sum) and O in shared memory (over the K/V buffers, free once
  // both are done), thread-major; warpgroup 0 rescales both halves to the common max and adds.
  __syncthreads();
  float* ob = reinterpret_cast<float*>(&sm.k[0][0][0]);  // [128 values][128 threads]
  float* mb = ob + 128 * 128;                            // [4][128 threads]: m, l of both rows
  const int wt = tid & 127;
  if (wg == 1) {
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int i = 0; i < 64; ++i) ob[(h * 64 + i) * 128 + wt] = o[h][i];
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) mb[hh * 128 + wt] = m_run[hh], mb[(2 + hh) * 128 + wt] = l_run[hh];
  }
  __syncthreads();
  if (wg == 1) return;
  float f0[2], f1[2];
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const float m1 = mb[hh * 128 + wt], l1 = mb[(2 + hh) * 128 + wt];
    const float m = fmaxf(m_run[hh], m1), m_use = m == -INFINITY ? 0.f : m;
    f0[hh] = exp2f(m_run[hh] - m_use), f1[hh] = exp2f(m1 - m_use);
    l_run[hh] = l_run[hh] * f0[hh] + l1 * f1[hh];
  }
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int i = 0; i < 64; ++i) {
      const int hh = (i >> 1) & 1;  // fragment element 4j + e holds row g + 8 (e / 2)
      o[h][i] = o[h][i] * f0[hh] + ob[(h * 64 + i) * 128 + wt] * f1[hh];
    }

  store_rows(o, l_run, row0, a.R, a.out + (int64_t)s * a.R * kDh);
#endif
}

// ---- the action steps: few query rows over one KV head, keys split over a cluster ----
// pi0's step is 8 heads x 51 queries = 408 packed rows (7 row tiles of 64) over ~867 keys (14 tiles).
// A block is one warpgroup over one row tile and `per` consecutive key tiles (one, up to 16 tiles),
// the key splits of a row tile a thread-block cluster (along z). Q, K and V come in through TMA on
// three mbarriers, so S = Q K^T starts before V has landed, and the next tile's K (V) is issued as
// soon as this tile's S (P V) has read the buffer. Each block leaves its unnormalised O (bf16) and
// (max, sum) in shared memory; block `rank` of the cluster finishes columns [rank, rank + 1) * 256 / cs
// of the 64 rows through DSMEM, as the mma.sync split kernel does (attention.cu). Against that kernel
// (32-row tiles, 7 splits of two tiles, K/V by cp.async: 144 KB a block through the L1 path): half
// the row tiles, so half the K/V bytes read from L2, and bulk copies for what is left. The merge
// (~4 us of ~9.4) moves the block's whole O however it is split (32 KB in bf16); pushing it by bulk
// copies or going through L2 (plain or TMA stores and loads) measured slower (docs/cuda.md).
// bf16 a row of the merge's O (16-byte pad: conflict-free stores). bf16, not fp32: the merge moves
// each block's whole O through DSMEM and is bound by those bytes (bench/RESULTS.md, session 11); one
// more bf16 rounding of each split's partial sum, below the output's own.
constexpr int kOStride = kDh + 8;

struct SplitSmem {
  bf16 q[kDh / 64][kBox];
  bf16 k[kDh / 64][kBox];
  bf16 v[kDh / 64][kBox];  // q, k, v adjacent: the merge's bf16 O [64][kOStride] over them
  bf16 p[kBox];
  float ml[kRows][2];
  float wts[kRows][kMaxMergeSplits];
  uint64_t bar_q, bar_k, bar_v;
};
static_assert(sizeof(bf16) * kRows * kOStride <= 3 * sizeof(bf16) * kDh * kRows, "O must fit over q, k, v");
constexpr size_t kSplitSmemBytes = sizeof(SplitSmem) + 1024;

struct SplitArgs {
  CUtensorMap q, k, v;
  bf16* out;
  const int32_t* q_block;
  const int32_t* k_block;
  int R, G, Tq, Tk, per;
  float scale_log2;
};

__global__ void __launch_bounds__(128, 1) attention_wgmma_split_kernel(const __grid_constant__ SplitArgs a) {
#if !defined(__CUDA_ARCH_FEAT_SM90_ALL)
  __trap();  // wgmma, TMA and clusters need sm_90a; the host uses this kernel only there
#else
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  SplitSmem& sm = *reinterpret_cast<SplitSmem*>(smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023));
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t = lane & 3;
  const int row0 = blockIdx.x * kRows, s = blockIdx.y;
  const int ntiles = (a.Tk + kKeys - 1) / kKeys;
  const int tile_begin = blockIdx.z * a.per, tile_end = min(ntiles, tile_begin + a.per);
  if (tid == 0) {
    mbar_init(&sm.bar_q, 1);
    mbar_init(&sm.bar_k, 1);
    mbar_init(&sm.bar_v, 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  pdl_wait();
  auto issue = [&](uint64_t* bar, const CUtensorMap* m, bf16 (*dst)[kBox], int row) {
    mbar_arrive_expect(bar, (kDh / 64) * kBox * 2);
    tma_load_chunks(dst[0], m, row, bar);
  };
  if (tid == 0) {
    issue(&sm.bar_q, &a.q, sm.q, s * a.R + row0);
    if (tile_begin < tile_end) {
      issue(&sm.bar_k, &a.k, sm.k, s * a.Tk + tile_begin * kKeys);
      issue(&sm.bar_v, &a.v, sm.v, s * a.Tk + tile_begin * kKeys);
    }
  }
  pdl_trigger();

  int qb[2];
  float m_run[2], l_run[2], o[2][64];
  init_rows(a.q_block, s, a.Tq, a.G, a.R, row0, qb, m_run, l_run, o);
  mbar_wait(&sm.bar_q, 0);
  const int32_t* kblk = a.k_block ? a.k_block + (int64_t)s * a.Tk : nullptr;
#pragma unroll 1
  for (int i = tile_begin; i < tile_end; ++i) {
    const int n = i - tile_begin, key = s * a.Tk + (i + 1) * kKeys;
    mbar_wait(&sm.bar_k, n & 1);
    tile_softmax(sm.q, sm.k, sm.p, i * kKeys, a.Tk, kblk, qb, a.scale_log2, m_run, l_run, o);
    __syncthreads();  // K read by every warp's wgmma, P written
    if (tid == 0 && i + 1 < tile_end) issue(&sm.bar_k, &a.k, sm.k, key);
    mbar_wait(&sm.bar_v, n & 1);
    tile_pv(sm.p, sm.v, o);
    __syncthreads();  // V and P consumed
    if (tid == 0 && i + 1 < tile_end) issue(&sm.bar_v, &a.v, sm.v, key);
  }

  bf16* out = a.out + (int64_t)s * a.R * kDh;
  if (gridDim.z == 1) {  // one split
    store_rows(o, l_run, row0, a.R, out);
    return;
  }
  // The splits' unnormalised O and (max, sum) of each row, for the cluster merge (split_merge.cuh).
  bf16* ob = &sm.q[0][0];  // q, k, v are free (the loop's last sync)
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int r = 16 * w + g + 8 * hh;
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int j = 0; j < 16; ++j)
        *reinterpret_cast<uint32_t*>(ob + r * kOStride + h * 128 + 8 * j + 2 * t) =
            pack_bf16x2(o[h][4 * j + 2 * hh], o[h][4 * j + 2 * hh + 1]);
    if (t == 0) sm.ml[r][0] = m_run[hh], sm.ml[r][1] = l_run[hh];
  }
  cluster_merge<kRows, kDh, 128>(ob, kOStride, sm.ml, sm.wts, kDh,
                                 [&](int r) -> bf16* { return row0 + r < a.R ? out + (int64_t)(row0 + r) * kDh : nullptr; });
#endif
}

// Key splits a row tile: every tile its own split up to the largest cluster the device schedules.
// (Also sets the kernel's shared-memory limit, which its launch needs.)
int max_split_cluster() {
  static const int maxc = [] {
    if (big_merge_clusters_ok(attention_wgmma_split_kernel, 128, kSplitSmemBytes)) return kMaxMergeSplits;
    CUDA_CHECK(cudaFuncSetAttribute(attention_wgmma_split_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)kSplitSmemBytes));
    return 8;
  }();
  return maxc;
}

// The arguments both kernels take (WgmmaAttnArgs, SplitArgs): sizes, q / k / v as TMA maps of
// 64-row and 64-key boxes, output, mask, scale.
template <class Args>
void set_tile_args(const AttentionArgs& a, Args& w) {
  w.R = a.Tq * a.Hq;
  w.G = a.Hq;
  w.Tq = a.Tq;
  w.Tk = a.Tk;
  w.q = make_tma_map_chunks(a.q, (int64_t)a.S * w.R, kDh, kRows, kDh / 64);
  w.k = make_tma_map_chunks(a.k, (int64_t)a.S * a.Tk, kDh, kKeys, kDh / 64);
  w.v = make_tma_map_chunks(a.v, (int64_t)a.S * a.Tk, kDh, kKeys, kDh / 64);
  w.out = static_cast<bf16*>(a.out);
  w.q_block = a.q_block;
  w.k_block = a.k_block;
  w.scale_log2 = a.scale * 1.4426950408889634f;
}

}  // namespace

bool attention_wgmma_supported(const AttentionArgs& a) {
  return a.Dh == kDh && a.Hkv == 1 && a.Hq >= 1 && a.S >= 1 && a.Tq >= 1 && a.Tk >= 1 &&
         (a.q_stride == 0 || a.q_stride == (int64_t)a.Hq * a.Dh) && (a.kv_stride == 0 || a.kv_stride == a.Dh) &&
         reinterpret_cast<uintptr_t>(a.q) % 16 == 0 && reinterpret_cast<uintptr_t>(a.k) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(a.v) % 16 == 0 && reinterpret_cast<uintptr_t>(a.out) % 4 == 0;
}

void attention_wgmma(const AttentionArgs& a, cudaStream_t s) {
  PIRT_CHECK(attention_wgmma_supported(a), "attention_wgmma: unsupported shape (head dim %d, %d KV heads)", a.Dh,
             a.Hkv);
  static bool attr_set = false;
  if (!attr_set) {
    CUDA_CHECK(cudaFuncSetAttribute(attention_wgmma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kSmemBytes));
    attr_set = true;
  }
  WgmmaAttnArgs w;
  set_tile_args(a, w);
  launch(attention_wgmma_kernel, dim3((w.R + kRows - 1) / kRows, a.S), dim3(kThreads), kSmemBytes, s, 1, w);
}

void attention_wgmma_split(const AttentionArgs& a, cudaStream_t s, int force_splits) {
  PIRT_CHECK(attention_wgmma_supported(a), "attention_wgmma_split: unsupported shape (head dim %d, %d KV heads)",
             a.Dh, a.Hkv);
  const int maxc = max_split_cluster();  // (also sets the kernel's attributes)
  const int ntiles = (a.Tk + kKeys - 1) / kKeys;  // (Tk >= 1: attention_wgmma_supported)
  int ns = std::min({force_splits > 0 ? force_splits : ntiles, ntiles, maxc});
  const int per = (ntiles + ns - 1) / ns;
  ns = (ntiles + per - 1) / per;  // no empty splits
  SplitArgs w;
  set_tile_args(a, w);
  w.per = per;
  launch(attention_wgmma_split_kernel, dim3((w.R + kRows - 1) / kRows, a.S, ns), dim3(128), kSplitSmemBytes, s,
         dim3(1, 1, ns), w);
}

}  // namespace pirt::cuda
