// Launchers of the CUDA backend's kernels: plain C++ declarations over raw device pointers, so that
// cuda_backend.cc (which unpacks Tensors and checks shapes) needs no device code. Every launcher
// issues its work on `s` and returns at once. Element types are pirt DTypes; the float kernels take
// F32 or BF16 for each tensor independently and compute in fp32.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/dtype.h"
#include "ops/ops.h"

namespace pirt::cuda {

// Programmatic dependent launch for our kernels (common.cuh launch()); on by default where the
// device is sm_90+ (the backend turns it off elsewhere and for --no-pdl).
bool pdl_enabled();
void set_pdl_enabled(bool on);

// ---- elementwise and row kernels (elementwise.cu) ----
void convert(const void* src, DType st, void* dst, DType dt, int64_t n, cudaStream_t s);
void rms_norm(const void* x, DType xt, const void* w, DType wt, void* out, DType ot, int64_t rows,
              int64_t dim, float eps, cudaStream_t s);
// mod rows [3*dim] = scale | shift | gate; mod_stride 0 broadcasts one row to every row of x.
void ada_rms_norm(const void* x, DType xt, const void* mod, DType mt, int64_t mod_stride, void* out,
                  DType ot, int64_t rows, int64_t dim, float eps, cudaStream_t s);
void layer_norm(const void* x, DType xt, const void* w, DType wt, const void* b, DType bt, void* out,
                DType ot, int64_t rows, int64_t dim, float eps, cudaStream_t s);
// h[r, :] += y[r, :] * gate[r * gate_stride + :]
void gated_residual(void* h, DType ht, const void* y, DType yt, const void* gate, DType gt,
                    int64_t gate_stride, int64_t rows, int64_t dim, cudaStream_t s);
void geglu(const void* gu, DType gt, void* out, DType ot, int64_t rows, int64_t f, cudaStream_t s);
void silu(const void* x, DType xt, void* out, DType ot, int64_t n, cudaStream_t s);
// out[r] = [a[r] | b[b_rows == 1 ? 0 : r]]
void concat_cols(const void* a, DType at, const void* b, DType bt, int64_t b_rows, void* out,
                 DType ot, int64_t rows, int64_t k1, int64_t k2, cudaStream_t s);
void axpy(float* x, const void* v, DType vt, float dt, int64_t n, cudaStream_t s);
void embed(const int32_t* ids, const void* table, DType tt, float scale, void* out, DType ot,
           int64_t tokens, int64_t dim, cudaStream_t s);
// partials (splits x [tokens, width] fp32, from small_gemm_partials): the input is their sum,
// rounded to qkvt, instead of qkv.
void qkv_rope(const void* qkv, DType qkvt, const int32_t* positions, int64_t tokens, int heads,
              int kv_heads, int head_dim, void* q, DType qt, void* k, DType kt, void* v, DType vt,
              cudaStream_t s, const float* partials = nullptr, int splits = 0);
// h[r] = bf16(h[r] + sum_s partials[s][r]), xn[r] = rms_norm(h[r]) * (1 + w): the consumer of a
// small_gemm_partials output projection. h, xn bf16 [rows, dim], dim % 128 == 0, <= 4096.
void residual_rms_norm_partials(const float* partials, int splits, void* h, const void* w, DType wt, void* xn,
                                int64_t rows, int64_t dim, float eps, cudaStream_t s);
// out[i] = in[i] / 255 * 2 - 1 (U8 -> F32; the division rounded as IEEE, as the CPU oracle's).
void image_to_unit_range(const uint8_t* in, float* out, int64_t n, cudaStream_t s);
// col[n*T + t, c*p*p + ky*p + kx] = images[n, py*p + ky, px*p + kx, c] (F32, NHWC), T = (size/p)^2.
void im2col_patches(const float* images, int64_t n, int64_t size, int64_t patch, float* col,
                    cudaStream_t s);
// out[r, c] = acc[r, c] + b[c] + pos[r % tokens, c]
void add_bias_pos(const float* acc, const void* b, DType bt, const void* pos, DType pt, void* out,
                  DType ot, int64_t rows, int64_t tokens, int64_t width, cudaStream_t s);

// ---- GEMM helpers (gemm.cu) ----
// out[m, n] = ep(acc[m, n] + bias[n]) + residual[m, n]; bias / residual may be null.
void linear_epilogue(const float* acc, const void* bias, DType bt, Epilogue ep, const void* residual,
                     DType rt, void* out, DType ot, int64_t m, int64_t n, cudaStream_t s);
// A plain tiled GEMM for any float dtypes (the fallback where cuBLASLt has no kernel):
// acc[m, n] = sum_k x[m, k] * w[n, k] in fp32.
void simple_gemm(const void* x, DType xt, const void* w, DType wt, float* acc, int64_t m, int64_t n,
                 int64_t k, cudaStream_t s);

// The weight-streaming bf16 GEMM for m <= 64 (gemm_small.cu), sm_90+ only (clusters).
// x[m, k], w[n, k] bf16, row-major, 16-byte aligned, k % 8 == 0. Column tiles of bn, k split over
// `splits` blocks of one cluster that reduce through distributed shared memory; no workspace.
struct SmallGemmPlan {
  int mt = 0;         // m tiles of 16 (1..4)
  int bn = 0;         // columns of n a block (32, 64, 128)
  int splits = 1;     // blocks along k (the cluster size, 1..8)
  int stages = 0;     // cp.async pipeline depth (fixed by bn)
  int col_tiles = 0;  // blocks along n
  bool cluster = true;  // the splits reduce in a cluster (false: partials mode)
};
// The default plan, or the one with bn = force_bn and/or splits = force_splits where that can run.
SmallGemmPlan small_gemm_plan(int64_t m, int64_t n, int64_t k, int num_sms, int force_bn = 0,
                              int force_splits = 0);
bool small_gemm_supported(int64_t m, int64_t n, int64_t k);
extern int small_gemm_debug;  // kernel_bench's breakdown (gemm_small.cu); 0 in the engine
void small_gemm(const SmallGemmPlan& plan, const void* x, const void* w, const void* bias, DType bt,
                Epilogue ep, const void* residual, DType rt, void* out, DType ot, int64_t m,
                int64_t n, int64_t k, cudaStream_t s);
// Partials mode: no reduction and no epilogue; split s writes its fp32 sums to partials[s][m][n]
// (splits * m * n floats) for a consumer kernel to add (residual_rms_norm_partials, qkv_rope with
// partials). Splits up to 16, no cluster; n % 8 == 0.
SmallGemmPlan small_gemm_plan_partials(int64_t m, int64_t n, int64_t k, int num_sms, int force_bn = 0,
                                       int force_splits = 0);
void small_gemm_partials(const SmallGemmPlan& plan, const void* x, const void* w, float* partials,
                         int64_t m, int64_t n, int64_t k, cudaStream_t s);

// ---- the action expert's block tail as one persistent kernel (block_tail.cu), sm_90a ----
// Backend::gemma_block_tail (ops.h) for M <= 64 rows: bf16 activations and weights, row-major and
// 16-byte aligned; norm weights F32. partials: kMaxBlockTailSplits * M * D floats. One
// block per SM (cooperative launch).
constexpr int kMaxBlockTailSplits = 8;
struct BlockTailParams {
  int M = 0, D = 0, F = 0, Ko = 0;             // rows, width, mlp width, attention width
  int heads = 0, kv_heads = 0, head_dim = 0;   // of the next layer's QKV (wqkv null: none)
  int splits_o = 1, splits_d = 1;              // set by block_tail()
  float eps = 1e-6f;
  const void* attn = nullptr;                  // [M, Ko]
  const void* wo = nullptr;                    // [D, Ko]
  void* h = nullptr;                           // [M, D], updated in place
  const float* ffn_norm = nullptr;             // [D]
  const void* wgu = nullptr;                   // [2F, D] = [gate | up]
  const void* wd = nullptr;                    // [D, F]
  const float* next_norm = nullptr;            // [D]
  // pi0.5 (adaRMS; mod_attn set): [3D] modulations (scale | shift | gate) of this layer's two norms and
  // of the next norm; the residuals are gated (ops.h BlockTail). ffn_norm and next_norm unused then.
  const float* mod_attn = nullptr;
  const float* mod_ffn = nullptr;
  const float* next_mod = nullptr;
  void* xn = nullptr;                          // [M, D]
  void* mlp = nullptr;                         // [M, F] scratch
  const void* wqkv = nullptr;                  // [(heads + 2 kv_heads) head_dim, D] or null
  const int32_t* positions = nullptr;          // [M]
  void* q = nullptr;                           // [M, heads * head_dim]
  void* k = nullptr;                           // [M, kv_heads * head_dim]
  void* v = nullptr;
  float* partials = nullptr;
  float2* rope = nullptr;                 // [M][head_dim / 2] (cos, sin) scratch, with wqkv
  unsigned long long* barrier = nullptr;  // zeroed once; used by no other kernel
  unsigned long long* timing = nullptr;   // kernel_bench: [grid][kTailStamps] globaltimer stamps
  // A programmatic dependent launch: the first output-projection weights are issued before the
  // kernel waits for the one before it (the attention).
  bool pdl = false;
  // Lets the next kernel launch once G4 starts; only a kernel launched with the PDL attribute (the
  // attention under the global --pdl) can use it.
  bool trigger = false;
};
constexpr int kTailStamps = 12;
bool block_tail_supported(int M, int D, int F, int Ko, int heads, int kv_heads, int head_dim);
void block_tail(BlockTailParams p, int num_sms, cudaStream_t s);

// ---- the boundary between two flow-matching steps as one persistent kernel (action_step.cu) ----
// Backend::action_step (ops.h): xn, hs bf16; everything else F32, row-major. w_out null: no update;
// w_in null: no embed; w_mlp null: pi0.5's embed (tok = e, T = H). mod set: adaRMS ([3D]: scale |
// shift | gate), else norm_w. partials: kMaxActionSplits * H * D floats (H <= kMaxActionRows).
// One block per SM (cooperative launch).
constexpr int kMaxActionWidth = 2048;
constexpr int kMaxActionSplits = 8;
constexpr int kMaxActionRows = 64;
constexpr int kMaxActionDim = 64;
struct ActionStepParams {
  int T = 0, H = 0, A = 0, W = 0, D = 0;  // suffix rows (the last H are actions), action dim, widths of e and tok
  int splits = 1;                          // set by action_step()
  float dt = 0.f, eps = 1e-6f;
  const void* xn = nullptr;                // [T, D]: the final norm's output
  const float* w_out = nullptr;            // [A, D]
  const float* b_out = nullptr;            // [A]
  float* x = nullptr;                      // [H, A], updated in place
  const float* w_in = nullptr;             // [W, A]
  const float* b_in = nullptr;             // [W]
  float* u = nullptr;                      // [H, W] scratch (pi0)
  const float* w_mlp = nullptr;            // [D, W] (pi0)
  const float* b_mlp = nullptr;            // [D]
  float* tok = nullptr;                    // [T, D]
  void* hs = nullptr;                      // [T, D]
  const float* norm_w = nullptr;           // [D]
  const float* mod = nullptr;              // [3D]
  void* xn_out = nullptr;                  // [T, D] (may be xn)
  float* partials = nullptr;
  unsigned long long* barrier = nullptr;   // zeroed once; used by no other kernel
  unsigned long long* timing = nullptr;    // kernel_bench: [grid][kActionStamps] globaltimer stamps
};
constexpr int kActionStamps = 8;
// A and W multiples of 4, D of 8 (vector loads); xn, w_out, w_in, w_mlp, u 16-byte aligned.
bool action_step_supported(int T, int H, int A, int W, int D);
void action_step(ActionStepParams p, int num_sms, cudaStream_t s);

// ---- attention (attention.cu) ----
struct AttentionArgs {
  const void* q;  // [S, Tq, Hq, Dh] bf16
  const void* k;  // [S, Tk, Hkv, Dh] bf16
  const void* v;
  void* out;  // [S, Tq, Hq, Dh] bf16
  const int32_t* q_block = nullptr;  // [S, Tq] or null (no mask)
  const int32_t* k_block = nullptr;  // [S, Tk]
  int S, Tq, Tk, Hq, Hkv, Dh;
  float scale;
  // Elements from one token's q (k and v) to the next's: 0 is contiguous (Hq * Dh, Hkv * Dh); larger
  // reads q, k, v in place from a fused [q | k | v] projection. out is always contiguous.
  int64_t q_stride = 0, kv_stride = 0;
};
// Workspace bytes the fast kernel needs for these sizes (split keys: partial outputs and stats).
int64_t attention_workspace_bytes(const AttentionArgs& a, int num_sms, int force_splits = 0, bool cluster = true);
// The flash-style kernel (head dims 16..256, multiple of 8): query heads that share a KV head are
// packed into one tile, keys split across blocks when there are few query tiles, then merged.
// `cluster`: 2..8 key splits of a query tile run as one thread-block cluster and merge through
// distributed shared memory (no workspace, no second kernel); false: partials in ws + a merge kernel.
// `wgmma` (sm_90a builds on sm_90 only): one KV head of 256 goes to attention_wgmma (many query rows:
// the prefix) or attention_wgmma_split (few: the action steps; with `cluster`).
// Returns false where the shape is not supported (then call attention_reference).
bool attention_fast(const AttentionArgs& a, float* ws, int64_t ws_bytes, int num_sms,
                    cudaStream_t s, int force_splits = 0, bool cluster = true, bool wgmma = false);
// The prefix's attention on wgmma + TMA (attention_wgmma.cu, sm_90a): head dim 256, one KV head.
bool attention_wgmma_supported(const AttentionArgs& a);
void attention_wgmma(const AttentionArgs& a, cudaStream_t s);
// The action steps' attention on wgmma + TMA (attention_wgmma.cu, sm_90a, clusters): few query rows
// (64-row tiles) over one KV head of 256, the keys split over a cluster of up to 16 blocks (or
// `force_splits`), merged through DSMEM. Same shapes as attention_wgmma. A programmatic dependent
// launch only with the global --pdl (pdl_enabled()): as a dependent of the block tail it measured
// 5-6% slower end to end (bench/RESULTS.md, sessions 5 and 10).
void attention_wgmma_split(const AttentionArgs& a, cudaStream_t s, int force_splits = 0);
// One warp per query row, any head dim: slow but simple.
void attention_reference(const AttentionArgs& a, cudaStream_t s);

}  // namespace pirt::cuda
