// A loaded checkpoint: the model config plus a view of every weight, by openpi's PyTorch name.
//
// open_checkpoint() maps model.safetensors (nothing is copied: views point into the page cache) and
// checks every tensor of weight_table(config) for presence, shape and a float dtype, so that the
// forward pass can call get() without checking. checkpoint_from_tensors() does the same for weights
// held in memory (random weights for tests and benchmarks), so the Engine loads both the same way.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"

namespace pirt {

class Checkpoint {
 public:
  ModelConfig config;
  std::string dir;     // the checkpoint folder; empty for in-memory weights
  std::string source;  // <dir>/model.safetensors, or "<in-memory weights>": used in error messages
  // <dir>/assets/<asset_id>/norm_stats.json, sorted by asset id (io/checkpoint_dir.h tells the id).
  std::vector<std::string> norm_stats_files;

  // The tensor `name` (canonical name: no "model." prefix; the embedding is kEmbedName). Host
  // memory, F32/BF16/F16 for every table entry. Throws Error if there is no such tensor.
  const Tensor& get(const std::string& name) const;
  const Tensor* find(const std::string& name) const;
  bool has(const std::string& name) const { return find(name) != nullptr; }
  // Every tensor, by canonical name, including ones the model does not use.
  const std::map<std::string, Tensor>& tensors() const { return tensors_; }

 private:
  friend Checkpoint open_checkpoint(const std::string& dir);
  friend Checkpoint checkpoint_from_tensors(const ModelConfig& config, std::map<std::string, HostTensor> tensors);

  std::map<std::string, Tensor> tensors_;
  std::shared_ptr<const void> storage_;  // the mapped file or the host tensors the views point into
};

// Opens an openpi PyTorch checkpoint folder (model.safetensors + config.json, spec section 10).
// pi0.5 is recognised by its adaRMS tensors. Accepts lerobot's "model." prefix on every key and the
// embedding under kEmbedAlias; ignores tensors the model does not use (the expert's LM head).
// Throws Error naming the folder or file and the tensor for anything missing or malformed.
Checkpoint open_checkpoint(const std::string& dir);

// Wraps weights held in memory (e.g. random_weights()), validated like a file. Keeps them alive.
Checkpoint checkpoint_from_tensors(const ModelConfig& config, std::map<std::string, HostTensor> tensors);

// Checks that `tensors` (canonical names) hold every entry of weight_table(config) with its shape
// and a float dtype. Throws Error starting with `source`.
void validate_weights(const ModelConfig& config, const std::map<std::string, Tensor>& tensors,
                      const std::string& source);

}  // namespace pirt
