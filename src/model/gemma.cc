// One Gemma layer (gemma.py:Block; gemma_pytorch.py:compute_layer_complete), the same code for
// PaliGemma's prefix and the action expert's suffix. At inference each expert runs alone: the
// prefix over itself, the suffix over [prefix cache | its own K/V] (spec 1.5, 3.4).
#include <cmath>

#include "model/forward.h"

namespace pirt {
namespace {

// Rows [0, T) of a buffer planned for at least T rows.
Tensor first(const Tensor& t, int64_t T) { return t.rows(0, T); }

// qkv = x . [Wq | Wk | Wv]^T from separate weights (--no-fuse): three GEMMs and two column joins.
// (Fused weights go through Backend::linear_qkv_rope.)
void project_qkv_unfused(Backend& be, const GemmaLayerW& w, const LayerActs& a, const Tensor& xn,
                         const Tensor& qkv) {
  const int64_t T = xn.dim(0);
  be.linear(xn, w.q, {}, first(a.q_part, T));
  be.linear(xn, w.k, {}, first(a.k_part, T));
  be.linear(xn, w.v, {}, first(a.v_part, T));
  be.concat_cols(first(a.q_part, T), first(a.k_part, T), first(a.qk_part, T));
  be.concat_cols(first(a.qk_part, T), first(a.v_part, T), qkv);
}

// gate|up = x . [Wgate | Wup]^T, then GeGLU.
void project_gate_up(Backend& be, const GemmaLayerW& w, const LayerActs& a, const Tensor& xn, const Tensor& gu) {
  const int64_t T = xn.dim(0);
  if (!w.gate_up.empty()) {
    be.linear(xn, w.gate_up, {}, gu);
    return;
  }
  be.linear(xn, w.gate, {}, first(a.gate_part, T));
  be.linear(xn, w.up, {}, first(a.up_part, T));
  be.concat_cols(first(a.gate_part, T), first(a.up_part, T), gu);
}

// RMSNorm, or adaRMSNorm when the layer has modulations (pi0.5's expert).
void norm(Backend& be, const Tensor& x, const Tensor& weight, const Tensor& mod, const Tensor& out) {
  if (!mod.empty())
    be.ada_rms_norm(x, mod, kNormEps, out);
  else
    be.rms_norm(x, weight, kNormEps, out);
}

// h += sublayer output: plain residual (fused into the GEMM), or pi0.5's gated residual.
void residual_linear(Backend& be, const Tensor& x, const Tensor& w, const Tensor& h, const Tensor& mod,
                     const Tensor& y) {
  if (mod.empty()) {
    be.linear(x, w, {}, h, Epilogue::None, h);
    return;
  }
  be.linear(x, w, {}, y);
  be.gated_residual(h, y, ada_gate(mod));
}

}  // namespace

void gemma_layer(Backend& be, const GemmaCall& call) {
  const GemmaConfig& g = *call.cfg;
  const GemmaLayerW& w = *call.w;
  const LayerActs& a = *call.a;
  const int64_t T = call.h.dim(0), Tk = call.kv_begin + T;
  const Tensor xn = first(a.xn, T), qkv = first(a.qkv, T), q = first(a.q, T), attn = first(a.attn, T);

  if (!call.qkv_ready) {  // (else the previous layer's block tail left q and K/V here)
    // x = pre_attention_norm(h) (unless the previous layer left it in xn)
    if (!call.xn_ready) norm(be, call.h, w.attn_norm, call.mod_attn, xn);
    // q, k, v = q_proj(x), k_proj(x), v_proj(x); RoPE on q and k; k, v into the cache.
    const Tensor Knew = call.K.rows(call.kv_begin, T), Vnew = call.V.rows(call.kv_begin, T);
    if (!w.qkv.empty()) {
      be.linear_qkv_rope(xn, w.qkv, qkv, call.positions, g.heads, g.kv_heads, g.head_dim, q, Knew, Vnew);
    } else {
      project_qkv_unfused(be, w, a, xn, qkv);
      be.qkv_rope(qkv, call.positions, g.heads, g.kv_heads, g.head_dim, q, Knew, Vnew);
    }
  }
  if (call.kv_only) return;  // the last prefix layer: the action steps read only its K/V
  // attn = softmax(q k^T / sqrt(Dh), mask) v over every key in the cache so far
  const Shape qs{1, T, g.heads, g.head_dim}, ks{1, Tk, g.kv_heads, g.head_dim};
  be.attention(q.reshape(qs), call.K.rows(0, Tk).reshape(ks), call.V.rows(0, Tk).reshape(ks), call.mask,
               1.f / std::sqrt(static_cast<float>(g.head_dim)), attn.reshape(qs));
  if (call.tail) {  // the rest of this layer and the start of the next as one backend op
    const bool ada = !call.mod_attn.empty();
    PIRT_CHECK(!w.gate_up.empty() && (ada ? !call.mod_ffn.empty() && !call.next_mod.empty() : !call.next_attn_norm.empty()),
               "gemma_layer: a block tail needs fused gate+up weights and the next norm (next_attn_norm, or next_mod "
               "with adaRMS)");
    BlockTail b{.attn = attn, .wo = w.o, .h = call.h, .ffn_norm = w.ffn_norm, .w_gate_up = w.gate_up,
                .w_down = w.down, .next_norm = call.next_attn_norm, .xn = xn, .gu = first(a.gu, T),
                .mlp = first(a.mlp, T)};
    if (ada) {
      b.mod_attn = call.mod_attn, b.mod_ffn = call.mod_ffn, b.next_mod = call.next_mod;
      b.y = first(a.y, T);
    }
    if (call.next_w) {
      b.next_qkv = call.next_w->qkv;
      b.qkv = qkv;
      b.positions = call.positions;
      b.q = q;
      b.k = call.next_K.rows(call.kv_begin, T);
      b.v = call.next_V.rows(call.kv_begin, T);
      b.heads = g.heads, b.kv_heads = g.kv_heads, b.head_dim = g.head_dim;
    }
    b.eps = kNormEps;
    be.gemma_block_tail(b);
    return;
  }
  // h += o_proj(attn)  (times the adaRMS gate in pi0.5's expert); x = pre_ffw_norm(h)
  if (call.mod_attn.empty() && call.mod_ffn.empty()) {
    be.linear_residual_rms_norm(attn, w.o, call.h, w.ffn_norm, kNormEps, xn);
  } else {
    residual_linear(be, attn, w.o, call.h, call.mod_attn, first(a.y, T));
    norm(be, call.h, w.ffn_norm, call.mod_ffn, xn);
  }
  // h += down(gelu_tanh(gate(x)) * up(x)) (and the next layer's pre_attention_norm, when asked)
  project_gate_up(be, w, a, xn, first(a.gu, T));
  be.geglu(first(a.gu, T), first(a.mlp, T));
  if (!call.next_attn_norm.empty() && call.mod_ffn.empty())
    be.linear_residual_rms_norm(first(a.mlp, T), w.down, call.h, call.next_attn_norm, kNormEps, xn);
  else
    residual_linear(be, first(a.mlp, T), w.down, call.h, call.mod_ffn, first(a.y, T));
}

}  // namespace pirt
