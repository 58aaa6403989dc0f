// The OpenBLAS core correction: which choices it replaces, and, in this process (which
// re-executes itself first, as the programs do: blas_test_main.cc), that the library ends up
// on a core with AVX2 wherever the CPU has it.
#include "kernels/cpu/blas_core.h"

#include <cstdio>
#include <cstdlib>

#include "gtest/gtest.h"

namespace bert {
namespace cpu {
namespace {

constexpr VectorSupport kNone{false, false};
constexpr VectorSupport kAvx2{true, false};
constexpr VectorSupport kAvx512{true, true};

TEST(BetterBlasCoreTest, ReplacesACoreWithoutAvx2WithTheBestTheCpuRuns) {
  EXPECT_EQ(BetterBlasCore("Prescott", kAvx512), "SkylakeX");
  EXPECT_EQ(BetterBlasCore("Prescott", kAvx2), "Haswell");
  EXPECT_EQ(BetterBlasCore("Nehalem", kAvx2), "Haswell");
  EXPECT_EQ(BetterBlasCore("Sandybridge", kAvx512), "SkylakeX");
  EXPECT_EQ(BetterBlasCore("prescott", kAvx2), "Haswell");  // however the library spells it
}

TEST(BetterBlasCoreTest, KeepsTheLibrarysChoiceOtherwise) {
  EXPECT_EQ(BetterBlasCore("Prescott", kNone), std::nullopt);  // a CPU without AVX2
  for (const char* good : {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids"}) {
    EXPECT_EQ(BetterBlasCore(good, kAvx512), std::nullopt) << good;
  }
  // A name this list does not know (a newer release's): the library knows better.
  EXPECT_EQ(BetterBlasCore("Zen7", kAvx512), std::nullopt);
}

TEST(BlasCoreTest, TheLibraryRunsACoreWithAvx2WhereTheCpuHasIt) {
  const std::string core = BlasCoreName();
  ASSERT_FALSE(core.empty());
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr && BlasCoreReplaced().empty()) {
    GTEST_SKIP() << "OPENBLAS_CORETYPE was set by the caller: " << core;
  }
  EXPECT_EQ(BetterBlasCore(core, DetectVectorSupport()), std::nullopt)
      << "OpenBLAS runs " << core << " on a CPU with AVX2";
  EXPECT_FALSE(BlasCoreReplacementFailed());
  // The marker is for this process only, not for the programs it starts.
  EXPECT_EQ(std::getenv("BERT_BLAS_CORE_REPLACED"), nullptr);
  if (!BlasCoreReplaced().empty()) {
    std::printf("OpenBLAS core %s (the library chose %s)\n", core.c_str(),
                BlasCoreReplaced().c_str());
  }
}

}  // namespace
}  // namespace cpu
}  // namespace bert
