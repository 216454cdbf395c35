// End-to-end properties of the CPU engine on random tiny models: finite, noise-dependent actions;
// dropping absent cameras and padding tokens gives the same actions as masking them; a reused plan
// takes each call's masks; a batch is its rows run alone; bad inputs give errors that name the input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "pirt/engine.h"

namespace pirt {
namespace {

ModelInputs make_inputs(const ModelConfig& c, int batch, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::normal_distribution<float> n(0.f, 1.f);
  const int64_t S = c.vision.image_size, L = c.max_token_len, H = c.action_horizon, A = c.action_dim;
  ModelInputs in;
  for (int cam = 0; cam < ModelConfig::kNumCameras; ++cam) {
    in.images[cam] = HostTensor(DType::F32, {batch, S, S, 3});
    in.image_masks[cam] = HostTensor(DType::BOOL, {batch});
    for (int64_t i = 0; i < in.images[cam].numel(); ++i) in.images[cam].ptr<float>()[i] = u(rng);
    for (int b = 0; b < batch; ++b) in.image_masks[cam].ptr<uint8_t>()[b] = 1;
  }
  in.tokenized_prompt = HostTensor(DType::I32, {batch, L});
  in.tokenized_prompt_mask = HostTensor(DType::BOOL, {batch, L});
  for (int b = 0; b < batch; ++b)
    for (int64_t i = 0; i < L; ++i) {
      const bool valid = i < 10 + 3 * b;
      in.tokenized_prompt.ptr<int32_t>()[b * L + i] = valid ? static_cast<int32_t>(rng() % c.llm.vocab) : 0;
      in.tokenized_prompt_mask.ptr<uint8_t>()[b * L + i] = valid;
    }
  in.state = HostTensor(DType::F32, {batch, A});
  for (int64_t i = 0; i < in.state.numel(); ++i) in.state.ptr<float>()[i] = u(rng);
  in.noise = HostTensor(DType::F32, {batch, H, A});
  for (int64_t i = 0; i < in.noise.numel(); ++i) in.noise.ptr<float>()[i] = n(rng);
  return in;
}

double max_abs(const HostTensor& t) {
  double m = 0;
  for (int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::fabs(double(t.ptr<float>()[i])));
  return m;
}

double max_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.numel(), b.numel());
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::fabs(double(a.ptr<float>()[i]) - b.ptr<float>()[i]));
  return m;
}

EngineOptions cpu() {
  EngineOptions o;
  o.device = "cpu";
  return o;
}

class EngineTest : public ::testing::TestWithParam<Arch> {};

TEST_P(EngineTest, ActionsAreFiniteAndDependOnTheNoise) {
  const ModelConfig c = config_tiny(GetParam());
  auto engine = Engine::random(c, 1, cpu());
  ModelInputs in = make_inputs(c, 1, 7);
  const HostTensor a = engine->sample_actions(in, 10);
  in.noise = HostTensor();
  const HostTensor b = engine->sample_actions(in, 10, 1);
  const HostTensor b2 = engine->sample_actions(in, 10, 2);
  for (const HostTensor* t : {&a, &b, &b2}) {
    ASSERT_EQ(t->shape(), (Shape{1, c.action_horizon, c.action_dim}));
    for (int64_t i = 0; i < t->numel(); ++i) ASSERT_TRUE(std::isfinite(t->ptr<float>()[i])) << i;
  }
  // Non-trivial: actions of the order of the noise, and two noise draws give different chunks.
  EXPECT_GT(max_abs(a), 0.1);
  EXPECT_LT(max_abs(a), 100.0);
  EXPECT_GT(max_diff(b, b2), 0.1);
}

TEST_P(EngineTest, DroppingAbsentCamerasAndPaddingIsExact) {
  const ModelConfig c = config_tiny(GetParam());
  ModelInputs in = make_inputs(c, 1, 3);
  in.image_masks[2].ptr<uint8_t>()[0] = 0;  // right wrist absent, as LIBERO and DROID send
  for (int64_t i = 0; i < in.images[2].numel(); ++i) in.images[2].ptr<float>()[i] = -1.f;
  EngineOptions drop = cpu(), keep = cpu();
  keep.drop_padding = false;
  const HostTensor a = Engine::random(c, 1, drop)->sample_actions(in, 10);
  const HostTensor b = Engine::random(c, 1, keep)->sample_actions(in, 10);
  // Same math, another reduction order: fp32 rounding only (docs/numerics.md).
  EXPECT_LT(max_diff(a, b), 1e-4 * std::max(1.0, max_abs(a)));
}

TEST_P(EngineTest, AnEmptyPrefixStillGivesActions) {
  // Every camera absent and no valid prompt token: the suffix attends only to itself.
  const ModelConfig c = config_tiny(GetParam());
  ModelInputs in = make_inputs(c, 1, 11);
  for (int cam = 0; cam < ModelConfig::kNumCameras; ++cam) in.image_masks[cam].ptr<uint8_t>()[0] = 0;
  for (int64_t i = 0; i < in.tokenized_prompt_mask.numel(); ++i) in.tokenized_prompt_mask.ptr<uint8_t>()[i] = 0;
  EngineOptions keep = cpu();
  keep.drop_padding = false;
  const HostTensor a = Engine::random(c, 1, cpu())->sample_actions(in, 3);
  const HostTensor b = Engine::random(c, 1, keep)->sample_actions(in, 3);
  for (int64_t i = 0; i < a.numel(); ++i) ASSERT_TRUE(std::isfinite(a.ptr<float>()[i])) << i;
  EXPECT_LT(max_diff(a, b), 1e-4 * std::max(1.0, max_abs(a)));
}

TEST_P(EngineTest, PaddingTokenIdsAreNeverEmbedded) {
  // Padding tokens are masked out, and check_inputs range-checks only valid ids. Kept in the prefix
  // (--no-drop-padding), a padding id outside the vocabulary used to reach embed (an internal check
  // on the CPU, an out-of-bounds read on CUDA); it must not change the actions.
  const ModelConfig c = config_tiny(GetParam());
  ModelInputs in = make_inputs(c, 1, 13);
  EngineOptions keep = cpu();
  keep.drop_padding = false;
  auto engine = Engine::random(c, 1, keep);
  const HostTensor a = engine->sample_actions(in, 2);
  const int64_t L = in.tokenized_prompt.shape()[1];
  ASSERT_FALSE(in.tokenized_prompt_mask.ptr<uint8_t>()[L - 1]);
  in.tokenized_prompt.ptr<int32_t>()[L - 1] = -7;
  in.tokenized_prompt.ptr<int32_t>()[L - 2] = c.llm.vocab + 100;
  const HostTensor b = engine->sample_actions(in, 2);
  EXPECT_EQ(max_diff(a, b), 0.0);
}

TEST_P(EngineTest, ABatchIsItsRowsRunAlone) {
  const ModelConfig c = config_tiny(GetParam());
  auto engine = Engine::random(c, 1, cpu());
  ModelInputs in = make_inputs(c, 2, 5);
  in.image_masks[1].ptr<uint8_t>()[1] = 0;
  const HostTensor both = engine->sample_actions(in, 3);
  for (int b = 0; b < 2; ++b) {
    ModelInputs one;
    auto row = [b](const HostTensor& t) {
      Shape s = t.shape();
      s[0] = 1;
      HostTensor r(t.dtype(), s);
      std::memcpy(r.ptr<void>(), t.view().rows(b, 1).data, r.view().nbytes());
      return r;
    };
    for (int cam = 0; cam < ModelConfig::kNumCameras; ++cam) {
      one.images[cam] = row(in.images[cam]);
      one.image_masks[cam] = row(in.image_masks[cam]);
    }
    one.tokenized_prompt = row(in.tokenized_prompt);
    one.tokenized_prompt_mask = row(in.tokenized_prompt_mask);
    one.state = row(in.state);
    one.noise = row(in.noise);
    const HostTensor alone = engine->sample_actions(one, 3);
    EXPECT_EQ(max_diff(alone, both.view().rows(b, 1)), 0.0) << "row " << b;
  }
}

TEST_P(EngineTest, AReusedPlanTakesEachCallsMasks) {
  // With padding kept, inputs that differ only in their masks share one plan (and its buffers); the
  // engine re-sends positions and mask blocks only when they change. Each call must still see its
  // own: the second call equals the same inputs on a fresh engine.
  const ModelConfig c = config_tiny(GetParam());
  EngineOptions keep = cpu();
  keep.drop_padding = false;
  ModelInputs first = make_inputs(c, 1, 17), second = make_inputs(c, 1, 17);
  second.image_masks[1].ptr<uint8_t>()[0] = 0;
  for (int64_t i = 4; i < second.tokenized_prompt_mask.numel(); ++i) second.tokenized_prompt_mask.ptr<uint8_t>()[i] = 0;
  auto engine = Engine::random(c, 1, keep);
  const HostTensor a = engine->sample_actions(first, 2);
  const HostTensor b = engine->sample_actions(second, 2);
  const HostTensor b_fresh = Engine::random(c, 1, keep)->sample_actions(second, 2);
  EXPECT_EQ(max_diff(b, b_fresh), 0.0);
  EXPECT_GT(max_diff(a, b), 1e-3);  // the masks matter
  const HostTensor a_again = engine->sample_actions(first, 2);
  EXPECT_EQ(max_diff(a, a_again), 0.0);
}

// A policy hands the engine uint8 images; the engine maps them to [-1, 1] on the device. The actions
// must be those of the same images converted on the host (x / 255 * 2 - 1 in fp32), to the bit,
// whichever comes first on one engine (a separate graph a dtype on CUDA, the same buffers).
void expect_uint8_images_match_floats(Arch arch, const EngineOptions& opt) {
  const ModelConfig c = config_tiny(arch);
  ModelInputs f = make_inputs(c, 2, 23), u = f;
  std::mt19937 rng(5);
  for (int cam = 0; cam < ModelConfig::kNumCameras; ++cam) {
    u.images[cam] = HostTensor(DType::U8, f.images[cam].shape());
    f.images[cam] = HostTensor(DType::F32, f.images[cam].shape());
    for (int64_t i = 0; i < u.images[cam].numel(); ++i) {
      const uint8_t v = static_cast<uint8_t>(rng() % 256);
      u.images[cam].ptr<uint8_t>()[i] = v;
      f.images[cam].ptr<float>()[i] = static_cast<float>(v) / 255.0f * 2.0f - 1.0f;  // (spelled out: the test's own)
    }
  }
  u.image_masks[1].ptr<uint8_t>()[1] = 0;  // one camera absent in the second row (dropped either way)
  f.image_masks[1].ptr<uint8_t>()[1] = 0;
  auto engine = Engine::random(c, 1, opt);
  const HostTensor a = engine->sample_actions(f, 3);
  const HostTensor b = engine->sample_actions(u, 3);
  EXPECT_EQ(max_diff(a, b), 0.0);
  EXPECT_EQ(max_diff(a, engine->sample_actions(f, 3)), 0.0);
  EXPECT_GT(max_abs(a), 0.1);
}

TEST_P(EngineTest, Uint8ImagesGiveTheActionsOfTheirFloatConversion) { expect_uint8_images_match_floats(GetParam(), cpu()); }

TEST_P(EngineTest, Uint8ImagesGiveTheActionsOfTheirFloatConversionOnCuda) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  EngineOptions o;
  o.device = "cuda";
  expect_uint8_images_match_floats(GetParam(), o);
}

INSTANTIATE_TEST_SUITE_P(Tiny, EngineTest, ::testing::Values(Arch::Pi0, Arch::Pi05),
                         [](const auto& info) { return std::string(arch_name(info.param)); });

TEST(EngineInputs, BadInputsNameTheInput) {
  const ModelConfig c = config_tiny(Arch::Pi0);
  auto engine = Engine::random(c, 1, cpu());
  auto expect_error = [&](ModelInputs in, const std::string& needle) {
    try {
      engine->sample_actions(in, 1);
      FAIL() << "no error; expected one mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  ModelInputs in = make_inputs(c, 1, 1);
  ModelInputs bad = in;
  bad.state = HostTensor(DType::F32, {1, 7});
  expect_error(bad, "state");
  bad = in;
  bad.images[1] = HostTensor(DType::F32, {1, 200, 224, 3});
  expect_error(bad, "image.left_wrist_0_rgb");
  bad = in;
  bad.images[1] = HostTensor(DType::U8, {1, 224, 224, 3});  // uint8 next to float cameras
  expect_error(bad, "image.left_wrist_0_rgb");
  bad = in;
  bad.image_masks[0] = HostTensor(DType::I32, {1});
  expect_error(bad, "image_mask.base_0_rgb");
  bad = in;
  bad.tokenized_prompt = HostTensor(DType::I32, {1, c.max_token_len});
  bad.tokenized_prompt.ptr<int32_t>()[0] = c.llm.vocab + 5;
  expect_error(bad, "outside the vocabulary");
  bad = in;
  bad.noise = HostTensor(DType::F32, {1, 3, c.action_dim});
  expect_error(bad, "noise");
}

}  // namespace
}  // namespace pirt
