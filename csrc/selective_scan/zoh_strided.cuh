// The zoh scan over any strides: the layouts that the Triton path (and its fused Vim mixer) works in, whole
// sequence, N <= 16, forward and backward. The math is that of the Triton kernels' PHASE 0 for zoh
// (triton_scan.py), which are the reference they are tested against.
//
// Layout of the work. A block is one warp: 32 channels of one batch element and one direction (grid: dim / 32,
// batch, directions). A thread owns one channel and all of its states in registers, so the sums over the states
// (y, and the gradients of delta and u) are a thread's own; B and C of 32 steps are staged in shared memory for
// the warp. The backward's sums over the channels (dB, dC: 32 values a step) go through shared memory,
// transposed. Backward, per chunk of 32 steps, last first: the states are recomputed from the forward's
// checkpoint, every 4th kept in shared memory; per sub-chunk of 4 steps, last first, its states are recomputed
// into registers and the adjoint walks it backwards. (The Triton backward's (channels, states) tile spends a
// third of its instructions moving per-channel values between layouts, docs/benchmarks.md; here there is one
// layout.)
#pragma once

#include "selective_scan_kernels.cuh"

namespace mmssm_scan {

constexpr float kLn2 = 0.6931471805599453f;

// log1p(exp(x)) in about a dozen instructions (log1pf is not a fast-math intrinsic, and this runs twice a step):
// below e = 1/32 a 5-term series, above it log(1 + e) with the rounding of 1 + e corrected (as the Triton kernels)
__device__ __forceinline__ float softplus_fast(float x) {
  const float e = __expf(fminf(x, 20.f));
  const float w = 1.f + e;
  const float series = e * (1.f - e * (0.5f - e * (1.f / 3.f - e * (0.25f - e * 0.2f))));
  const float corrected = __logf(w) * __fdividef(e, w - 1.f);
  return x > 20.f ? x : (e < 0.03125f ? series : corrected);
}

// B and C of steps s0 .. s0 + 31 into bc_s (row t: B | C of step s0 + t; zero past the end and past N): lane =
// step.
template <typename In, int NS, int BCS>
__device__ __forceinline__ void stage_bc(float (&bc_s)[kChunk][BCS], const StridedScanParams& p, const void* B,
                                         const void* C, int64_t bc_row, int s0, int reverse, int lane) {
  const int s = s0 + lane, L = p.length, N = p.state;
  const int64_t at = bc_row + static_cast<int64_t>(position(s < L ? s : 0, L, reverse)) * p.bc_sl;
  float4* row = reinterpret_cast<float4*>(&bc_s[lane][0]);
#pragma unroll
  for (int k = 0; k < NS / 4; ++k) {
    float bv[4], cv[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int n = 4 * k + j;
      const bool ok = s < L && n < N;
      bv[j] = ok ? load<In>(B, at + n * p.bc_sn) : 0.f;
      cv[j] = ok ? load<In>(C, at + n * p.bc_sn) : 0.f;
    }
    row[k] = make_float4(bv[0], bv[1], bv[2], bv[3]);
    row[NS / 4 + k] = make_float4(cv[0], cv[1], cv[2], cv[3]);
  }
}

// Forward: outputs, the last state, and (ckpt not null) the state after every 32nd step but the last. A_LOG: A
// holds log(-A) (a model's A_log parameters).
template <typename In, bool HAS_Z>
__global__ void __launch_bounds__(kStridedChannels) zoh_forward_strided_kernel(const StridedScanParams p) {
  constexpr int NS = kStridedMaxState, T = kChunk, W = kStridedChannels, BCS = 2 * NS + 4;
  constexpr int G = 8;  // steps whose samples are loaded together
  __shared__ __align__(16) float bc_s[T][BCS];
  const int lane = threadIdx.x, block = blockIdx.x, b = blockIdx.y;
  const StridedScanParams::Direction& q = p.dir[blockIdx.z];
  const int d = block * W + lane;
  const int L = p.length, N = p.state, reverse = q.reverse;
  // running pointers to the current step of u, delta (xs apart), z (zs) and out (ys)
  const int64_t last = reverse ? L - 1 : 0, xs = reverse ? -p.x_sl : p.x_sl, zs = reverse ? -p.z_sl : p.z_sl;
  const int64_t ys = reverse ? -p.y_sl : p.y_sl;
  const int64_t x_start = b * p.x_sb + d * p.x_sd + last * p.x_sl;
  const In* up = static_cast<const In*>(q.u) + x_start;
  const In* dp = static_cast<const In*>(q.delta) + x_start;
  const In* zp = HAS_Z ? static_cast<const In*>(q.z) + b * p.z_sb + d * p.z_sd + last * p.z_sl : up;
  In* op = static_cast<In*>(q.out) + b * p.y_sb + d * p.y_sd + last * p.y_sl;
  const int64_t bc_row = b * p.bc_sb + (block * W / p.per_group) * p.bc_sg;
  const int64_t state_row = (static_cast<int64_t>(b) * p.dim + d) * N;
  float A2[NS], h[NS];
#pragma unroll
  for (int n = 0; n < NS; ++n) {
    const float a = n < N ? q.A[d * p.a_sd + n * p.a_sn] : 0.f;
    A2[n] = (p.a_log ? (n < N ? -__expf(a) : 0.f) : a) * kLog2e;
    h[n] = 0.f;
  }
  const float D = q.D[d], bias = q.delta_bias[d];
  for (int s0 = 0; s0 < L; s0 += T) {
    __syncwarp();  // the previous chunk is done with bc_s
    stage_bc<In, NS, BCS>(bc_s, p, q.B, q.C, bc_row, s0, reverse, lane);
    __syncwarp();
    for (int t0 = 0; t0 < T; t0 += G) {
      // G steps' per-channel samples, their loads in flight together
      float ur[G], dr[G], zr[G];
#pragma unroll
      for (int i = 0; i < G; ++i) {
        const bool in = s0 + t0 + i < L;
        ur[i] = in ? to_float(__ldg(up)) : 0.f;
        dr[i] = in ? to_float(__ldg(dp)) : 0.f;
        zr[i] = (HAS_Z && in) ? to_float(__ldg(zp)) : 0.f;
        up += xs, dp += xs, zp += zs;
      }
#pragma unroll
      for (int i = 0; i < G; ++i) {
        const int t = t0 + i, s = s0 + t;
        if (s < L) {
          float dt = dr[i] + bias;
          if (p.softplus) dt = softplus_fast(dt);
          const float dtu = dt * ur[i];
          const float4* Bv = reinterpret_cast<const float4*>(&bc_s[t][0]);
          const float4* Cv = reinterpret_cast<const float4*>(&bc_s[t][NS]);
          float y = 0.f;
#pragma unroll
          for (int k = 0; k < NS / 4; ++k) {
            const float4 bb = Bv[k], cc = Cv[k];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              const int n = 4 * k + j;
              h[n] = exp2f(A2[n] * dt) * h[n] + dtu * get(bb, j);
              y += h[n] * get(cc, j);
            }
          }
          y += D * ur[i];
          if constexpr (HAS_Z) y *= zr[i] / (1.f + __expf(-zr[i]));
          *op = from_float<In>(y);
          op += ys;
        }
      }
    }
    const int index = s0 / T;
    if (q.ckpt && index < p.n_ckpt) {
#pragma unroll
      for (int n = 0; n < NS; ++n) {
        if (n < N) q.ckpt[((static_cast<int64_t>(b) * p.dim + d) * p.n_ckpt + index) * N + n] = h[n];
      }
    }
  }
#pragma unroll
  for (int n = 0; n < NS; ++n) {
    if (n < N) q.last[state_row + n] = h[n];
  }
}

template <typename In, bool HAS_Z>
__global__ void __launch_bounds__(kStridedChannels) zoh_backward_strided_kernel(const StridedScanParams p) {
  constexpr int NS = kStridedMaxState, T = kChunk, SUB = 4, W = kStridedChannels;
  constexpr int BCS = 2 * NS + 4;  // row stride of bc_s, in floats: float4 rows
  // dB and dC are written every half chunk, so that the shared memory stays under 28 KB: 8 warps an SM (as the
  // registers allow), not 7
  constexpr int HALF = T / 2;
  static_assert(2 * NS == W && 2 * HALF == W && HALF % SUB == 0, "one sum of dC or dB per lane");
  __shared__ __align__(16) float4 hist_s[T / SUB][NS / 4][W];  // the state before every SUB-th step of the chunk
  __shared__ __align__(16) float bc_s[T][BCS];                 // B | C of the chunk's steps
  __shared__ float red_s[HALF][2 * NS + 1];  // dC | dB of a half chunk's steps, summed over the warp
  __shared__ __align__(16) float tr_s[W][2 * NS + 4];          // a step's dC | dB terms of every lane, transposed

  const int lane = threadIdx.x, block = blockIdx.x, b = blockIdx.y;
  const StridedScanParams::Direction& q = p.dir[blockIdx.z];
  const int d = block * W + lane;
  const int L = p.length, N = p.state, reverse = q.reverse;
  const int group = block * W / p.per_group;
  // element offsets of scan step s in u, delta, du, ddelta, dz (x), z and dout (y); consecutive steps xs, zs, ys
  // apart
  const int64_t x_row = b * p.x_sb + d * p.x_sd, z_row = b * p.z_sb + d * p.z_sd, y_row = b * p.y_sb + d * p.y_sd;
  const int64_t xs = reverse ? -p.x_sl : p.x_sl, zs = reverse ? -p.z_sl : p.z_sl, ys = reverse ? -p.y_sl : p.y_sl;
  auto offset = [&](int64_t row, int64_t stride, int s) { return row + position(s, L, reverse) * stride; };
  const In* u_in = static_cast<const In*>(q.u);
  const In* delta_in = static_cast<const In*>(q.delta);
  const int64_t bc_row = b * p.bc_sb + group * p.bc_sg;
  const int64_t state_row = (static_cast<int64_t>(b) * p.dim + d) * N;
  const int64_t bc_out = (static_cast<int64_t>(b) * (p.dim / W) + block) * N * L;

  float A2[NS], carry[NS], dA[NS];  // carry: A_bar(x_{t+1}) g_{t+1}
#pragma unroll
  for (int n = 0; n < NS; ++n) {
    A2[n] = n < N ? q.A[d * p.a_sd + n * p.a_sn] * kLog2e : 0.f;
    carry[n] = (n < N && q.dlast) ? q.dlast[state_row + n] : 0.f;
    dA[n] = 0.f;
  }
  const float D = q.D[d], bias = q.delta_bias[d];
  float dD_acc = 0.f, dbias_acc = 0.f;

  for (int chunk = (L - 1) / T; chunk >= 0; --chunk) {
    const int s0 = chunk * T;
    __syncwarp();  // the previous chunk is done with bc_s and red_s
    stage_bc<In, NS, BCS>(bc_s, p, q.B, q.C, bc_row, s0, reverse, lane);
    __syncwarp();

    // 1. the chunk's states from its start, the one before every SUB-th step kept
    {
      float h[NS];
#pragma unroll
      for (int n = 0; n < NS; ++n) {
        h[n] = (chunk > 0 && n < N) ? q.ckpt[(static_cast<int64_t>(b) * p.dim + d) * p.n_ckpt * N +
                                             static_cast<int64_t>(chunk - 1) * N + n]
                                    : 0.f;
      }
      int64_t xo = offset(x_row, p.x_sl, s0);
      for (int sb = 0; sb < T / SUB && s0 + sb * SUB < L; ++sb) {
#pragma unroll
        for (int k = 0; k < NS / 4; ++k) hist_s[sb][k][lane] = make_float4(h[4 * k], h[4 * k + 1], h[4 * k + 2], h[4 * k + 3]);
#pragma unroll
        for (int i = 0; i < SUB; ++i, xo += xs) {
          const int t = sb * SUB + i, s = s0 + t;
          if (s < L) {
            const float u = to_float(__ldg(u_in + xo));
            float dt = to_float(__ldg(delta_in + xo)) + bias;
            if (p.softplus) dt = softplus_fast(dt);
            const float dtu = dt * u;
            const float4* Bv = reinterpret_cast<const float4*>(&bc_s[t][0]);
#pragma unroll
            for (int k = 0; k < NS / 4; ++k) {
              const float4 bb = Bv[k];
#pragma unroll
              for (int j = 0; j < 4; ++j) h[4 * k + j] = exp2f(A2[4 * k + j] * dt) * h[4 * k + j] + dtu * get(bb, j);
            }
          }
        }
      }
    }

    // 2. per sub-chunk, last first: its states into registers, then the adjoint's walk
    for (int sb = T / SUB - 1; sb >= 0; --sb) {
      if (s0 + sb * SUB >= L) continue;
      float H[SUB][NS], us[SUB], dts[SUB], sig_dt[SUB];
      {
        float h[NS];
#pragma unroll
        for (int k = 0; k < NS / 4; ++k) {
          const float4 v = hist_s[sb][k][lane];
          h[4 * k] = v.x, h[4 * k + 1] = v.y, h[4 * k + 2] = v.z, h[4 * k + 3] = v.w;
        }
        int64_t xo = offset(x_row, p.x_sl, s0 + sb * SUB);
#pragma unroll
        for (int i = 0; i < SUB; ++i, xo += xs) {
          const int t = sb * SUB + i, s = s0 + t;
          float u = 0.f, dt = 0.f, sg = 0.f;
          if (s < L) {
            u = to_float(__ldg(u_in + xo));
            const float raw = to_float(__ldg(delta_in + xo)) + bias;
            dt = raw;
            sg = 1.f;
            if (p.softplus) {
              dt = softplus_fast(raw);
              sg = 1.f / (1.f + __expf(-raw));  // softplus'(raw)
            }
          }
          us[i] = u, dts[i] = dt, sig_dt[i] = sg;
          const float dtu = dt * u;
          const float4* Bv = reinterpret_cast<const float4*>(&bc_s[t][0]);
#pragma unroll
          for (int k = 0; k < NS / 4; ++k) {
            const float4 bb = Bv[k];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              h[4 * k + j] = exp2f(A2[4 * k + j] * dt) * h[4 * k + j] + dtu * get(bb, j);
              H[i][4 * k + j] = h[4 * k + j];
            }
          }
        }
      }
      const int s_top = s0 + sb * SUB + SUB - 1;
      int64_t xo = offset(x_row, p.x_sl, s_top), zo = offset(z_row, p.z_sl, s_top), yo = offset(y_row, p.y_sl, s_top);
#pragma unroll
      for (int i = SUB - 1; i >= 0; --i, xo -= xs, zo -= zs, yo -= ys) {
        const int t = sb * SUB + i, s = s0 + t;
        if (s >= L) continue;
        const float dout = to_float(__ldg(static_cast<const In*>(q.dout) + yo));
        const float u = us[i], dt = dts[i];
        const float4* Bv = reinterpret_cast<const float4*>(&bc_s[t][0]);
        const float4* Cv = reinterpret_cast<const float4*>(&bc_s[t][NS]);
        float dy = dout;
        if constexpr (HAS_Z) {
          const float zz = to_float(__ldg(static_cast<const In*>(q.z) + zo));
          float y = D * u;
#pragma unroll
          for (int k = 0; k < NS / 4; ++k) {
            const float4 c = Cv[k];
#pragma unroll
            for (int j = 0; j < 4; ++j) y += H[i][4 * k + j] * get(c, j);
          }
          const float sig = 1.f / (1.f + __expf(-zz));
          dy = dout * zz * sig;
          static_cast<In*>(q.dz)[xo] = from_float<In>(dout * y * sig * (1.f + zz * (1.f - sig)));
        }
        dD_acc += dy * u;
        float h_prev[NS];
        if (i > 0) {
#pragma unroll
          for (int n = 0; n < NS; ++n) h_prev[n] = H[i > 0 ? i - 1 : 0][n];
        } else {
#pragma unroll
          for (int k = 0; k < NS / 4; ++k) {
            const float4 v = hist_s[sb][k][lane];
            h_prev[4 * k] = v.x, h_prev[4 * k + 1] = v.y, h_prev[4 * k + 2] = v.z, h_prev[4 * k + 3] = v.w;
          }
        }
        float4* terms = reinterpret_cast<float4*>(&tr_s[lane][0]);
#pragma unroll
        for (int k = 0; k < NS / 4; ++k) {  // dC's terms (stored first: fewer values live at once)
          terms[k] = make_float4(H[i][4 * k] * dy, H[i][4 * k + 1] * dy, H[i][4 * k + 2] * dy, H[i][4 * k + 3] * dy);
        }
        const float dtu = dt * u;
        float ddt = 0.f, qb = 0.f, v[NS];
#pragma unroll
        for (int k = 0; k < NS / 4; ++k) {
          const float4 bb = Bv[k], cc = Cv[k];
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const int n = 4 * k + j;
            const float g = get(cc, j) * dy + carry[n];
            carry[n] = exp2f(A2[n] * dt) * g;
            const float grad_x = carry[n] * h_prev[n];  // g A_bar h_{t-1}: the gradient of x = dt A
            dA[n] += grad_x * dt;
            ddt += grad_x * A2[n];
            qb += g * get(bb, j);
            v[n] = g * dtu;
          }
        }
        ddt = (ddt * kLn2 + u * qb) * sig_dt[i];  // sum_n grad_x A = ln 2 sum_n grad_x A2
        dbias_acc += ddt;
        static_cast<In*>(q.du)[xo] = from_float<In>(dy * D + dt * qb);
        static_cast<In*>(q.ddelta)[xo] = from_float<In>(ddt);
#pragma unroll
        for (int k = 0; k < NS / 4; ++k) terms[NS / 4 + k] = make_float4(v[4 * k], v[4 * k + 1], v[4 * k + 2], v[4 * k + 3]);
        __syncwarp();
        float sum = 0.f;  // lane j: term j summed over the lanes
#pragma unroll
        for (int l = 0; l < W; ++l) sum += tr_s[l][lane];
        red_s[t % HALF][lane] = sum;
        __syncwarp();  // (tr_s is rewritten by the next step)
      }
      if ((sb * SUB) % HALF == 0) {  // a half chunk's dC (lanes 0-15) and dB (lanes 16-31): lane % HALF = step
        const int r = lane % HALF, s = s0 + sb * SUB + r, first = lane < HALF ? 0 : NS;
        if (s < L) {
          float* out = lane < HALF ? q.dC : q.dB;
          const int64_t at = bc_out + position(s, L, reverse);
          for (int n = 0; n < N; ++n) out[at + static_cast<int64_t>(n) * L] = red_s[r][first + n];
        }
        __syncwarp();  // (red_s is rewritten by the next half)
      }
    }
  }
#pragma unroll
  for (int n = 0; n < NS; ++n) {
    if (n < N) atomicAdd(q.dA + d * N + n, dA[n]);
  }
  atomicAdd(q.dD + d, dD_acc);
  atomicAdd(q.ddelta_bias + d, dbias_acc);
}

#ifdef __CUDACC__
template <InputType IT>
void launch_zoh_strided(const StridedScanParams& params, bool forward, bool has_z, cudaStream_t stream) {
  using In = typename InputTraits<IT>::type;
  const dim3 grid(params.dim / kStridedChannels, params.batch, params.ndir);
  auto kernel = forward ? (has_z ? zoh_forward_strided_kernel<In, true> : zoh_forward_strided_kernel<In, false>)
                        : (has_z ? zoh_backward_strided_kernel<In, true> : zoh_backward_strided_kernel<In, false>);
  if (!forward) {  // the SM's shared memory all to the backward's blocks (28 KB each): 8 warps an SM
    static bool carveout_set[64][2] = {};  // per device and kernel (an attribute of the current device's kernel)
    int device = 0;
    cudaGetDevice(&device);
    if (device >= 64 || !carveout_set[device][has_z]) {
      cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
      if (device < 64) carveout_set[device][has_z] = true;
    }
  }
  kernel<<<grid, kStridedChannels, 0, stream>>>(params);
}
#endif  // __CUDACC__

}  // namespace mmssm_scan
