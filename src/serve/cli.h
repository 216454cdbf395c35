// `pirt serve` and `pirt policy-infer`. tools/pirt/main.cc dispatches to these when
// PIRT_HAVE_SERVE is defined, with the arguments after the subcommand (argv[0] is the first
// option). Leading arguments that are not options (a program or subcommand name) are skipped.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "pirt/engine.h"

namespace pirt {

int serve_main(int argc, char** argv);
int policy_infer_main(int argc, char** argv);

// The same commands with the engine loader and the inputs writer passed in (tests use a fake
// engine; serve_main passes Engine::load and write_inputs).
struct CliHooks {
  std::function<std::unique_ptr<Engine>(const std::string& model_dir, const EngineOptions& opt)> load_engine;
  std::function<void(const std::string& path, const ModelInputs& in)> write_inputs;
};
int run_serve(int argc, char** argv, const CliHooks& hooks);
int run_policy_infer(int argc, char** argv, const CliHooks& hooks);

}  // namespace pirt
