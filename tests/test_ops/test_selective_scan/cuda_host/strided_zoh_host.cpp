// Runs csrc/selective_scan/zoh_strided.cuh's forward and backward kernels (float32) on the CPU through
// cuda_host.h, for test_strided_zoh_host.py: `strided_zoh_host IN OUT`. IN: int64 header (batch, dim, L, N,
// ndir, softplus, has_z, has_dlast, reverse0, reverse1, then the strides x_sb, x_sd, x_sl, z_sb, z_sd, z_sl,
// bc_sb, bc_sg, bc_sn, bc_sl, then the element offsets of B and C in their buffer, the buffers' sizes (x, x_dbl, z) and z's offset), then
// float32 buffers: per direction u, delta, x_dbl (B and C), A (dim, N), D, delta_bias, dout, dlast; then z. out
// and dout have u's strides. OUT: per direction out, last, du, ddelta, dz, dA, dB, dC, dD, ddelta_bias.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cuda_host.h"
#include "zoh_strided.cuh"

using mmssm_scan::StridedScanParams;

static std::vector<float> read_floats(FILE* f, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  if (n && fread(v.data(), sizeof(float), v.size(), f) != v.size()) {
    fprintf(stderr, "short input\n");
    exit(2);
  }
  return v;
}

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  FILE* in = fopen(argv[1], "rb");
  int64_t h[26];
  if (!in || fread(h, sizeof(int64_t), 26, in) != 26) return 2;
  const int64_t batch = h[0], dim = h[1], L = h[2], N = h[3], ndir = h[4];
  const int64_t x_size = h[22], bc_size = h[23], z_size = h[24], bc_offset = h[20], c_offset = h[21];
  StridedScanParams p;
  p.batch = int(batch), p.dim = int(dim), p.length = int(L), p.state = int(N), p.per_group = int(dim);
  p.n_ckpt = int((L - 1) / mmssm_scan::kChunk), p.softplus = int(h[5]), p.ndir = int(ndir);
  p.x_sb = h[10], p.x_sd = h[11], p.x_sl = h[12], p.z_sb = h[13], p.z_sd = h[14], p.z_sl = h[15];
  p.y_sb = h[10], p.y_sd = h[11], p.y_sl = h[12];
  p.bc_sb = h[16], p.bc_sg = h[17], p.bc_sn = h[18], p.bc_sl = h[19], p.a_sd = N, p.a_sn = 1;
  const bool has_z = h[6], has_dlast = h[7];
  const int64_t states = batch * dim * N, blocks = dim / mmssm_scan::kStridedChannels;
  struct Buffers {
    std::vector<float> u, delta, x_dbl, A, D, bias, dout, dlast, out, last, ckpt, du, ddelta, dz, dA, dB, dC, dD,
        dbias;
  } d[2];
  for (int i = 0; i < ndir; ++i) {
    d[i].u = read_floats(in, x_size), d[i].delta = read_floats(in, x_size), d[i].x_dbl = read_floats(in, bc_size);
    d[i].A = read_floats(in, dim * N), d[i].D = read_floats(in, dim), d[i].bias = read_floats(in, dim);
    d[i].dout = read_floats(in, x_size), d[i].dlast = read_floats(in, states);
  }
  const std::vector<float> z = read_floats(in, z_size);
  fclose(in);
  for (int i = 0; i < ndir; ++i) {
    auto& b = d[i];
    b.out.assign(x_size, 0.f), b.last.assign(states, 0.f), b.ckpt.assign(states * (p.n_ckpt + 1), 0.f);
    b.du.assign(x_size, 0.f), b.ddelta.assign(x_size, 0.f), b.dz.assign(x_size, 0.f), b.dA.assign(dim * N, 0.f);
    b.dB.assign(batch * blocks * N * L, 0.f), b.dC.assign(batch * blocks * N * L, 0.f);
    b.dD.assign(dim, 0.f), b.dbias.assign(dim, 0.f);
    auto& q = p.dir[i];
    q.u = b.u.data(), q.delta = b.delta.data(), q.z = has_z ? z.data() + h[25] : nullptr;
    q.B = b.x_dbl.data() + bc_offset, q.C = b.x_dbl.data() + c_offset;
    q.A = b.A.data(), q.D = b.D.data(), q.delta_bias = b.bias.data(), q.ckpt = p.n_ckpt ? b.ckpt.data() : nullptr;
    q.dlast = has_dlast ? b.dlast.data() : nullptr, q.out = b.out.data(), q.last = b.last.data();
    q.dout = b.dout.data(), q.du = b.du.data(), q.ddelta = b.ddelta.data(), q.dz = b.dz.data();
    q.dA = b.dA.data(), q.dB = b.dB.data(), q.dC = b.dC.data(), q.dD = b.dD.data(), q.ddelta_bias = b.dbias.data();
    q.reverse = int(h[8 + i]);
  }
  const HostDim3 grid{unsigned(blocks), unsigned(batch), unsigned(ndir)};
  const unsigned threads = mmssm_scan::kStridedChannels;
  using namespace mmssm_scan;
  launch_on_host(grid, threads, has_z ? zoh_forward_strided_kernel<float, true> : zoh_forward_strided_kernel<float, false>, p);
  for (int i = 0; i < ndir; ++i) {
    if (!p.n_ckpt) p.dir[i].ckpt = d[i].ckpt.data();  // (not read: one chunk)
  }
  launch_on_host(grid, threads, has_z ? zoh_backward_strided_kernel<float, true> : zoh_backward_strided_kernel<float, false>, p);
  FILE* out = fopen(argv[2], "wb");
  if (!out) return 2;
  for (int i = 0; i < ndir; ++i) {
    for (const auto* v : {&d[i].out, &d[i].last, &d[i].du, &d[i].ddelta, &d[i].dz, &d[i].dA, &d[i].dB, &d[i].dC,
                          &d[i].dD, &d[i].dbias}) {
      fwrite(v->data(), sizeof(float), v->size(), out);
    }
  }
  fclose(out);
  return 0;
}
