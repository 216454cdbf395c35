// Fuzzes the request path short of the model: raw frame -> msgpack_decode -> Policy::prepare ->
// Policy::make_inputs, for LIBERO, DROID and ALOHA under pi0 and pi0.5. Anything but a pirt::Error
// (a crash, a sanitizer report, another exception type, a huge allocation) is a finding.
//
// With PIRT_FUZZ_MAIN: a structured random-mutation driver, `fuzz_request N [seed]`.
// Without: LLVMFuzzerTestOneInput for libFuzzer.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <msgpack.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/config.h"
#include "policy/policy.h"
#include "serve/msgpack_numpy.h"

namespace {

using namespace pirt;

const std::string kData = PIRT_TEST_DATA;

struct Target {
  ModelConfig config;
  std::unique_ptr<Policy> policy;
};

std::vector<Target>& targets() {
  static std::vector<Target> t = [] {
    std::vector<Target> v;
    for (Arch arch : {Arch::Pi0, Arch::Pi05})
      for (Robot r : {Robot::Libero, Robot::Droid, Robot::Aloha}) {
        PolicyOptions o;
        o.robot = r;
        o.tokenizer_path = kData + "/tokenizer/tiny_paligemma.model";
        o.norm_stats_path = kData + "/norm_stats/" + robot_name(r) + "/norm_stats.json";
        Target tg;
        tg.config = config_tiny(arch);
        tg.policy = std::make_unique<Policy>(tg.config, tg.config.action_horizon, o);
        v.push_back(std::move(tg));
      }
    return v;
  }();
  return t;
}

[[noreturn]] void finding(const char* what, const std::string& bytes) {
  std::fprintf(stderr, "FINDING: %s\n", what);
  if (FILE* f = std::fopen("fuzz-crash.bin", "wb")) {
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
    std::fprintf(stderr, "input written to fuzz-crash.bin (%zu bytes)\n", bytes.size());
  }
  std::abort();
}

// What Server::handle does before the queue, for every policy.
void run_one(const std::string& bytes) {
  Value v;
  try {
    v = msgpack_decode(bytes);
  } catch (const Error&) {
    return;
  } catch (const std::exception& e) {
    finding((std::string("msgpack_decode threw a non-pirt exception: ") + e.what()).c_str(), bytes);
  }
  for (const Target& t : targets()) {
    try {
      const PreparedRequest p = t.policy->prepare(v);
      const ModelInputs in = t.policy->make_inputs({&p});
      (void)in;
    } catch (const Error&) {
    } catch (const std::exception& e) {
      finding((std::string("prepare threw a non-pirt exception: ") + e.what()).c_str(), bytes);
    }
  }
}

}  // namespace

#ifndef PIRT_FUZZ_MAIN

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  run_one(std::string(reinterpret_cast<const char*>(data), size));
  return 0;
}

#else

namespace {

std::mt19937_64 rng;
int64_t rnd(int64_t n) { return n <= 0 ? 0 : static_cast<int64_t>(rng() % static_cast<uint64_t>(n)); }
bool coin(int p = 2) { return rnd(p) == 0; }

NdArray image(int h, int w, bool chw) {
  NdArray a;
  a.dtype = "|u1";
  a.shape = chw ? std::vector<int64_t>{3, h, w} : std::vector<int64_t>{h, w, 3};
  a.data.resize(static_cast<size_t>(h) * w * 3);
  for (char& c : a.data) c = static_cast<char>(rnd(256));
  return a;
}

NdArray vec(int n) {
  std::vector<double> v(n);
  for (double& x : v) x = (rnd(2000) - 1000) / 500.0;
  return NdArray::from_doubles(v, {n});
}

Value small_image(bool chw) {
  const int h = coin(8) ? 224 : 1 + static_cast<int>(rnd(40)), w = coin(8) ? 224 : 1 + static_cast<int>(rnd(40));
  return image(h, w, chw);
}

Value valid_request(Robot r) {
  Value q{ValueMap{}};
  switch (r) {
    case Robot::Libero:
      q.set("observation/image", small_image(false));
      q.set("observation/wrist_image", small_image(coin()));
      q.set("observation/state", vec(8));
      break;
    case Robot::Droid:
      q.set("observation/exterior_image_1_left", small_image(false));
      q.set("observation/wrist_image_left", small_image(false));
      q.set("observation/joint_position", vec(7));
      q.set("observation/gripper_position", coin() ? Value{vec(1)} : Value{0.5});
      break;
    case Robot::Aloha: {
      Value cams{ValueMap{}};
      for (const char* c : {"cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist"})
        if (!coin(4) || std::string(c) == "cam_high") cams.set(c, small_image(true));
      q.set("images", cams);
      q.set("state", vec(14));
      break;
    }
  }
  if (!coin(8)) q.set("prompt", "pick up the black bowl");
  return q;
}

const char* const kDtypes[] = {"<f4", "<f8", "<f2", "|u1", "<u2", "<u4", "<u8", "|i1", "<i2", "<i4",
                               "<i8", "|b1", ">f4", "<U5", "<U0", "<f3", "", "U", "f", "<c8", "|O",
                               "<f99999999999999999999", "<f-4", "<V8", "|S3"};

int64_t wild_dim() {
  switch (rnd(10)) {
    case 0: return -1;
    case 1: return -static_cast<int64_t>(rnd(1LL << 40));
    case 2: return 1LL << (30 + rnd(33));
    case 3: return std::numeric_limits<int64_t>::max();
    case 4: return std::numeric_limits<int64_t>::min();
    case 5: return 0;
    case 6: return 3;
    case 7: return (1LL << 32) + rnd(4);
    default: return rnd(300);
  }
}

double wild_double() {
  switch (rnd(8)) {
    case 0: return std::nan("");
    case 1: return INFINITY;
    case 2: return -INFINITY;
    case 3: return 1e308;
    case 4: return -1e308;
    case 5: return 1e-310;
    case 6: return static_cast<double>(rnd(1LL << 62)) * (coin() ? 1 : -1);
    default: return (rnd(2000) - 1000) / 100.0;
  }
}

Value random_value(int depth);

void mutate_array(NdArray& a) {
  switch (rnd(8)) {
    case 0: a.dtype = kDtypes[rnd(std::size(kDtypes))]; break;
    case 1:
      if (!a.shape.empty()) a.shape[rnd(a.shape.size())] = wild_dim();
      break;
    case 2: {
      a.shape.clear();
      for (int64_t i = rnd(6); i > 0; --i) a.shape.push_back(coin() ? wild_dim() : rnd(5));
      break;
    }
    case 3: a.data.resize(rnd(a.data.size() + 16)); break;
    case 4: {  // NaN/inf into a float array
      if (a.dtype == "<f8" || a.dtype == "<f4") {
        const size_t is = a.dtype == "<f8" ? 8 : 4;
        for (int k = 0; k < 4 && a.data.size() >= is; ++k) {
          const size_t i = rnd(a.data.size() / is) * is;
          if (is == 8) {
            const double d = wild_double();
            std::memcpy(&a.data[i], &d, 8);
          } else {
            const float f = static_cast<float>(wild_double());
            std::memcpy(&a.data[i], &f, 4);
          }
        }
      }
      break;
    }
    case 5: {  // reinterpret as another dtype with a consistent shape
      a.dtype = kDtypes[rnd(12)];
      const int is = a.itemsize();
      if (is > 0) a.shape = {static_cast<int64_t>(a.data.size() / is)};
      a.data.resize(a.shape.empty() ? 0 : a.shape[0] * is);
      break;
    }
    case 6: {  // a float image: values anywhere
      std::vector<double> v(a.data.size());
      for (double& x : v) x = coin(4) ? wild_double() : rnd(100) / 100.0;
      NdArray f = NdArray::from_doubles(v, {static_cast<int64_t>(v.size())});
      f.shape = a.shape;
      if (f.numel() == static_cast<int64_t>(v.size())) a = f;
      break;
    }
    default:
      for (int k = 0; k < 8 && !a.data.empty(); ++k) a.data[rnd(a.data.size())] = static_cast<char>(rnd(256));
  }
}

Value random_value(int depth) {
  switch (rnd(depth > 4 ? 7 : 10)) {
    case 0: return Value{};
    case 1: return Value{coin()};
    case 2: return Value{static_cast<int64_t>(rng())};
    case 3: return Value{wild_double()};
    case 4: {
      std::string s(rnd(20), ' ');
      for (char& c : s) c = static_cast<char>(rnd(256));
      return Value{s};
    }
    case 5: return Value{Bytes{std::string(rnd(20), 'x')}};
    case 6: {
      NdArray a = vec(static_cast<int>(rnd(16)));
      mutate_array(a);
      return Value{a};
    }
    case 7: {
      ValueList l;
      for (int64_t i = rnd(5); i > 0; --i) l.push_back(random_value(depth + 1));
      return Value{l};
    }
    case 8: {  // a (maybe ragged) nested list of numbers
      ValueList l;
      const int64_t n = rnd(9);
      for (int64_t i = 0; i < n; ++i)
        l.push_back(coin(5) ? random_value(depth + 1) : Value{coin() ? Value{wild_double()} : Value{rnd(5)}});
      return Value{l};
    }
    default: {
      Value m{ValueMap{}};
      for (int64_t i = rnd(4); i > 0; --i) m.set(std::to_string(rnd(100)), random_value(depth + 1));
      return m;
    }
  }
}

void mutate_value(Value& v, int depth) {
  if (v.is_map()) {
    ValueMap& m = v.as_map();
    if (m.empty() || coin(8)) {
      v.set(coin() ? "prompt" : std::to_string(rnd(10)), random_value(depth + 1));
      return;
    }
    const size_t i = rnd(m.size());
    switch (rnd(6)) {
      case 0: m.erase(m.begin() + i); break;
      case 1: m[i].second = random_value(depth + 1); break;
      case 2: m.push_back(m[i]); break;  // duplicate key
      default: mutate_value(m[i].second, depth + 1);
    }
    return;
  }
  if (v.is_array()) {
    NdArray a = v.as_array();
    mutate_array(a);
    v = Value{a};
    return;
  }
  if (v.is_list() && !v.as_list().empty()) {
    ValueList l = v.as_list();
    mutate_value(l[rnd(l.size())], depth + 1);
    v = Value{l};
    return;
  }
  v = random_value(depth);
}

// Hand-made msgpack the encoder never writes.
std::string raw_message() {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> p(buf);
  auto str = [&](const std::string& s) {
    p.pack_str(static_cast<uint32_t>(s.size()));
    p.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
  };
  switch (rnd(7)) {
    case 0: {  // ndarray with raw shape entries
      p.pack_map(1);
      str("observation/state");
      p.pack_map(4);
      str("__ndarray__");
      p.pack_true();
      str("data");
      std::string d(rnd(80), '\0');
      p.pack_bin(static_cast<uint32_t>(d.size()));
      p.pack_bin_body(d.data(), static_cast<uint32_t>(d.size()));
      str("dtype");
      str(kDtypes[rnd(std::size(kDtypes))]);
      str("shape");
      const int64_t n = rnd(5);
      p.pack_array(static_cast<uint32_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        switch (rnd(4)) {
          case 0: p.pack_uint64(rng()); break;
          case 1: p.pack_int64(-static_cast<int64_t>(rnd(100))); break;
          case 2: p.pack_double(2.5); break;
          default: p.pack_uint64(rnd(20));
        }
      }
      break;
    }
    case 1: {  // npgeneric with every dtype and wild data
      p.pack_map(3);
      str("__npgeneric__");
      p.pack_true();
      str("data");
      switch (rnd(5)) {
        case 0: p.pack_double(wild_double()); break;
        case 1: p.pack_uint64(rng()); break;
        case 2: p.pack_int64(static_cast<int64_t>(rng())); break;
        case 3: str("abc"); break;
        default: p.pack_true();
      }
      str("dtype");
      str(kDtypes[rnd(std::size(kDtypes))]);
      break;
    }
    case 2: {  // non-str keys
      p.pack_map(3);
      p.pack_int64(-5);
      p.pack_nil();
      p.pack_double(1.5);
      p.pack_nil();
      p.pack_array(0);
      p.pack_nil();
      break;
    }
    case 3: {  // deep nesting
      const int64_t n = rnd(200);
      for (int64_t i = 0; i < n; ++i) p.pack_array(1);
      p.pack_nil();
      break;
    }
    case 4: {  // containers that claim more elements than follow
      const int64_t n = 1 + rnd(64);
      p.pack_array(static_cast<uint32_t>(n));
      for (int64_t i = 0; i < n; ++i) p.pack_array(static_cast<uint32_t>(1u << 20));
      break;
    }
    case 5: {  // str/bin that claim huge sizes
      p.pack_map(1);
      str("prompt");
      p.pack_bin(0x7fffffffu);
      break;
    }
    default: {  // an ext
      p.pack_ext(4, 1);
      p.pack_ext_body("abcd", 4);
    }
  }
  return std::string(buf.data(), buf.size());
}

void mutate_bytes(std::string& s) {
  switch (rnd(5)) {
    case 0: s.resize(rnd(s.size() + 1)); break;
    case 1:
      for (int64_t k = 1 + rnd(8); k > 0 && !s.empty(); --k) s[rnd(s.size())] = static_cast<char>(rnd(256));
      break;
    case 2:
      if (!s.empty()) s[rnd(s.size())] ^= static_cast<char>(1 << rnd(8));
      break;
    case 3: s.insert(rnd(s.size() + 1), std::string(1 + rnd(4), static_cast<char>(rnd(256)))); break;
    default: {  // overwrite with a msgpack header byte that claims a big container/str
      static const unsigned char kHeads[] = {0xdc, 0xdd, 0xde, 0xdf, 0xc6, 0xdb, 0xc5, 0xda, 0xc9};
      if (s.empty()) break;
      const size_t i = rnd(s.size());
      s[i] = static_cast<char>(kHeads[rnd(std::size(kHeads))]);
      for (size_t k = i + 1; k < s.size() && k < i + 5; ++k) s[k] = static_cast<char>(coin() ? 0xff : 0x7f);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 20000;
  const uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1;
  rng.seed(seed);
  targets();
  for (int64_t it = 0; it < n; ++it) {
    std::string bytes;
    const int64_t kind = rnd(10);
    if (kind == 0) {
      bytes = raw_message();
    } else {
      Value v = valid_request(static_cast<Robot>(rnd(3)));
      for (int64_t k = rnd(4); k > 0; --k) mutate_value(v, 0);
      bytes = msgpack_encode(v);
    }
    if (kind >= 7)
      for (int64_t k = 1 + rnd(3); k > 0; --k) mutate_bytes(bytes);
    run_one(bytes);
    if ((it + 1) % 1000 == 0) std::fprintf(stderr, "%lld inputs\n", static_cast<long long>(it + 1));
  }
  std::fprintf(stderr, "done: %lld inputs, no findings\n", static_cast<long long>(n));
  return 0;
}

#endif
