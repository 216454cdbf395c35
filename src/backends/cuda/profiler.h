// A kernel profiler for one call of the engine (`pirt profile`), built on CUPTI. A plain C++ header:
// no CUDA or CUPTI types, so that tools and cuda_backend.cc include it freely.
//
// How kernels get their stage: the model calls Backend::stage("siglip" | "prefix" | "step N") at
// each stage boundary, and CudaBackend::stage() forwards the label here (profiler_stage()). While a
// Profiler is active:
// - every kernel launch (runtime and driver API, cuBLASLt's included) is recorded with the current
//   label: by its correlation id (eager launches, --no-graphs), in launch order (the sequence of a
//   graph capture), and by graph node id (CUPTI reports each node created during capture, and each
//   node cloned from it when the graph is instantiated);
// - CUPTI's activity records (CONCURRENT_KERNEL, which includes the kernels of a graph replay) give
//   each kernel's start, end, grid and block. A replayed kernel takes the label of its graph node;
//   failing that, the replay's kernels (sorted by start) are zipped with the captured launch sequence
//   where the names match; an eager kernel takes the label of its launch's correlation id.
// The Profiler must exist before the engine captures its graphs (create it first).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pirt::cuda {

// The stage hook that CudaBackend::stage() calls; set while a Profiler is active.
using StageHook = void (*)(const std::string& name);
inline std::atomic<StageHook> g_stage_hook{nullptr};
inline void profiler_stage(const std::string& name) {
  if (StageHook f = g_stage_hook.load(std::memory_order_acquire)) f(name);
}

struct ProfiledKernel {
  std::string name;   // demangled
  std::string stage;  // "siglip", "prefix", "step 3"; "?" when it could not be attributed
  uint64_t start_ns = 0, end_ns = 0;
  int grid[3] = {0, 0, 0}, block[3] = {0, 0, 0};
  int shared_bytes = 0;  // static + dynamic
  uint32_t correlation = 0;
  uint64_t graph_node = 0;  // 0: not launched from a graph
};

struct ProfiledCopy {
  std::string kind;  // "HtoD", "DtoH", "DtoD", "memset", ...
  uint64_t start_ns = 0, end_ns = 0, bytes = 0;
};

struct ProfileData {
  std::vector<ProfiledKernel> kernels;  // sorted by start
  std::vector<ProfiledCopy> copies;     // sorted by start
  size_t dropped = 0;                   // records CUPTI dropped (0 when all were kept)
  // How the kernels were attributed: counts by graph node, by launch order, by correlation id.
  size_t by_node = 0, by_order = 0, by_correlation = 0, unattributed = 0;
};

class Profiler {
 public:
  // Subscribes to CUPTI and enables kernel and memcpy activity. Throws Error when CUPTI is not
  // usable here or another Profiler is active.
  static std::unique_ptr<Profiler> start();
  ~Profiler();
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;

  // Drops the activity recorded so far (earlier calls), keeping what was learnt about graph nodes
  // and launches. Call with the device idle.
  void discard();
  // Flushes CUPTI and returns the activity since the last discard(), each kernel with its stage.
  // Call with the device idle (after the call's results were copied out).
  ProfileData collect();

 private:
  Profiler() = default;
};

}  // namespace pirt::cuda
