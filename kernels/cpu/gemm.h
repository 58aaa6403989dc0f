// Linear layers (y = x * W^T + b) through OpenBLAS sgemm, with fused epilogues.
// Thread use is OpenBLAS's (openblas_set_num_threads); the epilogue runs on the caller's
// thread. Weights keep the Hugging Face layout [out_features, in_features].
#ifndef BERT_KERNELS_CPU_GEMM_H_
#define BERT_KERNELS_CPU_GEMM_H_

#include <cstdint>

namespace bert {
namespace cpu {

enum class Epilogue { kNone, kBias, kBiasGeluErf, kBiasGeluTanh, kBiasTanh };

// y[rows, out_features] = epilogue(x[rows, in_features] * weight^T + bias).
// `bias` may be null only with Epilogue::kNone (and is ignored then). `y` must not alias x.
void Linear(const float* x, int rows, int in_features, const float* weight, const float* bias,
            int out_features, Epilogue epilogue, float* y);

// Applies `epilogue` in place to y[rows, features] (the part of Linear after the GEMM), so
// that callers can run the GEMM with Epilogue::kNone and split the epilogue across threads.
// `ld`: the distance between rows of y (0: `features`).
void ApplyEpilogue(float* y, int rows, int features, const float* bias, Epilogue epilogue,
                   int ld = 0);

// Linear for few rows (a short sentence alone in its batch), restricted to the output
// features [out_begin, out_end), so that threads can split a layer by its outputs: y[r, o] for
// every row r and o in the range, in y's full layout [rows, out_features]. Each weight row is
// read where it lies, once per four input rows; sgemm instead copies (packs) the whole
// weight matrix on every call, which costs more than the arithmetic when rows are few
// (bench/RESULTS_cpu.md). Same function as Linear, to float rounding (another summation
// order). Any number of rows, but it pays only for few (the caller picks: CpuEngine), and only
// where LinearFewRowsIsVectorized(): elsewhere it is a plain loop, far slower than sgemm.
void LinearFewRows(const float* x, int rows, int in_features, const float* weight,
                   const float* bias, int out_features, Epilogue epilogue, int out_begin,
                   int out_end, float* y);

// Whether LinearFewRows runs vectorised on this CPU (x86-64 with AVX2 and FMA; with AVX-512F
// too, it runs 16 lanes).
bool LinearFewRowsIsVectorized();

// The few-rows kernel's versions; LinearFewRows runs the best one this CPU runs.
enum class FewRowsIsa { kPortable, kAvx2, kAvx512 };
bool FewRowsIsaAvailable(FewRowsIsa isa);
// The version LinearFewRows runs here: "AVX-512", "AVX2" or "portable".
const char* FewRowsIsaName();

// Tests only: LinearFewRows with the given version (a no-op where it is not available).
void LinearFewRowsForTesting(FewRowsIsa isa, const float* x, int rows, int in_features,
                             const float* weight, const float* bias, int out_features,
                             Epilogue epilogue, int out_begin, int out_end, float* y);

}  // namespace cpu
}  // namespace bert

#endif  // BERT_KERNELS_CPU_GEMM_H_
