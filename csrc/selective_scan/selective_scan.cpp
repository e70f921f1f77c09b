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
  m.attr("CHUNK") = mmssm_scan::kChunk;
  m.attr("MAX_STATE") = mmssm_scan::kMaxState;
}
