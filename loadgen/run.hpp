// A whole agner-loadgen run: set up users, start the phones (worker processes over WebSocket, or
// one process in-process), run the load, drain, join the accounting and write the report.
// The CLI (tools/agner_loadgen.cpp) and agner-chaos both call run().
#pragma once

#include "loadgen/accounting.hpp"
#include "loadgen/model.hpp"
#include "loadgen/report.hpp"
#include "loadgen/timeline.hpp"
#include "runtime/config.hpp"

#include <functional>
#include <string>
#include <vector>

namespace agner::loadgen {

struct run_options {
  std::string preset = "steady";
  uint32_t phones = 1000;
  int64_t seed = 1;
  /// Length of the load phase.
  double duration_s = 30;
  /// After the load: every device connects and resumes, the outboxes empty, then quiet.
  bool drain = true;
  double drain_timeout_s = 60;
  double drain_quiet_s = 2;
  /// "ws" (real connections from worker processes), "inproc" (an embedded node, one process),
  /// "null" (a perfect server in the generator: its own ceiling).
  std::string transport = "ws";
  uint32_t workers = 2;
  /// ws: nodes as host:port, comma-separated; phone p uses node p % nodes. Several nodes are not
  /// a cluster yet: then phones only connect (sends_per_online_minute must be 0).
  std::string nodes = "127.0.0.1:8080";
  /// ws: each node's data directory, comma-separated, same order (admin.token, secret.key).
  std::string node_dirs = "./data";
  /// ws: worker w binds source address base + w (127.0.0.0/8 is all loopback), so each worker
  /// has its own ~28k ephemeral ports. Empty: the kernel chooses.
  std::string source_base = "127.0.0.2";
  /// Where report.json, summary.txt, timeline.csv and timeline.png go (empty: nowhere).
  std::string out_dir;
  /// Users are named <prefix><phone>. Empty: "lg" + a tag of the run's start time, so runs against
  /// the same node never meet each other's users (and their inboxes).
  std::string user_prefix;
  bool strict = false;
  /// Progress line: "auto" (on a terminal), "on" (a line per second), "off".
  std::string progress = "auto";
  /// Model overrides; negative: the preset's value.
  double sends_per_online_minute = -1;
  double online_mean_s = -1;
  double offline_mean_s = -1;
  double ramp_up_s = -1;
  double multi_device_fraction = -1;
  double read_delay_median_s = -1;
  uint32_t body_bytes = 64;
  /// ws: heartbeat idle sessions this often (the node closes one silent for 1.5 x its heartbeat).
  uint32_t heartbeat_ms = 10'000;
  /// inproc: the embedded node's data directory (empty: a fresh temporary one, removed after).
  std::string inproc_dir;
  uint32_t inproc_shards = 8;

  /// Binds every field to a flag (--phones=N, ...), for the CLI and for worker processes.
  void bind(config_schema& s);
  /// The population this run plays: the preset with the overrides applied.
  population_options population() const;
};

/// What the runner measured beside the accounting.
struct load_stats {
  double load_s = 0;            ///< the load phase as it ran
  double drain_s = 0;           ///< the drain as it ran
  uint64_t peak_ready = 0;      ///< most sessions ready at once
  double sent_per_s = 0;        ///< first send attempts per second of the load phase
  double delivered_per_s = 0;   ///< deliveries to recipients per second of the load phase
  uint64_t errors = 0;
  uint64_t resume_too_old = 0;
  uint64_t unexpected_closes = 0;
  // Memory, bytes. Generator: what the loadgen's own structures hold; process RSS as measured.
  uint64_t generator_bytes = 0;  ///< schedule + driver + recorder + sessions (inproc) at the peak
  uint64_t rss_before = 0;       ///< inproc: the process after the node started, before phones
  uint64_t rss_peak = 0;         ///< inproc: the process with every phone connected
  std::string to_json() const;
};

struct run_outcome {
  accounting_result result;
  run_info info;
  timeline tl;
  load_stats load;
  int exit_code = exit_ok;
};

/// What the runner tells a hook about the load right now.
struct load_view {
  sim_ns now = 0;
  uint64_t ready = 0;   ///< sessions ready (ws: as of the workers' last once-a-second reports)
  uint64_t devices = 0; ///< devices of the whole population
  /// ws: sends a command to every worker: "slow FRACTION MS" (slow readers), "midframe FRACTION"
  /// (half a frame, then drop). Does nothing for the other transports.
  std::function<void(const std::string&)> tell_workers;
};

/// Hooks for agner-chaos: called from the runner's thread.
struct run_hooks {
  /// About every 100 ms during the load phase and the drain (it may block: the workers go on).
  std::function<void(const load_view&)> during_load;
  /// Once, after the load phase and before the drain: heal everything.
  std::function<void()> before_drain;
  /// Every progress line (also when not printed).
  std::function<void(const std::string&)> on_progress;
};

/// Runs the whole thing. Throws std::runtime_error on setup failures (node unreachable, ...).
run_outcome run(const run_options& o, const run_hooks& hooks = {});

/// The entry point of a worker process: `argv` as given to the hidden subcommand "__worker"
/// (tools that call run() with the ws transport must dispatch it: see is_worker_invocation).
int worker_main(int argc, char** argv);
/// True when argv asks for a worker (argv[1] == "__worker").
bool is_worker_invocation(int argc, char** argv);

} // namespace agner::loadgen
