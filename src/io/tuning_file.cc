#include "io/tuning_file.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace pirt {
namespace {

const char* short_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    default: return "?";
  }
}

bool float_type(const std::string& s, DType* t) {
  if (s == "f32") *t = DType::F32;
  else if (s == "bf16") *t = DType::BF16;
  else if (s == "f16") *t = DType::F16;
  else return false;
  return true;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out(1);
  for (char c : s) {
    if (c == sep)
      out.emplace_back();
    else
      out.back() += c;
  }
  return out;
}

struct Field {
  std::string text;
  int column;  // 1-based column of its first character
};

// Splits one CSV line into fields; "..." quotes a field ("" inside is a quote).
std::vector<Field> csv_fields(const std::string& line, const std::string& where) {
  std::vector<Field> out;
  size_t i = 0;
  while (true) {
    Field f{"", static_cast<int>(i) + 1};
    if (i < line.size() && line[i] == '"') {
      ++i;
      while (true) {
        if (i >= line.size()) throw_error(strformat("%s:%d: unterminated quoted field", where.c_str(), f.column));
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            f.text += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        f.text += line[i++];
      }
      if (i < line.size() && line[i] != ',')
        throw_error(strformat("%s:%d: text after a quoted field", where.c_str(), static_cast<int>(i) + 1));
    } else {
      while (i < line.size() && line[i] != ',') f.text += line[i++];
    }
    out.push_back(f);
    if (i >= line.size()) break;
    ++i;  // the comma
  }
  return out;
}

std::string quoted(const std::string& s) {
  if (s.find_first_of(",\"") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

bool parse_int(const std::string& s, int64_t* v) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(s.c_str(), &end, 10);
  if (*end != '\0' || errno) return false;
  *v = x;
  return true;
}

bool parse_double(const std::string& s, double* v) {
  if (s.empty()) return false;
  char* end = nullptr;
  const double x = std::strtod(s.c_str(), &end);
  if (*end != '\0' || !std::isfinite(x)) return false;
  *v = x;
  return true;
}

}  // namespace

const char* const kTuningHeader = "gpu,m,n,k,layout,epilogue,algorithm,us,tflops";

std::string GemmKey::layout() const {
  std::string s = std::string(short_name(x)) + "." + short_name(w) + "." + short_name(out);
  return tf32 ? s + "+tf32" : s;
}

std::string GemmKey::epilogue() const {
  std::string s;
  auto add = [&s](const std::string& p) { s += (s.empty() ? "" : "+") + p; };
  if (has_bias) add(std::string("bias_") + short_name(bias));
  if (gelu) add("gelu");
  if (has_res) add(std::string("res_") + short_name(res));
  return s.empty() ? "none" : s;
}

std::string GemmKey::str() const {
  return strformat("m=%lld n=%lld k=%lld %s %s", (long long)m, (long long)n, (long long)k, layout().c_str(),
                   epilogue().c_str());
}

bool GemmKey::operator==(const GemmKey& o) const {
  return m == o.m && n == o.n && k == o.k && x == o.x && w == o.w && out == o.out && tf32 == o.tf32 &&
         has_bias == o.has_bias && (!has_bias || bias == o.bias) && gelu == o.gelu && has_res == o.has_res &&
         (!has_res || res == o.res);
}

size_t GemmKeyHash::operator()(const GemmKey& k) const {
  uint64_t h = static_cast<uint64_t>(k.m) * 0x9E3779B97F4A7C15ull;
  h ^= static_cast<uint64_t>(k.n) + 0x632BE59BD9B4E019ull + (h << 6) + (h >> 2);
  h ^= static_cast<uint64_t>(k.k) + 0x94D049BB133111EBull + (h << 6) + (h >> 2);
  const uint64_t bits = static_cast<uint64_t>(k.x) | static_cast<uint64_t>(k.w) << 4 |
                        static_cast<uint64_t>(k.out) << 8 | uint64_t{k.tf32} << 12 |
                        uint64_t{k.has_bias} << 13 | (k.has_bias ? static_cast<uint64_t>(k.bias) : 0) << 14 |
                        uint64_t{k.gelu} << 18 | uint64_t{k.has_res} << 19 |
                        (k.has_res ? static_cast<uint64_t>(k.res) : 0) << 20;
  h ^= bits + (h << 6) + (h >> 2);
  return static_cast<size_t>(h);
}

std::string GemmAlgorithm::str() const {
  std::string s = kind + ":";
  bool first = true;
  // Fixed order for the known parameters, then the rest alphabetically.
  static const char* const order[] = {"cw", "wk", "splits", "id", "tile", "stages", "splitk", "red", "swizzle",
                                      "custom", "cluster", "inner"};
  std::map<std::string, int64_t> rest = params;
  for (const char* name : order) {
    auto it = rest.find(name);
    if (it == rest.end()) continue;
    s += strformat("%s%s=%lld", first ? "" : ",", name, (long long)it->second);
    first = false;
    rest.erase(it);
  }
  for (const auto& [name, v] : rest) {
    s += strformat("%s%s=%lld", first ? "" : ",", name.c_str(), (long long)v);
    first = false;
  }
  return s;
}

GemmAlgorithm parse_gemm_algorithm(const std::string& text) {
  const size_t colon = text.find(':');
  if (colon == std::string::npos)
    throw_error("expected \"small:...\" or \"lt:...\", got \"" + text + "\"");
  GemmAlgorithm a;
  a.kind = text.substr(0, colon);
  if (a.kind != "small" && a.kind != "lt")
    throw_error("unknown algorithm kind \"" + a.kind + "\" (expected small or lt)");
  const std::string rest = text.substr(colon + 1);
  if (!rest.empty()) {
    for (const std::string& kv : split(rest, ',')) {
      const size_t eq = kv.find('=');
      int64_t v = 0;
      if (eq == std::string::npos || eq == 0 || !parse_int(kv.substr(eq + 1), &v))
        throw_error("expected name=integer, got \"" + kv + "\"");
      a.params[kv.substr(0, eq)] = v;
    }
  }
  if (a.kind == "small") {
    const int64_t cw = a.get("cw"), wk = a.get("wk");
    if (!a.params.count("cw") || !a.params.count("wk"))
      throw_error("small: needs cw and wk (\"small:cw=2,wk=4\"), got \"" + text + "\"");
    if (cw != 1 && cw != 2 && cw != 4) throw_error(strformat("small: cw must be 1, 2 or 4, not %lld", (long long)cw));
    if (wk != 1 && wk != 2 && wk != 4 && wk != 8)
      throw_error(strformat("small: wk must be 1, 2, 4 or 8, not %lld", (long long)wk));
  } else if (!a.params.count("id")) {
    throw_error("lt: needs at least id (\"lt:id=..,tile=..\"), got \"" + text + "\"");
  }
  return a;
}

std::vector<TuningRow> parse_tuning_csv(const std::string& text, const std::string& source) {
  static const char* const kColumns[] = {"gpu", "m", "n", "k", "layout", "epilogue", "algorithm", "us", "tflops"};
  std::vector<TuningRow> rows;
  std::istringstream in(text);
  std::string line;
  int line_no = 0;
  bool header = false;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    const std::string where = strformat("%s:%d", source.c_str(), line_no);
    const std::vector<Field> f = csv_fields(line, where);
    if (!header) {
      if (line != kTuningHeader)
        throw_error(strformat("%s:1: expected the header \"%s\"", where.c_str(), kTuningHeader));
      header = true;
      continue;
    }
    if (f.size() != 9)
      throw_error(strformat("%s:1: expected 9 columns (%s), found %d", where.c_str(), kTuningHeader, (int)f.size()));
    auto bad = [&](int i, const std::string& what) {
      throw_error(strformat("%s:%d: column \"%s\": %s", where.c_str(), f[i].column, kColumns[i], what.c_str()));
    };
    TuningRow r;
    r.gpu = f[0].text;
    if (r.gpu.empty()) bad(0, "empty GPU name");
    int64_t* dims[3] = {&r.key.m, &r.key.n, &r.key.k};
    for (int i = 1; i <= 3; ++i)
      if (!parse_int(f[i].text, dims[i - 1]) || *dims[i - 1] <= 0)
        bad(i, "expected a positive integer, got \"" + f[i].text + "\"");
    // layout: x.w.out[+tf32]
    {
      std::string lay = f[4].text;
      const size_t plus = lay.find('+');
      if (plus != std::string::npos) {
        if (lay.substr(plus) != "+tf32") bad(4, "unknown suffix \"" + lay.substr(plus) + "\" (only +tf32)");
        r.key.tf32 = true;
        lay = lay.substr(0, plus);
      }
      const std::vector<std::string> t = split(lay, '.');
      if (t.size() != 3 || !float_type(t[0], &r.key.x) || !float_type(t[1], &r.key.w) ||
          !float_type(t[2], &r.key.out))
        bad(4, "expected x.w.out dtypes such as \"bf16.bf16.bf16\", got \"" + f[4].text + "\"");
    }
    // epilogue: none | bias_<t>+gelu+res_<t> (parts in that order, each optional)
    if (f[5].text != "none") {
      int stage = 0;
      for (const std::string& p : split(f[5].text, '+')) {
        if (p.rfind("bias_", 0) == 0 && stage < 1 && float_type(p.substr(5), &r.key.bias)) {
          r.key.has_bias = true;
          stage = 1;
        } else if (p == "gelu" && stage < 2) {
          r.key.gelu = true;
          stage = 2;
        } else if (p.rfind("res_", 0) == 0 && stage < 3 && float_type(p.substr(4), &r.key.res)) {
          r.key.has_res = true;
          stage = 3;
        } else {
          bad(5, "expected \"none\" or bias_<dtype>, gelu, res_<dtype> joined by '+' in that order, got \"" +
                     f[5].text + "\"");
        }
      }
    }
    try {
      r.algorithm = parse_gemm_algorithm(f[6].text);
    } catch (const Error& e) {
      bad(6, e.what());
    }
    if (!parse_double(f[7].text, &r.us) || r.us < 0) bad(7, "expected a non-negative number, got \"" + f[7].text + "\"");
    if (!parse_double(f[8].text, &r.tflops) || r.tflops < 0)
      bad(8, "expected a non-negative number, got \"" + f[8].text + "\"");
    rows.push_back(std::move(r));
  }
  if (!header) throw_error(source + ": empty; expected the header \"" + std::string(kTuningHeader) + "\"");
  return rows;
}

std::vector<TuningRow> read_tuning_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_error(path + ": cannot open the tuning file");
  std::stringstream text;
  text << in.rdbuf();
  return parse_tuning_csv(text.str(), path);
}

std::string tuning_csv(const std::vector<TuningRow>& rows) {
  std::string s = std::string(kTuningHeader) + "\n";
  for (const TuningRow& r : rows)
    s += strformat("%s,%lld,%lld,%lld,%s,%s,%s,%.3f,%.2f\n", quoted(r.gpu).c_str(), (long long)r.key.m,
                   (long long)r.key.n, (long long)r.key.k, r.key.layout().c_str(), r.key.epilogue().c_str(),
                   quoted(r.algorithm.str()).c_str(), r.us, r.tflops);
  return s;
}

TuningTable::TuningTable(const std::vector<TuningRow>& rows, const std::string& gpu, std::string source)
    : source_(std::move(source)) {
  for (const TuningRow& r : rows)
    if (gpu.empty() || r.gpu == gpu) rows_[r.key] = r;
}

const TuningRow* TuningTable::find(const GemmKey& key) const {
  auto it = rows_.find(key);
  return it == rows_.end() ? nullptr : &it->second;
}

}  // namespace pirt
