// Kernel launches with optional programmatic dependent launch (PDL; Hopper and later), for
// the .cu files of kernels/cuda (not a public API).
//
// A kernel launched with `programmatic` set may be scheduled while the kernel before it on
// the stream is still running: its CTAs start once every CTA of that kernel has called
// AllowDependentLaunch() (or exited), which hides the launch latency between small kernels
// (batch-1 serving is ~90 of them back to back). The contract, for every kernel that can be
// launched this way:
//  * WaitForPriorGrid() before reading anything an earlier kernel writes and before writing
//    any global memory. It returns once the previous grid has completed and its writes are
//    visible (that grid waited for its own predecessor, so for all earlier work); for a
//    normal launch it returns at once.
//  * Only data no kernel writes (weights) may be read before it.
//  * Data the previous kernel wrote is read with coherent loads (plain or cp.async.cg), not
//    through the read-only cache (ld.global.nc, which __restrict__ const pointers allow).
//  * AllowDependentLaunch() after WaitForPriorGrid(): the next kernel is then scheduled at
//    most one kernel ahead, and it still waits for this one to finish before using its output.
// On devices before compute capability 9.0 both calls compile to nothing; callers pass
// `programmatic` only for such devices that support it (CudaEngine checks).
#ifndef BERT_KERNELS_CUDA_LAUNCH_CUH_
#define BERT_KERNELS_CUDA_LAUNCH_CUH_

#include <cuda_runtime.h>

#include <utility>

namespace bert {
namespace cuda {
namespace internal {

__device__ __forceinline__ void WaitForPriorGrid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void AllowDependentLaunch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// kernel<<<grid, block, shared_bytes, stream>>>(args...), programmatic when asked. Returns
// the launch error, which cudaGetLastError() also reports (as after <<<...>>>).
template <typename... Params, typename... Args>
cudaError_t LaunchKernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                         cudaStream_t stream, bool programmatic, Args&&... args) {
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  config.attrs = attribute;
  config.numAttrs = programmatic ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace internal
}  // namespace cuda
}  // namespace bert

#endif  // BERT_KERNELS_CUDA_LAUNCH_CUH_
