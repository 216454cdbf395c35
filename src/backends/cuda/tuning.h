// GEMM tuning on the CUDA backend (`pirt tune`): which GEMM shapes a call runs, the tuned table the
// backend uses, and the tuner that times each shape's candidates. A plain C++ header (no CUDA types).
//
// - CudaBackend::linear() adds the key of every GEMM it sees to the installed GemmShapeLog (under
//   graphs: during the capture, i.e. the first call of a shape), and looks the key up in its
//   TuningTable: a "small:" row picks our small-M kernel with that configuration, an "lt:" row sends
//   the GEMM to cuBLASLt with that algorithm; no row: the built-in choice (the small kernel where it
//   applies, else cuBLASLt's first heuristic answer).
// - The table comes from CudaOptions::tuning_file, else from the files of bench/tuning/ compiled
//   into the program, taking the rows whose gpu column equals the GPU's name.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"
#include "io/tuning_file.h"

namespace pirt::cuda {

// The key of out = ep(x . w^T + bias) + residual as linear() and LtGemm see it.
GemmKey gemm_key(int64_t m, int64_t n, int64_t k, DType x, DType w, DType out, bool tf32, bool has_bias,
                 DType bias, bool gelu, bool has_res, DType res);

// The distinct GEMM keys seen while installed, in first-seen order.
class GemmShapeLog {
 public:
  void add(const GemmKey& k);
  std::vector<GemmKey> keys() const;
  int count(const GemmKey& k) const;  // how many times add() saw it

 private:
  mutable std::mutex mu_;
  std::unordered_map<GemmKey, int, GemmKeyHash> seen_;
  std::vector<GemmKey> order_;
};
GemmShapeLog* gemm_shape_log();            // the installed log, or null
void set_gemm_shape_log(GemmShapeLog* l);  // null uninstalls

// The files of bench/tuning/ as compiled in: {file name, CSV text}.
const std::vector<std::pair<std::string, std::string>>& shipped_tuning_tables();

// The table for the GPU named `gpu`: from `file` if given ("none": no table), else from the
// shipped files. Where there is none for this GPU, says so once per process on stderr and returns
// an empty table. Throws Error for a malformed file.
std::shared_ptr<const TuningTable> load_gpu_tuning(const std::string& file, const std::string& gpu);

// The small-kernel configuration of a "small:" algorithm (bn, splits), or {0, 0}.
struct SmallConfig {
  int bn = 0, splits = 0;
};
SmallConfig small_config(const GemmAlgorithm& a);

std::string cuda_gpu_name(int device);

struct TuneOptions {
  int device = 0;
  double pool_mb = 512;     // weights rotate through at least this much memory (> L2), so they come from HBM
  int lt_candidates = 32;   // cuBLASLt heuristic answers to time per shape
  bool small = true;        // time our small-M kernel's configurations where it applies
  bool lt = true;           // time cuBLASLt's candidates
  int repeats = 7;          // timed graph replays per candidate (the median is kept)
};

struct TuneReport {
  GemmKey key;
  TuningRow best;
  std::vector<TuningRow> extra;  // rows that must go with `best` (an unfused product's own key)
  double default_us = 0;    // the built-in choice without a table (small default plan or heuristic #1)
  std::string default_algorithm;
  int candidates = 0, rejected = 0;  // timed; rejected (wrong results or launch failure)
};

// Times every candidate of every key on the device and returns the fastest of each. `log` gets one
// line per key.
std::vector<TuneReport> tune_gemms(const std::vector<GemmKey>& keys, const TuneOptions& opt,
                                   const std::function<void(const std::string&)>& log);

}  // namespace pirt::cuda
