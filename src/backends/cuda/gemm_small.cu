// The weight-streaming bf16 GEMM for few rows (the action expert's steps: m = 51).
//
// out[m, n] = ep(sum_k x[m, k] w[n, k] + bias[n]) + residual[m, n], m <= 64.
//
// Each step of the action expert reads every weight once (0.62 GB a step) and does little arithmetic
// per byte, so the floor is HBM bandwidth. cuBLASLt streams these shapes at 0.56-1.6 TB/s (too few
// output tiles to fill 132 SMs; see shared/perf/cublaslt-h100.md). Here:
// - A block is 8 warps; each warp owns 32 rows of w (two m16 tiles) and CW chunks of 32 k. The
//   block's warps are laid out (8/wk) along n by wk along k, and the grid splits k further, so that
//   every SM has blocks and every weight byte is loaded exactly once.
// - Each thread issues all its weight loads (16 bytes each, L1 bypassed) before any math: with two
//   blocks an SM, 64 KB of weights are in flight per SM.
// - The weights are the mma's A operand straight from registers, without a trip through shared
//   memory: a 16-byte load of row r at k = 8t..8t+7 is spread over the k slots of two mma k-steps.
//   The k order inside a sum does not matter, so x (the B operand, from shared memory) is loaded with
//   the same permutation.
// - Warps along k are reduced through shared memory; blocks along k write fp32 partials, and the last
//   block of each row tile (an atomic counter) adds them in a fixed order (deterministic) and applies
//   the epilogue: bias, GELU, residual, store as bf16 or f32.
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/mma.cuh"

namespace pirt::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;

struct Params {
  const bf16* x;
  const bf16* w;
  const void* bias;
  const void* residual;
  void* out;
  float* ws;
  int* counters;
  int M, N, K;
  int wk, splits;
  int bias_bf16, res_bf16, out_bf16;
  int gelu;
};

__device__ __forceinline__ float ld_any(const void* p, int is_bf16, int64_t i) {
  return is_bf16 ? __bfloat162float(static_cast<const bf16*>(p)[i]) : static_cast<const float*>(p)[i];
}

__device__ __forceinline__ void epilogue_store(const Params& p, int m, int n, float v) {
  if (p.bias) v += ld_any(p.bias, p.bias_bf16, n);
  if (p.gelu) v = gelu_tanh(v);
  const int64_t i = (int64_t)m * p.N + n;
  if (p.residual) v += ld_any(p.residual, p.res_bf16, i);
  if (p.out_bf16)
    static_cast<bf16*>(p.out)[i] = __float2bfloat16(v);
  else
    static_cast<float*>(p.out)[i] = v;
}

template <int MT, int CW>
__global__ void __launch_bounds__(kThreads, CW >= 4 ? 1 : 2) small_gemm_kernel(const Params p) {
  constexpr int MP = MT * 8;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int s_last;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int wk = p.wk, wr = kWarps / wk;
  const int rows_b = wr * 32, kb = wk * CW * 32;
  const int tile = blockIdx.x, split = blockIdx.y;
  const int warp_n = warp % wr, warp_k = warp / wr;
  const int n_block = tile * rows_b, k_block = split * kb;
  const int n_warp = n_block + warp_n * 32, k_warp = k_block + warp_k * CW * 32;

  // 1. This thread's weights, all loads in flight before any use.
  uint4 wv[2][2][CW];
#pragma unroll
  for (int sub = 0; sub < 2; ++sub)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = n_warp + sub * 16 + h * 8 + g;
#pragma unroll
      for (int c = 0; c < CW; ++c) {
        const int col = k_warp + c * 32 + 8 * t;
        wv[sub][h][c] = (row < p.N && col < p.K) ? ld_stream16(p.w + (int64_t)row * p.K + col) : make_uint4(0, 0, 0, 0);
      }
    }

  // 2. x[0:MP, k_block : k_block + kb] into shared memory (zeros past m and k), all copies in flight
  // at once. Rows are padded by 64 bytes so that the 8 rows a quarter-warp reads fall in different banks.
  const int xstride = kb + 32;
  bf16* xs = reinterpret_cast<bf16*>(smem);
  const int row_chunks = kb / 8;
  for (int i = tid; i < MP * row_chunks; i += kThreads) {
    const int m = i / row_chunks, c8 = (i % row_chunks) * 8, kg = k_block + c8;
    const bool ok = m < p.M && kg < p.K;
    cp_async16(xs + m * xstride + c8, ok ? p.x + (int64_t)m * p.K + kg : p.x, ok ? 16 : 0);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  // 3. The products: per 32-k chunk and m tile, one 16-byte B load serves both row tiles.
  float acc[2][MT][4];
#pragma unroll
  for (int sub = 0; sub < 2; ++sub)
#pragma unroll
    for (int j = 0; j < MT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[sub][j][e] = 0.f;
#pragma unroll
  for (int c = 0; c < CW; ++c) {
    const int kk = warp_k * CW * 32 + c * 32 + 8 * t;
#pragma unroll
    for (int j = 0; j < MT; ++j) {
      const uint4 bx = *reinterpret_cast<const uint4*>(xs + (j * 8 + g) * xstride + kk);
#pragma unroll
      for (int sub = 0; sub < 2; ++sub) {
        mma_bf16_16816(acc[sub][j], wv[sub][0][c].x, wv[sub][1][c].x, wv[sub][0][c].y, wv[sub][1][c].y, bx.x, bx.y);
        mma_bf16_16816(acc[sub][j], wv[sub][0][c].z, wv[sub][1][c].z, wv[sub][0][c].w, wv[sub][1][c].w, bx.z, bx.w);
      }
    }
  }
  __syncthreads();  // xs is reused below

  // 4. Warp results into shared memory: red[warp_k][row][m], rows padded to MP + 1 floats.
  constexpr int rstride = MP + 1;
  float* red = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int sub = 0; sub < 2; ++sub)
#pragma unroll
    for (int j = 0; j < MT; ++j) {
      const int r = warp_n * 32 + sub * 16 + g, m = j * 8 + 2 * t;
      float* base = red + (warp_k * rows_b + r) * rstride + m;
      base[0] = acc[sub][j][0];
      base[1] = acc[sub][j][1];
      base[8 * rstride] = acc[sub][j][2];
      base[8 * rstride + 1] = acc[sub][j][3];
    }
  __syncthreads();

  // 5. Sum the warps along k; finish here when k is not split across blocks.
  const int outs = p.M * rows_b;
  if (p.splits == 1) {
    for (int i = tid; i < outs; i += kThreads) {
      const int m = i / rows_b, r = i % rows_b, n = n_block + r;
      float v = 0.f;
      for (int w = 0; w < wk; ++w) v += red[(w * rows_b + r) * rstride + m];
      if (n < p.N) epilogue_store(p, m, n, v);
    }
    return;
  }
  // Partials: ws[split][tile][m][rows_b], written as float4 along the rows.
  const int q4 = rows_b / 4, outs4 = p.M * q4;
  const int64_t split_stride = (int64_t)gridDim.x * MP * rows_b;
  float* part = p.ws + split * split_stride + (int64_t)tile * MP * rows_b;
  for (int i = tid; i < outs4; i += kThreads) {
    const int m = i / q4, r = (i % q4) * 4;
    float v[4] = {0.f, 0.f, 0.f, 0.f};
    for (int w = 0; w < wk; ++w)
#pragma unroll
      for (int e = 0; e < 4; ++e) v[e] += red[(w * rows_b + r + e) * rstride + m];
    __stcg(reinterpret_cast<float4*>(part + m * rows_b + r), make_float4(v[0], v[1], v[2], v[3]));
  }
  __threadfence();
  __syncthreads();
  if (tid == 0) s_last = atomicAdd(&p.counters[tile], 1) == p.splits - 1;
  __syncthreads();
  if (!s_last) return;
  __threadfence();

  // 6. The last block of this row tile: add the partials in split order (loads of all splits in
  // flight together), then the epilogue.
  const float* mine = p.ws + (int64_t)tile * MP * rows_b;
  for (int i = tid; i < outs4; i += kThreads) {
    const int m = i / q4, r = (i % q4) * 4;
    const float* src = mine + m * rows_b + r;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 8
    for (int s = 0; s < p.splits; ++s) {
      const float4 v = __ldcg(reinterpret_cast<const float4*>(src + s * split_stride));
      acc.x += v.x, acc.y += v.y, acc.z += v.z, acc.w += v.w;
    }
    const float a[4] = {acc.x, acc.y, acc.z, acc.w};
#pragma unroll
    for (int e = 0; e < 4; ++e)
      if (n_block + r + e < p.N) epilogue_store(p, m, n_block + r + e, a[e]);
  }
  if (tid == 0) p.counters[tile] = 0;
}

template <int MT, int CW>
void launch(const SmallGemmPlan& plan, const Params& p, cudaStream_t s) {
  constexpr int MP = MT * 8;
  const int kb = plan.wk * CW * 32;
  const size_t xs_bytes = (size_t)MP * (kb + 32) * 2;
  const size_t red_bytes = (size_t)kThreads * (MP + 1) * 4;  // wk * rows_b == 256 rows
  const size_t smem = xs_bytes > red_bytes ? xs_bytes : red_bytes;
  auto kernel = small_gemm_kernel<MT, CW>;
  static bool attr_set = false;  // per instantiation; the limit only grows
  if (!attr_set) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 160 * 1024));
    attr_set = true;
  }
  dim3 grid(plan.row_tiles, plan.splits);
  kernel<<<grid, kThreads, smem, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

template <int CW>
void launch_mt(const SmallGemmPlan& plan, const Params& p, cudaStream_t s) {
  switch (plan.mt) {
    case 1: launch<1, CW>(plan, p, s); break;
    case 2: launch<2, CW>(plan, p, s); break;
    case 3: launch<3, CW>(plan, p, s); break;
    case 4: launch<4, CW>(plan, p, s); break;
    case 5: launch<5, CW>(plan, p, s); break;
    case 6: launch<6, CW>(plan, p, s); break;
    case 7: launch<7, CW>(plan, p, s); break;
    case 8: launch<8, CW>(plan, p, s); break;
    default: PIRT_CHECK(false, "small_gemm: mt %d", plan.mt);
  }
}

}  // namespace

bool small_gemm_supported(int64_t m, int64_t n, int64_t k) {
  return m >= 1 && m <= 64 && n >= 1 && k >= 8 && k % 8 == 0 && n < (1 << 30) && k < (1 << 30);
}

SmallGemmPlan small_gemm_plan(int64_t m, int64_t n, int64_t k, int num_sms, int force_cw, int force_wk) {
  SmallGemmPlan plan;
  plan.mt = static_cast<int>((m + 7) / 8);
  // Default: two 32-k chunks a warp, 4 warps along k (a block is 64 rows x 256 k, 32 KB of
  // weights). Narrow matrices (few row tiles) take more warps along k to keep the splits few.
  plan.cw = 2;
  plan.wk = 4;
  if (n <= 1024 && k >= 2048) plan.wk = 8;
  if (force_cw) plan.cw = force_cw;
  if (force_wk) plan.wk = force_wk;
  (void)num_sms;
  const int rows_b = (kWarps / plan.wk) * 32, kb = plan.wk * plan.cw * 32;
  plan.row_tiles = static_cast<int>((n + rows_b - 1) / rows_b);
  plan.splits = static_cast<int>((k + kb - 1) / kb);
  plan.ws_bytes = plan.splits > 1 ? (int64_t)plan.splits * plan.row_tiles * plan.mt * 8 * rows_b * 4 : 0;
  return plan;
}

void small_gemm(const SmallGemmPlan& plan, const void* x, const void* w, const void* bias, DType bt, Epilogue ep,
                const void* residual, DType rt, void* out, DType ot, int64_t m, int64_t n, int64_t k, float* ws,
                int* counters, cudaStream_t s) {
  Params p;
  p.x = static_cast<const bf16*>(x);
  p.w = static_cast<const bf16*>(w);
  p.bias = bias;
  p.residual = residual;
  p.out = out;
  p.ws = ws;
  p.counters = counters;
  p.M = static_cast<int>(m);
  p.N = static_cast<int>(n);
  p.K = static_cast<int>(k);
  p.wk = plan.wk;
  p.splits = plan.splits;
  p.bias_bf16 = bt == DType::BF16;
  p.res_bf16 = rt == DType::BF16;
  p.out_bf16 = ot == DType::BF16;
  p.gelu = ep == Epilogue::GeluTanh;
  switch (plan.cw) {
    case 1: launch_mt<1>(plan, p, s); break;
    case 2: launch_mt<2>(plan, p, s); break;
    case 4: launch_mt<4>(plan, p, s); break;
    default: PIRT_CHECK(false, "small_gemm: cw %d", plan.cw);
  }
}

}  // namespace pirt::cuda
