// A stand-in Engine for policy and server tests: no model, but actions that depend on every input
// (noise, state, tokens, images, masks) so that mis-wiring shows, and a record of the batches run.
#pragma once

#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <thread>
#include <vector>

#include "ops/ops.h"
#include "pirt/engine.h"

namespace pirt::testing {

class FakeEngine : public Engine {
 public:
  explicit FakeEngine(ModelConfig c, int horizon = 0, int delay_ms = 0)
      : config_(c), horizon_(horizon > 0 ? horizon : c.action_horizon), delay_ms_(delay_ms) {}

  // The fake model: a[b, h, i] = 0.5 * noise + 0.25 * state[i] + 0.001 * sum(token ids)
  //                              + 0.1 * mean(base image) + 0.01 * (number of present cameras).
  // row_term(in, b) is everything but noise and state; it reads the whole row once.
  static double row_term(const ModelInputs& in, int64_t b) {
    const int64_t L = in.tokenized_prompt.shape()[1];
    double tok = 0;
    for (int64_t l = 0; l < L; ++l)
      if (in.tokenized_prompt_mask.ptr<uint8_t>()[b * L + l]) tok += in.tokenized_prompt.ptr<int32_t>()[b * L + l];
    const int64_t S = in.images[0].numel() / in.images[0].shape()[0];
    double img = 0;
    for (int64_t k = 0; k < S; ++k)  // (uint8 images mean what the engine maps them to: x / 255 * 2 - 1)
      img += in.images[0].dtype() == DType::U8 ? image_unit_range(in.images[0].ptr<uint8_t>()[b * S + k])
                                               : in.images[0].ptr<float>()[b * S + k];
    img /= static_cast<double>(S);
    int cams = 0;
    for (int c = 0; c < ModelConfig::kNumCameras; ++c) cams += in.image_masks[c].ptr<uint8_t>()[b] ? 1 : 0;
    return 0.001 * tok + 0.1 * img + 0.01 * cams;
  }
  static float expected(const ModelInputs& in, int64_t b, int64_t h, int64_t i, int horizon, int A,
                        double row = std::nan("")) {
    if (std::isnan(row)) row = row_term(in, b);
    const float noise = in.noise.ptr<float>()[(b * horizon + h) * A + i];
    const float state = in.state.ptr<float>()[b * A + i];
    return static_cast<float>(0.5 * noise + 0.25 * state + row);
  }

  HostTensor sample_actions(const ModelInputs& in, int steps = 10, uint64_t seed = 0) override {
    (void)steps;
    (void)seed;
    check_inputs_shape(in);
    if (delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_));
    const int64_t B = in.batch();
    const int A = config_.action_dim;
    HostTensor out(DType::F32, Shape{B, horizon_, A});
    for (int64_t b = 0; b < B; ++b) {
      const double row = row_term(in, b);
      for (int64_t h = 0; h < horizon_; ++h)
        for (int64_t i = 0; i < A; ++i)
          out.ptr<float>()[(b * horizon_ + h) * A + i] = expected(in, b, h, i, horizon_, A, row);
    }
    std::lock_guard<std::mutex> lock(mu_);
    batches_.push_back(static_cast<int>(B));
    return out;
  }

  const ModelConfig& config() const override { return config_; }
  int horizon() const override { return horizon_; }
  Backend& backend() override { throw Error("FakeEngine has no backend"); }
  double load_seconds() const override { return 0; }

  std::vector<int> batches() const {
    std::lock_guard<std::mutex> lock(mu_);
    return batches_;
  }

 private:
  void check_inputs_shape(const ModelInputs& in) const {
    const int64_t B = in.batch();
    const int S = config_.vision.image_size;
    PIRT_CHECK(B > 0, "empty batch");
    for (int c = 0; c < ModelConfig::kNumCameras; ++c) {
      PIRT_CHECK(in.images[c].shape() == (Shape{B, S, S, 3}), "image %s", in.images[c].shape().str().c_str());
      PIRT_CHECK(in.image_masks[c].shape() == Shape{B}, "mask");
    }
    PIRT_CHECK(in.tokenized_prompt.shape() == (Shape{B, config_.max_token_len}), "tokens");
    PIRT_CHECK(in.state.shape() == (Shape{B, config_.action_dim}), "state");
    PIRT_CHECK(in.noise.shape() == (Shape{B, horizon_, config_.action_dim}), "noise");
  }

  ModelConfig config_;
  int horizon_;
  int delay_ms_;
  mutable std::mutex mu_;
  std::vector<int> batches_;
};

}  // namespace pirt::testing
