// norm_stats.json (openpi's normalize.py) and the Normalize / Unnormalize transforms (spec 7.2).
// All arithmetic is in double, as numpy does with the float64 statistics.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace pirt {

struct NormStats {
  std::vector<double> mean, std;
  std::optional<std::vector<double>> q01, q99;  // null in older files
};

// {"norm_stats": {"state": {...}, "actions": {...}}}; keys other than state/actions are kept too.
using NormStatsMap = std::map<std::string, NormStats>;

NormStatsMap parse_norm_stats(const std::string& json_text, const std::string& what);
NormStatsMap load_norm_stats(const std::string& path);

// openpi's asset id of a robot's norm stats: libero -> "physical-intelligence/libero",
// droid -> "droid", aloha -> "trossen".
// Finds <model_dir>/assets/<asset_id>/norm_stats.json, else the only norm_stats.json under
// <model_dir>/assets, else <model_dir>/norm_stats.json; throws Error naming what was tried.
std::string find_norm_stats(const std::string& model_dir, const std::string& asset_id);

enum class NormMode { ZScore, Quantile };

// Normalize (x has d dims; stats are truncated to d, and must have at least d unless 1).
// z-score: (x - mean) / (std + 1e-6); quantile: (x - q01) / (q99 - q01 + 1e-6) * 2 - 1.
void normalize(NormMode mode, const NormStats& s, double* x, int d);
// Unnormalize one row of d dims. z-score: stats padded with mean 0 / std 1;
// quantile: only the first len(q01) dims are touched.
// `x_f32`: x holds float32 values (the model's actions). numpy then computes the quantile form's
// (x + 1.0) / 2.0 in float32 (a Python scalar does not promote), and only the rest in float64.
void unnormalize(NormMode mode, const NormStats& s, double* x, int d, bool x_f32 = false);

// Throws Error if the stats cannot be used in this mode for vectors of `d` dims (quantiles
// missing, lengths that numpy would not broadcast).
void check_norm_stats(NormMode mode, const NormStats& s, const std::string& key, int data_dim, int model_dim);

}  // namespace pirt
