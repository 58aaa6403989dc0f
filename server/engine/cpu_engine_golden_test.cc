// The CPU engine against Hugging Face's outputs (tests/golden): every tensor, padded rows
// included, within 1e-5 relative. `embedding_output` is not an engine head and is skipped.
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "server/engine/cpu_engine.h"
#include "server/engine/model.h"
#include "server/engine/safetensors.h"

namespace bert {
namespace {

double RelativeError(const std::vector<float>& out, const std::vector<float>& ref) {
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    diff += (static_cast<double>(out[i]) - ref[i]) * (static_cast<double>(out[i]) - ref[i]);
    norm += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(diff) / std::sqrt(norm);
}

class GoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenTest, MatchesReferenceOnEveryTensor) {
  const std::string dir = "tests/golden/" + GetParam();
  auto model = LoadModel(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  auto shared = std::make_shared<const Model>(std::move(model).value());
  const ModelConfig& c = shared->config;
  auto expected = SafetensorsFile::Open(dir + "/expected.safetensors");
  ASSERT_TRUE(expected.ok()) << expected.status();

  std::vector<int64_t> shape;
  auto words = expected->ReadInt32("input_word_ids", &shape);
  auto mask = expected->ReadInt32("input_mask", nullptr);
  auto types = expected->ReadInt32("input_type_ids", nullptr);
  ASSERT_TRUE(words.ok() && mask.ok() && types.ok());
  ASSERT_EQ(shape.size(), 2u);
  const int b = shape[0], s = shape[1];

  EncoderBatch batch;
  for (int i = 0; i < b; ++i) {
    int valid = 0;
    while (valid < s && (*mask)[i * s + valid] == 1) ++valid;
    batch.Add(absl::MakeConstSpan(words->data() + i * s, valid),
              absl::MakeConstSpan(types->data() + i * s, valid), s);
    // The padding rows carry word/type id 0 in the fixture, as Add fills them.
    for (int j = valid; j < s; ++j) ASSERT_EQ((*words)[i * s + j], 0);
  }
  OutputSelection sel;
  sel.pooled = true;
  sel.sequence = true;
  for (int l = 0; l < c.num_layers; ++l) sel.layers.push_back(l);

  for (int threads : {1, 2}) {
    CpuEngineOptions opts;
    opts.threads = threads;
    auto engine = CpuEngine::Create(shared, opts);
    ASSERT_TRUE(engine.ok()) << engine.status();
    EncoderOutput out;
    ASSERT_TRUE((*engine)->Encode(batch, sel, &out).ok());

    auto check = [&](const std::string& name, const std::vector<float>& got) {
      std::vector<int64_t> ref_shape;
      auto ref = expected->ReadFloat32(name, &ref_shape);
      ASSERT_TRUE(ref.ok()) << ref.status();
      ASSERT_EQ(got.size(), ref->size()) << name;
      const double err = RelativeError(got, *ref);
      EXPECT_LE(err, 1e-5) << name << " threads=" << threads;
      if (name == "sequence_output" || name == "pooled_output") {
        std::printf("%s %s threads=%d relative error %.3g\n", GetParam().c_str(), name.c_str(),
                    threads, err);
      }
    };
    check("sequence_output", out.sequence);
    check("pooled_output", out.pooled);
    ASSERT_EQ(out.layers.size(), static_cast<size_t>(c.num_layers));
    for (int l = 0; l < c.num_layers; ++l) {
      check("encoder_outputs." + std::to_string(l), out.layers[l]);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, GoldenTest,
                         ::testing::Values("tiny-l4-h128", "tiny-l12-h64-s128"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& ch : name) if (ch == '-') ch = '_';
                           return name;
                         });

}  // namespace
}  // namespace bert
