// Counters, gauges and log-linear histograms, rendered in the Prometheus text format.
// Observing is a relaxed atomic add: no lock on the hot path. Registration takes a lock and
// returns a reference that stays valid for the registry's lifetime.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

namespace agner::metrics {

/// A monotonically increasing count. Padded to its own cache line: shared by many threads.
class counter {
public:
  void inc(uint64_t n = 1) noexcept { v_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const noexcept { return v_.load(std::memory_order_relaxed); }

private:
  alignas(64) std::atomic<uint64_t> v_{0};
};

/// A value that goes up and down.
class gauge {
public:
  void set(int64_t v) noexcept { v_.store(v, std::memory_order_relaxed); }
  void add(int64_t d) noexcept { v_.fetch_add(d, std::memory_order_relaxed); }
  int64_t value() const noexcept { return v_.load(std::memory_order_relaxed); }

private:
  alignas(64) std::atomic<int64_t> v_{0};
};

/// Log-linear histogram of non-negative integers (HdrHistogram-like): 8 linear sub-buckets per
/// power of two, so any recorded value is known to within 12.5%. 512 buckets, 4 KiB.
class histogram {
public:
  static constexpr int sub_bits = 3;
  static constexpr int sub_count = 1 << sub_bits;
  static constexpr int bucket_count = 64 * sub_count;

  /// `scale` converts recorded units to the rendered unit (1e-9 for nanoseconds -> seconds).
  explicit histogram(double scale = 1.0) : scale_(scale) {}

  void observe(uint64_t v) noexcept {
    buckets_[bucket_of(v)].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(v, std::memory_order_relaxed);
  }

  static int bucket_of(uint64_t v) noexcept;
  /// Largest value that falls in bucket b (inclusive).
  static uint64_t bucket_upper(int b) noexcept;

  uint64_t count() const noexcept;
  uint64_t sum() const noexcept { return sum_.load(std::memory_order_relaxed); }
  /// Value at quantile q in [0,1] (upper bound of the bucket holding it); 0 when empty.
  uint64_t quantile(double q) const noexcept;
  /// The same walk over any bucket counts with this layout: `count(b)` for b in
  /// [0, bucket_count), `total` their sum (for copies and merges of histograms elsewhere).
  template <class Count>
  static uint64_t quantile_of(Count&& count, uint64_t total, double q) noexcept {
    if (total == 0)
      return 0;
    auto rank = static_cast<uint64_t>(q * static_cast<double>(total));
    if (rank >= total)
      rank = total - 1;
    uint64_t seen = 0;
    for (int b = 0; b < bucket_count; ++b) {
      seen += count(b);
      if (seen > rank)
        return bucket_upper(b);
    }
    return bucket_upper(bucket_count - 1);
  }
  double scale() const noexcept { return scale_; }
  uint64_t bucket(int b) const noexcept { return buckets_[b].load(std::memory_order_relaxed); }
  void reset() noexcept;

private:
  double scale_;
  std::array<std::atomic<uint64_t>, bucket_count> buckets_{};
  std::atomic<uint64_t> sum_{0};
};

/// Named metrics of one process. Names follow Prometheus rules; `labels` is the inside of the
/// braces, e.g. `service="users",shard="3"` (values must not contain quotes or backslashes).
class registry {
public:
  counter& make_counter(std::string_view name, std::string_view help, std::string_view labels = {});
  gauge& make_gauge(std::string_view name, std::string_view help, std::string_view labels = {});
  histogram& make_histogram(std::string_view name, std::string_view help, std::string_view labels = {},
                            double scale = 1.0);
  /// A gauge computed at scrape time (queue depths, live timers). `fn` must be thread-safe.
  void make_gauge_fn(std::string_view name, std::string_view help, std::string_view labels,
                     std::function<double()> fn);
  /// A counter read at scrape time from a value its owner keeps (must only grow).
  void make_counter_fn(std::string_view name, std::string_view help, std::string_view labels,
                       std::function<double()> fn);

  /// The whole registry in the Prometheus text exposition format (version 0.0.4).
  std::string render() const;

private:
  enum class kind { counter, gauge, histogram };
  struct family {
    kind k;
    std::string help;
    std::map<std::string, void*> series; // labels -> metric
    std::map<std::string, std::function<double()>> fns;
  };
  family& family_for(std::string_view name, std::string_view help, kind k);

  mutable std::mutex mu_;
  std::map<std::string, family> families_;
  std::deque<counter> counters_;
  std::deque<gauge> gauges_;
  std::deque<histogram> histograms_;
};

} // namespace agner::metrics
