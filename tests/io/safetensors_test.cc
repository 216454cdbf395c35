#include "io/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "io/mmap.h"

namespace pirt {
namespace {

namespace fs = std::filesystem;

// A fresh folder per test, removed afterwards.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("pirt_st_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Writes the 8-byte length, `header` verbatim and `data_bytes` zero bytes.
  std::string write_raw(const std::string& header, size_t data_bytes, const std::string& name = "f.safetensors") {
    const std::string p = path(name);
    std::ofstream out(p, std::ios::binary);
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
    out << header << std::string(data_bytes, '\0');
    return p;
  }

  // The message of the Error that opening `p` throws ("" if none).
  static std::string open_error(const std::string& p) {
    try {
      SafetensorsFile::open(p);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  fs::path dir_;
};

#define EXPECT_HAS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

HostTensor patterned(DType dtype, Shape shape, int salt) {
  HostTensor t(dtype, shape);
  auto* b = t.ptr<uint8_t>();
  for (size_t i = 0; i < t.view().nbytes(); ++i) b[i] = static_cast<uint8_t>(i * 31 + salt * 7 + 1);
  return t;
}

TEST_F(SafetensorsTest, RoundTripsEveryDtype) {
  std::vector<std::pair<std::string, HostTensor>> owned = {
      {"u8", patterned(DType::U8, {3}, 1)},            {"f32", patterned(DType::F32, {2, 3}, 2)},
      {"bf16", patterned(DType::BF16, {5, 1, 3}, 3)},  {"f16", patterned(DType::F16, {7}, 4)},
      {"i32", patterned(DType::I32, {1, 2, 3, 4}, 5)}, {"i64", patterned(DType::I64, {3, 1}, 6)},
      {"bool", patterned(DType::BOOL, {9}, 7)},        {"scalar", patterned(DType::F32, {}, 8)},
      {"empty", patterned(DType::BF16, {0, 4}, 9)},
  };
  std::vector<std::pair<std::string, Tensor>> list;
  for (auto& [n, t] : owned) list.emplace_back(n, t.view());
  const std::string p = path("rt.safetensors");
  write_safetensors(p, list, {{"format", "pt"}, {"note", "hello"}});

  const SafetensorsFile f = SafetensorsFile::open(p);
  EXPECT_EQ(f.size(), owned.size());
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "hello");
  EXPECT_EQ(f.find("missing"), nullptr);
  std::vector<std::string> names = f.names();
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  for (const auto& [n, h] : owned) {
    const Tensor* t = f.find(n);
    ASSERT_NE(t, nullptr) << n;
    EXPECT_EQ(t->dtype, h.dtype()) << n;
    EXPECT_EQ(t->shape, h.shape()) << n;
    EXPECT_EQ(t->where, Where::Host);
    EXPECT_EQ(std::memcmp(t->data, h.view().data, h.view().nbytes()), 0) << n;
    // Largest elements first: every tensor is aligned to its element size.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % dtype_size(t->dtype), 0u) << n;
  }
}

// What Python's safetensors checks: 8-byte aligned header, data offsets contiguous from 0 to the end.
TEST_F(SafetensorsTest, WritesTheStandardLayout) {
  HostTensor a = patterned(DType::BF16, {3}, 1), b = patterned(DType::F32, {5}, 2), c = patterned(DType::U8, {3}, 3);
  const std::string p = path("std.safetensors");
  write_safetensors(p, {{"a", a.view()}, {"b", b.view()}, {"c", c.view()}});
  const MappedFile m = MappedFile::open(p);
  uint64_t n = 0;
  std::memcpy(&n, m.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  const auto header = nlohmann::json::parse(m.data() + 8, m.data() + 8 + n);
  EXPECT_FALSE(header.contains("__metadata__"));  // none given
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const auto& [name, e] : header.items()) spans.emplace_back(e["data_offsets"][0], e["data_offsets"][1]);
  std::sort(spans.begin(), spans.end());
  uint64_t at = 0;
  for (auto [b0, e0] : spans) {
    EXPECT_EQ(b0, at);
    at = e0;
  }
  EXPECT_EQ(8 + n + at, m.size());
  EXPECT_EQ(header["b"]["dtype"], "F32");
  EXPECT_EQ(header["b"]["data_offsets"][0], 0);  // F32 first
}

TEST_F(SafetensorsTest, WriteRejectsBadInput) {
  HostTensor a = patterned(DType::F32, {2}, 1);
  auto write_error = [&](const std::vector<std::pair<std::string, Tensor>>& list, const std::string& p) {
    try {
      write_safetensors(p, list);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_HAS(write_error({{"x", a.view()}, {"x", a.view()}}, path("d.safetensors")), "'x' given twice");
  EXPECT_HAS(write_error({{"__metadata__", a.view()}}, path("d.safetensors")), "__metadata__");
  const std::string bad = path("no/such/folder/x.safetensors");
  EXPECT_HAS(write_error({{"x", a.view()}}, bad), "no/such/folder");
  EXPECT_FALSE(fs::exists(path("d.safetensors")));
}

TEST_F(SafetensorsTest, MissingFile) {
  const std::string p = path("nope.safetensors");
  const std::string e = open_error(p);
  EXPECT_HAS(e, p);
  EXPECT_HAS(e, "No such file");
}

TEST_F(SafetensorsTest, ShorterThan8Bytes) {
  const std::string p = path("short.safetensors");
  std::ofstream(p, std::ios::binary) << "abc";
  const std::string e = open_error(p);
  EXPECT_HAS(e, p);
  EXPECT_HAS(e, "too short");
}

TEST_F(SafetensorsTest, HeaderLengthPastEnd) {
  const std::string p = path("long.safetensors");
  {
    std::ofstream out(p, std::ios::binary);
    const uint64_t n = 1000;
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << "{}";
  }
  const std::string e = open_error(p);
  EXPECT_HAS(e, p);
  EXPECT_HAS(e, "header length 1000");
  EXPECT_HAS(e, "10 bytes");
}

TEST_F(SafetensorsTest, HeaderNotJson) {
  const std::string e = open_error(write_raw("this is not json", 0));
  EXPECT_HAS(e, "f.safetensors");
  EXPECT_HAS(e, "not valid JSON");
  EXPECT_HAS(open_error(write_raw("[1, 2]", 0)), "not a JSON object");
}

TEST_F(SafetensorsTest, EntryMissingField) {
  EXPECT_HAS(open_error(write_raw(R"({"w": {"shape": [2], "data_offsets": [0, 8]}})", 8)), "tensor 'w'");
  EXPECT_HAS(open_error(write_raw(R"({"w": {"shape": [2], "data_offsets": [0, 8]}})", 8)), "\"dtype\"");
  EXPECT_HAS(open_error(write_raw(R"({"w": {"dtype": "F32", "data_offsets": [0, 8]}})", 8)), "\"shape\"");
  EXPECT_HAS(open_error(write_raw(R"({"w": {"dtype": "F32", "shape": [2]}})", 8)), "\"data_offsets\"");
  EXPECT_HAS(open_error(write_raw(R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", 8)),
             "tensor 'w'");
  EXPECT_HAS(open_error(write_raw(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", 8)),
             "tensor 'w'");
}

TEST_F(SafetensorsTest, UnknownDtype) {
  const std::string e = open_error(write_raw(R"({"weird": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}})", 8));
  EXPECT_HAS(e, "tensor 'weird'");
  EXPECT_HAS(e, "'F64'");
}

TEST_F(SafetensorsTest, SizeMismatch) {
  const std::string e = open_error(write_raw(R"({"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 8]}})", 8));
  EXPECT_HAS(e, "tensor 'w'");
  EXPECT_HAS(e, "8 bytes");
  EXPECT_HAS(e, "needs 12");
}

TEST_F(SafetensorsTest, OffsetsPastEnd) {
  const std::string header = R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})";
  const std::string p = write_raw(header, 10);
  const std::string e = open_error(p);
  EXPECT_HAS(e, "tensor 'w'");
  EXPECT_HAS(e, "end 16");
  EXPECT_HAS(e, strformat("%zu bytes", 8 + header.size() + 10));
  EXPECT_HAS(e, "truncated file?");
}

TEST_F(SafetensorsTest, MetadataAndPaddedHeader) {
  const std::string p = write_raw(
      R"({"__metadata__": {"format": "pt", "n": 3}, "w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}   )", 2);
  const SafetensorsFile f = SafetensorsFile::open(p);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("n"), "3");
  EXPECT_EQ(f.names(), std::vector<std::string>{"w"});
  EXPECT_EQ(f.find("w")->numel(), 2);
}

TEST_F(SafetensorsTest, MappedFileErrors) {
  try {
    MappedFile::open(dir_.string());
    FAIL() << "a folder should not map";
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "not a regular file");
  }
  const std::string p = path("empty");
  std::ofstream(p).close();
  const MappedFile m = MappedFile::open(p);
  EXPECT_EQ(m.size(), 0u);
  EXPECT_EQ(m.data(), nullptr);
}

}  // namespace
}  // namespace pirt
