// agner-chaos: starts node processes, drives them with agner-loadgen over WebSocket, injects
// faults on a seeded schedule (kill, pause, power cut, disk full, fsync failure, slow readers,
// mid-frame disconnects), heals, drains, and judges the run with the loadgen's accounting
// (docs/chaos.md).
#pragma once

#include "chaos/node.hpp"
#include "loadgen/run.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace agner::chaos {

using loadgen::sim_ns;

/// What a fault does.
enum class fault_kind : uint8_t {
  kill,        ///< SIGKILL, then restart on the same data
  pause,       ///< SIGSTOP for `duration`, then SIGCONT
  power_cut,   ///< SIGKILL, drop un-fsynced writes, restart (power-loss mode)
  slow_readers,///< a share of the phones stops reading for `duration`
  mid_frame,   ///< a share of the phones sends half a frame and drops the connection
  disk_full,   ///< the node's file system fills up for `duration`, then frees again
  fsync_failure, ///< fsync/fdatasync start failing (libfiu); the node must stop, and is restarted
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
  uint32_t disk_fulls = 0;     ///< needs chaos_options::disk_mb (a tmpfs per node, mounted as root)
  uint32_t fsync_failures = 0; ///< runs the nodes under libfiu
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
  /// Disk-full faults: each node's data directory is a tmpfs of this many MiB (mounted by the
  /// run, so it needs root or CAP_SYS_ADMIN), and the nodes reserve no disk ahead
  /// (store.disk_reserve_mb=0) so that a full disk is felt at once.
  uint32_t disk_mb = 256;
  /// A full disk is held for its scheduled duration, then until the node refused a commit (it
  /// first uses up the space it reserved), but never longer than this.
  sim_ns disk_full_max = 30 * loadgen::ns_per_s;
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
  uint64_t filled_bytes = 0;    ///< disk full: bytes the filler took
  /// Disk full: commits the node refused with no_space meanwhile (its metrics); fsync failure:
  /// 1 if the node stopped on the failed fsync, as it must. -1: not measured.
  int64_t store_errors = -1;
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
