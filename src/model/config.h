// Model configurations: the canonical pi0 / pi0.5 sizes (spec section 1) and the tiny test model.
#pragma once

#include <string>

namespace pirt {

enum class Arch { Pi0, Pi05 };

struct VisionConfig {  // SigLIP
  int image_size = 224;
  int patch = 14;
  int width = 1152;
  int depth = 27;
  int heads = 16;
  int mlp = 4304;
  int tokens() const { return (image_size / patch) * (image_size / patch); }
  int head_dim() const { return width / heads; }
};

struct GemmaConfig {
  int width = 2048;
  int depth = 18;
  int heads = 8;
  int kv_heads = 1;
  int head_dim = 256;
  int mlp = 16384;
  int vocab = 257152;  // only the PaliGemma trunk has an embedding
  int q_width() const { return heads * head_dim; }
  int kv_width() const { return kv_heads * head_dim; }
  int qkv_width() const { return q_width() + 2 * kv_width(); }
};

struct ModelConfig {
  Arch arch = Arch::Pi0;
  VisionConfig vision;
  GemmaConfig llm;     // PaliGemma's Gemma 2B: the prefix
  GemmaConfig expert;  // the action expert (Gemma 300M): the suffix
  int action_dim = 32;
  int action_horizon = 50;
  int max_token_len = 48;
  static constexpr int kNumCameras = 3;

  bool pi05() const { return arch == Arch::Pi05; }
  // Suffix length: pi0 adds one state token before the action tokens.
  int suffix_len(int horizon) const { return pi05() ? horizon : horizon + 1; }
  std::string name() const;  // "pi0 (vision 1152x27, llm 2048x18, expert 1024x18)"
};

ModelConfig config_pi0();
ModelConfig config_pi05();
ModelConfig config_tiny(Arch arch);
const char* arch_name(Arch a);

// The camera names in openpi's fixed order (spec section 2).
extern const char* const kCameraNames[ModelConfig::kNumCameras];

// config.json: openpi's keys, plus the "pirt" block that gives every dimension (DESIGN.md).
// `pi05_hint` decides the arch when the file has no "pirt" block (openpi recognises pi0.5 by its tensors).
ModelConfig config_from_json(const std::string& json_text, bool pi05_hint);
std::string config_to_json(const ModelConfig& c);

// Upper bounds that validate() enforces: far above any openpi model, low enough that a corrupt
// config.json gives an error rather than a huge allocation or an int overflow.
constexpr int kMaxDepth = 1024;
constexpr int kMaxLength = 1 << 16;  // action_dim, action_horizon, max_token_len

// Checks that the dimensions are usable; throws Error naming the bad field.
void validate(const ModelConfig& c);

}  // namespace pirt
