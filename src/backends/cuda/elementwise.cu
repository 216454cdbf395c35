// Elementwise and per-row kernels: norms, activations, casts, embedding, RoPE, patch helpers.
// They move little data (the largest, the prefix RMSNorm, reads 3.3 MB); each is written plainly,
// one block per row or a grid-stride loop, all arithmetic in fp32.
#include <algorithm>
#include <type_traits>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/mma.cuh"

namespace pirt::cuda {
namespace {

constexpr int kThreads = 256;

// ---- convert ----
template <class TI, class TO>
__global__ void convert_kernel(const TI* __restrict__ x, TO* __restrict__ y, int64_t n) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    st(&y[i], ld(&x[i]));
}

// ---- norms (one block per row) ----
template <class TX, class TW, class TO>
__global__ void rms_norm_kernel(const TX* __restrict__ x, const TW* __restrict__ w, TO* __restrict__ out, int64_t dim,
                                float eps) {
  pdl_wait();
  pdl_trigger();
  const TX* xr = x + blockIdx.x * dim;
  TO* orow = out + blockIdx.x * dim;
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = ld(&xr[i]);
    ss += v * v;
  }
  const float r = rsqrtf(block_sum(ss) / (float)dim + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) st(&orow[i], ld(&xr[i]) * r * (1.f + ld(&w[i])));
}

// bf16 rows with dim = VEC * blockDim.x (a multiple of 32 threads): each thread keeps its VEC
// elements in registers (one 8- or 16-byte load and store), block reductions for the statistics.
// Same arithmetic as the generic kernels above (fp32, one rounding to bf16), summed in another order.
// The action steps run 36 RMSNorms (pi0.5: adaRMSNorms) over 51 rows a step, SigLIP 55 LayerNorms.
enum class RowNorm { Rms, AdaRms, Layer };

// kind Rms: w = weight [dim]; AdaRms: w = mod row (scale | shift) at mod + row * mod_stride;
// Layer: w = weight, b = bias.
template <RowNorm kind, int VEC, class TW>
__global__ void row_norm_bf16_kernel(const bf16* __restrict__ x, const TW* __restrict__ w, const TW* __restrict__ b,
                                     int64_t mod_stride, bf16* __restrict__ out, int dim, float eps) {
  using V = typename BfVec<VEC>::T;
  pdl_wait();
  pdl_trigger();
  const int c = threadIdx.x * VEC;
  const int64_t row = blockIdx.x;
  const V xv = *reinterpret_cast<const V*>(x + row * dim + c);
  const bf16* xe = reinterpret_cast<const bf16*>(&xv);
  float v[VEC];
#pragma unroll
  for (int e = 0; e < VEC; ++e) v[e] = __bfloat162float(xe[e]);
  float mean = 0.f;
  if constexpr (kind == RowNorm::Layer) {
    float sum = 0.f;
#pragma unroll
    for (int e = 0; e < VEC; ++e) sum += v[e];
    mean = block_sum(sum) / (float)dim;
  }
  float ss = 0.f;
#pragma unroll
  for (int e = 0; e < VEC; ++e) ss += (v[e] - mean) * (v[e] - mean);
  const float r = rsqrtf(block_sum(ss) / (float)dim + eps);
  V ov;
  bf16* oe = reinterpret_cast<bf16*>(&ov);
#pragma unroll
  for (int e = 0; e < VEC; ++e) {
    float y;
    if constexpr (kind == RowNorm::Rms) {
      y = v[e] * r * (1.f + ld(&w[c + e]));
    } else if constexpr (kind == RowNorm::AdaRms) {
      const TW* scale = w + row * mod_stride;
      y = v[e] * r * (1.f + ld(&scale[c + e])) + ld(&scale[dim + c + e]);
    } else {
      y = (v[e] - mean) * r * ld(&w[c + e]) + ld(&b[c + e]);
    }
    oe[e] = __float2bfloat16(y);
  }
  *reinterpret_cast<V*>(out + row * dim + c) = ov;
}

// The fused output projection + residual + RMSNorm (small_gemm_partials' consumer): one block a row
// (common.cuh residual_rms_norm_row), up to small_gemm_partials' 16 splits.
constexpr int kMaxRowSplits = 16;
template <int VEC, class TW>
__global__ void residual_rms_norm_partials_kernel(const float* __restrict__ partials, int splits, int64_t split_stride,
                                                  bf16* __restrict__ h, const TW* __restrict__ w, bf16* __restrict__ xn,
                                                  int dim, float eps) {
  pdl_wait();
  pdl_trigger();
  residual_rms_norm_row<VEC, kMaxRowSplits>(partials, splits, split_stride, h, w, xn, blockIdx.x, dim, eps);
}

template <class TX, class TM, class TO>
__global__ void ada_rms_norm_kernel(const TX* __restrict__ x, const TM* __restrict__ mod, int64_t mod_stride,
                                    TO* __restrict__ out, int64_t dim, float eps) {
  pdl_wait();
  pdl_trigger();
  const TX* xr = x + blockIdx.x * dim;
  const TM* scale = mod + blockIdx.x * mod_stride;
  const TM* shift = scale + dim;
  TO* orow = out + blockIdx.x * dim;
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = ld(&xr[i]);
    ss += v * v;
  }
  const float r = rsqrtf(block_sum(ss) / (float)dim + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
    st(&orow[i], ld(&xr[i]) * r * (1.f + ld(&scale[i])) + ld(&shift[i]));
}

// Two passes over the row (mean, then centred variance) for accuracy; rows are at most a few KB.
template <class TX, class TW, class TB, class TO>
__global__ void layer_norm_kernel(const TX* __restrict__ x, const TW* __restrict__ w, const TB* __restrict__ b,
                                  TO* __restrict__ out, int64_t dim, float eps) {
  pdl_wait();
  pdl_trigger();
  const TX* xr = x + blockIdx.x * dim;
  TO* orow = out + blockIdx.x * dim;
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) s += ld(&xr[i]);
  const float mean = block_sum(s) / (float)dim;
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float d = ld(&xr[i]) - mean;
    ss += d * d;
  }
  const float r = rsqrtf(block_sum(ss) / (float)dim + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) st(&orow[i], (ld(&xr[i]) - mean) * r * ld(&w[i]) + ld(&b[i]));
}

// ---- elementwise ----
template <class TH, class TY, class TG>
__global__ void gated_residual_kernel(TH* h, const TY* __restrict__ y, const TG* __restrict__ gate, int64_t gate_stride,
                                      int64_t rows, int64_t dim) {
  pdl_wait();
  pdl_trigger();
  const int64_t n = rows * dim;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / dim, c = i % dim;
    st(&h[i], ld(&h[i]) + ld(&y[i]) * ld(&gate[r * gate_stride + c]));
  }
}

template <class TI, class TO>
__global__ void geglu_kernel(const TI* __restrict__ gu, TO* __restrict__ out, int64_t rows, int64_t f) {
  pdl_wait();
  pdl_trigger();
  const int64_t n = rows * f;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / f, c = i % f;
    const TI* row = gu + r * 2 * f;
    st(&out[i], gelu_tanh(ld(&row[c])) * ld(&row[f + c]));
  }
}

// bf16 in and out, f % 8 == 0, 16-byte aligned rows: eight outputs a thread with 16-byte loads and
// stores (the prefix's GeGLU moves 80 MB a layer; the scalar kernel ran at about half of HBM speed).
// Same arithmetic as geglu_kernel: fp32, one rounding to bf16.
__global__ void geglu_bf16x8_kernel(const bf16* __restrict__ gu, bf16* __restrict__ out, int64_t rows, int64_t f) {
  pdl_wait();
  pdl_trigger();
  const int64_t f8 = f / 8, n8 = rows * f8;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / f8, c = (i % f8) * 8;
    const bf16* row = gu + r * 2 * f;
    const uint4 g4 = *reinterpret_cast<const uint4*>(row + c);
    const uint4 u4 = *reinterpret_cast<const uint4*>(row + f + c);
    const bf16* g = reinterpret_cast<const bf16*>(&g4);
    const bf16* u = reinterpret_cast<const bf16*>(&u4);
    uint4 o4;
    bf16* o = reinterpret_cast<bf16*>(&o4);
#pragma unroll
    for (int e = 0; e < 8; ++e) o[e] = __float2bfloat16(gelu_tanh(__bfloat162float(g[e])) * __bfloat162float(u[e]));
    *reinterpret_cast<uint4*>(out + r * f + c) = o4;
  }
}

template <class TI, class TO>
__global__ void silu_kernel(const TI* x, TO* out, int64_t n) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float v = ld(&x[i]);
    st(&out[i], silu_f32(v));
  }
}

template <class TA, class TB, class TO>
__global__ void concat_cols_kernel(const TA* __restrict__ a, const TB* __restrict__ b, int64_t b_rows,
                                   TO* __restrict__ out, int64_t rows, int64_t k1, int64_t k2) {
  pdl_wait();
  pdl_trigger();
  const int64_t kk = k1 + k2, n = rows * kk;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / kk, c = i % kk;
    const float v = c < k1 ? ld(&a[r * k1 + c]) : ld(&b[(b_rows == 1 ? 0 : r) * k2 + (c - k1)]);
    st(&out[i], v);
  }
}

template <class TV>
__global__ void axpy_kernel(float* x, const TV* __restrict__ v, float dt, int64_t n) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    x[i] = x[i] + dt * ld(&v[i]);
}

template <class TT, class TO>
__global__ void embed_kernel(const int32_t* __restrict__ ids, const TT* __restrict__ table, float scale,
                             TO* __restrict__ out, int64_t dim) {
  pdl_wait();
  pdl_trigger();
  const TT* row = table + (int64_t)ids[blockIdx.x] * dim;
  TO* orow = out + blockIdx.x * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) st(&orow[i], ld(&row[i]) * scale);
}

// RoPE angle for pair i of a head of `head_dim` dims at position `pos`: pos * 10000^(-2i/head_dim),
// in fp32 (gemma.py _apply_rope: radians = pos / 10000^(2i/Dh)).

// Head slots [0, heads + kv_heads) rotate the pairs (i, i + half) of a q or k head; the last kv_heads
// slots copy a v head. Block (t, y) takes token t's slots [y, y + 1) * ceil(slots / gridDim.y): with
// RoPE one slot a block (one block per token left all but 51 SMs idle in the action steps), without
// (SigLIP's split of 48 small heads) every slot of the token in one block.
template <class TI, class TQ, class TK, class TV>
__global__ void qkv_rope_kernel(const TI* __restrict__ qkv, const int32_t* __restrict__ positions, int heads,
                                int kv_heads, int head_dim, TQ* __restrict__ q, TK* __restrict__ k, TV* __restrict__ v,
                                const float* __restrict__ partials, int splits) {
  pdl_wait();
  pdl_trigger();
  const int t = blockIdx.x;
  const int half = head_dim / 2;
  const int rot_heads = heads + kv_heads, slots = rot_heads + kv_heads;
  const int per = (slots + gridDim.y - 1) / gridDim.y;
  const int s0 = blockIdx.y * per, s1 = min(slots, s0 + per);
  const int64_t width = (int64_t)slots * head_dim;
  const TI* row = qkv + t * width;
  // Element j of this token's row: from qkv, or (partials mode) the sum of the GEMM's splits rounded
  // as the unfused path stores qkv.
  const int64_t split_stride = (int64_t)gridDim.x * width;
  const float* prow = partials ? partials + t * width : nullptr;
  auto in2 = [&](int64_t j1, int64_t j2, float& x1, float& x2) {
    if (!partials) {
      x1 = ld(&row[j1]), x2 = ld(&row[j2]);
      return;
    }
    float a1 = 0.f, a2 = 0.f;
#pragma unroll 8
    for (int sp = 0; sp < splits; ++sp) {  // unrolled: 16 loads in flight
      a1 += prow[sp * split_stride + j1];
      a2 += prow[sp * split_stride + j2];
    }
    x1 = ld_rounded<TI>(a1), x2 = ld_rounded<TI>(a2);
  };
  const int pos = positions ? positions[t] : 0;
  const int r1 = min(s1, rot_heads);
  for (int j = threadIdx.x; j < (r1 - s0) * half; j += blockDim.x) {
    const int h = s0 + j / half, i = j % half;
    const int64_t src = (int64_t)h * head_dim;
    float x1, x2;
    in2(src + i, src + i + half, x1, x2);
    float y1 = x1, y2 = x2;
    if (positions) {
      float s, c;
      rope_sincos(pos, i, head_dim, &s, &c);
      y1 = x1 * c - x2 * s;
      y2 = x2 * c + x1 * s;
    }
    if (h < heads) {
      TQ* dst = q + ((int64_t)t * heads + h) * head_dim;
      st(&dst[i], y1);
      st(&dst[i + half], y2);
    } else {
      TK* dst = k + ((int64_t)t * kv_heads + (h - heads)) * head_dim;
      st(&dst[i], y1);
      st(&dst[i + half], y2);
    }
  }
  const int v0 = max(s0, rot_heads);
  if (s1 > v0) {
    TV* vdst = v + ((int64_t)t * kv_heads + (v0 - rot_heads)) * head_dim;
    const int n = (s1 - v0) * head_dim;
    for (int j = threadIdx.x; j < n; j += 2 * blockDim.x) {  // two elements a step (the loads overlap)
      const int j2 = j + blockDim.x < n ? j + blockDim.x : j;
      float a, b;
      in2((int64_t)v0 * head_dim + j, (int64_t)v0 * head_dim + j2, a, b);
      st(&vdst[j], a);
      if (j2 != j) st(&vdst[j2], b);
    }
  }
}

// The all-bf16 case (no partials) in wider pieces, with RoPE's angles computed once a pair, not once
// a head (the generic kernel ran powf + sincosf for every element of every q and k head: 12 us a
// prefix layer). The arithmetic is the generic kernel's, so the results are bit-identical.
// Without RoPE: q, k and v are three contiguous runs of the token's row, copied 16 bytes a thread.
// With RoPE: block (t, y) takes token t's head slots y, y + gridDim.y, ...; thread j its pairs
// (2j, 2j + 1) of each slot, as bf16x2 loads and stores (the v slots are copied the same way).
__global__ void qkv_split_bf16_kernel(const bf16* __restrict__ qkv, int heads, int kv_heads, int head_dim,
                                      bf16* __restrict__ q, bf16* __restrict__ k, bf16* __restrict__ v) {
  pdl_wait();
  pdl_trigger();
  const int t = blockIdx.x;
  const int64_t nq = (int64_t)heads * head_dim, nk = (int64_t)kv_heads * head_dim, width = nq + 2 * nk;
  const uint4* row = reinterpret_cast<const uint4*>(qkv + t * width);
  for (int64_t c = threadIdx.x; c < width / 8; c += blockDim.x) {
    const int64_t e = c * 8;
    bf16* dst = e < nq ? q + t * nq + e : e < nq + nk ? k + t * nk + (e - nq) : v + t * nk + (e - nq - nk);
    *reinterpret_cast<uint4*>(dst) = row[c];
  }
}

__global__ void qkv_rope_bf16_kernel(const bf16* __restrict__ qkv, const int32_t* __restrict__ positions, int heads,
                                     int kv_heads, int head_dim, bf16* __restrict__ q, bf16* __restrict__ k,
                                     bf16* __restrict__ v) {
  pdl_wait();
  pdl_trigger();
  const int t = blockIdx.x, half = head_dim / 2, j = threadIdx.x;
  if (2 * j >= half) return;
  const int rot_heads = heads + kv_heads, slots = rot_heads + kv_heads;
  const bf16* row = qkv + (int64_t)t * slots * head_dim;
  const int pos = positions[t];
  float sn[2], cs[2];
#pragma unroll
  for (int e = 0; e < 2; ++e) rope_sincos(pos, 2 * j + e, head_dim, &sn[e], &cs[e]);
  for (int h = blockIdx.y; h < slots; h += gridDim.y) {
    const __nv_bfloat162 a = *reinterpret_cast<const __nv_bfloat162*>(row + h * head_dim + 2 * j);
    const __nv_bfloat162 b = *reinterpret_cast<const __nv_bfloat162*>(row + h * head_dim + half + 2 * j);
    float x1[2] = {__low2float(a), __high2float(a)}, x2[2] = {__low2float(b), __high2float(b)};
    float y1[2], y2[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      if (h < rot_heads) {
        y1[e] = x1[e] * cs[e] - x2[e] * sn[e];
        y2[e] = x2[e] * cs[e] + x1[e] * sn[e];
      } else {
        y1[e] = x1[e], y2[e] = x2[e];
      }
    }
    bf16* dst = h < heads ? q + ((int64_t)t * heads + h) * head_dim
                : h < rot_heads ? k + ((int64_t)t * kv_heads + (h - heads)) * head_dim
                                : v + ((int64_t)t * kv_heads + (h - rot_heads)) * head_dim;
    *reinterpret_cast<uint32_t*>(dst + 2 * j) = pack_bf16x2(y1[0], y1[1]);
    *reinterpret_cast<uint32_t*>(dst + half + 2 * j) = pack_bf16x2(y2[0], y2[1]);
  }
}

// Four bytes a thread (n % 4 == 0: the caller's images are 224 x 224 x 3); __fdiv_rn keeps the
// division IEEE-rounded whatever the compiler flags, and x * 2 is exact, so the result is the CPU's.
__global__ void image_to_unit_range_kernel(const uchar4* __restrict__ in, float4* __restrict__ out, int64_t n4) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4; i += (int64_t)gridDim.x * blockDim.x) {
    const uchar4 v = in[i];
    out[i] = make_float4(__fdiv_rn((float)v.x, 255.f) * 2.f - 1.f, __fdiv_rn((float)v.y, 255.f) * 2.f - 1.f,
                         __fdiv_rn((float)v.z, 255.f) * 2.f - 1.f, __fdiv_rn((float)v.w, 255.f) * 2.f - 1.f);
  }
}

__global__ void im2col_kernel(const float* __restrict__ img, int64_t n, int64_t size, int64_t p,
                              float* __restrict__ col) {
  pdl_wait();
  pdl_trigger();
  const int64_t g = size / p, tokens = g * g, kk = 3 * p * p, total = n * tokens * kk;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / kk, kidx = i % kk;
    const int64_t img_i = r / tokens, t = r % tokens, py = t / g, px = t % g;
    const int64_t c = kidx / (p * p), ky = (kidx / p) % p, kx = kidx % p;
    col[i] = img[((img_i * size + py * p + ky) * size + px * p + kx) * 3 + c];
  }
}

template <class TB, class TP, class TO>
__global__ void add_bias_pos_kernel(const float* __restrict__ acc, const TB* __restrict__ b, const TP* __restrict__ pos,
                                    TO* __restrict__ out, int64_t rows, int64_t tokens, int64_t width) {
  pdl_wait();
  pdl_trigger();
  const int64_t n = rows * width;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / width, c = i % width;
    st(&out[i], acc[i] + ld(&b[c]) + ld(&pos[(r % tokens) * width + c]));
  }
}

int row_threads(int64_t dim) { return dim >= 1024 ? 256 : (dim >= 256 ? 128 : 64); }

}  // namespace

void convert(const void* src, DType st_, void* dst, DType dt, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  if (st_ == dt) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n * dtype_size(dt), cudaMemcpyDeviceToDevice, s));
    return;
  }
  dispatch_floats([&](auto ti, auto to) {
    using TI = decltype(ti);
    using TO = decltype(to);
    launch(convert_kernel<TI, TO>, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, s, 1,
           static_cast<const TI*>(src), static_cast<TO*>(dst), n);
  }, st_, dt);
  CUDA_CHECK_LAUNCH();
}

// Launches row_norm_bf16_kernel where it applies (bf16 in and out, 16-byte aligned rows, dim a
// multiple of 256 or 128, at most 8192); false: the caller runs the generic kernel.
template <RowNorm kind>
bool row_norm_bf16(const void* x, DType xt, const void* w, DType wt, const void* b, int64_t mod_stride, void* out,
                   DType ot, int64_t rows, int64_t dim, float eps, cudaStream_t s) {
  if (xt != DType::BF16 || ot != DType::BF16 || dim > 8192 || reinterpret_cast<uintptr_t>(x) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(out) % 16 != 0)
    return false;
  const int vec = dim % 256 == 0 ? 8 : (dim % 128 == 0 ? 4 : 0);
  if (vec == 0) return false;
  dispatch_float(wt, [&](auto bw) {
    using TW = decltype(bw);
    const auto* wp = static_cast<const TW*>(w);
    const auto* bp = static_cast<const TW*>(b);
    auto* xp = static_cast<const bf16*>(x);
    auto* op = static_cast<bf16*>(out);
    const int d = static_cast<int>(dim);
    if (vec == 8)
      launch(row_norm_bf16_kernel<kind, 8, TW>, dim3(rows), dim3(d / 8), 0, s, 1, xp, wp, bp, mod_stride, op, d, eps);
    else
      launch(row_norm_bf16_kernel<kind, 4, TW>, dim3(rows), dim3(d / 4), 0, s, 1, xp, wp, bp, mod_stride, op, d, eps);
  });
  return true;
}

void rms_norm(const void* x, DType xt, const void* w, DType wt, void* out, DType ot, int64_t rows, int64_t dim,
              float eps, cudaStream_t s) {
  if (rows == 0) return;
  if (row_norm_bf16<RowNorm::Rms>(x, xt, w, wt, nullptr, 0, out, ot, rows, dim, eps, s)) return;
  dispatch_floats([&](auto a, auto b, auto c) {
    using TX = decltype(a);
    using TW = decltype(b);
    using TO = decltype(c);
    launch(rms_norm_kernel<TX, TW, TO>, dim3(rows), dim3(row_threads(dim)), 0, s, 1, static_cast<const TX*>(x),
           static_cast<const TW*>(w), static_cast<TO*>(out), dim, eps);
  }, xt, wt, ot);
  CUDA_CHECK_LAUNCH();
}

void residual_rms_norm_partials(const float* partials, int splits, void* h, const void* w, DType wt, void* xn,
                                int64_t rows, int64_t dim, float eps, cudaStream_t s) {
  PIRT_CHECK(dim % 128 == 0 && dim <= 4096, "residual_rms_norm_partials: dim %lld", (long long)dim);
  PIRT_CHECK(splits >= 1 && splits <= kMaxRowSplits, "residual_rms_norm_partials: %d splits", splits);
  if (rows == 0) return;
  dispatch_float(wt, [&](auto bw) {
    using TW = decltype(bw);
    const int d = static_cast<int>(dim);
    const int64_t stride = rows * dim;
    // 4 wide, dim / 4 threads: twice the partial loads in flight of 8 wide, one block a row.
    launch(residual_rms_norm_partials_kernel<4, TW>, dim3(rows), dim3(d / 4), 0, s, 1, partials, splits, stride,
             static_cast<bf16*>(h), static_cast<const TW*>(w), static_cast<bf16*>(xn), d, eps);
  });
}

void ada_rms_norm(const void* x, DType xt, const void* mod, DType mt, int64_t mod_stride, void* out, DType ot,
                  int64_t rows, int64_t dim, float eps, cudaStream_t s) {
  if (rows == 0) return;
  if (row_norm_bf16<RowNorm::AdaRms>(x, xt, mod, mt, nullptr, mod_stride, out, ot, rows, dim, eps, s)) return;
  dispatch_floats([&](auto a, auto b, auto c) {
    using TX = decltype(a);
    using TM = decltype(b);
    using TO = decltype(c);
    launch(ada_rms_norm_kernel<TX, TM, TO>, dim3(rows), dim3(row_threads(dim)), 0, s, 1, static_cast<const TX*>(x),
           static_cast<const TM*>(mod), mod_stride, static_cast<TO*>(out), dim, eps);
  }, xt, mt, ot);
  CUDA_CHECK_LAUNCH();
}

void layer_norm(const void* x, DType xt, const void* w, DType wt, const void* b, DType bt, void* out, DType ot,
                int64_t rows, int64_t dim, float eps, cudaStream_t s) {
  if (rows == 0) return;
  PIRT_CHECK(wt == bt, "layer_norm: weight and bias dtypes differ");
  if (row_norm_bf16<RowNorm::Layer>(x, xt, w, wt, b, 0, out, ot, rows, dim, eps, s)) return;
  dispatch_floats([&](auto a, auto bb, auto c) {
    using TX = decltype(a);
    using TW = decltype(bb);
    using TO = decltype(c);
    launch(layer_norm_kernel<TX, TW, TW, TO>, dim3(rows), dim3(row_threads(dim)), 0, s, 1,
           static_cast<const TX*>(x), static_cast<const TW*>(w), static_cast<const TW*>(b), static_cast<TO*>(out),
           dim, eps);
  }, xt, wt, ot);
  CUDA_CHECK_LAUNCH();
}

void gated_residual(void* h, DType ht, const void* y, DType yt, const void* gate, DType gt, int64_t gate_stride,
                    int64_t rows, int64_t dim, cudaStream_t s) {
  const int64_t n = rows * dim;
  if (n == 0) return;
  dispatch_floats([&](auto a, auto b, auto c) {
    using TH = decltype(a);
    using TY = decltype(b);
    using TG = decltype(c);
    launch(gated_residual_kernel<TH, TY, TG>, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, s, 1,
           static_cast<TH*>(h), static_cast<const TY*>(y), static_cast<const TG*>(gate), gate_stride, rows, dim);
  }, ht, yt, gt);
  CUDA_CHECK_LAUNCH();
}

void geglu(const void* gu, DType gt, void* out, DType ot, int64_t rows, int64_t f, cudaStream_t s) {
  const int64_t n = rows * f;
  if (n == 0) return;
  if (gt == DType::BF16 && ot == DType::BF16 && f % 8 == 0 && reinterpret_cast<uintptr_t>(gu) % 16 == 0 &&
      reinterpret_cast<uintptr_t>(out) % 16 == 0) {
    launch(geglu_bf16x8_kernel, dim3(blocks_for(n / 8, kThreads)), dim3(kThreads), 0, s, 1,
           static_cast<const bf16*>(gu), static_cast<bf16*>(out), rows, f);
    return;
  }
  dispatch_floats([&](auto a, auto b) {
    using TI = decltype(a);
    using TO = decltype(b);
    launch(geglu_kernel<TI, TO>, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, s, 1, static_cast<const TI*>(gu),
           static_cast<TO*>(out), rows, f);
  }, gt, ot);
  CUDA_CHECK_LAUNCH();
}

void silu(const void* x, DType xt, void* out, DType ot, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  dispatch_floats([&](auto a, auto b) {
    using TI = decltype(a);
    using TO = decltype(b);
    launch(silu_kernel<TI, TO>, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, s, 1, static_cast<const TI*>(x),
           static_cast<TO*>(out), n);
  }, xt, ot);
  CUDA_CHECK_LAUNCH();
}

void concat_cols(const void* a, DType at, const void* b, DType bt, int64_t b_rows, void* out, DType ot, int64_t rows,
                 int64_t k1, int64_t k2, cudaStream_t s) {
  const int64_t n = rows * (k1 + k2);
  if (n == 0) return;
  dispatch_floats([&](auto x, auto y, auto z) {
    using TA = decltype(x);
    using TB = decltype(y);
    using TO = decltype(z);
    launch(concat_cols_kernel<TA, TB, TO>, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, s, 1,
           static_cast<const TA*>(a), static_cast<const TB*>(b), b_rows, static_cast<TO*>(out), rows, k1, k2);
  }, at, bt, ot);
  CUDA_CHECK_LAUNCH();
}

void axpy(float* x, const void* v, DType vt, float dt, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  dispatch_float(vt, [&](auto a) {
    using TV = decltype(a);
    launch(axpy_kernel<TV>, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, s, 1, x, static_cast<const TV*>(v), dt,
           n);
  });
  CUDA_CHECK_LAUNCH();
}

void embed(const int32_t* ids, const void* table, DType tt, float scale, void* out, DType ot, int64_t tokens,
           int64_t dim, cudaStream_t s) {
  if (tokens == 0) return;
  dispatch_floats([&](auto a, auto b) {
    using TT = decltype(a);
    using TO = decltype(b);
    launch(embed_kernel<TT, TO>, dim3(tokens), dim3(row_threads(dim)), 0, s, 1, ids, static_cast<const TT*>(table),
           scale, static_cast<TO*>(out), dim);
  }, tt, ot);
  CUDA_CHECK_LAUNCH();
}

void qkv_rope(const void* qkv, DType qkvt, const int32_t* positions, int64_t tokens, int heads, int kv_heads,
              int head_dim, void* q, DType qt, void* k, DType kt, void* v, DType vt, cudaStream_t s,
              const float* partials, int splits) {
  if (tokens == 0) return;
  PIRT_CHECK(kt == vt, "qkv_rope: k and v dtypes differ");
  const bool bf = qkvt == DType::BF16 && qt == DType::BF16 && kt == DType::BF16 && !partials;
  auto a16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (bf && !positions && head_dim % 8 == 0 && a16(qkv) && a16(q) && a16(k) && a16(v)) {
    launch(qkv_split_bf16_kernel, dim3(tokens), dim3(128), 0, s, 1, static_cast<const bf16*>(qkv), heads, kv_heads,
           head_dim, static_cast<bf16*>(q), static_cast<bf16*>(k), static_cast<bf16*>(v));
    CUDA_CHECK_LAUNCH();
    return;
  }
  if (bf && positions && head_dim % 4 == 0 && head_dim <= 1024 && a16(qkv) && a16(q) && a16(k) && a16(v)) {
    // Every slot of a token in one block where there are tokens enough to fill the GPU (the prefix);
    // one slot a block otherwise (the action steps' 51 tokens).
    const int slots = heads + 2 * kv_heads, threads = ((head_dim / 4 + 31) / 32) * 32;
    launch(qkv_rope_bf16_kernel, dim3(tokens, tokens >= 256 ? 1 : slots), dim3(threads), 0, s, 1,
           static_cast<const bf16*>(qkv), positions, heads, kv_heads, head_dim, static_cast<bf16*>(q),
           static_cast<bf16*>(k), static_cast<bf16*>(v));
    CUDA_CHECK_LAUNCH();
    return;
  }
  dispatch_floats([&](auto a, auto b, auto c) {
    using TI = decltype(a);
    using TQ = decltype(b);
    using TK = decltype(c);
    const bool rope = positions != nullptr;
    launch(qkv_rope_kernel<TI, TQ, TK, TK>, dim3(tokens, rope ? heads + 2 * kv_heads : 1), dim3(rope ? 128 : 256),
           0, s, 1, static_cast<const TI*>(qkv), positions, heads, kv_heads, head_dim, static_cast<TQ*>(q),
           static_cast<TK*>(k), static_cast<TK*>(v), partials, splits);
  }, qkvt, qt, kt);
  CUDA_CHECK_LAUNCH();
}

void image_to_unit_range(const uint8_t* in, float* out, int64_t n, cudaStream_t s) {
  PIRT_CHECK(n % 4 == 0 && reinterpret_cast<uintptr_t>(in) % 4 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0,
             "image_to_unit_range: %lld elements (a multiple of 4, aligned)", (long long)n);
  if (n == 0) return;
  launch(image_to_unit_range_kernel, dim3(blocks_for(n / 4, kThreads)), dim3(kThreads), 0, s, 1,
         reinterpret_cast<const uchar4*>(in), reinterpret_cast<float4*>(out), n / 4);
  CUDA_CHECK_LAUNCH();
}

void im2col_patches(const float* images, int64_t n, int64_t size, int64_t patch, float* col, cudaStream_t s) {
  const int64_t g = size / patch, total = n * g * g * 3 * patch * patch;
  if (total == 0) return;
  launch(im2col_kernel, dim3(blocks_for(total, kThreads)), dim3(kThreads), 0, s, 1, images, n, size, patch, col);
  CUDA_CHECK_LAUNCH();
}

void add_bias_pos(const float* acc, const void* b, DType bt, const void* pos, DType pt, void* out, DType ot,
                  int64_t rows, int64_t tokens, int64_t width, cudaStream_t s) {
  const int64_t n = rows * width;
  if (n == 0) return;
  dispatch_floats([&](auto x, auto y, auto z) {
    using TB = decltype(x);
    using TP = decltype(y);
    using TO = decltype(z);
    launch(add_bias_pos_kernel<TB, TP, TO>, dim3(blocks_for(n, kThreads)), dim3(kThreads), 0, s, 1, acc,
           static_cast<const TB*>(b), static_cast<const TP*>(pos), static_cast<TO*>(out), rows, tokens, width);
  }, bt, pt, ot);
  CUDA_CHECK_LAUNCH();
}

}  // namespace pirt::cuda
