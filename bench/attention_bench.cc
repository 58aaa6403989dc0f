// Times LaunchVarlenAttention alone with CUDA events (not a test; see bench/NOTES_attention.md).
//
//   attention_bench [--dtype=f16|bf16|f32] [--iters=N] [--no-tiles]
//
// Shapes (12 heads, head_dim 64): batch 128 x 128 tokens, 32 x 512, 1 x 128, and a
// variable-length batch of 256 sequences (log-normal lengths, mean ~36, max 128, fixed
// seed), in --dtype with the launcher's own tile choice. Method: random inputs, 20 warm-up
// launches, then N launches each bracketed by its own pair of events; prints the median and
// the min, the achieved TFLOP/s (4 * L^2 * D per sequence and head, real lengths) and GB/s
// (qkv read once + out written once), and the torch SDPA anchors from the project's device
// notes (shared/DEVICE.md, outside this repository) for
// the two fixed shapes (H200).
// Then, unless --no-tiles, the tile sweep: batch 1 / 8 / 32 / 128 x 128 tokens and the
// variable-length batch, in fp16 and bf16, the median of each query-tile height forced
// (64 / 32 / 16 rows) and of the launcher's choice (auto, with the height it resolves to),
// same method.
#include <cstdio>

#if defined(BERT_WITH_CUDA)

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "bench/cuda_check.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/host_convert.h"

namespace {

constexpr int kHeads = 12;
constexpr int kHeadDim = 64;

struct Shape {
  std::string name;
  std::vector<int32_t> lengths;
  double torch_sdpa_ms;  // 0 when there is no anchor
};

struct Timing {
  double median_ms;
  double min_ms;
  int64_t non_finite;  // output elements that are not finite (should be 0)
};

template <typename T>
Timing TimeShape(const std::vector<int32_t>& lengths, int iters,
                 const bert::cuda::AttentionOptions& options) {
  const int num_seqs = static_cast<int>(lengths.size());
  std::vector<int32_t> cu(num_seqs + 1, 0);
  for (int s = 0; s < num_seqs; ++s) cu[s + 1] = cu[s] + lengths[s];
  const int64_t rows = cu[num_seqs];
  const int max_rows = *std::max_element(lengths.begin(), lengths.end());
  const int hidden = kHeads * kHeadDim;

  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<T> qkv(rows * 3 * hidden);
  for (auto& x : qkv) x = bert::cuda::HostFromFloat<T>(dist(rng));

  T *d_qkv = nullptr, *d_out = nullptr;
  int32_t *d_cu = nullptr, *d_valid = nullptr;
  CHECK_CUDA(cudaMalloc(&d_qkv, qkv.size() * sizeof(T)));
  CHECK_CUDA(cudaMalloc(&d_out, rows * hidden * sizeof(T)));
  CHECK_CUDA(cudaMalloc(&d_cu, cu.size() * sizeof(int32_t)));
  CHECK_CUDA(cudaMalloc(&d_valid, num_seqs * sizeof(int32_t)));
  CHECK_CUDA(cudaMemcpy(d_qkv, qkv.data(), qkv.size() * sizeof(T), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_cu, cu.data(), cu.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
  CHECK_CUDA(
      cudaMemcpy(d_valid, lengths.data(), num_seqs * sizeof(int32_t), cudaMemcpyHostToDevice));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));

  auto launch = [&] {
    bert::cuda::LaunchVarlenAttention<T>(d_qkv, d_cu, d_valid, num_seqs, max_rows, kHeads, kHeadDim,
                                         d_out, stream, options);
  };
  for (int i = 0; i < 20; ++i) launch();
  CHECK_CUDA(cudaGetLastError());
  CHECK_CUDA(cudaStreamSynchronize(stream));
  std::vector<float> ms(iters);
  for (int i = 0; i < iters; ++i) {
    CHECK_CUDA(cudaEventRecord(start, stream));
    launch();
    CHECK_CUDA(cudaEventRecord(stop, stream));
    CHECK_CUDA(cudaEventSynchronize(stop));
    CHECK_CUDA(cudaEventElapsedTime(&ms[i], start, stop));
  }
  CHECK_CUDA(cudaGetLastError());

  // Sanity: the output is finite (correctness itself is attention_test's job).
  std::vector<T> out(rows * hidden);
  CHECK_CUDA(cudaMemcpy(out.data(), d_out, out.size() * sizeof(T), cudaMemcpyDeviceToHost));
  int64_t non_finite = 0;
  for (const T& x : out) non_finite += !std::isfinite(bert::cuda::HostToFloat(x));

  std::sort(ms.begin(), ms.end());

  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  CHECK_CUDA(cudaStreamDestroy(stream));
  CHECK_CUDA(cudaFree(d_qkv));
  CHECK_CUDA(cudaFree(d_out));
  CHECK_CUDA(cudaFree(d_cu));
  CHECK_CUDA(cudaFree(d_valid));
  return Timing{ms[iters / 2], ms[0], non_finite};
}

template <typename T>
void RunShape(const Shape& shape, int iters) {
  const Timing t = TimeShape<T>(shape.lengths, iters, bert::cuda::AttentionOptions());
  const int num_seqs = static_cast<int>(shape.lengths.size());
  int64_t rows = 0;
  for (int32_t l : shape.lengths) rows += l;
  const int hidden = kHeads * kHeadDim;
  const double median = t.median_ms, best = t.min_ms;
  double flops = 0;
  for (int32_t l : shape.lengths) flops += 4.0 * kHeads * double(l) * l * kHeadDim;
  const double bytes = double(rows) * (3 * hidden + hidden) * sizeof(T);
  std::printf("%-22s seqs %5d rows %7lld  median %8.4f ms  min %8.4f ms  %7.1f TFLOP/s  %7.1f GB/s",
              shape.name.c_str(), num_seqs, static_cast<long long>(rows), median, best,
              flops / median / 1e9, bytes / median / 1e6);
  if (shape.torch_sdpa_ms > 0) {
    std::printf("  torch SDPA (H200, from DEVICE.md, not this run) %.3f ms -> %.2fx",
                shape.torch_sdpa_ms, shape.torch_sdpa_ms / median);
  }
  std::printf("%s\n", t.non_finite ? "  NON-FINITE OUTPUT" : "");
}

// Log-normal lengths with mean ~36 (mu = 3.3, sigma = 0.6), clamped to [1, 128], fixed seed.
std::vector<int32_t> VarlenLengths() {
  std::mt19937 rng(42);
  std::lognormal_distribution<double> lognormal(3.3, 0.6);
  std::vector<int32_t> lengths;
  for (int i = 0; i < 256; ++i) {
    lengths.push_back(static_cast<int32_t>(std::clamp(std::lround(lognormal(rng)), 1L, 128L)));
  }
  return lengths;
}

// One line per batch: the median (us) of every tile height and of the launcher's choice, with
// one K/V buffer and with two ("+db").
template <typename T>
void TileSweep(const char* dtype, int iters, int sm_count) {
  using bert::cuda::AttentionTile;
  constexpr int kSeqLen = 128;
  std::vector<std::pair<std::string, std::vector<int32_t>>> batches;
  for (int batch : {1, 8, 32, 128}) {
    batches.push_back({std::to_string(batch) + " x " + std::to_string(kSeqLen),
                       std::vector<int32_t>(batch, kSeqLen)});
  }
  batches.push_back({"256 varlen", VarlenLengths()});
  for (const auto& [label, lengths] : batches) {
    const int num_seqs = static_cast<int>(lengths.size());
    const int max_rows = *std::max_element(lengths.begin(), lengths.end());
    const AttentionTile chosen = bert::cuda::ChooseAttentionTile(num_seqs, max_rows, kHeads);
    std::printf("tiles %-4s %-10s  CTAs(m64) %5lld / %d SMs  auto=%s ", dtype, label.c_str(),
                static_cast<long long>(num_seqs) * kHeads * ((max_rows + 63) / 64), sm_count,
                bert::cuda::AttentionTileName(chosen));
    bool non_finite = false;
    for (const bool double_buffer : {false, true}) {
      for (AttentionTile tile : {AttentionTile::kRows64, AttentionTile::kRows32,
                                 AttentionTile::kRows16, AttentionTile::kAuto}) {
        bert::cuda::AttentionOptions options;
        options.tile = tile;
        options.double_buffer_kv = double_buffer;
        const Timing t = TimeShape<T>(lengths, iters, options);
        non_finite |= t.non_finite != 0;
        std::printf(" %s%s %7.2f us", bert::cuda::AttentionTileName(tile),
                    double_buffer ? "+db" : "", t.median_ms * 1e3);
      }
    }
    std::printf("%s\n", non_finite ? "  NON-FINITE OUTPUT" : "");
  }
}

std::vector<Shape> Shapes() {
  std::vector<Shape> shapes;
  shapes.push_back({"128 x 128", std::vector<int32_t>(128, 128), 0.044});
  shapes.push_back({"32 x 512", std::vector<int32_t>(32, 512), 0.094});
  shapes.push_back({"1 x 128", std::vector<int32_t>(1, 128), 0.040});
  shapes.push_back({"256 varlen (mean~36)", VarlenLengths(), 0});
  return shapes;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dtype = "f16";
  int iters = 200;
  bool tiles = true;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--dtype=", 8) == 0) {
      dtype = argv[i] + 8;
    } else if (std::strncmp(argv[i], "--iters=", 8) == 0) {
      iters = std::max(1, std::atoi(argv[i] + 8));
    } else if (std::strcmp(argv[i], "--no-tiles") == 0) {
      tiles = false;
    } else {
      std::fprintf(stderr, "usage: %s [--dtype=f16|bf16|f32] [--iters=N] [--no-tiles]\n", argv[0]);
      return 2;
    }
  }
  int device = 0;
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDevice(&device));
  CHECK_CUDA(cudaGetDeviceProperties(&prop, device));
  std::printf("attention_bench: %s (sm_%d%d, %d SMs), dtype %s, %d heads x %d, %d timed launches\n",
              prop.name, prop.major, prop.minor, prop.multiProcessorCount, dtype.c_str(), kHeads,
              kHeadDim, iters);
  for (const Shape& shape : Shapes()) {
    if (dtype == "f16") {
      RunShape<__half>(shape, iters);
    } else if (dtype == "bf16") {
      RunShape<__nv_bfloat16>(shape, iters);
    } else if (dtype == "f32") {
      RunShape<float>(shape, iters);
    } else {
      std::fprintf(stderr, "unknown dtype %s\n", dtype.c_str());
      return 2;
    }
  }
  if (tiles) {
    std::printf(
        "tile sweep (median of %d launches each; m64/m32/m16 forced, auto = launcher; "
        "+db = two K/V buffers)\n",
        iters);
    TileSweep<__half>("f16", iters, prop.multiProcessorCount);
    TileSweep<__nv_bfloat16>("bf16", iters, prop.multiProcessorCount);
  }
  return 0;
}

#else  // !BERT_WITH_CUDA

int main() {
  std::fprintf(stderr, "attention_bench: built with --config=nocuda; nothing to time\n");
  return 1;
}

#endif  // BERT_WITH_CUDA
