// The GEMM tuning table (`pirt tune` writes it; bench/tuning/<gpu>.csv ships one per GPU): for each
// GEMM shape that a call runs, the fastest algorithm measured on one GPU. CSV with a header line:
//
//   gpu,m,n,k,layout,epilogue,algorithm,us,tflops
//   NVIDIA H100 80GB HBM3,51,2560,1024,bf16.bf16.bf16,none,"small:cw=2,wk=4,splits=4",9.81,27.2
//
// The GEMM is row-major out[m,n] = epilogue(x[m,k] . w[n,k]^T). layout: the dtypes of x, w and out
// ("bf16", "f32", "f16"), dot-separated, with "+tf32" when f32 inputs may use TF32. epilogue: "none"
// or '+'-joined parts in this order: "bias_<dtype>", "gelu", "res_<dtype>" (residual added after).
// algorithm: "small:cw=C,wk=W[,splits=S]" (our weight-streaming kernel; splits is informational)
// or "lt:id=..,tile=..,stages=..,splitk=..,red=..,swizzle=..,custom=..,cluster=..,inner=.." (a
// cuBLASLt algorithm by its config attributes). Fields holding commas are quoted ("..."), as CSV does.
// us and tflops are what `pirt tune` measured (informational).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"

namespace pirt {

// What identifies a GEMM for tuning (everything the kernel choice depends on except pointers).
struct GemmKey {
  int64_t m = 0, n = 0, k = 0;
  DType x = DType::BF16, w = DType::BF16, out = DType::BF16;
  bool tf32 = false;
  bool has_bias = false;
  DType bias = DType::F32;
  bool gelu = false;
  bool has_res = false;
  DType res = DType::BF16;

  std::string layout() const;    // "bf16.bf16.bf16", "f32.f32.f32+tf32"
  std::string epilogue() const;  // "none", "bias_f32+gelu", "res_bf16"
  std::string str() const;       // "m=51 n=2560 k=1024 bf16.bf16.bf16 none"
  bool operator==(const GemmKey& o) const;
};

struct GemmKeyHash {
  size_t operator()(const GemmKey& k) const;
};

// A parsed `algorithm` field: kind ("small" or "lt") and its integer parameters.
struct GemmAlgorithm {
  std::string kind;
  std::map<std::string, int64_t> params;
  int64_t get(const std::string& name, int64_t def = 0) const {
    auto it = params.find(name);
    return it == params.end() ? def : it->second;
  }
  std::string str() const;  // "small:cw=2,wk=4"
};
// Throws Error (the message says what is wrong) when `text` is not a valid algorithm.
GemmAlgorithm parse_gemm_algorithm(const std::string& text);

struct TuningRow {
  std::string gpu;
  GemmKey key;
  GemmAlgorithm algorithm;
  double us = 0, tflops = 0;
};

extern const char* const kTuningHeader;  // "gpu,m,n,k,layout,epilogue,algorithm,us,tflops"

// Parses a whole tuning CSV. `source` names it in errors, which read
// "SOURCE:LINE:COLUMN: column \"m\": ..." (line and column 1-based). Empty lines and lines starting
// with '#' are skipped.
std::vector<TuningRow> parse_tuning_csv(const std::string& text, const std::string& source);
// Reads and parses a file; throws Error when it cannot be read or is malformed.
std::vector<TuningRow> read_tuning_file(const std::string& path);
// The CSV text of `rows`, header first.
std::string tuning_csv(const std::vector<TuningRow>& rows);

// The rows of one GPU, looked up by key.
class TuningTable {
 public:
  TuningTable() = default;
  // Keeps the rows whose gpu equals `gpu` (all rows when `gpu` is empty); a later row for the same
  // key replaces an earlier one.
  TuningTable(const std::vector<TuningRow>& rows, const std::string& gpu, std::string source = "");
  const TuningRow* find(const GemmKey& key) const;
  size_t size() const { return rows_.size(); }
  bool empty() const { return rows_.empty(); }
  const std::string& source() const { return source_; }

 private:
  std::unordered_map<GemmKey, TuningRow, GemmKeyHash> rows_;
  std::string source_;
};

}  // namespace pirt
