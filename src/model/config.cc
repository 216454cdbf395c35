#include "model/config.h"

#include <climits>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace pirt {

const char* const kCameraNames[ModelConfig::kNumCameras] = {"base_0_rgb", "left_wrist_0_rgb",
                                                            "right_wrist_0_rgb"};

const char* arch_name(Arch a) { return a == Arch::Pi05 ? "pi05" : "pi0"; }

namespace {

// gemma.py:get_config
GemmaConfig gemma_2b() { return GemmaConfig{2048, 18, 8, 1, 256, 16384, 257152}; }
GemmaConfig gemma_300m() { return GemmaConfig{1024, 18, 8, 1, 256, 4096, 0}; }

}  // namespace

ModelConfig config_pi0() {
  ModelConfig c;
  c.arch = Arch::Pi0;
  c.vision = VisionConfig{};  // So400m/14
  c.llm = gemma_2b();
  c.expert = gemma_300m();
  c.max_token_len = 48;
  return c;
}

ModelConfig config_pi05() {
  ModelConfig c = config_pi0();
  c.arch = Arch::Pi05;
  c.max_token_len = 200;
  return c;
}

ModelConfig config_tiny(Arch arch) {
  ModelConfig c;
  c.arch = arch;
  c.vision = VisionConfig{224, 14, 64, 2, 4, 128};
  c.llm = GemmaConfig{64, 4, 8, 1, 16, 128, 1024};
  c.expert = GemmaConfig{64, 4, 8, 1, 16, 128, 0};
  c.max_token_len = arch == Arch::Pi05 ? 200 : 48;
  return c;
}

std::string ModelConfig::name() const {
  return strformat("%s (vision %dx%d, llm %dx%d, expert %dx%d, horizon %d)", arch_name(arch),
                   vision.width, vision.depth, llm.width, llm.depth, expert.width, expert.depth,
                   action_horizon);
}

void validate(const ModelConfig& c) {
  auto need = [](bool ok, const char* what) {
    if (!ok) throw_error(std::string("config: ") + what);
  };
  need(c.vision.patch > 0 && c.vision.image_size % c.vision.patch == 0,
       "vision.image_size must be a multiple of vision.patch");
  need(c.vision.image_size == 224, "vision.image_size must be 224 (openpi's IMAGE_RESOLUTION)");
  need(c.vision.width > 0 && c.vision.heads > 0 && c.vision.width % c.vision.heads == 0,
       "vision.width must be a positive multiple of vision.heads");
  need(c.vision.depth > 0 && c.vision.mlp > 0, "vision.depth and vision.mlp must be positive");
  for (const GemmaConfig* g : {&c.llm, &c.expert}) {
    const char* who = g == &c.llm ? "llm" : "expert";
    if (g->width <= 0 || g->depth <= 0 || g->heads <= 0 || g->kv_heads <= 0 || g->head_dim <= 0 ||
        g->mlp <= 0)
      throw_error(strformat("config: %s dimensions must be positive", who));
    if (g->heads % g->kv_heads != 0)
      throw_error(strformat("config: %s.heads must be a multiple of %s.kv_heads", who, who));
    if (g->head_dim % 2 != 0) throw_error(strformat("config: %s.head_dim must be even (RoPE)", who));
  }
  need(c.llm.vocab > 0, "llm.vocab must be positive");
  need(c.llm.depth == c.expert.depth && c.llm.heads == c.expert.heads &&
           c.llm.kv_heads == c.expert.kv_heads && c.llm.head_dim == c.expert.head_dim,
       "llm and expert must share depth, heads, kv_heads and head_dim (they share attention)");
  need(c.action_dim > 0 && c.action_horizon > 0 && c.max_token_len > 0,
       "action_dim, action_horizon and max_token_len must be positive");
  // posemb_sincos splits the expert width into sin and cos halves (openpi raises for an odd width).
  need(c.expert.width % 2 == 0, "expert.width must be even (the time embedding is sin | cos halves)");
  // Upper bounds: the depth is walked before the weights are checked, the horizon and prompt length
  // size buffers, and the projection widths are int products.
  auto at_most = [](int64_t v, int64_t max, const char* what) {
    if (v > max) throw_error(strformat("config: %s is %lld, more than pirt supports (%lld)", what, (long long)v,
                                       (long long)max));
  };
  at_most(c.vision.depth, kMaxDepth, "vision.depth");
  at_most(c.llm.depth, kMaxDepth, "llm.depth");
  at_most(c.action_dim, kMaxLength, "action_dim");
  at_most(c.action_horizon, kMaxLength, "action_horizon");
  at_most(c.max_token_len, kMaxLength, "max_token_len");
  at_most(int64_t{3} * c.vision.width, INT_MAX, "3 * vision.width");
  at_most(int64_t{3} * c.expert.width, INT_MAX, "3 * expert.width");
  for (const GemmaConfig* g : {&c.llm, &c.expert})
    at_most((int64_t{g->heads} + 2 * int64_t{g->kv_heads}) * g->head_dim, INT_MAX,
            g == &c.llm ? "(llm.heads + 2 * llm.kv_heads) * llm.head_dim"
                        : "(expert.heads + 2 * expert.kv_heads) * expert.head_dim");
}

namespace {

// An integer field that fits in an int. nlohmann's get<int>() would truncate 64.7 and wrap 1e10.
int get_int(const nlohmann::json& obj, const char* key, const std::string& where) {
  const nlohmann::json& v = obj.at(key);
  const bool fits = v.is_number_unsigned()  ? v.get<uint64_t>() <= static_cast<uint64_t>(INT_MAX)
                    : v.is_number_integer() ? v.get<int64_t>() >= INT_MIN && v.get<int64_t>() <= INT_MAX
                                            : false;
  if (!fits) throw_error("config.json: " + where + key + " must be a 32-bit integer, not " + v.dump());
  return v.get<int>();
}

int get_int(const nlohmann::json& obj, const char* key, const std::string& where, int def) {
  return obj.contains(key) ? get_int(obj, key, where) : def;
}

}  // namespace

ModelConfig config_from_json(const std::string& json_text, bool pi05_hint) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const std::exception& e) {
    throw_error(std::string("config.json is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw_error("config.json: expected a JSON object");
  ModelConfig c;
  try {
    if (j.contains("pirt")) {
      const auto& p = j.at("pirt");
      const std::string arch = p.at("arch").get<std::string>();
      if (arch == "pi0")
        c.arch = Arch::Pi0;
      else if (arch == "pi05")
        c.arch = Arch::Pi05;
      else
        throw_error("config.json: pirt.arch must be \"pi0\" or \"pi05\", not \"" + arch + "\"");
      const auto& v = p.at("vision");
      const std::string pv = "pirt.vision.";
      c.vision = VisionConfig{get_int(v, "image_size", pv), get_int(v, "patch", pv), get_int(v, "width", pv),
                              get_int(v, "depth", pv),      get_int(v, "heads", pv), get_int(v, "mlp", pv)};
      auto gemma = [](const nlohmann::json& g, const std::string& w, bool vocab) {
        return GemmaConfig{get_int(g, "width", w),    get_int(g, "depth", w),
                           get_int(g, "heads", w),    get_int(g, "kv_heads", w),
                           get_int(g, "head_dim", w), get_int(g, "mlp", w),
                           vocab ? get_int(g, "vocab", w) : 0};
      };
      c.llm = gemma(p.at("llm"), "pirt.llm.", true);
      c.expert = gemma(p.at("expert"), "pirt.expert.", false);
      c.action_dim = get_int(p, "action_dim", "pirt.");
      c.action_horizon = get_int(p, "action_horizon", "pirt.");
      c.max_token_len = get_int(p, "max_token_len", "pirt.");
    } else {
      // openpi's converter writes {action_dim, action_horizon, paligemma_variant, action_expert_variant, precision}.
      c = pi05_hint ? config_pi05() : config_pi0();
      const std::string pv = j.value("paligemma_variant", "gemma_2b");
      const std::string ev = j.value("action_expert_variant", "gemma_300m");
      if (pv != "gemma_2b")
        throw_error("config.json: paligemma_variant \"" + pv + "\" is not supported (only gemma_2b)");
      if (ev != "gemma_300m")
        throw_error("config.json: action_expert_variant \"" + ev +
                    "\" is not supported (only gemma_300m)");
      c.action_dim = get_int(j, "action_dim", "", 32);
      c.action_horizon = get_int(j, "action_horizon", "", 50);
      c.max_token_len = get_int(j, "max_token_len", "", c.max_token_len);
    }
  } catch (const nlohmann::json::exception& e) {
    throw_error(std::string("config.json: missing or mistyped field: ") + e.what());
  }
  validate(c);
  return c;
}

std::string config_to_json(const ModelConfig& c) {
  nlohmann::json p;
  p["arch"] = arch_name(c.arch);
  p["vision"] = {{"image_size", c.vision.image_size}, {"patch", c.vision.patch},
                 {"width", c.vision.width},           {"depth", c.vision.depth},
                 {"heads", c.vision.heads},           {"mlp", c.vision.mlp}};
  auto gemma = [](const GemmaConfig& g, bool vocab) {
    nlohmann::json o = {{"width", g.width},       {"depth", g.depth},       {"heads", g.heads},
                        {"kv_heads", g.kv_heads}, {"head_dim", g.head_dim}, {"mlp", g.mlp}};
    if (vocab) o["vocab"] = g.vocab;
    return o;
  };
  p["llm"] = gemma(c.llm, true);
  p["expert"] = gemma(c.expert, false);
  p["action_dim"] = c.action_dim;
  p["action_horizon"] = c.action_horizon;
  p["max_token_len"] = c.max_token_len;
  nlohmann::json j;
  j["action_dim"] = c.action_dim;
  j["action_horizon"] = c.action_horizon;
  const bool canonical = c.llm.width == 2048 && c.expert.width == 1024 && c.vision.width == 1152;
  j["paligemma_variant"] = canonical ? "gemma_2b" : "dummy";
  j["action_expert_variant"] = canonical ? "gemma_300m" : "dummy";
  j["precision"] = "bfloat16";
  j["pirt"] = p;
  return j.dump(2) + "\n";
}

}  // namespace pirt
