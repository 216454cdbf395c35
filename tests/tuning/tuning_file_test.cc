#include "io/tuning_file.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "core/error.h"

namespace pirt {
namespace {

const std::string kHeader = "gpu,m,n,k,layout,epilogue,algorithm,us,tflops\n";

std::string error_of(const std::string& text) {
  try {
    parse_tuning_csv(text, "t.csv");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TuningFile, ParsesRowsWithQuotedAlgorithms) {
  const auto rows = parse_tuning_csv(
      kHeader +
          "# a comment\n"
          "NVIDIA H100 80GB HBM3,51,2560,1024,bf16.bf16.bf16,none,\"small:cw=2,wk=4,splits=4\",9.81,27.2\n"
          "\n"
          "NVIDIA H100 80GB HBM3,768,1152,4304,bf16.bf16.bf16,bias_bf16+res_bf16,\"lt:id=66,tile=17,stages=35,"
          "splitk=1,red=0,swizzle=0,custom=2,cluster=7,inner=0\",15.8,482\r\n"
          "\"GPU, with comma\",1,1024,32,f32.f32.f32+tf32,bias_f32+gelu,lt:id=13,2.18,0.03\n",
      "t.csv");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].gpu, "NVIDIA H100 80GB HBM3");
  EXPECT_EQ(rows[0].key.m, 51);
  EXPECT_EQ(rows[0].key.n, 2560);
  EXPECT_EQ(rows[0].key.k, 1024);
  EXPECT_EQ(rows[0].algorithm.kind, "small");
  EXPECT_EQ(rows[0].algorithm.get("cw"), 2);
  EXPECT_EQ(rows[0].algorithm.get("wk"), 4);
  EXPECT_TRUE(rows[1].key.has_bias && rows[1].key.has_res && !rows[1].key.gelu);
  EXPECT_EQ(rows[1].algorithm.get("tile"), 17);
  EXPECT_EQ(rows[2].gpu, "GPU, with comma");
  EXPECT_TRUE(rows[2].key.tf32 && rows[2].key.gelu && rows[2].key.x == DType::F32);
}

TEST(TuningFile, RoundTripsThroughTheWriter) {
  const auto rows = parse_tuning_csv(
      kHeader + "H100,51,8192,1024,bf16.bf16.f32,bias_f32+gelu+res_bf16,\"small:cw=4,wk=8,splits=1\",8.5,101\n",
      "a.csv");
  const std::string text = tuning_csv(rows);
  EXPECT_EQ(text, kHeader + "H100,51,8192,1024,bf16.bf16.f32,bias_f32+gelu+res_bf16,\"small:cw=4,wk=8,splits=1\","
                            "8.500,101.00\n");
  const auto again = parse_tuning_csv(text, "b.csv");
  ASSERT_EQ(again.size(), 1u);
  EXPECT_TRUE(again[0].key == rows[0].key);
  EXPECT_EQ(again[0].algorithm.str(), rows[0].algorithm.str());
}

TEST(TuningFile, MalformedRowsNameFileLineAndColumn) {
  const std::string ok = "H100,51,2560,1024,bf16.bf16.bf16,none,\"small:cw=2,wk=4\",9.8,27\n";
  EXPECT_EQ(error_of(kHeader + ok), "");
  // Line 3 (after the header and a good row), column of the field.
  EXPECT_EQ(error_of(kHeader + ok + "H100,x51,2560,1024,bf16.bf16.bf16,none,\"small:cw=2,wk=4\",9.8,27\n"),
            "t.csv:3:6: column \"m\": expected a positive integer, got \"x51\"");
  EXPECT_EQ(error_of(kHeader + "H100,51,0,1024,bf16.bf16.bf16,none,\"small:cw=2,wk=4\",9.8,27\n"),
            "t.csv:2:9: column \"n\": expected a positive integer, got \"0\"");
  EXPECT_NE(error_of(kHeader + "H100,51,2560,1024,bf16.f8.bf16,none,\"small:cw=2,wk=4\",9.8,27\n")
                .find("t.csv:2:19: column \"layout\""),
            std::string::npos);
  EXPECT_NE(error_of(kHeader + "H100,51,2560,1024,bf16.bf16.bf16,gelu+bias_f32,\"small:cw=2,wk=4\",9.8,27\n")
                .find("t.csv:2:34: column \"epilogue\""),
            std::string::npos);
  EXPECT_NE(error_of(kHeader + "H100,51,2560,1024,bf16.bf16.bf16,none,\"small:cw=3,wk=4\",9.8,27\n")
                .find("t.csv:2:39: column \"algorithm\": small: cw must be 1, 2 or 4"),
            std::string::npos);
  EXPECT_NE(error_of(kHeader + "H100,51,2560,1024,bf16.bf16.bf16,none,cublas:7,9.8,27\n")
                .find("column \"algorithm\": unknown algorithm kind \"cublas\""),
            std::string::npos);
  EXPECT_NE(error_of(kHeader + "H100,51,2560,1024,bf16.bf16.bf16,none,\"lt:tile=3\",9.8,27\n").find("lt: needs at least id"),
            std::string::npos);
  EXPECT_NE(error_of(kHeader + "H100,51,2560,1024,bf16.bf16.bf16,none,\"small:cw=2,wk=4\",fast,27\n")
                .find("t.csv:2:57: column \"us\""),
            std::string::npos);
  EXPECT_NE(error_of(kHeader + "H100,51,2560,1024,bf16.bf16.bf16,none,\"small:cw=2,wk=4\",9.8\n")
                .find("t.csv:2:1: expected 9 columns"),
            std::string::npos);
  EXPECT_NE(error_of(kHeader + "H100,51,2560,1024,bf16.bf16.bf16,none,\"small:cw=2,wk=4,9.8,27\n")
                .find("t.csv:2:39: unterminated quoted field"),
            std::string::npos);
  EXPECT_NE(error_of("gpu,m,n,k\n").find("t.csv:1:1: expected the header"), std::string::npos);
  EXPECT_NE(error_of("").find("t.csv: empty"), std::string::npos);
}

TEST(TuningFile, MissingFileIsAnError) {
  try {
    read_tuning_file("/nonexistent/pirt.csv");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/pirt.csv: cannot open"), std::string::npos);
  }
}

TEST(TuningFile, TableKeepsOneGpuAndLooksUpByKey) {
  const auto rows = parse_tuning_csv(kHeader +
                                         "A,51,2560,1024,bf16.bf16.bf16,none,\"small:cw=2,wk=4\",9.8,27\n"
                                         "B,51,2560,1024,bf16.bf16.bf16,none,\"small:cw=4,wk=8\",9.8,27\n"
                                         "A,51,2560,1024,bf16.bf16.bf16,res_bf16,lt:id=66,9.8,27\n",
                                     "t.csv");
  const TuningTable a(rows, "A");
  EXPECT_EQ(a.size(), 2u);
  GemmKey k;
  k.m = 51, k.n = 2560, k.k = 1024;
  ASSERT_NE(a.find(k), nullptr);
  EXPECT_EQ(a.find(k)->algorithm.get("cw"), 2);
  k.has_res = true;
  ASSERT_NE(a.find(k), nullptr);
  EXPECT_EQ(a.find(k)->algorithm.kind, "lt");
  k.m = 50;
  EXPECT_EQ(a.find(k), nullptr);
  EXPECT_TRUE(TuningTable(rows, "C").empty());
}

// The tables that ship in bench/tuning/ (compiled into the CUDA backend) must parse.
TEST(TuningFile, ShippedTablesParse) {
  const std::filesystem::path dir = std::filesystem::path(PIRT_SOURCE_DIR) / "bench" / "tuning";
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << "no bench/tuning";
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() != ".csv") continue;
    ++files;
    const auto rows = read_tuning_file(e.path().string());
    EXPECT_FALSE(rows.empty()) << e.path();
    for (const TuningRow& r : rows) EXPECT_EQ(r.gpu, rows[0].gpu) << e.path() << ": one GPU per file";
  }
  EXPECT_GT(files, 0);
}

}  // namespace
}  // namespace pirt
