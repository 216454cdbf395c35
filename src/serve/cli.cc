#include "serve/cli.h"

namespace pirt {

namespace {

CliHooks real_hooks() {
  CliHooks h;
  h.load_engine = [](const std::string& dir, const EngineOptions& opt) { return Engine::load(dir, opt); };
  h.write_inputs = [](const std::string& path, const ModelInputs& in) { write_inputs(path, in); };
  return h;
}

}  // namespace

int serve_main(int argc, char** argv) { return run_serve(argc, argv, real_hooks()); }
int policy_infer_main(int argc, char** argv) { return run_policy_infer(argc, argv, real_hooks()); }

}  // namespace pirt
