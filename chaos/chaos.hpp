// agner-chaos: starts node processes, drives them with agner-loadgen over WebSocket, injects
// faults on a seeded schedule (kill, pause, power cut, slow readers, mid-frame disconnects),
// heals, drains, and judges the run with the loadgen's accounting (docs/chaos.md).
#pragma once

#include "loadgen/run.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace agner::chaos {

using loadgen::sim_ns;

/// A loopback port nothing listens on right now (bound, then released).
uint16_t free_port();

/// How to run one agner-node process.
struct node_spec {
  std::string binary;       ///< path to agner-node
  std::string data_dir;
  uint16_t port = 0;        ///< fixed, so a restarted node is found at the same address
  std::vector<std::string> extra_args; ///< more --key=value flags
  /// Power-loss mode: run under the power-cut shim; its shadows live here.
  std::string powercut_shadow_dir;
};

/// One agner-node process: start, kill, pause, power cut, restart. Owns its pid; kills it on
/// destruction. Every wait is bounded.
class node_handle {
public:
  explicit node_handle(node_spec s);
  ~node_handle();
  node_handle(const node_handle&) = delete;
  node_handle& operator=(const node_handle&) = delete;

  /// Spawns the node and waits until it logs that it is ready (within `timeout`); returns how
  /// long that took. Throws std::runtime_error if it exits or times out.
  std::chrono::nanoseconds start(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  /// SIGKILL and reap.
  void kill();
  /// SIGKILL, then throw away every write not made durable (power-loss mode only); returns the
  /// bytes discarded.
  uint64_t power_cut();
  void pause();
  void resume();
  /// SIGTERM and wait for the exit code (nullopt on timeout, then SIGKILL).
  std::optional<int> stop(std::chrono::milliseconds timeout = std::chrono::seconds(20));

  bool running() const noexcept { return pid_ > 0; }
  bool paused() const noexcept { return paused_; }
  /// True if the process died on its own since the last check (reaps it).
  bool died();
  pid_t pid() const noexcept { return pid_; }
  const node_spec& spec() const noexcept { return s_; }
  std::string address() const;
  std::string log_path() const { return s_.data_dir + ".log"; }

private:
  node_spec s_;
  pid_t pid_ = -1;
  bool paused_ = false;
};

/// What a fault does.
enum class fault_kind : uint8_t {
  kill,        ///< SIGKILL, then restart on the same data
  pause,       ///< SIGSTOP for `duration`, then SIGCONT
  power_cut,   ///< SIGKILL, drop un-fsynced writes, restart (power-loss mode)
  slow_readers,///< a share of the phones stops reading for `duration`
  mid_frame,   ///< a share of the phones sends half a frame and drops the connection
};
std::string_view to_string(fault_kind k) noexcept;

struct fault {
  sim_ns at = 0;
  fault_kind kind = fault_kind::kill;
  uint32_t node = 0;     ///< the target node (index into the cluster)
  sim_ns duration = 0;   ///< pause and slow readers
  bool operator==(const fault&) const = default;
};

struct schedule_options {
  uint64_t seed = 1;
  double duration_s = 60;
  uint32_t nodes = 1;
  uint32_t kills = 10;      ///< kill+restart (power cuts instead in power-loss mode)
  uint32_t pauses = 1;
  uint32_t slow_readers = 1;
  uint32_t mid_frames = 1;
  bool power_loss = false;
  /// No fault in the first and last seconds of the load (connect, and let the last one heal).
  double margin_s = 3;
};

/// The faults of a run, in time order: a pure function of the options (the same seed replays
/// the same schedule). Faults are spread evenly with seeded jitter and never overlap on a node.
std::vector<fault> make_schedule(const schedule_options& o);

struct chaos_options {
  schedule_options faults;
  /// The load: agner-loadgen's options (transport ws; nodes and node_dirs are filled in here).
  loadgen::run_options load;
  std::string node_binary;
  /// Every node's data directory goes under here (node-0, node-1, ...); logs beside them.
  std::string work_dir;
  /// store.durability for the nodes: "sync" (default) or "unsafe_nosync" (to prove the test
  /// catches a lost write in power-loss mode).
  std::string durability = "sync";
  /// Fraction of the phones hit by one slow-readers or mid-frame fault.
  double client_fault_fraction = 0.05;
  /// Print the schedule and each fault as it happens.
  bool verbose = true;
};

/// One fault as it happened.
struct fault_record {
  fault f;
  sim_ns injected_at = 0;
  /// kill / power cut: from the fault to the node serving again (ready). -1: not measured.
  sim_ns serving_after = -1;
  /// From the fault to every device ready again. -1: not before the next fault or the end.
  sim_ns resumed_after = -1;
  uint64_t bytes_discarded = 0; ///< power cut: un-fsynced bytes thrown away
};

struct chaos_result {
  std::vector<fault_record> faults;
  loadgen::run_outcome load;
  uint64_t node_deaths = 0; ///< nodes that died without being killed (restarted by the healer)
  int exit_code = 0;
  /// The human timeline and verdict.
  std::string summary() const;
  std::string to_json() const;
};

/// Runs the whole thing: nodes up, load with faults, heal, drain, verdict (strict accounting).
chaos_result run(const chaos_options& o);

} // namespace agner::chaos
