// Element-wise dtype conversion on the device (fp32 weights -> T at load, T -> fp32 outputs).
#ifndef BERT_KERNELS_CUDA_CONVERT_H_
#define BERT_KERNELS_CUDA_CONVERT_H_

#include <cuda_runtime.h>

#include <cstddef>

namespace bert {
namespace cuda {

// out[i] = Out(in[i]) for i < count (round to nearest even). Instantiated for
// float -> {float, __half, __nv_bfloat16} and {__half, __nv_bfloat16} -> float.
template <typename In, typename Out>
cudaError_t LaunchConvert(const In* in, size_t count, Out* out, cudaStream_t stream);

}  // namespace cuda
}  // namespace bert

#endif  // BERT_KERNELS_CUDA_CONVERT_H_
