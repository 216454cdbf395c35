// pirt bench, pirt infer, pirt make-checkpoint.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <random>

#include <nlohmann/json.hpp>

#include "args.h"
#include "bkc.h"
#include "commands.h"
#include "io/safetensors.h"
#include "model/random_weights.h"
#include "model/weight_table.h"
#include "ops/ops.h"
#include "pirt/engine.h"

namespace pirt {

EngineOptions engine_options(const Args& a) {
  EngineOptions o;
  o.device = a.str("--device", "auto");
  o.drop_padding = !a.flag("--no-drop-padding");
  o.fuse_projections = !a.flag("--no-fuse");
  o.graphs = !a.flag("--no-graphs");
  o.own_small_gemm = !a.flag("--no-small-gemm");
  o.pdl = a.flag("--pdl");
  o.fused_small_gemm = a.flag("--fused-small-gemm");
  o.block_kernel = !a.flag("--no-block-kernel");
  o.step_kernel = !a.flag("--no-step-kernel");
  o.step_pdl = !a.flag("--no-step-pdl");
  o.wgmma_attention = !a.flag("--no-wgmma-attention");
  o.tuning_file = a.str("--tuning");
  return o;
}

const char* kEngineFlagsHelp =
    "  --device auto|cpu|cuda   where to run (auto: the GPU if there is one)\n"
    "  --no-drop-padding        compute absent cameras and padding tokens instead of dropping them\n"
    "  --no-fuse                separate Q/K/V and gate/up projections\n"
    "  --no-graphs              issue every kernel instead of replaying one CUDA graph per shape\n"
    "  --no-small-gemm          cuBLASLt even where the tuning table picked our small-M GEMM\n"
    "  --pdl                    programmatic dependent launch: our kernels start during the tail of\n"
    "                           the one before (off by default: a loss on the H100)\n"
    "  --fused-small-gemm       the action expert's QKV+RoPE and output/down+residual+RMSNorm through\n"
    "                           our small-M GEMM, split sums added in the row kernel (off: even)\n"
    "  --no-block-kernel        the action expert as separate kernels, not one persistent kernel for\n"
    "                           everything after each attention through the next layer's q, k, v\n"
    "  --no-wgmma-attention     attention on the mma.sync flash / split kernels, not on wgmma\n"
    "  --no-step-kernel         the Euler update and the next step's action embedding as separate\n"
    "                           kernels, not one persistent kernel between two flow steps\n"
    "  --no-step-pdl            each action-step attention and block tail kernel waits for the one\n"
    "                           before to finish, instead of starting on the SMs it leaves idle\n"

    "  --tuning FILE|none       GEMM algorithms per shape (pirt tune); default: bench/tuning/ for this GPU\n";
const std::set<std::string> kEngineFlags = {"--no-drop-padding", "--no-fuse", "--no-graphs", "--no-small-gemm", "--pdl", "--fused-small-gemm",
                                           "--no-block-kernel", "--no-wgmma-attention", "--no-step-kernel",
                                           "--no-step-pdl"};

namespace {

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * (v.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

}  // namespace

// Synthetic model inputs of the given shape: `cameras` present, the rest absent; `prompt_len`
// valid tokens padded to the model's max_token_len.
ModelInputs synthetic_inputs(const ModelConfig& c, int batch, int cameras, int prompt_len, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  const int64_t S = c.vision.image_size, L = std::max(prompt_len, c.max_token_len);
  ModelInputs in;
  for (int cam = 0; cam < ModelConfig::kNumCameras; ++cam) {
    in.images[cam] = HostTensor(DType::F32, {batch, S, S, 3});
    in.image_masks[cam] = HostTensor(DType::BOOL, {batch});
    const bool present = cam < cameras;
    for (int64_t i = 0; i < in.images[cam].numel(); ++i) in.images[cam].ptr<float>()[i] = present ? u(rng) : -1.f;
    for (int b = 0; b < batch; ++b) in.image_masks[cam].ptr<uint8_t>()[b] = present;
  }
  in.tokenized_prompt = HostTensor(DType::I32, {batch, L});
  in.tokenized_prompt_mask = HostTensor(DType::BOOL, {batch, L});
  // Ids 4.. skip the tokenizer's special tokens (2 is BOS), where the vocabulary is big enough.
  const int32_t vocab = c.llm.vocab, bos = std::min(2, vocab - 1);
  std::uniform_int_distribution<int32_t> tok(std::min(4, vocab - 1), vocab - 1);
  for (int b = 0; b < batch; ++b)
    for (int64_t i = 0; i < L; ++i) {
      const bool valid = i < prompt_len;
      in.tokenized_prompt.ptr<int32_t>()[b * L + i] = valid ? (i == 0 ? bos : tok(rng)) : 0;
      in.tokenized_prompt_mask.ptr<uint8_t>()[b * L + i] = valid;
    }
  in.state = HostTensor(DType::F32, {batch, c.action_dim});
  for (int64_t i = 0; i < in.state.numel(); ++i) in.state.ptr<float>()[i] = u(rng);
  return in;
}

std::optional<ModelConfig> named_config(const std::string& name) {
  if (name == "pi0") return config_pi0();
  if (name == "pi05") return config_pi05();
  if (name == "tiny") return config_tiny(Arch::Pi0);
  if (name == "tiny-pi05") return config_tiny(Arch::Pi05);
  return std::nullopt;
}

// The name bench reports and --check matches for `model`: a built-in name as given; a checkpoint
// folder of a built-in architecture's exact sizes (a converted openpi pi0) by that name.
std::string bench_model_name(const std::string& model, const ModelConfig& loaded) {
  if (named_config(model)) return model;
  for (const char* n : {"pi0", "pi05", "tiny", "tiny-pi05"})
    if (named_config(n)->name() == loaded.name()) return n;
  return model;
}

std::unique_ptr<Engine> load_model(const std::string& model, const EngineOptions& opt) {
  if (const auto c = named_config(model)) return Engine::random(*c, 0, opt);
  return Engine::load(model, opt);
}

CallShape call_shape(const Args& a) {
  CallShape s;
  s.cameras = static_cast<int>(a.integer("--cameras", 3, 1, 3));
  s.absent = static_cast<int>(a.integer("--absent", 3 - s.cameras, 0, 2));
  if (s.cameras + s.absent != 3)
    throw_error(strformat("--cameras %d and --absent %d must add up to openpi's 3 camera slots", s.cameras, s.absent));
  s.prompt_len = static_cast<int>(a.integer("--prompt-len", 48, 1, 4096));
  s.horizon = static_cast<int>(a.integer("--horizon", 0, 1, 1024));
  s.steps = static_cast<int>(a.integer("--steps", 10, 1, 1000));
  s.batch = static_cast<int>(a.integer("--batch", 1, 1, 64));
  return s;
}

int cmd_bench(int argc, char** argv) {
  const Args a(argc, argv,
               {"--model", "--device", "--cameras", "--absent", "--prompt-len", "--horizon", "--steps", "--batch",
                "--iters", "--warmup", "--json", "--seed", "--check", "--tuning", "--images"},
               kEngineFlags);
  if (a.help()) {
    std::printf(
        "usage: pirt bench [options]\n"
        "Times openpi's sample_actions end to end (inputs in, actions out) and prints the latency.\n"
        "  --model pi0|pi05|tiny|tiny-pi05|DIR  a random-weight model of that architecture, or a checkpoint\n"
        "                           (default: pi0 where there is a GPU, tiny on the CPU)\n"
        "  --cameras N              cameras present, 1..3 (default 3); the others are absent\n"
        "  --absent N               absent cameras (must be 3 - cameras; for explicitness)\n"
        "  --prompt-len N           valid prompt tokens (default 48), padded to max_token_len\n"
        "  --horizon N              action horizon (default: the model's, 50)\n"
        "  --steps N                flow-matching steps (default 10)\n"
        "  --batch N                batch size (default 1)\n"
        "  --images f32|u8          image dtype fed to the engine (default f32, in [-1, 1]; u8: as the\n"
        "                           policy server feeds a robot's images, converted on the GPU)\n"
        "  --iters N                timed calls (default 50 on a GPU, 3 on the CPU)\n"
        "  --warmup N               untimed calls first (default 3 on a GPU, 1 on the CPU)\n"
        "  --json FILE              also write the figures as JSON\n"
        "  --check FILE             compare with the best-known figures (bench/bkc.json); exit 1 when slower\n"
        "                           than the stated margin\n"
        "%s",
        kEngineFlagsHelp);
    return 0;
  }
  EngineOptions opt = engine_options(a);
  const bool gpu = opt.device == "cuda" || (opt.device == "auto" && cuda_available());
  const std::string model = a.str("--model", gpu ? "pi0" : "tiny");
  const CallShape shape = call_shape(a);
  const int cameras = shape.cameras, absent = shape.absent, steps = shape.steps, batch = shape.batch;
  const int prompt_len = shape.prompt_len;
  opt.horizon = shape.horizon;
  const int iters = static_cast<int>(a.integer("--iters", gpu ? 50 : 3, 1, 100000));
  const int warmup = static_cast<int>(a.integer("--warmup", gpu ? 3 : 1, 0, 100000));

  std::unique_ptr<Engine> engine = load_model(model, opt);
  const ModelConfig& c = engine->config();
  ModelInputs in = synthetic_inputs(c, batch, cameras, prompt_len, a.integer("--seed", 0, 0, 1L << 40));
  const std::string images = a.str("--images", "f32");
  if (images != "f32" && images != "u8") throw_error("--images must be f32 or u8, not \"" + images + "\"");
  if (images == "u8")  // the same pictures as bytes: x in [-1, 1] -> round((x + 1) * 127.5)
    for (HostTensor& im : in.images) {
      HostTensor b(DType::U8, im.shape());
      for (int64_t i = 0; i < im.numel(); ++i)
        b.ptr<uint8_t>()[i] = static_cast<uint8_t>(std::lrint(std::clamp((im.ptr<float>()[i] + 1.f) * 127.5f, 0.f, 255.f)));
      im = std::move(b);
    }
  std::printf("model     %s\ndevice    %s\nload      %.2f s\nshape     batch %d, %d cameras + %d absent (%s images), "
              "%d prompt tokens, horizon %d, %d steps\n",
              c.name().c_str(), engine->backend().name().c_str(), engine->load_seconds(), batch, cameras, absent,
              images.c_str(), prompt_len, engine->horizon(), steps);
  std::fflush(stdout);

  const auto first_start = std::chrono::steady_clock::now();
  engine->sample_actions(in, steps, 1);
  const double first_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - first_start).count();
  for (int i = 1; i < warmup; ++i) engine->sample_actions(in, steps, 1);
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    HostTensor out = engine->sample_actions(in, steps, static_cast<uint64_t>(i));
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    for (int64_t k = 0; k < out.numel(); ++k)
      if (!std::isfinite(out.ptr<float>()[k])) throw_error("bench: the model produced a non-finite action");
  }
  const double mean = std::accumulate(ms.begin(), ms.end(), 0.0) / ms.size();
  const double p50 = percentile(ms, 0.5), p90 = percentile(ms, 0.9), p99 = percentile(ms, 0.99);
  const double peak_gb = engine->backend().memory_peak() / 1e9;
  std::printf("first     %.2f ms (includes planning%s)\n", first_ms, gpu && opt.graphs ? " and graph capture" : "");
  std::printf("memory    %.2f GB peak on the %s\n", peak_gb, gpu ? "GPU" : "host (backend buffers)");
  std::printf("iters     %d (min %.3f ms, max %.3f ms)\n", iters, *std::min_element(ms.begin(), ms.end()),
              *std::max_element(ms.begin(), ms.end()));
  std::printf("mean %.3f ms  p50 %.3f  p90 %.3f  p99 %.3f  (%.1f Hz)\n", mean, p50, p90, p99, 1000.0 / mean);
  if (a.has("--json")) {
    nlohmann::json j = {{"model", model},
                        {"gpu", gpu ? engine->backend().name() : ""},
                        {"config", c.name()},
                        {"device", gpu ? "cuda" : "cpu"},
                        {"backend", engine->backend().name()},
                        {"batch", batch},
                        {"cameras", cameras},
                        {"absent", absent},
                        {"prompt_len", prompt_len},
                        {"images", images},
                        {"horizon", engine->horizon()},
                        {"steps", steps},
                        {"iters", iters},
                        {"mean_ms", mean},
                        {"p50_ms", p50},
                        {"p90_ms", p90},
                        {"p99_ms", p99},
                        {"hz", 1000.0 / mean},
                        {"first_call_ms", first_ms},
                        {"load_s", engine->load_seconds()},
                        {"memory_peak_bytes", engine->backend().memory_peak()},
                        {"options",
                         {{"drop_padding", opt.drop_padding},
                          {"fuse_projections", opt.fuse_projections},
                          {"graphs", opt.graphs},
                          {"own_small_gemm", opt.own_small_gemm},
                          {"pdl", opt.pdl},
                          {"fused_small_gemm", opt.fused_small_gemm},
                          {"block_kernel", opt.block_kernel},
                          {"wgmma_attention", opt.wgmma_attention},
                          {"step_kernel", opt.step_kernel},
                          {"step_pdl", opt.step_pdl}}}};
    std::ofstream f(a.str("--json"));
    if (!f) throw_error("cannot write " + a.str("--json"));
    f << j.dump(2) << "\n";
  }
  if (a.has("--check")) {
    BenchFigures fig;
    fig.device = engine->backend().name();
    fig.model = bench_model_name(model, engine->config());
    fig.cameras = cameras;
    fig.absent = absent;
    fig.prompt_len = prompt_len;
    fig.horizon = engine->horizon();
    fig.steps = steps;
    fig.batch = batch;
    fig.images = images;
    fig.mean_ms = mean;
    const BkcVerdict v = check_bkc(a.str("--check"), fig);
    std::fprintf(v.regression ? stderr : stdout, "%s\n", v.message.c_str());
    if (v.regression) return 1;
  }
  return 0;
}

int cmd_infer(int argc, char** argv) {
  const Args a(argc, argv, {"--model", "--inputs", "--out", "--device", "--steps", "--seed", "--tuning"},
               kEngineFlags);
  if (a.help()) {
    std::printf(
        "usage: pirt infer --model DIR --inputs FILE --out FILE [options]\n"
        "Runs openpi's sample_actions on model-level inputs (a safetensors file, see DESIGN.md) and writes\n"
        "`actions` F32 [B, H, 32] in normalized space.\n"
        "  --steps N                flow-matching steps (default 10)\n"
        "  --seed S                 noise seed when the inputs have no `noise` (default 0)\n"
        "%s",
        kEngineFlagsHelp);
    return 0;
  }
  const std::string model = a.required("--model"), inputs = a.required("--inputs"), out = a.required("--out");
  const int steps = static_cast<int>(a.integer("--steps", 10, 1, 1000));
  const ModelInputs in = read_inputs(inputs);
  EngineOptions opt = engine_options(a);
  if (!in.noise.empty() && in.noise.shape().rank() == 3) opt.horizon = static_cast<int>(in.noise.shape()[1]);
  std::unique_ptr<Engine> engine = Engine::load(model, opt);
  const HostTensor actions = engine->sample_actions(in, steps, a.integer("--seed", 0, 0, 1L << 40));
  write_safetensors(out, {{"actions", actions.view()}});
  return 0;
}

int cmd_make_inputs(int argc, char** argv) {
  const Args a(argc, argv, {"--model", "--cameras", "--prompt-len", "--horizon", "--batch", "--seed", "--out"}, {});
  if (a.help()) {
    std::printf(
        "usage: pirt make-inputs --out FILE [--model pi0|pi05|tiny|tiny-pi05] [--cameras N] [--prompt-len N]\n"
        "                        [--horizon N] [--batch N] [--seed S]\n"
        "Writes the synthetic model-level inputs that `pirt bench` uses (noise included) as an inputs file\n"
        "for `pirt infer` and the PyTorch reference.\n");
    return 0;
  }
  const std::string model = a.str("--model", "pi0"), out = a.required("--out");
  const std::optional<ModelConfig> named = named_config(model);
  if (!named) throw_error("--model must be pi0, pi05, tiny or tiny-pi05, not \"" + model + "\"");
  const ModelConfig& c = *named;
  const int batch = static_cast<int>(a.integer("--batch", 1, 1, 64));
  const int horizon = static_cast<int>(a.integer("--horizon", c.action_horizon, 1, 1024));
  const uint64_t seed = static_cast<uint64_t>(a.integer("--seed", 0, 0, 1L << 40));
  ModelInputs in = synthetic_inputs(c, batch, static_cast<int>(a.integer("--cameras", 3, 1, 3)),
                                    static_cast<int>(a.integer("--prompt-len", 48, 1, 4096)), seed);
  in.noise = HostTensor(DType::F32, {batch, horizon, c.action_dim});
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<float> n(0.f, 1.f);
  for (int64_t i = 0; i < in.noise.numel(); ++i) in.noise.ptr<float>()[i] = n(rng);
  write_inputs(out, in);
  return 0;
}

int cmd_make_checkpoint(int argc, char** argv) {
  const Args a(argc, argv, {"--arch", "--seed", "--dtype", "--out"}, {});
  if (a.help()) {
    std::printf(
        "usage: pirt make-checkpoint --arch pi0|pi05|tiny|tiny-pi05 --out DIR [--seed S] [--dtype bf16|f32]\n"
        "Writes random weights in openpi's PyTorch layout (model.safetensors + config.json), scaled so that\n"
        "activations stay finite through the whole model: for tests and benchmarks without downloads.\n");
    return 0;
  }
  const std::string arch = a.required("--arch"), out = a.required("--out"), dtype = a.str("--dtype", "bf16");
  const std::optional<ModelConfig> named = named_config(arch);
  if (!named) throw_error("--arch must be pi0, pi05, tiny or tiny-pi05, not \"" + arch + "\"");
  const ModelConfig& c = *named;
  if (dtype != "bf16" && dtype != "f32") throw_error("--dtype must be bf16 or f32, not \"" + dtype + "\"");
  const uint64_t seed = static_cast<uint64_t>(a.integer("--seed", 0, 0, 1L << 40));
  const DType dt = dtype == "bf16" ? DType::BF16 : DType::F32;
  std::map<std::string, HostTensor> weights = random_weights(c, seed, dt);
  // openpi's converter also stores the action expert's LM head, which nothing uses (spec 6.2), and
  // openpi's strict loader wants it: write it (zeros) so the files load in openpi as they are.
  weights.emplace(kExpertLmHead, HostTensor(dt, {c.llm.vocab, c.expert.width}));
  write_checkpoint(out, c, weights);
  std::printf("wrote %s: %s\n", out.c_str(), c.name().c_str());
  return 0;
}

}  // namespace pirt
