// CPU encoder throughput at a BERT shape with seeded random weights, or of a model directory
// (not a test).
//
// Method: build the model (BERT-base unless flags say otherwise; --model_dir loads that
// model instead, e.g. the default models/all-MiniLM-L6-v2), create the CPU engine with
// --threads, then for each batch size: --warmup untimed runs, then --iters timed runs of
// one Encode each (sequence output of the last layer, with --pooled the pooler head too;
// every sequence --seq tokens, no padding rows); prints the median and min wall time and
// sequences per second of the median, the median process CPU time per run (all threads; on a
// shared machine it shows the work done independent of how much of the cores the process
// got), and the process's peak RSS at the end.
//
//   bazel run -c opt //bench:cpu_bench -- --threads=2 --batches=1,8,32 --seq=128
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/int_list.h"
#include "kernels/cpu/blas_core.h"
#include "server/engine/cpu_engine.h"
#include "server/engine/model.h"

ABSL_FLAG(int, threads, 2, "CPU threads");
ABSL_FLAG(std::string, gemm, "auto",
          "The Linear layers' GEMM: auto, avx512, avx2, portable, openblas or amx_bf16 (bfloat16 "
          "products on Intel AMX)");
ABSL_FLAG(std::string, batches, "1,8,32", "comma-separated batch sizes");
ABSL_FLAG(int, seq, 128, "tokens per sequence");
ABSL_FLAG(int, warmup, 2, "untimed runs per batch size");
ABSL_FLAG(int, iters, 5, "timed runs per batch size");
ABSL_FLAG(int, layers, 12, "encoder layers (BERT-base: 12)");
ABSL_FLAG(std::string, model_dir, "",
          "a model directory (config.json, model.safetensors) instead of random BERT-base "
          "weights; --layers and --seed are then ignored");
ABSL_FLAG(uint64_t, seed, 1, "weights seed");
ABSL_FLAG(bool, pooled, false, "also compute pooled_output (the pooler's dense + tanh layer)");
ABSL_FLAG(bool, serve, false,
          "read batch sizes from stdin, one per line; run each once and print "
          "'<wall_ms> <cpu_ms>' (lets a driver interleave runs with another runtime)");

namespace {

double ProcessCpuMs() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

long PeakRssKb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  bert::cpu::ReexecForBetterBlasCore(argv);  // as bert_server does (kernels/cpu/blas_core.h)
  absl::ParseCommandLine(argc, argv);
  std::shared_ptr<const bert::Model> model;
  if (const std::string dir = absl::GetFlag(FLAGS_model_dir); !dir.empty()) {
    absl::StatusOr<bert::Model> loaded = bert::LoadModel(dir);
    if (!loaded.ok()) {
      std::fprintf(stderr, "%s\n", loaded.status().ToString().c_str());
      return 1;
    }
    model = std::make_shared<const bert::Model>(std::move(loaded).value());
  } else {
    bert::ModelConfig config = bert::BertBaseConfig();
    config.num_layers = absl::GetFlag(FLAGS_layers);
    model =
        std::make_shared<const bert::Model>(bert::RandomModel(config, absl::GetFlag(FLAGS_seed)));
  }
  const bert::ModelConfig& config = model->config;
  bert::CpuEngineOptions options;
  options.threads = absl::GetFlag(FLAGS_threads);
  options.gemm = absl::GetFlag(FLAGS_gemm);
  auto engine_or = bert::CpuEngine::Create(model, options);
  if (!engine_or.ok()) {
    std::fprintf(stderr, "%s\n", engine_or.status().ToString().c_str());
    return 1;
  }
  auto engine = std::move(engine_or).value();
  const int seq = absl::GetFlag(FLAGS_seq);
  std::printf("model %s, %s, seq %d\n", model->name.c_str(), engine->info().device.c_str(), seq);
  std::printf("%8s %12s %12s %10s %12s\n", "batch", "median_ms", "min_ms", "seq/s", "cpu_ms");
  uint64_t state = 12345;
  auto make_batch = [&](int batch_size) {
    bert::EncoderBatch batch;
    for (int b = 0; b < batch_size; ++b) {
      std::vector<int32_t> ids(seq);
      for (int& id : ids) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        id = static_cast<int32_t>((state >> 33) % config.vocab_size);
      }
      batch.Add(ids, {});
    }
    return batch;
  };
  bert::OutputSelection selection;
  selection.sequence = true;
  selection.pooled = absl::GetFlag(FLAGS_pooled);
  if (absl::GetFlag(FLAGS_serve)) {
    bert::EncoderOutput output;
    std::printf("ready\n");
    std::fflush(stdout);
    int batch_size;
    while (std::scanf("%d", &batch_size) == 1 && batch_size > 0) {
      const bert::EncoderBatch batch = make_batch(batch_size);
      const double c0 = ProcessCpuMs();
      const auto t0 = std::chrono::steady_clock::now();
      absl::Status status = engine->Encode(batch, selection, &output);
      const auto t1 = std::chrono::steady_clock::now();
      const double c1 = ProcessCpuMs();
      if (!status.ok()) {
        std::fprintf(stderr, "%s\n", status.ToString().c_str());
        return 1;
      }
      std::printf("%.3f %.3f\n", std::chrono::duration<double, std::milli>(t1 - t0).count(),
                  c1 - c0);
      std::fflush(stdout);
    }
    std::printf("peak RSS %.1f MB\n", PeakRssKb() / 1024.0);
    return 0;
  }
  const std::optional<std::vector<int>> batch_sizes =
      bert::PositiveInts(absl::GetFlag(FLAGS_batches), "batches");
  if (!batch_sizes) return 2;
  for (const int batch_size : *batch_sizes) {
    const bert::EncoderBatch batch = make_batch(batch_size);
    bert::EncoderOutput output;
    std::vector<double> ms, cpu_ms;
    const int total = absl::GetFlag(FLAGS_warmup) + absl::GetFlag(FLAGS_iters);
    for (int i = 0; i < total; ++i) {
      const double c0 = ProcessCpuMs();
      const auto t0 = std::chrono::steady_clock::now();
      absl::Status status = engine->Encode(batch, selection, &output);
      const auto t1 = std::chrono::steady_clock::now();
      const double c1 = ProcessCpuMs();
      if (!status.ok()) {
        std::fprintf(stderr, "%s\n", status.ToString().c_str());
        return 1;
      }
      if (i >= absl::GetFlag(FLAGS_warmup)) {
        ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        cpu_ms.push_back(c1 - c0);
      }
    }
    std::sort(ms.begin(), ms.end());
    std::sort(cpu_ms.begin(), cpu_ms.end());
    const double median = ms[ms.size() / 2];
    std::printf("%8d %12.1f %12.1f %10.2f %12.1f\n", batch_size, median, ms.front(),
                batch_size * 1000.0 / median, cpu_ms[cpu_ms.size() / 2]);
    std::fflush(stdout);
  }
  std::printf("peak RSS %.1f MB\n", PeakRssKb() / 1024.0);
  return 0;
}
