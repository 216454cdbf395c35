#include "io/checkpoint_dir.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "core/error.h"

namespace pirt {

namespace fs = std::filesystem;

namespace {

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

}  // namespace

CheckpointDir locate_checkpoint_dir(const std::string& dir) {
  const char* d = dir.c_str();
  std::error_code ec;
  if (!fs::exists(dir, ec)) throw_error(strformat("%s: no such checkpoint folder", d));
  if (!is_dir(dir))
    throw_error(strformat("%s: not a folder (expected an openpi PyTorch checkpoint folder holding "
                          "model.safetensors and config.json)",
                          d));
  CheckpointDir c;
  c.dir = dir;
  c.model_path = (fs::path(dir) / "model.safetensors").string();
  c.config_path = (fs::path(dir) / "config.json").string();
  if (!is_file(c.model_path)) {
    if (is_dir(fs::path(dir) / "params"))
      throw_error(strformat("%s: no model.safetensors; this looks like a JAX (orbax) checkpoint: convert it with "
                            "openpi's examples/convert_jax_model_to_pytorch.py",
                            d));
    throw_error(strformat("%s: no model.safetensors (expected an openpi PyTorch checkpoint folder)", d));
  }
  if (!is_file(c.config_path))
    throw_error(strformat("%s: no config.json (expected an openpi PyTorch checkpoint folder)", d));
  c.norm_stats = find_norm_stats(dir);
  return c;
}

std::vector<NormStatsFile> find_norm_stats(const std::string& dir) {
  std::vector<NormStatsFile> out;
  const fs::path assets = fs::path(dir) / "assets";
  if (!is_dir(assets)) return out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(assets, fs::directory_options::follow_directory_symlink, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->path().filename() != "norm_stats.json" || !is_file(it->path())) continue;
    const fs::path rel = it->path().parent_path().lexically_relative(assets);
    if (rel.empty() || rel == ".") continue;  // assets/norm_stats.json has no asset id
    out.push_back({rel.generic_string(), it->path().string()});
  }
  if (ec) throw_error(strformat("%s: cannot list: %s", assets.string().c_str(), ec.message().c_str()));
  std::sort(out.begin(), out.end(),
            [](const NormStatsFile& a, const NormStatsFile& b) { return a.asset_id < b.asset_id; });
  return out;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_error(strformat("%s: cannot open: %s", path.c_str(), std::strerror(errno)));
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) throw_error(strformat("%s: read failed: %s", path.c_str(), std::strerror(errno)));
  return s.str();
}

}  // namespace pirt
