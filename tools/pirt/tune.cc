// pirt tune: record the GEMM shapes of one call, time each shape's candidate algorithms on this GPU
// and write the fastest as a tuning table (src/io/tuning_file.h, bench/tuning/).
#include <cstdio>
#include <fstream>

#include "args.h"
#include "commands.h"
#include "core/error.h"
#include "io/tuning_file.h"
#ifdef PIRT_HAVE_CUDA
#include "backends/cuda/tuning.h"
#endif

namespace pirt {
namespace {

std::set<std::string> with_tune_flags() {
  std::set<std::string> f = kEngineFlags;
  f.insert({"--no-small", "--no-lt"});
  return f;
}

}  // namespace

int cmd_tune(int argc, char** argv) {
  const Args a(argc, argv,
               {"--model", "--cameras", "--absent", "--prompt-len", "--horizon", "--steps", "--batch", "--out",
                "--merge", "--candidates", "--pool-mb", "--repeats", "--tuning", "--device"},
               with_tune_flags());
  if (a.help()) {
    std::printf(
        "usage: pirt tune --out FILE [options]\n"
        "Runs one call of the model, records every GEMM shape it issues, times each shape's candidates on\n"
        "this GPU (our small-M kernel in each configuration where it applies, cuBLASLt's heuristic\n"
        "answers), with weights rotating through more memory than the L2 holds, checks each result\n"
        "against an fp32 reference, and writes the fastest per shape as CSV:\n"
        "  %s\n"
        "The engine loads such a file (--tuning FILE, or bench/tuning/*.csv compiled in) when its gpu\n"
        "column is this GPU's name.\n"
        "  --model pi0|pi05|tiny|DIR  the model whose shapes to tune (default pi0)\n"
        "  --cameras N, --absent N, --prompt-len N, --horizon N, --steps N, --batch N   the call's shape\n"
        "  --out FILE               the table to write\n"
        "  --merge FILE             start from this table's rows (same GPU and shape: replaced)\n"
        "  --candidates N           cuBLASLt heuristic answers to time per shape (default 32)\n"
        "  --pool-mb N              weights rotate through at least N MB (default 512)\n"
        "  --repeats N              timed replays per candidate, the median is kept (default 7)\n"
        "  --no-small / --no-lt     leave out our small-M kernel / cuBLASLt\n"
        "%s",
        kTuningHeader, kEngineFlagsHelp);
    return 0;
  }
#ifndef PIRT_HAVE_CUDA
  throw_error("this build of pirt has no CUDA backend; tune runs on a GPU");
#else
  EngineOptions opt = engine_options(a);
  opt.device = "cuda";
  const std::string model = a.str("--model", "pi0"), out = a.required("--out");
  const CallShape shape = call_shape(a);
  const int cameras = shape.cameras, absent = shape.absent, steps = shape.steps, batch = shape.batch;
  const int prompt_len = shape.prompt_len;
  opt.horizon = shape.horizon;
  std::vector<TuningRow> rows;
  if (a.has("--merge")) rows = read_tuning_file(a.str("--merge"));

  // 1. The shapes: one call with the shape log installed (graph capture sees every GEMM).
  cuda::GemmShapeLog log;
  {
    std::unique_ptr<Engine> engine = load_model(model, opt);
    const ModelInputs in = synthetic_inputs(engine->config(), batch, cameras, prompt_len, 0);
    cuda::set_gemm_shape_log(&log);
    try {
      engine->sample_actions(in, steps, 1);
    } catch (...) {
      cuda::set_gemm_shape_log(nullptr);
      throw;
    }
    cuda::set_gemm_shape_log(nullptr);
    std::printf("model %s, batch %d, %d cameras + %d absent, %d prompt tokens, %d steps: %zu GEMM shapes\n",
                engine->config().name().c_str(), batch, cameras, absent, prompt_len, steps, log.keys().size());
    std::fflush(stdout);
  }  // the engine's memory goes back before timing

  // 2. Time the candidates.
  cuda::TuneOptions t;
  t.lt_candidates = static_cast<int>(a.integer("--candidates", 32, 1, 1024));
  t.pool_mb = static_cast<double>(a.integer("--pool-mb", 512, 1, 1 << 20));
  t.repeats = static_cast<int>(a.integer("--repeats", 7, 1, 1000));
  t.small = !a.flag("--no-small");
  t.lt = !a.flag("--no-lt");
  // Shapes the merged table already has for this GPU are kept as they are.
  const std::string gpu = cuda::cuda_gpu_name(0);
  std::vector<GemmKey> keys;
  for (const GemmKey& k : log.keys()) {
    bool known = false;
    for (const TuningRow& r : rows) known = known || (r.gpu == gpu && r.key == k);
    if (!known) keys.push_back(k);
  }
  if (keys.size() < log.keys().size())
    std::printf("%zu of them already in %s: kept\n", log.keys().size() - keys.size(), a.str("--merge").c_str());
  const std::vector<cuda::TuneReport> reports = cuda::tune_gemms(keys, t, [](const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  });

  // 3. Merge and write; the saving per call that the table predicts.
  double before = 0, after = 0;
  auto put = [&rows](const TuningRow& r) {
    for (TuningRow& old : rows)
      if (old.gpu == r.gpu && old.key == r.key) {
        old = r;
        return;
      }
    rows.push_back(r);
  };
  for (const cuda::TuneReport& r : reports) {
    put(r.best);
    for (const TuningRow& e : r.extra) put(e);
    const int n = log.count(r.key);
    if (r.default_us > 0) {
      before += n * r.default_us;
      after += n * r.best.us;
    }
  }
  std::ofstream f(out);
  if (!f) throw_error("cannot write " + out);
  f << tuning_csv(rows);
  if (!f) throw_error("cannot write " + out);
  std::printf("wrote %s: %zu rows (%zu shapes tuned now)\n", out.c_str(), rows.size(), reports.size());
  std::printf("GEMM time per call, summed over the shapes' calls (isolated, weights from HBM): built-in choice "
              "%.3f ms, tuned %.3f ms (%.1f%% less)\n",
              before / 1000, after / 1000, before > 0 ? 100.0 * (1 - after / before) : 0.0);
  return 0;
#endif
}

}  // namespace pirt
