// Policy end to end with a fake engine: request dict -> model inputs -> response dict.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "fake_engine.h"
#include "policy/policy.h"

namespace pirt {
namespace {

using testing::FakeEngine;

const std::string kData = PIRT_TEST_DATA;

PolicyOptions options(Robot r) {
  PolicyOptions o;
  o.robot = r;
  o.tokenizer_path = kData + "/tokenizer/tiny_paligemma.model";
  o.norm_stats_path = kData + "/norm_stats/" + robot_name(r) + "/norm_stats.json";
  o.seed = 11;
  return o;
}

NdArray f64(std::vector<double> v) { return NdArray::from_doubles(v, {static_cast<int64_t>(v.size())}); }

NdArray image(int h, int w, uint8_t v) {
  NdArray a;
  a.dtype = "|u1";
  a.shape = {h, w, 3};
  a.data.assign(static_cast<size_t>(h) * w * 3, static_cast<char>(v));
  return a;
}

Value libero_request(double s0 = 0.1) {
  Value r{ValueMap{}};
  r.set("observation/image", image(224, 224, 200));
  r.set("observation/wrist_image", image(100, 120, 30));
  r.set("observation/state", f64({s0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8}));
  r.set("prompt", "pick up the black bowl");
  return r;
}

// The whole chain by hand for pi0 + LIBERO (z-score, delta actions on the first 6 dims).
TEST(Policy, LiberoPi0MatchesHandComputation) {
  const ModelConfig cfg = config_tiny(Arch::Pi0);
  FakeEngine engine(cfg);
  const PolicyOptions opt = options(Robot::Libero);
  const Policy policy(cfg, engine.horizon(), opt);
  EXPECT_EQ(policy.norm_mode(), NormMode::ZScore);
  EXPECT_FALSE(policy.discrete_state());
  EXPECT_EQ(policy.delta_mask(), make_bool_mask({6, -1}));

  const Value req = libero_request();
  const PreparedRequest p = policy.prepare(req);
  const NormStatsMap stats = load_norm_stats(opt.norm_stats_path);
  const NormStats& st = stats.at("state");
  const NormStats& ac = stats.at("actions");
  const std::vector<double> raw = req.find("observation/state")->as_array().to_doubles();
  for (int i = 0; i < 32; ++i) {
    const double want = i < 8 ? (raw[i] - st.mean[i]) / (st.std[i] + 1e-6) : 0.0;
    EXPECT_DOUBLE_EQ(p.state_model[i], want) << i;
    EXPECT_EQ(p.state[i], static_cast<float>(want));
  }
  EXPECT_TRUE(p.image_masks[0] && p.image_masks[1] && !p.image_masks[2]);
  ASSERT_EQ(p.images[0].pixels.size(), 224u * 224 * 3);
  EXPECT_EQ(p.images[0].pixels[0], 200);
  EXPECT_EQ(p.images[1].pixels[0], 0);  // the 100x120 wrist image is padded with black at the top
  EXPECT_TRUE(p.images[2].pixels.empty());
  const ModelInputs mi = policy.make_inputs({&p});
  // The engine takes the images as uint8 and maps [0, 255] to [-1, 1] on the device.
  ASSERT_EQ(mi.images[0].dtype(), DType::U8);
  EXPECT_EQ(mi.images[0].ptr<uint8_t>()[0], 200);
  EXPECT_EQ(mi.images[1].ptr<uint8_t>()[0], 0);
  EXPECT_EQ(mi.images[2].ptr<uint8_t>()[5], 0);  // absent: zeros_like (-1 after the conversion)
  EXPECT_EQ(mi.image_masks[2].ptr<uint8_t>()[0], 0);
  EXPECT_EQ(p.prompt.ids[0], 2);
  EXPECT_EQ(static_cast<int>(p.prompt.ids.size()), cfg.max_token_len);
  EXPECT_EQ(p.noise, Policy::make_noise(11, 50, 32));

  const Value resp = policy.infer(engine, req);
  const NdArray& a = resp.find("actions")->as_array();
  ASSERT_EQ(a.dtype, "<f8");
  ASSERT_EQ(a.shape, (std::vector<int64_t>{50, 7}));
  ASSERT_TRUE(resp.find("policy_timing")->find("infer_ms")->is_float());
  // Recompute: model actions (the fake's formula) -> unnormalize -> + state (dims 0..5) -> [:7].
  // The response was request 1 of this policy: its noise came from seed 12.
  const ModelInputs in = policy.make_inputs({&p});
  const std::vector<float> noise1 = Policy::make_noise(12, 50, 32);
  std::memcpy(in.noise.ptr<float>(), noise1.data(), noise1.size() * sizeof(float));
  for (int h = 0; h < 50; ++h)
    for (int i = 0; i < 7; ++i) {
      double x = FakeEngine::expected(in, 0, h, i, 50, 32);
      x = x * (ac.std[i] + 1e-6) + ac.mean[i];
      if (i < 6) x += p.state_model[i] * (st.std[i] + 1e-6) + st.mean[i];
      EXPECT_NEAR(a.get(h * 7 + i), x, 1e-12) << h << "," << i;
    }
}

TEST(Policy, Pi05DroidPutsTheQuantileStateInThePrompt) {
  const ModelConfig cfg = config_tiny(Arch::Pi05);
  FakeEngine engine(cfg, 15);
  PolicyOptions opt = options(Robot::Droid);
  opt.same_noise = true;
  const Policy policy(cfg, engine.horizon(), opt);
  EXPECT_EQ(policy.norm_mode(), NormMode::Quantile);
  EXPECT_TRUE(policy.discrete_state());
  EXPECT_TRUE(policy.delta_mask().empty());

  Value r{ValueMap{}};
  r.set("observation/exterior_image_1_left", image(224, 224, 1));
  r.set("observation/wrist_image_left", image(224, 224, 2));
  r.set("observation/joint_position", f64({0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7}));
  r.set("observation/gripper_position", f64({0.9}));
  r.set("prompt", "put the marker in the cup");
  const PreparedRequest p = policy.prepare(r);
  const NormStats st = load_norm_stats(opt.norm_stats_path).at("state");
  std::vector<double> norm = {0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, 0.9};
  std::string bins;
  for (int i = 0; i < 8; ++i) {
    norm[i] = (norm[i] - (*st.q01)[i]) / ((*st.q99)[i] - (*st.q01)[i] + 1e-6) * 2.0 - 1.0;
    EXPECT_DOUBLE_EQ(p.state_model[i], norm[i]);
    bins += (i ? " " : "") + std::to_string(discretize_state(norm[i]));
  }
  std::vector<int32_t> want = {2};
  for (int32_t id : policy.tokenizer().encode("Task: put the marker in the cup, State: " + bins + ";\nAction: "))
    want.push_back(id);
  ASSERT_EQ(p.prompt.length, static_cast<int>(want.size()));
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(p.prompt.ids[i], want[i]);
  EXPECT_EQ(p.prompt.ids.size(), 200u);
  // same_noise: every request draws the same noise.
  EXPECT_EQ(policy.prepare(r).noise, p.noise);

  const Value resp = policy.infer(engine, r);
  EXPECT_EQ(resp.find("actions")->as_array().shape, (std::vector<int64_t>{15, 8}));
}

TEST(Policy, Pi05LiberoUsesThePi0PromptFormat) {
  const ModelConfig cfg = config_tiny(Arch::Pi05);
  const Policy policy(cfg, 10, options(Robot::Libero));
  EXPECT_FALSE(policy.discrete_state());
  EXPECT_TRUE(policy.delta_mask().empty());
  const PreparedRequest p = policy.prepare(libero_request());
  std::vector<int32_t> want = {2};
  for (int32_t id : policy.tokenizer().encode("pick up the black bowl")) want.push_back(id);
  want.push_back(policy.tokenizer().encode("\n")[0]);
  ASSERT_EQ(p.prompt.length, static_cast<int>(want.size()));
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(p.prompt.ids[i], want[i]);
}

TEST(Policy, AlohaDeltaActionsUseTheDecodedState) {
  const ModelConfig cfg = config_tiny(Arch::Pi0);
  FakeEngine engine(cfg);
  PolicyOptions opt = options(Robot::Aloha);
  opt.default_prompt = "fold the towel";
  const Policy policy(cfg, engine.horizon(), opt);
  EXPECT_EQ(policy.metadata().find("reset_pose")->as_list().size(), 6u);
  Value images{ValueMap{}};
  NdArray chw = image(224, 224, 90);
  chw.shape = {3, 224, 224};
  images.set("cam_high", chw);
  images.set("cam_left_wrist", chw);
  Value r{ValueMap{}};
  r.set("images", images);
  std::vector<double> s = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.5, -0.1, -0.2, -0.3, -0.4, -0.5, -0.6, 0.4};
  r.set("state", f64(s));
  const PreparedRequest p = policy.prepare(r);  // default prompt used
  EXPECT_TRUE(p.image_masks[0] && p.image_masks[1] && !p.image_masks[2]);
  const Value resp = policy.infer(engine, r);
  const NdArray& a = resp.find("actions")->as_array();
  ASSERT_EQ(a.shape, (std::vector<int64_t>{50, 14}));

  const NormStatsMap stats = load_norm_stats(opt.norm_stats_path);
  const ModelInputs in = policy.make_inputs({&p});
  // Request 1 used seed 12: recompute its noise in the inputs.
  const std::vector<float> noise1 = Policy::make_noise(12, 50, 32);
  std::memcpy(in.noise.ptr<float>(), noise1.data(), noise1.size() * sizeof(float));
  const int flip[14] = {1, -1, -1, 1, 1, 1, 1, 1, -1, -1, 1, 1, 1, 1};
  for (int h = 0; h < 50; h += 7)
    for (int i = 0; i < 14; ++i) {
      double x = FakeEngine::expected(in, 0, h, i, 50, 32);
      x = x * (stats.at("actions").std[i] + 1e-6) + stats.at("actions").mean[i];
      const double state_i = p.state_model[i] * (stats.at("state").std[i] + 1e-6) + stats.at("state").mean[i];
      if (i != 6 && i != 13) x += state_i;
      x *= flip[i];
      if (i == 6 || i == 13) x = aloha_gripper_from_angular(x);
      EXPECT_NEAR(a.get(h * 14 + i), x, 1e-9) << h << "," << i;
    }
}

TEST(Policy, ErrorsNameTheProblem) {
  const ModelConfig cfg = config_tiny(Arch::Pi0);
  const Policy policy(cfg, 0, options(Robot::Libero));
  EXPECT_EQ(policy.horizon(), cfg.action_horizon);
  Value r = libero_request();
  r.as_map().pop_back();  // no prompt, no default
  try {
    policy.prepare(r);
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "Prompt is required");
  }
  // pi0.5 needs quantiles; a tokenizer bigger than the vocabulary is refused.
  PolicyOptions o = options(Robot::Libero);
  o.tokenizer_path = "/nonexistent.model";
  EXPECT_THROW(Policy(cfg, 0, o), Error);
  ModelConfig small = cfg;
  small.llm.vocab = 100;
  EXPECT_THROW(Policy(small, 0, options(Robot::Libero)), Error);
  o = options(Robot::Libero);
  o.norm_stats_path.clear();
  o.model_dir = "/nonexistent";
  EXPECT_THROW(Policy(cfg, 0, o), Error);
}

TEST(Policy, BatchedInputsStackRows) {
  const ModelConfig cfg = config_tiny(Arch::Pi0);
  FakeEngine engine(cfg);
  const Policy policy(cfg, 0, options(Robot::Libero));
  const PreparedRequest a = policy.prepare(libero_request(0.1));
  const PreparedRequest b = policy.prepare(libero_request(0.9));
  const ModelInputs in = policy.make_inputs({&a, &b});
  EXPECT_EQ(in.batch(), 2);
  const HostTensor out = engine.sample_actions(in);
  const ModelInputs ina = policy.make_inputs({&a}), inb = policy.make_inputs({&b});
  const HostTensor oa = engine.sample_actions(ina), ob = engine.sample_actions(inb);
  for (int64_t k = 0; k < 50 * 32; ++k) {
    EXPECT_EQ(out.ptr<float>()[k], oa.ptr<float>()[k]);
    EXPECT_EQ(out.ptr<float>()[50 * 32 + k], ob.ptr<float>()[k]);
  }
}

// fill_inputs (the inference queue's reused buffers) writes what make_inputs does, whatever the
// buffers held before, and keeps them while the batch size stays the same.
TEST(Policy, FillInputsReusesBuffersAndMatchesMakeInputs) {
  const ModelConfig cfg = config_tiny(Arch::Pi0);
  const Policy policy(cfg, 0, options(Robot::Libero));
  Value with_wrist = libero_request(0.1), no_wrist = libero_request(0.9);
  no_wrist.set("observation/wrist_image", image(224, 224, 77));
  const PreparedRequest a = policy.prepare(with_wrist), b = policy.prepare(no_wrist);
  auto same = [](const ModelInputs& x, const ModelInputs& y) {
    auto eq = [](const HostTensor& p, const HostTensor& q) {
      return p.dtype() == q.dtype() && p.shape() == q.shape() &&
             std::memcmp(p.ptr<uint8_t>(), q.ptr<uint8_t>(), p.numel() * dtype_size(p.dtype())) == 0;
    };
    bool ok = eq(x.tokenized_prompt, y.tokenized_prompt) && eq(x.tokenized_prompt_mask, y.tokenized_prompt_mask) &&
              eq(x.state, y.state) && eq(x.noise, y.noise);
    for (int c = 0; c < ModelConfig::kNumCameras; ++c) ok = ok && eq(x.images[c], y.images[c]) && eq(x.image_masks[c], y.image_masks[c]);
    return ok;
  };
  ModelInputs buf;
  policy.fill_inputs({&a}, buf);
  EXPECT_TRUE(same(buf, policy.make_inputs({&a})));
  const uint8_t* storage = buf.images[0].ptr<uint8_t>();
  policy.fill_inputs({&b}, buf);  // same batch size: same buffers, b's values
  EXPECT_EQ(buf.images[0].ptr<uint8_t>(), storage);
  EXPECT_TRUE(same(buf, policy.make_inputs({&b})));
  EXPECT_EQ(buf.images[1].ptr<uint8_t>()[0], 77);
  policy.fill_inputs({&b, &a}, buf);  // a new batch size: new buffers
  EXPECT_EQ(buf.batch(), 2);
  EXPECT_TRUE(same(buf, policy.make_inputs({&b, &a})));
}

}  // namespace
}  // namespace pirt
