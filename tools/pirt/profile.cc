// pirt profile: one call's GPU time by stage (SigLIP, the prefix, each action step) and by kernel,
// measured with CUPTI (src/backends/cuda/profiler.h), and a Chrome trace of it.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <tuple>

#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "core/error.h"
#include "ops/ops.h"
#ifdef PIRT_HAVE_CUPTI
#include "backends/cuda/profiler.h"
#endif

namespace pirt {

#ifdef PIRT_HAVE_CUPTI
namespace {

using cuda::ProfiledKernel;

enum class Kind { Gemm, Attention, Other };

Kind kind_of(const std::string& name) {
  std::string s = name;
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* g : {"gemm", "nvjet", "xmma", "cutlass", "splitk", "matmul"})
    if (s.find(g) != std::string::npos) return Kind::Gemm;
  for (const char* at : {"attention", "flash", "merge_kernel"})
    if (s.find(at) != std::string::npos) return Kind::Attention;
  return Kind::Other;
}

struct Totals {
  int kernels = 0;
  uint64_t busy = 0, gemm = 0, attention = 0;  // ns
  uint64_t first = UINT64_MAX, last = 0;
  void add(const ProfiledKernel& k) {
    const uint64_t d = k.end_ns - k.start_ns;
    ++kernels;
    busy += d;
    const Kind kind = kind_of(k.name);
    if (kind == Kind::Gemm) gemm += d;
    if (kind == Kind::Attention) attention += d;
    first = std::min(first, k.start_ns);
    last = std::max(last, k.end_ns);
  }
  double span_ms() const { return kernels ? (last - first) / 1e6 : 0; }
};

void print_row(const char* label, const Totals& t) {
  const double span = t.span_ms();
  std::printf("%-10s %7d %10.3f %10.3f %6.1f%% %10.3f %10.3f %10.3f\n", label, t.kernels, t.busy / 1e6, span,
              span > 0 ? 100.0 * t.busy / 1e6 / span : 0.0, t.gemm / 1e6, t.attention / 1e6,
              (t.busy - t.gemm - t.attention) / 1e6);
}

std::string dims(const int d[3]) { return strformat("%d,%d,%d", d[0], d[1], d[2]); }

}  // namespace
#endif

int cmd_profile(int argc, char** argv) {
  const Args a(argc, argv,
               {"--model", "--cameras", "--absent", "--prompt-len", "--horizon", "--steps", "--batch", "--trace",
                "--top", "--warmup", "--seed", "--tuning", "--device"},
               kEngineFlags);
  if (a.help()) {
    std::printf(
        "usage: pirt profile [options]\n"
        "Profiles one call of sample_actions on the GPU with CUPTI (the kernels of the CUDA graph replay\n"
        "included): GPU time by stage (siglip, prefix, step N) and by kernel, with launch shapes, and a\n"
        "Chrome trace (chrome://tracing, ui.perfetto.dev).\n"
        "  --model pi0|pi05|tiny|DIR  default pi0\n"
        "  --cameras N, --absent N, --prompt-len N, --horizon N, --steps N, --batch N   as pirt bench\n"
        "  --trace FILE             write the Chrome trace JSON here\n"
        "  --top N                  kernels to list, by total time (default 15)\n"
        "  --warmup N               calls before the profiled one (default 2; the first captures the graph)\n"
        "%s",
        kEngineFlagsHelp);
    return 0;
  }
#ifndef PIRT_HAVE_CUPTI
  throw_error("this build of pirt has no CUDA profiler (it needs PIRT_CUDA and CUPTI)");
#else
  EngineOptions opt = engine_options(a);
  opt.device = "cuda";
  const std::string model = a.str("--model", "pi0");
  const CallShape shape = call_shape(a);
  const int cameras = shape.cameras, absent = shape.absent, steps = shape.steps, batch = shape.batch;
  const int prompt_len = shape.prompt_len;
  opt.horizon = shape.horizon;
  const int top = static_cast<int>(a.integer("--top", 15, 0, 100000));
  const int warmup = static_cast<int>(a.integer("--warmup", 2, 1, 1000));

  // The profiler first: it must see the graph being captured.
  std::unique_ptr<cuda::Profiler> prof = cuda::Profiler::start();
  std::unique_ptr<Engine> engine = load_model(model, opt);
  const ModelInputs in = synthetic_inputs(engine->config(), batch, cameras, prompt_len, a.integer("--seed", 0, 0, 1L << 40));
  for (int i = 0; i < warmup; ++i) engine->sample_actions(in, steps, 1);
  prof->discard();
  const auto t0 = std::chrono::steady_clock::now();
  engine->sample_actions(in, steps, 1);
  const double wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const cuda::ProfileData d = prof->collect();
  if (d.kernels.empty()) throw_error("CUPTI reported no kernels for the profiled call");

  // ---- by stage ----
  std::vector<std::string> order;  // stages by first kernel
  std::map<std::string, Totals> by_stage;
  Totals all;
  for (const ProfiledKernel& k : d.kernels) {
    if (!by_stage.count(k.stage)) order.push_back(k.stage);
    by_stage[k.stage].add(k);
    all.add(k);
  }
  std::printf("model     %s\ndevice    %s\nshape     batch %d, %d cameras + %d absent, %d prompt tokens, horizon %d, "
              "%d steps; %s\n",
              engine->config().name().c_str(), engine->backend().name().c_str(), batch, cameras, absent, prompt_len,
              engine->horizon(), steps, opt.graphs ? "CUDA graph replay" : "eager launches (--no-graphs)");
  std::printf("call      %.3f ms wall (host); GPU: kernels %.3f ms in a span of %.3f ms (%.1f%% busy), %d kernels\n",
              wall_ms, all.busy / 1e6, all.span_ms(), 100.0 * all.busy / 1e6 / all.span_ms(), all.kernels);
  std::printf("stages    attributed by graph node %zu, by launch order %zu, by correlation id %zu, not at all %zu%s\n\n",
              d.by_node, d.by_order, d.by_correlation, d.unattributed,
              d.dropped ? strformat(" (CUPTI dropped %zu records)", d.dropped).c_str() : "");
  std::printf("%-10s %7s %10s %10s %7s %10s %10s %10s\n", "stage", "kernels", "kernel ms", "span ms", "util",
              "gemm ms", "attn ms", "other ms");
  Totals steps_total;
  for (const std::string& s : order) {
    print_row(s.c_str(), by_stage[s]);
    if (s.rfind("step ", 0) == 0)
      for (const ProfiledKernel& k : d.kernels)
        if (k.stage == s) steps_total.add(k);
  }
  if (steps_total.kernels) print_row("all steps", steps_total);
  print_row("total", all);

  // ---- by kernel (name and launch shape) ----
  struct Group {
    uint64_t total = 0;
    int count = 0;
    std::string stages;
  };
  std::map<std::tuple<std::string, std::string, std::string>, Group> groups;
  for (const ProfiledKernel& k : d.kernels) {
    Group& g = groups[{k.name, dims(k.grid), dims(k.block)}];
    g.total += k.end_ns - k.start_ns;
    ++g.count;
    const std::string st = k.stage.rfind("step ", 0) == 0 ? "steps" : k.stage;
    if (g.stages.find(st) == std::string::npos) g.stages += (g.stages.empty() ? "" : "+") + st;
  }
  std::vector<std::pair<std::tuple<std::string, std::string, std::string>, Group>> sorted(groups.begin(), groups.end());
  std::sort(sorted.begin(), sorted.end(), [](const auto& x, const auto& y) { return x.second.total > y.second.total; });
  std::printf("\ntop kernels by total time (of %zu distinct name + launch shape)\n", sorted.size());
  std::printf("%9s %6s %6s %9s %-14s %-12s %-16s %s\n", "total ms", "%", "count", "avg us", "grid", "block", "stages",
              "kernel");
  for (int i = 0; i < top && i < static_cast<int>(sorted.size()); ++i) {
    const auto& [key, g] = sorted[i];
    std::string name = std::get<0>(key);
    if (name.size() > 90) name = name.substr(0, 87) + "...";
    std::printf("%9.3f %5.1f%% %6d %9.2f %-14s %-12s %-16s %s\n", g.total / 1e6, 100.0 * g.total / all.busy, g.count,
                g.total / 1e3 / g.count, std::get<1>(key).c_str(), std::get<2>(key).c_str(), g.stages.c_str(),
                name.c_str());
  }

  // ---- Chrome trace: stage spans, kernels, copies; ts and dur in us from the first event ----
  if (a.has("--trace")) {
    uint64_t t_first = all.first;
    for (const auto& c : d.copies) t_first = std::min(t_first, c.start_ns);
    auto us = [t_first](uint64_t ns) { return (static_cast<double>(ns) - static_cast<double>(t_first)) / 1e3; };
    nlohmann::json ev = nlohmann::json::array();
    auto meta = [&ev](int tid, const std::string& name) {
      ev.push_back({{"ph", "M"}, {"pid", 1}, {"tid", tid}, {"name", "thread_name"}, {"args", {{"name", name}}}});
      ev.push_back({{"ph", "M"}, {"pid", 1}, {"tid", tid}, {"name", "thread_sort_index"}, {"args", {{"sort_index", tid}}}});
    };
    ev.push_back({{"ph", "M"}, {"pid", 1}, {"name", "process_name"},
                  {"args", {{"name", "pirt " + engine->config().name() + " on " + engine->backend().name()}}}});
    meta(1, "stages");
    meta(2, "kernels");
    meta(3, "copies");
    for (const std::string& s : order) {
      const Totals& t = by_stage[s];
      ev.push_back({{"name", s}, {"cat", "stage"}, {"ph", "X"}, {"pid", 1}, {"tid", 1}, {"ts", us(t.first)},
                    {"dur", (t.last - t.first) / 1e3},
                    {"args", {{"kernels", t.kernels}, {"kernel_ms", t.busy / 1e6}, {"gemm_ms", t.gemm / 1e6},
                              {"attention_ms", t.attention / 1e6}}}});
    }
    for (const ProfiledKernel& k : d.kernels) {
      const Kind kind = kind_of(k.name);
      ev.push_back({{"name", k.name}, {"cat", kind == Kind::Gemm ? "gemm" : kind == Kind::Attention ? "attention" : "other"},
                    {"ph", "X"}, {"pid", 1}, {"tid", 2}, {"ts", us(k.start_ns)}, {"dur", (k.end_ns - k.start_ns) / 1e3},
                    {"args", {{"stage", k.stage}, {"grid", dims(k.grid)}, {"block", dims(k.block)},
                              {"shared_bytes", k.shared_bytes}}}});
    }
    for (const auto& c : d.copies)
      ev.push_back({{"name", c.kind}, {"cat", "copy"}, {"ph", "X"}, {"pid", 1}, {"tid", 3}, {"ts", us(c.start_ns)},
                    {"dur", (c.end_ns - c.start_ns) / 1e3}, {"args", {{"bytes", c.bytes}}}});
    const nlohmann::json j = {{"traceEvents", ev}, {"displayTimeUnit", "ms"},
                              {"otherData", {{"wall_ms", wall_ms}, {"kernel_ms", all.busy / 1e6}, {"span_ms", all.span_ms()}}}};
    std::ofstream f(a.str("--trace"));
    if (!f) throw_error("cannot write " + a.str("--trace"));
    f << j.dump() << "\n";
    std::printf("\nwrote %s (%zu events): open in ui.perfetto.dev or chrome://tracing\n", a.str("--trace").c_str(),
                ev.size());
  }
  return 0;
#endif
}

}  // namespace pirt
