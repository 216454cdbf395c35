// The CUPTI side of profiler.h: callbacks on kernel launches and graph nodes (for stage labels),
// activity buffers (for kernel times), and the attribution of kernels to stages.
#include "backends/cuda/profiler.h"

#include <cupti.h>
#include <cxxabi.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>

#include "core/error.h"

namespace pirt::cuda {
namespace {

#define CUPTI_CALL(x)                                                                       \
  do {                                                                                      \
    const CUptiResult r_ = (x);                                                             \
    if (r_ != CUPTI_SUCCESS) {                                                              \
      const char* s_ = nullptr;                                                             \
      cuptiGetResultString(r_, &s_);                                                        \
      ::pirt::throw_error(::pirt::strformat("CUPTI: %s failed: %s", #x, s_ ? s_ : "?")); \
    }                                                                                       \
  } while (0)

struct Launch {
  int stage;
  std::string symbol;  // mangled, as the launch API saw it ("" when unknown)
};

struct RawKernel {
  ProfiledKernel k;
  std::string mangled;
};

struct State {
  std::mutex mu;
  std::vector<std::string> stages{"(setup)"};
  std::map<std::string, int> stage_index{{"(setup)", 0}};
  int stage = 0;
  std::unordered_map<uint32_t, int> corr_stage;  // launch API correlation id -> stage
  std::unordered_map<uint64_t, int> node_stage;  // graph node id -> stage
  std::vector<Launch> launches;                  // every launch, in order
  std::vector<RawKernel> kernels;
  std::vector<ProfiledCopy> copies;
  size_t dropped = 0;
  CUpti_SubscriberHandle sub = nullptr;
};

State* g_state = nullptr;
thread_local int t_runtime_launch_depth = 0;

const CUpti_CallbackId kRuntimeLaunches[] = {
    CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernel_v7000,          CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernel_ptsz_v7000,
    CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernelExC_v11060,      CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernelExC_ptsz_v11060,
    CUPTI_RUNTIME_TRACE_CBID_cudaLaunchCooperativeKernel_v9000,
    CUPTI_RUNTIME_TRACE_CBID_cudaLaunchCooperativeKernel_ptsz_v9000,
};
const CUpti_CallbackId kDriverLaunches[] = {
    CUPTI_DRIVER_TRACE_CBID_cuLaunchKernel,           CUPTI_DRIVER_TRACE_CBID_cuLaunchKernel_ptsz,
    CUPTI_DRIVER_TRACE_CBID_cuLaunchKernelEx,         CUPTI_DRIVER_TRACE_CBID_cuLaunchKernelEx_ptsz,
    CUPTI_DRIVER_TRACE_CBID_cuLaunchCooperativeKernel, CUPTI_DRIVER_TRACE_CBID_cuLaunchCooperativeKernel_ptsz,
    CUPTI_DRIVER_TRACE_CBID_cuLaunch,                 CUPTI_DRIVER_TRACE_CBID_cuLaunchGrid,
    CUPTI_DRIVER_TRACE_CBID_cuLaunchGridAsync,
};

void on_stage(const std::string& name) {
  State* s = g_state;
  if (!s) return;
  std::lock_guard<std::mutex> lock(s->mu);
  auto it = s->stage_index.find(name);
  if (it == s->stage_index.end()) {
    it = s->stage_index.emplace(name, static_cast<int>(s->stages.size())).first;
    s->stages.push_back(name);
  }
  s->stage = it->second;
}

void CUPTIAPI on_callback(void*, CUpti_CallbackDomain domain, CUpti_CallbackId cbid, const void* data) {
  State* s = g_state;
  if (!s) return;
  if (domain == CUPTI_CB_DOMAIN_RUNTIME_API || domain == CUPTI_CB_DOMAIN_DRIVER_API) {
    const auto* cb = static_cast<const CUpti_CallbackData*>(data);
    const bool runtime = domain == CUPTI_CB_DOMAIN_RUNTIME_API;
    if (cb->callbackSite == CUPTI_API_EXIT) {
      if (runtime) --t_runtime_launch_depth;
      return;
    }
    std::lock_guard<std::mutex> lock(s->mu);
    s->corr_stage[cb->correlationId] = s->stage;
    // A runtime launch calls the driver: count the launch once.
    if (runtime || t_runtime_launch_depth == 0)
      s->launches.push_back({s->stage, cb->symbolName ? cb->symbolName : ""});
    if (runtime) ++t_runtime_launch_depth;
  } else if (domain == CUPTI_CB_DOMAIN_RESOURCE) {
    const auto* rd = static_cast<const CUpti_ResourceData*>(data);
    const auto* gd = static_cast<const CUpti_GraphData*>(rd->resourceDescriptor);
    if (!gd || !gd->node) return;
    uint64_t id = 0;
    if (cuptiGetGraphNodeId(gd->node, &id) != CUPTI_SUCCESS) return;
    std::lock_guard<std::mutex> lock(s->mu);
    if (cbid == CUPTI_CBID_RESOURCE_GRAPHNODE_CREATED) {
      s->node_stage[id] = s->stage;
    } else if (cbid == CUPTI_CBID_RESOURCE_GRAPHNODE_CLONED && gd->originalNode) {
      uint64_t orig = 0;
      if (cuptiGetGraphNodeId(gd->originalNode, &orig) != CUPTI_SUCCESS) return;
      auto it = s->node_stage.find(orig);
      if (it != s->node_stage.end()) s->node_stage[id] = it->second;
    }
  }
}

constexpr size_t kBufferBytes = 16u << 20;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = *buffer ? kBufferBytes : 0;
  *max_records = 0;
}

std::string demangle(const char* name) {
  if (!name) return "?";
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string s = status == 0 && d ? d : name;
  std::free(d);
  // Drop the parameter list and the namespaces that every kernel of ours has.
  if (status == 0) {
    int depth = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '<') ++depth;
      if (s[i] == '>') --depth;
      if (s[i] == '(' && depth == 0 && s.compare(i, 21, "(anonymous namespace)") != 0) {
        s.resize(i);
        break;
      }
    }
    for (const char* junk : {"(anonymous namespace)::", "pirt::cuda::", "void "}) {
      size_t p;
      while ((p = s.find(junk)) != std::string::npos) s.erase(p, std::strlen(junk));
    }
  }
  return s;
}

const char* copy_kind(uint8_t kind) {
  switch (kind) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD: return "HtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH: return "DtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD: return "DtoD";
    default: return "memcpy";
  }
}

void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t* buffer, size_t size, size_t valid) {
  (void)size;
  State* s = g_state;
  if (s) {
    std::lock_guard<std::mutex> lock(s->mu);
    CUpti_Activity* rec = nullptr;
    while (cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
      if (rec->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || rec->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
        const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(rec);
        RawKernel r;
        r.mangled = k->name ? k->name : "";
        r.k.name = demangle(k->name);
        r.k.start_ns = k->start;
        r.k.end_ns = k->end;
        r.k.grid[0] = k->gridX, r.k.grid[1] = k->gridY, r.k.grid[2] = k->gridZ;
        r.k.block[0] = k->blockX, r.k.block[1] = k->blockY, r.k.block[2] = k->blockZ;
        r.k.shared_bytes = k->staticSharedMemory + k->dynamicSharedMemory;
        r.k.correlation = k->correlationId;
        r.k.graph_node = k->graphNodeId;
        s->kernels.push_back(std::move(r));
      } else if (rec->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(rec);
        s->copies.push_back({copy_kind(m->copyKind), m->start, m->end, m->bytes});
      } else if (rec->kind == CUPTI_ACTIVITY_KIND_MEMSET) {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(rec);
        s->copies.push_back({"memset", m->start, m->end, m->bytes});
      }
    }
    size_t dropped = 0;
    if (cuptiActivityGetNumDroppedRecords(ctx, stream, &dropped) == CUPTI_SUCCESS) s->dropped += dropped;
  }
  std::free(buffer);
}

const CUpti_ActivityKind kKinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY,
                                     CUPTI_ACTIVITY_KIND_MEMSET};

}  // namespace

std::unique_ptr<Profiler> Profiler::start() {
  if (g_state) throw_error("a profiler is already active");
  auto state = std::make_unique<State>();
  g_state = state.get();
  try {
    CUPTI_CALL(cuptiSubscribe(&state->sub, on_callback, nullptr));
    for (CUpti_CallbackId id : kRuntimeLaunches) CUPTI_CALL(cuptiEnableCallback(1, state->sub, CUPTI_CB_DOMAIN_RUNTIME_API, id));
    for (CUpti_CallbackId id : kDriverLaunches) CUPTI_CALL(cuptiEnableCallback(1, state->sub, CUPTI_CB_DOMAIN_DRIVER_API, id));
    CUPTI_CALL(cuptiEnableCallback(1, state->sub, CUPTI_CB_DOMAIN_RESOURCE, CUPTI_CBID_RESOURCE_GRAPHNODE_CREATED));
    CUPTI_CALL(cuptiEnableCallback(1, state->sub, CUPTI_CB_DOMAIN_RESOURCE, CUPTI_CBID_RESOURCE_GRAPHNODE_CLONED));
    CUPTI_CALL(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed));
    for (CUpti_ActivityKind k : kKinds) CUPTI_CALL(cuptiActivityEnable(k));
  } catch (...) {
    if (state->sub) cuptiUnsubscribe(state->sub);
    g_state = nullptr;
    throw;
  }
  state.release();
  g_stage_hook.store(on_stage, std::memory_order_release);
  return std::unique_ptr<Profiler>(new Profiler());
}

Profiler::~Profiler() {
  g_stage_hook.store(nullptr, std::memory_order_release);
  State* s = g_state;
  if (!s) return;
  cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  for (CUpti_ActivityKind k : kKinds) cuptiActivityDisable(k);
  cuptiUnsubscribe(s->sub);
  g_state = nullptr;
  delete s;
}

void Profiler::discard() {
  CUPTI_CALL(cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED));
  std::lock_guard<std::mutex> lock(g_state->mu);
  g_state->kernels.clear();
  g_state->copies.clear();
  g_state->dropped = 0;
}

ProfileData Profiler::collect() {
  CUPTI_CALL(cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED));
  State& s = *g_state;
  std::lock_guard<std::mutex> lock(s.mu);
  std::vector<RawKernel> ks = std::move(s.kernels);
  s.kernels.clear();
  std::sort(ks.begin(), ks.end(), [](const RawKernel& a, const RawKernel& b) { return a.k.start_ns < b.k.start_ns; });
  ProfileData d;
  std::vector<int> stage(ks.size(), -1);
  std::vector<size_t> graph_unmatched;
  for (size_t i = 0; i < ks.size(); ++i) {
    const ProfiledKernel& k = ks[i].k;
    if (k.graph_node) {
      auto it = s.node_stage.find(k.graph_node);
      if (it != s.node_stage.end()) {
        stage[i] = it->second;
        ++d.by_node;
      } else {
        graph_unmatched.push_back(i);
      }
      continue;
    }
    auto it = s.corr_stage.find(k.correlation);
    if (it != s.corr_stage.end()) {
      stage[i] = it->second;
      ++d.by_correlation;
    }
  }
  // Replayed kernels without a node label: zip with the launch sequence of the capture, at the
  // window whose names agree best (at most 5% disagreeing, unknown names aside).
  const size_t n = graph_unmatched.size();
  if (n > 0 && s.launches.size() >= n) {
    size_t best_at = 0, best_bad = n + 1;
    for (size_t at = 0; at + n <= s.launches.size(); ++at) {
      size_t bad = 0;
      for (size_t j = 0; j < n && bad < best_bad; ++j) {
        const std::string& a = s.launches[at + j].symbol;
        const std::string& b = ks[graph_unmatched[j]].mangled;
        if (!a.empty() && !b.empty() && a != b) ++bad;
      }
      if (bad <= best_bad) {  // ties: the latest capture wins
        best_bad = bad;
        best_at = at;
      }
    }
    if (best_bad * 20 <= n) {
      for (size_t j = 0; j < n; ++j) stage[graph_unmatched[j]] = s.launches[best_at + j].stage;
      d.by_order = n;
    }
  }
  for (size_t i = 0; i < ks.size(); ++i) {
    ProfiledKernel k = std::move(ks[i].k);
    if (stage[i] >= 0) {
      k.stage = s.stages[stage[i]];
    } else {
      k.stage = "?";
      ++d.unattributed;
    }
    d.kernels.push_back(std::move(k));
  }
  d.copies = std::move(s.copies);
  s.copies.clear();
  std::sort(d.copies.begin(), d.copies.end(),
            [](const ProfiledCopy& a, const ProfiledCopy& b) { return a.start_ns < b.start_ns; });
  d.dropped = s.dropped;
  s.dropped = 0;
  return d;
}

}  // namespace pirt::cuda
