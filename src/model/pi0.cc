// pi0 / pi0.5 sample_actions (pi0.py:sample_actions, pi0_pytorch.py:sample_actions/denoise_step):
// embed the prefix, run PaliGemma over it once to fill the KV cache, then integrate the
// flow-matching ODE with `steps` Euler steps of the action expert over the cached prefix.
#include <cmath>

#include "model/forward.h"

namespace pirt {

PrefixLayout make_prefix_layout(const ModelConfig& c, const bool* image_mask, const int32_t* ids,
                                const bool* token_mask, int len, bool drop_padding) {
  (void)ids;
  PrefixLayout p;
  std::vector<bool> valid;
  // [img base 256][img left wrist 256][img right wrist 256][text]; an absent camera's tokens and
  // padding text are masked (spec 3.1). Dropping them is exact when positions count valid tokens.
  for (int cam = 0; cam < ModelConfig::kNumCameras; ++cam) {
    if (drop_padding && !image_mask[cam]) continue;
    p.cameras.push_back(cam);
    valid.insert(valid.end(), c.vision.tokens(), image_mask[cam]);
  }
  for (int i = 0; i < len; ++i) {
    if (drop_padding && !token_mask[i]) continue;
    p.text.push_back(i);
    valid.push_back(token_mask[i]);
  }
  // pos = cumsum(prefix_pad_mask) - 1; blocks: every prefix token has ar = 0 (one block).
  int32_t count = 0;
  for (bool v : valid) {
    count += v ? 1 : 0;
    p.positions.push_back(count - 1);
    p.q_block.push_back(v ? 0 : AttentionMask::kMaskedQuery);
    p.k_block.push_back(v ? 0 : AttentionMask::kMaskedKey);
  }
  p.n_valid = count;
  return p;
}

std::string plan_key(const PrefixLayout& layout, int horizon, int steps) {
  return strformat("cams%zu_text%zu_h%d_s%d", layout.cameras.size(), layout.text.size(), horizon, steps);
}

void time_embedding(float t, int dim, float* out) {
  // posemb_sincos: fraction = linspace(0, 1, dim/2); period = min * (max/min)^fraction;
  // [sin(t * 2pi / period), cos(...)], computed in float64 as openpi's PyTorch model does.
  const int half = dim / 2;
  const double min_period = 4e-3, max_period = 4.0;
  for (int i = 0; i < half; ++i) {
    const double fraction = half == 1 ? 0.0 : static_cast<double>(i) / (half - 1);
    const double period = min_period * std::pow(max_period / min_period, fraction);
    const double arg = static_cast<double>(t) * (2.0 * M_PI / period);
    out[i] = static_cast<float>(std::sin(arg));
    out[half + i] = static_cast<float>(std::cos(arg));
  }
}

namespace {

LayerActs make_gemma_acts(Backend& be, const GemmaConfig& g, int64_t T, bool fuse) {
  const DType act = be.act_dtype();
  LayerActs a;
  a.xn = be.alloc(act, {T, g.width});
  a.qkv = be.alloc(act, {T, g.qkv_width()});
  a.q = be.alloc(act, {T, g.q_width()});
  a.attn = be.alloc(act, {T, g.q_width()});
  a.y = be.alloc(act, {T, g.width});
  a.gu = be.alloc(act, {T, 2 * int64_t{g.mlp}});
  a.mlp = be.alloc(act, {T, g.mlp});
  if (!fuse) {
    a.q_part = be.alloc(act, {T, g.q_width()});
    a.k_part = be.alloc(act, {T, g.kv_width()});
    a.v_part = be.alloc(act, {T, g.kv_width()});
    a.qk_part = be.alloc(act, {T, g.q_width() + g.kv_width()});
    a.gate_part = be.alloc(act, {T, g.mlp});
    a.up_part = be.alloc(act, {T, g.mlp});
  }
  return a;
}

LayerActs make_siglip_acts(Backend& be, const VisionConfig& v, int64_t M, bool fuse) {
  const DType act = be.act_dtype();
  LayerActs a;
  a.xn = be.alloc(act, {M, v.width});
  a.qkv = be.alloc(act, {M, 3 * int64_t{v.width}});
  a.q = be.alloc(act, {M, v.width});
  a.k = be.alloc(act, {M, v.width});
  a.v = be.alloc(act, {M, v.width});
  a.attn = be.alloc(act, {M, v.width});
  a.y = be.alloc(act, {M, v.mlp});
  if (!fuse) {
    a.q_part = be.alloc(act, {M, v.width});
    a.k_part = be.alloc(act, {M, v.width});
    a.v_part = be.alloc(act, {M, v.width});
    a.qk_part = be.alloc(act, {M, 2 * int64_t{v.width}});
  }
  return a;
}

// The flow-matching times fed to the model: t = 1, then t += dt in float32 (spec 4.1).
std::vector<float> step_times(int steps) {
  std::vector<float> ts;
  const float dt = -1.0f / static_cast<float>(steps);
  float t = 1.0f;
  for (int s = 0; s < steps; ++s) {
    ts.push_back(t);
    t = t + dt;
  }
  return ts;
}

}  // namespace

Plan make_plan(const ModelConfig& c, const Weights& w, Backend& be, const PrefixLayout& layout, int horizon,
               int steps, bool fuse) {
  Plan p;
  p.key = plan_key(layout, horizon, steps);
  p.n_cams = static_cast<int>(layout.cameras.size());
  p.n_text = static_cast<int>(layout.text.size());
  p.prefix_len = layout.size();
  p.horizon = horizon;
  p.suffix_len = c.suffix_len(horizon);
  p.steps = steps;
  const int64_t P = p.prefix_len, T = p.suffix_len, H = horizon, A = c.action_dim;
  const int64_t We = c.expert.width, S = c.vision.image_size;
  const DType act = be.act_dtype();

  // Inputs.
  p.images = be.alloc(DType::F32, {std::max(p.n_cams, 1), S, S, 3});
  p.images_u8 = be.alloc(DType::U8, {std::max(p.n_cams, 1), S, S, 3});
  p.text_ids = be.alloc(DType::I32, {std::max<int64_t>(p.n_text, 1)});
  p.prefix_pos = be.alloc(DType::I32, {P});
  p.prefix_qb = be.alloc(DType::I32, {1, P});
  p.prefix_kb = be.alloc(DType::I32, {1, P});
  p.state = be.alloc(DType::F32, {1, A});
  p.x = be.alloc(DType::F32, {H, A});
  p.suffix_pos = be.alloc(DType::I32, {T});
  p.suffix_qb = be.alloc(DType::I32, {1, T});
  p.suffix_kb = be.alloc(DType::I32, {1, P + T});
  // SigLIP over the cameras present.
  const int64_t M = int64_t{p.n_cams} * c.vision.tokens();
  if (M > 0) {
    p.vit_x = be.alloc(act, {M, c.vision.width});
    p.vit = make_siglip_acts(be, c.vision, M, fuse);
  }
  // Prefix and KV cache.
  p.h = be.alloc(act, {P, c.llm.width});
  p.pre = make_gemma_acts(be, c.llm, P, fuse);
  for (int l = 0; l < c.llm.depth; ++l) {
    p.K.push_back(be.alloc(act, {P + T, c.llm.kv_width()}));
    p.V.push_back(be.alloc(act, {P + T, c.llm.kv_width()}));
  }
  // Suffix.
  p.tok = be.alloc(DType::F32, {T, We});
  p.hs = be.alloc(act, {T, We});
  p.out_f32 = be.alloc(DType::F32, {H, We});
  p.v = be.alloc(DType::F32, {H, A});
  p.suf = make_gemma_acts(be, c.expert, T, fuse);

  // What depends only on the step count: the time embedding of each step (pi0), or the adaRMS
  // modulations of each step (pi0.5), whose condition is a function of t alone (spec 4.4).
  const std::vector<float> ts = step_times(steps);
  HostTensor te(DType::F32, {steps, We});
  for (int s = 0; s < steps; ++s) time_embedding(ts[s], static_cast<int>(We), te.ptr<float>() + s * We);
  p.time_emb = be.alloc(DType::F32, {steps, We});
  be.to_device(te, p.time_emb);
  if (!c.pi05()) {
    p.u = be.alloc(DType::F32, {H, We});
    if (w.action_time_fold.w.empty()) {
      p.a_emb = be.alloc(DType::F32, {H, We});
      p.cat = be.alloc(DType::F32, {H, 2 * We});
    } else {  // the time half of action_time_mlp_in, once a step (weights.h)
      p.time_bias = be.alloc(DType::F32, {steps, We});
      for (int s = 0; s < steps; ++s)
        be.linear(p.time_emb.rows(s, 1), w.action_time_t, w.action_time_fold.b, p.time_bias.rows(s, 1));
      be.synchronize();
    }
  } else {
    const int64_t per_step = 2 * int64_t{c.expert.depth} + 1;
    p.mods = be.alloc(DType::F32, {steps * per_step, 3 * We});
    Tensor c1 = be.alloc(DType::F32, {1, We}), cond = be.alloc(DType::F32, {1, We});
    for (int s = 0; s < steps; ++s) {
      // adarms_cond = swish(time_mlp_out(swish(time_mlp_in(time_emb))))
      be.linear(p.time_emb.rows(s, 1), w.time_in.w, w.time_in.b, c1);
      be.silu(c1, c1);
      be.linear(c1, w.time_out.w, w.time_out.b, cond);
      be.silu(cond, cond);
      // mod = Dense(cond) for each norm: layer l's two norms, then the final norm.
      Tensor m = p.mods.rows(s * per_step, per_step);
      for (int l = 0; l < c.expert.depth; ++l) {
        be.linear(cond, w.expert[l].attn_norm_mod.w, w.expert[l].attn_norm_mod.b, m.rows(2 * l, 1));
        be.linear(cond, w.expert[l].ffn_norm_mod.w, w.expert[l].ffn_norm_mod.b, m.rows(2 * l + 1, 1));
      }
      be.linear(cond, w.expert_norm_mod.w, w.expert_norm_mod.b, m.rows(per_step - 1, 1));
    }
    be.synchronize();
  }
  return p;
}

void sample_actions(const ModelConfig& c, const Weights& w, Backend& be, Plan& p) {
  const int64_t P = p.prefix_len, T = p.suffix_len, H = p.horizon, img = int64_t{p.n_cams} * c.vision.tokens();

  // ---- embed_prefix: [SigLIP tokens of each camera | text embeddings * sqrt(width)] ----
  be.stage("siglip");
  if (p.n_cams > 0 && p.images_from_u8) be.image_to_unit_range(p.images_u8, p.images);
  if (p.n_cams > 0) siglip_forward(c, w, be, p, p.h.rows(0, img));
  be.stage("prefix");
  if (p.n_text > 0)
    be.embed(p.text_ids.rows(0, p.n_text), w.embedding, std::sqrt(static_cast<float>(c.llm.width)),
             p.h.rows(img, p.n_text));

  // ---- the prefix pass fills the KV cache; its hidden outputs are never read ----
  // (An empty prefix, every camera absent and no prompt, leaves the cache empty.)
  const AttentionMask prefix_mask{p.prefix_qb, p.prefix_kb};
  for (int l = 0; l < c.llm.depth && P > 0; ++l) {
    gemma_layer(be, GemmaCall{.cfg = &c.llm, .w = &w.llm[l], .a = &p.pre, .h = p.h, .positions = p.prefix_pos,
                              .K = p.K[l], .V = p.V[l], .kv_begin = 0, .mask = prefix_mask, .mod_attn = {},
                              .mod_ffn = {}, .kv_only = l == c.llm.depth - 1});
  }

  // ---- Euler integration from t = 1 (noise) to t = 0: x += dt * v_t ----
  const float dt = -1.0f / static_cast<float>(p.steps);
  const AttentionMask suffix_mask{p.suffix_qb, p.suffix_kb};
  const int64_t per_step = 2 * int64_t{c.expert.depth} + 1;
  // pi0's state token, state_proj(state): the same in every step, so computed once (row 0 of tok,
  // which the steps below never write).
  if (!c.pi05()) be.linear(p.state, w.state_proj.w, w.state_proj.b, p.tok.rows(0, 1));
  // With pi0's folded action MLP, or pi0.5, each step ends with one Backend::action_step: the Euler
  // update and the next step's embed_suffix and first norm (the CUDA backend: one kernel).
  // (Not with --no-fuse: the unfused weights keep the literal op sequence.)
  const bool fused_step = c.pi05() ? !w.expert[0].qkv.empty() : !w.action_time_fold.w.empty();
  auto step_embed = [&](ActionStep& a, int s) {
    a.w_in = c.pi05() ? w.action_in.w : w.action_time_fold.w;
    a.b_in = c.pi05() ? w.action_in.b : p.time_bias.rows(s, 1).reshape(Shape{c.expert.width});
    if (!c.pi05()) a.u = p.u, a.w_mlp = w.action_time_out.w, a.b_mlp = w.action_time_out.b;
    a.tok = p.tok, a.hs = p.hs, a.xn = p.suf.xn.rows(0, T);
    if (c.pi05())
      a.mod = p.mods.rows(s * per_step, 1);
    else
      a.norm_w = w.expert[0].attn_norm;
    a.eps = kNormEps;
  };
  if (fused_step) {
    be.stage("step 0");
    ActionStep a{.x = p.x};
    step_embed(a, 0);
    be.action_step(a);
  }
  for (int s = 0; s < p.steps; ++s) {
    be.stage("step " + std::to_string(s));
    // embed_suffix (with fused weights: done by the action_step before this step)
    if (!fused_step) {
      if (!c.pi05()) {
        // [state_tok, action_time], action_time = mlp_out(swish(mlp_in([action_in_proj(x_t), time_emb])))
        be.linear(p.x, w.action_in.w, w.action_in.b, p.a_emb);
        be.concat_cols(p.a_emb, p.time_emb.rows(s, 1), p.cat);
        be.linear(p.cat, w.action_time_in.w, w.action_time_in.b, p.u);
        be.silu(p.u, p.u);
        be.linear(p.u, w.action_time_out.w, w.action_time_out.b, p.tok.rows(1, H));
      } else {
        // action tokens = action_in_proj(x_t); time enters through adaRMS
        be.linear(p.x, w.action_in.w, w.action_in.b, p.tok);
      }
      be.cast(p.tok, p.hs);  // hidden states enter the trunk in its dtype
    }

    // the action expert over [prefix cache | suffix], layer by layer
    const Tensor mods = c.pi05() ? p.mods.rows(s * per_step, per_step) : Tensor{};
    // pi0 (plain RMSNorms): each layer's down projection also computes the next layer's
    // pre-attention norm (the last layer's: the final norm). With fused weights everything after a
    // layer's attention, through the next layer's q and K/V, is one block tail.
    const bool chain = !c.pi05();
    // (pi0.5 too: its tails take the adaRMS modulations, the next norm's as next_mod.)
    const bool tail = !w.expert[0].qkv.empty() && !w.expert[0].gate_up.empty();
    const int depth = c.expert.depth;
    for (int l = 0; l < depth; ++l) {
      const bool last = l + 1 == depth;
      gemma_layer(be, GemmaCall{.cfg = &c.expert, .w = &w.expert[l], .a = &p.suf, .h = p.hs,
                                .positions = p.suffix_pos, .K = p.K[l], .V = p.V[l],
                                .kv_begin = static_cast<int>(P), .mask = suffix_mask,
                                .mod_attn = c.pi05() ? mods.rows(2 * l, 1) : Tensor{},
                                .mod_ffn = c.pi05() ? mods.rows(2 * l + 1, 1) : Tensor{},
                                .next_attn_norm = !chain ? Tensor{} : last ? w.expert_norm : w.expert[l + 1].attn_norm,
                                .xn_ready = l > 0 ? chain : fused_step,
                                .next_mod = c.pi05() && tail ? mods.rows(last ? per_step - 1 : 2 * (l + 1), 1) : Tensor{},
                                .tail = tail,
                                .next_w = tail && !last ? &w.expert[l + 1] : nullptr,
                                .next_K = tail && !last ? p.K[l + 1] : Tensor{},
                                .next_V = tail && !last ? p.V[l + 1] : Tensor{},
                                .qkv_ready = tail && l > 0});
    }
    // final norm (pi0, and pi0.5 with block tails: left in xn by the last layer);
    // v_t = action_out_proj(suffix_out[:, -H:]) in fp32
    const Tensor xn = p.suf.xn.rows(0, T);
    if (c.pi05() && !tail)
      be.ada_rms_norm(p.hs, mods.rows(per_step - 1, 1), kNormEps, xn);
    if (fused_step) {
      ActionStep a{.xn = xn, .xf = p.out_f32, .w_out = w.action_out.w, .b_out = w.action_out.b, .x = p.x, .v = p.v,
                   .dt = dt};
      if (s + 1 < p.steps) step_embed(a, s + 1);
      be.action_step(a);
    } else {
      be.cast(xn.rows(T - H, H), p.out_f32);
      be.linear(p.out_f32, w.action_out.w, w.action_out.b, p.v);
      be.axpy(p.x, p.v, dt);
    }
  }
}

}  // namespace pirt
