// `pirt infer` on the tiny checkpoints against the golden actions of the independent PyTorch
// reference (tests/reference/pi0_reference.py, made by tests/reference/make_goldens.py).
// The tolerance is derived in docs/numerics.md ("Golden tolerance").
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "pirt/engine.h"

namespace pirt {
namespace {

namespace fs = std::filesystem;

// docs/numerics.md ("Golden tolerance"): fp32 CPU vs the float64 reference differ by fp32
// rounding only, measured at 1.1-4.3e-6 on these goldens; the bound is 25-95x that floor and fails
// every golden when one bf16 rounding (time embedding, RoPE, KV cache) or erf-GELU sneaks in.
constexpr double kAtol = 1e-5;
constexpr double kRtol = 2e-5;

std::vector<std::string> golden_cases() {
  std::vector<std::string> cases;
  const fs::path root = fs::path(PIRT_TEST_DATA) / "golden";
  if (fs::exists(root))
    for (const auto& e : fs::directory_iterator(root))
      if (fs::exists(e.path() / "case.json")) cases.push_back(e.path().filename().string());
  std::sort(cases.begin(), cases.end());
  return cases;
}

class Golden : public ::testing::TestWithParam<std::string> {
 protected:
  // Runs `pirt infer` on this case (with extra flags) and returns the actions and the reference's.
  void infer(const std::string& device, HostTensor* got, HostTensor* want, const std::string& flags = "") {
    const fs::path dir = fs::path(PIRT_TEST_DATA) / "golden" / GetParam();
    std::ifstream f(dir / "case.json");
    const nlohmann::json c = nlohmann::json::parse(f);
    const int steps = c.at("steps").get<int>();
    const fs::path model = fs::path(PIRT_TEST_DATA) / c.at("model").get<std::string>();
    const fs::path out = fs::temp_directory_path() /
                         ("pirt_golden_" + device + (flags.empty() ? "" : "_flags") + "_" + GetParam() + ".safetensors");
    const std::string cmd = std::string(PIRT_BINARY) + " infer --device " + device + " --model " + model.string() +
                            " --inputs " + (dir / "inputs.safetensors").string() + " --out " + out.string() +
                            " --steps " + std::to_string(steps) + (flags.empty() ? "" : " " + flags);
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    auto read = [](const fs::path& p) {
      const SafetensorsFile file = SafetensorsFile::open(p.string());
      const Tensor* t = file.find("actions");
      if (!t) throw Error(p.string() + ": no actions");
      HostTensor h(t->dtype, t->shape);
      std::memcpy(h.ptr<void>(), t->data, t->nbytes());
      return h;
    };
    *got = read(out);
    *want = read(dir / "actions.safetensors");
    fs::remove(out);
    ASSERT_EQ(got->shape(), want->shape());
    ASSERT_EQ(got->dtype(), DType::F32);
  }
};

// The fp32 CPU engine within the golden tolerance (docs/numerics.md).
void expect_golden(const std::string& name, const HostTensor& got, const HostTensor& want) {
  double ref_max = 0, err = 0;
  int64_t worst = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double x = got.ptr<float>()[i], y = want.ptr<float>()[i];
    ASSERT_TRUE(std::isfinite(x)) << "element " << i;
    ref_max = std::max(ref_max, std::fabs(y));
    if (std::fabs(x - y) > err) {
      err = std::fabs(x - y);
      worst = i;
    }
  }
  const double bound = kAtol + kRtol * ref_max;
  EXPECT_LE(err, bound) << "worst element " << worst << ": pirt " << got.ptr<float>()[worst] << ", reference "
                        << want.ptr<float>()[worst] << " (max |ref| " << ref_max << ")";
  std::printf("[ golden   ] %s: max abs err %.3g (bound %.3g, max |ref| %.3g)\n", name.c_str(), err, bound, ref_max);
}

TEST_P(Golden, PirtInferMatchesTheReference) {
  HostTensor got, want;
  ASSERT_NO_FATAL_FAILURE(infer("cpu", &got, &want));
  expect_golden(GetParam(), got, want);
}

// --no-fuse runs the layers op by op as the reference writes them: separate Q/K/V and gate/up, no
// block tails, and pi0's action_in_proj not folded into action_time_mlp_in (docs/numerics.md).
TEST_P(Golden, UnfusedPathMatchesTheReference) {
  HostTensor got, want;
  ASSERT_NO_FATAL_FAILURE(infer("cpu", &got, &want, "--no-fuse"));
  expect_golden(GetParam() + " --no-fuse", got, want);
}

// The CUDA engine in bf16 against the same fp32 goldens. docs/numerics.md: openpi's own model in
// bf16 lands at relative L2 ~3e-3 from them; pirt measured 1.7e-3..5.5e-3 on an H100 (bench/RESULTS.md).
constexpr double kCudaMaxRelL2 = 1e-2;

TEST_P(Golden, CudaMatchesTheReferenceInBf16) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  HostTensor got, want;
  ASSERT_NO_FATAL_FAILURE(infer("cuda", &got, &want));
  double num = 0, den = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double x = got.ptr<float>()[i], y = want.ptr<float>()[i];
    ASSERT_TRUE(std::isfinite(x)) << "element " << i;
    num += (x - y) * (x - y);
    den += y * y;
  }
  const double rel = std::sqrt(num / den);
  EXPECT_LE(rel, kCudaMaxRelL2);
  std::printf("[ golden   ] %s on cuda: relative L2 %.3g (bound %.3g)\n", GetParam().c_str(), rel, kCudaMaxRelL2);
}

INSTANTIATE_TEST_SUITE_P(Tiny, Golden, ::testing::ValuesIn(golden_cases()),
                         [](const auto& info) { return info.param; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Golden);

TEST(GoldenData, IsPresent) { EXPECT_GE(golden_cases().size(), 6u) << "tests/data/golden holds the golden cases"; }

}  // namespace
}  // namespace pirt
