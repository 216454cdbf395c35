#include "model/random_weights.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>
#include <tuple>
#include <vector>

#include "core/bf16.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "model/checkpoint.h"
#include "model/weight_table.h"

namespace pirt {

namespace {

// splitmix64's finaliser: a bijective 64-bit mix. Element pair j of a tensor is
// mix64(key + (j + 1) * golden), i.e. the j-th output of a splitmix64 stream seeded with `key`,
// computed directly so that any chunk can start anywhere.
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t tensor_key(uint64_t seed, const std::string& name) {
  uint64_t h = 0xCBF29CE484222325ull;  // FNV-1a of the name
  for (unsigned char ch : name) h = (h ^ ch) * 0x100000001B3ull;
  return mix64(mix64(seed) ^ h);
}

// How a kind of weight is drawn: uniform with this standard deviation around `mean`.
struct Dist {
  float mean = 0.f;
  float stddev = 0.f;
  bool has_gate = false;  // adaRMS bias: its last third (the gate) has mean `gate_mean`
  float gate_mean = 0.f;
};

Dist dist_for(const WeightSpec& w) {
  const double fan_in = static_cast<double>(w.shape.numel() / w.shape[0]);
  switch (w.kind) {
    // Unit-variance activations stay unit-variance through a linear layer (and the patch conv).
    case WeightKind::Linear: return {0.f, static_cast<float>(1.0 / std::sqrt(fan_in))};
    case WeightKind::Bias: return {0.f, 0.02f};
    // Offset form: the norm multiplies by 1 + w, so w ~ 0.1 keeps the scale near 1 but not exactly 1.
    case WeightKind::RmsNorm: return {0.f, 0.1f};
    case WeightKind::LayerNormW: return {1.f, 0.05f};
    case WeightKind::LayerNormB: return {0.f, 0.02f};
    // Text embeddings are multiplied by sqrt(width), which brings them back to unit scale.
    case WeightKind::Embedding: return {0.f, static_cast<float>(1.0 / std::sqrt(static_cast<double>(w.shape[1])))};
    case WeightKind::PosEmbedding: return {0.f, 0.05f};
    // Modulations of a few percent: they depend on t, but stay near the plain norm.
    case WeightKind::AdaRmsW: return {0.f, static_cast<float>(0.2 / std::sqrt(fan_in))};
    // The gate multiplies each sublayer's output into the residual. A trained model's gates are far
    // from zero (training starts them at 0 only to start from identity); with gates near 0 the expert's
    // attention and MLP would barely reach the output and backend comparisons would not see them. So
    // the gate third is centred on 1, and scale and shift on 0.
    case WeightKind::AdaRmsB: return {0.f, 0.02f, true, 1.f};
  }
  return {};
}

// One uniform value in (-1, 1) from 24 random bits; symmetric and exactly representable.
inline double centered(uint32_t bits24) {
  return (static_cast<double>(static_cast<int32_t>(bits24) - (1 << 23)) + 0.5) * (1.0 / (1 << 23));
}

// Fills elements [begin, end) of `out` (begin even) with `store(index, value)`. No a*b+c
// expression here is left to the compiler to fuse into an FMA, so the values are the same with or
// without FMA contraction.
template <class Store>
void fill_range(const Dist& d, uint64_t key, int64_t begin, int64_t end, float mean, Store store) {
  const double half_width = static_cast<double>(d.stddev) * std::sqrt(3.0);  // uniform[-a, a] has std a/sqrt(3)
  for (int64_t i = begin; i < end; i += 2) {
    const uint64_t h = mix64(key + static_cast<uint64_t>(i / 2 + 1) * kGolden);
    store(i, mean + static_cast<float>(centered(static_cast<uint32_t>(h >> 40)) * half_width));
    if (i + 1 < end) store(i + 1, mean + static_cast<float>(centered(static_cast<uint32_t>(h >> 8) & 0xFFFFFFu) * half_width));
  }
}

void fill_chunk(const Tensor& t, const Dist& d, uint64_t key, int64_t begin, int64_t end) {
  // The adaRMS bias's last third (the gate) has its own mean; split the range there.
  // 2W is even, so both halves start on a pair boundary.
  const int64_t mid = d.has_gate ? std::clamp(2 * t.numel() / 3, begin, end) : end;
  for (const auto& [b, e, mean] : {std::tuple{begin, mid, d.mean}, std::tuple{mid, end, d.gate_mean}}) {
    if (b >= e) continue;
    switch (t.dtype) {
      case DType::F32: fill_range(d, key, b, e, mean, [p = t.ptr<float>()](int64_t i, float v) { p[i] = v; }); break;
      case DType::BF16:
        fill_range(d, key, b, e, mean, [p = t.ptr<uint16_t>()](int64_t i, float v) { p[i] = f32_to_bf16(v); });
        break;
      case DType::F16:
        fill_range(d, key, b, e, mean, [p = t.ptr<uint16_t>()](int64_t i, float v) { p[i] = f32_to_f16(v); });
        break;
      default: PIRT_CHECK(false, "dtype %d", static_cast<int>(t.dtype));
    }
  }
}

// Runs fn(i) for i in [0, n) on `threads` threads, taking indices in order from a shared counter.
void parallel_for(size_t n, int threads, const std::function<void(size_t)>& fn) {
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i = next++; i < n; i = next++) fn(i);
  };
  std::vector<std::thread> pool;
  for (int k = 1; k < threads; ++k) pool.emplace_back(worker);
  worker();
  for (std::thread& th : pool) th.join();
}

}  // namespace

std::map<std::string, HostTensor> random_weights(const ModelConfig& config, uint64_t seed, DType dtype,
                                                 int num_threads) {
  if (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F16)
    throw_error(strformat("random weights must be F32, BF16 or F16, not %s", std::string(dtype_name(dtype)).c_str()));
  validate(config);
  const std::vector<WeightSpec> table = weight_table(config);
  int threads = num_threads > 0 ? num_threads : static_cast<int>(std::thread::hardware_concurrency());
  threads = std::clamp(threads, 1, 256);

  // Allocation zero-fills (HostTensor), which for pi0's 6.5 GB is worth spreading over threads too.
  std::vector<HostTensor> tensors(table.size());
  parallel_for(table.size(), threads, [&](size_t i) { tensors[i] = HostTensor(dtype, table[i].shape); });

  constexpr int64_t kChunk = int64_t{1} << 20;  // elements; even, so pairs never straddle chunks
  struct Work {
    size_t tensor;
    int64_t begin, end;
  };
  std::vector<Work> work;
  for (size_t i = 0; i < table.size(); ++i)
    for (int64_t b = 0; b < tensors[i].numel(); b += kChunk)
      work.push_back({i, b, std::min(b + kChunk, tensors[i].numel())});
  std::vector<uint64_t> keys(table.size());
  std::vector<Dist> dists(table.size());
  for (size_t i = 0; i < table.size(); ++i) {
    keys[i] = tensor_key(seed, table[i].name);
    dists[i] = dist_for(table[i]);
  }
  parallel_for(work.size(), threads, [&](size_t w) {
    const Work& job = work[w];
    fill_chunk(tensors[job.tensor].view(), dists[job.tensor], keys[job.tensor], job.begin, job.end);
  });

  std::map<std::string, HostTensor> out;
  for (size_t i = 0; i < table.size(); ++i) out.emplace(table[i].name, std::move(tensors[i]));
  return out;
}

void write_checkpoint(const std::string& dir, const ModelConfig& config,
                      const std::map<std::string, HostTensor>& weights) {
  std::map<std::string, Tensor> views;
  for (const auto& [name, t] : weights) views.emplace(name, t.view());
  validate(config);
  validate_weights(config, views, dir + " (weights to write)");

  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw_error(strformat("%s: cannot create folder: %s", dir.c_str(), ec.message().c_str()));

  // Table order first (the file then reads like the model), then anything extra by name.
  std::vector<std::pair<std::string, Tensor>> list;
  for (const WeightSpec& w : weight_table(config)) list.emplace_back(w.name, views.at(w.name));
  for (const auto& kv : views) {  // (not a structured binding: clang < 16 cannot capture one)
    const std::string& name = kv.first;
    if (std::none_of(list.begin(), list.end(), [&](const auto& p) { return p.first == name; }))
      list.emplace_back(name, kv.second);
  }
  const std::string model_path = (std::filesystem::path(dir) / "model.safetensors").string();
  // "format": "pt" is what safetensors.torch writes; some tools look for it.
  write_safetensors(model_path, list, {{"format", "pt"}});

  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  std::ofstream out(config_path, std::ios::binary | std::ios::trunc);
  if (!out) throw_error(strformat("%s: cannot create: %s", config_path.c_str(), std::strerror(errno)));
  out << config_to_json(config);
  out.close();
  if (!out) throw_error(strformat("%s: write failed", config_path.c_str()));
}

}  // namespace pirt
