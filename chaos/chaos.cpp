#include "chaos/chaos.hpp"

#include "runtime/hash.hpp"
#include "tools/ctl_admin.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>

namespace agner::chaos {

namespace fs = std::filesystem;
using clk = std::chrono::steady_clock;
using loadgen::ns_per_ms;
using loadgen::ns_per_s;

namespace {
double secs(sim_ns ns) { return static_cast<double>(ns) / 1e9; }
} // namespace

// --- the schedule -------------------------------------------------------------------------------

std::string_view to_string(fault_kind k) noexcept {
  switch (k) {
  case fault_kind::kill: return "kill";
  case fault_kind::pause: return "pause";
  case fault_kind::power_cut: return "power_cut";
  case fault_kind::slow_readers: return "slow_readers";
  case fault_kind::mid_frame: return "mid_frame";
  case fault_kind::disk_full: return "disk_full";
  case fault_kind::fsync_failure: return "fsync_failure";
  }
  return "?";
}

std::vector<fault> make_schedule(const schedule_options& o) {
  std::vector<fault_kind> kinds;
  kinds.insert(kinds.end(), o.kills, o.power_loss ? fault_kind::power_cut : fault_kind::kill);
  kinds.insert(kinds.end(), o.pauses, fault_kind::pause);
  kinds.insert(kinds.end(), o.slow_readers, fault_kind::slow_readers);
  kinds.insert(kinds.end(), o.mid_frames, fault_kind::mid_frame);
  kinds.insert(kinds.end(), o.disk_fulls, fault_kind::disk_full);
  kinds.insert(kinds.end(), o.fsync_failures, fault_kind::fsync_failure);
  uint64_t rng = o.seed ^ 0xc4a05c4a05ull;
  auto next = [&] { return mix64(rng += 0x9e3779b97f4a7c15ull); }; // splitmix64
  for (size_t i = kinds.size(); i > 1; --i) // Fisher-Yates with the run's own stream
    std::swap(kinds[i - 1], kinds[next() % i]);
  std::vector<fault> out;
  if (kinds.empty())
    return out;
  const sim_ns from = static_cast<sim_ns>(o.margin_s * 1e9);
  const sim_ns to = std::max(from + 1, static_cast<sim_ns>((o.duration_s - o.margin_s) * 1e9));
  const sim_ns slot = (to - from) / static_cast<sim_ns>(kinds.size());
  for (size_t i = 0; i < kinds.size(); ++i) {
    fault f;
    f.kind = kinds[i];
    f.at = from + static_cast<sim_ns>(i) * slot + static_cast<sim_ns>(next() % static_cast<uint64_t>(std::max<sim_ns>(slot / 2, 1)));
    f.node = static_cast<uint32_t>(next() % std::max(o.nodes, 1u));
    if (f.kind == fault_kind::pause)
      f.duration = std::min<sim_ns>(slot / 2, 500 * ns_per_ms + static_cast<sim_ns>(next() % 1500) * ns_per_ms);
    if (f.kind == fault_kind::disk_full)
      f.duration = std::min<sim_ns>(slot / 2, 2 * ns_per_s + static_cast<sim_ns>(next() % 3000) * ns_per_ms);
    if (f.kind == fault_kind::slow_readers)
      f.duration = std::min<sim_ns>(slot / 2, 2 * ns_per_s + static_cast<sim_ns>(next() % 3000) * ns_per_ms);
    out.push_back(f);
  }
  return out;
}

// --- the run ------------------------------------------------------------------------------------

namespace {

/// Injects the schedule's faults from the loadgen's hook and watches the recovery.
class injector {
public:
  injector(const chaos_options& o, std::vector<std::unique_ptr<node_handle>>& nodes, std::vector<fault> plan)
      : o_(o), nodes_(nodes), plan_(std::move(plan)) {}

  void tick(const loadgen::load_view& v) {
    // Unpause what is due.
    for (auto& [until, node] : unpause_)
      if (until <= v.now && nodes_[node]->paused())
        nodes_[node]->resume();
    release_disks(v.now, false);
    // A node that died without being killed is restarted. After an injected fsync failure that
    // is the expected end (the store must stop rather than acknowledge again); otherwise (a bug)
    // the run goes on and the death is counted.
    for (uint32_t i = 0; i < nodes_.size(); ++i) {
      auto& n = *nodes_[i];
      if (!n.died())
        continue;
      auto t0 = clk::now();
      auto fsync = std::find_if(fsync_pending_.begin(), fsync_pending_.end(), [&](auto& p) { return p.second == i; });
      if (fsync != fsync_pending_.end()) {
        auto& r = records_[fsync->first];
        fsync_pending_.erase(fsync);
        n.start();
        r.store_errors = 1;
        r.serving_after = v.now - r.injected_at + std::chrono::duration_cast<std::chrono::nanoseconds>(clk::now() - t0).count();
        say(fmt::format("t={:.1f}s node {} stopped on the failed fsync; serving again {:.2f} s after the fault", secs(v.now), i,
                        secs(r.serving_after)));
        continue;
      }
      ++deaths_;
      say("a node died on its own (pid gone); restarting it");
      n.start();
    }
    while (next_ < plan_.size() && plan_[next_].at <= v.now)
      inject(plan_[next_++], v);
    // Recovery: a fault's phones have resumed when every device is ready again, after the dip.
    for (auto& r : records_) {
      if (r.resumed_after >= 0)
        continue;
      if (v.ready < v.devices)
        dipped_[&r - records_.data()] = true;
      else if (dipped_[&r - records_.data()])
        r.resumed_after = v.now - r.injected_at;
    }
  }

  /// Before the drain: every disk has room, every node runs and is not paused.
  void heal() {
    release_disks(0, true);
    for (auto& [rec, node] : fsync_pending_) {
      // The node never committed while fsync failed (no load reached it): restart it clean.
      say(fmt::format("node {} did not stop on the failed fsync (no commit was tried); restarting it", node));
      records_[rec].store_errors = 0;
      nodes_[node]->kill();
    }
    fsync_pending_.clear();
    for (auto& n : nodes_) {
      n->resume();
      if (n->died())
        ++deaths_;
      if (!n->running())
        n->start();
    }
  }

  std::vector<fault_record> records() const { return records_; }
  uint64_t deaths() const noexcept { return deaths_; }

private:
  void say(const std::string& s) const {
    if (o_.verbose)
      fmt::print(stderr, "agner-chaos: {}\n", s);
  }

  void inject(const fault& f, const loadgen::load_view& v) {
    fault_record r;
    r.f = f;
    r.injected_at = v.now;
    auto& n = *nodes_[f.node];
    switch (f.kind) {
    case fault_kind::kill:
    case fault_kind::power_cut: {
      auto t0 = clk::now();
      std::erase_if(fsync_pending_, [&](auto& p) { return p.second == f.node; });
      n.resume();
      r.bytes_discarded = f.kind == fault_kind::power_cut ? n.power_cut() : (n.kill(), 0);
      n.start();
      r.serving_after = std::chrono::duration_cast<std::chrono::nanoseconds>(clk::now() - t0).count();
      say(fmt::format("t={:.1f}s {} node {}: serving again after {:.2f} s{}", secs(v.now), to_string(f.kind), f.node,
                      secs(r.serving_after),
                      f.kind == fault_kind::power_cut ? fmt::format(" ({} un-fsynced bytes dropped)", r.bytes_discarded) : ""));
      break;
    }
    case fault_kind::pause:
      n.pause();
      unpause_.emplace_back(v.now + f.duration, f.node);
      r.serving_after = f.duration;
      say(fmt::format("t={:.1f}s pause node {} for {:.2f} s", secs(v.now), f.node, secs(f.duration)));
      break;
    case fault_kind::slow_readers:
      v.tell_workers(fmt::format("slow {} {}", o_.client_fault_fraction, f.duration / ns_per_ms));
      say(fmt::format("t={:.1f}s slow readers: {:.0f}% of phones stop reading for {:.2f} s", secs(v.now),
                      o_.client_fault_fraction * 100, secs(f.duration)));
      break;
    case fault_kind::mid_frame:
      v.tell_workers(fmt::format("midframe {}", o_.client_fault_fraction));
      say(fmt::format("t={:.1f}s mid-frame disconnects: {:.0f}% of phones", secs(v.now), o_.client_fault_fraction * 100));
      break;
    case fault_kind::disk_full: {
      auto held = std::find_if(disks_.begin(), disks_.end(), [&](auto& d) { return d.node == f.node; });
      if (held != disks_.end()) {
        // Still full from an earlier fault that waits to be felt: hold it longer instead.
        held->until = std::max(held->until, v.now + f.duration);
        say(fmt::format("t={:.1f}s disk of node {} still full; held {:.2f} s longer", secs(v.now), f.node, secs(f.duration)));
        r.store_errors = 0;
        break;
      }
      r.filled_bytes = fill_disk(n.spec().data_dir);
      disks_.push_back({records_.size(), f.node, v.now + f.duration, v.now + o_.disk_full_max, no_space_errors(n), 0, 0});
      say(fmt::format("t={:.1f}s disk full on node {} ({} bytes taken), for at least {:.2f} s", secs(v.now), f.node,
                      r.filled_bytes, secs(f.duration)));
      break;
    }
    case fault_kind::fsync_failure:
      n.resume();
      n.fail_fsync();
      fsync_pending_.emplace_back(records_.size(), f.node);
      say(fmt::format("t={:.1f}s fsync and fdatasync fail with EIO on node {} from now on", secs(v.now), f.node));
      break;
    }
    records_.push_back(r);
    dipped_.push_back(false);
  }

  /// The node's count of commits refused for lack of disk space (-1 if unreadable).
  static int64_t no_space_errors(const node_handle& n) {
    try {
      ctl::admin_client c("127.0.0.1", n.spec().port, n.spec().data_dir);
      auto body = c.request("GET", "/metrics", false).body;
      constexpr std::string_view key = "agner_store_commit_errors_total{kind=\"no_space\"} ";
      auto at = body.find(key);
      if (at == std::string::npos)
        return 0;
      return std::stoll(body.substr(at + key.size(), 24));
    } catch (const std::exception&) {
      return -1; // paused, restarting: read it at the next chance
    }
  }

  /// Frees the disks whose time is up: held at least their duration, and past it until the node
  /// refused a commit for lack of space (it first uses up the space it reserved ahead, see
  /// store.disk_reserve_mb), at most chaos.disk_full_max_s.
  void release_disks(sim_ns now, bool all) {
    for (auto it = disks_.begin(); it != disks_.end();) {
      auto& d = *it;
      if (!all && now >= d.next_probe) {
        d.next_probe = now + ns_per_s / 2;
        probe(d);
      }
      bool due = all || now >= d.latest || (now >= d.until && d.refused > 0);
      if (!due) {
        ++it;
        continue;
      }
      probe(d);
      auto& r = records_[d.record];
      r.store_errors = d.refused;
      r.serving_after = now ? now - r.injected_at : -1;
      release_disk(nodes_[d.node]->spec().data_dir);
      say(fmt::format("t={:.1f}s disk freed on node {}: {} commit(s) refused with no_space meanwhile", secs(now), d.node,
                      d.refused));
      it = disks_.erase(it);
    }
  }

  struct full_disk {
    size_t record;
    uint32_t node;
    sim_ns until, latest;
    int64_t last;       ///< the node's no_space counter at the last probe (-1: unread)
    int64_t refused;    ///< commits refused since the fill
    sim_ns next_probe;
  };

  /// Adds what the node refused since the last probe (a restart starts its counter from zero).
  void probe(full_disk& d) {
    auto e = no_space_errors(*nodes_[d.node]);
    if (e < 0)
      return;
    if (d.last >= 0)
      d.refused += e >= d.last ? e - d.last : e;
    d.last = e;
  }

  const chaos_options& o_;
  std::vector<std::unique_ptr<node_handle>>& nodes_;
  std::vector<full_disk> disks_;
  std::vector<std::pair<size_t, uint32_t>> fsync_pending_; // (record, node)
  std::vector<fault> plan_;
  size_t next_ = 0;
  std::vector<std::pair<sim_ns, uint32_t>> unpause_;
  std::vector<fault_record> records_;
  std::vector<bool> dipped_;
  uint64_t deaths_ = 0;
};

struct percentiles {
  double p50 = -1, p99 = -1, max = -1;
};

percentiles of(std::vector<double> v) {
  percentiles p;
  if (v.empty())
    return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))]; };
  p.p50 = at(0.5);
  p.p99 = at(0.99);
  p.max = v.back();
  return p;
}

} // namespace

chaos_result run(const chaos_options& o) {
  if (o.node_binary.empty() || !fs::exists(o.node_binary))
    throw std::runtime_error(fmt::format("agner-node not found at '{}'", o.node_binary));
  fs::create_directories(o.work_dir);
  if (o.faults.disk_fulls > 0 && o.disk_mb == 0)
    throw std::runtime_error("chaos.disk_fulls needs chaos.disk_mb > 0");
  // Declared before the nodes, so the nodes are gone before their disks are unmounted.
  std::vector<std::unique_ptr<tmpfs_mount>> mounts;
  std::vector<std::unique_ptr<node_handle>> nodes;
  std::string addrs, dirs;
  for (uint32_t i = 0; i < std::max(o.faults.nodes, 1u); ++i) {
    node_spec s;
    s.binary = o.node_binary;
    s.data_dir = fmt::format("{}/node-{}", o.work_dir, i);
    s.port = free_port();
    s.extra_args.push_back("--store.durability=" + o.durability);
    if (o.faults.power_loss)
      s.powercut_shadow_dir = fmt::format("{}/node-{}.shadow", o.work_dir, i);
    if (o.faults.disk_fulls > 0) {
      mounts.push_back(std::make_unique<tmpfs_mount>(s.data_dir, o.disk_mb));
      s.extra_args.push_back("--store.disk_reserve_mb=0");
    }
    if (o.faults.fsync_failures > 0)
      s.fiu_fifo_prefix = fmt::format("{}/fiu-ctrl", fs::absolute(o.work_dir).string());
    nodes.push_back(std::make_unique<node_handle>(s));
    nodes.back()->start();
    addrs += (i ? "," : "") + nodes.back()->address();
    dirs += (i ? "," : "") + s.data_dir;
  }
  auto plan = make_schedule(o.faults);
  if (o.verbose) {
    fmt::print(stderr, "agner-chaos: seed {}, {} node(s), {} fault(s) over {:.0f} s:\n", o.faults.seed, nodes.size(),
               plan.size(), o.faults.duration_s);
    for (auto& f : plan)
      fmt::print(stderr, "  t={:6.2f}s {:<12} node {}{}\n", secs(f.at), to_string(f.kind), f.node,
                 f.duration ? fmt::format(" for {:.2f} s", secs(f.duration)) : "");
  }
  injector inj(o, nodes, plan);
  auto load = o.load;
  load.transport = "ws";
  load.nodes = addrs;
  load.node_dirs = dirs;
  load.strict = true;
  load.duration_s = o.faults.duration_s;
  loadgen::run_hooks hooks;
  hooks.during_load = [&](const loadgen::load_view& v) { inj.tick(v); };
  hooks.before_drain = [&] { inj.heal(); };
  chaos_result r;
  r.load = loadgen::run(load, hooks);
  r.faults = inj.records();
  r.node_deaths = inj.deaths();
  for (auto& n : nodes) {
    auto code = n->stop();
    if (code != 0)
      fmt::print(stderr, "agner-chaos: node at {} stopped with {}\n", n->address(), code ? std::to_string(*code) : "a timeout");
  }
  r.exit_code = r.load.exit_code;
  return r;
}

namespace {
/// Faults after which a node restarts: their recovery times are the ones summarized.
bool restarts(fault_kind k) {
  return k == fault_kind::kill || k == fault_kind::power_cut || k == fault_kind::fsync_failure;
}
} // namespace

std::string chaos_result::summary() const {
  std::string out = "agner-chaos timeline:\n";
  std::vector<double> serving, resumed;
  uint64_t refused = 0, fsync_stops = 0, fsync_faults = 0;
  for (auto& f : faults) {
    out += fmt::format("  t={:6.2f}s {:<13} node {}", secs(f.injected_at), to_string(f.f.kind), f.f.node);
    if (f.f.kind == fault_kind::disk_full) {
      out += fmt::format("  {:.1f} MiB taken, freed after {:.2f} s, {} commit(s) refused", static_cast<double>(f.filled_bytes) / (1 << 20),
                         f.serving_after >= 0 ? secs(f.serving_after) : -1.0, f.store_errors);
      refused += f.store_errors > 0 ? static_cast<uint64_t>(f.store_errors) : 0;
    }
    if (f.f.kind == fault_kind::fsync_failure) {
      ++fsync_faults;
      fsync_stops += f.store_errors == 1;
      out += f.store_errors == 1 ? "  the node stopped on the failed fsync" : "  the node did not stop";
    }
    if (restarts(f.f.kind) && f.serving_after >= 0) {
      serving.push_back(secs(f.serving_after));
      out += fmt::format("  serving again after {:.2f} s", secs(f.serving_after));
    }
    if (f.resumed_after >= 0) {
      if (restarts(f.f.kind))
        resumed.push_back(secs(f.resumed_after));
      out += fmt::format("  all phones resumed after {:.2f} s", secs(f.resumed_after));
    }
    out += "\n";
  }
  auto s = of(serving), rs = of(resumed);
  out += fmt::format("  recovery after a restart: serving p50 {:.2f} s p99 {:.2f} s; all phones resumed p50 {:.2f} s p99 {:.2f} s "
                     "({} of {} measured)\n",
                     s.p50, s.p99, rs.p50, rs.p99, resumed.size(), serving.size());
  if (refused)
    out += fmt::format("  commits refused for a full disk: {}\n", refused);
  if (fsync_faults)
    out += fmt::format("  fsync failures: {}, the node stopped on {} of them\n", fsync_faults, fsync_stops);
  if (node_deaths)
    out += fmt::format("  nodes that died on their own: {}\n", node_deaths);
  out += loadgen::summary(load.result, load.info);
  return out;
}

std::string chaos_result::to_json() const {
  std::string f = "[";
  for (size_t i = 0; i < faults.size(); ++i) {
    auto& x = faults[i];
    f += fmt::format(R"({}{{"at_s":{:.3f},"kind":"{}","node":{},"duration_s":{:.3f},"serving_after_s":{:.3f},"resumed_after_s":{:.3f},"bytes_discarded":{},"filled_bytes":{},"store_errors":{}}})",
                     i ? "," : "", secs(x.injected_at), to_string(x.f.kind), x.f.node, secs(x.f.duration),
                     x.serving_after >= 0 ? secs(x.serving_after) : -1.0, x.resumed_after >= 0 ? secs(x.resumed_after) : -1.0,
                     x.bytes_discarded, x.filled_bytes, x.store_errors);
  }
  f += "]";
  return fmt::format(R"({{"faults":{},"node_deaths":{},"exit_code":{},"load":{}}})", f, node_deaths, exit_code,
                     loadgen::to_json(load.result, load.info));
}

} // namespace agner::chaos
