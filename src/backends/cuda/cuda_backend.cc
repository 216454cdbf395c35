// CudaBackend: memory (arena), copies, graph capture, and the ops of src/ops/ops.h, each unpacking
// its tensors, checking shapes and calling a launcher of kernels.h (or cuBLASLt through LtGemm).
#include "backends/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/lt_gemm.h"
#include "backends/cuda/profiler.h"
#include "backends/cuda/tuning.h"
#include "core/bf16.h"

namespace pirt {
namespace cuda {

[[noreturn]] void throw_cuda_error(const char* what, const char* file, int line, const char* msg) {
  throw_error(strformat("CUDA error at %s:%d: %s: %s", file, line, what, msg));
}

}  // namespace cuda

namespace {

using namespace pirt::cuda;

constexpr size_t kAlign = 256;
constexpr size_t kSlabBytes = 64ull << 20;  // small tensors share slabs of this size
constexpr size_t kLtWorkspace = 32ull << 20;
constexpr size_t kAttentionWorkspace = 16ull << 20;
constexpr size_t kPartialsBytes = 16ull << 20;  // small_gemm_partials' split sums (16 x 64 x 4096 floats)
constexpr int kTailMaxWidth = 2048;              // the block tail's widest D (8 per thread)
constexpr size_t kTailPartialsBytes = (size_t)kMaxBlockTailSplits * 64 * kTailMaxWidth * 4;  // 4 MB
constexpr int kTailMaxHeadDim = 512;
constexpr size_t kStepPartialsBytes = (size_t)kMaxActionSplits * 64 * kMaxActionWidth * 4;  // 4 MB
constexpr size_t kTailRopeBytes = (size_t)64 * (kTailMaxHeadDim / 2) * 8;  // (cos, sin) a row and pair

size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }
bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

std::string dname(DType t) { return std::string(dtype_name(t)); }

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const CudaOptions& opt) : opt_(opt) {
    PIRT_CHECK(cuda_device_present(), "no CUDA device");
    CUDA_CHECK(cudaSetDevice(opt.device));
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, opt.device));
    name_ = std::string("cuda: ") + prop.name;
    num_sms_ = prop.multiProcessorCount;
    // Thread-block clusters (the attention's in-cluster merge of key splits) exist from sm_90 on.
    // Our small-M GEMM (clusters, griddepcontrol) and programmatic dependent launch as well.
    if (prop.major < 9) opt_.attention_clusters = false, opt_.own_small_gemm = false, opt_.pdl = false;
#if !PIRT_CUDA_SM90A
    opt_.block_kernel = false;
    opt_.wgmma_attention = false;
#endif
    if (prop.major != 9) opt_.block_kernel = false, opt_.wgmma_attention = false;
    if (!opt_.block_kernel || !opt_.wgmma_attention) opt_.step_pdl = false;
    set_pdl_enabled(opt_.pdl);
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    lt_ws_ = raw_alloc(kLtWorkspace);
    lt_ = std::make_unique<LtGemm>(lt_ws_, kLtWorkspace);
    tuning_ = load_gpu_tuning(opt.tuning_file, prop.name);
    lt_->set_tuning(tuning_.get());
    attn_ws_ = static_cast<float*>(raw_alloc(kAttentionWorkspace));
    if (opt_.own_small_gemm && opt_.fused_small_gemm) partials_ = static_cast<float*>(raw_alloc(kPartialsBytes));
    if (opt_.block_kernel) {
      tail_partials_ = static_cast<float*>(raw_alloc(kTailPartialsBytes));
      tail_rope_ = raw_alloc(kTailRopeBytes);
      tail_barrier_ = static_cast<unsigned long long*>(raw_alloc(256));
      CUDA_CHECK(cudaMemset(tail_barrier_, 0, 256));
    }
    if (opt_.step_kernel) {
      step_partials_ = static_cast<float*>(raw_alloc(kStepPartialsBytes));
      step_barrier_ = static_cast<unsigned long long*>(raw_alloc(256));
      CUDA_CHECK(cudaMemset(step_barrier_, 0, 256));
    }
  }

  ~CudaBackend() override {
    if (stream_) cudaStreamSynchronize(stream_);
    for (auto& [k, g] : graphs_) cudaGraphExecDestroy(g);
    lt_.reset();
    for (void* p : blocks_) cudaFree(p);
    if (staging_) cudaFreeHost(staging_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  std::string name() const override { return name_; }
  DType act_dtype() const override { return DType::BF16; }
  DType matrix_dtype() const override { return DType::BF16; }

  // ---- memory ----
  Tensor alloc(DType dtype, Shape shape) override {
    Tensor t;
    t.dtype = dtype;
    t.shape = shape;
    t.where = Where::Device;
    t.data = raw_alloc(t.nbytes());
    return t;
  }

  Tensor upload(const std::vector<Tensor>& parts, DType dtype) override {
    PIRT_CHECK(!parts.empty(), "upload of no parts");
    PIRT_CHECK(!capturing_, "upload during graph capture");
    Shape shape = parts[0].shape;
    PIRT_CHECK(shape.rank() >= 1, "upload of a scalar");
    int64_t rows = 0;
    for (const Tensor& p : parts) {
      PIRT_CHECK(p.where == Where::Host, "upload of a device tensor");
      PIRT_CHECK(p.row_size() == parts[0].row_size() && p.shape.rank() == shape.rank(),
                 "upload: parts %s and %s differ in row shape", p.shape.str().c_str(), shape.str().c_str());
      PIRT_CHECK(p.dtype == dtype || (is_float(p.dtype) && is_float(dtype)), "upload: %s to %s",
                 dname(p.dtype).c_str(), dname(dtype).c_str());
      rows += p.shape[0];
    }
    shape[0] = rows;
    Tensor t = alloc(dtype, shape);
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    uint8_t* dst = static_cast<uint8_t*>(t.data);
    std::vector<uint8_t> tmp;
    for (const Tensor& p : parts) {
      const size_t bytes = static_cast<size_t>(p.numel()) * dtype_size(dtype);
      if (p.dtype == dtype) {
        CUDA_CHECK(cudaMemcpy(dst, p.data, bytes, cudaMemcpyHostToDevice));
      } else {
        // Convert on the host in chunks (weights are never held twice on the device).
        const int64_t chunk = 1 << 22;
        for (int64_t i0 = 0; i0 < p.numel(); i0 += chunk) {
          const int64_t n = std::min(chunk, p.numel() - i0);
          tmp.resize(static_cast<size_t>(n) * dtype_size(dtype));
          convert_host(p, i0, n, dtype, tmp.data());
          CUDA_CHECK(cudaMemcpy(dst + i0 * dtype_size(dtype), tmp.data(), tmp.size(), cudaMemcpyHostToDevice));
        }
      }
      dst += bytes;
    }
    return t;
  }

  void to_device(const Tensor& host, const Tensor& dev) override {
    PIRT_CHECK(!capturing_, "to_device inside a captured run(): copy inputs in before run()");
    PIRT_CHECK(host.where == Where::Host && dev.where == Where::Device, "to_device: wrong sides");
    PIRT_CHECK(host.dtype == dev.dtype && host.numel() == dev.numel(), "to_device: %s %s to %s %s",
               dname(host.dtype).c_str(), host.shape.str().c_str(), dname(dev.dtype).c_str(), dev.shape.str().c_str());
    // Through a pinned staging buffer: one host memcpy, then a DMA that runs while the caller goes on
    // (from pageable memory the driver stages in chunks and waits for each). The staging space is
    // reused after the next to_host(), which synchronises the stream.
    const size_t n = host.nbytes(), need = (n + 255) & ~size_t{255};
    if (staging_used_ + need > staging_bytes_) {
      CUDA_CHECK(cudaStreamSynchronize(stream_));  // earlier copies may still read the staging buffer
      staging_used_ = 0;
      if (need > staging_bytes_) {
        if (staging_) CUDA_CHECK(cudaFreeHost(staging_));
        staging_ = nullptr;
        staging_bytes_ = std::max(need, size_t{8} << 20);
        CUDA_CHECK(cudaHostAlloc(&staging_, staging_bytes_, cudaHostAllocDefault));
      }
    }
    char* st = static_cast<char*>(staging_) + staging_used_;
    std::memcpy(st, host.data, n);
    staging_used_ += need;
    CUDA_CHECK(cudaMemcpyAsync(dev.data, st, n, cudaMemcpyHostToDevice, stream_));
  }

  void to_host(const Tensor& dev, const Tensor& host) override {
    PIRT_CHECK(!capturing_, "to_host inside a captured run(): copy results out after run()");
    PIRT_CHECK(host.where == Where::Host && dev.where == Where::Device, "to_host: wrong sides");
    PIRT_CHECK(host.dtype == dev.dtype && host.numel() == dev.numel(), "to_host: %s %s to %s %s",
               dname(dev.dtype).c_str(), dev.shape.str().c_str(), dname(host.dtype).c_str(), host.shape.str().c_str());
    CUDA_CHECK(cudaMemcpyAsync(host.data, dev.data, host.nbytes(), cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    staging_used_ = 0;  // every earlier copy is done
  }

  // ---- execution ----
  void run(const std::string& key, const std::function<void()>& record) override {
    if (!opt_.graphs || capturing_) {  // nested run(): part of the enclosing capture
      record();
      return;
    }
    auto it = graphs_.find(key);
    if (it == graphs_.end()) {
      CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed));
      capturing_ = true;
      try {
        record();
      } catch (...) {
        cudaGraph_t g = nullptr;
        cudaStreamEndCapture(stream_, &g);
        if (g) cudaGraphDestroy(g);
        cudaGetLastError();
        capturing_ = false;
        throw;
      }
      capturing_ = false;
      cudaGraph_t graph = nullptr;
      CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
      cudaGraphExec_t exec = nullptr;
      const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
      cudaGraphDestroy(graph);
      CUDA_CHECK(err);
      it = graphs_.emplace(key, exec).first;
    }
    CUDA_CHECK(cudaGraphLaunch(it->second, stream_));
  }

  void synchronize() override { CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  size_t memory_peak() const override { return peak_; }
  void stage(const std::string& name) override { profiler_stage(name); }

  // ---- ops ----
  void linear(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out, Epilogue ep,
              const Tensor& residual) override {
    PIRT_CHECK(w.shape.rank() == 2, "linear: w %s", w.shape.str().c_str());
    const int64_t n = w.dim(0), k = w.dim(1);
    PIRT_CHECK(x.shape.rank() >= 1 && x.shape[-1] == k, "linear: x %s, w %s", x.shape.str().c_str(),
               w.shape.str().c_str());
    const int64_t m = x.numel() / k;
    PIRT_CHECK(out.numel() == m * n && out.shape[-1] == n, "linear: out %s for [%lld, %lld]", out.shape.str().c_str(),
               (long long)m, (long long)n);
    PIRT_CHECK(bias.empty() || bias.numel() == n, "linear: bias %s", bias.shape.str().c_str());
    PIRT_CHECK(residual.empty() || residual.numel() == m * n, "linear: residual %s", residual.shape.str().c_str());
    if (m == 0 || n == 0) return;
    const void* bptr = bias.empty() ? nullptr : bias.data;
    const DType bt = bias.empty() ? DType::F32 : bias.dtype;
    const void* rptr = residual.empty() ? nullptr : residual.data;
    const DType rt = residual.empty() ? out.dtype : residual.dtype;
    // The tuned choice for this shape, if any (tuning.h): "small:" configures step 1, "lt:" skips it.
    const GemmKey key = gemm_key(m, n, k, x.dtype, w.dtype, out.dtype, false, bptr != nullptr, bt,
                                 ep == Epilogue::GeluTanh, rptr != nullptr, rt);
    if (GemmShapeLog* log = gemm_shape_log()) log->add(key);
    const TuningRow* tuned = tuning_->find(key);
    const SmallConfig tuned_small = tuned ? small_config(tuned->algorithm) : SmallConfig{};
    const bool tuned_lt = tuned && tuned->algorithm.kind == "lt";

    // 1. Few rows, bf16: the weight-streaming kernel (sm_90a), where the tuning table picked it
    // ("small:" rows) or it is forced. Without a row cuBLASLt runs: on an H100 it is faster on every
    // action-step shape (our kernel streams at full speed but its split-K reduction costs 4-6 us;
    // bench/RESULTS.md), so the kernel is not a default until it wins.
    const bool small_wanted = opt_.force_small_gemm || (opt_.own_small_gemm && tuned && !tuned_lt);
    if (small_wanted && opt_.own_small_gemm && x.dtype == DType::BF16 && w.dtype == DType::BF16 &&
        small_gemm_supported(m, n, k) && aligned16(x.data) && aligned16(w.data) && is_float(out.dtype) &&
        out.dtype != DType::F16 && bt != DType::F16 && rt != DType::F16) {
      const SmallGemmPlan plan = small_gemm_plan(m, n, k, num_sms_, tuned_small.bn, tuned_small.splits);
      small_gemm(plan, x.data, w.data, bptr, bt, ep, rptr, rt, out.data, out.dtype, m, n, k, stream_);
      return;
    }
    // 2. cuBLASLt with its fused epilogue (bias, GELU, residual as C with beta = 1).
    const bool lt_types = x.dtype == w.dtype && (x.dtype == DType::BF16 || x.dtype == DType::F32) &&
                          (out.dtype == x.dtype || out.dtype == DType::F32);
    if (lt_types) {
      const bool fused = !(ep == Epilogue::GeluTanh && rptr) && (!rptr || rt == out.dtype);
      if (fused) {
        LtGemm::Call c{x.data, x.dtype, w.data, w.dtype, out.data, out.dtype, bptr, bt, rptr, ep, m, n, k};
        if (lt_->run(c, stream_)) return;
      }
      // Unfused: fp32 product into scratch, then our epilogue.
      float* acc = scratch_f32(0, m * n);
      LtGemm::Call c{x.data, x.dtype, w.data, w.dtype, acc, DType::F32, nullptr, DType::F32, nullptr,
                     Epilogue::None, m, n, k};
      if (lt_->run(c, stream_)) {
        linear_epilogue(acc, bptr, bt, ep, rptr, rt, out.data, out.dtype, m, n, stream_);
        return;
      }
    }
    // 3. Anything else: the plain tiled GEMM.
    float* acc = scratch_f32(0, m * n);
    simple_gemm(x.data, x.dtype, w.data, w.dtype, acc, m, n, k, stream_);
    linear_epilogue(acc, bptr, bt, ep, rptr, rt, out.data, out.dtype, m, n, stream_);
  }

  void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, const Tensor& out) override {
    const int64_t d = x.shape[-1], rows = x.numel() / d;
    PIRT_CHECK(w.numel() == d && b.numel() == d && out.numel() == x.numel(), "layer_norm: x %s w %s b %s out %s",
               x.shape.str().c_str(), w.shape.str().c_str(), b.shape.str().c_str(), out.shape.str().c_str());
    cuda::layer_norm(x.data, x.dtype, w.data, w.dtype, b.data, b.dtype, out.data, out.dtype, rows, d, eps, stream_);
  }

  void rms_norm(const Tensor& x, const Tensor& w, float eps, const Tensor& out) override {
    const int64_t d = x.shape[-1], rows = x.numel() / d;
    PIRT_CHECK(w.numel() == d && out.numel() == x.numel(), "rms_norm: x %s w %s out %s", x.shape.str().c_str(),
               w.shape.str().c_str(), out.shape.str().c_str());
    cuda::rms_norm(x.data, x.dtype, w.data, w.dtype, out.data, out.dtype, rows, d, eps, stream_);
  }

  void ada_rms_norm(const Tensor& x, const Tensor& mod, float eps, const Tensor& out) override {
    const int64_t d = x.shape[-1], rows = x.numel() / d;
    PIRT_CHECK(out.numel() == x.numel(), "ada_rms_norm: x %s out %s", x.shape.str().c_str(), out.shape.str().c_str());
    PIRT_CHECK(mod.numel() == 3 * d || mod.numel() == 3 * d * rows, "ada_rms_norm: mod %s for x %s",
               mod.shape.str().c_str(), x.shape.str().c_str());
    const int64_t stride = mod.numel() == 3 * d ? 0 : 3 * d;
    cuda::ada_rms_norm(x.data, x.dtype, mod.data, mod.dtype, stride, out.data, out.dtype, rows, d, eps, stream_);
  }

  void gated_residual(const Tensor& h, const Tensor& y, const Tensor& gate) override {
    const int64_t d = h.shape[-1], rows = h.numel() / d;
    PIRT_CHECK(y.numel() == h.numel() && (gate.numel() == d || gate.numel() == h.numel()),
               "gated_residual: h %s y %s gate %s", h.shape.str().c_str(), y.shape.str().c_str(),
               gate.shape.str().c_str());
    cuda::gated_residual(h.data, h.dtype, y.data, y.dtype, gate.data, gate.dtype, gate.numel() == d ? 0 : d, rows, d,
                         stream_);
  }

  void geglu(const Tensor& gu, const Tensor& out) override {
    const int64_t f2 = gu.shape[-1], rows = gu.numel() / f2;
    PIRT_CHECK(f2 % 2 == 0 && out.numel() == rows * (f2 / 2), "geglu: gu %s out %s", gu.shape.str().c_str(),
               out.shape.str().c_str());
    cuda::geglu(gu.data, gu.dtype, out.data, out.dtype, rows, f2 / 2, stream_);
  }

  void silu(const Tensor& x, const Tensor& out) override {
    PIRT_CHECK(out.numel() == x.numel(), "silu: x %s out %s", x.shape.str().c_str(), out.shape.str().c_str());
    cuda::silu(x.data, x.dtype, out.data, out.dtype, x.numel(), stream_);
  }

  void cast(const Tensor& x, const Tensor& out) override {
    PIRT_CHECK(out.numel() == x.numel(), "cast: x %s out %s", x.shape.str().c_str(), out.shape.str().c_str());
    PIRT_CHECK(x.dtype == out.dtype || (is_float(x.dtype) && is_float(out.dtype)), "cast: %s to %s",
               dname(x.dtype).c_str(), dname(out.dtype).c_str());
    convert(x.data, x.dtype, out.data, out.dtype, x.numel(), stream_);
  }

  void concat_cols(const Tensor& a, const Tensor& b, const Tensor& out) override {
    const int64_t k1 = a.shape[-1], k2 = b.shape[-1], rows = a.numel() / k1, b_rows = b.numel() / k2;
    PIRT_CHECK((b_rows == rows || b_rows == 1) && out.numel() == rows * (k1 + k2) && out.shape[-1] == k1 + k2,
               "concat_cols: a %s b %s out %s", a.shape.str().c_str(), b.shape.str().c_str(), out.shape.str().c_str());
    cuda::concat_cols(a.data, a.dtype, b.data, b.dtype, b_rows, out.data, out.dtype, rows, k1, k2, stream_);
  }

  void axpy(const Tensor& x, const Tensor& v, float dt) override {
    PIRT_CHECK(x.dtype == DType::F32 && v.numel() == x.numel(), "axpy: x %s %s v %s", dname(x.dtype).c_str(),
               x.shape.str().c_str(), v.shape.str().c_str());
    cuda::axpy(x.ptr<float>(), v.data, v.dtype, dt, x.numel(), stream_);
  }

  void image_to_unit_range(const Tensor& in, const Tensor& out) override {
    PIRT_CHECK(in.dtype == DType::U8 && out.dtype == DType::F32 && in.numel() == out.numel() && in.numel() % 4 == 0,
               "image_to_unit_range: in %s %s, out %s %s (U8 in, F32 out of the same size, a multiple of 4)",
               dname(in.dtype).c_str(), in.shape.str().c_str(), dname(out.dtype).c_str(), out.shape.str().c_str());
    pirt::cuda::image_to_unit_range(in.ptr<uint8_t>(), out.ptr<float>(), in.numel(), stream_);
  }

  void patch_embed(const Tensor& images, const Tensor& w, const Tensor& b, const Tensor& pos, int patch,
                   const Tensor& out) override {
    PIRT_CHECK(images.shape.rank() == 4 && images.dim(3) == 3 && images.dim(1) == images.dim(2) &&
                   images.dtype == DType::F32,
               "patch_embed: images %s %s", dname(images.dtype).c_str(), images.shape.str().c_str());
    const int64_t n = images.dim(0), size = images.dim(1), g = size / patch, tokens = g * g;
    const int64_t width = w.dim(0), kk = 3 * (int64_t)patch * patch;
    PIRT_CHECK(size % patch == 0 && w.numel() == width * kk && b.numel() == width && pos.numel() == tokens * width &&
                   out.numel() == n * tokens * width,
               "patch_embed: images %s w %s b %s pos %s out %s", images.shape.str().c_str(), w.shape.str().c_str(),
               b.shape.str().c_str(), pos.shape.str().c_str(), out.shape.str().c_str());
    if (n == 0) return;
    // im2col (k order c, ky, kx = w's row layout), one fp32 GEMM (TF32 tensor cores, as openpi's
    // own f32 conv runs on GPUs), then + bias + position embedding.
    float* col = scratch_f32(1, n * tokens * kk);
    float* acc = scratch_f32(2, n * tokens * width);
    im2col_patches(images.ptr<float>(), n, size, patch, col, stream_);
    bool done = false;
    if (w.dtype == DType::F32) {
      LtGemm::Call c{col, DType::F32, w.data, DType::F32, acc, DType::F32, nullptr, DType::F32, nullptr,
                     Epilogue::None, n * tokens, width, kk};
      c.tf32 = true;
      done = lt_->run(c, stream_);
    }
    if (!done) simple_gemm(col, DType::F32, w.data, w.dtype, acc, n * tokens, width, kk, stream_);
    add_bias_pos(acc, b.data, b.dtype, pos.data, pos.dtype, out.data, out.dtype, n * tokens, tokens, width, stream_);
  }

  void embed(const Tensor& ids, const Tensor& table, float scale, const Tensor& out) override {
    PIRT_CHECK(ids.dtype == DType::I32 && table.shape.rank() == 2 && out.numel() == ids.numel() * table.dim(1),
               "embed: ids %s table %s out %s", ids.shape.str().c_str(), table.shape.str().c_str(),
               out.shape.str().c_str());
    cuda::embed(ids.ptr<int32_t>(), table.data, table.dtype, scale, out.data, out.dtype, ids.numel(), table.dim(1),
                stream_);
  }

  void qkv_rope(const Tensor& qkv, const Tensor& positions, int heads, int kv_heads, int head_dim, const Tensor& q,
                const Tensor& k, const Tensor& v) override {
    const int64_t width = (int64_t)(heads + 2 * kv_heads) * head_dim, tokens = qkv.numel() / width;
    PIRT_CHECK(qkv.shape[-1] == width && q.numel() == tokens * heads * head_dim &&
                   k.numel() == tokens * kv_heads * head_dim && v.numel() == k.numel() && head_dim % 2 == 0,
               "qkv_rope: qkv %s q %s k %s v %s (heads %d kv %d dim %d)", qkv.shape.str().c_str(),
               q.shape.str().c_str(), k.shape.str().c_str(), v.shape.str().c_str(), heads, kv_heads, head_dim);
    PIRT_CHECK(positions.empty() || (positions.dtype == DType::I32 && positions.numel() == tokens),
               "qkv_rope: positions %s", positions.shape.str().c_str());
    cuda::qkv_rope(qkv.data, qkv.dtype, positions.empty() ? nullptr : positions.ptr<int32_t>(), tokens, heads,
                   kv_heads, head_dim, q.data, q.dtype, k.data, k.dtype, v.data, v.dtype, stream_);
  }

  // ---- fused sequences: our small-M GEMM in partials mode, the next row kernel adds the splits ----
  // Whether x . w^T for out goes through small_gemm_partials (few rows, bf16, sm_90a).
  bool fused_small(const Tensor& x, const Tensor& w, const Tensor& out) const {
    if (!opt_.own_small_gemm || !opt_.fused_small_gemm || w.shape.rank() != 2 || x.dtype != DType::BF16 || w.dtype != DType::BF16 ||
        out.dtype != DType::BF16)
      return false;
    const int64_t n = w.dim(0), k = w.dim(1);
    if (x.shape.rank() < 1 || x.shape[-1] != k || out.shape[-1] != n) return false;
    const int64_t m = x.numel() / k;
    return m >= 1 && m <= 64 && n % 8 == 0 && small_gemm_supported(m, n, k) && out.numel() == m * n &&
           aligned16(x.data) && aligned16(w.data) && (int64_t)16 * m * n * 4 <= (int64_t)kPartialsBytes;
  }

  void linear_qkv_rope(const Tensor& x, const Tensor& w, const Tensor& qkv, const Tensor& positions, int heads,
                       int kv_heads, int head_dim, const Tensor& q, const Tensor& k, const Tensor& v) override {
    const int64_t width = (int64_t)(heads + 2 * kv_heads) * head_dim;
    if (!fused_small(x, w, qkv) || w.dim(0) != width || (!positions.empty() && positions.dtype != DType::I32)) {
      Backend::linear_qkv_rope(x, w, qkv, positions, heads, kv_heads, head_dim, q, k, v);
      return;
    }
    const int64_t m = x.numel() / w.dim(1), n = w.dim(0), kk = w.dim(1);
    PIRT_CHECK(q.numel() == m * heads * head_dim && k.numel() == m * kv_heads * head_dim && v.numel() == k.numel() &&
                   head_dim % 2 == 0 && (positions.empty() || positions.numel() == m),
               "linear_qkv_rope: x %s q %s k %s v %s positions %s", x.shape.str().c_str(), q.shape.str().c_str(),
               k.shape.str().c_str(), v.shape.str().c_str(), positions.shape.str().c_str());
    const SmallGemmPlan plan = small_gemm_plan_partials(m, n, kk, num_sms_);
    small_gemm_partials(plan, x.data, w.data, partials_, m, n, kk, stream_);
    cuda::qkv_rope(nullptr, qkv.dtype, positions.empty() ? nullptr : positions.ptr<int32_t>(), m, heads, kv_heads,
                   head_dim, q.data, q.dtype, k.data, k.dtype, v.data, v.dtype, stream_, partials_, plan.splits);
  }

  void linear_residual_rms_norm(const Tensor& x, const Tensor& w, const Tensor& h, const Tensor& norm_w, float eps,
                                const Tensor& xn) override {
    const int64_t d = h.shape[-1];
    if (!fused_small(x, w, h) || d % 128 != 0 || d > 4096 || xn.dtype != DType::BF16 || xn.numel() != h.numel() ||
        norm_w.numel() != d || !aligned16(h.data) || !aligned16(xn.data)) {
      Backend::linear_residual_rms_norm(x, w, h, norm_w, eps, xn);
      return;
    }
    const int64_t m = x.numel() / w.dim(1), n = w.dim(0), kk = w.dim(1);
    const SmallGemmPlan plan = small_gemm_plan_partials(m, n, kk, num_sms_);
    small_gemm_partials(plan, x.data, w.data, partials_, m, n, kk, stream_);
    cuda::residual_rms_norm_partials(partials_, plan.splits, h.data, norm_w.data, norm_w.dtype, xn.data, m, d, eps,
                                     stream_);
  }

  // ---- the block tail as one persistent kernel (block_tail.cu) ----
  void gemma_block_tail(const BlockTail& b) override {
    if (!block_tail_fits(b)) {
      Backend::gemma_block_tail(b);
      return;
    }
    BlockTailParams p;
    p.M = static_cast<int>(b.h.dim(0));
    p.D = static_cast<int>(b.h.dim(1));
    p.F = static_cast<int>(b.w_down.dim(1));
    p.Ko = static_cast<int>(b.wo.dim(1));
    p.eps = b.eps;
    p.attn = b.attn.data, p.wo = b.wo.data, p.h = b.h.data;
    if (b.mod_attn.empty()) {
      p.ffn_norm = b.ffn_norm.ptr<float>();
      p.next_norm = b.next_norm.ptr<float>();
    } else {
      p.mod_attn = b.mod_attn.ptr<float>(), p.mod_ffn = b.mod_ffn.ptr<float>(), p.next_mod = b.next_mod.ptr<float>();
    }
    p.wgu = b.w_gate_up.data, p.wd = b.w_down.data;
    p.xn = b.xn.data, p.mlp = b.mlp.data;
    if (!b.next_qkv.empty()) {
      p.heads = b.heads, p.kv_heads = b.kv_heads, p.head_dim = b.head_dim;
      p.wqkv = b.next_qkv.data;
      p.positions = b.positions.ptr<int32_t>();
      p.q = b.q.data, p.k = b.k.data, p.v = b.v.data;
    }
    p.partials = tail_partials_;
    p.rope = static_cast<float2*>(tail_rope_);
    p.barrier = tail_barrier_;
    p.pdl = opt_.step_pdl;
    p.trigger = opt_.pdl;  // (the next attention is a programmatic dependent only under --pdl)
    block_tail(p, num_sms_, stream_);
  }

  // ---- the boundary between two flow steps as one persistent kernel (action_step.cu) ----
  void action_step(const ActionStep& a) override {
    if (!action_step_fits(a)) {
      Backend::action_step(a);
      return;
    }
    ActionStepParams p;
    const bool embed = !a.w_in.empty();
    p.H = static_cast<int>(a.x.dim(0));
    p.A = static_cast<int>(a.x.dim(1));
    p.T = static_cast<int>((embed ? a.tok : a.xn).dim(0));
    p.D = static_cast<int>((embed ? a.tok : a.xn).dim(1));
    p.W = embed ? static_cast<int>(a.w_in.dim(0)) : p.D;
    p.dt = a.dt, p.eps = a.eps;
    p.x = a.x.ptr<float>();
    if (!a.w_out.empty()) {
      p.xn = a.xn.data;
      p.w_out = a.w_out.ptr<float>(), p.b_out = a.b_out.ptr<float>();
    }
    if (embed) {
      p.w_in = a.w_in.ptr<float>(), p.b_in = a.b_in.ptr<float>();
      if (!a.w_mlp.empty()) p.u = a.u.ptr<float>(), p.w_mlp = a.w_mlp.ptr<float>(), p.b_mlp = a.b_mlp.ptr<float>();
      p.tok = a.tok.ptr<float>();
      p.hs = a.hs.data;
      if (a.mod.empty())
        p.norm_w = a.norm_w.ptr<float>();
      else
        p.mod = a.mod.ptr<float>();
      p.xn_out = a.xn.data;
    }
    p.partials = step_partials_;
    p.barrier = step_barrier_;
    cuda::action_step(p, num_sms_, stream_);
  }

  // Whether the step kernel takes these tensors (else the ops one after another): bf16 xn and hs,
  // F32 everything else (the model's f32 islands), the shapes of ops.h ActionStep.
  bool action_step_fits(const ActionStep& a) const {
    if (!opt_.step_kernel || a.x.dtype != DType::F32 || a.x.shape.rank() != 2) return false;
    const int64_t H = a.x.dim(0), A = a.x.dim(1);
    auto f32 = [](const Tensor& t, int64_t n) { return t.dtype == DType::F32 && t.numel() == n; };
    auto bf = [](const Tensor& t, int64_t n) { return t.dtype == DType::BF16 && t.numel() == n; };
    int64_t T = 0, D = 0, W = 0;
    bool ok = true;
    if (!a.w_out.empty()) {
      if (a.xn.shape.rank() != 2) return false;
      T = a.xn.dim(0), D = a.xn.dim(1);
      ok = ok && bf(a.xn, T * D) && f32(a.w_out, A * D) && f32(a.b_out, A) && T >= H;
    }
    if (!a.w_in.empty()) {
      if (a.tok.shape.rank() != 2 || a.w_in.shape.rank() != 2) return false;
      if (!a.w_out.empty() && (a.tok.dim(0) != T || a.tok.dim(1) != D)) return false;
      T = a.tok.dim(0), D = a.tok.dim(1), W = a.w_in.dim(0);
      ok = ok && f32(a.w_in, W * A) && f32(a.b_in, W) && f32(a.tok, T * D) && bf(a.hs, T * D) && bf(a.xn, T * D) &&
           (a.mod.empty() ? f32(a.norm_w, D) : f32(a.mod, 3 * D));
      if (!a.w_mlp.empty())
        ok = ok && f32(a.u, H * W) && f32(a.w_mlp, D * W) && f32(a.b_mlp, D);
      else
        ok = ok && W == D && T == H;
    }
    auto al = [](const Tensor& t) { return t.empty() || aligned16(t.data); };  // (vector loads)
    ok = ok && al(a.w_out) && al(a.w_in) && al(a.w_mlp) && al(a.u) && (a.w_out.empty() || aligned16(a.xn.data));
    return ok && T > 0 && action_step_supported((int)T, (int)H, (int)A, (int)(W ? W : D), (int)D);
  }

  // Whether the block tail's kernel takes these tensors (else the ops one after another).
  bool block_tail_fits(const BlockTail& b) const {
    if (!opt_.block_kernel || b.h.shape.rank() != 2 || b.wo.shape.rank() != 2 || b.w_down.shape.rank() != 2 ||
        b.w_gate_up.shape.rank() != 2)
      return false;
    const int64_t M = b.h.dim(0), D = b.h.dim(1), F = b.w_down.dim(1), Ko = b.wo.dim(1);
    auto bf = [](const Tensor& t) { return t.dtype == DType::BF16 && aligned16(t.data); };
    // F32 norm weights, as the model loads them (the kernel has no second copy for BF16: see block_tail.cu).
    auto normw = [&](const Tensor& t) { return t.dtype == DType::F32 && t.numel() == D; };
    // pi0.5: F32 modulations [3D] (scale | shift | gate), 16-byte aligned.
    auto modw = [&](const Tensor& t) { return t.dtype == DType::F32 && t.numel() == 3 * D && aligned16(t.data); };
    const bool norms = b.mod_attn.empty() ? normw(b.ffn_norm) && normw(b.next_norm)
                                          : modw(b.mod_attn) && modw(b.mod_ffn) && modw(b.next_mod);
    bool ok = D <= kTailMaxWidth && M <= 64 && bf(b.attn) && bf(b.wo) && bf(b.h) && bf(b.w_gate_up) &&
              bf(b.w_down) && bf(b.xn) && bf(b.mlp) && norms &&
              b.attn.numel() == M * Ko && b.wo.dim(0) == D && b.w_gate_up.dim(0) == 2 * F &&
              b.w_gate_up.dim(1) == D && b.w_down.dim(0) == D && b.xn.numel() == M * D && b.mlp.numel() >= M * F;
    int heads = 0, kv = 0, hd = 0;
    if (!b.next_qkv.empty()) {
      heads = b.heads, kv = b.kv_heads, hd = b.head_dim;
      const int64_t width = (int64_t)(heads + 2 * kv) * hd;
      ok = ok && bf(b.next_qkv) && bf(b.q) && bf(b.k) && bf(b.v) && b.next_qkv.shape.rank() == 2 &&
           b.next_qkv.dim(0) == width && b.next_qkv.dim(1) == D && b.positions.dtype == DType::I32 &&
           b.positions.numel() == M && b.q.numel() == M * heads * hd && b.k.numel() == M * kv * hd &&
           b.v.numel() == b.k.numel() && hd > 0 && hd <= kTailMaxHeadDim;
    }
    return ok && block_tail_supported((int)M, (int)D, (int)F, (int)Ko, heads, kv, hd);
  }

  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask, float scale,
                 const Tensor& out) override {
    PIRT_CHECK(q.shape.rank() == 4 && k.shape.rank() == 4 && v.shape == k.shape && out.numel() == q.numel(),
               "attention: q %s k %s v %s out %s", q.shape.str().c_str(), k.shape.str().c_str(),
               v.shape.str().c_str(), out.shape.str().c_str());
    AttentionArgs a;
    a.q = q.data;
    a.k = k.data;
    a.v = v.data;
    a.out = out.data;
    a.S = static_cast<int>(q.dim(0));
    a.Tq = static_cast<int>(q.dim(1));
    a.Hq = static_cast<int>(q.dim(2));
    a.Dh = static_cast<int>(q.dim(3));
    a.Tk = static_cast<int>(k.dim(1));
    a.Hkv = static_cast<int>(k.dim(2));
    a.scale = scale;
    PIRT_CHECK(k.dim(0) == a.S && k.dim(3) == a.Dh && a.Hkv > 0 && a.Hq % a.Hkv == 0, "attention: q %s k %s",
               q.shape.str().c_str(), k.shape.str().c_str());
    PIRT_CHECK(q.dtype == DType::BF16 && k.dtype == DType::BF16 && v.dtype == DType::BF16 && out.dtype == DType::BF16,
               "attention: the CUDA backend takes bf16 q, k, v, out");
    if (!mask.none()) {
      PIRT_CHECK(mask.q_block.dtype == DType::I32 && mask.k_block.dtype == DType::I32 &&
                     mask.q_block.numel() == (int64_t)a.S * a.Tq && mask.k_block.numel() == (int64_t)a.S * a.Tk,
                 "attention: mask q_block %s k_block %s", mask.q_block.shape.str().c_str(),
                 mask.k_block.shape.str().c_str());
      a.q_block = mask.q_block.ptr<int32_t>();
      a.k_block = mask.k_block.ptr<int32_t>();
    }
    if (opt_.fast_attention &&
        attention_fast(a, attn_ws_, kAttentionWorkspace, num_sms_, stream_, 0, opt_.attention_clusters,
                       opt_.wgmma_attention))
      return;
    attention_reference(a, stream_);
  }

  // q, k and v read in place from the fused projection (the fast kernel's token strides); else the
  // default split + attention.
  void attention_qkv(const Tensor& qkv, int64_t S, int heads, int head_dim, float scale, const Tensor& q,
                     const Tensor& k, const Tensor& v, const Tensor& out) override {
    const int64_t width = (int64_t)heads * head_dim, M = out.numel() / std::max<int64_t>(width, 1);
    if (opt_.fast_attention && qkv.dtype == DType::BF16 && out.dtype == DType::BF16 && S > 0 && M % S == 0 &&
        qkv.numel() == 3 * M * width && out.numel() == M * width) {
      AttentionArgs a;
      const uint16_t* base = static_cast<const uint16_t*>(qkv.data);  // (bf16 elements)
      a.q = base, a.k = base + width, a.v = base + 2 * width, a.out = out.data;
      a.S = static_cast<int>(S), a.Tq = a.Tk = static_cast<int>(M / S), a.Hq = a.Hkv = heads, a.Dh = head_dim;
      a.scale = scale;
      a.q_stride = a.kv_stride = 3 * width;
      if (attention_fast(a, attn_ws_, kAttentionWorkspace, num_sms_, stream_, 0, opt_.attention_clusters, false))
        return;
    }
    Backend::attention_qkv(qkv, S, heads, head_dim, scale, q, k, v, out);
  }

  // For tests and benchmarks of this backend (cuda_backend_internal.h).
  cudaStream_t stream() const { return stream_; }

 private:
  void* raw_alloc(size_t bytes) {
    bytes = round_up(std::max<size_t>(bytes, 1), kAlign);
    if (bytes >= kSlabBytes / 4) {  // big tensors (weights) get their own allocation
      void* p = nullptr;
      CUDA_CHECK(cudaMalloc(&p, bytes));
      blocks_.push_back(p);
      reserved_ += bytes;
      peak_ = std::max(peak_, reserved_);
      return p;
    }
    if (slab_ == nullptr || slab_used_ + bytes > kSlabBytes) {
      void* p = nullptr;
      CUDA_CHECK(cudaMalloc(&p, kSlabBytes));
      blocks_.push_back(p);
      reserved_ += kSlabBytes;
      peak_ = std::max(peak_, reserved_);
      slab_ = static_cast<uint8_t*>(p);
      slab_used_ = 0;
    }
    void* p = slab_ + slab_used_;
    slab_used_ += bytes;
    return p;
  }

  // Grow-only fp32 scratch buffers (a new buffer when a larger one is needed; old ones stay valid for
  // graphs captured with them).
  float* scratch_f32(int slot, int64_t n) {
    auto& s = scratch_[slot];
    if (s.second < n) {
      s.first = static_cast<float*>(raw_alloc(static_cast<size_t>(n) * 4));
      s.second = n;
    }
    return s.first;
  }

  static void convert_host(const Tensor& src, int64_t i0, int64_t n, DType dt, uint8_t* dst) {
    if (dt == DType::BF16) {
      uint16_t* o = reinterpret_cast<uint16_t*>(dst);
      if (src.dtype == DType::F32) {
        // A checkpoint's tensors need not be 4-byte aligned in the file: copy, do not dereference.
        const uint8_t* s = static_cast<const uint8_t*>(src.data) + i0 * 4;
        for (int64_t i = 0; i < n; ++i) {
          float v;
          std::memcpy(&v, s + 4 * i, 4);
          o[i] = f32_to_bf16(v);
        }
      } else {
        for (int64_t i = 0; i < n; ++i) o[i] = f32_to_bf16(load_f32(src, i0 + i));
      }
    } else if (dt == DType::F32) {
      float* o = reinterpret_cast<float*>(dst);
      for (int64_t i = 0; i < n; ++i) o[i] = load_f32(src, i0 + i);
    } else if (dt == DType::F16) {
      uint16_t* o = reinterpret_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) o[i] = f32_to_f16(load_f32(src, i0 + i));
    } else {
      PIRT_CHECK(false, "upload: conversion to %s", dname(dt).c_str());
    }
  }

  CudaOptions opt_;
  std::string name_;
  int num_sms_ = 0;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<LtGemm> lt_;
  std::shared_ptr<const TuningTable> tuning_;
  void* lt_ws_ = nullptr;
  float* attn_ws_ = nullptr;
  void* staging_ = nullptr;  // pinned host memory for to_device (grow-only)
  size_t staging_bytes_ = 0, staging_used_ = 0;
  float* partials_ = nullptr;  // small_gemm_partials output (fused sequences)
  float* tail_partials_ = nullptr;  // the block tail's k-split sums
  void* tail_rope_ = nullptr;       // its RoPE table
  unsigned long long* tail_barrier_ = nullptr;  // its grid barrier's counter
  float* step_partials_ = nullptr;                  // the step kernel's k-split sums
  unsigned long long* step_barrier_ = nullptr;      // its grid barrier's counter
  std::vector<void*> blocks_;
  uint8_t* slab_ = nullptr;
  size_t slab_used_ = 0;
  size_t reserved_ = 0, peak_ = 0;
  std::pair<float*, int64_t> scratch_[3] = {};
  std::unordered_map<std::string, cudaGraphExec_t> graphs_;
  bool capturing_ = false;
};

}  // namespace

bool cuda_device_present() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return false;
  }
  return n > 0;
}

std::unique_ptr<Backend> make_cuda_backend(const CudaOptions& opt) {
  if (!cuda_device_present()) throw_error("no CUDA device: the CUDA backend needs an NVIDIA GPU and its driver");
  return std::make_unique<CudaBackend>(opt);
}

}  // namespace pirt
