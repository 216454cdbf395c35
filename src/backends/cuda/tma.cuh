// Hopper's tensor memory accelerator (TMA) and transaction mbarriers (sm_90a), shared by the kernels
// that stream bf16 tiles into shared memory: block_tail.cu and attention_wgmma.cu. Tiles are 64
// elements (128 bytes) of a row-major matrix's rows, 128-byte swizzled: wgmma.cuh's layout.
#pragma once

#include <cuda.h>
#include <cudaTypedefs.h>

#include <cstdint>

#include "backends/cuda/common.cuh"
#include "backends/cuda/mma.cuh"

namespace pirt::cuda {

#if !defined(__CUDA_ARCH__) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void mbar_init(uint64_t* b, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(b)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive_expect(uint64_t* b, uint32_t tx) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(b)), "r"(tx) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* b, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred p;\nWAIT:\nmbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n@!p bra WAIT;\n}\n" ::"r"(
          smem_addr(b)),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void tma_load(void* dst, const CUtensorMap* m, int k, int row, uint64_t* b) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          smem_addr(dst)),
      "l"(m), "r"(k), "r"(row), "r"(smem_addr(b))
      : "memory");
}
// The same with an L2 cache policy (createpolicy): the block tail's weights are read once a step, so
// they go in as evict-first and leave the activations, the KV cache and the kernel's code in L2.
__device__ __forceinline__ void tma_load_hint(void* dst, const CUtensorMap* m, int k, int row, uint64_t* b,
                                              uint64_t policy) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(
          smem_addr(dst)),
      "l"(m), "r"(k), "r"(row), "r"(smem_addr(b)), "l"(policy)
      : "memory");
}
// A row block's 64-element column chunks in one copy (a make_tma_map_chunks map): chunk c of the box
// lands at dst + c * box_rows * 64 elements, each chunk as the 2D copy of its columns would leave it.
// One thread's copies complete about one after another (docs/cuda.md), so one copy of 32 KB brings a
// tile in faster than four of 8 KB.
__device__ __forceinline__ void tma_load_chunks(void* dst, const CUtensorMap* m, int row, uint64_t* b) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(
          smem_addr(dst)),
      "l"(m), "r"(0), "r"(row), "r"(0), "r"(smem_addr(b))
      : "memory");
}
// Generic-proxy writes to global memory (other blocks' epilogues), visible to TMA reads and back.
__device__ __forceinline__ void fence_proxy_async_global() {
  asm volatile("fence.proxy.async.global;\n" ::: "memory");
}
#endif

// A bf16 tensor of `rank` dimensions (dims innermost first; strides in bytes, of dims 1..rank-1) as a
// TMA map of `box` boxes: 128-byte swizzle, 256-byte L2 promotion, elements past the end read as
// zeros. The error names the [rows, k] matrix, and `layout` how it is cut. The map builders below
// share it.
inline CUtensorMap encode_bf16_map(cuuint32_t rank, const void* ptr, const cuuint64_t* dims, const cuuint64_t* strides,
                                   const cuuint32_t* box, int64_t rows, int64_t k, const char* layout) {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {  // the driver's, looked up once
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult q;
    CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q));
    PIRT_CHECK(fn && q == cudaDriverEntryPointSuccess, "TMA: the driver has no cuTensorMapEncodeTiled");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  CUtensorMap m;
  const cuuint32_t elem[3] = {1, 1, 1};
  const CUresult r = encode(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, rank, const_cast<void*>(ptr), dims, strides, box, elem,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  PIRT_CHECK(r == CUDA_SUCCESS, "TMA: cuTensorMapEncodeTiled failed (%d) for a %lld x %lld matrix%s", (int)r,
             (long long)rows, (long long)k, layout);
  return m;
}

// A bf16 row-major [rows, k] matrix as a TMA map of [box_rows, 64] boxes (128-byte swizzle); rows past
// the end read as zeros.
inline CUtensorMap make_tma_map(const void* ptr, int64_t rows, int64_t k, int box_rows) {
  const cuuint64_t dims[2] = {(cuuint64_t)k, (cuuint64_t)rows};
  const cuuint64_t strides[1] = {(cuuint64_t)k * 2};
  const cuuint32_t box[2] = {64, (cuuint32_t)box_rows};
  return encode_bf16_map(2, ptr, dims, strides, box, rows, k, "");
}

// A bf16 row-major [rows, k] matrix as a 3D TMA map for tma_load_chunks: boxes of box_rows rows by
// `chunks` 64-element column chunks (128-byte swizzle), the chunks the outer box dimension (global
// stride 128 bytes) so that they land one after another; rows past the end read as zeros.
inline CUtensorMap make_tma_map_chunks(const void* ptr, int64_t rows, int64_t k, int box_rows, int chunks) {
  PIRT_CHECK(k % 64 == 0 && chunks >= 1 && chunks <= k / 64, "TMA: %lld columns in chunks of 64 (%d a box)",
             (long long)k, chunks);
  const cuuint64_t dims[3] = {64, (cuuint64_t)rows, (cuuint64_t)(k / 64)};
  const cuuint64_t strides[2] = {(cuuint64_t)k * 2, 128};
  const cuuint32_t box[3] = {64, (cuuint32_t)box_rows, (cuuint32_t)chunks};
  return encode_bf16_map(3, ptr, dims, strides, box, rows, k, " in chunks");
}

}  // namespace pirt::cuda
