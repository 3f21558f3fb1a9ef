// Time as a seam: everything in the runtime that needs "now" asks a clock, so tests drive
// virtual time deterministically and production uses the steady clock.
#pragma once

#include <atomic>
#include <chrono>

namespace agner {

using time_point = std::chrono::steady_clock::time_point;
using duration = std::chrono::steady_clock::duration;

/// Source of monotonic time. Implementations must be safe to call from any thread.
class clock {
public:
  virtual ~clock() = default;
  virtual time_point now() const noexcept = 0;
};

/// The real monotonic clock.
class steady_clock_source final : public clock {
public:
  time_point now() const noexcept override { return std::chrono::steady_clock::now(); }

  /// A process-wide instance for code that has no clock injected.
  static steady_clock_source& instance() noexcept {
    static steady_clock_source c;
    return c;
  }
};

/// Virtual time for tests: starts at an arbitrary fixed point and moves only when told.
class virtual_clock final : public clock {
public:
  time_point now() const noexcept override { return time_point{duration{now_.load(std::memory_order_acquire)}}; }
  void advance(duration d) noexcept { now_.fetch_add(d.count(), std::memory_order_acq_rel); }
  void set(time_point t) noexcept { now_.store(t.time_since_epoch().count(), std::memory_order_release); }

private:
  std::atomic<duration::rep> now_{std::chrono::duration_cast<duration>(std::chrono::hours(1)).count()};
};

} // namespace agner
