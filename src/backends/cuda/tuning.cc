// GEMM tuning (tuning.h, lt_algo.h): shape log, the table for this GPU, cuBLASLt algorithms as text,
// and the tuner.
#include "backends/cuda/tuning.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/lt_algo.h"
#include "core/bf16.h"

namespace pirt::cuda {

// ---- keys and the shape log ----

GemmKey gemm_key(int64_t m, int64_t n, int64_t k, DType x, DType w, DType out, bool tf32, bool has_bias, DType bias,
                 bool gelu, bool has_res, DType res) {
  GemmKey key;
  key.m = m, key.n = n, key.k = k;
  key.x = x, key.w = w, key.out = out;
  key.tf32 = tf32 && x == DType::F32;
  key.has_bias = has_bias;
  key.bias = has_bias ? bias : DType::F32;
  key.gelu = gelu;
  key.has_res = has_res;
  key.res = has_res ? res : DType::BF16;
  return key;
}

void GemmShapeLog::add(const GemmKey& k) {
  std::lock_guard<std::mutex> lock(mu_);
  if (seen_[k]++ == 0) order_.push_back(k);
}

int GemmShapeLog::count(const GemmKey& k) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = seen_.find(k);
  return it == seen_.end() ? 0 : it->second;
}

std::vector<GemmKey> GemmShapeLog::keys() const {
  std::lock_guard<std::mutex> lock(mu_);
  return order_;
}

namespace {
std::atomic<GemmShapeLog*> g_shape_log{nullptr};
}  // namespace

GemmShapeLog* gemm_shape_log() { return g_shape_log.load(std::memory_order_acquire); }
void set_gemm_shape_log(GemmShapeLog* l) { g_shape_log.store(l, std::memory_order_release); }

// ---- the table for this GPU ----

std::shared_ptr<const TuningTable> load_gpu_tuning(const std::string& file, const std::string& gpu) {
  static std::once_flag said;
  if (file == "none") return std::make_shared<TuningTable>();
  if (!file.empty()) {
    auto t = std::make_shared<TuningTable>(read_tuning_file(file), gpu, file);
    if (t->empty())
      std::call_once(said, [&] {
        std::fprintf(stderr, "pirt: %s has no rows for %s; using cuBLASLt's heuristic for every GEMM\n", file.c_str(),
                     gpu.c_str());
      });
    return t;
  }
  for (const auto& [name, text] : shipped_tuning_tables()) {
    auto t = std::make_shared<TuningTable>(parse_tuning_csv(text, "bench/tuning/" + name), gpu, "bench/tuning/" + name);
    if (!t->empty()) return t;
  }
  std::call_once(said, [&] {
    std::fprintf(stderr,
                 "pirt: no tuned GEMM table for %s (bench/tuning/ has none; `pirt tune` makes one); using "
                 "cuBLASLt's heuristic\n",
                 gpu.c_str());
  });
  return std::make_shared<TuningTable>();
}

SmallConfig small_config(const GemmAlgorithm& a) {
  if (a.kind != "small") return {};
  return {static_cast<int>(a.get("bn")), static_cast<int>(a.get("splits"))};
}

std::string cuda_gpu_name(int device) {
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop.name;
}

// ---- cuBLASLt algorithms as text ----

namespace {

struct LtAttr {
  const char* name;
  cublasLtMatmulAlgoConfigAttributes_t attr;
  int bytes;  // 2 or 4
};
const LtAttr kLtAttrs[] = {
    {"tile", CUBLASLT_ALGO_CONFIG_TILE_ID, 4},          {"stages", CUBLASLT_ALGO_CONFIG_STAGES_ID, 4},
    {"splitk", CUBLASLT_ALGO_CONFIG_SPLITK_NUM, 4},     {"red", CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, 4},
    {"swizzle", CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, 4}, {"custom", CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, 4},
    {"cluster", CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, 2}, {"inner", CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID, 2},
};

int64_t get_attr(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoConfigAttributes_t attr, int bytes) {
  size_t written = 0;
  if (bytes == 2) {
    uint16_t v = 0;
    cublasLtMatmulAlgoConfigGetAttribute(&algo, attr, &v, sizeof(v), &written);
    return v;
  }
  int32_t v = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&algo, attr, &v, sizeof(v), &written);
  return v;
}

bool same_attrs(const GemmAlgorithm& a, const GemmAlgorithm& b) { return a.params == b.params; }

}  // namespace

GemmAlgorithm encode_lt_algo(const cublasLtMatmulAlgo_t& algo) {
  GemmAlgorithm a;
  a.kind = "lt";
  a.params["id"] = get_attr(algo, CUBLASLT_ALGO_CONFIG_ID, 4);
  for (const LtAttr& at : kLtAttrs) a.params[at.name] = get_attr(algo, at.attr, at.bytes);
  return a;
}

bool find_lt_algo(cublasLtHandle_t h, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                  cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d, cublasLtMatmulPreference_t pref,
                  size_t workspace_bytes, const GemmAlgorithm& want, cublasLtMatmulAlgo_t* out) {
  if (want.kind != "lt") return false;
  // 1. Among the heuristic's answers (what `pirt tune` timed).
  constexpr int kCount = 64;
  cublasLtMatmulHeuristicResult_t res[kCount];
  int found = 0;
  if (cublasLtMatmulAlgoGetHeuristic(h, desc, a, b, c, d, pref, kCount, res, &found) == CUBLAS_STATUS_SUCCESS) {
    for (int i = 0; i < found; ++i) {
      if (res[i].state != CUBLAS_STATUS_SUCCESS || res[i].workspaceSize > workspace_bytes) continue;
      const GemmAlgorithm e = encode_lt_algo(res[i].algo);
      bool match = true;
      for (const auto& [name, v] : want.params) match = match && e.get(name, -1) == v;
      if (match) {
        *out = res[i].algo;
        return true;
      }
    }
  }
  // 2. Built from its attributes, if its split-K reduction is one that `pref` allows.
  uint32_t mask = CUBLASLT_REDUCTION_SCHEME_MASK;
  size_t mw = 0;
  cublasLtMatmulPreferenceGetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &mask, sizeof(mask), &mw);
  const int64_t red = want.get("red");
  if (red != 0 && !(static_cast<uint32_t>(red) & mask)) return false;
  cublasComputeType_t compute;
  cudaDataType_t scale, ta, tb, tc, td;
  size_t w = 0;
  if (cublasLtMatmulDescGetAttribute(desc, CUBLASLT_MATMUL_DESC_COMPUTE_TYPE, &compute, sizeof(compute), &w) ||
      cublasLtMatmulDescGetAttribute(desc, CUBLASLT_MATMUL_DESC_SCALE_TYPE, &scale, sizeof(scale), &w) ||
      cublasLtMatrixLayoutGetAttribute(a, CUBLASLT_MATRIX_LAYOUT_TYPE, &ta, sizeof(ta), &w) ||
      cublasLtMatrixLayoutGetAttribute(b, CUBLASLT_MATRIX_LAYOUT_TYPE, &tb, sizeof(tb), &w) ||
      cublasLtMatrixLayoutGetAttribute(c, CUBLASLT_MATRIX_LAYOUT_TYPE, &tc, sizeof(tc), &w) ||
      cublasLtMatrixLayoutGetAttribute(d, CUBLASLT_MATRIX_LAYOUT_TYPE, &td, sizeof(td), &w))
    return false;
  cublasLtMatmulAlgo_t algo;
  if (cublasLtMatmulAlgoInit(h, compute, scale, ta, tb, tc, td, static_cast<int>(want.get("id")), &algo) !=
      CUBLAS_STATUS_SUCCESS)
    return false;
  for (const LtAttr& at : kLtAttrs) {
    if (!want.params.count(at.name)) continue;
    const int64_t v = want.get(at.name);
    cublasStatus_t st;
    if (at.bytes == 2) {
      const uint16_t v16 = static_cast<uint16_t>(v);
      st = cublasLtMatmulAlgoConfigSetAttribute(&algo, at.attr, &v16, sizeof(v16));
    } else {
      const int32_t v32 = static_cast<int32_t>(v);
      st = cublasLtMatmulAlgoConfigSetAttribute(&algo, at.attr, &v32, sizeof(v32));
    }
    if (st != CUBLAS_STATUS_SUCCESS) return false;
  }
  cublasLtMatmulHeuristicResult_t check{};
  if (cublasLtMatmulAlgoCheck(h, desc, a, b, c, d, &algo, &check) != CUBLAS_STATUS_SUCCESS ||
      check.workspaceSize > workspace_bytes)
    return false;
  *out = algo;
  return true;
}

// ---- the tuner ----

namespace {

constexpr size_t kLtWorkspace = 32ull << 20;       // as the backend's

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    default: PIRT_CHECK(false, "tune: dtype %s", std::string(dtype_name(t)).c_str());
  }
  return CUDA_R_32F;
}

struct DevBuf {
  void* p = nullptr;
  explicit DevBuf(size_t bytes) { CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(bytes, 256))); }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
};

// Random values in [-a, a] of dtype t, written over `bytes` of device memory (a repeated host chunk).
void fill_random(void* dev, size_t bytes, DType t, float a, uint64_t seed) {
  const size_t es = dtype_size(t);
  const size_t chunk_elems = std::min<size_t>(bytes / es, 4u << 20);
  std::vector<uint8_t> host(chunk_elems * es);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-a, a);
  for (size_t i = 0; i < chunk_elems; ++i) {
    const float v = u(rng);
    if (t == DType::F32)
      std::memcpy(&host[i * 4], &v, 4);
    else if (t == DType::BF16) {
      const uint16_t h = f32_to_bf16(v);
      std::memcpy(&host[i * 2], &h, 2);
    } else {
      const uint16_t h = f32_to_f16(v);
      std::memcpy(&host[i * 2], &h, 2);
    }
  }
  for (size_t off = 0; off < bytes; off += host.size())
    CUDA_CHECK(cudaMemcpy(static_cast<uint8_t*>(dev) + off, host.data(), std::min(host.size(), bytes - off),
                          cudaMemcpyHostToDevice));
}

std::vector<float> to_host_f32(const void* dev, int64_t n, DType t) {
  std::vector<uint8_t> raw(n * dtype_size(t));
  CUDA_CHECK(cudaMemcpy(raw.data(), dev, raw.size(), cudaMemcpyDeviceToHost));
  std::vector<float> out(n);
  for (int64_t i = 0; i < n; ++i) {
    if (t == DType::F32)
      std::memcpy(&out[i], &raw[i * 4], 4);
    else {
      uint16_t h;
      std::memcpy(&h, &raw[i * 2], 2);
      out[i] = t == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
  }
  return out;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - ref[i];
    if (!std::isfinite(a[i])) return INFINITY;
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// Descriptors of out[M,N] = x[M,K] w[N,K]^T (+ epilogue) exactly as LtGemm builds them.
struct LtProblem {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  LtProblem(const GemmKey& k, size_t workspace) {
    const cublasComputeType_t compute =
        k.x == DType::F32 ? (k.tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F) : CUBLAS_COMPUTE_32F;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, compute, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
    if (k.gelu)
      epi = k.has_bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
    else if (k.has_bias)
      epi = CUBLASLT_EPILOGUE_BIAS;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    if (k.has_bias) {
      const cudaDataType_t bt = cuda_type(k.bias);
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
    }
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&a, cuda_type(k.w), k.k, k.n, k.k));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&b, cuda_type(k.x), k.k, k.m, k.k));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&c, cuda_type(k.out), k.n, k.m, k.n));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d, cuda_type(k.out), k.n, k.m, k.n));
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                                      sizeof(workspace)));
    // As LtGemm: split-K only with fp32 partials (bf16 partial sums lose bits and cancel residuals).
    const uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes,
                                                      sizeof(schemes)));
    const uint32_t al = 256;
    for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &al, sizeof(al)));
  }
  ~LtProblem() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (desc) cublasLtMatmulDescDestroy(desc);
    for (auto l : {a, b, c, d})
      if (l) cublasLtMatrixLayoutDestroy(l);
  }
  LtProblem(const LtProblem&) = delete;
  LtProblem& operator=(const LtProblem&) = delete;
};

struct Candidate {
  GemmAlgorithm algo;
  std::function<void(int copy)> launch;  // issues the GEMM on weight copy `copy`
};

// Median time of one launch, in us: `per_graph` launches rotating over the weight copies are
// captured in a graph, replayed once to warm up, then `repeats` times under events.
double time_launches(const Candidate& c, int copies, int repeats, cudaStream_t s) {
  const int per_graph = std::max(copies, 20);
  cudaGraph_t graph = nullptr;
  CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
  try {
    for (int i = 0; i < per_graph; ++i) c.launch(i % copies);
  } catch (...) {
    cudaStreamEndCapture(s, &graph);
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    throw;
  }
  CUDA_CHECK(cudaStreamEndCapture(s, &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  CUDA_CHECK(err);
  cudaEvent_t e0, e1;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  std::vector<float> ms;
  CUDA_CHECK(cudaGraphLaunch(exec, s));
  for (int r = 0; r < repeats; ++r) {
    CUDA_CHECK(cudaEventRecord(e0, s));
    CUDA_CHECK(cudaGraphLaunch(exec, s));
    CUDA_CHECK(cudaEventRecord(e1, s));
    CUDA_CHECK(cudaEventSynchronize(e1));
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaGraphExecDestroy(exec);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2] * 1000.0 / per_graph;
}

}  // namespace

std::vector<TuneReport> tune_gemms(const std::vector<GemmKey>& keys, const TuneOptions& opt,
                                   const std::function<void(const std::string&)>& log) {
  CUDA_CHECK(cudaSetDevice(opt.device));
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, opt.device));
  const std::string gpu = prop.name;
  const int sms = prop.multiProcessorCount;
  cudaStream_t s = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cublasLtHandle_t lt = nullptr;
  CUBLAS_CHECK(cublasLtCreate(&lt));
  DevBuf lt_ws(kLtWorkspace);

  std::vector<TuneReport> reports;
  for (const GemmKey& key : keys) {
    const int64_t m = key.m, n = key.n, k = key.k;
    const size_t wbytes = static_cast<size_t>(n) * k * dtype_size(key.w);
    const int copies =
        static_cast<int>(std::clamp<double>(std::ceil(opt.pool_mb * 1e6 / std::max<size_t>(wbytes, 1)), 2, 512));
    DevBuf pool(wbytes * copies), x(m * k * dtype_size(key.x)), out(m * n * 4), ref(m * n * 4), acc(m * n * 4),
        bias(n * 4), res(m * n * 4);
    fill_random(pool.p, wbytes * copies, key.w, 0.05f, 1);
    fill_random(x.p, m * k * dtype_size(key.x), key.x, 1.0f, 2);
    if (key.has_bias) fill_random(bias.p, n * dtype_size(key.bias), key.bias, 0.5f, 3);
    if (key.has_res) fill_random(res.p, m * n * dtype_size(key.res), key.res, 1.0f, 4);
    auto weights = [&](int i) { return static_cast<const uint8_t*>(pool.p) + static_cast<size_t>(i) * wbytes; };
    const void* bptr = key.has_bias ? bias.p : nullptr;
    const void* rptr = key.has_res ? res.p : nullptr;
    const Epilogue ep = key.gelu ? Epilogue::GeluTanh : Epilogue::None;

    // The reference: the plain tiled GEMM in fp32 and our epilogue.
    simple_gemm(x.p, key.x, weights(0), key.w, static_cast<float*>(acc.p), m, n, k, s);
    linear_epilogue(static_cast<float*>(acc.p), bptr, key.bias, ep, rptr, key.res, ref.p, key.out, m, n, s);
    CUDA_CHECK(cudaStreamSynchronize(s));
    const std::vector<float> want = to_host_f32(ref.p, m * n, key.out);

    std::vector<Candidate> cands;
    std::string default_algo;
    // Our small-M kernel, each configuration (as linear() decides whether it applies).
    const bool small_ok = prop.major >= 9 && key.x == DType::BF16 && key.w == DType::BF16 &&
                          small_gemm_supported(m, n, k) && key.out != DType::F16 &&
                          !(key.has_bias && key.bias == DType::F16) && !(key.has_res && key.res == DType::F16);
    if (small_ok) {
      const SmallGemmPlan def = small_gemm_plan(m, n, k, sms);
      default_algo = strformat("small:bn=%d,splits=%d", def.bn, def.splits);
      if (opt.small)
        for (int bn : {32, 64, 128})
          for (int splits = 1; splits <= 8; ++splits) {
            const SmallGemmPlan plan = small_gemm_plan(m, n, k, sms, bn, splits);
            if (plan.bn != bn || plan.splits != splits) continue;  // cannot run: fell back to the default
            if ((int64_t)plan.col_tiles * splits > 4 * sms) continue;  // many waves: never the fastest
            Candidate c;
            c.algo.kind = "small";
            c.algo.params = {{"bn", bn}, {"splits", splits}};
            c.launch = [&, plan](int i) {
              small_gemm(plan, x.p, weights(i), bptr, key.bias, ep, rptr, key.res, out.p, key.out, m, n, k, s);
            };
            cands.push_back(std::move(c));
          }
    }
    // cuBLASLt: the heuristic's answers, fused epilogue where linear() fuses, else the product into
    // fp32 scratch and our epilogue (as linear() does).
    const bool lt_types = key.x == key.w && (key.x == DType::BF16 || key.x == DType::F32) &&
                          (key.out == key.x || key.out == DType::F32);
    const bool fused = !(key.gelu && key.has_res) && (!key.has_res || key.res == key.out);
    const GemmKey inner = fused ? key : gemm_key(m, n, k, key.x, key.w, DType::F32, key.tf32, false, DType::F32,
                                                 false, false, DType::F32);
    std::unique_ptr<LtProblem> prob;
    std::vector<cublasLtMatmulAlgo_t> lt_algos;
    if (lt_types) {
      prob = std::make_unique<LtProblem>(inner, kLtWorkspace);
      if (key.has_bias && fused)
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(prob->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bptr,
                                                    sizeof(bptr)));
      const int want_n = std::max(1, opt.lt ? opt.lt_candidates : 1);
      std::vector<cublasLtMatmulHeuristicResult_t> res_h(want_n);
      int found = 0;
      if (cublasLtMatmulAlgoGetHeuristic(lt, prob->desc, prob->a, prob->b, prob->c, prob->d, prob->pref, want_n,
                                         res_h.data(), &found) != CUBLAS_STATUS_SUCCESS)
        found = 0;
      std::vector<std::string> seen;
      for (int i = 0; i < found; ++i) {
        if (res_h[i].state != CUBLAS_STATUS_SUCCESS || res_h[i].workspaceSize > kLtWorkspace) continue;
        // Time what the engine will restore from the text, not the heuristic's descriptor.
        const GemmAlgorithm enc = encode_lt_algo(res_h[i].algo);
        cublasLtMatmulAlgo_t algo;
        if (!find_lt_algo(lt, prob->desc, prob->a, prob->b, prob->c, prob->d, prob->pref, kLtWorkspace, enc, &algo))
          continue;
        if (std::find(seen.begin(), seen.end(), enc.str()) != seen.end()) continue;
        seen.push_back(enc.str());
        if (default_algo.empty() && i == 0) default_algo = enc.str();
        lt_algos.push_back(algo);
      }
      if (!small_ok && !seen.empty()) default_algo = seen[0];
      for (size_t i = 0; i < lt_algos.size(); ++i) {
        Candidate c;
        c.algo = encode_lt_algo(lt_algos[i]);
        const cublasLtMatmulAlgo_t* algo = &lt_algos[i];
        LtProblem* p = prob.get();
        c.launch = [&, algo, p, fused](int wi) {
          const float alpha = 1.f, beta = fused && key.has_res ? 1.f : 0.f;
          void* d = fused ? out.p : acc.p;
          const void* cptr = fused && key.has_res ? rptr : d;
          CUBLAS_CHECK(cublasLtMatmul(lt, p->desc, &alpha, weights(wi), p->a, x.p, p->b, &beta, cptr, p->c, d, p->d,
                                      algo, lt_ws.p, kLtWorkspace, s));
          if (!fused)
            linear_epilogue(static_cast<float*>(acc.p), bptr, key.bias, ep, rptr, key.res, out.p, key.out, m, n, s);
        };
        cands.push_back(std::move(c));
      }
    }

    // Check each candidate's result, then time it.
    TuneReport rep;
    rep.key = key;
    rep.default_algorithm = default_algo;
    rep.best.gpu = gpu;
    rep.best.key = key;
    double best = INFINITY;
    for (const Candidate& c : cands) {
      ++rep.candidates;
      try {
        CUDA_CHECK(cudaMemsetAsync(out.p, 0xff, m * n * 4, s));  // NaN: every element must be written
        c.launch(0);
        CUDA_CHECK(cudaStreamSynchronize(s));
        const double err = rel_l2(to_host_f32(out.p, m * n, key.out), want);
        if (!(err < 2e-2)) {
          ++rep.rejected;
          log(strformat("  rejected %s: rel L2 %.3g against the fp32 reference", c.algo.str().c_str(), err));
          continue;
        }
        const double us = time_launches(c, copies, opt.repeats, s);
        if (c.algo.str() == default_algo) rep.default_us = us;
        if (us < best) {
          best = us;
          rep.best.algorithm = c.algo;
          rep.best.us = us;
          rep.best.tflops = 2.0 * m * n * k / (us * 1e-6) / 1e12;
        }
      } catch (const Error& e) {
        ++rep.rejected;
        cudaGetLastError();
        log(strformat("  rejected %s: %s", c.algo.str().c_str(), e.what()));
      }
    }
    if (std::isfinite(best)) {
      // An unfused cuBLASLt product is looked up by LtGemm under its own key: give it a row too.
      if (rep.best.algorithm.kind == "lt" && !(inner == key)) {
        TuningRow r = rep.best;
        r.key = inner;
        rep.extra.push_back(r);
      }
      log(strformat("%-58s default %9.2f us (%s)  best %9.2f us (%s)  %.2fx  [%d timed, %d rejected]",
                    key.str().c_str(), rep.default_us, default_algo.c_str(), rep.best.us,
                    rep.best.algorithm.str().c_str(), rep.default_us > 0 ? rep.default_us / rep.best.us : 0.0,
                    rep.candidates - rep.rejected, rep.rejected));
      reports.push_back(rep);
    } else {
      log(strformat("%-58s no working candidate; left to the heuristic", key.str().c_str()));
    }
  }
  cublasLtDestroy(lt);
  cudaStreamDestroy(s);
  return reports;
}

}  // namespace pirt::cuda
