// The CUDA engine: a clear error without a GPU (runs everywhere, CI included), and with a
// GPU: the golden fixtures (tests/golden, Hugging Face outputs) in fp32 (<= 1e-5 relative on
// every tensor, padded rows included) and fp16/bf16 (<= 2e-2 relative, pooled cosine >=
// 0.9999), with the default options and with fused_gelu off (no worse than the exact GELU)
// and residual_in_gemm / custom_gemm (autotuned and forced) on; agreement with the CPU
// engine on a random-weights BERT-base over a ragged batch with padding rows and every output
// head; CUDA graphs bit-exact against eager runs (repeated and alternating shapes, LRU
// eviction, max_graph_rows); output copies on the second stream, programmatic dependent
// launches and double-buffered attention bit-exact against the defaults; for residual_in_gemm,
// overlap_copies and attention_double_buffer, the engine's path counters show the option
// reached the kernels when on (and not when off). GPU cases skip with the reason when no GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "server/engine/engine.h"
#include "server/engine/engine_factory.h"
#include "server/engine/model.h"

#if defined(BERT_WITH_CUDA)
#include "kernels/cpu/test_util.h"
#include "server/engine/cpu_engine.h"
#include "server/engine/cuda_engine.h"
#include "server/engine/golden_fixture.h"
#endif

namespace bert {
namespace {

#if defined(BERT_WITH_CUDA)

using cpu::testing::CountNonFinite;
using cpu::testing::RelativeError;

// Forwards whose kernels were enqueued (what CudaPathStats counts): eager runs and graph
// captures, failed ones included; replays enqueue nothing.
long long EnqueuedForwards(const CudaGraphStats& s) {
  return s.eager_runs + s.captures + s.capture_failures;
}

CudaPathStats PathStats(const std::unique_ptr<Engine>& engine) {
  return dynamic_cast<CudaEngineTiming*>(engine.get())->path_stats();
}

// Smallest cosine similarity between matching rows of two [rows, hidden] tensors.
double MinRowCosine(const std::vector<float>& a, const std::vector<float>& b, int hidden) {
  double worst = 1.0;
  for (size_t r = 0; r * hidden < a.size(); ++r) {
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < hidden; ++i) {
      const double x = a[r * hidden + i], y = b[r * hidden + i];
      ab += x * y;
      aa += x * x;
      bb += y * y;
    }
    worst = std::min(worst, ab / std::sqrt(aa * bb));
  }
  return worst;
}

const char* ShortName(DType d) {
  switch (d) {
    case DType::kFloat32:
      return "fp32";
    case DType::kFloat16:
      return "fp16";
    case DType::kBFloat16:
      return "bf16";
  }
  return "?";
}

double Tolerance(DType d) { return d == DType::kFloat32 ? 1e-5 : 2e-2; }

CudaEngineOptions Options(DType dtype, int max_batch_tokens, bool cuda_graphs = true) {
  CudaEngineOptions options;
  options.dtype = dtype;
  options.max_batch_tokens = max_batch_tokens;
  options.cuda_graphs = cuda_graphs;
  return options;
}

// For tests that compare two engines bit for bit: GEMM autotuning picks algorithms by
// timing, so two engines could differ in the last bits; the heuristic's choice cannot.
CudaEngineOptions Untuned(CudaEngineOptions options) {
  options.gemm_autotune = false;
  return options;
}

// The sequence output, the pooled output and every layer's output.
OutputSelection EveryLayer(const ModelConfig& c) {
  OutputSelection sel;
  sel.sequence = true;
  sel.pooled = true;
  for (int l = 0; l < c.num_layers; ++l) sel.layers.push_back(l);
  return sel;
}

#endif  // BERT_WITH_CUDA

std::shared_ptr<const Model> TinyModel() {
  auto model = LoadModel("tests/golden/tiny-l4-h128");
  if (!model.ok()) return nullptr;
  return std::make_shared<const Model>(std::move(model).value());
}

// Runs with and without a GPU: without one, every way of asking for CUDA says why clearly.
TEST(CudaEngineCreation, ClearErrorWithoutGpu) {
  std::shared_ptr<const Model> model = TinyModel();
  ASSERT_NE(model, nullptr);
  EngineOptions options;
  options.backend = "cuda";
  auto via_factory = CreateEngine(model, options);
#if defined(BERT_WITH_CUDA)
  if (CudaDeviceCount() == 0) {
    auto engine = CreateCudaEngine(model, Options(DType::kFloat32, 256));
    ASSERT_FALSE(engine.ok());
    EXPECT_EQ(engine.status().code(), absl::StatusCode::kFailedPrecondition) << engine.status();
    EXPECT_NE(std::string(engine.status().message()).find("GPU"), std::string::npos)
        << engine.status();
    ASSERT_FALSE(via_factory.ok());
    EXPECT_EQ(via_factory.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_NE(std::string(via_factory.status().message()).find("GPU"), std::string::npos)
        << via_factory.status();
  } else {
    ASSERT_TRUE(via_factory.ok()) << via_factory.status();
    EXPECT_EQ((*via_factory)->info().backend, "cuda");
  }
#else
  ASSERT_FALSE(via_factory.ok());
  EXPECT_EQ(via_factory.status().code(), absl::StatusCode::kUnavailable);
#endif
  // "auto" always yields a working engine (CUDA with a GPU, else the CPU).
  options.backend = "auto";
  auto automatic = CreateEngine(model, options);
  ASSERT_TRUE(automatic.ok()) << automatic.status();
#if defined(BERT_WITH_CUDA)
  EXPECT_EQ((*automatic)->info().backend, CudaDeviceCount() > 0 ? "cuda" : "cpu");
#else
  EXPECT_EQ((*automatic)->info().backend, "cpu");
#endif
  // bert_server's --dtype=auto: float16 where "auto" finds a GPU, float32 on the CPU.
  options.auto_dtype = true;
  auto by_backend = CreateEngine(model, options);
  ASSERT_TRUE(by_backend.ok()) << by_backend.status();
  const bool on_gpu = (*by_backend)->info().backend == "cuda";
  EXPECT_EQ((*by_backend)->info().dtype, on_gpu ? DType::kFloat16 : DType::kFloat32);
}

#if defined(BERT_WITH_CUDA)

void ExpectSameOutputs(const EncoderOutput& got, const EncoderOutput& want,
                       const std::string& what) {
  EXPECT_EQ(got.sequence, want.sequence) << what;
  EXPECT_EQ(got.pooled, want.pooled) << what;
  EXPECT_EQ(got.mean_pooled, want.mean_pooled) << what;
  EXPECT_EQ(got.cls, want.cls) << what;
  EXPECT_EQ(got.layers, want.layers) << what;
  EXPECT_EQ(CountNonFinite(got.sequence) + CountNonFinite(got.pooled) +
                CountNonFinite(got.mean_pooled) + CountNonFinite(got.cls),
            0u)
      << what;
}

bool SkipWithoutGpu() { return CudaDeviceCount() == 0; }
constexpr char kNoGpu[] = "no CUDA GPU on this machine (cudaGetDeviceCount == 0 or failed)";

// ---------------------------------------------------------------------------------------
// Golden fixtures.

using GoldenParam = std::tuple<std::string, DType>;

std::string GoldenName(const ::testing::TestParamInfo<GoldenParam>& info) {
  std::string name = std::get<0>(info.param) + "_" + ShortName(std::get<1>(info.param));
  for (char& ch : name) {
    if (ch == '-') ch = '_';
  }
  return name;
}

class CudaGoldenTest : public ::testing::TestWithParam<GoldenParam> {
 protected:
  void SetUp() override {
    if (SkipWithoutGpu()) GTEST_SKIP() << kNoGpu;
  }
};

TEST_P(CudaGoldenTest, MatchesReferenceOnEveryTensor) {
  const auto& [name, dtype] = GetParam();
  auto fixture = LoadGoldenFixture(name);
  ASSERT_TRUE(fixture.ok()) << fixture.status();
  const std::shared_ptr<const Model>& model = fixture->model;
  const ModelConfig& c = model->config;
  const EncoderBatch& batch = fixture->batch;
  const OutputSelection& sel = fixture->selection;
  SafetensorsFile& expected = fixture->expected;
  const int b = batch.num_sequences(), s = batch.max_rows();

  // The pinned output buffer holds 2 x max_batch_tokens rows: size the workspace so that every
  // layer's output fits, which lets the engine capture a CUDA graph for this batch.
  const int max_tokens = std::max(1024, b * s * (c.num_layers + 1));
  auto engine = CreateCudaEngine(model, Options(dtype, max_tokens));
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->info().backend, "cuda");
  // Three times: the second run must not depend on state left by the first; with CUDA graphs
  // on (the default) run 0 is eager, run 1 captures a graph and run 2 replays it. With every
  // default on (autotune included), the three agree bit for bit: the GEMM plans are fixed
  // after run 0, cuBLAS(Lt) is reproducible run to run for a fixed algorithm, and our
  // kernels sum in a fixed order.
  EncoderOutput first;
  for (int run = 0; run < 3; ++run) {
    EncoderOutput out;
    const absl::Status st = (*engine)->Encode(batch, sel, &out);
    ASSERT_TRUE(st.ok()) << st;
    if (run == 0) first = out;
    if (run > 0) ExpectSameOutputs(out, first, "run " + std::to_string(run) + " vs run 0");
    auto check = [&](const std::string& tensor, const std::vector<float>& got) {
      auto ref = expected.ReadFloat32(tensor, nullptr);
      ASSERT_TRUE(ref.ok()) << ref.status();
      ASSERT_EQ(got.size(), ref->size()) << tensor;
      EXPECT_EQ(CountNonFinite(got), 0u) << tensor;
      const double err = RelativeError(got, *ref);
      EXPECT_LE(err, Tolerance(dtype)) << tensor;
      if (run == 0 && (tensor == "sequence_output" || tensor == "pooled_output")) {
        std::printf("%s %s %s relative error %.3g\n", name.c_str(), ShortName(dtype),
                    tensor.c_str(), err);
      }
      if (tensor == "pooled_output") {
        const double cosine = MinRowCosine(got, *ref, c.hidden_size);
        if (run == 0)
          std::printf("%s %s pooled min cosine %.7f\n", name.c_str(), ShortName(dtype), cosine);
        EXPECT_GE(cosine, 0.9999);
      }
    };
    check("sequence_output", out.sequence);
    check("pooled_output", out.pooled);
    ASSERT_EQ(out.layers.size(), static_cast<size_t>(c.num_layers));
    for (int l = 0; l < c.num_layers; ++l) {
      check("encoder_outputs." + std::to_string(l), out.layers[l]);
    }
    // The cls head (gathered after the pooler's GEMM read the same rows): the sequence
    // output's first rows, bit for bit (both converted from the same values).
    const size_t h = static_cast<size_t>(c.hidden_size);
    ASSERT_EQ(out.cls.size(), static_cast<size_t>(b) * h);
    for (int q = 0; q < b; ++q) {
      const auto first = out.sequence.begin() + static_cast<size_t>(batch.cu_rows[q]) * h;
      EXPECT_EQ(std::vector<float>(first, first + h),
                std::vector<float>(out.cls.begin() + q * h, out.cls.begin() + (q + 1) * h))
          << "cls of sequence " << q << ", run " << run;
    }
  }
  auto* timing = dynamic_cast<CudaEngineTiming*>(engine->get());
  ASSERT_NE(timing, nullptr);
  const CudaGraphStats stats = timing->graph_stats();
  EXPECT_EQ(stats.capture_failures, 0) << stats.last_capture_error;
  EXPECT_EQ(stats.eager_runs, 1);
  EXPECT_EQ(stats.captures, 1);
  EXPECT_EQ(stats.replays, 1);
  // The defaults: copies on the second stream; no residual in the GEMMs, no double buffering.
  const CudaPathStats path = timing->path_stats();
  EXPECT_GT(path.copy_stream_copies, 0);
  EXPECT_EQ(path.residual_gemms, 0);
  EXPECT_EQ(path.double_buffered_attention, 0);
}

INSTANTIATE_TEST_SUITE_P(Models, CudaGoldenTest,
                         ::testing::Combine(::testing::Values("tiny-l4-h128", "tiny-l12-h64-s128"),
                                            ::testing::Values(DType::kFloat32, DType::kFloat16,
                                                              DType::kBFloat16)),
                         GoldenName);

// ---------------------------------------------------------------------------------------
// fused_gelu: the golden models use the erf GELU. In fp16/bf16 the fused path (cuBLASLt's
// tanh-form GELU epilogue) must be as close to the reference as the exact erf pass, up to a
// margin far below the dtype's own error; in fp32 the option changes nothing.

class CudaFusedGeluTest : public ::testing::TestWithParam<GoldenParam> {
 protected:
  void SetUp() override {
    if (SkipWithoutGpu()) GTEST_SKIP() << kNoGpu;
  }
};

TEST_P(CudaFusedGeluTest, AsCloseToReferenceAsExactGelu) {
  const auto& [name, dtype] = GetParam();
  auto fixture = LoadGoldenFixture(name);
  ASSERT_TRUE(fixture.ok()) << fixture.status();
  const std::shared_ptr<const Model>& model = fixture->model;
  ASSERT_EQ(model->config.activation, Activation::kGeluErf);
  OutputSelection sel;
  sel.sequence = true;
  sel.pooled = true;
  CudaEngineOptions exact_options = Untuned(Options(dtype, 4096));
  exact_options.fused_gelu = false;
  CudaEngineOptions fused_options = Untuned(Options(dtype, 4096));
  fused_options.fused_gelu = true;
  auto exact = CreateCudaEngine(model, exact_options);
  auto fused = CreateCudaEngine(model, fused_options);
  ASSERT_TRUE(exact.ok()) << exact.status();
  ASSERT_TRUE(fused.ok()) << fused.status();
  EncoderOutput want, got;
  ASSERT_TRUE((*exact)->Encode(fixture->batch, sel, &want).ok());
  ASSERT_TRUE((*fused)->Encode(fixture->batch, sel, &got).ok());
  if (dtype == DType::kFloat32) {
    ExpectSameOutputs(got, want, "fp32 ignores fused_gelu");
    return;
  }
  auto ref_seq = fixture->expected.ReadFloat32("sequence_output", nullptr);
  auto ref_pooled = fixture->expected.ReadFloat32("pooled_output", nullptr);
  ASSERT_TRUE(ref_seq.ok() && ref_pooled.ok());
  const double exact_seq = RelativeError(want.sequence, *ref_seq);
  const double fused_seq = RelativeError(got.sequence, *ref_seq);
  const double exact_pooled = RelativeError(want.pooled, *ref_pooled);
  const double fused_pooled = RelativeError(got.pooled, *ref_pooled);
  std::printf(
      "%s %s relative error vs reference: sequence exact %.3g fused %.3g; pooled "
      "exact %.3g fused %.3g; fused vs exact %.3g\n",
      name.c_str(), ShortName(dtype), exact_seq, fused_seq, exact_pooled, fused_pooled,
      RelativeError(got.sequence, want.sequence));
  EXPECT_EQ(CountNonFinite(got.sequence), 0u);
  // Within 25 % of the exact pass's own error, plus a floor of a tenth of the dtype's ulp
  // (fp16 ~1e-3, bf16 ~8e-3 relative), so that two near-zero errors still compare.
  const double floor = dtype == DType::kFloat16 ? 1e-4 : 8e-4;
  EXPECT_LE(fused_seq, 1.25 * exact_seq + floor);
  EXPECT_LE(fused_pooled, 1.25 * exact_pooled + floor);
  EXPECT_LE(fused_seq, Tolerance(dtype));
  // The epilogue itself ran (a refusal would compare the exact pass with itself).
  EXPECT_EQ(PathStats(*fused).gelu_epilogue_refused, 0);
}

INSTANTIATE_TEST_SUITE_P(Models, CudaFusedGeluTest,
                         ::testing::Combine(::testing::Values("tiny-l4-h128", "tiny-l12-h64-s128"),
                                            ::testing::Values(DType::kFloat32, DType::kFloat16,
                                                              DType::kBFloat16)),
                         GoldenName);

// ---------------------------------------------------------------------------------------
// GEMM variants: residual_in_gemm (bias and residual added in the GEMM's epilogue before
// each LayerNorm) and custom_gemm (our split-K GEMM kernel among the autotune candidates;
// fp32 never uses it). Every tensor within the dtype's tolerance of the reference, as the
// default path is, eager, captured and replayed; the residual is added in the GEMMs exactly
// when residual_in_gemm is on.

class CudaGemmVariantTest : public ::testing::TestWithParam<GoldenParam> {
 protected:
  void SetUp() override {
    if (SkipWithoutGpu()) GTEST_SKIP() << kNoGpu;
  }

  // Returns the engine's GEMM counters after the runs.
  cuda::GemmStats CheckVariant(const CudaEngineOptions& options, const char* variant) {
    cuda::GemmStats gemm_stats;
    CheckVariantRuns(options, variant, &gemm_stats);
    return gemm_stats;
  }

  void CheckVariantRuns(const CudaEngineOptions& options, const char* variant,
                        cuda::GemmStats* gemm_stats) {
    const auto& [name, dtype] = GetParam();
    auto fixture = LoadGoldenFixture(name);
    ASSERT_TRUE(fixture.ok()) << fixture.status();
    auto engine = CreateCudaEngine(fixture->model, options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    const OutputSelection& sel = fixture->selection;
    for (int run = 0; run < 3; ++run) {  // eager, captured, replayed
      EncoderOutput out;
      ASSERT_TRUE((*engine)->Encode(fixture->batch, sel, &out).ok());
      auto check = [&](const std::string& tensor, const std::vector<float>& got) {
        auto ref = fixture->expected.ReadFloat32(tensor, nullptr);
        ASSERT_TRUE(ref.ok()) << ref.status();
        ASSERT_EQ(got.size(), ref->size()) << tensor;
        EXPECT_EQ(CountNonFinite(got), 0u) << tensor;
        const double err = RelativeError(got, *ref);
        if (run == 0 && tensor == "sequence_output") {
          std::printf("%s %s %s sequence relative error %.3g\n", name.c_str(), ShortName(dtype),
                      variant, err);
        }
        EXPECT_LE(err, Tolerance(dtype)) << tensor << " run " << run;
      };
      check("sequence_output", out.sequence);
      check("pooled_output", out.pooled);
      for (size_t l = 0; l < out.layers.size(); ++l) {
        check("encoder_outputs." + std::to_string(sel.layers[l]), out.layers[l]);
      }
    }
    auto* timing = dynamic_cast<CudaEngineTiming*>(engine->get());
    const CudaGraphStats stats = timing->graph_stats();
    EXPECT_EQ(stats.capture_failures, 0) << stats.last_capture_error;
    EXPECT_EQ(stats.eager_runs, 1);
    EXPECT_EQ(stats.captures, 1);
    EXPECT_EQ(stats.replays, 1);
    // Counted per enqueued forward (the eager run and the capture; the replay enqueues
    // nothing): both GEMMs closing a block, in every layer.
    const long long forwards = EnqueuedForwards(stats);
    const long long block_gemms = 2 * forwards * fixture->model->config.num_layers;
    // With layer_norm_in_gemm those GEMMs (fp16/bf16; the golden batches have fewer rows than
    // the limit the tests set) run our kernel with the LayerNorm instead.
    const bool norm_in_gemm = options.layer_norm_in_gemm_max_rows > 0 && dtype != DType::kFloat32;
    EXPECT_EQ(timing->path_stats().layer_norm_gemms, norm_in_gemm ? block_gemms : 0);
    EXPECT_EQ(timing->path_stats().residual_gemms,
              options.residual_in_gemm && !norm_in_gemm ? block_gemms : 0);
    *gemm_stats = timing->gemm_stats();
  }
};

TEST_P(CudaGemmVariantTest, ResidualInGemmMatchesReference) {
  CudaEngineOptions options = Options(std::get<1>(GetParam()), 4096);
  options.residual_in_gemm = true;
  CheckVariant(options, "residual_in_gemm");
}

// Each block's closing projection and its LayerNorm as one kernel (fp16/bf16; fp32 keeps the
// two kernels, and the test says so through the path counter).
TEST_P(CudaGemmVariantTest, LayerNormInGemmMatchesReference) {
  CudaEngineOptions options = Options(std::get<1>(GetParam()), 4096);
  options.layer_norm_in_gemm_max_rows = 4096;
  CheckVariant(options, "layer_norm_in_gemm");
}

// Our kernel for every GEMM it supports (fp16/bf16): here a wrong kernel fails, where
// autotune would drop it for disagreeing with cuBLASLt.
TEST_P(CudaGemmVariantTest, ForcedCustomGemmMatchesReference) {
  const DType dtype = std::get<1>(GetParam());
  CudaEngineOptions options = Options(dtype, 4096);
  options.force_custom_gemm_splits = 3;
  const cuda::GemmStats stats = CheckVariant(options, "forced custom_gemm");
  // At least the pooler's GEMM (few rows) ran our kernel in fp16/bf16; fp32 never does.
  EXPECT_EQ(stats.custom_forced > 0, dtype != DType::kFloat32);
}

TEST_P(CudaGemmVariantTest, CustomGemmMatchesReference) {
  const DType dtype = std::get<1>(GetParam());
  CudaEngineOptions options = Options(dtype, 4096);
  options.gemm_autotune = true;
  options.custom_gemm = true;
  const cuda::GemmStats stats = CheckVariant(options, "custom_gemm");
  // Timed as a candidate in fp16/bf16 (at least for the pooler's few rows), never in fp32,
  // and never in disagreement with cuBLASLt.
  EXPECT_EQ(stats.custom_timed > 0, dtype != DType::kFloat32);
  EXPECT_EQ(stats.custom_mismatches, 0);
}

INSTANTIATE_TEST_SUITE_P(Models, CudaGemmVariantTest,
                         ::testing::Combine(::testing::Values("tiny-l4-h128", "tiny-l12-h64-s128"),
                                            ::testing::Values(DType::kFloat32, DType::kFloat16,
                                                              DType::kBFloat16)),
                         GoldenName);

// ---------------------------------------------------------------------------------------
// Against the CPU engine on a random-weights BERT-base.

class CudaVsCpuTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (SkipWithoutGpu()) GTEST_SKIP() << kNoGpu;
  }
};

EncoderBatch RandomBatch(const ModelConfig& c, std::mt19937& rng) {
  EncoderBatch batch;
  // (real tokens, padded rows): one token, odd lengths, a full 128, padding rows, a 512.
  const std::pair<int, int> shapes[] = {{1, 0},   {7, 0},  {128, 0}, {33, 64}, {5, 9},
                                        {100, 0}, {1, 16}, {512, 0}, {61, 0}};
  std::uniform_int_distribution<int> word(1, c.vocab_size - 1), type(0, c.type_vocab_size - 1);
  for (const auto& [real, padded] : shapes) {
    std::vector<int32_t> w(real), t(real);
    for (int i = 0; i < real; ++i) {
      w[i] = word(rng);
      t[i] = i < real / 2 ? 0 : type(rng);
    }
    batch.Add(w, t, padded);
  }
  return batch;
}

TEST_P(CudaVsCpuTest, RandomBertBaseAllHeads) {
  const DType dtype = GetParam();
  auto model = std::make_shared<const Model>(RandomModel(BertBaseConfig(), 1234));
  const ModelConfig& c = model->config;
  std::random_device rd;
  const unsigned seed = rd();
  std::printf("batch seed %u\n", seed);
  std::mt19937 rng(seed);
  const EncoderBatch batch = RandomBatch(c, rng);

  OutputSelection sel;
  sel.pooled = true;
  sel.mean_pooled = true;
  sel.cls = true;
  sel.sequence = true;
  sel.layers = {0, 5, c.num_layers - 1};
  CpuEngineOptions cpu_options;
  auto cpu = CpuEngine::Create(model, cpu_options);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EncoderOutput ref;
  ASSERT_TRUE((*cpu)->Encode(batch, sel, &ref).ok());

  auto gpu = CreateCudaEngine(model, Options(dtype, 2048));
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EncoderOutput out;
  // Pre-fill the output to check the engine replaces it.
  out.sequence.assign(7, NAN);
  const absl::Status st = (*gpu)->Encode(batch, sel, &out);
  ASSERT_TRUE(st.ok()) << st;
  const double tol = Tolerance(dtype);
  auto check = [&](const char* what, const std::vector<float>& got,
                   const std::vector<float>& want) {
    ASSERT_EQ(got.size(), want.size()) << what;
    EXPECT_EQ(CountNonFinite(got), 0u) << what;
    const double err = RelativeError(got, want);
    std::printf("bert-base %s %s relative error %.3g\n", ShortName(dtype), what, err);
    EXPECT_LE(err, tol) << what;
  };
  check("sequence", out.sequence, ref.sequence);
  check("pooled", out.pooled, ref.pooled);
  check("mean_pooled", out.mean_pooled, ref.mean_pooled);
  check("cls", out.cls, ref.cls);
  ASSERT_EQ(out.layers.size(), sel.layers.size());
  for (size_t i = 0; i < sel.layers.size(); ++i) {
    check(("layer " + std::to_string(sel.layers[i])).c_str(), out.layers[i], ref.layers[i]);
  }
  EXPECT_GE(MinRowCosine(out.pooled, ref.pooled, c.hidden_size), 0.9999);
  EXPECT_EQ(PathStats(*gpu).gelu_epilogue_refused, 0);  // 768 -> 3072 took the epilogue

  // Normalised heads.
  sel.normalize = true;
  sel.layers.clear();
  sel.sequence = false;
  EncoderOutput ref_norm, out_norm;
  ASSERT_TRUE((*cpu)->Encode(batch, sel, &ref_norm).ok());
  ASSERT_TRUE((*gpu)->Encode(batch, sel, &out_norm).ok());
  check("pooled normalized", out_norm.pooled, ref_norm.pooled);
  check("mean_pooled normalized", out_norm.mean_pooled, ref_norm.mean_pooled);
  check("cls normalized", out_norm.cls, ref_norm.cls);
  EXPECT_TRUE(out_norm.sequence.empty());
  // The cls head alone gathers its rows itself (with the pooler, it reuses the pooler's).
  OutputSelection cls_only;
  cls_only.cls = true;
  EncoderOutput out_cls;
  ASSERT_TRUE((*gpu)->Encode(batch, cls_only, &out_cls).ok());
  EXPECT_TRUE(out_cls.pooled.empty());
  check("cls alone", out_cls.cls, ref.cls);
}

// The sequence, pooled and every layer's output within `tol` (relative) of the CPU engine's.
void ExpectCloseToCpu(const EncoderOutput& out, const EncoderOutput& ref, double tol,
                      const std::string& what) {
  ASSERT_EQ(out.sequence.size(), ref.sequence.size()) << what;
  EXPECT_EQ(CountNonFinite(out.sequence), 0u) << what;
  EXPECT_LE(RelativeError(out.sequence, ref.sequence), tol) << what << " sequence";
  EXPECT_LE(RelativeError(out.pooled, ref.pooled), tol) << what << " pooled";
  ASSERT_EQ(out.layers.size(), ref.layers.size()) << what;
  for (size_t l = 0; l < out.layers.size(); ++l) {
    EXPECT_LE(RelativeError(out.layers[l], ref.layers[l]), tol) << what << " layer " << l;
  }
}

// Encodes `batch` on `gpu` three times (with CUDA graphs on: eager, captured, replayed): the
// first run within `tol` of the CPU engine's outputs, the other two bit-identical to it (no
// result may depend on graphs or on which CTA finished last). Returns the first run's outputs.
EncoderOutput ExpectRunsAgree(Engine* cpu, Engine* gpu, const EncoderBatch& batch,
                              const OutputSelection& sel, double tol, const std::string& what) {
  EncoderOutput ref, first;
  EXPECT_TRUE(cpu->Encode(batch, sel, &ref).ok()) << what;
  EXPECT_TRUE(gpu->Encode(batch, sel, &first).ok()) << what;
  ExpectCloseToCpu(first, ref, tol, what);
  for (const char* run : {", captured", ", replayed"}) {
    EncoderOutput again;
    EXPECT_TRUE(gpu->Encode(batch, sel, &again).ok()) << what << run;
    ExpectSameOutputs(again, first, what + run);
  }
  std::printf("%s: sequence error %.3g (vs CPU)\n", what.c_str(),
              RelativeError(first.sequence, ref.sequence));
  return first;
}

// `length` word ids drawn uniformly from the vocabulary, [PAD] (0) excluded.
std::vector<int32_t> RandomWordIds(const ModelConfig& c, int length, std::mt19937& rng) {
  std::uniform_int_distribution<int> word(1, c.vocab_size - 1);
  std::vector<int32_t> ids(length);
  for (int32_t& id : ids) id = word(rng);
  return ids;
}

// Our split-K GEMM on BERT-base at the batch sizes it is for (128 and 205 rows: the buckets
// of 128 and 256 rows), as an autotune candidate and forced for every GEMM, every layer
// returned, against the CPU engine and beside the default engine.
TEST_P(CudaVsCpuTest, RandomBertBaseFewRowsCustomGemm) {
  const DType dtype = GetParam();
  auto model = std::make_shared<const Model>(RandomModel(BertBaseConfig(), 4321));
  const ModelConfig& c = model->config;
  std::mt19937 rng(std::random_device{}());
  auto sequence = [&](int length) { return RandomWordIds(c, length, rng); };
  EncoderBatch one, two;
  one.Add(sequence(128), std::vector<int32_t>(128, 0), 0);
  two.Add(sequence(77), std::vector<int32_t>(77, 1), 0);
  two.Add(sequence(128), std::vector<int32_t>(128, 0), 0);
  const OutputSelection sel = EveryLayer(c);
  CpuEngineOptions cpu_options;
  auto cpu = CpuEngine::Create(model, cpu_options);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  // Autotune with our kernel as a candidate, and our kernel forced (4 splits) for every GEMM.
  CudaEngineOptions custom_options = Options(dtype, 2048);
  custom_options.gemm_autotune = true;
  custom_options.custom_gemm = true;
  CudaEngineOptions forced_options = Options(dtype, 2048);
  forced_options.force_custom_gemm_splits = 4;
  auto plain = CreateCudaEngine(model, Options(dtype, 2048));
  auto custom = CreateCudaEngine(model, custom_options);
  auto forced = CreateCudaEngine(model, forced_options);
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_TRUE(custom.ok()) << custom.status();
  ASSERT_TRUE(forced.ok()) << forced.status();
  const double tol = Tolerance(dtype);
  for (const EncoderBatch* batch : {&one, &two}) {
    EncoderOutput ref, base, out;
    ASSERT_TRUE((*cpu)->Encode(*batch, sel, &ref).ok());
    ASSERT_TRUE((*plain)->Encode(*batch, sel, &base).ok());
    for (int run = 0; run < 6; ++run) {  // each engine: eager, captured, replayed
      Engine* engine = run < 3 ? custom->get() : forced->get();
      ASSERT_TRUE(engine->Encode(*batch, sel, &out).ok());
      const std::string what = std::to_string(batch->total_rows()) + " rows " +
                               (run < 3 ? "autotuned" : "forced") + " run " +
                               std::to_string(run % 3) + " " + ShortName(dtype);
      ExpectCloseToCpu(out, ref, tol, what);
      if (run % 3 == 0) {
        std::printf("bert-base %s: custom_gemm sequence error %.3g, default %.3g (vs CPU)\n",
                    what.c_str(), RelativeError(out.sequence, ref.sequence),
                    RelativeError(base.sequence, ref.sequence));
      }
    }
  }
  // Our kernel was a timed candidate (and never disagreed with cuBLASLt), and ran forced in
  // fp16/bf16 for every GEMM plan: the four layer GEMMs at 128 and at 205 rows, and the pooler
  // at 1 and at 2 rows (plans are per exact row count; the layers share theirs). fp32 never
  // uses it.
  const bool sixteen_bit = dtype != DType::kFloat32;
  const cuda::GemmStats tuned = dynamic_cast<CudaEngineTiming*>(custom->get())->gemm_stats();
  const cuda::GemmStats forced_stats = dynamic_cast<CudaEngineTiming*>(forced->get())->gemm_stats();
  EXPECT_EQ(tuned.custom_timed > 0, sixteen_bit);
  EXPECT_EQ(tuned.custom_mismatches, 0);
  std::printf("bert-base %s: our kernel won %lld of %lld tunings\n", ShortName(dtype),
              tuned.custom_chosen, tuned.tuned_buckets);
  EXPECT_EQ(forced_stats.custom_forced, sixteen_bit ? 2 * 4 + 2 : 0);
}

// BERT-base with the projections' LayerNorm inside our GEMM for batches of at most 256 rows:
// one sequence of 128 tokens and two (205 rows, a partial row block) take it, with the split
// counts that fill the GPU; a batch of 300 rows keeps the two kernels. Every layer returned,
// eager, captured and replayed, against the CPU engine; the captured and replayed runs
// bit-identical to the eager one.
TEST_P(CudaVsCpuTest, RandomBertBaseLayerNormInGemm) {
  const DType dtype = GetParam();
  auto model = std::make_shared<const Model>(RandomModel(BertBaseConfig(), 2468));
  const ModelConfig& c = model->config;
  std::mt19937 rng(std::random_device{}());
  auto sequence = [&](int length) { return RandomWordIds(c, length, rng); };
  EncoderBatch one, two, three;
  one.Add(sequence(128), std::vector<int32_t>(128, 0), 0);
  two.Add(sequence(77), std::vector<int32_t>(77, 1), 0);
  two.Add(sequence(128), std::vector<int32_t>(128, 0), 0);
  three.Add(sequence(100), std::vector<int32_t>(100, 0), 0);
  three.Add(sequence(100), std::vector<int32_t>(100, 0), 0);
  three.Add(sequence(100), std::vector<int32_t>(100, 1), 0);
  const OutputSelection sel = EveryLayer(c);
  CpuEngineOptions cpu_options;
  auto cpu = CpuEngine::Create(model, cpu_options);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  CudaEngineOptions options = Options(dtype, 2048);
  options.layer_norm_in_gemm_max_rows = 256;
  auto fused = CreateCudaEngine(model, options);
  ASSERT_TRUE(fused.ok()) << fused.status();
  auto* timing = dynamic_cast<CudaEngineTiming*>(fused->get());
  const double tol = Tolerance(dtype);
  const bool sixteen_bit = dtype != DType::kFloat32;
  for (const EncoderBatch* batch : {&one, &two, &three}) {
    const long long before = timing->path_stats().layer_norm_gemms;
    ExpectRunsAgree(cpu->get(), fused->get(), *batch, sel, tol,
                    "bert-base layer_norm_in_gemm " + std::to_string(batch->total_rows()) +
                        " rows " + ShortName(dtype));
    // Enqueued by the eager run and the capture: two projections per layer, each time, for
    // batches within the limit.
    const long long expected = sixteen_bit && batch->total_rows() <= 256 ? 2 * 2 * c.num_layers : 0;
    EXPECT_EQ(timing->path_stats().layer_norm_gemms - before, expected)
        << batch->total_rows() << " rows";
  }
}

// A small gelu_tanh model (the golden models use the erf GELU): fp32 through our GELU kernel,
// fp16/bf16 through cuBLASLt's GELU_BIAS epilogue.
ModelConfig SmallGeluTanhConfig(int layers) {
  ModelConfig c;
  c.num_layers = layers;
  c.hidden_size = 256;
  c.num_heads = 4;
  c.intermediate_size = 1024;
  c.vocab_size = 2000;
  c.activation = Activation::kGeluTanh;
  return c;
}

TEST_P(CudaVsCpuTest, SmallGeluTanhModel) {
  const DType dtype = GetParam();
  const ModelConfig c = SmallGeluTanhConfig(3);
  auto model = std::make_shared<const Model>(RandomModel(c, 99));
  std::mt19937 rng(std::random_device{}());
  const EncoderBatch batch = RandomBatch(c, rng);
  OutputSelection sel;
  sel.pooled = true;
  sel.sequence = true;
  auto cpu = CpuEngine::Create(model, CpuEngineOptions());
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EncoderOutput ref, out;
  ASSERT_TRUE((*cpu)->Encode(batch, sel, &ref).ok());
  auto gpu = CreateCudaEngine(model, Options(dtype, 1024));
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  const absl::Status st = (*gpu)->Encode(batch, sel, &out);
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_EQ(out.sequence.size(), ref.sequence.size());
  EXPECT_EQ(CountNonFinite(out.sequence), 0u);
  const double err = RelativeError(out.sequence, ref.sequence);
  std::printf("gelu_tanh model %s sequence relative error %.3g\n", ShortName(dtype), err);
  EXPECT_LE(err, Tolerance(dtype));
  EXPECT_LE(RelativeError(out.pooled, ref.pooled), Tolerance(dtype));
}

// --fused_gelu=false is an escape for tanh-GELU models too (the separate tanh pass), and an
// engine whose GELU epilogue cuBLASLt refuses runs that pass instead, from the refused GEMM on:
// both match the CPU reference and each other bit for bit.
TEST_P(CudaVsCpuTest, GeluTanhModelWithoutTheEpilogue) {
  const DType dtype = GetParam();
  if (dtype == DType::kFloat32) GTEST_SKIP() << "float32 never uses the epilogue";
  const ModelConfig c = SmallGeluTanhConfig(2);
  auto model = std::make_shared<const Model>(RandomModel(c, 98));
  std::mt19937 rng(5);
  const EncoderBatch batch = RandomBatch(c, rng);
  OutputSelection sel;
  sel.sequence = true;
  auto cpu = CpuEngine::Create(model, CpuEngineOptions());
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EncoderOutput ref;
  ASSERT_TRUE((*cpu)->Encode(batch, sel, &ref).ok());
  CudaEngineOptions unfused_options = Untuned(Options(dtype, 1024, /*cuda_graphs=*/false));
  unfused_options.fused_gelu = false;
  auto unfused = CreateCudaEngine(model, unfused_options);
  ASSERT_TRUE(unfused.ok()) << unfused.status();
  EncoderOutput a;
  ASSERT_TRUE((*unfused)->Encode(batch, sel, &a).ok());
  EXPECT_LE(RelativeError(a.sequence, ref.sequence), Tolerance(dtype));
  EXPECT_EQ(PathStats(*unfused).gelu_epilogue_refused, 0);
  // cuBLASLt may refuse the epilogue when asked for algorithms, or when one is run; with
  // autotune the refusal at run time comes while tuning (every candidate fails, then the
  // heuristic's first choice too).
  struct Refusal {
    const char* what;
    bool at_run;
    bool autotune;
  };
  for (const Refusal& r :
       {Refusal{"refused by the heuristic", false, false}, Refusal{"refused when run", true, false},
        Refusal{"refused when run, autotuned", true, true}}) {
    CudaEngineOptions refused_options = Untuned(Options(dtype, 1024, /*cuda_graphs=*/false));
    refused_options.gemm_autotune = r.autotune;
    refused_options.testing.refuse_gelu_epilogue = !r.at_run;
    refused_options.testing.refuse_gelu_epilogue_at_run = r.at_run;
    auto refused = CreateCudaEngine(model, refused_options);
    ASSERT_TRUE(refused.ok()) << r.what << ": " << refused.status();
    EncoderOutput b;
    const absl::Status st = (*refused)->Encode(batch, sel, &b);
    ASSERT_TRUE(st.ok()) << r.what << ": " << st;
    if (r.autotune) {  // other GEMMs may take other algorithms: close, not the same bits
      EXPECT_LE(RelativeError(b.sequence, ref.sequence), Tolerance(dtype)) << r.what;
    } else {
      ExpectSameOutputs(b, a, std::string(r.what) + " vs fused_gelu=false");
    }
    EXPECT_EQ(PathStats(*refused).gelu_epilogue_refused, 1) << r.what;
    // What bert_server exports (bert_engine_fallbacks_total) and logs.
    int64_t exported = -1;
    for (const EngineFallback& f : (*refused)->Fallbacks()) {
      if (f.path == "gelu_epilogue") exported = f.count;
    }
    EXPECT_EQ(exported, 1) << r.what;
    // The engine goes on with the separate pass: a second batch runs too.
    ASSERT_TRUE((*refused)->Encode(batch, sel, &b).ok()) << r.what;
  }
}

// Head sizes other than BERT-base's 64, eager, captured and replayed (the same bits each
// time) and against the CPU engine, with the serving defaults: head_dim 32 is the default
// served model's shape (all-MiniLM-L6-v2: 384 hidden, 12 heads), which at small batches runs
// the 16-row attention tile; 128 takes the largest tile's shared memory.
TEST_P(CudaVsCpuTest, HeadDims32And128EagerCapturedReplayed) {
  const DType dtype = GetParam();
  struct Shape {
    int hidden, heads, intermediate;
  };
  for (const Shape& shape : {Shape{384, 12, 1536}, Shape{256, 2, 1024}}) {
    ModelConfig c;
    c.num_layers = 2;
    c.hidden_size = shape.hidden;
    c.num_heads = shape.heads;
    c.intermediate_size = shape.intermediate;
    c.vocab_size = 3000;
    const std::string what = "head_dim " + std::to_string(c.head_dim());
    auto model = std::make_shared<const Model>(RandomModel(c, 321));
    std::mt19937 rng(17);
    EncoderBatch one;  // a lone short sequence: the smallest tile
    one.Add({101, 7, 8, 9, 10, 11, 102}, {});
    const EncoderBatch mixed = RandomBatch(c, rng);
    OutputSelection sel = EveryLayer(c);
    sel.mean_pooled = true;
    auto cpu = CpuEngine::Create(model, CpuEngineOptions());
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    auto gpu = CreateCudaEngine(model, Options(dtype, 2048));
    ASSERT_TRUE(gpu.ok()) << what << ": " << gpu.status();
    for (const EncoderBatch* batch : std::vector<const EncoderBatch*>{&one, &mixed}) {
      ExpectRunsAgree(cpu->get(), gpu->get(), *batch, sel, Tolerance(dtype), what);
    }
    const CudaGraphStats graphs = dynamic_cast<CudaEngineTiming*>(gpu->get())->graph_stats();
    EXPECT_EQ(graphs.captures, 2) << what << ": " << graphs.last_capture_error;
    EXPECT_EQ(graphs.replays, 2) << what;
    if (dtype != DType::kFloat32) {
      EXPECT_EQ(PathStats(*gpu).gelu_epilogue_refused, 0) << what;
    }
  }
}

// BERT-base with the serving defaults (autotune, graphs, the tile rule): a batch of 8 x 128
// (the 32-row tile on an H100/H200's 132 SMs) and one of a single sequence, each eager,
// captured and replayed with the same bits, and close to the CPU engine.
TEST_P(CudaVsCpuTest, RandomBertBaseDefaultsEagerCapturedReplayed) {
  const DType dtype = GetParam();
  auto model = std::make_shared<const Model>(RandomModel(BertBaseConfig(), 77));
  const ModelConfig& c = model->config;
  std::mt19937 rng(23);
  EncoderBatch eight, single;
  for (int s = 0; s < 8; ++s) eight.Add(RandomWordIds(c, 128, rng), {});
  single.Add({101, 2023, 2003, 1037, 3231, 102}, {});
  OutputSelection sel;
  sel.sequence = true;
  sel.pooled = true;
  auto cpu = CpuEngine::Create(model, CpuEngineOptions());
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  auto gpu = CreateCudaEngine(model, Options(dtype, 2048));
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  for (const EncoderBatch* batch : {&eight, &single}) {
    ExpectRunsAgree(cpu->get(), gpu->get(), *batch, sel, Tolerance(dtype),
                    std::string("bert-base defaults ") + ShortName(dtype) +
                        (batch == &eight ? " 8 x 128" : " one sequence"));
  }
  const CudaPathStats paths = PathStats(*gpu);
  std::printf("bert-base defaults %s: attention tiles 16/32/64 rows: %lld/%lld/%lld launches\n",
              ShortName(dtype), paths.attention_tiles[0], paths.attention_tiles[1],
              paths.attention_tiles[2]);
  const CudaGraphStats graphs = dynamic_cast<CudaEngineTiming*>(gpu->get())->graph_stats();
  EXPECT_EQ(graphs.captures, 2) << graphs.last_capture_error;
  EXPECT_EQ(graphs.replays, 2);
}

INSTANTIATE_TEST_SUITE_P(DTypes, CudaVsCpuTest,
                         ::testing::Values(DType::kFloat32, DType::kFloat16, DType::kBFloat16),
                         [](const auto& info) { return std::string(ShortName(info.param)); });

// ---------------------------------------------------------------------------------------
// Bad input is INVALID_ARGUMENT, and the engine keeps working afterwards.

TEST(CudaEngineErrors, OversizedSplitAndInvalidBatches) {
  if (SkipWithoutGpu()) GTEST_SKIP() << kNoGpu;
  std::shared_ptr<const Model> model = TinyModel();
  ASSERT_NE(model, nullptr);
  auto engine = CreateCudaEngine(model, Options(DType::kFloat16, 64));
  ASSERT_TRUE(engine.ok()) << engine.status();
  OutputSelection sel;
  sel.sequence = true;
  // 80 rows > 64: runs as two groups, equal to running the sequences one by one.
  EncoderBatch big, first, second;
  std::vector<int32_t> a(40), b(30);
  for (int i = 0; i < 40; ++i) a[i] = 1 + (i * 7) % 500;
  for (int i = 0; i < 30; ++i) b[i] = 2 + (i * 11) % 500;
  big.Add(a, {});
  big.Add(b, {}, 40);
  first.Add(a, {});
  second.Add(b, {}, 40);
  sel.mean_pooled = true;
  sel.layers = {1};
  EncoderOutput out, out1, out2;
  absl::Status st = (*engine)->Encode(big, sel, &out);
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_TRUE((*engine)->Encode(first, sel, &out1).ok());
  ASSERT_TRUE((*engine)->Encode(second, sel, &out2).ok());
  auto concat = [](std::vector<float> x, const std::vector<float>& y) {
    x.insert(x.end(), y.begin(), y.end());
    return x;
  };
  EXPECT_EQ(out.sequence, concat(out1.sequence, out2.sequence));
  EXPECT_EQ(out.mean_pooled, concat(out1.mean_pooled, out2.mean_pooled));
  ASSERT_EQ(out.layers.size(), 1u);
  EXPECT_EQ(out.layers[0], concat(out1.layers[0], out2.layers[0]));
  sel.mean_pooled = false;
  sel.layers.clear();
  // One sequence longer than the budget cannot be split.
  EncoderBatch too_long;
  too_long.Add(std::vector<int32_t>(65, 5), {});
  st = (*engine)->Encode(too_long, sel, &out);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EncoderBatch bad_id;
  bad_id.Add(std::vector<int32_t>{1, 2, model->config.vocab_size}, {});
  st = (*engine)->Encode(bad_id, sel, &out);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EncoderBatch ok;
  ok.Add(std::vector<int32_t>{1, 2, 3}, {});
  st = (*engine)->Encode(ok, sel, &out);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(out.sequence.size(), 3u * model->config.hidden_size);
  EXPECT_EQ(CountNonFinite(out.sequence), 0u);
  EXPECT_EQ(CreateCudaEngine(model, Options(DType::kFloat32, 0)).status().code(),
            absl::StatusCode::kInvalidArgument);
  CudaEngineOptions negative = Options(DType::kFloat32, 64);
  negative.max_graph_rows = -1;
  EXPECT_EQ(CreateCudaEngine(model, negative).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------
// CUDA graphs: outputs with graphs are bit-identical to the eager engine's, for repeated
// shapes with new contents, alternating shapes and selections, and after LRU eviction.

// `lengths` real tokens per sequence, each padded to `padded` rows (0: no padding), fresh
// random ids.
EncoderBatch ShapedBatch(const ModelConfig& c, const std::vector<int>& lengths, int padded,
                         std::mt19937& rng) {
  std::uniform_int_distribution<int> word(1, c.vocab_size - 1), type(0, c.type_vocab_size - 1);
  EncoderBatch batch;
  for (int len : lengths) {
    std::vector<int32_t> w(len), t(len);
    for (int i = 0; i < len; ++i) {
      w[i] = word(rng);
      t[i] = type(rng);
    }
    batch.Add(w, t, padded);
  }
  return batch;
}

class CudaGraphTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (SkipWithoutGpu()) GTEST_SKIP() << kNoGpu;
  }
};

TEST_P(CudaGraphTest, BitExactAgainstEagerForRepeatedAndAlternatingShapes) {
  const DType dtype = GetParam();
  std::shared_ptr<const Model> model = TinyModel();
  ASSERT_NE(model, nullptr);
  const ModelConfig& c = model->config;
  auto eager = CreateCudaEngine(model, Untuned(Options(dtype, 1024, /*cuda_graphs=*/false)));
  auto graphed = CreateCudaEngine(model, Untuned(Options(dtype, 1024, /*cuda_graphs=*/true)));
  ASSERT_TRUE(eager.ok()) << eager.status();
  ASSERT_TRUE(graphed.ok()) << graphed.status();
  auto* eager_stats = dynamic_cast<CudaEngineTiming*>(eager->get());
  auto* stats = dynamic_cast<CudaEngineTiming*>(graphed->get());
  ASSERT_NE(stats, nullptr);

  OutputSelection all;
  all.sequence = true;
  all.pooled = true;
  all.mean_pooled = true;
  all.layers = {0, c.num_layers - 1};
  OutputSelection pooled_only;
  pooled_only.pooled = true;
  OutputSelection mean_norm;
  mean_norm.mean_pooled = true;
  mean_norm.normalize = true;

  struct Shape {
    std::vector<int> lengths;
    int padded;
  };
  const Shape shapes[] = {{{128}, 0},             // batch 1
                          {{5, 17, 33, 64}, 0},   // ragged
                          {{5, 17, 33, 64}, 64},  // same sequences, padded rows
                          {{7, 7, 7, 7, 7, 7, 7, 7}, 0}};
  // (shape, selection) in an order that repeats and alternates keys.
  const std::pair<int, const OutputSelection*> steps[] = {
      {0, &all},         {0, &all},         {0, &all},         {1, &all},         {0, &all},
      {1, &all},         {1, &all},         {2, &all},         {2, &pooled_only}, {2, &all},
      {2, &pooled_only}, {3, &mean_norm},   {3, &mean_norm},   {3, &all},         {3, &mean_norm},
      {0, &pooled_only}, {0, &pooled_only}, {0, &pooled_only}, {1, &all},         {0, &all}};
  std::mt19937 rng(2024);
  int step = 0;
  for (const auto& [shape, sel] : steps) {
    // New contents every time: a replayed graph must read the new ids.
    const EncoderBatch batch = ShapedBatch(c, shapes[shape].lengths, shapes[shape].padded, rng);
    EncoderOutput want, got;
    got.pooled.assign(3, NAN);
    ASSERT_TRUE((*eager)->Encode(batch, *sel, &want).ok());
    const absl::Status st = (*graphed)->Encode(batch, *sel, &got);
    ASSERT_TRUE(st.ok()) << st;
    ExpectSameOutputs(got, want, "step " + std::to_string(step++));
  }
  const CudaGraphStats s = stats->graph_stats();
  std::printf("%s graphs: eager %lld captures %lld replays %lld cached %d\n", ShortName(dtype),
              s.eager_runs, s.captures, s.replays, s.cached);
  // Keys: (0,all) (1,all) (2,all) (2,pooled) (3,mean) (3,all) (0,pooled): 7 first sights; every
  // key seen twice or more is captured once.
  EXPECT_EQ(s.capture_failures, 0) << s.last_capture_error;
  EXPECT_EQ(s.eager_runs, 7);
  EXPECT_EQ(s.captures, 6);  // all but (3,all)
  EXPECT_EQ(s.replays, 20 - 7 - 6);
  EXPECT_EQ(s.cached, 6);
  EXPECT_EQ(eager_stats->graph_stats().captures, 0);
  EXPECT_EQ(eager_stats->graph_stats().replays, 0);
}

TEST_P(CudaGraphTest, BitExactAfterLruEviction) {
  const DType dtype = GetParam();
  std::shared_ptr<const Model> model = TinyModel();
  ASSERT_NE(model, nullptr);
  const ModelConfig& c = model->config;
  auto eager = CreateCudaEngine(model, Untuned(Options(dtype, 1024, false)));
  auto graphed = CreateCudaEngine(model, Untuned(Options(dtype, 1024, true)));
  ASSERT_TRUE(eager.ok() && graphed.ok());
  auto* stats = dynamic_cast<CudaEngineTiming*>(graphed->get());
  OutputSelection sel;
  sel.pooled = true;
  sel.sequence = true;
  std::mt19937 rng(7);
  const int num_keys = kMaxCudaGraphs + 4;
  auto run = [&](int len, const std::string& what) {
    const EncoderBatch batch = ShapedBatch(c, {len, 3}, 0, rng);
    EncoderOutput want, got;
    ASSERT_TRUE((*eager)->Encode(batch, sel, &want).ok());
    const absl::Status st = (*graphed)->Encode(batch, sel, &got);
    ASSERT_TRUE(st.ok()) << st;
    ExpectSameOutputs(got, want, what);
  };
  // Every key twice (eager, then captured): more keys than the cache holds.
  for (int k = 0; k < num_keys; ++k) {
    for (int rep = 0; rep < 2; ++rep) run(4 + k, "fill key " + std::to_string(k));
  }
  CudaGraphStats s = stats->graph_stats();
  EXPECT_EQ(s.captures, num_keys);
  EXPECT_EQ(s.evictions, num_keys - kMaxCudaGraphs);
  EXPECT_EQ(s.cached, kMaxCudaGraphs);
  // The first keys were evicted: seen again they run eagerly, then are re-captured, then
  // replayed; the newest keys replay straight away.
  for (int k = 0; k < 4; ++k) {
    for (int rep = 0; rep < 3; ++rep) run(4 + k, "evicted key " + std::to_string(k));
  }
  for (int k = num_keys - 3; k < num_keys; ++k) run(4 + k, "recent key " + std::to_string(k));
  const CudaGraphStats after = stats->graph_stats();
  EXPECT_EQ(after.eager_runs - s.eager_runs, 4);
  EXPECT_EQ(after.captures - s.captures, 4);
  EXPECT_EQ(after.replays - s.replays, 4 + 3);
  EXPECT_EQ(after.cached, kMaxCudaGraphs);
}

// The profiling hook sees every op in order, bypasses graphs, and changes no output.
class RecordingObserver : public CudaOpObserver {
 public:
  void OnOp(const char* name, void* stream) override {
    names.emplace_back(name);
    EXPECT_NE(stream, nullptr);
  }
  std::vector<std::string> names;
};

TEST_P(CudaGraphTest, OpObserverSeesEveryOpAndChangesNothing) {
  const DType dtype = GetParam();
  std::shared_ptr<const Model> model = TinyModel();
  ASSERT_NE(model, nullptr);
  const ModelConfig& c = model->config;
  auto engine = CreateCudaEngine(model, Options(dtype, 1024, true));
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto* timing = dynamic_cast<CudaEngineTiming*>(engine->get());
  std::mt19937 rng(11);
  const EncoderBatch batch = ShapedBatch(c, {9, 30}, 0, rng);
  OutputSelection sel;
  sel.pooled = true;
  EncoderOutput plain, observed;
  ASSERT_TRUE((*engine)->Encode(batch, sel, &plain).ok());
  RecordingObserver observer;
  timing->set_op_observer(&observer);
  ASSERT_TRUE((*engine)->Encode(batch, sel, &observed).ok());
  ASSERT_TRUE((*engine)->Encode(batch, sel, &observed).ok());
  timing->set_op_observer(nullptr);
  ExpectSameOutputs(observed, plain, "observed");
  EXPECT_EQ(timing->graph_stats().captures, 0);  // the repeated key was not captured
  auto count = [&](const std::string& op) {
    return std::count(observer.names.begin(), observer.names.end(), op);
  };
  EXPECT_EQ(count("upload"), 2);
  EXPECT_EQ(count("embedding"), 2);
  EXPECT_EQ(count("qkv_gemm"), 2 * c.num_layers);
  EXPECT_EQ(count("attention"), 2 * c.num_layers);
  EXPECT_EQ(count("ffn_down_gemm"), 2 * c.num_layers);
  EXPECT_EQ(count("pooler"), 2);
  EXPECT_EQ(count("end"), 2);
  // fp16/bf16 run bias + GELU in the FFN-up GEMM's epilogue (fused_gelu, the default).
  EXPECT_EQ(count("gelu"), dtype == DType::kFloat32 ? 2 * c.num_layers : 0);
  ASSERT_FALSE(observer.names.empty());
  EXPECT_EQ(observer.names.front(), "upload");
  EXPECT_EQ(observer.names.back(), "end");
  // Without the observer the key is captured on its next sight.
  ASSERT_TRUE((*engine)->Encode(batch, sel, &observed).ok());
  EXPECT_EQ(timing->graph_stats().captures, 1);
  ExpectSameOutputs(observed, plain, "captured after observing");
}

// The op observer sees "copy_out" exactly once per output copied back, whichever path the
// copy takes: straight from the residual stream (fp32 without overlap_copies), through a
// stage (fp16/bf16, or overlap_copies), or from a head's stage (pooled, mean_pooled); and
// when the outputs overflow the pinned buffer (64 tokens), so that the forward flushes.
TEST_P(CudaGraphTest, OpObserverMarksEachOutputCopyOnce) {
  const DType dtype = GetParam();
  std::shared_ptr<const Model> model = TinyModel();
  ASSERT_NE(model, nullptr);
  const ModelConfig& c = model->config;
  OutputSelection sel = EveryLayer(c);  // sequence, pooled, every layer
  sel.mean_pooled = true;
  const int outputs = c.num_layers + 3;
  for (const bool overlap : {false, true}) {
    for (const int max_tokens : {1024, 64}) {
      const std::string what = std::string(overlap ? "overlap" : "serial") + " copies, " +
                               std::to_string(max_tokens) + " tokens";
      CudaEngineOptions options = Untuned(Options(dtype, max_tokens));
      options.overlap_copies = overlap;
      auto engine = CreateCudaEngine(model, options);
      ASSERT_TRUE(engine.ok()) << engine.status() << " " << what;
      auto* timing = dynamic_cast<CudaEngineTiming*>(engine->get());
      std::mt19937 rng(17);
      const EncoderBatch batch = ShapedBatch(c, {21, 39}, 0, rng);
      EncoderOutput plain, observed;
      ASSERT_TRUE((*engine)->Encode(batch, sel, &plain).ok()) << what;
      RecordingObserver observer;
      timing->set_op_observer(&observer);
      ASSERT_TRUE((*engine)->Encode(batch, sel, &observed).ok()) << what;
      timing->set_op_observer(nullptr);
      ExpectSameOutputs(observed, plain, what);
      EXPECT_EQ(std::count(observer.names.begin(), observer.names.end(), "copy_out"), outputs)
          << what;
      EXPECT_EQ(std::count(observer.names.begin(), observer.names.end(), "end"), 1) << what;
    }
  }
}

// overlap_copies: outputs copied on the second stream equal those copied on the compute
// stream, eagerly, captured and replayed, and when the outputs overflow the pinned buffer
// (flushed in the middle of the forward).
TEST_P(CudaGraphTest, OverlappedCopiesMatchSerialCopies) {
  const DType dtype = GetParam();
  std::shared_ptr<const Model> model = TinyModel();
  ASSERT_NE(model, nullptr);
  const ModelConfig& c = model->config;
  OutputSelection all = EveryLayer(c);
  all.mean_pooled = true;
  // 1024 tokens: every output fits the pinned buffer (graphs); 64: 60 rows x 5 outputs do
  // not, so the eager forward flushes part-way.
  for (const int max_tokens : {1024, 64}) {
    CudaEngineOptions serial_options = Untuned(Options(dtype, max_tokens));
    serial_options.overlap_copies = false;
    CudaEngineOptions overlap_options = Untuned(Options(dtype, max_tokens));
    overlap_options.overlap_copies = true;
    auto serial = CreateCudaEngine(model, serial_options);
    auto overlapped = CreateCudaEngine(model, overlap_options);
    ASSERT_TRUE(serial.ok() && overlapped.ok());
    std::mt19937 rng(31);
    const EncoderBatch batch = ShapedBatch(c, {21, 39}, 0, rng);
    for (int run = 0; run < 3; ++run) {
      EncoderOutput want, got;
      ASSERT_TRUE((*serial)->Encode(batch, all, &want).ok());
      const absl::Status st = (*overlapped)->Encode(batch, all, &got);
      ASSERT_TRUE(st.ok()) << st;
      ASSERT_EQ(got.layers.size(), all.layers.size());
      ExpectSameOutputs(got, want,
                        "max_tokens " + std::to_string(max_tokens) + " run " + std::to_string(run));
    }
    const CudaGraphStats s = dynamic_cast<CudaEngineTiming*>(overlapped->get())->graph_stats();
    EXPECT_EQ(s.capture_failures, 0) << s.last_capture_error;
    EXPECT_EQ(s.captures, max_tokens == 1024 ? 1 : 0);
    // Every output (each layer, sequence, pooled, mean-pooled) of every enqueued forward (eager
    // runs and the capture, not the replay) went over the copy stream; none without the option.
    const long long forwards = EnqueuedForwards(s);
    EXPECT_EQ(forwards, max_tokens == 1024 ? 2 : 3);
    const long long outputs = static_cast<long long>(all.layers.size()) + 3;
    EXPECT_EQ(PathStats(*overlapped).copy_stream_copies, forwards * outputs);
    EXPECT_EQ(PathStats(*serial).copy_stream_copies, 0);
  }
}

// The same on BERT-base with every layer returned: each layer's copy (6 MB) takes longer
// than the next layer's compute, so a stage refilled before its copy ended, or a copy started
// before its stage was filled, would change the outputs.
TEST_P(CudaGraphTest, OverlappedCopiesMatchSerialCopiesOnBertBase) {
  const DType dtype = GetParam();
  auto model = std::make_shared<const Model>(RandomModel(BertBaseConfig(), 77));
  const ModelConfig& c = model->config;
  const OutputSelection all = EveryLayer(c);
  const int max_tokens = 2048 * (c.num_layers + 2) / 2;  // every output fits: graphs
  CudaEngineOptions serial_options = Untuned(Options(dtype, max_tokens));
  serial_options.overlap_copies = false;
  CudaEngineOptions overlap_options = Untuned(Options(dtype, max_tokens));
  auto serial = CreateCudaEngine(model, serial_options);
  auto overlapped = CreateCudaEngine(model, overlap_options);
  ASSERT_TRUE(serial.ok()) << serial.status();
  ASSERT_TRUE(overlapped.ok()) << overlapped.status();
  std::mt19937 rng(5);
  const EncoderBatch batch = ShapedBatch(c, std::vector<int>(16, 128), 0, rng);  // 2048 rows
  for (int run = 0; run < 3; ++run) {  // eager, captured, replayed
    EncoderOutput want, got;
    ASSERT_TRUE((*serial)->Encode(batch, all, &want).ok());
    const absl::Status st = (*overlapped)->Encode(batch, all, &got);
    ASSERT_TRUE(st.ok()) << st;
    ExpectSameOutputs(got, want, "run " + std::to_string(run));
  }
  const CudaGraphStats s = dynamic_cast<CudaEngineTiming*>(overlapped->get())->graph_stats();
  EXPECT_EQ(s.capture_failures, 0) << s.last_capture_error;
  EXPECT_EQ(s.captures, 1);
  EXPECT_GT(PathStats(*overlapped).copy_stream_copies, 0);
  EXPECT_EQ(PathStats(*serial).copy_stream_copies, 0);
}

// Encodes a fresh batch of each shape (sequence lengths, no padding) with both engines, three
// times over (eager, captured, replayed), and expects bit-identical outputs.
void ExpectSameOutputsOnShapes(Engine* want_engine, Engine* got_engine, const ModelConfig& c,
                               const std::vector<std::vector<int>>& shapes,
                               const OutputSelection& sel, std::mt19937& rng,
                               const std::string& what) {
  for (int run = 0; run < 3; ++run) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      const EncoderBatch batch = ShapedBatch(c, shapes[i], 0, rng);
      EncoderOutput want, got;
      ASSERT_TRUE(want_engine->Encode(batch, sel, &want).ok());
      const absl::Status st = got_engine->Encode(batch, sel, &got);
      ASSERT_TRUE(st.ok()) << st;
      ExpectSameOutputs(got, want,
                        what + " shape " + std::to_string(i) + " run " + std::to_string(run));
    }
  }
}

// Programmatic dependent launches change when kernels start, not what they compute:
// bit-identical to normal launches, eager, captured and replayed, with cuBLASLt's GEMMs and
// with our split-K GEMM forced for every GEMM (fp16/bf16: then every kernel of the layers is
// ours), with output copies on the second stream or on the compute stream, and with the
// residual added in the GEMM. Skips where the device or the loaded code cannot do them (the
// option is ignored there).
TEST_P(CudaGraphTest, ProgrammaticLaunchIsBitExact) {
  const DType dtype = GetParam();
  std::shared_ptr<const Model> model = TinyModel();
  ASSERT_NE(model, nullptr);
  const ModelConfig& c = model->config;
  const OutputSelection all = EveryLayer(c);
  const std::vector<std::vector<int>> shapes = {{128}, {5, 17, 33, 64}, {7, 7, 7, 7, 7, 7, 7, 7}};
  std::mt19937 rng(77);
  struct Config {
    int forced_splits;
    bool overlap_copies;
    bool residual_in_gemm;
    int layer_norm_in_gemm_rows = 0;  // layer_norm_in_gemm_max_rows
  };
  const Config configs[] = {{0, true, false},      {4, true, false}, {4, false, false},
                            {4, true, true},       {0, false, true}, {0, true, false, 1024},
                            {4, true, false, 1024}};
  for (const Config& config : configs) {
    const std::string what = "forced splits " + std::to_string(config.forced_splits) +
                             (config.overlap_copies ? "" : " serial copies") +
                             (config.residual_in_gemm ? " residual in GEMM" : "") +
                             (config.layer_norm_in_gemm_rows > 0 ? " LayerNorm in GEMM" : "");
    CudaEngineOptions normal = Untuned(Options(dtype, 1024));
    normal.force_custom_gemm_splits = config.forced_splits;
    normal.overlap_copies = config.overlap_copies;
    normal.residual_in_gemm = config.residual_in_gemm;
    normal.layer_norm_in_gemm_max_rows = config.layer_norm_in_gemm_rows;
    CudaEngineOptions programmatic = normal;
    programmatic.programmatic_launch = true;
    auto want_engine = CreateCudaEngine(model, normal);
    auto got_engine = CreateCudaEngine(model, programmatic);
    ASSERT_TRUE(want_engine.ok()) << want_engine.status();
    ASSERT_TRUE(got_engine.ok()) << got_engine.status();
    auto* timing = dynamic_cast<CudaEngineTiming*>(got_engine->get());
    ASSERT_NE(timing, nullptr);
    if (!timing->programmatic_launch()) {
      GTEST_SKIP() << "no programmatic launches on this device (compute capability < 9.0)";
    }
    EXPECT_FALSE(dynamic_cast<CudaEngineTiming*>(want_engine->get())->programmatic_launch());
    ExpectSameOutputsOnShapes(want_engine->get(), got_engine->get(), c, shapes, all, rng, what);
    const CudaGraphStats stats = timing->graph_stats();
    EXPECT_EQ(stats.capture_failures, 0) << what << ": " << stats.last_capture_error;
    EXPECT_EQ(stats.replays, static_cast<long long>(shapes.size())) << what;
    // The forced kernel really ran (fp16/bf16; fp32 has none).
    const bool forced = config.forced_splits > 0 && dtype != DType::kFloat32;
    EXPECT_EQ(timing->gemm_stats().custom_forced > 0, forced) << what;
    const CudaPathStats path = timing->path_stats();
    EXPECT_EQ(path.residual_gemms > 0, config.residual_in_gemm) << what;
    EXPECT_EQ(path.copy_stream_copies > 0, config.overlap_copies) << what;
    // Our GEMM with the LayerNorm inside, right after the attention kernel and before
    // cuBLASLt's (or our) next GEMM, in place on the hidden state (fp16/bf16).
    EXPECT_EQ(path.layer_norm_gemms > 0,
              config.layer_norm_in_gemm_rows > 0 && dtype != DType::kFloat32)
        << what;
  }
}

// Attention with two K/V buffers computes the same bits as with one (fp32 ignores the
// option), eager, captured and replayed, over batch 1, ragged and many-short-sequence shapes
// and a long sequence (several key tiles); the double-buffered kernel really ran where it
// applies.
TEST_P(CudaGraphTest, AttentionDoubleBufferIsBitExact) {
  const DType dtype = GetParam();
  std::shared_ptr<const Model> model = TinyModel();
  ASSERT_NE(model, nullptr);
  const ModelConfig& c = model->config;
  const OutputSelection all = EveryLayer(c);
  const std::vector<std::vector<int>> shapes = {
      {128}, {5, 17, 33, 64}, {7, 7, 7, 7, 7, 7, 7, 7}, {std::min(512, c.max_position_embeddings)}};
  // 2048 tokens: every layer's output of the 512-token batch fits the pinned buffer, so every
  // shape is captured and replayed.
  CudaEngineOptions single = Untuned(Options(dtype, 2048));
  CudaEngineOptions double_buffered = single;
  double_buffered.attention_double_buffer = true;
  auto want_engine = CreateCudaEngine(model, single);
  auto got_engine = CreateCudaEngine(model, double_buffered);
  ASSERT_TRUE(want_engine.ok()) << want_engine.status();
  ASSERT_TRUE(got_engine.ok()) << got_engine.status();
  std::mt19937 rng(91);
  ExpectSameOutputsOnShapes(want_engine->get(), got_engine->get(), c, shapes, all, rng,
                            "double-buffered attention");
  const CudaGraphStats stats = dynamic_cast<CudaEngineTiming*>(got_engine->get())->graph_stats();
  EXPECT_EQ(stats.capture_failures, 0) << stats.last_capture_error;
  const long long n = static_cast<long long>(shapes.size());
  EXPECT_EQ(stats.eager_runs, n);
  EXPECT_EQ(stats.captures, n);
  EXPECT_EQ(stats.replays, n);
  // fp16/bf16: once per layer of each enqueued forward (each shape's eager run and capture; a
  // replay enqueues nothing) whose longest sequence spans several 64-key tiles; the launcher
  // keeps the single-buffered kernel for the others. fp32 has no double-buffered kernel.
  const long long several_tiles =
      std::count_if(shapes.begin(), shapes.end(), [](const std::vector<int>& lengths) {
        return *std::max_element(lengths.begin(), lengths.end()) > 64;
      });
  ASSERT_EQ(several_tiles, 2);  // {128} and the long sequence
  const long long expected_launches = 2 * several_tiles * c.num_layers;
  EXPECT_EQ(PathStats(*got_engine).double_buffered_attention,
            dtype == DType::kFloat32 ? 0 : expected_launches);
  EXPECT_EQ(PathStats(*want_engine).double_buffered_attention, 0);
}

// The switches for two default choices that had no other escape: a fixed attention query
// tile (--cuda_attention_tile) and the LayerNorm without early parameter loads
// (--cuda_layer_norm_hoist_max_rows=0) compute the same bits as the defaults, eager, captured
// and replayed, and the tile reaches the kernel: a lone 5-token sequence gets the 16-row tile
// from the default rule, every launch gets the forced one.
TEST_P(CudaGraphTest, AttentionTileAndLayerNormSwitchesAreBitExact) {
  const DType dtype = GetParam();
  std::shared_ptr<const Model> model = TinyModel();
  ASSERT_NE(model, nullptr);
  const ModelConfig& c = model->config;
  const std::vector<std::vector<int>> shapes = {
      {5}, {128}, {5, 17, 33, 64}, {7, 7, 7, 7, 7, 7, 7, 7}};
  const CudaEngineOptions defaults = Untuned(Options(dtype, 1024));
  auto want_engine = CreateCudaEngine(model, defaults);
  ASSERT_TRUE(want_engine.ok()) << want_engine.status();
  struct Config {
    int tile;
    int hoist_max_rows;
  };
  for (const Config& config :
       {Config{64, 2048}, Config{32, 2048}, Config{16, 2048}, Config{0, 0}, Config{64, 0}}) {
    // fp32 has one attention kernel: a tile alone changes nothing there.
    if (dtype == DType::kFloat32 && config.hoist_max_rows == defaults.layer_norm_hoist_max_rows) {
      continue;
    }
    const std::string what = "attention tile " + std::to_string(config.tile) +
                             ", LayerNorm hoist up to " + std::to_string(config.hoist_max_rows);
    CudaEngineOptions changed = defaults;
    changed.attention_tile = config.tile;
    changed.layer_norm_hoist_max_rows = config.hoist_max_rows;
    auto got_engine = CreateCudaEngine(model, changed);
    ASSERT_TRUE(got_engine.ok()) << what << ": " << got_engine.status();
    std::mt19937 rng(93);
    ExpectSameOutputsOnShapes(want_engine->get(), got_engine->get(), c, shapes, EveryLayer(c), rng,
                              what);
    const CudaGraphStats stats = dynamic_cast<CudaEngineTiming*>(got_engine->get())->graph_stats();
    EXPECT_EQ(stats.capture_failures, 0) << what << ": " << stats.last_capture_error;
    const CudaPathStats got = PathStats(*got_engine);
    const long long* tiles = got.attention_tiles;
    if (dtype == DType::kFloat32) {  // one kernel, no tiles to choose
      EXPECT_EQ(tiles[0] + tiles[1] + tiles[2], 0) << what;
      continue;
    }
    // Each shape is enqueued twice (eager, then captured; replays enqueue nothing), with one
    // attention launch per layer.
    const long long launches = 2 * static_cast<long long>(shapes.size()) * c.num_layers;
    EXPECT_EQ(tiles[0] + tiles[1] + tiles[2], launches) << what;
    if (config.tile != 0) {
      EXPECT_EQ(tiles[config.tile / 32], launches) << what;  // 16, 32, 64 rows: 0, 1, 2
    } else {
      EXPECT_GT(tiles[0], 0) << what;  // the lone 5-token sequence
    }
  }
  if (dtype != DType::kFloat32) {
    EXPECT_GT(PathStats(*want_engine).attention_tiles[0], 0);  // the default rule
  }
}

TEST_P(CudaGraphTest, CapturesOnlyUpToMaxGraphRows) {
  const DType dtype = GetParam();
  std::shared_ptr<const Model> model = TinyModel();
  ASSERT_NE(model, nullptr);
  CudaEngineOptions options = Options(dtype, 1024, true);
  options.max_graph_rows = 100;
  auto engine = CreateCudaEngine(model, options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto* timing = dynamic_cast<CudaEngineTiming*>(engine->get());
  OutputSelection sel;
  sel.pooled = true;
  std::mt19937 rng(5);
  const EncoderBatch big = ShapedBatch(model->config, {60, 41}, 0, rng);    // 101 rows
  const EncoderBatch small = ShapedBatch(model->config, {60, 40}, 0, rng);  // 100 rows
  EncoderOutput first, out;
  ASSERT_TRUE((*engine)->Encode(big, sel, &first).ok());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE((*engine)->Encode(big, sel, &out).ok());
    ExpectSameOutputs(out, first, "101 rows, run " + std::to_string(i));
  }
  CudaGraphStats s = timing->graph_stats();
  EXPECT_EQ(s.eager_runs, 4);
  EXPECT_EQ(s.captures, 0);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE((*engine)->Encode(small, sel, &out).ok());
  s = timing->graph_stats();
  EXPECT_EQ(s.eager_runs, 5);
  EXPECT_EQ(s.captures, 1);
  EXPECT_EQ(s.replays, 1);
}

// Every way a graph can fail (CUDA refusing the capture, the forward failing inside it after
// the copy stream forked, CUDA invalidating it, a cached graph's launch refused) falls back to
// an eager run of the same batch, bit-exact; the key then runs eagerly for good, and those
// runs succeed (a stream left capturing would fail their copies).
TEST_P(CudaGraphTest, FailedGraphsFallBackToEagerRunsBitExact) {
  const DType dtype = GetParam();
  std::shared_ptr<const Model> model = TinyModel();
  ASSERT_NE(model, nullptr);
  const ModelConfig& c = model->config;
  auto eager = CreateCudaEngine(model, Untuned(Options(dtype, 1024, /*cuda_graphs=*/false)));
  ASSERT_TRUE(eager.ok()) << eager.status();
  const OutputSelection sel = EveryLayer(c);
  using Fault = CudaEngineOptions::Testing::GraphFault;
  const std::pair<Fault, const char*> faults[] = {{Fault::kBeginCapture, "begin capture"},
                                                  {Fault::kAfterFork, "error after fork"},
                                                  {Fault::kInvalidate, "invalidated capture"},
                                                  {Fault::kFirstLaunch, "first launch refused"},
                                                  {Fault::kReplay, "replay refused"}};
  for (const auto& [fault, name] : faults) {
    CudaEngineOptions options = Untuned(Options(dtype, 1024, /*cuda_graphs=*/true));
    options.testing.graph_fault = fault;
    auto faulty = CreateCudaEngine(model, options);
    ASSERT_TRUE(faulty.ok()) << name << ": " << faulty.status();
    auto* timing = dynamic_cast<CudaEngineTiming*>(faulty->get());
    ASSERT_NE(timing, nullptr);
    std::mt19937 rng(7);
    for (int run = 0; run < 5; ++run) {
      const EncoderBatch batch = ShapedBatch(c, {9, 30, 64}, 0, rng);
      EncoderOutput want, got;
      ASSERT_TRUE((*eager)->Encode(batch, sel, &want).ok());
      const absl::Status st = (*faulty)->Encode(batch, sel, &got);
      ASSERT_TRUE(st.ok()) << name << " run " << run << ": " << st;
      ExpectSameOutputs(got, want, std::string(name) + " run " + std::to_string(run));
    }
    const CudaGraphStats s = timing->graph_stats();
    std::printf("%s %s: eager %lld captures %lld replays %lld failures %lld (%s)\n",
                ShortName(dtype), name, s.eager_runs, s.captures, s.replays, s.capture_failures,
                s.last_capture_error.c_str());
    // Run 0 is a first sight; the graph fails at run 1 (at run 2, its first replay, for
    // kReplay); every run after that is eager. kFirstLaunch and kReplay fail after a capture.
    EXPECT_EQ(s.capture_failures, 1) << name;
    EXPECT_FALSE(s.last_capture_error.empty()) << name;
    EXPECT_EQ(s.captures, fault == Fault::kReplay || fault == Fault::kFirstLaunch ? 1 : 0) << name;
    EXPECT_EQ(s.replays, 0) << name;
    EXPECT_EQ(s.cached, 0) << name;
    EXPECT_EQ(s.eager_runs, fault == Fault::kReplay ? 4 : 5) << name;
    // What bert_server exports (bert_engine_fallbacks_total) and logs.
    const std::vector<EngineFallback> fallbacks = (*faulty)->Fallbacks();
    ASSERT_FALSE(fallbacks.empty()) << name;
    EXPECT_EQ(fallbacks[0].path, "cuda_graph") << name;
    EXPECT_EQ(fallbacks[0].count, 1) << name;
    EXPECT_EQ(fallbacks[0].detail, s.last_capture_error) << name;
    EXPECT_EQ(fallbacks[0].avoid, "--cuda_graphs=false") << name;
  }
}

// A device error that is not sticky (a refused launch) fails its batch only: Health() stays
// OK and the next batch gives the same outputs as a clean engine's.
TEST(CudaEngineFault, RefusedLaunchLeavesTheEngineHealthy) {
  if (SkipWithoutGpu()) GTEST_SKIP() << kNoGpu;
  std::shared_ptr<const Model> model = TinyModel();
  ASSERT_NE(model, nullptr);
  CudaEngineOptions options = Untuned(Options(DType::kFloat16, 1024, /*cuda_graphs=*/false));
  auto clean = CreateCudaEngine(model, options);
  options.testing.device_fault = CudaEngineOptions::Testing::DeviceFault::kRefusedLaunch;
  auto refused = CreateCudaEngine(model, options);
  ASSERT_TRUE(clean.ok()) << clean.status();
  ASSERT_TRUE(refused.ok()) << refused.status();
  std::mt19937 rng(4);
  const EncoderBatch batch = ShapedBatch(model->config, {12, 20}, 0, rng);
  const OutputSelection sel = EveryLayer(model->config);
  EncoderOutput want, got;
  ASSERT_TRUE((*clean)->Encode(batch, sel, &want).ok());
  const absl::Status first = (*refused)->Encode(batch, sel, &got);
  EXPECT_EQ(first.code(), absl::StatusCode::kInternal) << first;
  EXPECT_TRUE((*refused)->Health().ok()) << (*refused)->Health();
  const absl::Status second = (*refused)->Encode(batch, sel, &got);
  ASSERT_TRUE(second.ok()) << second;
  ExpectSameOutputs(got, want, "after a refused launch");
}

// A kernel fault that leaves the GPU context unusable: the batch fails, Health() reports it
// from then on, and later batches fail at once with UNAVAILABLE (the server then stops
// serving and exits). The fault ends every later CUDA test of the process, so this runs only
// when asked to (BERT_STICKY_FAULT_TEST=1), in a process of its own (tools/gpu_check.sh).
TEST(CudaEngineFault, StickyFaultMarksTheEngineUnusable) {
  if (SkipWithoutGpu()) GTEST_SKIP() << kNoGpu;
  const char* wanted = std::getenv("BERT_STICKY_FAULT_TEST");
  if (wanted == nullptr || std::string(wanted) != "1") {
    GTEST_SKIP() << "breaks the process's CUDA context: set BERT_STICKY_FAULT_TEST=1";
  }
  std::shared_ptr<const Model> model = TinyModel();
  ASSERT_NE(model, nullptr);
  CudaEngineOptions options = Options(DType::kFloat16, 1024, /*cuda_graphs=*/false);
  options.testing.device_fault = CudaEngineOptions::Testing::DeviceFault::kTrap;
  auto engine = CreateCudaEngine(model, options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_TRUE((*engine)->Health().ok());
  std::mt19937 rng(3);
  const EncoderBatch batch = ShapedBatch(model->config, {12, 20}, 0, rng);
  OutputSelection sel;
  sel.pooled = true;
  EncoderOutput out;
  const absl::Status first = (*engine)->Encode(batch, sel, &out);
  EXPECT_FALSE(first.ok());
  const absl::Status health = (*engine)->Health();
  std::printf("first batch: %s\nhealth: %s\n", first.ToString().c_str(), health.ToString().c_str());
  EXPECT_EQ(health.code(), absl::StatusCode::kUnavailable) << health;
  const absl::Status later = (*engine)->Encode(batch, sel, &out);
  EXPECT_EQ(later, health);
  EXPECT_TRUE(out.pooled.empty());
}

INSTANTIATE_TEST_SUITE_P(DTypes, CudaGraphTest,
                         ::testing::Values(DType::kFloat32, DType::kFloat16, DType::kBFloat16),
                         [](const auto& info) { return std::string(ShortName(info.param)); });

#endif  // BERT_WITH_CUDA

}  // namespace
}  // namespace bert
