#include "kernels/cpu/gemm.h"

#include <cblas.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdlib>
#include <new>
#include <vector>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/linear_amx.h"
#include "kernels/cpu/packed_kernel.h"

namespace bert {
namespace cpu {

namespace {

#if defined(__x86_64__)
// The erf GELU dominates the epilogue's cost and std::erf does not vectorise: an AVX2+FMA
// version of the rational erf (activation.h), chosen at run time so one binary runs on any
// x86-64. Same formula, so both paths agree to float rounding. Other architectures (aarch64)
// take the scalar loop, which the compiler may vectorise itself.
// `bias` may be null (the values have it already).
__attribute__((target("avx2,fma"))) void BiasGeluErfRowAvx2(float* y, const float* bias, int n) {
  const __m256 lo = _mm256_set1_ps(-3.925f), hi = _mm256_set1_ps(3.925f);
  const __m256 rsqrt2 = _mm256_set1_ps(0.70710678118654752f);
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = bias == nullptr
                         ? _mm256_loadu_ps(y + i)
                         : _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(bias + i));
    const __m256 c = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(x, rsqrt2), lo), hi);
    const __m256 t = _mm256_mul_ps(c, c);
    __m256 p = _mm256_set1_ps(kErfNumerator[0]), q = _mm256_set1_ps(kErfDenominator[0]);
#pragma GCC unroll 8
    for (int j = 1; j < 6; ++j) {
      p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(kErfNumerator[j]));
      q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(kErfDenominator[j]));
    }
    const __m256 erf = _mm256_div_ps(_mm256_mul_ps(c, p), q);
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(one, erf)));
  }
  for (; i < n; ++i) y[i] = GeluErfFast(bias == nullptr ? y[i] : y[i] + bias[i]);
}

// GCC 12's AVX-512 intrinsics fill unused operands with a self-initialised value that its own
// -Wmaybe-uninitialized reports wherever they are inlined (GCC bug 105593): false positives.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// 16 values per step with the AVX2 row's operations in the same order, lane by lane, so the
// same bits; the rest of the row (under 16 values) through the AVX2 row, so that exactly the
// values past the last multiple of 8 take the scalar formula, as there.
__attribute__((target("avx512f"))) void BiasGeluErfRowAvx512(float* y, const float* bias, int n) {
  const __m512 lo = _mm512_set1_ps(-3.925f), hi = _mm512_set1_ps(3.925f);
  const __m512 rsqrt2 = _mm512_set1_ps(0.70710678118654752f);
  const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 x = bias == nullptr
                         ? _mm512_loadu_ps(y + i)
                         : _mm512_add_ps(_mm512_loadu_ps(y + i), _mm512_loadu_ps(bias + i));
    const __m512 c = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(x, rsqrt2), lo), hi);
    const __m512 t = _mm512_mul_ps(c, c);
    __m512 p = _mm512_set1_ps(kErfNumerator[0]), q = _mm512_set1_ps(kErfDenominator[0]);
#pragma GCC unroll 8
    for (int j = 1; j < 6; ++j) {
      p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(kErfNumerator[j]));
      q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(kErfDenominator[j]));
    }
    const __m512 erf = _mm512_div_ps(_mm512_mul_ps(c, p), q);
    _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_mul_ps(half, x), _mm512_add_ps(one, erf)));
  }
  if (i < n) BiasGeluErfRowAvx2(y + i, bias == nullptr ? nullptr : bias + i, n - i);
}
#pragma GCC diagnostic pop
#endif  // defined(__x86_64__)

void BiasGeluErfRow(float* y, const float* bias, int n) {
#if defined(__x86_64__)
  if (HasAvx512()) {
    BiasGeluErfRowAvx512(y, bias, n);
    return;
  }
  if (HasAvx2Fma()) {
    BiasGeluErfRowAvx2(y, bias, n);
    return;
  }
#endif
  for (int i = 0; i < n; ++i) y[i] = GeluErfFast(bias == nullptr ? y[i] : y[i] + bias[i]);
}

}  // namespace

void ApplyEpilogue(float* y, int rows, int features, const float* bias, Epilogue epilogue, int ld) {
  if (epilogue == Epilogue::kNone) return;
  if (ld == 0) ld = features;
  for (int r = 0; r < rows; ++r) {
    float* yr = y + static_cast<int64_t>(r) * ld;
    switch (epilogue) {
      case Epilogue::kNone:
        break;
      case Epilogue::kBias:
        if (bias != nullptr) {
          for (int i = 0; i < features; ++i) yr[i] += bias[i];
        }
        break;
      case Epilogue::kBiasGeluErf:
        BiasGeluErfRow(yr, bias, features);
        break;
      case Epilogue::kBiasGeluTanh:
        for (int i = 0; i < features; ++i) {
          yr[i] = GeluTanh(bias == nullptr ? yr[i] : yr[i] + bias[i]);
        }
        break;
      case Epilogue::kBiasTanh:
        for (int i = 0; i < features; ++i) {
          yr[i] = std::tanh(bias == nullptr ? yr[i] : yr[i] + bias[i]);
        }
        break;
    }
  }
}

void Linear(const float* x, int rows, int in_features, const float* weight, const float* bias,
            int out_features, Epilogue epilogue, float* y) {
  if (rows <= 0 || out_features <= 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out_features, in_features, 1.0f, x,
              in_features, weight, in_features, 0.0f, y, out_features);
  ApplyEpilogue(y, rows, out_features, bias, epilogue);
}

bool LinearIsaAvailable(LinearIsa isa) {
  switch (isa) {
    case LinearIsa::kPortable:
      return true;
    case LinearIsa::kAvx2:
      return HasAvx2Fma();
    case LinearIsa::kAvx512:
      return HasAvx512();
    case LinearIsa::kAmxBf16:
      return HasAmxBf16();
  }
  return false;
}

LinearIsa BestLinearIsa() {
  static const LinearIsa best = HasAvx512()    ? LinearIsa::kAvx512
                                : HasAvx2Fma() ? LinearIsa::kAvx2
                                               : LinearIsa::kPortable;
  return best;
}

const char* LinearIsaName(LinearIsa isa) {
  switch (isa) {
    case LinearIsa::kAvx512:
      return "AVX-512";
    case LinearIsa::kAvx2:
      return "AVX2";
    case LinearIsa::kAmxBf16:
      return "AMX bfloat16";
    case LinearIsa::kPortable:
      break;
  }
  return "portable";
}

namespace {

// The portable kernel: plain loops over panels of 16, which the compiler may vectorise
// (aarch64: NEON). Sums in the order of k, as the others.
constexpr int kPortableWidth = 16;

void PanelPortable(const float* x, int rows, int in, const float* panel, int cols,
                   const float* bias, float* y, int ldy) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<int64_t>(r) * in;
    float acc[kPortableWidth] = {};
    for (int k = 0; k < in; ++k) {
      const float* pk = panel + static_cast<int64_t>(k) * kPortableWidth;
      for (int j = 0; j < kPortableWidth; ++j) acc[j] += xr[k] * pk[j];
    }
    for (int j = 0; j < cols; ++j) {
      y[static_cast<int64_t>(r) * ldy + j] = bias == nullptr ? acc[j] : acc[j] + bias[j];
    }
  }
}

packed::PanelFn PanelFor(LinearIsa isa) {
#if defined(__x86_64__)
  if (isa == LinearIsa::kAvx512) return packed::PanelAvx512;
  if (isa == LinearIsa::kAvx2) return packed::PanelAvx2;
#endif
  return PanelPortable;
}

int PanelWidthFor(LinearIsa isa) {
#if defined(__x86_64__)
  if (isa == LinearIsa::kAmxBf16) return packed::kAmxWidth;
  if (isa == LinearIsa::kAvx512) return packed::kAvx512Width;
  if (isa == LinearIsa::kAvx2) return packed::kAvx2Width;
#endif
  return kPortableWidth;
}

int BlockRowsFor(LinearIsa isa) {
#if defined(__x86_64__)
  if (isa == LinearIsa::kAmxBf16) return packed::kAmxRows;
  if (isa == LinearIsa::kAvx512) return packed::kAvx512Rows;
  if (isa == LinearIsa::kAvx2) return packed::kAvx2Rows;
#endif
  return 1;
}

}  // namespace

void PackedWeights::Free::operator()(float* p) const { std::free(p); }

PackedWeights PackedWeights::Pack(const float* weight, int out_features, int in_features,
                                  LinearIsa isa) {
  PackedWeights packed;
  if (!LinearIsaAvailable(isa) || out_features <= 0 || in_features <= 0) return packed;
  const int width = PanelWidthFor(isa);
  packed.isa_ = isa;
  packed.in_ = in_features;
  packed.out_ = out_features;
  packed.width_ = width;
  packed.block_rows_ = BlockRowsFor(isa);
  const int panels = packed.num_panels();
#if defined(__x86_64__)
  if (isa == LinearIsa::kAmxBf16) {
    // Two bfloat16 weights per float of storage; a panel is 32 × AmxDepth(in) of them.
    packed.panel_floats_ = static_cast<int64_t>(width) * packed::AmxDepth(in_features) / 2;
    const size_t bytes = static_cast<size_t>(panels) * packed.panel_floats_ * sizeof(float);
    float* data = static_cast<float*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
    if (data == nullptr) return PackedWeights();
    packed.data_.reset(data);
    packed::PackAmx(weight, out_features, in_features, reinterpret_cast<uint16_t*>(data));
    return packed;
  }
#endif
  packed.panel_floats_ = static_cast<int64_t>(width) * in_features;
  // On a cache line boundary: with it, each step of k in a panel is whole cache lines (16 or
  // 48 floats).
  const size_t floats = static_cast<size_t>(panels) * width * in_features;
  const size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
  float* data = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (data == nullptr) return PackedWeights();
  packed.data_.reset(data);
  for (int p = 0; p < panels; ++p) {
    float* panel = data + static_cast<int64_t>(p) * width * in_features;
    for (int j = 0; j < width; ++j) {
      const int o = p * width + j;
      for (int k = 0; k < in_features; ++k) {
        panel[static_cast<int64_t>(k) * width + j] =
            o < out_features ? weight[static_cast<int64_t>(o) * in_features + k] : 0.0f;
      }
    }
  }
  return packed;
}

namespace {

// Panels [panel_begin, panel_end) of a packed layer, each by `panel(p, cols, panel_bias, y + o)`
// (its output features o = p * width, `cols` of them) for `rows` rows of y, whose rows are
// out_features apart. The kernel adds the bias as it stores the sums (the same rounding as
// adding it after); an activation then runs while the panel's outputs are still in cache.
template <typename PanelKernel>
void ForEachPanel(int rows, const PackedWeights& weight, const float* bias, Epilogue epilogue,
                  int panel_begin, int panel_end, float* y, PanelKernel panel) {
  const int out = weight.out_features();
  const int width = weight.panel_width();
  panel_end = std::min(panel_end, weight.num_panels());
  for (int p = std::max(0, panel_begin); p < panel_end; ++p) {
    const int o = p * width;
    const int cols = std::min(width, out - o);
    panel(p, cols, epilogue == Epilogue::kNone || bias == nullptr ? nullptr : bias + o, y + o);
    if (epilogue != Epilogue::kNone && epilogue != Epilogue::kBias) {
      ApplyEpilogue(y + o, rows, cols, /*bias=*/nullptr, epilogue, out);
    }
  }
}

}  // namespace

void LinearPacked(const float* x, int rows, const PackedWeights& weight, const float* bias,
                  Epilogue epilogue, int panel_begin, int panel_end, float* y) {
  if (rows <= 0 || weight.empty()) return;
  if (weight.isa() == LinearIsa::kAmxBf16) {
    if (std::max(0, panel_begin) >= std::min(panel_end, weight.num_panels())) return;
    // The inputs in bfloat16 once per call, not per panel (each thread keeps its buffer).
    thread_local Bfloat16Inputs inputs;
    if (!inputs.Reserve(rows, weight.in_features())) throw std::bad_alloc();
    RoundInputsToBfloat16(x, rows, weight.in_features(), 0, rows, inputs.data());
    LinearPackedOnBfloat16(inputs.data(), rows, 0, rows, weight, bias, epilogue, panel_begin,
                           panel_end, y);
    return;
  }
  const packed::PanelFn kernel = PanelFor(weight.isa());
  const int in = weight.in_features(), out = weight.out_features();
  ForEachPanel(rows, weight, bias, epilogue, panel_begin, panel_end, y,
               [&](int p, int cols, const float* panel_bias, float* panel_y) {
                 kernel(x, rows, in, weight.panel(p), cols, panel_bias, panel_y, out);
               });
}

static_assert(kBfloat16InputRows == packed::kAmxTileRows, "gemm.h's tile of rows is the kernel's");

int64_t Bfloat16Inputs::Size(int rows, int in_features) {
  return packed::AmxInputSize(rows, in_features);
}

bool Bfloat16Inputs::Reserve(int rows, int in_features) {
  const int64_t size = Size(rows, in_features);
  if (size <= capacity_) return true;
  const size_t bytes = (static_cast<size_t>(size) * sizeof(uint16_t) + 63) / 64 * 64;
  uint16_t* data = static_cast<uint16_t*>(std::aligned_alloc(64, bytes));
  if (data == nullptr) return false;  // the buffer it had stays
  data_.reset(data);
  capacity_ = size;
  return true;
}

void Bfloat16Inputs::Free::operator()(uint16_t* p) const { std::free(p); }

void RoundInputsToBfloat16(const float* x, int rows, int in_features, int r0, int r1, uint16_t* a) {
  assert(r0 % kBfloat16InputRows == 0 && (r1 >= rows || r1 % kBfloat16InputRows == 0));
  r1 = std::min(r1, rows);
  if (r0 >= r1 || !HasAmxBf16()) return;
#if defined(__x86_64__)
  packed::AmxInputs(x + static_cast<int64_t>(r0) * in_features, r1 - r0, in_features,
                    a + static_cast<int64_t>(r0) * packed::AmxDepth(in_features));
#endif
}

void LinearPackedOnBfloat16(const uint16_t* a, int rows, int r0, int r1,
                            const PackedWeights& weight, const float* bias, Epilogue epilogue,
                            int panel_begin, int panel_end, float* y) {
  assert(r0 % kBfloat16InputRows == 0);
  r1 = std::min(r1, rows);
  if (r0 >= r1 || weight.isa() != LinearIsa::kAmxBf16 || weight.empty()) return;
#if defined(__x86_64__)
  const int in = weight.in_features(), out = weight.out_features();
  const int64_t panel_size = static_cast<int64_t>(weight.panel_width()) * packed::AmxDepth(in);
  const uint16_t* rows_a = a + static_cast<int64_t>(r0) * packed::AmxDepth(in);
  ForEachPanel(r1 - r0, weight, bias, epilogue, panel_begin, panel_end,
               y + static_cast<int64_t>(r0) * out,
               [&](int p, int cols, const float* panel_bias, float* panel_y) {
                 packed::AmxPanel(rows_a, r1 - r0, in, weight.bfloat16_panels() + p * panel_size,
                                  cols, panel_bias, panel_y, out);
               });
#endif
}

}  // namespace cpu
}  // namespace bert
