#include "kernels/cpu/cpu_features.h"

#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
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

bool HasAmxBf16() {
#if defined(__x86_64__) && defined(__linux__)
  static const bool amx = [] {
    if (!HasAvx512() || !__builtin_cpu_supports("avx512bf16") ||
        !__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-bf16")) {
      return false;
    }
    // Linux gives a process the tile registers' state only when asked (arch_prctl
    // ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA); a tile instruction before that faults.
    constexpr int kArchReqXcompPerm = 0x1023;
    constexpr int kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return amx;
#else
  return false;
#endif
}

}  // namespace cpu
}  // namespace bert
