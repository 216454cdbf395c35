// Kernel lab for the CUDA backend: times our small-M GEMM against cuBLASLt on the action-step shapes
// (weights rotated through > 400 MB so they stream from HBM), the attention kernel on pi0's three
// shapes, and one whole action step (18 expert layers) through the backend in a CUDA graph.
//
// Build (after `ninja -C build-cuda pirt_cuda`), from the repository root:
//   nvcc -std=c++20 -O2 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Isrc \
//     bench/kernels/kernel_bench.cu build-cuda/libpirt_cuda.a build-cuda/libpirt_io.a build-cuda/libpirt_core.a -lcublasLt \
//     -o build-cuda/kernel_bench
// Run: build-cuda/kernel_bench [--quick | --attention (attention only) | --block-tail | --action-step | --profile]. Every time is the median over replays of a CUDA graph of
// 20 calls, per call. TB/s counts weight bytes (GEMM) or q+k+v+out bytes (attention).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/lt_gemm.h"
#include "core/bf16.h"

namespace pirt::cuda {
extern int attention_kernel_variant;  // attention.cu's test knobs: 0 auto, 1 flash only, 2.. split kernel
extern int attention_debug_phase;
}

using namespace pirt;
using namespace pirt::cuda;

namespace {

bool attention_check_failed = false;

__global__ void fill_kernel(__nv_bfloat16* p, size_t n, uint32_t seed, float scale) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint32_t h = (uint32_t)i * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = __float2bfloat16(((h & 0xffff) / 32768.f - 1.f) * scale);
  }
}

void fill(void* p, size_t n, uint32_t seed, float scale) {
  fill_kernel<<<1024, 256>>>(static_cast<__nv_bfloat16*>(p), n, seed, scale);
  CUDA_CHECK_LAUNCH();
}

void* dmalloc(size_t bytes) {
  void* p;
  CUDA_CHECK(cudaMalloc(&p, bytes));
  return p;
}

// Median microseconds per call of `body` (which issues `calls` calls) captured in a graph.
double time_graph(cudaStream_t s, int calls, const std::function<void()>& body, int reps = 15) {
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
  body();
  CUDA_CHECK(cudaStreamEndCapture(s, &g));
  CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) CUDA_CHECK(cudaGraphLaunch(ge, s));
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    CUDA_CHECK(cudaEventRecord(a, s));
    CUDA_CHECK(cudaGraphLaunch(ge, s));
    CUDA_CHECK(cudaEventRecord(b, s));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1000.0 / calls);
  }
  CUDA_CHECK(cudaGraphExecDestroy(ge));
  CUDA_CHECK(cudaGraphDestroy(g));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

double max_rel_diff(const void* a, const void* b, size_t n) {
  std::vector<uint16_t> ha(n), hb(n);
  CUDA_CHECK(cudaMemcpy(ha.data(), a, n * 2, cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(hb.data(), b, n * 2, cudaMemcpyDeviceToHost));
  double ss = 0, worst = 0;
  for (size_t i = 0; i < n; ++i) ss += double(bf16_to_f32(hb[i])) * bf16_to_f32(hb[i]);
  const double rms = std::sqrt(ss / n);
  for (size_t i = 0; i < n; ++i) {
    const double d = std::fabs(double(bf16_to_f32(ha[i])) - bf16_to_f32(hb[i]));
    if (!std::isfinite(d)) return INFINITY;
    worst = std::max(worst, d / rms);
  }
  return worst;
}

struct GemmShape {
  const char* name;
  int64_t m, n, k;
  bool residual;
};

void bench_gemm(cudaStream_t s, LtGemm& lt, float* ws, int* counters, int sms, bool quick) {
  std::printf("\n== bf16 GEMM, weights from HBM (rotated through >400 MB), per call ==\n");
  std::printf("%-22s %-18s %9s %8s %8s %10s\n", "shape (MxNxK)", "kernel", "us", "TB/s", "TFLOP/s", "maxdiff/rms");
  const GemmShape shapes[] = {{"act qkv", 51, 2560, 1024, false},     {"act o +res", 51, 1024, 2048, true},
                              {"act gate_up", 51, 8192, 1024, false}, {"act down +res", 51, 1024, 4096, true},
                              {"h10 gate_up", 11, 8192, 1024, false}, {"b2 qkv (m102->lt)", 102, 2560, 1024, false}};
  for (const GemmShape& sh : shapes) {
    const size_t wbytes = sh.n * sh.k * 2;
    const int copies = static_cast<int>(std::max<size_t>(2, (420ull << 20) / wbytes + 1));
    void* w = dmalloc(wbytes * copies);
    fill(w, sh.n * sh.k * copies, 1, 0.03f);
    void* x = dmalloc(sh.m * sh.k * 2);
    fill(x, sh.m * sh.k, 2, 1.f);
    void* res = dmalloc(sh.m * sh.n * 2);
    fill(res, sh.m * sh.n, 3, 1.f);
    void* out_lt = dmalloc(sh.m * sh.n * 2);
    void* out_own = dmalloc(sh.m * sh.n * 2);
    CUDA_CHECK(cudaDeviceSynchronize());
    const int calls = 20;
    auto wp = [&](int i) { return static_cast<char*>(w) + (size_t)(i % copies) * wbytes; };
    char label[64];
    std::snprintf(label, sizeof label, "%s %lldx%lldx%lld", sh.name, (long long)sh.m, (long long)sh.n, (long long)sh.k);
    auto report = [&](const char* kernel, double us, double diff) {
      std::printf("%-22s %-18s %9.2f %8.2f %8.1f %10.2e\n", label, kernel, us, wbytes / us * 1e-6,
                  2.0 * sh.m * sh.n * sh.k / us * 1e-6, diff);
    };
    // cuBLASLt (residual as C, beta = 1).
    auto lt_call = [&](int i, void* out) {
      LtGemm::Call c{x, DType::BF16, wp(i), DType::BF16, out, DType::BF16, nullptr, DType::F32,
                     sh.residual ? res : nullptr, Epilogue::None, sh.m, sh.n, sh.k};
      if (!lt.run(c, s)) throw std::runtime_error("cuBLASLt: no algorithm");
    };
    lt_call(0, out_lt);
    const double t_lt = time_graph(s, calls, [&] {
      for (int i = 0; i < calls; ++i) lt_call(i, out_lt);
    });
    report("cublasLt", t_lt, 0.0);
    {  // the same weights every call: they stay in L2 (what a prefetch into L2 could give)
      const double t_hot = time_graph(s, calls, [&] {
        for (int i = 0; i < calls; ++i) lt_call(0, out_lt);
      });
      report("cublasLt L2-hot", t_hot, 0.0);
    }
    lt_call(0, out_lt);  // the reference for the diffs: weight copy 0
    CUDA_CHECK(cudaStreamSynchronize(s));
    if (!small_gemm_supported(sh.m, sh.n, sh.k) || sh.m > 64) {
      cudaFree(w), cudaFree(x), cudaFree(res), cudaFree(out_lt), cudaFree(out_own);
      continue;
    }
    auto own = [&](const SmallGemmPlan& plan, int i) {
      small_gemm(plan, x, wp(i), nullptr, DType::F32, Epilogue::None, sh.residual ? res : nullptr, DType::BF16, out_own,
                 DType::BF16, sh.m, sh.n, sh.k, s);
    };
    const SmallGemmPlan def = small_gemm_plan(sh.m, sh.n, sh.k, sms);
    own(def, 0);
    CUDA_CHECK(cudaStreamSynchronize(s));
    const double d_def = max_rel_diff(out_own, out_lt, sh.m * sh.n);
    const double t_def = time_graph(s, calls, [&] {
      for (int i = 0; i < calls; ++i) own(def, i);
    });
    char kname[64];
    std::snprintf(kname, sizeof kname, "own bn%d s%d", def.bn, def.splits);
    report(kname, t_def, d_def);
    {
      const double t_hot = time_graph(s, calls, [&] {
        for (int i = 0; i < calls; ++i) own(def, 0);
      });
      std::snprintf(kname, sizeof kname, "own bn%d s%d L2-hot", def.bn, def.splits);
      report(kname, t_hot, d_def);
    }
    if (sh.n % 8 == 0) {  // partials mode (the fused paths): the GEMM alone, no consumer
      float* part = static_cast<float*>(dmalloc((size_t)16 * sh.m * sh.n * 4));
      const SmallGemmPlan pd = small_gemm_plan_partials(sh.m, sh.n, sh.k, sms);
      for (int bn : {0, 32, 64, 128})
        for (int sp : {0, 1, 2, 3, 4, 6, 8, 12, 16}) {
          if ((bn == 0) != (sp == 0)) continue;
          const SmallGemmPlan pp = bn ? small_gemm_plan_partials(sh.m, sh.n, sh.k, sms, bn, sp) : pd;
          if (bn && (pp.bn != bn || pp.splits != sp || (int64_t)pp.col_tiles * sp > 2 * sms)) continue;
          const double t = time_graph(s, calls, [&] {
            for (int i = 0; i < calls; ++i) small_gemm_partials(pp, x, wp(i), part, sh.m, sh.n, sh.k, s);
          });
          std::snprintf(kname, sizeof kname, "partials bn%d s%d%s", pp.bn, pp.splits, bn ? "" : " (plan)");
          report(kname, t, 0);
        }
      cudaFree(part);
    }
    for (int dbg : {1, 3, 4, 8}) {  // where the time goes: without the reduction, also without the data wait
      small_gemm_debug = dbg;
      const double t = time_graph(s, calls, [&] {
        for (int i = 0; i < calls; ++i) own(def, i);
      });
      small_gemm_debug = 0;
      std::snprintf(kname, sizeof kname, "own bn%d s%d dbg%d", def.bn, def.splits, dbg);
      report(kname, t, 0);
    }
    set_pdl_enabled(!pdl_enabled());  // the default plan with the other launch mode
    const double t_alt = time_graph(s, calls, [&] {
      for (int i = 0; i < calls; ++i) own(def, i);
    });
    std::snprintf(kname, sizeof kname, "own bn%d s%d %s", def.bn, def.splits, pdl_enabled() ? "pdl" : "no-pdl");
    report(kname, t_alt, d_def);
    set_pdl_enabled(!pdl_enabled());
    if (quick) {
      cudaFree(w), cudaFree(x), cudaFree(res), cudaFree(out_lt), cudaFree(out_own);
      continue;
    }
    for (int bn : {32, 64, 128})
      for (int sp = 1; sp <= 8; ++sp) {
        const SmallGemmPlan p = small_gemm_plan(sh.m, sh.n, sh.k, sms, bn, sp);
        if (p.bn != bn || p.splits != sp || (bn == def.bn && sp == def.splits)) continue;
        if ((int64_t)p.col_tiles * sp > 2 * sms) continue;
        CUDA_CHECK(cudaMemsetAsync(out_own, 0xff, sh.m * sh.n * 2, s));
        own(p, 0);
        CUDA_CHECK(cudaStreamSynchronize(s));
        const double diff = max_rel_diff(out_own, out_lt, sh.m * sh.n);
        const double t = time_graph(s, calls, [&] {
          for (int i = 0; i < calls; ++i) own(p, i);
        });
        std::snprintf(kname, sizeof kname, "own bn%d s%d", bn, sp);
        report(kname, t, diff);
      }
    cudaFree(w), cudaFree(x), cudaFree(res), cudaFree(out_lt), cudaFree(out_own);
  }
}

struct AttnShape {
  const char* name;
  int S, Tq, Tk, Hq, Hkv, Dh;
  bool mask;
};

void bench_attention(cudaStream_t s, float* ws, int64_t ws_bytes, int sms, bool quick) {
  std::printf("\n== attention, per call ==\n");
  std::printf("%-34s %-20s %9s %8s %8s %10s\n", "shape", "kernel", "us", "TB/s", "TFLOP/s", "maxdiff/rms");
  const AttnShape shapes[] = {{"prefix 1x816x8 / 816x1, d256", 1, 816, 816, 8, 1, 256, true},
                              {"action 1x51x8 / 867x1, d256", 1, 51, 867, 8, 1, 256, true},
                              {"siglip 3x256x16 / 256x16, d72", 3, 256, 256, 16, 16, 72, false}};
  for (const AttnShape& sh : shapes) {
    const size_t nq = (size_t)sh.S * sh.Tq * sh.Hq * sh.Dh, nk = (size_t)sh.S * sh.Tk * sh.Hkv * sh.Dh;
    void* q = dmalloc(nq * 2);
    void* k = dmalloc(nk * 2);
    void* v = dmalloc(nk * 2);
    void* o1 = dmalloc(nq * 2);
    void* o2 = dmalloc(nq * 2);
    fill(q, nq, 11, 2.f);
    fill(k, nk, 12, 2.f);
    fill(v, nk, 13, 1.f);
    int32_t* qb = nullptr;
    int32_t* kb = nullptr;
    if (sh.mask) {  // prefix: 768 image + 20 text tokens valid; action: state block 1, actions 2
      std::vector<int32_t> hq(sh.Tq), hk(sh.Tk);
      const int P = sh.Tk - (sh.Tk == sh.Tq ? 0 : sh.Tq);
      for (int j = 0; j < sh.Tk; ++j) hk[j] = j < P ? (j < 788 ? 0 : 0x3fffffff) : (j == P ? 1 : 2);
      for (int i = 0; i < sh.Tq; ++i) hq[i] = sh.Tk == sh.Tq ? (i < 788 ? 0 : -1) : (i == 0 ? 1 : 2);
      qb = static_cast<int32_t*>(dmalloc(sh.Tq * 4));
      kb = static_cast<int32_t*>(dmalloc(sh.Tk * 4));
      CUDA_CHECK(cudaMemcpy(qb, hq.data(), sh.Tq * 4, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(kb, hk.data(), sh.Tk * 4, cudaMemcpyHostToDevice));
    }
    CUDA_CHECK(cudaDeviceSynchronize());
    AttentionArgs a{q, k, v, o1, qb, kb, sh.S, sh.Tq, sh.Tk, sh.Hq, sh.Hkv, sh.Dh, 1.f / std::sqrt((float)sh.Dh)};
    const double bytes = 2.0 * (2 * nq + 2 * nk);
    const double flops = 4.0 * sh.S * sh.Tq * sh.Hq * (double)sh.Tk * sh.Dh;
    auto report = [&](const char* kernel, double us, double diff) {
      std::printf("%-34s %-20s %9.2f %8.3f %8.1f %10.2e\n", sh.name, kernel, us, bytes / us * 1e-6, flops / us * 1e-6,
                  diff);
    };
    AttentionArgs r = a;
    r.out = o2;
    attention_reference(r, s);
    CUDA_CHECK(cudaStreamSynchronize(s));
    const double t_ref = time_graph(s, 5, [&] {
      for (int i = 0; i < 5; ++i) attention_reference(r, s);
    }, 5);
    report("simple", t_ref, 0.0);
    const int calls = 20;
    // (variant, force_splits, cluster): variant 1 is the flash kernel alone (the path before the split
    // kernel), 2 / 3 the split kernel with 64 / 48 query rows a block, 0 what the engine picks.
    // debug: attention_debug_phase (a timing breakdown; the results are wrong, not checked).
    struct Run {
      int variant, splits;
      bool cluster;
      int debug = 0;
      bool wgmma = false;
    };
    std::vector<Run> runs = {{1, 0, true}, {0, 0, true}, {0, 0, true, 0, true}};
    if (sh.Tq < 128)
      runs.insert(runs.end(), {{0, 14, true}, {2, 0, true}, {4, 0, true}, {0, 0, true, 8}, {0, 0, true, 4},
                               {0, 7, true, 0, true}, {0, 5, true, 0, true}, {0, 4, true, 0, true}});
    else if (sh.Hkv == 1)  // the prefix: key splits merged in a cluster (more blocks than its 102 tiles)
      runs.insert(runs.end(), {{1, 2, true}, {1, 3, true}, {1, 4, true}, {0, 1, true, 0, true}, {0, 2, true, 0, true},
                               {0, 3, true, 0, true}, {0, 4, true, 0, true}, {0, 7, true, 0, true}});
    else  // SigLIP: 192 tiles of 64 rows, 4 key tiles each; key splits give the SMs more blocks
      runs.insert(runs.end(), {{0, 2, true}, {0, 4, true}, {0, 2, false}});
    if (!quick) runs.insert(runs.end(), {{1, 14, false}, {1, 4, true}, {1, 1, true}});
    for (const Run& rn : runs) {
      attention_kernel_variant = rn.variant;
      attention_debug_phase = rn.debug;
      const int f = rn.splits;
      const bool cl = rn.cluster;
      if (attention_workspace_bytes(a, sms, f, cl) > ws_bytes) continue;
      CUDA_CHECK(cudaMemsetAsync(o1, 0xff, nq * 2, s));
      if (!attention_fast(a, ws, ws_bytes, sms, s, f, cl, rn.wgmma)) {
        std::printf("  fast kernel does not take this shape\n");
        break;
      }
      CUDA_CHECK(cudaStreamSynchronize(s));
      const double diff = rn.debug ? 0.0 : max_rel_diff(o1, o2, nq);
      if (!(diff < 0.15)) attention_check_failed = true;  // the flash kernel: 0.07 on the prefix
      const double t = time_graph(s, calls, [&] {
        for (int i = 0; i < calls; ++i) attention_fast(a, ws, ws_bytes, sms, s, f, cl, rn.wgmma);
      });
      char kname[48];
      std::snprintf(kname, sizeof kname, "v%d %s s=%d%s%s", rn.variant, cl ? "cluster" : "merge", f,
                    rn.debug ? (" dbg" + std::to_string(rn.debug)).c_str() : "", rn.wgmma ? " wgmma" : "");
      report(kname, t, diff);
    }
    attention_kernel_variant = 0;
    attention_debug_phase = 0;
    cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(o1), cudaFree(o2);
    if (qb) cudaFree(qb), cudaFree(kb);
  }
}

// One action step: 18 expert layers (pi0, horizon 50: 51 tokens over an 816-token prefix cache)
// through the backend's ops, captured as one graph.
void bench_expert_step(bool own_small, bool pdl = true) {
  CudaOptions opt;
  opt.own_small_gemm = own_small;
  opt.fused_small_gemm = own_small;
  opt.pdl = pdl;
  opt.tuning_file = "none";  // the GEMM path is own_small's choice alone
  auto be = make_cuda_backend(opt);
  const int L = 18, T = 51, P = 816, D = 1024, F = 4096;
  std::mt19937 rng(3);
  auto w = [&](int64_t n, int64_t k) {
    Tensor t = be->alloc(DType::BF16, {n, k});
    fill(t.data, n * k, rng(), 1.f / std::sqrt((float)k));
    return t;
  };
  struct Layer {
    Tensor qkv, o, gu, down, n1, n2, K, V;
  };
  std::vector<Layer> layers;
  for (int l = 0; l < L; ++l) {
    Layer x{w(2560, D), w(D, 2048), w(2 * F, D), w(D, F), be->alloc(DType::F32, {D}), be->alloc(DType::F32, {D}),
            be->alloc(DType::BF16, {P + T, 256}), be->alloc(DType::BF16, {P + T, 256})};
    CUDA_CHECK(cudaMemset(x.n1.data, 0, D * 4));
    CUDA_CHECK(cudaMemset(x.n2.data, 0, D * 4));
    fill(x.K.data, (P + T) * 256, rng(), 1.f);
    fill(x.V.data, (P + T) * 256, rng(), 1.f);
    layers.push_back(x);
  }
  Tensor h = be->alloc(DType::BF16, {T, D}), xn = be->alloc(DType::BF16, {T, D}), qkv = be->alloc(DType::BF16, {T, 2560});
  Tensor q = be->alloc(DType::BF16, {T, 2048}), att = be->alloc(DType::BF16, {T, 2048});
  Tensor gu = be->alloc(DType::BF16, {T, 2 * F}), mlp = be->alloc(DType::BF16, {T, F});
  std::vector<int32_t> hq(T), hk(P + T), hp(T);
  for (int i = 0; i < T; ++i) hq[i] = i == 0 ? 1 : 2, hp[i] = P + i;
  for (int j = 0; j < P + T; ++j) hk[j] = j < P ? 0 : (j == P ? 1 : 2);
  Tensor QB = be->alloc(DType::I32, {1, T}), KB = be->alloc(DType::I32, {1, P + T}), POS = be->alloc(DType::I32, {T});
  CUDA_CHECK(cudaMemcpy(QB.data, hq.data(), T * 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(KB.data, hk.data(), (P + T) * 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(POS.data, hp.data(), T * 4, cudaMemcpyHostToDevice));
  fill(h.data, T * D, 5, 1.f);
  // As gemma_layer runs pi0's expert: the fused sequences (our GEMM's split sums added in the RoPE and
  // RMSNorm kernels when own_small; cuBLASLt and separate kernels otherwise), norms chained.
  auto step = [&] {
    for (size_t l = 0; l < layers.size(); ++l) {
      const Layer& Ly = layers[l];
      if (l == 0) be->rms_norm(h, Ly.n1, 1e-6f, xn);
      be->linear_qkv_rope(xn, Ly.qkv, qkv, POS, 8, 1, 256, q, Ly.K.rows(P, T), Ly.V.rows(P, T));
      be->attention(q.reshape({1, T, 8, 256}), Ly.K.reshape({1, P + T, 1, 256}), Ly.V.reshape({1, P + T, 1, 256}),
                    AttentionMask{QB, KB}, 1.f / 16, att.reshape({1, T, 8, 256}));
      be->linear_residual_rms_norm(att, Ly.o, h, Ly.n2, 1e-6f, xn);
      be->linear(xn, Ly.gu, {}, gu);
      be->geglu(gu, mlp);
      if (l + 1 < layers.size())
        be->linear_residual_rms_norm(mlp, Ly.down, h, layers[l + 1].n1, 1e-6f, xn);
      else
        be->linear(mlp, Ly.down, {}, h, Epilogue::None, h);
    }
  };
  CUDA_CHECK(cudaDeviceSynchronize());
  be->run("step", step);  // capture
  be->synchronize();
  std::vector<double> t;
  for (int i = 0; i < 20; ++i) {
    be->synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    be->run("step", step);
    be->synchronize();
    t.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  const double bytes = L * (2560.0 * D + D * 2048.0 + 2.0 * F * D + D * F) * 2;
  std::printf("expert step, 18 layers, %-14s %-6s %8.1f us  (%.2f TB/s of weights; x10 steps = %.2f ms)  peak %.0f MB\n",
              own_small ? "own small GEMM" : "cuBLASLt", pdl ? "pdl" : "no-pdl", t[t.size() / 2], bytes / t[t.size() / 2] * 1e-6,
              t[t.size() / 2] * 10 / 1000, be->memory_peak() / 1e6);
}

// --profile: each kernel of interest once, eagerly, for ncu (weights cold in HBM).
void profile_once(cudaStream_t s, float* ws, int* counters, int sms) {
  for (auto [m, n, k, res] : std::vector<std::tuple<int64_t, int64_t, int64_t, bool>>{
           {51, 2560, 1024, false}, {51, 8192, 1024, false}, {51, 1024, 4096, true}, {11, 8192, 1024, false}}) {
    void* w = dmalloc(n * k * 2);
    void* x = dmalloc(m * k * 2);
    void* o = dmalloc(m * n * 2);
    fill(w, n * k, 1, 0.03f);
    fill(x, m * k, 2, 1.f);
    fill(o, m * n, 3, 1.f);
    void* flush = dmalloc(256 << 20);  // evict w from L2
    CUDA_CHECK(cudaMemset(flush, 0, 256 << 20));
    CUDA_CHECK(cudaDeviceSynchronize());
    const SmallGemmPlan plan = small_gemm_plan(m, n, k, sms);
    small_gemm(plan, x, w, nullptr, DType::F32, Epilogue::None, res ? o : nullptr, DType::BF16, o, DType::BF16, m, n, k,
               s);
    CUDA_CHECK(cudaStreamSynchronize(s));
    cudaFree(w), cudaFree(x), cudaFree(o), cudaFree(flush);
  }
  for (auto [S, Tq, Tk, Hq, Hkv, Dh] : std::vector<std::tuple<int, int, int, int, int, int>>{
           {1, 51, 867, 8, 1, 256}, {1, 816, 816, 8, 1, 256}}) {
    const size_t nq = (size_t)S * Tq * Hq * Dh, nk = (size_t)S * Tk * Hkv * Dh;
    void* q = dmalloc(nq * 2);
    void* k = dmalloc(nk * 2);
    void* v = dmalloc(nk * 2);
    void* o = dmalloc(nq * 2);
    fill(q, nq, 11, 2.f);
    fill(k, nk, 12, 2.f);
    fill(v, nk, 13, 1.f);
    CUDA_CHECK(cudaDeviceSynchronize());
    AttentionArgs a{q, k, v, o, nullptr, nullptr, S, Tq, Tk, Hq, Hkv, Dh, 1.f / 16};
    attention_fast(a, ws, 16 << 20, sms, s);
    CUDA_CHECK(cudaStreamSynchronize(s));
    cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(o);
  }
}

void bench_copy(cudaStream_t s) {
  const size_t bytes = 1ull << 30;
  void* a = dmalloc(bytes);
  void* b = dmalloc(bytes);
  CUDA_CHECK(cudaMemsetAsync(a, 1, bytes, s));
  const double us = time_graph(s, 1, [&] { CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s)); }, 7);
  std::printf("device-to-device copy of 1 GiB: %.1f us, %.2f TB/s (read + write)\n", us, 2.0 * bytes / us * 1e-6);
  cudaFree(a);
  cudaFree(b);
}

// A persistent kernel's phase timeline: stamps[block][k] (globaltimer ns) as us after the first block
// entered, min / mean / max over the blocks.
void print_timeline(const unsigned long long* timing, int sms, int stamps, const char* const* names,
                    const char* when) {
  std::vector<unsigned long long> t((size_t)sms * stamps);
  CUDA_CHECK(cudaMemcpy(t.data(), timing, t.size() * 8, cudaMemcpyDeviceToHost));
  unsigned long long t0 = ~0ull;
  for (int b = 0; b < sms; ++b) t0 = std::min(t0, t[(size_t)b * stamps]);
  std::printf("  phase timeline%s (us after the first block entered): min / mean / max over %d blocks\n", when, sms);
  for (int k2 = 0; k2 < stamps; ++k2) {
    double mn = 1e30, mx = 0, sum = 0;
    for (int b = 0; b < sms; ++b) {
      const double x = (double)(t[(size_t)b * stamps + k2] - t0) / 1000.0;
      mn = std::min(mn, x), mx = std::max(mx, x), sum += x;
    }
    std::printf("  %-18s %8.2f %8.2f %8.2f\n", names[k2], mn, sum / sms, mx);
  }
}

// --block-tail: the action expert's block tail kernel over 18 layers of pi0-sized weights (0.62 GB,
// so they stream from HBM), then one layer's phase timeline (globaltimer stamps of every block).
void bench_block_tail(cudaStream_t s, int sms) {
  const int M = 51, D = 1024, F = 4096, Ko = 2048, H = 8, KV = 1, Dh = 256, L = 18;
  std::vector<BlockTailParams> ps(L);
  void* attn = dmalloc((size_t)M * Ko * 2);
  void* h = dmalloc((size_t)M * D * 2);
  void* xn = dmalloc((size_t)M * D * 2);
  void* mlp = dmalloc((size_t)M * F * 2);
  void* q = dmalloc((size_t)M * H * Dh * 2);
  void* k = dmalloc((size_t)M * KV * Dh * 2);
  void* v = dmalloc((size_t)M * KV * Dh * 2);
  float* norm = static_cast<float*>(dmalloc(D * 4));
  int32_t* pos = static_cast<int32_t*>(dmalloc(M * 4));
  float* partials = static_cast<float*>(dmalloc((size_t)kMaxBlockTailSplits * M * D * 4));
  auto* bar = static_cast<unsigned long long*>(dmalloc(256));
  auto* rope = static_cast<float2*>(dmalloc((size_t)M * Dh / 2 * 8));
  auto* timing = static_cast<unsigned long long*>(dmalloc((size_t)sms * kTailStamps * 8));
  CUDA_CHECK(cudaMemset(norm, 0, D * 4));
  {  // the suffix's positions after an 816-token prefix
    std::vector<int32_t> hp(M);
    for (int m = 0; m < M; ++m) hp[m] = 816 + m;
    CUDA_CHECK(cudaMemcpy(pos, hp.data(), M * 4, cudaMemcpyHostToDevice));
  }
  CUDA_CHECK(cudaMemset(bar, 0, 256));
  fill(attn, (size_t)M * Ko, 1, 1.f);
  fill(h, (size_t)M * D, 2, 1.f);
  for (int l = 0; l < L; ++l) {
    BlockTailParams& p = ps[l];
    p.M = M, p.D = D, p.F = F, p.Ko = Ko, p.heads = H, p.kv_heads = KV, p.head_dim = Dh;
    p.attn = attn, p.h = h, p.xn = xn, p.mlp = mlp, p.q = q, p.k = k, p.v = v, p.positions = pos;
    p.ffn_norm = norm, p.next_norm = norm, p.partials = partials, p.rope = rope, p.barrier = bar;
    void* wo = dmalloc((size_t)D * Ko * 2);
    void* wgu = dmalloc((size_t)2 * F * D * 2);
    void* wd = dmalloc((size_t)D * F * 2);
    void* wqkv = dmalloc((size_t)(H + 2 * KV) * Dh * D * 2);
    fill(wo, (size_t)D * Ko, 10 + l, 0.02f);
    fill(wgu, (size_t)2 * F * D, 30 + l, 0.03f);
    fill(wd, (size_t)D * F, 50 + l, 0.015f);
    fill(wqkv, (size_t)(H + 2 * KV) * Dh * D, 70 + l, 0.03f);
    p.wo = wo, p.wgu = wgu, p.wd = wd, p.wqkv = wqkv;
  }
  const double us = time_graph(s, L, [&] {
    for (int l = 0; l < L; ++l) block_tail(ps[l], sms, s);
  });
  const double mb = (2.0 * (D * Ko + 2.0 * F * D + D * F + (H + 2 * KV) * Dh * D)) / 1e6;
  std::printf("block tail (m %d, d %d, f %d, ko %d, qkv %d): %.2f us a layer (%.1f MB of weights: %.2f TB/s)\n", M,
              D, F, Ko, (H + 2 * KV) * Dh, us, mb, mb / us);
  // Timeline of the last of 18 eager launches.
  for (int l = 0; l < L; ++l) {
    BlockTailParams p = ps[l];
    if (l == L - 1) p.timing = timing;
    block_tail(p, sms, s);
  }
  CUDA_CHECK(cudaStreamSynchronize(s));
  const char* names[kTailStamps] = {"enter",       "G1 out-proj done", "barrier 1", "R1 norm done",
                                    "barrier 2",   "G2 gate/up done",  "barrier 3", "G3 down done",
                                    "barrier 4",   "R2 norm done",     "barrier 5", "G4 qkv+rope done"};
  print_timeline(timing, sms, kTailStamps, names, "");
}

// --action-step: the step-boundary kernel at pi0's shapes (update + embed), in a graph of 10 launches
// (weights in L2), then the phase timeline of one launch after L2 was flushed (as after a step's
// 0.62 GB of expert weights).
void bench_action_step(cudaStream_t s, int sms) {
  const int T = 51, H = 50, A = 32, D = 1024;
  ActionStepParams p;
  p.T = T, p.H = H, p.A = A, p.W = D, p.D = D, p.dt = -0.1f;
  auto zeros = [](size_t n) {
    void* q = dmalloc(n * 4);
    CUDA_CHECK(cudaMemset(q, 0, n * 4));
    return static_cast<float*>(q);
  };
  void* xn = dmalloc((size_t)T * D * 2);
  fill(xn, (size_t)T * D, 1, 1.f);
  p.xn = xn, p.xn_out = xn, p.hs = dmalloc((size_t)T * D * 2);
  p.w_out = zeros((size_t)A * D), p.b_out = zeros(A), p.x = zeros((size_t)H * A);
  p.w_in = zeros((size_t)D * A), p.b_in = zeros(D), p.u = zeros((size_t)H * D);
  p.w_mlp = zeros((size_t)D * D), p.b_mlp = zeros(D), p.tok = zeros((size_t)T * D), p.norm_w = zeros(D);
  p.partials = zeros((size_t)kMaxActionSplits * H * D);
  p.barrier = static_cast<unsigned long long*>(dmalloc(256));
  CUDA_CHECK(cudaMemset(p.barrier, 0, 256));
  const double us = time_graph(s, 10, [&] {
    for (int i = 0; i < 10; ++i) action_step(p, sms, s);
  });
  std::printf("action step (update + embed, pi0): %.2f us a call (weights in L2)\n", us);
  auto* timing = static_cast<unsigned long long*>(dmalloc((size_t)sms * kActionStamps * 8));
  void* flush = dmalloc(256u << 20);
  for (int rep = 0; rep < 3; ++rep) {
    CUDA_CHECK(cudaMemsetAsync(flush, rep, 256u << 20, s));
    ActionStepParams pt = p;
    pt.timing = timing;
    action_step(pt, sms, s);
  }
  CUDA_CHECK(cudaStreamSynchronize(s));
  const char* names[kActionStamps] = {"enter", "P1 update done", "barrier 1", "P2 embed done",
                                      "barrier 2", "P3 mlp done", "barrier 3", "R norm done"};
  print_timeline(timing, sms, kActionStamps, names, " after an L2 flush");
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  try {
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    set_pdl_enabled(prop.major >= 9);  // as the backend does
    if (argc > 1 && std::strcmp(argv[1], "--profile") == 0) {
      float* pws = static_cast<float*>(dmalloc(16 << 20));
      int* pc = static_cast<int*>(dmalloc(16384 * 4));
      CUDA_CHECK(cudaMemset(pc, 0, 16384 * 4));
      profile_once(s, pws, pc, prop.multiProcessorCount);
      return 0;
    }
    if (argc > 1 && std::strcmp(argv[1], "--action-step") == 0) {
      bench_action_step(s, prop.multiProcessorCount);
      return 0;
    }
    if (argc > 1 && std::strcmp(argv[1], "--block-tail") == 0) {
      bench_block_tail(s, prop.multiProcessorCount);
      return 0;
    }
    if (argc > 1 && std::strcmp(argv[1], "--attention") == 0) {
      float* aws = static_cast<float*>(dmalloc(16 << 20));
      bench_attention(s, aws, 16 << 20, prop.multiProcessorCount, true);
      CUDA_CHECK(cudaDeviceSynchronize());
      std::printf("attention check vs attention_reference: %s\n", attention_check_failed ? "FAILED" : "ok");
      return attention_check_failed ? 2 : 0;
    }
    if (argc > 1 && std::strcmp(argv[1], "--gemm") == 0) {
      void* ltws = dmalloc(32 << 20);
      LtGemm lt(ltws, 32 << 20);
      bench_gemm(s, lt, nullptr, nullptr, prop.multiProcessorCount, false);
      std::printf("\n== one action step through the backend (graph) ==\n");
      bench_expert_step(true, false);
      bench_expert_step(false, false);
      CUDA_CHECK(cudaDeviceSynchronize());
      return 0;
    }
    bench_copy(s);
    void* ltws = dmalloc(32 << 20);
    LtGemm lt(ltws, 32 << 20);
    float* ws = static_cast<float*>(dmalloc(16 << 20));
    int* counters = static_cast<int*>(dmalloc(16384 * 4));
    CUDA_CHECK(cudaMemset(counters, 0, 16384 * 4));
    bench_gemm(s, lt, ws, counters, prop.multiProcessorCount, quick);
    bench_attention(s, ws, 16 << 20, prop.multiProcessorCount, quick);
    std::printf("\n== one action step through the backend (graph) ==\n");
    bench_expert_step(true);
    bench_expert_step(false);
    CUDA_CHECK(cudaDeviceSynchronize());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
