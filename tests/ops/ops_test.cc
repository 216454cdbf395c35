// Every CUDA op against the CPU oracle (src/backends/cpu), on random data of pi0's real shapes.
//
// Both backends get the same inputs: random values already rounded to bf16, so the CUDA backend's
// uploads (bf16 activations and matrices) are exact and the comparison measures the kernels alone.
// The CPU computes in fp32. Every output is poisoned (NaN) before the op, so an element a kernel
// forgets to write fails the test.
//
// Tolerance (also in docs/cuda.md). u = 2^-8 is the unit roundoff of bf16 (8 significant bits). An
// element passes when |cuda - cpu| <= rtol * |cpu| + atol * rms(cpu); the worst ratio is printed.
// - bf16 output of fp32 math (norms, activations, casts, RoPE, GEMMs): one rounding of the result,
//   at most u|r|; fp32 reordering (GEMM accumulation, K up to 16384) is ~1e-5 relative.
//   rtol = u = 2^-8, atol = 2^-12 (covers reordering and near-zero cancellation).
// - GEMM with a residual (h += x W^T): cuBLASLt rounds the product to bf16 before adding C (seen on
//   H100 with its Hopper kernels, split-K or not), as openpi's own bf16 residual stream does
//   (x + bf16(attn)): an extra error up to u|x W^T| <= u max|x W^T|, which is not relative to a
//   result that cancels: atol = 2^-6 (max|x W^T| ~ 4 rms).
// - GEMM with GELU fused by cuBLASLt: its tanh may be an approximation (~2^-11 absolute), which
//   near gelu(x) = 0 is not relative to the output: atol = 2^-8.
// - fp32 outputs (the f32 islands, casts to F32, axpy): rtol = atol = 1e-5 (reordering only).
// - patch_embed: an fp32 GEMM on TF32 tensor cores (10-bit mantissa, as openpi's own f32 conv on
//   GPUs): input rounding 2^-11 each, sqrt(588)-term sums: ~2^-10.5 of rms(out) (1 sigma); with a
//   bf16 output, rtol = 2^-8, atol = 2^-8 (about 5 sigma).
// - attention: the CUDA kernel rounds probabilities to bf16 before P.V (ops.h), the CPU oracle does
//   not: an error of std ~ u/sqrt(3) * rms(row), plus the output rounding: rtol = 2^-8, atol = 2^-6
//   times the rms of the element's own row (one query head): rows that see few keys have large
//   values and proportionally large errors, rows that average many keys small ones. The simple
//   kernel rounds normalised probabilities (ops.h literally) and reaches ~1.1x of 2^-7 on some rows.
// - the block tail (ops.h gemma_block_tail: output projection, norm, GeGLU MLP, norm, the next
//   QKV + RoPE): the CUDA path rounds to bf16 at six points the CPU does not (h, xn, gate / up, mlp,
//   h, qkv), each an error of std u/sqrt(3) relative that the random unit-gain weights carry forward:
//   about sqrt(6) u/sqrt(3) = 2^-7.5 of rms(out) at the end (1 sigma; an upper estimate, as a
//   rounding's relative error averages below u/sqrt(3) over a binade); the largest of ~2e5 elements
//   is ~4.5 sigma = 2^-5.3: rtol = 2^-8, atol = 2^-5 (measured worst on the H100: 0.53-0.68 of the
//   bound; a wrong tile or split is O(1)).
// - the step boundary (ops.h action_step) with an embed: hs = bf16(tok) and xn = bf16(norm(hs)) are two
//   roundings where the CPU has none, at most u each (the norm's scale, from the rounded hs, moves by
//   ~u/sqrt(D)); the fp32 GEMMs before them only reorder: rtol = 2u = 2^-7, atol = 2^-12. pi0.5's
//   adaRMS adds its shift after the scaled hs, so hs's rounding is an absolute error of up to
//   u |hs r (1 + scale)|, which cancellation against the shift does not shrink: atol = 2^-5 (terms
//   up to 8 rms(out)). Without the embed (the Euler update alone) every value is fp32: kF32.
// Cases whose CPU cost would be large compare a window of the output (first and last columns of a
// GEMM, every k-th query of an attention): the CUDA op still runs at full size.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <tuple>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "core/bf16.h"
#include "ops/ops.h"
#if PIRT_HAVE_CUDA
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/kernels.h"
#endif

namespace pirt {
namespace {

enum class Role { Act, Mat, F32, I32, U8 };

DType dtype_of(const Backend& be, Role r) {
  switch (r) {
    case Role::Act: return be.act_dtype();
    case Role::Mat: return be.matrix_dtype();
    case Role::F32: return DType::F32;
    case Role::I32: return DType::I32;
    case Role::U8: return DType::U8;
  }
  return DType::F32;
}

struct Arg {
  HostTensor h;  // F32 values (I32 for Role::I32, U8 for Role::U8)
  Role role;
};

struct Tol {
  float rtol, atol;
  int64_t row = 0;  // atol scales with the rms of each run of `row` elements (0: of the whole output)
};
constexpr Tol kBf16{1.f / 256, 1.f / 4096};
constexpr Tol kResidual{1.f / 256, 1.f / 64};
constexpr Tol kGelu{1.f / 256, 1.f / 256};
constexpr Tol kF32{1e-5f, 1e-5f};
constexpr Tol kExact{0.f, 0.f};
constexpr Tol kTf32{1.f / 256, 1.f / 256};
constexpr Tol kChain{1.f / 256, 1.f / 32};
constexpr Tol kTwoRound{1.f / 128, 1.f / 4096};
constexpr Tol kTwoRoundShift{1.f / 128, 1.f / 32};
// Per output row (one query head): the probability rounding error scales with that row's values.
Tol attn_tol(int dh) { return {1.f / 256, 1.f / 64, dh}; }

using OpFn = std::function<void(Backend&, const std::vector<Tensor>&, const Tensor&)>;

struct Problem {
  std::vector<Arg> in;
  Arg out;  // initial contents of the output (NaN where it must be written) and its role
  OpFn op;
  // A smaller problem for the CPU whose output equals the CUDA output at `pick` (flat indices).
  std::vector<Arg> cpu_in;
  Arg cpu_out;
  std::vector<int64_t> pick;
};

struct OpCase {
  std::string name;
  std::function<Problem(std::mt19937&)> make;
  Tol tol;
};
// ctest lists a case by its name, not its bytes.
void PrintTo(const OpCase& c, std::ostream* os) { *os << c.name; }

// ---- inputs ----
HostTensor randn(Shape s, std::mt19937& rng, float scale = 1.f, float mean = 0.f) {
  HostTensor t(DType::F32, s);
  std::normal_distribution<float> d(mean, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.ptr<float>()[i] = round_bf16(d(rng));
  return t;
}
HostTensor uniform(Shape s, std::mt19937& rng, float lo, float hi) {
  HostTensor t(DType::F32, s);
  std::uniform_real_distribution<float> d(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.ptr<float>()[i] = round_bf16(d(rng));
  return t;
}
HostTensor nans(Shape s) {
  HostTensor t(DType::F32, s);
  for (int64_t i = 0; i < t.numel(); ++i) t.ptr<float>()[i] = NAN;
  return t;
}
HostTensor i32(Shape s, const std::vector<int32_t>& v) {
  HostTensor t(DType::I32, s);
  for (int64_t i = 0; i < t.numel(); ++i) t.ptr<int32_t>()[i] = v[static_cast<size_t>(i)];
  return t;
}
// Rows `rows` of a [R, C] tensor, or columns `cols` of it.
HostTensor take_rows(const HostTensor& t, const std::vector<int64_t>& rows) {
  const int64_t c = t.view().row_size();
  Shape s = t.shape();
  s[0] = static_cast<int64_t>(rows.size());
  HostTensor o(t.dtype(), s);
  const size_t rb = static_cast<size_t>(c) * dtype_size(t.dtype());
  for (size_t i = 0; i < rows.size(); ++i)
    std::memcpy(static_cast<uint8_t*>(o.view().data) + i * rb, static_cast<const uint8_t*>(t.view().data) + rows[i] * rb, rb);
  return o;
}
HostTensor take_cols(const HostTensor& t, int64_t ncols, const std::vector<int64_t>& cols) {
  const int64_t r = t.numel() / ncols;
  HostTensor o(DType::F32, Shape{r, static_cast<int64_t>(cols.size())});
  for (int64_t i = 0; i < r; ++i)
    for (size_t j = 0; j < cols.size(); ++j) o.ptr<float>()[i * cols.size() + j] = t.ptr<float>()[i * ncols + cols[j]];
  return o;
}

// ---- running and comparing ----
HostTensor run_on(Backend& be, const std::vector<Arg>& in, const Arg& out, const OpFn& op) {
  std::vector<Tensor> dev;
  for (const Arg& a : in) dev.push_back(a.h.empty() ? Tensor{} : be.upload({a.h.view()}, dtype_of(be, a.role)));
  const Tensor o = be.upload({out.h.view()}, dtype_of(be, out.role));
  op(be, dev, o);
  HostTensor host(o.dtype, o.shape);
  be.to_host(o, host);
  return to_f32(host);
}

void expect_close(const std::string& name, const HostTensor& cuda, const HostTensor& cpu,
                  const std::vector<int64_t>& pick, Tol tol) {
  const int64_t n = cpu.numel();
  ASSERT_EQ(pick.empty() ? cuda.numel() : static_cast<int64_t>(pick.size()), n) << name;
  double ss = 0, se = 0;
  for (int64_t i = 0; i < n; ++i) ss += double(cpu.ptr<float>()[i]) * cpu.ptr<float>()[i];
  const double rms = std::sqrt(ss / std::max<int64_t>(n, 1));
  std::vector<double> row_rms;
  if (tol.row > 0)
    for (int64_t r0 = 0; r0 < n; r0 += tol.row) {
      double rs = 0;
      for (int64_t i = r0; i < std::min(n, r0 + tol.row); ++i) rs += double(cpu.ptr<float>()[i]) * cpu.ptr<float>()[i];
      row_rms.push_back(std::sqrt(rs / tol.row));
    }
  double worst = 0;
  int64_t worst_i = 0, bad = 0, nonfinite = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double r = cpu.ptr<float>()[i];
    const double c = cuda.ptr<float>()[pick.empty() ? i : pick[static_cast<size_t>(i)]];
    if (!std::isfinite(c)) {
      ++nonfinite;
      continue;
    }
    const double scale = tol.row > 0 ? row_rms[static_cast<size_t>(i / tol.row)] : rms;
    const double err = std::fabs(c - r), bound = tol.rtol * std::fabs(r) + tol.atol * scale + 1e-30;
    se += err * err;
    if (err > bound) ++bad;
    if (err / bound > worst) worst = err / bound, worst_i = i;
  }
  const double c_w = cuda.ptr<float>()[pick.empty() ? worst_i : pick[static_cast<size_t>(worst_i)]];
  std::printf("  %-34s n=%-9lld rel_l2=%.2e worst err/bound=%.3f at %lld (cuda %.6g cpu %.6g, rms %.3g)\n",
              name.c_str(), (long long)n, std::sqrt(se / std::max(ss, 1e-30)), worst, (long long)worst_i, c_w,
              cpu.ptr<float>()[worst_i], rms);
  EXPECT_EQ(nonfinite, 0) << name << ": non-finite CUDA outputs (unwritten or NaN)";
  EXPECT_EQ(bad, 0) << name << ": " << bad << " elements out of tolerance; worst " << worst << "x the bound at " << worst_i
                    << " (cuda " << c_w << ", cpu " << cpu.ptr<float>()[worst_i] << ")";
}

// ---- case builders ----
struct LinearSpec {
  int64_t m, n, k;
  Epilogue ep = Epilogue::None;
  bool bias = false;
  bool residual = false;       // residual in place: out starts as the residual (h += ...)
  Role x = Role::Act, w = Role::Mat, b = Role::Act, out = Role::Act;
};

Problem linear_problem(const LinearSpec& s, std::mt19937& rng) {
  Problem p;
  const float ws = 1.f / std::sqrt(static_cast<float>(s.k));
  HostTensor x = randn({s.m, s.k}, rng), w = randn({s.n, s.k}, rng, ws);
  HostTensor b = s.bias ? randn({s.n}, rng, 0.5f) : HostTensor();
  HostTensor r = s.residual ? randn({s.m, s.n}, rng) : nans({s.m, s.n});
  const bool has_b = s.bias, has_r = s.residual;
  const Epilogue ep = s.ep;
  p.op = [=](Backend& be, const std::vector<Tensor>& in, const Tensor& out) {
    be.linear(in[0], in[1], has_b ? in[2] : Tensor{}, out, ep, has_r ? out : Tensor{});
  };
  p.in = {{x, s.x}, {w, s.w}, {b, s.b}};
  p.out = {r, s.out};
  // CPU window: the first and last columns, about 3 GFLOP at most.
  int64_t nc = std::max<int64_t>(64, static_cast<int64_t>(3e9 / (2.0 * s.m * s.k)) / 32 * 32);
  if (nc >= s.n) return p;
  std::vector<int64_t> cols;
  for (int64_t c = 0; c < nc / 2; ++c) cols.push_back(c);
  for (int64_t c = s.n - nc / 2; c < s.n; ++c) cols.push_back(c);
  p.cpu_in = {{x, s.x}, {take_rows(w, cols), s.w}, {s.bias ? take_rows(b, cols) : HostTensor(), s.b}};
  p.cpu_out = {take_cols(r, s.n, cols), s.out};
  for (int64_t i = 0; i < s.m; ++i)
    for (int64_t c : cols) p.pick.push_back(i * s.n + c);
  return p;
}

OpCase linear_case(const std::string& name, LinearSpec s) {
  Tol tol = s.out == Role::F32 ? kF32 : kBf16;
  if (s.ep == Epilogue::GeluTanh) tol = kGelu;
  if (s.residual && s.out != Role::F32) tol = kResidual;
  return {name, [s](std::mt19937& rng) { return linear_problem(s, rng); }, tol};
}

// openpi's blocks for a prefix of `cams` cameras (absent ones as padding) and `text` tokens of
// which `valid` are real: 0 for valid tokens, masked otherwise.
void prefix_blocks(const std::vector<bool>& cams, int text, int valid, std::vector<int32_t>* qb,
                   std::vector<int32_t>* kb) {
  for (bool present : cams)
    for (int i = 0; i < 256; ++i) {
      qb->push_back(present ? 0 : AttentionMask::kMaskedQuery);
      kb->push_back(present ? 0 : AttentionMask::kMaskedKey);
    }
  for (int i = 0; i < text; ++i) {
    qb->push_back(i < valid ? 0 : AttentionMask::kMaskedQuery);
    kb->push_back(i < valid ? 0 : AttentionMask::kMaskedKey);
  }
}

struct AttnSpec {
  int s, tq, tk, hq, hkv, dh;
  float scale;
  std::vector<int32_t> qb, kb;  // empty: no mask
  int q_stride = 1;             // the CPU checks every q_stride-th query
  float q_scale = 1.f;
};

Problem attention_problem(const AttnSpec& a, std::mt19937& rng) {
  Problem p;
  HostTensor q = randn({a.s, a.tq, a.hq, a.dh}, rng, a.q_scale), k = randn({a.s, a.tk, a.hkv, a.dh}, rng),
             v = randn({a.s, a.tk, a.hkv, a.dh}, rng);
  const bool masked = !a.qb.empty();
  HostTensor qb = masked ? i32({a.s, a.tq}, a.qb) : HostTensor(), kb = masked ? i32({a.s, a.tk}, a.kb) : HostTensor();
  const float scale = a.scale;
  p.op = [=](Backend& be, const std::vector<Tensor>& in, const Tensor& out) {
    AttentionMask m;
    if (masked) m.q_block = in[3], m.k_block = in[4];
    be.attention(in[0], in[1], in[2], m, scale, out);
  };
  p.in = {{q, Role::Act}, {k, Role::Act}, {v, Role::Act}, {qb, Role::I32}, {kb, Role::I32}};
  p.out = {nans({a.s, a.tq, a.hq, a.dh}), Role::Act};
  if (a.q_stride == 1) return p;
  PIRT_CHECK(a.s == 1, "query subsampling needs one sequence");
  std::vector<int64_t> rows;
  std::vector<int32_t> qb_sub;
  for (int64_t t = 0; t < a.tq; t += a.q_stride) {
    rows.push_back(t);
    if (masked) qb_sub.push_back(a.qb[static_cast<size_t>(t)]);
  }
  const int64_t tq2 = static_cast<int64_t>(rows.size());
  // q [1, Tq, H, D] seen as [Tq, H*D] rows.
  HostTensor qrows(DType::F32, {a.tq, int64_t{a.hq} * a.dh});
  std::memcpy(qrows.view().data, q.view().data, q.view().nbytes());
  HostTensor qsub = take_rows(qrows, rows);
  HostTensor q3(DType::F32, {1, tq2, a.hq, a.dh});
  std::memcpy(q3.view().data, qsub.view().data, qsub.view().nbytes());
  p.cpu_in = {{q3, Role::Act}, {k, Role::Act}, {v, Role::Act},
              {masked ? i32({1, tq2}, qb_sub) : HostTensor(), Role::I32}, {kb, Role::I32}};
  p.cpu_out = {nans({1, tq2, a.hq, a.dh}), Role::Act};
  const int64_t row = int64_t{a.hq} * a.dh;
  for (int64_t r : rows)
    for (int64_t i = 0; i < row; ++i) p.pick.push_back(r * row + i);
  return p;
}

OpCase attention_case(const std::string& name, AttnSpec a) {
  return {name, [a](std::mt19937& rng) { return attention_problem(a, rng); }, attn_tol(a.dh)};
}

// A problem whose inputs and output are given directly (no CPU window).
OpCase simple_case(const std::string& name, Tol tol, std::function<std::vector<Arg>(std::mt19937&)> inputs,
                   std::function<Arg(const std::vector<Arg>&)> out, OpFn op) {
  return {name,
          [=](std::mt19937& rng) {
            Problem p;
            p.in = inputs(rng);
            p.out = out(p.in);
            p.op = op;
            return p;
          },
          tol};
}

std::vector<OpCase> all_cases() {
  std::vector<OpCase> c;
  // ---- GEMMs: SigLIP (3 cameras), PaliGemma prefix (816 tokens), action expert (51), f32 islands ----
  c.push_back(linear_case("linear/siglip_qkv", {768, 3456, 1152, Epilogue::None, true}));
  c.push_back(linear_case("linear/siglip_fc1_gelu", {768, 4304, 1152, Epilogue::GeluTanh, true}));
  c.push_back(linear_case("linear/siglip_fc2_residual", {768, 1152, 4304, Epilogue::None, true, true}));
  c.push_back(linear_case("linear/siglip_projector", {768, 2048, 1152, Epilogue::None, true}));
  c.push_back(linear_case("linear/prefix_qkv", {816, 2560, 2048}));
  c.push_back(linear_case("linear/prefix_o_residual", {816, 2048, 2048, Epilogue::None, false, true}));
  c.push_back(linear_case("linear/prefix_gate_up", {816, 32768, 2048}));
  c.push_back(linear_case("linear/prefix_down_residual", {816, 2048, 16384, Epilogue::None, false, true}));
  c.push_back(linear_case("linear/expert_qkv", {51, 2560, 1024}));
  c.push_back(linear_case("linear/expert_o_residual", {51, 1024, 2048, Epilogue::None, false, true}));
  c.push_back(linear_case("linear/expert_gate_up", {51, 8192, 1024}));
  c.push_back(linear_case("linear/expert_down_residual", {51, 1024, 4096, Epilogue::None, false, true}));
  c.push_back(linear_case("linear/expert_h10_gate_up", {11, 8192, 1024}));
  c.push_back(linear_case("linear/pi05_expert_qkv_m50", {50, 2560, 1024}));
  c.push_back(linear_case("linear/small_m1_odd_n", {1, 100, 72, Epilogue::None, true}));
  c.push_back(linear_case("linear/small_m64_gelu_bias", {64, 1000, 1000, Epilogue::GeluTanh, true}));
  c.push_back(linear_case("linear/small_bias_f32_out_f32",
                          {33, 512, 256, Epilogue::None, true, false, Role::Act, Role::Mat, Role::F32, Role::F32}));
  c.push_back(linear_case("linear/small_gelu_residual", {40, 256, 512, Epilogue::GeluTanh, true, true}));
  c.push_back(linear_case("linear/large_gelu_residual", {100, 256, 512, Epilogue::GeluTanh, true, true}));
  c.push_back(linear_case("linear/large_bias_f32", {128, 512, 256, Epilogue::None, true, false, Role::Act, Role::Mat,
                                                    Role::F32, Role::Act}));
  c.push_back(linear_case("linear/large_out_f32", {816, 512, 256, Epilogue::None, true, false, Role::Act, Role::Mat,
                                                   Role::F32, Role::F32}));
  const Role F = Role::F32;
  c.push_back(linear_case("linear/f32_action_in_proj", {50, 1024, 32, Epilogue::None, true, false, F, F, F, F}));
  c.push_back(linear_case("linear/f32_state_proj", {1, 1024, 32, Epilogue::None, true, false, F, F, F, F}));
  c.push_back(linear_case("linear/f32_action_time_mlp_in", {50, 1024, 2048, Epilogue::None, true, false, F, F, F, F}));
  c.push_back(linear_case("linear/f32_action_time_mlp_out", {50, 1024, 1024, Epilogue::None, true, false, F, F, F, F}));
  c.push_back(linear_case("linear/f32_action_out_proj", {50, 32, 1024, Epilogue::None, true, false, F, F, F, F}));
  c.push_back(linear_case("linear/f32_m7_odd_n_no_bias", {7, 100, 36, Epilogue::None, false, false, F, F, F, F}));
  c.push_back(linear_case("linear/f32_m64_pi05_time_mlp", {64, 1024, 1024, Epilogue::None, true, false, F, F, F, F}));

  // ---- norms ----
  auto rms = [](int64_t m, int64_t d) {
    return simple_case(
        "rms_norm/" + std::to_string(m) + "x" + std::to_string(d), kBf16,
        [=](std::mt19937& r) { return std::vector<Arg>{{randn({m, d}, r, 2.f), Role::Act}, {randn({d}, r, 0.3f), Role::F32}}; },
        [=](const std::vector<Arg>&) { return Arg{nans({m, d}), Role::Act}; },
        [](Backend& be, const std::vector<Tensor>& in, const Tensor& o) { be.rms_norm(in[0], in[1], 1e-6f, o); });
  };
  c.push_back(rms(816, 2048));
  c.push_back(rms(51, 1024));
  c.push_back(simple_case(
      "ada_rms_norm/51x1024", kBf16,
      [](std::mt19937& r) { return std::vector<Arg>{{randn({50, 1024}, r, 2.f), Role::Act}, {randn({3072}, r, 0.5f), Role::F32}}; },
      [](const std::vector<Arg>&) { return Arg{nans({50, 1024}), Role::Act}; },
      [](Backend& be, const std::vector<Tensor>& in, const Tensor& o) { be.ada_rms_norm(in[0], in[1], 1e-6f, o); }));
  c.push_back(simple_case(
      "gated_residual/50x1024", kBf16,
      [](std::mt19937& r) { return std::vector<Arg>{{randn({50, 1024}, r), Role::Act}, {randn({1024}, r), Role::F32},
                                                    {randn({50, 1024}, r), Role::Act}}; },
      [](const std::vector<Arg>& in) { return Arg{in[2].h, Role::Act}; },
      [](Backend& be, const std::vector<Tensor>& in, const Tensor& h) { be.gated_residual(h, in[0], in[1]); }));
  c.push_back(simple_case(
      "layer_norm/768x1152", kBf16,
      [](std::mt19937& r) { return std::vector<Arg>{{randn({768, 1152}, r, 3.f, 1.f), Role::Act},
                                                    {randn({1152}, r, 0.5f, 1.f), Role::Act}, {randn({1152}, r, 0.5f), Role::Act}}; },
      [](const std::vector<Arg>&) { return Arg{nans({768, 1152}), Role::Act}; },
      [](Backend& be, const std::vector<Tensor>& in, const Tensor& o) { be.layer_norm(in[0], in[1], in[2], 1e-6f, o); }));

  // ---- elementwise ----
  auto geglu = [](int64_t m, int64_t f) {
    return simple_case(
        "geglu/" + std::to_string(m) + "x" + std::to_string(f), kBf16,
        [=](std::mt19937& r) { return std::vector<Arg>{{randn({m, 2 * f}, r, 2.f), Role::Act}}; },
        [=](const std::vector<Arg>&) { return Arg{nans({m, f}), Role::Act}; },
        [](Backend& be, const std::vector<Tensor>& in, const Tensor& o) { be.geglu(in[0], o); });
  };
  c.push_back(geglu(816, 16384));
  c.push_back(geglu(51, 4096));
  c.push_back(simple_case(
      "image_to_unit_range/3x224x224x3", kExact,
      [](std::mt19937& r) {
        HostTensor t(DType::U8, {3, 224, 224, 3});
        for (int64_t i = 0; i < t.numel(); ++i) t.ptr<uint8_t>()[i] = static_cast<uint8_t>(r() % 256);
        for (int v = 0; v < 256; ++v) t.ptr<uint8_t>()[v] = static_cast<uint8_t>(v);  // every value once
        return std::vector<Arg>{{t, Role::U8}};
      },
      [](const std::vector<Arg>&) { return Arg{nans({3, 224, 224, 3}), Role::F32}; },
      [](Backend& be, const std::vector<Tensor>& in, const Tensor& o) { be.image_to_unit_range(in[0], o); }));
  c.push_back(simple_case(
      "silu/f32_50x1024", kF32, [](std::mt19937& r) { return std::vector<Arg>{{randn({50, 1024}, r, 3.f), Role::F32}}; },
      [](const std::vector<Arg>&) { return Arg{nans({50, 1024}), Role::F32}; },
      [](Backend& be, const std::vector<Tensor>& in, const Tensor& o) { be.silu(in[0], o); }));
  c.push_back(simple_case(
      "silu/act_in_place", kBf16, [](std::mt19937& r) { return std::vector<Arg>{{randn({50, 1024}, r, 3.f), Role::Act}}; },
      [](const std::vector<Arg>& in) { return Arg{in[0].h, Role::Act}; },
      [](Backend& be, const std::vector<Tensor>&, const Tensor& o) { be.silu(o, o); }));
  c.push_back(simple_case(
      "cast/act_to_f32", kF32, [](std::mt19937& r) { return std::vector<Arg>{{randn({51, 1024}, r), Role::Act}}; },
      [](const std::vector<Arg>&) { return Arg{nans({51, 1024}), Role::F32}; },
      [](Backend& be, const std::vector<Tensor>& in, const Tensor& o) { be.cast(in[0], o); }));
  c.push_back(simple_case(
      "cast/f32_to_act", kBf16,
      [](std::mt19937& r) {
        HostTensor t(DType::F32, {51, 1024});
        std::normal_distribution<float> d;
        for (int64_t i = 0; i < t.numel(); ++i) t.ptr<float>()[i] = d(r);  // not pre-rounded: tests the rounding
        return std::vector<Arg>{{t, Role::F32}};
      },
      [](const std::vector<Arg>&) { return Arg{nans({51, 1024}), Role::Act}; },
      [](Backend& be, const std::vector<Tensor>& in, const Tensor& o) { be.cast(in[0], o); }));
  c.push_back(simple_case(
      "concat_cols/f32_broadcast_row", kF32,
      [](std::mt19937& r) { return std::vector<Arg>{{randn({50, 1024}, r), Role::F32}, {randn({1, 1024}, r), Role::F32}}; },
      [](const std::vector<Arg>&) { return Arg{nans({50, 2048}), Role::F32}; },
      [](Backend& be, const std::vector<Tensor>& in, const Tensor& o) { be.concat_cols(in[0], in[1], o); }));
  c.push_back(simple_case(
      "concat_cols/act_rows", kBf16,
      [](std::mt19937& r) { return std::vector<Arg>{{randn({51, 2048}, r), Role::Act}, {randn({51, 256}, r), Role::Act}}; },
      [](const std::vector<Arg>&) { return Arg{nans({51, 2304}), Role::Act}; },
      [](Backend& be, const std::vector<Tensor>& in, const Tensor& o) { be.concat_cols(in[0], in[1], o); }));
  c.push_back(simple_case(
      "axpy/euler_50x32", kF32,
      [](std::mt19937& r) { return std::vector<Arg>{{randn({50, 32}, r), Role::F32}, {randn({50, 32}, r), Role::F32}}; },
      [](const std::vector<Arg>& in) { return Arg{in[0].h, Role::F32}; },
      [](Backend& be, const std::vector<Tensor>& in, const Tensor& x) { be.axpy(x, in[1], -0.1f); }));

  // ---- embeddings ----
  c.push_back(simple_case(
      "patch_embed/3x224", kTf32,
      [](std::mt19937& r) {
        return std::vector<Arg>{{uniform({3, 224, 224, 3}, r, -1.f, 1.f), Role::F32},
                                {randn({1152, 3, 14, 14}, r, 0.04f), Role::F32},
                                {randn({1152}, r, 0.1f), Role::F32},
                                {randn({256, 1152}, r, 0.1f), Role::F32}};
      },
      [](const std::vector<Arg>&) { return Arg{nans({768, 1152}), Role::Act}; },
      [](Backend& be, const std::vector<Tensor>& in, const Tensor& o) { be.patch_embed(in[0], in[1], in[2], in[3], 14, o); }));
  c.push_back(simple_case(
      "embed/48_tokens", kBf16,
      [](std::mt19937& r) {
        std::vector<int32_t> ids;
        std::uniform_int_distribution<int32_t> d(0, 4095);
        for (int i = 0; i < 48; ++i) ids.push_back(d(r));
        return std::vector<Arg>{{i32({48}, ids), Role::I32}, {randn({4096, 2048}, r, 0.02f), Role::Mat}};
      },
      [](const std::vector<Arg>&) { return Arg{nans({48, 2048}), Role::Act}; },
      [](Backend& be, const std::vector<Tensor>& in, const Tensor& o) {
        be.embed(in[0], in[1], std::sqrt(2048.f), o);
      }));

  // ---- fused QKV split + RoPE: outputs q | k | v concatenated into one checked tensor ----
  auto qkv = [](const std::string& name, int64_t t, int heads, int kv, int dh, int pos0, bool rope) {
    return simple_case(
        name, kBf16,
        [=](std::mt19937& r) {
          std::vector<int32_t> pos;
          for (int64_t i = 0; i < t; ++i) pos.push_back(pos0 + static_cast<int32_t>(i));
          return std::vector<Arg>{{randn({t, int64_t{heads + 2 * kv} * dh}, r), Role::Act},
                                  {rope ? i32({t}, pos) : HostTensor(), Role::I32}};
        },
        [=](const std::vector<Arg>&) { return Arg{nans({t * (heads + 2 * kv) * dh}), Role::Act}; },
        [=](Backend& be, const std::vector<Tensor>& in, const Tensor& o) {
          const int64_t nq = t * heads * dh, nk = t * kv * dh;
          Tensor q = o.reshape(Shape{o.numel()}).rows(0, nq).reshape(Shape{t, int64_t{heads} * dh});
          Tensor k = o.reshape(Shape{o.numel()}).rows(nq, nk).reshape(Shape{t, int64_t{kv} * dh});
          Tensor v = o.reshape(Shape{o.numel()}).rows(nq + nk, nk).reshape(Shape{t, int64_t{kv} * dh});
          be.qkv_rope(in[0], in[1], heads, kv, dh, q, k, v);
        });
  };
  c.push_back(qkv("qkv_rope/prefix_816", 816, 8, 1, 256, 0, true));
  c.push_back(qkv("qkv_rope/expert_51_at_816", 51, 8, 1, 256, 816, true));
  c.push_back(qkv("qkv_rope/siglip_split_no_rope", 768, 16, 16, 72, 0, false));

  // ---- fused sequences (Backend's defaults on the CPU; on CUDA our GEMM's split sums are added
  // inside the next row kernel): the action expert's QKV projection + RoPE, and its output / down
  // projections + residual + the RMSNorm after them. Two bf16 roundings deep: kResidual.
  auto fused_qkv = [](const std::string& name, int64_t t, int64_t d) {
    return simple_case(
        name, kResidual,
        [=](std::mt19937& r) {
          std::vector<int32_t> pos;
          for (int64_t i = 0; i < t; ++i) pos.push_back(816 + static_cast<int32_t>(i));
          return std::vector<Arg>{{randn({t, d}, r), Role::Act},
                                  {randn({2560, d}, r, 1.f / std::sqrt(static_cast<float>(d))), Role::Mat},
                                  {i32({t}, pos), Role::I32}};
        },
        [=](const std::vector<Arg>&) { return Arg{nans({t * 2560}), Role::Act}; },
        [=](Backend& be, const std::vector<Tensor>& in, const Tensor& o) {
          const Tensor flat = o.reshape(Shape{o.numel()});
          Tensor q = flat.rows(0, t * 2048).reshape(Shape{t, 2048});
          Tensor k = flat.rows(t * 2048, t * 256).reshape(Shape{t, 256});
          Tensor v = flat.rows(t * 2304, t * 256).reshape(Shape{t, 256});
          Tensor qkv = be.alloc(be.act_dtype(), Shape{t, 2560});
          be.linear_qkv_rope(in[0], in[1], qkv, in[2], 8, 1, 256, q, k, v);
        });
  };
  c.push_back(fused_qkv("fused/expert_qkv_rope_51", 51, 1024));
  c.push_back(fused_qkv("fused/expert_qkv_rope_h10", 11, 1024));
  // Output [2, t, 1024]: h after the residual add, then xn.
  auto fused_norm = [](const std::string& name, int64_t t, int64_t k) {
    return simple_case(
        name, kResidual,
        [=](std::mt19937& r) {
          return std::vector<Arg>{{randn({t, k}, r), Role::Act},
                                  {randn({1024, k}, r, 1.f / std::sqrt(static_cast<float>(k))), Role::Mat},
                                  {randn({1024}, r, 0.2f), Role::F32}};
        },
        [=](const std::vector<Arg>&) {
          std::mt19937 r2(77);
          HostTensor init = nans({2, t, 1024});
          const HostTensor h = randn({t, 1024}, r2);
          std::memcpy(init.ptr<float>(), h.ptr<float>(), h.view().nbytes());
          return Arg{init, Role::Act};
        },
        [=](Backend& be, const std::vector<Tensor>& in, const Tensor& o) {
          const Tensor h = o.rows(0, 1).reshape(Shape{t, 1024}), xn = o.rows(1, 1).reshape(Shape{t, 1024});
          be.linear_residual_rms_norm(in[0], in[1], h, in[2], 1e-6f, xn);
        });
  };
  c.push_back(fused_norm("fused/expert_o_residual_norm_51", 51, 2048));
  c.push_back(fused_norm("fused/expert_down_residual_norm_51", 51, 4096));
  // The block tail at pi0's expert shapes (width 1024, mlp 4096, 8 x 256 attention, 1 KV head).
  // Output, flat: h [t, 1024] (starts random), xn [t, 1024], then (with the next QKV) q [t, 2048],
  // k [t, 256], v [t, 256].
  // ada: pi0.5's block tail (adaRMS): the norms' weights become [3D] modulations (scale | shift |
  // gate; a third, next_mod, for the norm after the layer) and the residuals are gated. Two more bf16
  // roundings (each GEMM's y before the gated add) than the plain tail: kChain still holds (its
  // derivation counts six at 4x margin).
  auto block_tail = [](const std::string& name, int64_t t, bool next_qkv, bool ada = false) {
    const int64_t nw = ada ? 3 * 1024 : 1024;  // a norm's weights or modulations
    const float sw = ada ? 0.3f : 0.2f;
    const int32_t pos0 = ada ? 560 : 816;
    return simple_case(
        name, kChain,
        [=](std::mt19937& r) {
          std::vector<int32_t> pos;
          for (int64_t i = 0; i < t; ++i) pos.push_back(pos0 + static_cast<int32_t>(i));
          std::vector<Arg> in{{randn({t, 2048}, r), Role::Act},
                              {randn({1024, 2048}, r, 1.f / std::sqrt(2048.f)), Role::Mat},
                              {randn({nw}, r, sw), Role::F32},  // ffn_norm, or mod_attn
                              {randn({8192, 1024}, r, 1.f / 32), Role::Mat},
                              {randn({1024, 4096}, r, 1.f / 64), Role::Mat},
                              {randn({nw}, r, sw), Role::F32}};  // next_norm, or mod_ffn
          if (ada) in.push_back({randn({nw}, r, sw), Role::F32});  // next_mod
          in.push_back({randn({2560, 1024}, r, 1.f / 32), Role::Mat});
          in.push_back({i32({t}, pos), Role::I32});
          return in;
        },
        [=](const std::vector<Arg>&) {
          std::mt19937 r2(ada ? 79 : 78);
          HostTensor init = nans({t * (next_qkv ? 2048 + 2560 : 2048)});
          const HostTensor h = randn({t, 1024}, r2);
          std::memcpy(init.ptr<float>(), h.ptr<float>(), h.view().nbytes());
          return Arg{init, Role::Act};
        },
        [=](Backend& be, const std::vector<Tensor>& in, const Tensor& o) {
          const Tensor flat = o.reshape(Shape{o.numel()});
          const size_t x = ada ? 1 : 0;  // the inputs after next_mod move by one
          BlockTail b{.attn = in[0], .wo = in[1], .h = flat.rows(0, t * 1024).reshape(Shape{t, 1024}),
                      .ffn_norm = ada ? Tensor{} : in[2], .w_gate_up = in[3], .w_down = in[4],
                      .next_norm = ada ? Tensor{} : in[5], .xn = flat.rows(t * 1024, t * 1024).reshape(Shape{t, 1024}),
                      .gu = be.alloc(be.act_dtype(), Shape{t, 8192}), .mlp = be.alloc(be.act_dtype(), Shape{t, 4096})};
          if (ada) {
            b.mod_attn = in[2], b.mod_ffn = in[5], b.next_mod = in[6];
            b.y = be.alloc(be.act_dtype(), Shape{t, 1024});
          }
          if (next_qkv) {
            b.next_qkv = in[6 + x];
            b.qkv = be.alloc(be.act_dtype(), Shape{t, 2560});
            b.positions = in[7 + x];
            b.q = flat.rows(t * 2048, t * 2048).reshape(Shape{t, 2048});
            b.k = flat.rows(t * 4096, t * 256).reshape(Shape{t, 256});
            b.v = flat.rows(t * 4352, t * 256).reshape(Shape{t, 256});
            b.heads = 8, b.kv_heads = 1, b.head_dim = 256;
          }
          be.gemma_block_tail(b);
        });
  };
  c.push_back(block_tail("fused/expert_block_tail_51", 51, true));
  c.push_back(block_tail("fused/expert_block_tail_last_51", 51, false));
  c.push_back(block_tail("fused/expert_block_tail_h10", 11, true));
  c.push_back(block_tail("fused/expert_block_tail_ada_50", 50, true, true));

  // The boundary between two flow steps (ops.h action_step) at pi0's shapes: 50 actions of 32, width
  // 1024, T = 51 suffix rows (the state token first); pi0.5: T = 50, adaRMS. update: the Euler step
  // alone, output x (F32). embed / both: output [hs | xn] (xn starts as the final norm's output
  // that the update reads).
  auto action_step = [](const std::string& name, bool update, bool embed, bool pi05) {
    const int64_t H = 50, A = 32, D = 1024, T = pi05 ? H : H + 1;
    return simple_case(
        name, !embed ? kF32 : pi05 ? kTwoRoundShift : kTwoRound,
        [=](std::mt19937& r) {
          HostTensor tok = nans({T, D});
          if (!pi05) {  // the state token's row, as the caller leaves it
            const HostTensor t0 = randn({1, D}, r, 0.5f);
            std::memcpy(tok.ptr<float>(), t0.ptr<float>(), t0.view().nbytes());
          }
          return std::vector<Arg>{{randn({H, A}, r), Role::F32},                        // x
                                  {randn({A, D}, r, 1.f / 32), Role::F32},               // w_out
                                  {randn({A}, r, 0.1f), Role::F32},                      // b_out
                                  {randn({D, A}, r, 1.f / std::sqrt(32.f)), Role::F32},  // w_in
                                  {randn({D}, r, 0.3f), Role::F32},                      // b_in
                                  {randn({D, D}, r, 1.f / 32), Role::F32},               // w_mlp
                                  {randn({D}, r, 0.1f), Role::F32},                      // b_mlp
                                  {tok, Role::F32},
                                  {randn({pi05 ? 3 * D : D}, r, 0.3f), Role::F32},       // norm_w or mod
                                  {randn({T, D}, r), Role::Act}};                         // xn (update only)
        },
        [=](const std::vector<Arg>& in) {
          if (!embed) return Arg{to_f32(in[0].h), Role::F32};  // x, updated in place
          HostTensor init = nans({2 * T * D});                  // [hs | xn], xn the update's input
          std::memcpy(init.ptr<float>() + T * D, in[9].h.ptr<float>(), in[9].h.view().nbytes());
          return Arg{init, Role::Act};
        },
        [=](Backend& be, const std::vector<Tensor>& in, const Tensor& o) {
          const Tensor flat = o.reshape(Shape{o.numel()});
          ActionStep a;
          a.dt = -0.1f, a.eps = 1e-6f;
          a.x = embed ? in[0] : o;
          a.xn = embed ? flat.rows(T * D, T * D).reshape(Shape{T, D}) : in[9];
          if (update) {
            a.w_out = in[1], a.b_out = in[2];
            a.xf = be.alloc(DType::F32, Shape{H, D}), a.v = be.alloc(DType::F32, Shape{H, A});
          }
          if (embed) {
            a.w_in = in[3], a.b_in = in[4];
            if (!pi05) a.u = be.alloc(DType::F32, Shape{H, D}), a.w_mlp = in[5], a.b_mlp = in[6];
            a.tok = in[7];
            a.hs = flat.rows(0, T * D).reshape(Shape{T, D});
            if (pi05)
              a.mod = in[8];
            else
              a.norm_w = in[8];
          }
          be.action_step(a);
        });
  };
  c.push_back(action_step("fused/action_step_update", true, false, false));
  c.push_back(action_step("fused/action_step_embed_pi0", false, true, false));
  c.push_back(action_step("fused/action_step_pi0", true, true, false));
  c.push_back(action_step("fused/action_step_pi05", true, true, true));

  // ---- attention ----
  {
    AttnSpec a{1, 816, 816, 8, 1, 256, 1.f / 16};
    prefix_blocks({true, true, true}, 48, 20, &a.qb, &a.kb);
    a.q_stride = 3;
    c.push_back(attention_case("attention/prefix_3cams_20text", a));
    AttnSpec b{1, 816, 816, 8, 1, 256, 1.f / 16};
    prefix_blocks({true, false, true}, 48, 48, &b.qb, &b.kb);
    b.q_stride = 5;
    b.q_scale = 3.f;  // peaked softmax
    c.push_back(attention_case("attention/prefix_absent_cam_sharp", b));
  }
  {  // pi0 action step: state (block 1), actions (block 2) over the prefix cache (block 0, padding masked).
    AttnSpec a{1, 51, 867, 8, 1, 256, 1.f / 16};
    std::vector<int32_t> pq;
    prefix_blocks({true, true, true}, 48, 17, &pq, &a.kb);
    a.qb.push_back(1);
    a.kb.push_back(1);
    for (int i = 0; i < 50; ++i) a.qb.push_back(2), a.kb.push_back(2);
    c.push_back(attention_case("attention/pi0_action_step", a));
    AttnSpec b = a;
    b.q_scale = 3.f;
    c.push_back(attention_case("attention/pi0_action_step_sharp", b));
  }
  {  // pi0.5: 50 actions (block 1) over a 968-slot prefix with one absent camera.
    AttnSpec a{1, 50, 1018, 8, 1, 256, 1.f / 16};
    std::vector<int32_t> pq;
    prefix_blocks({true, true, false}, 200, 60, &pq, &a.kb);
    for (int i = 0; i < 50; ++i) a.qb.push_back(1), a.kb.push_back(1);
    c.push_back(attention_case("attention/pi05_action_step", a));
  }
  {  // two sequences over 1200 keys: 19 key tiles, two a split in the wgmma split kernel (sm_90a).
    AttnSpec a{2, 51, 1200, 8, 1, 256, 1.f / 16};
    std::mt19937 r(11);
    for (int s = 0; s < 2; ++s) {
      for (int i = 0; i < 51; ++i) a.qb.push_back(i == 0 ? 1 : 2);
      for (int i = 0; i < 1200; ++i)
        a.kb.push_back(i < 1149 ? (r() % 9 == 0 ? AttentionMask::kMaskedKey : 0) : (i == 1149 ? 1 : 2));
    }
    c.push_back(attention_case("attention/two_seqs_1200_keys", a));
  }
  c.push_back(attention_case("attention/siglip_3x16x256_d72", {3, 256, 256, 16, 16, 72, 1.f / std::sqrt(72.f)}));
  // SigLIP's attention read in place from its fused projection (ops.h attention_qkv): 3 cameras x 256
  // tokens, rows [q | k | v] of 3 x 16 x 72.
  c.push_back(simple_case(
      "attention/siglip_from_qkv", attn_tol(72),
      [](std::mt19937& r) { return std::vector<Arg>{{randn({768, 3 * 1152}, r), Role::Act}}; },
      [](const std::vector<Arg>&) { return Arg{nans({768, 1152}), Role::Act}; },
      [](Backend& be, const std::vector<Tensor>& in, const Tensor& o) {
        const Tensor q = be.alloc(be.act_dtype(), Shape{768, 1152}), k = be.alloc(be.act_dtype(), Shape{768, 1152}),
                     v = be.alloc(be.act_dtype(), Shape{768, 1152});
        be.attention_qkv(in[0], 3, 16, 72, 1.f / std::sqrt(72.f), q, k, v, o);
      }));
  {  // the tiny model (head_dim 16) and an odd GQA shape with padded queries and keys.
    AttnSpec a{1, 100, 100, 8, 1, 16, 0.25f};
    for (int i = 0; i < 100; ++i) {
      a.qb.push_back(i < 90 ? (i < 60 ? 0 : 1) : AttentionMask::kMaskedQuery);
      a.kb.push_back(i < 90 ? (i < 60 ? 0 : 1) : AttentionMask::kMaskedKey);
    }
    c.push_back(attention_case("attention/tiny_d16_blocks", a));
    AttnSpec b{2, 37, 70, 4, 2, 64, 0.125f};
    std::mt19937 r(7);
    for (int s = 0; s < 2; ++s) {
      for (int i = 0; i < 37; ++i) b.qb.push_back(static_cast<int32_t>(r() % 4) - 1);
      for (int i = 0; i < 70; ++i) b.kb.push_back(r() % 5 == 0 ? AttentionMask::kMaskedKey : static_cast<int32_t>(r() % 3));
    }
    c.push_back(attention_case("attention/gqa2_d64_random_blocks", b));
    AttnSpec d{1, 20, 40, 2, 1, 96, 0.1f};  // a head dim with no fast kernel: the simple one runs
    c.push_back(attention_case("attention/d96_no_mask", d));
  }
  return c;
}

// ---- the table-driven test ----
class OpsTest : public testing::TestWithParam<OpCase> {};

#if PIRT_HAVE_CUDA
std::unique_ptr<Backend> cuda_backend(CudaOptions opt = {}) {
  if (!cuda_device_present()) return nullptr;
  return make_cuda_backend(opt);
}
#endif

void check_case(const OpCase& oc, Backend& gpu, const std::string& suffix = "") {
  std::mt19937 rng(1234);
  Problem p = oc.make(rng);
  std::unique_ptr<Backend> cpu = make_cpu_backend();
  HostTensor got = run_on(gpu, p.in, p.out, p.op);
  HostTensor want = p.cpu_in.empty() ? run_on(*cpu, p.in, p.out, p.op) : run_on(*cpu, p.cpu_in, p.cpu_out, p.op);
  expect_close(oc.name + suffix, got, want, p.pick, oc.tol);
}

TEST_P(OpsTest, CudaMatchesCpu) {
#if PIRT_HAVE_CUDA
  auto gpu = cuda_backend();
  if (!gpu) GTEST_SKIP() << "no CUDA device";
  check_case(GetParam(), *gpu);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

INSTANTIATE_TEST_SUITE_P(Ops, OpsTest, testing::ValuesIn(all_cases()), [](const testing::TestParamInfo<OpCase>& i) {
  std::string n = i.param.name;
  for (char& ch : n)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
});

// The CPU oracle's image conversion is openpi's Observation.from_dict: x / 255 * 2 - 1 in float32.
TEST(CpuBackend, ImageToUnitRangeIsOpenpisFormula) {
  std::unique_ptr<Backend> cpu = make_cpu_backend();
  HostTensor px(DType::U8, {1, 4});
  const uint8_t v[4] = {0, 128, 200, 255};
  std::memcpy(px.ptr<uint8_t>(), v, 4);
  const Tensor in = cpu->upload({px.view()}, DType::U8), out = cpu->alloc(DType::F32, {1, 4});
  cpu->image_to_unit_range(in, out);
  HostTensor got(DType::F32, {1, 4});
  cpu->to_host(out, got);
  EXPECT_EQ(got.ptr<float>()[0], -1.0f);
  EXPECT_EQ(got.ptr<float>()[1], 128.0f / 255.0f * 2.0f - 1.0f);
  EXPECT_EQ(got.ptr<float>()[2], 200.0f / 255.0f * 2.0f - 1.0f);
  EXPECT_EQ(got.ptr<float>()[3], 1.0f);
  EXPECT_THROW(cpu->image_to_unit_range(out, out), Error);  // F32 in: named, not misread
}

TEST(CudaBackend, PresenceCheckDoesNotThrow) {
#if PIRT_HAVE_CUDA
  EXPECT_NO_THROW(cuda_device_present());
#endif
}

#if PIRT_HAVE_CUDA
// The same ops through the fallbacks: cuBLASLt for the small GEMMs, the simple attention kernel.
TEST(CudaBackend, FallbackPathsMatchCpu) {
  CudaOptions opt;
  opt.own_small_gemm = false;
  opt.fast_attention = false;
  auto gpu = cuda_backend(opt);
  if (!gpu) GTEST_SKIP() << "no CUDA device";
  for (const OpCase& oc : all_cases())
    if (oc.name.find("expert") != std::string::npos || oc.name.find("attention/pi0_action_step") == 0 ||
        oc.name.find("attention/tiny") == 0 || oc.name.find("attention/gqa2") == 0)
      check_case(oc, *gpu, " [fallback]");
}

// The attention key splits merged by a second kernel instead of inside a cluster.
TEST(CudaBackend, AttentionMergeKernelMatchesCpu) {
  CudaOptions opt;
  opt.attention_clusters = false;
  auto gpu = cuda_backend(opt);
  if (!gpu) GTEST_SKIP() << "no CUDA device";
  for (const OpCase& oc : all_cases())
    if (oc.name.find("attention/") == 0 && oc.name.find("prefix") == std::string::npos) check_case(oc, *gpu, " [merge kernel]");
}

// The mma.sync attention kernels (flash, split) that the wgmma ones replace on sm_90a by default.
TEST(CudaBackend, AttentionMmaSyncKernelsMatchCpu) {
  CudaOptions opt;
  opt.wgmma_attention = false;
  auto gpu = cuda_backend(opt);
  if (!gpu) GTEST_SKIP() << "no CUDA device";
  for (const OpCase& oc : all_cases())
    if (oc.name.find("attention/") == 0) check_case(oc, *gpu, " [mma.sync]");
}

// A captured graph replays the same work: run a small layer-like sequence eagerly and through
// run() (capture, then two replays with new inputs) and require identical bits.
TEST(CudaBackend, GraphReplayIsExact) {
  auto eager = cuda_backend({0, false});
  auto graphed = cuda_backend({0, true});
  if (!eager) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(5);
  HostTensor w = randn({2560, 1024}, rng, 1.f / 32), wo = randn({1024, 2048}, rng, 1.f / 45), nw = randn({1024}, rng, 0.2f);
  std::vector<int32_t> qb(51, 1), kb(867, 0), pos(51);
  for (int i = 0; i < 51; ++i) kb[816 + i] = 1, pos[i] = 816 + i;
  auto run_all = [&](Backend& be) {
    const Tensor W = be.upload({w.view()}, DType::BF16), Wo = be.upload({wo.view()}, DType::BF16);
    const Tensor NW = be.upload({nw.view()}, DType::F32);
    const Tensor QB = be.upload({i32({1, 51}, qb).view()}, DType::I32), KB = be.upload({i32({1, 867}, kb).view()}, DType::I32);
    const Tensor P = be.upload({i32({51}, pos).view()}, DType::I32);
    const Tensor h = be.alloc(DType::BF16, {51, 1024}), xn = be.alloc(DType::BF16, {51, 1024});
    const Tensor qkv = be.alloc(DType::BF16, {51, 2560}), q = be.alloc(DType::BF16, {51, 2048});
    const Tensor K = be.alloc(DType::BF16, {867, 256}), V = be.alloc(DType::BF16, {867, 256});
    const Tensor att = be.alloc(DType::BF16, {51, 2048});
    std::vector<HostTensor> outs;
    std::mt19937 r2(9);
    for (int it = 0; it < 3; ++it) {
      HostTensor hin = randn({51, 1024}, r2), kin = randn({816, 256}, r2), vin = randn({816, 256}, r2);
      HostTensor hb(DType::BF16, {51, 1024}), kbf(DType::BF16, {816, 256}), vbf(DType::BF16, {816, 256});
      for (int64_t i = 0; i < hin.numel(); ++i) hb.ptr<uint16_t>()[i] = f32_to_bf16(hin.ptr<float>()[i]);
      for (int64_t i = 0; i < kin.numel(); ++i) kbf.ptr<uint16_t>()[i] = f32_to_bf16(kin.ptr<float>()[i]);
      for (int64_t i = 0; i < vin.numel(); ++i) vbf.ptr<uint16_t>()[i] = f32_to_bf16(vin.ptr<float>()[i]);
      be.to_device(hb, h);
      be.to_device(kbf, K.rows(0, 816));
      be.to_device(vbf, V.rows(0, 816));
      be.run("layer", [&] {
        be.rms_norm(h, NW, 1e-6f, xn);
        be.linear(xn, W, {}, qkv);
        be.qkv_rope(qkv, P, 8, 1, 256, q, K.rows(816, 51), V.rows(816, 51));
        AttentionMask m{QB, KB};
        be.attention(q.reshape({1, 51, 8, 256}), K.reshape({1, 867, 1, 256}), V.reshape({1, 867, 1, 256}), m, 1.f / 16,
                     att.reshape({1, 51, 8, 256}));
        be.linear(att, Wo, {}, h, Epilogue::None, h);
      });
      HostTensor out(DType::BF16, {51, 1024});
      be.to_host(h, out);
      outs.push_back(out);
    }
    return outs;
  };
  const auto a = run_all(*eager), b = run_all(*graphed);
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_EQ(0, std::memcmp(a[i].view().data, b[i].view().data, a[i].view().nbytes())) << "iteration " << i;
  EXPECT_GT(graphed->memory_peak(), size_t{30} << 20);
}

// Every linear case of at most 64 rows through our small-M GEMM (whatever the tuning table says),
// against the CPU oracle with the case's tolerance (`pirt tune` checks each other configuration
// it times against an fp32 product before it may win).
TEST(CudaBackend, SmallGemmMatchesCpu) {
  CudaOptions forced;
  forced.force_small_gemm = true;
  forced.tuning_file = "none";
  auto gpu = cuda_backend(forced);
  if (!gpu) GTEST_SKIP() << "no CUDA device";
  for (const OpCase& oc : all_cases())
    if (oc.name.find("linear/expert") == 0 || oc.name.find("linear/small") == 0 || oc.name.find("linear/pi05") == 0)
      check_case(oc, *gpu, " [small gemm]");
}

// The small-M GEMM's plans (host code: runs without a GPU). Every column is in a tile and every k
// chunk in exactly one split (splits <= chunks), cluster plans fit a portable cluster (<= 8), partials
// plans <= 16 splits; a forced configuration runs as asked where it can and falls back where not.
TEST(SmallGemmPlan, CoversTheShapeWithinTheLimits) {
  using cuda::SmallGemmPlan, cuda::small_gemm_plan, cuda::small_gemm_plan_partials;
  for (auto [m, n, k] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {51, 2560, 1024}, {51, 1024, 2048}, {51, 8192, 1024}, {51, 1024, 4096}, {11, 8192, 1024}, {1, 100, 72},
           {64, 96, 4104}}) {
    const int64_t chunks = (k + 63) / 64;
    for (bool partials : {false, true}) {
      const SmallGemmPlan p = partials ? small_gemm_plan_partials(m, n, k, 132) : small_gemm_plan(m, n, k, 132);
      const std::string what = std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) +
                               (partials ? " partials" : " cluster");
      EXPECT_TRUE(p.bn == 32 || p.bn == 64 || p.bn == 128) << what;
      EXPECT_EQ(p.mt, (m + 15) / 16) << what;
      EXPECT_GE(int64_t{p.col_tiles} * p.bn, n) << what;
      EXPECT_LT(int64_t{p.col_tiles - 1} * p.bn, n) << what;
      EXPECT_GE(p.splits, 1) << what;
      EXPECT_LE(p.splits, std::min<int64_t>(chunks, partials ? 16 : 8)) << what;
    }
  }
  const SmallGemmPlan forced = small_gemm_plan(51, 1024, 2048, 132, 64, 8);
  EXPECT_EQ(forced.bn, 64);
  EXPECT_EQ(forced.splits, 8);
  const SmallGemmPlan cannot = small_gemm_plan(51, 1024, 128, 132, 64, 8);  // 2 chunks: not 8 splits
  EXPECT_LE(cannot.splits, 2);
}

// The fused sequences through our small-M GEMM in partials mode (off by default in the engine).
TEST(CudaBackend, FusedSmallGemmMatchesCpu) {
  CudaOptions opt;
  opt.fused_small_gemm = true;
  auto gpu = cuda_backend(opt);
  if (!gpu) GTEST_SKIP() << "no CUDA device";
  for (const OpCase& oc : all_cases())
    if (oc.name.find("fused/") == 0) check_case(oc, *gpu, " [fused small gemm]");
}

// The block tail's persistent kernel against the same ops one after another on the GPU. Both round
// the stored intermediates to bf16, but cuBLASLt also rounds each product before its residual add
// (see the tolerance notes) and sums in another order, so a rounding may flip and carry forward
// through the norms and GEMMs as in the CPU comparison. Each path is within kChain of the exact
// result, so they are within twice that of each other (measured: rel L2 ~4.5e-3, worst 1.2x kChain).
TEST(CudaBackend, BlockKernelMatchesSeparateOps) {
  CudaOptions f;
  f.block_kernel = true;
  auto fused = cuda_backend(f);
  CudaOptions o;
  o.block_kernel = false;
  auto sep = cuda_backend(o);
  if (!fused) GTEST_SKIP() << "no CUDA device";
  int ran = 0;
  for (const OpCase& oc : all_cases()) {
    if (oc.name.find("fused/expert_block_tail") != 0) continue;
    std::mt19937 rng(5);
    Problem p = oc.make(rng);
    HostTensor a = run_on(*fused, p.in, p.out, p.op), b = run_on(*sep, p.in, p.out, p.op);
    expect_close(oc.name + " [block kernel vs separate ops]", a, b, {}, {2 * kChain.rtol, 2 * kChain.atol});
    check_case(oc, *fused, " [block kernel]");  // and against the CPU oracle
    ++ran;
  }
  EXPECT_EQ(ran, 4);
}

// Our small-M GEMM against cuBLASLt on the action-step shapes (both bf16: two roundings apart).
TEST(CudaBackend, SmallGemmMatchesCublasLt) {
  CudaOptions forced;
  forced.force_small_gemm = true;  // whatever the tuning table says for these shapes
  forced.tuning_file = "none";
  auto own = cuda_backend(forced);
  CudaOptions o;
  o.own_small_gemm = false;
  auto lt = cuda_backend(o);
  if (!own) GTEST_SKIP() << "no CUDA device";
  for (auto [m, n, k] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {51, 2560, 1024}, {51, 1024, 2048}, {51, 8192, 1024}, {51, 1024, 4096}, {8, 8192, 1024}, {64, 96, 4104}}) {
    std::mt19937 rng(static_cast<unsigned>(m * 7 + n + k));
    LinearSpec s{m, n, k, Epilogue::None, true, true};
    Problem p = linear_problem(s, rng);
    HostTensor a = run_on(*own, p.in, p.out, p.op), b = run_on(*lt, p.in, p.out, p.op);
    // cuBLASLt rounds the product before the residual add (see the tolerance notes): 2^-6 as there.
    expect_close("small_vs_lt/" + std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k), a, b, {},
                 {1.f / 128, 1.f / 64});
  }
}
#endif

}  // namespace
}  // namespace pirt
