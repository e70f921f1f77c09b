// Selective-scan forward and backward kernels, templates over (input dtype, discretization method, padded state
// count). The math is mmssm/ops/selective_scan/discretize.py's; see the docstrings there.
//
// Layout of the work. A block handles one batch element, CB consecutive channels of one group and one direction
// (grid: groups * blocks per group, batch, directions). A thread owns one channel and SPT consecutive states
// (R = NS / SPT lanes per channel, NS the state count padded to 8, 16 or 32) and walks time sequentially; the
// block stages chunks of kChunk = 32 steps of u, delta (z, dout) for its channels and of B, C for its group in
// shared memory (coalesced loads, softplus applied once per element), every thread steps through the chunk from
// there, and sums over the states (y, and in the backward the gradients of delta and u) are transposed
// reductions over the R lanes of a channel. Outputs leave through shared memory, coalesced.
//
// Forward: the state at every chunk start is saved (float32, on request) for the backward. Backward: per chunk,
// from last to first, recompute the chunk's states into registers from the saved one, then walk it backwards:
// the adjoint g_t = C_t dy_t + A_bar(x_{t+1}) g_{t+1}, dL/dx, and the contributions to the samples t - j that
// the step read (carried in K + 1 registers as the walk goes down in time). dB and dC are summed over the
// block's channels in shared memory and added to float32 buffers with one atomicAdd per (n, l) per block.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "selective_scan.h"

namespace mmssm_scan {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
#ifndef MMSSM_FORWARD_MIN_BLOCKS
#define MMSSM_FORWARD_MIN_BLOCKS 3
#endif
#ifndef MMSSM_BACKWARD_MIN_BLOCKS
#define MMSSM_BACKWARD_MIN_BLOCKS 3
#endif
constexpr int kForwardMinBlocks = MMSSM_FORWARD_MIN_BLOCKS;  // blocks per SM that the register budget allows
constexpr int kBackwardMinBlocks = MMSSM_BACKWARD_MIN_BLOCKS;
constexpr int kTileStride = 36;  // >= kChunk + 3 halo samples, a multiple of 4 (float4 rows)
constexpr float kLog2e = 1.4426950408889634f;

template <InputType IT> struct InputTraits;
template <> struct InputTraits<InputType::kFloat32> { using type = float; };
template <> struct InputTraits<InputType::kFloat16> { using type = __half; };
template <> struct InputTraits<InputType::kBFloat16> { using type = __nv_bfloat16; };

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename T>
__device__ __forceinline__ float load(const void* base, int64_t index) {
  return to_float(__ldg(static_cast<const T*>(base) + index));
}

// B or C, of the input dtype or float32
template <typename T>
__device__ __forceinline__ float load_bc(const void* base, int64_t index, int fp32) {
  return fp32 ? __ldg(static_cast<const float*>(base) + index) : to_float(__ldg(static_cast<const T*>(base) + index));
}

__host__ __device__ constexpr int method_taps(int method) {
  return method == kZoh ? 0 : (method == kFoh || method == kBilinear) ? 1 : method == kPoly ? 2 : 3;
}

__host__ __device__ constexpr double factorial(int k) { return k <= 1 ? 1.0 : k * factorial(k - 1); }

template <int K>
struct Factorial {
  static constexpr float value = static_cast<float>(factorial(K));
  static constexpr float inverse = static_cast<float>(1.0 / factorial(K));
};

// k! and 1/k! as float literals; k is a constant after unrolling, so the switch folds away.
__device__ __forceinline__ float inv_factorial(int k) {
  switch (k) {
    case 0: return Factorial<0>::inverse;
    case 1: return Factorial<1>::inverse;
    case 2: return Factorial<2>::inverse;
    case 3: return Factorial<3>::inverse;
    case 4: return Factorial<4>::inverse;
    case 5: return Factorial<5>::inverse;
    case 6: return Factorial<6>::inverse;
    case 7: return Factorial<7>::inverse;
    case 8: return Factorial<8>::inverse;
    case 9: return Factorial<9>::inverse;
    case 10: return Factorial<10>::inverse;
    case 11: return Factorial<11>::inverse;
    case 12: return Factorial<12>::inverse;
    case 13: return Factorial<13>::inverse;
    case 14: return Factorial<14>::inverse;
    case 15: return Factorial<15>::inverse;
    case 16: return Factorial<16>::inverse;
    default: return 0.f;
  }
}

__device__ __forceinline__ float factorial_f(int k) {
  switch (k) {
    case 0: return Factorial<0>::value;
    case 1: return Factorial<1>::value;
    case 2: return Factorial<2>::value;
    case 3: return Factorial<3>::value;
    case 4: return Factorial<4>::value;
    case 5: return Factorial<5>::value;
    case 6: return Factorial<6>::value;
    case 7: return Factorial<7>::value;
    case 8: return Factorial<8>::value;
    case 9: return Factorial<9>::value;
    case 10: return Factorial<10>::value;
    case 11: return Factorial<11>::value;
    case 12: return Factorial<12>::value;
    case 13: return Factorial<13>::value;
    case 14: return Factorial<14>::value;
    case 15: return Factorial<15>::value;
    case 16: return Factorial<16>::value;
    default: return 0.f;
  }
}

__device__ __forceinline__ float softplus(float x) { return x > 20.f ? x : log1pf(__expf(x)); }

// ------------------------------------------------------------------------------------------------------------
// Discretization: A_bar(x) and the input weights W_j(x) (and their derivatives), as discretize.py.

// exp(x) and phi[k] = phi_{k+1}(x), k < COUNT: Taylor series of the highest phi (11 terms, float32's count) and
// the downward recurrence phi_k = x phi_{k+1} + 1/k! for |x| < 1, the upward closed forms otherwise.
template <int COUNT>
__device__ __forceinline__ float exp_and_phis(float x, float exp_x, float (&phi)[COUNT]) {
  constexpr int kTerms = 11;
  if (fabsf(x) < 1.f) {
    float t = x * inv_factorial(kTerms - 1 + COUNT) + inv_factorial(kTerms - 2 + COUNT);
#pragma unroll
    for (int j = kTerms - 3; j >= 0; --j) t = t * x + inv_factorial(j + COUNT);
    phi[COUNT - 1] = t;
#pragma unroll
    for (int k = COUNT - 1; k >= 1; --k) phi[k - 1] = phi[k] * x + inv_factorial(k);
  } else {
    const float inverse = 1.f / x;
    float closed = exp_x;
#pragma unroll
    for (int k = 0; k < COUNT; ++k) {
      closed = (closed - inv_factorial(k)) * inverse;
      phi[k] = closed;
    }
  }
  return exp_x;
}

// W_j = sum_k c_jk mu_k of the interpolating methods (discretize._MOMENT_WEIGHTS), zero coefficients left out.
template <int METHOD>
__device__ __forceinline__ void moment_weights(const float* mu, float* w) {
  if constexpr (METHOD == kFoh) {
    w[0] = mu[1];
    w[1] = mu[0] - mu[1];
  } else if constexpr (METHOD == kPoly) {
    w[0] = 0.5f * (mu[1] + mu[2]);
    w[1] = mu[0] - mu[2];
    w[2] = 0.5f * (mu[2] - mu[1]);
  } else {  // highorder
    w[0] = mu[1] * (1.f / 3.f) + mu[2] * 0.5f + mu[3] * (1.f / 6.f);
    w[1] = mu[0] + mu[1] * 0.5f - mu[2] - mu[3] * 0.5f;
    w[2] = -mu[1] + 0.5f * (mu[2] + mu[3]);
    w[3] = (mu[1] - mu[3]) * (1.f / 6.f);
  }
}

template <int METHOD>
struct Discretization {
  static constexpr int K = method_taps(METHOD);

  // x = dt * A, x_log2 = dt * A * log2(e) (so that exp(x) is one ex2)
  static __device__ __forceinline__ void eval(float x, float x_log2, float& a_bar, float (&w)[K + 1]) {
    if constexpr (METHOD == kZoh) {
      a_bar = exp2f(x_log2);
      w[0] = 1.f;
    } else if constexpr (METHOD == kBilinear) {
      const float inverse = 1.f / (2.f - x);
      a_bar = (2.f + x) * inverse;
      w[0] = inverse;
      w[1] = inverse;
    } else if constexpr (METHOD == kRk4) {
      a_bar = 1.f + x * (1.f + x * (0.5f + x * (1.f / 6.f + x * (1.f / 24.f))));
      const float mid = (4.f + x * (2.f + x * 0.5f)) * (1.f / 6.f);
      const float start = (1.f + x * (1.f + x * (0.5f + x * 0.25f))) * (1.f / 6.f);
      w[0] = 1.f / 6.f + mid * (5.f / 16.f);
      w[1] = start + mid * (15.f / 16.f);
      w[2] = mid * (-5.f / 16.f);
      w[3] = mid * (1.f / 16.f);
    } else {
      float phi[K + 1];
      a_bar = exp_and_phis<K + 1>(x, exp2f(x_log2), phi);
      float mu[K + 1];
#pragma unroll
      for (int k = 0; k <= K; ++k) mu[k] = k > 1 ? phi[k] * factorial_f(k) : phi[k];
      moment_weights<METHOD>(mu, w);
    }
  }

  // A_bar(x) alone (the backward's local pass)
  static __device__ __forceinline__ float transition(float x, float x_log2) {
    if constexpr (METHOD == kBilinear) {
      return (2.f + x) * (1.f / (2.f - x));
    } else if constexpr (METHOD == kRk4) {
      return 1.f + x * (1.f + x * (0.5f + x * (1.f / 6.f + x * (1.f / 24.f))));
    } else {
      return exp2f(x_log2);
    }
  }

  static __device__ __forceinline__ void eval_derivatives(float x, float x_log2, float& a_bar, float& a_bar_prime,
                                                          float (&w)[K + 1], float (&w_prime)[K + 1]) {
    if constexpr (METHOD == kZoh) {
      a_bar = exp2f(x_log2);
      a_bar_prime = a_bar;
      w[0] = 1.f;
      w_prime[0] = 0.f;
    } else if constexpr (METHOD == kBilinear) {
      const float inverse = 1.f / (2.f - x);
      a_bar = (2.f + x) * inverse;
      const float inverse_prime = inverse * inverse;
      a_bar_prime = 4.f * inverse_prime;
      w[0] = w[1] = inverse;
      w_prime[0] = w_prime[1] = inverse_prime;
    } else if constexpr (METHOD == kRk4) {
      a_bar = 1.f + x * (1.f + x * (0.5f + x * (1.f / 6.f + x * (1.f / 24.f))));
      a_bar_prime = 1.f + x * (1.f + x * (0.5f + x * (1.f / 6.f)));
      const float mid = (4.f + x * (2.f + x * 0.5f)) * (1.f / 6.f);
      const float mid_prime = (2.f + x) * (1.f / 6.f);
      const float start = (1.f + x * (1.f + x * (0.5f + x * 0.25f))) * (1.f / 6.f);
      const float start_prime = (1.f + x * (1.f + x * 0.75f)) * (1.f / 6.f);
      w[0] = 1.f / 6.f + mid * (5.f / 16.f);
      w[1] = start + mid * (15.f / 16.f);
      w[2] = mid * (-5.f / 16.f);
      w[3] = mid * (1.f / 16.f);
      w_prime[0] = mid_prime * (5.f / 16.f);
      w_prime[1] = start_prime + mid_prime * (15.f / 16.f);
      w_prime[2] = mid_prime * (-5.f / 16.f);
      w_prime[3] = mid_prime * (1.f / 16.f);
    } else {
      // d mu_k / dx = mu_k - mu_{k+1}: one more phi gives the derivatives
      float phi[K + 2];
      a_bar = exp_and_phis<K + 2>(x, exp2f(x_log2), phi);
      a_bar_prime = a_bar;
      float mu[K + 2];
#pragma unroll
      for (int k = 0; k <= K + 1; ++k) mu[k] = k > 1 ? phi[k] * factorial_f(k) : phi[k];
      float mu_prime[K + 1];
#pragma unroll
      for (int k = 0; k <= K; ++k) mu_prime[k] = mu[k] - mu[k + 1];
      moment_weights<METHOD>(mu, w);
      moment_weights<METHOD>(mu_prime, w_prime);
    }
  }
};

// ------------------------------------------------------------------------------------------------------------
// Transposed reduction: v[0..M) of every lane summed over the lanes that differ in bits O, 2 O, ..., < OEND of
// the lane index. Each stage halves the array: a lane keeps one half and sends its partner the other, so that M
// sums cost about M shuffles in all instead of M log2(lanes). Afterwards v[0..count) holds the sums of the
// original indices base(lane) + m (when M is smaller than the lane group, the lanes of a group share values).
template <int M, int O, int OEND>
struct TransposedReduce {
  template <int SIZE>
  static __device__ __forceinline__ void run(float (&v)[SIZE], int lane) {
    if constexpr (O < OEND) {
      if constexpr (M > 1) {
        constexpr int H = M / 2;
        const bool upper = (lane & O) != 0;
#pragma unroll
        for (int i = 0; i < H; ++i) {
          const float send = upper ? v[i] : v[i + H];
          const float keep = upper ? v[i + H] : v[i];
          v[i] = keep + __shfl_xor_sync(0xffffffffu, send, O);
        }
        TransposedReduce<H, O * 2, OEND>::run(v, lane);
      } else {
        v[0] += __shfl_xor_sync(0xffffffffu, v[0], O);
        TransposedReduce<1, O * 2, OEND>::run(v, lane);
      }
    }
  }
  static __device__ __forceinline__ int base(int lane) {
    if constexpr (O < OEND && M > 1) {
      return ((lane & O) ? M / 2 : 0) + TransposedReduce<M / 2, O * 2, OEND>::base(lane);
    } else {
      return 0;
    }
  }
  static __host__ __device__ constexpr int count() {
    if constexpr (O < OEND && M > 1) {
      return TransposedReduce<M / 2, O * 2, OEND>::count();
    } else {
      return M;
    }
  }
};

__device__ __forceinline__ float get(const float4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// Position in memory of scan step s.
__device__ __forceinline__ int position(int s, int length, int reverse) { return reverse ? length - 1 - s : s; }

// One tensor's samples of a chunk, steps s0 .. s0 + T - 1 of `rows` sequences of length L from `first` (one row a
// channel, or a state for B and C), spread over the block: element e = tid + it * kThreads is row e / T, step
// e % T. Zero past the sequence end, past `rows` and for a null tensor. All of a chunk's tiles are loaded before
// any is used (unrolled, so that the loads are in flight together). fp32: B / C given in float32.
template <typename In, int T, int M>
__device__ __forceinline__ void load_tile(float (&out)[M], const void* base, int64_t first, int rows, int s0, int L,
                                          int reverse, int tid, int fp32 = 0) {
#pragma unroll
  for (int it = 0; it < M; ++it) {
    const int e = tid + it * kThreads, r = e / T, s = s0 + e % T;
    out[it] = (base && s < L && r < rows)
                  ? load_bc<In>(base, first + static_cast<int64_t>(r) * L + position(s, L, reverse), fp32)
                  : 0.f;
  }
}

// Index of (segment, batch, channel, state) in the segment buffers, and of (segment, batch, channel, sample
// segment start - 1 - j) in seam_du.
__device__ __forceinline__ int64_t segment_index(const ScanParams& p, int segment, int b, int d, int n) {
  return ((static_cast<int64_t>(segment) * p.batch + b) * p.dim + d) * p.state + n;
}
__device__ __forceinline__ int64_t seam_index(const ScanParams& p, int segment, int b, int d, int j) {
  return ((static_cast<int64_t>(segment) * p.batch + b) * p.dim + d) * kMaxTaps + j;
}

// ------------------------------------------------------------------------------------------------------------
// Forward. PHASE 0: the whole sequence from the zero state (grid z: direction). Segment-parallel (grid z:
// direction * segments + segment; the recurrence is linear in h, so h_end = prod(A_bar) h_start + h_end from zero):
// PHASE 1 runs each segment but the last from the zero state and keeps its end state and the product of its A_bar
// (no outputs); combine_kernel turns them into start states; PHASE 2 reruns each segment from its start state and
// writes the outputs, the saved chunk-start states and (last segment) the last state. A segment's first steps read
// the samples before it (real data: only the sequence start clamps).

template <typename In, int METHOD, int NS, int SPT, int PHASE>
__global__ void __launch_bounds__(kThreads, kForwardMinBlocks) scan_forward_kernel(const ScanParams p) {
  constexpr int K = method_taps(METHOD);
  constexpr int T = kChunk;
  constexpr int TS = kTileStride;
  constexpr int R = NS / SPT;        // lanes per channel
  constexpr int CB = kThreads / R;   // channels per block
  __shared__ __align__(16) float u_s[CB][TS];
  __shared__ __align__(16) float dt_s[CB][TS];
  __shared__ __align__(16) float y_s[CB][TS];
  __shared__ __align__(16) float z_s[CB][TS];
  __shared__ __align__(16) float B_s[NS][TS];
  __shared__ __align__(16) float C_s[NS][TS];

  const int segment = PHASE ? blockIdx.z % p.segments : 0;
  const DirectionParams& q = p.dir[PHASE ? blockIdx.z / p.segments : blockIdx.z];
  if constexpr (PHASE == 1) {
    if (segment == p.segments - 1) return;  // nothing needs the last segment's end state
  }
  const int chunk_begin = PHASE ? segment * p.segment_chunks : 0;
  const int chunk_end = PHASE ? min(chunk_begin + p.segment_chunks, p.chunks) : p.chunks;
  const int b = blockIdx.y;
  const int L = p.length, N = p.state, dim = p.dim;
  const int per_group = dim / p.groups;
  const int blocks_per_group = (per_group + CB - 1) / CB;
  const int g = blockIdx.x / blocks_per_group;
  const int c0 = (blockIdx.x % blocks_per_group) * CB;  // first channel of the block within its group
  const int d0 = g * per_group + c0;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int c = tid / R, r = tid % R;
  const int d = d0 + c;
  const bool active = c0 + c < per_group;
  const int reverse = q.reverse;

  float A[SPT], A_log2[SPT], h[SPT], prod[SPT];
#pragma unroll
  for (int k = 0; k < SPT; ++k) {
    const int n = r * SPT + k;
    A[k] = (active && n < N) ? q.A[d * N + n] : 0.f;
    A_log2[k] = A[k] * kLog2e;
    h[k] = (PHASE == 2 && active && n < N) ? q.segment_state[segment_index(p, segment, b, d, n)] : 0.f;
    prod[k] = 1.f;
  }
  float window[SPT][K > 0 ? K : 1];  // window[k][j] = v_{t-1-j} of state k

  const int64_t row0 = (static_cast<int64_t>(b) * dim + d0) * L;  // (b, d0, 0)
  const int64_t bc0 = (static_cast<int64_t>(b) * p.groups + g) * N * static_cast<int64_t>(L);
  if constexpr (PHASE != 0 && K > 0) {
    if (segment > 0) {  // the K samples before the segment (s_begin >= kChunk > K: no clamping)
      const int s_begin = chunk_begin * T;
#pragma unroll
      for (int k = 0; k < SPT; ++k) {
        const int n = r * SPT + k;
#pragma unroll
        for (int j = 0; j < K; ++j) {
          const int s = position(s_begin - 1 - j, L, reverse);
          window[k][j] = (active && n < N) ? load<In>(q.u, row0 + static_cast<int64_t>(c) * L + s) *
                                                 load_bc<In>(q.B, bc0 + static_cast<int64_t>(n) * L + s, p.bc_fp32)
                                           : 0.f;
        }
      }
    }
  }

  for (int chunk = chunk_begin; chunk < chunk_end; ++chunk) {
    const int s0 = chunk * T;
    // the chunk's loads, then softplus and the shared-memory stores
    constexpr int E = CB * T / kThreads, EB = NS * T / kThreads;
    static_assert(E * kThreads == CB * T && EB * kThreads == NS * T, "tiles must split evenly over the threads");
    float ru[E], rd[E], rz[E], rb[EB], rc[EB];
    load_tile<In, T>(ru, q.u, row0, per_group - c0, s0, L, reverse, tid);
    load_tile<In, T>(rd, q.delta, row0, per_group - c0, s0, L, reverse, tid);
    load_tile<In, T>(rz, PHASE != 1 ? q.z : nullptr, row0, per_group - c0, s0, L, reverse, tid);
    load_tile<In, T>(rb, q.B, bc0, N, s0, L, reverse, tid, p.bc_fp32);
    load_tile<In, T>(rc, PHASE != 1 ? q.C : nullptr, bc0, N, s0, L, reverse, tid, p.bc_fp32);
    __syncthreads();  // the previous chunk is done with the tiles
#pragma unroll
    for (int it = 0; it < E; ++it) {
      const int e = tid + it * kThreads, cc = e / T, i = e % T;
      float dt = rd[it];
      if (q.delta_bias && c0 + cc < per_group) dt += q.delta_bias[d0 + cc];
      dt = p.softplus ? softplus(dt) : dt;
      u_s[cc][i] = ru[it];
      dt_s[cc][i] = (s0 + i < L) ? dt : 0.f;  // steps past the end leave the state as it is
      z_s[cc][i] = rz[it];
    }
#pragma unroll
    for (int it = 0; it < EB; ++it) {
      const int e = tid + it * kThreads, n = e / T, i = e % T;
      B_s[n][i] = rb[it];
      C_s[n][i] = rc[it];
    }
    __syncthreads();
    if (PHASE != 1 && p.save && active) {
#pragma unroll
      for (int k = 0; k < SPT; ++k) {
        const int n = r * SPT + k;
        if (n < N) q.saved[((static_cast<int64_t>(b) * p.chunks + chunk) * dim + d) * N + n] = h[k];
      }
    }

    float y_part[T];
#pragma unroll
    for (int i4 = 0; i4 < T; i4 += 4) {
      const float4 dt4 = *reinterpret_cast<const float4*>(&dt_s[c][i4]);
      const float4 u4 = *reinterpret_cast<const float4*>(&u_s[c][i4]);
      float4 B4[SPT], C4[SPT];
#pragma unroll
      for (int k = 0; k < SPT; ++k) {
        B4[k] = *reinterpret_cast<const float4*>(&B_s[r * SPT + k][i4]);
        C4[k] = *reinterpret_cast<const float4*>(&C_s[r * SPT + k][i4]);
      }
#pragma unroll
      for (int ii = 0; ii < 4; ++ii) {
        const int i = i4 + ii;
        const float dt = get(dt4, ii), uu = get(u4, ii);
        float y = 0.f;
#pragma unroll
        for (int k = 0; k < SPT; ++k) {
          const float bv = get(B4[k], ii);
          float a_bar, w[K + 1];
          Discretization<METHOD>::eval(dt * A[k], dt * A_log2[k], a_bar, w);
          if constexpr (K == 0) {
            h[k] = a_bar * h[k] + (dt * uu) * bv;
          } else {
            const float v0 = uu * bv;
            if (i == 0 && s0 == 0) {  // samples before the start equal the first one
#pragma unroll
              for (int j = 0; j < K; ++j) window[k][j] = v0;
            }
            float sum = w[0] * v0;
#pragma unroll
            for (int j = 0; j < K; ++j) sum += w[j + 1] * window[k][j];
            h[k] = a_bar * h[k] + dt * sum;
#pragma unroll
            for (int j = K - 1; j > 0; --j) window[k][j] = window[k][j - 1];
            window[k][0] = v0;
          }
          if constexpr (PHASE == 1) prod[k] *= a_bar;  // steps past the end (dt = 0) have A_bar = 1
          y += get(C4[k], ii) * h[k];
        }
        y_part[i] = y;
      }
    }
    if constexpr (PHASE != 1) {  // the outputs
      using Reduce = TransposedReduce<T, 1, R>;
      Reduce::run(y_part, lane);
      {
        const int base = Reduce::base(lane);
#pragma unroll
        for (int m = 0; m < Reduce::count(); ++m) y_s[c][base + m] = y_part[m];
      }
      __syncthreads();
      // epilogue: one warp per channel row
      for (int e = tid; e < CB * T; e += kThreads) {
        const int cc = e / T, i = e % T, s = s0 + i;
        if (s < L && c0 + cc < per_group) {
          const int64_t index = row0 + static_cast<int64_t>(cc) * L + position(s, L, reverse);
          float y = y_s[cc][i];
          if (q.D) y += q.D[d0 + cc] * u_s[cc][i];
          if (q.z) {
            const float zz = z_s[cc][i];
            y *= zz / (1.f + __expf(-zz));
          }
          static_cast<In*>(q.out)[index] = from_float<In>(y);
        }
      }
    }
  }
  (void)warp;
  if constexpr (PHASE == 1) {
    if (active) {
#pragma unroll
      for (int k = 0; k < SPT; ++k) {
        const int n = r * SPT + k;
        if (n < N) {
          q.segment_state[segment_index(p, segment, b, d, n)] = h[k];
          q.segment_prod[segment_index(p, segment, b, d, n)] = prod[k];
        }
      }
    }
  } else if (active && q.last_state && (PHASE == 0 || segment == p.segments - 1)) {
#pragma unroll
    for (int k = 0; k < SPT; ++k) {
      const int n = r * SPT + k;
      if (n < N) q.last_state[(static_cast<int64_t>(b) * dim + d) * N + n] = h[k];
    }
  }
}

// Each segment's carry from the segments before it in the walk's order, in place over segment_state: c_first =
// 0 (the forward) or dlast_state (the backward, REVERSE: its walk goes down the segments), c_next = prod_k c_k +
// local_k. One thread per (batch, channel, state); grid y: direction.
template <bool REVERSE>
__global__ void __launch_bounds__(kThreads) combine_kernel(const ScanParams p) {
  const DirectionParams& q = p.dir[blockIdx.y];
  const int64_t entries = static_cast<int64_t>(p.batch) * p.dim * p.state;
  const int64_t e = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (e >= entries) return;
  float carry = (REVERSE && q.dlast_state) ? q.dlast_state[e] : 0.f;
  for (int i = 0; i < p.segments; ++i) {
    const int64_t index = (REVERSE ? p.segments - 1 - i : i) * entries + e;
    const float local = q.segment_state[index];
    q.segment_state[index] = carry;
    if (i + 1 < p.segments) carry = q.segment_prod[index] * carry + local;  // (the last one's local is unset)
  }
}

// ------------------------------------------------------------------------------------------------------------
// Backward. One state per thread (R = NS lanes per channel). PHASE 0: the whole sequence, from dlast_state (grid
// z: direction). Segment-parallel (grid z: direction * segments + segment): scan_backward_local_kernel walks each
// segment's adjoint alone; combine_kernel<true> gives the adjoint flowing into each segment's last step; PHASE 2
// runs the backward of each segment from it. What a segment's first steps give to u and B at the K samples before
// it: dB atomically (as every dB), du into seam_du, where the segment before adds its own du of those samples
// (seam_kernel writes the sums).

template <typename In, int METHOD, int NS, int PHASE>
__global__ void __launch_bounds__(kThreads, kBackwardMinBlocks) scan_backward_kernel(const ScanParams p) {
  constexpr int K = method_taps(METHOD);
  constexpr int T = kChunk;
  constexpr int TS = kTileStride;
  constexpr int R = NS;
  constexpr int CB = kThreads / R;
  constexpr int SUB = 8;  // steps per sub-block: the unit of the reductions
  constexpr int CPW = 32 / R;  // channels per warp
  // channel tiles; u_s and B_s hold the K samples before the chunk first (index K + i is step i)
  __shared__ __align__(16) float u_s[CB][TS];
  __shared__ __align__(16) float dt_s[CB][TS];
  __shared__ __align__(16) float dy_s[CB][TS];
  __shared__ __align__(16) float zf_s[CB][TS];  // dout * silu'(z)
  __shared__ __align__(16) float y_s[CB][TS];   // the recomputed y before D and the gate
  __shared__ __align__(16) float ddt_s[CB][TS];
  __shared__ __align__(16) float du_s[CB][TS];
  __shared__ __align__(16) float B_s[NS][TS];
  __shared__ __align__(16) float C_s[NS][TS];
  // per-warp partial sums of a sub-block's dB, dC over the warp's channels, then the block's sums for the chunk
  __shared__ float wB_s[kWarps][NS][SUB + 1];
  __shared__ float wC_s[kWarps][NS][SUB + 1];
  __shared__ __align__(16) float dB_s[NS][TS];
  __shared__ __align__(16) float dC_s[NS][TS];

  const int segment = PHASE ? blockIdx.z % p.segments : 0;
  const DirectionParams& q = p.dir[PHASE ? blockIdx.z / p.segments : blockIdx.z];
  const int chunk_begin = PHASE ? segment * p.segment_chunks : 0;
  const int chunk_end = PHASE ? min(chunk_begin + p.segment_chunks, p.chunks) : p.chunks;
  const int b = blockIdx.y;
  const int L = p.length, N = p.state, dim = p.dim;
  const int per_group = dim / p.groups;
  const int blocks_per_group = (per_group + CB - 1) / CB;
  const int g = blockIdx.x / blocks_per_group;
  const int c0 = (blockIdx.x % blocks_per_group) * CB;
  const int d0 = g * per_group + c0;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int c = tid / R, n = tid % R;
  const int d = d0 + c;
  const bool active = c0 + c < per_group;
  const bool state_ok = active && n < N;
  const int reverse = q.reverse;
  const bool has_z = q.z != nullptr;

  const float A = state_ok ? q.A[d * N + n] : 0.f;
  const float A_log2 = A * kLog2e;
  const int64_t row0 = (static_cast<int64_t>(b) * dim + d0) * L;
  const int64_t bc0 = (static_cast<int64_t>(b) * p.groups + g) * N * static_cast<int64_t>(L);
  const int64_t state_index = (static_cast<int64_t>(b) * dim + d) * N + n;

  float carry = 0.f;  // A_bar(x_{t+1}) g_{t+1}
  if constexpr (PHASE == 2) {
    if (state_ok) carry = q.segment_state[segment_index(p, segment, b, d, n)];
  } else {
    if (state_ok && q.dlast_state) carry = q.dlast_state[state_index];
  }
  float acc[K + 1];  // acc[j]: sum of dt g W over the steps that read sample t - j (t: the current step)
#pragma unroll
  for (int j = 0; j <= K; ++j) acc[j] = 0.f;
  float dA = 0.f;
  float dD_acc[CB / kWarps > 0 ? CB / kWarps : 1], dbias_acc[CB / kWarps > 0 ? CB / kWarps : 1];
#pragma unroll
  for (int m = 0; m < (CB / kWarps > 0 ? CB / kWarps : 1); ++m) dD_acc[m] = dbias_acc[m] = 0.f;

  // du of the samples that the next segment's first steps give to too: added into seam_du
  const int seam_begin = (PHASE == 2 && K > 0 && segment + 1 < p.segments) ? chunk_end * T - K : L;

  for (int chunk = chunk_end - 1; chunk >= chunk_begin; --chunk) {
    const int s0 = chunk * T;
    // the chunk's loads, then the shared-memory stores; u and B with K samples of halo before the chunk, the
    // earliest clamped to the first sample
    constexpr int E = CB * T / kThreads, EB = NS * T / kThreads;
    static_assert(E * kThreads == CB * T && EB * kThreads == NS * T, "tiles must split evenly over the threads");
    float ru[E], rd[E], rg[E], rz[E], rb[EB], rc[EB], halo_u = 0.f, halo_b = 0.f;
    load_tile<In, T>(ru, q.u, row0, per_group - c0, s0, L, reverse, tid);
    load_tile<In, T>(rd, q.delta, row0, per_group - c0, s0, L, reverse, tid);
    load_tile<In, T>(rg, q.dout, row0, per_group - c0, s0, L, reverse, tid);
    load_tile<In, T>(rz, q.z, row0, per_group - c0, s0, L, reverse, tid);
    load_tile<In, T>(rb, q.B, bc0, N, s0, L, reverse, tid, p.bc_fp32);
    load_tile<In, T>(rc, q.C, bc0, N, s0, L, reverse, tid, p.bc_fp32);
    if constexpr (K > 0) {
      static_assert(CB * K <= kThreads && NS * K <= kThreads, "one halo sample per thread");
      if (tid < CB * K) {  // u halo: channel tid / K, sample s0 - K + tid % K (clamped to 0; s0 - K < L always)
        const int cc = tid / K, s = max(s0 - K + tid % K, 0);
        if (c0 + cc < per_group) halo_u = load<In>(q.u, row0 + static_cast<int64_t>(cc) * L + position(s, L, reverse));
      }
      if (tid < NS * K) {
        const int nn = tid / K, s = max(s0 - K + tid % K, 0);
        if (nn < N) halo_b = load_bc<In>(q.B, bc0 + static_cast<int64_t>(nn) * L + position(s, L, reverse), p.bc_fp32);
      }
    }
    const float h0 = (chunk > 0 && state_ok) ? q.saved[((static_cast<int64_t>(b) * p.chunks + chunk) * dim + d) * N + n]
                                             : 0.f;
    __syncthreads();  // the previous chunk is done with the tiles
#pragma unroll
    for (int it = 0; it < E; ++it) {
      const int e = tid + it * kThreads, cc = e / T, i = e % T;
      float dt = rd[it], dy = rg[it], zf = 0.f;
      if (q.delta_bias && c0 + cc < per_group) dt += q.delta_bias[d0 + cc];
      dt = p.softplus ? softplus(dt) : dt;
      if (has_z) {
        const float zz = rz[it];
        const float sig = 1.f / (1.f + __expf(-zz));
        zf = dy * sig * (1.f + zz * (1.f - sig));
        dy = dy * zz * sig;
      }
      u_s[cc][K + i] = ru[it];
      dt_s[cc][i] = (s0 + i < L) ? dt : 0.f;  // steps past the end leave the state as it is
      dy_s[cc][i] = dy;
      zf_s[cc][i] = zf;
    }
#pragma unroll
    for (int it = 0; it < EB; ++it) {
      const int e = tid + it * kThreads, nn = e / T, i = e % T;
      B_s[nn][K + i] = rb[it];
      C_s[nn][i] = rc[it];
    }
    if constexpr (K > 0) {
      if (tid < CB * K) u_s[tid / K][tid % K] = halo_u;
      if (tid < NS * K) B_s[tid / K][tid % K] = halo_b;
    }

    __syncthreads();

    // recompute the chunk's states (and y when the gate needs it)
    float hs[T];
    {
      float window[K > 0 ? K : 1];
#pragma unroll
      for (int j = 0; j < K; ++j) window[j] = u_s[c][K - 1 - j] * B_s[n][K - 1 - j];
      float h = h0;
#pragma unroll
      for (int sb = 0; sb < T / SUB; ++sb) {
        float y_part[SUB];
#pragma unroll
        for (int i = 0; i < SUB; ++i) {
          const int t = sb * SUB + i;
          const float dt = dt_s[c][t], uu = u_s[c][K + t], bv = B_s[n][K + t];
          float a_bar, w[K + 1];
          Discretization<METHOD>::eval(dt * A, dt * A_log2, a_bar, w);
          if constexpr (K == 0) {
            h = a_bar * h + (dt * uu) * bv;
          } else {
            const float v0 = uu * bv;
            float sum = w[0] * v0;
#pragma unroll
            for (int j = 0; j < K; ++j) sum += w[j + 1] * window[j];
            h = a_bar * h + dt * sum;
#pragma unroll
            for (int j = K - 1; j > 0; --j) window[j] = window[j - 1];
            window[0] = v0;
          }
          hs[t] = h;
          y_part[i] = C_s[n][t] * h;
        }
        if (has_z) {
          using Reduce = TransposedReduce<SUB, 1, R>;
          Reduce::run(y_part, lane);
          if ((n & (R - 1) & ~(SUB - 1)) == 0) {
            const int base = Reduce::base(lane);
#pragma unroll
            for (int m = 0; m < Reduce::count(); ++m) y_s[c][sb * SUB + base + m] = y_part[m];
          }
        }
      }
    }

    // the backward walk
    float window[K + 1];  // window[j] = v_{t-j}
#pragma unroll
    for (int j = 0; j <= K; ++j) window[j] = u_s[c][K + T - 1 - j] * B_s[n][K + T - 1 - j];
#pragma unroll
    for (int sb = T / SUB - 1; sb >= 0; --sb) {
      float ddt_part[SUB], du_part[SUB], dB_part[SUB], dC_part[SUB];
#pragma unroll
      for (int i = SUB - 1; i >= 0; --i) {
        const int t = sb * SUB + i;
        const float dt = dt_s[c][t], dy = dy_s[c][t];
        float a_bar, a_bar_prime, w[K + 1], w_prime[K + 1];
        Discretization<METHOD>::eval_derivatives(dt * A, dt * A_log2, a_bar, a_bar_prime, w, w_prime);
        const float adjoint = C_s[n][t] * dy + carry;
        const float h_prev = t > 0 ? hs[t - 1] : h0;
        dC_part[i] = hs[t] * dy;
        float sum = 0.f, sum_prime = 0.f;
#pragma unroll
        for (int j = 0; j <= K; ++j) {
          sum += w[j] * window[j];
          sum_prime += w_prime[j] * window[j];
        }
        const float grad_x = adjoint * (a_bar_prime * h_prev + dt * sum_prime);
        dA += grad_x * dt;
        ddt_part[i] = grad_x * A + adjoint * sum;
        const float dt_adjoint = dt * adjoint;
        if (s0 == 0 && t < K) {  // samples before the start are the first one
#pragma unroll
          for (int j = 0; j <= K; ++j) acc[j > t ? t : j] += dt_adjoint * w[j];
        } else {
#pragma unroll
          for (int j = 0; j <= K; ++j) acc[j] += dt_adjoint * w[j];
        }
        // acc[0] is complete: the gradients of u_t and B_t through the scan
        du_part[i] = B_s[n][K + t] * acc[0];
        dB_part[i] = u_s[c][K + t] * acc[0];
#pragma unroll
        for (int j = 0; j < K; ++j) acc[j] = acc[j + 1];
        acc[K] = 0.f;
        carry = a_bar * adjoint;
#pragma unroll
        for (int j = 0; j < K; ++j) window[j] = window[j + 1];
        if (t > 0) window[K] = u_s[c][t - 1] * B_s[n][t - 1];  // v_{t-1-K}, at tile index K + t - 1 - K
      }
      {
        using Reduce = TransposedReduce<SUB, 1, R>;
        Reduce::run(ddt_part, lane);
        Reduce::run(du_part, lane);
        if ((n & (R - 1) & ~(SUB - 1)) == 0) {
          const int base = Reduce::base(lane);
#pragma unroll
          for (int m = 0; m < Reduce::count(); ++m) {
            ddt_s[c][sb * SUB + base + m] = ddt_part[m];
            du_s[c][sb * SUB + base + m] = du_part[m];
          }
        }
      }
      {
        using Reduce = TransposedReduce<SUB, R, 32>;
        Reduce::run(dB_part, lane);
        Reduce::run(dC_part, lane);
        if (CPW <= SUB || (lane & ~(R * SUB - 1)) == 0) {
          const int base = Reduce::base(lane);
#pragma unroll
          for (int m = 0; m < Reduce::count(); ++m) {
            wB_s[warp][n][base + m] = dB_part[m];
            wC_s[warp][n][base + m] = dC_part[m];
          }
        }
      }
      __syncthreads();
      for (int e = tid; e < NS * SUB; e += kThreads) {
        const int nn = e / SUB, i = e % SUB;
        float sb_sum = 0.f, sc_sum = 0.f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) {
          sb_sum += wB_s[w][nn][i];
          sc_sum += wC_s[w][nn][i];
        }
        dB_s[nn][sb * SUB + i] = sb_sum;
        dC_s[nn][sb * SUB + i] = sc_sum;
      }
      __syncthreads();
    }

    // epilogue: one warp per channel row
#pragma unroll
    for (int m = 0; m < (CB / kWarps > 0 ? CB / kWarps : 1); ++m) {
      const int cc = warp + m * kWarps, i = lane, s = s0 + i;
      float dD_term = 0.f, dbias_term = 0.f;
      if (cc < CB && s < L && c0 + cc < per_group) {
        const int dd = d0 + cc;
        const int64_t index = row0 + static_cast<int64_t>(cc) * L + position(s, L, reverse);
        const float dy = dy_s[cc][i], uu = u_s[cc][K + i], dt = dt_s[cc][i];
        float du = du_s[cc][i];
        if (q.D) {
          du += q.D[dd] * dy;
          dD_term = dy * uu;
        }
        float ddelta = ddt_s[cc][i];
        if (p.softplus) ddelta *= -expm1f(-dt);  // softplus'(raw) = sigmoid(raw) = 1 - exp(-softplus(raw))
        dbias_term = ddelta;
        if (PHASE == 2 && s >= seam_begin) {
          atomicAdd(q.seam_du + seam_index(p, segment + 1, b, dd, seam_begin + K - 1 - s), du);
        } else {
          static_cast<In*>(q.du)[index] = from_float<In>(du);
        }
        static_cast<In*>(q.ddelta)[index] = from_float<In>(ddelta);
        if (has_z) {
          const float y = y_s[cc][i] + (q.D ? q.D[dd] * uu : 0.f);
          static_cast<In*>(q.dz)[index] = from_float<In>(zf_s[cc][i] * y);
        }
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        dD_term += __shfl_xor_sync(0xffffffffu, dD_term, o);
        dbias_term += __shfl_xor_sync(0xffffffffu, dbias_term, o);
      }
      dD_acc[m] += dD_term;
      dbias_acc[m] += dbias_term;
    }
    for (int e = tid; e < NS * T; e += kThreads) {
      const int nn = e / T, i = e % T, s = s0 + i;
      if (s < L && nn < N) {
        const int64_t index = bc0 + static_cast<int64_t>(nn) * L + position(s, L, reverse);
        atomicAdd(q.dB + index, dB_s[nn][i]);
        atomicAdd(q.dC + index, dC_s[nn][i]);
      }
    }
  }
  if constexpr (PHASE == 2 && K > 0) {
    if (segment > 0) {
      // acc[j]: what the segment's steps give to sample s_begin - 1 - j, at tile index K - 1 - j of the first
      // chunk's halo (still in shared memory). du: summed over the channel's states; dB: over the warp's channels
      const int s_begin = chunk_begin * T;
#pragma unroll
      for (int j = 0; j < K; ++j) {
        float du_pending = B_s[n][K - 1 - j] * acc[j];
        float dB_pending = u_s[c][K - 1 - j] * acc[j];
#pragma unroll
        for (int o = 1; o < R; o <<= 1) du_pending += __shfl_xor_sync(0xffffffffu, du_pending, o);
#pragma unroll
        for (int o = R; o < 32; o <<= 1) dB_pending += __shfl_xor_sync(0xffffffffu, dB_pending, o);
        if (n == 0 && active) {
          atomicAdd(q.seam_du + seam_index(p, segment, b, d, j), du_pending);
        }
        if (lane < R && n < N) {
          atomicAdd(q.dB + bc0 + static_cast<int64_t>(n) * L + position(s_begin - 1 - j, L, reverse), dB_pending);
        }
      }
    }
  }
  if (state_ok) atomicAdd(q.dA + d * N + n, dA);
  if (lane == 0) {
#pragma unroll
    for (int m = 0; m < (CB / kWarps > 0 ? CB / kWarps : 1); ++m) {
      const int cc = warp + m * kWarps;
      if (cc < CB && c0 + cc < per_group) {
        if (q.dD) atomicAdd(q.dD + d0 + cc, dD_acc[m]);
        if (q.ddelta_bias) atomicAdd(q.ddelta_bias + d0 + cc, dbias_acc[m]);
      }
    }
  }
}

// The backward's local pass: each segment but the first walks its adjoint alone, from zero (g_t = C_t dy_t +
// A_bar_{t+1} g_{t+1}; no states needed), and keeps A_bar g of its first step and the product of its A_bar in the
// segment buffers. Layout and grid as scan_backward_kernel's PHASE 2.
template <typename In, int METHOD, int NS>
__global__ void __launch_bounds__(kThreads) scan_backward_local_kernel(const ScanParams p) {
  constexpr int T = kChunk;
  constexpr int TS = kTileStride;
  constexpr int R = NS;
  constexpr int CB = kThreads / R;
  __shared__ __align__(16) float dt_s[CB][TS];
  __shared__ __align__(16) float dy_s[CB][TS];
  __shared__ __align__(16) float C_s[NS][TS];

  const int segment = blockIdx.z % p.segments;
  if (segment == 0) return;  // nothing flows out of the first segment
  const DirectionParams& q = p.dir[blockIdx.z / p.segments];
  const int chunk_begin = segment * p.segment_chunks;
  const int chunk_end = min(chunk_begin + p.segment_chunks, p.chunks);
  const int b = blockIdx.y;
  const int L = p.length, N = p.state, dim = p.dim;
  const int per_group = dim / p.groups;
  const int blocks_per_group = (per_group + CB - 1) / CB;
  const int g = blockIdx.x / blocks_per_group;
  const int c0 = (blockIdx.x % blocks_per_group) * CB;
  const int d0 = g * per_group + c0;
  const int tid = threadIdx.x;
  const int c = tid / R, n = tid % R;
  const int d = d0 + c;
  const bool state_ok = c0 + c < per_group && n < N;
  const int reverse = q.reverse;
  const bool has_z = q.z != nullptr;
  const float A = state_ok ? q.A[d * N + n] : 0.f;
  const float A_log2 = A * kLog2e;
  const int64_t row0 = (static_cast<int64_t>(b) * dim + d0) * L;
  const int64_t bc0 = (static_cast<int64_t>(b) * p.groups + g) * N * static_cast<int64_t>(L);

  float adjoint = 0.f, a_next = 1.f, prod = 1.f;
  for (int chunk = chunk_end - 1; chunk >= chunk_begin; --chunk) {
    const int s0 = chunk * T;
    constexpr int E = CB * T / kThreads, EB = NS * T / kThreads;
    static_assert(E * kThreads == CB * T && EB * kThreads == NS * T, "tiles must split evenly over the threads");
    float rd[E], rg[E], rz[E], rc[EB];
    load_tile<In, T>(rd, q.delta, row0, per_group - c0, s0, L, reverse, tid);
    load_tile<In, T>(rg, q.dout, row0, per_group - c0, s0, L, reverse, tid);
    load_tile<In, T>(rz, q.z, row0, per_group - c0, s0, L, reverse, tid);
    load_tile<In, T>(rc, q.C, bc0, N, s0, L, reverse, tid, p.bc_fp32);
    __syncthreads();  // the previous chunk is done with the tiles
#pragma unroll
    for (int it = 0; it < E; ++it) {
      const int e = tid + it * kThreads, cc = e / T, i = e % T;
      float dt = rd[it], dy = rg[it];
      if (q.delta_bias && c0 + cc < per_group) dt += q.delta_bias[d0 + cc];
      dt = p.softplus ? softplus(dt) : dt;
      if (has_z) {
        const float zz = rz[it];
        const float sig = 1.f / (1.f + __expf(-zz));
        dy = dy * zz * sig;
      }
      dt_s[cc][i] = (s0 + i < L) ? dt : 0.f;  // steps past the end: A_bar = 1, and dy = 0
      dy_s[cc][i] = dy;
    }
#pragma unroll
    for (int it = 0; it < EB; ++it) {
      const int e = tid + it * kThreads, nn = e / T, i = e % T;
      C_s[nn][i] = rc[it];
    }
    __syncthreads();
#pragma unroll
    for (int t = T - 1; t >= 0; --t) {
      const float dt = dt_s[c][t];
      const float a_bar = Discretization<METHOD>::transition(dt * A, dt * A_log2);
      adjoint = C_s[n][t] * dy_s[c][t] + a_next * adjoint;
      prod *= a_bar;
      a_next = a_bar;
    }
  }
  if (state_ok) {
    q.segment_state[segment_index(p, segment, b, d, n)] = a_next * adjoint;
    q.segment_prod[segment_index(p, segment, b, d, n)] = prod;
  }
}

// du at the K samples before each segment start but the first: the sums in seam_du, rounded once. One thread per
// (segment, batch, channel, j); grid y: direction.
template <typename In>
__global__ void __launch_bounds__(kThreads) seam_kernel(const ScanParams p, int K) {
  const DirectionParams& q = p.dir[blockIdx.y];
  const int64_t per_segment = static_cast<int64_t>(p.batch) * p.dim * K;
  const int64_t e = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (e >= per_segment * (p.segments - 1)) return;
  const int segment = static_cast<int>(e / per_segment) + 1;
  const int64_t row = (e % per_segment) / K;  // b * dim + d
  const int j = static_cast<int>(e % K);
  const int s = segment * p.segment_chunks * kChunk - 1 - j;
  const float du = q.seam_du[(static_cast<int64_t>(segment) * p.batch * p.dim + row) * kMaxTaps + j];
  static_cast<In*>(q.du)[row * p.length + position(s, p.length, q.reverse)] = from_float<In>(du);
}

// ------------------------------------------------------------------------------------------------------------
// Launchers (CUDA compilers only: the kernels above also build for tests/.../cuda_host/, a CPU emulation).
#ifdef __CUDACC__

inline int padded_state(int state) { return state <= 8 ? 8 : state <= 16 ? 16 : 32; }

#ifndef MMSSM_FORWARD_STATES_PER_THREAD
#define MMSSM_FORWARD_STATES_PER_THREAD 2
#endif
// measured on an H100 at (128, 384, 197, 16): 2 states per thread and 3 blocks per SM beat 4 states and 2 blocks
// by 1.75x in the forward (the kernels are latency-bound; occupancy wins over fewer reduction stages)
template <int NS> constexpr int forward_states_per_thread() { return NS == 8 ? 2 : MMSSM_FORWARD_STATES_PER_THREAD; }

inline unsigned combine_blocks(const ScanParams& p) {
  return static_cast<unsigned>((static_cast<int64_t>(p.batch) * p.dim * p.state + kThreads - 1) / kThreads);
}

template <typename In, int METHOD, int NS>
void forward_for(const ScanParams& p, cudaStream_t stream) {
  constexpr int SPT = forward_states_per_thread<NS>();
  constexpr int CB = kThreads / (NS / SPT);
  const int per_group = p.dim / p.groups;
  const int blocks = p.groups * ((per_group + CB - 1) / CB);
  if (p.segments == 1) {
    scan_forward_kernel<In, METHOD, NS, SPT, 0><<<dim3(blocks, p.batch, p.ndir), kThreads, 0, stream>>>(p);
    return;
  }
  const dim3 grid(blocks, p.batch, p.ndir * p.segments);
  scan_forward_kernel<In, METHOD, NS, SPT, 1><<<grid, kThreads, 0, stream>>>(p);
  combine_kernel<false><<<dim3(combine_blocks(p), p.ndir), kThreads, 0, stream>>>(p);
  scan_forward_kernel<In, METHOD, NS, SPT, 2><<<grid, kThreads, 0, stream>>>(p);
}

template <typename In, int METHOD, int NS>
void backward_for(const ScanParams& p, cudaStream_t stream) {
  constexpr int CB = kThreads / NS;
  constexpr int K = method_taps(METHOD);
  const int per_group = p.dim / p.groups;
  const int blocks = p.groups * ((per_group + CB - 1) / CB);
  if (p.segments == 1) {
    scan_backward_kernel<In, METHOD, NS, 0><<<dim3(blocks, p.batch, p.ndir), kThreads, 0, stream>>>(p);
    return;
  }
  const dim3 grid(blocks, p.batch, p.ndir * p.segments);
  scan_backward_local_kernel<In, METHOD, NS><<<grid, kThreads, 0, stream>>>(p);
  combine_kernel<true><<<dim3(combine_blocks(p), p.ndir), kThreads, 0, stream>>>(p);
  scan_backward_kernel<In, METHOD, NS, 2><<<grid, kThreads, 0, stream>>>(p);
  if constexpr (K > 0) {
    const int64_t seams = static_cast<int64_t>(p.segments - 1) * p.batch * p.dim * K;
    seam_kernel<In><<<dim3(static_cast<unsigned>((seams + kThreads - 1) / kThreads), p.ndir), kThreads, 0, stream>>>(
        p, K);
  }
}

// Calls f(std::integral_constant<int, METHOD>) for the method index, then g(std::integral_constant<int, NS>)
// for the padded state count: the one dispatch of the forward and the backward launches.
template <typename F>
void dispatch_method(int method, F&& f) {
  switch (method) {
    case kZoh: f(std::integral_constant<int, kZoh>{}); break;
    case kFoh: f(std::integral_constant<int, kFoh>{}); break;
    case kBilinear: f(std::integral_constant<int, kBilinear>{}); break;
    case kPoly: f(std::integral_constant<int, kPoly>{}); break;
    case kHighorder: f(std::integral_constant<int, kHighorder>{}); break;
    default: f(std::integral_constant<int, kRk4>{}); break;
  }
}

template <typename F>
void dispatch_state(int state, F&& f) {
  switch (padded_state(state)) {
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 16: f(std::integral_constant<int, 16>{}); break;
    default: f(std::integral_constant<int, 32>{}); break;
  }
}

template <InputType IT>
void launch_forward(const ScanParams& p, int method, cudaStream_t stream) {
  using In = typename InputTraits<IT>::type;
  dispatch_method(method, [&](auto m) {
    dispatch_state(p.state, [&](auto ns) { forward_for<In, decltype(m)::value, decltype(ns)::value>(p, stream); });
  });
}

template <InputType IT>
void launch_backward(const ScanParams& p, int method, cudaStream_t stream) {
  using In = typename InputTraits<IT>::type;
  dispatch_method(method, [&](auto m) {
    dispatch_state(p.state, [&](auto ns) { backward_for<In, decltype(m)::value, decltype(ns)::value>(p, stream); });
  });
}
#endif  // __CUDACC__

}  // namespace mmssm_scan
