// Host-side query for programmatic dependent launches (kernels/cuda/launch.cuh).
#ifndef BERT_KERNELS_CUDA_LAUNCH_H_
#define BERT_KERNELS_CUDA_LAUNCH_H_

namespace bert {
namespace cuda {

// True when the current device can launch our kernels programmatically: compute capability
// >= 9.0, and the code loaded for it was compiled for >= 9.0 (so its griddepcontrol waits
// are there; code built for an older target has none, and must be launched normally).
// False when either cannot be read.
bool ProgrammaticLaunchAvailable();

}  // namespace cuda
}  // namespace bert

#endif  // BERT_KERNELS_CUDA_LAUNCH_H_
