#include "kernels/cuda/fault.h"

namespace bert {
namespace cuda {
namespace {

__global__ void TrapKernel() { __trap(); }

}  // namespace

cudaError_t LaunchTrapForTesting(cudaStream_t stream) {
  TrapKernel<<<1, 1, 0, stream>>>();
  return cudaGetLastError();
}

cudaError_t LaunchRefusedForTesting(cudaStream_t stream) {
  TrapKernel<<<0, 1, 0, stream>>>();  // never runs: an empty grid is refused
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace bert
