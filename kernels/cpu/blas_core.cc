#include "kernels/cpu/blas_core.h"

#include <cblas.h>
#include <limits.h>
#include <strings.h>
#include <sys/auxv.h>
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

// The library's own choice, in the re-executed process (moved out of the environment, so
// that the programs this one starts do not inherit the marker).
std::string& ReplacedCore() {
  static std::string* const replaced = new std::string;
  return *replaced;
}

// The running program's file: /proc/self/exe resolved (executing the link itself would name
// the process "exe" in ps, top and the kernel's logs), else the path it was started by.
std::string ProgramPath() {
  char path[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n > 0) return std::string(path, n);
  const char* started_as = reinterpret_cast<const char*>(getauxval(AT_EXECFN));
  return started_as == nullptr ? "" : started_as;
}

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
  const char* replaced = std::getenv(kReplacedVariable);
  if (replaced != nullptr) {
    // The re-executed process (the marker counts only next to the variable it explains).
    if (std::getenv("OPENBLAS_CORETYPE") != nullptr) ReplacedCore() = replaced;
    unsetenv(kReplacedVariable);
  }
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;  // the user's (or our own) choice
  const std::string current = BlasCoreName();
  const std::optional<std::string> better = BetterBlasCore(current, DetectVectorSupport());
  if (!better) return;
  setenv("OPENBLAS_CORETYPE", better->c_str(), 1);
  setenv(kReplacedVariable, current.c_str(), 1);
  const std::string path = ProgramPath();
  // Started through the dynamic loader ("ld-linux-x86-64.so.2 PROGRAM ..."), the file is the
  // loader's, which would take the program's flags for its own: leave it be.
  const size_t slash = path.rfind('/');
  const bool loader = path.compare(slash == std::string::npos ? 0 : slash + 1, 3, "ld-") == 0;
  if (!path.empty() && !loader) execv(path.c_str(), argv);
  const std::string why = path.empty() ? "the program's file is unknown"
                          : loader     ? "started through the dynamic loader"
                                       : std::strerror(errno);
  // Still here: run on the library's choice, and say so.
  std::fprintf(stderr,
               "warning: OpenBLAS runs its %s kernels on this %s CPU; re-executing with "
               "OPENBLAS_CORETYPE=%s failed (%s). Set OPENBLAS_CORETYPE=%s for faster GEMMs.\n",
               current.c_str(), *better == "SkylakeX" ? "AVX-512" : "AVX2", better->c_str(),
               why.c_str(), better->c_str());
  unsetenv("OPENBLAS_CORETYPE");
  unsetenv(kReplacedVariable);
}

std::string BlasCoreReplaced() { return ReplacedCore(); }

bool BlasCoreReplacementFailed() {
  return !ReplacedCore().empty() && strcasecmp(ReplacedCore().c_str(), BlasCoreName().c_str()) == 0;
}

}  // namespace cpu
}  // namespace bert
