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
// Plans: descriptors and layouts are made once per exact (rows, in, out, dtype, epilogue,
// pointer alignment) and cached (bounded: kMaxPlans); the workspace is allocated once at
// creation.
//
// Algorithm choice. With GemmOptions::autotune off (the default), each plan uses
// cuBLASLt's heuristic top-1. With autotune on, the first plan of a bucket — (rows rounded up
// to a power of two, at least 16; in; out; dtype; epilogue; alignment of x, W, y and the
// bias) — is tuned: up to kAutotuneCandidates heuristic algorithms, plus split-K variants
// (2/4/8) of the first few when the output is likely to cover fewer tiles than the GPU has
// SMs, each run on the caller's stream with the caller's real operands (the call is
// idempotent: y aliases none of x, W, the bias or the residual, so each run rewrites y from
// the same inputs): one eager run, then
// kRunsPerSample back-to-back runs captured into a CUDA graph (as the engine runs them, so
// that small GEMMs are timed by their kernels and not by the host's launch rate), launched
// once to warm up and kTimedSamples times under CUDA events; the fastest sample wins, and a
// later candidate must beat an earlier one by 2 %. A candidate that fails is skipped; if all
// fail, the plan keeps the heuristic top-1 and the bucket is tried again by its next new
// plan. Cost: one time per bucket, a few ms (more for large rows), and it SYNCHRONISES the
// stream. Later plans in a tuned bucket (another exact row count) reuse the bucket's
// algorithm when cublasLtMatmulAlgoCheck accepts it for their layouts, else the heuristic
// top-1; no timing. While `stream` is capturing a CUDA graph nothing is timed: a plan of a
// tuned bucket takes the bucket's algorithm as above; otherwise it uses the heuristic top-1
// and is re-chosen (tuned) by the first later call that is not capturing. Do not call Run
// on a non-capturing stream while another stream of this thread is capturing in global mode
// (timing syncs and captures).
//
// Our own kernel (GemmOptions::custom_gemm, with autotune only): for fp16/bf16 buckets of at
// most kCustomMaxRows rows whose shape and pointers split_k_gemm.h supports, the split-K
// kernel of split_k_gemm.h with 1 to 16 splits joins the timed candidates (split counts that
// leave no split empty and fit the partial-sum workspace, which is sized once at creation:
// kCustomPartialSlotsPerSm tiles per SM). Before it may win, its output is checked against
// cuBLASLt's on the same operands (the fastest cuBLASLt candidate, run once more): a candidate
// that differs by more than kCustomTolerance 16-bit ulps of the largest output (for
// kBiasResidual: of the largest output minus its residual, so that a large residual does not
// hide a wrong product), plus two ulps of the element itself, is dropped
// (stats().custom_mismatches) and never chosen. Operands must be 16-byte aligned (the plan's
// alignment key), so every later call of the plan is too. The kernel reduces its splits in fp32, in
// split order, inside the same launch.
//
// Precision rule with autotune: for fp16/bf16 a split-K reduction never happens in the
// 16-bit output type — the heuristic is asked only for algorithms whose reduction scheme is
// NONE or COMPUTE_TYPE (fp32 partial sums in the workspace; should that filter return
// nothing, the unfiltered answer is filtered the same way), and split-K variants are made
// only with CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE. fp32 (output = compute type) is not
// filtered: the heuristic may return any scheme, and split-K variants use COMPUTE_TYPE or
// OUTPUT_TYPE. Split-K changes the summation order, so results differ from the untuned path
// by rounding only (within the dtype's usual tolerance). With autotune off the heuristic is
// queried without a reduction-scheme filter.
//
// Not thread-safe: one Gemm per stream/engine.
#ifndef BERT_KERNELS_CUDA_GEMM_H_
#define BERT_KERNELS_CUDA_GEMM_H_

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cuda/cuda_utils.h"
#include "kernels/cuda/gemm_stats.h"
#include "kernels/cuda/split_k_gemm.h"

namespace bert {
namespace cuda {

enum class GemmEpilogue {
  kNone,          // y = x·Wᵀ (bias ignored)
  kBias,          // y = x·Wᵀ + b
  kBiasGeluTanh,  // y = gelu_tanh(x·Wᵀ + b): cuBLASLt's GELU is the tanh approximation
                  // (and may use a fast tanh). The engine uses it in fp16/bf16 with
                  // fused_gelu, for erf-GELU models too (the forms differ by < 1/4 fp16 ulp);
                  // otherwise kNone + LaunchBiasGelu (activation.h) in the model's form.
  kBiasResidual,  // y = x·Wᵀ + b + residual (cuBLASLt: C = residual, beta = 1, C != D)
};

// The same epilogue for our split-K kernel.
SplitKEpilogue ToSplitKEpilogue(GemmEpilogue epilogue);

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

inline constexpr size_t kGemmDefaultWorkspaceBytes = 32u << 20;

struct GemmOptions {
  // cuBLASLt workspace (also bounds split-K candidates' partial sums).
  size_t workspace_bytes = kGemmDefaultWorkspaceBytes;
  // fp32 only: CUBLAS_COMPUTE_32F_FAST_TF32 instead of exact fp32.
  bool allow_tf32 = false;
  // Timed algorithm selection per row bucket (see the header comment).
  bool autotune = false;
  // With autotune: our split-K kernel as candidates for few rows (see the header comment).
  bool custom_gemm = false;
  // Launch our split-K kernel as a programmatic dependent launch (kernels/cuda/launch.cuh;
  // compute capability >= 9.0 only). cuBLASLt's kernels are launched normally. The kernel
  // then reads its first weight tiles before the previous kernel on the stream has finished:
  // that kernel must not write the weights (the engine's never do).
  bool programmatic_launch = false;
  // Tests and benchmarks only: every fp16/bf16 plan our kernel supports (rows <= kCustomMaxRows,
  // 16-byte aligned operands) runs it with this many splits (or the largest valid count
  // below), chosen without timing or comparison with cuBLASLt; 0: off.
  int force_custom_splits = 0;
  // Tests only: every timed run of a tuning candidate fails, as if no candidate could run.
  bool fail_timing_for_testing = false;
  // Tests only: the heuristic finds no algorithm for the GELU epilogue, as if cuBLASLt had
  // none (Run returns CudaStatus::Unsupported, enqueuing nothing).
  bool refuse_gelu_epilogue_for_testing = false;
  // Tests only: the heuristic offers algorithms for the GELU epilogue, but cublasLtMatmul
  // refuses each (NOT_SUPPORTED) when it is run, as it may for a layout it does not take:
  // Run returns CudaStatus::Unsupported too, enqueuing nothing, and keeps no algorithm.
  bool refuse_gelu_epilogue_at_run_for_testing = false;
};

class Gemm {
 public:
  // The plan cache is emptied when it reaches this size (each plan is a few host KB).
  static constexpr size_t kMaxPlans = 4096;
  // The tuned-bucket cache is emptied when it reaches this size (64 bytes per entry).
  static constexpr size_t kMaxTunedBuckets = 4096;
  // A bucket whose tuning found no runnable candidate this many times is no longer tuned:
  // its plans take the heuristic's first choice, as without autotune (a transient failure
  // gets another try; a systematic one does not cost every new row count a full tuning).
  static constexpr int kMaxTuningAttempts = 2;
  // Autotune: heuristic candidates requested, how many of them get split-K variants,
  // split-K factors tried, and timing repetitions.
  static constexpr int kAutotuneCandidates = 8;
  static constexpr int kSplitKBaseCandidates = 3;
  static constexpr int kTimedSamples = 3;
  static constexpr int kRunsPerSample = 4;
  // Our kernel: the largest row bucket it is tried for, its partial-sum workspace (64 x 64
  // fp32 tiles per SM, 16 KB each) and the agreement it must show with cuBLASLt.
  static constexpr int kCustomMaxRows = 256;
  static constexpr int kCustomPartialSlotsPerSm = 2;
  static constexpr float kCustomTolerance = 8.0f;

  // Creates the cuBLASLt handle and the workspace on the current device.
  static CudaStatus Create(const GemmOptions& options, std::unique_ptr<Gemm>* out);

  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // y [rows, out_features] = epilogue(x [rows, in_features] · weightᵀ + bias), weight
  // [out_features, in_features], bias [out_features] (may be null for kNone); with
  // kBiasResidual, `residual` [rows, out_features] is added too (and must be null otherwise).
  // All device pointers of T; y must not alias x, weight, bias or residual. rows == 0 does
  // nothing. With autotune, the first call of a row bucket may synchronise `stream` (see the
  // header comment).
  template <typename T>
  CudaStatus Run(const T* x, int rows, int in_features, const T* weight, const T* bias,
                 int out_features, GemmEpilogue epilogue, T* y, cudaStream_t stream,
                 const T* residual = nullptr) {
    return RunImpl(GemmDTypeOf<T>::value, x, rows, in_features, weight, bias, out_features,
                   epilogue, y, residual, stream);
  }

  // Describes the algorithm of a cached plan for this exact shape (any alignment), e.g.
  // "algo=66 tile=18 stages=22 splitK=1 reduction=0 swizzle=0 custom=0 inner=0 cluster=0
  // waves=0.36 ws=0 align=256 [tuned]" (tile/stages/inner/cluster are cublasLt.h enum values;
  // -1 or 65535/4294967295 where unreadable), or "split_k_gemm splits=4 align=256 [tuned]"
  // for our kernel; "" when there is no such plan.
  template <typename T>
  std::string DescribePlan(int rows, int in_features, int out_features,
                           GemmEpilogue epilogue) const {
    return DescribePlanImpl(GemmDTypeOf<T>::value, rows, in_features, out_features, epilogue);
  }

  // Number of cached plans (for tests).
  size_t num_plans() const { return plans_.size(); }
  const GemmStats& stats() const { return stats_; }

  // The bucket a row count is tuned under: rows rounded up to a power of two, at least 16.
  static int RowBucket(int rows);

 private:
  struct Plan;
  // (rows or row bucket, in, out, dtype, epilogue, alignment).
  using Key = std::tuple<int, int, int, int, int, int>;

  // What runs a plan: a cuBLASLt algorithm, or our split-K kernel (custom_splits > 0).
  struct Choice {
    cublasLtMatmulAlgo_t algo = {};
    int custom_splits = 0;
  };

  // The device operands of one call (bias: null for kNone; residual: null unless
  // kBiasResidual).
  struct Operands {
    const void* x;
    const void* weight;
    const void* bias;
    const void* residual;
    void* y;
  };

  Gemm() = default;
  CudaStatus RunImpl(GemmDType dtype, const void* x, int rows, int in_features, const void* weight,
                     const void* bias, int out_features, GemmEpilogue epilogue, void* y,
                     const void* residual, cudaStream_t stream);
  CudaStatus MakePlan(GemmDType dtype, int rows, int in_features, int out_features,
                      GemmEpilogue epilogue, std::unique_ptr<Plan>* plan);
  // Asks the heuristic for up to `max_count` algorithms usable with the workspace and the
  // plan's alignment (in heuristic order); an error when it has none.
  CudaStatus Heuristic(const Plan& plan, int max_count,
                       std::vector<cublasLtMatmulHeuristicResult_t>* results);
  // Gives `plan` (exact key `key`) its algorithm: heuristic top-1 (autotune off, or
  // capturing), the bucket's tuned algorithm, or a new tuning (Tune).
  CudaStatus SelectAlgo(Plan* plan, const Key& key, bool capturing, const Operands& ops,
                        cudaStream_t stream);
  // Times the candidates on the real operands and records the winner for key's bucket.
  CudaStatus Tune(Plan* plan, const Key& key, const Operands& ops, cudaStream_t stream);
  static Key BucketKey(const Key& key);
  // Mean time of one launch (ms) of `choice`, best of kTimedSamples; false when it failed.
  bool TimeChoice(const Plan& plan, const Choice& choice, const Operands& ops, cudaStream_t stream,
                  float* ms);
  CudaStatus Matmul(const Plan& plan, const Choice& choice, const Operands& ops,
                    cudaStream_t stream) const;
  // Our kernel's arguments for `plan` and `ops` with one split and no workspace.
  static SplitKGemmArgs CustomArgs(const Plan& plan, const Operands& ops);
  // Split counts of our kernel worth timing for `plan` with these operands (none when it
  // does not apply).
  std::vector<int> CustomSplits(const Plan& plan, const Operands& ops) const;
  std::string DescribePlanImpl(GemmDType dtype, int rows, int in_features, int out_features,
                               GemmEpilogue epilogue) const;

  CublasLtHandle handle_;
  DeviceBuffer<unsigned char> workspace_;
  // Our kernel's split-K workspace (custom_gemm only): fp32 partial tiles, tile counters.
  DeviceBuffer<float> custom_partials_;
  DeviceBuffer<unsigned> custom_counters_;
  GemmOptions options_;
  int num_sms_ = 0;
  CudaEvent timer_start_;
  CudaEvent timer_stop_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
  // Tuned choice per (row bucket, in, out, dtype, epilogue, alignment).
  std::map<Key, Choice> tuned_;
  std::map<Key, int> failed_tunings_;  // bucket -> tunings that found no runnable candidate
  GemmStats stats_;
};

}  // namespace cuda
}  // namespace bert

#endif  // BERT_KERNELS_CUDA_GEMM_H_
