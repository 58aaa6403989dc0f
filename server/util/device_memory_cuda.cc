#include <cuda_runtime_api.h>

#include "server/util/device_memory.h"

namespace bert {

int64_t DeviceMemoryInUseBytes() {
  size_t free_bytes = 0;
  size_t total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
    cudaGetLastError();  // Clear the sticky-free error state for the next caller.
    return -1;
  }
  return static_cast<int64_t>(total_bytes - free_bytes);
}

}  // namespace bert
