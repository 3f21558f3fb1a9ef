// Restart accounting as in OTP supervisors: at most `intensity` restarts within any `period`;
// one more and the failure escalates (the node stops loudly). Pure logic, no actors: the shard
// wrapper in service.hpp asks it before each restart.
#pragma once

#include "runtime/clock.hpp"

#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>

namespace agner {

/// OTP's restart intensity and period (defaults of OTP 25: 1 restart in 5 s is strict for a
/// shard that owns thousands of keys; agner defaults to 10 in 10 s per service).
struct restart_limits {
  uint32_t intensity = 10;
  duration period = std::chrono::seconds(10);
};

/// Decides whether one more restart is allowed. Thread-safe: the shards of one service share it
/// (one_for_one: each shard restarts alone, but the intensity is counted per service).
class restart_budget {
public:
  explicit restart_budget(restart_limits limits) : limits_(limits) {}

  /// Records a restart at `now`; returns false if that exceeds the intensity (escalate).
  bool allow(time_point now);

  uint64_t restarts() const;

private:
  restart_limits limits_;
  mutable std::mutex mu_;
  std::deque<time_point> recent_;
  uint64_t total_ = 0;
};

} // namespace agner
