// Policy: what openpi's Policy.infer does around the model (spec sections 7 and 8).
//
//   request dict --robot_inputs--> images, state, prompt
//                --normalize--> state (z-score for pi0, quantile for pi0.5)
//                --resize_with_pad / tokenize / pad to 32--> one row of ModelInputs   (prepare)
//   Engine::sample_actions (any batch)                                                 (caller)
//   actions row --unnormalize--> --AbsoluteActions--> --robot outputs--> response dict (finish)
//
// prepare() and finish() are const and thread-safe, so a server can run them on its connection
// threads and batch the model calls of several clients.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pirt/engine.h"
#include "policy/norm_stats.h"
#include "policy/robots.h"
#include "policy/tokenizer.h"
#include "policy/value.h"

namespace pirt {

struct PolicyOptions {
  Robot robot = Robot::Libero;
  std::string tokenizer_path;   // empty: default_tokenizer_path()
  std::string norm_stats_path;  // empty: find_norm_stats(model_dir, robot asset id)
  std::string model_dir;        // where to look for assets/<asset_id>/norm_stats.json
  std::optional<bool> delta_actions;   // unset: the robot's openpi config decides
  std::optional<bool> discrete_state;  // unset: pi0.5 except LIBERO
  std::string default_prompt;          // used when a request has no "prompt"
  int steps = 10;                      // flow-matching steps
  uint64_t seed = 0;                   // noise of request n is drawn from seed + n
  bool same_noise = false;             // every request uses the noise of `seed`
};

// One request, ready for the model: a row of ModelInputs, plus what finish() needs.
struct PreparedRequest {
  // Each camera at the model's size (224 x 224 x 3, uint8, HWC; empty when absent): make_inputs
  // maps the bytes to [-1, 1] as it writes the batch, one pass.
  std::array<ImageU8, ModelConfig::kNumCameras> images;
  std::array<bool, ModelConfig::kNumCameras> image_masks{};
  TokenizedPrompt prompt;
  std::vector<float> state;         // [action_dim], the model's input
  std::vector<double> state_model;  // [action_dim], float64 as openpi keeps it for Unnormalize
  std::vector<float> noise;         // [H * action_dim]
};

// The model's actions for one request: [H * action_dim], normalized space.
struct RequestTiming {
  double model_ms = 0;  // policy_timing.infer_ms
};

class Policy {
 public:
  // The engine gives the architecture, horizon and action_dim; it is not called here.
  Policy(const ModelConfig& config, int horizon, const PolicyOptions& opt);

  PreparedRequest prepare(const Value& request) const;
  // Turns the model's [H, action_dim] actions into the response dict ({"actions": <f8 [H, d]},
  // plus policy_timing).
  Value finish(const PreparedRequest& req, const float* actions, const RequestTiming& t) const;

  // prepare + engine.sample_actions (B = 1) + finish.
  Value infer(Engine& engine, const Value& request) const;

  // Stacks prepared requests into one batch of model inputs.
  ModelInputs make_inputs(const std::vector<const PreparedRequest*>& reqs) const;
  // The same into `in`, reusing its buffers where they already have the batch's shapes (the
  // inference queue keeps one: no 1.8 MB of fresh pages a request).
  void fill_inputs(const std::vector<const PreparedRequest*>& reqs, ModelInputs& in) const;

  const Value& metadata() const { return metadata_; }
  const ModelConfig& config() const { return config_; }
  int horizon() const { return horizon_; }
  int steps() const { return opt_.steps; }
  NormMode norm_mode() const { return mode_; }
  bool discrete_state() const { return discrete_state_; }
  const std::vector<bool>& delta_mask() const { return delta_mask_; }
  const std::string& norm_stats_path() const { return norm_stats_path_; }
  const PaligemmaTokenizer& tokenizer() const { return *tokenizer_; }
  std::string describe() const;  // one line for the server's start-up log

  // The noise of request n (openpi draws N(0, 1) of [H, action_dim]): splitmix64 + Box-Muller.
  static std::vector<float> make_noise(uint64_t seed, int horizon, int action_dim);

 private:
  ModelConfig config_;
  int horizon_;
  PolicyOptions opt_;
  const RobotSpec& spec_;
  NormMode mode_;
  bool discrete_state_;
  std::vector<bool> delta_mask_;
  std::string norm_stats_path_;
  NormStatsMap stats_;
  std::unique_ptr<PaligemmaTokenizer> tokenizer_;
  Value metadata_;
  mutable std::atomic<uint64_t> counter_{0};
};

}  // namespace pirt
