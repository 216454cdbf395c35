#include "policy/policy.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "core/error.h"

namespace pirt {

Policy::Policy(const ModelConfig& config, int horizon, const PolicyOptions& opt)
    : config_(config), horizon_(horizon), opt_(opt), spec_(robot_spec(opt.robot)) {
  if (horizon_ <= 0) horizon_ = config_.action_horizon;
  mode_ = config_.pi05() ? NormMode::Quantile : NormMode::ZScore;
  discrete_state_ = opt.discrete_state.value_or(spec_.default_discrete_state(config_.arch));
  delta_mask_ = spec_.default_delta_mask(config_.arch);
  if (opt.delta_actions.has_value()) {
    if (!*opt.delta_actions) {
      delta_mask_.clear();
    } else if (delta_mask_.empty()) {
      // The masks openpi uses when a config turns delta actions on for these robots.
      delta_mask_ = opt.robot == Robot::Droid ? make_bool_mask({7, -1}) : opt.robot == Robot::Aloha
                                                                            ? make_bool_mask({6, -1, 6, -1})
                                                                            : make_bool_mask({6, -1});
    }
  }
  if (spec_.state_dim > config_.action_dim)
    throw Error(strformat("robot %s has %d state dims, more than the model's action_dim %d", robot_name(opt.robot),
                          spec_.state_dim, config_.action_dim));
  if (opt_.steps <= 0) throw Error("steps must be positive");

  norm_stats_path_ = opt.norm_stats_path.empty() ? find_norm_stats(opt.model_dir, spec_.asset_id) : opt.norm_stats_path;
  stats_ = load_norm_stats(norm_stats_path_);
  for (const auto& [key, s] : stats_) {
    if (key == "state") {
      check_norm_stats(mode_, s, key, spec_.state_dim, config_.action_dim);
    } else if (key == "actions") {
      check_norm_stats(mode_, s, key, 0, config_.action_dim);
    } else if (mode_ == NormMode::Quantile && (!s.q01 || !s.q99)) {
      throw Error("norm stats '" + key + "' have no q01/q99, which pi0.5 (quantile normalization) needs");
    }
  }

  tokenizer_ = std::make_unique<PaligemmaTokenizer>(opt.tokenizer_path.empty() ? default_tokenizer_path()
                                                                               : opt.tokenizer_path);
  if (tokenizer_->vocab_size() > config_.llm.vocab)
    throw Error(strformat("tokenizer '%s' has %d pieces but the model's vocabulary is %d", tokenizer_->path().c_str(),
                          tokenizer_->vocab_size(), config_.llm.vocab));
  metadata_ = spec_.metadata();
}

std::string Policy::describe() const {
  std::string delta = "none";
  if (!delta_mask_.empty()) {
    delta.clear();
    for (bool b : delta_mask_) delta += b ? '1' : '0';
  }
  return strformat("robot %s, %s normalization (%s), prompt %s, delta actions %s, horizon %d, %d steps, tokenizer %s",
                   robot_name(opt_.robot), mode_ == NormMode::ZScore ? "z-score" : "quantile",
                   norm_stats_path_.c_str(), discrete_state_ ? "with discrete state" : "text only", delta.c_str(),
                   horizon_, opt_.steps, tokenizer_->path().c_str());
}

std::vector<float> Policy::make_noise(uint64_t seed, int horizon, int action_dim) {
  uint64_t s = seed;
  auto next = [&s]() {  // splitmix64
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  auto uniform = [&]() { return (static_cast<double>(next() >> 11) + 0.5) * 0x1.0p-53; };  // (0, 1)
  const size_t n = static_cast<size_t>(horizon) * action_dim;
  std::vector<float> out(n);
  for (size_t i = 0; i < n; i += 2) {
    const double r = std::sqrt(-2.0 * std::log(uniform()));
    const double t = 2.0 * M_PI * uniform();
    out[i] = static_cast<float>(r * std::cos(t));
    if (i + 1 < n) out[i + 1] = static_cast<float>(r * std::sin(t));
  }
  return out;
}

PreparedRequest Policy::prepare(const Value& request) const {
  RobotInputs in = robot_inputs(opt_.robot, request);
  // InjectDefaultPrompt, then TokenizePrompt's "Prompt is required".
  std::string prompt;
  if (in.prompt) {
    prompt = *in.prompt;
  } else if (!opt_.default_prompt.empty()) {
    prompt = opt_.default_prompt;
  } else {
    throw Error("Prompt is required");
  }

  // Normalize: only the state (the keys present in both the data and the stats).
  const int d = static_cast<int>(in.state.size());
  if (auto it = stats_.find("state"); it != stats_.end()) normalize(mode_, it->second, in.state.data(), d);

  PreparedRequest r;
  const int size = config_.vision.image_size;
  for (int c = 0; c < ModelConfig::kNumCameras; ++c) {
    r.image_masks[c] = in.images[c].has_value();
    if (!in.images[c]) continue;  // zeros_like -> -1 in make_inputs
    r.images[c] = resize_with_pad(std::move(*in.images[c]), size, size);
  }
  r.prompt = tokenizer_->tokenize(prompt, discrete_state_ ? in.state.data() : nullptr, d, config_.max_token_len);

  // PadStatesAndActions: zeros after the normalized state.
  r.state_model.assign(config_.action_dim, 0.0);
  std::copy(in.state.begin(), in.state.end(), r.state_model.begin());
  r.state.assign(r.state_model.begin(), r.state_model.end());
  const uint64_t n = counter_.fetch_add(1);
  r.noise = make_noise(opt_.same_noise ? opt_.seed : opt_.seed + n, horizon_, config_.action_dim);
  return r;
}

Value Policy::finish(const PreparedRequest& req, const float* actions, const RequestTiming& t) const {
  const int A = config_.action_dim;
  std::vector<double> act(actions, actions + static_cast<size_t>(horizon_) * A);
  std::vector<double> state = req.state_model;
  // Unnormalize (strict: the stats' keys are the output dict's state and actions).
  if (auto it = stats_.find("actions"); it != stats_.end())
    for (int h = 0; h < horizon_; ++h) unnormalize(mode_, it->second, &act[static_cast<size_t>(h) * A], A, true);
  if (auto it = stats_.find("state"); it != stats_.end()) unnormalize(mode_, it->second, state.data(), A);
  // AbsoluteActions: actions[..., :dims] += where(mask, state[:dims], 0).
  for (int h = 0; h < horizon_; ++h)
    for (size_t i = 0; i < delta_mask_.size() && static_cast<int>(i) < A; ++i)
      if (delta_mask_[i]) act[static_cast<size_t>(h) * A + i] += state[i];
  const int d = spec_.action_dim;
  Value out{ValueMap{}};
  out.set("actions", NdArray::from_doubles(robot_outputs(opt_.robot, act, horizon_, A), {horizon_, d}));
  Value timing{ValueMap{}};
  timing.set("infer_ms", t.model_ms);
  out.set("policy_timing", std::move(timing));
  return out;
}

ModelInputs Policy::make_inputs(const std::vector<const PreparedRequest*>& reqs) const {
  ModelInputs in;
  fill_inputs(reqs, in);
  return in;
}

void Policy::fill_inputs(const std::vector<const PreparedRequest*>& reqs, ModelInputs& in) const {
  const int64_t B = static_cast<int64_t>(reqs.size());
  const int64_t S = config_.vision.image_size, L = config_.max_token_len, A = config_.action_dim, H = horizon_;
  auto shaped = [](HostTensor& t, DType dt, const Shape& s) {
    if (t.dtype() != dt || !(t.shape() == s) || t.numel() == 0) t = HostTensor(dt, s);
  };
  for (int c = 0; c < ModelConfig::kNumCameras; ++c) {
    shaped(in.images[c], DType::U8, Shape{B, S, S, 3});  // (the engine takes [0, 255] to [-1, 1] on the device)
    shaped(in.image_masks[c], DType::BOOL, Shape{B});
  }
  shaped(in.tokenized_prompt, DType::I32, Shape{B, L});
  shaped(in.tokenized_prompt_mask, DType::BOOL, Shape{B, L});
  shaped(in.state, DType::F32, Shape{B, A});
  shaped(in.noise, DType::F32, Shape{B, H, A});
  for (int64_t b = 0; b < B; ++b) {
    const PreparedRequest& r = *reqs[b];
    for (int c = 0; c < ModelConfig::kNumCameras; ++c) {
      uint8_t* dst = in.images[c].ptr<uint8_t>() + b * S * S * 3;
      if (r.image_masks[c]) {
        PIRT_CHECK(r.images[c].height == S && r.images[c].width == S && r.images[c].pixels.size() == size_t(S * S * 3),
                   "make_inputs: camera %d is %dx%d, not %lldx%lld", c, r.images[c].width, r.images[c].height,
                   static_cast<long long>(S), static_cast<long long>(S));
        std::memcpy(dst, r.images[c].pixels.data(), S * S * 3);
      } else {
        std::memset(dst, 0, S * S * 3);  // an absent camera: zeros_like(image), i.e. -1 after the conversion
      }
      in.image_masks[c].ptr<uint8_t>()[b] = r.image_masks[c];
    }
    std::memcpy(in.tokenized_prompt.ptr<int32_t>() + b * L, r.prompt.ids.data(), L * sizeof(int32_t));
    std::memcpy(in.tokenized_prompt_mask.ptr<uint8_t>() + b * L, r.prompt.mask.data(), L);
    std::memcpy(in.state.ptr<float>() + b * A, r.state.data(), A * sizeof(float));
    std::memcpy(in.noise.ptr<float>() + b * H * A, r.noise.data(), H * A * sizeof(float));
  }
}

Value Policy::infer(Engine& engine, const Value& request) const {
  const PreparedRequest r = prepare(request);
  const ModelInputs in = make_inputs({&r});
  const auto t0 = std::chrono::steady_clock::now();
  const HostTensor actions = engine.sample_actions(in, opt_.steps);
  RequestTiming t;
  t.model_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (actions.dtype() != DType::F32 || actions.numel() != static_cast<int64_t>(horizon_) * config_.action_dim)
    throw Error("engine returned actions of shape " + actions.shape().str() + ", expected [1, H, action_dim]");
  return finish(r, actions.ptr<float>(), t);
}

}  // namespace pirt
