#include "kernels/cpu/cpu_features.h"

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

}  // namespace cpu
}  // namespace bert
