// Metric storage and Prometheus rendering. Histograms render cumulative `le` buckets at every
// power of two that has data below or at it, which keeps the text short yet exact at those bounds.
#include "runtime/metrics.hpp"

#include <bit>
#include <fmt/format.h>
#include <stdexcept>

namespace agner::metrics {

int histogram::bucket_of(uint64_t v) noexcept {
  if (v < sub_count)
    return static_cast<int>(v);
  int msb = 63 - std::countl_zero(v); // >= sub_bits
  int shift = msb - sub_bits;
  int sub = static_cast<int>((v >> shift) & (sub_count - 1));
  return (shift + 1) * sub_count + sub;
}

uint64_t histogram::bucket_upper(int b) noexcept {
  if (b < sub_count)
    return static_cast<uint64_t>(b);
  int shift = b / sub_count - 1;
  uint64_t sub = static_cast<uint64_t>(b % sub_count);
  uint64_t lower = (uint64_t{sub_count} | sub) << shift;
  uint64_t width = uint64_t{1} << shift;
  return lower + (width - 1); // may wrap only for the very last bucket, which holds 2^64-1
}

uint64_t histogram::count() const noexcept {
  uint64_t n = 0;
  for (auto& b : buckets_)
    n += b.load(std::memory_order_relaxed);
  return n;
}

uint64_t histogram::quantile(double q) const noexcept {
  return quantile_of([this](int b) { return bucket(b); }, count(), q);
}

void histogram::reset() noexcept {
  for (auto& b : buckets_)
    b.store(0, std::memory_order_relaxed);
  sum_.store(0, std::memory_order_relaxed);
}

registry::family& registry::family_for(std::string_view name, std::string_view help, kind k) {
  auto [it, inserted] = families_.try_emplace(std::string(name));
  if (inserted) {
    it->second.k = k;
    it->second.help = std::string(help);
  } else if (it->second.k != k) {
    throw std::logic_error(fmt::format("metric {} registered twice with different types", name));
  }
  return it->second;
}

template <class T>
static T& find_or_add(std::map<std::string, void*>& series, std::deque<T>& store, std::string_view labels,
                      auto&&... args) {
  auto it = series.find(std::string(labels));
  if (it != series.end())
    return *static_cast<T*>(it->second);
  auto& m = store.emplace_back(args...);
  series.emplace(std::string(labels), &m);
  return m;
}

counter& registry::make_counter(std::string_view name, std::string_view help, std::string_view labels) {
  std::lock_guard lock(mu_);
  return find_or_add(family_for(name, help, kind::counter).series, counters_, labels);
}

gauge& registry::make_gauge(std::string_view name, std::string_view help, std::string_view labels) {
  std::lock_guard lock(mu_);
  return find_or_add(family_for(name, help, kind::gauge).series, gauges_, labels);
}

histogram& registry::make_histogram(std::string_view name, std::string_view help, std::string_view labels,
                                    double scale) {
  std::lock_guard lock(mu_);
  return find_or_add(family_for(name, help, kind::histogram).series, histograms_, labels, scale);
}

void registry::make_gauge_fn(std::string_view name, std::string_view help, std::string_view labels,
                             std::function<double()> fn) {
  std::lock_guard lock(mu_);
  family_for(name, help, kind::gauge).fns[std::string(labels)] = std::move(fn);
}

void registry::make_counter_fn(std::string_view name, std::string_view help, std::string_view labels,
                               std::function<double()> fn) {
  std::lock_guard lock(mu_);
  family_for(name, help, kind::counter).fns[std::string(labels)] = std::move(fn);
}

static std::string braces(const std::string& labels) { return labels.empty() ? "" : "{" + labels + "}"; }

static std::string with_le(const std::string& labels, std::string_view le) {
  return fmt::format("{{{}{}le=\"{}\"}}", labels, labels.empty() ? "" : ",", le);
}

std::string registry::render() const {
  std::lock_guard lock(mu_);
  std::string out;
  auto it = std::back_inserter(out);
  for (auto& [name, f] : families_) {
    static constexpr std::string_view type_names[] = {"counter", "gauge", "histogram"};
    fmt::format_to(it, "# HELP {} {}\n# TYPE {} {}\n", name, f.help, name, type_names[static_cast<int>(f.k)]);
    for (auto& [labels, p] : f.series) {
      switch (f.k) {
        case kind::counter:
          fmt::format_to(it, "{}{} {}\n", name, braces(labels), static_cast<counter*>(p)->value());
          break;
        case kind::gauge:
          fmt::format_to(it, "{}{} {}\n", name, braces(labels), static_cast<gauge*>(p)->value());
          break;
        case kind::histogram: {
          auto& h = *static_cast<histogram*>(p);
          // Cumulative counts at each power-of-two boundary up to the highest non-empty bucket.
          uint64_t cum = 0;
          int last = -1;
          for (int b = 0; b < histogram::bucket_count; ++b)
            if (h.bucket(b) != 0)
              last = b;
          for (int b = 0; b <= last; ++b) {
            cum += h.bucket(b);
            bool boundary = b < histogram::sub_count || b % histogram::sub_count == histogram::sub_count - 1 || b == last;
            if (boundary)
              fmt::format_to(it, "{}_bucket{} {}\n", name,
                             with_le(labels, fmt::format("{:g}", static_cast<double>(histogram::bucket_upper(b)) * h.scale())),
                             cum);
          }
          fmt::format_to(it, "{}_bucket{} {}\n", name, with_le(labels, "+Inf"), cum);
          fmt::format_to(it, "{}_sum{} {:g}\n", name, braces(labels), static_cast<double>(h.sum()) * h.scale());
          fmt::format_to(it, "{}_count{} {}\n", name, braces(labels), cum);
          break;
        }
      }
    }
    for (auto& [labels, fn] : f.fns)
      fmt::format_to(it, "{}{} {:g}\n", name, braces(labels), fn());
  }
  return out;
}

} // namespace agner::metrics
