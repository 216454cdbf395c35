#include "bkc.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace pirt {
namespace {

class BkcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (std::filesystem::temp_directory_path() /
             ("pirt_bkc_" + std::to_string(::getpid()) + "_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".json"))
                .string();
  }
  void TearDown() override { std::filesystem::remove(path_); }
  void write(const std::string& text) { std::ofstream(path_) << text; }
  std::string error_of(const BenchFigures& f) {
    try {
      check_bkc(path_, f);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  static BenchFigures h100(double ms) {
    BenchFigures f;
    f.device = "cuda: NVIDIA H100 80GB HBM3";
    f.model = "pi0";
    f.mean_ms = ms;
    return f;
  }
  std::string path_;
};

const char* kFile = R"({"margin": 0.1, "entries": [
  {"gpu": "H200", "model": "pi0", "cameras": 3, "absent": 0, "prompt_len": 48, "horizon": 50, "steps": 10,
   "batch": 1, "mean_ms": 15.0, "commit": "abc", "date": "2026-11-27"},
  {"gpu": "H100", "model": "pi0", "cameras": 3, "absent": 0, "prompt_len": 48, "horizon": 50, "steps": 10,
   "batch": 1, "mean_ms": 20.0, "commit": "abc", "date": "2026-11-27"},
  {"gpu": "H100", "model": "pi0", "cameras": 2, "absent": 1, "prompt_len": 48, "horizon": 50, "steps": 10,
   "batch": 1, "mean_ms": 17.0, "margin": 0.02, "commit": "abc", "date": "2026-11-27"}]})";

TEST_F(BkcTest, WithinMarginPasses) {
  write(kFile);
  const BkcVerdict v = check_bkc(path_, h100(21.9));
  EXPECT_TRUE(v.matched);
  EXPECT_FALSE(v.regression);
  EXPECT_NE(v.message.find("within 10%"), std::string::npos) << v.message;
  EXPECT_FALSE(check_bkc(path_, h100(15.0)).regression);  // faster is never a regression
}

TEST_F(BkcTest, SlowerThanMarginIsARegression) {
  write(kFile);
  const BkcVerdict v = check_bkc(path_, h100(22.1));
  EXPECT_TRUE(v.matched);
  EXPECT_TRUE(v.regression);
  EXPECT_NE(v.message.find("REGRESSION"), std::string::npos) << v.message;
  EXPECT_NE(v.message.find("20.000"), std::string::npos) << v.message;
}

TEST_F(BkcTest, EntryMarginOverridesTheFileMargin) {
  write(kFile);
  BenchFigures f = h100(17.5);  // 2.9% slower: over the entry's 2%
  f.cameras = 2;
  f.absent = 1;
  EXPECT_TRUE(check_bkc(path_, f).regression);
  f.mean_ms = 17.3;
  EXPECT_FALSE(check_bkc(path_, f).regression);
}

TEST_F(BkcTest, OtherGpuOrShapeIsNotCompared) {
  write(kFile);
  BenchFigures f = h100(100);
  f.device = "cuda: NVIDIA A100-SXM4-80GB";
  EXPECT_FALSE(check_bkc(path_, f).matched);
  EXPECT_FALSE(check_bkc(path_, f).regression);
  f = h100(100);
  f.steps = 5;
  EXPECT_FALSE(check_bkc(path_, f).matched);
  f = h100(100);
  f.model = "pi05";
  EXPECT_FALSE(check_bkc(path_, f).matched);
  f = h100(100);  // entries without "images" are about f32 images
  f.images = "u8";
  EXPECT_FALSE(check_bkc(path_, f).matched);
}

TEST_F(BkcTest, ImagesFieldSelectsTheEntry) {
  write(R"({"margin": 0.1, "entries": [
    {"gpu": "H100", "model": "pi0", "cameras": 3, "absent": 0, "horizon": 50, "steps": 10, "mean_ms": 20.0},
    {"gpu": "H100", "model": "pi0", "cameras": 3, "absent": 0, "horizon": 50, "steps": 10, "images": "u8",
     "mean_ms": 10.0}]})");
  BenchFigures f = h100(12.0);
  EXPECT_FALSE(check_bkc(path_, f).regression);  // the f32 entry
  f.images = "u8";
  EXPECT_TRUE(check_bkc(path_, f).matched);
  EXPECT_TRUE(check_bkc(path_, f).regression);  // the u8 entry
}

TEST_F(BkcTest, MalformedFilesAreErrors) {
  EXPECT_NE(error_of(h100(1)).find("cannot open"), std::string::npos);
  write("{\"entries\": [");
  EXPECT_NE(error_of(h100(1)).find("not valid JSON"), std::string::npos);
  write("[1, 2]");
  EXPECT_NE(error_of(h100(1)).find("expected an object with an \"entries\" array"), std::string::npos);
  write(R"({"entries": [{"gpu": "H100", "model": "pi0", "cameras": "three"}]})");
  EXPECT_NE(error_of(h100(1)).find("entries[0]: missing or mistyped field"), std::string::npos) << error_of(h100(1));
  write(R"({"entries": [{"gpu": "H100", "model": "pi0", "cameras": 3, "absent": 0, "horizon": 50, "steps": 10}]})");
  EXPECT_NE(error_of(h100(1)).find("entries[0]"), std::string::npos) << error_of(h100(1));  // no mean_ms
  write(R"({"entries": [{"gpu": "H100", "model": "pi0", "cameras": 3, "absent": 0, "horizon": 50, "steps": 10,
            "mean_ms": -1}]})");
  EXPECT_NE(error_of(h100(1)).find("mean_ms must be positive"), std::string::npos) << error_of(h100(1));
}

TEST_F(BkcTest, MistypedFileMarginIsAnError) {
  // Read outside the per-entry checks: it used to escape as a JSON library exception (pirt's
  // "internal error", exit code 3) instead of an Error naming the file.
  write(R"({"margin": "ten percent", "entries": []})");
  EXPECT_NE(error_of(h100(1)).find("\"margin\" must be a number"), std::string::npos) << error_of(h100(1));
}

// The file that ships must stay valid.
TEST(BkcShipped, BenchBkcJsonIsValid) {
  const std::string path = std::string(PIRT_SOURCE_DIR) + "/bench/bkc.json";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no bench/bkc.json";
  BenchFigures f;
  f.device = "cuda: NVIDIA H100 80GB HBM3";
  f.model = "pi0";
  f.mean_ms = 1e-3;
  EXPECT_NO_THROW(check_bkc(path, f));
}

}  // namespace
}  // namespace pirt
