// agner-chaos: nodes under load, faults from a seed, a verdict on what was acknowledged
// (docs/chaos.md). Flags: every agner-loadgen flag (the load) plus chaos.* (the faults).
#include "chaos/chaos.hpp"
#include "runtime/node.hpp"

#include <fmt/format.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <unistd.h>

int main(int argc, char** argv) {
  using namespace agner;
  if (loadgen::is_worker_invocation(argc, argv))
    return loadgen::worker_main(argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  chaos::chaos_options o;
  // The load a chaos run wants unless told otherwise: every device online for the whole run (so
  // "every phone resumed" is well defined), a few thousand phones, a steady trickle of sends.
  o.load.phones = 2000;
  o.load.workers = 2;
  o.load.duration_s = 60;
  o.load.online_mean_s = 1e8;
  o.load.offline_mean_s = 1;
  o.load.ramp_up_s = 2;
  o.load.sends_per_online_minute = 6;
  o.load.read_delay_median_s = 5;
  o.load.drain_timeout_s = 90;
  o.load.progress = "off";
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  o.node_binary = (self.parent_path() / "agner-node").string();
  o.work_dir = "./chaos-data";
  std::string out_dir;
  config_schema s;
  o.load.bind(s);
  uint32_t nodes = 1;
  s.add("chaos.nodes", &nodes, "node processes (each fault names its target)", 1, 16);
  s.add("chaos.kills", &o.faults.kills, "SIGKILL+restart cycles (power cuts with chaos.power_loss)", 0, 100'000);
  s.add("chaos.pauses", &o.faults.pauses, "SIGSTOP/SIGCONT pauses", 0, 100'000);
  s.add("chaos.slow_readers", &o.faults.slow_readers, "rounds of slow readers", 0, 100'000);
  s.add("chaos.mid_frames", &o.faults.mid_frames, "rounds of mid-frame disconnects", 0, 100'000);
  s.add("chaos.disk_fulls", &o.faults.disk_fulls, "disk-full faults (each node's data on a tmpfs; needs root)", 0, 100'000);
  s.add("chaos.disk_mb", &o.disk_mb, "size of each node's tmpfs with chaos.disk_fulls", 1, 1 << 20);
  double disk_full_max_s = 30;
  s.add("chaos.disk_full_max_s", &disk_full_max_s, "hold a full disk at most this long while waiting for it to be felt", 1,
        3600);
  s.add("chaos.fsync_failures", &o.faults.fsync_failures, "fsync/fdatasync failures through libfiu (the node must stop)", 0,
        100'000);
  s.add("chaos.client_fault_fraction", &o.client_fault_fraction, "share of phones one client fault hits", 0, 1);
  s.add("chaos.power_loss", &o.faults.power_loss, "kills are power cuts: un-fsynced writes are thrown away");
  s.add_choice("chaos.durability", &o.durability, "the nodes' store.durability (unsafe_nosync must be caught)",
               {"sync", "unsafe_nosync"});
  s.add("chaos.node_binary", &o.node_binary, "agner-node to run");
  s.add("chaos.work_dir", &o.work_dir, "nodes' data directories and logs go here");
  s.add("chaos.verbose", &o.verbose, "print the schedule and each fault as it happens");
  try {
    auto out = s.load(std::vector<std::string>(argv + 1, argv + argc), [](const std::string&) { return std::nullopt; }, {});
    if (out.help) {
      fmt::print("{}", s.help("agner-chaos", "agner-chaos: kill nodes under load and prove nothing acknowledged is lost "
                                             "(docs/chaos.md)",
                              false));
      return 0;
    }
    o.load.population();
  } catch (const std::exception& e) {
    fmt::print(stderr, "agner-chaos: {}\n", e.what());
    return exit_config;
  }
  o.faults.nodes = nodes;
  o.disk_full_max = static_cast<agner::loadgen::sim_ns>(disk_full_max_s * 1e9);
  o.faults.seed = static_cast<uint64_t>(o.load.seed);
  o.faults.duration_s = o.load.duration_s;
  try {
    auto r = chaos::run(o);
    fmt::print("{}", r.summary());
    if (!o.load.out_dir.empty()) {
      std::ofstream(o.load.out_dir + "/chaos.json") << r.to_json() << "\n";
      fmt::print("report: {}/chaos.json\n", o.load.out_dir);
    }
    return r.exit_code;
  } catch (const std::exception& e) {
    fmt::print(stderr, "agner-chaos: {}\n", e.what());
    return exit_fatal;
  }
}
