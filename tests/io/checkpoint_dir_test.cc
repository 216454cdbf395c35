#include "io/checkpoint_dir.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace pirt {
namespace {

namespace fs = std::filesystem;

#define EXPECT_HAS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

class CheckpointDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("pirt_cd_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void touch(const fs::path& rel, const std::string& text = "{}") {
    fs::create_directories((dir_ / rel).parent_path());
    std::ofstream(dir_ / rel) << text;
  }
  std::string locate_error() {
    try {
      locate_checkpoint_dir(dir_.string());
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  fs::path dir_;
};

TEST_F(CheckpointDirTest, FindsFilesAndNormStats) {
  touch("model.safetensors");
  touch("config.json", R"({"action_dim": 32})");
  touch("assets/droid/norm_stats.json");
  touch("assets/physical-intelligence/libero/norm_stats.json");
  touch("assets/trossen/other.json");
  const CheckpointDir c = locate_checkpoint_dir(dir_.string());
  EXPECT_EQ(c.model_path, (dir_ / "model.safetensors").string());
  EXPECT_EQ(read_text_file(c.config_path), R"({"action_dim": 32})");
  ASSERT_EQ(c.norm_stats.size(), 2u);
  EXPECT_EQ(c.norm_stats[0].asset_id, "droid");
  EXPECT_EQ(c.norm_stats[1].asset_id, "physical-intelligence/libero");
  EXPECT_EQ(c.norm_stats[1].path, (dir_ / "assets/physical-intelligence/libero/norm_stats.json").string());
}

TEST_F(CheckpointDirTest, NoAssetsIsFine) {
  touch("model.safetensors");
  touch("config.json");
  EXPECT_TRUE(locate_checkpoint_dir(dir_.string()).norm_stats.empty());
}

TEST_F(CheckpointDirTest, MissingFiles) {
  std::string e = locate_error();
  EXPECT_HAS(e, dir_.string() + ": no model.safetensors (expected an openpi PyTorch checkpoint folder)");
  touch("model.safetensors");
  e = locate_error();
  EXPECT_HAS(e, dir_.string() + ": no config.json");
}

TEST_F(CheckpointDirTest, JaxCheckpointGetsAHint) {
  fs::create_directories(dir_ / "params");
  EXPECT_HAS(locate_error(), "convert_jax_model_to_pytorch");
}

TEST_F(CheckpointDirTest, NotAFolder) {
  try {
    locate_checkpoint_dir((dir_ / "nothing").string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "nothing: no such checkpoint folder");
  }
  touch("file.txt");
  try {
    locate_checkpoint_dir((dir_ / "file.txt").string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "not a folder");
  }
  try {
    read_text_file((dir_ / "nothing.json").string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "nothing.json: cannot open");
  }
}

}  // namespace
}  // namespace pirt
