// Our own GEMM for few rows: y = epilogue(x · Wᵀ + b) in half/bf16 on tensor cores, with
// the K dimension split across CTAs so that a batch of one sequence (128 rows) still fills
// the GPU, and the split-K reduction done inside the same kernel (no second launch).
//
// Why: at batch 1 an encoder GEMM reads 1–5 MB of weights and should take ~2 µs, but
// cuBLASLt's heuristic tiles cover 6–24 of the SMs (7–10 µs per GEMM in the run-3 profile),
// and cuBLASLt's own split-K reduces in a second kernel. Gemm (gemm.h) offers this kernel
// as autotune candidates next to cuBLASLt's algorithms (GemmOptions::custom_gemm), so it
// runs only for shapes where it was timed faster — and its output agreed with cuBLASLt's.
//
// Shape: CTA tile 64 rows × 64 output features, K in blocks of 32 through a 4-stage cp.async
// pipeline; 4 warps, each 32 × 32 of the tile with mma.sync m16n8k16 (fp32 accumulators).
// Grid (out / 64, ceil(rows / 64), splits): split s takes a contiguous range of K blocks.
// With splits > 1 every CTA writes its fp32 partial tile to `partials`, then counts itself
// in its tile's counter; the last CTA of a tile adds the partials in split order (the result
// does not depend on which CTA came last), applies the epilogue in fp32 and stores T, and
// sets the counter back to 0 for the next launch. Calls sharing `partials`/`counters` must
// therefore be ordered (one stream).
//
// LayerNorm in the same launch (kBiasResidualLayerNorm, for the projections that close an
// encoder block at few rows, where a LayerNorm kernel of its own costs more in launch and
// latency than in work): the tile's epilogue writes its fp32 sums x·Wᵀ + b + residual to
// `norm_rows`, and each row's mean and sum of squared deviations over the tile's 64 columns
// (two-pass, fp32) to `norm_stats`, then counts the tile in its block of 64 rows
// (`row_counters`). The last tile of a row block to finish merges each row's tile statistics
// (equal counts: Chan et al.'s formula) and normalises the block's rows into y with all its
// threads, the values independent of one another; it sets the counter back to 0. No CTA waits
// for another, so nothing depends on how many run at once. y may be the residual (in place, as
// the engine's hidden state is): a row block's residual is read by its own tiles before they
// count themselves, and written only by the last of them. Like the split-K workspace, launches
// sharing norm_rows, norm_stats or row_counters must be ordered (one stream).
//
// Requirements (SplitKGemmUnsupported says which one fails): in_features % 32 == 0,
// out_features % 64 == 0, x and W 16-byte aligned, y, bias and residual 4-byte aligned,
// 1 <= splits <= min(16, in_features / 32), and for splits > 1 the workspace below. With
// kBiasResidualLayerNorm also: out_features <= 1024, gamma, beta and norm_rows 16-byte
// aligned, norm_stats 8-byte aligned, y 8-byte aligned and either the residual or apart from
// it, row_counters.
#ifndef BERT_KERNELS_CUDA_SPLIT_K_GEMM_H_
#define BERT_KERNELS_CUDA_SPLIT_K_GEMM_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace bert {
namespace cuda {

// The helpers below are also called from the kernel.
#if defined(__CUDACC__)
#define BERT_SPLIT_K_HOST_DEVICE __host__ __device__
#else
#define BERT_SPLIT_K_HOST_DEVICE
#endif

inline constexpr int kSplitKBlockRows = 64;
inline constexpr int kSplitKBlockCols = 64;
inline constexpr int kSplitKBlockK = 32;
inline constexpr int kSplitKMaxSplits = 16;

// The epilogues of GemmEpilogue (gemm.h), same meaning and order.
enum class SplitKEpilogue {
  kNone,          // y = x·Wᵀ
  kBias,          // y = x·Wᵀ + b
  kBiasGeluTanh,  // y = gelu_tanh(x·Wᵀ + b) (tanhf, as accurate as the fp32 pass)
  kBiasResidual,  // y = x·Wᵀ + b + residual
  // y = LayerNorm(x·Wᵀ + b + residual) * gamma + beta, the sum kept in fp32 (see above)
  kBiasResidualLayerNorm,
};

// The widest output kBiasResidualLayerNorm normalises (at most 16 tiles of 64 per row).
inline constexpr int kSplitKMaxLayerNormWidth = 1024;

struct SplitKGemmArgs {
  const void* x = nullptr;       // [rows, in_features] of T
  const void* weight = nullptr;  // [out_features, in_features] of T
  const void* bias = nullptr;    // [out_features] of T; null only with kNone
  // [rows, out_features] of T with kBiasResidual and kBiasResidualLayerNorm, else null
  const void* residual = nullptr;
  // [rows, out_features] of T, aliasing none of the above (kBiasResidualLayerNorm: but the
  // residual, which it may be)
  void* y = nullptr;
  int rows = 0;
  int in_features = 0;
  int out_features = 0;
  int splits = 1;
  // splits > 1 only: SplitKGemmPartialFloats() floats, and SplitKGemmTiles() counters that
  // are zero before the first launch (the kernel leaves them zero).
  float* partials = nullptr;
  unsigned* counters = nullptr;
  // kBiasResidualLayerNorm only: the LayerNorm's parameters ([out_features] fp32) and epsilon;
  // rows * out_features floats for the sums; SplitKGemmNormStatsFloats() for the tiles' row
  // statistics; SplitKGemmRowBlocks() counters, zero before the first launch (the kernel
  // leaves them zero).
  const float* gamma = nullptr;
  const float* beta = nullptr;
  float eps = 0.0f;
  float* norm_rows = nullptr;
  float* norm_stats = nullptr;
  unsigned* row_counters = nullptr;
  // A programmatic dependent launch (kernels/cuda/launch.cuh; compute capability >= 9.0
  // only): the first weight tiles are fetched before waiting for the previous kernel.
  bool programmatic = false;
};

// Output tiles of the grid (64 × 64 each).
BERT_SPLIT_K_HOST_DEVICE constexpr long long SplitKGemmTiles(int rows, int out_features) {
  return ((static_cast<long long>(rows) + kSplitKBlockRows - 1) / kSplitKBlockRows) *
         ((static_cast<long long>(out_features) + kSplitKBlockCols - 1) / kSplitKBlockCols);
}

// Blocks of 64 rows (kBiasResidualLayerNorm's row counters).
BERT_SPLIT_K_HOST_DEVICE constexpr int SplitKGemmRowBlocks(int rows) {
  return (rows + kSplitKBlockRows - 1) / kSplitKBlockRows;
}

// kBiasResidualLayerNorm's tile statistics: a (mean, sum of squared deviations) pair per row
// and tile of 64 columns.
BERT_SPLIT_K_HOST_DEVICE constexpr size_t SplitKGemmNormStatsFloats(int rows, int out_features) {
  return static_cast<size_t>(rows < 0 ? 0 : rows) * (out_features / kSplitKBlockCols) * 2;
}

// fp32 partial sums a launch needs (0 without a split).
BERT_SPLIT_K_HOST_DEVICE constexpr size_t SplitKGemmPartialFloats(int rows, int out_features,
                                                                  int splits) {
  if (splits <= 1) return 0;
  return static_cast<size_t>(SplitKGemmTiles(rows, out_features)) * splits * kSplitKBlockRows *
         kSplitKBlockCols;
}

// K blocks each split takes; a split count is useful only when no split is left empty.
BERT_SPLIT_K_HOST_DEVICE constexpr int SplitKBlocksPerSplit(int in_features, int splits) {
  const int blocks = in_features / kSplitKBlockK;
  return splits <= 0 ? 0 : (blocks + splits - 1) / splits;
}
BERT_SPLIT_K_HOST_DEVICE constexpr bool SplitKEverySplitBusy(int in_features, int splits) {
  const int blocks = in_features / kSplitKBlockK;
  return splits >= 1 && splits <= blocks &&
         static_cast<long long>(SplitKBlocksPerSplit(in_features, splits)) * (splits - 1) < blocks;
}

// The split count that fills `sms` SMs with about one CTA each at this shape (1 where the
// tiles alone do), within the kernel's limits and leaving no split empty. Then
// SplitKGemmPartialFloats(rows, out_features, splits) <= sms * 64 * 64.
BERT_SPLIT_K_HOST_DEVICE constexpr int SplitKGemmSplitsToFill(int rows, int in_features,
                                                              int out_features, int sms) {
  const long long tiles = SplitKGemmTiles(rows, out_features);
  long long splits = tiles <= 0 || tiles >= sms ? 1 : sms / tiles;
  if (splits > kSplitKMaxSplits) splits = kSplitKMaxSplits;
  if (splits > in_features / kSplitKBlockK) splits = in_features / kSplitKBlockK;
  while (splits > 1 && !SplitKEverySplitBusy(in_features, static_cast<int>(splits))) --splits;
  return splits < 1 ? 1 : static_cast<int>(splits);
}

// Why `args` cannot run with `epilogue` ("" when it can). Checks shapes, alignment, splits
// and that the workspace pointers are there when splits > 1 (not their sizes).
std::string SplitKGemmUnsupported(const SplitKGemmArgs& args, SplitKEpilogue epilogue);

// Launches the kernel for T = __half or __nv_bfloat16 (the only instantiations); returns
// cudaErrorInvalidValue for args that SplitKGemmUnsupported rejects. rows == 0 launches
// nothing.
template <typename T>
cudaError_t LaunchSplitKGemm(const SplitKGemmArgs& args, SplitKEpilogue epilogue,
                             cudaStream_t stream);

}  // namespace cuda
}  // namespace bert

#undef BERT_SPLIT_K_HOST_DEVICE

#endif  // BERT_KERNELS_CUDA_SPLIT_K_GEMM_H_
