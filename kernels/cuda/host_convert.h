// Host-side conversions between float and the kernels' element types (float, __half,
// __nv_bfloat16), round-to-nearest-even, for tests and benchmarks that prepare device inputs
// or read device outputs. Pure functions; thread-safe.
#ifndef BERT_KERNELS_CUDA_HOST_CONVERT_H_
#define BERT_KERNELS_CUDA_HOST_CONVERT_H_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace bert {
namespace cuda {

template <typename T>
T HostFromFloat(float x) {
  if constexpr (std::is_same<T, float>::value) {
    return x;
  } else if constexpr (std::is_same<T, __half>::value) {
    return __float2half_rn(x);
  } else {
    static_assert(std::is_same<T, __nv_bfloat16>::value, "float, __half or __nv_bfloat16");
    return __float2bfloat16_rn(x);
  }
}

inline float HostToFloat(float x) { return x; }
inline float HostToFloat(__half x) { return __half2float(x); }
inline float HostToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

}  // namespace cuda
}  // namespace bert

#endif  // BERT_KERNELS_CUDA_HOST_CONVERT_H_
