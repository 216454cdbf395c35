// How fast can one SM take bytes in through the TMA unit? A probe for the block tail's design
// (block_tail.cu): each block streams `per_block` bytes into a ring of `stages` shared-memory stages
// and does nothing else (no math), one block an SM, `blocks` SMs. Modes:
//   2d:  2D tensor boxes of `rows` x 64 bf16 (128-byte swizzle), the block tail's weight loads
//        (a box's rows are `k` elements apart in global memory)
//   1d:  1D bulk copies (cp.async.bulk) of `box` contiguous bytes
// Sources: hbm (a 1 GiB buffer, each launch on fresh lines) or l2 (a 16 MiB buffer read again).
// Prints the span of the launch (first block in to last block out, globaltimer) and GB/s an SM.
//
// Options: --mode 2d|1d|ld (ld: 16-byte loads by all 128 threads), --src hbm|l2, --blocks, --kb (per
// block), --stages, --rows / --boxes (2d), --box (1d bytes), --k (2d row length), --producers (threads
// issuing, lane 0 of warps 0..), --wait 0|1|2 (try_wait loop, test_wait spin, try_wait with --hint ns),
// --same 1 (every block reads block 0's bytes: a broadcast like the block tail's x and the K/V cache).
// Session 8's findings are in docs/cuda.md ("What one thread's TMA copies cost").
//
// Build (after `ninja -C build-cuda pirt_cuda pirt_io`):
//   nvcc -std=c++20 -O2 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Isrc -Iinclude \
//     bench/kernels/ingest_bench.cu build-cuda/libpirt_cuda.a build-cuda/libpirt_io.a \
//     build-cuda/libpirt_core.a -lcublasLt -lcuda -o build-cuda/ingest_bench
#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backends/cuda/tma.cuh"

using namespace pirt::cuda;

struct Args {
  CUtensorMap map;
  const char* src;
  int mode;              // 0: 2d boxes, 1: 1d bulk
  int rows;              // 2d: box rows
  int boxes_per_stage;   // 2d: boxes a stage
  int box;               // 1d: bytes a copy
  int stages;
  int producers;         // threads issuing copies (lane 0 of warps 0..), each its own stages
  int wait_mode;         // 0: mbar_wait (try_wait loop), 1: test_wait spin, 2: try_wait with a hint
  uint32_t hint;         // wait_mode 2: suspend-time hint (ns)
  int64_t per_block;     // bytes a block
  int64_t k;             // 2d: row length (elements)
  int64_t base;          // 2d: first row of this launch; 1d: first byte
  int same;              // every block reads the same bytes (block 0's): a broadcast, as x in the block tail
  unsigned long long* t; // [blocks][2]
};

__global__ void __launch_bounds__(128, 1) ingest_kernel(const __grid_constant__ Args a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* base = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  const int stage_bytes = a.mode == 0 ? a.rows * 128 * a.boxes_per_stage : a.mode == 1 ? a.box : (65536 / a.stages) & ~15;  // (16-byte aligned: the mbarriers follow)
  uint64_t* bar = reinterpret_cast<uint64_t*>(base + (size_t)a.stages * stage_bytes);
  unsigned long long t0;
  asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t0));
  if (threadIdx.x == 0) {
    for (int i = 0; i < a.stages; ++i) mbar_init(bar + i, 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  if (a.mode == 2) {  // plain 16-byte loads by every thread, 8 in flight a thread, stored to shared memory
    const int4* src = reinterpret_cast<const int4*>(a.src + a.base + (a.same ? 0 : (int64_t)blockIdx.x * a.per_block));
    int4* dst = reinterpret_cast<int4*>(base);
    const int64_t n = a.per_block / 16;
    for (int64_t i = threadIdx.x; i < n; i += 128 * 8) {
      int4 v[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = i + j * 128 < n ? __ldcg(src + i + j * 128) : make_int4(0, 0, 0, 0);
#pragma unroll
      for (int j = 0; j < 8; ++j) dst[(threadIdx.x + j * 128) % 4096] = v[j];
    }
  } else if (threadIdx.x % 32 == 0 && threadIdx.x / 32 < a.producers) {
    const int pr = threadIdx.x / 32;
    const int64_t nchunks = a.per_block / stage_bytes;
    // 2d: block b owns rows [base + b * R, ...) where R rows x k elements = per_block bytes; chunk c
    // is k columns [64 (c % (k / 64)), +64) of row group c / (k / 64) (the block tail's order: k inner).
    const int64_t kch = a.k / 64, rows_per_group = (int64_t)a.rows * a.boxes_per_stage;
    const int64_t row0 = a.base + (a.same ? 0 : (int64_t)blockIdx.x * (a.per_block / (a.k * 2)));
    auto issue = [&](int64_t c) {
      const int s = c % a.stages;
      unsigned char* dst = base + (size_t)s * stage_bytes;
      mbar_arrive_expect(bar + s, stage_bytes);
      if (a.mode == 0) {
        const int kc = (int)(c % kch);
        const int64_t r = row0 + (c / kch) * rows_per_group;
        for (int b = 0; b < a.boxes_per_stage; ++b) tma_load(dst + b * a.rows * 128, &a.map, kc * 64, (int)(r + b * a.rows), bar + s);
      } else {
        const char* src = a.src + a.base + (a.same ? 0 : (int64_t)blockIdx.x * a.per_block) + c * a.box;
        asm volatile(
            "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                smem_addr(dst)),
            "l"(src), "r"(a.box), "r"(smem_addr(bar + s))
            : "memory");
      }
    };
    for (int64_t c = pr; c < a.stages && c < nchunks; c += a.producers) issue(c);
    for (int64_t c = pr; c < nchunks; c += a.producers) {
      if (a.wait_mode == 1) {  // spin on test_wait (never suspends)
        uint32_t done = 0;
        while (!done)
          asm volatile("{\n.reg .pred p;\nmbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                       : "=r"(done) : "r"(smem_addr(bar + c % a.stages)), "r"((uint32_t)((c / a.stages) & 1)) : "memory");
      } else if (a.wait_mode == 2) {  // try_wait with a suspend-time hint
        uint32_t done = 0;
        while (!done)
          asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2, %3;\nselp.u32 %0, 1, 0, p;\n}\n"
                       : "=r"(done) : "r"(smem_addr(bar + c % a.stages)), "r"((uint32_t)((c / a.stages) & 1)), "r"(a.hint) : "memory");
      } else {
        mbar_wait(bar + c % a.stages, (c / a.stages) & 1);
      }
      if (c + a.stages < nchunks) issue(c + a.stages);
    }
  }
  __syncthreads();
  unsigned long long t1;
  asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t1));
  if (threadIdx.x == 0) a.t[2 * blockIdx.x] = t0, a.t[2 * blockIdx.x + 1] = t1;
#endif
}

int main(int argc, char** argv) {
  auto arg = [&](const char* name, long long def) {
    for (int i = 1; i + 1 < argc; ++i)
      if (!strcmp(argv[i], name)) return atoll(argv[i + 1]);
    return def;
  };
  auto sarg = [&](const char* name, const char* def) -> const char* {
    for (int i = 1; i + 1 < argc; ++i)
      if (!strcmp(argv[i], name)) return argv[i + 1];
    return def;
  };
  const bool l2 = !strcmp(sarg("--src", "hbm"), "l2");
  const char* ms = sarg("--mode", "2d");
  const int mode = !strcmp(ms, "1d") ? 1 : !strcmp(ms, "ld") ? 2 : 0;
  const int blocks = (int)arg("--blocks", 132), stages = (int)arg("--stages", 12);
  const int rows = (int)arg("--rows", 32), bps = (int)arg("--boxes", 2), box = (int)arg("--box", 8192);
  const int64_t per_block = arg("--kb", 128) * 1024, k = arg("--k", 1024);
  const int reps = (int)arg("--reps", 20);
  const int64_t buf_bytes = l2 ? (16ll << 20) : (1ll << 30);
  char* buf;
  cudaMalloc(&buf, buf_bytes);
  cudaMemset(buf, 1, buf_bytes);
  unsigned long long* t;
  cudaMalloc(&t, blocks * 16);
  const int stage_bytes = mode == 0 ? rows * 128 * bps : mode == 1 ? box : (65536 / stages) & ~15;
  const size_t smem = (size_t)stages * stage_bytes + stages * 8 + 1024;
  cudaFuncSetAttribute(ingest_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  Args a{};
  a.map = make_tma_map(buf, buf_bytes / (k * 2), k, rows);
  a.src = buf, a.mode = mode, a.rows = rows, a.boxes_per_stage = bps, a.box = box, a.stages = stages;
  a.per_block = per_block, a.k = k, a.t = t;
  a.producers = (int)arg("--producers", 1);
  a.wait_mode = (int)arg("--wait", 0);
  a.hint = (uint32_t)arg("--hint", 20);
  a.same = (int)arg("--same", 0);
  const int64_t launch_bytes = per_block * blocks;
  if (launch_bytes > buf_bytes) {
    fprintf(stderr, "too many bytes a launch\n");
    return 1;
  }
  std::vector<double> span, mean_blk;
  std::vector<unsigned long long> h(blocks * 2);
  int64_t off = 0;
  for (int r = 0; r < 7; ++r) {
    for (int i = 0; i < reps; ++i) {  // back to back (clocks up); the stamps are the last launch's
      if (!l2) {  // fresh lines each launch
        if (off + launch_bytes > buf_bytes) off = 0;
      } else {
        off = 0;
      }
      a.base = mode == 0 ? off / (k * 2) : off;
      ingest_kernel<<<blocks, 128, smem>>>(a);
      off += launch_bytes;
    }
    cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
      fprintf(stderr, "CUDA error %s\n", cudaGetErrorString(e));
      return 1;
    }
    if (r < 2) continue;
    cudaMemcpy(h.data(), t, blocks * 16, cudaMemcpyDeviceToHost);
    unsigned long long lo = ~0ull, hi = 0;
    double sum = 0;
    for (int b = 0; b < blocks; ++b) lo = std::min(lo, h[2 * b]), hi = std::max(hi, h[2 * b + 1]), sum += h[2 * b + 1] - h[2 * b];
    span.push_back((hi - lo) * 1e-3);
    mean_blk.push_back(sum / blocks * 1e-3);
  }
  std::sort(span.begin(), span.end());
  std::sort(mean_blk.begin(), mean_blk.end());
  const double s = span[span.size() / 2], m = mean_blk[mean_blk.size() / 2];
  printf("%sW%d P%d %s %s blocks %d stages %d stage %d B (%s) %lld KB a block: span %.2f us, block mean %.2f us; %.1f GB/s an SM "
         "(block mean), %.2f TB/s in all (span)\n",
         a.same ? "same bytes " : "", a.wait_mode, a.producers, l2 ? "l2 " : "hbm", mode == 0 ? "2d" : mode == 1 ? "1d" : "ld", blocks, stages, stage_bytes,
         mode == 0 ? (std::to_string(bps) + "x" + std::to_string(rows) + " rows").c_str() : mode == 1 ? "bulk" : "ld.cg",
         (long long)(per_block / 1024), s, m, per_block / m * 1e-3, launch_bytes / s * 1e-6);
  return 0;
}
