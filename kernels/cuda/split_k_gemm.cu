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

template <typename T, SplitKEpilogue kEpilogue>
__global__ void __launch_bounds__(kThreads) SplitKGemmKernel(SplitKGemmArgs args) {
  __shared__ __align__(16) T smem_x[kStages][kBlockM * kStride];
  __shared__ __align__(16) T smem_w[kStages][kBlockN * kStride];
  __shared__ bool last_of_tile;

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
  // programmatic launch sees only through coherent loads (launch.cuh).
  const T* residual = static_cast<const T*>(args.residual);
  T* __restrict__ y = static_cast<T*>(args.y);
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
        } else if (kEpilogue == SplitKEpilogue::kBiasResidual) {
          float r[2];
          internal::LoadFloats<T, 2>(residual + offset, r);
          v[0] += r[0];
          v[1] += r[1];
        }
        internal::StoreFloats<T, 2>(y + offset, v);
      }
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
  if ((epilogue == SplitKEpilogue::kBiasResidual) != (args.residual != nullptr)) {
    return "a residual goes with (and only with) kBiasResidual";
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
  }
  return cudaErrorInvalidValue;
}

template cudaError_t LaunchSplitKGemm<__half>(const SplitKGemmArgs&, SplitKEpilogue, cudaStream_t);
template cudaError_t LaunchSplitKGemm<__nv_bfloat16>(const SplitKGemmArgs&, SplitKEpilogue,
                                                     cudaStream_t);

}  // namespace cuda
}  // namespace bert
