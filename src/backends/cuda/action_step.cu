// The action expert's boundary between two flow-matching steps (Backend::action_step, ops.h) as one
// persistent kernel:
//
//   P1  v = f32(xn[T-H:]) . w_out^T + b_out;  x += dt * v      (a warp an output: H * A dots over D)
//   P2  e = x . w_in^T + b_in                                 (a thread an output: H * W dots over A)
//       pi0: u = silu(e);  pi0.5: tok = e
//   P3  pi0: partials[s] = u . w_mlp^T over k split s         (64-column units x k splits)
//   R   hs = bf16(tok) (pi0: tok = b_mlp + sum of the partials for the action rows, the state token's
//       row as given); xn = rms_norm(hs) or ada_rms_norm(hs)  (a block a row)
//
// One block per SM, every block resident (a cooperative launch), grid barriers (common.cuh) between
// the phases. Why: as separate ops these are ten small kernels (a cast, cuBLASLt's SIMT fp32 GEMMs
// with their split-K reductions, axpy, silu, another cast, the norm): ~31 us a step on an H100, each
// paying launch, ramp-up and tail for a few microseconds of work; this kernel takes ~21 us.
// Every phase is a chain of global round trips of ~1-2 us each (kernel_bench --action-step prints
// the timeline). Measured there: weights loaded into registers before a barrier hold up its
// release (thread 0's outstanding loads: +1.5-2.4 us), and weights issued early queue in front of
// the next phase's own loads; the one early copy kept is P3's first weight chunk (cp.async at the
// start of P2).
//
// Numerics: everything in fp32 as the separate ops compute it (the f32 islands stay f32: no tensor
// cores), rounded to bf16 only where they store bf16 (hs, xn); the sums run in another order than
// cuBLASLt's (the fp32 reordering the tests allow).
#include <algorithm>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/mma.cuh"

namespace pirt::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBarriers = 3;       // arrivals a launch, whatever the phases
constexpr int kTileN = 64;         // P3: output columns a unit
constexpr int kTileK = 128;        // P3: k a shared-memory chunk (a unit's whole k range at pi0's shapes)
constexpr int kPitch = kTileK + 4; // P3: floats a shared-memory row: 33 16-byte units (conflict-free reads)
constexpr int kMaxPerThread = kMaxActionWidth / kThreads;
constexpr size_t kSmemBytes = 2 * 64 * kPitch * sizeof(float);  // P3's u and w_mlp chunks (P2's x in the first)
static_assert(kMaxActionRows * kMaxActionDim <= 64 * kPitch, "x must fit P3's u buffer");

// P3's units: 64-column tiles x k splits (k ranges multiples of 4).
__device__ __forceinline__ int unit_n0(int unit, int tiles) { return (unit % tiles) * kTileN; }
__device__ __forceinline__ int unit_k0(const ActionStepParams& p, int unit, int tiles) {
  return (int)((int64_t)(unit / tiles) * p.W / p.splits);
}
__device__ __forceinline__ int unit_k1(const ActionStepParams& p, int unit, int tiles) {
  return (int)((int64_t)(unit / tiles + 1) * p.W / p.splits);
}

// Rows m0 .. m0 + 63 (those below `rows`) of a row-major [rows, ld] F32 matrix, k from kc (below k1),
// into dst[m][k] (pitch kPitch) by cp.async through L2; zeros outside. A warp copies 512 contiguous
// bytes of a row.
__device__ __forceinline__ void issue_chunk(const float* src, int ld, int rows, int m0, int kc, int k1, float* dst) {
  for (int i = threadIdx.x; i < 64 * (kTileK / 4); i += kThreads) {
    const int m = i / (kTileK / 4), k4 = i % (kTileK / 4), kk = kc + 4 * k4;
    const bool ok = m0 + m < rows && kk < k1;
    cp_async16(dst + m * kPitch + 4 * k4, ok ? src + (int64_t)(m0 + m) * ld + kk : src, ok ? 16 : 0);
  }
  cp_async_commit();
}

__global__ void __launch_bounds__(kThreads, 1) action_step_kernel(const ActionStepParams p) {
  extern __shared__ __align__(16) float smem[];
  float* us = smem;                // P3: u[m][k] (P2: x first)
  float* ws = smem + 64 * kPitch;  // P3: w_mlp[n][k]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int bid = blockIdx.x, grid = gridDim.x;
  const int T = p.T, H = p.H, A = p.A, W = p.W, D = p.D, R0 = T - H;
  unsigned long long target = 0;
  if (tid == 0) target = grid_barrier_base(p.barrier, kBarriers);
  stamp(p.timing, kActionStamps, 0);
  const int tiles = (D + kTileN - 1) / kTileN, units = p.w_in && p.w_mlp ? tiles * p.splits : 0;

  // ---- P1: the velocity and the Euler step (lane: 8 consecutive k an access; D % 8 == 0) ----
  if (p.w_out) {
    const int nwarps = grid * (kThreads / 32);
    for (int o = bid * (kThreads / 32) + warp; o < H * A; o += nwarps) {
      const int r = o / A, j = o % A;
      const bf16* xr = static_cast<const bf16*>(p.xn) + (int64_t)(R0 + r) * D;
      const float* wr = p.w_out + (int64_t)j * D;
      float s = 0.f;
#pragma unroll 4
      for (int k = 8 * lane; k < D; k += 256) {
        const uint4 xv = *reinterpret_cast<const uint4*>(xr + k);
        const float4 w0 = *reinterpret_cast<const float4*>(wr + k), w1 = *reinterpret_cast<const float4*>(wr + k + 4);
        const bf16* xe = reinterpret_cast<const bf16*>(&xv);
        const float wv[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
#pragma unroll
        for (int e = 0; e < 8; ++e) s += __bfloat162float(xe[e]) * wv[e];
      }
      s = warp_sum(s);
      if (lane == 0) p.x[o] = p.x[o] + p.dt * (s + p.b_out[j]);  // (as axpy_kernel)
    }
  }
  stamp(p.timing, kActionStamps, 1);
  grid_barrier(p.barrier, target);
  stamp(p.timing, kActionStamps, 2);
  if (!p.w_in) {  // (the last step: no next embed)
    grid_barrier(p.barrier, target, false);
    grid_barrier(p.barrier, target, false);
    return;
  }

  // ---- P2: the action embedding; x (P1's, other blocks') into shared memory through L2, while the
  // first output's weights load ----
  // (P3's first weight chunk goes first, by cp.async into ws: done long before the next barrier,
  // whose release would wait for it.)
  if (bid < units) issue_chunk(p.w_mlp, W, D, unit_n0(bid, tiles), unit_k0(p, bid, tiles), unit_k1(p, bid, tiles), ws);
  {
    const float4* w4 = reinterpret_cast<const float4*>(p.w_in);  // (rows of A floats, A % 4 == 0)
    const int A4 = A / 4;
    int o = bid * kThreads + tid;
    float4 wv[kMaxActionDim / 4];
#pragma unroll
    for (int k4 = 0; k4 < kMaxActionDim / 4; ++k4)
      if (k4 < A4 && o < H * W) wv[k4] = w4[(int64_t)(o % W) * A4 + k4];
    constexpr int kX = kMaxActionRows * kMaxActionDim / kThreads;  // (every load issued before the stores)
    float xv[kX];
#pragma unroll
    for (int j = 0; j < kX; ++j) xv[j] = tid + j * kThreads < H * A ? __ldcg(p.x + tid + j * kThreads) : 0.f;
#pragma unroll
    for (int j = 0; j < kX; ++j)
      if (tid + j * kThreads < H * A) us[tid + j * kThreads] = xv[j];
    __syncthreads();
    for (; o < H * W; o += grid * kThreads) {
      const int r = o / W, n = o % W;
      if (o != bid * kThreads + tid) {
#pragma unroll
        for (int k4 = 0; k4 < kMaxActionDim / 4; ++k4)
          if (k4 < A4) wv[k4] = w4[(int64_t)n * A4 + k4];
      }
      const float* xr = us + r * A;
      float s = 0.f;
#pragma unroll
      for (int k4 = 0; k4 < kMaxActionDim / 4; ++k4)
        if (k4 < A4)
          s += xr[4 * k4] * wv[k4].x + xr[4 * k4 + 1] * wv[k4].y + xr[4 * k4 + 2] * wv[k4].z + xr[4 * k4 + 3] * wv[k4].w;
      s += p.b_in[n];
      if (p.w_mlp)
        p.u[o] = silu_f32(s);
      else
        p.tok[(int64_t)(R0 + r) * W + n] = s;
    }
  }
  stamp(p.timing, kActionStamps, 3);
  grid_barrier(p.barrier, target);
  stamp(p.timing, kActionStamps, 4);

  // ---- P3 (pi0): tok's action rows = u . w_mlp^T, k-split partial sums ----
  // Thread (ty, tx) holds rows ty + 16 i and columns tx + 16 j (i, j < 4) of the unit's 64 x 64.
  {
    const int ty = tid / 16, tx = tid % 16;
    for (int unit = bid; unit < units; unit += grid) {
      const int k0 = unit_k0(p, unit, tiles), k1 = unit_k1(p, unit, tiles), n0 = unit_n0(unit, tiles);
      float acc[4][4] = {};
      for (int kc = k0; kc < k1; kc += kTileK) {
        if (unit != bid || kc != k0) issue_chunk(p.w_mlp, W, D, n0, kc, k1, ws);
        issue_chunk(p.u, W, H, 0, kc, k1, us);
        cp_async_wait<0>();
        __syncthreads();
        const int kn4 = min(kTileK, k1 - kc) / 4;
#pragma unroll 4
        for (int k4 = 0; k4 < kn4; ++k4) {
          float4 a[4], b[4];
#pragma unroll
          for (int i = 0; i < 4; ++i) a[i] = *reinterpret_cast<const float4*>(us + (ty + 16 * i) * kPitch + 4 * k4);
#pragma unroll
          for (int j = 0; j < 4; ++j) b[j] = *reinterpret_cast<const float4*>(ws + (tx + 16 * j) * kPitch + 4 * k4);
#pragma unroll
          for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) {  // (k in order)
              acc[i][j] += a[i].x * b[j].x;
              acc[i][j] += a[i].y * b[j].y;
              acc[i][j] += a[i].z * b[j].z;
              acc[i][j] += a[i].w * b[j].w;
            }
        }
        __syncthreads();
      }
      float* dst = p.partials + (int64_t)(unit / tiles) * H * D;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int m = ty + 16 * i;
        if (m >= H) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int n = n0 + tx + 16 * j;
          if (n < D) dst[(int64_t)m * D + n] = acc[i][j];
        }
      }
    }
  }
  stamp(p.timing, kActionStamps, 5);
  grid_barrier(p.barrier, target);
  stamp(p.timing, kActionStamps, 6);

  // ---- R: hs = bf16(tok), xn = norm(hs) (a block a row; column c = tid + 256 i) ----
  for (int row = bid; row < T; row += grid) {
    const bool parts = row >= R0 && p.w_mlp;  // pi0's action rows: the splits in order, then the bias
    float v[kMaxPerThread];
    if (parts) {
      float part[kMaxPerThread][kMaxActionSplits];  // (every load issued before the first add)
#pragma unroll
      for (int i = 0; i < kMaxPerThread; ++i)
#pragma unroll
        for (int sp = 0; sp < kMaxActionSplits; ++sp) {
          const int c = tid + kThreads * i;
          part[i][sp] = c < D && sp < p.splits ? __ldcg(p.partials + ((int64_t)sp * H + row - R0) * D + c) : 0.f;
        }
#pragma unroll
      for (int i = 0; i < kMaxPerThread; ++i) {
        float s = 0.f;
#pragma unroll
        for (int sp = 0; sp < kMaxActionSplits; ++sp) s += part[i][sp];
        const int c = tid + kThreads * i;
        v[i] = c < D ? s + p.b_mlp[c] : 0.f;
      }
    } else {  // pi0's state token, or pi0.5's tok from P2
#pragma unroll
      for (int i = 0; i < kMaxPerThread; ++i) {
        const int c = tid + kThreads * i;
        v[i] = c < D ? __ldcg(p.tok + (int64_t)row * D + c) : 0.f;
      }
    }
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < kMaxPerThread; ++i) {
      const int c = tid + kThreads * i;
      if (c >= D) continue;
      if (parts) p.tok[(int64_t)row * D + c] = v[i];
      const bf16 hb = __float2bfloat16(v[i]);
      static_cast<bf16*>(p.hs)[(int64_t)row * D + c] = hb;
      v[i] = __bfloat162float(hb);
      ss += v[i] * v[i];
    }
    const float rr = rsqrtf(block_sum(ss) / (float)D + p.eps);
    // (rms_norm_kernel's and ada_rms_norm's formulas: common.cuh residual_rms_norm_row)
#pragma unroll
    for (int i = 0; i < kMaxPerThread; ++i) {
      const int c = tid + kThreads * i;
      if (c >= D) continue;
      const float y = p.mod ? v[i] * rr * (1.f + p.mod[c]) + p.mod[D + c] : v[i] * rr * (1.f + p.norm_w[c]);
      static_cast<bf16*>(p.xn_out)[(int64_t)row * D + c] = __float2bfloat16(y);
    }
  }
  stamp(p.timing, kActionStamps, 7);
}

}  // namespace

bool action_step_supported(int T, int H, int A, int W, int D) {
  return H >= 1 && H <= kMaxActionRows && T >= H && A >= 4 && A <= kMaxActionDim && A % 4 == 0 && W >= 4 &&
         W % 4 == 0 && D >= 8 && D % 8 == 0 && W <= kMaxActionWidth && D <= kMaxActionWidth;
}

void action_step(ActionStepParams p, int num_sms, cudaStream_t s) {
  const int tiles = (p.D + kTileN - 1) / kTileN;
  // k splits of P3: enough units to give every SM one, at least a chunk of k each.
  // Each split's k range a multiple of 4 (float4 loads): splits divide W / 4.
  int splits = std::max(1, std::min({num_sms / tiles, kMaxActionSplits, p.W / 4}));
  while ((p.W / 4) % splits != 0) --splits;
  p.splits = splits;
  launch_cooperative(action_step_kernel, num_sms, kThreads, kSmemBytes, s, p);
}

}  // namespace pirt::cuda
