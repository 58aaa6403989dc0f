#include "kernels/cpu/blas_core.h"

#include <cblas.h>
#include <strings.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace bert {
namespace cpu {

namespace {

constexpr char kReplacedVariable[] = "BERT_BLAS_CORE_REPLACED";

// OpenBLAS's names of its cores without AVX2 (driver/others/dynamic.c), x86-64 ones and the
// older ones it keeps.
constexpr const char* kCoresWithoutAvx2[] = {
    "Unknown",   "Katmai", "Coppermine",  "Northwood", "Prescott",  "Banias",     "Atom",
    "Core2",     "Penryn", "Dunnington",  "Nehalem",   "Athlon",    "Opteron",    "Opteron_SSE3",
    "Barcelona", "Nano",   "Sandybridge", "Bobcat",    "Bulldozer", "Piledriver", "Steamroller"};

}  // namespace

std::string BlasCoreName() {
  const char* name = openblas_get_corename();
  return name == nullptr ? "" : name;
}

VectorSupport DetectVectorSupport() {
  VectorSupport s;
#if defined(__x86_64__)
  // libgcc checks the OS's support too (the register state XGETBV reports), not only CPUID.
  __builtin_cpu_init();
  s.avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  s.avx512 = s.avx2_fma && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#endif
  return s;
}

std::optional<std::string> BetterBlasCore(const std::string& current, const VectorSupport& cpu) {
  if (!cpu.avx2_fma) return std::nullopt;
  for (const char* weak : kCoresWithoutAvx2) {
    if (strcasecmp(current.c_str(), weak) == 0) {
      return std::string(cpu.avx512 ? "SkylakeX" : "Haswell");
    }
  }
  return std::nullopt;
}

void ReexecForBetterBlasCore(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;  // the user's (or our own) choice
  const std::string current = BlasCoreName();
  const std::optional<std::string> better = BetterBlasCore(current, DetectVectorSupport());
  if (!better) return;
  setenv("OPENBLAS_CORETYPE", better->c_str(), 1);
  setenv(kReplacedVariable, current.c_str(), 1);
  execv("/proc/self/exe", argv);
  // Still here: run on the library's choice, and say so.
  std::fprintf(stderr,
               "warning: OpenBLAS runs its %s kernels on this %s CPU; re-executing with "
               "OPENBLAS_CORETYPE=%s failed (%s). Set OPENBLAS_CORETYPE=%s for faster GEMMs.\n",
               current.c_str(), *better == "SkylakeX" ? "AVX-512" : "AVX2", better->c_str(),
               std::strerror(errno), better->c_str());
  unsetenv("OPENBLAS_CORETYPE");
  unsetenv(kReplacedVariable);
}

std::string BlasCoreReplaced() {
  const char* replaced = std::getenv(kReplacedVariable);
  return replaced == nullptr ? "" : replaced;
}

}  // namespace cpu
}  // namespace bert
