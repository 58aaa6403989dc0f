// Helpers for the GEMM tests (test-only; kernels_test and split_k_gemm_test): random operands
// rounded through the device type, their cpu::Linear reference, and the tolerance rule.
#ifndef BERT_KERNELS_CUDA_GEMM_TEST_UTIL_H_
#define BERT_KERNELS_CUDA_GEMM_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/test_util.h"

namespace bert {
namespace cuda {
namespace testing_util {

// One of the encoder's Linear layers: shape, the device epilogue and its CPU twin.
struct EngineGemm {
  int in, out;
  GemmEpilogue gpu;
  cpu::Epilogue cpu;
  const char* name;
};

// Operands of y [rows, out] = x [rows, in] · wᵀ + b (+ r), rounded through T, drawn in this
// order: x (scale 1), w (1 / sqrt(in)), b (0.5), r (2; only with a residual, else empty).
struct GemmOperands {
  int rows, in, out;
  std::vector<float> x, w, b, r;
};

template <typename T>
GemmOperands MakeGemmOperands(int rows, int in, int out, bool with_residual, std::mt19937& rng) {
  GemmOperands o{rows, in, out, {}, {}, {}, {}};
  o.x = RandomVector(static_cast<size_t>(rows) * in, rng);
  o.w = RandomVector(static_cast<size_t>(out) * in, rng, 1.0f / std::sqrt(static_cast<float>(in)));
  o.b = RandomVector(out, rng, 0.5f);
  RoundThrough<T>(&o.x);
  RoundThrough<T>(&o.w);
  RoundThrough<T>(&o.b);
  if (with_residual) {
    o.r = RandomVector(static_cast<size_t>(rows) * out, rng, 2.0f);
    RoundThrough<T>(&o.r);
  }
  return o;
}

// cpu::Linear(x, w, b) with `epilogue`, plus r when `add_residual`.
inline std::vector<float> GemmReference(const GemmOperands& o, cpu::Epilogue epilogue,
                                        bool add_residual = false) {
  std::vector<float> ref(static_cast<size_t>(o.rows) * o.out);
  cpu::Linear(o.x.data(), o.rows, o.in, o.w.data(), o.b.data(), o.out, epilogue, ref.data());
  if (add_residual) {
    for (size_t i = 0; i < ref.size(); ++i) ref[i] += o.r[i];
  }
  return ref;
}

// Operands of one engine GEMM (no residual) and its reference.
struct GemmCase : GemmOperands {
  std::vector<float> ref;
};

template <typename T>
GemmCase MakeGemmCase(int rows, const EngineGemm& g, std::mt19937& rng) {
  GemmCase c;
  static_cast<GemmOperands&>(c) = MakeGemmOperands<T>(rows, g.in, g.out, false, rng);
  c.ref = GemmReference(c, g.cpu);
  return c;
}

// Relative tolerance of a Gemm result: the dtype's, and at least 2e-3 for cuBLASLt's GELU
// epilogue, which may evaluate tanh approximately (the fp32 engine therefore does not use it).
inline double GemmTolerance(TestDType dtype, GemmEpilogue epilogue) {
  return epilogue == GemmEpilogue::kBiasGeluTanh ? std::max(Tolerance(dtype), 2e-3)
                                                 : Tolerance(dtype);
}

}  // namespace testing_util
}  // namespace cuda
}  // namespace bert

#endif  // BERT_KERNELS_CUDA_GEMM_TEST_UTIL_H_
