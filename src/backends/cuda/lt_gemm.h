// cuBLASLt GEMMs for the CUDA backend: row-major out[M,N] = x[M,K] . w[N,K]^T with fused epilogues.
// Descriptors, layouts and the chosen algorithm are cached per shape, dtypes, epilogue and pointer
// alignment, so that a call inside graph capture does no heuristic query and no allocation.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <tuple>

#include "core/dtype.h"
#include "io/tuning_file.h"
#include "ops/ops.h"

namespace pirt::cuda {

class LtGemm {
 public:
  LtGemm(void* workspace, size_t workspace_bytes);
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  struct Call {
    const void* x;
    DType xt;
    const void* w;
    DType wt;
    void* out;
    DType ot;
    const void* bias = nullptr;  // [N]
    DType bt = DType::F32;
    const void* residual = nullptr;  // [M, N], dtype ot (C with beta = 1; may equal out)
    Epilogue ep = Epilogue::None;
    int64_t m, n, k;
    bool tf32 = false;  // F32 inputs: allow TF32 tensor cores
  };
  // False where cuBLASLt has no algorithm for this combination (nothing is launched).
  bool run(const Call& c, cudaStream_t s);
  // Per-shape algorithms (pirt tune; tuning.h). An "lt:" row for a call's key replaces the
  // heuristic's first answer. Set before the first run(); the table must outlive this object.
  void set_tuning(const TuningTable* t) { tuning_ = t; }

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool ok = false;
  };
  using Key = std::tuple<int64_t, int64_t, int64_t, int, int, int, int, int, int, int, int, int, int, int>;
  Plan& plan(const Call& c);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_;
  size_t workspace_bytes_;
  std::map<Key, Plan> plans_;
  const TuningTable* tuning_ = nullptr;
};

}  // namespace pirt::cuda
