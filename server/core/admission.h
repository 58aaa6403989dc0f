// Admission control: at most `limit` requests in flight; one more is refused at once
// (the caller answers RESOURCE_EXHAUSTED) rather than queued. Thread-safe.
#ifndef BERT_SERVER_CORE_ADMISSION_H_
#define BERT_SERVER_CORE_ADMISSION_H_

#include <atomic>
#include <memory>

namespace bert {

class Admission {
 public:
  // Releases its slot when destroyed. Move-only.
  class Permit {
   public:
    Permit() = default;
    explicit Permit(Admission* owner) : owner_(owner) {}
    Permit(Permit&& other) noexcept : owner_(other.owner_) { other.owner_ = nullptr; }
    Permit& operator=(Permit&& other) noexcept;
    Permit(const Permit&) = delete;
    Permit& operator=(const Permit&) = delete;
    ~Permit() { Reset(); }
    bool valid() const { return owner_ != nullptr; }
    void Reset();

   private:
    Admission* owner_ = nullptr;
  };

  explicit Admission(int limit) : limit_(limit) {}

  // A valid permit, or an invalid one when `limit` requests are already in flight.
  Permit TryAcquire();
  int in_flight() const { return in_flight_.load(std::memory_order_relaxed); }
  int limit() const { return limit_; }

 private:
  const int limit_;
  std::atomic<int> in_flight_{0};
};

}  // namespace bert

#endif  // BERT_SERVER_CORE_ADMISSION_H_
