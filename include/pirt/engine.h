// The public model-level API: model inputs in, actions out (DESIGN.md, "Model-level inputs").
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"
#include "model/config.h"

namespace pirt {

class Backend;

// The model-level inputs of openpi's sample_actions (spec section 2), batch B.
struct ModelInputs {
  // F32 [B, 224, 224, 3] in [-1, 1], or U8 [B, 224, 224, 3] in [0, 255] (openpi's uint8 images, which
  // the engine converts to [-1, 1] on the device); every camera the same dtype.
  HostTensor images[ModelConfig::kNumCameras];
  HostTensor image_masks[ModelConfig::kNumCameras];  // BOOL [B]
  HostTensor tokenized_prompt;                       // I32 [B, L]
  HostTensor tokenized_prompt_mask;                  // BOOL [B, L]
  HostTensor state;                                  // F32 [B, action_dim]
  HostTensor noise;                                  // F32 [B, H, action_dim]; empty: drawn from the seed
  int64_t batch() const { return state.empty() ? 0 : state.shape()[0]; }
};

// Reads and writes the inputs file of `pirt infer --inputs` (safetensors, names as DESIGN.md).
ModelInputs read_inputs(const std::string& path);
void write_inputs(const std::string& path, const ModelInputs& in);
// Throws Error naming the first input with a wrong dtype or shape.
void check_inputs(const ModelConfig& c, const ModelInputs& in, int horizon);

struct EngineOptions {
  std::string device = "auto";  // auto | cpu | cuda
  int horizon = 0;              // 0: the checkpoint's action_horizon
  // Optimisations, on by default; each switch exists for debugging and for measuring its worth.
  bool drop_padding = true;      // drop absent cameras' and padding text tokens instead of masking them
  bool fuse_projections = true;  // one GEMM for Q|K|V and one for gate|up
  bool graphs = true;            // capture the whole call in one CUDA graph per shape
  bool own_small_gemm = true;    // CUDA: our small-M GEMM where the tuning table picked it (else cuBLASLt)
  bool fused_small_gemm = false; // CUDA: fused projections through our small-M GEMM (measured even)
  bool pdl = false;              // CUDA: programmatic dependent launch of our kernels (measured a loss)
  bool block_kernel = true;      // CUDA: the action expert's block tail as one persistent kernel (sm_90a)
  bool wgmma_attention = true;   // CUDA: the prefix's and the action steps' attention on wgmma + TMA (sm_90a)
  bool step_kernel = true;       // CUDA: the boundary between two flow steps as one persistent kernel
  bool step_pdl = true;          // CUDA: the steps' attention and block tail kernels overlap (PDL)
  std::string tuning_file;       // CUDA: GEMM algorithm per shape (pirt tune); "": bench/tuning/, "none": heuristic
};

class Engine {
 public:
  // Loads a checkpoint folder (model.safetensors + config.json).
  static std::unique_ptr<Engine> load(const std::string& model_dir, const EngineOptions& opt);
  // A model of the given architecture with random weights (what `pirt make-checkpoint` writes).
  static std::unique_ptr<Engine> random(const ModelConfig& config, uint64_t seed, const EngineOptions& opt);
  virtual ~Engine() = default;

  // openpi's sample_actions: actions F32 [B, H, action_dim] in normalized space.
  // Noise comes from inputs.noise, or from `seed` when that is empty.
  virtual HostTensor sample_actions(const ModelInputs& inputs, int steps = 10, uint64_t seed = 0) = 0;

  virtual const ModelConfig& config() const = 0;
  virtual int horizon() const = 0;
  virtual Backend& backend() = 0;
  virtual double load_seconds() const = 0;
};

// Picks the backend for "auto" | "cpu" | "cuda"; throws Error when cuda is asked for and absent.
std::unique_ptr<Backend> make_backend(const std::string& device, const EngineOptions& opt);
bool cuda_available();

}  // namespace pirt
