// The zoh scan over any strides (zoh_strided.cuh), forward and backward, for the three input dtypes.
#include "zoh_strided.cuh"

namespace mmssm_scan {
template void launch_zoh_strided<InputType::kFloat32>(const StridedScanParams&, bool, bool, cudaStream_t);
template void launch_zoh_strided<InputType::kFloat16>(const StridedScanParams&, bool, bool, cudaStream_t);
template void launch_zoh_strided<InputType::kBFloat16>(const StridedScanParams&, bool, bool, cudaStream_t);
}  // namespace mmssm_scan
