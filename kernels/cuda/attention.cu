// Fused varlen multi-head attention (see attention.h). Two kernel families:
//  * VarlenAttentionF32Kernel: exact fp32 on CUDA cores. CTA = 4 warps, 32 query rows
//    (8 per warp); key tiles of 32 (one key per lane for QKᵀ, one output column per lane
//    for ×V).
//  * VarlenAttentionMmaKernel<T, D, kWarps, kDoubleBuffer>: half/bf16 on tensor cores (mma.sync
//  m16n8k16,
//    fp32 accumulators). CTA = kWarps warps (4, 2 or 1), 16 query rows per warp (query tiles
//    of 64, 32 or 16 rows, picked per launch, see ChooseMmaWarps); key/value tiles of 64 rows
//    staged in shared memory with cp.async (one K/V buffer, or two with double_buffer_kv: the
//    next tile's copy then overlaps this tile's math); Q fragments stay in registers; P never
//    leaves registers (the S accumulators are repacked as the A operand of P·V); the output is
//    staged through shared memory for 16-byte coalesced stores.
// Both: grid (query tile, head, sequence), online softmax with fp32 running max and sum,
// keys past num_valid masked, rows past the sequence never read or written.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_plan.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/mma_utils.cuh"

namespace bert::cuda {
namespace {

namespace plan = attention_plan;

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

using internal::WarpSum;

// ------------------------------------ fp32 (SIMT) ------------------------------------------

constexpr int kF32Threads = 128;  // 4 warps
constexpr int kF32Warps = kF32Threads / 32;
constexpr int kF32BlockM = 32;
constexpr int kF32RowsPerWarp = kF32BlockM / kF32Warps;  // 8
constexpr int kF32BlockN = 32;                           // one key per lane

template <int D>
struct F32Layout {
  static constexpr int kKStride = D + 1;  // lane j reads K row j: odd stride, no bank conflict
  static constexpr int kQ = kF32BlockM * D;
  static constexpr int kK = kF32BlockN * kKStride;
  static constexpr int kV = kF32BlockN * D;
  static constexpr size_t kBytes = sizeof(float) * (kQ + kK + kV);
};

// qkv is not __restrict__: it is written by the kernel just before this one, and with a
// programmatic launch (launch.cuh) only coherent loads are sure to see that write, not the
// read-only-cache loads __restrict__ allows (the tensor-core kernel reads it with cp.async.cg).
template <int D>
__global__ void __launch_bounds__(kF32Threads)
    VarlenAttentionF32Kernel(const float* qkv, const int32_t* __restrict__ cu_rows,
                             const int32_t* __restrict__ num_valid, int seq_begin, int num_heads,
                             float scale, float* __restrict__ out) {
  static_assert(D % 32 == 0, "head_dim must be a multiple of 32");
  internal::WaitForPriorGrid();  // launch.cuh: nothing is read or written before it
  internal::AllowDependentLaunch();
  constexpr int kCols = D / 32;  // output columns per lane
  using L = F32Layout<D>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* sq = reinterpret_cast<float*>(smem_raw);
  float* sk = sq + L::kQ;
  float* sv = sk + L::kK;

  const int seq = seq_begin + static_cast<int>(blockIdx.z);
  const int head = blockIdx.y;
  const int row0 = cu_rows[seq];
  const int seq_rows = cu_rows[seq + 1] - row0;
  const plan::RowRange q = plan::QueryTileRows(blockIdx.x, seq_rows, kF32BlockM);
  if (q.begin >= q.end) return;
  const int n_keys = plan::NumKeys(num_valid[seq], seq_rows);
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;

  for (int i = tid; i < kF32BlockM * D; i += kF32Threads) {
    const int r = i / D, d = i % D;
    const int row = q.begin + r;
    sq[i] = row < q.end ? qkv[plan::QkvOffset(row0 + row, 0, head, d, num_heads, D)] : 0.f;
  }

  float m[kF32RowsPerWarp], l[kF32RowsPerWarp], acc[kF32RowsPerWarp][kCols];
#pragma unroll
  for (int r = 0; r < kF32RowsPerWarp; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;
#pragma unroll
    for (int c = 0; c < kCols; ++c) acc[r][c] = 0.f;
  }
  const float* my_q = sq + warp * kF32RowsPerWarp * D;

  for (int k0 = 0; k0 < n_keys; k0 += kF32BlockN) {
    __syncthreads();  // the previous tile is consumed (first pass: nothing to wait for)
    for (int i = tid; i < kF32BlockN * D; i += kF32Threads) {
      const int r = i / D, d = i % D;
      const int key = k0 + r;
      float kv = 0.f, vv = 0.f;
      if (key < n_keys) {
        kv = qkv[plan::QkvOffset(row0 + key, 1, head, d, num_heads, D)];
        vv = qkv[plan::QkvOffset(row0 + key, 2, head, d, num_heads, D)];
      }
      sk[r * L::kKStride + d] = kv;
      sv[r * D + d] = vv;
    }
    __syncthreads();

    float s[kF32RowsPerWarp];
#pragma unroll
    for (int r = 0; r < kF32RowsPerWarp; ++r) s[r] = 0.f;
    const float* my_k = sk + lane * L::kKStride;
#pragma unroll 8
    for (int d = 0; d < D; ++d) {
      const float kd = my_k[d];
#pragma unroll
      for (int r = 0; r < kF32RowsPerWarp; ++r) s[r] = fmaf(my_q[r * D + d], kd, s[r]);
    }
    // Key k0 (lane 0) is always valid, so every row's tile maximum is finite.
    const bool valid = k0 + lane < n_keys;
    float p[kF32RowsPerWarp];
#pragma unroll
    for (int r = 0; r < kF32RowsPerWarp; ++r) {
      const float x = valid ? s[r] * scale : -INFINITY;
      const float m_new = fmaxf(m[r], WarpMax(x));
      const float alpha = expf(m[r] - m_new);  // 0 on the first tile (m = -inf)
      p[r] = valid ? expf(x - m_new) : 0.f;
      l[r] = l[r] * alpha + p[r];  // per-lane partial sum, reduced once at the end
      m[r] = m_new;
#pragma unroll
      for (int c = 0; c < kCols; ++c) acc[r][c] *= alpha;
    }
    const int tile_keys = min(kF32BlockN, n_keys - k0);
    for (int j = 0; j < tile_keys; ++j) {
      float v[kCols];
#pragma unroll
      for (int c = 0; c < kCols; ++c) v[c] = sv[j * D + lane + 32 * c];
#pragma unroll
      for (int r = 0; r < kF32RowsPerWarp; ++r) {
        const float pj = __shfl_sync(kFullMask, p[r], j);
#pragma unroll
        for (int c = 0; c < kCols; ++c) acc[r][c] = fmaf(pj, v[c], acc[r][c]);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < kF32RowsPerWarp; ++r) {
    const float sum = WarpSum(l[r]);
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    const int row = q.begin + warp * kF32RowsPerWarp + r;
    if (row < q.end) {
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        out[plan::OutOffset(row0 + row, head, lane + 32 * c, num_heads, D)] = acc[r][c] * inv;
      }
    }
  }
}

// -------------------------------- half / bf16 (mma.sync) -----------------------------------

constexpr int kBlockN = plan::kMmaBlockN;  // keys per K/V tile (every tile height)
constexpr int kPad = 8;                    // 16 bytes per smem row: conflict-free fragment loads
constexpr int kVec = plan::kMmaVec;        // 16-bit elements per 16-byte copy

using internal::CpAsync16;
using internal::CpAsyncCommit;
using internal::CpAsyncWait;
using internal::LdsmX4Trans;
using internal::MmaOps;

template <typename T>
__device__ __forceinline__ uint32_t LoadU32(const T* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// Shared memory of a CTA with kWarps warps: Q tile [16 * kWarps, D], then kStages pairs of
// K and V tiles [64, D] (stage s: K at kQTile + 2 s kKVTile, V right after), each row padded
// to kStride elements.
template <int D, int kWarps, int kStages>
struct MmaLayout {
  static constexpr int kBlockM = plan::MmaBlockM(kWarps);
  static constexpr int kStride = D + kPad;  // elements per shared-memory row
  static constexpr int kQTile = kBlockM * kStride;
  static constexpr int kKVTile = kBlockN * kStride;
  static constexpr size_t kBytes = plan::MmaSharedBytes(kWarps, D, kPad, kStages);
  static_assert(kBytes == (kQTile + 2 * kStages * kKVTile) * 2, "Q, K, V tiles of 2-byte elements");
};

// Copies rows [first, first + kRows) of block `which` (rows >= limit zero-filled) into a
// [kRows, D] shared tile, asynchronously, with all kThreadsPerCta threads of the CTA.
template <typename T, int D, int kRows, int kThreadsPerCta>
__device__ __forceinline__ void LoadTileAsync(T* tile, const T* qkv, int row0, int first, int limit,
                                              int which, int head, int num_heads) {
  static_assert(plan::CopySplitsEvenly(kRows, D, kVec, kThreadsPerCta), "tile must split evenly");
  constexpr int kSteps = plan::CopySteps(kRows, D, kVec, kThreadsPerCta);
  // Step i of this thread copies chunk CopyChunk(i) = (c0.row + i * kRowsPerStep, c0.col)
  // (attention_plan_test checks it): one source and one destination address, advanced per
  // step, instead of kSteps of them live across the key loop.
  static_assert(plan::CopyRowsAdvanceEvenly(D, kVec, kThreadsPerCta), "whole rows per step");
  constexpr int kRowsPerStep = plan::CopyRowsPerStep(D, kVec, kThreadsPerCta);
  const plan::TileChunk c0 = plan::CopyChunk(0, threadIdx.x, kThreadsPerCta, D, kVec);
  const int64_t src_stride = 3 * static_cast<int64_t>(num_heads) * D;  // one qkv row
  const T* src0 = qkv + plan::QkvOffset(row0, which, head, c0.col, num_heads, D);
  T* dst = tile + c0.row * (D + kPad) + c0.col;
  // Unrolled by at most 8 (cp.async never waits, so every step's copy is in flight either
  // way; the cap only bounds code size and registers): with 1 warp a K/V tile takes 16
  // (D = 64) or 32 (D = 128) steps, and full unrolling made ptxas spill.
#pragma unroll(kSteps < 8 ? kSteps : 8)
  for (int step = 0; step < kSteps; ++step) {
    const int r = c0.row + step * kRowsPerStep;  // row within the tile
    const bool fill = first + r < limit;
    // An unfilled chunk still gets an in-bounds address (row 0 of the sequence).
    const T* src = src0 + (fill ? (first + r) * src_stride : 0);
    CpAsync16(dst + step * kRowsPerStep * (D + kPad), src, fill);
  }
}

// Register budget, the same per thread for every tile height: 16 resident warps per SM
// (<= 128 registers) for head_dim <= 64; head_dim 128 keeps Q fragments and O accumulators of
// 128 columns and is allowed more (8 warps).
template <int D, int kWarps>
constexpr int MmaMinCtasPerSm() {
  return (D <= 64 ? 16 : 8) / kWarps;
}

// kDoubleBuffer: two K/V stages; the copy of key tile j + 1 is issued before tile j's math.
// The arithmetic (and so every output bit) is the same either way.
template <typename T, int D, int kWarps, bool kDoubleBuffer>
__global__ void __launch_bounds__(plan::MmaThreads(kWarps), (MmaMinCtasPerSm<D, kWarps>()))
    VarlenAttentionMmaKernel(const T* __restrict__ qkv, const int32_t* __restrict__ cu_rows,
                             const int32_t* __restrict__ num_valid, int seq_begin, int num_heads,
                             float scale_log2, T* __restrict__ out) {
  static_assert(D % 16 == 0, "head_dim must be a multiple of 16");
  static_assert(plan::IsSupportedMmaWarps(kWarps), "1, 2 or 4 warps per CTA");
  internal::WaitForPriorGrid();  // launch.cuh: nothing is read or written before it
  internal::AllowDependentLaunch();
  constexpr int kStages = kDoubleBuffer ? 2 : 1;
  using L = MmaLayout<D, kWarps, kStages>;
  constexpr int kCtaThreads = plan::MmaThreads(kWarps);
  constexpr int kBlockM = L::kBlockM;
  constexpr int kStride = L::kStride;
  constexpr int kKChunks = D / 16;       // k-steps of S = Q·Kᵀ
  constexpr int kSBlocks = kBlockN / 8;  // 8-key accumulator blocks of S
  constexpr int kOBlocks = D / 8;        // 8-column accumulator blocks of O
  using Ops = MmaOps<T>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sq = reinterpret_cast<T*>(smem_raw);
  // Stage s's K tile; its V tile follows it.
  auto k_tile = [sq](int stage) { return sq + L::kQTile + stage * 2 * L::kKVTile; };

  const int seq = seq_begin + static_cast<int>(blockIdx.z);
  const int head = blockIdx.y;
  const int row0 = cu_rows[seq];
  const int seq_rows = cu_rows[seq + 1] - row0;
  const plan::RowRange q = plan::QueryTileRows(blockIdx.x, seq_rows, kBlockM);
  if (q.begin >= q.end) return;
  const int n_keys = plan::NumKeys(num_valid[seq], seq_rows);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  T* my_q = sq + warp * 16 * kStride;  // this warp's 16 query rows

  LoadTileAsync<T, D, kBlockM, kCtaThreads>(sq, qkv, row0, q.begin, q.end, 0, head, num_heads);
  CpAsyncCommit();
  // One commit group per tile copy: Q, then K and V of each key tile in order. Double
  // buffered, key tile 0 is copied here and tile j + 1 at the start of iteration j.
  auto load_kv = [&](int stage, int first) {
    LoadTileAsync<T, D, kBlockN, kCtaThreads>(k_tile(stage), qkv, row0, first, n_keys, 1, head,
                                              num_heads);
    CpAsyncCommit();
    LoadTileAsync<T, D, kBlockN, kCtaThreads>(k_tile(stage) + L::kKVTile, qkv, row0, first, n_keys,
                                              2, head, num_heads);
    CpAsyncCommit();
  };
  if (kDoubleBuffer && n_keys > 0) load_kv(0, 0);

  uint32_t qf[kKChunks][4];
  float o[kOBlocks][4];
#pragma unroll
  for (int b = 0; b < kOBlocks; ++b) {
#pragma unroll
    for (int e = 0; e < 4; ++e) o[b][e] = 0.f;
  }
  // Rows g and g + 8 of the warp's 16 (g = lane / 4): running max (log2 units) and partial
  // sum (this thread's columns only; the quad's four partials are added at the end).
  float m[2] = {-INFINITY, -INFINITY};
  float l[2] = {0.f, 0.f};

  for (int k0 = 0, stage = 0; k0 < n_keys; k0 += kBlockN, stage ^= (kStages - 1)) {
    const T* sk = k_tile(stage);
    const T* sv = sk + L::kKVTile;
    if (kDoubleBuffer) {
      // The next key tile into the other stage (consumed in the previous iteration; empty
      // groups past the last tile keep the count below uniform).
      if (k0 + kBlockN < n_keys) {
        load_kv(stage ^ 1, k0 + kBlockN);
      } else {
        CpAsyncCommit();
        CpAsyncCommit();
      }
      CpAsyncWait<3>();  // Q and this K tile have landed; this V and the next K/V may not
    } else {
      load_kv(0, k0);
      CpAsyncWait<1>();  // Q (first pass) and this K tile have landed; V may be in flight
    }
    __syncthreads();
    if (k0 == 0) {
#pragma unroll
      for (int kc = 0; kc < kKChunks; ++kc) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const plan::TileChunk e = plan::QFragElem(lane, kc, r);
          qf[kc][r] = LoadU32(my_q + e.row * kStride + e.col);
        }
      }
    }

    float s[kSBlocks][4];
#pragma unroll
    for (int nb = 0; nb < kSBlocks; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nb][e] = 0.f;
#pragma unroll
      for (int kc = 0; kc < kKChunks; ++kc) {
        const plan::TileChunk e0 = plan::KFragElem(lane, nb, kc, 0);
        const plan::TileChunk e1 = plan::KFragElem(lane, nb, kc, 1);
        Ops::Mma(s[nb], qf[kc], LoadU32(sk + e0.row * kStride + e0.col),
                 LoadU32(sk + e1.row * kStride + e1.col));
      }
    }

    // Online softmax. Key k0 is valid, so each row's tile maximum is finite.
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nb = 0; nb < kSBlocks; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = k0 + 8 * nb + plan::AccCol(lane, e);
        s[nb][e] = key < n_keys ? s[nb][e] * scale_log2 : -INFINITY;
        tile_max[e / 2] = fmaxf(tile_max[e / 2], s[nb][e]);
      }
    }
    float alpha[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      // The four threads of a quad hold the same two rows.
      tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(kFullMask, tile_max[i], 1));
      tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(kFullMask, tile_max[i], 2));
      const float m_new = fmaxf(m[i], tile_max[i]);
      alpha[i] = exp2f(m[i] - m_new);  // 0 on the first tile (m = -inf)
      m[i] = m_new;
      l[i] *= alpha[i];
    }
#pragma unroll
    for (int nb = 0; nb < kSBlocks; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nb][e] = exp2f(s[nb][e] - m[e / 2]);  // masked keys: exp2(-inf) = 0
        l[e / 2] += s[nb][e];
      }
    }
#pragma unroll
    for (int b = 0; b < kOBlocks; ++b) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o[b][e] *= alpha[e / 2];
    }

    if (kDoubleBuffer) {
      CpAsyncWait<2>();  // this V tile (the next K/V may still be in flight)
    } else {
      CpAsyncWait<0>();  // V tile
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      uint32_t a[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const float* acc = s[2 * kk + plan::PFromAccBlock(r)];
        a[r] = Ops::Pack(acc[plan::PFromAccElem(r)], acc[plan::PFromAccElem(r) + 1]);
      }
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t b[4];
        LdsmX4Trans(b, sv + (16 * kk + plan::LdsmTransKey(lane)) * kStride + 16 * dp +
                           plan::LdsmTransCol(lane));
        Ops::Mma(o[2 * dp], a, b[0], b[1]);
        Ops::Mma(o[2 * dp + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();  // this stage's K/V consumed before a later iteration refills it
  }

  // Normalise and stage the output in this warp's Q rows, then write 16-byte chunks.
  CpAsyncWait<0>();  // the Q copy when there was no key at all
  __syncthreads();
  float inv[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(kFullMask, l[i], 1);
    l[i] += __shfl_xor_sync(kFullMask, l[i], 2);
    inv[i] = l[i] > 0.f ? 1.f / l[i] : 0.f;
  }
#pragma unroll
  for (int b = 0; b < kOBlocks; ++b) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int row = plan::AccRow(lane, 2 * i);
      const int col = 8 * b + plan::AccCol(lane, 2 * i);
      *reinterpret_cast<uint32_t*>(my_q + row * kStride + col) =
          Ops::Pack(o[b][2 * i] * inv[i], o[b][2 * i + 1] * inv[i]);
    }
  }
  __syncthreads();
  static_assert(plan::CopySplitsEvenly(kBlockM, D, kVec, kCtaThreads), "tile must split evenly");
  constexpr int kSteps = plan::CopySteps(kBlockM, D, kVec, kCtaThreads);
#pragma unroll
  for (int step = 0; step < kSteps; ++step) {
    const plan::TileChunk c = plan::CopyChunk(step, threadIdx.x, kCtaThreads, D, kVec);
    const int row = q.begin + c.row;
    if (row < q.end) {
      *reinterpret_cast<uint4*>(out + plan::OutOffset(row0 + row, head, c.col, num_heads, D)) =
          *reinterpret_cast<const uint4*>(sq + c.row * kStride + c.col);
    }
  }
}

// ------------------------------------- launchers -------------------------------------------

__global__ void InvalidArgumentKernel() {}

template <typename Kernel>
void SetSharedMemory(Kernel kernel, size_t bytes) {
  // Above 48 KiB a kernel must opt in; a failure here surfaces as a launch error.
  if (bytes > 48 * 1024) {
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(bytes));
  }
}

// SM count of the current device, queried once per device and cached; 0 when unknown (the
// failed query's error is then left for the caller's cudaGetLastError(), as the launch that
// follows would fail as well).
int CurrentDeviceSmCount() {
  constexpr int kMaxCachedDevices = 64;
  static std::atomic<int> cached[kMaxCachedDevices] = {};
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 0;
  const bool cacheable = device >= 0 && device < kMaxCachedDevices;
  if (cacheable) {
    const int n = cached[device].load(std::memory_order_relaxed);
    if (n > 0) return n;
  }
  int n = 0;
  if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) return 0;
  if (cacheable && n > 0) cached[device].store(n, std::memory_order_relaxed);
  return n;
}

// Warps per CTA of the tensor-core kernel for `tile` (kAuto: the launch rule).
int MmaWarps(AttentionTile tile, int num_seqs, int max_rows, int num_heads) {
  if (tile != AttentionTile::kAuto) return static_cast<int>(tile) / plan::kMmaRowsPerWarp;
  return plan::ChooseMmaWarps(num_seqs, max_rows, num_heads, CurrentDeviceSmCount());
}

template <typename T, int D, int kWarps, bool kDoubleBuffer>
void LaunchMma(const T* qkv, const int32_t* cu_rows, const int32_t* num_valid, int num_seqs,
               int max_rows, int num_heads, float scale_log2, T* out, cudaStream_t stream,
               bool programmatic) {
  using L = MmaLayout<D, kWarps, kDoubleBuffer ? 2 : 1>;
  SetSharedMemory(VarlenAttentionMmaKernel<T, D, kWarps, kDoubleBuffer>, L::kBytes);
  for (int c = 0; c < plan::NumChunks(num_seqs); ++c) {
    const plan::GridDims g = plan::ChunkGrid(c, num_seqs, max_rows, num_heads, L::kBlockM);
    internal::LaunchKernel(VarlenAttentionMmaKernel<T, D, kWarps, kDoubleBuffer>,
                           dim3(g.x, g.y, g.z), dim3(plan::MmaThreads(kWarps)), L::kBytes, stream,
                           programmatic, qkv, cu_rows, num_valid, plan::ChunkSeqBegin(c), num_heads,
                           scale_log2, out);
  }
}

// Returns the query-tile height launched.
template <typename T, int D, bool kDoubleBuffer>
int LaunchMmaForTile(const T* qkv, const int32_t* cu_rows, const int32_t* num_valid, int num_seqs,
                     int max_rows, int num_heads, float scale_log2, T* out, cudaStream_t stream,
                     AttentionTile tile, bool programmatic) {
  switch (MmaWarps(tile, num_seqs, max_rows, num_heads)) {
    case 1:
      LaunchMma<T, D, 1, kDoubleBuffer>(qkv, cu_rows, num_valid, num_seqs, max_rows, num_heads,
                                        scale_log2, out, stream, programmatic);
      return plan::MmaBlockM(1);
    case 2:
      LaunchMma<T, D, 2, kDoubleBuffer>(qkv, cu_rows, num_valid, num_seqs, max_rows, num_heads,
                                        scale_log2, out, stream, programmatic);
      return plan::MmaBlockM(2);
    default:
      LaunchMma<T, D, 4, kDoubleBuffer>(qkv, cu_rows, num_valid, num_seqs, max_rows, num_heads,
                                        scale_log2, out, stream, programmatic);
      return plan::MmaBlockM(4);
  }
}

template <typename T, int D>
AttentionLaunch LaunchForHeadDim(const T* qkv, const int32_t* cu_rows, const int32_t* num_valid,
                                 int num_seqs, int max_rows, int num_heads, T* out,
                                 cudaStream_t stream, const AttentionOptions& options) {
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  if constexpr (std::is_same_v<T, float>) {
    const size_t smem = F32Layout<D>::kBytes;
    SetSharedMemory(VarlenAttentionF32Kernel<D>, smem);
    for (int c = 0; c < plan::NumChunks(num_seqs); ++c) {
      const plan::GridDims g = plan::ChunkGrid(c, num_seqs, max_rows, num_heads, kF32BlockM);
      internal::LaunchKernel(VarlenAttentionF32Kernel<D>, dim3(g.x, g.y, g.z), dim3(kF32Threads),
                             smem, stream, options.programmatic, qkv, cu_rows, num_valid,
                             plan::ChunkSeqBegin(c), num_heads, scale, out);
    }
    return AttentionLaunch{};
  } else {
    const float scale_log2 = scale * 1.4426950408889634f;  // exp(x) = exp2(x * log2(e))
    // With one key tile there is nothing to overlap: the single-buffered kernel (same bits,
    // less shared memory).
    AttentionLaunch launch;
    launch.double_buffered_kv = options.double_buffer_kv && max_rows > kBlockN;
    launch.tile_rows = launch.double_buffered_kv
                           ? LaunchMmaForTile<T, D, true>(
                                 qkv, cu_rows, num_valid, num_seqs, max_rows, num_heads, scale_log2,
                                 out, stream, options.tile, options.programmatic)
                           : LaunchMmaForTile<T, D, false>(
                                 qkv, cu_rows, num_valid, num_seqs, max_rows, num_heads, scale_log2,
                                 out, stream, options.tile, options.programmatic);
    return launch;
  }
}

}  // namespace

AttentionTile ChooseAttentionTile(int num_seqs, int max_rows, int num_heads) {
  // The enum's values are the tile heights.
  return static_cast<AttentionTile>(
      plan::MmaBlockM(plan::ChooseMmaWarps(num_seqs, max_rows, num_heads, CurrentDeviceSmCount())));
}

template <typename T>
AttentionLaunch LaunchVarlenAttention(const T* qkv, const int32_t* cu_rows,
                                      const int32_t* num_valid, int num_seqs, int max_rows,
                                      int num_heads, int head_dim, T* out, cudaStream_t stream,
                                      const AttentionOptions& options) {
  if (num_seqs <= 0 || max_rows <= 0 || num_heads <= 0) return AttentionLaunch{};
  switch (head_dim) {
    case 32:
      return LaunchForHeadDim<T, 32>(qkv, cu_rows, num_valid, num_seqs, max_rows, num_heads, out,
                                     stream, options);
    case 64:
      return LaunchForHeadDim<T, 64>(qkv, cu_rows, num_valid, num_seqs, max_rows, num_heads, out,
                                     stream, options);
    case 128:
      return LaunchForHeadDim<T, 128>(qkv, cu_rows, num_valid, num_seqs, max_rows, num_heads, out,
                                      stream, options);
    default:
      // An empty grid: cudaGetLastError() then reports a launch error (cudaErrorInvalidValue
      // with CUDA 13 on an H200).
      InvalidArgumentKernel<<<0, 1, 0, stream>>>();
      return AttentionLaunch{};
  }
}

#define BERT_INSTANTIATE(T)                                                                        \
  template AttentionLaunch LaunchVarlenAttention<T>(const T*, const int32_t*, const int32_t*, int, \
                                                    int, int, int, T*, cudaStream_t,               \
                                                    const AttentionOptions&);
BERT_INSTANTIATE(float)
BERT_INSTANTIATE(__half)
BERT_INSTANTIATE(__nv_bfloat16)
#undef BERT_INSTANTIATE

}  // namespace bert::cuda
