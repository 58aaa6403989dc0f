#include <cuda_runtime.h>

#include "kernels/cuda/launch.h"

namespace bert {
namespace cuda {
namespace {

// Compiled like every kernel of kernels/cuda (same targets): the runtime loads the same
// target's code for it as for them.
__global__ void ProbeKernel() {}

}  // namespace

bool ProgrammaticLaunchAvailable() {
  int device = 0;
  int major = 0;
  cudaFuncAttributes attributes = {};
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaFuncGetAttributes(&attributes, ProbeKernel) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return major >= 9 && attributes.ptxVersion >= 90;
}

}  // namespace cuda
}  // namespace bert
