#include "server/core/admission.h"

namespace bert {

Admission::Bytes& Admission::Bytes::operator=(Bytes&& other) noexcept {
  if (this != &other) {
    Reset();
    owner_ = other.owner_;
    count_ = other.count_;
    other.owner_ = nullptr;
    other.count_ = 0;
  }
  return *this;
}

void Admission::Bytes::Reset() {
  if (owner_ != nullptr) {
    owner_->bytes_reserved_.fetch_sub(count_, std::memory_order_acq_rel);
    owner_ = nullptr;
    count_ = 0;
  }
}

Admission::Permit& Admission::Permit::operator=(Permit&& other) noexcept {
  if (this != &other) {
    Reset();
    owner_ = other.owner_;
    sending_ = other.sending_;
    bytes_ = std::move(other.bytes_);
    other.owner_ = nullptr;
    other.sending_ = false;
  }
  return *this;
}

void Admission::Permit::MarkAnswered() {
  if (owner_ == nullptr || sending_) return;
  uint64_t counts = owner_->counts_.load(std::memory_order_relaxed);
  while (Sending(counts) < owner_->limit_) {
    // One more being sent, one fewer worked on.
    if (owner_->counts_.compare_exchange_weak(counts, counts + kOneSending - 1,
                                              std::memory_order_acq_rel)) {
      sending_ = true;
      return;
    }
  }
}

void Admission::Permit::Reset() {
  bytes_.Reset();  // before the place: a drain that sees no request in flight sees no bytes
  if (owner_ != nullptr) {
    owner_->counts_.fetch_sub(sending_ ? kOneSending : 1, std::memory_order_acq_rel);
    owner_ = nullptr;
    sending_ = false;
  }
}

Admission::Permit Admission::TryAcquire() {
  uint64_t counts = counts_.load(std::memory_order_relaxed);
  while (Working(counts) < limit_) {
    if (counts_.compare_exchange_weak(counts, counts + 1, std::memory_order_acq_rel)) {
      return Permit(this);
    }
  }
  return Permit();
}

Admission::Bytes Admission::TryReserveBytes(int64_t count) {
  if (count < 0) count = 0;
  int64_t current = bytes_reserved_.load(std::memory_order_relaxed);
  while (byte_limit_ <= 0 || current <= byte_limit_ - count) {
    if (bytes_reserved_.compare_exchange_weak(current, current + count,
                                              std::memory_order_acq_rel)) {
      return Bytes(this, count);
    }
  }
  return Bytes();
}

}  // namespace bert
