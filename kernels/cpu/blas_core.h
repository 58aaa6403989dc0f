// Which kernels ("core") OpenBLAS runs, and a correction for CPUs newer than the library.
//
// OpenBLAS built with DYNAMIC_ARCH (Debian's) picks its core once, when the library loads,
// from the CPU's family and model. A release does not know the CPUs that came after it:
// Debian 12's 0.3.21 takes Intel's Emerald Rapids (family 6, model 207), an AVX-512 CPU, for
// a generic one and runs its SSE3 kernels ("Prescott"), 3.5-4× slower than its AVX-512 ones
// (bench/RESULTS_cpu.md). The environment variable OPENBLAS_CORETYPE names the core instead,
// but the library reads it only while loading, before main() runs; so a program that wants
// another core sets it and executes itself again.
#ifndef BERT_KERNELS_CPU_BLAS_CORE_H_
#define BERT_KERNELS_CPU_BLAS_CORE_H_

#include <optional>
#include <string>

namespace bert {
namespace cpu {

// The core OpenBLAS runs, as it names it ("Haswell", "SkylakeX", "Zen", "Prescott", ...).
std::string BlasCoreName();

// What the CPU and the OS let a program use.
struct VectorSupport {
  bool avx2_fma = false;  // AVX2 and FMA3
  bool avx512 = false;    // AVX-512 F, CD, BW, DQ and VL (what OpenBLAS's SkylakeX core uses)
};
VectorSupport DetectVectorSupport();

// The core to run instead of `current`, or nullopt to keep it. Only a core the library chose
// without AVX2 on a CPU that has AVX2 and FMA is replaced: by "SkylakeX" where AVX-512 is
// usable, else by "Haswell". Any other choice (an AVX2 core, or a name this list does not
// know, e.g. from a newer release) is the library's to make.
std::optional<std::string> BetterBlasCore(const std::string& current, const VectorSupport& cpu);

// For the start of main(), before the program starts threads of its own or opens files (the
// exec ends OpenBLAS's own threads, started while it loaded): when OPENBLAS_CORETYPE is unset
// and BetterBlasCore names a core, sets OPENBLAS_CORETYPE to it (and BERT_BLAS_CORE_REPLACED
// to the library's own choice) and executes the program's file again with the same arguments
// (the same process: its id, name and open descriptors stay). Returns when there is nothing
// to do; in the re-executed process (taking the marker out of the environment again); or when
// the exec fails, with a warning on stderr: the program then runs on the library's choice.
void ReexecForBetterBlasCore(char** argv);

// In the re-executed process, the core the library chose by itself; otherwise "".
std::string BlasCoreReplaced();

// Whether the library ignored the OPENBLAS_CORETYPE that ReexecForBetterBlasCore set (it
// still runs its own choice).
bool BlasCoreReplacementFailed();

}  // namespace cpu
}  // namespace bert

#endif  // BERT_KERNELS_CPU_BLAS_CORE_H_
