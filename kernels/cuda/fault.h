// Tests only: ways to provoke the device failures a server must tell apart: a refused launch
// (the context stays usable) and a CUDA context left unusable (every later CUDA call of the
// process fails with the same error).
#ifndef BERT_KERNELS_CUDA_FAULT_H_
#define BERT_KERNELS_CUDA_FAULT_H_

#include <cuda_runtime.h>

namespace bert {
namespace cuda {

// Launches one thread that traps on `stream`. The launch itself succeeds; the kernel's fault
// then surfaces at the next synchronisation and leaves the context unusable for good.
cudaError_t LaunchTrapForTesting(cudaStream_t stream);

// Launches a kernel with an empty grid on `stream`, which CUDA refuses at once
// (cudaErrorInvalidConfiguration): an error that is not sticky, so the context stays usable.
cudaError_t LaunchRefusedForTesting(cudaStream_t stream);

}  // namespace cuda
}  // namespace bert

#endif  // BERT_KERNELS_CUDA_FAULT_H_
