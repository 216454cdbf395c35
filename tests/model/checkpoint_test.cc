#include "model/checkpoint.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/random_weights.h"
#include "model/weight_table.h"

namespace pirt {
namespace {

namespace fs = std::filesystem;
using Weights = std::map<std::string, HostTensor>;

#define EXPECT_HAS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = (fs::temp_directory_path() / ("pirt_ck_" + std::to_string(::getpid()) + "_" + info->name())).string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string model_path() const { return dir_ + "/model.safetensors"; }

  // Writes the files directly (write_checkpoint would refuse bad weights), renaming with `rename`.
  void write_files(const ModelConfig& c, const Weights& w,
                   const std::function<std::string(const std::string&)>& rename = nullptr) {
    std::vector<std::pair<std::string, Tensor>> list;
    for (const auto& [n, t] : w) list.emplace_back(rename ? rename(n) : n, t.view());
    write_safetensors(model_path(), list);
    std::ofstream(dir_ + "/config.json") << config_to_json(c);
  }

  std::string open_error() {
    try {
      open_checkpoint(dir_);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  std::string dir_;
};

void expect_same_weights(const Checkpoint& ck, const ModelConfig& c, const Weights& w) {
  for (const WeightSpec& s : weight_table(c)) {
    const Tensor& t = ck.get(s.name);
    const HostTensor& h = w.at(s.name);
    ASSERT_EQ(t.shape, h.shape()) << s.name;
    ASSERT_EQ(t.dtype, h.dtype()) << s.name;
    ASSERT_EQ(std::memcmp(t.data, h.view().data, t.nbytes()), 0) << s.name;
  }
}

// config.json with bad numbers: one Error naming the field, never a silent truncation, an int
// overflow or a loop over two billion layers before the weights are even looked at.
TEST(ConfigJson, BadDimensionsNameTheField) {
  const ModelConfig tiny = config_tiny(Arch::Pi0);
  auto error_of = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = nlohmann::json::parse(config_to_json(tiny));
    edit(j);
    try {
      config_from_json(j.dump(), false);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_EQ(error_of([](nlohmann::json&) {}), "(no error)");
  EXPECT_HAS(error_of([](nlohmann::json& j) { j["pirt"]["llm"]["width"] = 64.7; }),
             "pirt.llm.width must be a 32-bit integer, not 64.7");
  EXPECT_HAS(error_of([](nlohmann::json& j) { j["pirt"]["vision"]["mlp"] = 20000000000LL; }),
             "pirt.vision.mlp must be a 32-bit integer, not 20000000000");
  EXPECT_HAS(error_of([](nlohmann::json& j) { j["pirt"]["action_horizon"] = 1e3; }),
             "pirt.action_horizon must be a 32-bit integer");
  EXPECT_HAS(error_of([](nlohmann::json& j) {
               j["pirt"]["llm"]["depth"] = 2000000000;
               j["pirt"]["expert"]["depth"] = 2000000000;
             }),
             "llm.depth is 2000000000, more than pirt supports");
  EXPECT_HAS(error_of([](nlohmann::json& j) {
               j["pirt"]["llm"]["head_dim"] = 1 << 29;
               j["pirt"]["expert"]["head_dim"] = 1 << 29;
             }),
             "llm.head_dim");
  EXPECT_HAS(error_of([](nlohmann::json& j) { j["pirt"]["expert"]["width"] = 63; }), "expert.width must be even");
  EXPECT_HAS(error_of([](nlohmann::json& j) { j["pirt"]["action_horizon"] = 2000000000; }),
             "action_horizon is 2000000000");
  EXPECT_HAS(error_of([](nlohmann::json& j) { j["pirt"]["max_token_len"] = 2000000000; }),
             "max_token_len is 2000000000");
  // openpi's own keys (no "pirt" block) are read the same way.
  EXPECT_HAS(error_of([](nlohmann::json& j) {
               j.erase("pirt");
               j["paligemma_variant"] = "gemma_2b";
               j["action_expert_variant"] = "gemma_300m";
               j["action_horizon"] = 10.5;
             }),
             "action_horizon must be a 32-bit integer, not 10.5");
}

TEST_F(CheckpointTest, WritesAndOpensTinyPi0) {
  const ModelConfig c = config_tiny(Arch::Pi0);
  const Weights w = random_weights(c, 7, DType::BF16);
  write_checkpoint(dir_, c, w);
  fs::create_directories(dir_ + "/assets/droid");
  std::ofstream(dir_ + "/assets/droid/norm_stats.json") << "{}";

  const Checkpoint ck = open_checkpoint(dir_);
  EXPECT_EQ(ck.config.arch, Arch::Pi0);
  EXPECT_EQ(ck.config.llm.width, 64);
  EXPECT_EQ(ck.config.vision.depth, 2);
  EXPECT_EQ(ck.config.llm.vocab, 1024);
  EXPECT_EQ(ck.config.max_token_len, 48);
  EXPECT_EQ(ck.dir, dir_);
  EXPECT_EQ(ck.source, model_path());
  ASSERT_EQ(ck.norm_stats_files.size(), 1u);
  EXPECT_EQ(ck.norm_stats_files[0], dir_ + "/assets/droid/norm_stats.json");
  expect_same_weights(ck, c, w);
  EXPECT_FALSE(ck.has("state_proj.nope"));
  try {
    ck.get("state_proj.nope");
    FAIL();
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "state_proj.nope");
  }
  EXPECT_EQ(SafetensorsFile::open(model_path()).metadata().at("format"), "pt");
}

TEST_F(CheckpointTest, RecognisesPi05) {
  const ModelConfig c = config_tiny(Arch::Pi05);
  const Weights w = random_weights(c, 7, DType::F32);
  write_checkpoint(dir_, c, w);
  const Checkpoint ck = open_checkpoint(dir_);
  EXPECT_EQ(ck.config.arch, Arch::Pi05);
  EXPECT_EQ(ck.config.max_token_len, 200);
  EXPECT_TRUE(ck.has(kPi05Probe));
  expect_same_weights(ck, c, w);
}

TEST_F(CheckpointTest, ArchDisagreesWithTensors) {
  ModelConfig pi0 = config_tiny(Arch::Pi0), pi05 = config_tiny(Arch::Pi05);
  write_files(pi0, random_weights(pi05, 1, DType::BF16));
  EXPECT_HAS(open_error(), "config.json says pi0 but");
  EXPECT_HAS(open_error(), "adaRMS");
  write_files(pi05, random_weights(pi0, 1, DType::BF16));
  EXPECT_HAS(open_error(), "config.json says pi05 but");
}

TEST_F(CheckpointTest, MissingTensor) {
  const ModelConfig c = config_tiny(Arch::Pi0);
  Weights w = random_weights(c, 1, DType::BF16);
  w.erase("action_out_proj.bias");
  write_files(c, w);
  const std::string e = open_error();
  EXPECT_HAS(e, model_path());
  EXPECT_HAS(e, "missing tensor 'action_out_proj.bias'");
  EXPECT_HAS(e, strformat("1 of the %zu tensors", weight_table(c).size()));
}

TEST_F(CheckpointTest, WrongShape) {
  const ModelConfig c = config_tiny(Arch::Pi0);
  Weights w = random_weights(c, 1, DType::BF16);
  const std::string name = std::string(kLlmPrefix) + "layers.1.mlp.gate_proj.weight";
  w[name] = HostTensor(DType::BF16, {64, 128});  // transposed
  write_files(c, w);
  const std::string e = open_error();
  EXPECT_HAS(e, model_path());
  EXPECT_HAS(e, "'" + name + "'");
  EXPECT_HAS(e, "expected [128, 64], got [64, 128]");
}

TEST_F(CheckpointTest, WrongDtype) {
  const ModelConfig c = config_tiny(Arch::Pi0);
  Weights w = random_weights(c, 1, DType::BF16);
  w["action_in_proj.weight"] = HostTensor(DType::I32, {64, 32});
  write_files(c, w);
  const std::string e = open_error();
  EXPECT_HAS(e, "'action_in_proj.weight'");
  EXPECT_HAS(e, "dtype I32");
}

TEST_F(CheckpointTest, MixedFloatDtypesLoad) {
  // lerobot keeps the vision tower in f32; the rest may be bf16.
  const ModelConfig c = config_tiny(Arch::Pi0);
  Weights w = random_weights(c, 1, DType::BF16);
  const Weights f = random_weights(c, 1, DType::F32);
  const std::string patch = std::string(kVisionPrefix) + "embeddings.patch_embedding.weight";
  w[patch] = f.at(patch);
  w["action_in_proj.bias"] = HostTensor(DType::F16, {64});
  write_files(c, w);
  const Checkpoint ck = open_checkpoint(dir_);
  EXPECT_EQ(ck.get(patch).dtype, DType::F32);
  EXPECT_EQ(ck.get("action_in_proj.bias").dtype, DType::F16);
}

TEST_F(CheckpointTest, TruncatedFile) {
  const ModelConfig c = config_tiny(Arch::Pi0);
  write_checkpoint(dir_, c, random_weights(c, 1, DType::BF16));
  const auto size = fs::file_size(model_path());
  fs::resize_file(model_path(), size - 100);
  const std::string e = open_error();
  EXPECT_HAS(e, model_path());
  EXPECT_HAS(e, "past the end of the file");
  EXPECT_HAS(e, std::to_string(size - 100) + " bytes; truncated file?");
}

TEST_F(CheckpointTest, OffsetsPastEnd) {
  const ModelConfig c = config_tiny(Arch::Pi0);
  write_checkpoint(dir_, c, random_weights(c, 1, DType::BF16));
  // A header whose one tensor claims bytes far beyond the file.
  std::ofstream out(model_path(), std::ios::binary | std::ios::trunc);
  const std::string header = R"({"action_in_proj.bias": {"dtype": "BF16", "shape": [64], "data_offsets": [4096, 4224]}})";
  const uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header;
  out.close();
  const std::string e = open_error();
  EXPECT_HAS(e, "'action_in_proj.bias'");
  EXPECT_HAS(e, "end 4224");
  EXPECT_HAS(e, "truncated file?");
}

TEST_F(CheckpointTest, HeaderNotJson) {
  const ModelConfig c = config_tiny(Arch::Pi0);
  write_checkpoint(dir_, c, random_weights(c, 1, DType::BF16));
  std::ofstream out(model_path(), std::ios::binary | std::ios::trunc);
  const std::string header = "PK\x03\x04 this is a zip";
  const uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header;
  out.close();
  const std::string e = open_error();
  EXPECT_HAS(e, model_path());
  EXPECT_HAS(e, "not valid JSON");
}

TEST_F(CheckpointTest, MissingFiles) {
  EXPECT_HAS(open_error(), dir_ + ": no model.safetensors (expected an openpi PyTorch checkpoint folder)");
  const ModelConfig c = config_tiny(Arch::Pi0);
  write_checkpoint(dir_, c, random_weights(c, 1, DType::BF16));
  fs::remove(dir_ + "/config.json");
  EXPECT_HAS(open_error(), dir_ + ": no config.json");
  std::ofstream(dir_ + "/config.json") << "{not json";
  EXPECT_HAS(open_error(), dir_ + ": config.json is not valid JSON");
}

TEST_F(CheckpointTest, LerobotPrefixLoads) {
  const ModelConfig c = config_tiny(Arch::Pi05);
  const Weights w = random_weights(c, 3, DType::BF16);
  write_files(c, w, [](const std::string& n) { return "model." + n; });
  const Checkpoint ck = open_checkpoint(dir_);
  EXPECT_EQ(ck.config.arch, Arch::Pi05);
  expect_same_weights(ck, c, w);
}

TEST_F(CheckpointTest, EmbedTokensAliasLoads) {
  const ModelConfig c = config_tiny(Arch::Pi0);
  const Weights w = random_weights(c, 3, DType::BF16);
  write_files(c, w, [](const std::string& n) { return n == kEmbedName ? std::string(kEmbedAlias) : n; });
  const Checkpoint ck = open_checkpoint(dir_);
  EXPECT_EQ(ck.get(kEmbedName).data, ck.get(kEmbedAlias).data);
  expect_same_weights(ck, c, w);
}

TEST_F(CheckpointTest, LerobotPrefixWithEmbedAliasLoads) {
  const ModelConfig c = config_tiny(Arch::Pi0);
  const Weights w = random_weights(c, 3, DType::BF16);
  write_files(c, w, [](const std::string& n) { return "model." + (n == kEmbedName ? std::string(kEmbedAlias) : n); });
  expect_same_weights(open_checkpoint(dir_), c, w);
}

TEST_F(CheckpointTest, UnusedTensorsAreIgnored) {
  const ModelConfig c = config_tiny(Arch::Pi0);
  Weights w = random_weights(c, 3, DType::BF16);
  w[kExpertLmHead] = HostTensor(DType::BF16, {c.llm.vocab, c.expert.width});
  w["normalize_inputs.mean"] = HostTensor(DType::I64, {3});
  write_files(c, w);
  const Checkpoint ck = open_checkpoint(dir_);
  EXPECT_TRUE(ck.has(kExpertLmHead));
  expect_same_weights(ck, c, w);
}

TEST_F(CheckpointTest, FromTensors) {
  const ModelConfig c = config_tiny(Arch::Pi05);
  Weights w = random_weights(c, 5, DType::BF16);
  const void* embed = w.at(kEmbedName).view().data;
  const Checkpoint ck = checkpoint_from_tensors(c, w);
  EXPECT_EQ(ck.config.arch, Arch::Pi05);
  EXPECT_TRUE(ck.dir.empty());
  EXPECT_EQ(ck.get(kEmbedName).data, embed);  // no copy

  w.erase("time_mlp_in.bias");
  try {
    checkpoint_from_tensors(c, w);
    FAIL();
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "<in-memory weights>: missing tensor 'time_mlp_in.bias'");
  }
}

TEST_F(CheckpointTest, WriteCheckpointRefusesBadWeights) {
  const ModelConfig c = config_tiny(Arch::Pi0);
  Weights w = random_weights(c, 5, DType::BF16);
  w.erase("state_proj.weight");
  const std::string out = dir_ + "/out";
  try {
    write_checkpoint(out, c, w);
    FAIL();
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "state_proj.weight");
  }
  EXPECT_FALSE(fs::exists(out + "/model.safetensors"));
}

}  // namespace
}  // namespace pirt
