// The CUDA kernels of kernels/cuda (all but attention, which has attention_test) and the
// cuBLASLt Gemm against their CPU twins in kernels/cpu, parameterised over dtype (fp32,
// fp16, bf16) and shapes (1 row/token, odd sizes, 512 rows, many sequences, each hidden size
// the models use). Inputs are fresh random values every run (rounded through the dtype so
// both sides see the same numbers); outputs are poisoned with NaN before each launch and
// must come back finite (fully written) and within the dtype's relative tolerance.
// Skips with the reason when no CUDA GPU is present or when built with --config=nocuda.
#include <gtest/gtest.h>

#if defined(BERT_WITH_CUDA)

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/layer_norm.h"
#include "kernels/cpu/pooling.h"
#include "kernels/cuda/activation.h"
#include "kernels/cuda/convert.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemm_test_util.h"
#include "kernels/cuda/layer_norm.h"
#include "kernels/cuda/pooling.h"
#include "kernels/cuda/test_util.h"

namespace bert {
namespace cuda {
namespace {

using testing_util::CountNonFinite;
using testing_util::DeviceArray;
using testing_util::EngineGemm;
using testing_util::FreshRng;
using testing_util::GemmCase;
using testing_util::GemmOperands;
using testing_util::GemmReference;
using testing_util::GemmTolerance;
using testing_util::HaveGpu;
using testing_util::MakeGemmCase;
using testing_util::MakeGemmOperands;
using testing_util::RandomVector;
using testing_util::RelativeError;
using testing_util::RoundThrough;
using testing_util::TestDType;
using testing_util::TestDTypeName;
using testing_util::Tolerance;

void ExpectClose(const std::vector<float>& got, const std::vector<float>& ref, TestDType dtype,
                 const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  EXPECT_EQ(CountNonFinite(got), 0u) << what << ": outputs not written (NaN poison left)";
  EXPECT_LE(RelativeError(got, ref), Tolerance(dtype)) << what;
}

// ---------------------------------------------------------------------------------------
// Row kernels: bias + residual + LayerNorm, bias + GELU.

struct RowShape {
  int rows;
  int hidden;
};

using RowParam = std::tuple<TestDType, RowShape>;

class RowKernelTest : public ::testing::TestWithParam<RowParam> {
 protected:
  void SetUp() override {
    std::string why;
    if (!HaveGpu(&why)) GTEST_SKIP() << why;
  }
};

// Operands of a bias + residual + LayerNorm over `s`, the 16-bit ones rounded through T.
struct LnOperands {
  std::vector<float> x, residual, bias, gamma, beta;
};

template <typename T>
LnOperands MakeLnOperands(RowShape s) {
  std::mt19937 rng = FreshRng();
  const size_t n = static_cast<size_t>(s.rows) * s.hidden;
  LnOperands o{RandomVector(n, rng, 2.0f), RandomVector(n, rng), RandomVector(s.hidden, rng, 0.5f),
               RandomVector(s.hidden, rng, 0.3f), RandomVector(s.hidden, rng)};
  for (float& g : o.gamma) g += 1.0f;
  RoundThrough<T>(&o.x);
  RoundThrough<T>(&o.residual);
  RoundThrough<T>(&o.bias);
  return o;
}

template <typename T>
void CheckAddBiasResidualLayerNorm(RowShape s, TestDType dtype, bool with_bias, bool in_place,
                                   bool with_residual = true) {
  const size_t n = static_cast<size_t>(s.rows) * s.hidden;
  const auto [x, residual, bias, gamma, beta] = MakeLnOperands<T>(s);
  std::vector<float> ref(n);
  cpu::AddBiasResidualLayerNorm(x.data(), with_bias ? bias.data() : nullptr,
                                with_residual ? residual.data() : nullptr, gamma.data(),
                                beta.data(), s.rows, s.hidden, 1e-12f, ref.data());

  DeviceArray<T> d_x(x), d_res(residual), d_bias(bias), d_out(n);
  DeviceArray<float> d_gamma(gamma), d_beta(beta);
  ASSERT_STATUS_OK(d_out.status());
  T* out = in_place ? d_res.get() : d_out.get();
  if (!in_place) ASSERT_CUDA_OK(d_out.Poison());
  ASSERT_CUDA_OK(LaunchAddBiasResidualLayerNorm<T>(
      d_x.get(), with_bias ? d_bias.get() : nullptr, with_residual ? d_res.get() : nullptr,
      d_gamma.get(), d_beta.get(), s.rows, s.hidden, 1e-12f, out, nullptr));
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  const std::vector<float> got = in_place ? d_res.Download() : d_out.Download();
  ExpectClose(got, ref, dtype,
              std::string("AddBiasResidualLayerNorm bias=") + (with_bias ? "1" : "0") +
                  " in_place=" + (in_place ? "1" : "0") +
                  " residual=" + (with_residual ? "1" : "0"));
}

// The two LayerNorm variants (gamma/beta loaded before or after the reductions; the row
// count picks one, CudaEngineOptions::layer_norm_hoist_max_rows moves the limit) differ only in
// when they load, so they must give the same bits.
template <typename T>
void CheckLayerNormVariantsAgree(RowShape s) {
  const size_t n = static_cast<size_t>(s.rows) * s.hidden;
  const auto [x, residual, bias, gamma, beta] = MakeLnOperands<T>(s);
  DeviceArray<T> d_x(x), d_res(residual), d_bias(bias), d_early(n), d_late(n);
  DeviceArray<float> d_gamma(gamma), d_beta(beta);
  ASSERT_STATUS_OK(d_late.status());
  ASSERT_CUDA_OK(d_early.Poison());
  ASSERT_CUDA_OK(d_late.Poison());
  ASSERT_CUDA_OK(LaunchAddBiasResidualLayerNorm<T>(
      d_x.get(), d_bias.get(), d_res.get(), d_gamma.get(), d_beta.get(), s.rows, s.hidden, 1e-12f,
      d_early.get(), nullptr, /*programmatic=*/false, /*hoist_max_rows=*/s.rows));
  ASSERT_CUDA_OK(LaunchAddBiasResidualLayerNorm<T>(
      d_x.get(), d_bias.get(), d_res.get(), d_gamma.get(), d_beta.get(), s.rows, s.hidden, 1e-12f,
      d_late.get(), nullptr, /*programmatic=*/false, /*hoist_max_rows=*/0));
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  const std::vector<float> early = d_early.Download(), late = d_late.Download();
  EXPECT_EQ(CountNonFinite(early), 0u);
  EXPECT_TRUE(early == late) << "rows=" << s.rows << " hidden=" << s.hidden;
}

TEST_P(RowKernelTest, LayerNormVariantsGiveTheSameBits) {
  const auto [dtype, shape] = GetParam();
  DISPATCH_DTYPE(dtype, CheckLayerNormVariantsAgree, shape);
}

TEST_P(RowKernelTest, AddBiasResidualLayerNorm) {
  const auto [dtype, shape] = GetParam();
  DISPATCH_DTYPE(dtype, CheckAddBiasResidualLayerNorm, shape, dtype, true, false);
  DISPATCH_DTYPE(dtype, CheckAddBiasResidualLayerNorm, shape, dtype, false, false);
  DISPATCH_DTYPE(dtype, CheckAddBiasResidualLayerNorm, shape, dtype, true, true);
  DISPATCH_DTYPE(dtype, CheckAddBiasResidualLayerNorm, shape, dtype, true, false, false);
}

template <typename T>
void CheckBiasGelu(RowShape s, TestDType dtype, GeluKind kind) {
  std::mt19937 rng = FreshRng();
  const size_t n = static_cast<size_t>(s.rows) * s.hidden;
  std::vector<float> x = RandomVector(n, rng, 2.0f), bias = RandomVector(s.hidden, rng, 0.5f);
  RoundThrough<T>(&x);
  RoundThrough<T>(&bias);
  std::vector<float> ref = x;
  cpu::ApplyEpilogue(
      ref.data(), s.rows, s.hidden, bias.data(),
      kind == GeluKind::kErf ? cpu::Epilogue::kBiasGeluErf : cpu::Epilogue::kBiasGeluTanh);
  DeviceArray<T> d_x(x), d_bias(bias);
  ASSERT_STATUS_OK(d_x.status());
  ASSERT_CUDA_OK(LaunchBiasGelu<T>(d_x.get(), d_bias.get(), s.rows, s.hidden, kind, nullptr));
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  ExpectClose(d_x.Download(), ref, dtype, kind == GeluKind::kErf ? "GELU erf" : "GELU tanh");
}

TEST_P(RowKernelTest, BiasGelu) {
  const auto [dtype, shape] = GetParam();
  DISPATCH_DTYPE(dtype, CheckBiasGelu, shape, dtype, GeluKind::kErf);
  DISPATCH_DTYPE(dtype, CheckBiasGelu, shape, dtype, GeluKind::kTanh);
}

const TestDType kAllDTypes[] = {TestDType::kF32, TestDType::kF16, TestDType::kBF16};

// 2100 x 768 is past kDefaultLayerNormHoistMaxRows (layer_norm.h): the other LayerNorm variant.
INSTANTIATE_TEST_SUITE_P(Shapes, RowKernelTest,
                         ::testing::Combine(::testing::ValuesIn(kAllDTypes),
                                            ::testing::Values(RowShape{1, 768}, RowShape{7, 384},
                                                              RowShape{512, 128}, RowShape{33, 64},
                                                              RowShape{300, 768}, RowShape{5, 100},
                                                              RowShape{3, 1024}, RowShape{2, 1000},
                                                              RowShape{2100, 768})),
                         [](const auto& info) {
                           const RowShape s = std::get<1>(info.param);
                           return std::string(TestDTypeName(std::get<0>(info.param))) + "_r" +
                                  std::to_string(s.rows) + "_h" + std::to_string(s.hidden);
                         });

TEST(LayerNormArgs, UnsupportedHiddenIsAnError) {
  std::string why;
  if (!HaveGpu(&why)) GTEST_SKIP() << why;
  EXPECT_EQ(
      LaunchAddBiasResidualLayerNorm<float>(nullptr, nullptr, nullptr, nullptr, nullptr, 4,
                                            kMaxLayerNormHidden + 4, 1e-12f, nullptr, nullptr),
      cudaErrorInvalidValue);
  EXPECT_EQ(LaunchAddBiasResidualLayerNorm<float>(nullptr, nullptr, nullptr, nullptr, nullptr, 0,
                                                  768, 1e-12f, nullptr, nullptr),
            cudaSuccess);
}

// ---------------------------------------------------------------------------------------
// Ragged-batch kernels: embedding + LayerNorm, pooler, mean pooling, L2 normalise.

struct SeqCase {
  std::string name;
  std::vector<int> rows;   // rows per sequence
  std::vector<int> valid;  // real tokens per sequence (empty: all rows)
  int hidden;
};

using SeqParam = std::tuple<TestDType, SeqCase>;

class SeqKernelTest : public ::testing::TestWithParam<SeqParam> {
 protected:
  void SetUp() override {
    std::string why;
    if (!HaveGpu(&why)) GTEST_SKIP() << why;
  }
};

struct Ragged {
  std::vector<int32_t> cu_rows{0};
  std::vector<int32_t> num_valid;
  int total() const { return cu_rows.back(); }
  int num_seqs() const { return static_cast<int>(num_valid.size()); }
};

Ragged MakeRagged(const SeqCase& c) {
  Ragged r;
  for (size_t i = 0; i < c.rows.size(); ++i) {
    r.cu_rows.push_back(r.cu_rows.back() + c.rows[i]);
    r.num_valid.push_back(c.valid.empty() ? c.rows[i] : c.valid[i]);
  }
  return r;
}

template <typename T>
void CheckEmbedding(const SeqCase& c, TestDType dtype, bool with_types) {
  std::mt19937 rng = FreshRng();
  const Ragged r = MakeRagged(c);
  const int h = c.hidden, vocab = 1000, positions = 512, types = 2;
  std::vector<int32_t> words(r.total()), type_ids(r.total());
  std::uniform_int_distribution<int> wd(0, vocab - 1), td(0, types - 1);
  for (int i = 0; i < r.total(); ++i) {
    words[i] = wd(rng);
    type_ids[i] = td(rng);
  }
  std::vector<float> word_table = RandomVector(static_cast<size_t>(vocab) * h, rng),
                     pos_table = RandomVector(static_cast<size_t>(positions) * h, rng),
                     type_table = RandomVector(static_cast<size_t>(types) * h, rng),
                     gamma = RandomVector(h, rng, 0.2f), beta = RandomVector(h, rng, 0.2f);
  for (float& g : gamma) g += 1.0f;
  RoundThrough<T>(&word_table);
  RoundThrough<T>(&pos_table);
  RoundThrough<T>(&type_table);
  std::vector<float> ref(static_cast<size_t>(r.total()) * h);
  cpu::EmbeddingLayerNorm(words.data(), with_types ? type_ids.data() : nullptr, r.cu_rows.data(),
                          r.num_seqs(), word_table.data(), pos_table.data(), type_table.data(),
                          gamma.data(), beta.data(), h, 1e-12f, ref.data());

  DeviceBuffer<int32_t> d_words, d_types, d_cu;
  ASSERT_STATUS_OK(d_words.Allocate(words.size()));
  ASSERT_STATUS_OK(d_types.Allocate(type_ids.size()));
  ASSERT_STATUS_OK(d_cu.Allocate(r.cu_rows.size()));
  ASSERT_CUDA_OK(cudaMemcpy(d_words.get(), words.data(), words.size() * 4, cudaMemcpyHostToDevice));
  ASSERT_CUDA_OK(
      cudaMemcpy(d_types.get(), type_ids.data(), type_ids.size() * 4, cudaMemcpyHostToDevice));
  ASSERT_CUDA_OK(
      cudaMemcpy(d_cu.get(), r.cu_rows.data(), r.cu_rows.size() * 4, cudaMemcpyHostToDevice));
  DeviceArray<T> d_word_table(word_table), d_pos(pos_table), d_type_table(type_table);
  DeviceArray<float> d_gamma(gamma), d_beta(beta);
  DeviceArray<T> d_out(ref.size());
  ASSERT_STATUS_OK(d_out.status());
  ASSERT_CUDA_OK(d_out.Poison());
  ASSERT_CUDA_OK(LaunchEmbeddingLayerNorm<T>(
      d_words.get(), with_types ? d_types.get() : nullptr, d_cu.get(), r.num_seqs(), r.total(),
      d_word_table.get(), d_pos.get(), d_type_table.get(), d_gamma.get(), d_beta.get(), h, 1e-12f,
      d_out.get(), nullptr));
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  ExpectClose(d_out.Download(), ref, dtype,
              "EmbeddingLayerNorm " + c.name + (with_types ? "" : " (no type ids)"));
}

TEST_P(SeqKernelTest, EmbeddingLayerNorm) {
  const auto& [dtype, c] = GetParam();
  DISPATCH_DTYPE(dtype, CheckEmbedding, c, dtype, true);
  DISPATCH_DTYPE(dtype, CheckEmbedding, c, dtype, false);
}

// Pooler = gather first rows, GEMM without epilogue, bias + tanh to fp32; then mean pooling
// and L2 normalisation of both.
template <typename T>
void CheckPooling(const SeqCase& c, TestDType dtype) {
  std::mt19937 rng = FreshRng();
  const Ragged r = MakeRagged(c);
  const int h = c.hidden, n = r.num_seqs();
  std::vector<float> hs = RandomVector(static_cast<size_t>(r.total()) * h, rng),
                     weight = RandomVector(static_cast<size_t>(h) * h, rng, 0.05f),
                     bias = RandomVector(h, rng, 0.1f);
  RoundThrough<T>(&hs);
  RoundThrough<T>(&weight);
  RoundThrough<T>(&bias);
  std::vector<float> ref_pooled(static_cast<size_t>(n) * h), ref_mean(ref_pooled.size());
  cpu::Pooler(hs.data(), r.cu_rows.data(), n, h, weight.data(), bias.data(), ref_pooled.data());
  cpu::MeanPool(hs.data(), r.cu_rows.data(), r.num_valid.data(), n, h, ref_mean.data());

  DeviceBuffer<int32_t> d_cu, d_valid;
  ASSERT_STATUS_OK(d_cu.Allocate(r.cu_rows.size()));
  ASSERT_STATUS_OK(d_valid.Allocate(r.num_valid.size()));
  ASSERT_CUDA_OK(
      cudaMemcpy(d_cu.get(), r.cu_rows.data(), r.cu_rows.size() * 4, cudaMemcpyHostToDevice));
  ASSERT_CUDA_OK(cudaMemcpy(d_valid.get(), r.num_valid.data(), r.num_valid.size() * 4,
                            cudaMemcpyHostToDevice));
  DeviceArray<T> d_hs(hs), d_w(weight), d_b(bias), d_first(ref_pooled.size()),
      d_dense(ref_pooled.size());
  DeviceArray<float> d_pooled(ref_pooled.size()), d_mean(ref_mean.size());
  ASSERT_STATUS_OK(d_dense.status());
  ASSERT_CUDA_OK(d_first.Poison());
  ASSERT_CUDA_OK(d_dense.Poison());
  ASSERT_CUDA_OK(d_pooled.Poison());
  ASSERT_CUDA_OK(d_mean.Poison());
  std::unique_ptr<Gemm> gemm;
  ASSERT_STATUS_OK(Gemm::Create(GemmOptions(), &gemm));

  ASSERT_CUDA_OK(LaunchGatherFirstRows<T>(d_hs.get(), d_cu.get(), n, h, d_first.get(), nullptr));
  ASSERT_STATUS_OK(gemm->Run<T>(d_first.get(), n, h, d_w.get(), nullptr, h, GemmEpilogue::kNone,
                                d_dense.get(), nullptr));
  ASSERT_CUDA_OK(LaunchBiasTanhToFloat<T>(d_dense.get(), d_b.get(), n, h, d_pooled.get(), nullptr));
  ASSERT_CUDA_OK(
      LaunchMeanPool<T>(d_hs.get(), d_cu.get(), d_valid.get(), n, h, d_mean.get(), nullptr));
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  ExpectClose(d_pooled.Download(), ref_pooled, dtype, "Pooler " + c.name);
  ExpectClose(d_mean.Download(), ref_mean, dtype, "MeanPool " + c.name);

  // L2 normalise (fp32 in and out) of the reference mean, so only normalisation is tested.
  DeviceArray<float> d_norm(ref_mean);
  std::vector<float> ref_norm = ref_mean;
  cpu::L2Normalize(ref_norm.data(), n, h);
  ASSERT_CUDA_OK(LaunchL2Normalize(d_norm.get(), n, h, nullptr));
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  ExpectClose(d_norm.Download(), ref_norm, TestDType::kF32, "L2Normalize " + c.name);
}

TEST_P(SeqKernelTest, PoolerMeanPoolL2Normalize) {
  const auto& [dtype, c] = GetParam();
  DISPATCH_DTYPE(dtype, CheckPooling, c, dtype);
}

std::vector<SeqCase> SeqCases() {
  std::vector<SeqCase> cases;
  cases.push_back({"OneToken_h768", {1}, {}, 768});
  cases.push_back({"Odd_h384", {3, 17, 1, 5, 33}, {2, 17, 1, 4, 30}, 384});
  cases.push_back({"Full512_h128", {512}, {}, 128});
  cases.push_back({"Two512_h64", {512, 512}, {500, 512}, 64});
  // Many sequences of varied lengths (deterministic shape, random values).
  SeqCase many{"Many_h768", {}, {}, 768};
  std::mt19937 shape_rng(7);
  for (int i = 0; i < 100; ++i) {
    const int rows = 1 + static_cast<int>(shape_rng() % 60);
    many.rows.push_back(rows);
    many.valid.push_back(1 + static_cast<int>(shape_rng() % rows));
  }
  cases.push_back(many);
  cases.push_back({"Odd_h100", {9, 2}, {}, 100});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Batches, SeqKernelTest,
                         ::testing::Combine(::testing::ValuesIn(kAllDTypes),
                                            ::testing::ValuesIn(SeqCases())),
                         [](const auto& info) {
                           return std::string(TestDTypeName(std::get<0>(info.param))) + "_" +
                                  std::get<1>(info.param).name;
                         });

// ---------------------------------------------------------------------------------------
// cuBLASLt Gemm vs cpu::Linear, with each epilogue; the erf GELU path (kNone + BiasGelu).

struct GemmShape {
  int rows, in, out;
};

using GemmParam = std::tuple<TestDType, GemmShape>;

class GemmTest : public ::testing::TestWithParam<GemmParam> {
 protected:
  void SetUp() override {
    std::string why;
    if (!HaveGpu(&why)) GTEST_SKIP() << why;
  }
};

template <typename T>
void CheckGemm(GemmShape s, TestDType dtype) {
  std::mt19937 rng = FreshRng();
  const GemmOperands o = MakeGemmOperands<T>(s.rows, s.in, s.out, /*with_residual=*/true, rng);
  DeviceArray<T> d_x(o.x), d_w(o.w), d_b(o.b), d_y(static_cast<size_t>(s.rows) * s.out);
  ASSERT_STATUS_OK(d_y.status());
  std::unique_ptr<Gemm> gemm;
  ASSERT_STATUS_OK(Gemm::Create(GemmOptions(), &gemm));
  struct Case {
    GemmEpilogue gpu;
    cpu::Epilogue cpu;
    bool erf_kernel;
    const char* name;
  };
  const Case cases[] = {
      {GemmEpilogue::kNone, cpu::Epilogue::kNone, false, "none"},
      {GemmEpilogue::kBias, cpu::Epilogue::kBias, false, "bias"},
      {GemmEpilogue::kBiasGeluTanh, cpu::Epilogue::kBiasGeluTanh, false, "bias_gelu_tanh"},
      {GemmEpilogue::kNone, cpu::Epilogue::kBiasGeluErf, true, "none+bias_gelu_erf kernel"},
  };
  for (const Case& c : cases) {
    const std::vector<float> ref = GemmReference(o, c.cpu);
    ASSERT_CUDA_OK(d_y.Poison());
    ASSERT_STATUS_OK(gemm->Run<T>(d_x.get(), s.rows, s.in, d_w.get(),
                                  c.gpu == GemmEpilogue::kNone ? nullptr : d_b.get(), s.out, c.gpu,
                                  d_y.get(), nullptr));
    if (c.erf_kernel) {
      ASSERT_CUDA_OK(
          LaunchBiasGelu<T>(d_y.get(), d_b.get(), s.rows, s.out, GeluKind::kErf, nullptr));
    }
    ASSERT_CUDA_OK(cudaDeviceSynchronize());
    const std::vector<float> got = d_y.Download();
    if (c.gpu == GemmEpilogue::kBiasGeluTanh) {
      // cuBLASLt's GELU epilogue may evaluate tanh approximately (the fp32 engine therefore
      // does not use it); a wrong layout or bias would still be off by O(1).
      ASSERT_EQ(got.size(), ref.size());
      EXPECT_EQ(CountNonFinite(got), 0u) << c.name;
      const double err = RelativeError(got, ref);
      // Against the erf form as well: says which GELU the epilogue computes (the two differ
      // by up to 4.7e-4).
      std::vector<float> ref_erf(ref.size());
      cpu::Linear(o.x.data(), s.rows, s.in, o.w.data(), o.b.data(), s.out,
                  cpu::Epilogue::kBiasGeluErf, ref_erf.data());
      std::printf("Gemm %s %s relative error %.3g (vs erf GELU: %.3g)\n", c.name,
                  TestDTypeName(dtype), err, RelativeError(got, ref_erf));
      EXPECT_LE(err, GemmTolerance(dtype, c.gpu)) << "Gemm " << c.name;
    } else {
      ExpectClose(got, ref, dtype, std::string("Gemm ") + c.name);
    }
  }
  // The same shape again reuses the cached plans.
  const size_t plans = gemm->num_plans();
  ASSERT_STATUS_OK(gemm->Run<T>(d_x.get(), s.rows, s.in, d_w.get(), d_b.get(), s.out,
                                GemmEpilogue::kBias, d_y.get(), nullptr));
  EXPECT_EQ(gemm->num_plans(), plans);

  // kBiasResidual: y = x·Wᵀ + b + residual (C = residual, beta = 1), untuned and autotuned (the
  // timed runs must leave the residual alone and y right).
  DeviceArray<T> d_r(o.r);
  ASSERT_STATUS_OK(d_r.status());
  const std::vector<float> ref = GemmReference(o, cpu::Epilogue::kBias, /*add_residual=*/true);
  GemmOptions tuned_options;
  tuned_options.autotune = true;
  std::unique_ptr<Gemm> tuned;
  ASSERT_STATUS_OK(Gemm::Create(tuned_options, &tuned));
  CudaStream stream;
  ASSERT_STATUS_OK(stream.Create());
  for (Gemm* g : {gemm.get(), tuned.get()}) {
    const std::string what =
        std::string("Gemm bias+residual") + (g == tuned.get() ? " autotuned" : "");
    ASSERT_CUDA_OK(d_y.Poison());
    ASSERT_STATUS_OK(g->Run<T>(d_x.get(), s.rows, s.in, d_w.get(), d_b.get(), s.out,
                               GemmEpilogue::kBiasResidual, d_y.get(), stream.get(), d_r.get()));
    ASSERT_CUDA_OK(cudaStreamSynchronize(stream.get()));
    ExpectClose(d_y.Download(), ref, dtype, what);
    EXPECT_EQ(d_r.Download(), o.r) << what << ": the residual changed";
  }
  // A residual goes with kBiasResidual only.
  EXPECT_FALSE(gemm->Run<T>(d_x.get(), s.rows, s.in, d_w.get(), d_b.get(), s.out,
                            GemmEpilogue::kBias, d_y.get(), nullptr, d_r.get())
                   .ok());
  EXPECT_FALSE(gemm->Run<T>(d_x.get(), s.rows, s.in, d_w.get(), d_b.get(), s.out,
                            GemmEpilogue::kBiasResidual, d_y.get(), nullptr)
                   .ok());
}

TEST_P(GemmTest, MatchesCpuLinear) {
  const auto [dtype, shape] = GetParam();
  DISPATCH_DTYPE(dtype, CheckGemm, shape, dtype);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GemmTest,
    ::testing::Combine(::testing::ValuesIn(kAllDTypes),
                       ::testing::Values(GemmShape{1, 768, 2304}, GemmShape{7, 384, 1536},
                                         GemmShape{512, 128, 512}, GemmShape{33, 64, 64},
                                         GemmShape{129, 3072, 768}, GemmShape{3, 100, 36})),
    [](const auto& info) {
      const GemmShape s = std::get<1>(info.param);
      return std::string(TestDTypeName(std::get<0>(info.param))) + "_" + std::to_string(s.rows) +
             "x" + std::to_string(s.in) + "x" + std::to_string(s.out);
    });

// ---------------------------------------------------------------------------------------
// cuBLASLt Gemm with autotune (timed algorithm choice per row bucket): the engine's shapes
// against cpu::Linear and against autotune off; reuse within a bucket; graph capture.

// BERT-base: QKV, attention output (and pooler), FFN in (plain and GELU-bias), FFN out.
const EngineGemm kEngineGemms[] = {
    {768, 2304, GemmEpilogue::kBias, cpu::Epilogue::kBias, "qkv"},
    {768, 768, GemmEpilogue::kNone, cpu::Epilogue::kNone, "attn_out"},
    {768, 3072, GemmEpilogue::kNone, cpu::Epilogue::kNone, "ffn_in"},
    {768, 3072, GemmEpilogue::kBiasGeluTanh, cpu::Epilogue::kBiasGeluTanh, "ffn_in_gelu"},
    {3072, 768, GemmEpilogue::kNone, cpu::Epilogue::kNone, "ffn_out"},
};

std::unique_ptr<Gemm> MakeGemm(bool autotune, bool fail_timing = false) {
  GemmOptions options;
  options.autotune = autotune;
  options.fail_timing_for_testing = fail_timing;
  std::unique_ptr<Gemm> gemm;
  const CudaStatus st = Gemm::Create(options, &gemm);
  EXPECT_TRUE(st.ok()) << st.message();
  return gemm;
}

class GemmAutotuneTest : public ::testing::TestWithParam<TestDType> {
 protected:
  void SetUp() override {
    std::string why;
    if (!HaveGpu(&why)) GTEST_SKIP() << why;
  }
};

template <typename T>
void CheckAutotunedEngineShapes(TestDType dtype) {
  std::mt19937 rng = FreshRng();
  std::unique_ptr<Gemm> tuned = MakeGemm(true), plain = MakeGemm(false);
  ASSERT_TRUE(tuned != nullptr && plain != nullptr);
  for (const int rows : {1, 128, 1000, 4096}) {
    for (const EngineGemm& g : kEngineGemms) {
      const std::string what =
          std::string(g.name) + " rows=" + std::to_string(rows) + " " + TestDTypeName(dtype);
      const GemmCase c = MakeGemmCase<T>(rows, g, rng);
      DeviceArray<T> d_x(c.x), d_w(c.w), d_b(c.b), d_y(c.ref.size()), d_plain(c.ref.size());
      ASSERT_STATUS_OK(d_plain.status());
      ASSERT_CUDA_OK(d_y.Poison());
      ASSERT_CUDA_OK(d_plain.Poison());
      const T* bias = g.gpu == GemmEpilogue::kNone ? nullptr : d_b.get();
      const GemmStats before = tuned->stats();
      ASSERT_STATUS_OK(
          tuned->Run<T>(d_x.get(), rows, g.in, d_w.get(), bias, g.out, g.gpu, d_y.get(), nullptr));
      ASSERT_STATUS_OK(plain->Run<T>(d_x.get(), rows, g.in, d_w.get(), bias, g.out, g.gpu,
                                     d_plain.get(), nullptr));
      ASSERT_CUDA_OK(cudaDeviceSynchronize());
      const std::vector<float> got = d_y.Download(), untuned = d_plain.Download();
      ASSERT_EQ(got.size(), c.ref.size());
      EXPECT_EQ(CountNonFinite(got), 0u) << what << ": outputs not written";
      const double tol = GemmTolerance(dtype, g.gpu);
      EXPECT_LE(RelativeError(got, c.ref), tol) << what << " (tuned vs CPU)";
      EXPECT_LE(RelativeError(got, untuned), tol) << what << " (tuned vs autotune off)";
      // Every (rows, shape) here is a new bucket: tuned once, by timing, without fallback.
      const GemmStats& after = tuned->stats();
      EXPECT_EQ(after.tuned_buckets, before.tuned_buckets + 1) << what;
      EXPECT_GT(after.timed_candidates, before.timed_candidates) << what;
      EXPECT_EQ(after.tuning_fallbacks, before.tuning_fallbacks) << what;
      std::printf("%-40s tuned:   %s\n%-40s untuned: %s\n", what.c_str(),
                  tuned->DescribePlan<T>(rows, g.in, g.out, g.gpu).c_str(), "",
                  plain->DescribePlan<T>(rows, g.in, g.out, g.gpu).c_str());
    }
  }
  EXPECT_EQ(plain->stats().tuned_buckets, 0);
  EXPECT_EQ(plain->stats().timed_candidates, 0);
}

TEST_P(GemmAutotuneTest, EngineShapesMatchCpuAndUntuned) {
  const TestDType dtype = GetParam();
  DISPATCH_DTYPE(dtype, CheckAutotunedEngineShapes, dtype);
}

// A second call of the same rows, and a new row count of the same bucket, do not time
// anything; the next bucket does.
template <typename T>
void CheckBucketReuse(TestDType dtype) {
  std::mt19937 rng = FreshRng();
  const EngineGemm& g = kEngineGemms[0];  // bias epilogue
  const int max_rows = 129;
  const GemmCase c = MakeGemmCase<T>(max_rows, g, rng);
  DeviceArray<T> d_x(c.x), d_w(c.w), d_b(c.b), d_y(c.ref.size());
  ASSERT_STATUS_OK(d_y.status());
  std::unique_ptr<Gemm> gemm = MakeGemm(true);
  ASSERT_TRUE(gemm != nullptr);
  // Row r of the output depends on row r of x only: the first `rows` rows of the reference.
  auto run_and_check = [&](int rows) {
    ASSERT_CUDA_OK(d_y.Poison());
    ASSERT_STATUS_OK(gemm->Run<T>(d_x.get(), rows, g.in, d_w.get(), d_b.get(), g.out, g.gpu,
                                  d_y.get(), nullptr));
    ASSERT_CUDA_OK(cudaDeviceSynchronize());
    std::vector<float> got = d_y.Download();
    got.resize(static_cast<size_t>(rows) * g.out);
    const std::vector<float> ref(c.ref.begin(), c.ref.begin() + got.size());
    ExpectClose(got, ref, dtype, "bucket reuse rows=" + std::to_string(rows));
  };
  EXPECT_EQ(Gemm::RowBucket(1), 16);
  EXPECT_EQ(Gemm::RowBucket(16), 16);
  EXPECT_EQ(Gemm::RowBucket(100), 128);
  EXPECT_EQ(Gemm::RowBucket(128), 128);
  EXPECT_EQ(Gemm::RowBucket(129), 256);

  run_and_check(100);
  const GemmStats first = gemm->stats();
  EXPECT_EQ(first.plans, 1);
  EXPECT_EQ(first.tuned_buckets, 1);
  EXPECT_GT(first.timed_candidates, 0);

  run_and_check(100);  // same plan
  EXPECT_EQ(gemm->stats().plans, 1);
  EXPECT_EQ(gemm->stats().tuned_buckets, 1);
  EXPECT_EQ(gemm->stats().timed_candidates, first.timed_candidates);

  run_and_check(120);  // same bucket (128), new exact plan: no timing
  EXPECT_EQ(gemm->stats().plans, 2);
  EXPECT_EQ(gemm->stats().tuned_buckets, 1);
  EXPECT_EQ(gemm->stats().timed_candidates, first.timed_candidates);
  EXPECT_EQ(gemm->stats().bucket_reuses + gemm->stats().bucket_rejections, 1);
  std::printf("rows=100: %s\nrows=120: %s\n",
              gemm->DescribePlan<T>(100, g.in, g.out, g.gpu).c_str(),
              gemm->DescribePlan<T>(120, g.in, g.out, g.gpu).c_str());

  run_and_check(129);  // next bucket (256)
  EXPECT_EQ(gemm->stats().plans, 3);
  EXPECT_EQ(gemm->stats().tuned_buckets, 2);
  EXPECT_GT(gemm->stats().timed_candidates, first.timed_candidates);
}

TEST_P(GemmAutotuneTest, SameBucketDoesNotRetune) {
  const TestDType dtype = GetParam();
  DISPATCH_DTYPE(dtype, CheckBucketReuse, dtype);
}

// A first call made while the stream captures a graph uses the heuristic, times nothing,
// and the graph computes the right result; the next eager call tunes the plan.
template <typename T>
void CheckCapture(TestDType dtype) {
  std::mt19937 rng = FreshRng();
  const EngineGemm& g = kEngineGemms[3];  // GELU-bias epilogue
  const int rows = 200;
  const GemmCase c = MakeGemmCase<T>(rows, g, rng);
  DeviceArray<T> d_x(c.x), d_w(c.w), d_b(c.b), d_y(c.ref.size()), d_plain(c.ref.size());
  ASSERT_STATUS_OK(d_plain.status());
  CudaStream stream;
  ASSERT_STATUS_OK(stream.Create());
  std::unique_ptr<Gemm> tuned = MakeGemm(true), plain = MakeGemm(false);
  ASSERT_TRUE(tuned != nullptr && plain != nullptr);
  const double tol = GemmTolerance(dtype, g.gpu);

  // Eager, untuned first (this also loads the heuristic's kernel before the capture).
  ASSERT_CUDA_OK(d_plain.Poison());
  ASSERT_STATUS_OK(plain->Run<T>(d_x.get(), rows, g.in, d_w.get(), d_b.get(), g.out, g.gpu,
                                 d_plain.get(), stream.get()));
  ASSERT_CUDA_OK(cudaStreamSynchronize(stream.get()));
  const std::vector<float> untuned = d_plain.Download();

  ASSERT_CUDA_OK(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal));
  const CudaStatus captured = tuned->Run<T>(d_x.get(), rows, g.in, d_w.get(), d_b.get(), g.out,
                                            g.gpu, d_y.get(), stream.get());
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream.get(), &graph);
  ASSERT_TRUE(captured.ok()) << captured.message();
  ASSERT_CUDA_OK(ended);
  ASSERT_TRUE(graph != nullptr);
  cudaGraphExec_t exec_raw = nullptr;
  const cudaError_t instantiated = cudaGraphInstantiate(&exec_raw, graph, 0);
  cudaGraphDestroy(graph);
  ASSERT_CUDA_OK(instantiated);
  CudaGraphExec exec;
  exec.Adopt(exec_raw);
  EXPECT_EQ(tuned->stats().plans, 1);
  EXPECT_EQ(tuned->stats().capture_selections, 1);
  EXPECT_EQ(tuned->stats().tuned_buckets, 0);
  EXPECT_EQ(tuned->stats().timed_candidates, 0);
  std::printf("captured: %s\n", tuned->DescribePlan<T>(rows, g.in, g.out, g.gpu).c_str());

  auto launch_and_check = [&](const std::string& what) {
    ASSERT_CUDA_OK(d_y.Poison());
    ASSERT_CUDA_OK(cudaGraphLaunch(exec.get(), stream.get()));
    ASSERT_CUDA_OK(cudaStreamSynchronize(stream.get()));
    const std::vector<float> got = d_y.Download();
    EXPECT_EQ(CountNonFinite(got), 0u) << what;
    EXPECT_LE(RelativeError(got, c.ref), tol) << what << " vs CPU";
    EXPECT_LE(RelativeError(got, untuned), tol) << what << " vs autotune off";
  };
  launch_and_check("graph");

  // Not capturing any more: the provisional plan is tuned now (same plan, one bucket).
  ASSERT_CUDA_OK(d_y.Poison());
  ASSERT_STATUS_OK(tuned->Run<T>(d_x.get(), rows, g.in, d_w.get(), d_b.get(), g.out, g.gpu,
                                 d_y.get(), stream.get()));
  ASSERT_CUDA_OK(cudaStreamSynchronize(stream.get()));
  const std::vector<float> eager = d_y.Download();
  EXPECT_EQ(CountNonFinite(eager), 0u);
  EXPECT_LE(RelativeError(eager, c.ref), tol) << "eager after capture vs CPU";
  EXPECT_EQ(tuned->stats().plans, 1);
  EXPECT_EQ(tuned->stats().tuned_buckets, 1);
  EXPECT_GT(tuned->stats().timed_candidates, 0);
  std::printf("tuned:    %s\n", tuned->DescribePlan<T>(rows, g.in, g.out, g.gpu).c_str());

  // The graph recorded its own launch: still right after the plan changed.
  launch_and_check("graph after tuning");
}

TEST_P(GemmAutotuneTest, CaptureUsesHeuristicWithoutTuning) {
  const TestDType dtype = GetParam();
  DISPATCH_DTYPE(dtype, CheckCapture, dtype);
}

// When no candidate of a bucket can be timed, the heuristic's first choice runs (right
// results), the bucket is tried again by its next new row count, and after
// kMaxTuningAttempts failed tunings it is not tuned any more.
template <typename T>
void CheckAbandonedTuning(TestDType dtype) {
  std::mt19937 rng = FreshRng();
  const EngineGemm& g = kEngineGemms[0];
  CudaStream stream;
  ASSERT_STATUS_OK(stream.Create());
  std::unique_ptr<Gemm> gemm = MakeGemm(true, /*fail_timing=*/true);
  ASSERT_TRUE(gemm != nullptr);
  const double tol = GemmTolerance(dtype, g.gpu);
  const int rows_in_one_bucket[] = {100, 101, 102, 103, 104};
  for (const int rows : rows_in_one_bucket) {
    const GemmCase c = MakeGemmCase<T>(rows, g, rng);
    DeviceArray<T> d_x(c.x), d_w(c.w), d_b(c.b), d_y(c.ref.size());
    ASSERT_STATUS_OK(d_y.status());
    ASSERT_CUDA_OK(d_y.Poison());
    ASSERT_STATUS_OK(gemm->Run<T>(d_x.get(), rows, g.in, d_w.get(), d_b.get(), g.out, g.gpu,
                                  d_y.get(), stream.get()));
    ASSERT_CUDA_OK(cudaStreamSynchronize(stream.get()));
    const std::vector<float> got = d_y.Download();
    EXPECT_EQ(CountNonFinite(got), 0u) << rows;
    EXPECT_LE(RelativeError(got, c.ref), tol) << rows;
  }
  const GemmStats s = gemm->stats();
  EXPECT_EQ(s.plans, 5);
  EXPECT_EQ(s.tuned_buckets, Gemm::kMaxTuningAttempts);
  EXPECT_EQ(s.tuning_fallbacks, Gemm::kMaxTuningAttempts);
  EXPECT_EQ(s.abandoned_buckets, 1);
  EXPECT_EQ(s.timed_candidates, 0);
}

TEST_P(GemmAutotuneTest, FailedTuningIsAbandonedAfterTwoAttempts) {
  const TestDType dtype = GetParam();
  DISPATCH_DTYPE(dtype, CheckAbandonedTuning, dtype);
}

INSTANTIATE_TEST_SUITE_P(DTypes, GemmAutotuneTest, ::testing::ValuesIn(kAllDTypes),
                         [](const auto& info) { return std::string(TestDTypeName(info.param)); });

// ---------------------------------------------------------------------------------------
// Conversion: fp32 -> T -> fp32 equals the host's round-to-nearest-even.

template <typename T>
void CheckConvert(size_t n) {
  std::mt19937 rng = FreshRng();
  std::vector<float> x = RandomVector(n, rng, 3.0f);
  std::vector<float> rounded = x;
  RoundThrough<T>(&rounded);
  DeviceArray<float> d_in(x), d_back(n);
  DeviceArray<T> d_t(n);
  ASSERT_STATUS_OK(d_t.status());
  ASSERT_CUDA_OK(d_t.Poison());
  ASSERT_CUDA_OK(d_back.Poison());
  ASSERT_CUDA_OK((LaunchConvert<float, T>(d_in.get(), n, d_t.get(), nullptr)));
  ASSERT_CUDA_OK((LaunchConvert<T, float>(d_t.get(), n, d_back.get(), nullptr)));
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  const std::vector<float> got = d_back.Download();
  ASSERT_EQ(got.size(), n);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(got[i], rounded[i]) << "at " << i;
}

TEST(ConvertTest, RoundTripMatchesHostRounding) {
  std::string why;
  if (!HaveGpu(&why)) GTEST_SKIP() << why;
  CheckConvert<__half>(1);
  CheckConvert<__half>(100003);
  CheckConvert<__nv_bfloat16>(77777);
}

}  // namespace
}  // namespace cuda
}  // namespace bert

#else  // !BERT_WITH_CUDA

TEST(CudaKernels, BuiltWithoutCuda) {
  GTEST_SKIP() << "built with --config=nocuda: the CUDA kernels are not compiled";
}

#endif  // BERT_WITH_CUDA
