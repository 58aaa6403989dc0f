#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/convert.h"
#include "kernels/cuda/device_utils.cuh"

namespace bert {
namespace cuda {
namespace {

template <typename In, typename Out>
__global__ void ConvertKernel(const In* __restrict__ in, size_t count, Out* __restrict__ out) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    out[i] = internal::FromFloat<Out>(internal::ToFloat(in[i]));
  }
}

}  // namespace

template <typename In, typename Out>
cudaError_t LaunchConvert(const In* in, size_t count, Out* out, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  size_t blocks = (count + kThreads - 1) / kThreads;
  if (blocks > 65535) blocks = 65535;
  ConvertKernel<In, Out><<<static_cast<int>(blocks), kThreads, 0, stream>>>(in, count, out);
  return cudaGetLastError();
}

template cudaError_t LaunchConvert<float, float>(const float*, size_t, float*, cudaStream_t);
template cudaError_t LaunchConvert<float, __half>(const float*, size_t, __half*, cudaStream_t);
template cudaError_t LaunchConvert<float, __nv_bfloat16>(const float*, size_t, __nv_bfloat16*,
                                                         cudaStream_t);
template cudaError_t LaunchConvert<__half, float>(const __half*, size_t, float*, cudaStream_t);
template cudaError_t LaunchConvert<__nv_bfloat16, float>(const __nv_bfloat16*, size_t, float*,
                                                         cudaStream_t);

}  // namespace cuda
}  // namespace bert
