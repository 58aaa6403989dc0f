// Index math of the varlen attention kernels (kernels/cuda/attention.cu), kept free of CUDA
// headers so the same functions run in a host-only unit test (attention_plan_test.cc) that
// checks every (row, head) is covered exactly once and every tile load is complete.
//
// Launch shape, shared by both kernel families: one CTA per (query tile, head, sequence).
//   blockIdx.x = query tile (block_m rows of one sequence: 32 for the fp32 kernel, 16, 32
//   or 64 for the tensor-core kernel, see MmaBlockM), blockIdx.y = head,
//   blockIdx.z = sequence - seq_begin (the launcher splits num_seqs into chunks of at most
//   kMaxGridZ so any number of sequences fits the grid's z limit).
// A CTA whose tile starts past its sequence's rows exits at once (grid.x is sized from the
// batch's longest sequence). Pure functions; thread-safe.
#ifndef BERT_KERNELS_CUDA_ATTENTION_PLAN_H_
#define BERT_KERNELS_CUDA_ATTENTION_PLAN_H_

#include <cstdint>

#if defined(__CUDACC__)
#define BERT_HD __host__ __device__ __forceinline__
#else
#define BERT_HD inline
#endif

namespace bert::cuda::attention_plan {

// CUDA's limit on gridDim.z.
inline constexpr int kMaxGridZ = 65535;

BERT_HD constexpr int CeilDiv(int a, int b) { return (a + b - 1) / b; }

// Grid dimensions of one launch chunk.
struct GridDims {
  int x;  // query tiles
  int y;  // heads
  int z;  // sequences in this chunk
};

// Number of launches needed for num_seqs sequences.
BERT_HD constexpr int NumChunks(int num_seqs) { return CeilDiv(num_seqs, kMaxGridZ); }

// First sequence of launch chunk c.
BERT_HD constexpr int ChunkSeqBegin(int c) { return c * kMaxGridZ; }

// Grid of launch chunk c. max_rows > 0, num_seqs > 0.
BERT_HD GridDims ChunkGrid(int c, int num_seqs, int max_rows, int num_heads, int block_m) {
  const int begin = ChunkSeqBegin(c);
  const int left = num_seqs - begin;
  return GridDims{CeilDiv(max_rows, block_m), num_heads, left < kMaxGridZ ? left : kMaxGridZ};
}

// Query rows [begin, end) of a tile, as row indices within the sequence; begin >= end means
// the CTA has nothing to do.
struct RowRange {
  int begin;
  int end;
};
BERT_HD RowRange QueryTileRows(int q_tile, int seq_rows, int block_m) {
  const int begin = q_tile * block_m;
  const int end = begin + block_m < seq_rows ? begin + block_m : seq_rows;
  return RowRange{begin, end};
}

// Keys attended by every query of a sequence: 0 .. NumKeys-1 (num_valid clamped to the
// sequence's rows; a sequence with no valid key gets an all-zero output).
BERT_HD int NumKeys(int num_valid, int seq_rows) {
  return num_valid < 0 ? 0 : (num_valid > seq_rows ? seq_rows : num_valid);
}

// Element offset of (row, head h, column d) of block `which` (0 = Q, 1 = K, 2 = V) in qkv,
// whose rows are 3 * num_heads * head_dim elements wide.
BERT_HD int64_t QkvOffset(int64_t row, int which, int h, int d, int num_heads, int head_dim) {
  const int64_t hidden = static_cast<int64_t>(num_heads) * head_dim;
  return row * 3 * hidden + which * hidden + static_cast<int64_t>(h) * head_dim + d;
}

// Element offset of (row, head h, column d) in out [rows, num_heads * head_dim].
BERT_HD int64_t OutOffset(int64_t row, int h, int d, int num_heads, int head_dim) {
  return row * static_cast<int64_t>(num_heads) * head_dim + static_cast<int64_t>(h) * head_dim + d;
}

// Cooperative copy of a [rows, cols] tile in chunks of `vec` elements by `threads` threads:
// step i of thread t moves chunk i * threads + t, i.e. (row, col) below. The kernels run
// CopySteps steps and require CopySplitsEvenly (a static_assert), so no thread idles and no
// chunk is left over.
struct TileChunk {
  int row;
  int col;
};
BERT_HD TileChunk CopyChunk(int step, int tid, int threads, int cols, int vec) {
  const int chunk = step * threads + tid;
  const int per_row = cols / vec;
  return TileChunk{chunk / per_row, (chunk % per_row) * vec};
}
BERT_HD constexpr bool CopySplitsEvenly(int rows, int cols, int vec, int threads) {
  return cols % vec == 0 && (rows * (cols / vec)) % threads == 0;
}
BERT_HD constexpr int CopySteps(int rows, int cols, int vec, int threads) {
  return rows * (cols / vec) / threads;
}
// When threads is a multiple of a row's chunks (cols / vec), step i of a thread copies
// CopyChunk(0, ...) moved down by i * CopyRowsPerStep rows, same column.
BERT_HD constexpr bool CopyRowsAdvanceEvenly(int cols, int vec, int threads) {
  return threads % (cols / vec) == 0;
}
BERT_HD constexpr int CopyRowsPerStep(int cols, int vec, int threads) {
  return threads / (cols / vec);
}

// ---- Tile shape of the tensor-core kernel (VarlenAttentionMmaKernel<T, D, kWarps, ...>) ----
// A CTA has `warps` warps (1, 2 or 4); each warp owns 16 consecutive query rows of the tile
// (warp w: tile rows 16 * w .. 16 * w + 15), so the query tile is 16 * warps rows. K/V tiles
// are kMmaBlockN keys for every tile height, and every warp walks them in the same order, so
// the arithmetic done for a given query row does not depend on the tile height.
inline constexpr int kMmaRowsPerWarp = 16;
inline constexpr int kMmaBlockN = 64;  // keys per K/V tile
inline constexpr int kMmaVec = 8;      // 16-bit elements per 16-byte copy
BERT_HD constexpr bool IsSupportedMmaWarps(int warps) {
  return warps == 1 || warps == 2 || warps == 4;
}
BERT_HD constexpr int MmaThreads(int warps) { return 32 * warps; }
BERT_HD constexpr int MmaBlockM(int warps) { return kMmaRowsPerWarp * warps; }
// Shared memory of one CTA: Q tile (MmaBlockM rows) + kv_stages pairs of K and V tiles
// (kMmaBlockN rows each), rows of head_dim + pad 16-bit elements.
BERT_HD constexpr int MmaSharedBytes(int warps, int head_dim, int pad, int kv_stages = 1) {
  return (MmaBlockM(warps) + 2 * kv_stages * kMmaBlockN) * (head_dim + pad) * 2;
}

// CTAs of a launch over num_seqs sequences (all chunks together), empty ones included: the
// host does not know the sequences' lengths, only max_rows.
BERT_HD constexpr int64_t GridCtas(int num_seqs, int max_rows, int num_heads, int block_m) {
  return static_cast<int64_t>(num_seqs) * num_heads * CeilDiv(max_rows, block_m);
}

// Launch rule of LaunchVarlenAttention for AttentionTile::kAuto: the tallest tile (most warps)
// whose grid still has at least kMinCtasPerSm CTAs per SM, so short batches spread over the
// SMs instead of leaving most of them idle; with none that tall, the 16-row tile. A shorter
// tile whose grid has as many CTAs (max_rows fits in it) is always preferred: the taller one
// would only add warps that compute zero-filled rows. sm_count <= 0 (unknown) keeps 4 warps.
inline constexpr int kMinCtasPerSm = 2;
BERT_HD int ChooseMmaWarps(int num_seqs, int max_rows, int num_heads, int sm_count) {
  if (sm_count <= 0) return 4;
  const int64_t want = static_cast<int64_t>(kMinCtasPerSm) * sm_count;
  int warps = 4;
  while (warps > 1) {
    const int64_t ctas = GridCtas(num_seqs, max_rows, num_heads, MmaBlockM(warps));
    const int64_t half = GridCtas(num_seqs, max_rows, num_heads, MmaBlockM(warps / 2));
    if (ctas >= want && half > ctas) break;
    warps /= 2;
  }
  return warps;
}

// ---- mma.sync m16n8k16 fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16") ----
// lane = threadIdx.x % 32, g = lane / 4 (group), t = lane % 4 (thread in group).
// Accumulator C/D (16 x 8, fp32): element e in 0..3 sits at row g + 8 * (e / 2),
// column 2 * t + e % 2.
BERT_HD int AccRow(int lane, int e) { return lane / 4 + 8 * (e / 2); }
BERT_HD int AccCol(int lane, int e) { return 2 * (lane % 4) + e % 2; }
// A (16 x 16, row-major, 16-bit): register r in 0..3 holds two elements (half j = 0 low,
// 1 high) at row g + 8 * (r % 2), column 2 * t + 8 * (r / 2) + j.
BERT_HD int ARow(int lane, int r) { return lane / 4 + 8 * (r % 2); }
BERT_HD int ACol(int lane, int r, int j) { return 2 * (lane % 4) + 8 * (r / 2) + j; }
// B (16 x 8, "col", 16-bit): register r in 0..1 holds two elements (j = 0 low, 1 high) at
// k = 2 * t + 8 * r + j, n = g.
BERT_HD int BK(int lane, int r, int j) { return 2 * (lane % 4) + 8 * r + j; }
BERT_HD int BN(int lane) { return lane / 4; }

// ldmatrix.x4.trans address of `lane` for the B fragments of P·V: matrices 0..3 are the
// 8 x 8 blocks (keys k0 + 8 * (m % 2) .., columns d0 + 8 * (m / 2) ..) with m = lane / 8,
// and lane supplies the start of row lane % 8 of matrix m. Registers 0,1 then hold the B
// fragment for columns d0..d0+7 and registers 2,3 the one for d0+8..d0+15.
BERT_HD int LdsmTransKey(int lane) { return (lane % 8) + 8 * ((lane / 8) % 2); }
BERT_HD int LdsmTransCol(int lane) { return 8 * (lane / 16); }

// Where the kernels' fragment loads read, as (row, column) of the tile in shared memory.
// Q (A operand of S = Q·Kᵀ), register r of k-chunk kc, low element; the high one is column + 1.
BERT_HD TileChunk QFragElem(int lane, int kc, int r) {
  return TileChunk{ARow(lane, r), 16 * kc + ACol(lane, r, 0)};
}
// K (B operand of S, B[k = d][n = key] = K[key][d]), register r of key block nb, k-chunk kc.
BERT_HD TileChunk KFragElem(int lane, int nb, int kc, int r) {
  return TileChunk{8 * nb + BN(lane), 16 * kc + BK(lane, r, 0)};
}
// P as the A operand of O += P·V for key chunk kk comes straight from the S accumulators:
// register r packs accumulator block 2 * kk + PFromAccBlock(r), elements PFromAccElem(r) and
// PFromAccElem(r) + 1.
BERT_HD int PFromAccBlock(int r) { return r / 2; }
BERT_HD int PFromAccElem(int r) { return 2 * (r % 2); }

}  // namespace bert::cuda::attention_plan

#endif  // BERT_KERNELS_CUDA_ATTENTION_PLAN_H_
