// The CUDA backend (src/ops/ops.h on an NVIDIA GPU). A plain C++ header: the model never sees CUDA.
//
// Memory: alloc() and upload() bump-allocate from an arena of large cudaMalloc slabs (nothing is
// freed before the backend dies); memory_peak() is every byte taken from the device, weights and
// workspaces included. Execution: one stream; run(key, record) captures `record` into a CUDA graph
// the first time it sees `key` and replays the graph afterwards. While a graph is being captured,
// to_device / to_host are errors: copy inputs in before run() and results out after it.
#pragma once

#include <memory>
#include <string>

#include "ops/ops.h"

namespace pirt {

struct CudaOptions {
  int device = 0;
  bool graphs = true;          // capture Backend::run() once per key and replay it
  // Our weight-streaming GEMM for M <= 64 (sm_90a) where the tuning table picked it (cuBLASLt
  // otherwise); force_small_gemm uses it for every shape it supports, whatever the table says.
  bool own_small_gemm = true;
  bool force_small_gemm = false;
  // The fused sequences (Backend::linear_qkv_rope, linear_residual_rms_norm) through our small-M
  // GEMM in partials mode, the split sums added inside the RoPE / RMSNorm kernel. Off by default:
  // on an H100 it measured even with cuBLASLt plus separate kernels (bench/RESULTS.md).
  bool fused_small_gemm = false;
  // The action expert's block tail (after attention: output projection, norm, GeGLU MLP, norm, the
  // next layer's QKV + RoPE) as one persistent kernel (sm_90a build on sm_90; ops.h gemma_block_tail).
  // On an H100 it is 6% faster end to end than the separate kernels (bench/RESULTS.md, session 4).
  bool block_kernel = true;
  bool fast_attention = true;  // the flash kernel; false: a simple one-warp-per-row kernel (debugging)
  // Attention over one KV head of 256 on wgmma + TMA (sm_90a build on sm_90; attention_wgmma.cu):
  // the prefix, and the action steps with their keys split over a cluster; false: the mma.sync
  // flash and split kernels.
  bool wgmma_attention = true;
  // The boundary between two flow steps (Euler update, the next action embedding and first norm) as
  // one persistent kernel (ops.h action_step; action_step.cu); false: the ops one after another.
  bool step_kernel = true;
  // The action steps' attention (wgmma split kernel) and block tail kernels chained by programmatic
  // dependent launch (sm_90a): a block tail starts on the SMs the attention leaves idle and issues its
  // first weights before it waits; the next attention launches once the tail's last phase (the QKV)
  // starts. Results are identical either way; 0.5-0.7% end to end on an H100 (bench/RESULTS.md, session 8).
  bool step_pdl = true;
  bool attention_clusters = true;  // key splits merged in a thread-block cluster; false: a merge kernel
  // Programmatic dependent launch of our kernels (sm_90+): each may start during the tail of the one
  // before. Off by default: with cuBLASLt between them it cost 1-4% end to end (bench/RESULTS.md).
  bool pdl = false;
  std::string tuning_file;     // per-shape GEMM algorithms (issue 4); empty: the shipped file for this GPU
};

// True when a CUDA device is present and usable (false, not an error, on machines without one).
bool cuda_device_present();
// Throws Error when no device is present.
std::unique_ptr<Backend> make_cuda_backend(const CudaOptions& opt);

}  // namespace pirt
