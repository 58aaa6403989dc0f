// Split-K GEMM for few rows (see split_k_gemm.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <string>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/mma_utils.cuh"
#include "kernels/cuda/split_k_gemm.h"

namespace bert {
namespace cuda {
namespace {

using internal::CpAsync16;
using internal::CpAsyncCommit;
using internal::CpAsyncWait;
using internal::LdsmX4;
using internal::MmaOps;

constexpr int kBlockM = kSplitKBlockRows;
constexpr int kBlockN = kSplitKBlockCols;
constexpr int kBlockK = kSplitKBlockK;
constexpr int kStages = 4;
constexpr int kThreads = 128;  // 4 warps: 2 (rows) x 2 (columns), 32 x 32 outputs each
// Shared-memory row of a tile: 32 elements + 8 of padding = 80 bytes, so the 8 rows one
// ldmatrix reads start in 8 different 16-byte bank groups (no conflicts), and every row
// stays 16-byte aligned for cp.async.
constexpr int kStride = kBlockK + 8;
constexpr int kChunksPerRow = kBlockK / 8;                            // 16-byte chunks
constexpr int kCopiesPerThread = kBlockM * kChunksPerRow / kThreads;  // per tile, per stage
static_assert(kBlockM == kBlockN, "A and B tiles are copied by the same loop");
static_assert(kBlockM * kChunksPerRow % kThreads == 0, "tile copies split evenly");
// Per thread: [2 row fragments][4 column fragments][4 accumulators] = 8 float4.
constexpr int kAccFloat4 = 8;
static_assert(kAccFloat4 * 4 * kThreads == kBlockM * kBlockN, "one partial tile per CTA");
__host__ __device__ constexpr bool HasResidual(SplitKEpilogue e) {
  return e == SplitKEpilogue::kBiasResidual || e == SplitKEpilogue::kBiasResidualLayerNorm;
}
// kBiasResidualLayerNorm: the most tiles a row has (kSplitKMaxLayerNormWidth / 64).
constexpr int kMaxRowTiles = kSplitKMaxLayerNormWidth / kBlockN;

// Sums f(value, row) over the tile's 64 columns for each of its 64 rows, from the
// accumulators (see the epilogue for their rows and columns): a thread's 8 values of each of its
// 4 rows, then the 4 lanes that share those rows, then the two warps side by side through
// `part`. out[r] = scale * sum for row r of the tile; every thread may read it on return.
// Every thread of the CTA must call it (it shuffles across full warps and has barriers).
template <typename F>
__device__ __forceinline__ void TileRowSums(const float (&acc)[2][4][4], F f, float scale,
                                            float (&part)[kBlockM][2], float (&out)[kBlockM]) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
#pragma unroll
  for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = (warp >> 1) * 32 + mi * 16 + (lane >> 2) + half * 8;
      float sum = 0.0f;
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
        sum += f(acc[mi][ni][half * 2], r);
        sum += f(acc[mi][ni][half * 2 + 1], r);
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      if ((lane & 3) == 0) part[r][warp & 1] = sum;
    }
  }
  __syncthreads();
  if (threadIdx.x < kBlockM)
    out[threadIdx.x] = scale * (part[threadIdx.x][0] + part[threadIdx.x][1]);
  __syncthreads();
}

template <typename T, SplitKEpilogue kEpilogue>
__global__ void __launch_bounds__(kThreads) SplitKGemmKernel(SplitKGemmArgs args) {
  __shared__ __align__(16) T smem_x[kStages][kBlockM * kStride];
  __shared__ __align__(16) T smem_w[kStages][kBlockN * kStride];
  __shared__ bool last_of_tile;
  __shared__ bool last_of_row_block;

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int warp_row = (warp >> 1) * 32;  // within the CTA tile
  const int warp_col = (warp & 1) * 32;
  const int m0 = blockIdx.y * kBlockM;
  const int n0 = blockIdx.x * kBlockN;
  const int split = blockIdx.z;
  const int rows = args.rows;
  const int k_total = args.in_features;

  const int blocks_per_split = SplitKBlocksPerSplit(k_total, args.splits);
  const int kb_begin = split * blocks_per_split;
  const int kb_end = min(k_total / kBlockK, kb_begin + blocks_per_split);
  const int num_kb = max(0, kb_end - kb_begin);

  const T* __restrict__ x = static_cast<const T*>(args.x);
  const T* __restrict__ w = static_cast<const T*>(args.weight);

  // K block `kb` of rows [first, first + 64) of `src` ([*, k_total]) into `tile`, rows at or
  // past `limit` zero-filled (and not read).
  auto load_tile = [&](T* tile, const T* src, int first, int limit, int kb) {
    const int k0 = kb * kBlockK;
#pragma unroll
    for (int i = 0; i < kCopiesPerThread; ++i) {
      const int chunk = tid + i * kThreads;
      const int r = chunk / kChunksPerRow;
      const int c = (chunk % kChunksPerRow) * 8;
      const int row = first + r;
      const bool fill = row < limit;
      CpAsync16(tile + r * kStride + c,
                src + static_cast<int64_t>(fill ? row : 0) * k_total + k0 + c, fill);
    }
  };
  // Stage `stage` <- K block `kb` of the x rows [m0, m0 + 64) (rows past `rows` zero-filled),
  // and of the weight rows [n0, n0 + 64).
  auto load_x = [&](int stage, int kb) { load_tile(smem_x[stage], x, m0, rows, kb); };
  auto load_w = [&](int stage, int kb) { load_tile(smem_w[stage], w, n0, n0 + kBlockN, kb); };

  float acc[2][4][4];
#pragma unroll
  for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.0f;
    }
  }

  // No kernel writes the weights, so their first stages are fetched before waiting for the
  // previous kernel (launch.cuh: with a programmatic launch that overlaps its tail); x, the
  // partial sums, the counters and y only after.
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < num_kb) load_w(s, kb_begin + s);
  }
  internal::WaitForPriorGrid();
  internal::AllowDependentLaunch();
  // One commit group per K block (empty past the end; the first group also holds the weights
  // of blocks 1 and 2), so that "at most kStages - 2 groups in flight" always means "block i
  // has landed".
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < num_kb) load_x(s, kb_begin + s);
    CpAsyncCommit();
  }

  // ldmatrix addresses within a stage (see mma_utils.cuh): for the x fragment of rows
  // [16 mi, 16 mi + 16), lane l points at row l % 16, column 8 (l / 16); for the weight
  // fragments of output columns [16 nj, 16 nj + 16), lane l points at row
  // l % 8 + 8 (l / 16), column 8 ((l / 8) % 2). Registers then hold: x {rows 0-7, k 0-7},
  // {rows 8-15, k 0-7}, {rows 0-7, k 8-15}, {rows 8-15, k 8-15} (the m16n8k16 A fragment);
  // weights {n 0-7, k 0-7}, {n 0-7, k 8-15}, {n 8-15, k 0-7}, {n 8-15, k 8-15} (the B
  // fragments of two n8 column blocks).
  const int x_frag_offset = (warp_row + (lane & 15)) * kStride + (lane >> 4) * 8;
  const int w_frag_offset =
      (warp_col + (lane & 7) + ((lane >> 4) << 3)) * kStride + ((lane >> 3) & 1) * 8;

  for (int i = 0; i < num_kb; ++i) {
    CpAsyncWait<kStages - 2>();
    // Block i is visible to all warps, and every warp is done with block i - 1, whose stage
    // the next copy overwrites.
    __syncthreads();
    const int next = i + kStages - 1;
    if (next < num_kb) {
      load_x(next % kStages, kb_begin + next);
      load_w(next % kStages, kb_begin + next);
    }
    CpAsyncCommit();

    const T* sx = smem_x[i % kStages];
    const T* sw = smem_w[i % kStages];
#pragma unroll
    for (int kk = 0; kk < kBlockK; kk += 16) {
      uint32_t xf[2][4];
      uint32_t wf[2][4];
#pragma unroll
      for (int mi = 0; mi < 2; ++mi) LdsmX4(xf[mi], sx + x_frag_offset + mi * 16 * kStride + kk);
#pragma unroll
      for (int nj = 0; nj < 2; ++nj) LdsmX4(wf[nj], sw + w_frag_offset + nj * 16 * kStride + kk);
#pragma unroll
      for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) {
          MmaOps<T>::Mma(acc[mi][ni], xf[mi], wf[ni >> 1][(ni & 1) * 2],
                         wf[ni >> 1][(ni & 1) * 2 + 1]);
        }
      }
    }
  }
  CpAsyncWait<0>();  // only empty groups can be left; nothing may be in flight at exit

  if (args.splits > 1) {
    // Partial tile of (tile, split), laid out [float4 j][thread] so that each warp store
    // and load is 512 contiguous bytes.
    const long long tile = static_cast<long long>(blockIdx.y) * gridDim.x + blockIdx.x;
    float4* partials = reinterpret_cast<float4*>(args.partials);
    float4* mine = partials + (tile * args.splits + split) * (kAccFloat4 * kThreads);
#pragma unroll
    for (int j = 0; j < kAccFloat4; ++j) {
      const float* a = acc[j / 4][j % 4];
      mine[j * kThreads + tid] = make_float4(a[0], a[1], a[2], a[3]);
    }
    // Release: this CTA's partial is visible device-wide before it is counted.
    __threadfence();
    __syncthreads();
    if (tid == 0) {
      const unsigned arrived = atomicAdd(&args.counters[tile], 1u);
      last_of_tile = arrived == static_cast<unsigned>(args.splits - 1);
      // Every CTA of the tile has counted: reset for the next launch of this stream.
      if (last_of_tile) args.counters[tile] = 0;
    }
    __syncthreads();
    if (!last_of_tile) return;
    // Acquire: the other CTAs' partials (read through L2, bypassing L1).
    __threadfence();
    float own[kAccFloat4][4];
#pragma unroll
    for (int j = 0; j < kAccFloat4; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        own[j][e] = acc[j / 4][j % 4][e];
        acc[j / 4][j % 4][e] = 0.0f;
      }
    }
    const float4* tile_partials = partials + tile * args.splits * (kAccFloat4 * kThreads);
    // In split order, whichever CTA came last: the sum is the same bits every run.
    for (int s = 0; s < args.splits; ++s) {
#pragma unroll
      for (int j = 0; j < kAccFloat4; ++j) {
        float v[4];
        if (s == split) {
#pragma unroll
          for (int e = 0; e < 4; ++e) v[e] = own[j][e];
        } else {
          const float4 p = __ldcg(tile_partials + s * (kAccFloat4 * kThreads) + j * kThreads + tid);
          v[0] = p.x;
          v[1] = p.y;
          v[2] = p.z;
          v[3] = p.w;
        }
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[j / 4][j % 4][e] += v[e];
      }
    }
  }

  // Epilogue. Accumulator e of fragment (mi, ni) is row 16 mi + lane / 4 (+ 8 for e >= 2),
  // column 8 ni + 2 (lane % 4) (+ 1 for odd e) of the warp's 32 x 32 block.
  const T* __restrict__ bias = static_cast<const T*>(args.bias);
  // Not __restrict__: the residual may come from the kernel just before this one, which a
  // programmatic launch sees only through coherent loads (launch.cuh); y may be the residual
  // (kBiasResidualLayerNorm).
  const T* residual = static_cast<const T*>(args.residual);
  T* y = static_cast<T*>(args.y);
  const int n_total = args.out_features;
#pragma unroll
  for (int ni = 0; ni < 4; ++ni) {
    const int col = n0 + warp_col + ni * 8 + (lane & 3) * 2;
    float b[2] = {0.0f, 0.0f};  // columns col and col + 1: one 4-byte access each
    if (kEpilogue != SplitKEpilogue::kNone) internal::LoadFloats<T, 2>(bias + col, b);
#pragma unroll
    for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int row = m0 + warp_row + mi * 16 + (lane >> 2) + half * 8;
        if (row >= rows) continue;
        float v[2] = {acc[mi][ni][half * 2] + b[0], acc[mi][ni][half * 2 + 1] + b[1]};
        const int64_t offset = static_cast<int64_t>(row) * n_total + col;
        if (kEpilogue == SplitKEpilogue::kBiasGeluTanh) {
          v[0] = internal::GeluTanh(v[0]);
          v[1] = internal::GeluTanh(v[1]);
        } else if (HasResidual(kEpilogue)) {
          float r[2];
          internal::LoadFloats<T, 2>(residual + offset, r);
          v[0] += r[0];
          v[1] += r[1];
        }
        if (kEpilogue == SplitKEpilogue::kBiasResidualLayerNorm) {
          *reinterpret_cast<float2*>(args.norm_rows + offset) = make_float2(v[0], v[1]);
          acc[mi][ni][half * 2] = v[0];  // for the tile's row statistics below
          acc[mi][ni][half * 2 + 1] = v[1];
        } else {
          internal::StoreFloats<T, 2>(y + offset, v);
        }
      }
    }
  }

  if constexpr (kEpilogue == SplitKEpilogue::kBiasResidualLayerNorm) {
    // The tile's statistics of each row over its 64 columns, two-pass in fp32: the mean, then
    // the sum of squared deviations from it (rows past `rows` hold no data and are not
    // written).
    __shared__ float part[kBlockM][2];
    __shared__ float row_mean[kBlockM];
    __shared__ float row_m2[kBlockM];
    __shared__ float row_rstd[kBlockM];
    TileRowSums(
        acc, [](float v, int) { return v; }, 1.0f / kBlockN, part, row_mean);
    TileRowSums(
        acc,
        [&](float v, int r) {
          const float d = v - row_mean[r];
          return d * d;
        },
        1.0f, part, row_m2);
    const int tiles = gridDim.x;  // of a row
    float2* stats = reinterpret_cast<float2*>(args.norm_stats);
    if (tid < kBlockM && m0 + tid < rows) {
      stats[static_cast<int64_t>(m0 + tid) * tiles + blockIdx.x] =
          make_float2(row_mean[tid], row_m2[tid]);
    }
    // Release this tile's sums and statistics (and its reads of the residual, which the last
    // tile overwrites), then count the tile in its row block.
    __threadfence();
    __syncthreads();
    if (tid == 0) {
      const unsigned arrived = atomicAdd(&args.row_counters[blockIdx.y], 1u);
      last_of_row_block = arrived == gridDim.x - 1;
      if (last_of_row_block) args.row_counters[blockIdx.y] = 0;  // for the next launch
    }
    __syncthreads();
    if (!last_of_row_block) return;
    __threadfence();  // acquire: the row block's other tiles (read through L2 below)

    // Each row's mean and 1 / std from its tiles' (equal counts of 64: the mean of the means,
    // and the squared deviations plus 64 times each tile mean's squared distance to the mean,
    // Chan et al.), one thread per row; then every value of the row block, 4 at a time by
    // all threads, independent of one another (loads in flight together, not a chain per row).
    const int block_rows = min(rows - m0, kBlockM);
    if (tid < block_rows) {
      const float2* row_stats = stats + static_cast<int64_t>(m0 + tid) * tiles;
      float2 st[kMaxRowTiles];
#pragma unroll
      for (int t = 0; t < kMaxRowTiles; ++t) {
        if (t < tiles) st[t] = __ldcg(row_stats + t);
      }
      float mean = 0.0f;
#pragma unroll
      for (int t = 0; t < kMaxRowTiles; ++t) {
        if (t < tiles) mean += st[t].x;
      }
      mean /= static_cast<float>(tiles);
      float m2 = 0.0f;
#pragma unroll
      for (int t = 0; t < kMaxRowTiles; ++t) {
        if (t < tiles) {
          const float d = st[t].x - mean;
          m2 += st[t].y + static_cast<float>(kBlockN) * d * d;
        }
      }
      row_mean[tid] = mean;
      row_rstd[tid] = 1.0f / sqrtf(m2 / static_cast<float>(n_total) + args.eps);
    }
    __syncthreads();
    const int quads = n_total / 4;
    const float* __restrict__ gamma = args.gamma;
    const float* __restrict__ beta = args.beta;
#pragma unroll 4
    for (int i = tid; i < block_rows * quads; i += kThreads) {
      const int r = i / quads;
      const int c = (i - r * quads) * 4;
      const int64_t offset = static_cast<int64_t>(m0 + r) * n_total + c;
      const float4 x4 = __ldcg(reinterpret_cast<const float4*>(args.norm_rows + offset));
      const float4 g4 = __ldg(reinterpret_cast<const float4*>(gamma + c));
      const float4 b4 = __ldg(reinterpret_cast<const float4*>(beta + c));
      const float mean = row_mean[r], rstd = row_rstd[r];
      const float o[4] = {(x4.x - mean) * rstd * g4.x + b4.x, (x4.y - mean) * rstd * g4.y + b4.y,
                          (x4.z - mean) * rstd * g4.z + b4.z, (x4.w - mean) * rstd * g4.w + b4.w};
      internal::StoreFloats<T, 4>(y + offset, o);
    }
  }
}

template <typename T, SplitKEpilogue kEpilogue>
cudaError_t Launch(const SplitKGemmArgs& args, cudaStream_t stream) {
  const dim3 grid(args.out_features / kBlockN, (args.rows + kBlockM - 1) / kBlockM, args.splits);
  internal::LaunchKernel(SplitKGemmKernel<T, kEpilogue>, grid, dim3(kThreads), 0, stream,
                         args.programmatic, args);
  return cudaGetLastError();
}

}  // namespace

std::string SplitKGemmUnsupported(const SplitKGemmArgs& args, SplitKEpilogue epilogue) {
  if (args.rows < 0 || args.in_features <= 0 || args.out_features <= 0) return "bad shape";
  if (args.in_features % kBlockK != 0) return "in_features is not a multiple of 32";
  if (args.out_features % kBlockN != 0) return "out_features is not a multiple of 64";
  if (args.x == nullptr || args.weight == nullptr || args.y == nullptr) return "null operand";
  if (!internal::IsAligned<16>(args.x) || !internal::IsAligned<16>(args.weight))
    return "x or W not 16-byte aligned";
  if (!internal::IsAligned<4>(args.y)) return "y not 4-byte aligned";
  if (epilogue != SplitKEpilogue::kNone &&
      (args.bias == nullptr || !internal::IsAligned<4>(args.bias))) {
    return "bias missing or not 4-byte aligned";
  }
  if (HasResidual(epilogue) != (args.residual != nullptr)) {
    return "a residual goes with (and only with) kBiasResidual and kBiasResidualLayerNorm";
  }
  if (epilogue == SplitKEpilogue::kBiasResidualLayerNorm) {
    if (args.out_features > kSplitKMaxLayerNormWidth) return "too wide for the LayerNorm";
    if (args.gamma == nullptr || args.beta == nullptr || !internal::IsAligned<16>(args.gamma) ||
        !internal::IsAligned<16>(args.beta)) {
      return "LayerNorm parameters missing or not 16-byte aligned";
    }
    if (args.norm_rows == nullptr || !internal::IsAligned<16>(args.norm_rows) ||
        args.norm_stats == nullptr || !internal::IsAligned<8>(args.norm_stats) ||
        args.row_counters == nullptr) {
      return "LayerNorm without its workspace";
    }
    if (args.row_counters == args.counters) return "row and tile counters share memory";
    if (!internal::IsAligned<8>(args.y)) return "y not 8-byte aligned";
    // Byte ranges (16-bit T): y must be the residual or apart from it and the other inputs.
    const auto apart = [](const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
      const uintptr_t pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
      return pa + a_bytes <= pb || pb + b_bytes <= pa;
    };
    const size_t out_bytes = static_cast<size_t>(args.rows) * args.out_features * 2;
    const size_t x_bytes = static_cast<size_t>(args.rows) * args.in_features * 2;
    const size_t w_bytes = static_cast<size_t>(args.out_features) * args.in_features * 2;
    if (!apart(args.y, out_bytes, args.x, x_bytes) ||
        !apart(args.y, out_bytes, args.weight, w_bytes) ||
        !apart(args.y, out_bytes, args.bias, static_cast<size_t>(args.out_features) * 2) ||
        (args.y != args.residual && !apart(args.y, out_bytes, args.residual, out_bytes))) {
      return "y overlaps an input other than the residual";
    }
    const size_t sums_bytes = out_bytes * 2;  // fp32
    if (!apart(args.norm_rows, sums_bytes, args.y, out_bytes) ||
        !apart(args.norm_rows, sums_bytes, args.residual, out_bytes)) {
      return "norm_rows overlaps y or the residual";
    }
  }
  if (args.residual != nullptr && !internal::IsAligned<4>(args.residual)) {
    return "residual not 4-byte aligned";
  }
  if (args.splits < 1 || args.splits > kSplitKMaxSplits ||
      args.splits > args.in_features / kBlockK) {
    return "bad split count";
  }
  if (args.splits > 1 && (args.partials == nullptr || args.counters == nullptr ||
                          !internal::IsAligned<16>(args.partials))) {
    return "split-K without its workspace";
  }
  if ((static_cast<long long>(args.rows) + kBlockM - 1) / kBlockM > 65535) return "too many rows";
  return "";
}

template <typename T>
cudaError_t LaunchSplitKGemm(const SplitKGemmArgs& args, SplitKEpilogue epilogue,
                             cudaStream_t stream) {
  if (!SplitKGemmUnsupported(args, epilogue).empty()) return cudaErrorInvalidValue;
  if (args.rows == 0) return cudaSuccess;
  switch (epilogue) {
    case SplitKEpilogue::kNone:
      return Launch<T, SplitKEpilogue::kNone>(args, stream);
    case SplitKEpilogue::kBias:
      return Launch<T, SplitKEpilogue::kBias>(args, stream);
    case SplitKEpilogue::kBiasGeluTanh:
      return Launch<T, SplitKEpilogue::kBiasGeluTanh>(args, stream);
    case SplitKEpilogue::kBiasResidual:
      return Launch<T, SplitKEpilogue::kBiasResidual>(args, stream);
    case SplitKEpilogue::kBiasResidualLayerNorm:
      return Launch<T, SplitKEpilogue::kBiasResidualLayerNorm>(args, stream);
  }
  return cudaErrorInvalidValue;
}

template cudaError_t LaunchSplitKGemm<__half>(const SplitKGemmArgs&, SplitKEpilogue, cudaStream_t);
template cudaError_t LaunchSplitKGemm<__nv_bfloat16>(const SplitKGemmArgs&, SplitKEpilogue,
                                                     cudaStream_t);

}  // namespace cuda
}  // namespace bert
