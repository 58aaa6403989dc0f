// Fused multi-head attention over packed variable-length sequences (flash-attention style:
// QKᵀ, online softmax with fp32 running max and sum, ×V in one kernel; no padding work).
//
// Layout (kernels_api.md): qkv [total_rows, 3 * H] with H = num_heads * head_dim, columns
// [0, H) = Q, [H, 2H) = K, [2H, 3H) = V, head h at h * head_dim inside each block. Sequence s
// owns rows cu_rows[s] .. cu_rows[s + 1] - 1; each of those rows (padding rows included) is a
// query that attends to keys/values 0 .. num_valid[s] - 1 of its own sequence:
//   out[row, head h] = softmax(q · Kᵀ / sqrt(head_dim)) · V      (out [total_rows, H]).
// Equals bert::cpu::Attention. A sequence with num_valid <= 0 gets zeros.
//
// Preconditions (not checked on the device): all pointers are device pointers; qkv and out
// are 16-byte aligned and do not overlap; cu_rows has num_seqs + 1 non-decreasing entries;
// max_rows >= every sequence's row count (it sizes the grid; rows past it are not written).
// T = float: exact fp32 on CUDA cores (no TF32). T = __half / __nv_bfloat16: tensor cores
// (mma.sync m16n8k16, fp32 accumulation and softmax statistics); needs sm_80 or newer.
// head_dim must be 32, 64 or 128; any other value runs nothing and leaves
// a launch error for the caller's cudaGetLastError(). Never allocates; asynchronous
// on `stream`; launch errors are checked by the caller. Thread-safe (host state: the per-kernel
// shared-memory attribute and a per-device cache of the SM count, filled on first use).
#ifndef BERT_KERNELS_CUDA_ATTENTION_H_
#define BERT_KERNELS_CUDA_ATTENTION_H_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace bert::cuda {

// True when LaunchVarlenAttention supports head_dim.
inline bool IsSupportedAttentionHeadDim(int head_dim) {
  return head_dim == 32 || head_dim == 64 || head_dim == 128;
}

// Query-tile height of the fp16/bf16 (tensor-core) kernel: 16 query rows per warp, 4, 2 or
// 1 warps per CTA. kAuto, the default, lets the launcher choose from the grid size and the
// device's SM count (attention_plan.h, ChooseMmaWarps): the 64-row tile for batches that fill
// the GPU, a shorter one when the 64-row grid would leave SMs idle. The others force a height,
// for tests and benchmarks. A row's output is meant to be bitwise the same for every height
// (its arithmetic and the order over key tiles do not depend on it; attention_test checks it).
// fp32 ignores `tile`.
enum class AttentionTile { kAuto = 0, kRows16 = 16, kRows32 = 32, kRows64 = 64 };

// "auto", "m16", "m32" or "m64" (for test names and benchmark output).
inline const char* AttentionTileName(AttentionTile tile) {
  switch (tile) {
    case AttentionTile::kAuto:
      return "auto";
    case AttentionTile::kRows16:
      return "m16";
    case AttentionTile::kRows32:
      return "m32";
    case AttentionTile::kRows64:
      return "m64";
  }
  return "?";
}

// What kAuto resolves to for this batch on the current device (never kAuto).
AttentionTile ChooseAttentionTile(int num_seqs, int max_rows, int num_heads);

// How a launch runs. Every choice gives the same bits for a given input (attention_test checks
// the tile heights and the buffering; cuda_engine_test the programmatic launches).
struct AttentionOptions {
  // Query-tile height of the tensor-core kernel (above).
  AttentionTile tile = AttentionTile::kAuto;
  // Tensor-core kernel: two buffers of K/V tiles, so that copying the next 64 keys overlaps
  // the math on these (shared memory: Q tile + 2 x (K + V) tiles instead of 1 x); off: the
  // next tile's copy starts once this one is consumed. fp32 ignores it, and so do batches of
  // at most 64 rows per sequence (one key tile: nothing to overlap).
  bool double_buffer_kv = false;
  // A programmatic dependent launch (kernels/cuda/launch.cuh; compute capability >= 9.0
  // only).
  bool programmatic = false;
};

// Which kernel a launch enqueued, for callers that count their paths (the engine's
// CudaPathStats) and for tests.
struct AttentionLaunch {
  // The double-buffered K/V kernel: fp16/bf16 with double_buffer_kv and more than one key
  // tile (max_rows > 64). false also when nothing was launched.
  bool double_buffered_kv = false;
  // The tensor-core kernel's query-tile height (16, 32 or 64 rows: `tile`, or what kAuto
  // chose); 0 for fp32 and when nothing was launched.
  int tile_rows = 0;
};

template <typename T>
AttentionLaunch LaunchVarlenAttention(const T* qkv, const int32_t* cu_rows,
                                      const int32_t* num_valid, int num_seqs, int max_rows,
                                      int num_heads, int head_dim, T* out, cudaStream_t stream,
                                      const AttentionOptions& options = {});

}  // namespace bert::cuda

#endif  // BERT_KERNELS_CUDA_ATTENTION_H_
