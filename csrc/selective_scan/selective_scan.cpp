// Python binding of the selective-scan kernels: mmssm._C.fwd / mmssm._C.bwd, list-based so that one launch
// runs one direction or both directions of a bidirectional (Vim) block. mmssm/ops/selective_scan/cuda_scan.py
// is the Python side; every input is checked here, with messages that name the tensor, the expected and the got.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "selective_scan.h"

namespace {

using mmssm_scan::InputType;
using mmssm_scan::ScanParams;

std::string shape_string(at::IntArrayRef sizes) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < sizes.size(); ++i) out << (i ? ", " : "") << sizes[i];
  out << (sizes.size() == 1 ? ",)" : ")");
  return out.str();
}

std::string name_of(const char* name, size_t direction, size_t directions) {
  return directions > 1 ? std::string(name) + "[" + std::to_string(direction) + "]" : std::string(name);
}

bool present(const std::vector<at::Tensor>& list, size_t i) { return i < list.size() && list[i].defined() && list[i].numel() > 0; }

void check_tensor(const at::Tensor& t, const std::string& name, const at::Device& device, at::IntArrayRef shape,
                  const char* shape_text) {
  TORCH_CHECK(t.defined(), "selective_scan (cuda): ", name, " is missing (an undefined tensor).");
  TORCH_CHECK(t.device() == device, "selective_scan (cuda): ", name, " must be on ", device, " (the device of u), got ",
              t.device(), ".");
  TORCH_CHECK(t.sizes() == shape, "selective_scan (cuda): ", name, " must have shape ", shape_text, " = ",
              shape_string(shape), ", got ", shape_string(t.sizes()), ".");
  TORCH_CHECK(t.is_contiguous(), "selective_scan (cuda): ", name, " must be contiguous, got strides ",
              shape_string(t.strides()), " for shape ", shape_string(t.sizes()), ".");
}

void check_dtype(const at::Tensor& t, const std::string& name, at::ScalarType expected, const char* why) {
  TORCH_CHECK(t.scalar_type() == expected, "selective_scan (cuda): ", name, " must have dtype ", expected, " (", why,
              "), got ", t.scalar_type(), ".");
}

InputType input_type(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return InputType::kFloat32;
    case at::kHalf: return InputType::kFloat16;
    case at::kBFloat16: return InputType::kBFloat16;
    default:
      TORCH_CHECK(false, "selective_scan (cuda): u must have dtype float32, float16 or bfloat16, got ", dtype, ".");
  }
  return InputType::kFloat32;
}

struct Checked {
  ScanParams params;
  size_t directions = 0;
  at::ScalarType dtype = at::kFloat;
  at::ScalarType bc_dtype = at::kFloat;
  int64_t batch = 0, dim = 0, length = 0, state = 0, groups = 0;
};

// Checks the inputs common to forward and backward and fills the input pointers of the parameters.
Checked check_inputs(const std::vector<at::Tensor>& u, const std::vector<at::Tensor>& delta,
                     const std::vector<at::Tensor>& A, const std::vector<at::Tensor>& B,
                     const std::vector<at::Tensor>& C, const std::vector<at::Tensor>& D,
                     const std::vector<at::Tensor>& delta_bias, const std::vector<at::Tensor>& z, bool softplus,
                     int64_t method, const std::vector<bool>& reverse) {
  Checked out;
  const size_t n = u.size();
  TORCH_CHECK(n == 1 || n == 2, "selective_scan (cuda): u must be a list of 1 or 2 tensors (one per direction), got ",
              n, ".");
  out.directions = n;
  auto check_len = [&](const char* name, size_t size, bool optional) {
    TORCH_CHECK(size == n || (optional && size == 0), "selective_scan (cuda): ", name, " must be a list of ", n,
                " tensors (one per direction, as u)", optional ? " or empty" : "", ", got ", size, ".");
  };
  check_len("delta", delta.size(), false);
  check_len("A", A.size(), false);
  check_len("B", B.size(), false);
  check_len("C", C.size(), false);
  check_len("D", D.size(), true);
  check_len("delta_bias", delta_bias.size(), true);
  check_len("z", z.size(), true);
  check_len("reverse", reverse.size(), false);
  TORCH_CHECK(method >= 0 && method < mmssm_scan::kNumMethods,
              "selective_scan (cuda): method must be an index in [0, 6) of (zoh, foh, bilinear, poly, highorder, "
              "rk4), got ", method, ".");

  const at::Tensor& u0 = u[0];
  TORCH_CHECK(u0.defined() && u0.is_cuda(), "selective_scan (cuda): u must be a CUDA tensor, got ",
              u0.defined() ? u0.device().str() : std::string("an undefined tensor"), ".");
  TORCH_CHECK(u0.dim() == 3, "selective_scan (cuda): u must have shape (batch, dim, L), got ",
              shape_string(u0.sizes()), ".");
  out.dtype = u0.scalar_type();
  input_type(out.dtype);
  out.batch = u0.size(0);
  out.dim = u0.size(1);
  out.length = u0.size(2);
  TORCH_CHECK(out.batch >= 1 && out.dim >= 1 && out.length >= 1,
              "selective_scan (cuda): u must have batch, dim and L >= 1, got shape ", shape_string(u0.sizes()), ".");
  TORCH_CHECK(out.batch <= 65535, "selective_scan (cuda): batch must be at most 65535, got ", out.batch, ".");
  TORCH_CHECK(A[0].defined() && A[0].dim() == 2, "selective_scan (cuda): A must have shape (dim, N) = (", out.dim,
              ", N), got ", A[0].defined() ? shape_string(A[0].sizes()) : std::string("an undefined tensor"), ".");
  out.state = A[0].size(1);
  TORCH_CHECK(out.state >= 1 && out.state <= mmssm_scan::kMaxState,
              "selective_scan (cuda): the state size N (A.shape[1]) must be between 1 and ",
              mmssm_scan::kMaxState, ", got ", out.state, ".");
  TORCH_CHECK(B[0].defined() && B[0].dim() == 4,
              "selective_scan (cuda): B must have shape (batch, groups, N, L), got ",
              B[0].defined() ? shape_string(B[0].sizes()) : std::string("an undefined tensor"), ".");
  out.groups = B[0].size(1);
  TORCH_CHECK(out.groups >= 1 && out.dim % out.groups == 0, "selective_scan (cuda): the number of groups of B (",
              out.groups, ") must divide dim = ", out.dim, ".");
  out.bc_dtype = B[0].scalar_type();
  TORCH_CHECK(out.bc_dtype == out.dtype || out.bc_dtype == at::kFloat,
              "selective_scan (cuda): B must have the dtype of u (", out.dtype, ") or float32, got ", out.bc_dtype,
              ".");
  const int64_t total = out.batch * out.dim * out.length;
  TORCH_CHECK(total < (int64_t(1) << 62), "selective_scan (cuda): input too large.");

  const auto device = u0.device();
  ScanParams& p = out.params;
  p.batch = static_cast<int>(out.batch);
  p.dim = static_cast<int>(out.dim);
  p.length = static_cast<int>(out.length);
  p.state = static_cast<int>(out.state);
  p.groups = static_cast<int>(out.groups);
  p.chunks = static_cast<int>((out.length + mmssm_scan::kChunk - 1) / mmssm_scan::kChunk);
  p.softplus = softplus ? 1 : 0;
  p.bc_fp32 = (out.bc_dtype == at::kFloat) ? 1 : 0;
  p.ndir = static_cast<int>(n);
  const std::vector<int64_t> x_shape{out.batch, out.dim, out.length};
  const std::vector<int64_t> a_shape{out.dim, out.state};
  const std::vector<int64_t> bc_shape{out.batch, out.groups, out.state, out.length};
  const std::vector<int64_t> d_shape{out.dim};
  for (size_t i = 0; i < n; ++i) {
    auto& q = p.dir[i];
    check_tensor(u[i], name_of("u", i, n), device, x_shape, "(batch, dim, L)");
    check_dtype(u[i], name_of("u", i, n), out.dtype, "that of u[0]");
    check_tensor(delta[i], name_of("delta", i, n), device, x_shape, "(batch, dim, L)");
    check_dtype(delta[i], name_of("delta", i, n), out.dtype, "that of u");
    check_tensor(A[i], name_of("A", i, n), device, a_shape, "(dim, N)");
    check_dtype(A[i], name_of("A", i, n), at::kFloat, "A is real and kept in float32");
    check_tensor(B[i], name_of("B", i, n), device, bc_shape, "(batch, groups, N, L)");
    check_dtype(B[i], name_of("B", i, n), out.bc_dtype, "that of B[0]");
    check_tensor(C[i], name_of("C", i, n), device, bc_shape, "(batch, groups, N, L), as B");
    check_dtype(C[i], name_of("C", i, n), out.bc_dtype, "that of B");
    q.u = u[i].data_ptr();
    q.delta = delta[i].data_ptr();
    q.A = A[i].data_ptr<float>();
    q.B = B[i].data_ptr();
    q.C = C[i].data_ptr();
    if (present(D, i)) {
      check_tensor(D[i], name_of("D", i, n), device, d_shape, "(dim,)");
      check_dtype(D[i], name_of("D", i, n), at::kFloat, "D is kept in float32");
      q.D = D[i].data_ptr<float>();
    }
    if (present(delta_bias, i)) {
      check_tensor(delta_bias[i], name_of("delta_bias", i, n), device, d_shape, "(dim,)");
      check_dtype(delta_bias[i], name_of("delta_bias", i, n), at::kFloat, "delta_bias is kept in float32");
      q.delta_bias = delta_bias[i].data_ptr<float>();
    }
    if (!z.empty()) {
      TORCH_CHECK(present(z, i), "selective_scan (cuda): ", name_of("z", i, n),
                  " is empty; z must be given for every direction or for none.");
      check_tensor(z[i], name_of("z", i, n), device, x_shape, "(batch, dim, L)");
      check_dtype(z[i], name_of("z", i, n), out.dtype, "that of u");
      q.z = z[i].data_ptr();
    }
    q.reverse = reverse[i] ? 1 : 0;
  }
  return out;
}

// Segments of segment_length steps (rounded up to whole chunks; <= 0 or >= L: one segment), few enough for the
// grid's z dimension (directions x segments).
void set_segments(ScanParams& p, int64_t segment_length) {
  const int64_t chunks = p.chunks;
  int64_t per_segment = segment_length > 0 ? (segment_length + mmssm_scan::kChunk - 1) / mmssm_scan::kChunk : chunks;
  per_segment = std::max(per_segment, (chunks * p.ndir + 65534) / 65535);
  per_segment = std::min(std::max(per_segment, int64_t(1)), chunks);
  p.segments = static_cast<int>((chunks + per_segment - 1) / per_segment);
  p.segment_chunks = p.segments > 1 ? static_cast<int>(per_segment) : p.chunks;
}

// The float32 buffers of the segment-parallel passes, one set per direction (none with one segment).
struct SegmentBuffers {
  std::vector<at::Tensor> state, prod, seam;
};

SegmentBuffers segment_buffers(ScanParams& p, const at::TensorOptions& f32, bool seams) {
  SegmentBuffers buffers;
  if (p.segments == 1) return buffers;
  for (int i = 0; i < p.ndir; ++i) {
    buffers.state.push_back(at::empty({p.segments, p.batch, p.dim, p.state}, f32));
    buffers.prod.push_back(at::empty({p.segments, p.batch, p.dim, p.state}, f32));
    p.dir[i].segment_state = buffers.state.back().data_ptr<float>();
    p.dir[i].segment_prod = buffers.prod.back().data_ptr<float>();
    if (seams) {
      buffers.seam.push_back(at::zeros({p.segments, p.batch, p.dim, mmssm_scan::kMaxTaps}, f32));
      p.dir[i].seam_du = buffers.seam.back().data_ptr<float>();
    }
  }
  return buffers;
}

void launch(bool forward, const Checked& c, int64_t method) {
  const auto stream = c10::cuda::getCurrentCUDAStream().stream();
  const int m = static_cast<int>(method);
  using namespace mmssm_scan;
  switch (input_type(c.dtype)) {
    case InputType::kFloat32:
      forward ? launch_forward<InputType::kFloat32>(c.params, m, stream)
              : launch_backward<InputType::kFloat32>(c.params, m, stream);
      break;
    case InputType::kFloat16:
      forward ? launch_forward<InputType::kFloat16>(c.params, m, stream)
              : launch_backward<InputType::kFloat16>(c.params, m, stream);
      break;
    case InputType::kBFloat16:
      forward ? launch_forward<InputType::kBFloat16>(c.params, m, stream)
              : launch_backward<InputType::kBFloat16>(c.params, m, stream);
      break;
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

// Returns [out, last_state, saved], each a list with one tensor per direction; saved is empty unless
// save_for_backward (then (batch, chunks, dim, N) float32: the state at the start of every 32-step chunk).
// segment_length: steps per segment run in parallel (<= 0: the whole sequence per block).
std::vector<std::vector<at::Tensor>> selective_scan_fwd(
    const std::vector<at::Tensor>& u, const std::vector<at::Tensor>& delta, const std::vector<at::Tensor>& A,
    const std::vector<at::Tensor>& B, const std::vector<at::Tensor>& C, const std::vector<at::Tensor>& D,
    const std::vector<at::Tensor>& delta_bias, const std::vector<at::Tensor>& z, bool softplus, int64_t method,
    const std::vector<bool>& reverse, bool save_for_backward, int64_t segment_length) {
  Checked c = check_inputs(u, delta, A, B, C, D, delta_bias, z, softplus, method, reverse);
  const c10::cuda::CUDAGuard guard(u[0].device());
  std::vector<at::Tensor> out, last, saved;
  const auto f32 = u[0].options().dtype(at::kFloat);
  c.params.save = save_for_backward ? 1 : 0;
  set_segments(c.params, segment_length);
  const SegmentBuffers buffers = segment_buffers(c.params, f32, false);
  for (size_t i = 0; i < c.directions; ++i) {
    out.push_back(at::empty_like(u[i]));
    last.push_back(at::empty({c.batch, c.dim, c.state}, f32));
    saved.push_back(save_for_backward ? at::empty({c.batch, c.params.chunks, c.dim, c.state}, f32)
                                      : at::empty({0}, f32));
    auto& q = c.params.dir[i];
    q.out = out[i].data_ptr();
    q.last_state = last[i].data_ptr<float>();
    q.saved = save_for_backward ? saved[i].data_ptr<float>() : nullptr;
  }
  launch(true, c, method);
  return {out, last, saved};
}

// Returns [du, ddelta, dA, dB, dC, dD, ddelta_bias, dz], lists with one tensor per direction (an empty tensor
// where D, delta_bias or z is absent); dB, dC in B's dtype, dA, dD, ddelta_bias float32. saved is forward's (save_for_backward=True); an empty
// list (or empty tensors) makes this run the forward again to get it (in segments of segment_length too).
std::vector<std::vector<at::Tensor>> selective_scan_bwd(
    const std::vector<at::Tensor>& dout, const std::vector<at::Tensor>& u, const std::vector<at::Tensor>& delta,
    const std::vector<at::Tensor>& A, const std::vector<at::Tensor>& B, const std::vector<at::Tensor>& C,
    const std::vector<at::Tensor>& D, const std::vector<at::Tensor>& delta_bias, const std::vector<at::Tensor>& z,
    bool softplus, int64_t method, const std::vector<bool>& reverse, const std::vector<at::Tensor>& saved,
    const std::vector<at::Tensor>& dlast_state, int64_t segment_length) {
  Checked c = check_inputs(u, delta, A, B, C, D, delta_bias, z, softplus, method, reverse);
  const c10::cuda::CUDAGuard guard(u[0].device());
  set_segments(c.params, segment_length);
  const SegmentBuffers buffers =
      segment_buffers(c.params, u[0].options().dtype(at::kFloat), method != mmssm_scan::kZoh);
  const size_t n = c.directions;
  TORCH_CHECK(dout.size() == n, "selective_scan (cuda): dout must be a list of ", n, " tensors (as u), got ",
              dout.size(), ".");
  TORCH_CHECK(dlast_state.size() == n || dlast_state.empty(), "selective_scan (cuda): dlast_state must be a list of ",
              n, " tensors (as u) or empty, got ", dlast_state.size(), ".");
  TORCH_CHECK(saved.size() == n || saved.empty(), "selective_scan (cuda): saved must be a list of ", n,
              " tensors (forward's) or empty, got ", saved.size(), ".");
  const std::vector<int64_t> x_shape{c.batch, c.dim, c.length};
  const std::vector<int64_t> state_shape{c.batch, c.dim, c.state};
  const std::vector<int64_t> saved_shape{c.batch, c.params.chunks, c.dim, c.state};
  const auto device = u[0].device();
  const auto f32 = u[0].options().dtype(at::kFloat);

  std::vector<at::Tensor> saved_states(n);
  bool need_forward = false;
  for (size_t i = 0; i < n; ++i) {
    if (present(saved, i) && c.params.chunks > 1) {
      check_tensor(saved[i], name_of("saved", i, n), device, saved_shape, "(batch, chunks, dim, N)");
      check_dtype(saved[i], name_of("saved", i, n), at::kFloat, "forward's saved states");
      saved_states[i] = saved[i];
    } else if (c.params.chunks > 1) {
      need_forward = true;
    }
  }
  if (need_forward) {  // recompute the chunk-start states
    ScanParams p = c.params;
    p.save = 1;
    std::vector<at::Tensor> scratch_out, scratch_last;
    for (size_t i = 0; i < n; ++i) {
      scratch_out.push_back(at::empty_like(u[i]));
      scratch_last.push_back(at::empty(state_shape, f32));
      saved_states[i] = at::empty(saved_shape, f32);
      p.dir[i].out = scratch_out[i].data_ptr();
      p.dir[i].last_state = scratch_last[i].data_ptr<float>();
      p.dir[i].saved = saved_states[i].data_ptr<float>();
    }
    Checked cf = c;
    cf.params = p;
    launch(true, cf, method);
  }

  std::vector<at::Tensor> du, ddelta, dA, dB, dC, dD, dbias, dz, dB32, dC32;
  const bool bc_fp32 = c.bc_dtype == at::kFloat;
  for (size_t i = 0; i < n; ++i) {
    auto& q = c.params.dir[i];
    check_tensor(dout[i], name_of("dout", i, n), device, x_shape, "(batch, dim, L), as u");
    check_dtype(dout[i], name_of("dout", i, n), c.dtype, "that of u");
    q.dout = dout[i].data_ptr();
    if (present(dlast_state, i)) {
      check_tensor(dlast_state[i], name_of("dlast_state", i, n), device, state_shape, "(batch, dim, N)");
      check_dtype(dlast_state[i], name_of("dlast_state", i, n), at::kFloat, "the state is float32");
      q.dlast_state = dlast_state[i].data_ptr<float>();
    }
    q.saved = c.params.chunks > 1 ? saved_states[i].data_ptr<float>() : nullptr;
    du.push_back(at::empty_like(u[i]));
    ddelta.push_back(at::empty_like(delta[i]));
    dA.push_back(at::zeros_like(A[i]));
    dB32.push_back(at::zeros(B[i].sizes(), f32));
    dC32.push_back(at::zeros(C[i].sizes(), f32));
    q.du = du[i].data_ptr();
    q.ddelta = ddelta[i].data_ptr();
    q.dA = dA[i].data_ptr<float>();
    q.dB = dB32[i].data_ptr<float>();
    q.dC = dC32[i].data_ptr<float>();
    // absent optional inputs get an empty gradient, so that index i is direction i in every list
    dD.push_back(q.D ? at::zeros_like(D[i]) : at::empty({0}, f32));
    dbias.push_back(q.delta_bias ? at::zeros_like(delta_bias[i]) : at::empty({0}, f32));
    dz.push_back(q.z ? at::empty_like(z[i]) : at::empty({0}, u[i].options()));
    if (q.D) q.dD = dD[i].data_ptr<float>();
    if (q.delta_bias) q.ddelta_bias = dbias[i].data_ptr<float>();
    if (q.z) q.dz = dz[i].data_ptr();
  }
  launch(false, c, method);
  for (size_t i = 0; i < n; ++i) {
    dB.push_back(bc_fp32 ? dB32[i] : dB32[i].to(c.bc_dtype));
    dC.push_back(bc_fp32 ? dC32[i] : dC32[i].to(c.bc_dtype));
  }
  return {du, ddelta, dA, dB, dC, dD, dbias, dz};
}

// The zoh scan over any strides (zoh_strided.cuh), for the Triton path's layouts: the caller (triton_scan.py)
// allocates the outputs in its layouts; these check what the kernels rely on. Lists with one tensor per
// direction; z (and dz), dlast may be empty lists.
namespace {

void check_strided(bool ok, const char* what) { TORCH_CHECK(ok, "selective_scan (cuda, strided zoh): ", what); }

// Whether a and b (one shape) have one layout: equal strides in every dim of size > 1.
bool same_strides(const at::Tensor& a, const at::Tensor& b) {
  for (int64_t i = 0; i < a.dim(); ++i) {
    if (a.size(i) > 1 && a.stride(i) != b.stride(i)) return false;
  }
  return true;
}

// The parameters common to both directions' calls, from the inputs (shapes, strides, pointers).
mmssm_scan::StridedScanParams strided_params(
    const std::vector<at::Tensor>& u, const std::vector<at::Tensor>& delta, const std::vector<at::Tensor>& A,
    const std::vector<at::Tensor>& B, const std::vector<at::Tensor>& C, const std::vector<at::Tensor>& D,
    const std::vector<at::Tensor>& delta_bias, const std::vector<at::Tensor>& z, const std::vector<at::Tensor>& ckpt,
    const at::Tensor& y_like, bool softplus, const std::vector<bool>& reverse, bool a_log, bool forward) {
  const size_t n = u.size();
  check_strided(n == 1 || n == 2, "u must be a list of 1 or 2 tensors (one per direction).");
  for (const auto* list : {&delta, &A, &B, &C, &D, &delta_bias, &ckpt}) {
    check_strided(list->size() == n, "every list must have one tensor per direction, as u.");
  }
  check_strided(reverse.size() == n && (z.empty() || z.size() == n), "reverse and z (or no z) must match u.");
  const at::Tensor& u0 = u[0];
  check_strided(u0.is_cuda() && u0.dim() == 3 && A[0].dim() == 2 && B[0].dim() == 4,
                "u must be a (batch, dim, L) CUDA tensor, A (dim, N), B (batch, groups, N, L).");
  const int64_t batch = u0.size(0), dim = u0.size(1), length = u0.size(2), state = A[0].size(1);
  const int64_t groups = B[0].size(1);
  check_strided(state >= 1 && state <= mmssm_scan::kStridedMaxState, "N must be at most 16.");
  check_strided(length >= 1 && dim % groups == 0 && (dim / groups) % mmssm_scan::kStridedChannels == 0 &&
                    batch <= 65535,
                "a group's channels must be a multiple of 32, batch at most 65535, L at least 1.");
  check_strided(ckpt[0].dim() == 4 && (ckpt[0].size(2) == (length - 1) / mmssm_scan::kChunk ||
                                       (forward && ckpt[0].size(2) == 0)),
                "ckpt must be (batch, dim, chunks - 1, N): the state after every 32nd step but the last (or, "
                "forward, (batch, dim, 0, N): none saved).");
  const auto dtype = u0.scalar_type();
  input_type(dtype);
  for (size_t i = 0; i < n; ++i) {
    for (const at::Tensor* t : {&u[i], &delta[i], &B[i], &C[i]}) {
      check_strided(t->scalar_type() == dtype && t->device() == u0.device(),
                    "u, delta, B and C must share u's dtype and device.");
    }
    check_strided(u[i].sizes() == u0.sizes() && same_strides(u[i], u0) && same_strides(delta[i], u0),
                  "u and delta must have one shape and set of strides in every direction.");
    check_strided(B[i].sizes() == B[0].sizes() && same_strides(B[i], B[0]) && same_strides(C[i], B[0]) &&
                      same_strides(A[i], A[0]),
                  "B and C must share one set of strides, and A in every direction.");
    for (const at::Tensor* t : {&A[i], &D[i], &delta_bias[i], &ckpt[i]}) {
      check_strided(t->scalar_type() == at::kFloat && t->device() == u0.device(),
                    "A, D, delta_bias and ckpt must be float32 on u's device.");
    }
    check_strided(D[i].is_contiguous() && delta_bias[i].is_contiguous() && ckpt[i].is_contiguous(),
                  "D, delta_bias and ckpt must be contiguous.");
    if (!z.empty()) {
      check_strided(z[i].scalar_type() == dtype && z[i].sizes() == u0.sizes() && same_strides(z[i], z[0]),
                    "z must have u's dtype and shape and one set of strides in every direction.");
    }
  }
  mmssm_scan::StridedScanParams p;
  p.batch = static_cast<int>(batch);
  p.dim = static_cast<int>(dim);
  p.length = static_cast<int>(length);
  p.state = static_cast<int>(state);
  p.per_group = static_cast<int>(dim / groups);
  p.n_ckpt = static_cast<int>(ckpt[0].size(2));
  p.softplus = softplus ? 1 : 0;
  p.a_log = a_log ? 1 : 0;
  p.ndir = static_cast<int>(n);
  p.x_sb = u0.stride(0), p.x_sd = u0.stride(1), p.x_sl = u0.stride(2);
  const at::Tensor& zs = z.empty() ? u0 : z[0];
  p.z_sb = zs.stride(0), p.z_sd = zs.stride(1), p.z_sl = zs.stride(2);
  p.y_sb = y_like.stride(0), p.y_sd = y_like.stride(1), p.y_sl = y_like.stride(2);
  p.bc_sb = B[0].stride(0), p.bc_sg = B[0].stride(1), p.bc_sn = B[0].stride(2), p.bc_sl = B[0].stride(3);
  p.a_sd = A[0].stride(0), p.a_sn = A[0].stride(1);
  for (size_t i = 0; i < n; ++i) {
    auto& q = p.dir[i];
    q.u = u[i].data_ptr(), q.delta = delta[i].data_ptr(), q.B = B[i].data_ptr(), q.C = C[i].data_ptr();
    q.A = A[i].data_ptr<float>(), q.D = D[i].data_ptr<float>(), q.delta_bias = delta_bias[i].data_ptr<float>();
    q.ckpt = ckpt[i].data_ptr<float>();
    if (!z.empty()) q.z = z[i].data_ptr();
    q.reverse = reverse[i] ? 1 : 0;
  }
  return p;
}

// Every tensor of the list has the shape (and dtype) of like and one set of strides.
void check_outputs(const std::vector<at::Tensor>& list, const at::Tensor& like, at::ScalarType dtype,
                   const char* what) {
  for (const auto& t : list) {
    check_strided(t.sizes() == like.sizes() && same_strides(t, list[0]) && t.scalar_type() == dtype &&
                      t.device() == like.device(),
                  what);
  }
}

void launch_strided(const mmssm_scan::StridedScanParams& p, const at::Tensor& u, bool forward, bool has_z) {
  const c10::cuda::CUDAGuard guard(u.device());
  const auto stream = c10::cuda::getCurrentCUDAStream().stream();
  using mmssm_scan::InputType;
  switch (input_type(u.scalar_type())) {
    case InputType::kFloat32: mmssm_scan::launch_zoh_strided<InputType::kFloat32>(p, forward, has_z, stream); break;
    case InputType::kFloat16: mmssm_scan::launch_zoh_strided<InputType::kFloat16>(p, forward, has_z, stream); break;
    case InputType::kBFloat16: mmssm_scan::launch_zoh_strided<InputType::kBFloat16>(p, forward, has_z, stream); break;
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void zoh_fwd_strided(const std::vector<at::Tensor>& u, const std::vector<at::Tensor>& delta,
                     const std::vector<at::Tensor>& A, const std::vector<at::Tensor>& B,
                     const std::vector<at::Tensor>& C, const std::vector<at::Tensor>& D,
                     const std::vector<at::Tensor>& delta_bias, const std::vector<at::Tensor>& z, bool softplus,
                     const std::vector<bool>& reverse, bool a_log, const std::vector<at::Tensor>& out,
                     const std::vector<at::Tensor>& last, const std::vector<at::Tensor>& ckpt) {
  check_strided(out.size() == u.size() && last.size() == u.size(), "out and last must have one tensor a direction.");
  auto p = strided_params(u, delta, A, B, C, D, delta_bias, z, ckpt, out[0], softplus, reverse, a_log, true);
  check_outputs(out, u[0], u[0].scalar_type(), "out must be (batch, dim, L) of u's dtype, one set of strides.");
  for (size_t i = 0; i < u.size(); ++i) {
    check_strided(last[i].is_contiguous() && last[i].numel() == int64_t(p.batch) * p.dim * p.state &&
                      last[i].scalar_type() == at::kFloat,
                  "last must be contiguous (batch, dim, N) float32.");
    p.dir[i].out = out[i].data_ptr();
    p.dir[i].last = last[i].data_ptr<float>();
    if (p.n_ckpt == 0) p.dir[i].ckpt = nullptr;
  }
  launch_strided(p, u[0], true, !z.empty());
}

void zoh_bwd_strided(const std::vector<at::Tensor>& dout, const std::vector<at::Tensor>& u,
                     const std::vector<at::Tensor>& delta, const std::vector<at::Tensor>& A,
                     const std::vector<at::Tensor>& B, const std::vector<at::Tensor>& C,
                     const std::vector<at::Tensor>& D, const std::vector<at::Tensor>& delta_bias,
                     const std::vector<at::Tensor>& z, const std::vector<at::Tensor>& ckpt,
                     const std::vector<at::Tensor>& dlast, bool softplus, const std::vector<bool>& reverse,
                     const std::vector<at::Tensor>& du, const std::vector<at::Tensor>& ddelta,
                     const std::vector<at::Tensor>& dz, const std::vector<at::Tensor>& dA,
                     const std::vector<at::Tensor>& dB, const std::vector<at::Tensor>& dC,
                     const std::vector<at::Tensor>& dD, const std::vector<at::Tensor>& ddelta_bias) {
  const size_t n = u.size();
  for (const auto* list : {&dout, &du, &ddelta, &dA, &dB, &dC, &dD, &ddelta_bias}) {
    check_strided(list->size() == n, "every gradient list must have one tensor per direction, as u.");
  }
  check_strided(dz.size() == z.size() && (dlast.empty() || dlast.size() == n), "dz must match z, dlast u or none.");
  auto p = strided_params(u, delta, A, B, C, D, delta_bias, z, ckpt, dout[0], softplus, reverse, false, false);
  const auto dtype = u[0].scalar_type();
  check_outputs(dout, u[0], dtype, "dout must be (batch, dim, L) of u's dtype, one set of strides.");
  for (const auto* list : {&du, &ddelta, &dz}) {
    check_outputs(*list, u[0], dtype, "du, ddelta and dz must be (batch, dim, L) of u's dtype.");
    check_strided(list->empty() || same_strides((*list)[0], u[0]), "du, ddelta and dz must have u's strides.");
  }
  const int64_t bc_numel = int64_t(p.batch) * (p.dim / mmssm_scan::kStridedChannels) * p.state * p.length;
  for (size_t i = 0; i < n; ++i) {
    for (const at::Tensor* t : {&dA[i], &dB[i], &dC[i], &dD[i], &ddelta_bias[i]}) {
      check_strided(t->is_contiguous() && t->scalar_type() == at::kFloat && t->device() == u[0].device(),
                    "dA, dB, dC, dD and ddelta_bias must be contiguous float32 on u's device.");
    }
    check_strided(dB[i].numel() == bc_numel && dC[i].numel() == bc_numel && dA[i].numel() == A[i].numel() &&
                      dD[i].numel() == p.dim && ddelta_bias[i].numel() == p.dim,
                  "dB and dC must be (batch, dim / 32, N, L), dA (dim, N), dD and ddelta_bias (dim,).");
    if (!dlast.empty()) {
      check_strided(dlast[i].scalar_type() == at::kFloat && dlast[i].is_contiguous() &&
                        dlast[i].numel() == int64_t(p.batch) * p.dim * p.state,
                    "dlast must be contiguous (batch, dim, N) float32.");
    }
    auto& q = p.dir[i];
    q.dout = dout[i].data_ptr();
    q.dlast = dlast.empty() ? nullptr : dlast[i].data_ptr<float>();
    q.du = du[i].data_ptr(), q.ddelta = ddelta[i].data_ptr();
    q.dA = dA[i].data_ptr<float>(), q.dB = dB[i].data_ptr<float>(), q.dC = dC[i].data_ptr<float>();
    q.dD = dD[i].data_ptr<float>(), q.ddelta_bias = ddelta_bias[i].data_ptr<float>();
    if (!dz.empty()) q.dz = dz[i].data_ptr();
  }
  launch_strided(p, u[0], false, !z.empty());
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmssm selective-scan CUDA kernels (see mmssm/ops/selective_scan/cuda_scan.py)";
  m.def("fwd", &selective_scan_fwd, "selective scan forward, one or two directions",
        py::arg("u"), py::arg("delta"), py::arg("A"), py::arg("B"), py::arg("C"), py::arg("D"),
        py::arg("delta_bias"), py::arg("z"), py::arg("softplus"), py::arg("method"), py::arg("reverse"),
        py::arg("save_for_backward"), py::arg("segment_length") = 0);
  m.def("bwd", &selective_scan_bwd, "selective scan backward, one or two directions",
        py::arg("dout"), py::arg("u"), py::arg("delta"), py::arg("A"), py::arg("B"), py::arg("C"), py::arg("D"),
        py::arg("delta_bias"), py::arg("z"), py::arg("softplus"), py::arg("method"), py::arg("reverse"),
        py::arg("saved"), py::arg("dlast_state"), py::arg("segment_length") = 0);
  m.def("zoh_fwd_strided", &zoh_fwd_strided, "zoh selective-scan forward over any strides (the Triton path's)",
        py::arg("u"), py::arg("delta"), py::arg("A"), py::arg("B"), py::arg("C"), py::arg("D"),
        py::arg("delta_bias"), py::arg("z"), py::arg("softplus"), py::arg("reverse"), py::arg("a_log"),
        py::arg("out"), py::arg("last"), py::arg("ckpt"));
  m.def("zoh_bwd_strided", &zoh_bwd_strided, "zoh selective-scan backward over any strides (the Triton path's)",
        py::arg("dout"), py::arg("u"), py::arg("delta"), py::arg("A"), py::arg("B"), py::arg("C"), py::arg("D"),
        py::arg("delta_bias"), py::arg("z"), py::arg("ckpt"), py::arg("dlast"), py::arg("softplus"),
        py::arg("reverse"), py::arg("du"), py::arg("ddelta"), py::arg("dz"), py::arg("dA"), py::arg("dB"),
        py::arg("dC"), py::arg("dD"), py::arg("ddelta_bias"));
  m.attr("CHUNK") = mmssm_scan::kChunk;
  m.attr("MAX_STATE") = mmssm_scan::kMaxState;
}
