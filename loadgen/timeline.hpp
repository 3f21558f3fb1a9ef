// Throughput and latency over time, one bucket per second of the run: what the plots show.
// Each worker keeps its own timeline; the parent merges them (the buckets line up because all
// workers share one clock). Latencies are send-to-delivered, measured at the receiving device
// from the send time the sender wrote into the body (one machine, one CLOCK_MONOTONIC).
#pragma once

#include "loadgen/accounting.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace agner::loadgen {

struct second_bucket {
  uint64_t sent = 0;       ///< first send attempts
  uint64_t stored = 0;     ///< first stored acks
  uint64_t delivered = 0;  ///< deliveries to a recipient's devices (not the sender's own copies)
  uint64_t errors = 0;     ///< error frames and failed connections
  uint64_t connected = 0;  ///< sessions ready at the end of the second (a level, summed over workers)
  latency_histogram latency; ///< send to delivered

  bool operator==(const second_bucket&) const = default;
};

class timeline {
public:
  /// The bucket of simulated time `at` (grows as needed; times before 0 go to bucket 0).
  second_bucket& at(sim_ns t);
  const std::vector<second_bucket>& seconds() const noexcept { return s_; }
  void merge(const timeline& other);

  std::string serialize() const;
  /// Throws std::runtime_error on bytes that are not a serialized timeline.
  static timeline deserialize(std::string_view bytes);

  /// One line per second: t,sent,stored,delivered,errors,connected,p50_ms,p99_ms,p999_ms.
  std::string csv() const;
  /// A gnuplot script that plots `csv_path` into `png_path` (throughput above, latency below;
  /// `any_latency` false when no second has a delivery, and then the latency panel says so).
  static std::string gnuplot_script(std::string_view csv_path, std::string_view png_path, std::string_view title,
                                    bool any_latency);
  /// Whether any second recorded a delivery (and so a latency).
  bool any_delivery() const noexcept;

  bool operator==(const timeline&) const = default;

private:
  std::vector<second_bucket> s_;
};

} // namespace agner::loadgen
