// The CUDA engine's tuning switches by flag name: the table, its values and their parsing.
// Runs without a GPU (and without CUDA).
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "server/engine/cuda_engine.h"

namespace bert {
namespace {

using Values = std::vector<std::pair<std::string, std::string>>;

TEST(CudaTuningSwitches, EachIsOneFieldUnderADistinctName) {
  std::set<std::string> names;
  for (const CudaTuningSwitch& s : CudaTuningSwitches()) {
    EXPECT_NE(s.on == nullptr, s.value == nullptr) << s.flag;
    EXPECT_TRUE(names.insert(s.flag).second) << "twice: " << s.flag;
  }
  EXPECT_EQ(names.size(), 12u);
}

TEST(CudaTuningValues, TheDefaultsAsFlagsSpellThem) {
  const Values values = CudaTuningValues(CudaEngineOptions());
  ASSERT_EQ(values.size(), CudaTuningSwitches().size());
  EXPECT_EQ(values.front(), (std::pair<std::string, std::string>{"cuda_graphs", "true"}));
  EXPECT_EQ(values[1], (std::pair<std::string, std::string>{"cuda_graph_max_rows", "4096"}));
  EXPECT_TRUE(CudaTuningValues(CudaEngineOptions(), /*only_changed=*/true).empty());
}

TEST(SetCudaTuning, SetsTheFieldItNames) {
  CudaEngineOptions o;
  ASSERT_TRUE(SetCudaTuning("cuda_pdl", "true", &o).ok());
  EXPECT_TRUE(o.programmatic_launch);
  ASSERT_TRUE(SetCudaTuning("cuda_graph_max_rows", "100000", &o).ok());
  EXPECT_EQ(o.max_graph_rows, 100000);
  ASSERT_TRUE(SetCudaTuning("cuda_overlap_copies", "0", &o).ok());
  EXPECT_FALSE(o.overlap_copies);
  EXPECT_EQ(CudaTuningValues(o, /*only_changed=*/true), (Values{{"cuda_graph_max_rows", "100000"},
                                                                {"cuda_pdl", "true"},
                                                                {"cuda_overlap_copies", "false"}}));
}

TEST(SetCudaTuning, EverySwitchRoundTripsThroughItsValue) {
  // Flipping each switch alone shows up as exactly that flag, and setting the value back
  // restores the defaults: no two names share a field.
  for (const CudaTuningSwitch& s : CudaTuningSwitches()) {
    CudaEngineOptions o;
    const std::string other = s.on != nullptr ? (o.*s.on ? "false" : "true") : "12345";
    ASSERT_TRUE(SetCudaTuning(s.flag, other, &o).ok()) << s.flag;
    EXPECT_EQ(CudaTuningValues(o, true), (Values{{s.flag, other}}));
    for (const auto& [flag, value] : CudaTuningValues(CudaEngineOptions())) {
      if (flag == s.flag) {
        ASSERT_TRUE(SetCudaTuning(flag, value, &o).ok());
      }
    }
    EXPECT_TRUE(CudaTuningValues(o, true).empty()) << s.flag;
  }
}

TEST(SetCudaTuning, RejectsBadValuesAndUnknownNames) {
  CudaEngineOptions o;
  const absl::Status bad_bool = SetCudaTuning("custom_gemm", "maybe", &o);
  EXPECT_EQ(bad_bool.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_bool.message().find("--custom_gemm"), absl::string_view::npos);
  EXPECT_EQ(SetCudaTuning("cuda_graph_max_rows", "4k", &o).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SetCudaTuning("pdl", "true", &o).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(CudaTuningValues(o, true).empty());  // nothing half-set
}

TEST(ValidateCudaEngineOptions, TheDefaultsAndEveryTileHeightPass) {
  EXPECT_TRUE(ValidateCudaEngineOptions(CudaEngineOptions()).ok());
  for (const int tile : {0, 16, 32, 64}) {
    CudaEngineOptions o;
    o.attention_tile = tile;
    EXPECT_TRUE(ValidateCudaEngineOptions(o).ok()) << tile;
  }
  CudaEngineOptions o;
  o.layer_norm_hoist_max_rows = 0;
  o.max_graph_rows = 0;
  o.layer_norm_in_gemm_max_rows = 100000;  // more than max_batch_tokens: every batch
  EXPECT_TRUE(ValidateCudaEngineOptions(o).ok());
}

TEST(ValidateCudaEngineOptions, RefusesOutOfRangeValuesNamingTheFlag) {
  const auto refused = [](const CudaEngineOptions& o, absl::string_view name) {
    const absl::Status st = ValidateCudaEngineOptions(o);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_NE(st.message().find(name), absl::string_view::npos) << st;
  };
  for (const int tile : {-1, 1, 8, 48, 128}) {
    CudaEngineOptions o;
    o.attention_tile = tile;
    refused(o, "--cuda_attention_tile");
  }
  CudaEngineOptions o;
  o.layer_norm_hoist_max_rows = -1;
  refused(o, "--cuda_layer_norm_hoist_max_rows");
  o = CudaEngineOptions();
  o.layer_norm_in_gemm_max_rows = -1;
  refused(o, "--cuda_layer_norm_in_gemm_max_rows");
  o = CudaEngineOptions();
  o.max_graph_rows = -1;
  refused(o, "--cuda_graph_max_rows");
  o = CudaEngineOptions();
  o.max_batch_tokens = 0;
  refused(o, "max_batch_tokens");
}

// The values a user passes go through the same path as the server's flags.
TEST(ValidateCudaEngineOptions, SeesWhatTheFlagsSet) {
  CudaEngineOptions o;
  ASSERT_TRUE(SetCudaTuning("cuda_attention_tile", "64", &o).ok());
  ASSERT_TRUE(SetCudaTuning("cuda_layer_norm_hoist_max_rows", "0", &o).ok());
  ASSERT_TRUE(SetCudaTuning("cuda_layer_norm_in_gemm_max_rows", "512", &o).ok());
  EXPECT_EQ(o.attention_tile, 64);
  EXPECT_EQ(o.layer_norm_hoist_max_rows, 0);
  EXPECT_EQ(o.layer_norm_in_gemm_max_rows, 512);
  EXPECT_TRUE(ValidateCudaEngineOptions(o).ok());
  ASSERT_TRUE(SetCudaTuning("cuda_attention_tile", "100", &o).ok());  // parses; out of range
  EXPECT_EQ(ValidateCudaEngineOptions(o).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bert
