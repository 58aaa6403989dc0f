#include "server/core/pipeline.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "server/core/dtype_convert.h"
#include "server/text/packer.h"
#include "server/util/status_macros.h"

namespace bert {

struct Pipeline::Request {
  ResolvedOptions options;
  EmbedRequestSpec spec;
  absl::Time arrival;
  absl::Time deadline;
  std::shared_ptr<const std::atomic<bool>> cancelled;
  EmbedCallback done;
  // Held from admission until its sequences are queued (or it failed before): the batcher
  // may wait for them (PipelineOptions::adaptive_batch_delay).
  Batcher::Expectation tokenizing;

  absl::Mutex mu;
  bool finished ABSL_GUARDED_BY(mu) = false;
  int remaining ABSL_GUARDED_BY(mu) = 0;
  std::vector<InputResult> results ABSL_GUARDED_BY(mu);
  int64_t tokenize_us = 0;  // Written before any item is enqueued.
  // The answer's bytes, from its tokenization on: written before any item is enqueued, then
  // moved into the result (or released) by Finish.
  Admission::Bytes memory ABSL_GUARDED_BY(mu);
};

namespace {

int64_t Micros(absl::Duration d) { return absl::ToInt64Microseconds(d); }

// "1234 bytes", or "12.3 MiB" from 1 MiB on.
std::string ByteCount(int64_t bytes) {
  if (bytes < (1 << 20)) return absl::StrCat(bytes, " bytes");
  return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / (1 << 20));
}

// Appends `rows` x `hidden` floats starting at `row_begin` of `source` to `tensor`.
void FillTensor(OutputDType dtype, const std::vector<float>& source, int row_begin, int rows,
                int hidden, bool as_vector, TensorData* tensor) {
  tensor->present = true;
  tensor->dtype = dtype;
  if (as_vector) {
    tensor->shape = {hidden};
  } else {
    tensor->shape = {rows, hidden};
  }
  tensor->bytes.clear();
  AppendAs(dtype,
           absl::MakeConstSpan(source.data() + static_cast<size_t>(row_begin) * hidden,
                               static_cast<size_t>(rows) * hidden),
           &tensor->bytes);
}

// Input `index`'s vector of `hidden` values in `source`: its first `dimensions`, then
// normalised if asked.
void FillPooled(OutputDType dtype, const std::vector<float>& source, int index, int hidden,
                int dimensions, bool normalize, TensorData* tensor) {
  const auto begin = source.begin() + static_cast<size_t>(index) * hidden;
  std::vector<float> v(begin, begin + dimensions);
  if (normalize) {
    double sum = 0;
    for (float x : v) sum += static_cast<double>(x) * x;
    const double norm = std::sqrt(sum);
    if (norm > 0) {
      for (float& x : v) x = static_cast<float>(x / norm);
    }
  }
  FillTensor(dtype, v, 0, 1, dimensions, /*as_vector=*/true, tensor);
}

// The token classifier on each of `rows` rows of `sequence` from `row_begin`: [rows, labels].
void FillTokenLogits(OutputDType dtype, const std::vector<float>& sequence, int row_begin, int rows,
                     int hidden, const Classifier& classifier, TensorData* tensor) {
  const int labels = classifier.num_labels();
  std::vector<float> logits(static_cast<size_t>(rows) * labels);
  classifier.ApplyToRows(sequence.data() + static_cast<size_t>(row_begin) * hidden, rows, hidden,
                         logits.data());
  FillTensor(dtype, logits, 0, rows, labels, /*as_vector=*/false, tensor);
}

// The classifier on input `index`'s pooled output (as the engine gave it, before any
// normalisation).
void FillLogits(OutputDType dtype, const std::vector<float>& pooled, int index, int hidden,
                const Classifier& classifier, TensorData* tensor) {
  std::vector<float> logits(classifier.num_labels());
  classifier.Apply(pooled.data() + static_cast<size_t>(index) * hidden, hidden, logits.data());
  FillTensor(dtype, logits, 0, 1, classifier.num_labels(), /*as_vector=*/true, tensor);
}

}  // namespace

Pipeline::Pipeline(PipelineOptions options, std::unique_ptr<Engine> engine,
                   std::unique_ptr<BertTokenizer> tokenizer, PipelineObserver* observer)
    : options_(std::move(options)),
      engine_(std::move(engine)),
      tokenizer_(std::move(tokenizer)),
      observer_(observer),
      admission_(options_.max_concurrent_requests, options_.max_answer_memory_bytes) {
  const ModelConfig& config = engine_->config();
  limits_.num_layers = config.num_layers;
  limits_.vocab_size = config.vocab_size;
  limits_.type_vocab_size = config.type_vocab_size;
  limits_.max_seq_length = config.max_position_embeddings;
  limits_.default_seq_length =
      std::min(options_.default_seq_length, config.max_position_embeddings);
  limits_.max_inputs_per_request = options_.max_inputs_per_request;
  limits_.has_pooler = engine_->has_pooler();
  limits_.hidden_size = config.hidden_size;
  // The classifier reads `hidden`-wide states (LoadModel's checks): a sequence classifier the
  // pooled output (an engine without a pooler cannot serve it), a token classifier each row of
  // the last layer.
  const Classifier& classifier = options_.classifier;
  const bool classifier_fits =
      classifier.present() && (classifier.per_token || engine_->has_pooler()) &&
      classifier.weight.data.size() ==
          static_cast<size_t>(classifier.num_labels()) * config.hidden_size;
  limits_.num_labels = classifier_fits ? classifier.num_labels() : 0;
  limits_.token_classifier = classifier_fits && classifier.per_token;
  limits_.max_response_bytes = options_.max_response_bytes;
  limits_.prompts = &options_.prompts;
}

Pipeline::~Pipeline() {
  draining_ = true;
  // Drain first: the engine's last answers schedule their assembly on the workers. Then the
  // workers run what is left, which may still queue into (and be refused by) the drained
  // batcher, and only then does the batcher go.
  if (batcher_ != nullptr) batcher_->Drain();
  workers_.reset();
  batcher_.reset();
}

absl::Status Pipeline::Warmup() {
  const ModelConfig& config = engine_->config();
  const int rows = std::min(config.max_position_embeddings, options_.max_batch_tokens);
  const int sequences = std::max(1, options_.max_batch_tokens / rows);
  EncoderBatch batch;
  batch.cu_rows.push_back(0);
  for (int s = 0; s < sequences; ++s) {
    for (int r = 0; r < rows; ++r) {
      batch.word_ids.push_back(r % config.vocab_size);
      batch.type_ids.push_back(0);
    }
    batch.cu_rows.push_back(batch.cu_rows.back() + rows);
    // The last row of each sequence is a padding row, so that path is warmed up too.
    batch.num_valid.push_back(std::max(1, rows - 1));
  }
  OutputSelection selection;
  selection.pooled = engine_->has_pooler();
  selection.mean_pooled = true;
  selection.cls = true;
  selection.sequence = true;
  for (int l = 0; l < config.num_layers; ++l) selection.layers.push_back(l);
  EncoderOutput output;
  RETURN_IF_ERROR(WarmupEncode(batch, selection, &output,
                               absl::StrCat("warm-up at ", sequences, " x ", rows, " rows")));
  if (!options_.warmup_row_buckets) return absl::OkStatus();
  OutputSelection pooled;
  pooled.pooled = engine_->has_pooler();
  pooled.mean_pooled = !pooled.pooled;
  // Every power-of-two row bucket from 16 (the CUDA engine tunes its GEMMs per bucket) up
  // to the one that holds a full token budget, whose batch is the budget itself; the shape
  // above has warmed its own row count already.
  const int warmed_rows = sequences * rows;
  for (int bucket_rows = 16;; bucket_rows *= 2) {
    const int total = std::min(bucket_rows, options_.max_batch_tokens);
    if (total == warmed_rows) {
      if (total == options_.max_batch_tokens) break;
      continue;
    }
    // `total` rows in sequences of at most max_position_embeddings rows.
    EncoderBatch bucket;
    for (int left = total; left > 0;) {
      std::vector<int32_t> words(std::min(left, config.max_position_embeddings));
      for (size_t r = 0; r < words.size(); ++r) words[r] = r % config.vocab_size;
      bucket.Add(words, {}, 0);
      left -= static_cast<int>(words.size());
    }
    RETURN_IF_ERROR(
        WarmupEncode(bucket, pooled, &output, absl::StrCat("warm-up at ", total, " rows")));
    if (total == options_.max_batch_tokens) break;
  }
  RETURN_IF_ERROR(CheckRepeatable());
  // The pooler's GEMM has one row per sequence, so its buckets above 16 rows come only with
  // batches of many short sequences: one-row sequences, 32 of them, 64, ... up to a full
  // token budget of them.
  if (!engine_->has_pooler()) return absl::OkStatus();
  for (int bucket = 32;; bucket *= 2) {
    const int count = std::min(bucket, options_.max_batch_tokens);
    EncoderBatch many;
    for (int s = 0; s < count; ++s) {
      const int32_t word = s % config.vocab_size;
      many.Add(absl::MakeConstSpan(&word, 1), {}, 0);
    }
    RETURN_IF_ERROR(
        WarmupEncode(many, pooled, &output, absl::StrCat("warm-up at ", count, " sequences")));
    if (count == options_.max_batch_tokens) break;
  }
  return absl::OkStatus();
}

absl::Status Pipeline::WarmupEncode(const EncoderBatch& batch, const OutputSelection& selection,
                                    EncoderOutput* output, absl::string_view what) {
  warmup_busy_.Begin();
  const absl::Status status = engine_->Encode(batch, selection, output);
  longest_warmup_batch_ = std::max(longest_warmup_batch_, warmup_busy_.End());
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(what, " failed: ", status.message()));
}

absl::Duration Pipeline::EngineBusyFor() const {
  // started_ is set after batcher_, so a reader that sees it sees the Batcher too.
  return started_.load() ? batcher_->BusyFor() : warmup_busy_.BusyFor();
}

absl::Status Pipeline::CheckRepeatable() {
  const ModelConfig& config = engine_->config();
  // Two sequences (one with padding rows) within the token budget, or one if only one fits.
  const int rows =
      std::max(1, std::min({16, config.max_position_embeddings, options_.max_batch_tokens / 2}));
  std::vector<int32_t> words(rows);
  for (int r = 0; r < rows; ++r) words[r] = (7 * r + 1) % config.vocab_size;
  EncoderBatch batch;
  batch.Add(words, {}, 0);
  if (2 * rows <= options_.max_batch_tokens) {
    batch.Add(absl::MakeConstSpan(words).subspan(0, std::max(1, rows / 2)), {}, rows);
  }
  OutputSelection selection;
  selection.pooled = engine_->has_pooler();
  selection.mean_pooled = true;
  selection.cls = true;
  selection.sequence = true;
  // cuBLAS(Lt) is reproducible run to run for a fixed algorithm, and no kernel of ours (the CPU
  // engine's AMX bfloat16 GEMM included) sums in a varying order, so every dtype should agree
  // bit for bit; float32 is allowed rounding differences all the same, as a margin (a false
  // alarm here would stop the server).
  const bool exact = engine_->info().dtype != DType::kFloat32;
  EncoderOutput first;
  for (int run = 0; run < 3; ++run) {
    EncoderOutput output;
    RETURN_IF_ERROR(
        WarmupEncode(batch, selection, &output, absl::StrCat("warm-up repeat check, run ", run)));
    if (run == 0) {
      first = std::move(output);
      continue;
    }
    const std::tuple<const char*, const std::vector<float>*, const std::vector<float>*> tensors[] =
        {{"sequence", &first.sequence, &output.sequence},
         {"pooled", &first.pooled, &output.pooled},
         {"mean_pooled", &first.mean_pooled, &output.mean_pooled},
         {"cls", &first.cls, &output.cls}};
    for (const auto& [name, a, b] : tensors) {
      std::string difference;
      if (a->size() != b->size()) {
        difference = absl::StrCat(a->size(), " values, then ", b->size());
      }
      for (size_t i = 0; difference.empty() && i < a->size(); ++i) {
        const float x = (*a)[i], y = (*b)[i];
        const bool same = exact ? std::memcmp(&x, &y, sizeof(float)) == 0
                                : std::fabs(x - y) <= 1e-5f * std::max(1.0f, std::fabs(x));
        if (!same) difference = absl::StrCat("value ", i, ": ", x, " on run 0, ", y);
      }
      if (!difference.empty()) {
        return absl::InternalError(absl::StrCat(
            "warm-up repeat check: the same batch gave a different ", name, " output on run ", run,
            " (", difference,
            "). On the CUDA engine the three runs are eager, CUDA-graph "
            "capture and replay: try --cuda_graphs=false, then --cuda_overlap_copies=false"));
      }
    }
  }
  return absl::OkStatus();
}

void Pipeline::Start() {
  workers_ = std::make_unique<WorkerPool>(options_.tokenization_workers);
  BatcherOptions batcher_options;
  batcher_options.max_batch_tokens = options_.max_batch_tokens;
  batcher_options.max_batch_delay = options_.max_batch_delay;
  batcher_options.adaptive_delay = options_.adaptive_batch_delay;
  batcher_options.on_engine_failure = options_.on_engine_failure;
  if (observer_ != nullptr) {
    batcher_options.on_batch = [this](const BatchStats& s) { observer_->OnBatch(s); };
    batcher_options.on_queue_depth = [this](int d) { observer_->OnQueueDepth(d); };
    batcher_options.on_fallbacks = [this](const std::vector<EngineFallback>& totals) {
      observer_->OnEngineFallbacks(totals);
    };
    observer_->OnEngineFallbacks(engine_->Fallbacks());
  }
  batcher_ = std::make_unique<Batcher>(engine_.get(), std::move(batcher_options));
  started_ = true;
}

absl::StatusOr<Admission::Permit> Pipeline::Admit() {
  if (!started_.load()) return absl::UnavailableError("the model is still loading");
  if (draining_.load()) return absl::UnavailableError("the server is shutting down");
  Admission::Permit permit = admission_.TryAcquire();
  if (!permit.valid()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the server is at its limit of ", admission_.limit(), " concurrent requests"));
  }
  return permit;
}

bool Pipeline::WaitIdle(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (admission_.in_flight() > 0) {
    if (absl::Now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

bool Pipeline::Drain(absl::Duration timeout) {
  StopAdmitting();
  if (!WaitIdle(timeout)) return false;
  if (batcher_ != nullptr) batcher_->Drain();
  return true;
}

absl::Status Pipeline::PackText(const InputSpec& input, int index, int seq_length,
                                Truncation truncation, PackScratch* scratch,
                                std::vector<int32_t>* word_ids, std::vector<int32_t>* type_ids,
                                bool* truncated, std::vector<TokenSpan>* spans) const {
  const absl::string_view b_text =
      input.text_b.has_value() ? absl::string_view(*input.text_b) : absl::string_view();
  TruncationPolicy policy = TruncationPolicy::kTruncate;
  if (truncation == Truncation::kReject) policy = TruncationPolicy::kReject;
  if (truncation == Truncation::kLongestFirst) policy = TruncationPolicy::kLongestFirst;
  auto packed =
      TokenizeAndPack(*tokenizer_, input.text_a, input.text_b.has_value() ? &b_text : nullptr,
                      seq_length, policy, absl::StrCat("inputs[", index, "].text"), scratch,
                      /*with_spans=*/spans != nullptr);
  if (!packed.ok()) return packed.status();
  if (spans != nullptr) *spans = std::move(packed->spans);
  *word_ids = std::move(packed->word_ids);
  *type_ids = std::move(packed->type_ids);
  *truncated = packed->truncated;
  return absl::OkStatus();
}

void Pipeline::Embed(EmbedRequestSpec spec, absl::Time deadline,
                     std::shared_ptr<const std::atomic<bool>> cancelled, EmbedCallback done) {
  auto request = std::make_shared<Request>();
  request->arrival = absl::Now();
  auto options = ValidateEmbedRequest(spec, limits_);
  if (!options.ok()) {
    done(options.status());
    return;
  }
  // The answer's bytes are reserved once its size is known, after tokenization; one whose
  // smallest possible size (one token per input) does not fit now is refused before it.
  const AnswerSize least =
      EstimateAnswerSize(*options, std::vector<int>(spec.inputs.size(), 1), limits_);
  if (!admission_.BytesFit(least.total())) {
    done(AnswerMemoryExhausted(least.total()));
    return;
  }
  request->options = *std::move(options);
  request->spec = std::move(spec);
  request->deadline = deadline;
  request->cancelled = std::move(cancelled);
  request->done = std::move(done);
  request->tokenizing = batcher_->Expect();
  workers_->Schedule([this, request] { TokenizeAndEnqueue(request); });
}

absl::Status Pipeline::AnswerMemoryExhausted(int64_t answer_bytes) const {
  return absl::ResourceExhaustedError(
      absl::StrCat("the server holds ", ByteCount(admission_.bytes_reserved()),
                   " of answers being computed or sent; this one's ", ByteCount(answer_bytes),
                   " would pass its limit of ", ByteCount(admission_.byte_limit()),
                   ": retry later, or ask for smaller outputs"));
}

void Pipeline::TokenizeAndEnqueue(std::shared_ptr<Request> request) {
  const ResolvedOptions& opt = request->options;
  const absl::Time start = absl::Now();
  const int n = static_cast<int>(request->spec.inputs.size());
  std::vector<BatchItem> items(n);
  std::vector<bool> truncated(n, false);
  std::vector<std::vector<TokenSpan>> spans(opt.offsets ? n : 0);
  PackScratch scratch;
  for (int i = 0; i < n; ++i) {
    InputSpec& input = request->spec.inputs[i];
    BatchItem& item = items[i];
    if (input.is_text) {
      // As sentence-transformers does: the prompt's text, then the input's.
      if (!opt.prompt.empty()) input.text_a.insert(0, opt.prompt);
      bool t = false;
      absl::Status status =
          PackText(input, i, opt.seq_length, opt.truncation, &scratch, &item.word_ids,
                   &item.type_ids, &t, opt.offsets ? &spans[i] : nullptr);
      if (!status.ok()) {
        // A text that fits alone may not with the prompt (TRUNCATION_REJECT): say it counted.
        if (!opt.prompt.empty()) {
          status = absl::Status(
              status.code(),
              absl::StrCat(status.message(), " (with the prompt \"", opt.prompt, "\")"));
        }
        Finish(request, status);
        return;
      }
      truncated[i] = t;
    } else {
      // Only the ids that can be kept are copied (validation already rejected a longer
      // input under TRUNCATION_REJECT), so a queued item holds no more than seq_length.
      const size_t keep = std::min(input.word_ids.size(), static_cast<size_t>(opt.seq_length));
      item.word_ids.assign(input.word_ids.begin(), input.word_ids.begin() + keep);
      if (!input.type_ids.empty()) {
        item.type_ids.assign(input.type_ids.begin(), input.type_ids.begin() + keep);
      }
      truncated[i] = input.word_ids.size() > keep;
    }
  }
  request->tokenize_us = Micros(absl::Now() - start);
  std::vector<int> num_tokens(n);
  for (int i = 0; i < n; ++i) num_tokens[i] = static_cast<int>(items[i].word_ids.size());
  const AnswerSize answer = EstimateAnswerSize(opt, num_tokens, limits_);
  absl::Status size = CheckResponseSize(answer, limits_);
  if (!size.ok()) {
    Finish(request, size);
    return;
  }
  Admission::Bytes memory = admission_.TryReserveBytes(answer.total());
  if (!memory.valid()) {
    Finish(request, AnswerMemoryExhausted(answer.total()));
    return;
  }
  {
    absl::MutexLock lock(&request->mu);
    request->memory = std::move(memory);
    request->remaining = n;
    request->results.resize(n);
    for (int i = 0; i < n; ++i) {
      request->results[i].num_tokens = num_tokens[i];
      request->results[i].truncated = truncated[i];
      if (opt.offsets) request->results[i].spans = std::move(spans[i]);
    }
  }
  const bool per_token = opt.sequence || opt.encoder_outputs || opt.token_logits;
  for (int i = 0; i < n; ++i) {
    BatchItem& item = items[i];
    // Padding rows only where per-token outputs show them (truncation keeps tokens within
    // seq_length); the batcher raises rows below the token count to it.
    item.rows =
        (per_token && opt.padding == PaddingMode::kPadToSeqLength) ? opt.seq_length : num_tokens[i];
    item.pooled = opt.pooled || opt.default_head || opt.logits;
    item.mean_pooled = opt.mean_pooled;
    item.cls = opt.cls;
    item.sequence = opt.sequence || opt.token_logits;
    item.layers = opt.layers_sorted;
    item.deadline = request->deadline;
    item.cancelled = request->cancelled;
    item.done = [this, request, i](const absl::Status& status, const BatchSlice& slice) {
      if (!status.ok()) {
        Finish(request, status);
        return;
      }
      workers_->Schedule([this, request, i, slice] { Assemble(request, i, slice); });
    };
  }
  batcher_->EnqueueAll(std::move(items), std::move(request->tokenizing));
}

void Pipeline::Assemble(const std::shared_ptr<Request>& request, int index,
                        const BatchSlice& slice) {
  InputResult result;
  {
    absl::MutexLock lock(&request->mu);
    if (request->finished) return;
    result.num_tokens = request->results[index].num_tokens;
    result.truncated = request->results[index].truncated;
    result.spans = std::move(request->results[index].spans);
  }
  const ResolvedOptions& opt = request->options;
  const int hidden = engine_->config().hidden_size;
  // The vector heads' leading values kept (validation keeps it within hidden).
  const int dims = opt.dimensions > 0 ? std::min(opt.dimensions, hidden) : hidden;
  const EncoderOutput& out = *slice.output;
  const int rows = slice.rows;  // seq_length when padded, else the input's tokens
  if (opt.pooled)
    FillPooled(opt.dtype, out.pooled, slice.index, hidden, dims, opt.normalize, &result.pooled);
  if (opt.default_head) {
    // "default" is pooled_output: one conversion when both are asked for.
    if (opt.pooled) {
      result.default_output = result.pooled;
    } else {
      FillPooled(opt.dtype, out.pooled, slice.index, hidden, dims, opt.normalize,
                 &result.default_output);
    }
  }
  if (opt.mean_pooled)
    FillPooled(opt.dtype, out.mean_pooled, slice.index, hidden, dims, opt.normalize,
               &result.mean_pooled);
  if (opt.cls)
    FillPooled(opt.dtype, out.cls, slice.index, hidden, dims, opt.normalize, &result.cls);
  if (opt.logits) {
    FillLogits(opt.dtype, out.pooled, slice.index, hidden, options_.classifier, &result.logits);
  }
  if (opt.sequence) {
    FillTensor(opt.dtype, out.sequence, slice.row_begin, rows, hidden, false, &result.sequence);
  }
  if (opt.token_logits) {
    FillTokenLogits(opt.dtype, out.sequence, slice.row_begin, rows, hidden, options_.classifier,
                    &result.token_logits);
  }
  if (opt.encoder_outputs) {
    const std::vector<int>& layers = *slice.layers;
    for (int layer : opt.layers_in_order) {
      const size_t k = std::lower_bound(layers.begin(), layers.end(), layer) - layers.begin();
      result.layers.emplace_back(layer, TensorData{});
      FillTensor(opt.dtype, out.layers[k], slice.row_begin, rows, hidden, false,
                 &result.layers.back().second);
    }
  }
  result.timing.tokenize_us = request->tokenize_us;
  result.timing.queue_us = slice.queue_us;
  result.timing.inference_us = slice.inference_us;
  result.timing.total_us = Micros(absl::Now() - request->arrival);
  bool last = false;
  {
    absl::MutexLock lock(&request->mu);
    if (request->finished) return;
    request->results[index] = std::move(result);
    last = --request->remaining == 0;
  }
  if (last) Finish(request, absl::OkStatus());
}

void Pipeline::Finish(const std::shared_ptr<Request>& request, absl::Status status) {
  EmbedResult result;
  {
    absl::MutexLock lock(&request->mu);
    if (request->finished) return;
    request->finished = true;
    if (status.ok()) {
      result.memory = std::move(request->memory);
      result.results = std::move(request->results);
      result.timing.tokenize_us = request->tokenize_us;
      for (const InputResult& r : result.results) {
        result.timing.queue_us = std::max(result.timing.queue_us, r.timing.queue_us);
        result.timing.inference_us = std::max(result.timing.inference_us, r.timing.inference_us);
      }
      result.timing.total_us = Micros(absl::Now() - request->arrival);
    } else {
      request->memory.Reset();  // no answer to hold
    }
  }
  // A request that failed before its sequences were queued must not keep the batcher
  // expecting them; released before the answer, after which the caller may release its
  // permit and then destroy the Pipeline. (EnqueueAll took it over otherwise: nothing left
  // to release.)
  request->tokenizing.Release();
  EmbedCallback done = std::move(request->done);
  if (status.ok()) {
    done(std::move(result));
  } else {
    done(status);
  }
}

void Pipeline::TokenizeOnWorker(TokenizeRequestSpec request, TokenizeCallback done) {
  workers_->Schedule(
      [this, request = std::move(request), done = std::move(done)] { done(Tokenize(request)); });
}

absl::StatusOr<std::vector<Encoding>> Pipeline::Tokenize(const TokenizeRequestSpec& request) const {
  ASSIGN_OR_RETURN(const TokenizeOptions options, ValidateTokenizeRequest(request, limits_));
  const int seq_length = options.seq_length;
  std::vector<Encoding> encodings;
  encodings.reserve(request.inputs.size());
  PackScratch scratch;
  for (size_t i = 0; i < request.inputs.size(); ++i) {
    std::vector<int32_t> word_ids, type_ids;
    bool truncated = false;
    const InputSpec* input = &request.inputs[i];
    InputSpec with_prompt;  // as Embed puts it, only where there is one
    if (!options.prompt.empty()) {
      with_prompt = *input;
      with_prompt.text_a.insert(0, options.prompt);
      input = &with_prompt;
    }
    Encoding encoding;
    RETURN_IF_ERROR(PackText(*input, static_cast<int>(i), seq_length, request.truncation, &scratch,
                             &word_ids, &type_ids, &truncated, &encoding.spans));
    encoding.num_tokens = static_cast<int>(word_ids.size());
    encoding.truncated = truncated;
    for (int32_t id : word_ids) encoding.tokens.emplace_back(tokenizer_->Token(id));
    PackedInput packed;
    packed.word_ids = std::move(word_ids);
    packed.type_ids = std::move(type_ids);
    packed.truncated = truncated;
    PadToLength(packed, seq_length, tokenizer_->pad_id(), &encoding.word_ids, &encoding.mask,
                &encoding.type_ids);
    encodings.push_back(std::move(encoding));
  }
  return encodings;
}

void Pipeline::DecodeOnWorker(DecodeRequestSpec request, DecodeCallback done) {
  workers_->Schedule(
      [this, request = std::move(request), done = std::move(done)] { done(Decode(request)); });
}

absl::StatusOr<DecodeResult> Pipeline::Decode(const DecodeRequestSpec& request) {
  RETURN_IF_ERROR(ValidateDecodeRequest(request, limits_));
  const bool skip_special_tokens = !request.keep_special_tokens;
  // Each text's field tag and length prefix take at most 6 bytes.
  int64_t bound = 0;
  for (const std::vector<int32_t>& ids : request.inputs) {
    bound += static_cast<int64_t>(tokenizer_->DecodedSizeBound(ids, skip_special_tokens)) + 6;
  }
  if (limits_.max_response_bytes > 0 && bound > limits_.max_response_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("the texts could take ", bound, " bytes, over the server's ",
                     limits_.max_response_bytes, "-byte message limit: send fewer ids"));
  }
  DecodeResult result;
  result.memory = admission_.TryReserveBytes(bound);
  if (!result.memory.valid()) return AnswerMemoryExhausted(bound);
  result.texts.reserve(request.inputs.size());
  for (const std::vector<int32_t>& ids : request.inputs) {
    result.texts.push_back(tokenizer_->Decode(ids, skip_special_tokens));
  }
  return result;
}

}  // namespace bert
