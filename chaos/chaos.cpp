#include "chaos/chaos.hpp"

#include "runtime/hash.hpp"
#include "tools/powercut/powercut.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <arpa/inet.h>
#include <csignal>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <netinet/in.h>
#include <sstream>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char** environ;

namespace agner::chaos {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;
using loadgen::ns_per_ms;
using loadgen::ns_per_s;

uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    throw std::runtime_error("socket failed");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot find a free port");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

namespace {

size_t file_size(const std::string& path) {
  std::error_code ec;
  auto n = fs::file_size(path, ec);
  return ec ? 0 : static_cast<size_t>(n);
}

std::string read_from(const std::string& path, size_t offset) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

double secs(sim_ns ns) { return static_cast<double>(ns) / 1e9; }

} // namespace

// --- node_handle ------------------------------------------------------------------------------

node_handle::node_handle(node_spec s) : s_(std::move(s)) {}

node_handle::~node_handle() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

std::string node_handle::address() const { return fmt::format("127.0.0.1:{}", s_.port); }

std::chrono::nanoseconds node_handle::start(std::chrono::milliseconds timeout) {
  if (pid_ > 0)
    throw std::logic_error("node already running");
  auto t0 = clk::now();
  auto log = log_path();
  size_t offset = file_size(log);
  std::vector<std::string> args{s_.binary, "--http.host=127.0.0.1", fmt::format("--http.port={}", s_.port),
                                "--store.dir=" + s_.data_dir};
  args.insert(args.end(), s_.extra_args.begin(), s_.extra_args.end());
  std::vector<std::string> env;
  if (!s_.powercut_shadow_dir.empty()) {
    env = powercut::child_environment(s_.data_dir, s_.powercut_shadow_dir);
  } else {
    for (char** e = environ; e && *e; ++e)
      env.emplace_back(*e);
  }
  pid_t pid = ::fork();
  if (pid < 0)
    throw std::runtime_error("fork failed");
  if (pid == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
    }
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0)
      ::dup2(devnull, STDIN_FILENO);
    std::vector<char*> argv, envp;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env)
      envp.push_back(e.data());
    envp.push_back(nullptr);
    ::execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  pid_ = pid;
  paused_ = false;
  // The node logs "chat node ready on HOST:PORT" once it accepts connections.
  for (;;) {
    if (read_from(log, offset).find("chat node ready on") != std::string::npos)
      return clk::now() - t0;
    if (died())
      throw std::runtime_error(fmt::format("agner-node exited during startup; see {}", log));
    if (clk::now() - t0 > timeout) {
      kill();
      throw std::runtime_error(fmt::format("agner-node not ready within {} ms; see {}", timeout.count(), log));
    }
    std::this_thread::sleep_for(10ms);
  }
}

void node_handle::kill() {
  if (pid_ <= 0)
    return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
  paused_ = false;
}

uint64_t node_handle::power_cut() {
  kill();
  if (s_.powercut_shadow_dir.empty())
    return 0;
  return powercut::apply_cut(s_.powercut_shadow_dir, s_.data_dir).bytes_discarded;
}

void node_handle::pause() {
  if (pid_ > 0 && !paused_ && ::kill(pid_, SIGSTOP) == 0)
    paused_ = true;
}

void node_handle::resume() {
  if (pid_ > 0 && paused_ && ::kill(pid_, SIGCONT) == 0)
    paused_ = false;
}

bool node_handle::died() {
  if (pid_ <= 0)
    return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    paused_ = false;
    return true;
  }
  return false;
}

std::optional<int> node_handle::stop(std::chrono::milliseconds timeout) {
  if (pid_ <= 0)
    return std::nullopt;
  resume();
  ::kill(pid_, SIGTERM);
  auto t0 = clk::now();
  while (clk::now() - t0 < timeout) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(10ms);
  }
  kill();
  return std::nullopt;
}

// --- the schedule -------------------------------------------------------------------------------

std::string_view to_string(fault_kind k) noexcept {
  switch (k) {
  case fault_kind::kill: return "kill";
  case fault_kind::pause: return "pause";
  case fault_kind::power_cut: return "power_cut";
  case fault_kind::slow_readers: return "slow_readers";
  case fault_kind::mid_frame: return "mid_frame";
  }
  return "?";
}

std::vector<fault> make_schedule(const schedule_options& o) {
  std::vector<fault_kind> kinds;
  kinds.insert(kinds.end(), o.kills, o.power_loss ? fault_kind::power_cut : fault_kind::kill);
  kinds.insert(kinds.end(), o.pauses, fault_kind::pause);
  kinds.insert(kinds.end(), o.slow_readers, fault_kind::slow_readers);
  kinds.insert(kinds.end(), o.mid_frames, fault_kind::mid_frame);
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
    // A node that died without being killed (a fatal store error, a bug) is restarted: the
    // run goes on, and the death is counted.
    for (auto& n : nodes_)
      if (n->died()) {
        ++deaths_;
        say("a node died on its own (pid gone); restarting it");
        n->start();
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

  /// Before the drain: every node runs and is not paused.
  void heal() {
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
    }
    records_.push_back(r);
    dipped_.push_back(false);
  }

  const chaos_options& o_;
  std::vector<std::unique_ptr<node_handle>>& nodes_;
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

std::string chaos_result::summary() const {
  std::string out = "agner-chaos timeline:\n";
  std::vector<double> serving, resumed;
  for (auto& f : faults) {
    out += fmt::format("  t={:6.2f}s {:<12} node {}", secs(f.injected_at), to_string(f.f.kind), f.f.node);
    if (f.f.kind == fault_kind::kill || f.f.kind == fault_kind::power_cut) {
      serving.push_back(secs(f.serving_after));
      out += fmt::format("  serving again after {:.2f} s", secs(f.serving_after));
    }
    if (f.resumed_after >= 0) {
      if (f.f.kind == fault_kind::kill || f.f.kind == fault_kind::power_cut)
        resumed.push_back(secs(f.resumed_after));
      out += fmt::format("  all phones resumed after {:.2f} s", secs(f.resumed_after));
    }
    out += "\n";
  }
  auto s = of(serving), rs = of(resumed);
  out += fmt::format("  recovery after a kill: serving p50 {:.2f} s p99 {:.2f} s; all phones resumed p50 {:.2f} s p99 {:.2f} s "
                     "({} of {} measured)\n",
                     s.p50, s.p99, rs.p50, rs.p99, resumed.size(), serving.size());
  if (node_deaths)
    out += fmt::format("  nodes that died on their own: {}\n", node_deaths);
  out += loadgen::summary(load.result, load.info);
  return out;
}

std::string chaos_result::to_json() const {
  std::string f = "[";
  for (size_t i = 0; i < faults.size(); ++i) {
    auto& x = faults[i];
    f += fmt::format(R"({}{{"at_s":{:.3f},"kind":"{}","node":{},"duration_s":{:.3f},"serving_after_s":{:.3f},"resumed_after_s":{:.3f},"bytes_discarded":{}}})",
                     i ? "," : "", secs(x.injected_at), to_string(x.f.kind), x.f.node, secs(x.f.duration),
                     x.serving_after >= 0 ? secs(x.serving_after) : -1.0, x.resumed_after >= 0 ? secs(x.resumed_after) : -1.0,
                     x.bytes_discarded);
  }
  f += "]";
  return fmt::format(R"({{"faults":{},"node_deaths":{},"exit_code":{},"load":{}}})", f, node_deaths, exit_code,
                     loadgen::to_json(load.result, load.info));
}

} // namespace agner::chaos
