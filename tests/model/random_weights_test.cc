#include "model/random_weights.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/bf16.h"
#include "model/weight_table.h"

namespace pirt {
namespace {

bool same_bytes(const HostTensor& a, const HostTensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.view().data, b.view().data, a.view().nbytes()) == 0;
}

struct Stats {
  double mean = 0, std = 0;
};
Stats stats(const Tensor& t, int64_t begin = 0, int64_t end = -1) {
  if (end < 0) end = t.numel();
  double s = 0, s2 = 0;
  for (int64_t i = begin; i < end; ++i) {
    const double v = load_f32(t, i);
    s += v;
    s2 += v * v;
  }
  const double n = static_cast<double>(end - begin);
  return {s / n, std::sqrt(std::max(0.0, s2 / n - (s / n) * (s / n)))};
}

TEST(RandomWeights, EveryTableEntryWithItsShape) {
  for (Arch a : {Arch::Pi0, Arch::Pi05}) {
    const ModelConfig c = config_tiny(a);
    const auto w = random_weights(c, 0, DType::BF16);
    const auto table = weight_table(c);
    EXPECT_EQ(w.size(), table.size());  // nothing else, e.g. no expert LM head
    for (const WeightSpec& s : table) {
      auto it = w.find(s.name);
      ASSERT_NE(it, w.end()) << s.name;
      EXPECT_EQ(it->second.shape(), s.shape) << s.name;
      EXPECT_EQ(it->second.dtype(), DType::BF16) << s.name;
    }
  }
}

TEST(RandomWeights, DeterministicForAnyThreadCount) {
  const ModelConfig c = config_tiny(Arch::Pi05);
  const auto a = random_weights(c, 42, DType::F32, 1);
  const auto b = random_weights(c, 42, DType::F32, 3);
  const auto d = random_weights(c, 43, DType::F32, 2);
  for (const auto& [name, t] : a) {
    EXPECT_TRUE(same_bytes(t, b.at(name))) << name;
    EXPECT_FALSE(same_bytes(t, d.at(name))) << name;
  }
}

// A value depends on (seed, name, index) only: the same tensor in pi0 and pi0.5 is identical.
TEST(RandomWeights, ValuesDoNotDependOnTheTable) {
  const auto a = random_weights(config_tiny(Arch::Pi0), 9, DType::BF16);
  const auto b = random_weights(config_tiny(Arch::Pi05), 9, DType::BF16);
  EXPECT_TRUE(same_bytes(a.at(kEmbedName), b.at(kEmbedName)));
  EXPECT_TRUE(same_bytes(a.at("action_out_proj.weight"), b.at("action_out_proj.weight")));
}

TEST(RandomWeights, Bf16IsRoundedF32) {
  const ModelConfig c = config_tiny(Arch::Pi0);
  const auto f = random_weights(c, 5, DType::F32);
  const auto h = random_weights(c, 5, DType::BF16);
  for (const auto& [name, t] : f) {
    const Tensor& hb = h.at(name).view();
    for (int64_t i = 0; i < t.numel(); ++i)
      ASSERT_EQ(f32_to_bf16(t.ptr<float>()[i]), hb.ptr<uint16_t>()[i]) << name << " " << i;
  }
}

// Pinned values: a change here changes every random checkpoint and benchmark input. Only update
// them on purpose.
TEST(RandomWeights, GoldenValues) {
  const auto w = random_weights(config_tiny(Arch::Pi0), 0, DType::F32);
  const float* p = w.at("action_in_proj.weight").ptr<float>();
  const float expected[4] = {-0x1.00d06p-2f, 0x1.c7eba4p-4f, 0x1.71342ep-4f, 0x1.2d8d58p-3f};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(p[i], expected[i]) << i << " " << std::hexfloat << p[i];
}

TEST(RandomWeights, ScalesByKind) {
  const ModelConfig c = config_tiny(Arch::Pi05);
  const auto w = random_weights(c, 1, DType::F32);
  const std::string L = kLlmPrefix, E = kExpertPrefix, V = kVisionPrefix;
  // Four standard errors of a uniform sample of n: the mean's is std/sqrt(n); the std's is about
  // 0.45 std/sqrt(n) (uniform kurtosis 1.8). Small tensors get loose bounds, large ones tight.
  auto check = [&](const std::string& name, double mean, double stddev) {
    const Tensor& t = w.at(name).view();
    const Stats s = stats(t);
    const double n = static_cast<double>(t.numel());
    EXPECT_NEAR(s.mean, mean, 4 * stddev / std::sqrt(n)) << name;
    EXPECT_NEAR(s.std, stddev, 1.8 * stddev / std::sqrt(n)) << name;
  };
  check(kEmbedName, 0, 1 / std::sqrt(64.0));
  check(L + "layers.0.mlp.gate_proj.weight", 0, 1 / std::sqrt(64.0));
  check(L + "layers.0.mlp.down_proj.weight", 0, 1 / std::sqrt(128.0));
  check(V + "embeddings.patch_embedding.weight", 0, 1 / std::sqrt(3 * 14 * 14.0));
  check(V + "embeddings.position_embedding.weight", 0, 0.05);
  check(V + "encoder.layers.0.layer_norm1.weight", 1, 0.05);
  check(L + "layers.0.input_layernorm.weight", 0, 0.1);
  check(E + "layers.0.input_layernorm.dense.weight", 0, 0.2 / std::sqrt(64.0));
  // adaRMS bias: scale and shift near 0, gate near 1.
  const Tensor& b = w.at(E + "layers.0.input_layernorm.dense.bias").view();
  EXPECT_NEAR(stats(b, 0, 128).mean, 0, 0.01);
  EXPECT_NEAR(stats(b, 128, 192).mean, 1, 0.01);
  for (const auto& [name, t] : w)
    for (int64_t i = 0; i < t.numel(); ++i) ASSERT_TRUE(std::isfinite(t.ptr<float>()[i])) << name;
}

}  // namespace
}  // namespace pirt
