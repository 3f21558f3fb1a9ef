// The phone-idle workload shared by every peer of bench_timer: N live timers with deadlines
// uniform in [1 s, 60 s], then M re-arms of random phones (cancel + arm, counted as 2 ops).
#pragma once

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace agner::bench::timer {

/// Idle deadlines are uniform in [deadline_min, deadline_min + deadline_span): one to sixty
/// seconds, what a phone's idle and heartbeat timeouts look like.
inline constexpr auto deadline_min = std::chrono::seconds(1);
inline constexpr auto deadline_span = std::chrono::seconds(59);

/// Timers due in [1, probe_span_ms] ms measure real firing lateness: short enough to keep the
/// run fast, long enough to span several ticks of a 1 ms wheel.
inline constexpr int probe_span_ms = 50;

/// One peer's sizes for one run.
struct workload {
  size_t timers;       ///< live timers after the fill
  size_t rearms;       ///< random re-arms after the fill (2 ops each)
  int repeats;         ///< samples per peer
  size_t probe_timers; ///< real-time timers for the lateness probe
};

/// What one peer measured: rates per sample, memory, real-time lateness.
struct measured {
  std::vector<double> fill_ops_per_s;
  std::vector<double> churn_ops_per_s;
  /// Peers whose cancel is deferred (stale entries dispatched and dropped later): the churn rate
  /// with that deferred work charged, one value per sample; empty for the others.
  std::vector<double> charged_churn_ops_per_s;
  double bytes_per_timer = 0;
  std::optional<double> late_p50_us, late_max_us;
  std::string note;
};

/// splitmix64: cheap, identical for every C++ peer, so the RNG costs the same everywhere.
class rng {
public:
  explicit rng(uint64_t seed) : s_(seed) {}
  uint64_t next() noexcept {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, n) by a multiply and a shift (Lemire), not `%`: a 64-bit division costs
  /// tens of cycles, which would be charged to every peer's timer operations.
  uint64_t below(uint64_t n) noexcept {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
  }
  /// A deadline offset uniform in [1 s, 60 s), nanosecond resolution.
  std::chrono::nanoseconds idle_delay() noexcept {
    auto span = static_cast<uint64_t>(std::chrono::nanoseconds(deadline_span).count());
    return deadline_min + std::chrono::nanoseconds(static_cast<int64_t>(below(span)));
  }

private:
  uint64_t s_;
};

/// Bytes the process has allocated from malloc (all arenas, including mmapped chunks).
inline size_t heap_bytes() {
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

/// Median and maximum of lateness samples in microseconds.
inline void summarize_lateness(std::vector<double> us, measured& m) {
  if (us.empty())
    return;
  std::sort(us.begin(), us.end());
  m.late_p50_us = us[us.size() / 2];
  m.late_max_us = us.back();
}

measured run_asio_per_timer(const workload& w);
measured run_caf_clock(const workload& w);
measured run_caf_actor_timeout(const workload& w);
/// Real-time lateness of the agner wheel driven by asio_driver with a 1 ms tick.
void probe_agner_asio(const workload& w, measured& m);

} // namespace agner::bench::timer
