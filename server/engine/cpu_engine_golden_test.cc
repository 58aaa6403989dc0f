// The CPU engine against Hugging Face's outputs (tests/golden): every tensor (and the cls
// head against the reference's first rows), padded rows included, within 1e-5 relative, on 1 and 2
// threads, with every GEMM this CPU runs (the packed kernel's versions, OpenBLAS sgemm).
// `embedding_output` is not an engine head and is skipped.
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/test_util.h"
#include "server/engine/cpu_engine.h"
#include "server/engine/golden_fixture.h"

namespace bert {
namespace {

using cpu::testing::RelativeError;

class GoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenTest, MatchesReferenceOnEveryTensor) {
  auto fixture = LoadGoldenFixture(GetParam());
  ASSERT_TRUE(fixture.ok()) << fixture.status();
  const ModelConfig& c = fixture->model->config;
  const EncoderBatch& batch = fixture->batch;
  const OutputSelection& sel = fixture->selection;
  SafetensorsFile& expected = fixture->expected;

  std::vector<std::pair<int, std::string>> runs = {{1, "auto"}, {2, "auto"}};
  if (cpu::LinearIsaAvailable(cpu::LinearIsa::kAvx2)) runs.push_back({2, "avx2"});
  runs.push_back({2, "portable"});
  runs.push_back({2, "openblas"});
  for (const auto& [threads, gemm] : runs) {
    CpuEngineOptions opts;
    opts.threads = threads;
    opts.gemm = gemm;
    auto engine = CpuEngine::Create(fixture->model, opts);
    ASSERT_TRUE(engine.ok()) << engine.status();
    EncoderOutput out;
    ASSERT_TRUE((*engine)->Encode(batch, sel, &out).ok());

    auto check = [&](const std::string& name, const std::vector<float>& got) {
      std::vector<int64_t> ref_shape;
      auto ref = expected.ReadFloat32(name, &ref_shape);
      ASSERT_TRUE(ref.ok()) << ref.status();
      ASSERT_EQ(got.size(), ref->size()) << name;
      const double err = RelativeError(got, *ref);
      EXPECT_LE(err, 1e-5) << name << " threads=" << threads << " gemm=" << gemm;
      if (name == "sequence_output" || name == "pooled_output") {
        std::printf("%s %s threads=%d gemm=%s relative error %.3g\n", GetParam().c_str(),
                    name.c_str(), threads, gemm.c_str(), err);
      }
    };
    check("sequence_output", out.sequence);
    check("pooled_output", out.pooled);
    // The cls head: the reference's last layer at each sequence's first row.
    std::vector<int64_t> shape;
    auto ref_sequence = expected.ReadFloat32("sequence_output", &shape);
    ASSERT_TRUE(ref_sequence.ok()) << ref_sequence.status();
    const size_t h = static_cast<size_t>(c.hidden_size);
    std::vector<float> ref_cls;
    for (int s = 0; s < batch.num_sequences(); ++s) {
      const auto first = ref_sequence->begin() + static_cast<size_t>(batch.cu_rows[s]) * h;
      ref_cls.insert(ref_cls.end(), first, first + h);
    }
    ASSERT_EQ(out.cls.size(), ref_cls.size());
    EXPECT_LE(RelativeError(out.cls, ref_cls), 1e-5)
        << "cls threads=" << threads << " gemm=" << gemm;
    ASSERT_EQ(out.layers.size(), static_cast<size_t>(c.num_layers));
    for (int l = 0; l < c.num_layers; ++l) {
      check("encoder_outputs." + std::to_string(l), out.layers[l]);
    }
  }
}

// The AMX GEMM (bfloat16 products, float32 sums; the rest of the engine in float32): every
// tensor within bfloat16's tolerance of the reference (tests/golden/README.md: about 1e-2),
// and not within float32's (so the bfloat16 kernel ran); the same bits on 1 and 2 threads.
TEST_P(GoldenTest, AmxBf16MatchesReferenceWithinBfloat16) {
  if (!cpu::LinearIsaAvailable(cpu::LinearIsa::kAmxBf16)) {
    GTEST_SKIP() << cpu::AmxBf16Unavailable();
  }
  auto fixture = LoadGoldenFixture(GetParam());
  ASSERT_TRUE(fixture.ok()) << fixture.status();
  const ModelConfig& c = fixture->model->config;
  std::vector<EncoderOutput> outs(2);
  for (int threads : {1, 2}) {
    CpuEngineOptions opts;
    opts.threads = threads;
    opts.gemm = "amx_bf16";
    auto engine = CpuEngine::Create(fixture->model, opts);
    ASSERT_TRUE(engine.ok()) << engine.status();
    EXPECT_EQ((*engine)->info().dtype, DType::kBFloat16);
    ASSERT_TRUE((*engine)->Encode(fixture->batch, fixture->selection, &outs[threads - 1]).ok());
  }
  const EncoderOutput& out = outs[0];
  EXPECT_EQ(outs[1].sequence, out.sequence);
  EXPECT_EQ(outs[1].pooled, out.pooled);
  auto check = [&](const std::string& name, const std::vector<float>& got) {
    std::vector<int64_t> shape;
    auto ref = fixture->expected.ReadFloat32(name, &shape);
    ASSERT_TRUE(ref.ok()) << ref.status();
    ASSERT_EQ(got.size(), ref->size()) << name;
    const double err = RelativeError(got, *ref);
    EXPECT_LE(err, 1e-2) << name;
    EXPECT_GT(err, 1e-5) << name << ": float32's precision, not bfloat16's";
    if (name == "sequence_output" || name == "pooled_output") {
      std::printf("%s %s gemm=amx_bf16 relative error %.3g\n", GetParam().c_str(), name.c_str(),
                  err);
    }
  };
  check("sequence_output", out.sequence);
  check("pooled_output", out.pooled);
  for (int l = 0; l < c.num_layers; ++l) {
    check("encoder_outputs." + std::to_string(l), out.layers[l]);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, GoldenTest, ::testing::Values("tiny-l4-h128", "tiny-l12-h64-s128"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& ch : name)
                             if (ch == '-') ch = '_';
                           return name;
                         });

}  // namespace
}  // namespace bert
