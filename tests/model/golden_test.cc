// `pirt infer` on the tiny checkpoints against the golden actions of the independent PyTorch
// reference (tests/reference/pi0_reference.py, made by tests/reference/make_goldens.py).
// The tolerance is derived in docs/numerics.md ("Golden tolerance").
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "pirt/engine.h"

namespace pirt {
namespace {

namespace fs = std::filesystem;

// docs/numerics.md: fp32 CPU vs fp32 torch differ only by reduction order; the measured floor
// (fp32 vs fp64 reference) is far below these bounds.
constexpr double kAtol = 1e-4;
constexpr double kRtol = 1e-4;

std::vector<std::string> golden_cases() {
  std::vector<std::string> cases;
  const fs::path root = fs::path(PIRT_TEST_DATA) / "golden";
  if (fs::exists(root))
    for (const auto& e : fs::directory_iterator(root))
      if (fs::exists(e.path() / "case.json")) cases.push_back(e.path().filename().string());
  std::sort(cases.begin(), cases.end());
  return cases;
}

class Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(Golden, PirtInferMatchesTheReference) {
  const fs::path dir = fs::path(PIRT_TEST_DATA) / "golden" / GetParam();
  std::ifstream f(dir / "case.json");
  const nlohmann::json c = nlohmann::json::parse(f);
  const int steps = c.at("steps").get<int>();
  const fs::path model = fs::path(PIRT_TEST_DATA) / c.at("model").get<std::string>();
  const fs::path out = fs::temp_directory_path() / ("pirt_golden_" + GetParam() + ".safetensors");
  const std::string cmd = std::string(PIRT_BINARY) + " infer --device cpu --model " + model.string() +
                          " --inputs " + (dir / "inputs.safetensors").string() + " --out " + out.string() +
                          " --steps " + std::to_string(steps);
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

  const SafetensorsFile got = SafetensorsFile::open(out.string());
  const SafetensorsFile want = SafetensorsFile::open((dir / "actions.safetensors").string());
  const Tensor* a = got.find("actions");
  const Tensor* b = want.find("actions");
  ASSERT_TRUE(a && b);
  ASSERT_EQ(a->shape, b->shape);
  double ref_max = 0, err = 0;
  int64_t worst = 0;
  for (int64_t i = 0; i < b->numel(); ++i) {
    const double x = a->ptr<float>()[i], y = b->ptr<float>()[i];
    ASSERT_TRUE(std::isfinite(x)) << "element " << i;
    ref_max = std::max(ref_max, std::fabs(y));
    if (std::fabs(x - y) > err) {
      err = std::fabs(x - y);
      worst = i;
    }
  }
  const double bound = kAtol + kRtol * ref_max;
  EXPECT_LE(err, bound) << "worst element " << worst << ": pirt " << a->ptr<float>()[worst] << ", reference "
                        << b->ptr<float>()[worst] << " (max |ref| " << ref_max << ")";
  std::printf("[ golden   ] %s: max abs err %.3g (bound %.3g, max |ref| %.3g)\n", GetParam().c_str(), err, bound,
              ref_max);
  fs::remove(out);
}

INSTANTIATE_TEST_SUITE_P(Tiny, Golden, ::testing::ValuesIn(golden_cases()),
                         [](const auto& info) { return info.param; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Golden);

TEST(GoldenData, IsPresent) { EXPECT_GE(golden_cases().size(), 6u) << "tests/data/golden holds the golden cases"; }

}  // namespace
}  // namespace pirt
