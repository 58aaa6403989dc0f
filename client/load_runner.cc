#include "client/load_runner.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <functional>
#include <queue>
#include <random>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/grpc/status_map.h"

namespace bert {
namespace {

using Clock = std::chrono::steady_clock;

// A call from its send to its callback.
struct InFlight {
  grpc::ClientContext context;         // unary calls only
  v1::EmbedResponse response;          // unary Embed calls only
  v1::RerankResponse rerank_response;  // Rerank calls only
  bool rerank = false;
  const v1::EmbedRequest* request = nullptr;
  CallRecord record;
  int refused_before = 0;  // closed loop: refused calls in a row of its slot before this one
};

void ReadTiming(const v1::Timing& t, CallRecord* r) {
  r->server_tokenize_us = t.tokenize_us();
  r->server_queue_us = t.queue_us();
  r->server_inference_us = t.inference_us();
  r->server_total_us = t.total_us();
}

// Fills `r` from an answer: its code (a stream's per-message error counts as the call's
// status), real tokens and the server's timing. Returns the error's message, if any.
std::string ReadAnswer(const v1::EmbedResponse& response, CallRecord* r) {
  if (response.has_error() && response.error().code() != 0) {
    r->code = response.error().code();
    return response.error().message();
  }
  for (const v1::EmbedResult& result : response.results()) r->tokens += result.num_tokens();
  ReadTiming(response.timing(), r);
  return {};
}

// The same for a Rerank answer: the tokens of its ranked pairs.
std::string ReadAnswer(const v1::RerankResponse& response, CallRecord* r) {
  for (const v1::RankedText& ranked : response.ranked()) r->tokens += ranked.num_tokens();
  ReadTiming(response.timing(), r);
  return {};
}

// Why a call failed without an answer from the server.
constexpr absl::string_view kNotSentMessage = "its deadline passed before it could be sent";
constexpr absl::string_view kLateAnswerMessage = "answered after the call's timeout";
constexpr absl::string_view kOutOfOrderMessage =
    "an answer's request_id is not its message's (answers out of order)";
constexpr absl::string_view kStreamEndedMessage = "the stream ended before answering";

}  // namespace

// The state of one Run: the sending loop runs on the caller's thread, completions arrive
// on gRPC's threads.
class LoadRunner::Step {
 public:
  // Opens the streams in stream mode.
  Step(LoadRunner* runner, const LoadStep& spec);

  int64_t Now() const { return (Clock::now() - start_).count(); }

  // Sends calls until the window ends.
  void SendAll() {
    if (spec_.concurrency > 0) {
      SendClosedLoop();
    } else {
      SendOpenLoop();
    }
  }

  // Waits until every call sent has completed (and every stream has ended): gRPC answers
  // each unary call by its deadline; calls and streams still open long after that are
  // cancelled. False if even cancelling did not end them.
  bool Drain();

  // The step's result, or the first error in counting its calls (INTERNAL).
  absl::StatusOr<StepResult> TakeResult() {
    absl::MutexLock lock(&mu_);
    if (!accounting_.ok()) return accounting_;
    StepResult result;
    result.summary = accumulator_.Summary();
    result.calls = std::move(records_);
    result.window_begin_ns = window_begin_ns_;
    result.window_end_ns = window_end_ns_;
    result.stopped_ns = stopped_ns_;
    result.stopped_why = streams_end_.empty() ? "every stream ended" : streams_end_;
    return result;
  }

  int64_t window_begin_ns() const { return window_begin_ns_; }
  int64_t window_end_ns() const { return window_end_ns_; }
  Clock::time_point start() const { return start_; }

 private:
  class Stream;

  // Stream mode: every stream has ended, so every further call would fail at once. A closed
  // loop would spin on them and stops instead; an open loop keeps its schedule and records
  // each as failed.
  bool AllStreamsEnded() const {
    return !streams_.empty() && dead_streams_.load() == static_cast<int>(streams_.size());
  }

  // Keeps `concurrency` calls open; each freed slot is refilled at once, or, after a second
  // refused call in a row, once LoadOptions::refused_backoff has passed. A call is intended when
  // its slot freed (the first `concurrency` at the start), so a sender slow to refill shows as send
  // lag.
  void SendClosedLoop() {
    // Every slot is open, or waiting in freed_at_ for its time.
    const auto slot_ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return open_ + static_cast<int>(freed_at_.size()) < spec_.concurrency ||
             (!freed_at_.empty() && freed_at_.top().at <= Now());
    };
    while (true) {
      if (AllStreamsEnded()) {
        stopped_ns_ = Now();
        return;
      }
      int64_t intended;
      int refused_before = 0;
      {
        absl::MutexLock lock(&mu_);
        while (!slot_ready()) {
          const int64_t now = Now();
          if (now >= window_end_ns_) return;
          // Until the earliest slot's time, or until a slot frees earlier than that.
          const int64_t earliest = freed_at_.empty() ? window_end_ns_ : freed_at_.top().at;
          const auto ready_or_earlier = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
            return slot_ready() || (!freed_at_.empty() && freed_at_.top().at < earliest);
          };
          mu_.AwaitWithTimeout(absl::Condition(&ready_or_earlier),
                               absl::Nanoseconds(std::min(window_end_ns_, earliest) - now));
        }
        if (open_ + static_cast<int>(freed_at_.size()) < spec_.concurrency) {
          intended = Now();
        } else {
          intended = freed_at_.top().at;
          refused_before = freed_at_.top().refused_in_a_row;
          freed_at_.pop();
        }
        // A slot may free just as the window ends: nothing is sent for after it.
        if (intended >= window_end_ns_ || Now() >= window_end_ns_) return;
        ++open_;
      }
      Send(intended, /*held=*/false, refused_before);
    }
  }

  // Sends at the schedule's times, waiting only when max_outstanding calls are open.
  void SendOpenLoop() {
    std::mt19937_64 rng(runner_->options_.seed);
    std::exponential_distribution<double> gap_s(spec_.rate);
    const double constant_gap_ns = 1e9 / spec_.rate;
    const auto below_limit = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return open_ < runner_->options_.max_outstanding;
    };
    double next_ns = 0;
    while (next_ns < window_end_ns_) {
      const int64_t intended = static_cast<int64_t>(next_ns);
      SleepUntil(intended);
      bool held;
      {
        absl::MutexLock lock(&mu_);
        held = !below_limit();
        mu_.Await(absl::Condition(&below_limit));
        ++open_;
      }
      Send(intended, held);
      next_ns += spec_.poisson ? gap_s(rng) * 1e9 : constant_gap_ns;
    }
  }

  // Sleeps most of the way, then yields until `ns` (sleep alone overshoots by ~0.1 ms).
  void SleepUntil(int64_t ns) const {
    constexpr int64_t kSpinNs = 200'000;
    int64_t left = ns - Now();
    if (left > kSpinNs) absl::SleepFor(absl::Nanoseconds(left - kSpinNs));
    while (Now() < ns) std::this_thread::yield();
  }

  // Sends one call intended at `intended_ns` (`held`: see CallRecord::held); open_ already
  // counts it. Sender thread only.
  void Send(int64_t intended_ns, bool held = false, int refused_before = 0);

  void OnDone(std::unique_ptr<InFlight> call, const grpc::Status& status) {
    CallRecord& r = call->record;
    r.done_ns = Now();
    r.code = static_cast<int>(status.error_code());
    std::string message = status.error_message();
    if (status.ok()) {
      message =
          call->rerank ? ReadAnswer(call->rerank_response, &r) : ReadAnswer(call->response, &r);
    }
    Finish(std::move(call), message);
  }

  // Finish's answer when calls are not kept.
  static constexpr size_t kNotKept = static_cast<size_t>(-1);

  // Counts a finished call; returns its index among the kept records (see Recode), or
  // kNotKept.
  //
  // The call is freed before it counts as finished: a unary call's ClientContext holds a
  // reference to its channel, and once every call has finished, Run returns and its caller
  // may drop the channels. Freed later, on gRPC's callback thread, the context could drop the
  // channel's last reference there, destroying the channel (and the completion queue that
  // thread is serving) from inside one of its own callbacks.
  size_t Finish(std::unique_ptr<InFlight> call, absl::string_view message = {}) {
    const CallRecord record = call->record;
    const int refused_before = call->refused_before;
    {
      absl::MutexLock lock(&mu_);
      in_flight_.erase(call.get());  // unary calls: no longer cancellable (Drain)
    }
    call.reset();  // outside the lock
    absl::MutexLock lock(&mu_);
    accumulator_.Add(record, message);
    --open_;
    if (spec_.concurrency > 0) {
      // A first refusal is sent again at once (a single one costs little); a slot refused
      // again waits the backoff.
      const bool refused = record.code == static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED) ||
                           record.code == static_cast<int>(grpc::StatusCode::UNAVAILABLE);
      const int in_a_row = refused ? refused_before + 1 : 0;
      const int64_t backoff_ns =
          absl::ToInt64Nanoseconds(absl::FromChrono(runner_->options_.refused_backoff));
      freed_at_.push({record.done_ns + (in_a_row >= 2 ? backoff_ns : 0), in_a_row});
    }
    if (!runner_->options_.keep_calls) return kNotKept;
    records_.push_back(record);
    return records_.size() - 1;
  }

  // Files finished calls under another status (a stream's final status arrives after its
  // failed calls): `in_window` of them counted in the window, `kept` their records.
  void Recode(int from, int to, absl::string_view message, int64_t in_window,
              const std::vector<size_t>& kept) {
    absl::MutexLock lock(&mu_);
    absl::Status recoded = accumulator_.Recode(from, to, in_window, message);
    if (!recoded.ok()) {
      accounting_.Update(recoded);
      return;
    }
    for (size_t i : kept) records_[i].code = to;
  }

  LoadRunner* const runner_;
  const LoadStep spec_;
  const Clock::time_point start_;
  const int64_t window_begin_ns_;
  const int64_t window_end_ns_;
  const int64_t timeout_ns_;

  absl::Mutex mu_;
  int open_ ABSL_GUARDED_BY(mu_) = 0;  // calls counted by the sender and not yet finished
  absl::flat_hash_set<InFlight*> in_flight_ ABSL_GUARDED_BY(mu_);  // sent, not answered
  StepAccumulator accumulator_ ABSL_GUARDED_BY(mu_);
  std::vector<CallRecord> records_ ABSL_GUARDED_BY(mu_);  // with keep_calls
  absl::Status accounting_ ABSL_GUARDED_BY(mu_);          // first failed Recode
  // Closed loop: a freed slot, refilled from `at` on, earliest first.
  struct FreedSlot {
    int64_t at = 0;
    int refused_in_a_row = 0;  // its calls' refusals, up to the last
    bool operator>(const FreedSlot& other) const { return at > other.at; }
  };
  std::priority_queue<FreedSlot, std::vector<FreedSlot>, std::greater<FreedSlot>> freed_at_
      ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Stream>> streams_;  // stream mode: one per channel
  int open_streams_ ABSL_GUARDED_BY(mu_) = 0;     // streams whose OnDone has not run
  std::atomic<int> dead_streams_{0};              // streams that ended (Stream::End)
  std::string streams_end_ ABSL_GUARDED_BY(mu_);  // the first stream's end: "CODE: message"
  int64_t stopped_ns_ = -1;  // StepResult::stopped_ns (sender thread, then TakeResult)
};

// One EmbedStream. Calls are written one at a time in the order Send gives them; answers
// come back in the same order (the API's promise), each completing the oldest unanswered
// call. An answer that arrives after the call's deadline counts as DEADLINE_EXCEEDED (a
// stream has no per-message deadline). When the stream ends (the server closes it, or it is
// cancelled), its unanswered calls fail at once, and later ones at their Send; their code
// is the stream's status once OnDone has it (UNAVAILABLE when the stream ended with OK while
// calls were still unanswered).
//
// Lifetime: a hold (AddHold in Start, RemoveHold in Close) keeps gRPC's call object alive
// while the sender and Drain threads start operations from outside reactions; OnDone runs
// only after Close. InFlight calls are touched only under mu_ once handed over.
class LoadRunner::Step::Stream final
    : public grpc::ClientBidiReactor<v1::EmbedRequest, v1::EmbedResponse> {
 public:
  Stream(Step* step, v1::BertService::Stub* stub, std::chrono::system_clock::time_point deadline)
      : step_(step), stub_(stub) {
    step_->runner_->connection_->Prepare(&context_, deadline);
  }

  void Start() {
    stub_->async()->EmbedStream(&context_, this);
    AddHold();
    StartRead(&response_);
    StartCall();
  }

  // Sender thread only, before Close.
  void Send(std::unique_ptr<InFlight> call) {
    InFlight* raw = call.release();
    const v1::EmbedRequest* write = nullptr;
    bool failed = false;
    {
      absl::MutexLock lock(&mu_);
      // Handed to the stream now: time spent behind earlier writes (flow control) is the
      // stream's, part of the service time, not the load generator's send lag.
      raw->record.sent_ns = step_->Now();
      if (ended_) {
        failed = true;
      } else {
        unanswered_.push_back(raw);  // owns it until its answer or the end
        if (writing_) {
          to_write_.push_back(raw->request);
        } else {
          writing_ = true;
          write = raw->request;
        }
      }
    }
    if (failed) {
      FailCall(raw);
    } else if (write != nullptr) {
      StartWrite(write);
    }
  }

  // No more calls (Drain's thread, after the last Send): half-closes the stream once the
  // queued calls are written, and lets it end.
  void Close() {
    bool close_now = false;
    {
      absl::MutexLock lock(&mu_);
      closing_ = true;
      close_now = !writing_ && !ended_ && !writes_done_;
      writes_done_ |= close_now;
    }
    if (close_now) StartWritesDone();
    RemoveHold();
  }

  void Cancel() { context_.TryCancel(); }

 private:
  void OnWriteDone(bool ok) override {
    if (!ok) {
      // Nothing more can be written; answers to what was written may still arrive, and the
      // read side's end fails the rest.
      MarkEnded();
      return;
    }
    const v1::EmbedRequest* next = nullptr;
    bool close_now = false;
    {
      absl::MutexLock lock(&mu_);
      if (!to_write_.empty() && !ended_) {
        next = to_write_.front();
        to_write_.pop_front();
      } else {
        writing_ = false;
        close_now = closing_ && !writes_done_ && !ended_;
        writes_done_ |= close_now;
      }
    }
    if (next != nullptr) {
      StartWrite(next);
    } else if (close_now) {
      StartWritesDone();
    }
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the server closed its side: nothing more will be answered
      MarkEnded();
      FailUnanswered();
      return;
    }
    InFlight* call = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (!unanswered_.empty()) {
        call = unanswered_.front();
        unanswered_.pop_front();
      }
    }
    // An answer with no call waiting would break the API's promise; it has nothing to
    // complete and is dropped.
    if (call != nullptr) {
      CallRecord& r = call->record;
      r.done_ns = step_->Now();
      std::string message;
      if (response_.request_id() != call->request->request_id()) {
        r.code = static_cast<int>(grpc::StatusCode::INTERNAL);
        message = std::string(kOutOfOrderMessage);
      } else if (r.done_ns - r.intended_ns > step_->timeout_ns_) {
        r.code = static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED);
        message = std::string(kLateAnswerMessage);
      } else {
        message = ReadAnswer(response_, &r);
      }
      step_->Finish(std::unique_ptr<InFlight>(call), message);
    }
    response_.Clear();
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    MarkEnded();
    FailUnanswered();
    {
      absl::MutexLock lock(&step_->mu_);
      if (step_->streams_end_.empty()) {
        step_->streams_end_ =
            absl::StrCat(GrpcCodeName(status.error_code()), ": ",
                         status.ok() ? "the server closed the stream" : status.error_message());
      }
    }
    // The calls failed when the read side ended get the stream's own status, now known.
    if (!status.ok()) {
      int64_t in_window;
      std::vector<size_t> kept;
      {
        absl::MutexLock lock(&mu_);
        in_window = failed_in_window_;
        kept = failed_kept_;
      }
      step_->Recode(kUnknownEnd, static_cast<int>(status.error_code()), status.error_message(),
                    in_window, kept);
    }
    absl::MutexLock lock(&step_->mu_);
    --step_->open_streams_;
  }

  // No more writes; later Sends fail at once. Counts the stream as ended once.
  void MarkEnded() {
    {
      absl::MutexLock lock(&mu_);
      if (ended_) return;
      ended_ = true;
      to_write_.clear();
    }
    step_->dead_streams_.fetch_add(1);
  }

  // Fails every unanswered call (UNAVAILABLE until OnDone knows the stream's status).
  void FailUnanswered() {
    std::deque<InFlight*> unanswered;
    {
      absl::MutexLock lock(&mu_);
      unanswered.swap(unanswered_);
    }
    for (InFlight* call : unanswered) FailCall(call);
  }

  // Fails a call because the stream has ended, with kUnknownEnd until OnDone knows why.
  void FailCall(InFlight* call) {
    CallRecord& r = call->record;
    r.done_ns = step_->Now();
    r.code = kUnknownEnd;
    const bool in_window = InWindow(r, step_->window_begin_ns_, step_->window_end_ns_);
    const size_t kept = step_->Finish(std::unique_ptr<InFlight>(call), kStreamEndedMessage);
    absl::MutexLock lock(&mu_);
    failed_in_window_ += in_window ? 1 : 0;
    if (kept != kNotKept) failed_kept_.push_back(kept);
  }

  // The code of a call failed by the stream's end while the stream's status is unknown.
  static constexpr int kUnknownEnd = static_cast<int>(grpc::StatusCode::UNAVAILABLE);

  Step* const step_;
  v1::BertService::Stub* const stub_;
  grpc::ClientContext context_;
  v1::EmbedResponse response_;  // the read in progress

  absl::Mutex mu_;
  std::deque<InFlight*> unanswered_ ABSL_GUARDED_BY(mu_);              // handed over, in order
  std::deque<const v1::EmbedRequest*> to_write_ ABSL_GUARDED_BY(mu_);  // behind the write
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool writes_done_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  // The calls failed because the stream ended (their code awaits its status): how many in
  // the window, and the kept records'.
  int64_t failed_in_window_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<size_t> failed_kept_ ABSL_GUARDED_BY(mu_);
};

LoadRunner::Step::Step(LoadRunner* runner, const LoadStep& spec)
    : runner_(runner),
      spec_(spec),
      start_(Clock::now()),
      window_begin_ns_(runner->options_.warmup.count()),
      window_end_ns_(window_begin_ns_ + runner->options_.duration.count()),
      timeout_ns_(std::chrono::nanoseconds(runner->options_.timeout).count()),
      accumulator_(window_begin_ns_, window_end_ns_) {
  if (runner->options_.stream) {
    // Open long enough for the step, its last deadlines and a margin; Drain cancels
    // streams that outlive that.
    const auto deadline = std::chrono::system_clock::now() +
                          std::chrono::nanoseconds(window_end_ns_ + timeout_ns_) +
                          runner->options_.drain_grace;
    for (const auto& stub : runner->stubs_) {
      streams_.push_back(std::make_unique<Stream>(this, stub.get(), deadline));
    }
    {
      absl::MutexLock lock(&mu_);
      open_streams_ = static_cast<int>(streams_.size());
    }
    for (auto& stream : streams_) stream->Start();
  }
}

bool LoadRunner::Step::Drain() {
  for (auto& stream : streams_) stream->Close();
  const auto all_done = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return open_ == 0 && open_streams_ == 0;
  };
  absl::MutexLock lock(&mu_);
  const absl::Duration grace =
      absl::Nanoseconds(timeout_ns_) + absl::FromChrono(runner_->options_.drain_grace);
  if (mu_.AwaitWithTimeout(absl::Condition(&all_done), grace)) return true;
  for (InFlight* call : in_flight_) call->context.TryCancel();
  for (auto& stream : streams_) stream->Cancel();
  return mu_.AwaitWithTimeout(absl::Condition(&all_done), absl::Seconds(10));
}

void LoadRunner::Step::Send(int64_t intended_ns, bool held, int refused_before) {
  auto call = std::make_unique<InFlight>();
  call->record.intended_ns = intended_ns;
  call->record.held = held;
  call->refused_before = refused_before;
  const uint64_t n = runner_->next_call_++;
  const std::vector<v1::RerankRequest>& reranks = runner_->rerank_requests_;
  const v1::RerankRequest* rerank = reranks.empty() ? nullptr : &reranks[n % reranks.size()];
  const v1::EmbedRequest* request =
      rerank != nullptr ? nullptr : &runner_->requests_[n % runner_->requests_.size()];
  call->request = request;
  call->rerank = rerank != nullptr;
  call->record.inputs = rerank != nullptr ? rerank->texts_size() : request->inputs_size();
  const int64_t now = Now();
  const int64_t left_ns = intended_ns + timeout_ns_ - now;
  if (left_ns <= 0) {  // Its deadline passed while it waited to be sent.
    call->record.done_ns = now;
    call->record.code = static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED);
    Finish(std::move(call), kNotSentMessage);
    return;
  }
  if (!streams_.empty()) {
    streams_[n % streams_.size()]->Send(std::move(call));
    return;
  }
  runner_->connection_->Prepare(
      &call->context, std::chrono::system_clock::now() + std::chrono::nanoseconds(left_ns));
  // gRPC holds the call until its callback, which takes it back.
  InFlight* sent = call.release();
  {
    absl::MutexLock lock(&mu_);
    in_flight_.insert(sent);
  }
  v1::BertService::Stub* stub = runner_->stubs_[n % runner_->stubs_.size()].get();
  sent->record.sent_ns = Now();
  const auto done = [this, sent](grpc::Status status) {
    OnDone(std::unique_ptr<InFlight>(sent), status);
  };
  if (rerank != nullptr) {
    stub->async()->Rerank(&sent->context, rerank, &sent->rerank_response, done);
  } else {
    stub->async()->Embed(&sent->context, request, &sent->response, done);
  }
}

LoadRunner::LoadRunner(const Connection* connection,
                       std::vector<std::unique_ptr<v1::BertService::Stub>> stubs,
                       std::vector<v1::EmbedRequest> requests, LoadOptions options)
    : connection_(connection),
      stubs_(std::move(stubs)),
      requests_(std::move(requests)),
      options_(options) {}

LoadRunner::LoadRunner(const Connection* connection,
                       std::vector<std::unique_ptr<v1::BertService::Stub>> stubs,
                       std::vector<v1::RerankRequest> requests, LoadOptions options)
    : LoadRunner(connection, std::move(stubs), std::vector<v1::EmbedRequest>(), options) {
  rerank_requests_ = std::move(requests);
}

absl::StatusOr<StepResult> LoadRunner::Run(const LoadStep& step,
                                           const std::function<void(bool begin)>& at_window_edge) {
  if ((step.concurrency > 0) == (step.rate > 0)) {
    return absl::InvalidArgumentError("a step has either a concurrency or a rate");
  }
  if (step.concurrency > kMaxConcurrency || !(step.rate <= kMaxRate)) {
    return absl::InvalidArgumentError(absl::StrCat("a step's concurrency is at most ",
                                                   kMaxConcurrency, ", its rate at most ", kMaxRate,
                                                   "/s"));
  }
  if (options_.duration.count() <= 0 || options_.warmup.count() < 0 ||
      options_.timeout.count() <= 0 || options_.max_outstanding < 1) {
    return absl::InvalidArgumentError(
        "duration, timeout and max_outstanding must be positive, warmup not negative");
  }
  if (stubs_.empty() || (requests_.empty() && rerank_requests_.empty())) {
    return absl::InvalidArgumentError("no channel or no request to send");
  }
  if (options_.stream && !rerank_requests_.empty()) {
    return absl::InvalidArgumentError("Rerank calls are unary: no streams");
  }
  auto state = std::make_unique<Step>(this, step);
  std::thread edges;
  if (at_window_edge) {
    edges = std::thread([&state, &at_window_edge] {
      std::this_thread::sleep_until(state->start() +
                                    std::chrono::nanoseconds(state->window_begin_ns()));
      at_window_edge(true);
      std::this_thread::sleep_until(state->start() +
                                    std::chrono::nanoseconds(state->window_end_ns()));
      at_window_edge(false);
    });
  }
  state->SendAll();
  const bool drained = state->Drain();
  if (edges.joinable()) edges.join();
  if (!drained) {
    // Callbacks may still arrive and use the state: it must outlive the process's use.
    state.release();
    return absl::InternalError("calls stayed open after being cancelled");
  }
  return state->TakeResult();
}

}  // namespace bert
