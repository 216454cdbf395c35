// Engine: a loaded model on one backend, with a Plan (buffers, and on CUDA a captured graph) per
// call shape. sample_actions() lays out each sample's prefix on the host, writes the plan's input
// buffers, and runs (or replays) the whole call.
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <unordered_map>

#include "backends/cpu/cpu_backend.h"
#include "model/checkpoint.h"
#include "model/forward.h"
#include "model/random_weights.h"
#include "pirt/engine.h"
#ifdef PIRT_HAVE_CUDA
#include "backends/cuda/cuda_backend.h"
#endif

namespace pirt {

bool cuda_available() {
#ifdef PIRT_HAVE_CUDA
  return cuda_device_present();
#else
  return false;
#endif
}

std::unique_ptr<Backend> make_backend(const std::string& device, [[maybe_unused]] const EngineOptions& opt) {
  if (device == "cpu") return make_cpu_backend();
  if (device != "auto" && device != "cuda")
    throw_error("--device must be auto, cpu or cuda, not \"" + device + "\"");
#ifdef PIRT_HAVE_CUDA
  if (cuda_device_present()) {
    CudaOptions co;
    co.graphs = opt.graphs;
    co.own_small_gemm = opt.own_small_gemm;
    co.pdl = opt.pdl;
    co.fused_small_gemm = opt.fused_small_gemm;
    co.block_kernel = opt.block_kernel;
    co.wgmma_attention = opt.wgmma_attention;
    co.step_kernel = opt.step_kernel;
    co.step_pdl = opt.step_pdl;
    co.tuning_file = opt.tuning_file;
    return make_cuda_backend(co);
  }
  if (device == "cuda") throw_error("--device cuda: no CUDA device is present");
#else
  if (device == "cuda") throw_error("--device cuda: this build of pirt has no CUDA backend");
#endif
  return make_cpu_backend();
}

namespace {

// Standard normal noise from a seed: splitmix64 + Box-Muller, the same on every platform.
void fill_normal(float* out, int64_t n, uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
  auto next = [&s]() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  auto uniform = [&]() { return (static_cast<double>(next() >> 11) + 0.5) * 0x1.0p-53; };
  for (int64_t i = 0; i < n; i += 2) {
    const double r = std::sqrt(-2.0 * std::log(uniform())), th = 2.0 * M_PI * uniform();
    out[i] = static_cast<float>(r * std::cos(th));
    if (i + 1 < n) out[i + 1] = static_cast<float>(r * std::sin(th));
  }
}

class EngineImpl final : public Engine {
 public:
  EngineImpl(const ModelConfig& c, const EngineOptions& opt, const TensorSource& get,
             std::chrono::steady_clock::time_point start)
      : cfg_(c), opt_(opt) {
    horizon_ = opt.horizon > 0 ? opt.horizon : c.action_horizon;
    be_ = make_backend(opt.device, opt);
    w_ = load_weights(cfg_, *be_, get, opt.fuse_projections);
    be_->synchronize();
    load_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  HostTensor sample_actions(const ModelInputs& in, int steps, uint64_t seed) override {
    if (steps < 1) throw_error("steps must be at least 1");
    check_inputs(cfg_, in, horizon_);
    const int64_t B = in.batch(), H = horizon_, A = cfg_.action_dim, L = in.tokenized_prompt.shape()[1];
    const int64_t S = cfg_.vision.image_size;
    HostTensor noise = in.noise;
    if (noise.empty()) {
      noise = HostTensor(DType::F32, {B, H, A});
      fill_normal(noise.ptr<float>(), noise.numel(), seed);
    }
    HostTensor actions(DType::F32, {B, H, A});
    for (int64_t b = 0; b < B; ++b) {
      bool image_mask[ModelConfig::kNumCameras];
      for (int cam = 0; cam < ModelConfig::kNumCameras; ++cam)
        image_mask[cam] = in.image_masks[cam].ptr<uint8_t>()[b] != 0;
      const int32_t* ids = in.tokenized_prompt.ptr<int32_t>() + b * L;
      std::unique_ptr<bool[]> tmask(new bool[L]);
      for (int64_t i = 0; i < L; ++i) tmask[i] = in.tokenized_prompt_mask.ptr<uint8_t>()[b * L + i] != 0;
      const PrefixLayout layout = make_prefix_layout(cfg_, image_mask, ids, tmask.get(), static_cast<int>(L),
                                                     opt_.drop_padding);
      Plan& p = plan_for(layout, steps);

      // Write this sample into the plan's input buffers.
      if (p.n_cams == 0) {  // (the vision tower does not run; its one-image input buffer gets zeros)
        HostTensor images(DType::F32, {1, S, S, 3});
        be_->to_device(images, p.images);
      }
      // uint8 images (a policy's) go over as they are, a quarter of the bytes, and are converted on
      // the device (check_inputs: every camera has the same dtype).
      p.images_from_u8 = p.n_cams > 0 && in.images[layout.cameras[0]].dtype() == DType::U8;
      for (int i = 0; i < p.n_cams; ++i)
        be_->to_device(in.images[layout.cameras[i]].view().rows(b, 1),
                       (p.images_from_u8 ? p.images_u8 : p.images).rows(i, 1));
      HostTensor text(DType::I32, {std::max(p.n_text, 1)});
      // A padding token (kept with --no-drop-padding) is masked out, so its id never reaches a valid
      // output; check_inputs only range-checks valid ids, so embed id 0 in its place.
      for (int i = 0; i < p.n_text; ++i) text.ptr<int32_t>()[i] = tmask[layout.text[i]] ? ids[layout.text[i]] : 0;
      be_->to_device(text, p.text_ids);
      upload_i32(layout.positions, p.prefix_pos);
      upload_i32(layout.q_block, p.prefix_qb);
      upload_i32(layout.k_block, p.prefix_kb);
      // Suffix: positions continue after the valid prefix tokens; pi0's state token is its own
      // block, then the action tokens form one more (ar_mask = [1, 1, 0, ...]; pi0.5: [1, 0, ...]).
      std::vector<int32_t> spos, sq, sk = layout.k_block;
      for (int i = 0; i < p.suffix_len; ++i) {
        spos.push_back(layout.n_valid + i);
        const int32_t block = cfg_.pi05() ? 1 : (i == 0 ? 1 : 2);
        sq.push_back(block);
        sk.push_back(block);
      }
      upload_i32(spos, p.suffix_pos);
      upload_i32(sq, p.suffix_qb);
      upload_i32(sk, p.suffix_kb);
      HostTensor state(DType::F32, {1, A});
      std::memcpy(state.ptr<float>(), in.state.ptr<float>() + b * A, A * sizeof(float));
      be_->to_device(state, p.state);
      HostTensor x(DType::F32, {H, A});
      std::memcpy(x.ptr<float>(), noise.ptr<float>() + b * H * A, H * A * sizeof(float));
      be_->to_device(x, p.x);

      be_->run(p.images_from_u8 ? p.key + "|u8" : p.key, [&] { pirt::sample_actions(cfg_, w_, *be_, p); });
      be_->to_host(p.x, actions.view().rows(b, 1).reshape(Shape{H, A}));
    }
    return actions;
  }

  const ModelConfig& config() const override { return cfg_; }
  int horizon() const override { return horizon_; }
  Backend& backend() override { return *be_; }
  double load_seconds() const override { return load_s_; }

 private:
  Plan& plan_for(const PrefixLayout& layout, int steps) {
    const std::string key = plan_key(layout, horizon_, steps);
    auto it = plans_.find(key);
    if (it == plans_.end())
      it = plans_.emplace(key, make_plan(cfg_, w_, *be_, layout, horizon_, steps, opt_.fuse_projections)).first;
    return it->second;
  }

  // Positions and mask blocks depend on the layout alone, so a plan's buffers usually hold them
  // already: they are sent only when they differ from what was sent there last.
  void upload_i32(const std::vector<int32_t>& v, const Tensor& dev) {
    std::vector<int32_t>& last = sent_i32_[dev.data];
    if (!last.empty() && last == v) return;
    HostTensor h(DType::I32, dev.shape);
    PIRT_CHECK(static_cast<int64_t>(v.size()) == h.numel(), "upload_i32 size");
    if (!v.empty()) std::memcpy(h.ptr<int32_t>(), v.data(), v.size() * sizeof(int32_t));  // empty prefix: no data
    be_->to_device(h, dev);
    last = v;
  }

  ModelConfig cfg_;
  EngineOptions opt_;
  int horizon_ = 0;
  std::unique_ptr<Backend> be_;
  Weights w_;
  std::map<std::string, Plan> plans_;
  std::unordered_map<const void*, std::vector<int32_t>> sent_i32_;  // upload_i32's last values a buffer
  double load_s_ = 0;
};

}  // namespace

std::unique_ptr<Engine> Engine::load(const std::string& model_dir, const EngineOptions& opt) {
  const auto start = std::chrono::steady_clock::now();
  const Checkpoint ckpt = open_checkpoint(model_dir);
  return std::make_unique<EngineImpl>(ckpt.config, opt,
                                      [&](const std::string& n) -> const Tensor& { return ckpt.get(n); }, start);
}

std::unique_ptr<Engine> Engine::random(const ModelConfig& config, uint64_t seed, const EngineOptions& opt) {
  const auto start = std::chrono::steady_clock::now();
  const Checkpoint ckpt = checkpoint_from_tensors(config, random_weights(config, seed, DType::BF16));
  return std::make_unique<EngineImpl>(ckpt.config, opt,
                                      [&](const std::string& n) -> const Tensor& { return ckpt.get(n); }, start);
}

}  // namespace pirt
