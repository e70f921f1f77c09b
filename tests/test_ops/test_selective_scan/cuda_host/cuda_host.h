// Host emulation of the CUDA constructs that csrc/selective_scan's kernels use, for running their sources with a
// C++ compiler on a CPU (test_strided_zoh_host.py): a block's threads are std::threads, __syncwarp and
// __syncthreads a barrier of all of them, __shared__ a static (one block runs at a time), shuffles go through a
// shared exchange slot. Only what those kernels use; no memory model beyond the barriers'.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>  // (float4, make_float4, dim3; the kernels include it too)

#include <barrier>
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

// (cuda_runtime.h defines __global__, __device__, __host__ and __forceinline__ away for host compilers)
#undef __shared__
#define __shared__ static
#undef __launch_bounds__
#define __launch_bounds__(...)

struct HostDim3 {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local HostDim3 threadIdx, blockIdx;

namespace cuda_host {
inline std::unique_ptr<std::barrier<>> block_barrier;
inline float exchange[1024];
inline std::mutex atomic_mutex;
}  // namespace cuda_host

inline void __syncwarp(unsigned = 0xffffffffu) { cuda_host::block_barrier->arrive_and_wait(); }
inline void __syncthreads() { cuda_host::block_barrier->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int mask) {
  const unsigned t = threadIdx.x;
  cuda_host::exchange[t] = v;
  __syncwarp();
  const float other = cuda_host::exchange[(t & ~31u) | ((t & 31u) ^ static_cast<unsigned>(mask))];
  __syncwarp();
  return other;
}
inline float atomicAdd(float* address, float v) {
  std::lock_guard<std::mutex> lock(cuda_host::atomic_mutex);
  const float old = *address;
  *address = old + v;
  return old;
}
template <typename T>
inline T __ldg(const T* p) { return *p; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
using std::exp2f;
using std::expm1f;
using std::log1pf;

// Runs kernel(args...) for every block of grid with `threads` std::threads each, one block after another.
template <typename Kernel, typename... Args>
void launch_on_host(HostDim3 grid, unsigned threads, Kernel kernel, const Args&... args) {
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        cuda_host::block_barrier = std::make_unique<std::barrier<>>(threads);
        std::vector<std::thread> pool;
        for (unsigned t = 0; t < threads; ++t) {
          pool.emplace_back([&, t] {
            threadIdx = {t, 0, 0};
            blockIdx = {x, y, z};
            kernel(args...);
          });
        }
        for (auto& thread : pool) thread.join();
      }
    }
  }
}
