#include "runtime/supervisor.hpp"

namespace agner {

bool restart_budget::allow(time_point now) {
  std::lock_guard lock(mu_);
  // Forget restarts that fell out of the window (now - period, now].
  while (!recent_.empty() && recent_.front() <= now - limits_.period)
    recent_.pop_front();
  if (recent_.size() >= limits_.intensity)
    return false;
  recent_.push_back(now);
  ++total_;
  return true;
}

uint64_t restart_budget::restarts() const {
  std::lock_guard lock(mu_);
  return total_;
}

} // namespace agner
