// run_serve / run_policy_infer: argument parsing and wiring of Engine, Policy, InferenceQueue and
// Server. Errors in what the user gave become one line on stderr and exit code 2.
#include <chrono>
#include <cstdio>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <vector>

#include "core/error.h"
#include "policy/policy.h"
#include "serve/cli.h"
#include "serve/inference_queue.h"
#include "serve/msgpack_numpy.h"
#include "serve/server.h"

namespace pirt {

namespace {

struct OptSpec {
  const char* name;   // "--port"
  const char* value;  // "N"; nullptr for a flag
  const char* help;
};

class Args {
 public:
  Args(std::string cmd, std::string summary, std::vector<OptSpec> specs)
      : cmd_(std::move(cmd)), summary_(std::move(summary)), specs_(std::move(specs)) {}

  // False when --help was printed.
  bool parse(int argc, char** argv) {
    // No positional arguments: a leading non-option is the program or subcommand name.
    int i = 0;
    while (i < argc && i < 2 && argv[i][0] != '-') ++i;
    for (; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        print_help();
        return false;
      }
      std::string val;
      bool has_inline = false;
      if (const size_t eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
        val = a.substr(eq + 1);
        a = a.substr(0, eq);
        has_inline = true;
      }
      const OptSpec* s = find(a);
      if (!s) throw Error("unknown argument '" + a + "' (see --help)");
      if (!s->value) {
        if (has_inline) throw Error(a + " takes no value");
        values_[a] = "1";
        continue;
      }
      if (!has_inline) {
        if (i + 1 >= argc) throw Error(a + " needs a value (" + std::string(s->value) + ")");
        val = argv[++i];
      }
      values_[a] = val;
    }
    return true;
  }
  bool has(const std::string& n) const { return values_.count(n) > 0; }
  std::string get(const std::string& n, const std::string& def = "") const {
    auto it = values_.find(n);
    return it == values_.end() ? def : it->second;
  }
  std::string required(const std::string& n) const {
    if (!has(n)) throw Error(n + " is required (see --help)");
    return get(n);
  }
  long long get_int(const std::string& n, long long def, long long lo, long long hi) const {
    if (!has(n)) return def;
    const std::string v = get(n);
    char* end = nullptr;
    errno = 0;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end || errno || x < lo || x > hi)
      throw Error(strformat("%s must be an integer in [%lld, %lld], got '%s'", n.c_str(), lo, hi, v.c_str()));
    return x;
  }
  std::optional<bool> get_tristate(const std::string& n) const {
    const std::string v = get(n, "auto");
    if (v == "auto") return std::nullopt;
    if (v == "on") return true;
    if (v == "off") return false;
    throw Error(n + " must be auto, on or off, got '" + v + "'");
  }
  const std::string& cmd() const { return cmd_; }

 private:
  const OptSpec* find(const std::string& n) const {
    for (const auto& s : specs_)
      if (n == s.name) return &s;
    return nullptr;
  }
  void print_help() const {
    std::printf("usage: %s [options]\n\n%s\n\noptions:\n", cmd_.c_str(), summary_.c_str());
    for (const auto& s : specs_) {
      std::string left = std::string("  ") + s.name + (s.value ? std::string(" ") + s.value : "");
      if (left.size() < 28) left.resize(28, ' ');
      else left += "\n" + std::string(28, ' ');
      std::printf("%s%s\n", left.c_str(), s.help);
    }
    std::printf("  --help                    this text\n");
  }

  std::string cmd_, summary_;
  std::vector<OptSpec> specs_;
  std::map<std::string, std::string> values_;
};

const std::vector<OptSpec> kPolicyOpts = {
    {"--model", "DIR", "checkpoint folder: model.safetensors, config.json, assets/<id>/norm_stats.json"},
    {"--robot", "R", "libero | droid | aloha: the request keys and transforms of openpi's configs"},
    {"--tokenizer", "PATH",
     "PaliGemma SentencePiece model (default $OPENPI_DATA_HOME or ~/.cache/openpi + "
     "/big_vision/paligemma_tokenizer.model)"},
    {"--norm-stats", "FILE", "norm_stats.json (default: found under DIR/assets)"},
    {"--device", "D", "auto | cpu | cuda (default auto)"},
    {"--horizon", "N", "action chunk length (default: the checkpoint's action_horizon)"},
    {"--steps", "N", "flow-matching steps (default 10)"},
    {"--default-prompt", "TEXT", "prompt for requests without one"},
    {"--delta-actions", "M", "auto | on | off: add the state to joint actions (auto: as openpi's config)"},
    {"--discrete-state", "M", "auto | on | off: state in the prompt (auto: pi0.5 except LIBERO)"},
    {"--seed", "S", "noise of request n comes from seed S + n (default 0)"},
    {"--same-noise", nullptr, "every request uses the noise of seed S (reproducible answers)"},
};

std::vector<OptSpec> with(std::vector<OptSpec> extra) {
  std::vector<OptSpec> all = kPolicyOpts;
  all.insert(all.end(), extra.begin(), extra.end());
  return all;
}

PolicyOptions policy_options(const Args& a) {
  PolicyOptions p;
  p.model_dir = a.required("--model");
  p.robot = robot_from_name(a.required("--robot"));
  p.tokenizer_path = a.get("--tokenizer");
  p.norm_stats_path = a.get("--norm-stats");
  p.default_prompt = a.get("--default-prompt");
  p.delta_actions = a.get_tristate("--delta-actions");
  p.discrete_state = a.get_tristate("--discrete-state");
  p.steps = static_cast<int>(a.get_int("--steps", 10, 1, 1000));
  p.seed = static_cast<uint64_t>(a.get_int("--seed", 0, 0, INT64_MAX));
  p.same_noise = a.has("--same-noise");
  return p;
}

EngineOptions engine_options(const Args& a) {
  EngineOptions e;
  e.device = a.get("--device", "auto");
  if (e.device != "auto" && e.device != "cpu" && e.device != "cuda")
    throw Error("--device must be auto, cpu or cuda, got '" + e.device + "'");
  e.horizon = static_cast<int>(a.get_int("--horizon", 0, 1, 10000));
  return e;
}

std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot read " + what + " '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

template <class F>
int guarded(const std::string& cmd, F&& f) {
  try {
    return f();
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: %s\n", cmd.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: internal error: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}

// Error messages from the policy already name what is wrong; strip a repeated "pirt serve: ".
std::unique_ptr<Engine> load(const CliHooks& hooks, const Args& a, const std::string& dir) {
  if (!hooks.load_engine) throw Error("no engine");
  return hooks.load_engine(dir, engine_options(a));
}

}  // namespace

int run_serve(int argc, char** argv, const CliHooks& hooks) {
  const std::string cmd = "pirt serve";
  return guarded(cmd, [&]() -> int {
    Args a(cmd,
           "Serves an openpi checkpoint over openpi's websocket protocol: a drop-in for openpi's\n"
           "scripts/serve_policy.py (WebsocketClientPolicy connects unchanged).",
           with({{"--port", "N", "TCP port (default 8000)"},
                 {"--host", "ADDR", "address to listen on (default 0.0.0.0)"},
                 {"--max-batch", "N", "requests of different clients run as one batch, up to N (default 8)"},
                 {"--max-message-mb", "N", "close a connection whose request frame exceeds N MiB with 1009 "
                                           "(default 256; 0: no limit, as openpi)"},
                 {"--quiet", nullptr, "no log line per request"}}));
    if (!a.parse(argc, argv)) return 0;
    PolicyOptions popt = policy_options(a);
    ServerOptions sopt;
    sopt.port = static_cast<int>(a.get_int("--port", 8000, 0, 65535));
    sopt.host = a.get("--host", "0.0.0.0");
    sopt.handle_signals = true;
    sopt.log_requests = !a.has("--quiet");
    sopt.max_message_bytes = a.get_int("--max-message-mb", 256, 0, 1 << 20) << 20;
    const int max_batch = static_cast<int>(a.get_int("--max-batch", 8, 1, 1024));
    engine_options(a);  // check --device / --horizon before the (slow) load
#if defined(__GLIBC__)
    // Requests carry images of 150 KB - 2 MB that several connection threads allocate and free.
    // glibc's default raises its mmap threshold after the first such free and then serves them
    // from per-thread arenas, whose fragmentation grew RSS by tens of MB under load. So: one arena
    // for every thread, and a fixed 1 MiB threshold, under which a request's images and decoded
    // arrays reuse the arena's freed chunks instead of mapping fresh pages and faulting them in
    // (0.5-0.9 ms a request; a 128 KiB threshold alone kept memory flat but paid those faults, a
    // 1 MiB one with per-thread arenas let RSS drift: bench/RESULTS.md, sessions 8 and 9). A fixed
    // mmap threshold also freezes glibc's trim threshold at 128 KiB, so the freed buffers at the top
    // of the heap went back to the system after each request and were faulted in again by the next
    // (ALOHA's four 640 x 480 images: decode 0.41 -> 0.02 ms, prepare 0.37 -> 0.14 ms on the CPU
    // development host; even on the H100 machine, whose faults are cheaper: session 10): keep up to 32 MB.
    mallopt(M_ARENA_MAX, 1);
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    mallopt(M_TRIM_THRESHOLD, 32 << 20);
#endif

    const auto t0 = std::chrono::steady_clock::now();
    std::unique_ptr<Engine> engine = load(hooks, a, popt.model_dir);
    const Policy policy(engine->config(), engine->horizon(), popt);
    InferenceQueue queue(*engine, policy, max_batch);
    Server server(policy, queue, sopt);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "pirt serve: %s, loaded in %.1f s\npirt serve: %s\npirt serve: listening on ws://%s:%d\n",
                 engine->config().name().c_str(), load_s, policy.describe().c_str(), sopt.host.c_str(),
                 server.port());
    std::fflush(stderr);
    server.run();
    queue.stop();
    std::fprintf(stderr, "pirt serve: stopped after %lld requests (%lld failed)\n",
                 static_cast<long long>(server.requests_served()), static_cast<long long>(server.requests_failed()));
    return 0;
  });
}

int run_policy_infer(int argc, char** argv, const CliHooks& hooks) {
  const std::string cmd = "pirt policy-infer";
  return guarded(cmd, [&]() -> int {
    Args a(cmd,
           "Runs one request through the policy (robot transforms, normalization, tokenizer, model,\n"
           "unnormalization) without the network, for debugging. The request is a msgpack-numpy file\n"
           "as openpi's client sends it; the response is what `pirt serve` would answer.",
           with({{"--request", "FILE", "the request: a msgpack-numpy dict (required)"},
                 {"--out", "FILE", "write the response as msgpack-numpy (default: print the actions)"},
                 {"--dump-inputs", "FILE", "write the model inputs (safetensors, as `pirt infer --inputs` reads)"}}));
    if (!a.parse(argc, argv)) return 0;
    PolicyOptions popt = policy_options(a);
    const std::string request_path = a.required("--request");
    engine_options(a);
    const Value request = msgpack_decode(read_file(request_path, "request"));

    std::unique_ptr<Engine> engine = load(hooks, a, popt.model_dir);
    const Policy policy(engine->config(), engine->horizon(), popt);
    const PreparedRequest prepared = policy.prepare(request);
    const ModelInputs inputs = policy.make_inputs({&prepared});
    if (a.has("--dump-inputs")) {
      if (!hooks.write_inputs) throw Error("--dump-inputs is not available");
      hooks.write_inputs(a.get("--dump-inputs"), inputs);
    }
    const auto t0 = std::chrono::steady_clock::now();
    const HostTensor actions = engine->sample_actions(inputs, policy.steps());
    RequestTiming t;
    t.model_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (actions.dtype() != DType::F32 ||
        actions.numel() != static_cast<int64_t>(policy.horizon()) * policy.config().action_dim)
      throw Error("engine returned actions of shape " + actions.shape().str());
    const Value response = policy.finish(prepared, actions.ptr<float>(), t);

    if (a.has("--out")) {
      const std::string out = a.get("--out");
      std::ofstream f(out, std::ios::binary);
      const std::string bytes = msgpack_encode(response);
      f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      if (!f) throw Error("cannot write '" + out + "'");
    } else {
      const NdArray& act = response.find("actions")->as_array();
      std::printf("actions %s %s (model %.1f ms)\n", act.dtype.c_str(), act.shape_str().c_str(), t.model_ms);
      const int64_t H = act.shape[0], D = act.shape[1];
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t d = 0; d < D; ++d) std::printf("%s%.6f", d ? " " : "", act.get(h * D + d));
        std::printf("\n");
      }
    }
    return 0;
  });
}

}  // namespace pirt
