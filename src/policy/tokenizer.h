// openpi's PaligemmaTokenizer (spec section 8): prompt cleaning, the pi0 and pi0.5 prompt formats,
// padding and truncation to max_token_len.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace pirt {

struct TokenizedPrompt {
  std::vector<int32_t> ids;   // [max_len], right-padded with 0
  std::vector<uint8_t> mask;  // [max_len], 1 for real tokens
  int length = 0;             // tokens before padding (after truncation)
  bool truncated = false;
};

// Where openpi caches the PaliGemma tokenizer: $OPENPI_DATA_HOME (default ~/.cache/openpi)
// + /big_vision/paligemma_tokenizer.model.
std::string default_tokenizer_path();

// prompt.strip().replace("_", " ").replace("\n", " "), with Python's str.strip() whitespace set.
std::string clean_prompt(const std::string& prompt);

// np.digitize(x, np.linspace(-1, 1, 257)[:-1]) - 1: the 256-bin state of the pi0.5 prompt.
int discretize_state(double x);

class PaligemmaTokenizer {
 public:
  // Loads a SentencePiece model file; throws Error when it is missing or unreadable.
  explicit PaligemmaTokenizer(const std::string& model_path);
  ~PaligemmaTokenizer();

  // pi0 format when `state` is null: BOS + clean(prompt) + encode("\n").
  // pi0.5 format otherwise: BOS + "Task: {clean}, State: {bins};\nAction: ".
  // `state` is the normalized, unpadded state (state_dim values).
  TokenizedPrompt tokenize(const std::string& prompt, const double* state, int state_dim,
                           int max_len) const;

  // The raw SentencePiece ids of a string, no BOS (for tests).
  std::vector<int32_t> encode(const std::string& text) const;
  int vocab_size() const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

}  // namespace pirt
