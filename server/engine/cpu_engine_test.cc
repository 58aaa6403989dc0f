// CPU engine invariances and contracts: batched == one by one and 1 thread == 2 threads (bit
// for bit), TRIM rows == the real rows of PAD_TO_SEQ_LENGTH, every instruction set of the
// Linear kernel, selections and validation.
#include "server/engine/cpu_engine.h"

#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "server/engine/engine_factory.h"
#include "server/engine/model.h"

namespace bert {
namespace {

ModelConfig SmallConfig() {
  ModelConfig c;
  c.num_layers = 3;
  c.hidden_size = 64;
  c.num_heads = 4;
  c.intermediate_size = 128;
  c.vocab_size = 97;
  c.max_position_embeddings = 48;
  c.type_vocab_size = 2;
  return c;
}

// Widths that are no multiple of the Linear kernel's panels (16 or 48 outputs) nor of its
// blocks of rows.
ModelConfig OddWidthsConfig() {
  ModelConfig c = SmallConfig();
  c.hidden_size = 36;
  c.num_heads = 3;
  c.intermediate_size = 52;
  return c;
}

std::shared_ptr<const Model> SmallModel(bool pooler = true) {
  Model m = RandomModel(SmallConfig(), 3);
  m.weights.has_pooler = pooler;
  return std::make_shared<const Model>(std::move(m));
}

std::unique_ptr<CpuEngine> MakeEngine(std::shared_ptr<const Model> model, int threads = 2,
                                      const std::string& gemm = "auto") {
  CpuEngineOptions opts;
  opts.threads = threads;
  opts.gemm = gemm;
  auto engine = CpuEngine::Create(std::move(model), opts);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return std::move(engine).value();
}

struct Seq {
  std::vector<int32_t> words, types;
};

std::vector<Seq> Sequences() {
  std::vector<Seq> seqs;
  const int lengths[] = {5, 1, 17, 40, 9};
  uint32_t state = 11;
  for (int len : lengths) {
    Seq s;
    for (int i = 0; i < len; ++i) {
      state = state * 1103515245u + 12345u;
      s.words.push_back((state >> 8) % 97);
      s.types.push_back(i > len / 2 ? 1 : 0);
    }
    seqs.push_back(s);
  }
  return seqs;
}

OutputSelection Everything() {
  OutputSelection sel;
  sel.pooled = sel.mean_pooled = sel.cls = sel.sequence = true;
  sel.layers = {0, 1, 2};
  return sel;
}

// Max |a - b| relative to max |b|.
double MaxRelDiff(const float* a, const float* b, size_t n) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return diff / scale;
}

TEST(CpuEngineTest, BatchEqualsOneByOne) {
  auto engine = MakeEngine(SmallModel());
  const int h = 64;
  auto seqs = Sequences();
  EncoderBatch batch;
  for (const Seq& s : seqs) batch.Add(s.words, s.types, 24);  // some padded, 40 is not
  EncoderOutput all;
  ASSERT_TRUE(engine->Encode(batch, Everything(), &all).ok());
  // MaxRelDiff reads raw ranges: the outputs must have their full sizes.
  ASSERT_EQ(all.sequence.size(), static_cast<size_t>(batch.total_rows()) * h);
  ASSERT_EQ(all.layers.size(), 3u);
  for (const auto& layer : all.layers) ASSERT_EQ(layer.size(), all.sequence.size());
  ASSERT_EQ(all.pooled.size(), seqs.size() * h);
  ASSERT_EQ(all.mean_pooled.size(), seqs.size() * h);
  ASSERT_EQ(all.cls.size(), seqs.size() * h);
  for (size_t i = 0; i < seqs.size(); ++i) {
    EncoderBatch one;
    one.Add(seqs[i].words, seqs[i].types, 24);
    EncoderOutput single;
    ASSERT_TRUE(engine->Encode(one, Everything(), &single).ok());
    const size_t offset = static_cast<size_t>(batch.cu_rows[i]) * h;
    const size_t rows = one.total_rows();
    ASSERT_EQ(single.sequence.size(), rows * h);
    ASSERT_EQ(single.layers.size(), 3u);
    for (const auto& layer : single.layers) ASSERT_EQ(layer.size(), rows * h);
    ASSERT_EQ(single.pooled.size(), static_cast<size_t>(h));
    ASSERT_EQ(single.mean_pooled.size(), static_cast<size_t>(h));
    ASSERT_EQ(single.cls.size(), static_cast<size_t>(h));
    // Bit for bit: no kernel's sums depend on the batch (cpu_engine.h).
    const auto slice = [](const std::vector<float>& v, size_t begin, size_t n) {
      return std::vector<float>(v.begin() + begin, v.begin() + begin + n);
    };
    EXPECT_EQ(slice(all.sequence, offset, rows * h), single.sequence) << "sequence " << i;
    for (int l = 0; l < 3; ++l) {
      EXPECT_EQ(slice(all.layers[l], offset, rows * h), single.layers[l]) << "layer " << l;
    }
    EXPECT_EQ(slice(all.pooled, i * h, h), single.pooled) << "sequence " << i;
    EXPECT_EQ(slice(all.mean_pooled, i * h, h), single.mean_pooled) << "sequence " << i;
    EXPECT_EQ(slice(all.cls, i * h, h), single.cls) << "sequence " << i;
  }
}

TEST(CpuEngineTest, TrimRowsEqualRealRowsOfPadded) {
  auto engine = MakeEngine(SmallModel());
  const int h = 64, s = 40;
  auto seqs = Sequences();
  EncoderBatch trim, pad;
  for (const Seq& q : seqs) {
    trim.Add(q.words, q.types);
    pad.Add(q.words, q.types, s);
  }
  ASSERT_EQ(pad.total_rows(), static_cast<int>(seqs.size()) * s);
  EncoderOutput a, b;
  ASSERT_TRUE(engine->Encode(trim, Everything(), &a).ok());
  ASSERT_TRUE(engine->Encode(pad, Everything(), &b).ok());
  for (size_t i = 0; i < seqs.size(); ++i) {
    const size_t n = seqs[i].words.size() * h;
    EXPECT_LE(MaxRelDiff(a.sequence.data() + trim.cu_rows[i] * h,
                         b.sequence.data() + pad.cu_rows[i] * h, n),
              1e-6);
    // Padding rows are computed (queries), so they are not all zero.
    if (seqs[i].words.size() < static_cast<size_t>(s)) {
      const float* p = b.sequence.data() + (pad.cu_rows[i] + seqs[i].words.size()) * h;
      double norm = 0;
      for (int j = 0; j < h; ++j) norm += p[j] * p[j];
      EXPECT_GT(norm, 1.0);
    }
  }
  EXPECT_LE(MaxRelDiff(a.pooled.data(), b.pooled.data(), a.pooled.size()), 1e-6);
  EXPECT_LE(MaxRelDiff(a.mean_pooled.data(), b.mean_pooled.data(), a.mean_pooled.size()), 1e-6);
  ASSERT_EQ(a.cls.size(), seqs.size() * h);
  EXPECT_LE(MaxRelDiff(a.cls.data(), b.cls.data(), a.cls.size()), 1e-6);
}

TEST(CpuEngineTest, OneAndTwoThreadsAgree) {
  auto model = SmallModel();
  auto one = MakeEngine(model, 1);
  auto two = MakeEngine(model, 2);
  EXPECT_EQ(one->num_threads(), 1);
  EXPECT_EQ(two->num_threads(), 2);
  EncoderBatch batch;
  for (const Seq& s : Sequences()) batch.Add(s.words, s.types, 30);
  EncoderOutput a, b;
  ASSERT_TRUE(one->Encode(batch, Everything(), &a).ok());
  ASSERT_TRUE(two->Encode(batch, Everything(), &b).ok());
  ASSERT_FALSE(a.sequence.empty());
  EXPECT_EQ(a.sequence, b.sequence);
  EXPECT_EQ(a.layers, b.layers);
  EXPECT_EQ(a.pooled, b.pooled);
  EXPECT_EQ(a.mean_pooled, b.mean_pooled);
  EXPECT_EQ(a.cls, b.cls);
}

// With odd widths, every version of the packed GEMM this CPU runs, and OpenBLAS sgemm, give
// the same results to float rounding; each packed version gives the same bits on any number of
// threads (the engine splits rows and panels by thread count).
TEST(CpuEngineTest, EveryGemmAgreesAndNoThreadCountChangesAPackedBit) {
  const ModelConfig c = OddWidthsConfig();
  auto model = std::make_shared<const Model>(RandomModel(c, 5));
  EncoderBatch batch;
  for (const Seq& s : Sequences()) batch.Add(s.words, s.types);
  auto run = [&](const std::string& gemm, int threads) {
    CpuEngineOptions opts;
    opts.threads = threads;
    opts.gemm = gemm;
    auto engine = CpuEngine::Create(model, opts);
    EXPECT_TRUE(engine.ok()) << engine.status();
    EncoderOutput out;
    EXPECT_TRUE((*engine)->Encode(batch, Everything(), &out).ok());
    return std::pair{out, (*engine)->info().device};
  };
  const auto [best, best_device] = run("auto", 1);
  ASSERT_EQ(best.sequence.size(), static_cast<size_t>(batch.total_rows()) * c.hidden_size);
  EXPECT_NE(best_device.find(CpuGemmName(*ParseCpuGemm("auto"))), std::string::npos) << best_device;
  std::map<std::string, EncoderOutput> firsts;
  for (const std::string name : {"portable", "avx2", "avx512", "openblas", "amx_bf16"}) {
    const auto gemm = ParseCpuGemm(name);
    if (!gemm.ok()) continue;  // a version this CPU does not run
    const auto [first, device] = run(name, 1);
    firsts[name] = first;
    EXPECT_NE(device.find(CpuGemmName(*gemm)), std::string::npos) << device;
    // (AMX multiplies in bfloat16: ~1e-2 from float32, the golden test's bound.)
    const double tolerance = name == "amx_bf16" ? 5e-2 : 1e-6;
    EXPECT_LE(MaxRelDiff(first.sequence.data(), best.sequence.data(), best.sequence.size()),
              tolerance)
        << name;
    EXPECT_LE(MaxRelDiff(first.pooled.data(), best.pooled.data(), best.pooled.size()), tolerance)
        << name;
    if (name == "amx_bf16") {  // and it did multiply in bfloat16
      EXPECT_GT(MaxRelDiff(first.sequence.data(), best.sequence.data(), best.sequence.size()),
                1e-5);
    }
    for (int threads : {2, 3, 5, 7}) {
      const EncoderOutput out = run(name, threads).first;
      if (gemm->has_value()) {
        EXPECT_EQ(out.sequence, first.sequence) << name << ", " << threads << " threads";
        EXPECT_EQ(out.layers, first.layers) << name << ", " << threads << " threads";
        EXPECT_EQ(out.pooled, first.pooled) << name << ", " << threads << " threads";
      } else {  // sgemm's parts of rows may sum differently
        EXPECT_LE(MaxRelDiff(out.sequence.data(), first.sequence.data(), first.sequence.size()),
                  1e-6)
            << name << ", " << threads << " threads";
      }
    }
  }
  // AVX-512 and AVX2: one FMA chain per output in both, and the same epilogue paths.
  if (firsts.count("avx512") && firsts.count("avx2")) {
    EXPECT_EQ(firsts["avx512"].sequence, firsts["avx2"].sequence);
    EXPECT_EQ(firsts["avx512"].layers, firsts["avx2"].layers);
    EXPECT_EQ(firsts["avx512"].pooled, firsts["avx2"].pooled);
  }
}

TEST(CpuEngineTest, ParsesGemmNamesForThisCpu) {
  EXPECT_EQ(*ParseCpuGemm("openblas"), CpuGemm());
  const cpu::LinearIsa best = cpu::BestLinearIsa();
  EXPECT_EQ(*ParseCpuGemm("auto"), best == cpu::LinearIsa::kPortable ? CpuGemm() : CpuGemm(best));
  EXPECT_EQ(*ParseCpuGemm("portable"), CpuGemm(cpu::LinearIsa::kPortable));
  for (const auto& [name, isa] :
       {std::pair{"avx2", cpu::LinearIsa::kAvx2}, std::pair{"avx512", cpu::LinearIsa::kAvx512},
        std::pair{"amx_bf16", cpu::LinearIsa::kAmxBf16}}) {
    const auto gemm = ParseCpuGemm(name);
    ASSERT_EQ(gemm.ok(), cpu::LinearIsaAvailable(isa)) << name;
    if (gemm.ok()) {
      EXPECT_EQ(*gemm, CpuGemm(isa)) << name;
    } else {
      EXPECT_EQ(gemm.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(gemm.status().message().find("does not run"), std::string::npos) << name;
    }
  }
  EXPECT_EQ(CpuGemmName(CpuGemm()), "OpenBLAS GEMM");
  EXPECT_EQ(CpuGemmName(CpuGemm(cpu::LinearIsa::kPortable)), "portable packed GEMM");
  EXPECT_EQ(CpuGemmName(CpuGemm(cpu::LinearIsa::kAmxBf16)), "AMX bfloat16 packed GEMM");
}

// A batch whose inputs exceed the engine's chunk of rows (512 KiB of inputs per Linear layer:
// here several chunks in every layer) runs in chunks: each sequence still gets the bits it gets
// alone, on any number of threads.
TEST(CpuEngineTest, BatchesOfManyChunksGiveEachSequenceItsBitsAlone) {
  const ModelConfig c = OddWidthsConfig();
  auto model = std::make_shared<const Model>(RandomModel(c, 7));
  const int h = c.hidden_size, len = 45, n = 250;
  std::vector<Seq> seqs(n);
  uint32_t state = 5;
  for (Seq& s : seqs) {
    for (int i = 0; i < len; ++i) {
      state = state * 1103515245u + 12345u;
      s.words.push_back((state >> 8) % 97);
      s.types.push_back(i > len / 2 ? 1 : 0);
    }
  }
  EncoderBatch batch;
  for (const Seq& s : seqs) batch.Add(s.words, s.types);
  ASSERT_GT(batch.total_rows() * c.hidden_size, 2 * 128 * 1024);
  OutputSelection sel;
  sel.sequence = sel.pooled = true;
  // The float32 kernel, and AMX where the CPU has it (its parts round their own rows to
  // bfloat16 in a batch of many chunks, and one sequence's rows are rounded once for its groups
  // of panels on 3 threads).
  for (const std::string gemm : {"auto", "amx_bf16"}) {
    if (!ParseCpuGemm(gemm).ok()) continue;
    EncoderOutput all, all3;
    auto one_thread = MakeEngine(model, 1, gemm);
    auto three_threads = MakeEngine(model, 3, gemm);
    ASSERT_TRUE(one_thread->Encode(batch, sel, &all).ok());
    ASSERT_TRUE(three_threads->Encode(batch, sel, &all3).ok());
    EXPECT_EQ(all3.sequence, all.sequence) << gemm;
    EXPECT_EQ(all3.pooled, all.pooled) << gemm;
    for (int i = 0; i < n; ++i) {
      EncoderBatch one;
      one.Add(seqs[i].words, seqs[i].types);
      EncoderOutput single;
      ASSERT_TRUE((i % 2 == 0 ? one_thread : three_threads)->Encode(one, sel, &single).ok());
      const auto begin = all.sequence.begin() + static_cast<size_t>(batch.cu_rows[i]) * h;
      EXPECT_EQ(std::vector<float>(begin, begin + len * h), single.sequence)
          << gemm << ", sequence " << i;
      EXPECT_EQ(std::vector<float>(all.pooled.begin() + i * h, all.pooled.begin() + (i + 1) * h),
                single.pooled)
          << gemm << ", sequence " << i;
    }
  }
}

// AMX on layers of one panel (every Linear but qkv: 30 and 28 outputs): each part of a layer
// has rows of its own and rounds them to bfloat16 itself, on 2 and 3 threads at once; the same
// bits as one thread, and a sequence's bits alone.
TEST(CpuEngineTest, AmxPartsRoundingTheirOwnRowsAtOnceGiveOneThreadsBits) {
  const auto amx = ParseCpuGemm("amx_bf16");
  if (!amx.ok()) GTEST_SKIP() << amx.status();
  ModelConfig c = SmallConfig();
  c.hidden_size = 30;
  c.num_heads = 3;
  c.intermediate_size = 28;
  auto model = std::make_shared<const Model>(RandomModel(c, 9));
  std::vector<Seq> seqs(40);
  uint32_t state = 11;
  for (Seq& s : seqs) {
    const int len = 5 + static_cast<int>(state % 40);
    for (int i = 0; i < len; ++i) {
      state = state * 1103515245u + 12345u;
      s.words.push_back((state >> 8) % 97);
      s.types.push_back(0);
    }
  }
  EncoderBatch batch;
  for (const Seq& s : seqs) batch.Add(s.words, s.types);
  ASSERT_GT(batch.total_rows(), 8 * 32);  // 8 parts of whole blocks on 2 threads
  OutputSelection sel;
  sel.sequence = sel.pooled = true;
  EncoderOutput one, two, three, alone;
  ASSERT_TRUE(MakeEngine(model, 1, "amx_bf16")->Encode(batch, sel, &one).ok());
  ASSERT_TRUE(MakeEngine(model, 2, "amx_bf16")->Encode(batch, sel, &two).ok());
  ASSERT_TRUE(MakeEngine(model, 3, "amx_bf16")->Encode(batch, sel, &three).ok());
  EXPECT_EQ(two.sequence, one.sequence);
  EXPECT_EQ(three.sequence, one.sequence);
  EXPECT_EQ(two.pooled, one.pooled);
  EncoderBatch last;
  last.Add(seqs.back().words, seqs.back().types);
  ASSERT_TRUE(MakeEngine(model, 2, "amx_bf16")->Encode(last, sel, &alone).ok());
  const auto begin =
      one.sequence.begin() + static_cast<size_t>(batch.cu_rows[seqs.size() - 1]) * 30;
  EXPECT_EQ(std::vector<float>(begin, one.sequence.end()), alone.sequence);
}

// With a packed GEMM the engine never reads the model's Linear weights after Create: freeing
// them (as bert_server does) changes no output. With OpenBLAS sgemm it says it reads them.
TEST(CpuEngineTest, APackedEngineRunsWithoutTheModelsLinearWeights) {
  auto model = std::make_shared<Model>(RandomModel(SmallConfig(), 3));
  model->weights.has_pooler = true;
  CpuEngineOptions opts;
  opts.threads = 2;
  opts.gemm = "openblas";
  auto openblas = CpuEngine::Create(model, opts);
  ASSERT_TRUE(openblas.ok()) << openblas.status();
  EXPECT_TRUE((*openblas)->ReadsLinearWeights());
  opts.gemm = "portable";  // runs on every CPU
  auto packed = CpuEngine::Create(model, opts);
  ASSERT_TRUE(packed.ok()) << packed.status();
  EXPECT_FALSE((*packed)->ReadsLinearWeights());
  EncoderBatch batch;
  for (const Seq& s : Sequences()) batch.Add(s.words, s.types);
  EncoderOutput before, after;
  ASSERT_TRUE((*packed)->Encode(batch, Everything(), &before).ok());
  const ModelConfig& c = model->config;
  const size_t h = c.hidden_size, i = c.intermediate_size;
  EXPECT_EQ(ReleaseLinearWeights(model.get()),
            (c.num_layers * (3 * h * h + h * h + 2 * h * i) + h * h) * sizeof(float));
  EXPECT_TRUE(model->weights.layers[0].qkv_weight.data.empty());
  EXPECT_TRUE(model->weights.pooler_weight.data.empty());
  EXPECT_FALSE(model->weights.layers[0].qkv_bias.data.empty());  // only the matrices go
  ASSERT_TRUE((*packed)->Encode(batch, Everything(), &after).ok());
  EXPECT_EQ(after.sequence, before.sequence);
  EXPECT_EQ(after.pooled, before.pooled);
}

TEST(CpuEngineTest, RejectsAnUnknownGemm) {
  CpuEngineOptions opts;
  for (const std::string name : {"sse9", "", "AVX2", "OpenBLAS"}) {  // names are lower case
    opts.gemm = name;
    auto unknown = CpuEngine::Create(SmallModel(), opts);
    ASSERT_FALSE(unknown.ok()) << name;
    EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(unknown.status().message().find("unknown GEMM \"" + name + "\""), std::string::npos)
        << unknown.status();
  }
}

TEST(CpuEngineTest, RefusesAWorkspaceLargerThanTheMemoryLeft) {
  auto model = SmallModel();
  CpuEngineOptions opts;
  opts.max_batch_tokens = std::numeric_limits<int>::max();  // a TiB or more of activations
  ASSERT_GT(CpuEngine::WorkspaceBytes(model->config, opts.max_batch_tokens), int64_t{1} << 40);
  auto refused = CpuEngine::Create(model, opts);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("lower max_batch_tokens"), std::string::npos)
      << refused.status();
  opts.max_batch_tokens = 1024;  // a few hundred KiB
  EXPECT_TRUE(CpuEngine::Create(model, opts).ok());
  // The AMX GEMM's inputs in bfloat16 count too: rows rounded to 16, the widest layer's inputs
  // (the intermediate) to 32 values.
  const ModelConfig& c = model->config;
  EXPECT_EQ(CpuEngine::WorkspaceBytes(c, 100, cpu::LinearIsa::kAmxBf16) -
                CpuEngine::WorkspaceBytes(c, 100),
            112 * ((c.intermediate_size + 31) / 32 * 32) * 2);
}

TEST(CpuEngineTest, SelectionsAreConsistent) {
  const std::shared_ptr<const Model> model = SmallModel();
  auto engine = MakeEngine(model);
  const int h = 64;
  EncoderBatch batch;
  for (const Seq& s : Sequences()) batch.Add(s.words, s.types, 20);
  EncoderOutput full;
  ASSERT_TRUE(engine->Encode(batch, Everything(), &full).ok());
  ASSERT_EQ(full.sequence.size(), static_cast<size_t>(batch.total_rows()) * h);
  // The sequence output is the last layer.
  EXPECT_EQ(full.sequence, full.layers[2]);
  // Mean pooling averages the valid rows of the sequence output.
  for (int s = 0; s < batch.num_sequences(); ++s) {
    for (int j = 0; j < h; ++j) {
      double acc = 0;
      for (int r = 0; r < batch.num_valid[s]; ++r)
        acc += full.sequence[(batch.cu_rows[s] + r) * h + j];
      EXPECT_NEAR(full.mean_pooled[s * h + j], acc / batch.num_valid[s], 1e-5);
    }
  }
  // The pooled output is tanh(W x + b) of each sequence's first row of the sequence output.
  const ModelWeights& w = model->weights;
  for (int s = 0; s < batch.num_sequences(); ++s) {
    const float* cls = full.sequence.data() + static_cast<size_t>(batch.cu_rows[s]) * h;
    for (int o = 0; o < h; ++o) {
      double acc = w.pooler_bias.data[o];
      for (int j = 0; j < h; ++j)
        acc += static_cast<double>(w.pooler_weight.data[o * h + j]) * cls[j];
      EXPECT_NEAR(full.pooled[s * h + o], std::tanh(acc), 1e-5)
          << "sequence " << s << " output " << o;
    }
  }
  // The cls output is each sequence's first row of the sequence output, as it is; asked for
  // alone, it has the same values.
  ASSERT_EQ(full.cls.size(), static_cast<size_t>(batch.num_sequences()) * h);
  OutputSelection cls_only;
  cls_only.cls = true;
  EncoderOutput cls;
  ASSERT_TRUE(engine->Encode(batch, cls_only, &cls).ok());
  EXPECT_TRUE(cls.sequence.empty());
  EXPECT_TRUE(cls.pooled.empty());
  EXPECT_TRUE(cls.mean_pooled.empty());
  EXPECT_EQ(cls.cls, full.cls);
  for (int s = 0; s < batch.num_sequences(); ++s) {
    const auto first = full.sequence.begin() + static_cast<size_t>(batch.cu_rows[s]) * h;
    EXPECT_EQ(std::vector<float>(first, first + h),
              std::vector<float>(full.cls.begin() + s * h, full.cls.begin() + (s + 1) * h))
        << "sequence " << s;
  }
  // Only layer 0: runs one layer, same values as in the full run.
  OutputSelection first;
  first.layers = {0};
  EncoderOutput only;
  ASSERT_TRUE(engine->Encode(batch, first, &only).ok());
  EXPECT_TRUE(only.sequence.empty());
  EXPECT_TRUE(only.pooled.empty());
  ASSERT_EQ(only.layers.size(), 1u);
  EXPECT_EQ(only.layers[0], full.layers[0]);
  // Normalised heads have unit norm and the direction of the raw ones.
  OutputSelection norm;
  norm.pooled = norm.mean_pooled = norm.cls = norm.normalize = true;
  EncoderOutput n;
  ASSERT_TRUE(engine->Encode(batch, norm, &n).ok());
  for (int s = 0; s < batch.num_sequences(); ++s) {
    for (const auto* pair : {&n.pooled, &n.mean_pooled, &n.cls}) {
      double sq = 0;
      for (int j = 0; j < h; ++j) sq += (*pair)[s * h + j] * (*pair)[s * h + j];
      EXPECT_NEAR(sq, 1.0, 1e-5);
    }
    double raw = 0;
    for (int j = 0; j < h; ++j) raw += full.pooled[s * h + j] * full.pooled[s * h + j];
    EXPECT_NEAR(n.pooled[s * h + 3], full.pooled[s * h + 3] / std::sqrt(raw), 1e-5);
    double raw_cls = 0;
    for (int j = 0; j < h; ++j) raw_cls += full.cls[s * h + j] * full.cls[s * h + j];
    EXPECT_NEAR(n.cls[s * h + 5], full.cls[s * h + 5] / std::sqrt(raw_cls), 1e-5);
  }
}

TEST(CpuEngineTest, RejectsBadBatchesAndSelections) {
  auto engine = MakeEngine(SmallModel(/*pooler=*/false));
  EXPECT_FALSE(engine->has_pooler());
  EncoderOutput out;
  EncoderBatch good;
  good.Add({1, 2, 3}, {});
  OutputSelection pooled;
  pooled.pooled = true;
  EXPECT_EQ(engine->Encode(good, pooled, &out).code(), absl::StatusCode::kInvalidArgument);
  OutputSelection cls;  // the [CLS] row needs no pooler
  cls.cls = true;
  ASSERT_TRUE(engine->Encode(good, cls, &out).ok());
  EXPECT_EQ(out.cls.size(), 64u);
  OutputSelection bad_layer;
  bad_layer.layers = {3};
  EXPECT_EQ(engine->Encode(good, bad_layer, &out).code(), absl::StatusCode::kInvalidArgument);
  OutputSelection unsorted;
  unsorted.layers = {1, 0};
  EXPECT_EQ(engine->Encode(good, unsorted, &out).code(), absl::StatusCode::kInvalidArgument);

  OutputSelection seq;
  seq.sequence = true;
  EncoderBatch bad_word;
  bad_word.Add({1, 97}, {});
  EXPECT_EQ(engine->Encode(bad_word, seq, &out).code(), absl::StatusCode::kInvalidArgument);
  EncoderBatch bad_type;
  bad_type.Add({1, 2}, {0, 2});
  EXPECT_EQ(engine->Encode(bad_type, seq, &out).code(), absl::StatusCode::kInvalidArgument);
  EncoderBatch too_long;
  too_long.Add(std::vector<int32_t>(49, 1), {});
  EXPECT_EQ(engine->Encode(too_long, seq, &out).code(), absl::StatusCode::kInvalidArgument);
  EncoderBatch empty_seq;
  empty_seq.Add({}, {}, 4);  // padding rows but no real token
  EXPECT_EQ(engine->Encode(empty_seq, seq, &out).code(), absl::StatusCode::kInvalidArgument);
  EncoderBatch ragged = good;
  ragged.word_ids.pop_back();
  EXPECT_EQ(engine->Encode(ragged, seq, &out).code(), absl::StatusCode::kInvalidArgument);
  EncoderBatch bad_cu = good;
  bad_cu.cu_rows = {1, 3};
  EXPECT_EQ(engine->Encode(bad_cu, seq, &out).code(), absl::StatusCode::kInvalidArgument);

  EncoderBatch nothing;
  EXPECT_TRUE(engine->Encode(nothing, seq, &out).ok());
  EXPECT_TRUE(out.sequence.empty());
  EXPECT_TRUE(engine->Encode(good, seq, &out).ok());
  EXPECT_EQ(out.sequence.size(), 3u * 64);
}

TEST(CpuEngineTest, WorkspaceReusedAcrossShrinkingAndGrowingBatches) {
  auto model = SmallModel();
  CpuEngineOptions opts;
  opts.threads = 2;
  opts.max_batch_tokens = 64;
  auto engine = CpuEngine::Create(model, opts);
  ASSERT_TRUE(engine.ok());
  auto fresh = MakeEngine(model);
  OutputSelection sel;
  sel.sequence = true;
  for (int rows : {40, 3, 48}) {
    EncoderBatch batch;
    batch.Add(std::vector<int32_t>(rows, 7), {});
    batch.Add(std::vector<int32_t>(rows / 2 + 1, 9), {}, rows);
    EncoderOutput a, b;
    ASSERT_TRUE((*engine)->Encode(batch, sel, &a).ok());
    ASSERT_TRUE(fresh->Encode(batch, sel, &b).ok());
    EXPECT_EQ(a.sequence, b.sequence) << rows;
  }
}

TEST(EngineFactoryTest, BackendsAndDTypes) {
  auto model = SmallModel();
  EngineOptions opts;
  opts.backend = "cpu";
  opts.cpu_threads = 1;
  auto cpu = CreateEngine(model, opts);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ((*cpu)->info().backend, "cpu");
  EXPECT_EQ((*cpu)->info().dtype, DType::kFloat32);
  opts.backend = "auto";
  auto automatic = CreateEngine(model, opts);
  ASSERT_TRUE(automatic.ok()) << automatic.status();
  opts.backend = "tpu";
  EXPECT_EQ(CreateEngine(model, opts).status().code(), absl::StatusCode::kInvalidArgument);
  opts.backend = "cpu";
  opts.dtype = DType::kFloat16;
  EXPECT_EQ(CreateEngine(model, opts).status().code(), absl::StatusCode::kInvalidArgument);
  // The dtype by backend: float32 on the CPU, whatever `dtype` says.
  opts.auto_dtype = true;
  auto by_backend = CreateEngine(model, opts);
  ASSERT_TRUE(by_backend.ok()) << by_backend.status();
  EXPECT_EQ((*by_backend)->info().dtype, DType::kFloat32);
  // bfloat16 on the CPU is the AMX GEMM: with --cpu_gemm auto or amx_bf16, where the CPU has
  // it; float32 with amx_bf16 is refused, as is bfloat16 with a float32 GEMM.
  opts.auto_dtype = false;
  opts.dtype = DType::kBFloat16;
  const bool amx = cpu::LinearIsaAvailable(cpu::LinearIsa::kAmxBf16);
  for (const char* gemm : {"auto", "amx_bf16"}) {
    opts.cpu_gemm = gemm;
    auto bf16 = CreateEngine(model, opts);
    ASSERT_EQ(bf16.ok(), amx) << gemm << " " << bf16.status();
    if (amx) {
      EXPECT_EQ((*bf16)->info().dtype, DType::kBFloat16);
      EXPECT_NE((*bf16)->info().device.find("AMX bfloat16 packed GEMM"), std::string::npos)
          << (*bf16)->info().device;
    }
  }
  opts.cpu_gemm = "avx2";
  EXPECT_EQ(CreateEngine(model, opts).status().code(), absl::StatusCode::kInvalidArgument);
  opts.dtype = DType::kFloat32;
  opts.cpu_gemm = "amx_bf16";
  auto refused = CreateEngine(model, opts);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("--dtype=bfloat16"), std::string::npos)
      << refused.status();
  // With the dtype by backend, amx_bf16 picks bfloat16.
  opts.auto_dtype = true;
  auto by_gemm = CreateEngine(model, opts);
  ASSERT_EQ(by_gemm.ok(), amx) << by_gemm.status();
  if (amx) {
    EXPECT_EQ((*by_gemm)->info().dtype, DType::kBFloat16);
  }
  EXPECT_EQ(*ParseDType("bfloat16"), DType::kBFloat16);
  EXPECT_FALSE(ParseDType("int8").ok());
  EXPECT_STREQ(DTypeName(DType::kFloat16), "float16");
}

TEST(EncoderBatchTest, AddPadsAndCounts) {
  EncoderBatch b;
  b.Add({5, 6, 7}, {0, 1, 1}, 5);
  b.Add({8}, {});
  EXPECT_EQ(b.num_sequences(), 2);
  EXPECT_EQ(b.total_rows(), 6);
  EXPECT_EQ(b.max_rows(), 5);
  EXPECT_EQ(b.cu_rows, (std::vector<int32_t>{0, 5, 6}));
  EXPECT_EQ(b.num_valid, (std::vector<int32_t>{3, 1}));
  EXPECT_EQ(b.word_ids, (std::vector<int32_t>{5, 6, 7, 0, 0, 8}));
  EXPECT_EQ(b.type_ids, (std::vector<int32_t>{0, 1, 1, 0, 0, 0}));
  b.Clear();
  EXPECT_EQ(b.num_sequences(), 0);
  EXPECT_EQ(b.total_rows(), 0);
}

}  // namespace
}  // namespace bert
