#include "kernels/cuda/gemm.h"

#include <cstdint>
#include <string>

namespace bert {
namespace cuda {

struct Gemm::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr;  // W
  cublasLtMatrixLayout_t b = nullptr;  // x
  cublasLtMatrixLayout_t c = nullptr;  // y (C and D)
  cublasLtMatmulAlgo_t algo;

  ~Plan() {
    if (c != nullptr) cublasLtMatrixLayoutDestroy(c);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
  }
};

namespace {

cudaDataType_t DataType(GemmDType dtype) {
  switch (dtype) {
    case GemmDType::kFloat16:
      return CUDA_R_16F;
    case GemmDType::kBFloat16:
      return CUDA_R_16BF;
    case GemmDType::kFloat32:
    default:
      return CUDA_R_32F;
  }
}

const char* DTypeName(GemmDType dtype) {
  switch (dtype) {
    case GemmDType::kFloat16:
      return "fp16";
    case GemmDType::kBFloat16:
      return "bf16";
    case GemmDType::kFloat32:
    default:
      return "fp32";
  }
}

// Largest power of two (<= 256) dividing the address.
int AlignmentOf(const void* p) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(p);
  int a = 256;
  while (a > 1 && v % a != 0) a >>= 1;
  return a;
}

}  // namespace

CudaStatus Gemm::Create(size_t workspace_bytes, bool allow_tf32, std::unique_ptr<Gemm>* out) {
  std::unique_ptr<Gemm> gemm(new Gemm());
  BERT_CUDA_RETURN_IF_NOT_OK(gemm->handle_.Create());
  BERT_CUDA_RETURN_IF_NOT_OK(gemm->workspace_.Allocate(workspace_bytes));
  gemm->allow_tf32_ = allow_tf32;
  *out = std::move(gemm);
  return CudaStatus::Ok();
}

Gemm::~Gemm() = default;

CudaStatus Gemm::MakePlan(GemmDType dtype, int rows, int in_features, int out_features,
                          GemmEpilogue epilogue, int alignment, std::unique_ptr<Plan>* out) {
  auto plan = std::make_unique<Plan>();
  const cudaDataType_t type = DataType(dtype);
  const cublasComputeType_t compute = (dtype == GemmDType::kFloat32 && allow_tf32_)
                                          ? CUBLAS_COMPUTE_32F_FAST_TF32
                                          : CUBLAS_COMPUTE_32F;
  BERT_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&plan->desc, compute, CUDA_R_32F));
  const cublasOperation_t trans_a = CUBLAS_OP_T;
  const cublasOperation_t trans_b = CUBLAS_OP_N;
  BERT_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
  BERT_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
  cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
  if (epilogue == GemmEpilogue::kBias) epi = CUBLASLT_EPILOGUE_BIAS;
  if (epilogue == GemmEpilogue::kBiasGeluTanh) epi = CUBLASLT_EPILOGUE_GELU_BIAS;
  BERT_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  // The bias vector has the output's type (cuBLASLt's default for non-FP8 GEMMs).
  // See gemm.h: A = W stored (in x out), B = x stored (in x rows), C = D = y (out x rows).
  BERT_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatrixLayoutCreate(&plan->a, type, in_features, out_features, in_features));
  BERT_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatrixLayoutCreate(&plan->b, type, in_features, rows, in_features));
  BERT_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatrixLayoutCreate(&plan->c, type, out_features, rows, out_features));

  cublasLtMatmulPreference_t pref = nullptr;
  BERT_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
  const size_t ws = workspace_.bytes();
  const uint32_t align = static_cast<uint32_t>(alignment);
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  const cublasLtMatmulPreferenceAttributes_t align_attrs[] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (auto attr : align_attrs) {
    if (st == CUBLAS_STATUS_SUCCESS) {
      st = cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align));
    }
  }
  cublasLtMatmulHeuristicResult_t result = {};
  int returned = 0;
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = cublasLtMatmulAlgoGetHeuristic(handle_.get(), plan->desc, plan->a, plan->b, plan->c,
                                        plan->c, pref, 1, &result, &returned);
  }
  cublasLtMatmulPreferenceDestroy(pref);
  BERT_CUBLAS_RETURN_IF_ERROR(st);
  if (returned == 0 || result.state != CUBLAS_STATUS_SUCCESS) {
    return CudaStatus::Error("cuBLASLt has no algorithm for " + std::string(DTypeName(dtype)) +
                             " GEMM rows=" + std::to_string(rows) + " in=" +
                             std::to_string(in_features) + " out=" + std::to_string(out_features) +
                             " epilogue=" + std::to_string(static_cast<int>(epilogue)));
  }
  plan->algo = result.algo;
  *out = std::move(plan);
  return CudaStatus::Ok();
}

CudaStatus Gemm::RunImpl(GemmDType dtype, const void* x, int rows, int in_features,
                         const void* weight, const void* bias, int out_features,
                         GemmEpilogue epilogue, void* y, cudaStream_t stream) {
  if (rows < 0 || in_features <= 0 || out_features <= 0) {
    return CudaStatus::Error("Gemm: bad shape rows=" + std::to_string(rows) + " in=" +
                             std::to_string(in_features) + " out=" + std::to_string(out_features));
  }
  if (rows == 0) return CudaStatus::Ok();
  if (epilogue != GemmEpilogue::kNone && bias == nullptr) {
    return CudaStatus::Error("Gemm: a bias epilogue needs a bias");
  }
  int alignment = AlignmentOf(x);
  if (AlignmentOf(weight) < alignment) alignment = AlignmentOf(weight);
  if (AlignmentOf(y) < alignment) alignment = AlignmentOf(y);
  const Key key(rows, in_features, out_features, static_cast<int>(dtype),
                static_cast<int>(epilogue), alignment);
  auto it = plans_.find(key);
  if (it == plans_.end()) {
    // Serving sees many row counts: bound the cache (plans are cheap to rebuild).
    if (plans_.size() >= kMaxPlans) plans_.clear();
    std::unique_ptr<Plan> plan;
    BERT_CUDA_RETURN_IF_NOT_OK(
        MakePlan(dtype, rows, in_features, out_features, epilogue, alignment, &plan));
    it = plans_.emplace(key, std::move(plan)).first;
  }
  Plan& plan = *it->second;
  if (epilogue != GemmEpilogue::kNone) {
    BERT_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  const float alpha = 1.0f;
  const float beta = 0.0f;
  BERT_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(handle_.get(), plan.desc, &alpha, weight, plan.a, x,
                                             plan.b, &beta, y, plan.c, y, plan.c, &plan.algo,
                                             workspace_.get(), workspace_.bytes(), stream));
  return CudaStatus::Ok();
}

}  // namespace cuda
}  // namespace bert
