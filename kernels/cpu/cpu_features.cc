#include "kernels/cpu/cpu_features.h"

#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#endif

namespace bert {
namespace cpu {

bool HasAvx2Fma() {
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return avx2;
#else
  return false;
#endif
}

bool HasAvx512() {
#if defined(__x86_64__)
  static const bool avx512 = HasAvx2Fma() && __builtin_cpu_supports("avx512f");
  return avx512;
#else
  return false;
#endif
}

const std::string& AmxBf16Unavailable() {
  static const std::string* const reason = [] {
#if defined(__x86_64__) && defined(__linux__)
    if (!HasAvx512() || !__builtin_cpu_supports("avx512bf16") ||
        !__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-bf16")) {
      return new std::string("the CPU has no AMX-BF16 (Intel Sapphire Rapids or later)");
    }
    // Linux gives a process the tile registers' state only when asked (arch_prctl
    // ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA, since Linux 5.16); a tile instruction before
    // that faults.
    constexpr int kArchReqXcompPerm = 0x1023;
    constexpr int kXfeatureXtiledata = 18;
    if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
      return new std::string(std::string("the CPU has AMX-BF16 but Linux refused its tile state "
                                         "(arch_prctl ARCH_REQ_XCOMP_PERM: ") +
                             std::strerror(errno) + "; Linux 5.16 or later grants it)");
    }
    return new std::string();
#else
    return new std::string("AMX is an x86-64 feature (and this build asks Linux for it)");
#endif
  }();
  return *reason;
}

bool HasAmxBf16() { return AmxBf16Unavailable().empty(); }

}  // namespace cpu
}  // namespace bert
