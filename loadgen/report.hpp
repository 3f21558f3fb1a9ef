// The loadgen's output: a JSON report for machines, a short summary for people, and the exit
// code that tells a script (or the chaos tests) whether the run broke a promise.
#pragma once

#include "loadgen/accounting.hpp"

#include <string>

namespace agner::loadgen {

/// The run passed: nothing acknowledged was lost and nothing arrived that was not sent.
inline constexpr int exit_ok = 0;
/// The run found violations (lost or unexpected; with `strict`, also duplicates and disorder).
inline constexpr int exit_violations = 1;

/// What describes the run itself, echoed in the report.
struct run_info {
  std::string preset;      ///< "steady", "new_years_eve", "reconnect_storm" or "custom"
  uint32_t phones = 0;
  uint64_t seed = 0;
  uint32_t workers = 1;
  double duration_s = 0;   ///< the load phase
  bool drained = false;    ///< whether every device reconnected and resumed at the end
  bool strict = false;     ///< duplicates, order violations and nonce conflicts count as violations
  std::string transport;   ///< "ws", "inproc" or "null" (empty: not reported)
  /// A JSON object describing the load itself (rates, memory, connections), rendered by the
  /// runner and reported as "load"; empty: left out.
  std::string load_json;
};

/// The report as one JSON object (format in docs/loadgen.md). Latencies are in nanoseconds.
std::string to_json(const accounting_result& r, const run_info& run);
/// A few lines for a terminal: counts, latencies in ms, the verdict and the first examples.
std::string summary(const accounting_result& r, const run_info& run);
/// exit_ok or exit_violations.
int exit_code(const accounting_result& r, const run_info& run) noexcept;

} // namespace agner::loadgen
