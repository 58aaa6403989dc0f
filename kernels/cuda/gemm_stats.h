// Gemm's counters, in a header free of CUDA so that the engine's CUDA-free interface
// (server/engine/cuda_engine.h) can report them.
#ifndef BERT_KERNELS_CUDA_GEMM_STATS_H_
#define BERT_KERNELS_CUDA_GEMM_STATS_H_

namespace bert::cuda {

// Counters since a Gemm's creation (for tests, logs and benchmarks).
struct GemmStats {
  long long plans = 0;               // exact-rows plans made (descriptors + algorithm)
  long long tuned_buckets = 0;       // buckets tuned by timing (fallbacks included)
  long long timed_candidates = 0;    // candidates timed successfully, over all tunings
  long long tuning_fallbacks = 0;    // tunings where no candidate ran: heuristic top-1 kept
  long long abandoned_buckets = 0;   // buckets no longer tuned after kMaxTuningAttempts such
  long long bucket_reuses = 0;       // plans that took their bucket's tuned algorithm
  long long bucket_rejections = 0;   // plans whose bucket algorithm failed AlgoCheck
  long long capture_selections = 0;  // plans given the heuristic top-1 while capturing
  long long custom_timed = 0;        // our kernel's candidates timed (included above)
  long long custom_mismatches = 0;   // ... of which disagreed with cuBLASLt: dropped
  long long custom_chosen = 0;       // tunings our kernel won
  long long custom_forced = 0;       // plans given our kernel by force_custom_splits
};

}  // namespace bert::cuda

#endif  // BERT_KERNELS_CUDA_GEMM_STATS_H_
