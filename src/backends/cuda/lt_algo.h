// cuBLASLt algorithms as tuning-table text ("lt:id=..,tile=..,..."), both ways.
#pragma once

#include <cublasLt.h>

#include <cstddef>

#include "io/tuning_file.h"

namespace pirt::cuda {

// The algorithm's config attributes (id, tile, stages, splitk, red, swizzle, custom, cluster, inner).
GemmAlgorithm encode_lt_algo(const cublasLtMatmulAlgo_t& algo);

// The algorithm that `want` describes, for this problem: the heuristic answer (of the first 64,
// within `pref`) with the same attributes, else one built from the attributes and checked by
// cublasLtMatmulAlgoCheck (needing at most `workspace_bytes`). False where neither works.
bool find_lt_algo(cublasLtHandle_t h, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                  cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d, cublasLtMatmulPreference_t pref,
                  size_t workspace_bytes, const GemmAlgorithm& want, cublasLtMatmulAlgo_t* out);

}  // namespace pirt::cuda
