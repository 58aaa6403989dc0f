// The request path behind every RPC: admission -> validation -> tokenization workers ->
// batcher -> engine -> response assembly.
//
// Pipeline owns the engine (through its Batcher), the tokenizer and the worker pool.
// Lifecycle: construct, Warmup() (runs the largest batch shape once), Start(), serve,
// Drain() (refuse new requests with UNAVAILABLE, finish the accepted ones). Thread-safe
// after Start(): Embed/Tokenize may be called from any number of threads.
#ifndef BERT_SERVER_CORE_PIPELINE_H_
#define BERT_SERVER_CORE_PIPELINE_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/core/admission.h"
#include "server/core/batcher.h"
#include "server/core/types.h"
#include "server/core/validation.h"
#include "server/core/worker_pool.h"
#include "server/engine/engine.h"
#include "server/engine/model.h"
#include "server/text/packer.h"
#include "server/text/tokenizer.h"

namespace bert {

struct PipelineOptions {
  int max_concurrent_requests = 64;
  int max_inputs_per_request = 256;
  int max_batch_tokens = 8192;
  absl::Duration max_batch_delay = absl::Microseconds(2000);
  // Wait out max_batch_delay only while waiting gains sequences (BatcherOptions::
  // adaptive_delay): once a few waits in a row gained none (a caller alone), a batch waits
  // only for requests being tokenized, re-checking every 32nd batch. false: every batch for
  // an idle engine waits the delay.
  bool adaptive_batch_delay = true;
  int tokenization_workers = 2;
  int default_seq_length = 128;
  int64_t max_response_bytes = 0;  // 0: unchecked; else larger answers are refused early.
  // The model's prompts by name (EmbedRequest.prompt_name).
  std::map<std::string, std::string> prompts;
  // The model's classification head, applied while each answer is assembled to the engine's
  // pooled output (HEAD_LOGITS) or, per_token, to each row of its last layer
  // (HEAD_TOKEN_LOGITS); none where !classifier.present().
  Classifier classifier;
  // At most this many bytes of answers (EstimateAnswerSize, reserved once a request is
  // tokenized) held at once, from being computed until sent; a request whose answer would
  // pass it is refused with RESOURCE_EXHAUSTED. 0: no limit. Below max_response_bytes, the
  // largest answers could never be served.
  int64_t max_answer_memory_bytes = 0;
  // Warmup() also runs one batch per power-of-two row bucket from 16 up to the bucket that
  // holds max_batch_tokens (that one with max_batch_tokens rows; pooled output only), and,
  // with a pooler, batches of 32, 64, ... up to max_batch_tokens one-row sequences (the
  // pooler's GEMM has a row per sequence), so that per-shape setup (the CUDA engine's
  // cuBLASLt autotuning, which is per bucket, and kernel loading) happens before the server
  // reports SERVING; and one small batch three times, which must give the same outputs (on
  // the CUDA engine: eager, CUDA-graph capture, replay).
  bool warmup_row_buckets = false;
  // Called once, from the engine thread, when a batch failed and the engine reports itself
  // unusable for good (Engine::Health); may be empty. Every later batch fails too, so the
  // server should stop serving and exit (bert_server drains and exits with status 1).
  std::function<void(const absl::Status&)> on_engine_failure;
};

// Hooks for metrics and logs; called from pipeline threads, must be thread-safe and quick.
// (A new hook must be forwarded by PipelineObservers too.)
class PipelineObserver {
 public:
  virtual ~PipelineObserver() = default;
  // From the engine thread, after each batch.
  virtual void OnBatch(const BatchStats& stats) {}
  virtual void OnQueueDepth(int depth) {}
  // The engine's fallback totals (Engine::Fallbacks): once from Start(), on its caller's
  // thread (the warm-up's, zero counts included), then from the engine thread after each
  // batch that changed them.
  virtual void OnEngineFallbacks(const std::vector<EngineFallback>& totals) {}
};

// Several observers as one: each hook goes to every one, in order. They must outlive it.
class PipelineObservers final : public PipelineObserver {
 public:
  explicit PipelineObservers(std::vector<PipelineObserver*> observers)
      : observers_(std::move(observers)) {}
  void OnBatch(const BatchStats& stats) override {
    for (PipelineObserver* o : observers_) o->OnBatch(stats);
  }
  void OnQueueDepth(int depth) override {
    for (PipelineObserver* o : observers_) o->OnQueueDepth(depth);
  }
  void OnEngineFallbacks(const std::vector<EngineFallback>& totals) override {
    for (PipelineObserver* o : observers_) o->OnEngineFallbacks(totals);
  }

 private:
  const std::vector<PipelineObserver*> observers_;
};

using EmbedCallback = std::function<void(absl::StatusOr<EmbedResult>)>;

class Pipeline {
 public:
  // `observer` may be null and must outlive the Pipeline.
  Pipeline(PipelineOptions options, std::unique_ptr<Engine> engine,
           std::unique_ptr<BertTokenizer> tokenizer, PipelineObserver* observer);
  ~Pipeline();

  // Runs one batch of the largest shape (max_batch_tokens rows in sequences of the
  // longest allowed length, every output selected) so that allocations happen now, then
  // the row buckets when options.warmup_row_buckets.
  absl::Status Warmup();
  void Start();

  // RESOURCE_EXHAUSTED when at the concurrency limit, UNAVAILABLE before Start or while
  // draining. The caller holds the permit until the request's answer has left the server
  // (for gRPC: until the call is done, or the stream's message written), marking it
  // answered (Permit::MarkAnswered) when the answer is handed over for sending, so that the
  // limit bounds the answers held for slow readers too (as many again as it admits), and
  // Drain waits for them. The answer's bytes (EmbedResult::memory) go into the permit
  // (Permit::Hold) for that time.
  absl::StatusOr<Admission::Permit> Admit();

  // Validates at once (a bad request gets `done` with INVALID_ARGUMENT before this
  // returns, and one whose smallest possible answer does not fit in the byte budget now
  // RESOURCE_EXHAUSTED), then tokenizes and batches. `done` runs exactly once, on some thread; the
  // caller's permit (Admit) must be held until then at least. `cancelled` (may be null) is
  // polled before the request's sequences reach the engine.
  void Embed(EmbedRequestSpec request, absl::Time deadline,
             std::shared_ptr<const std::atomic<bool>> cancelled, EmbedCallback done);

  // Preprocessing only, run on the caller's thread.
  absl::StatusOr<std::vector<Encoding>> Tokenize(const TokenizeRequestSpec& request) const;
  // The same on a tokenization worker (after Start), so that a large request does not hold
  // the caller's thread (e.g. gRPC's); `done` runs there, exactly once. As with Embed, the
  // caller holds its permit until then at least.
  using TokenizeCallback = std::function<void(absl::StatusOr<std::vector<Encoding>>)>;
  void TokenizeOnWorker(TokenizeRequestSpec request, TokenizeCallback done);

  // Token ids back to text (BertTokenizer::Decode), one text per input, after validation
  // (ValidateDecodeRequest). Before any text is built, the texts' size is bounded (each token
  // kept, plus one, and 6 bytes per text): INVALID_ARGUMENT over limits().max_response_bytes,
  // RESOURCE_EXHAUSTED where the answer memory budget cannot take it; else the bound is
  // reserved in the result's `memory`. Run on the caller's thread.
  absl::StatusOr<DecodeResult> Decode(const DecodeRequestSpec& request);
  // The same on a tokenization worker, as TokenizeOnWorker.
  using DecodeCallback = std::function<void(absl::StatusOr<DecodeResult>)>;
  void DecodeOnWorker(DecodeRequestSpec request, DecodeCallback done);

  // From now on Admit refuses every request with UNAVAILABLE ("the server is shutting down").
  void StopAdmitting() { draining_ = true; }
  // True once every permit is released (every admitted request answered and its answer sent),
  // false if that takes longer than `timeout`. Admits meanwhile unless StopAdmitting was
  // called: a server that has told its clients to go elsewhere (bert_server's drain) still
  // serves every call gRPC has handed to it.
  bool WaitIdle(absl::Duration timeout);
  // StopAdmitting, WaitIdle, then stops the batcher for good (the engine is idle): true, or
  // false (batcher left running) if the permits are not all back within `timeout`.
  bool Drain(absl::Duration timeout = absl::InfiniteDuration());

  const RequestLimits& limits() const { return limits_; }
  const PipelineOptions& options() const { return options_; }
  const Engine& engine() const { return *engine_; }
  const BertTokenizer& tokenizer() const { return *tokenizer_; }
  int in_flight() const { return admission_.in_flight(); }
  // Bytes of answers held (options().max_answer_memory_bytes).
  int64_t answer_memory_bytes() const { return admission_.bytes_reserved(); }
  // How long the engine has been running its current batch: a warm-up batch, or after
  // Start a served one (Batcher::BusyFor); zero while it is idle. Any thread, from
  // construction until destruction begins (a watchdog's reading: a batch that never ends
  // means a hung device; the watchdog must stop before the Pipeline goes).
  absl::Duration EngineBusyFor() const;
  // The longest batch of Warmup() so far (what a watchdog's limit must allow at startup).
  // The thread that ran Warmup, after it.
  absl::Duration longest_warmup_batch() const { return longest_warmup_batch_; }
  // Whether Start() has been called (the warm-up is over). Any thread.
  bool started() const { return started_.load(); }

 private:
  struct Request;
  // Warm-up: one small batch three times (on the CUDA engine: eager, graph capture, replay);
  // INTERNAL unless the three agree (bit for bit; to rounding in float32).
  absl::Status CheckRepeatable();
  // engine_->Encode, timed by warmup_busy_; an error is prefixed with "<what> failed: ".
  absl::Status WarmupEncode(const EncoderBatch& batch, const OutputSelection& selection,
                            EncoderOutput* output, absl::string_view what);
  void TokenizeAndEnqueue(std::shared_ptr<Request> request);
  // RESOURCE_EXHAUSTED: an answer of `answer_bytes` does not fit in the byte budget now.
  absl::Status AnswerMemoryExhausted(int64_t answer_bytes) const;
  void Assemble(const std::shared_ptr<Request>& request, int index, const BatchSlice& slice);
  void Finish(const std::shared_ptr<Request>& request, absl::Status status);
  // Tokenizes and packs one text input; `spans` (may be null) gets each token's TokenSpan.
  // `scratch`, one per request, keeps buffers and the last text_a's tokens between its
  // inputs (a Rerank's query is tokenized once).
  absl::Status PackText(const InputSpec& input, int index, int seq_length, Truncation truncation,
                        PackScratch* scratch, std::vector<int32_t>* word_ids,
                        std::vector<int32_t>* type_ids, bool* truncated,
                        std::vector<TokenSpan>* spans = nullptr) const;

  const PipelineOptions options_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<BertTokenizer> tokenizer_;
  PipelineObserver* const observer_;
  RequestLimits limits_;
  Admission admission_;
  std::atomic<bool> started_{false};
  std::atomic<bool> draining_{false};
  std::unique_ptr<WorkerPool> workers_;
  std::unique_ptr<Batcher> batcher_;
  BusyClock warmup_busy_;
  absl::Duration longest_warmup_batch_;
};

}  // namespace bert

#endif  // BERT_SERVER_CORE_PIPELINE_H_
