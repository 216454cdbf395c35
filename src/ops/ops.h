// The backend-neutral op interface. The model (src/model) is written once against it; each backend
// (src/backends/cpu, src/backends/cuda) implements every op. The CPU backend is the oracle: each op
// there is a plain scalar loop in fp32, and each CUDA op is tested against it (tests/ops).
//
// Conventions for every op:
// - Tensors are backend tensors (Backend::alloc / upload), contiguous and row-major.
// - Float tensors are F32 or the backend's act_dtype() / matrix_dtype(); an op reads and writes the
//   dtypes of the tensors it is given and accumulates in fp32.
// - Shapes are checked by the backend; a mismatch is a bug in the caller (PIRT_CHECK).
// - Ops are issued in order on one stream; nothing is synchronous unless it says so.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace pirt {

enum class Epilogue : uint8_t {
  None,
  GeluTanh,  // gelu with the tanh approximation (flax nn.gelu default, HF gelu_pytorch_tanh)
};

// openpi's attention mask (spec 3.2) expressed per token: query i may attend to key j iff
// k_block[j] <= q_block[i]. Blocks are the cumsum of ar_mask; a padding key gets kMaskedKey (no
// query sees it) and a padding query gets kMaskedQuery (it sees nothing; its output is zero and unused).
// Both tensors empty means no mask (SigLIP).
struct AttentionMask {
  static constexpr int32_t kMaskedKey = 0x3fffffff;
  static constexpr int32_t kMaskedQuery = -1;
  Tensor q_block;  // I32 [S, Tq]
  Tensor k_block;  // I32 [S, Tk]
  bool none() const { return q_block.empty(); }
};

// What a uint8 image value means to the model: v / 255 * 2 - 1 in float32 (openpi's
// Observation.from_dict); Backend::image_to_unit_range applies it on the device.
inline float image_unit_range(uint8_t v) { return static_cast<float>(v) / 255.0f * 2.0f - 1.0f; }

// The gate third of an adaRMS modulation [3D] (scale | shift | gate), as a [D] view.
inline Tensor ada_gate(const Tensor& mod) {
  const int64_t D = mod.numel() / 3;
  return mod.reshape(Shape{3, D}).rows(2, 1).reshape(Shape{D});
}

// The rest of a Gemma layer after its attention and the start of the next one (pi0's action
// expert: plain RMSNorms, fused Q/K/V and gate+up weights), for Backend::gemma_block_tail:
//   h += attn . wo^T;                                  xn = rms_norm(h, ffn_norm)
//   h += (gelu_tanh(xn . wg^T) * (xn . wu^T)) . wd^T;  xn = rms_norm(h, next_norm)
//   then, when next_qkv is set, linear_qkv_rope(xn, next_qkv, ...) into q, k, v (the next layer's).
// w_gate_up = [wg | wu] ([2F, D]); gu [T, 2F], mlp [T, F] and qkv [T, (heads + 2 kv_heads) head_dim]
// are scratch that a fused implementation may leave unwritten.
// pi0.5's expert (adaRMS) sets mod_attn, mod_ffn (the layer's [3D] modulations: scale | shift | gate)
// and next_mod (the next norm's: the next layer's mod_attn, or the final norm's) instead of ffn_norm
// and next_norm; its residuals are gated and its norms adaptive:
//   y = attn . wo^T; h += y * gate(mod_attn);  xn = ada_rms_norm(h, mod_ffn)
//   y = mlp . wd^T;  h += y * gate(mod_ffn);   xn = ada_rms_norm(h, next_mod)
// with y [T, D] scratch.
struct BlockTail {
  Tensor attn, wo, h, ffn_norm, w_gate_up, w_down, next_norm, xn;
  Tensor gu, mlp;
  Tensor next_qkv, qkv, positions, q, k, v;  // next_qkv empty: stop after the second norm
  int heads = 0, kv_heads = 0, head_dim = 0;
  float eps = 1e-6f;
  Tensor mod_attn, mod_ffn, next_mod, y;  // adaRMS (above); empty: plain RMSNorms
};

// The action expert's boundary between two flow-matching steps (pi0.py sample_actions: the end of
// one step and the next step's embed_suffix), for Backend::action_step. Either half may be absent.
// update (w_out set): the velocity of the last H rows of the final norm's output, and the Euler step
//   v = f32(xn[T-H:]) . w_out^T + b_out;  x += dt * v          (x F32 [H, A], v F32 [H, A] scratch)
// embed (w_in set): the next step's suffix tokens and the first layer's pre-attention norm
//   e = x . w_in^T + b_in                  ([H, W]; pi0: the folded action_time_mlp_in with the
//                                            step's time bias, weights.h; pi0.5: action_in_proj)
//   pi0 (w_mlp set): tok[T-H:] = silu(e) . w_mlp^T + b_mlp   (u = silu(e) F32 [H, W] scratch)
//   pi0.5 (w_mlp empty): tok = e  (T = H)
//   hs = cast(tok)  (rows [0, T-H): pi0's state token, computed once by the caller);
//   xn = rms_norm(hs, norm_w), or ada_rms_norm(hs, mod) when mod is set.
// xf (F32 [H, W]) is scratch for the cast in front of w_out; a fused implementation may leave xf, v
// and u unwritten.
struct ActionStep {
  Tensor xn, xf, w_out, b_out, x, v;
  float dt = 0.f;
  Tensor w_in, b_in, u, w_mlp, b_mlp, tok, hs, norm_w, mod;
  float eps = 1e-6f;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;     // "cpu", "cuda: NVIDIA H100 80GB HBM3"
  virtual DType act_dtype() const = 0;      // activations of the trunks (F32 on CPU, BF16 on CUDA)
  virtual DType matrix_dtype() const = 0;   // weights of the big matrices (F32 on CPU, BF16 on CUDA)

  // ---- memory ----
  // A tensor that lives as long as the backend. Contents are undefined.
  virtual Tensor alloc(DType dtype, Shape shape) = 0;
  // Concatenates host tensors along dim 0 (fused Q/K/V, gate+up) into one new backend tensor of
  // `dtype`, converting element types. All parts must have the same row size.
  virtual Tensor upload(const std::vector<Tensor>& parts, DType dtype) = 0;
  // Host -> backend copy into an existing tensor; same dtype and element count. Asynchronous on
  // the stream, but `host` may be reused once it returns.
  virtual void to_device(const Tensor& host, const Tensor& dev) = 0;
  // Backend -> host copy; same dtype and element count. Waits for the work before it.
  virtual void to_host(const Tensor& dev, const Tensor& host) = 0;

  // ---- execution ----
  // Issues the ops that `record` issues. Backends that can capture (CUDA graphs) capture `record`
  // the first time they see `key` and replay the capture afterwards; the ops it records must then
  // read only tensors whose addresses do not change between calls.
  virtual void run(const std::string& key, const std::function<void()>& record) {
    (void)key;
    record();
  }
  virtual void synchronize() {}
  // Peak device memory in bytes (0 where not tracked).
  virtual size_t memory_peak() const { return 0; }
  // The ops issued from here on belong to this stage of the call ("siglip", "prefix", "step 3"):
  // a label for profilers (pirt profile), no effect on the computation.
  virtual void stage(const std::string& name) { (void)name; }

  // ---- ops ----
  // out[M,N] = epilogue(x[M,K] . w[N,K]^T + bias[N]) (+ residual[M,N]).
  // bias and residual may be empty; residual may be the same memory as out (h += ...).
  virtual void linear(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out,
                      Epilogue ep = Epilogue::None, const Tensor& residual = {}) = 0;

  // SigLIP LayerNorm over the last dim D of x[M,D]: (x - mean) / sqrt(var + eps) * w + b.
  virtual void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps,
                          const Tensor& out) = 0;
  // Gemma RMSNorm: x * rsqrt(mean(x^2) + eps) * (1 + w), statistics in fp32.
  virtual void rms_norm(const Tensor& x, const Tensor& w, float eps, const Tensor& out) = 0;
  // pi0.5 adaRMSNorm: rms(x) * (1 + scale) + shift, with mod[3D] = scale | shift | gate (gate unused here).
  virtual void ada_rms_norm(const Tensor& x, const Tensor& mod, float eps, const Tensor& out) = 0;
  // h[M,D] += y[M,D] * gate[D] (pi0.5's gated residual; gate is the last third of a mod[3D] row).
  virtual void gated_residual(const Tensor& h, const Tensor& y, const Tensor& gate) = 0;

  // out[M,F] = gelu_tanh(gu[:, :F]) * gu[:, F:], with gu[M, 2F] = [gate | up] (GeGLU).
  virtual void geglu(const Tensor& gu, const Tensor& out) = 0;
  // out = x * sigmoid(x) (swish); out may be x.
  virtual void silu(const Tensor& x, const Tensor& out) = 0;
  // out = x converted to out's dtype (or copied).
  virtual void cast(const Tensor& x, const Tensor& out) = 0;
  // out[M, K1+K2] = [a[M,K1] | b[Mb,K2]] where Mb is M or 1 (then b's row is repeated).
  virtual void concat_cols(const Tensor& a, const Tensor& b, const Tensor& out) = 0;
  // x += dt * v (the Euler update; x is F32).
  virtual void axpy(const Tensor& x, const Tensor& v, float dt) = 0;

  // out (F32) = in / 255 * 2 - 1 for in U8 of the same shape: openpi's uint8 image to [-1, 1], in fp32
  // exactly as written (a division, then the scale and shift), so that images sent as uint8 reach
  // patch_embed bit-identical to the same images converted on the host.
  virtual void image_to_unit_range(const Tensor& in, const Tensor& out) = 0;
  // SigLIP patch embedding, in fp32: images[N, S, S, 3] (F32, NHWC) -> out[N*T, W] with
  // T = (S/p)^2 patches in row-major order, out = conv_p(images; w[W, 3, p, p], b[W]) + pos[T, W].
  virtual void patch_embed(const Tensor& images, const Tensor& w, const Tensor& b, const Tensor& pos,
                           int patch, const Tensor& out) = 0;
  // out[T, D] = table[ids[T], :] * scale (ids I32; scale applied in fp32).
  virtual void embed(const Tensor& ids, const Tensor& table, float scale, const Tensor& out) = 0;

  // Splits a fused projection qkv[T, (Hq + 2*Hkv) * Dh] = [q | k | v] into q[T, Hq*Dh],
  // k[T, Hkv*Dh] and v[T, Hkv*Dh] (k and v are usually rows of a KV cache), applying RoPE to q and
  // k at positions[T] (I32) when positions is not empty: half-split rotation over all Dh dims,
  // theta 10000, angles in fp32.
  virtual void qkv_rope(const Tensor& qkv, const Tensor& positions, int heads, int kv_heads,
                        int head_dim, const Tensor& q, const Tensor& k, const Tensor& v) = 0;

  // out[S, Tq, Hq, Dh] = softmax(scale * q k^T, masked) v for each of S sequences, with
  // q[S, Tq, Hq, Dh], k and v [S, Tk, Hkv, Dh] (Hq a multiple of Hkv; query head h reads KV head
  // h / (Hq/Hkv)). Logits and softmax in fp32; probabilities are rounded to v's dtype before P.V.
  virtual void attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask,
                         float scale, const Tensor& out) = 0;

  // ---- fused sequences (defaults: the ops one after another) ----
  // qkv = x . w^T, then qkv_rope(qkv, ...). qkv is scratch: a fused implementation may leave it
  // unwritten (the CUDA backend adds its GEMM's split-K partial sums inside the RoPE kernel).
  virtual void linear_qkv_rope(const Tensor& x, const Tensor& w, const Tensor& qkv, const Tensor& positions,
                               int heads, int kv_heads, int head_dim, const Tensor& q, const Tensor& k,
                               const Tensor& v) {
    linear(x, w, {}, qkv);
    qkv_rope(qkv, positions, heads, kv_heads, head_dim, q, k, v);
  }
  // h += x . w^T, then xn = rms_norm(h, norm_w): a residual sublayer's output projection and the
  // RMSNorm after it (the CUDA backend adds the split-K partial sums and the residual in the norm).
  virtual void linear_residual_rms_norm(const Tensor& x, const Tensor& w, const Tensor& h, const Tensor& norm_w,
                                        float eps, const Tensor& xn) {
    linear(x, w, {}, h, Epilogue::None, h);
    rms_norm(h, norm_w, eps, xn);
  }
  // Plain multi-head attention (no mask, no RoPE, Hkv = H) straight from a fused projection: qkv
  // [S*T, 3*H*Dh] holds q | k | v for each token (SigLIP). The default splits it into q, k, v
  // ([S*T, H*Dh] scratch) and calls attention; a fused implementation may read them in place and
  // leave q, k, v unwritten. out [S*T, H*Dh].
  virtual void attention_qkv(const Tensor& qkv, int64_t S, int heads, int head_dim, float scale, const Tensor& q,
                             const Tensor& k, const Tensor& v, const Tensor& out) {
    qkv_rope(qkv, {}, heads, heads, head_dim, q, k, v);
    const Shape hs{S, q.dim(0) / S, heads, head_dim};
    attention(q.reshape(hs), k.reshape(hs), v.reshape(hs), AttentionMask{}, scale, out.reshape(hs));
  }
  // ActionStep (above): the ops one after another by default; the CUDA backend runs it as one
  // persistent kernel.
  virtual void action_step(const ActionStep& a) {
    if (!a.w_out.empty()) {
      const int64_t T = a.xn.dim(0), H = a.x.dim(0);
      cast(a.xn.rows(T - H, H), a.xf);
      linear(a.xf, a.w_out, a.b_out, a.v);
      axpy(a.x, a.v, a.dt);
    }
    if (a.w_in.empty()) return;
    const int64_t T = a.tok.dim(0), H = a.x.dim(0);
    if (!a.w_mlp.empty()) {
      linear(a.x, a.w_in, a.b_in, a.u);
      silu(a.u, a.u);
      linear(a.u, a.w_mlp, a.b_mlp, a.tok.rows(T - H, H));
    } else {
      linear(a.x, a.w_in, a.b_in, a.tok);
    }
    cast(a.tok, a.hs);
    if (a.mod.empty())
      rms_norm(a.hs, a.norm_w, a.eps, a.xn);
    else
      ada_rms_norm(a.hs, a.mod, a.eps, a.xn);
  }
  // BlockTail (above): the ops one after another by default; the CUDA backend runs it as one
  // persistent kernel for few rows (the action steps).
  virtual void gemma_block_tail(const BlockTail& b) {
    if (b.mod_attn.empty()) {
      linear_residual_rms_norm(b.attn, b.wo, b.h, b.ffn_norm, b.eps, b.xn);
      linear(b.xn, b.w_gate_up, {}, b.gu);
      geglu(b.gu, b.mlp);
      linear_residual_rms_norm(b.mlp, b.w_down, b.h, b.next_norm, b.eps, b.xn);
    } else {
      linear(b.attn, b.wo, {}, b.y);
      gated_residual(b.h, b.y, ada_gate(b.mod_attn));
      ada_rms_norm(b.h, b.mod_ffn, b.eps, b.xn);
      linear(b.xn, b.w_gate_up, {}, b.gu);
      geglu(b.gu, b.mlp);
      linear(b.mlp, b.w_down, {}, b.y);
      gated_residual(b.h, b.y, ada_gate(b.mod_ffn));
      ada_rms_norm(b.h, b.next_mod, b.eps, b.xn);
    }
    if (!b.next_qkv.empty())
      linear_qkv_rope(b.xn, b.next_qkv, b.qkv, b.positions, b.heads, b.kv_heads, b.head_dim, b.q, b.k, b.v);
  }
};

}  // namespace pirt
