// SigLIP So400m/14 (siglip.py; HF modeling_siglip.py) over every camera in the prefix at once,
// then the multimodal projector. Image tokens are not rescaled (spec 1.3).
#include <cmath>

#include "model/forward.h"

namespace pirt {

void siglip_forward(const ModelConfig& c, const Weights& w, Backend& be, Plan& p, const Tensor& out) {
  const VisionConfig& v = c.vision;
  const int64_t N = p.n_cams, T = v.tokens();
  const LayerActs& a = p.vit;
  const Tensor& x = p.vit_x;
  // x = embedding(conv14(image)) + pos_embedding   (fp32)
  be.patch_embed(p.images, w.patch_w, w.patch_b, w.pos_emb, v.patch, x);
  const Shape hs{N, T, v.heads, v.head_dim()};
  for (const SiglipLayerW& l : w.vit) {
    // y = LayerNorm_0(x); y = MultiHeadDotProductAttention(y, y); x = x + y
    be.layer_norm(x, l.ln1_w, l.ln1_b, kNormEps, a.xn);
    if (!l.qkv.w.empty()) {
      be.linear(a.xn, l.qkv.w, l.qkv.b, a.qkv);
    } else {
      be.linear(a.xn, l.q.w, l.q.b, a.q_part);
      be.linear(a.xn, l.k.w, l.k.b, a.k_part);
      be.linear(a.xn, l.v.w, l.v.b, a.v_part);
      be.concat_cols(a.q_part, a.k_part, a.qk_part);
      be.concat_cols(a.qk_part, a.v_part, a.qkv);
    }
    // Plain multi-head attention: q|k|v, no RoPE, no mask, scale head_dim^-0.5; with fused weights
    // read in place from the projection (the CUDA backend), else split first (--no-fuse).
    const float scale = 1.f / std::sqrt(static_cast<float>(v.head_dim()));
    if (!l.qkv.w.empty()) {
      be.attention_qkv(a.qkv, N, v.heads, v.head_dim(), scale, a.q, a.k, a.v, a.attn);
    } else {
      be.qkv_rope(a.qkv, {}, v.heads, v.heads, v.head_dim(), a.q, a.k, a.v);
      be.attention(a.q.reshape(hs), a.k.reshape(hs), a.v.reshape(hs), AttentionMask{}, scale, a.attn.reshape(hs));
    }
    be.linear(a.attn, l.out.w, l.out.b, x, Epilogue::None, x);
    // y = LayerNorm_1(x); y = MlpBlock(y) (Dense, gelu tanh, Dense); x = x + y
    be.layer_norm(x, l.ln2_w, l.ln2_b, kNormEps, a.xn);
    be.linear(a.xn, l.fc1.w, l.fc1.b, a.y, Epilogue::GeluTanh);
    be.linear(a.y, l.fc2.w, l.fc2.b, x, Epilogue::None, x);
  }
  // encoder_norm, then head (multi_modal_projector.linear) into the prefix's image rows
  be.layer_norm(x, w.post_ln_w, w.post_ln_b, kNormEps, a.xn);
  be.linear(a.xn, w.projector.w, w.projector.b, out);
}

}  // namespace pirt
