// Host-side declarations shared by the binding (selective_scan.cpp, compiled by the C++ compiler) and the kernels
// (selective_scan_kernels.cuh, instantiated once per dtype and direction in the .cu files).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mmssm_scan {

// Order of mmssm.ops.selective_scan.METHODS.
enum Method : int { kZoh = 0, kFoh = 1, kBilinear = 2, kPoly = 3, kHighorder = 4, kRk4 = 5 };
constexpr int kNumMethods = 6;

// Time steps per chunk: the forward saves the state at every chunk start, the backward recomputes a chunk's
// states from it. The kernels rely on kChunk == 32 (one warp per channel row in the epilogues).
constexpr int kChunk = 32;
constexpr int kMaxState = 32;
constexpr int kMaxTaps = 3;  // earlier samples a method reads (highorder, rk4)

// One direction of a (possibly bidirectional) scan. A null pointer means the optional tensor is absent.
struct DirectionParams {
  // inputs: u, delta, z (batch, dim, L) of the input dtype; B, C (batch, groups, N, L) of the input dtype or
  // float32 (bc_fp32); A (dim, N), D, delta_bias (dim,) float32
  const void* u = nullptr;
  const void* delta = nullptr;
  const void* z = nullptr;
  const void* B = nullptr;
  const void* C = nullptr;
  const float* A = nullptr;
  const float* D = nullptr;
  const float* delta_bias = nullptr;
  // forward outputs: out (batch, dim, L) input dtype; last_state (batch, dim, N) and saved
  // (batch, chunks, dim, N) float32, saved only when ScanParams::save
  void* out = nullptr;
  float* last_state = nullptr;
  float* saved = nullptr;
  // backward: dout (batch, dim, L) input dtype, dlast_state (batch, dim, N) float32 or null; du, ddelta, dz in
  // the input dtype; dA, dB, dC, dD, ddelta_bias float32 buffers that the kernel adds to (zeroed by the caller)
  const void* dout = nullptr;
  const float* dlast_state = nullptr;
  void* du = nullptr;
  void* ddelta = nullptr;
  void* dz = nullptr;
  float* dA = nullptr;
  float* dB = nullptr;
  float* dC = nullptr;
  float* dD = nullptr;
  float* ddelta_bias = nullptr;
  // segment-parallel passes (ScanParams::segments > 1), float32 (segments, batch, dim, N): segment_state holds what
  // the local pass leaves (the forward's end state from zero, the backward's A_bar g out of the first step), then
  // what the combine pass makes of it (the forward's start state, the backward's adjoint into the last step);
  // segment_prod the product of the segment's A_bar. seam_du (segments, batch, dim, kMaxTaps), zeroed: du at the
  // kMaxTaps samples before each segment start, added by the two segments that give to it
  float* segment_state = nullptr;
  float* segment_prod = nullptr;
  float* seam_du = nullptr;
  int reverse = 0;
};

struct ScanParams {
  int batch = 0, dim = 0, length = 0, state = 0, groups = 1, chunks = 0;
  int softplus = 0, save = 0, bc_fp32 = 0, ndir = 1;
  // the sequence in segments of segment_chunks chunks run in parallel (1: the whole sequence per block)
  int segments = 1, segment_chunks = 0;
  DirectionParams dir[2];
};

// The zoh scan over any strides (zoh_strided.cuh): the layouts of the Triton path (channels-last u, delta, z;
// B and C as column slices of x_proj's output), whole sequence, N <= 16, one thread a channel with every state in
// its registers. Strides in elements; u, delta (and du, ddelta, dz) share one set (x_*); y_* are those of out
// (forward) or dout (backward).
struct StridedScanParams {
  int batch = 0, dim = 0, length = 0, state = 0, per_group = 0, n_ckpt = 0, softplus = 0, ndir = 1, a_log = 0;
  int64_t x_sb = 0, x_sd = 0, x_sl = 0, z_sb = 0, z_sd = 0, z_sl = 0, y_sb = 0, y_sd = 0, y_sl = 0;
  int64_t bc_sb = 0, bc_sg = 0, bc_sn = 0, bc_sl = 0, a_sd = 0, a_sn = 0;
  struct Direction {
    // inputs: u, delta, z, B, C of the input dtype; A (dim, N) float32 (log(-A) with a_log), D, delta_bias (dim,)
    // float32; ckpt (batch, dim, n_ckpt, N) float32: the state after every 32nd step but the last (written by
    // the forward when not null, read by the backward); dlast (batch, dim, N) float32 or null
    const void *u = nullptr, *delta = nullptr, *z = nullptr, *B = nullptr, *C = nullptr;
    const float *A = nullptr, *D = nullptr, *delta_bias = nullptr, *dlast = nullptr;
    float* ckpt = nullptr;
    // forward: out of the input dtype, last (batch, dim, N) float32
    void* out = nullptr;
    float* last = nullptr;
    // backward: dout, du, ddelta, dz of the input dtype; dB, dC (batch, dim / 32, N, L) float32 per 32-channel
    // block (summed over a group's blocks by the caller); dA (dim, N), dD, ddelta_bias (dim,) float32, added to
    const void* dout = nullptr;
    void *du = nullptr, *ddelta = nullptr, *dz = nullptr;
    float *dB = nullptr, *dC = nullptr, *dA = nullptr, *dD = nullptr, *ddelta_bias = nullptr;
    int reverse = 0;
  } dir[2];
};
constexpr int kStridedMaxState = 16;
constexpr int kStridedChannels = 32;  // channels per block (one warp)

// Defined in selective_scan_kernels.cuh, instantiated for float, __half and __nv_bfloat16 (as InputTag below)
// in selective_scan_{fwd,bwd}_{fp32,fp16,bf16}.cu.
enum class InputType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

template <InputType IT>
void launch_forward(const ScanParams& params, int method, cudaStream_t stream);
template <InputType IT>
void launch_backward(const ScanParams& params, int method, cudaStream_t stream);
template <InputType IT>
void launch_zoh_strided(const StridedScanParams& params, bool forward, bool has_z, cudaStream_t stream);

}  // namespace mmssm_scan
