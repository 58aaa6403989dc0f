#include "kernels/cpu/gemm.h"

#include <cblas.h>

#include <cmath>

#include "kernels/cpu/activation.h"

namespace bert {
namespace cpu {

void ApplyEpilogue(float* y, int rows, int features, const float* bias, Epilogue epilogue) {
  if (epilogue == Epilogue::kNone) return;
  for (int r = 0; r < rows; ++r) {
    float* yr = y + static_cast<int64_t>(r) * features;
    switch (epilogue) {
      case Epilogue::kNone:
        break;
      case Epilogue::kBias:
        for (int i = 0; i < features; ++i) yr[i] += bias[i];
        break;
      case Epilogue::kBiasGeluErf:
        for (int i = 0; i < features; ++i) yr[i] = GeluErf(yr[i] + bias[i]);
        break;
      case Epilogue::kBiasGeluTanh:
        for (int i = 0; i < features; ++i) yr[i] = GeluTanh(yr[i] + bias[i]);
        break;
      case Epilogue::kBiasTanh:
        for (int i = 0; i < features; ++i) yr[i] = std::tanh(yr[i] + bias[i]);
        break;
    }
  }
}

void Linear(const float* x, int rows, int in_features, const float* weight, const float* bias,
            int out_features, Epilogue epilogue, float* y) {
  if (rows <= 0 || out_features <= 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out_features, in_features, 1.0f,
              x, in_features, weight, in_features, 0.0f, y, out_features);
  ApplyEpilogue(y, rows, out_features, bias, epilogue);
}

}  // namespace cpu
}  // namespace bert
