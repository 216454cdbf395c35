// Random weights in openpi's layout, for tests and benchmarks without downloads
// (`pirt make-checkpoint`). Not a trained model: the scales only keep activations finite and
// non-trivial through every layer, so that numeric comparisons between backends mean something.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "core/tensor.h"
#include "model/config.h"

namespace pirt {

// One tensor per entry of weight_table(config) (the unused expert LM head is not made), in `dtype`
// (BF16 or F32). Deterministic on every platform and for any `num_threads` (0 = all cores):
// element i of a tensor is a hash of (seed, tensor name, i), so neither the thread split nor the
// table order changes a value. The BF16 weights are exactly the F32 ones rounded to nearest even.
// Values are uniform with the standard deviation of their kind (docs/weights.md).
std::map<std::string, HostTensor> random_weights(const ModelConfig& config, uint64_t seed, DType dtype,
                                                 int num_threads = 0);

// Writes <dir>/model.safetensors (tensors in weight_table order, then any others by name) and
// <dir>/config.json (config_to_json, with the "pirt" block); creates `dir` if needed. The weights
// are validated against the table first, so a bad set never reaches the disk.
void write_checkpoint(const std::string& dir, const ModelConfig& config,
                      const std::map<std::string, HostTensor>& weights);

}  // namespace pirt
