// cuBLASLt Gemm (kernels/cuda/gemm.h) with autotune off (heuristic top-1) and on (timed
// choice per row bucket), on the BERT-base Linear shapes at several row counts; for fp16/bf16
// and rows <= Gemm::kCustomMaxRows (where it is a candidate) also autotune with our split-K
// kernel among the candidates (GemmOptions::custom_gemm) and that kernel alone
// (split_k_gemm.h) at 1/2/4/8 splits (the bench's own workspace: Gemm may allow fewer).
//
// Method: per (dtype, rows, shape), random operands on the device; each Gemm runs the shape
// once eagerly (autotune tunes then), then `--iters` back-to-back calls are captured into a
// CUDA graph (as the engine runs them), the graph is launched once to warm up and then
// `--reps` times, each timed with CUDA events; the median graph time / iters is printed as
// microseconds per GEMM, with the algorithm each Gemm picked (Gemm::DescribePlan) and the
// autotune Gemms' stats at the end (tuning cost is not in the times). The kernel-alone
// columns are timed the same way, with direct launches.
//
//   gemm_bench [--dtypes=fp16,bf16,fp32] [--rows=1,16,128,512,1000,4096,16384] [--iters=50]
//              [--reps=7]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#if defined(BERT_WITH_CUDA)

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <memory>
#include <random>

#include "bench/cuda_check.h"
#include "kernels/cuda/cuda_utils.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/host_convert.h"
#include "kernels/cuda/split_k_gemm.h"

namespace bert {
namespace cuda {
namespace {

struct Shape {
  int in, out;
  GemmEpilogue epilogue;
  const char* name;
};

const Shape kShapes[] = {
    {768, 2304, GemmEpilogue::kBias, "qkv 768->2304 bias"},
    {768, 768, GemmEpilogue::kNone, "attn_out/pooler 768->768"},
    {768, 3072, GemmEpilogue::kNone, "ffn_in 768->3072"},
    {768, 3072, GemmEpilogue::kBiasGeluTanh, "ffn_in 768->3072 gelu"},
    {3072, 768, GemmEpilogue::kNone, "ffn_out 3072->768"},
};

#define BENCH_CHECK(expr)                                                    \
  do {                                                                       \
    const ::bert::cuda::CudaStatus st_ = (expr);                             \
    if (!st_.ok()) {                                                         \
      std::fprintf(stderr, "%s failed: %s\n", #expr, st_.message().c_str()); \
      std::exit(1);                                                          \
    }                                                                        \
  } while (0)

template <typename T>
void Fill(DeviceBuffer<T>* buf, size_t n, float scale, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<T> host(n);
  for (T& v : host) v = HostFromFloat<T>(dist(rng));
  BENCH_CHECK(buf->Allocate(n));
  CHECK_CUDA(cudaMemcpy(buf->get(), host.data(), n * sizeof(T), cudaMemcpyHostToDevice));
}

// Median microseconds per call of a graph of `iters` calls of `run` (run once eagerly first).
template <typename Run>
double TimeCalls(const Run& run, int iters, int reps, cudaStream_t stream) {
  BENCH_CHECK(run());
  CHECK_CUDA(cudaStreamSynchronize(stream));
  CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < iters; ++i) BENCH_CHECK(run());
  cudaGraph_t graph = nullptr;
  CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t raw = nullptr;
  CHECK_CUDA(cudaGraphInstantiate(&raw, graph, 0));
  cudaGraphDestroy(graph);
  CudaGraphExec exec;
  exec.Adopt(raw);
  CudaEvent start, stop;
  BENCH_CHECK(start.Create());
  BENCH_CHECK(stop.Create());
  CHECK_CUDA(cudaGraphLaunch(exec.get(), stream));
  std::vector<float> ms(reps);
  for (int r = 0; r < reps; ++r) {
    CHECK_CUDA(cudaEventRecord(start.get(), stream));
    CHECK_CUDA(cudaGraphLaunch(exec.get(), stream));
    CHECK_CUDA(cudaEventRecord(stop.get(), stream));
    CHECK_CUDA(cudaEventSynchronize(stop.get()));
    CHECK_CUDA(cudaEventElapsedTime(&ms[r], start.get(), stop.get()));
  }
  std::sort(ms.begin(), ms.end());
  return 1000.0 * ms[reps / 2] / iters;
}

template <typename T>
double TimeGemm(Gemm* gemm, const T* x, int rows, const Shape& s, const T* w, const T* b, T* y,
                int iters, int reps, cudaStream_t stream) {
  return TimeCalls([&] { return gemm->Run<T>(x, rows, s.in, w, b, s.out, s.epilogue, y, stream); },
                   iters, reps, stream);
}

// Our split-K kernel alone at `splits` (negative when the shape does not allow that count).
template <typename T>
double TimeSplitK(const T* x, int rows, const Shape& s, const T* w, const T* b, T* y, int splits,
                  float* partials, unsigned* counters, int iters, int reps, cudaStream_t stream) {
  SplitKGemmArgs args;
  args.x = x;
  args.weight = w;
  args.bias = b;
  args.y = y;
  args.rows = rows;
  args.in_features = s.in;
  args.out_features = s.out;
  args.splits = splits;
  args.partials = partials;
  args.counters = counters;
  if (!SplitKGemmUnsupported(args, ToSplitKEpilogue(s.epilogue)).empty() ||
      !SplitKEverySplitBusy(s.in, splits)) {
    return -1.0;
  }
  return TimeCalls(
      [&] {
        return MakeCudaStatus(LaunchSplitKGemm<T>(args, ToSplitKEpilogue(s.epilogue), stream),
                              "LaunchSplitKGemm", __FILE__, __LINE__);
      },
      iters, reps, stream);
}

void PrintStats(const char* name, const GemmStats& st) {
  std::printf(
      "%s stats: plans=%lld tuned_buckets=%lld timed_candidates=%lld "
      "fallbacks=%lld bucket_reuses=%lld bucket_rejections=%lld capture_selections=%lld "
      "custom_timed=%lld custom_mismatches=%lld custom_chosen=%lld\n",
      name, st.plans, st.tuned_buckets, st.timed_candidates, st.tuning_fallbacks, st.bucket_reuses,
      st.bucket_rejections, st.capture_selections, st.custom_timed, st.custom_mismatches,
      st.custom_chosen);
}

template <typename T>
void BenchDType(const char* dtype, const std::vector<int>& rows_list, int iters, int reps) {
  std::mt19937 rng(1234);
  CudaStream stream;
  BENCH_CHECK(stream.Create());
  constexpr bool kSixteenBit = sizeof(T) == 2;
  GemmOptions off, on, custom;
  on.autotune = true;
  custom.autotune = true;
  custom.custom_gemm = true;
  std::unique_ptr<Gemm> plain, tuned, with_custom;
  BENCH_CHECK(Gemm::Create(off, &plain));
  BENCH_CHECK(Gemm::Create(on, &tuned));
  if (kSixteenBit) BENCH_CHECK(Gemm::Create(custom, &with_custom));
  // The kernel-alone runs: partial sums for the largest grid timed below, zeroed counters.
  constexpr int kMaxSplits = 8;
  DeviceBuffer<float> partials;
  DeviceBuffer<unsigned> counters;
  if (kSixteenBit) {
    const size_t tiles = SplitKGemmTiles(Gemm::kCustomMaxRows, 3072);
    BENCH_CHECK(partials.Allocate(SplitKGemmPartialFloats(Gemm::kCustomMaxRows, 3072, kMaxSplits)));
    BENCH_CHECK(counters.Allocate(tiles));
    CHECK_CUDA(cudaMemset(counters.get(), 0, counters.bytes()));
    CHECK_CUDA(cudaDeviceSynchronize());  // the memset is on the legacy stream
  }
  std::printf("\n== %s ==\n%-28s %6s %10s %10s %7s %10s %8s %8s %8s %8s\n", dtype, "shape", "rows",
              "top1_us", "tuned_us", "speedup", "custom_us", "splitk1", "splitk2", "splitk4",
              "splitk8");
  for (const int rows : rows_list) {
    for (const Shape& s : kShapes) {
      DeviceBuffer<T> x, w, b, y;
      Fill(&x, static_cast<size_t>(rows) * s.in, 1.0f, rng);
      Fill(&w, static_cast<size_t>(s.out) * s.in, 0.03f, rng);
      Fill(&b, s.out, 0.5f, rng);
      BENCH_CHECK(y.Allocate(static_cast<size_t>(rows) * s.out));
      const double t_plain = TimeGemm<T>(plain.get(), x.get(), rows, s, w.get(), b.get(), y.get(),
                                         iters, reps, stream.get());
      const double t_tuned = TimeGemm<T>(tuned.get(), x.get(), rows, s, w.get(), b.get(), y.get(),
                                         iters, reps, stream.get());
      double t_custom = -1.0;
      double t_split[4] = {-1.0, -1.0, -1.0, -1.0};
      // Above kCustomMaxRows our kernel is no candidate: that column would only repeat
      // tuned_us, so it is not timed.
      if constexpr (kSixteenBit) {
        if (rows <= Gemm::kCustomMaxRows) {
          t_custom = TimeGemm<T>(with_custom.get(), x.get(), rows, s, w.get(), b.get(), y.get(),
                                 iters, reps, stream.get());
          const int splits[4] = {1, 2, 4, kMaxSplits};
          for (int i = 0; i < 4; ++i) {
            t_split[i] = TimeSplitK<T>(x.get(), rows, s, w.get(), b.get(), y.get(), splits[i],
                                       partials.get(), counters.get(), iters, reps, stream.get());
          }
        }
      }
      // "-" where a column does not apply.
      auto cell = [](double us, int width) {
        char buf[32];
        if (us < 0) {
          std::snprintf(buf, sizeof(buf), "%*s", width, "-");
        } else {
          std::snprintf(buf, sizeof(buf), "%*.2f", width, us);
        }
        return std::string(buf);
      };
      std::printf("%-28s %6d %10.2f %10.2f %6.2fx %s %s %s %s %s\n", s.name, rows, t_plain, t_tuned,
                  t_plain / t_tuned, cell(t_custom, 10).c_str(), cell(t_split[0], 8).c_str(),
                  cell(t_split[1], 8).c_str(), cell(t_split[2], 8).c_str(),
                  cell(t_split[3], 8).c_str());
      std::printf("    top1:   %s\n    tuned:  %s\n",
                  plain->DescribePlan<T>(rows, s.in, s.out, s.epilogue).c_str(),
                  tuned->DescribePlan<T>(rows, s.in, s.out, s.epilogue).c_str());
      if (kSixteenBit) {
        std::printf("    custom: %s\n",
                    with_custom->DescribePlan<T>(rows, s.in, s.out, s.epilogue).c_str());
      }
    }
  }
  PrintStats("autotune", tuned->stats());
  if (kSixteenBit) PrintStats("autotune+custom", with_custom->stats());
}

}  // namespace
}  // namespace cuda
}  // namespace bert

std::vector<std::string> Split(const char* s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

int main(int argc, char** argv) {
  std::vector<std::string> dtypes = {"fp16", "bf16", "fp32"};
  std::vector<int> rows = {1, 16, 128, 512, 1000, 4096, 16384};
  int iters = 50, reps = 7;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--dtypes=", 9) == 0) {
      dtypes = Split(argv[i] + 9);
    } else if (std::strncmp(argv[i], "--rows=", 7) == 0) {
      rows.clear();
      for (const std::string& r : Split(argv[i] + 7))
        rows.push_back(std::max(1, std::atoi(r.c_str())));
    } else if (std::strncmp(argv[i], "--iters=", 8) == 0) {
      iters = std::max(1, std::atoi(argv[i] + 8));
    } else if (std::strncmp(argv[i], "--reps=", 7) == 0) {
      reps = std::max(1, std::atoi(argv[i] + 7));
    } else {
      std::fprintf(stderr,
                   "usage: %s [--dtypes=fp16,bf16,fp32] [--rows=1,128,...] [--iters=N] "
                   "[--reps=N]\n",
                   argv[0]);
      return 2;
    }
  }
  for (const std::string& d : dtypes) {
    if (d == "fp16") {
      bert::cuda::BenchDType<__half>("fp16", rows, iters, reps);
    } else if (d == "bf16") {
      bert::cuda::BenchDType<__nv_bfloat16>("bf16", rows, iters, reps);
    } else if (d == "fp32") {
      bert::cuda::BenchDType<float>("fp32", rows, iters, reps);
    } else {
      std::fprintf(stderr, "unknown dtype %s\n", d.c_str());
      return 2;
    }
  }
  return 0;
}

#else  // !BERT_WITH_CUDA

int main() {
  std::fprintf(stderr, "gemm_bench: built with --config=nocuda; nothing to time\n");
  return 1;
}

#endif  // BERT_WITH_CUDA
