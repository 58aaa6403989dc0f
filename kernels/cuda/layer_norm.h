// out = LayerNorm(x + bias + residual) over rows of `hidden` features, fp32 statistics.
// Twin of bert::cpu::AddBiasResidualLayerNorm (kernels/cpu/layer_norm.h).
#ifndef BERT_KERNELS_CUDA_LAYER_NORM_H_
#define BERT_KERNELS_CUDA_LAYER_NORM_H_

#include <cuda_runtime.h>

namespace bert {
namespace cuda {

// The largest `hidden` every LayerNorm launcher (here and in embedding.h) supports.
constexpr int kMaxLayerNormHidden = 1024;

// Batches of at most this many rows load gamma/beta before the row's two reductions instead
// of after (more registers per thread, a shorter chain of dependent loads per row): with 4
// rows per block that is <= 512 blocks, under 4 per SM on an H100/H200, where occupancy does
// not limit the kernel but per-row latency does. Either way the results are the same bits.
inline constexpr int kDefaultLayerNormHoistMaxRows = 2048;

// x, residual, out: [rows, hidden] of T (residual may be null); bias: [hidden] of T or null;
// gamma, beta: [hidden] fp32. Sums as (x + bias) + residual, like the CPU twin. `out` may alias
// `residual` (each row is read fully before it is written). One warp per row. Returns
// cudaErrorInvalidValue for an unsupported hidden (> kMaxLayerNormHidden or <= 0), else the launch
// error (cudaGetLastError). rows == 0 launches nothing. `programmatic`: a programmatic
// dependent launch (kernels/cuda/launch.cuh; compute capability >= 9.0 only).
// `hoist_max_rows`: the row count up to which gamma/beta are loaded early (above; 0: never).
template <typename T>
cudaError_t LaunchAddBiasResidualLayerNorm(const T* x, const T* bias, const T* residual,
                                           const float* gamma, const float* beta, int rows,
                                           int hidden, float eps, T* out, cudaStream_t stream,
                                           bool programmatic = false,
                                           int hoist_max_rows = kDefaultLayerNormHoistMaxRows);

}  // namespace cuda
}  // namespace bert

#endif  // BERT_KERNELS_CUDA_LAYER_NORM_H_
