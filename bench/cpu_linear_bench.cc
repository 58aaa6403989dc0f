// The CPU Linear layer: OpenBLAS sgemm (cpu::Linear) against the packed kernel the CPU engine
// runs (cpu::LinearPacked, weights packed beforehand), one thread each, per row count and
// layer shape (bench/RESULTS_cpu.md).
//
//   taskset -c 1 bazel-bin/bench/cpu_linear_bench --rows=1,4,16,32,64,128,256 [--isa=avx2]
//
// Method: per (shape, rows), the two kernels run in turn `--rounds` times (each round: one
// call of each, alternating which goes first); the median microseconds of each are printed.
// OpenBLAS runs on one thread, as in the engine. Before every call a buffer of twice the
// last-level cache (at least 48 MiB) is read through, so that neither kernel finds the weights
// in cache, as in a forward of a model larger than that cache, where each layer's weights come
// once per batch.
#include <cblas.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/int_list.h"
#include "kernels/cpu/blas_core.h"
#include "kernels/cpu/gemm.h"
#include "server/engine/cpu_engine.h"

ABSL_FLAG(std::string, rows, "1,2,4,8,16,32,64,128", "comma-separated row counts");
ABSL_FLAG(int, rounds, 15, "timed calls of each kernel per row count");
ABSL_FLAG(std::string, isa, "auto",
          "the packed kernel's version: auto (the best float32 one this CPU runs), avx512, avx2, "
          "portable or amx_bf16");

namespace {

struct Shape {
  const char* name;
  int in, out;
};

std::vector<float> Random(size_t n, int seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = u(rng);
  return v;
}

double Micros(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  bert::cpu::ReexecForBetterBlasCore(argv);  // as bert_server does (kernels/cpu/blas_core.h)
  absl::ParseCommandLine(argc, argv);
  openblas_set_num_threads(1);
  const std::optional<std::vector<int>> row_counts =
      bert::PositiveInts(absl::GetFlag(FLAGS_rows), "rows");
  if (!row_counts) return 2;
  const int rounds = std::max(1, absl::GetFlag(FLAGS_rounds));
  const std::string isa_name = absl::GetFlag(FLAGS_isa);
  const absl::StatusOr<bert::CpuGemm> isa =
      isa_name == "auto" ? absl::StatusOr<bert::CpuGemm>(bert::cpu::BestLinearIsa())
                         : bert::ParseCpuGemm(isa_name);
  if (!isa.ok() || !isa->has_value()) {
    std::fprintf(stderr, "--isa: %s\n",
                 isa.ok() ? "not a version of the packed kernel"
                          : std::string(isa.status().message()).c_str());
    return 2;
  }
  // The pooler's dense layer has one row per sequence (its tanh costs both kernels the same).
  const Shape shapes[] = {
      {"MiniLM qkv 384->1152", 384, 1152},       {"MiniLM ffn-down 1536->384", 1536, 384},
      {"MiniLM pooler 384->384", 384, 384},      {"BERT-base qkv 768->2304", 768, 2304},
      {"BERT-base ffn-up 768->3072", 768, 3072}, {"BERT-base ffn-down 3072->768", 3072, 768},
      {"BERT-base pooler 768->768", 768, 768}};
  // Larger than the last-level cache: read before every call to evict the weights.
  const long l3_bytes = std::max(0L, sysconf(_SC_LEVEL3_CACHE_SIZE));
  const size_t evict_bytes = std::max<size_t>(48u << 20, 2 * static_cast<size_t>(l3_bytes));
  const std::vector<float> evict(evict_bytes / sizeof(float), 1.0f);
  std::printf("OpenBLAS core %s; packed kernel %s; eviction buffer before every call: %zu MiB\n\n",
              bert::cpu::BlasCoreName().c_str(), bert::cpu::LinearIsaName(**isa),
              evict_bytes >> 20);
  float sink = 0.0f;
  std::printf("| shape | rows | sgemm us | packed us | sgemm / packed |\n|---|---|---|---|---|\n");
  for (const Shape& s : shapes) {
    const std::vector<float> w = Random(static_cast<size_t>(s.out) * s.in, 1);
    const std::vector<float> bias = Random(s.out, 2);
    const bert::cpu::PackedWeights packed =
        bert::cpu::PackedWeights::Pack(w.data(), s.out, s.in, **isa);
    for (int rows : *row_counts) {
      const std::vector<float> x = Random(static_cast<size_t>(rows) * s.in, 3);
      std::vector<float> y(static_cast<size_t>(rows) * s.out);
      std::vector<double> blas, ours;
      for (int round = 0; round < rounds; ++round) {
        for (int turn = 0; turn < 2; ++turn) {
          float sum = 0.0f;
          for (size_t i = 0; i < evict.size(); i += 16) sum += evict[i];  // one per cache line
          sink += sum;
          const bool blas_turn = (turn == 0) == (round % 2 == 0);
          const auto start = std::chrono::steady_clock::now();
          if (blas_turn) {
            bert::cpu::Linear(x.data(), rows, s.in, w.data(), bias.data(), s.out,
                              bert::cpu::Epilogue::kBias, y.data());
          } else {
            bert::cpu::LinearPacked(x.data(), rows, packed, bias.data(), bert::cpu::Epilogue::kBias,
                                    0, packed.num_panels(), y.data());
          }
          const auto stop = std::chrono::steady_clock::now();
          (blas_turn ? blas : ours).push_back(Micros(start, stop));
          sink += y[0];
        }
      }
      const double b = Median(blas), o = Median(ours);
      std::printf("| %s | %d | %.1f | %.1f | %.2f |\n", s.name, rows, b, o, b / o);
      std::fflush(stdout);
    }
  }
  return sink == 12345.0f ? 1 : 0;  // keeps the work observable
}
