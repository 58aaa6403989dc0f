#include "server/core/admission.h"

namespace bert {

Admission::Permit& Admission::Permit::operator=(Permit&& other) noexcept {
  if (this != &other) {
    Reset();
    owner_ = other.owner_;
    other.owner_ = nullptr;
  }
  return *this;
}

void Admission::Permit::Reset() {
  if (owner_ != nullptr) {
    owner_->in_flight_.fetch_sub(1, std::memory_order_acq_rel);
    owner_ = nullptr;
  }
}

Admission::Permit Admission::TryAcquire() {
  int current = in_flight_.load(std::memory_order_relaxed);
  while (current < limit_) {
    if (in_flight_.compare_exchange_weak(current, current + 1, std::memory_order_acq_rel)) {
      return Permit(this);
    }
  }
  return Permit();
}

}  // namespace bert
