// The weight table: every tensor the model reads, with openpi's PyTorch names and shapes
// (spec section 6.2), for a given ModelConfig. Loading, validation, random initialisation and
// writing all walk this one list, as gemma.cpp's ForEachTensor does. docs/weights.md describes it.
//
// Shapes are PyTorch's: linear weights are [out, in]; the patch conv is [W, 3, p, p].
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "model/config.h"

namespace pirt {

// What a tensor is, so that code walking the table (random_weights) knows how to treat it.
enum class WeightKind : uint8_t {
  Linear,        // [out, in] matrix (or the patch conv, [W, 3, p, p]); fan-in = elements per row
  Bias,          // bias of a linear layer
  RmsNorm,       // Gemma RMSNorm weight, stored as an offset: y = n * (1 + w)
  LayerNormW,    // SigLIP LayerNorm scale (multiplied as is)
  LayerNormB,    // SigLIP LayerNorm bias
  Embedding,     // token embedding [vocab, width]
  PosEmbedding,  // SigLIP learned position embedding [tokens, width]
  AdaRmsW,       // pi0.5 adaRMS modulation Dense [3 * width, width]: scale | shift | gate rows
  AdaRmsB,       // its bias [3 * width]
};

struct WeightSpec {
  std::string name;
  Shape shape;
  bool required = true;  // every tensor the forward pass reads is required
  WeightKind kind = WeightKind::Linear;
};

// Name prefixes (spec 6.2).
inline constexpr const char* kVisionPrefix = "paligemma_with_expert.paligemma.model.vision_tower.vision_model.";
inline constexpr const char* kProjectorPrefix = "paligemma_with_expert.paligemma.model.multi_modal_projector.";
inline constexpr const char* kLlmPrefix = "paligemma_with_expert.paligemma.model.language_model.";
inline constexpr const char* kExpertPrefix = "paligemma_with_expert.gemma_expert.model.";
// The token embedding [vocab, llm.width], tied to the (unused) LM head; its canonical name.
inline constexpr const char* kEmbedName = "paligemma_with_expert.paligemma.lm_head.weight";
// The same tensor under the name lerobot (and HF without tying) uses; accepted as an alias.
inline constexpr const char* kEmbedAlias = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight";
// Stored by openpi's converter but random and unused; never required.
inline constexpr const char* kExpertLmHead = "paligemma_with_expert.gemma_expert.lm_head.weight";
// Present only in pi0.5 checkpoints (the adaRMS Dense of the expert's first norm): how pi0.5 is recognised.
inline constexpr const char* kPi05Probe = "paligemma_with_expert.gemma_expert.model.layers.0.input_layernorm.dense.weight";

// Layer-major: vision (patch, pos, blocks, post-LN), projector, embedding, LLM layers + final norm,
// expert layers + final norm, then the action/state/time projections.
std::vector<WeightSpec> weight_table(const ModelConfig& c);

struct WeightSummary {
  int64_t tensors = 0;
  int64_t params = 0;  // elements
  int64_t bytes(DType t) const { return params * static_cast<int64_t>(dtype_size(t)); }
};
// pi0: 776 tensors, 3,238,048,528 params; pi0.5: 811 tensors, 3,353,433,872 (spec 6.3; the unused
// expert LM head that openpi also stores is not counted).
WeightSummary weight_summary(const ModelConfig& c);

const char* weight_kind_name(WeightKind k);

}  // namespace pirt
