// Backward kernels for fp32 inputs, all six discretization methods (one file per dtype and direction, so
// that they compile in parallel).
#include "selective_scan_kernels.cuh"

namespace mmssm_scan {
template void launch_backward<InputType::kFloat32>(const ScanParams&, int, cudaStream_t);
}  // namespace mmssm_scan
