// pirt: run openpi policies (pi0, pi0.5) natively. Subcommands are thin: parse, call the library.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "commands.h"
#include "core/error.h"
#ifdef PIRT_HAVE_SERVE
#include "serve/cli.h"
#endif

namespace {

const char* kUsage =
    "usage: pirt <command> [options]\n"
    "\n"
    "commands:\n"
    "  bench            time sample_actions on a random-weight model or a checkpoint\n"
    "  infer            run sample_actions on a model-level inputs file\n"
    "  make-checkpoint  write random weights in openpi's layout\n"
    "  make-inputs      write synthetic model-level inputs (what bench uses) for infer and the reference\n"
    "  profile          one call's time by stage and by kernel (CUPTI), and a Chrome trace\n"
    "  tune             time the GEMM algorithms of every shape a call runs and write a tuning table\n"
    "  serve            serve a checkpoint over openpi's websocket protocol\n"
    "  policy-infer     run one openpi request (msgpack) through the policy, without the network\n"
    "\n"
    "`pirt <command> --help` shows a command's options.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "bench") return pirt::cmd_bench(argc - 2, argv + 2);
    if (cmd == "infer") return pirt::cmd_infer(argc - 2, argv + 2);
    if (cmd == "make-checkpoint") return pirt::cmd_make_checkpoint(argc - 2, argv + 2);
    if (cmd == "make-inputs") return pirt::cmd_make_inputs(argc - 2, argv + 2);
    if (cmd == "profile") return pirt::cmd_profile(argc - 2, argv + 2);
    if (cmd == "tune") return pirt::cmd_tune(argc - 2, argv + 2);
#ifdef PIRT_HAVE_SERVE
    if (cmd == "serve") return pirt::serve_main(argc - 2, argv + 2);
    if (cmd == "policy-infer") return pirt::policy_infer_main(argc - 2, argv + 2);
#else
    if (cmd == "serve" || cmd == "policy-infer") {
      std::fprintf(stderr, "pirt %s: this build has no server (Boost, msgpack-cxx or sentencepiece were missing)\n",
                   cmd.c_str());
      return 2;
    }
#endif
    std::fprintf(stderr, "pirt: unknown command \"%s\"\n%s", cmd.c_str(), kUsage);
    return 2;
  } catch (const pirt::Error& e) {
    std::fprintf(stderr, "pirt %s: %s\n", cmd.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pirt %s: internal error: %s\n", cmd.c_str(), e.what());
    return 3;
  }
}
