// The PaliGemma tokenizer wrapper against openpi's tokenizer.py rules, on the tiny test model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>

#include "core/error.h"
#include "policy/tokenizer.h"

namespace pirt {
namespace {

const std::string kModel = std::string(PIRT_TEST_DATA) + "/tokenizer/tiny_paligemma.model";

// spm_encode (Debian's sentencepiece CLI) as an independent encoder, one line of text.
std::vector<int32_t> spm_encode(const std::string& text) {
  const std::string cmd = "printf '%s\\n' '" + text + "' | spm_encode --model " + kModel + " --output_format=id";
  FILE* p = popen(cmd.c_str(), "r");
  std::vector<int32_t> ids;
  int id;
  while (p && std::fscanf(p, "%d", &id) == 1) ids.push_back(id);
  if (p) pclose(p);
  return ids;
}

TEST(Tokenizer, CleanPrompt) {
  EXPECT_EQ(clean_prompt("  pick_up the\nfork \t\n"), "pick up the fork");
  EXPECT_EQ(clean_prompt("Open The Drawer"), "Open The Drawer");  // no lower-casing
  EXPECT_EQ(clean_prompt("\xc2\xa0x_y\xe3\x80\x80"), "x y");      // Unicode spaces strip, as str.strip()
  EXPECT_EQ(clean_prompt(""), "");
  EXPECT_EQ(clean_prompt("a\n\nb"), "a  b");
}

TEST(Tokenizer, DiscretizeMatchesNumpyDigitize) {
  // np.digitize(x, np.linspace(-1, 1, 257)[:-1]) - 1, computed with numpy.
  const double x[] = {-1.5, -1, -0.99, 0, 0.5, 0.9921875, 0.99, 1, 2, std::numeric_limits<double>::quiet_NaN()};
  const int want[] = {-1, 0, 1, 128, 192, 255, 254, 255, 255, 255};
  for (int i = 0; i < 10; ++i) EXPECT_EQ(discretize_state(x[i]), want[i]) << x[i];
  // Every bin edge lands in its own bin, the value just below it in the previous one.
  for (int k = 1; k < 256; ++k) {
    const double edge = -1.0 + k / 128.0;
    EXPECT_EQ(discretize_state(edge), k);
    EXPECT_EQ(discretize_state(std::nextafter(edge, -2.0)), k - 1);
  }
}

TEST(Tokenizer, Pi0FormatIsBosTextNewlinePadded) {
  PaligemmaTokenizer tok(kModel);
  EXPECT_LE(tok.vocab_size(), 1024);
  const auto t = tok.tokenize(" pick_up the fork\n", nullptr, 0, 48);
  std::vector<int32_t> want = {2};  // BOS
  for (int32_t id : spm_encode("pick up the fork")) want.push_back(id);
  want.push_back(tok.encode("\n").at(0));
  ASSERT_EQ(tok.encode("\n").size(), 1u);
  ASSERT_EQ(t.length, static_cast<int>(want.size()));
  ASSERT_EQ(t.ids.size(), 48u);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(t.ids[i], want[i]) << i;
  for (size_t i = 0; i < 48; ++i) {
    EXPECT_EQ(t.mask[i], i < want.size() ? 1 : 0);
    if (i >= want.size()) EXPECT_EQ(t.ids[i], 0);
  }
  EXPECT_FALSE(t.truncated);
}

TEST(Tokenizer, Pi05FormatCarriesTheDiscreteState) {
  PaligemmaTokenizer tok(kModel);
  const double state[3] = {-1.0, 0.0, 0.9999};
  const auto t = tok.tokenize("Open_the drawer", state, 3, 200);
  std::vector<int32_t> want = {2};
  for (int32_t id : tok.encode("Task: Open the drawer, State: 0 128 255;\nAction: ")) want.push_back(id);
  ASSERT_EQ(t.length, static_cast<int>(want.size()));
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(t.ids[i], want[i]) << i;
  // The text before the newline encodes as spm_encode does.
  const auto head = spm_encode("Task: Open the drawer, State: 0 128 255;");
  for (size_t i = 0; i < head.size(); ++i) EXPECT_EQ(t.ids[1 + i], head[i]) << i;
}

TEST(Tokenizer, TruncatesWithoutEos) {
  PaligemmaTokenizer tok(kModel);
  const auto t = tok.tokenize("put the black bowl on the plate and then open the top drawer of the cabinet", nullptr, 0, 8);
  EXPECT_TRUE(t.truncated);
  EXPECT_EQ(t.length, 8);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(t.mask[i], 1);
  EXPECT_EQ(t.ids[0], 2);
  EXPECT_NE(t.ids[7], 1);
}

TEST(Tokenizer, MissingFileIsAnError) {
  EXPECT_THROW(PaligemmaTokenizer("/nonexistent/paligemma_tokenizer.model"), Error);
  EXPECT_THROW(PaligemmaTokenizer(std::string(PIRT_TEST_DATA) + "/tokenizer/corpus.txt"), Error);
}

TEST(Tokenizer, DefaultPathFollowsOpenpi) {
  setenv("OPENPI_DATA_HOME", "/data/openpi", 1);
  EXPECT_EQ(default_tokenizer_path(), "/data/openpi/big_vision/paligemma_tokenizer.model");
  unsetenv("OPENPI_DATA_HOME");
  setenv("HOME", "/home/robot", 1);
  EXPECT_EQ(default_tokenizer_path(), "/home/robot/.cache/openpi/big_vision/paligemma_tokenizer.model");
}

}  // namespace
}  // namespace pirt
