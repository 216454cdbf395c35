// The action expert's block tail as one persistent kernel (Backend::gemma_block_tail, ops.h):
//
//   G1  partials = attn . wo^T                  (64-column units, k split over `splits_o`)
//   R1  h = bf16(h + sum partials); xn = rms_norm(h, ffn_norm)  (and G4's RoPE (cos, sin) table)
//       (pi0.5: h = bf16(h + bf16(sum) * gate); xn = ada_rms_norm(h, mod): R1 and R2 alike)
//   G2  mlp = gelu_tanh(xn . wg^T) * (xn . wu^T)  (a unit holds 32 gate and the same 32 up columns)
//   G3  partials = mlp . wd^T                   (k split over `splits_d`)
//   R2  h = bf16(h + sum partials); xn = rms_norm(h, next_norm)
//   G4  q, k, v = RoPE(xn . wqkv^T)             (a unit holds 16 columns of a head and their RoPE
//                                                partners 128 further; optional)
//
// One block per SM, every block resident (a cooperative launch); the phases are separated by a grid
// barrier. Why: at 51 rows each of these ops is a few microseconds of weight streaming, and as
// separate kernels each also paid launch, ramp-up and tail (about 2 us each, ten kernels a layer).
// (Issuing the next phase's weights before its barrier, or bringing them into L2 early, measured
// slower: bench/RESULTS.md, sessions 3, 4, 7 and 8.)
//
// With `pdl` the launch is a programmatic dependent of the attention before it: blocks start on the
// SMs the attention leaves idle (or as its blocks leave), issue their first G1 weights and only then
// wait for it. 0.5-0.7% end to end (bench/RESULTS.md, session 8). With `trigger` (the global --pdl),
// the next attention may launch once G4 starts and wait there; by default it launches after this
// kernel, which measured 5-6% faster (sessions 5 and 10).
//
// GEMM units are the small-M GEMM's (gemm_small.cu) scheme: x is the 64-row A operand of wgmma
// (rows >= M zero), a unit's 32 or 64 weight rows the B operand, 64-wide k chunks through a TMA
// pipeline (mbarriers) in the 128-byte-swizzled layout, each of the two warpgroups computing half of
// the unit's columns. The kernel's code size is part of its speed (docs/cuda.md): keep debug
// branches and extra instantiations out of it. Every sum is in fp32 and every intermediate is rounded to bf16 where the unfused path
// stores it (h, xn, gate / up, mlp, qkv), so the results match the separate ops up to the order of
// fp32 additions. The k-split sums are added in split order (deterministic).
#include <algorithm>
#include <type_traits>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/mma.cuh"
#include "backends/cuda/tma.cuh"
#include "backends/cuda/wgmma.cuh"

namespace pirt::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBK = 64;                                 // k a chunk
// Columns a unit of the k-split projections (output, down) takes: 64 halves the x each unit reads
// per weight byte against 32 (x is 64 rows of k a chunk, whatever the unit's width).
constexpr int kSplitBN = 64;
constexpr int kStages = 12;                             // pipeline depth (11 chunks prefetched)
constexpr int kWRows = 64;                              // weight rows a stage holds (units of 32 or 64)
constexpr int kStageElems = (kWRows + 64) * kBK;        // weight tile, then the 64-row x tile
constexpr int kScratchFloats = 16 * 128;                // the accumulators the warpgroups hand each other
constexpr size_t kSmemBytes = (size_t)kStages * kStageElems * 2 + kScratchFloats * 4 + kStages * 8 + 1024;

// A GEMM unit: weight rows [ra, ra + BN/2) (warpgroup 0's columns) and [rb, rb + BN/2) (warpgroup
// 1's), k chunks [c0, c1).
struct Unit {
  int ra, rb, c0, c1;
};

// The operands as TMA tensor maps (2D, 64-element k boxes, 128-byte swizzle; x boxes are 64 rows,
// the rows past M read as zeros).
enum Map { kAttn, kWo, kXn, kWgu, kMlp, kWd, kWqkv, kMaps };
struct TailArgs {
  BlockTailParams b;
  CUtensorMap map[kMaps];
};

#if !defined(__CUDA_ARCH__) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
// The thread that issues the TMA copies (not thread 0, which runs the grid barrier).
constexpr int kProducer = 32;

// The block's pipeline: stage i's full barrier, and the number of chunks it has consumed so far
// (chunk number g uses stage g % kStages in phase g / kStages).
struct Pipe {
  bf16* smem;
  uint64_t* full;
  int g;
  uint64_t evict_first;  // L2 policy of the weight loads (createpolicy)
};

// Chunk c of unit u (the block's chunk number g), in two halves: issue_w arms the stage for the
// whole chunk and issues its weight rows, issue_x its x tile (gemm_unit's `pre` issues the weights
// early, the x tile once the data is there); issue does both.
template <int BN>
__device__ __forceinline__ void issue_w(const Pipe& pp, const CUtensorMap* tw, const Unit& u, int c, int g) {
  const int slot = g % kStages;
  bf16* st = pp.smem + slot * kStageElems;
  uint64_t* bar = pp.full + slot;
  const int k0 = (u.c0 + c) * kBK;
  mbar_arrive_expect(bar, (BN + 64) * kBK * 2);
  tma_load_hint(st, tw, k0, u.ra, bar, pp.evict_first);
  tma_load_hint(st + (BN / 2) * kBK, tw, k0, u.rb, bar, pp.evict_first);
}
__device__ __forceinline__ void issue_x(const Pipe& pp, const CUtensorMap* tx, const Unit& u, int c, int g) {
  const int slot = g % kStages;
  tma_load(pp.smem + slot * kStageElems + kWRows * kBK, tx, (u.c0 + c) * kBK, 0, pp.full + slot);
}
template <int BN>
__device__ __forceinline__ void issue(const Pipe& pp, const CUtensorMap* tw, const CUtensorMap* tx, const Unit& u, int c,
                                      int g) {
  issue_w<BN>(pp, tw, u, c, g);
  issue_x(pp, tx, u, c, g);
}

// acc (BN / 4 floats a thread) = x[0:64, k range] . w[unit rows, k range]^T; warpgroup wg holds
// columns [wg * BN / 2, (wg + 1) * BN / 2) of the unit (wgmma.cuh gives the fragment layout). The
// wgmma of chunk c runs while the block waits for chunk c + 1 and refills chunk c - 1's stage.
template <int BN>
__device__ void gemm_unit(Pipe& pp, const CUtensorMap* tw, const CUtensorMap* tx, const Unit& u, float* acc, int pre = 0) {
  constexpr int HN = BN / 2, SETS = 4;
  const int wg = threadIdx.x >> 7;
  const int nch = u.c1 - u.c0;
  if (threadIdx.x == kProducer) {
    fence_proxy_async_global();  // the previous phase's generic stores (other blocks'), before TMA reads
#pragma unroll 1  // (code size: every instruction fetched after a phase's weights went through L2 costs)
    for (int c = 0; c < kStages && c < nch; ++c) {
      if (c < pre)  // weights already on their way (issue_w): the x tile alone
        issue_x(pp, tx, u, c, pp.g + c);
      else
        issue<BN>(pp, tw, tx, u, c, pp.g + c);
    }
  }
  float part[SETS][HN / 2];
#pragma unroll
  for (int s2 = 0; s2 < SETS; ++s2)
#pragma unroll
    for (int i = 0; i < HN / 2; ++i) part[s2][i] = 0.f;
#pragma unroll 1
  for (int c = 0; c < nch; ++c) {
    const int g = pp.g + c, slot = g % kStages;
    mbar_wait(pp.full + slot, (g / kStages) & 1);
    const bf16* ws = pp.smem + slot * kStageElems;
    const bf16* xs = ws + kWRows * kBK;
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < 4; ++ks)
      wgmma_bf16<HN>(part[ks % SETS], wgmma_desc(xs + ks * 16), wgmma_desc(ws + wg * HN * kBK + ks * 16), 1);
    wgmma_commit();
    wgmma_wait<1>();  // chunk c - 1's math is done (this warpgroup)
    __syncthreads();  // ... and the other's: its stage can be refilled
    if (threadIdx.x == kProducer && c >= 1 && c - 1 + kStages < nch)
      issue<BN>(pp, tw, tx, u, c - 1 + kStages, g - 1 + kStages);
  }
  wgmma_wait_all();
#pragma unroll
  for (int i = 0; i < HN / 2; ++i) {
    float v = part[0][i];
#pragma unroll
    for (int s2 = 1; s2 < SETS; ++s2) v += part[s2][i];
    acc[i] = v;
  }
  __syncthreads();  // every stage free again
  pp.g += nch;
}

// Every launch arrives at the grid barrier (common.cuh) exactly kBarriers times a block.
constexpr int kBarriers = 5;

// A row phase: rows across the grid, a block a row (common.cuh residual_rms_norm_row), VEC = D / 256.
// pi0.5 (adaRMS): gate and shift set, w the scale (common.cuh).
template <int VEC>
__device__ void row_phase(const float* partials, int splits, bf16* h, const float* w, bf16* xn, int M, int D,
                          float eps, const float* gate, const float* shift) {
#pragma unroll 1
  for (int m = blockIdx.x; m < M; m += gridDim.x)
    residual_rms_norm_row<VEC, kMaxBlockTailSplits>(partials, splits, (int64_t)M * D, h, w, xn, m, D, eps, gate,
                                                    shift);
}

// The norm weights are F32 (as the model loads them; the backend sends other dtypes to the
// separate ops): one instantiation a VEC. A second copy of each for BF16 weights made the whole
// kernel slower, every GEMM phase included (39.7 vs 36.2 us a layer on the H100: its code grew).
__device__ __noinline__ void row_phase_any(const float* partials, int splits, bf16* h, const float* w, bf16* xn, int M, int D,
                              float eps, const float* gate, const float* shift) {
  switch (D / kThreads) {
    case 1: row_phase<1>(partials, splits, h, w, xn, M, D, eps, gate, shift); break;
    case 2: row_phase<2>(partials, splits, h, w, xn, M, D, eps, gate, shift); break;
    case 4: row_phase<4>(partials, splits, h, w, xn, M, D, eps, gate, shift); break;
    default: row_phase<8>(partials, splits, h, w, xn, M, D, eps, gate, shift); break;
  }
}
#endif

}  // namespace

__global__ void __launch_bounds__(kThreads, 1) block_tail_kernel(const __grid_constant__ TailArgs args) {
  const BlockTailParams& p = args.b;
#if !defined(__CUDA_ARCH_FEAT_SM90_ALL)
  __trap();  // wgmma needs sm_90a; the host uses this kernel only there
#else
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* base = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  bf16* smem = reinterpret_cast<bf16*>(base);
  float* scratch = reinterpret_cast<float*>(base + (size_t)kStages * kStageElems * 2);
  uint64_t* full = reinterpret_cast<uint64_t*>(scratch + kScratchFloats);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2, wt = tid & 127;
  const int bid = blockIdx.x, grid = gridDim.x;
  const int M = p.M, D = p.D, F = p.F;
  const CUtensorMap* mp = args.map;
  const bool has_qkv = p.wqkv != nullptr;
  bf16* h = static_cast<bf16*>(p.h);
  bf16* xn = static_cast<bf16*>(p.xn);
  bf16* mlp = static_cast<bf16*>(p.mlp);

  unsigned long long* timing = p.timing;
  stamp(timing, kTailStamps, 0);
  unsigned long long target = 0;
  if (tid == 0) {
    for (int i = 0; i < kStages; ++i) mbar_init(full + i, 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  uint64_t evict_first;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(evict_first));
  Pipe pp{smem, full, 0, evict_first};

  // Thread (warp w of warpgroup wg, lane 4g + t): acc[4j + e] = D[16 (w % 4) + g + 8 (e / 2)][8j + 2t + e % 2]
  // of its warpgroup's columns.
  const int g = lane >> 2, t = lane & 3, row0 = (warp & 3) * 16 + g;
  float acc[16];

  const int tiles_d = D / kSplitBN;
  const int ko_ch = p.Ko / kBK, f_ch = F / kBK, d_ch = D / kBK;
  const int units_o = tiles_d * p.splits_o, units_gu = F / 32, units_d = tiles_d * p.splits_d;
  const int half = p.head_dim / 2, per_head = half / 16;
  const int slots = p.heads + 2 * p.kv_heads, units_qkv = has_qkv ? slots * per_head : 0;
  auto unit_split = [&](int u, int nch, int splits) {  // column tile u % tiles_d, k split u / tiles_d
    const int tile = u % tiles_d, sp = u / tiles_d;
    const int c0 = sp * nch / splits, c1 = (sp + 1) * nch / splits;
    return Unit{tile * kSplitBN, tile * kSplitBN + kSplitBN / 2, c0, c1};
  };
  auto unit_gu = [&](int u) { return Unit{u * 32, F + u * 32, 0, d_ch}; };
  // The block's first output-projection unit's weights do not depend on the kernel before (the
  // attention): issue them before waiting for it (a programmatic dependent launch; pdl_wait is a
  // no-op otherwise).
  int pre_o = 0;
  if (tid == kProducer && bid < units_o) {
    const Unit u = unit_split(bid, ko_ch, p.splits_o);
    pre_o = u.c1 - u.c0 < kStages ? u.c1 - u.c0 : kStages;
#pragma unroll 1
    for (int c = 0; c < pre_o; ++c) issue_w<kSplitBN>(pp, mp + kWo, u, c, c);
  }
  pdl_wait();
  if (tid == 0) target = grid_barrier_base(p.barrier, kBarriers);
  auto unit_qkv = [&](int u) {
    const int a = (u / per_head) * p.head_dim + (u % per_head) * 16;
    return Unit{a, a + half, 0, d_ch};
  };
  // Partial sums of a kSplitBN-column unit to partials[split][m][n].
  auto store_partials = [&](int u) {
    const int tile = u % tiles_d, sp = u / tiles_d;
    float* dst = p.partials + (int64_t)sp * M * D + tile * kSplitBN + wg * (kSplitBN / 2) + 2 * t;
#pragma unroll
    for (int j = 0; j < kSplitBN / 16; ++j)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int m = row0 + 8 * hh;
        if (m < M)
          *reinterpret_cast<float2*>(dst + (int64_t)m * D + j * 8) = make_float2(acc[4 * j + 2 * hh], acc[4 * j + 2 * hh + 1]);
      }
  };
  // The paired epilogues (GeGLU, RoPE): column j of warpgroup 0's half pairs with column j of warpgroup
  // 1's. Each warpgroup finishes half of the pairs: warpgroup 0 the first HN / 16 column groups of 8,
  // warpgroup 1 the rest; they hand each other the other half of their accumulators through `scratch`
  // (thread-major, conflict-free). f(m, c, x, y) is called for each row m < M and pair of adjacent
  // columns c, c + 1 of the HN: x warpgroup 0's sums, y warpgroup 1's, both rounded to bf16 as the
  // separate GEMM stores them.
  auto paired_epilogue = [&](auto hn, auto&& f) {
    constexpr int HN = decltype(hn)::value, J = HN / 8, JH = J / 2, Q = JH * 4;  // Q floats handed over
    float* give = scratch + wg * Q * 128;
    const float* take = scratch + (1 - wg) * Q * 128;
#pragma unroll
    for (int q = 0; q < Q; ++q) give[q * 128 + wt] = wg == 0 ? acc[Q + q] : acc[q];  // (constant indices)
    __syncthreads();
#pragma unroll
    for (int jj = 0; jj < JH; ++jj)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int m = row0 + 8 * hh, j = wg * JH + jj, i = 4 * jj + 2 * hh;
        if (m >= M) continue;
        float x[2], y[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float own = wg == 0 ? acc[i + e] : acc[Q + i + e], other = take[(i + e) * 128 + wt];
          x[e] = ld_rounded<bf16>(wg == 0 ? own : other);
          y[e] = ld_rounded<bf16>(wg == 0 ? other : own);
        }
        f(m, 8 * j + 2 * t, x, y);
      }
    __syncthreads();  // scratch is read before the next unit overwrites it
  };

  // ---- G1: attn . wo^T -> partials ----
#pragma unroll 1
  for (int u = bid; u < units_o; u += grid) {
    gemm_unit<kSplitBN>(pp, mp + kWo, mp + kAttn, unit_split(u, ko_ch, p.splits_o), acc, u == bid ? pre_o : 0);
    store_partials(u);
  }
  stamp(timing, kTailStamps, 1);
  grid_barrier(p.barrier, target);
  stamp(timing, kTailStamps, 2);
  // ---- R1 (and G4's RoPE table: cos, sin of every row's position and pair) ----
  const bool ada = p.mod_attn != nullptr;  // pi0.5: gated residuals, adaptive norms
  if (ada)
    row_phase_any(p.partials, p.splits_o, h, p.mod_ffn, xn, M, D, p.eps, p.mod_attn + 2 * D, p.mod_ffn + D);
  else
    row_phase_any(p.partials, p.splits_o, h, p.ffn_norm, xn, M, D, p.eps, nullptr, nullptr);
  if (has_qkv)  // from the last block down: the row phase's blocks are the first M
    for (int i = (grid - 1 - bid) * kThreads + tid; i < M * half; i += grid * kThreads) {
      float sn, cs;
      rope_sincos(p.positions[i / half], i % half, p.head_dim, &sn, &cs);
      p.rope[i] = make_float2(cs, sn);
    }
  stamp(timing, kTailStamps, 3);
  grid_barrier(p.barrier, target);
  stamp(timing, kTailStamps, 4);
  // ---- G2: xn . [wg | wu]^T -> GeGLU -> mlp ----
#pragma unroll 1
  for (int u = bid; u < units_gu; u += grid) {
    gemm_unit<64>(pp, mp + kWgu, mp + kXn, unit_gu(u), acc);
    paired_epilogue(std::integral_constant<int, 32>{}, [&](int m, int c, const float* gt, const float* up) {
      *reinterpret_cast<uint32_t*>(mlp + (int64_t)m * F + u * 32 + c) =
          pack_bf16x2(gelu_tanh(gt[0]) * up[0], gelu_tanh(gt[1]) * up[1]);
    });
  }
  stamp(timing, kTailStamps, 5);
  grid_barrier(p.barrier, target);
  stamp(timing, kTailStamps, 6);
  // ---- G3: mlp . wd^T -> partials ----
#pragma unroll 1
  for (int u = bid; u < units_d; u += grid) {
    gemm_unit<kSplitBN>(pp, mp + kWd, mp + kMlp, unit_split(u, f_ch, p.splits_d), acc);
    store_partials(u);
  }
  stamp(timing, kTailStamps, 7);
  grid_barrier(p.barrier, target);
  stamp(timing, kTailStamps, 8);
  // ---- R2 ----
  if (ada)
    row_phase_any(p.partials, p.splits_d, h, p.next_mod, xn, M, D, p.eps, p.mod_ffn + 2 * D, p.next_mod + D);
  else
    row_phase_any(p.partials, p.splits_d, h, p.next_norm, xn, M, D, p.eps, nullptr, nullptr);
  stamp(timing, kTailStamps, 9);
  grid_barrier(p.barrier, target, has_qkv);  // (kBarriers arrivals a launch either way)
  stamp(timing, kTailStamps, 10);
  if (p.trigger) pdl_trigger();  // the next attention may take the SMs G4 leaves idle (and wait there)
  if (!has_qkv) return;
  // ---- G4: xn . wqkv^T -> RoPE -> q, k, v ----
#pragma unroll 1
  for (int u = bid; u < units_qkv; u += grid) {
    gemm_unit<32>(pp, mp + kWqkv, mp + kXn, unit_qkv(u), acc);
    const int slot = u / per_head, i0 = (u % per_head) * 16;
    const bool rot = slot < p.heads + p.kv_heads;
    bf16* dst;
    int64_t stride;
    if (slot < p.heads) {
      dst = static_cast<bf16*>(p.q) + (int64_t)slot * p.head_dim, stride = (int64_t)p.heads * p.head_dim;
    } else if (rot) {
      dst = static_cast<bf16*>(p.k) + (int64_t)(slot - p.heads) * p.head_dim, stride = (int64_t)p.kv_heads * p.head_dim;
    } else {
      dst = static_cast<bf16*>(p.v) + (int64_t)(slot - p.heads - p.kv_heads) * p.head_dim, stride = (int64_t)p.kv_heads * p.head_dim;
    }
    // Pair index i of a head: x = element i, y = element i + half.
    paired_epilogue(std::integral_constant<int, 16>{}, [&](int m, int c, const float* x1, const float* x2) {
      const int i = i0 + c;
      float y1[2], y2[2];
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        if (rot) {
          const float2 r = p.rope[m * half + i + e];  // (cos, sin)
          y1[e] = x1[e] * r.x - x2[e] * r.y;
          y2[e] = x2[e] * r.x + x1[e] * r.y;
        } else {
          y1[e] = x1[e], y2[e] = x2[e];
        }
      }
      bf16* row = dst + (int64_t)m * stride;
      *reinterpret_cast<uint32_t*>(row + i) = pack_bf16x2(y1[0], y1[1]);
      *reinterpret_cast<uint32_t*>(row + i + half) = pack_bf16x2(y2[0], y2[1]);
    });
  }
  stamp(timing, kTailStamps, 11);
#endif
}

bool block_tail_supported(int M, int D, int F, int Ko, int heads, int kv_heads, int head_dim) {
  const int vec = D / kThreads;
  return M >= 1 && M <= 64 && D % kThreads == 0 && (vec == 1 || vec == 2 || vec == 4 || vec == 8) && D % 64 == 0 && F % 64 == 0 &&
         Ko % 64 == 0 && heads >= 0 && kv_heads >= 0 && (head_dim == 0 || head_dim % 32 == 0);
}

void block_tail(BlockTailParams p, int num_sms, cudaStream_t s) {
  const int tiles_d = p.D / kSplitBN;
  // k splits of the two column-tiled projections: enough units to give every SM one.
  auto splits_for = [&](int k) { return std::clamp(num_sms / tiles_d, 1, std::min(kMaxBlockTailSplits, k / kBK)); };
  p.splits_o = splits_for(p.Ko);
  p.splits_d = splits_for(p.F);
  TailArgs a;
  a.b = p;
  a.map[kAttn] = make_tma_map(p.attn, p.M, p.Ko, 64);
  a.map[kWo] = make_tma_map(p.wo, p.D, p.Ko, kSplitBN / 2);
  a.map[kXn] = make_tma_map(p.xn, p.M, p.D, 64);
  a.map[kWgu] = make_tma_map(p.wgu, 2 * (int64_t)p.F, p.D, 32);
  a.map[kMlp] = make_tma_map(p.mlp, p.M, p.F, 64);
  a.map[kWd] = make_tma_map(p.wd, p.D, p.F, kSplitBN / 2);
  a.map[kWqkv] = p.wqkv ? make_tma_map(p.wqkv, (int64_t)(p.heads + 2 * p.kv_heads) * p.head_dim, p.D, 16) : a.map[kWd];
  launch_cooperative(block_tail_kernel, num_sms, kThreads, kSmemBytes, s, a, p.pdl);
}

}  // namespace pirt::cuda
