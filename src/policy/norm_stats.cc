#include "policy/norm_stats.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"

namespace pirt {

namespace fs = std::filesystem;

namespace {

std::vector<double> read_vec(const nlohmann::json& j, const std::string& what) {
  if (!j.is_array()) throw Error(what + " is not a list of numbers");
  std::vector<double> v;
  for (const auto& e : j) {
    if (!e.is_number()) throw Error(what + " is not a list of numbers");
    v.push_back(e.get<double>());
  }
  return v;
}

}  // namespace

NormStatsMap parse_norm_stats(const std::string& json_text, const std::string& what) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const std::exception& e) {
    throw Error(what + ": not JSON: " + e.what());
  }
  if (!j.is_object() || !j.contains("norm_stats") || !j["norm_stats"].is_object())
    throw Error(what + ": no \"norm_stats\" object");
  NormStatsMap out;
  for (const auto& [key, st] : j["norm_stats"].items()) {
    const std::string w = what + ": norm_stats." + key;
    if (!st.is_object() || !st.contains("mean") || !st.contains("std"))
      throw Error(w + " needs \"mean\" and \"std\"");
    NormStats s;
    s.mean = read_vec(st["mean"], w + ".mean");
    s.std = read_vec(st["std"], w + ".std");
    if (s.mean.size() != s.std.size()) throw Error(w + ": mean and std differ in length");
    for (const char* q : {"q01", "q99"}) {
      if (st.contains(q) && !st[q].is_null()) {
        auto v = read_vec(st[q], w + "." + q);
        if (v.size() != s.mean.size()) throw Error(w + "." + q + " differs in length from mean");
        (q[1] == '0' ? s.q01 : s.q99) = std::move(v);
      }
    }
    out[key] = std::move(s);
  }
  return out;
}

NormStatsMap load_norm_stats(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error("norm stats: cannot read '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_norm_stats(ss.str(), path);
}

std::string find_norm_stats(const std::string& model_dir, const std::string& asset_id) {
  const fs::path assets = fs::path(model_dir) / "assets";
  const fs::path preferred = assets / asset_id / "norm_stats.json";
  if (fs::is_regular_file(preferred)) return preferred.string();
  std::vector<fs::path> found;
  std::error_code ec;
  if (fs::is_directory(assets)) {
    for (auto it = fs::recursive_directory_iterator(assets, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec))
      if (it->is_regular_file() && it->path().filename() == "norm_stats.json") found.push_back(it->path());
  }
  if (found.size() == 1) return found[0].string();
  if (found.size() > 1)
    throw Error("several norm_stats.json under '" + assets.string() + "' and none at " + preferred.string() +
                "; pass --norm-stats FILE");
  const fs::path top = fs::path(model_dir) / "norm_stats.json";
  if (fs::is_regular_file(top)) return top.string();
  throw Error("no norm_stats.json in '" + model_dir + "' (looked for " + preferred.string() +
              "); pass --norm-stats FILE");
}

void check_norm_stats(NormMode mode, const NormStats& s, const std::string& key, int data_dim, int model_dim) {
  if (mode == NormMode::Quantile && (!s.q01 || !s.q99))
    throw Error("norm stats '" + key + "' have no q01/q99, which pi0.5 (quantile normalization) needs");
  const int n = static_cast<int>(s.mean.size());
  if (data_dim > 0 && n < data_dim && n != 1)
    throw Error(strformat("norm stats '%s' have %d dims but the robot's %s has %d", key.c_str(), n, key.c_str(),
                          data_dim));
  if (n > model_dim)
    throw Error(strformat("norm stats '%s' have %d dims, more than the model's %d", key.c_str(), n, model_dim));
}

void normalize(NormMode mode, const NormStats& s, double* x, int d) {
  // numpy: stats[..., :d], broadcast (a length-1 vector applies to every element).
  auto at = [](const std::vector<double>& v, int i) { return v.size() == 1 ? v[0] : v[i]; };
  for (int i = 0; i < d; ++i) {
    if (mode == NormMode::ZScore) {
      x[i] = (x[i] - at(s.mean, i)) / (at(s.std, i) + 1e-6);
    } else {
      const double q01 = at(*s.q01, i), q99 = at(*s.q99, i);
      x[i] = (x[i] - q01) / (q99 - q01 + 1e-6) * 2.0 - 1.0;
    }
  }
}

void unnormalize(NormMode mode, const NormStats& s, double* x, int d, bool x_f32) {
  const int n = static_cast<int>(s.mean.size());
  for (int i = 0; i < d; ++i) {
    if (mode == NormMode::ZScore) {
      const double mean = i < n ? s.mean[i] : 0.0, std = i < n ? s.std[i] : 1.0;
      x[i] = x[i] * (std + 1e-6) + mean;
    } else if (i < n) {
      const double q01 = (*s.q01)[i], q99 = (*s.q99)[i];
      const double half = x_f32 ? static_cast<double>((static_cast<float>(x[i]) + 1.0f) / 2.0f) : (x[i] + 1.0) / 2.0;
      x[i] = half * (q99 - q01 + 1e-6) + q01;
    }
  }
}

}  // namespace pirt
