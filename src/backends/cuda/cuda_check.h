// Error checks for CUDA runtime and cuBLASLt calls: a failure throws pirt::Error naming the call,
// file:line and the library's error string. Plain C++ (no device code), used by .cc and .cu files.
#pragma once

#include <cuda_runtime_api.h>

#include "core/error.h"

namespace pirt::cuda {

[[noreturn]] void throw_cuda_error(const char* what, const char* file, int line, const char* msg);

}  // namespace pirt::cuda

#define CUDA_CHECK(call)                                                          \
  do {                                                                            \
    cudaError_t err_ = (call);                                                    \
    if (err_ != cudaSuccess)                                                      \
      ::pirt::cuda::throw_cuda_error(#call, __FILE__, __LINE__,                   \
                                     cudaGetErrorString(err_));                   \
  } while (0)

// After a kernel launch: launch-configuration errors show up here (execution errors surface at
// the next synchronizing call).
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(call)                                                                   \
  do {                                                                                       \
    cublasStatus_t st_ = (call);                                                             \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                        \
      ::pirt::cuda::throw_cuda_error(#call, __FILE__, __LINE__, cublasLtGetStatusString(st_)); \
  } while (0)
