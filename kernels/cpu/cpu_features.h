// Which vector instruction sets this CPU (and OS) runs, checked once: the CPU kernels pick
// their AVX2 and AVX-512 paths at run time, so that one binary runs on any x86-64.
#ifndef BERT_KERNELS_CPU_CPU_FEATURES_H_
#define BERT_KERNELS_CPU_CPU_FEATURES_H_

#include <string>

namespace bert {
namespace cpu {

// AVX2 and FMA. Always false off x86-64.
bool HasAvx2Fma();
// AVX-512F, with AVX2 and FMA (libgcc also checks that the OS saves the registers). Always false
// off x86-64.
bool HasAvx512();
// AMX with bfloat16 tiles and AVX-512 BF16 (Sapphire Rapids and later), with the OS's
// permission to use the tile registers, which this asks Linux for (once, for the process).
// Always false off x86-64 Linux.
bool HasAmxBf16();
// Why HasAmxBf16() is false (the CPU lacks a feature, or Linux refused the tile state, with
// its error); "" when it is true.
const std::string& AmxBf16Unavailable();

}  // namespace cpu
}  // namespace bert

#endif  // BERT_KERNELS_CPU_CPU_FEATURES_H_
