// Helpers for the GPU kernel tests (test-only): device detection, typed device buffers
// filled from fp32 host data, NaN poisoning, error norms, a seeded generator, and gtest
// macros for CUDA results and per-dtype dispatch (the including test includes gtest).
#ifndef BERT_KERNELS_CUDA_TEST_UTIL_H_
#define BERT_KERNELS_CUDA_TEST_UTIL_H_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/test_util.h"
#include "kernels/cuda/cuda_utils.h"
#include "kernels/cuda/host_convert.h"

// ASSERT that a cudaError_t is cudaSuccess / a CudaStatus is ok, naming the expression.
#define ASSERT_CUDA_OK(expr)                                                        \
  do {                                                                              \
    const cudaError_t err_ = (expr);                                                \
    ASSERT_EQ(err_, cudaSuccess) << #expr << ": " << cudaGetErrorName(err_) << " (" \
                                 << cudaGetErrorString(err_) << ")";                \
  } while (0)

#define ASSERT_STATUS_OK(expr)                               \
  do {                                                       \
    const ::bert::cuda::CudaStatus st_ = (expr);             \
    ASSERT_TRUE(st_.ok()) << #expr << ": " << st_.message(); \
  } while (0)

// fn<float|__half|__nv_bfloat16>(args...) for a TestDType.
#define DISPATCH_DTYPE(dtype, fn, ...)                 \
  switch (dtype) {                                     \
    case ::bert::cuda::testing_util::TestDType::kF32:  \
      fn<float>(__VA_ARGS__);                          \
      break;                                           \
    case ::bert::cuda::testing_util::TestDType::kF16:  \
      fn<__half>(__VA_ARGS__);                         \
      break;                                           \
    case ::bert::cuda::testing_util::TestDType::kBF16: \
      fn<__nv_bfloat16>(__VA_ARGS__);                  \
      break;                                           \
  }

namespace bert {
namespace cuda {
namespace testing_util {

// A generator with a fresh seed, printed so that a failure can be reproduced.
inline std::mt19937 FreshRng() {
  std::random_device rd;
  const unsigned seed = rd();
  std::printf("seed %u\n", seed);
  return std::mt19937(seed);
}

enum class TestDType { kF32, kF16, kBF16 };

inline const char* TestDTypeName(TestDType t) {
  switch (t) {
    case TestDType::kF32:
      return "f32";
    case TestDType::kF16:
      return "f16";
    case TestDType::kBF16:
      return "bf16";
  }
  return "?";
}

// Relative tolerance (‖out − ref‖ / ‖ref‖) per dtype.
inline double Tolerance(TestDType t) {
  switch (t) {
    case TestDType::kF32:
      return 1e-5;
    case TestDType::kF16:
      return 1e-2;
    case TestDType::kBF16:
      return 4e-2;
  }
  return 0;
}

// True when a CUDA device is usable; otherwise `why` says why not.
inline bool HaveGpu(std::string* why) {
  int count = 0;
  const CudaStatus s = CountDevices(&count);
  if (!s.ok()) {
    *why = s.message();
    return false;
  }
  return true;
}

// Rounds every value through T (so the CPU reference sees exactly the device's inputs).
template <typename T>
void RoundThrough(std::vector<float>* v) {
  for (float& x : *v) x = HostToFloat(HostFromFloat<T>(x));
}

inline std::vector<float> RandomVector(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// A device array of T made from fp32 host values (rounded to T).
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : host_(n) { status_ = buffer_.Allocate(n); }
  explicit DeviceArray(const std::vector<float>& values) : DeviceArray(values.size()) {
    if (!status_.ok()) return;
    for (size_t i = 0; i < values.size(); ++i) host_[i] = HostFromFloat<T>(values[i]);
    if (!values.empty()) {
      status_ = MakeCudaStatus(cudaMemcpy(buffer_.get(), host_.data(), values.size() * sizeof(T),
                                          cudaMemcpyHostToDevice),
                               "cudaMemcpy", __FILE__, __LINE__);
    }
  }
  const CudaStatus& status() const { return status_; }
  T* get() { return buffer_.get(); }
  size_t size() const { return host_.size(); }

  // Fills with 0xFF bytes (NaN for float, half and bfloat16) and waits for it: the memset runs
  // on the legacy stream, which does not order the non-blocking streams tests launch on.
  cudaError_t Poison() {
    const cudaError_t set = cudaMemset(buffer_.get(), 0xFF, host_.size() * sizeof(T));
    return set != cudaSuccess ? set : cudaDeviceSynchronize();
  }

  // Copies back (synchronising) and converts to fp32.
  std::vector<float> Download() {
    std::vector<float> out(host_.size());
    if (host_.empty()) return out;
    cudaDeviceSynchronize();
    if (cudaMemcpy(host_.data(), buffer_.get(), host_.size() * sizeof(T), cudaMemcpyDeviceToHost) !=
        cudaSuccess) {
      for (float& x : out) x = NAN;
      return out;
    }
    for (size_t i = 0; i < out.size(); ++i) out[i] = HostToFloat(host_[i]);
    return out;
  }

 private:
  DeviceBuffer<T> buffer_;
  std::vector<T> host_;
  CudaStatus status_;
};

using ::bert::cpu::testing::CountNonFinite;
using ::bert::cpu::testing::RelativeError;

}  // namespace testing_util
}  // namespace cuda
}  // namespace bert

#endif  // BERT_KERNELS_CUDA_TEST_UTIL_H_
