// Admission control: at most `limit` requests being worked on; one more is refused at once
// (the caller answers RESOURCE_EXHAUSTED) rather than queued. A request whose answer is
// ready and handed over for sending (Permit::MarkAnswered) gives its place to the next
// request, but stays counted among the answers being sent, themselves at most `limit`: a
// client that does not read its answers can hold no more than that many of them before its
// further requests keep their places too (and every other client is refused). And a byte
// budget for the answers held (being computed, or not yet sent), so that clients asking for
// large outputs and reading them slowly cannot make the server hold more than `byte_limit`:
// a request whose answer would pass it is refused too. Thread-safe.
#ifndef BERT_SERVER_CORE_ADMISSION_H_
#define BERT_SERVER_CORE_ADMISSION_H_

#include <atomic>
#include <cstdint>
#include <memory>

namespace bert {

class Admission {
 public:
  // Bytes taken from the budget; returns them when destroyed. Move-only.
  class Bytes {
   public:
    Bytes() = default;
    Bytes(Bytes&& other) noexcept : owner_(other.owner_), count_(other.count_) {
      other.owner_ = nullptr;
      other.count_ = 0;
    }
    Bytes& operator=(Bytes&& other) noexcept;
    Bytes(const Bytes&) = delete;
    Bytes& operator=(const Bytes&) = delete;
    ~Bytes() { Reset(); }
    bool valid() const { return owner_ != nullptr; }
    int64_t count() const { return count_; }
    void Reset();

   private:
    friend class Admission;
    Bytes(Admission* owner, int64_t count) : owner_(owner), count_(count) {}
    Admission* owner_ = nullptr;
    int64_t count_ = 0;
  };

  // A request's place, and the bytes it holds, until destroyed. Move-only.
  class Permit {
   public:
    Permit() = default;
    explicit Permit(Admission* owner) : owner_(owner) {}
    Permit(Permit&& other) noexcept
        : owner_(other.owner_), sending_(other.sending_), bytes_(std::move(other.bytes_)) {
      other.owner_ = nullptr;
      other.sending_ = false;
    }
    Permit& operator=(Permit&& other) noexcept;
    Permit(const Permit&) = delete;
    Permit& operator=(const Permit&) = delete;
    ~Permit() { Reset(); }
    bool valid() const { return owner_ != nullptr; }
    // Keeps `bytes` (an answer's, from TryReserveBytes) until the permit is released: the
    // answer is held for as long as its request is in flight.
    void Hold(Bytes bytes) { bytes_ = std::move(bytes); }
    // The answer is ready and handed over for sending: the place goes to the next request if
    // fewer than `limit` answers are being sent; otherwise it is kept until Reset. Does
    // nothing after the first time it moved the permit.
    void MarkAnswered();
    bool sending() const { return sending_; }
    void Reset();

   private:
    Admission* owner_ = nullptr;
    bool sending_ = false;  // counted among the answers being sent, not the requests worked on
    Bytes bytes_;
  };

  // byte_limit 0: no byte budget.
  explicit Admission(int limit, int64_t byte_limit = 0) : limit_(limit), byte_limit_(byte_limit) {}

  // A valid permit, or an invalid one when `limit` requests are already being worked on.
  Permit TryAcquire();
  // `count` bytes of the budget, or invalid Bytes when they would take it past byte_limit
  // (always valid without a budget).
  Bytes TryReserveBytes(int64_t count);
  // Whether `count` bytes would fit in the budget now (reserving nothing).
  bool BytesFit(int64_t count) const {
    return byte_limit_ <= 0 ||
           bytes_reserved_.load(std::memory_order_relaxed) <= byte_limit_ - count;
  }

  // Requests admitted and not yet done (worked on, or their answers being sent): both
  // counts read at one moment.
  int in_flight() const {
    const uint64_t counts = counts_.load(std::memory_order_acquire);
    return Working(counts) + Sending(counts);
  }
  int working() const { return Working(counts_.load(std::memory_order_relaxed)); }
  int sending() const { return Sending(counts_.load(std::memory_order_relaxed)); }
  int limit() const { return limit_; }
  int64_t bytes_reserved() const { return bytes_reserved_.load(std::memory_order_relaxed); }
  int64_t byte_limit() const { return byte_limit_; }

 private:
  // The requests worked on (low 32 bits) and the answers being sent (high 32 bits), in one
  // word so that a permit moves from one to the other in one step.
  static constexpr uint64_t kOneSending = uint64_t{1} << 32;
  static int Working(uint64_t counts) { return static_cast<int>(counts & 0xffffffffu); }
  static int Sending(uint64_t counts) { return static_cast<int>(counts >> 32); }

  const int limit_;
  const int64_t byte_limit_;
  std::atomic<uint64_t> counts_{0};
  std::atomic<int64_t> bytes_reserved_{0};
};

}  // namespace bert

#endif  // BERT_SERVER_CORE_ADMISSION_H_
