// The CPU backend: every op of src/ops/ops.h as a plain fp32 loop. This is the oracle the CUDA
// kernels are tested against, so clarity wins over speed; the only concession is a parallel-for
// over independent rows for the two heavy ops (linear, attention).
#include "backends/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <list>
#include <thread>
#include <vector>

#include "core/bf16.h"

namespace pirt {
namespace {

void check_f32(const Tensor& t, const char* what) {
  PIRT_CHECK(t.dtype == DType::F32, "cpu %s: expected F32, got %s", what,
             std::string(dtype_name(t.dtype)).c_str());
}

// Runs fn(begin, end) over [0, n) split across hardware threads.
template <class Fn>
void parallel_for(int64_t n, int64_t min_chunk, Fn fn) {
  const int64_t hw = std::max(1u, std::thread::hardware_concurrency());
  const int64_t chunks = std::min<int64_t>(hw, std::max<int64_t>(1, n / std::max<int64_t>(1, min_chunk)));
  if (chunks <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  std::vector<std::thread> threads;
  const int64_t step = (n + chunks - 1) / chunks;
  for (int64_t b = 0; b < n; b += step) threads.emplace_back(fn, b, std::min(n, b + step));
  for (auto& t : threads) t.join();
}

float gelu_tanh(float x) {
  const float k = 0.7978845608028654f;  // sqrt(2/pi)
  return 0.5f * x * (1.f + std::tanh(k * (x + 0.044715f * x * x * x)));
}

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  DType act_dtype() const override { return DType::F32; }
  DType matrix_dtype() const override { return DType::F32; }

  Tensor alloc(DType dtype, Shape shape) override {
    Tensor t;
    t.dtype = dtype;
    t.shape = shape;
    t.where = Where::Host;  // the CPU backend's memory is host memory
    buffers_.emplace_back(t.nbytes() + 16, 0);
    t.data = buffers_.back().data();
    bytes_ += t.nbytes();
    return t;
  }

  Tensor upload(const std::vector<Tensor>& parts, DType dtype) override {
    PIRT_CHECK(!parts.empty(), "upload of nothing");
    const int64_t row = parts[0].row_size();
    std::vector<int64_t> dims = parts[0].shape.dims();
    int64_t rows = 0;
    for (const Tensor& p : parts) {
      PIRT_CHECK(p.row_size() == row, "upload parts differ in row size");
      rows += p.shape.rank() == 0 ? 1 : p.shape[0];
    }
    if (!dims.empty()) dims[0] = rows;
    Tensor t = alloc(dtype, Shape(dims));
    int64_t off = 0;
    for (const Tensor& p : parts) {
      const int64_t n = p.numel();
      for (int64_t i = 0; i < n; ++i) store(t, off + i, load_f32(p, i));
      off += n;
    }
    return t;
  }

  void to_device(const Tensor& host, const Tensor& dev) override {
    PIRT_CHECK(host.dtype == dev.dtype && host.numel() == dev.numel(), "to_device mismatch");
    std::memcpy(dev.data, host.data, host.nbytes());
  }
  void to_host(const Tensor& dev, const Tensor& host) override {
    PIRT_CHECK(host.dtype == dev.dtype && host.numel() == dev.numel(), "to_host mismatch");
    std::memcpy(host.data, dev.data, host.nbytes());
  }
  size_t memory_peak() const override { return bytes_; }

  void linear(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out, Epilogue ep,
              const Tensor& residual) override {
    check_f32(x, "linear x");
    check_f32(w, "linear w");
    check_f32(out, "linear out");
    const int64_t K = w.dim(-1), N = w.dim(0), M = x.numel() / K;
    PIRT_CHECK(x.numel() == M * K && out.numel() == M * N, "linear: x %s w %s out %s",
               x.shape.str().c_str(), w.shape.str().c_str(), out.shape.str().c_str());
    PIRT_CHECK(bias.empty() || bias.numel() == N, "linear bias");
    PIRT_CHECK(residual.empty() || residual.numel() == M * N, "linear residual");
    const float* xp = x.ptr<float>();
    const float* wp = w.ptr<float>();
    const float* bp = bias.empty() ? nullptr : bias.ptr<float>();
    const float* rp = residual.empty() ? nullptr : residual.ptr<float>();
    float* op = out.ptr<float>();
    parallel_for(M * N, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t idx = begin; idx < end; ++idx) {
        const int64_t m = idx / N, n = idx % N;
        const float* xr = xp + m * K;
        const float* wr = wp + n * K;
        float acc = 0.f;
        for (int64_t k = 0; k < K; ++k) acc += xr[k] * wr[k];
        if (bp) acc += bp[n];
        if (ep == Epilogue::GeluTanh) acc = gelu_tanh(acc);
        if (rp) acc += rp[idx];
        op[idx] = acc;
      }
    });
  }

  void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, const Tensor& out) override {
    check_f32(x, "layer_norm");
    const int64_t D = x.dim(-1), M = x.numel() / D;
    for (int64_t m = 0; m < M; ++m) {
      const float* xr = x.ptr<float>() + m * D;
      float* o = out.ptr<float>() + m * D;
      double mean = 0, var = 0;
      for (int64_t i = 0; i < D; ++i) mean += xr[i];
      mean /= D;
      for (int64_t i = 0; i < D; ++i) var += (xr[i] - mean) * (xr[i] - mean);
      var /= D;
      const float inv = 1.f / std::sqrt(static_cast<float>(var) + eps);
      for (int64_t i = 0; i < D; ++i)
        o[i] = (xr[i] - static_cast<float>(mean)) * inv * w.ptr<float>()[i] + b.ptr<float>()[i];
    }
  }

  // Shared by rms_norm and ada_rms_norm: out = rms(x) * (1 + scale) + shift.
  static void rms(const Tensor& x, const float* scale, const float* shift, float eps, const Tensor& out) {
    check_f32(x, "rms_norm");
    const int64_t D = x.dim(-1), M = x.numel() / D;
    for (int64_t m = 0; m < M; ++m) {
      const float* xr = x.ptr<float>() + m * D;
      float* o = out.ptr<float>() + m * D;
      double ss = 0;
      for (int64_t i = 0; i < D; ++i) ss += static_cast<double>(xr[i]) * xr[i];
      const float inv = 1.f / std::sqrt(static_cast<float>(ss / D) + eps);
      for (int64_t i = 0; i < D; ++i) o[i] = xr[i] * inv * (1.f + scale[i]) + (shift ? shift[i] : 0.f);
    }
  }
  void rms_norm(const Tensor& x, const Tensor& w, float eps, const Tensor& out) override {
    rms(x, w.ptr<float>(), nullptr, eps, out);
  }
  void ada_rms_norm(const Tensor& x, const Tensor& mod, float eps, const Tensor& out) override {
    const int64_t D = x.dim(-1);
    PIRT_CHECK(mod.numel() == 3 * D, "ada_rms_norm: mod %s for width %lld", mod.shape.str().c_str(),
               (long long)D);
    rms(x, mod.ptr<float>(), mod.ptr<float>() + D, eps, out);
  }
  void gated_residual(const Tensor& h, const Tensor& y, const Tensor& gate) override {
    const int64_t D = h.dim(-1), M = h.numel() / D;
    PIRT_CHECK(gate.numel() == D && y.numel() == h.numel(), "gated_residual shapes");
    for (int64_t m = 0; m < M; ++m)
      for (int64_t i = 0; i < D; ++i) h.ptr<float>()[m * D + i] += y.ptr<float>()[m * D + i] * gate.ptr<float>()[i];
  }

  void geglu(const Tensor& gu, const Tensor& out) override {
    const int64_t F = out.dim(-1), M = out.numel() / F;
    PIRT_CHECK(gu.numel() == 2 * M * F, "geglu: gu %s out %s", gu.shape.str().c_str(), out.shape.str().c_str());
    for (int64_t m = 0; m < M; ++m)
      for (int64_t i = 0; i < F; ++i)
        out.ptr<float>()[m * F + i] = gelu_tanh(gu.ptr<float>()[m * 2 * F + i]) * gu.ptr<float>()[m * 2 * F + F + i];
  }
  void silu(const Tensor& x, const Tensor& out) override {
    for (int64_t i = 0; i < x.numel(); ++i) {
      const float v = x.ptr<float>()[i];
      out.ptr<float>()[i] = v / (1.f + std::exp(-v));
    }
  }
  void cast(const Tensor& x, const Tensor& out) override {
    PIRT_CHECK(x.numel() == out.numel(), "cast sizes");
    for (int64_t i = 0; i < x.numel(); ++i) store(out, i, load_f32(x, i));
  }
  void concat_cols(const Tensor& a, const Tensor& b, const Tensor& out) override {
    const int64_t K1 = a.dim(-1), K2 = b.dim(-1), M = a.numel() / K1, Mb = b.numel() / K2;
    PIRT_CHECK(out.numel() == M * (K1 + K2) && (Mb == M || Mb == 1), "concat_cols shapes");
    for (int64_t m = 0; m < M; ++m) {
      float* o = out.ptr<float>() + m * (K1 + K2);
      std::memcpy(o, a.ptr<float>() + m * K1, K1 * 4);
      std::memcpy(o + K1, b.ptr<float>() + (Mb == 1 ? 0 : m) * K2, K2 * 4);
    }
  }
  void axpy(const Tensor& x, const Tensor& v, float dt) override {
    check_f32(x, "axpy x");
    PIRT_CHECK(x.numel() == v.numel(), "axpy sizes");
    for (int64_t i = 0; i < x.numel(); ++i) x.ptr<float>()[i] += dt * load_f32(v, i);
  }

  void image_to_unit_range(const Tensor& in, const Tensor& out) override {
    PIRT_CHECK(in.dtype == DType::U8 && out.dtype == DType::F32 && in.numel() == out.numel(),
               "image_to_unit_range: in %s %s, out %s %s (U8 in, F32 out of the same size)", std::string(dtype_name(in.dtype)).c_str(),
               in.shape.str().c_str(), std::string(dtype_name(out.dtype)).c_str(), out.shape.str().c_str());
    const uint8_t* src = in.ptr<uint8_t>();
    float* dst = out.ptr<float>();
    for (int64_t i = 0; i < in.numel(); ++i) dst[i] = image_unit_range(src[i]);
  }

  void patch_embed(const Tensor& images, const Tensor& w, const Tensor& b, const Tensor& pos, int p,
                   const Tensor& out) override {
    check_f32(images, "patch_embed images");
    const int64_t N = images.dim(0), S = images.dim(1), W = w.dim(0), G = S / p, T = G * G;
    PIRT_CHECK(images.dim(3) == 3 && w.numel() == W * 3 * p * p && out.numel() == N * T * W,
               "patch_embed shapes: images %s w %s out %s", images.shape.str().c_str(),
               w.shape.str().c_str(), out.shape.str().c_str());
    for (int64_t n = 0; n < N; ++n)
      for (int64_t gy = 0; gy < G; ++gy)
        for (int64_t gx = 0; gx < G; ++gx) {
          const int64_t t = gy * G + gx;
          float* o = out.ptr<float>() + (n * T + t) * W;
          for (int64_t c = 0; c < W; ++c) {
            float acc = b.ptr<float>()[c];
            // Conv weight [W, 3, p, p] (PyTorch OIHW); image NHWC.
            for (int64_t ch = 0; ch < 3; ++ch)
              for (int64_t ky = 0; ky < p; ++ky)
                for (int64_t kx = 0; kx < p; ++kx) {
                  const float px = images.ptr<float>()[((n * S + gy * p + ky) * S + gx * p + kx) * 3 + ch];
                  acc += px * w.ptr<float>()[((c * 3 + ch) * p + ky) * p + kx];
                }
            o[c] = acc + pos.ptr<float>()[t * W + c];
          }
        }
  }

  void embed(const Tensor& ids, const Tensor& table, float scale, const Tensor& out) override {
    const int64_t T = ids.numel(), D = table.dim(1), V = table.dim(0);
    PIRT_CHECK(ids.dtype == DType::I32 && out.numel() == T * D, "embed shapes");
    for (int64_t t = 0; t < T; ++t) {
      const int32_t id = ids.ptr<int32_t>()[t];
      PIRT_CHECK(id >= 0 && id < V, "token id %d outside the vocabulary of %lld", id, (long long)V);
      for (int64_t i = 0; i < D; ++i) out.ptr<float>()[t * D + i] = table.ptr<float>()[id * D + i] * scale;
    }
  }

  void qkv_rope(const Tensor& qkv, const Tensor& positions, int heads, int kv_heads, int head_dim,
                const Tensor& q, const Tensor& k, const Tensor& v) override {
    const int64_t Dq = int64_t{heads} * head_dim, Dkv = int64_t{kv_heads} * head_dim;
    const int64_t row = Dq + 2 * Dkv, T = qkv.numel() / row;
    PIRT_CHECK(qkv.numel() == T * row && q.numel() == T * Dq && k.numel() == T * Dkv &&
                   v.numel() == T * Dkv,
               "qkv_rope shapes: qkv %s q %s k %s v %s", qkv.shape.str().c_str(),
               q.shape.str().c_str(), k.shape.str().c_str(), v.shape.str().c_str());
    const int half = head_dim / 2;
    for (int64_t t = 0; t < T; ++t) {
      const float* src = qkv.ptr<float>() + t * row;
      float* qo = q.ptr<float>() + t * Dq;
      float* ko = k.ptr<float>() + t * Dkv;
      std::memcpy(qo, src, Dq * 4);
      std::memcpy(ko, src + Dq, Dkv * 4);
      std::memcpy(v.ptr<float>() + t * Dkv, src + Dq + Dkv, Dkv * 4);
      if (positions.empty()) continue;
      const float pos = static_cast<float>(positions.ptr<int32_t>()[t]);
      // gemma.py:_apply_rope: inv_freq[i] = 10000^(-2i/Dh); [x1*cos - x2*sin, x2*cos + x1*sin].
      for (int i = 0; i < half; ++i) {
        const float inv_freq = std::pow(10000.f, -2.f * i / head_dim);
        const float ang = pos * inv_freq;
        const float c = std::cos(ang), s = std::sin(ang);
        auto rotate = [&](float* x, int nheads) {
          for (int h = 0; h < nheads; ++h) {
            float* xh = x + h * head_dim;
            const float x1 = xh[i], x2 = xh[i + half];
            xh[i] = x1 * c - x2 * s;
            xh[i + half] = x2 * c + x1 * s;
          }
        };
        rotate(qo, heads);
        rotate(ko, kv_heads);
      }
    }
  }

  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask, float scale,
                 const Tensor& out) override {
    PIRT_CHECK(q.shape.rank() == 4 && k.shape.rank() == 4 && v.shape == k.shape && out.shape == q.shape,
               "attention shapes: q %s k %s v %s out %s", q.shape.str().c_str(), k.shape.str().c_str(),
               v.shape.str().c_str(), out.shape.str().c_str());
    const int64_t S = q.dim(0), Tq = q.dim(1), Hq = q.dim(2), D = q.dim(3), Tk = k.dim(1), Hkv = k.dim(2);
    PIRT_CHECK(k.dim(0) == S && k.dim(3) == D && Hq % Hkv == 0, "attention heads");
    PIRT_CHECK(mask.none() || (mask.q_block.numel() == S * Tq && mask.k_block.numel() == S * Tk),
               "attention mask shapes");
    const int64_t group = Hq / Hkv;
    parallel_for(S * Tq * Hq, 8, [&](int64_t begin, int64_t end) {
      std::vector<float> p(Tk);
      for (int64_t idx = begin; idx < end; ++idx) {
        const int64_t s = idx / (Tq * Hq), i = (idx / Hq) % Tq, h = idx % Hq, hk = h / group;
        const float* qr = q.ptr<float>() + ((s * Tq + i) * Hq + h) * D;
        float* o = out.ptr<float>() + ((s * Tq + i) * Hq + h) * D;
        const int32_t qb = mask.none() ? 0 : mask.q_block.ptr<int32_t>()[s * Tq + i];
        float mx = -INFINITY;
        for (int64_t j = 0; j < Tk; ++j) {
          const bool allowed = mask.none() || mask.k_block.ptr<int32_t>()[s * Tk + j] <= qb;
          if (!allowed) {
            p[j] = -INFINITY;
            continue;
          }
          const float* kr = k.ptr<float>() + ((s * Tk + j) * Hkv + hk) * D;
          float acc = 0.f;
          for (int64_t d = 0; d < D; ++d) acc += qr[d] * kr[d];
          p[j] = acc * scale;
          mx = std::max(mx, p[j]);
        }
        std::fill(o, o + D, 0.f);
        if (mx == -INFINITY) continue;  // a padding query: sees nothing, output zero (unused)
        double sum = 0;
        for (int64_t j = 0; j < Tk; ++j) {
          p[j] = p[j] == -INFINITY ? 0.f : std::exp(p[j] - mx);
          sum += p[j];
        }
        for (int64_t j = 0; j < Tk; ++j) {
          if (p[j] == 0.f) continue;
          const float pj = static_cast<float>(p[j] / sum);
          const float* vr = v.ptr<float>() + ((s * Tk + j) * Hkv + hk) * D;
          for (int64_t d = 0; d < D; ++d) o[d] += pj * vr[d];
        }
      }
    });
  }

 private:
  static void store(const Tensor& t, int64_t i, float f) {
    switch (t.dtype) {
      case DType::F32: t.ptr<float>()[i] = f; break;
      case DType::BF16: t.ptr<uint16_t>()[i] = f32_to_bf16(f); break;
      case DType::F16: t.ptr<uint16_t>()[i] = f32_to_f16(f); break;
      case DType::I32: t.ptr<int32_t>()[i] = static_cast<int32_t>(f); break;
      case DType::I64: t.ptr<int64_t>()[i] = static_cast<int64_t>(f); break;
      case DType::BOOL:
      case DType::U8: t.ptr<uint8_t>()[i] = static_cast<uint8_t>(f); break;
    }
  }

  std::list<std::vector<uint8_t>> buffers_;  // std::list: addresses stay put
  size_t bytes_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace pirt
