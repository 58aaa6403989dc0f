// Model loading: the golden checkpoints load, name variants and dtypes are accepted, and every
// defect is a clear error naming the file and tensor (never a crash).
#include "server/engine/model.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"
#include "server/engine/model_writer.h"
#include "server/engine/safetensors.h"

namespace bert {
namespace {

namespace fs = std::filesystem;

const char kGolden[] = "tests/golden/tiny-l4-h128";

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), bytes.size());
}

// A scratch model directory under TEST_TMPDIR holding a copy of the golden config.
class ModelDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    dir_ = fs::path(tmp ? tmp : "/tmp") /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    fs::copy_file(std::string(kGolden) + "/config.json", dir_ / "config.json");
    auto golden = SafetensorsFile::Open(std::string(kGolden) + "/model.safetensors");
    ASSERT_TRUE(golden.ok()) << golden.status();
    golden_ = std::make_unique<SafetensorsFile>(std::move(golden).value());
  }

  std::string dir() const { return dir_.string(); }
  std::string weights() const { return (dir_ / "model.safetensors").string(); }

  // Writes model.safetensors from the golden tensors, letting `edit` rename (empty name:
  // drop) or change each one.
  void WriteWeights(
      const std::function<void(std::string* name, std::string* dtype, std::vector<int64_t>* shape,
                               std::vector<uint8_t>* bytes)>& edit,
      SafetensorsWriter* extra = nullptr) {
    SafetensorsWriter w = extra ? *extra : SafetensorsWriter();
    for (const auto& [name, view] : golden_->tensors()) {
      std::string n = name, dtype = view.dtype;
      std::vector<int64_t> shape = view.shape;
      std::vector<uint8_t> bytes(view.data, view.data + view.nbytes);
      if (edit) edit(&n, &dtype, &shape, &bytes);
      if (!n.empty()) w.AddRaw(n, dtype, shape, bytes);
    }
    ASSERT_TRUE(w.Write(weights()).ok());
  }

  void SetConfig(const std::string& key, const std::string& json_value) {
    std::string text = ReadAll(std::string(kGolden) + "/config.json");
    const size_t at = text.find("\"" + key + "\"");
    ASSERT_NE(at, std::string::npos);
    const size_t colon = text.find(':', at);
    const size_t end = text.find_first_of(",}", colon);
    text = text.substr(0, colon + 1) + " " + json_value + text.substr(end);
    WriteAll((dir_ / "config.json").string(), text);
  }

  // Expects LoadModel to fail with every one of `needles` in the message.
  void ExpectError(std::initializer_list<std::string> needles) {
    auto model = LoadModel(dir());
    ASSERT_FALSE(model.ok());
    const std::string message(model.status().message());
    for (const std::string& needle : needles) {
      EXPECT_TRUE(absl::StrContains(message, needle)) << "'" << needle << "' not in: " << message;
    }
  }

  fs::path dir_;
  std::unique_ptr<SafetensorsFile> golden_;
};

std::vector<float> Floats(const SafetensorsFile& f, const std::string& name) {
  auto v = f.ReadFloat32(name, nullptr);
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *v : std::vector<float>();
}

TEST(LoadModelTest, GoldenModelLoadsWithFusedQkv) {
  auto model = LoadModel(kGolden);
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelConfig& c = model->config;
  EXPECT_EQ(c.num_layers, 4);
  EXPECT_EQ(c.hidden_size, 128);
  EXPECT_EQ(c.num_heads, 2);
  EXPECT_EQ(c.intermediate_size, 512);
  EXPECT_EQ(c.vocab_size, 1024);
  EXPECT_EQ(c.activation, Activation::kGeluErf);
  EXPECT_FLOAT_EQ(c.layer_norm_eps, 1e-12f);
  EXPECT_EQ(model->name, "tiny-l4-h128");
  EXPECT_TRUE(model->weights.has_pooler);
  ASSERT_EQ(model->weights.layers.size(), 4u);

  auto file = SafetensorsFile::Open(std::string(kGolden) + "/model.safetensors");
  ASSERT_TRUE(file.ok());
  const LayerWeights& l2 = model->weights.layers[2];
  EXPECT_EQ(l2.qkv_weight.shape, (std::vector<int64_t>{384, 128}));
  std::vector<float> expected;
  for (const char* part : {"query", "key", "value"}) {
    auto v = Floats(*file, std::string("encoder.layer.2.attention.self.") + part + ".weight");
    expected.insert(expected.end(), v.begin(), v.end());
  }
  EXPECT_EQ(l2.qkv_weight.data, expected);
  expected.clear();
  for (const char* part : {"query", "key", "value"}) {
    auto v = Floats(*file, std::string("encoder.layer.2.attention.self.") + part + ".bias");
    expected.insert(expected.end(), v.begin(), v.end());
  }
  EXPECT_EQ(l2.qkv_bias.data, expected);
  EXPECT_EQ(model->weights.pooler_weight.data, Floats(*file, "pooler.dense.weight"));
}

TEST_F(ModelDirTest, BertPrefixGammaBetaAndExtraHeadsAccepted) {
  SafetensorsWriter extra;
  extra.AddFloat32("cls.predictions.bias", {1024}, std::vector<float>(1024, 0.5f));
  std::vector<uint8_t> ids(512 * 8, 0);
  extra.AddRaw("bert.embeddings.position_ids", "I64", {1, 512}, ids);
  WriteWeights(
      [](std::string* name, std::string*, std::vector<int64_t>*, std::vector<uint8_t>*) {
        std::string n = "bert." + *name;
        if (absl::EndsWith(n, "LayerNorm.weight")) n = n.substr(0, n.size() - 6) + "gamma";
        if (absl::EndsWith(n, "LayerNorm.bias")) n = n.substr(0, n.size() - 4) + "beta";
        *name = n;
      },
      &extra);
  auto model = LoadModel(dir());
  ASSERT_TRUE(model.ok()) << model.status();
  auto golden = LoadModel(kGolden);
  ASSERT_TRUE(golden.ok());
  EXPECT_EQ(model->weights.layers[3].output_norm_gamma.data,
            golden->weights.layers[3].output_norm_gamma.data);
  EXPECT_EQ(model->weights.word_embeddings.data, golden->weights.word_embeddings.data);
}

uint16_t FloatToHalfBits(float f) {
  // Round half up to float16 (no overflow handling: weights are small).
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  int exp = static_cast<int>((x >> 23) & 0xff) - 127 + 15;
  uint32_t mant = x & 0x7fffffu;
  if (exp <= 0) {  // float16 subnormal (or zero), rounded to nearest
    if (exp < -10) return static_cast<uint16_t>(sign);
    const uint32_t m = mant | 0x800000u;
    const int shift = 14 - exp;
    uint32_t h = sign | (m >> shift);
    if ((m >> (shift - 1)) & 1u) ++h;
    return static_cast<uint16_t>(h);
  }
  uint32_t h = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  if (mant & 0x1000u) ++h;
  return static_cast<uint16_t>(h);
}

class DTypeTest : public ModelDirTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(DTypeTest, HalfPrecisionWeightsConvertToFloat32) {
  const std::string dtype_name = GetParam();
  WriteWeights(
      [&](std::string*, std::string* dtype, std::vector<int64_t>*, std::vector<uint8_t>* bytes) {
        std::vector<uint8_t> out(bytes->size() / 2);
        for (size_t i = 0; i < bytes->size() / 4; ++i) {
          float f;
          std::memcpy(&f, bytes->data() + 4 * i, 4);
          uint32_t bits;
          std::memcpy(&bits, &f, 4);
          const uint16_t h = dtype_name == "F16" ? FloatToHalfBits(f)
                                                 : static_cast<uint16_t>((bits + 0x8000u) >> 16);
          std::memcpy(out.data() + 2 * i, &h, 2);
        }
        *dtype = dtype_name;
        *bytes = std::move(out);
      });
  auto model = LoadModel(dir());
  ASSERT_TRUE(model.ok()) << model.status();
  auto golden = LoadModel(kGolden);
  ASSERT_TRUE(golden.ok());
  const auto& got = model->weights.layers[1].intermediate_weight.data;
  const auto& want = golden->weights.layers[1].intermediate_weight.data;
  ASSERT_EQ(got.size(), want.size());
  const double tol = dtype_name == "F16" ? 1e-3 : 8e-3;  // relative, per element
  bool changed = false;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], std::abs(want[i]) * tol + 1e-6) << i;
    changed |= got[i] != want[i];
  }
  EXPECT_TRUE(changed) << "the half-precision file should round some weights";
}

INSTANTIATE_TEST_SUITE_P(HalfTypes, DTypeTest, ::testing::Values("F16", "BF16"));

TEST(HalfConversionTest, KnownValues) {
  EXPECT_EQ(HalfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xc000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(HalfToFloat(0x0200), std::ldexp(1.0f, -15));
  EXPECT_TRUE(std::isinf(HalfToFloat(0x7c00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7e00)));
  EXPECT_EQ(BFloat16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(BFloat16ToFloat(0xc040), -3.0f);
}

TEST_F(ModelDirTest, MissingPoolerIsNotAnError) {
  WriteWeights([](std::string* name, std::string*, std::vector<int64_t>*, std::vector<uint8_t>*) {
    if (absl::StartsWith(*name, "pooler.")) name->clear();
  });
  auto model = LoadModel(dir());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_FALSE(model->weights.has_pooler);
}

TEST_F(ModelDirTest, HalfAPoolerIsAnError) {
  WriteWeights([](std::string* name, std::string*, std::vector<int64_t>*, std::vector<uint8_t>*) {
    if (*name == "pooler.dense.bias") name->clear();
  });
  ExpectError({"model.safetensors", "pooler.dense.bias", "missing"});
}

// A BertForSequenceClassification checkpoint: the encoder under "bert.", the classifier
// beside it, config.json naming the labels.
class ClassifierTest : public ModelDirTest {
 protected:
  // Writes the golden encoder with the "bert." prefix and a classifier of `labels` rows
  // (weight i * 0.01 + j * 0.001 at [i][j], bias -i), then config.json with `config_extra`
  // (members of its top-level object, e.g. an id2label) added.
  void WriteClassifier(int labels, const std::string& config_extra, bool with_bias = true,
                       bool with_pooler = true) {
    SafetensorsWriter extra;
    std::vector<float> weight(labels * 128), bias(labels);
    for (int i = 0; i < labels; ++i) {
      for (int j = 0; j < 128; ++j) weight[i * 128 + j] = i * 0.01f + j * 0.001f;
      bias[i] = -i;
    }
    extra.AddFloat32("classifier.weight", {labels, 128}, weight);
    if (with_bias) extra.AddFloat32("classifier.bias", {labels}, bias);
    WriteWeights(
        [&](std::string* name, std::string*, std::vector<int64_t>*, std::vector<uint8_t>*) {
          *name = with_pooler || !absl::StartsWith(*name, "pooler.") ? "bert." + *name : "";
        },
        &extra);
    std::string text = ReadAll(std::string(kGolden) + "/config.json");
    if (!config_extra.empty()) text.insert(text.find('{') + 1, config_extra + ",");
    WriteAll((dir_ / "config.json").string(), text);
  }
};

TEST_F(ClassifierTest, LabelsFromId2LabelAndTheProblemType) {
  WriteClassifier(3,
                  R"("id2label": {"2": "neutral", "0": "negative", "1": "positive"},
                     "architectures": ["BertForSequenceClassification"],
                     "problem_type": "single_label_classification")");
  WriteAll((dir_ / "tokenizer_config.json").string(), R"({"model_max_length": 256})");
  auto model = LoadModel(dir());
  ASSERT_TRUE(model.ok()) << model.status();
  const Classifier& c = model->classifier;
  ASSERT_TRUE(c.present());
  EXPECT_EQ(c.num_labels(), 3);
  EXPECT_EQ(c.labels, (std::vector<std::string>{"negative", "positive", "neutral"}));
  EXPECT_EQ(c.problem_type, "single_label_classification");
  EXPECT_EQ(c.activation_function, "");
  EXPECT_EQ(c.max_seq_length, 256);
  EXPECT_EQ(c.weight.shape, (std::vector<int64_t>{3, 128}));
  EXPECT_FLOAT_EQ(c.weight.data[2 * 128 + 5], 0.02f + 0.005f);
  EXPECT_EQ(c.bias.data, (std::vector<float>{0, -1, -2}));
  // The encoder under the prefix is the golden one.
  auto golden = LoadModel(kGolden);
  ASSERT_TRUE(golden.ok());
  EXPECT_EQ(model->weights.pooler_weight.data, golden->weights.pooler_weight.data);
  EXPECT_FALSE(golden->classifier.present());
}

TEST(ClassifierApplyTest, ApplyToRowsIsApplyOnEachRow) {
  // 13 wide: eight partial sums and a remainder.
  Classifier c;
  const int hidden = 13, labels = 3, rows = 4;
  c.weight.shape = {labels, hidden};
  for (int i = 0; i < labels * hidden; ++i) c.weight.data.push_back(0.1f * ((i * 7) % 11) - 0.5f);
  c.bias.data = {0.25f, -1.0f, 3.0f};
  std::vector<float> x(rows * hidden);
  for (int i = 0; i < rows * hidden; ++i) x[i] = 0.01f * ((i * 13) % 29) - 0.1f;
  std::vector<float> rows_out(rows * labels);
  c.ApplyToRows(x.data(), rows, hidden, rows_out.data());
  for (int r = 0; r < rows; ++r) {
    float one[labels];
    c.Apply(x.data() + r * hidden, hidden, one);
    for (int l = 0; l < labels; ++l) EXPECT_NEAR(rows_out[r * labels + l], one[l], 1e-5) << r;
  }
}

TEST_F(ClassifierTest, OneLabelWithoutId2LabelIsLabel0) {
  WriteClassifier(1, "");
  auto model = LoadModel(dir());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->classifier.labels, std::vector<std::string>{"LABEL_0"});
  EXPECT_EQ(model->classifier.problem_type, "");
  EXPECT_EQ(model->classifier.max_seq_length, 512);  // no tokenizer_config.json: the positions
  // ReleaseLinearWeights keeps it: the server computes it after the engine.
  ReleaseLinearWeights(&*model);
  EXPECT_EQ(model->classifier.weight.data.size(), 128u);
}

TEST_F(ClassifierTest, DefectsAreErrorsNamingTheFile) {
  WriteClassifier(2, R"("id2label": {"0": "a"})");
  ExpectError({"config.json", "id2label", "1 labels", "2 rows"});
  WriteClassifier(2, R"("id2label": {"0": "a", "0x": "b"})");
  ExpectError({"config.json", "id2label", "\"0x\""});
  WriteClassifier(2, R"("id2label": {"0": "a", "2": "b"})");
  ExpectError({"config.json", "id2label", "\"2\"", "0 .. 1"});
  WriteClassifier(2, R"("id2label": ["a", "b"])");
  ExpectError({"config.json", "id2label", "must be an object"});
  WriteClassifier(2, R"("problem_type": 3)");
  ExpectError({"config.json", "problem_type", "3 is not regression"});
  WriteClassifier(2, R"("problem_type": "multi_label")");
  ExpectError({"config.json", "problem_type", "multi_label is not"});
  WriteClassifier(2, R"("architectures": ["BertForSequenceClassification"])", true,
                  /*with_pooler=*/false);
  ExpectError({"model.safetensors", "sequence-classification", "no pooler"});
  WriteClassifier(2, "", /*with_bias=*/false);
  ExpectError({"model.safetensors", "classifier.bias", "missing"});
}

TEST_F(ClassifierTest, MisshapenOrWithoutPooler) {
  SafetensorsWriter extra;
  extra.AddFloat32("classifier.weight", {2, 64}, std::vector<float>(128, 0.0f));
  extra.AddFloat32("classifier.bias", {2}, std::vector<float>(2, 0.0f));
  WriteWeights(nullptr, &extra);
  ExpectError({"model.safetensors", "classifier.weight", "[2, 64]", "[num_labels, 128]"});
  SafetensorsWriter again;
  again.AddFloat32("classifier.weight", {2, 128}, std::vector<float>(256, 0.0f));
  again.AddFloat32("classifier.bias", {2}, std::vector<float>(2, 0.0f));
  WriteWeights(
      [](std::string* name, std::string*, std::vector<int64_t>*, std::vector<uint8_t>*) {
        if (absl::StartsWith(*name, "pooler.")) name->clear();
      },
      &again);
  auto model = LoadModel(dir());  // no architectures, no pooler: token classification, likely
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_FALSE(model->classifier.present());
}

TEST_F(ClassifierTest, TokenClassifiersWithOrWithoutAPooler) {
  for (const bool pooler : {true, false}) {
    WriteClassifier(3, R"("architectures": ["BertForTokenClassification"],
                          "id2label": {"0": "O", "1": "B-PER", "2": "I-PER"})",
                    true, pooler);
    auto model = LoadModel(dir());
    ASSERT_TRUE(model.ok()) << model.status();
    const Classifier& c = model->classifier;
    ASSERT_TRUE(c.present()) << pooler;
    EXPECT_TRUE(c.per_token);
    EXPECT_EQ(c.labels, (std::vector<std::string>{"O", "B-PER", "I-PER"}));
    EXPECT_EQ(c.note, "");
    EXPECT_EQ(model->weights.has_pooler, pooler);
  }
  WriteClassifier(2, R"("architectures": ["BertForSequenceClassification"])");
  auto sequence = LoadModel(dir());
  ASSERT_TRUE(sequence.ok()) << sequence.status();
  EXPECT_FALSE(sequence->classifier.per_token);
}

TEST_F(ClassifierTest, MultipleChoiceCheckpointsServeTheirEncoder) {
  // Multiple choice: one logit per choice, meaningful only against the other choices.
  WriteClassifier(1, R"("architectures": ["BertForMultipleChoice"],
                        "id2label": {"0": "LABEL_0", "1": "LABEL_1"})");
  auto choice = LoadModel(dir());
  ASSERT_TRUE(choice.ok()) << choice.status();
  EXPECT_FALSE(choice->classifier.present());
  EXPECT_EQ(choice->classifier.note,
            "classifier.* not served: config.json's architectures is BertForMultipleChoice, "
            "neither a sequence nor a token classifier");
}

TEST_F(ClassifierTest, LabelsThatAreNotStringsTheActivationAndTheLength) {
  WriteClassifier(2, R"("id2label": {"0": 0, "1": true},
                        "sbert_ce_default_activation_function": "torch.nn.modules.linear.Identity")");
  WriteAll((dir_ / "tokenizer_config.json").string(),
           R"({"model_max_length": 1000000000000000019884624838656})");
  auto model = LoadModel(dir());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->classifier.labels, (std::vector<std::string>{"0", "true"}));
  EXPECT_EQ(model->classifier.activation_function, "torch.nn.modules.linear.Identity");
  EXPECT_EQ(model->classifier.max_seq_length, 512);  // Hugging Face's "no limit": the positions
  // sentence-transformers 4's key wins over the older one.
  WriteClassifier(1, R"("sbert_ce_default_activation_function": "torch.nn.modules.linear.Identity",
                        "sentence_transformers": {"activation_fn":
                            "torch.nn.modules.activation.Sigmoid", "version": "4.1.0"})");
  WriteAll((dir_ / "tokenizer_config.json").string(), "not json");
  model = LoadModel(dir());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->classifier.activation_function, "torch.nn.modules.activation.Sigmoid");
  EXPECT_EQ(model->classifier.max_seq_length, 512);  // read leniently, as --lowercase=auto does
}

TEST_F(ModelDirTest, MissingDirectory) {
  auto model = LoadModel(dir() + "/nope");
  ASSERT_FALSE(model.ok());
  EXPECT_TRUE(absl::StrContains(model.status().message(), "config.json"));
}

TEST_F(ModelDirTest, MissingWeightsFile) { ExpectError({"model.safetensors", "cannot open"}); }

TEST_F(ModelDirTest, InvalidJson) {
  WriteAll(dir() + "/config.json", "{\"hidden_size\": 128,");
  WriteWeights(nullptr);
  ExpectError({"config.json", "invalid JSON"});
}

TEST_F(ModelDirTest, MissingConfigField) {
  WriteAll(dir() + "/config.json", "{\"hidden_size\": 128}");
  WriteWeights(nullptr);
  ExpectError({"config.json", "num_hidden_layers"});
}

TEST_F(ModelDirTest, NonIntegerConfigField) {
  SetConfig("num_attention_heads", "\"two\"");
  WriteWeights(nullptr);
  ExpectError({"config.json", "num_attention_heads"});
}

TEST_F(ModelDirTest, HeadsMustDivideHidden) {
  SetConfig("num_attention_heads", "3");
  WriteWeights(nullptr);
  ExpectError({"config.json", "multiple"});
}

TEST_F(ModelDirTest, UnsupportedActivation) {
  SetConfig("hidden_act", "\"relu\"");
  WriteWeights(nullptr);
  ExpectError({"config.json", "relu"});
}

TEST_F(ModelDirTest, TanhGeluVariantsAccepted) {
  WriteWeights(nullptr);
  for (const char* act : {"\"gelu_new\"", "\"gelu_pytorch_tanh\"", "\"gelu_fast\""}) {
    SetConfig("hidden_act", act);
    auto model = LoadModel(dir());
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_EQ(model->config.activation, Activation::kGeluTanh) << act;
  }
}

TEST_F(ModelDirTest, MissingTensor) {
  WriteWeights([](std::string* name, std::string*, std::vector<int64_t>*, std::vector<uint8_t>*) {
    if (*name == "encoder.layer.1.attention.self.key.weight") name->clear();
  });
  ExpectError({"model.safetensors", "encoder.layer.1.attention.self.key.weight", "missing"});
}

TEST_F(ModelDirTest, MisshapenTensor) {
  WriteWeights(
      [](std::string* name, std::string*, std::vector<int64_t>* shape, std::vector<uint8_t>*) {
        if (*name == "encoder.layer.0.intermediate.dense.weight") *shape = {128, 512};
      });
  ExpectError({"model.safetensors", "encoder.layer.0.intermediate.dense.weight", "[128, 512]",
               "[512, 128]"});
}

TEST_F(ModelDirTest, UnsupportedDType) {
  WriteWeights(
      [](std::string* name, std::string* dtype, std::vector<int64_t>*, std::vector<uint8_t>*) {
        if (*name == "embeddings.LayerNorm.weight") *dtype = "I32";
      });
  ExpectError({"model.safetensors", "embeddings.LayerNorm.weight", "I32"});
}

TEST_F(ModelDirTest, UnknownDType) {
  WriteWeights(
      [](std::string* name, std::string* dtype, std::vector<int64_t>*, std::vector<uint8_t>*) {
        if (*name == "pooler.dense.bias") *dtype = "Q4";
      });
  ExpectError({"model.safetensors", "pooler.dense.bias", "Q4"});
}

TEST_F(ModelDirTest, NonFiniteWeights) {
  WriteWeights(
      [](std::string* name, std::string*, std::vector<int64_t>*, std::vector<uint8_t>* bytes) {
        if (*name == "encoder.layer.3.output.dense.bias") {
          const float nan = std::nanf("");
          std::memcpy(bytes->data() + 8, &nan, 4);
        }
      });
  ExpectError({"model.safetensors", "encoder.layer.3.output.dense.bias", "NaN"});
}

TEST_F(ModelDirTest, TruncatedFile) {
  WriteWeights(nullptr);
  const std::string bytes = ReadAll(weights());
  WriteAll(weights(), bytes.substr(0, bytes.size() - 1000));
  ExpectError({"model.safetensors", "out of range"});
}

TEST_F(ModelDirTest, TruncatedInsideHeader) {
  WriteWeights(nullptr);
  WriteAll(weights(), ReadAll(weights()).substr(0, 100));
  ExpectError({"model.safetensors", "header"});
}

TEST_F(ModelDirTest, ShorterThanHeaderLength) {
  WriteAll(weights(), "abc");
  ExpectError({"model.safetensors", "truncated"});
}

TEST_F(ModelDirTest, CorruptHeaderJson) {
  WriteWeights(nullptr);
  std::string bytes = ReadAll(weights());
  bytes[8] = 'x';  // the header's opening brace
  WriteAll(weights(), bytes);
  ExpectError({"model.safetensors", "corrupt header"});
}

TEST_F(ModelDirTest, HugeHeaderLength) {
  WriteWeights(nullptr);
  std::string bytes = ReadAll(weights());
  const uint64_t huge = ~uint64_t{0} - 4;
  std::memcpy(bytes.data(), &huge, 8);
  WriteAll(weights(), bytes);
  ExpectError({"model.safetensors", "header length"});
}

// Rewrites one entry's data_offsets inside the header text, keeping its length.
void PatchOffsets(const std::string& path, const std::string& tensor, uint64_t begin,
                  uint64_t end) {
  std::string bytes = ReadAll(path);
  uint64_t header_len;
  std::memcpy(&header_len, bytes.data(), 8);
  std::string header = bytes.substr(8, header_len);
  const size_t at = header.find("\"" + tensor + "\"");
  ASSERT_NE(at, std::string::npos);
  const size_t open = header.find("\"data_offsets\":[", at) + 16;
  const size_t close = header.find(']', open);
  header.replace(open, close - open, std::to_string(begin) + "," + std::to_string(end));
  // Offsets count from the data section, so the header may change length.
  std::string length(8, '\0');
  const uint64_t new_len = header.size();
  std::memcpy(length.data(), &new_len, 8);
  WriteAll(path, length + header + bytes.substr(8 + header_len));
}

TEST_F(ModelDirTest, OffsetsOutOfRange) {
  WriteWeights(nullptr);
  PatchOffsets(weights(), "pooler.dense.bias", 900000000, 900000512);
  ExpectError({"model.safetensors", "pooler.dense.bias", "out of range"});
}

TEST_F(ModelDirTest, OffsetsDisagreeWithShape) {
  WriteWeights(nullptr);
  // The file's first tensor in name order starts at 0; give it too few bytes.
  PatchOffsets(weights(), "embeddings.LayerNorm.bias", 0, 4);
  ExpectError({"model.safetensors", "embeddings.LayerNorm.bias", "need"});
}

TEST_F(ModelDirTest, OverlappingTensors) {
  WriteWeights(nullptr);
  // embeddings.LayerNorm.bias and .weight are both [128] F32, stored back to back from 0.
  PatchOffsets(weights(), "embeddings.LayerNorm.weight", 0, 512);
  ExpectError({"model.safetensors", "overlaps"});
}

TEST_F(ModelDirTest, ConfigVocabDisagreesWithWeights) {
  SetConfig("vocab_size", "2048");
  WriteWeights(nullptr);
  ExpectError(
      {"model.safetensors", "embeddings.word_embeddings.weight", "[1024, 128]", "[2048, 128]"});
}

TEST_F(ModelDirTest, ConfigHasFewerLayersThanWeights) {
  SetConfig("num_hidden_layers", "3");
  WriteWeights(nullptr);
  ExpectError({"model.safetensors", "encoder.layer.3", "num_hidden_layers"});
}

TEST_F(ModelDirTest, ConfigHasMoreLayersThanWeights) {
  SetConfig("num_hidden_layers", "5");
  WriteWeights(nullptr);
  ExpectError({"model.safetensors", "encoder.layer.4.", "missing"});
}

TEST_F(ModelDirTest, NotABertCheckpoint) {
  SafetensorsWriter w;
  w.AddFloat32("transformer.wte.weight", {2, 2}, std::vector<float>(4, 0.0f));
  ASSERT_TRUE(w.Write(weights()).ok());
  ExpectError({"model.safetensors", "embeddings.word_embeddings.weight", "missing"});
}

TEST(RandomModelTest, SameSeedSameWeightsOtherSeedOtherWeights) {
  ModelConfig c;
  c.num_layers = 2;
  c.hidden_size = 32;
  c.num_heads = 4;
  c.intermediate_size = 64;
  c.vocab_size = 100;
  c.max_position_embeddings = 40;
  Model a = RandomModel(c, 7), b = RandomModel(c, 7), d = RandomModel(c, 8);
  EXPECT_EQ(a.weights.word_embeddings.data, b.weights.word_embeddings.data);
  EXPECT_EQ(a.weights.layers[1].output_weight.data, b.weights.layers[1].output_weight.data);
  EXPECT_EQ(a.weights.pooler_bias.data, b.weights.pooler_bias.data);
  EXPECT_NE(a.weights.layers[1].output_weight.data, d.weights.layers[1].output_weight.data);
  EXPECT_EQ(a.weights.layers[0].qkv_weight.shape, (std::vector<int64_t>{96, 32}));
  EXPECT_EQ(a.weights.layers[0].intermediate_weight.shape, (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(a.weights.position_embeddings.shape, (std::vector<int64_t>{40, 32}));
  EXPECT_TRUE(a.weights.has_pooler);
  EXPECT_EQ(a.weights.layers[0].attention_norm_gamma.data, std::vector<float>(32, 1.0f));
  // Drawn from normal(0, 0.02).
  double sum = 0, sq = 0;
  const auto& w = a.weights.word_embeddings.data;
  for (float v : w) {
    sum += v;
    sq += v * v;
  }
  EXPECT_NEAR(sum / w.size(), 0.0, 0.002);
  EXPECT_NEAR(std::sqrt(sq / w.size()), 0.02, 0.002);
}

TEST_F(ModelDirTest, SaveModelRoundTrips) {
  ModelConfig c;
  c.num_layers = 2;
  c.hidden_size = 24;
  c.num_heads = 3;
  c.intermediate_size = 40;
  c.vocab_size = 50;
  c.max_position_embeddings = 16;
  c.layer_norm_eps = 1e-5f;
  c.activation = Activation::kGeluTanh;
  Model a = RandomModel(c, 99);
  ASSERT_TRUE(SaveModel(a, dir() + "/saved").ok());
  auto b = LoadModel(dir() + "/saved");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->config.hidden_size, 24);
  EXPECT_EQ(b->config.activation, Activation::kGeluTanh);
  EXPECT_FLOAT_EQ(b->config.layer_norm_eps, 1e-5f);
  EXPECT_EQ(b->weights.layers[1].qkv_weight.data, a.weights.layers[1].qkv_weight.data);
  EXPECT_EQ(b->weights.layers[1].qkv_bias.data, a.weights.layers[1].qkv_bias.data);
  EXPECT_EQ(b->weights.layers[0].output_weight.data, a.weights.layers[0].output_weight.data);
  EXPECT_EQ(b->weights.pooler_weight.data, a.weights.pooler_weight.data);
  EXPECT_EQ(b->weights.token_type_embeddings.data, a.weights.token_type_embeddings.data);
  EXPECT_FALSE(b->classifier.present());

  // With a classifier: BertForSequenceClassification's tensors, labels and problem type.
  a.classifier.weight.shape = {2, 24};
  a.classifier.weight.data.assign(48, 0.25f);
  a.classifier.bias.shape = {2};
  a.classifier.bias.data = {1.5f, -1.5f};
  a.classifier.labels = {"no", "yes"};
  a.classifier.problem_type = "multi_label_classification";
  a.classifier.activation_function = "torch.nn.modules.activation.Sigmoid";
  a.classifier.max_seq_length = 12;  // below the model's 16 positions
  ASSERT_TRUE(SaveModel(a, dir() + "/classifier").ok());
  // In Hugging Face's layout: the encoder under "bert.", the classifier beside it.
  auto saved = SafetensorsFile::Open(dir() + "/classifier/model.safetensors");
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_NE(saved->Find("bert.embeddings.word_embeddings.weight"), nullptr);
  EXPECT_NE(saved->Find("bert.pooler.dense.weight"), nullptr);
  EXPECT_NE(saved->Find("classifier.weight"), nullptr);
  EXPECT_EQ(saved->Find("embeddings.word_embeddings.weight"), nullptr);
  auto d = LoadModel(dir() + "/classifier");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->classifier.weight.data, a.classifier.weight.data);
  EXPECT_EQ(d->classifier.bias.data, a.classifier.bias.data);
  EXPECT_EQ(d->classifier.labels, a.classifier.labels);
  EXPECT_EQ(d->classifier.problem_type, a.classifier.problem_type);
  EXPECT_EQ(d->classifier.activation_function, a.classifier.activation_function);
  EXPECT_EQ(d->classifier.max_seq_length, 12);
}

TEST(BertBaseConfigTest, Shape) {
  ModelConfig c = BertBaseConfig();
  EXPECT_EQ(c.num_layers, 12);
  EXPECT_EQ(c.hidden_size, 768);
  EXPECT_EQ(c.num_heads, 12);
  EXPECT_EQ(c.intermediate_size, 3072);
  EXPECT_EQ(c.vocab_size, 30522);
  EXPECT_EQ(c.head_dim(), 64);
}

// sentence-transformers' files: modules.json and the Pooling module's config.json.
constexpr char kModules[] = R"([
  {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
  {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
  {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
])";

std::string PoolingConfig(bool cls, bool mean, bool max = false) {
  return absl::StrCat(R"({"word_embedding_dimension": 128, "pooling_mode_cls_token": )",
                      cls ? "true" : "false", R"(, "pooling_mode_mean_tokens": )",
                      mean ? "true" : "false", R"(, "pooling_mode_max_tokens": )",
                      max ? "true" : "false", R"(, "pooling_mode_mean_sqrt_len_tokens": false})");
}

class SentenceEmbeddingTest : public ModelDirTest {
 protected:
  void Write(const std::string& modules, const std::string& pooling) {
    WriteAll(dir() + "/modules.json", modules);
    fs::create_directories(dir_ / "1_Pooling");
    WriteAll(dir() + "/1_Pooling/config.json", pooling);
  }
};

TEST_F(SentenceEmbeddingTest, WithoutModulesJsonItIsUnknown) {
  auto e = ReadSentenceEmbedding(dir());
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->pooling, SentenceEmbedding::Pooling::kUnknown);
  EXPECT_EQ(e->note, "no modules.json");
}

TEST_F(SentenceEmbeddingTest, MeanThenNormalizeAsAllMiniLm) {
  Write(kModules, PoolingConfig(/*cls=*/false, /*mean=*/true));
  auto e = ReadSentenceEmbedding(dir());
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->pooling, SentenceEmbedding::Pooling::kMean);
  EXPECT_TRUE(e->normalize);
  EXPECT_EQ(e->note, "modules.json, 1_Pooling/config.json");
  EXPECT_EQ(e->max_seq_length, 0);  // no sentence_bert_config.json
  {
    // LoadModel: then the model's positions, as sentence-transformers truncates there.
    WriteWeights([](std::string*, std::string*, std::vector<int64_t>*, std::vector<uint8_t>*) {});
    auto model = LoadModel(dir());
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_EQ(model->sentence_embedding.max_seq_length, model->config.max_position_embeddings);
  }
  // sentence_bert_config.json: LoadModel caps it at the model's positions (the golden: 512).
  WriteAll(dir() + "/sentence_bert_config.json", R"({"max_seq_length": 1000})");
  auto with_max = ReadSentenceEmbedding(dir());
  ASSERT_TRUE(with_max.ok()) << with_max.status();
  EXPECT_EQ(with_max->max_seq_length, 1000);
  // LoadModel reads them too.
  WriteWeights([](std::string*, std::string*, std::vector<int64_t>*, std::vector<uint8_t>*) {});
  auto model = LoadModel(dir());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->sentence_embedding.pooling, SentenceEmbedding::Pooling::kMean);
  EXPECT_TRUE(model->sentence_embedding.normalize);
  EXPECT_EQ(model->sentence_embedding.max_seq_length, 512);
  EXPECT_EQ(model->config.max_position_embeddings, 512);
}

TEST_F(SentenceEmbeddingTest, PromptsAndTheirDefault) {
  Write(kModules, PoolingConfig(false, true));
  WriteAll(dir() + "/config_sentence_transformers.json",
           R"({"prompts": {"query": "query: ", "passage": "passage: "},
               "default_prompt_name": "query", "similarity_fn_name": "cosine"})");
  auto e = ReadSentenceEmbedding(dir());
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->prompts,
            (std::map<std::string, std::string>{{"query", "query: "}, {"passage", "passage: "}}));
  EXPECT_EQ(e->default_prompt_name, "query");
  EXPECT_EQ(e->similarity_fn_name, "cosine");
  EXPECT_EQ(e->pooling, SentenceEmbedding::Pooling::kMean);
  // Empty prompts, no default (what sentence-transformers writes for most models).
  WriteAll(dir() + "/config_sentence_transformers.json",
           R"({"prompts": {}, "default_prompt_name": null})");
  auto empty = ReadSentenceEmbedding(dir());
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->prompts.empty());
  EXPECT_EQ(empty->default_prompt_name, "");
  EXPECT_EQ(empty->similarity_fn_name, "");
  WriteAll(dir() + "/config_sentence_transformers.json", R"({"similarity_fn_name": "dot"})");
  auto dot = ReadSentenceEmbedding(dir());
  ASSERT_TRUE(dot.ok()) << dot.status();
  EXPECT_EQ(dot->similarity_fn_name, "dot");
  // Defects.
  for (const char* bad : {R"({"prompts": ["query: "]})", R"({"prompts": {"query": 1}})",
                          R"({"prompts": {"a": "b"}, "default_prompt_name": "c"})", "[]",
                          R"({"similarity_fn_name": "Cosine"})", R"({"similarity_fn_name": 1})"}) {
    WriteAll(dir() + "/config_sentence_transformers.json", bad);
    auto defect = ReadSentenceEmbedding(dir());
    ASSERT_FALSE(defect.ok()) << bad;
    EXPECT_TRUE(absl::StrContains(defect.status().message(), "config_sentence_transformers.json"))
        << defect.status();
  }
}

TEST_F(SentenceEmbeddingTest, ClsWithoutNormalize) {
  const std::string two_modules = R"([
    {"path": "", "type": "sentence_transformers.models.Transformer"},
    {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])";
  Write(two_modules, PoolingConfig(/*cls=*/true, /*mean=*/false));
  auto e = ReadSentenceEmbedding(dir());
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->pooling, SentenceEmbedding::Pooling::kCls);
  EXPECT_FALSE(e->normalize);
}

TEST_F(SentenceEmbeddingTest, WhatNoHeadComputesIsUnknownWithTheReason) {
  // Max pooling; two modes at once (sentence-transformers concatenates them).
  Write(kModules, PoolingConfig(false, false, /*max=*/true));
  auto max = ReadSentenceEmbedding(dir());
  ASSERT_TRUE(max.ok()) << max.status();
  EXPECT_EQ(max->pooling, SentenceEmbedding::Pooling::kUnknown);
  EXPECT_EQ(max->note, "1_Pooling/config.json: pooling max, which no head computes");
  Write(kModules, PoolingConfig(true, true));
  auto both = ReadSentenceEmbedding(dir());
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_EQ(both->pooling, SentenceEmbedding::Pooling::kUnknown);
  EXPECT_TRUE(absl::StrContains(both->note, "cls + mean")) << both->note;
  // Pooling that leaves the prompts' tokens out, mean or CLS: the same as ours for a model
  // without prompts, not for one with them.
  for (const char* mode : {"mean", "cls"}) {
    Write(kModules, absl::StrCat(R"({"pooling_mode": ")", mode, R"(", "include_prompt": false})"));
    auto no_prompts = ReadSentenceEmbedding(dir());
    ASSERT_TRUE(no_prompts.ok()) << no_prompts.status();
    EXPECT_NE(no_prompts->pooling, SentenceEmbedding::Pooling::kUnknown) << mode;
    WriteAll(dir() + "/config_sentence_transformers.json", R"({"prompts": {"q": "query: "}})");
    auto prompts = ReadSentenceEmbedding(dir());
    ASSERT_TRUE(prompts.ok()) << prompts.status();
    EXPECT_EQ(prompts->pooling, SentenceEmbedding::Pooling::kUnknown) << mode;
    EXPECT_TRUE(absl::StrContains(prompts->note, "without the prompts' tokens")) << prompts->note;
    fs::remove(dir_ / "config_sentence_transformers.json");
  }
  // A Dense layer after the pooling.
  Write(R"([{"path": "", "type": "sentence_transformers.models.Transformer"},
            {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"path": "2_Dense", "type": "sentence_transformers.models.Dense"},
            {"path": "3_Normalize", "type": "sentence_transformers.models.Normalize"}])",
        PoolingConfig(false, true));
  auto dense = ReadSentenceEmbedding(dir());
  ASSERT_TRUE(dense.ok()) << dense.status();
  EXPECT_EQ(dense->pooling, SentenceEmbedding::Pooling::kUnknown);
  EXPECT_EQ(dense->note,
            "modules.json: Transformer, Pooling, Dense, Normalize; no head computes more than "
            "Transformer, Pooling, Normalize");
}

TEST_F(SentenceEmbeddingTest, ThePoolingModeStringOverridesTheFlagsWhichDefaultToMean) {
  // sentence-transformers' own reading: "pooling_mode" wins over the flags.
  Write(kModules, R"({"pooling_mode": "CLS", "pooling_mode_mean_tokens": true})");
  auto cls = ReadSentenceEmbedding(dir());
  ASSERT_TRUE(cls.ok()) << cls.status();
  EXPECT_EQ(cls->pooling, SentenceEmbedding::Pooling::kCls);
  // A list, as recent versions write it.
  Write(kModules,
        R"({"embedding_dimension": 128, "pooling_mode": ["mean"], "include_prompt": true})");
  auto list = ReadSentenceEmbedding(dir());
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(list->pooling, SentenceEmbedding::Pooling::kMean);
  Write(kModules, R"({"pooling_mode": ["cls", "mean"]})");
  auto two = ReadSentenceEmbedding(dir());
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->pooling, SentenceEmbedding::Pooling::kUnknown);
  EXPECT_TRUE(absl::StrContains(two->note, "cls + mean")) << two->note;
  // A flag set to null is off (an absent one takes its default).
  Write(kModules, R"({"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": null})");
  auto null_mean = ReadSentenceEmbedding(dir());
  ASSERT_TRUE(null_mean.ok()) << null_mean.status();
  EXPECT_EQ(null_mean->pooling, SentenceEmbedding::Pooling::kCls);
  Write(kModules, R"({"pooling_mode": "weightedmean"})");
  auto weighted = ReadSentenceEmbedding(dir());
  ASSERT_TRUE(weighted.ok()) << weighted.status();
  EXPECT_EQ(weighted->pooling, SentenceEmbedding::Pooling::kUnknown);
  // No mode at all: mean pooling, as its Pooling module's arguments default to.
  Write(kModules, R"({"word_embedding_dimension": 128})");
  auto mean = ReadSentenceEmbedding(dir());
  ASSERT_TRUE(mean.ok()) << mean.status();
  EXPECT_EQ(mean->pooling, SentenceEmbedding::Pooling::kMean);
  // A CLS flag alone keeps the default mean: both, concatenated.
  Write(kModules, R"({"pooling_mode_cls_token": true})");
  auto both = ReadSentenceEmbedding(dir());
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_EQ(both->pooling, SentenceEmbedding::Pooling::kUnknown);
  EXPECT_TRUE(absl::StrContains(both->note, "cls + mean")) << both->note;
}

TEST_F(SentenceEmbeddingTest, DefectsAreErrorsNamingTheFileAndTheModelStillLoads) {
  WriteWeights([](std::string*, std::string*, std::vector<int64_t>*, std::vector<uint8_t>*) {});
  // ReadSentenceEmbedding's error; LoadModel loads the model (the files are optional), marks the
  // embedding defective and keeps the error as its note.
  auto expect_problem = [&](std::initializer_list<std::string> needles) {
    auto read = ReadSentenceEmbedding(dir());
    ASSERT_FALSE(read.ok());
    auto model = LoadModel(dir());
    ASSERT_TRUE(model.ok()) << model.status();
    const SentenceEmbedding& e = model->sentence_embedding;
    EXPECT_EQ(e.pooling, SentenceEmbedding::Pooling::kUnknown);
    EXPECT_TRUE(e.defective);
    // The same error, with the paths inside the model directory (GetModelInfo shows it).
    EXPECT_EQ(absl::StrCat(dir(), "/", e.note), std::string(read.status().message()));
    EXPECT_FALSE(absl::StrContains(e.note, dir())) << e.note;
    for (const std::string& needle : needles) {
      EXPECT_TRUE(absl::StrContains(e.note, needle)) << "'" << needle << "' not in " << e.note;
    }
  };
  Write("{not json", PoolingConfig(false, true));
  expect_problem({"modules.json", "not a JSON array"});
  Write(R"([{"path": ""}])", PoolingConfig(false, true));
  expect_problem({"modules.json", "module 0 has no \"type\" string"});
  const std::string pooling_at =
      R"([{"path": "", "type": "sentence_transformers.models.Transformer"},
            {"type": "sentence_transformers.models.Pooling", "path": PATH}])";
  for (const char* path : {"null", R"("/etc")", R"("../1_Pooling")", R"("a/../../b")", R"("")"}) {
    Write(absl::StrReplaceAll(pooling_at, {{"PATH", path}}), PoolingConfig(false, true));
    expect_problem({"modules.json", "not a directory inside the model's"});
  }
  Write(kModules, "[1, 2]");
  expect_problem({"1_Pooling/config.json", "not a JSON object"});
  Write(kModules, R"({"pooling_mode": 3})");
  expect_problem({"1_Pooling/config.json", "\"pooling_mode\" must be a string"});
  Write(kModules, R"({"pooling_mode": ["cls", 1]})");
  expect_problem({"1_Pooling/config.json", "or a list of strings"});
  Write(kModules, R"({"pooling_mode_cls_token": "yes"})");
  expect_problem({"1_Pooling/config.json", "must be true or false"});
  fs::remove(dir_ / "1_Pooling" / "config.json");
  expect_problem({"1_Pooling/config.json", "cannot open"});
  Write(kModules, PoolingConfig(false, true));
  WriteAll(dir() + "/sentence_bert_config.json", R"({"max_seq_length": "long"})");
  expect_problem({"sentence_bert_config.json", "max_seq_length"});
}

}  // namespace
}  // namespace bert
