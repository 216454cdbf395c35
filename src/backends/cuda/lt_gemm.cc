#include "backends/cuda/lt_gemm.h"

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/lt_algo.h"
#include "backends/cuda/tuning.h"

namespace pirt::cuda {
namespace {

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    default: PIRT_CHECK(false, "cuBLASLt: dtype %s", std::string(dtype_name(t)).c_str());
  }
  return CUDA_R_32F;
}

int alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int al = 256;
  while (al > 1 && a % al) al /= 2;
  return al;
}

}  // namespace

LtGemm::LtGemm(void* workspace, size_t workspace_bytes) : workspace_(workspace), workspace_bytes_(workspace_bytes) {
  CUBLAS_CHECK(cublasLtCreate(&handle_));
}

LtGemm::~LtGemm() {
  for (auto& [key, p] : plans_) {
    if (p.desc) cublasLtMatmulDescDestroy(p.desc);
    for (auto l : {p.a, p.b, p.c, p.d})
      if (l) cublasLtMatrixLayoutDestroy(l);
  }
  if (handle_) cublasLtDestroy(handle_);
}

LtGemm::Plan& LtGemm::plan(const Call& c) {
  const Key key{c.m,
                c.n,
                c.k,
                static_cast<int>(c.xt),
                static_cast<int>(c.wt),
                static_cast<int>(c.ot),
                c.bias ? static_cast<int>(c.bt) : -1,
                static_cast<int>(c.ep),
                c.residual != nullptr,
                alignment(c.x),
                alignment(c.w),
                alignment(c.out),
                c.residual ? alignment(c.residual) : 256,
                c.tf32};
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  Plan& p = plans_[key];

  // Row-major out[M,N] = x[M,K] w[N,K]^T is column-major out^T[N,M] = w^T... : A = w (K x N col-major,
  // transposed), B = x (K x M col-major), D = out (N x M col-major, ld N).
  const bool f32 = c.xt == DType::F32;
  const cublasComputeType_t compute = f32 ? (c.tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F)
                                          : CUBLAS_COMPUTE_32F;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, compute, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
  if (c.ep == Epilogue::GeluTanh)
    epi = c.bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
  else if (c.bias)
    epi = CUBLASLT_EPILOGUE_BIAS;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  if (c.bias) {
    const cudaDataType_t bt = cuda_type(c.bt);
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
  }
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, cuda_type(c.wt), c.k, c.n, c.k));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, cuda_type(c.xt), c.k, c.m, c.k));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, cuda_type(c.ot), c.n, c.m, c.n));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, cuda_type(c.ot), c.n, c.m, c.n));

  cublasLtMatmulPreference_t pref;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_,
                                                    sizeof(workspace_bytes_)));
  // Split-K only with fp32 partials: the INPLACE and OUTPUT_TYPE schemes add the parts in the
  // output type (bf16), which loses bits and, with C = residual, cancels small results to 0.
  const uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes,
                                                    sizeof(schemes)));
  const uint32_t al_a = alignment(c.w), al_b = alignment(c.x), al_d = alignment(c.out);
  const uint32_t al_c = c.residual ? alignment(c.residual) : al_d;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, 4));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, 4));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, 4));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, 4));
  cublasLtMatmulHeuristicResult_t res{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.c, p.d, pref, 1, &res, &found);
  p.ok = st == CUBLAS_STATUS_SUCCESS && found > 0;
  if (p.ok) p.algo = res.algo;
  if (tuning_) {  // a tuned algorithm for this shape (tuning.h)
    const TuningRow* row = tuning_->find(gemm_key(c.m, c.n, c.k, c.xt, c.wt, c.ot, c.tf32, c.bias != nullptr, c.bt,
                                                  c.ep == Epilogue::GeluTanh, c.residual != nullptr, c.ot));
    cublasLtMatmulAlgo_t tuned;
    if (row && find_lt_algo(handle_, p.desc, p.a, p.b, p.c, p.d, pref, workspace_bytes_, row->algorithm, &tuned)) {
      p.algo = tuned;
      p.ok = true;
    }
  }
  cublasLtMatmulPreferenceDestroy(pref);
  return p;
}

bool LtGemm::run(const Call& c, cudaStream_t s) {
  Plan& p = plan(c);
  if (!p.ok) return false;
  if (c.bias)
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &c.bias, sizeof(c.bias)));
  const float alpha = 1.f, beta = c.residual ? 1.f : 0.f;
  const void* cptr = c.residual ? c.residual : c.out;
  CUBLAS_CHECK(cublasLtMatmul(handle_, p.desc, &alpha, c.w, p.a, c.x, p.b, &beta, cptr, p.c, c.out, p.d, &p.algo,
                              workspace_, workspace_bytes_, s));
  return true;
}

}  // namespace pirt::cuda
