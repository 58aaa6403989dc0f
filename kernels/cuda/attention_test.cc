// LaunchVarlenAttention against a double-precision reference (computed on up to 16 host
// threads) on fresh random inputs: dtype (fp32 / fp16 / bf16) x head_dim (32 / 64 / 128) x
// length pattern, and for fp16/bf16 x query tile (the launcher's choice, and 64 rows forced).
// The output (and a guard region past it) is poisoned with NaN bytes before the run; every
// output element must be written and within tolerance, and the guard must stay untouched. A
// second suite runs every tile height (64 / 32 / 16 rows, and the choice), with one and with
// two K/V buffers, on the same inputs for every pattern and requires bitwise-equal outputs (a
// row's arithmetic does not depend on the tile height or the buffering), and the launcher reports
// the double-buffered kernel exactly where there is a second key tile. Skips with the reason when
// there is no CUDA device (or, for fp16/bf16, no sm_80+ device) or when built with --config=nocuda.
#include <gtest/gtest.h>

#if defined(BERT_WITH_CUDA)

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/host_convert.h"
#include "kernels/cuda/test_util.h"

namespace bert::cuda {
namespace {

#define EXPECT_CUDA_OK(expr)                                                       \
  do {                                                                             \
    const cudaError_t err_ = (expr);                                               \
    ASSERT_EQ(err_, cudaSuccess) << #expr << ": " << cudaGetErrorName(err_) << " " \
                                 << cudaGetErrorString(err_);                      \
  } while (0)

enum class DType { kF32, kF16, kBF16 };
enum class Pattern { kOneToken, kOdd, kFull128, kFull512, kManyRandom, kPadding, kHugeBatch };

std::string DTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "f32";
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
  }
  return "?";
}

std::string PatternName(Pattern p) {
  switch (p) {
    case Pattern::kOneToken:
      return "OneToken";
    case Pattern::kOdd:
      return "Odd";
    case Pattern::kFull128:
      return "Full128";
    case Pattern::kFull512:
      return "Full512";
    case Pattern::kManyRandom:
      return "ManyRandom";
    case Pattern::kPadding:
      return "Padding";
    case Pattern::kHugeBatch:
      return "HugeBatch";
  }
  return "?";
}

// A batch shape: rows and valid keys per sequence, the heads, and the max_rows the caller
// passes (may exceed the real maximum).
struct Batch {
  std::vector<int32_t> rows;
  std::vector<int32_t> valid;
  int num_heads = 3;
  int max_rows = 0;
};

Batch MakeBatch(Pattern p, std::mt19937& rng) {
  Batch b;
  auto uniform = [&rng](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  switch (p) {
    case Pattern::kOneToken:
      b.rows = {1, 1, 1};
      break;
    case Pattern::kOdd:
      b.rows = {7, 33, 65, 129, 1, 63};
      break;
    case Pattern::kFull128:
      b.rows.assign(8, 128);
      break;
    case Pattern::kFull512:
      b.rows.assign(2, 512);
      b.num_heads = 2;
      break;
    case Pattern::kManyRandom:
      // Very different lengths in one batch, one past 512.
      for (int i = 0; i < 300; ++i) b.rows.push_back(uniform(1, 200));
      b.rows[17] = 600;
      b.rows[18] = 1;
      b.num_heads = 2;
      break;
    case Pattern::kPadding:
      for (int i = 0; i < 40; ++i) b.rows.push_back(uniform(1, 160));
      b.rows[0] = 100;
      b.rows[1] = 70;
      break;
    case Pattern::kHugeBatch:
      // More sequences than gridDim.z allows in one launch.
      for (int i = 0; i < 70000; ++i) b.rows.push_back(uniform(1, 2));
      b.num_heads = 1;
      break;
  }
  b.valid = b.rows;
  if (p == Pattern::kPadding) {
    for (size_t i = 0; i < b.rows.size(); ++i) b.valid[i] = uniform(1, b.rows[i]);
    b.valid[0] = 1;   // one real token, 99 padding queries
    b.valid[1] = 69;  // odd key count, one padding row
  }
  if (p == Pattern::kHugeBatch) {
    for (size_t i = 0; i < b.rows.size(); ++i) b.valid[i] = uniform(1, b.rows[i]);
  }
  b.max_rows = *std::max_element(b.rows.begin(), b.rows.end());
  if (p == Pattern::kPadding) b.max_rows += 37;  // an oversized grid must change nothing
  return b;
}

// out[row, h] = softmax(q k^T / sqrt(d)) v over keys 0..valid-1 of the row's sequence.
// Sequences are spread over up to 16 host threads (each writes only its sequences' rows).
std::vector<double> Reference(const std::vector<float>& qkv, const Batch& b, int head_dim) {
  const int hidden = b.num_heads * head_dim;
  const int num_seqs = static_cast<int>(b.rows.size());
  std::vector<int64_t> first_row(num_seqs + 1, 0);
  for (int s = 0; s < num_seqs; ++s) first_row[s + 1] = first_row[s] + b.rows[s];
  std::vector<double> out(first_row[num_seqs] * hidden, 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  auto run_sequences = [&](int begin_seq, int end_seq) {
    std::vector<double> p;
    for (int s = begin_seq; s < end_seq; ++s) {
      const int64_t row0 = first_row[s];
      const int n = b.rows[s], keys = b.valid[s];
      p.resize(keys);
      for (int h = 0; h < b.num_heads; ++h) {
        for (int i = 0; i < n; ++i) {
          const float* q = &qkv[(row0 + i) * 3 * hidden + h * head_dim];
          double mx = -INFINITY;
          for (int j = 0; j < keys; ++j) {
            const float* k = &qkv[(row0 + j) * 3 * hidden + hidden + h * head_dim];
            double dot = 0;
            for (int d = 0; d < head_dim; ++d) dot += static_cast<double>(q[d]) * k[d];
            p[j] = dot * scale;
            mx = std::max(mx, p[j]);
          }
          double sum = 0;
          for (int j = 0; j < keys; ++j) sum += (p[j] = std::exp(p[j] - mx));
          double* o = &out[(row0 + i) * hidden + h * head_dim];
          for (int j = 0; j < keys; ++j) {
            const float* v = &qkv[(row0 + j) * 3 * hidden + 2 * hidden + h * head_dim];
            for (int d = 0; d < head_dim; ++d) o[d] += p[j] / sum * v[d];
          }
        }
      }
    }
  };
  const int threads =
      static_cast<int>(std::clamp<unsigned>(std::thread::hardware_concurrency(), 1u, 16u));
  std::vector<std::thread> pool;
  const int per_thread = (num_seqs + threads - 1) / threads;
  for (int t = 0; t < threads; ++t) {
    const int begin_seq = t * per_thread;
    const int end_seq = std::min(num_seqs, begin_seq + per_thread);
    if (begin_seq < end_seq) pool.emplace_back(run_sequences, begin_seq, end_seq);
  }
  for (std::thread& t : pool) t.join();
  return out;
}

// RAII device buffer.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (cudaMalloc(&ptr_, bytes) != cudaSuccess) ptr_ = nullptr;
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* get() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_;
};

// Random inputs for one batch, as T (for the device) and as the float values they hold (for
// the reference).
template <typename T>
struct Inputs {
  Batch batch;
  std::vector<int32_t> cu;
  std::vector<T> qkv_t;
  std::vector<float> qkv_f;
  int64_t total = 0;  // rows
  int hidden = 0;
};

template <typename T>
Inputs<T> MakeInputs(Pattern pattern, int head_dim, std::mt19937& rng) {
  Inputs<T> in;
  in.batch = MakeBatch(pattern, rng);
  const Batch& b = in.batch;
  const int num_seqs = static_cast<int>(b.rows.size());
  in.hidden = b.num_heads * head_dim;
  in.cu.assign(num_seqs + 1, 0);
  for (int s = 0; s < num_seqs; ++s) in.cu[s + 1] = in.cu[s] + b.rows[s];
  in.total = in.cu[num_seqs];
  // Q and K in [-2, 2] give softmaxes between flat and peaked; V in [-1, 1]. The reference
  // sees exactly the values the kernel sees (rounded to T).
  std::uniform_real_distribution<float> qk(-2.f, 2.f), vd(-1.f, 1.f);
  in.qkv_t.resize(in.total * 3 * in.hidden);
  in.qkv_f.resize(in.qkv_t.size());
  for (int64_t r = 0; r < in.total; ++r) {
    for (int c = 0; c < 3 * in.hidden; ++c) {
      const int64_t i = r * 3 * in.hidden + c;
      in.qkv_t[i] = HostFromFloat<T>(c < 2 * in.hidden ? qk(rng) : vd(rng));
      in.qkv_f[i] = HostToFloat(in.qkv_t[i]);
    }
  }
  return in;
}

constexpr int64_t kGuardElems = 4096;

// Runs LaunchVarlenAttention on `in` with `options` into a NaN-poisoned output and copies the
// output back into *out (total * hidden elements); fails if anything past it was written.
// `launch`, when given, receives what the launcher reported.
template <typename T>
void RunOnDevice(const Inputs<T>& in, int head_dim, const AttentionOptions& options,
                 std::vector<T>* out, AttentionLaunch* launch = nullptr) {
  const Batch& b = in.batch;
  const int num_seqs = static_cast<int>(b.rows.size());
  const size_t out_bytes = in.total * in.hidden * sizeof(T);
  DeviceBuffer d_qkv(in.qkv_t.size() * sizeof(T)), d_out(out_bytes + kGuardElems * sizeof(T)),
      d_cu(in.cu.size() * sizeof(int32_t)), d_valid(b.valid.size() * sizeof(int32_t));
  ASSERT_NE(d_qkv.get<void>(), nullptr);
  ASSERT_NE(d_out.get<void>(), nullptr);
  ASSERT_NE(d_cu.get<void>(), nullptr);
  ASSERT_NE(d_valid.get<void>(), nullptr);
  EXPECT_CUDA_OK(
      cudaMemcpy(d_qkv.get<void>(), in.qkv_t.data(), d_qkv.bytes(), cudaMemcpyHostToDevice));
  EXPECT_CUDA_OK(cudaMemcpy(d_cu.get<void>(), in.cu.data(), d_cu.bytes(), cudaMemcpyHostToDevice));
  EXPECT_CUDA_OK(
      cudaMemcpy(d_valid.get<void>(), b.valid.data(), d_valid.bytes(), cudaMemcpyHostToDevice));
  // 0xFF bytes are NaN in fp32, fp16 and bf16.
  EXPECT_CUDA_OK(cudaMemset(d_out.get<void>(), 0xFF, d_out.bytes()));

  const AttentionLaunch launched = LaunchVarlenAttention<T>(
      d_qkv.get<T>(), d_cu.get<int32_t>(), d_valid.get<int32_t>(), num_seqs, b.max_rows,
      b.num_heads, head_dim, d_out.get<T>(), /*stream=*/0, options);
  if (launch != nullptr) *launch = launched;
  EXPECT_CUDA_OK(cudaGetLastError());
  EXPECT_CUDA_OK(cudaDeviceSynchronize());

  std::vector<T> out_t(in.total * in.hidden + kGuardElems);
  EXPECT_CUDA_OK(
      cudaMemcpy(out_t.data(), d_out.get<void>(), d_out.bytes(), cudaMemcpyDeviceToHost));
  for (int64_t i = 0; i < kGuardElems; ++i) {
    uint8_t bytes[sizeof(T)];
    std::memcpy(bytes, &out_t[in.total * in.hidden + i], sizeof(T));
    for (uint8_t x : bytes) ASSERT_EQ(x, 0xFF) << "write past the output at guard element " << i;
  }
  out_t.resize(in.total * in.hidden);
  *out = std::move(out_t);
}

// Skips without a device, or without sm_80+ for fp16/bf16.
bool SkipReason(DType dtype, std::string* why) {
  if (!testing_util::HaveGpu(why)) return true;
  if (dtype != DType::kF32) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
      *why = "cudaGetDeviceProperties failed";
      return true;
    }
    if (prop.major < 8) {
      *why = "fp16/bf16 attention needs sm_80+, device is sm_" + std::to_string(prop.major) +
             std::to_string(prop.minor);
      return true;
    }
  }
  return false;
}

using Param = std::tuple<DType, int, Pattern, AttentionTile>;

class VarlenAttentionTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    std::string why;
    if (SkipReason(std::get<0>(GetParam()), &why)) GTEST_SKIP() << why;
  }

  template <typename T>
  void Run(int head_dim, Pattern pattern, AttentionTile tile, double tol) {
    const unsigned seed = std::random_device{}();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed);
    const Inputs<T> in = MakeInputs<T>(pattern, head_dim, rng);
    const Batch& b = in.batch;
    const int num_seqs = static_cast<int>(b.rows.size());
    const int64_t total = in.total;
    const int hidden = in.hidden;
    std::vector<T> out_t;
    AttentionOptions options;
    options.tile = tile;
    RunOnDevice(in, head_dim, options, &out_t);
    if (HasFatalFailure()) return;

    const std::vector<double> ref = Reference(in.qkv_f, b, head_dim);
    double mean_abs = 0;
    for (double x : ref) mean_abs += std::fabs(x);
    mean_abs /= std::max<size_t>(ref.size(), 1);
    int64_t bad = 0, unwritten = 0;
    double worst = 0;
    for (int64_t i = 0; i < total * hidden; ++i) {
      const double got = HostToFloat(out_t[i]);
      if (!std::isfinite(got)) {
        if (++unwritten <= 5)
          ADD_FAILURE() << "output " << i << " (row " << i / hidden << ", col " << i % hidden
                        << ") not written";
        continue;
      }
      const double err = std::fabs(got - ref[i]) / (std::fabs(ref[i]) + mean_abs);
      worst = std::max(worst, err);
      if (err > tol && ++bad <= 5) {
        ADD_FAILURE() << "row " << i / hidden << " col " << i % hidden << ": got " << got
                      << ", want " << ref[i] << " (relative error " << err << ")";
      }
    }
    EXPECT_EQ(unwritten, 0);
    EXPECT_EQ(bad, 0) << "of " << total * hidden << " outputs; worst relative error " << worst;
    RecordProperty("worst_relative_error", std::to_string(worst));

    if constexpr (std::is_same_v<T, float>) {
      // fp32 must also agree with the project's CPU reference (float statistics, OpenBLAS).
      // Both are float computations, each allowed `tol` from the double reference above, so
      // they may differ by up to 2 * tol from each other (seen: 1.0e-5 at head_dim 128).
      std::vector<float> cpu_out(total * hidden, NAN);
      bert::cpu::Attention(in.qkv_f.data(), in.cu.data(), b.valid.data(), num_seqs, b.num_heads,
                           head_dim, cpu_out.data());
      int64_t cpu_bad = 0;
      for (int64_t i = 0; i < total * hidden; ++i) {
        const double err = std::fabs(out_t[i] - cpu_out[i]) / (std::fabs(cpu_out[i]) + mean_abs);
        if (!(err <= 2 * tol) && ++cpu_bad <= 5) {
          ADD_FAILURE() << "vs bert::cpu::Attention, row " << i / hidden << " col " << i % hidden
                        << ": got " << out_t[i] << ", cpu " << cpu_out[i];
        }
      }
      EXPECT_EQ(cpu_bad, 0);
    }
  }
};

TEST_P(VarlenAttentionTest, MatchesDoubleReference) {
  const auto [dtype, head_dim, pattern, tile] = GetParam();
  switch (dtype) {
    case DType::kF32:
      Run<float>(head_dim, pattern, tile, 1e-5);
      break;
    case DType::kF16:
      Run<__half>(head_dim, pattern, tile, 1e-2);
      break;
    case DType::kBF16:
      Run<__nv_bfloat16>(head_dim, pattern, tile, 3e-2);
      break;
  }
}

const auto kAllPatterns =
    ::testing::Values(Pattern::kOneToken, Pattern::kOdd, Pattern::kFull128, Pattern::kFull512,
                      Pattern::kManyRandom, Pattern::kPadding, Pattern::kHugeBatch);

std::string ParamName(const ::testing::TestParamInfo<Param>& info) {
  return DTypeName(std::get<0>(info.param)) + "_d" + std::to_string(std::get<1>(info.param)) + "_" +
         PatternName(std::get<2>(info.param)) + "_" + AttentionTileName(std::get<3>(info.param));
}

// fp32 has one tile shape (it ignores `tile`).
INSTANTIATE_TEST_SUITE_P(F32, VarlenAttentionTest,
                         ::testing::Combine(::testing::Values(DType::kF32),
                                            ::testing::Values(32, 64, 128), kAllPatterns,
                                            ::testing::Values(AttentionTile::kAuto)),
                         ParamName);

// The launcher's choice and the 64-row tile against the reference; the 32- and 16-row tiles
// are held bitwise to the 64-row tile on every pattern below (no reference needed there).
INSTANTIATE_TEST_SUITE_P(TensorCore, VarlenAttentionTest,
                         ::testing::Combine(::testing::Values(DType::kF16, DType::kBF16),
                                            ::testing::Values(32, 64, 128), kAllPatterns,
                                            ::testing::Values(AttentionTile::kAuto,
                                                              AttentionTile::kRows64)),
                         ParamName);

// Every tile height (and the launcher's choice), with one K/V buffer and with two, on the same
// inputs: outputs bitwise equal to the 64-row, single-buffered kernel's. Each warp computes its
// 16 rows with the same instructions in the same order over the same key tiles whatever the
// tile height or buffering, so any difference is a bug (a row computed by the wrong warp, a
// stale or partial K/V tile, a missed store).
using IdentityParam = std::tuple<DType, int, Pattern>;

class VarlenAttentionTileIdentityTest : public ::testing::TestWithParam<IdentityParam> {
 protected:
  void SetUp() override {
    std::string why;
    if (SkipReason(std::get<0>(GetParam()), &why)) GTEST_SKIP() << why;
  }

  // Every tile height, with one K/V buffer or (double_buffer) with two, against the 64-row
  // single-buffered kernel.
  template <typename T>
  void Run(int head_dim, Pattern pattern, bool double_buffer) {
    const unsigned seed = std::random_device{}();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed);
    const Inputs<T> in = MakeInputs<T>(pattern, head_dim, rng);
    std::vector<T> base;
    AttentionOptions base_options;
    base_options.tile = AttentionTile::kRows64;
    RunOnDevice(in, head_dim, base_options, &base);
    if (HasFatalFailure()) return;
    std::vector<AttentionOptions> variants;
    for (AttentionTile tile : {AttentionTile::kRows64, AttentionTile::kRows32,
                               AttentionTile::kRows16, AttentionTile::kAuto}) {
      if (tile == AttentionTile::kRows64 && !double_buffer) continue;  // the base
      AttentionOptions options;
      options.tile = tile;
      options.double_buffer_kv = double_buffer;
      variants.push_back(options);
    }
    for (const AttentionOptions& options : variants) {
      SCOPED_TRACE(std::string("tile ") + AttentionTileName(options.tile) +
                   (options.double_buffer_kv ? " double-buffered K/V" : ""));
      std::vector<T> got;
      AttentionLaunch launch;
      RunOnDevice(in, head_dim, options, &got, &launch);
      if (HasFatalFailure()) return;
      // Two K/V buffers only where there is a next key tile to copy (more than 64 rows).
      EXPECT_EQ(launch.double_buffered_kv, double_buffer && in.batch.max_rows > 64);
      // The height asked for, or the one kAuto resolves to.
      const AttentionTile ran = options.tile != AttentionTile::kAuto
                                    ? options.tile
                                    : ChooseAttentionTile(static_cast<int>(in.batch.rows.size()),
                                                          in.batch.max_rows, in.batch.num_heads);
      EXPECT_EQ(launch.tile_rows, static_cast<int>(ran));
      ASSERT_EQ(got.size(), base.size());
      int64_t differ = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        if (std::memcmp(&got[i], &base[i], sizeof(T)) != 0 && ++differ <= 5) {
          ADD_FAILURE() << "row " << i / in.hidden << " col " << i % in.hidden << ": "
                        << HostToFloat(got[i]) << " vs 64-row tile " << HostToFloat(base[i]);
        }
      }
      EXPECT_EQ(differ, 0) << "of " << got.size() << " outputs differ from the 64-row tile's";
    }
  }
};

TEST_P(VarlenAttentionTileIdentityTest, AllTileHeightsBitwiseEqual) {
  const auto [dtype, head_dim, pattern] = GetParam();
  if (dtype == DType::kF16) {
    Run<__half>(head_dim, pattern, /*double_buffer=*/false);
  } else {
    Run<__nv_bfloat16>(head_dim, pattern, /*double_buffer=*/false);
  }
}

TEST_P(VarlenAttentionTileIdentityTest, DoubleBufferedKvBitwiseEqual) {
  const auto [dtype, head_dim, pattern] = GetParam();
  if (dtype == DType::kF16) {
    Run<__half>(head_dim, pattern, /*double_buffer=*/true);
  } else {
    Run<__nv_bfloat16>(head_dim, pattern, /*double_buffer=*/true);
  }
}

INSTANTIATE_TEST_SUITE_P(TensorCore, VarlenAttentionTileIdentityTest,
                         ::testing::Combine(::testing::Values(DType::kF16, DType::kBF16),
                                            ::testing::Values(32, 64, 128), kAllPatterns),
                         [](const ::testing::TestParamInfo<IdentityParam>& info) {
                           return DTypeName(std::get<0>(info.param)) + "_d" +
                                  std::to_string(std::get<1>(info.param)) + "_" +
                                  PatternName(std::get<2>(info.param));
                         });

TEST(VarlenAttentionArgs, AutoTileFollowsTheLaunchRule) {
  std::string why;
  if (!testing_util::HaveGpu(&why)) GTEST_SKIP() << why;
  // BERT-base shapes: batch 1 x 128 (24 CTAs of 64 rows) must not keep the 64-row tile on a
  // GPU with more than 12 SMs (it would if the SM count were not found); batch 128 x 128
  // (3072 CTAs) must keep it. Sequences of 16 rows always get the 16-row tile.
  EXPECT_NE(ChooseAttentionTile(1, 128, 12), AttentionTile::kRows64);
  EXPECT_EQ(ChooseAttentionTile(128, 128, 12), AttentionTile::kRows64);
  EXPECT_EQ(ChooseAttentionTile(4096, 16, 12), AttentionTile::kRows16);
  EXPECT_CUDA_OK(cudaGetLastError());
}

TEST(VarlenAttentionArgs, UnsupportedHeadDimIsALaunchError) {
  std::string why;
  if (!testing_util::HaveGpu(&why)) GTEST_SKIP() << why;
  EXPECT_CUDA_OK(cudaGetLastError());
  LaunchVarlenAttention<__half>(nullptr, nullptr, nullptr, 1, 8, 2, 48, nullptr, 0);
  // The runtime names the empty-grid launch cudaErrorInvalidValue (CUDA 13, H200); any error
  // will do, as long as the caller's cudaGetLastError() sees one.
  EXPECT_NE(cudaGetLastError(), cudaSuccess);
}

TEST(VarlenAttentionArgs, EmptyBatchLaunchesNothing) {
  std::string why;
  if (!testing_util::HaveGpu(&why)) GTEST_SKIP() << why;
  EXPECT_CUDA_OK(cudaGetLastError());
  LaunchVarlenAttention<float>(nullptr, nullptr, nullptr, 0, 0, 12, 64, nullptr, 0);
  EXPECT_CUDA_OK(cudaGetLastError());
  EXPECT_CUDA_OK(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace bert::cuda

#else  // !BERT_WITH_CUDA

TEST(VarlenAttention, BuiltWithoutCuda) {
  GTEST_SKIP() << "built with --config=nocuda: the CUDA attention kernel is not compiled";
}

#endif  // BERT_WITH_CUDA
