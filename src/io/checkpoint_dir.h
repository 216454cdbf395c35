// An openpi PyTorch checkpoint folder (spec section 10), as files; what the files mean is the model
// layer's business:
//   <dir>/model.safetensors
//   <dir>/config.json
//   <dir>/assets/<asset_id>/norm_stats.json     (optional; asset_id may contain '/', e.g.
//                                                 "physical-intelligence/libero")
#pragma once

#include <string>
#include <vector>

namespace pirt {

struct NormStatsFile {
  std::string asset_id;  // the path between assets/ and norm_stats.json
  std::string path;
};

struct CheckpointDir {
  std::string dir;
  std::string model_path;   // <dir>/model.safetensors
  std::string config_path;  // <dir>/config.json
  std::vector<NormStatsFile> norm_stats;  // sorted by asset_id
};

// Finds the files of the checkpoint folder `dir`. Throws Error if the folder does not exist or lacks
// model.safetensors or config.json ("<dir>: no model.safetensors (expected an openpi PyTorch
// checkpoint folder)"); a JAX/orbax folder (params/) gets a hint to convert it.
CheckpointDir locate_checkpoint_dir(const std::string& dir);

// Every <dir>/assets/**/norm_stats.json, sorted by asset_id. Empty if there is no assets/ folder.
std::vector<NormStatsFile> find_norm_stats(const std::string& dir);

// The whole file as a string. Throws Error naming the path and the OS reason.
std::string read_text_file(const std::string& path);

}  // namespace pirt
