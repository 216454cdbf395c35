#include "policy/tokenizer.h"

#include <sentencepiece_processor.h>

#include <array>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace pirt {

std::string default_tokenizer_path() {
  std::string home;
  if (const char* d = std::getenv("OPENPI_DATA_HOME"); d && *d) {
    home = d;
  } else {
    const char* h = std::getenv("HOME");
    home = std::string(h ? h : "") + "/.cache/openpi";
  }
  return home + "/big_vision/paligemma_tokenizer.model";
}

namespace {

// Python's str.isspace() for ASCII and the common Unicode spaces, as UTF-8 byte sequences.
// Returns the byte length of a whitespace character at s[i] (from the front) or 0.
size_t space_len_at(const std::string& s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return 1;
  auto match = [&](std::initializer_list<unsigned char> seq) {
    if (i + seq.size() > s.size()) return false;
    size_t k = i;
    for (unsigned char b : seq)
      if (static_cast<unsigned char>(s[k++]) != b) return false;
    return true;
  };
  if (match({0xc2, 0x85}) || match({0xc2, 0xa0})) return 2;  // NEL, NBSP
  if (match({0xe1, 0x9a, 0x80}) || match({0xe2, 0x80, 0xa8}) || match({0xe2, 0x80, 0xa9}) ||
      match({0xe2, 0x80, 0xaf}) || match({0xe2, 0x81, 0x9f}) || match({0xe3, 0x80, 0x80}))
    return 3;
  if (c == 0xe2 && i + 2 < s.size() && static_cast<unsigned char>(s[i + 1]) == 0x80 &&
      static_cast<unsigned char>(s[i + 2]) >= 0x80 && static_cast<unsigned char>(s[i + 2]) <= 0x8a)
    return 3;  // U+2000..U+200A
  return 0;
}

// Length of a whitespace character that ends at s[end-1], or 0.
size_t space_len_before(const std::string& s, size_t end) {
  for (size_t len = 1; len <= 3 && len <= end; ++len)
    if (space_len_at(s, end - len) == len) return len;
  return 0;
}

}  // namespace

std::string clean_prompt(const std::string& prompt) {
  size_t b = 0, e = prompt.size();
  while (b < e) {
    const size_t n = space_len_at(prompt, b);
    if (!n) break;
    b += n;
  }
  while (e > b) {
    const size_t n = space_len_before(prompt, e);
    if (!n) break;
    e -= n;
  }
  std::string out = prompt.substr(b, e - b);
  for (char& c : out)
    if (c == '_' || c == '\n') c = ' ';
  return out;
}

int discretize_state(double x) {
  // bins[k] = -1 + k/128 (exact in binary); digitize counts the bins <= x (NaN: all of them).
  if (std::isnan(x)) return 255;
  int count = 0;
  for (int k = 0; k < 256; ++k)
    if (-1.0 + k / 128.0 <= x) count = k + 1;
  return count - 1;
}

PaligemmaTokenizer::PaligemmaTokenizer(const std::string& model_path)
    : path_(model_path), sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  std::ifstream f(model_path, std::ios::binary);
  if (!f)
    throw Error("tokenizer: cannot read '" + model_path +
                "' (openpi downloads it from gs://big_vision/paligemma_tokenizer.model; pass --tokenizer)");
  std::stringstream ss;
  ss << f.rdbuf();
  const auto status = sp_->LoadFromSerializedProto(ss.str());
  if (!status.ok()) throw Error("tokenizer: '" + model_path + "' is not a SentencePiece model: " + status.ToString());
}

PaligemmaTokenizer::~PaligemmaTokenizer() = default;

int PaligemmaTokenizer::vocab_size() const { return sp_->GetPieceSize(); }

std::vector<int32_t> PaligemmaTokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  const auto status = sp_->Encode(text, &ids);
  if (!status.ok()) throw Error("tokenizer: " + status.ToString());
  return std::vector<int32_t>(ids.begin(), ids.end());
}

TokenizedPrompt PaligemmaTokenizer::tokenize(const std::string& prompt, const double* state, int state_dim,
                                             int max_len) const {
  const std::string cleaned = clean_prompt(prompt);
  std::vector<int32_t> ids;
  const int bos = sp_->bos_id();
  if (bos >= 0) ids.push_back(bos);
  if (state) {
    std::string s = "Task: " + cleaned + ", State: ";
    for (int i = 0; i < state_dim; ++i) {
      if (i) s += ' ';
      s += std::to_string(discretize_state(state[i]));
    }
    s += ";\nAction: ";
    const auto body = encode(s);
    ids.insert(ids.end(), body.begin(), body.end());
  } else {
    const auto body = encode(cleaned);
    const auto nl = encode("\n");  // "start of answer", tokenized on its own
    ids.insert(ids.end(), body.begin(), body.end());
    ids.insert(ids.end(), nl.begin(), nl.end());
  }
  TokenizedPrompt t;
  t.truncated = static_cast<int>(ids.size()) > max_len;
  t.length = std::min(static_cast<int>(ids.size()), max_len);
  t.ids.assign(max_len, 0);
  t.mask.assign(max_len, 0);
  for (int i = 0; i < t.length; ++i) {
    t.ids[i] = ids[i];
    t.mask[i] = 1;
  }
  return t;
}

}  // namespace pirt
