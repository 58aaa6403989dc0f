#include "kernels/cuda/gemm.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/host_convert.h"
#include "kernels/cuda/split_k_gemm.h"

namespace bert {
namespace cuda {

struct Gemm::Plan {
  GemmDType dtype = GemmDType::kFloat32;
  int rows = 0;
  int in_features = 0;
  int out_features = 0;
  GemmEpilogue epilogue = GemmEpilogue::kNone;
  int alignment = 1;  // the key's: the smallest alignment of the call's pointers
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr;  // W
  cublasLtMatrixLayout_t b = nullptr;  // x
  cublasLtMatrixLayout_t c = nullptr;  // y (C and D)
  Choice choice;
  bool has_algo = false;
  // Chosen by the heuristic while the stream was capturing (autotune on): the next call
  // that is not capturing chooses again.
  bool provisional = false;
  // The choice came from timing (this plan's or its bucket's).
  bool tuned = false;

  ~Plan() {
    if (c != nullptr) cublasLtMatrixLayoutDestroy(c);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
  }
};

namespace {

const char* EpilogueName(GemmEpilogue epilogue) {
  switch (epilogue) {
    case GemmEpilogue::kNone:
      return "none";
    case GemmEpilogue::kBias:
      return "bias";
    case GemmEpilogue::kBiasGeluTanh:
      return "bias_gelu_tanh";
    case GemmEpilogue::kBiasResidual:
      return "bias_residual";
  }
  return "?";
}

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

// One algorithm configuration attribute, or `fallback` when it cannot be read.
template <typename V>
V ConfigOr(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoConfigAttributes_t attr,
           V fallback) {
  V value{};
  size_t written = 0;
  if (cublasLtMatmulAlgoConfigGetAttribute(&algo, attr, &value, sizeof(value), &written) !=
          CUBLAS_STATUS_SUCCESS ||
      written != sizeof(value)) {
    return fallback;
  }
  return value;
}

template <typename V>
V CapOr(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoCapAttributes_t attr, V fallback) {
  V value{};
  size_t written = 0;
  if (cublasLtMatmulAlgoCapGetAttribute(&algo, attr, &value, sizeof(value), &written) !=
          CUBLAS_STATUS_SUCCESS ||
      written != sizeof(value)) {
    return fallback;
  }
  return value;
}

bool IsSixteenBit(GemmDType dtype) { return dtype != GemmDType::kFloat32; }

// The precision rule (gemm.h): a 16-bit GEMM may split K only when the partial sums are
// reduced in the compute type.
bool ReductionAllowed(const cublasLtMatmulAlgo_t& algo, GemmDType dtype) {
  if (!IsSixteenBit(dtype)) return true;
  const int32_t splits = ConfigOr<int32_t>(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, 1);
  if (splits <= 1) return true;
  const uint32_t scheme = ConfigOr<uint32_t>(algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME,
                                             CUBLASLT_REDUCTION_SCHEME_NONE);
  return scheme == CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
}

bool SameAlgo(const cublasLtMatmulAlgo_t& x, const cublasLtMatmulAlgo_t& y) {
  return std::memcmp(&x, &y, sizeof(x)) == 0;
}

// True when `stream` is capturing a graph (or its state cannot be read: then nothing that
// synchronises may run either).
bool IsCapturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) != cudaSuccess) {
    cudaGetLastError();
    return true;
  }
  return status != cudaStreamCaptureStatusNone;
}

float SixteenBitToFloat(GemmDType dtype, uint16_t bits) {
  if (dtype == GemmDType::kBFloat16) {
    __nv_bfloat16_raw raw;
    raw.x = bits;
    return HostToFloat(__nv_bfloat16(raw));
  }
  __half_raw raw;
  raw.x = bits;
  return HostToFloat(__half(raw));
}

// Copies `count` 16-bit elements of a GEMM output to the host (synchronises the stream).
bool CopyToHost(const void* y, size_t count, cudaStream_t stream, std::vector<uint16_t>* out) {
  out->resize(count);
  if (cudaMemcpyAsync(out->data(), y, count * sizeof(uint16_t), cudaMemcpyDeviceToHost, stream) !=
          cudaSuccess ||
      cudaStreamSynchronize(stream) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return true;
}

// A cuBLASLt result that our kernel's output is compared with: its values, and the scale of
// the comparison, the largest magnitude of the values minus the residual (empty: none), so
// that a large residual cannot hide a wrong product.
struct ReferenceOutput {
  std::vector<float> values;
  float scale = 0.0f;
};

ReferenceOutput MakeReferenceOutput(GemmDType dtype, const std::vector<uint16_t>& output,
                                    const std::vector<uint16_t>& residual) {
  ReferenceOutput ref;
  ref.values.reserve(output.size());
  for (size_t i = 0; i < output.size(); ++i) {
    ref.values.push_back(SixteenBitToFloat(dtype, output[i]));
    const float part =
        ref.values.back() - (residual.empty() ? 0.0f : SixteenBitToFloat(dtype, residual[i]));
    ref.scale = std::max(ref.scale, std::fabs(part));
  }
  return ref;
}

// Whether every element of `got` is within `ulps` units of the dtype's last place, taken at
// the reference's scale, plus two units of the element's own last place (its final
// rounding), of the reference. False on any NaN.
bool WithinUlps(GemmDType dtype, const std::vector<uint16_t>& got, const ReferenceOutput& ref,
                float ulps) {
  if (got.size() != ref.values.size()) return false;
  const float epsilon = dtype == GemmDType::kBFloat16 ? 1.0f / 128.0f : 1.0f / 1024.0f;
  for (size_t i = 0; i < got.size(); ++i) {
    const float want = ref.values[i];
    const float diff = std::fabs(SixteenBitToFloat(dtype, got[i]) - want);
    if (!(diff <= epsilon * (ulps * ref.scale + 2.0f * std::fabs(want)))) return false;
  }
  return true;
}

// An algorithm configuration, as DescribePlan prints it (gemm.h).
std::string DescribeAlgo(const cublasLtMatmulAlgo_t& algo) {
  std::string s;
  auto field = [&s](const char* name, long long value) {
    if (!s.empty()) s += ' ';
    s += name;
    s += '=';
    s += std::to_string(value);
  };
  field("algo", ConfigOr<int32_t>(algo, CUBLASLT_ALGO_CONFIG_ID, -1));
  field("tile", ConfigOr<uint32_t>(algo, CUBLASLT_ALGO_CONFIG_TILE_ID, 0xFFFFFFFFu));
  field("stages", ConfigOr<uint32_t>(algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, 0xFFFFFFFFu));
  field("splitK", ConfigOr<int32_t>(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, -1));
  field("reduction", ConfigOr<uint32_t>(algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, 0xFFFFFFFFu));
  field("swizzle", ConfigOr<uint32_t>(algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, 0xFFFFFFFFu));
  field("custom", ConfigOr<uint32_t>(algo, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, 0xFFFFFFFFu));
  field("inner", ConfigOr<uint16_t>(algo, CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID, 0xFFFF));
  field("cluster", ConfigOr<uint16_t>(algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, 0xFFFF));
  return s;
}

}  // namespace

SplitKEpilogue ToSplitKEpilogue(GemmEpilogue epilogue) {
  switch (epilogue) {
    case GemmEpilogue::kBias:
      return SplitKEpilogue::kBias;
    case GemmEpilogue::kBiasGeluTanh:
      return SplitKEpilogue::kBiasGeluTanh;
    case GemmEpilogue::kBiasResidual:
      return SplitKEpilogue::kBiasResidual;
    case GemmEpilogue::kNone:
    default:
      return SplitKEpilogue::kNone;
  }
}

int Gemm::RowBucket(int rows) {
  int bucket = 16;
  while (bucket < rows && bucket < (1 << 30)) bucket <<= 1;
  return bucket;
}

CudaStatus Gemm::Create(const GemmOptions& options, std::unique_ptr<Gemm>* out) {
  std::unique_ptr<Gemm> gemm(new Gemm());
  BERT_CUDA_RETURN_IF_NOT_OK(gemm->handle_.Create());
  BERT_CUDA_RETURN_IF_NOT_OK(gemm->workspace_.Allocate(options.workspace_bytes));
  gemm->options_ = options;
  const bool custom = (options.autotune && options.custom_gemm) || options.force_custom_splits > 0;
  if (options.autotune || custom) {
    int device = 0;
    BERT_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
    BERT_CUDA_RETURN_IF_ERROR(
        cudaDeviceGetAttribute(&gemm->num_sms_, cudaDevAttrMultiProcessorCount, device));
  }
  if (options.autotune) {
    BERT_CUDA_RETURN_IF_NOT_OK(gemm->timer_start_.Create());
    BERT_CUDA_RETURN_IF_NOT_OK(gemm->timer_stop_.Create());
  }
  if (custom) {
    const size_t slots = static_cast<size_t>(kCustomPartialSlotsPerSm) * gemm->num_sms_;
    BERT_CUDA_RETURN_IF_NOT_OK(
        gemm->custom_partials_.Allocate(slots * kSplitKBlockRows * kSplitKBlockCols));
    // A tile with splits > 1 takes at least two slots, so `slots` counters are enough.
    BERT_CUDA_RETURN_IF_NOT_OK(gemm->custom_counters_.Allocate(slots));
    BERT_CUDA_RETURN_IF_ERROR(
        cudaMemset(gemm->custom_counters_.get(), 0, gemm->custom_counters_.bytes()));
    // The memset runs on the legacy stream, which does not order the (non-blocking) streams
    // the kernel will run on: finish it here.
    BERT_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  }
  *out = std::move(gemm);
  return CudaStatus::Ok();
}

Gemm::~Gemm() = default;

CudaStatus Gemm::MakePlan(GemmDType dtype, int rows, int in_features, int out_features,
                          GemmEpilogue epilogue, std::unique_ptr<Plan>* out) {
  auto plan = std::make_unique<Plan>();
  plan->dtype = dtype;
  plan->rows = rows;
  plan->in_features = in_features;
  plan->out_features = out_features;
  plan->epilogue = epilogue;
  const cudaDataType_t type = DataType(dtype);
  const cublasComputeType_t compute = (dtype == GemmDType::kFloat32 && options_.allow_tf32)
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
  if (epilogue == GemmEpilogue::kBias || epilogue == GemmEpilogue::kBiasResidual) {
    epi = CUBLASLT_EPILOGUE_BIAS;
  }
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
  ++stats_.plans;
  *out = std::move(plan);
  return CudaStatus::Ok();
}

CudaStatus Gemm::Heuristic(const Plan& plan, int max_count,
                           std::vector<cublasLtMatmulHeuristicResult_t>* results) {
  const GemmDType dtype = plan.dtype;
  const int alignment = plan.alignment;
  results->clear();
  if (options_.refuse_gelu_epilogue_for_testing && plan.epilogue == GemmEpilogue::kBiasGeluTanh) {
    return CudaStatus::Unsupported("refused for the test (refuse_gelu_epilogue_for_testing)");
  }
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
  const bool filter = st == CUBLAS_STATUS_SUCCESS && options_.autotune && IsSixteenBit(dtype);
  if (filter) {
    // The precision rule (not a determinism one: cuBLASLt's reductions are reproducible):
    // no split-K reduction in the 16-bit output type (nor in place in the output). NONE is
    // 0, so this mask admits unsplit algorithms too.
    const uint32_t mask = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                              &mask, sizeof(mask));
  }
  std::vector<cublasLtMatmulHeuristicResult_t> found(std::max(max_count, 1));
  int returned = 0;
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = cublasLtMatmulAlgoGetHeuristic(handle_.get(), plan.desc, plan.a, plan.b, plan.c, plan.c,
                                        pref, static_cast<int>(found.size()), found.data(),
                                        &returned);
  }
  if (filter && (st != CUBLAS_STATUS_SUCCESS || returned == 0)) {
    // Should the mask exclude unsplit algorithms after all, ask without it and apply the
    // rule to what comes back.
    const uint32_t all = CUBLASLT_REDUCTION_SCHEME_MASK;
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                              &all, sizeof(all));
    returned = 0;
    if (st == CUBLAS_STATUS_SUCCESS) {
      st = cublasLtMatmulAlgoGetHeuristic(handle_.get(), plan.desc, plan.a, plan.b, plan.c, plan.c,
                                          pref, static_cast<int>(found.size()), found.data(),
                                          &returned);
    }
  }
  cublasLtMatmulPreferenceDestroy(pref);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED) {
    return CudaStatus::Unsupported(std::string("cuBLASLt does not support this ") +
                                   DTypeName(dtype) + " GEMM (CUBLAS_STATUS_NOT_SUPPORTED)");
  }
  BERT_CUBLAS_RETURN_IF_ERROR(st);
  for (int i = 0; i < returned && i < static_cast<int>(found.size()); ++i) {
    if (found[i].state == CUBLAS_STATUS_SUCCESS && found[i].workspaceSize <= ws &&
        (!filter || ReductionAllowed(found[i].algo, dtype)) &&
        // A separate residual C (kBiasResidual): only algorithms that write D out of place.
        (plan.epilogue != GemmEpilogue::kBiasResidual ||
         CapOr<int32_t>(found[i].algo, CUBLASLT_ALGO_CAP_OUT_OF_PLACE_RESULT_SUPPORT, 1) != 0)) {
      results->push_back(found[i]);
    }
  }
  if (results->empty()) {
    return CudaStatus::Unsupported("cuBLASLt has no algorithm for this " +
                                   std::string(DTypeName(dtype)) + " GEMM (alignment " +
                                   std::to_string(alignment) + ")");
  }
  return CudaStatus::Ok();
}

CudaStatus Gemm::Matmul(const Plan& plan, const Choice& choice, const Operands& ops,
                        cudaStream_t stream) const {
  if (choice.custom_splits > 0) {
    SplitKGemmArgs args = CustomArgs(plan, ops);
    args.splits = choice.custom_splits;
    args.programmatic = options_.programmatic_launch;
    if (args.splits > 1) {
      if (SplitKGemmPartialFloats(plan.rows, plan.out_features, args.splits) >
              custom_partials_.size() ||
          static_cast<size_t>(SplitKGemmTiles(plan.rows, plan.out_features)) >
              custom_counters_.size()) {
        return CudaStatus::Error("split_k_gemm: the workspace is too small for this shape");
      }
      args.partials = custom_partials_.get();
      args.counters = custom_counters_.get();
    }
    const SplitKEpilogue epilogue = ToSplitKEpilogue(plan.epilogue);
    if (plan.dtype == GemmDType::kFloat16) {
      BERT_CUDA_RETURN_IF_ERROR(LaunchSplitKGemm<__half>(args, epilogue, stream));
    } else if (plan.dtype == GemmDType::kBFloat16) {
      BERT_CUDA_RETURN_IF_ERROR(LaunchSplitKGemm<__nv_bfloat16>(args, epilogue, stream));
    } else {
      return CudaStatus::Error("split_k_gemm: fp16/bf16 only");
    }
    return CudaStatus::Ok();
  }
  // D = W·x + beta·C (+ the epilogue's bias): C is the residual (beta = 1) or unused.
  const float alpha = 1.0f;
  const float beta = ops.residual != nullptr ? 1.0f : 0.0f;
  const void* c = ops.residual != nullptr ? ops.residual : ops.y;
  const cublasStatus_t status =
      options_.refuse_gelu_epilogue_at_run_for_testing &&
              plan.epilogue == GemmEpilogue::kBiasGeluTanh
          ? CUBLAS_STATUS_NOT_SUPPORTED
          : cublasLtMatmul(handle_.get(), plan.desc, &alpha, ops.weight, plan.a, ops.x, plan.b,
                           &beta, c, plan.c, ops.y, plan.c, &choice.algo, workspace_.get(),
                           workspace_.bytes(), stream);
  if (status == CUBLAS_STATUS_NOT_SUPPORTED) {
    // Refused before anything was enqueued: the caller may do the work another way.
    return CudaStatus::Unsupported(
        MakeCublasStatus(status, "cublasLtMatmul", __FILE__, __LINE__).message());
  }
  BERT_CUBLAS_RETURN_IF_ERROR(status);
  return CudaStatus::Ok();
}

SplitKGemmArgs Gemm::CustomArgs(const Plan& plan, const Operands& ops) {
  SplitKGemmArgs args;
  args.x = ops.x;
  args.weight = ops.weight;
  args.bias = ops.bias;
  args.residual = ops.residual;
  args.y = ops.y;
  args.rows = plan.rows;
  args.in_features = plan.in_features;
  args.out_features = plan.out_features;
  return args;
}

std::vector<int> Gemm::CustomSplits(const Plan& plan, const Operands& ops) const {
  std::vector<int> splits;
  // The workspace exists only with custom_gemm (and autotune) or force_custom_splits. The
  // alignment is the plan key's, so that every later call of the plan qualifies too.
  if (custom_counters_.size() == 0 || !IsSixteenBit(plan.dtype) || plan.alignment < 16) {
    return splits;
  }
  // Sized for the whole row bucket: its later plans (up to bucket_rows rows) reuse the choice.
  const int bucket_rows = RowBucket(plan.rows);
  if (bucket_rows > kCustomMaxRows) return splits;
  if (!SplitKGemmUnsupported(CustomArgs(plan, ops), ToSplitKEpilogue(plan.epilogue)).empty()) {
    return splits;
  }
  const long long tiles = SplitKGemmTiles(bucket_rows, plan.out_features);
  const long long slots = static_cast<long long>(custom_counters_.size());
  for (const int count : {1, 2, 3, 4, 6, 8, 12, 16}) {
    if (count > kSplitKMaxSplits) break;
    if (count > 1 && (!SplitKEverySplitBusy(plan.in_features, count) || tiles * count > slots)) {
      continue;
    }
    splits.push_back(count);
  }
  return splits;
}

bool Gemm::TimeChoice(const Plan& plan, const Choice& choice, const Operands& ops,
                      cudaStream_t stream, float* ms) {
  // One eager run first: it loads the kernel (never inside a capture) and shows whether the
  // candidate runs at all. Then kRunsPerSample back-to-back runs are captured into a graph,
  // as the engine runs its GEMMs: timing the graph measures the kernels, not the host's
  // launch rate, which for small GEMMs is as slow as the kernels themselves. A stream that
  // cannot capture (the legacy default stream) is timed with eager launches instead.
  auto fail = [stream](cudaGraph_t graph, cudaGraphExec_t exec) {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    if (graph != nullptr) cudaGraphDestroy(graph);
    // Let whatever was queued finish before the next candidate reuses the workspace and y;
    // drop the (non-sticky) error so later calls start clean.
    cudaStreamSynchronize(stream);
    cudaGetLastError();
    return false;
  };
  if (options_.fail_timing_for_testing || !Matmul(plan, choice, ops, stream).ok()) {
    return fail(nullptr, nullptr);
  }
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed) == cudaSuccess) {
    bool captured = true;
    for (int r = 0; captured && r < kRunsPerSample; ++r) {
      captured = Matmul(plan, choice, ops, stream).ok();
    }
    // End the capture whatever happened, so that the stream is usable again.
    captured = cudaStreamEndCapture(stream, &graph) == cudaSuccess && captured && graph != nullptr;
    if (!captured || cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) {
      return fail(graph, exec);
    }
  } else {
    cudaGetLastError();
  }
  // Eager timing: the first run above is still queued when the start event is recorded.
  auto launch = [&]() {
    if (exec != nullptr) return cudaGraphLaunch(exec, stream) == cudaSuccess;
    for (int r = 0; r < kRunsPerSample; ++r) {
      if (!Matmul(plan, choice, ops, stream).ok()) return false;
    }
    return true;
  };
  float best = std::numeric_limits<float>::infinity();
  bool ok = exec == nullptr || launch();  // the graph's warm-up
  for (int sample = 0; ok && sample < kTimedSamples; ++sample) {
    float elapsed = 0.0f;
    ok = cudaEventRecord(timer_start_.get(), stream) == cudaSuccess && launch() &&
         cudaEventRecord(timer_stop_.get(), stream) == cudaSuccess &&
         cudaEventSynchronize(timer_stop_.get()) == cudaSuccess &&
         cudaEventElapsedTime(&elapsed, timer_start_.get(), timer_stop_.get()) == cudaSuccess;
    if (ok) best = std::min(best, elapsed / kRunsPerSample);
  }
  if (!ok) return fail(graph, exec);
  if (exec != nullptr) cudaGraphExecDestroy(exec);
  if (graph != nullptr) cudaGraphDestroy(graph);
  *ms = best;
  return true;
}

CudaStatus Gemm::Tune(Plan* plan, const Key& key, const Operands& ops, cudaStream_t stream) {
  const int rows = plan->rows;
  const int in_features = plan->in_features;
  const int out_features = plan->out_features;
  const GemmDType dtype = plan->dtype;
  std::vector<cublasLtMatmulHeuristicResult_t> heuristic;
  BERT_CUDA_RETURN_IF_NOT_OK(Heuristic(*plan, kAutotuneCandidates, &heuristic));
  std::vector<Choice> candidates;
  auto add = [&candidates](const cublasLtMatmulAlgo_t& algo) {
    for (const auto& c : candidates) {
      if (SameAlgo(c.algo, algo)) return;
    }
    Choice choice;
    choice.algo = algo;
    candidates.push_back(choice);
  };
  // (Heuristic has applied the precision rule already.)
  for (const auto& h : heuristic) add(h.algo);

  // Split-K for outputs that likely leave SMs idle: with 128x128 tiles, or whenever the
  // heuristic itself reports less than one wave.
  const long long tiles_128 =
      static_cast<long long>((out_features + 127) / 128) * ((rows + 127) / 128);
  const bool few_tiles = num_sms_ <= 0 || tiles_128 < num_sms_;
  const size_t ws = workspace_.bytes();
  const int base = std::min<int>(kSplitKBaseCandidates, static_cast<int>(heuristic.size()));
  for (int i = 0; i < base; ++i) {
    const cublasLtMatmulHeuristicResult_t& h = heuristic[i];
    const bool low_waves = h.wavesCount > 0.0f && h.wavesCount < 1.0f;
    if (!few_tiles && !low_waves) continue;
    if (CapOr<int32_t>(h.algo, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, 0) == 0) continue;
    if (ConfigOr<int32_t>(h.algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, 1) > 1) continue;
    const uint32_t schemes = CapOr<uint32_t>(h.algo, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK, 0);
    uint32_t scheme = CUBLASLT_REDUCTION_SCHEME_NONE;
    if (schemes & CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE) {
      scheme = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    } else if (!IsSixteenBit(dtype) && (schemes & CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE)) {
      scheme = CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE;  // fp32 output = compute type
    } else {
      continue;
    }
    for (const int32_t splits : {2, 4, 8}) {
      if (in_features / splits < 32) break;  // too little K per split to pay off
      cublasLtMatmulAlgo_t algo = h.algo;
      if (cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splits,
                                               sizeof(splits)) != CUBLAS_STATUS_SUCCESS ||
          cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME,
                                               &scheme, sizeof(scheme)) != CUBLAS_STATUS_SUCCESS) {
        continue;
      }
      cublasLtMatmulHeuristicResult_t check = {};
      if (cublasLtMatmulAlgoCheck(handle_.get(), plan->desc, plan->a, plan->b, plan->c, plan->c,
                                  &algo, &check) != CUBLAS_STATUS_SUCCESS ||
          check.workspaceSize > ws) {
        continue;
      }
      add(algo);
    }
  }

  int best_index = -1;
  float best_ms = std::numeric_limits<float>::infinity();
  // Later candidates (lower in the heuristic's order, then ours) must win by more than
  // timing noise.
  auto consider = [&](int index, float ms) {
    if (best_index < 0 || ms < best_ms * 0.98f) {
      best_index = index;
      best_ms = ms;
    }
  };
  for (size_t i = 0; i < candidates.size(); ++i) {
    float ms = 0.0f;
    if (!TimeChoice(*plan, candidates[i], ops, stream, &ms)) continue;
    ++stats_.timed_candidates;
    consider(static_cast<int>(i), ms);
  }

  // Our kernel: timed the same way, and a candidate only if its output agrees with
  // cuBLASLt's (the best algorithm so far, run once more on the same operands).
  const std::vector<int> custom = CustomSplits(*plan, ops);
  if (!custom.empty()) {
    Choice reference_choice;
    reference_choice.algo = best_index >= 0 ? candidates[best_index].algo : heuristic[0].algo;
    const size_t count = static_cast<size_t>(rows) * out_features;
    std::vector<uint16_t> output;
    std::vector<uint16_t> residual;  // kBiasResidual only
    const bool have_reference =
        Matmul(*plan, reference_choice, ops, stream).ok() &&
        CopyToHost(ops.y, count, stream, &output) &&
        (ops.residual == nullptr || CopyToHost(ops.residual, count, stream, &residual));
    const ReferenceOutput reference =
        have_reference ? MakeReferenceOutput(dtype, output, residual) : ReferenceOutput();
    for (size_t i = 0; have_reference && i < custom.size(); ++i) {
      Choice choice;
      choice.custom_splits = custom[i];
      float ms = 0.0f;
      if (!TimeChoice(*plan, choice, ops, stream, &ms)) continue;
      ++stats_.timed_candidates;
      ++stats_.custom_timed;
      if (!CopyToHost(ops.y, count, stream, &output) ||
          !WithinUlps(dtype, output, reference, kCustomTolerance)) {
        ++stats_.custom_mismatches;
        continue;
      }
      candidates.push_back(choice);
      consider(static_cast<int>(candidates.size()) - 1, ms);
    }
  }

  ++stats_.tuned_buckets;
  if (best_index < 0) {
    ++stats_.tuning_fallbacks;
    if (failed_tunings_.size() >= kMaxTunedBuckets) failed_tunings_.clear();
    int& failures = failed_tunings_[BucketKey(key)];
    if (++failures == kMaxTuningAttempts) ++stats_.abandoned_buckets;
    // No candidate ran: the heuristic's first choice is kept only if it runs (once, on the
    // caller's operands; the call is idempotent), so that a plan never keeps an algorithm
    // seen to fail, and a refusal (Unsupported) reaches the caller, who may take another way.
    Choice first;
    first.algo = heuristic[0].algo;
    if (const CudaStatus ran = Matmul(*plan, first, ops, stream); !ran.ok()) return ran;
    plan->choice = first;
    plan->tuned = false;
  } else {
    plan->choice = candidates[best_index];
    plan->tuned = true;
    if (plan->choice.custom_splits > 0) ++stats_.custom_chosen;
  }
  plan->has_algo = true;
  plan->provisional = false;
  if (plan->tuned) {  // a bucket whose tuning failed is tried again by its next new plan
    if (tuned_.size() >= kMaxTunedBuckets) tuned_.clear();
    tuned_[BucketKey(key)] = plan->choice;
  }
  return CudaStatus::Ok();
}

Gemm::Key Gemm::BucketKey(const Key& key) {
  Key bucket = key;
  std::get<0>(bucket) = RowBucket(std::get<0>(key));
  return bucket;
}

CudaStatus Gemm::SelectAlgo(Plan* plan, const Key& key, bool capturing, const Operands& ops,
                            cudaStream_t stream) {
  std::vector<cublasLtMatmulHeuristicResult_t> top;
  if (options_.force_custom_splits > 0) {
    const std::vector<int> splits = CustomSplits(*plan, ops);
    if (!splits.empty()) {
      int chosen = splits.front();  // ascending: the largest not above the forced count
      for (const int count : splits) {
        if (count <= options_.force_custom_splits) chosen = count;
      }
      plan->choice = Choice();
      plan->choice.custom_splits = chosen;
      plan->has_algo = true;
      plan->tuned = false;
      plan->provisional = false;
      ++stats_.custom_forced;
      return CudaStatus::Ok();
    }
  }
  auto bucket = options_.autotune ? tuned_.find(BucketKey(key)) : tuned_.end();
  const auto failed = failed_tunings_.find(BucketKey(key));
  const bool abandoned = failed != failed_tunings_.end() && failed->second >= kMaxTuningAttempts;
  if (bucket == tuned_.end() && (!options_.autotune || capturing || abandoned)) {
    // Nothing to time with (tuning off, or abandoned for this bucket): the heuristic's first
    // choice. While capturing it is provisional, and the first later call that is not
    // capturing tunes the bucket (unless it is abandoned).
    BERT_CUDA_RETURN_IF_NOT_OK(Heuristic(*plan, 1, &top));
    plan->choice = Choice();
    plan->choice.algo = top[0].algo;
    plan->has_algo = true;
    plan->tuned = false;
    plan->provisional = options_.autotune && !abandoned;
    if (plan->provisional) ++stats_.capture_selections;
    return CudaStatus::Ok();
  }
  if (bucket == tuned_.end()) return Tune(plan, key, ops, stream);
  // A tuned bucket (AlgoCheck and CustomSplits are host calls: fine while capturing too).
  const Choice& tuned = bucket->second;
  bool usable = false;
  if (tuned.custom_splits > 0) {
    const std::vector<int> splits = CustomSplits(*plan, ops);
    usable = std::find(splits.begin(), splits.end(), tuned.custom_splits) != splits.end();
  } else {
    cublasLtMatmulHeuristicResult_t check = {};
    usable = cublasLtMatmulAlgoCheck(handle_.get(), plan->desc, plan->a, plan->b, plan->c, plan->c,
                                     &tuned.algo, &check) == CUBLAS_STATUS_SUCCESS &&
             check.workspaceSize <= workspace_.bytes();
  }
  if (usable) {
    plan->choice = tuned;
    plan->tuned = true;
    ++stats_.bucket_reuses;
  } else {
    BERT_CUDA_RETURN_IF_NOT_OK(Heuristic(*plan, 1, &top));
    plan->choice = Choice();
    plan->choice.algo = top[0].algo;
    plan->tuned = false;
    ++stats_.bucket_rejections;
  }
  plan->has_algo = true;
  plan->provisional = false;
  return CudaStatus::Ok();
}

CudaStatus Gemm::RunImpl(GemmDType dtype, const void* x, int rows, int in_features,
                         const void* weight, const void* bias, int out_features,
                         GemmEpilogue epilogue, void* y, const void* residual,
                         cudaStream_t stream) {
  if (rows < 0 || in_features <= 0 || out_features <= 0) {
    return CudaStatus::Error("Gemm: bad shape rows=" + std::to_string(rows) + " in=" +
                             std::to_string(in_features) + " out=" + std::to_string(out_features));
  }
  if (rows == 0) return CudaStatus::Ok();
  if (epilogue != GemmEpilogue::kNone && bias == nullptr) {
    return CudaStatus::Error("Gemm: a bias epilogue needs a bias");
  }
  if ((epilogue == GemmEpilogue::kBiasResidual) != (residual != nullptr)) {
    return CudaStatus::Error("Gemm: a residual goes with (and only with) kBiasResidual");
  }
  const Operands ops{x, weight, bias, residual, y};
  int alignment = AlignmentOf(x);
  if (AlignmentOf(weight) < alignment) alignment = AlignmentOf(weight);
  if (AlignmentOf(y) < alignment) alignment = AlignmentOf(y);
  // cuBLASLt's heuristic and AlgoCheck also take the bias pointer's alignment into account.
  if (epilogue != GemmEpilogue::kNone && AlignmentOf(bias) < alignment) {
    alignment = AlignmentOf(bias);
  }
  if (residual != nullptr && AlignmentOf(residual) < alignment) alignment = AlignmentOf(residual);
  const Key key(rows, in_features, out_features, static_cast<int>(dtype),
                static_cast<int>(epilogue), alignment);
  auto it = plans_.find(key);
  if (it == plans_.end()) {
    // Serving sees many row counts: bound the cache (plans are cheap to rebuild; tuned
    // algorithms live on in tuned_).
    if (plans_.size() >= kMaxPlans) plans_.clear();
    std::unique_ptr<Plan> plan;
    BERT_CUDA_RETURN_IF_NOT_OK(MakePlan(dtype, rows, in_features, out_features, epilogue, &plan));
    plan->alignment = alignment;
    it = plans_.emplace(key, std::move(plan)).first;
  }
  Plan& plan = *it->second;
  // Before choosing: AlgoCheck and the timed runs see the real bias pointer.
  if (epilogue != GemmEpilogue::kNone) {
    BERT_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  if (!plan.has_algo || plan.provisional) {
    const bool capturing = options_.autotune && IsCapturing(stream);
    if (!plan.has_algo || !capturing) {
      const CudaStatus selected = SelectAlgo(&plan, key, capturing, ops, stream);
      if (!selected.ok()) {
        return selected.WithContext(
            " [" + std::string(DTypeName(dtype)) + " GEMM rows=" + std::to_string(rows) +
            " in=" + std::to_string(in_features) + " out=" + std::to_string(out_features) +
            " epilogue=" + EpilogueName(epilogue) + "]");
      }
    }
  }
  return Matmul(plan, plan.choice, ops, stream);
}

std::string Gemm::DescribePlanImpl(GemmDType dtype, int rows, int in_features, int out_features,
                                   GemmEpilogue epilogue) const {
  const Key first(rows, in_features, out_features, static_cast<int>(dtype),
                  static_cast<int>(epilogue), 0);
  auto it = plans_.lower_bound(first);
  if (it == plans_.end() || std::get<0>(it->first) != rows ||
      std::get<1>(it->first) != in_features || std::get<2>(it->first) != out_features ||
      std::get<3>(it->first) != std::get<3>(first) ||
      std::get<4>(it->first) != std::get<4>(first) || !it->second->has_algo) {
    return "";
  }
  const Plan& plan = *it->second;
  cublasLtMatmulHeuristicResult_t check = {};
  if (plan.choice.custom_splits > 0) {
    std::string s = "split_k_gemm splits=" + std::to_string(plan.choice.custom_splits);
    s += " align=" + std::to_string(std::get<5>(it->first));
    if (plan.tuned) s += " [tuned]";
    return s;
  }
  std::string s = DescribeAlgo(plan.choice.algo);
  if (cublasLtMatmulAlgoCheck(handle_.get(), plan.desc, plan.a, plan.b, plan.c, plan.c,
                              &plan.choice.algo, &check) == CUBLAS_STATUS_SUCCESS) {
    char extra[64];
    std::snprintf(extra, sizeof(extra), " waves=%.2f ws=%zu", check.wavesCount,
                  check.workspaceSize);
    s += extra;
  }
  s += " align=" + std::to_string(std::get<5>(it->first));
  if (plan.tuned) s += " [tuned]";
  if (plan.provisional) s += " [provisional]";
  return s;
}

}  // namespace cuda
}  // namespace bert
