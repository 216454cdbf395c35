#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "pirt/engine.h"

namespace pirt {

class Args;

int cmd_bench(int argc, char** argv);
int cmd_infer(int argc, char** argv);
int cmd_make_checkpoint(int argc, char** argv);
int cmd_make_inputs(int argc, char** argv);
int cmd_profile(int argc, char** argv);  // profile.cc
int cmd_tune(int argc, char** argv);     // tune.cc

// Shared by the commands (commands.cc).
EngineOptions engine_options(const Args& a);  // --device, --no-* switches, --tuning
extern const char* kEngineFlagsHelp;
extern const std::set<std::string> kEngineFlags;
// Synthetic model inputs: `cameras` present, the rest absent; `prompt_len` valid tokens.
ModelInputs synthetic_inputs(const ModelConfig& c, int batch, int cameras, int prompt_len, uint64_t seed);
// The architecture of a name: pi0 | pi05 | tiny | tiny-pi05; nullopt for anything else.
std::optional<ModelConfig> named_config(const std::string& name);
// pi0 | pi05 | tiny | tiny-pi05 (random weights) or a checkpoint folder.
std::unique_ptr<Engine> load_model(const std::string& model, const EngineOptions& opt);

// The shape of one call, from --cameras --absent --prompt-len --horizon --steps --batch (bench,
// profile and tune take the same options); horizon 0 means the model's own.
struct CallShape {
  int cameras = 3, absent = 0, prompt_len = 48, horizon = 0, steps = 10, batch = 1;
};
CallShape call_shape(const Args& a);

}  // namespace pirt
