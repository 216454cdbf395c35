#include "model/weight_table.h"

#include <gtest/gtest.h>

#include <set>

namespace pirt {
namespace {

const WeightSpec* find(const std::vector<WeightSpec>& t, const std::string& name) {
  for (const WeightSpec& w : t)
    if (w.name == name) return &w;
  return nullptr;
}

// Spec 6.2/6.3: openpi's file holds 777 (pi0) / 812 (pi0.5) tensors, one of them the unused expert LM head.
TEST(WeightTable, CountsMatchSpec) {
  const WeightSummary pi0 = weight_summary(config_pi0());
  EXPECT_EQ(pi0.tensors, 776);
  EXPECT_EQ(pi0.params, 3238048528);
  EXPECT_EQ(pi0.bytes(DType::BF16), 2 * 3238048528);
  const WeightSummary pi05 = weight_summary(config_pi05());
  EXPECT_EQ(pi05.tensors, 811);
  EXPECT_EQ(pi05.params, 3353433872);
}

TEST(WeightTable, Pi0Shapes) {
  const auto t = weight_table(config_pi0());
  const std::string V = kVisionPrefix, L = kLlmPrefix, E = kExpertPrefix;
  auto shape = [&](const std::string& n) {
    const WeightSpec* w = find(t, n);
    EXPECT_NE(w, nullptr) << n;
    return w ? w->shape : Shape{};
  };
  EXPECT_EQ(shape(V + "embeddings.patch_embedding.weight"), Shape({1152, 3, 14, 14}));
  EXPECT_EQ(shape(V + "embeddings.position_embedding.weight"), Shape({256, 1152}));
  EXPECT_EQ(shape(V + "encoder.layers.26.mlp.fc1.weight"), Shape({4304, 1152}));
  EXPECT_EQ(shape(V + "post_layernorm.bias"), Shape({1152}));
  EXPECT_EQ(shape(std::string(kProjectorPrefix) + "linear.weight"), Shape({2048, 1152}));
  EXPECT_EQ(shape(kEmbedName), Shape({257152, 2048}));
  EXPECT_EQ(shape(L + "layers.17.self_attn.q_proj.weight"), Shape({2048, 2048}));
  EXPECT_EQ(shape(L + "layers.0.self_attn.k_proj.weight"), Shape({256, 2048}));
  EXPECT_EQ(shape(L + "layers.0.mlp.down_proj.weight"), Shape({2048, 16384}));
  EXPECT_EQ(shape(L + "norm.weight"), Shape({2048}));
  EXPECT_EQ(shape(E + "layers.3.self_attn.q_proj.weight"), Shape({2048, 1024}));
  EXPECT_EQ(shape(E + "layers.3.self_attn.o_proj.weight"), Shape({1024, 2048}));
  EXPECT_EQ(shape(E + "layers.3.input_layernorm.weight"), Shape({1024}));
  EXPECT_EQ(shape("state_proj.weight"), Shape({1024, 32}));
  EXPECT_EQ(shape("action_time_mlp_in.weight"), Shape({1024, 2048}));
  EXPECT_EQ(shape("action_out_proj.weight"), Shape({32, 1024}));
  EXPECT_EQ(find(t, "time_mlp_in.weight"), nullptr);
  EXPECT_EQ(find(t, kPi05Probe), nullptr);
  EXPECT_EQ(find(t, kExpertLmHead), nullptr);
}

TEST(WeightTable, Pi05Differences) {
  const auto t = weight_table(config_pi05());
  const std::string E = kExpertPrefix;
  ASSERT_NE(find(t, kPi05Probe), nullptr);
  EXPECT_EQ(find(t, kPi05Probe)->shape, Shape({3072, 1024}));
  EXPECT_EQ(find(t, kPi05Probe)->kind, WeightKind::AdaRmsW);
  EXPECT_EQ(find(t, E + "layers.17.post_attention_layernorm.dense.bias")->shape, Shape({3072}));
  EXPECT_EQ(find(t, E + "norm.dense.weight")->shape, Shape({3072, 1024}));
  EXPECT_EQ(find(t, E + "norm.weight"), nullptr);
  EXPECT_EQ(find(t, E + "layers.0.input_layernorm.weight"), nullptr);
  // The PaliGemma trunk keeps plain norms.
  EXPECT_NE(find(t, std::string(kLlmPrefix) + "layers.0.input_layernorm.weight"), nullptr);
  EXPECT_EQ(find(t, "time_mlp_out.weight")->shape, Shape({1024, 1024}));
  EXPECT_EQ(find(t, "state_proj.weight"), nullptr);
  EXPECT_EQ(find(t, "action_time_mlp_in.weight"), nullptr);
}

TEST(WeightTable, TinyHasTheSameNames) {
  for (Arch a : {Arch::Pi0, Arch::Pi05}) {
    const ModelConfig full = a == Arch::Pi05 ? config_pi05() : config_pi0();
    const ModelConfig tiny = config_tiny(a);
    std::set<std::string> names;
    for (const WeightSpec& w : weight_table(tiny)) {
      EXPECT_TRUE(names.insert(w.name).second) << "duplicate " << w.name;
      EXPECT_TRUE(w.required);
    }
    // Same names as full size, but for the layer count (tiny: 2 vision, 4 gemma layers).
    for (const WeightSpec& w : weight_table(full)) {
      const bool deep = w.name.find("layers.") != std::string::npos;
      if (!deep) {
        EXPECT_TRUE(names.count(w.name)) << w.name;
      }
    }
    const auto t = weight_table(tiny);
    EXPECT_EQ(find(t, kEmbedName)->shape, Shape({1024, 64}));
    EXPECT_EQ(find(t, std::string(kVisionPrefix) + "embeddings.patch_embedding.weight")->shape,
              Shape({64, 3, 14, 14}));
    EXPECT_EQ(find(t, std::string(kLlmPrefix) + "layers.3.self_attn.q_proj.weight")->shape, Shape({128, 64}));
    EXPECT_EQ(find(t, std::string(kLlmPrefix) + "layers.3.self_attn.v_proj.weight")->shape, Shape({16, 64}));
    EXPECT_EQ(find(t, std::string(kLlmPrefix) + "layers.4.self_attn.q_proj.weight"), nullptr);
  }
}

}  // namespace
}  // namespace pirt
