// Elementwise and per-row kernels: norms, activations, casts, embedding, RoPE, patch helpers.
// They move little data (the largest, the prefix RMSNorm, reads 3.3 MB); each is written plainly,
// one block per row or a grid-stride loop, all arithmetic in fp32.
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace pirt::cuda {
namespace {

constexpr int kThreads = 256;

// ---- convert ----
template <class TI, class TO>
__global__ void convert_kernel(const TI* __restrict__ x, TO* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    st(&y[i], ld(&x[i]));
}

// ---- norms (one block per row) ----
template <class TX, class TW, class TO>
__global__ void rms_norm_kernel(const TX* __restrict__ x, const TW* __restrict__ w, TO* __restrict__ out,
                                int64_t dim, float eps) {
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

template <class TX, class TM, class TO>
__global__ void ada_rms_norm_kernel(const TX* __restrict__ x, const TM* __restrict__ mod, int64_t mod_stride,
                                    TO* __restrict__ out, int64_t dim, float eps) {
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
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
    st(&orow[i], (ld(&xr[i]) - mean) * r * ld(&w[i]) + ld(&b[i]));
}

// ---- elementwise ----
template <class TH, class TY, class TG>
__global__ void gated_residual_kernel(TH* h, const TY* __restrict__ y, const TG* __restrict__ gate,
                                      int64_t gate_stride, int64_t rows, int64_t dim) {
  const int64_t n = rows * dim;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / dim, c = i % dim;
    st(&h[i], ld(&h[i]) + ld(&y[i]) * ld(&gate[r * gate_stride + c]));
  }
}

template <class TI, class TO>
__global__ void geglu_kernel(const TI* __restrict__ gu, TO* __restrict__ out, int64_t rows, int64_t f) {
  const int64_t n = rows * f;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / f, c = i % f;
    const TI* row = gu + r * 2 * f;
    st(&out[i], gelu_tanh(ld(&row[c])) * ld(&row[f + c]));
  }
}

template <class TI, class TO>
__global__ void silu_kernel(const TI* x, TO* out, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float v = ld(&x[i]);
    st(&out[i], v / (1.f + expf(-v)));
  }
}

template <class TA, class TB, class TO>
__global__ void concat_cols_kernel(const TA* __restrict__ a, const TB* __restrict__ b, int64_t b_rows,
                                   TO* __restrict__ out, int64_t rows, int64_t k1, int64_t k2) {
  const int64_t kk = k1 + k2, n = rows * kk;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / kk, c = i % kk;
    const float v = c < k1 ? ld(&a[r * k1 + c]) : ld(&b[(b_rows == 1 ? 0 : r) * k2 + (c - k1)]);
    st(&out[i], v);
  }
}

template <class TV>
__global__ void axpy_kernel(float* x, const TV* __restrict__ v, float dt, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    x[i] = x[i] + dt * ld(&v[i]);
}

template <class TT, class TO>
__global__ void embed_kernel(const int32_t* __restrict__ ids, const TT* __restrict__ table, float scale,
                             TO* __restrict__ out, int64_t dim) {
  const TT* row = table + (int64_t)ids[blockIdx.x] * dim;
  TO* orow = out + blockIdx.x * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) st(&orow[i], ld(&row[i]) * scale);
}

// RoPE angle for pair i of a head of `head_dim` dims at position `pos`: pos * 10000^(-2i/head_dim),
// in fp32 (gemma.py _apply_rope: radians = pos / 10000^(2i/Dh)).
__device__ __forceinline__ void rope_sincos(int pos, int i, int head_dim, float* s, float* c) {
  const float timescale = powf(10000.f, (2.f * (float)i) / (float)head_dim);
  sincosf((float)pos / timescale, s, c);
}

// One block per token: every (head, pair) of q and k is rotated, v is copied.
template <class TI, class TQ, class TK, class TV>
__global__ void qkv_rope_kernel(const TI* __restrict__ qkv, const int32_t* __restrict__ positions, int heads,
                                int kv_heads, int head_dim, TQ* __restrict__ q, TK* __restrict__ k,
                                TV* __restrict__ v) {
  const int t = blockIdx.x;
  const int half = head_dim / 2;
  const int64_t width = (int64_t)(heads + 2 * kv_heads) * head_dim;
  const TI* row = qkv + t * width;
  const int pos = positions ? positions[t] : 0;
  const int rot_heads = heads + kv_heads;
  for (int j = threadIdx.x; j < rot_heads * half; j += blockDim.x) {
    const int h = j / half, i = j % half;
    const TI* src = row + (int64_t)h * head_dim;
    const float x1 = ld(&src[i]), x2 = ld(&src[i + half]);
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
  const TI* vsrc = row + (int64_t)(heads + kv_heads) * head_dim;
  TV* vdst = v + (int64_t)t * kv_heads * head_dim;
  for (int j = threadIdx.x; j < kv_heads * head_dim; j += blockDim.x) st(&vdst[j], ld(&vsrc[j]));
}

__global__ void im2col_kernel(const float* __restrict__ img, int64_t n, int64_t size, int64_t p, float* __restrict__ col) {
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
  dispatch_float(st_, [&](auto ti) {
    dispatch_float(dt, [&](auto to) {
      using TI = decltype(ti);
      using TO = decltype(to);
      convert_kernel<<<blocks_for(n, kThreads), kThreads, 0, s>>>(static_cast<const TI*>(src), static_cast<TO*>(dst), n);
    });
  });
  CUDA_CHECK_LAUNCH();
}

void rms_norm(const void* x, DType xt, const void* w, DType wt, void* out, DType ot, int64_t rows, int64_t dim,
              float eps, cudaStream_t s) {
  if (rows == 0) return;
  dispatch_float(xt, [&](auto a) {
    dispatch_float(wt, [&](auto b) {
      dispatch_float(ot, [&](auto c) {
        using TX = decltype(a);
        using TW = decltype(b);
        using TO = decltype(c);
        rms_norm_kernel<<<rows, row_threads(dim), 0, s>>>(static_cast<const TX*>(x), static_cast<const TW*>(w),
                                                          static_cast<TO*>(out), dim, eps);
      });
    });
  });
  CUDA_CHECK_LAUNCH();
}

void ada_rms_norm(const void* x, DType xt, const void* mod, DType mt, int64_t mod_stride, void* out, DType ot,
                  int64_t rows, int64_t dim, float eps, cudaStream_t s) {
  if (rows == 0) return;
  dispatch_float(xt, [&](auto a) {
    dispatch_float(mt, [&](auto b) {
      dispatch_float(ot, [&](auto c) {
        using TX = decltype(a);
        using TM = decltype(b);
        using TO = decltype(c);
        ada_rms_norm_kernel<<<rows, row_threads(dim), 0, s>>>(static_cast<const TX*>(x), static_cast<const TM*>(mod),
                                                              mod_stride, static_cast<TO*>(out), dim, eps);
      });
    });
  });
  CUDA_CHECK_LAUNCH();
}

void layer_norm(const void* x, DType xt, const void* w, DType wt, const void* b, DType bt, void* out, DType ot,
                int64_t rows, int64_t dim, float eps, cudaStream_t s) {
  if (rows == 0) return;
  PIRT_CHECK(wt == bt, "layer_norm: weight and bias dtypes differ");
  dispatch_float(xt, [&](auto a) {
    dispatch_float(wt, [&](auto bb) {
      dispatch_float(ot, [&](auto c) {
        using TX = decltype(a);
        using TW = decltype(bb);
        using TO = decltype(c);
        layer_norm_kernel<<<rows, row_threads(dim), 0, s>>>(static_cast<const TX*>(x), static_cast<const TW*>(w),
                                                            static_cast<const TW*>(b), static_cast<TO*>(out), dim, eps);
      });
    });
  });
  CUDA_CHECK_LAUNCH();
}

void gated_residual(void* h, DType ht, const void* y, DType yt, const void* gate, DType gt, int64_t gate_stride,
                    int64_t rows, int64_t dim, cudaStream_t s) {
  const int64_t n = rows * dim;
  if (n == 0) return;
  dispatch_float(ht, [&](auto a) {
    dispatch_float(yt, [&](auto b) {
      dispatch_float(gt, [&](auto c) {
        using TH = decltype(a);
        using TY = decltype(b);
        using TG = decltype(c);
        gated_residual_kernel<<<blocks_for(n, kThreads), kThreads, 0, s>>>(
            static_cast<TH*>(h), static_cast<const TY*>(y), static_cast<const TG*>(gate), gate_stride, rows, dim);
      });
    });
  });
  CUDA_CHECK_LAUNCH();
}

void geglu(const void* gu, DType gt, void* out, DType ot, int64_t rows, int64_t f, cudaStream_t s) {
  const int64_t n = rows * f;
  if (n == 0) return;
  dispatch_float(gt, [&](auto a) {
    dispatch_float(ot, [&](auto b) {
      using TI = decltype(a);
      using TO = decltype(b);
      geglu_kernel<<<blocks_for(n, kThreads), kThreads, 0, s>>>(static_cast<const TI*>(gu), static_cast<TO*>(out), rows, f);
    });
  });
  CUDA_CHECK_LAUNCH();
}

void silu(const void* x, DType xt, void* out, DType ot, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  dispatch_float(xt, [&](auto a) {
    dispatch_float(ot, [&](auto b) {
      using TI = decltype(a);
      using TO = decltype(b);
      silu_kernel<<<blocks_for(n, kThreads), kThreads, 0, s>>>(static_cast<const TI*>(x), static_cast<TO*>(out), n);
    });
  });
  CUDA_CHECK_LAUNCH();
}

void concat_cols(const void* a, DType at, const void* b, DType bt, int64_t b_rows, void* out, DType ot, int64_t rows,
                 int64_t k1, int64_t k2, cudaStream_t s) {
  const int64_t n = rows * (k1 + k2);
  if (n == 0) return;
  dispatch_float(at, [&](auto x) {
    dispatch_float(bt, [&](auto y) {
      dispatch_float(ot, [&](auto z) {
        using TA = decltype(x);
        using TB = decltype(y);
        using TO = decltype(z);
        concat_cols_kernel<<<blocks_for(n, kThreads), kThreads, 0, s>>>(
            static_cast<const TA*>(a), static_cast<const TB*>(b), b_rows, static_cast<TO*>(out), rows, k1, k2);
      });
    });
  });
  CUDA_CHECK_LAUNCH();
}

void axpy(float* x, const void* v, DType vt, float dt, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  dispatch_float(vt, [&](auto a) {
    using TV = decltype(a);
    axpy_kernel<<<blocks_for(n, kThreads), kThreads, 0, s>>>(x, static_cast<const TV*>(v), dt, n);
  });
  CUDA_CHECK_LAUNCH();
}

void embed(const int32_t* ids, const void* table, DType tt, float scale, void* out, DType ot, int64_t tokens,
           int64_t dim, cudaStream_t s) {
  if (tokens == 0) return;
  dispatch_float(tt, [&](auto a) {
    dispatch_float(ot, [&](auto b) {
      using TT = decltype(a);
      using TO = decltype(b);
      embed_kernel<<<tokens, row_threads(dim), 0, s>>>(ids, static_cast<const TT*>(table), scale, static_cast<TO*>(out), dim);
    });
  });
  CUDA_CHECK_LAUNCH();
}

void qkv_rope(const void* qkv, DType qkvt, const int32_t* positions, int64_t tokens, int heads, int kv_heads,
              int head_dim, void* q, DType qt, void* k, DType kt, void* v, DType vt, cudaStream_t s) {
  if (tokens == 0) return;
  PIRT_CHECK(kt == vt, "qkv_rope: k and v dtypes differ");
  dispatch_float(qkvt, [&](auto a) {
    dispatch_float(qt, [&](auto b) {
      dispatch_float(kt, [&](auto c) {
        using TI = decltype(a);
        using TQ = decltype(b);
        using TK = decltype(c);
        qkv_rope_kernel<<<tokens, 256, 0, s>>>(static_cast<const TI*>(qkv), positions, heads, kv_heads, head_dim,
                                               static_cast<TQ*>(q), static_cast<TK*>(k), static_cast<TK*>(v));
      });
    });
  });
  CUDA_CHECK_LAUNCH();
}

void im2col_patches(const float* images, int64_t n, int64_t size, int64_t patch, float* col, cudaStream_t s) {
  const int64_t g = size / patch, total = n * g * g * 3 * patch * patch;
  if (total == 0) return;
  im2col_kernel<<<blocks_for(total, kThreads), kThreads, 0, s>>>(images, n, size, patch, col);
  CUDA_CHECK_LAUNCH();
}

void add_bias_pos(const float* acc, const void* b, DType bt, const void* pos, DType pt, void* out, DType ot,
                  int64_t rows, int64_t tokens, int64_t width, cudaStream_t s) {
  const int64_t n = rows * width;
  if (n == 0) return;
  dispatch_float(bt, [&](auto x) {
    dispatch_float(pt, [&](auto y) {
      dispatch_float(ot, [&](auto z) {
        using TB = decltype(x);
        using TP = decltype(y);
        using TO = decltype(z);
        add_bias_pos_kernel<<<blocks_for(n, kThreads), kThreads, 0, s>>>(
            acc, static_cast<const TB*>(b), static_cast<const TP*>(pos), static_cast<TO*>(out), rows, tokens, width);
      });
    });
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace pirt::cuda
