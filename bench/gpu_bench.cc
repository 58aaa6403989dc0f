// Our CUDA engine on a BERT-base shape: GPU time per batch (CUDA events on the engine's
// stream, from the batch upload to the pooled output's copy back), after warm-up, median of
// many runs, for fp32/fp16/bf16 at batch 1/8/32/128/256 x seq 128 and a variable-length batch.
// Also the host wall time of Encode (which adds host packing and the final copy).
//
//   gpu_bench [--model_dir=DIR] [--dtypes=fp32,fp16,bf16] [--batches=1,8,32,128,256]
//             [--seq=128] [--varlen_file=FILE] [--iters=30] [--json=FILE]
//             [--<CUDA tuning flag>=VALUE ...] [--outputs=pooled|layers] [--profile]
//             [--profile_batches=1,128] [--memory] [--check_flags]
//
// --model_dir loads a Hugging Face BERT directory (bench/hf_baseline.py --save_model writes
// one, so both sides use the same random weights); without it, RandomModel(BertBase, 1).
// --varlen_file: one sequence length per line (bench/hf_baseline.py --write_lengths).
// The CUDA tuning flags are bert_server's, with its defaults (CudaTuningSwitches in
// server/engine/cuda_engine.h): --cuda_graphs, --cuda_graph_max_rows, --fused_gelu,
// --gemm_autotune, --custom_gemm, --cuda_pdl, --cuda_attention_double_buffer,
// --residual_in_gemm, --cuda_overlap_copies, --cuda_attention_tile,
// --cuda_layer_norm_hoist_max_rows; with graphs, warm-up includes the capture.
// --outputs: what each Encode returns, the pooled vectors (default) or every layer's output
// (encoder_outputs: what --cuda_overlap_copies is for). Each result line names the flags it
// ran with that differ from the defaults ("defaults" if none). --check_flags: print what the
// flags parsed to and exit 0, before any CUDA call. --json gets every result so far,
// rewritten after each one (so a run cut off by a timeout leaves a complete file); it is removed
// first, so no earlier run's file survives. A dtype that fails (engine creation or an Encode) is
// reported as "ours <dtype>: <status>" and the next dtype runs; the exit status is then 1.
// --memory: first, the device memory of an fp16 engine with a 16384-token workspace (issue
// 7's goal; bench/goals.py reads the line).
// --profile: afterwards, fp16 at --profile_batches x --seq (and the variable-length batch when
// given): the engine's op observer (CudaOpObserver) records a CUDA event before every op of
// one Encode; the time between consecutive events is charged to the op that starts at the
// first (so at small batches the launch gaps show up in the op after them). Graphs are off
// while profiling (the hook is outside any graph). Per op type: median over --iters Encodes
// of its total per Encode, its share, and the number of ops; plus the un-profiled GPU time.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "bench/gpu_bench_flags.h"
#include "server/engine/cuda_engine.h"
#include "server/engine/engine.h"
#include "server/engine/engine_factory.h"
#include "server/engine/model.h"
#include "server/util/status_macros.h"

namespace bert {
namespace {

CudaEngineOptions EngineOptions(const GpuBenchOptions& o, DType dtype, int max_tokens) {
  CudaEngineOptions e = o.engine;
  e.dtype = dtype;
  e.max_batch_tokens = max_tokens;
  return e;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

EncoderBatch MakeBatch(const std::vector<int>& lengths, const ModelConfig& c, uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_int_distribution<int> word(1000, c.vocab_size - 1);
  EncoderBatch batch;
  for (int len : lengths) {
    std::vector<int32_t> ids(len);
    for (int& id : ids) id = word(rng);
    ids.front() = 101;  // [CLS]
    ids.back() = 102;   // [SEP]
    batch.Add(ids, {});
  }
  return batch;
}

// Records one CUDA event per op mark of an Encode (see --profile).
class EventProfiler : public CudaOpObserver {
 public:
  explicit EventProfiler(size_t capacity) : events_(capacity, nullptr) {
    for (cudaEvent_t& e : events_) cudaEventCreate(&e);
  }
  ~EventProfiler() override {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
  }
  void OnOp(const char* name, void* stream) override {
    if (names_.size() >= events_.size()) {
      overflow_ = true;
      return;
    }
    cudaEventRecord(events_[names_.size()], static_cast<cudaStream_t>(stream));
    names_.emplace_back(name);
  }
  void Reset() { names_.clear(); }
  bool overflow() const { return overflow_; }
  // After the Encode (which synchronised the stream): total ms per op name, and op counts.
  void Collect(std::map<std::string, double>* ms, std::map<std::string, int>* count) const {
    for (size_t i = 0; i + 1 < names_.size(); ++i) {
      float t = 0.f;
      cudaEventElapsedTime(&t, events_[i], events_[i + 1]);
      (*ms)[names_[i]] += t;
      (*count)[names_[i]] += 1;
    }
  }

 private:
  std::vector<cudaEvent_t> events_;
  std::vector<std::string> names_;
  bool overflow_ = false;
};

// The --profile breakdown of one shape (fp16 engine, graphs bypassed by the observer).
bool ProfileShape(Engine* engine, CudaEngineTiming* timing, const std::string& label,
                  const EncoderBatch& batch, int iters, bool graphs) {
  OutputSelection sel;
  sel.pooled = true;
  EncoderOutput out;
  EventProfiler profiler(4096);
  std::vector<double> plain;
  for (int i = 0; i < iters + 3; ++i) {  // un-profiled GPU time (warm-up includes a capture)
    if (!engine->Encode(batch, sel, &out).ok()) return false;
    if (i >= 3) plain.push_back(timing->last_gpu_milliseconds());
  }
  timing->set_op_observer(&profiler);
  std::map<std::string, std::vector<double>> per_op;
  std::map<std::string, int> counts;
  std::vector<double> profiled_total;
  for (int i = 0; i < iters + 3; ++i) {
    profiler.Reset();
    const absl::Status st = engine->Encode(batch, sel, &out);
    if (!st.ok()) {
      timing->set_op_observer(nullptr);
      std::fprintf(stderr, "Encode: %s\n", st.ToString().c_str());
      return false;
    }
    if (i < 3) continue;
    std::map<std::string, double> ms;
    std::map<std::string, int> count;
    profiler.Collect(&ms, &count);
    double total = 0;
    for (const auto& [name, t] : ms) {
      per_op[name].push_back(t);
      total += t;
    }
    profiled_total.push_back(total);
    counts = count;
  }
  timing->set_op_observer(nullptr);
  if (profiler.overflow()) std::printf("profile: more ops than events; truncated\n");
  const double total = Median(profiled_total);
  std::printf(
      "profile fp16 %s: un-profiled GPU %.3f ms (graphs %s); profiled (eager) sum %.3f ms\n",
      label.c_str(), Median(plain), graphs ? "on" : "off", total);
  std::vector<std::pair<double, std::string>> rows;
  for (const auto& [name, v] : per_op) rows.push_back({Median(v), name});
  std::sort(rows.rbegin(), rows.rend());
  for (const auto& [t, name] : rows) {
    std::printf("  %-16s %9.4f ms  %5.1f %%  %4d ops  %8.2f us/op\n", name.c_str(), t,
                100.0 * t / total, counts[name], 1e3 * t / std::max(1, counts[name]));
  }
  std::fflush(stdout);
  return true;
}

struct Result {
  std::string dtype, shape;
  int batch = 0;
  long real_tokens = 0;
  double gpu_ms = 0, wall_ms = 0;
};

// Writes every result so far as a JSON array, through a temporary file and a rename, so
// that a run cut off by a timeout leaves the last complete file behind.
void WriteResultsJson(const std::string& path, const std::vector<Result>& results) {
  if (path.empty()) return;
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    if (!f) {
      std::fprintf(stderr, "cannot write %s\n", tmp.c_str());
      return;
    }
    f << "[\n";
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      f << "  {\"impl\": \"ours\", \"mode\": \"cuda\", \"dtype\": \"" << r.dtype
        << "\", \"shape\": \"" << r.shape << "\", \"batch\": " << r.batch
        << ", \"real_tokens\": " << r.real_tokens << ", \"gpu_ms\": " << r.gpu_ms
        << ", \"wall_ms\": " << r.wall_ms << "}" << (i + 1 < results.size() ? "," : "") << "\n";
    }
    f << "]\n";
    if (!f.flush()) {
      std::fprintf(stderr, "cannot write %s\n", tmp.c_str());
      return;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::fprintf(stderr, "cannot rename %s to %s\n", tmp.c_str(), path.c_str());
  }
}

// One dtype: every batch shape (and the variable-length batch), each result printed and
// appended to `results` (and the JSON) as soon as it is measured; then the engine's counters.
absl::Status BenchDType(const GpuBenchOptions& o, const std::shared_ptr<const Model>& model,
                        const std::string& name, const std::vector<int>& varlen, int engine_tokens,
                        std::vector<Result>* results) {
  ASSIGN_OR_RETURN(const DType dtype, ParseDType(name));
  ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine,
                   CreateCudaEngine(model, EngineOptions(o, dtype, engine_tokens)));
  auto* timing = dynamic_cast<CudaEngineTiming*>(engine.get());
  std::vector<std::pair<std::string, std::vector<int>>> shapes;
  for (int b : o.batches) {
    shapes.push_back({"seq" + std::to_string(o.seq), std::vector<int>(b, o.seq)});
  }
  if (!varlen.empty()) shapes.push_back({"varlen", varlen});
  for (const auto& [shape, lengths] : shapes) {
    const EncoderBatch batch = MakeBatch(lengths, model->config, 42);
    OutputSelection sel;
    sel.pooled = true;
    if (o.all_layers) {
      for (int l = 0; l < model->config.num_layers; ++l) sel.layers.push_back(l);
    }
    EncoderOutput out;
    std::vector<double> gpu, wall;
    for (int i = 0; i < o.iters + 5; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      const absl::Status st = engine->Encode(batch, sel, &out);
      const auto t1 = std::chrono::steady_clock::now();
      if (!st.ok()) {
        return absl::Status(st.code(),
                            absl::StrCat(shape, " batch ", lengths.size(), ": ", st.message()));
      }
      if (i < 5) continue;  // warm-up (plans, clocks)
      gpu.push_back(timing->last_gpu_milliseconds());
      wall.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    Result r;
    r.dtype = name;
    r.shape = shape;
    r.batch = static_cast<int>(lengths.size());
    r.real_tokens = batch.total_rows();
    r.gpu_ms = Median(gpu);
    r.wall_ms = Median(wall);
    std::printf(
        "ours %-5s %-7s batch %4d tokens %6ld  gpu %8.3f ms  wall %8.3f ms  %10.0f seq/s"
        "  %11.0f tok/s  %s\n",
        name.c_str(), shape.c_str(), r.batch, r.real_tokens, r.gpu_ms, r.wall_ms,
        r.batch / (r.gpu_ms / 1e3), r.real_tokens / (r.gpu_ms / 1e3),
        DescribeGpuBenchOptions(o).c_str());
    std::fflush(stdout);
    results->push_back(r);
    WriteResultsJson(o.json, *results);
  }
  const CudaGraphStats gs = timing->graph_stats();
  std::printf(
      "ours %-5s CUDA graphs %s: %lld eager runs, %lld captures, %lld replays, %lld "
      "capture failures%s%s\n",
      name.c_str(), o.engine.cuda_graphs ? "on" : "off", gs.eager_runs, gs.captures, gs.replays,
      gs.capture_failures, gs.last_capture_error.empty() ? "" : ": ",
      gs.last_capture_error.c_str());
  // Whether the options reached the kernels (e.g. double buffering runs only where a
  // sequence spans several key tiles).
  const CudaPathStats ps = timing->path_stats();
  std::printf(
      "ours %-5s paths enqueued: %lld residual-in-GEMM GEMMs, %lld GEMMs with the LayerNorm "
      "inside, %lld double-buffered attention launches, %lld copies on the copy stream, "
      "attention launches by query tile: %lld of 16 rows, %lld of 32, %lld of 64\n",
      name.c_str(), ps.residual_gemms, ps.layer_norm_gemms, ps.double_buffered_attention,
      ps.copy_stream_copies, ps.attention_tiles[0], ps.attention_tiles[1], ps.attention_tiles[2]);
  // Whether our split-K GEMM took part (timed, dropped for disagreeing, chosen, forced).
  const cuda::GemmStats gm = timing->gemm_stats();
  std::printf(
      "ours %-5s GEMM tuning: %lld buckets tuned, our kernel: %lld candidates timed, %lld "
      "disagreed with cuBLASLt, %lld tunings won, %lld plans forced\n",
      name.c_str(), gm.tuned_buckets, gm.custom_timed, gm.custom_mismatches, gm.custom_chosen,
      gm.custom_forced);
  // A default path that fell back (bert_server's bert_engine_fallbacks_total) did not run in
  // this measurement.
  std::string fallbacks;
  for (const EngineFallback& f : engine->Fallbacks()) {
    absl::StrAppend(&fallbacks, " ", f.path, "=", f.count);
  }
  std::printf("ours %-5s fallbacks:%s\n", name.c_str(), fallbacks.c_str());
  std::fflush(stdout);
  return absl::OkStatus();
}

int Run(const GpuBenchOptions& o) {
  std::shared_ptr<const Model> model;
  if (!o.model_dir.empty()) {
    auto loaded = LoadModel(o.model_dir);
    if (!loaded.ok()) {
      std::fprintf(stderr, "loading %s: %s\n", o.model_dir.c_str(),
                   loaded.status().ToString().c_str());
      return 1;
    }
    model = std::make_shared<const Model>(std::move(loaded).value());
  } else {
    model = std::make_shared<const Model>(RandomModel(BertBaseConfig(), 1));
  }
  std::vector<int> varlen;
  if (!o.varlen_file.empty()) {
    std::ifstream in(o.varlen_file);
    int len;
    while (in >> len) varlen.push_back(len);
  }
  int max_tokens =
      o.seq * (o.batches.empty() ? 1 : *std::max_element(o.batches.begin(), o.batches.end()));
  long varlen_tokens = 0;
  for (int l : varlen) varlen_tokens += l;
  max_tokens = std::max<long>(max_tokens, varlen_tokens);
  if (o.profile) {
    for (int b : o.profile_batches) max_tokens = std::max(max_tokens, b * o.seq);
  }
  // The engine's pinned output buffer holds 2 * max_tokens rows: with every layer returned,
  // size it so that a whole batch's outputs fit (no flush in the middle of a timed forward,
  // and CUDA graphs stay possible).
  const int engine_tokens =
      o.all_layers
          ? std::max<int>(max_tokens, (model->config.num_layers * max_tokens + 1) / 2 + max_tokens)
          : max_tokens;

  // Issue 7's memory goal (--memory): BERT-base fp16 weights + a 16K-token workspace <= 2 GB.
  // The difference in free device memory around creating that engine (the CUDA context is
  // created before, so it is not counted).
  if (o.memory) {
    cudaFree(nullptr);
    size_t free_before = 0, free_after = 0, total = 0;
    cudaMemGetInfo(&free_before, &total);
    auto engine = CreateCudaEngine(model, EngineOptions(o, DType::kFloat16, 16384));
    cudaMemGetInfo(&free_after, &total);
    if (engine.ok()) {
      std::printf(
          "memory: fp16 engine with a 16384-token workspace uses %.1f MiB of device "
          "memory (context excluded)\n",
          (static_cast<double>(free_before) - free_after) / (1 << 20));
    } else {
      std::printf("memory: fp16 engine creation failed: %s\n", engine.status().ToString().c_str());
    }
  }

  // A dtype that fails (engine creation or an Encode) is reported and the next one runs:
  // one failing path must not cost the others' numbers. The JSON holds every result so far.
  if (!o.json.empty()) std::remove(o.json.c_str());
  std::vector<Result> results;
  bool failed = false;
  for (const std::string& name : o.dtypes) {
    const absl::Status st = BenchDType(o, model, name, varlen, engine_tokens, &results);
    if (!st.ok()) {
      std::fprintf(stderr, "ours %s: %s\n", name.c_str(), st.ToString().c_str());
      failed = true;
    }
  }
  if (o.profile) {
    auto engine = CreateCudaEngine(model, EngineOptions(o, DType::kFloat16, max_tokens));
    if (!engine.ok()) {
      std::fprintf(stderr, "creating the CUDA engine: %s\n", engine.status().ToString().c_str());
      return 1;
    }
    auto* timing = dynamic_cast<CudaEngineTiming*>(engine->get());
    for (int b : o.profile_batches) {
      if (static_cast<long>(b) * o.seq > max_tokens) continue;
      const EncoderBatch batch = MakeBatch(std::vector<int>(b, o.seq), model->config, 42);
      const std::string label = "batch " + std::to_string(b) + " x seq " + std::to_string(o.seq);
      if (!ProfileShape(engine->get(), timing, label, batch, o.iters, o.engine.cuda_graphs))
        return 1;
    }
    if (!varlen.empty()) {
      const EncoderBatch batch = MakeBatch(varlen, model->config, 42);
      const std::string label = "varlen " + std::to_string(varlen.size()) + " (" +
                                std::to_string(batch.total_rows()) + " tokens)";
      if (!ProfileShape(engine->get(), timing, label, batch, o.iters, o.engine.cuda_graphs))
        return 1;
    }
  }
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace bert

int main(int argc, char** argv) {
  bert::GpuBenchOptions o;
  // --check_flags answers here, before any CUDA call (tools/gpu_check.sh's calls are tested so).
  if (const int done = bert::HandleGpuBenchCommandLine(argc, argv, &o); done >= 0) return done;
  return bert::Run(o);
}
