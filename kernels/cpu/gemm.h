// Linear layers (y = x * W^T + b) with fused epilogues, two ways:
//  * Linear: OpenBLAS sgemm on the Hugging Face layout [out_features, in_features], as given;
//    thread use is OpenBLAS's (openblas_set_num_threads). The reference the CUDA kernels' tests
//    compare with.
//  * LinearPacked: our kernel on weights packed once (PackedWeights), which the CPU engine runs.
//    sgemm packs the weights again on every call; at the row counts of a serving batch that
//    copy costs up to as much as the arithmetic (bench/RESULTS_cpu.md).
#ifndef BERT_KERNELS_CPU_GEMM_H_
#define BERT_KERNELS_CPU_GEMM_H_

#include <cstdint>
#include <memory>

namespace bert {
namespace cpu {

enum class Epilogue { kNone, kBias, kBiasGeluErf, kBiasGeluTanh, kBiasTanh };

// y[rows, out_features] = epilogue(x[rows, in_features] * weight^T + bias).
// `bias` may be null only with Epilogue::kNone (and is ignored then). `y` must not alias x.
void Linear(const float* x, int rows, int in_features, const float* weight, const float* bias,
            int out_features, Epilogue epilogue, float* y);

// Applies `epilogue` in place to y[rows, features] (the part of Linear after the GEMM), so
// that callers can run the GEMM with Epilogue::kNone and split the epilogue across threads.
// A null `bias` is not added (the values hold it already): then only the activation runs.
// `ld`: the distance between rows of y (0: `features`).
void ApplyEpilogue(float* y, int rows, int features, const float* bias, Epilogue epilogue,
                   int ld = 0);

// The versions of the packed Linear kernel: one per vector instruction set, float32 throughout;
// and kAmxBf16, Intel AMX's tile unit, which multiplies the weights and inputs rounded to
// bfloat16 and sums the products in float32 (linear_amx.h): results to about 1e-2 relative,
// as a bfloat16 engine's, not float32's.
enum class LinearIsa { kPortable, kAvx2, kAvx512, kAmxBf16 };

// Whether this CPU (and OS) runs `isa`: AVX2 needs AVX2 and FMA; AVX-512 needs AVX-512F too;
// AMX bfloat16 needs AMX-TILE, AMX-BF16, AVX-512 BF16 and Linux's permission (HasAmxBf16).
bool LinearIsaAvailable(LinearIsa isa);
// The best float32 version this CPU runs (what PackedWeights::Pack chooses by default).
LinearIsa BestLinearIsa();
// "AVX-512", "AVX2", "portable" or "AMX bfloat16".
const char* LinearIsaName(LinearIsa isa);

// A Linear layer's weights [out_features, in_features], packed once (at load time) for
// LinearPacked: in panels of panel_width() output features, each laid out k by k
// (kernels/cpu/packed_kernel.h), or for AMX in bfloat16 tiles (kernels/cpu/linear_amx.h).
// Move-only; as large as the weights (half as large in bfloat16).
class PackedWeights {
 public:
  PackedWeights() = default;

  // Packs for `isa`'s version of the kernel, which decides the panel width. Empty (and
  // LinearPacked a no-op that writes nothing) where this CPU does not run `isa`, where a size
  // is not positive, or where the memory cannot be allocated.
  static PackedWeights Pack(const float* weight, int out_features, int in_features,
                            LinearIsa isa = BestLinearIsa());

  bool empty() const { return data_ == nullptr; }
  int in_features() const { return in_; }
  int out_features() const { return out_; }
  int panel_width() const { return width_; }
  // The input rows the kernel runs together (8 with AVX-512, 6 with AVX2, 1 portable, 32
  // AMX): a caller that splits rows does best in multiples of it.
  int block_rows() const { return block_rows_; }
  int num_panels() const { return (out_ + width_ - 1) / width_; }
  LinearIsa isa() const { return isa_; }
  // Panel p of a float32 version (not kAmxBf16).
  const float* panel(int p) const { return data_.get() + static_cast<int64_t>(p) * panel_floats_; }
  // Every panel of the kAmxBf16 version, one after the other.
  const uint16_t* bfloat16_panels() const { return reinterpret_cast<const uint16_t*>(data_.get()); }

 private:
  struct Free {
    void operator()(float* p) const;
  };
  LinearIsa isa_ = LinearIsa::kPortable;
  int in_ = 0, out_ = 0, width_ = 1, block_rows_ = 1;
  int64_t panel_floats_ = 0;  // a panel's size in floats (of float32 weights)
  std::unique_ptr<float[], Free> data_;
};

// y[rows, out_features] = epilogue(x[rows, in_features] * weight^T + bias), for the output
// features of panels [panel_begin, panel_end) only (features p * panel_width() up to
// (p + 1) * panel_width(), within out_features), so that threads can split a layer by panels
// as well as by rows. y has its full layout [rows, out_features]. Nothing is copied: each
// panel is read once per block of input rows (block_rows()), and
// each output is summed in the order of k, so its bits depend neither on `rows` nor on the
// split. (AVX-512 and AVX2 give the same bits: one fused multiply-add per k; the portable
// loop may round the products separately.)
void LinearPacked(const float* x, int rows, const PackedWeights& weight, const float* bias,
                  Epilogue epilogue, int panel_begin, int panel_end, float* y);

// The AMX version (kAmxBf16) multiplies its inputs rounded to bfloat16, in its own layout
// (linear_amx.h), which LinearPacked makes for its rows on every call. A caller that runs a
// layer in several parts (threads taking groups of panels of the same rows) can round the
// inputs once instead and pass every part the rounded rows:
//   Bfloat16Inputs a;  a.Reserve(rows, in_features);
//   RoundInputsToBfloat16(x, rows, in_features, r0, r1, a.data());  // by parts of rows
//   LinearPackedOnBfloat16(a.data(), rows, r0, r1, weight, bias, epilogue, panel_begin,
//                          panel_end, y);                          // by parts of rows, panels
// Every part's r0 a multiple of kBfloat16InputRows, and r1 too unless it is `rows` (else the
// parts' tiles overlap; asserted in debug builds); x, a and y the whole layer's; parts that
// round different rows may run at once. The same bits as LinearPacked on x. Only where
// LinearIsaAvailable(kAmxBf16): elsewhere RoundInputsToBfloat16 writes nothing, as
// LinearPackedOnBfloat16 on other weights than kAmxBf16.
inline constexpr int kBfloat16InputRows = 16;

// A buffer for the rounded inputs, on a cache line boundary (the tile unit loads whole lines).
class Bfloat16Inputs {
 public:
  // Room for `rows` rows of `in_features` values (the buffer is kept where it is large enough).
  // False where the memory cannot be allocated; the buffer it had then stays.
  bool Reserve(int rows, int in_features);
  uint16_t* data() const { return data_.get(); }
  int64_t capacity_bytes() const { return capacity_ * static_cast<int64_t>(sizeof(uint16_t)); }
  // The values `rows` rows of `in_features` take (rows rounded up to kBfloat16InputRows, each
  // row to a whole step of the kernel).
  static int64_t Size(int rows, int in_features);

 private:
  struct Free {
    void operator()(uint16_t* p) const;
  };
  std::unique_ptr<uint16_t[], Free> data_;
  int64_t capacity_ = 0;
};

void RoundInputsToBfloat16(const float* x, int rows, int in_features, int r0, int r1, uint16_t* a);
void LinearPackedOnBfloat16(const uint16_t* a, int rows, int r0, int r1,
                            const PackedWeights& weight, const float* bias, Epilogue epilogue,
                            int panel_begin, int panel_end, float* y);

}  // namespace cpu
}  // namespace bert

#endif  // BERT_KERNELS_CPU_GEMM_H_
