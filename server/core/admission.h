// Admission control: at most `limit` requests in flight; one more is refused at once
// (the caller answers RESOURCE_EXHAUSTED) rather than queued. And a byte budget for the
// answers those requests hold (computed or being computed, not yet sent), so that clients
// asking for large outputs and reading them slowly cannot make the server hold more than
// `byte_limit` of answers: a request whose answer would pass it is refused too. Thread-safe.
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

  // Releases its slot, and the bytes it holds, when destroyed. Move-only.
  class Permit {
   public:
    Permit() = default;
    explicit Permit(Admission* owner) : owner_(owner) {}
    Permit(Permit&& other) noexcept : owner_(other.owner_), bytes_(std::move(other.bytes_)) {
      other.owner_ = nullptr;
    }
    Permit& operator=(Permit&& other) noexcept;
    Permit(const Permit&) = delete;
    Permit& operator=(const Permit&) = delete;
    ~Permit() { Reset(); }
    bool valid() const { return owner_ != nullptr; }
    // Keeps `bytes` (an answer's, from TryReserveBytes) until the permit is released: the
    // answer is held for as long as its request is in flight.
    void Hold(Bytes bytes) { bytes_ = std::move(bytes); }
    void Reset();

   private:
    Admission* owner_ = nullptr;
    Bytes bytes_;
  };

  // byte_limit 0: no byte budget.
  explicit Admission(int limit, int64_t byte_limit = 0) : limit_(limit), byte_limit_(byte_limit) {}

  // A valid permit, or an invalid one when `limit` requests are already in flight.
  Permit TryAcquire();
  // `count` bytes of the budget, or invalid Bytes when they would take it past byte_limit
  // (always valid without a budget).
  Bytes TryReserveBytes(int64_t count);

  int in_flight() const { return in_flight_.load(std::memory_order_relaxed); }
  int limit() const { return limit_; }
  int64_t bytes_reserved() const { return bytes_reserved_.load(std::memory_order_relaxed); }
  int64_t byte_limit() const { return byte_limit_; }

 private:
  const int limit_;
  const int64_t byte_limit_;
  std::atomic<int> in_flight_{0};
  std::atomic<int64_t> bytes_reserved_{0};
};

}  // namespace bert

#endif  // BERT_SERVER_CORE_ADMISSION_H_
