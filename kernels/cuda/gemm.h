// y = epilogue(x · Wᵀ + b) through cuBLASLt, for the encoder's Linear layers.
//
// Layout mapping (cuBLASLt is column-major): x is row-major [rows, in] = column-major
// [in, rows]; W is Hugging Face [out, in] row-major = column-major [in, out]; y is row-major
// [rows, out] = column-major [out, rows]. So column-major yᵀ (out x rows) = Wᵀ · xᵀ, i.e. one
// cuBLASLt matmul with A = W (op T, stored in x out, lda = in), B = x (op N, stored in x rows,
// ldb = in), C = D = y (out x rows, ldc = out), m = out, n = rows, k = in. The bias epilogue
// adds a vector of length m = out along D's rows: one value per output feature.
//
// fp32: CUBLAS_COMPUTE_32F (exact IEEE fp32 FMA; TF32 only when allow_tf32, then
// CUBLAS_COMPUTE_32F_FAST_TF32). fp16/bf16: inputs/outputs in T, CUBLAS_COMPUTE_32F
// accumulation, fp32 alpha/beta, bias in T.
//
// The heuristic's algorithm, descriptors and layouts are chosen once per (rows, in, out,
// dtype, epilogue, pointer alignment) and cached (bounded: kMaxPlans); the workspace is
// allocated once at creation. Not thread-safe: one Gemm per stream/engine.
#ifndef BERT_KERNELS_CUDA_GEMM_H_
#define BERT_KERNELS_CUDA_GEMM_H_

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <map>
#include <memory>
#include <tuple>

#include "kernels/cuda/cuda_utils.h"

namespace bert {
namespace cuda {

enum class GemmEpilogue {
  kNone,          // y = x·Wᵀ (bias ignored)
  kBias,          // y = x·Wᵀ + b
  kBiasGeluTanh,  // y = gelu_tanh(x·Wᵀ + b): cuBLASLt's GELU is the tanh approximation, so
                  // this is only right for gelu_tanh models (and it may use a fast tanh: the
                  // engine uses it for fp16/bf16 only); erf GELU uses kNone + LaunchBiasGelu
                  // (activation.h).
};

enum class GemmDType { kFloat32, kFloat16, kBFloat16 };

template <typename T>
struct GemmDTypeOf;
template <>
struct GemmDTypeOf<float> {
  static constexpr GemmDType value = GemmDType::kFloat32;
};
template <>
struct GemmDTypeOf<__half> {
  static constexpr GemmDType value = GemmDType::kFloat16;
};
template <>
struct GemmDTypeOf<__nv_bfloat16> {
  static constexpr GemmDType value = GemmDType::kBFloat16;
};

class Gemm {
 public:
  static constexpr size_t kDefaultWorkspaceBytes = 32u << 20;
  // The plan cache is emptied when it reaches this size (each plan is a few host KB).
  static constexpr size_t kMaxPlans = 4096;

  // Creates the cuBLASLt handle and the workspace on the current device.
  static CudaStatus Create(size_t workspace_bytes, bool allow_tf32, std::unique_ptr<Gemm>* out);

  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // y [rows, out_features] = epilogue(x [rows, in_features] · weightᵀ + bias), weight
  // [out_features, in_features], bias [out_features] (may be null for kNone). All device
  // pointers of T; y must not alias x or weight. rows == 0 does nothing.
  template <typename T>
  CudaStatus Run(const T* x, int rows, int in_features, const T* weight, const T* bias,
                 int out_features, GemmEpilogue epilogue, T* y, cudaStream_t stream) {
    return RunImpl(GemmDTypeOf<T>::value, x, rows, in_features, weight, bias, out_features,
                   epilogue, y, stream);
  }

  // Number of cached plans (for tests).
  size_t num_plans() const { return plans_.size(); }

 private:
  struct Plan;
  using Key = std::tuple<int, int, int, int, int, int>;

  Gemm() = default;
  CudaStatus RunImpl(GemmDType dtype, const void* x, int rows, int in_features, const void* weight,
                     const void* bias, int out_features, GemmEpilogue epilogue, void* y,
                     cudaStream_t stream);
  CudaStatus MakePlan(GemmDType dtype, int rows, int in_features, int out_features,
                      GemmEpilogue epilogue, int alignment, std::unique_ptr<Plan>* plan);

  CublasLtHandle handle_;
  DeviceBuffer<unsigned char> workspace_;
  bool allow_tf32_ = false;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace cuda
}  // namespace bert

#endif  // BERT_KERNELS_CUDA_GEMM_H_
