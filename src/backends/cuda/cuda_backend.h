// The CUDA backend (src/ops/ops.h on an NVIDIA GPU). A plain C++ header: the model never sees CUDA.
#pragma once

#include <memory>
#include <string>

#include "ops/ops.h"

namespace pirt {

struct CudaOptions {
  int device = 0;
  bool graphs = true;          // capture Backend::run() once per key and replay it
  bool own_small_gemm = true;  // our weight-streaming GEMM for M <= 64 instead of cuBLASLt
  std::string tuning_file;     // per-shape GEMM algorithms (issue 4); empty: the shipped file for this GPU
};

// True when a CUDA device is present and usable (false, not an error, on machines without one).
bool cuda_device_present();
// Throws Error when no device is present.
std::unique_ptr<Backend> make_cuda_backend(const CudaOptions& opt);

}  // namespace pirt
