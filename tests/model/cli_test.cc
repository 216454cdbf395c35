// The `pirt` program's contract (DESIGN.md): --help works for every subcommand; a wrong argument or
// a bad file gives one clear line on stderr and exit code 2.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "io/safetensors.h"
#include "model/random_weights.h"
#include "pirt/engine.h"

namespace {

struct Result {
  int code;
  std::string err;
};

Result run(const std::string& args) {
  // One file per process: ctest -j runs the tests of this file side by side.
  const std::string errfile =
      std::filesystem::temp_directory_path() / ("pirt_cli_test." + std::to_string(::getpid()) + ".err");
  const std::string cmd = std::string(PIRT_BINARY) + " " + args + " >/dev/null 2>" + errfile;
  const int status = std::system(cmd.c_str());
  std::ifstream f(errfile);
  std::string err((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::filesystem::remove(errfile);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, err};
}

void expect_usage_error(const std::string& args, const std::string& needle) {
  const Result r = run(args);
  EXPECT_EQ(r.code, 2) << args << ": " << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << args << ": " << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line expected: " << r.err;
}

TEST(Cli, HelpForEverySubcommand) {
  for (const char* c : {"bench", "infer", "make-checkpoint"}) EXPECT_EQ(run(std::string(c) + " --help").code, 0) << c;
  EXPECT_EQ(run("--help").code, 0);
}

TEST(Cli, WrongArgumentsAreOneLineAndExitCode2) {
  expect_usage_error("bench --bogus", "unknown argument \"--bogus\"");
  expect_usage_error("bench --cameras 5", "--cameras must be in [1, 3]");
  expect_usage_error("bench --steps ten", "--steps must be an integer");
  expect_usage_error("bench --device tpu", "--device must be auto, cpu or cuda");
  expect_usage_error("infer --model x --inputs y", "--out is required");
  expect_usage_error("make-checkpoint --arch gpt2 --out /tmp/x", "--arch must be");
}

TEST(Cli, BadFilesAreOneLineAndExitCode2) {
  const auto dir = std::filesystem::temp_directory_path() / "pirt_cli_bad";
  std::filesystem::create_directories(dir);
  expect_usage_error("infer --model " + dir.string() + " --inputs /nonexistent.safetensors --out /tmp/o",
                     "/nonexistent.safetensors");
  const std::string junk = (dir / "junk.safetensors").string();
  std::ofstream(junk) << "not a safetensors file at all";
  expect_usage_error("infer --model " + std::string(PIRT_TEST_DATA) + "/tiny_pi0 --inputs " + junk + " --out /tmp/o",
                     "junk.safetensors");
  // Valid inputs, but a folder that is no checkpoint.
  const pirt::ModelConfig c = pirt::config_tiny(pirt::Arch::Pi0);
  pirt::ModelInputs in;
  for (int cam = 0; cam < 3; ++cam) {
    in.images[cam] = pirt::HostTensor(pirt::DType::F32, {1, 224, 224, 3});
    in.image_masks[cam] = pirt::HostTensor(pirt::DType::BOOL, {1});
  }
  in.tokenized_prompt = pirt::HostTensor(pirt::DType::I32, {1, c.max_token_len});
  in.tokenized_prompt_mask = pirt::HostTensor(pirt::DType::BOOL, {1, c.max_token_len});
  in.state = pirt::HostTensor(pirt::DType::F32, {1, c.action_dim});
  const std::string inputs = (dir / "inputs.safetensors").string();
  pirt::write_inputs(inputs, in);
  expect_usage_error("infer --model " + dir.string() + " --inputs " + inputs + " --out /tmp/o", "model.safetensors");
}

TEST(Cli, MakeCheckpointWritesOpenpisLayoutAndItLoads) {
  const auto dir = std::filesystem::temp_directory_path() / "pirt_cli_ckpt";
  std::filesystem::remove_all(dir);
  const Result r = run("make-checkpoint --arch tiny --seed 3 --out " + dir.string());
  ASSERT_EQ(r.code, 0) << r.err;
  // openpi's converter stores the unused expert LM head too; its strict loader wants the key.
  const pirt::SafetensorsFile file = pirt::SafetensorsFile::open((dir / "model.safetensors").string());
  EXPECT_NE(file.find("paligemma_with_expert.gemma_expert.lm_head.weight"), nullptr);
  const std::string inputs = (std::filesystem::temp_directory_path() / "pirt_cli_ckpt_in.safetensors").string();
  ASSERT_EQ(run("make-inputs --model tiny --cameras 2 --out " + inputs).code, 0);
  const Result infer = run("infer --device cpu --steps 2 --model " + dir.string() + " --inputs " + inputs +
                           " --out " + (dir / "actions.safetensors").string());
  EXPECT_EQ(infer.code, 0) << infer.err;
  std::filesystem::remove_all(dir);
}

TEST(Cli, BenchRunsTheTinyModelOnTheCpu) {
  const Result r = run("bench --device cpu --iters 1 --warmup 0 --steps 2");
  EXPECT_EQ(r.code, 0) << r.err;
}

TEST(Cli, BenchCheckMatchesACheckpointOfABuiltInArchitectureByItsName) {
  // --check compares with bkc.json entries by model name; a checkpoint folder of the canonical
  // sizes is that architecture (it once reported its path and matched nothing).
  const auto dir = std::filesystem::temp_directory_path() / ("pirt_cli_bkc_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  ASSERT_EQ(run("make-checkpoint --arch tiny --out " + dir.string()).code, 0);
  const std::string bkc = (dir / "bkc.json").string();
  std::ofstream(bkc) << R"({"entries": [{"gpu": "cpu", "model": "tiny", "cameras": 3, "absent": 0, "horizon": 50,
                        "steps": 1, "mean_ms": 1e-6}]})";
  const Result r = run("bench --device cpu --iters 1 --warmup 0 --steps 1 --cameras 3 --model " + dir.string() +
                       " --check " + bkc);
  EXPECT_EQ(r.code, 1) << r.err;  // matched, and far slower than 1 ns
  EXPECT_NE(r.err.find("REGRESSION"), std::string::npos) << r.err;
  std::filesystem::remove_all(dir);
}

TEST(Cli, BenchRunsACheckpointWithATinyVocabulary) {
  // bench draws prompt ids from [4, vocab) after BOS (2): with a vocabulary of 3 that range was
  // empty (undefined behaviour in std::uniform_int_distribution) and BOS itself out of range.
  const auto dir = std::filesystem::temp_directory_path() / "pirt_cli_vocab3";
  std::filesystem::remove_all(dir);
  pirt::ModelConfig c = pirt::config_tiny(pirt::Arch::Pi0);
  c.llm.vocab = 3;
  pirt::write_checkpoint(dir.string(), c, pirt::random_weights(c, 1, pirt::DType::BF16));
  const Result r = run("bench --device cpu --iters 1 --warmup 0 --steps 1 --model " + dir.string());
  EXPECT_EQ(r.code, 0) << r.err;
  std::filesystem::remove_all(dir);
}

}  // namespace
