#include "model/checkpoint.h"

#include <utility>

#include "core/error.h"
#include "io/checkpoint_dir.h"
#include "io/safetensors.h"
#include "model/weight_table.h"

namespace pirt {

namespace {

constexpr const char* kLerobotPrefix = "model.";

// Maps the names a file uses to the canonical ones: lerobot's "model." prefix is stripped (unless
// the unprefixed name also exists, which then wins), and the embedding stored under its HF name is
// also reachable as kEmbedName. Unused tensors are kept; nothing asks for them.
std::map<std::string, Tensor> canonicalize(const std::map<std::string, Tensor>& in) {
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : in)
    if (name.rfind(kLerobotPrefix, 0) != 0) out.emplace(name, t);
  const size_t plen = std::string(kLerobotPrefix).size();
  for (const auto& [name, t] : in)
    if (name.rfind(kLerobotPrefix, 0) == 0) out.emplace(name.substr(plen), t);  // no-op if present
  if (out.count(kEmbedName) == 0) {
    auto it = out.find(kEmbedAlias);
    if (it != out.end()) out.emplace(kEmbedName, it->second);
  }
  return out;
}

}  // namespace

const Tensor* Checkpoint::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const Tensor& Checkpoint::get(const std::string& name) const {
  const Tensor* t = find(name);
  if (t == nullptr) throw_error(strformat("%s: no tensor '%s'", source.c_str(), name.c_str()));
  return *t;
}

void validate_weights(const ModelConfig& config, const std::map<std::string, Tensor>& tensors,
                      const std::string& source) {
  const std::vector<WeightSpec> table = weight_table(config);
  const char* src = source.c_str();
  // Count the missing ones first: "1 missing" and "all 776 missing" call for different fixes.
  const WeightSpec* first_missing = nullptr;
  size_t missing = 0;
  for (const WeightSpec& w : table) {
    if (!w.required || tensors.count(w.name)) continue;
    if (!first_missing) first_missing = &w;
    ++missing;
  }
  if (first_missing)
    throw_error(strformat("%s: missing tensor '%s' %s (%zu of the %zu tensors of %s are missing)", src,
                          first_missing->name.c_str(), first_missing->shape.str().c_str(), missing, table.size(),
                          config.name().c_str()));
  for (const WeightSpec& w : table) {
    auto it = tensors.find(w.name);
    if (it == tensors.end()) continue;
    const Tensor& t = it->second;
    if (t.shape != w.shape)
      throw_error(strformat("%s: tensor '%s' has the wrong shape: expected %s, got %s (model %s)", src,
                            w.name.c_str(), w.shape.str().c_str(), t.shape.str().c_str(), config.name().c_str()));
    if (!is_float(t.dtype))
      throw_error(strformat("%s: tensor '%s' has dtype %s; weights must be F32, BF16 or F16", src, w.name.c_str(),
                            std::string(dtype_name(t.dtype)).c_str()));
    if (t.where != Where::Host)
      throw_error(strformat("%s: tensor '%s' is not in host memory", src, w.name.c_str()));
  }
}

Checkpoint open_checkpoint(const std::string& dir) {
  const CheckpointDir files = locate_checkpoint_dir(dir);
  const std::string config_text = read_text_file(files.config_path);
  auto st = std::make_shared<const SafetensorsFile>(SafetensorsFile::open(files.model_path));

  std::map<std::string, Tensor> raw;
  for (const std::string& name : st->names()) raw.emplace(name, *st->find(name));
  Checkpoint c;
  c.tensors_ = canonicalize(raw);
  c.storage_ = st;
  c.dir = dir;
  c.source = files.model_path;
  for (const NormStatsFile& n : files.norm_stats) c.norm_stats_files.push_back(n.path);

  // openpi's own config.json does not say pi0 or pi0.5; the tensors do (spec 6.2: only pi0.5 has
  // adaRMS Dense layers in the expert norms).
  const bool has_adarms = c.tensors_.count(kPi05Probe) > 0;
  try {
    c.config = config_from_json(config_text, has_adarms);
  } catch (const Error& e) {
    throw_error(strformat("%s: %s", dir.c_str(), e.what()));
  }
  if (c.config.pi05() != has_adarms)
    throw_error(strformat(has_adarms ? "%s: config.json says pi0 but %s has pi0.5's adaRMS tensors (%s)"
                                     : "%s: config.json says pi05 but %s has no adaRMS tensor %s (is it a pi0 "
                                       "checkpoint?)",
                          dir.c_str(), files.model_path.c_str(), kPi05Probe));
  validate_weights(c.config, c.tensors_, c.source);
  return c;
}

Checkpoint checkpoint_from_tensors(const ModelConfig& config, std::map<std::string, HostTensor> tensors) {
  validate(config);
  auto owned = std::make_shared<const std::map<std::string, HostTensor>>(std::move(tensors));
  std::map<std::string, Tensor> raw;
  for (const auto& [name, t] : *owned) raw.emplace(name, t.view());
  Checkpoint c;
  c.config = config;
  c.source = "<in-memory weights>";
  c.tensors_ = canonicalize(raw);
  c.storage_ = owned;
  validate_weights(c.config, c.tensors_, c.source);
  return c;
}

}  // namespace pirt
