// Shared benchmark harness: run a workload several times, report median and spread, and the
// ratio against a peer measured in the same run. Results are printed as aligned text and, with
// AGNER_BENCH_JSON=path, appended as JSON lines for docs/benchmarks.md.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace agner::bench {

/// The outcome of repeated runs of one workload: a rate (operations per second) per run.
struct result {
  std::string name;
  std::string unit = "ops/s";
  std::vector<double> samples;

  double median() const {
    auto s = samples;
    std::sort(s.begin(), s.end());
    size_t n = s.size();
    return n == 0 ? 0 : (n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2);
  }
  double min() const { return samples.empty() ? 0 : *std::min_element(samples.begin(), samples.end()); }
  double max() const { return samples.empty() ? 0 : *std::max_element(samples.begin(), samples.end()); }
  /// Half the range relative to the median, in percent: a quick, honest spread figure.
  double spread_pct() const { return median() == 0 ? 0 : 50.0 * (max() - min()) / median(); }
};

/// Repeats from the environment (AGNER_BENCH_REPEATS), default `fallback`.
inline int repeats(int fallback = 5) {
  if (const char* r = std::getenv("AGNER_BENCH_REPEATS"))
    return std::max(1, std::atoi(r));
  return fallback;
}

/// Runs `run` `n` times; each call returns the number of operations it did, the harness times it.
inline result measure(std::string name, int n, const std::function<uint64_t()>& run) {
  result r{std::move(name), "ops/s", {}};
  for (int i = 0; i < n; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    uint64_t ops = run();
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.samples.push_back(static_cast<double>(ops) / secs);
  }
  return r;
}

/// A result whose samples were measured elsewhere (an external peer such as erl).
inline result from_samples(std::string name, std::vector<double> samples, std::string unit = "ops/s") {
  return result{std::move(name), std::move(unit), std::move(samples)};
}

inline std::string human(double v) {
  if (v >= 1e9) return fmt::format("{:.2f}G", v / 1e9);
  if (v >= 1e6) return fmt::format("{:.2f}M", v / 1e6);
  if (v >= 1e3) return fmt::format("{:.1f}k", v / 1e3);
  return fmt::format("{:.1f}", v);
}

/// Prints one line: name, median, min..max, spread, and the ratio to `peer` if given.
inline void report(const result& r, const result* peer = nullptr) {
  std::string ratio = peer && peer->median() > 0 ? fmt::format("  ratio {:.2f}x vs {}", r.median() / peer->median(), peer->name) : "";
  fmt::print("{:<44} median {:>9} {}  [{} .. {}]  spread ±{:.1f}%  (n={}){}\n", r.name, human(r.median()), r.unit,
             human(r.min()), human(r.max()), r.spread_pct(), r.samples.size(), ratio);
  if (const char* path = std::getenv("AGNER_BENCH_JSON")) {
    std::ofstream out(path, std::ios::app);
    out << fmt::format(R"({{"name":"{}","unit":"{}","median":{},"min":{},"max":{},"n":{},"peer":"{}","ratio":{}}})", r.name,
                       r.unit, r.median(), r.min(), r.max(), r.samples.size(), peer ? peer->name : "",
                       peer && peer->median() > 0 ? r.median() / peer->median() : 0.0)
        << "\n";
  }
  std::fflush(stdout);
}

/// Prevents the optimizer from deleting a computed value.
template <class T>
inline void keep(T&& v) {
  asm volatile("" : : "g"(&v) : "memory");
}

} // namespace agner::bench
