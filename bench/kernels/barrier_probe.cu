// Does a grid barrier slow down while the same SMs stream weights through TMA? A probe for a
// step "megakernel" (docs/cuda.md: weights streaming continuously across the phases while other
// warps synchronise). One block an SM, all resident (cooperative launch). Lane 0 of warp 0 streams
// fresh bytes from HBM into a ring of `stages` shared-memory stages of `stage` bytes (1D bulk copies,
// each refilled as soon as it lands) until warp 1 is done; lane 0 of warp 1 runs `barriers` grid
// barriers back to back (a release add on one counter, an acquire spin: common.cuh grid_barrier
// without the __syncthreads) and times each with globaltimer. Prints the mean barrier time with and
// without the stream, and what the stream took in meanwhile (GB/s an SM).
//
// Build (after `ninja -C build-gpu pirt_cuda`):
//   nvcc -std=c++20 -O2 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Isrc -Iinclude \
//     bench/kernels/barrier_probe.cu -o build-gpu/barrier_probe
// Run: barrier_probe [--barriers 200] (sweeps stage sizes and depths)
//
// The relay rows: blocks in clusters of two, only the even block of a pair streams; its warp 1 does
// not touch global memory but asks its partner (through a distributed-shared-memory mbarrier arrive)
// to run the grid barrier for the pair, and waits for the partner's arrive back. Does that signal
// path bypass the streaming SM's queue of requests?
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "backends/cuda/tma.cuh"

using namespace pirt::cuda;

// Arrive (release, cluster scope) on the mbarrier at b's offset in cluster CTA `rank`.
__device__ __forceinline__ void mbar_arrive_cluster(uint64_t* b, uint32_t rank) {
  asm volatile(
      "{\n.reg .b32 ra;\nmapa.shared::cluster.u32 ra, %0, %1;\nmbarrier.arrive.release.cluster.shared::cluster.b64 _, [ra];\n}\n" ::"r"(
          smem_addr(b)),
      "r"(rank)
      : "memory");
}
// Wait for phase `parity` with cluster-scope acquire.
__device__ __forceinline__ void mbar_wait_cluster(uint64_t* b, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred p;\nWAITC:\nmbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%0], %1;\n@!p bra WAITC;\n}\n" ::"r"(
          smem_addr(b)),
      "r"(parity)
      : "memory");
}

struct Args {
  const char* src;           // 1 GiB buffer, block b streams [b * span, (b + 1) * span) round robin
  int64_t span;
  int stages, stage, barriers, stream, relay;
  unsigned long long* counter;  // zeroed before each launch
  unsigned long long* out;      // [grid][3]: barrier ns in all, bytes streamed, stream ns
};

__global__ void __launch_bounds__(128, 1) barrier_probe_kernel(const __grid_constant__ Args a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* ring = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  uint64_t* full = reinterpret_cast<uint64_t*>(ring + (size_t)a.stages * a.stage);
  uint64_t* sig = full + a.stages;  // [0]: the relay's "pair arrived", [1]: the streamer's "barrier done"
  volatile int* stop = reinterpret_cast<volatile int*>(sig + 2);
  uint32_t rank = 0;
  if (a.relay) asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
  if (threadIdx.x == 0) {
    for (int i = 0; i < a.stages; ++i) mbar_init(full + i, 1);
    mbar_init(sig, 1);
    mbar_init(sig + 1, 1);
    *stop = 0;
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  if (a.relay) asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;\n" ::: "memory");
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (a.relay && rank == 1) {  // the relay: no stream; the pair's grid barrier
    if (warp == 1 && lane == 0) {
      const unsigned long long per_round = gridDim.x / 2;
      for (int i = 0; i < a.barriers; ++i) {
        mbar_wait_cluster(sig, i & 1);
        asm volatile("red.release.gpu.global.add.u64 [%0], 1;\n" ::"l"(a.counter) : "memory");
        unsigned long long now;
        do {
          asm volatile("ld.acquire.gpu.global.u64 %0, [%1];\n" : "=l"(now) : "l"(a.counter) : "memory");
        } while (now < (unsigned long long)(i + 1) * per_round);
        mbar_arrive_cluster(sig + 1, 0);
      }
    }
    __syncthreads();
    asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;\n" ::: "memory");
    return;
  }
  if (warp == 0 && lane == 0 && a.stream) {
    const char* base = a.src + (int64_t)blockIdx.x * a.span;
    int64_t n = 0, off = 0;
    unsigned long long t0, t1;
    asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t0));
    auto issue = [&](int64_t c) {
      const int s = c % a.stages;
      mbar_arrive_expect(full + s, a.stage);
      asm volatile(
          "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
              smem_addr(ring + (size_t)s * a.stage)),
          "l"(base + off), "r"(a.stage), "r"(smem_addr(full + s))
          : "memory");
      off = (off + a.stage) % a.span;
    };
    for (; n < a.stages; ++n) issue(n);
    int64_t c = 0;
    while (true) {  // wait for the oldest copy, then refill its stage, until warp 1 is done
      mbar_wait(full + c % a.stages, (c / a.stages) & 1);
      ++c;
      if (*stop) break;
      issue(n++);
    }
    for (; c < n; ++c) mbar_wait(full + c % a.stages, (c / a.stages) & 1);  // drain
    asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t1));
    a.out[3 * blockIdx.x + 1] = (unsigned long long)n * a.stage;
    a.out[3 * blockIdx.x + 2] = t1 - t0;
  }
  if (warp == 1 && lane == 0 && a.relay) {  // the streamer of a pair: signals and waits through DSMEM
    unsigned long long sum = 0;
    for (int i = 0; i < a.barriers; ++i) {
      unsigned long long t0, t1;
      asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t0));
      mbar_arrive_cluster(sig, 1);
      mbar_wait_cluster(sig + 1, i & 1);
      asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t1));
      sum += t1 - t0;
    }
    a.out[3 * blockIdx.x] = sum;
    *stop = 1;
  } else if (warp == 1 && lane == 0) {
    unsigned long long sum = 0;
    for (int i = 0; i < a.barriers; ++i) {
      unsigned long long t0, t1, now;
      asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t0));
      const unsigned long long target = (unsigned long long)(i + 1) * gridDim.x;
      asm volatile("red.release.gpu.global.add.u64 [%0], 1;\n" ::"l"(a.counter) : "memory");
      do {
        asm volatile("ld.acquire.gpu.global.u64 %0, [%1];\n" : "=l"(now) : "l"(a.counter) : "memory");
      } while (now < target);
      asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t1));
      sum += t1 - t0;
    }
    a.out[3 * blockIdx.x] = sum;
    *stop = 1;
  }
  __syncthreads();
  if (a.relay) asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;\n" ::: "memory");
#endif
}

int main(int argc, char** argv) {
  int barriers = 200;
  for (int i = 1; i + 1 < argc; ++i)
    if (!strcmp(argv[i], "--barriers")) barriers = atoi(argv[i + 1]);
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  const int64_t buf_bytes = 1ll << 30;
  char* buf;
  unsigned long long *counter, *out;
  if (cudaMalloc(&buf, buf_bytes) != cudaSuccess || cudaMalloc(&counter, 8) != cudaSuccess ||
      cudaMalloc(&out, sms * 24) != cudaSuccess) {
    fprintf(stderr, "cudaMalloc failed\n");
    return 1;
  }
  cudaMemset(buf, 1, buf_bytes);
  printf("device: %s, %d SMs; %d grid barriers a launch, one block an SM\n", prop.name, sms, barriers);
  printf("%-26s %14s %22s\n", "stream (stages x bytes)", "barrier us", "stream GB/s an SM");
  struct Cfg {
    int stream, stages, stage, relay;
  };
  const Cfg cfgs[] = {{0, 1, 8192, 0},   {1, 2, 8192, 0},  {1, 4, 8192, 0},   {1, 12, 8192, 0}, {1, 2, 16384, 0},
                      {1, 4, 16384, 0},  {1, 8, 16384, 0}, {1, 12, 16384, 0}, {1, 3, 32768, 0}, {1, 6, 32768, 0},
                      {0, 1, 8192, 0},   {0, 1, 8192, 1},  {1, 2, 16384, 1},  {1, 4, 16384, 1}, {1, 12, 16384, 1},
                      {1, 6, 32768, 1}};
  for (const Cfg& c : cfgs) {
    Args a{buf, buf_bytes / sms / 4096 * 4096, c.stages, c.stage, barriers, c.stream, c.relay, counter, out};
    const size_t smem = (size_t)c.stages * c.stage + c.stages * 8 + 32 + 1024;
    cudaFuncSetAttribute(barrier_probe_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    std::vector<double> bar_us, gbs;
    for (int rep = 0; rep < 5; ++rep) {
      cudaMemset(counter, 0, 8);
      cudaMemset(out, 0, sms * 24);
      cudaLaunchConfig_t cfg = {};
      cfg.gridDim = dim3(sms);
      cfg.blockDim = dim3(128);
      cfg.dynamicSmemBytes = smem;
      cudaLaunchAttribute attr[2];
      attr[0].id = cudaLaunchAttributeCooperative;
      attr[0].val.cooperative = 1;
      attr[1].id = cudaLaunchAttributeClusterDimension;
      attr[1].val.clusterDim.x = 2;
      attr[1].val.clusterDim.y = 1;
      attr[1].val.clusterDim.z = 1;
      cfg.attrs = attr;
      cfg.numAttrs = c.relay ? 2 : 1;
      cudaError_t e = cudaLaunchKernelEx(&cfg, barrier_probe_kernel, a);
      if (e == cudaSuccess) e = cudaDeviceSynchronize();
      if (e != cudaSuccess) {
        fprintf(stderr, "CUDA error %s\n", cudaGetErrorString(e));
        return 1;
      }
      std::vector<unsigned long long> h(sms * 3);
      cudaMemcpy(h.data(), out, sms * 24, cudaMemcpyDeviceToHost);
      double b = 0, g = 0;
      int nb = 0, ng = 0;
      for (int i = 0; i < sms; ++i) {
        if (c.relay && i % 2) continue;  // (relay blocks neither stream nor time)
        b += h[3 * i] * 1e-3 / barriers, ++nb;
        if (h[3 * i + 2]) g += (double)h[3 * i + 1] / h[3 * i + 2], ++ng;
      }
      bar_us.push_back(b / std::max(nb, 1));
      gbs.push_back(g / std::max(ng, 1));
    }
    std::sort(bar_us.begin(), bar_us.end());
    std::sort(gbs.begin(), gbs.end());
    char name[64];
    if (c.stream)
      snprintf(name, sizeof name, "%s%d x %d KB (%d KB)", c.relay ? "relay, " : "", c.stages, c.stage / 1024,
               c.stages * c.stage / 1024);
    else
      snprintf(name, sizeof name, "%s", c.relay ? "relay, none" : "none");
    printf("%-26s %14.3f %22.1f\n", name, bar_us[2], c.stream ? gbs[2] : 0.0);
  }
  return 0;
}
