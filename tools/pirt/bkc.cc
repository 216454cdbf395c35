#include "bkc.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace pirt {

BkcVerdict check_bkc(const std::string& path, const BenchFigures& f) {
  std::ifstream in(path);
  if (!in) throw_error(path + ": cannot open the best-known-config file");
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.str());
  } catch (const std::exception& e) {
    throw_error(path + ": not valid JSON: " + e.what());
  }
  if (!j.is_object() || !j.contains("entries") || !j["entries"].is_array())
    throw_error(path + ": expected an object with an \"entries\" array");
  double default_margin = 0.10;
  try {
    default_margin = j.value("margin", 0.10);
  } catch (const nlohmann::json::exception& ex) {
    throw_error(path + ": \"margin\" must be a number: " + ex.what());
  }
  BkcVerdict v;
  int index = 0;
  for (const auto& e : j["entries"]) {
    const std::string where = strformat("%s: entries[%d]", path.c_str(), index++);
    try {
      const std::string gpu = e.at("gpu").get<std::string>();
      if (f.device.find(gpu) == std::string::npos) continue;
      if (e.at("model").get<std::string>() != f.model || e.at("cameras").get<int>() != f.cameras ||
          e.at("absent").get<int>() != f.absent || e.value("prompt_len", 48) != f.prompt_len ||
          e.at("horizon").get<int>() != f.horizon || e.at("steps").get<int>() != f.steps ||
          e.value("batch", 1) != f.batch || e.value("images", std::string("f32")) != f.images)
        continue;
      const double best = e.at("mean_ms").get<double>();
      const double margin = e.value("margin", default_margin);
      if (best <= 0 || margin < 0) throw_error(where + ": mean_ms must be positive and margin non-negative");
      v.matched = true;
      const double limit = best * (1.0 + margin);
      const std::string origin = e.value("commit", std::string("?")) + ", " + e.value("date", std::string("?"));
      if (f.mean_ms > limit) {
        v.regression = true;
        v.message = strformat(
            "REGRESSION: mean %.3f ms is %.1f%% slower than the best known %.3f ms for %s on %s (%s); the margin "
            "is %.0f%%",
            f.mean_ms, 100.0 * (f.mean_ms / best - 1.0), best, f.model.c_str(), gpu.c_str(), origin.c_str(),
            100.0 * margin);
      } else {
        v.message = strformat("check: mean %.3f ms is within %.0f%% of the best known %.3f ms (%s, %s)", f.mean_ms,
                              100.0 * margin, best, gpu.c_str(), origin.c_str());
      }
      return v;
    } catch (const nlohmann::json::exception& ex) {
      throw_error(where + ": missing or mistyped field: " + ex.what());
    }
  }
  v.message = "check: " + path + " has no best-known figure for " + f.device + " at this shape; nothing to compare";
  return v;
}

}  // namespace pirt
