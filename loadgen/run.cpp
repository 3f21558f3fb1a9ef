#include "loadgen/run.hpp"

#include "chat/chat_node.hpp"
#include "loadgen/codec.hpp"
#include "loadgen/driver.hpp"
#include "loadgen/local_transports.hpp"
#include "loadgen/worker_wire.hpp"
#include "loadgen/ws_transport.hpp"
#include "runtime/log.hpp"
#include "tools/ctl_admin.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <poll.h>
#include <sstream>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace agner::loadgen {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

using namespace wire;

namespace {

uint64_t rss_bytes() {
  std::ifstream in("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  in >> size >> resident;
  return resident * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

/// host:port
node_target parse_node(const std::string& s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos)
    throw std::runtime_error(fmt::format("node '{}': expected host:port", s));
  node_target t;
  t.host = s.substr(0, colon);
  int port = std::atoi(s.c_str() + colon + 1);
  if (port <= 0 || port > 65535)
    throw std::runtime_error(fmt::format("node '{}': bad port", s));
  t.port = static_cast<uint16_t>(port);
  return t;
}

// --- the progress line ------------------------------------------------------------------------

class progress_printer {
public:
  progress_printer(const run_options& o, const run_hooks& h)
      : hooks_(h), tty_(::isatty(STDERR_FILENO) != 0), on_(o.progress == "on" || (o.progress == "auto" && tty_)) {}

  void show(sim_ns now, const char* phase, const progress& p) {
    double dt = static_cast<double>(now - last_at_) / 1e9;
    if (dt <= 0)
      return;
    auto line = fmt::format("[{:6.1f}s {}] ready {} (+{} opening)  sent {:.0f}/s  delivered {:.0f}/s  p99 {:.1f} ms  "
                            "outbox {}  errors {}  closes {}",
                            static_cast<double>(now) / 1e9, phase, p.ready, p.opening,
                            static_cast<double>(p.sent - last_.sent) / dt, static_cast<double>(p.delivered - last_.delivered) / dt,
                            static_cast<double>(p.recent.quantile(0.99)) / 1e6, p.outbox, p.errors, p.closed);
    last_ = p;
    last_at_ = now;
    if (hooks_.on_progress)
      hooks_.on_progress(line);
    if (on_)
      fmt::print(stderr, fmt::runtime(tty_ ? "\r{:<120}" : "{}\n"), line);
  }
  void done() {
    if (on_ && tty_)
      fmt::print(stderr, "\n");
  }

private:
  const run_hooks& hooks_;
  bool tty_, on_;
  progress last_;
  sim_ns last_at_ = 0;
};

load_stats finish_stats(const timeline& tl, sim_ns load_end) {
  load_stats s;
  uint64_t sent = 0, delivered = 0;
  auto secs = static_cast<size_t>(load_end / ns_per_s);
  for (size_t i = 0; i < tl.seconds().size(); ++i) {
    auto& b = tl.seconds()[i];
    s.peak_ready = std::max(s.peak_ready, b.connected);
    s.errors += b.errors;
    if (i < secs)
      sent += b.sent, delivered += b.delivered;
  }
  if (secs > 0) {
    s.sent_per_s = static_cast<double>(sent) / static_cast<double>(secs);
    s.delivered_per_s = static_cast<double>(delivered) / static_cast<double>(secs);
  }
  return s;
}

void write_outputs(const run_options& o, run_outcome& r) {
  if (o.out_dir.empty())
    return;
  fs::create_directories(o.out_dir);
  write_file(o.out_dir + "/report.json", to_json(r.result, r.info) + "\n");
  write_file(o.out_dir + "/summary.txt", summary(r.result, r.info));
  write_file(o.out_dir + "/timeline.csv", r.tl.csv());
  auto gp = o.out_dir + "/timeline.gp";
  write_file(gp, timeline::gnuplot_script(o.out_dir + "/timeline.csv", o.out_dir + "/timeline.png",
                                          fmt::format("agner-loadgen {} {} phones {} seed {}", o.transport, o.phones, o.preset, o.seed),
                                          r.tl.any_delivery()));
  if (std::system("command -v gnuplot >/dev/null 2>&1") == 0) {
    if (std::system(fmt::format("gnuplot '{}' 2>/dev/null", gp).c_str()) != 0)
      log::warn("loadgen", "gnuplot failed; the data is in {}/timeline.csv", o.out_dir);
  } else {
    log::warn("loadgen", "gnuplot not installed: no plot (apt-get install gnuplot-nox); data in {}/timeline.csv", o.out_dir);
  }
}

run_outcome conclude(const run_options& o, std::vector<worker_records>& all, timeline tl, load_stats ls, bool drained) {
  run_outcome r;
  r.result = analyze(all);
  r.tl = std::move(tl);
  r.load = ls;
  r.info.preset = o.preset;
  r.info.phones = o.phones;
  r.info.seed = o.seed;
  r.info.workers = o.transport == "ws" ? o.workers : 1;
  r.info.duration_s = o.duration_s;
  r.info.drained = drained;
  r.info.strict = o.strict;
  r.info.transport = o.transport;
  r.info.load_json = r.load.to_json();
  r.exit_code = exit_code(r.result, r.info);
  return r;
}

// --- one process: inproc and null ------------------------------------------------------------

template <class Transport>
run_outcome run_local(const run_options& o, const run_hooks& hooks, Transport& t, const directory& dir, sim_ns t0,
                      const std::function<uint64_t()>& extra_bytes) {
  population pop(o.population());
  schedule sched(pop, 0, 1);
  recorder rec;
  timeline tl;
  auto now = [t0] { return mono_ns() - t0; };
  driver_options dopt;
  dopt.heartbeat_ns = 0;
  dopt.body_bytes = o.body_bytes;
  driver d(pop, sched, rec, tl, dir, t, 0, 1, dopt);
  t.attach(d);
  progress_printer pp(o, hooks);
  const sim_ns load_end = static_cast<sim_ns>(o.duration_s * 1e9);
  const sim_ns quiet = static_cast<sim_ns>(o.drain_quiet_s * 1e9);
  sim_ns drain_start = 0, next_print = ns_per_s, next_hook = 0;
  bool draining = false, drained = false;
  load_stats ls;
  for (;;) {
    sim_ns n = now();
    t.poll();
    d.step(n);
    if (hooks.during_load && n >= next_hook) {
      hooks.during_load(load_view{n, d.stats().ready, d.devices(), [](const std::string&) {}});
      next_hook = n + 100 * ns_per_ms;
    }
    if (n >= next_print) {
      pp.show(n, draining ? "drain" : "load", progress_of(d, n, quiet));
      next_print += ns_per_s;
      ls.generator_bytes = std::max<uint64_t>(ls.generator_bytes, sched.state_bytes() + sched.pending_read_bytes() +
                                                                     d.memory_bytes() + rec.memory_bytes() + extra_bytes());
      ls.rss_peak = std::max(ls.rss_peak, rss_bytes());
    }
    if (!draining && n >= load_end) {
      if (hooks.before_drain)
        hooks.before_drain();
      if (!o.drain)
        break;
      draining = true;
      drain_start = n;
      d.start_drain(n);
    }
    if (draining) {
      if (d.drained(n, quiet)) {
        drained = true;
        break;
      }
      if (n - drain_start > static_cast<sim_ns>(o.drain_timeout_s * 1e9))
        break;
    }
    sim_ns wake = std::min(d.next_wake(), n + 10 * ns_per_ms);
    if constexpr (requires { t.wait(std::chrono::nanoseconds(1)); }) {
      if (wake > n)
        t.wait(std::chrono::nanoseconds(wake - n));
    }
  }
  sim_ns end = now();
  pp.done();
  d.close_all();
  t.poll();
  auto stats = finish_stats(tl, std::min(end, load_end));
  stats.generator_bytes = ls.generator_bytes;
  stats.rss_peak = ls.rss_peak;
  stats.load_s = static_cast<double>(std::min(end, load_end)) / 1e9;
  stats.drain_s = draining ? static_cast<double>(end - drain_start) / 1e9 : 0;
  stats.resume_too_old = d.stats().resume_too_old;
  stats.unexpected_closes = d.stats().closed;
  std::vector<worker_records> all;
  all.push_back(rec.take());
  return conclude(o, all, std::move(tl), stats, drained);
}

run_outcome run_inproc(const run_options& o, const run_hooks& hooks) {
  std::string dir = o.inproc_dir;
  bool temp = dir.empty();
  if (temp) {
    char tmpl[] = "/tmp/agner-loadgen-XXXXXX";
    if (!::mkdtemp(tmpl))
      throw std::runtime_error("cannot create a temporary directory");
    dir = tmpl;
  }
  run_outcome out;
  {
    chat::chat_node_options no;
    no.store.data_dir = dir;
    no.http.port = 0;
    no.chat.user_shards = o.inproc_shards;
    no.chat.conversation_shards = o.inproc_shards;
    // The shards run on the node's I/O threads: one per core, as the CAF scheduler had.
    no.node.io_threads = std::max(1u, std::thread::hardware_concurrency());
    chat::chat_node n(no);
    n.start(false);
    uint64_t rss0 = rss_bytes();
    auto ids = n.core().create_users(o.user_prefix, 0, o.phones);
    directory d(std::vector<user_ref>(ids.begin(), ids.end()), 1);
    sim_ns t0 = mono_ns();
    inproc_transport t(n.core(), [t0] { return mono_ns() - t0; });
    out = run_local(o, hooks, t, d, t0, [&t] { return t.memory_bytes(); });
    out.load.rss_before = rss0;
    out.info.load_json = out.load.to_json();
    n.request_stop();
    n.wait();
  }
  if (temp)
    fs::remove_all(dir);
  return out;
}

run_outcome run_null(const run_options& o, const run_hooks& hooks) {
  std::vector<user_ref> users(o.phones);
  for (uint32_t p = 0; p < o.phones; ++p)
    users[p] = p + 1;
  directory d(std::move(users), 1);
  sim_ns t0 = mono_ns();
  null_transport t([t0] { return mono_ns() - t0; });
  return run_local(o, hooks, t, d, t0, [] { return uint64_t{0}; });
}

// --- WebSocket: worker processes ----------------------------------------------------------------

struct worker_proc {
  pid_t pid = -1;
  int in = -1;  // its stdin (commands)
  int out = -1; // its stdout (progress, done)
  std::string buf;
  progress last;
  bool done = false;
  std::string result_path;
};

void send_command(worker_proc& w, std::string_view cmd) {
  if (w.in >= 0 && ::write(w.in, cmd.data(), cmd.size()) < 0) {
    ::close(w.in);
    w.in = -1;
  }
}

worker_proc spawn_worker(const std::vector<std::string>& args) {
  int to_child[2], from_child[2];
  if (::pipe2(to_child, O_CLOEXEC) != 0 || ::pipe2(from_child, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe failed");
  pid_t pid = ::fork();
  if (pid < 0)
    throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::dup2(to_child[0], STDIN_FILENO);
    ::dup2(from_child[1], STDOUT_FILENO);
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  ::close(to_child[0]);
  ::close(from_child[1]);
  worker_proc w;
  w.pid = pid;
  w.in = to_child[1];
  w.out = from_child[0];
  return w;
}

run_outcome run_ws(const run_options& o, const run_hooks& hooks) {
  auto addrs = split(o.nodes, ',');
  auto dirs = split(o.node_dirs, ',');
  if (addrs.empty() || addrs.size() != dirs.size())
    throw std::runtime_error("give one node_dirs entry per node (comma-separated, same order)");
  if (addrs.size() > 1 && o.population().sends_per_online_minute > 0)
    throw std::runtime_error("several nodes are not a cluster yet: with more than one node use --sends_per_online_minute=0");
  if (o.workers < 1 || o.workers > 200)
    throw std::runtime_error("workers: 1 to 200");
  worker_setup setup;
  std::vector<std::vector<uint64_t>> ids(addrs.size());
  for (size_t k = 0; k < addrs.size(); ++k) {
    auto t = parse_node(addrs[k]);
    t.secret = read_file(dirs[k] + "/secret.key");
    ctl::admin_client admin(t.host, t.port, dirs[k]);
    // Users in chunks: each request is one durable write of a few thousand users.
    constexpr uint32_t chunk = 5000;
    for (uint32_t first = 0; first < o.phones; first += chunk) {
      auto got = admin.create_users(o.user_prefix, first, std::min(chunk, o.phones - first));
      ids[k].insert(ids[k].end(), got.begin(), got.end());
    }
    setup.nodes.push_back(std::move(t));
  }
  std::vector<user_ref> users(o.phones);
  for (phone_id p = 0; p < o.phones; ++p)
    users[p] = static_cast<user_ref>(ids[p % addrs.size()][p]);
  setup.dir = directory(std::move(users), static_cast<uint32_t>(addrs.size()));

  char tmpl[] = "/tmp/agner-loadgen-XXXXXX";
  if (!::mkdtemp(tmpl))
    throw std::runtime_error("cannot create a temporary directory");
  std::string tmp = tmpl;
  write_file(tmp + "/setup.bin", setup.serialize());

  config_schema s;
  run_options copy = o;
  copy.bind(s);
  std::vector<std::string> flags;
  for (auto& line : split(s.dump(), '\n')) {
    auto eq = line.find(" = ");
    if (eq != std::string::npos)
      flags.push_back(fmt::format("--{}={}", line.substr(0, eq), line.substr(eq + 3)));
  }
  sim_ns t0 = mono_ns();
  std::vector<worker_proc> ws;
  for (uint32_t w = 0; w < o.workers; ++w) {
    std::vector<std::string> args{"agner-loadgen-worker", "__worker", fmt::format("--worker.index={}", w),
                                  fmt::format("--worker.t0={}", t0), "--worker.setup=" + tmp + "/setup.bin",
                                  fmt::format("--worker.result={}/worker-{}.bin", tmp, w)};
    args.insert(args.end(), flags.begin(), flags.end());
    ws.push_back(spawn_worker(args));
    ws.back().result_path = fmt::format("{}/worker-{}.bin", tmp, w);
  }
  auto kill_all = [&] {
    for (auto& w : ws)
      if (w.pid > 0)
        ::kill(w.pid, SIGKILL);
  };
  progress_printer pp(o, hooks);
  uint64_t devices = 0;
  {
    population pop(o.population());
    for (phone_id p = 0; p < pop.phones(); ++p)
      devices += static_cast<uint64_t>(pop.devices_of(p));
  }
  const sim_ns load_end = static_cast<sim_ns>(o.duration_s * 1e9);
  const sim_ns end_limit = load_end + static_cast<sim_ns>((o.drain ? o.drain_timeout_s : 0) * 1e9) + 60 * ns_per_s;
  enum class phase { load, drain, stop } ph = phase::load;
  sim_ns drain_start = 0, stop_at = 0, next_print = ns_per_s, next_hook = 0;
  bool drained = false;
  for (;;) {
    std::vector<pollfd> fds;
    for (auto& w : ws)
      fds.push_back({w.done ? -1 : w.out, POLLIN, 0});
    ::poll(fds.data(), fds.size(), 50);
    for (size_t i = 0; i < ws.size(); ++i) {
      auto& w = ws[i];
      if (w.done || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      char buf[65536];
      ssize_t n = ::read(w.out, buf, sizeof buf);
      if (n <= 0) {
        w.done = true; // exited (or crashed: its result file tells)
        continue;
      }
      w.buf.append(buf, static_cast<size_t>(n));
      for (size_t nl; (nl = w.buf.find('\n')) != std::string::npos;) {
        auto line = w.buf.substr(0, nl);
        w.buf.erase(0, nl + 1);
        if (line.starts_with("P "))
          if (auto p = progress::parse(line))
            w.last = *p;
        if (line == "D")
          w.done = true;
      }
    }
    sim_ns n = mono_ns() - t0;
    progress total;
    bool all_drained = true;
    for (auto& w : ws) {
      total.add(w.last);
      all_drained = all_drained && w.last.drained;
      w.last.recent = {};
    }
    if (n >= next_print) {
      pp.show(n, ph == phase::load ? "load" : ph == phase::drain ? "drain" : "stop", total);
      next_print += ns_per_s;
    }
    if (ph != phase::stop && hooks.during_load && n >= next_hook) {
      hooks.during_load(load_view{n, total.ready, devices, [&ws](const std::string& cmd) {
                                    for (auto& w : ws)
                                      send_command(w, cmd + "\n");
                                  }});
      next_hook = n + 100 * ns_per_ms;
    }
    if (ph == phase::load && n >= load_end) {
      if (hooks.before_drain)
        hooks.before_drain();
      if (o.drain) {
        ph = phase::drain;
        drain_start = n;
        for (auto& w : ws)
          send_command(w, "drain\n");
      } else {
        ph = phase::stop;
        stop_at = n;
        for (auto& w : ws)
          send_command(w, "stop\n");
      }
    }
    if (ph == phase::drain && ((all_drained && n - drain_start > ns_per_s) ||
                               n - drain_start > static_cast<sim_ns>(o.drain_timeout_s * 1e9))) {
      drained = all_drained;
      ph = phase::stop;
      stop_at = n;
      for (auto& w : ws)
        send_command(w, "stop\n");
    }
    bool all_done = std::all_of(ws.begin(), ws.end(), [](auto& w) { return w.done; });
    if (ph == phase::stop && all_done)
      break;
    if (n > end_limit) {
      kill_all();
      break;
    }
  }
  pp.done();
  std::vector<worker_records> all;
  timeline tl;
  load_stats ls;
  uint64_t gen = 0;
  std::string failures;
  for (size_t i = 0; i < ws.size(); ++i) {
    auto& w = ws[i];
    int status = 0;
    ::waitpid(w.pid, &status, 0);
    if (w.in >= 0)
      ::close(w.in);
    ::close(w.out);
    try {
      auto r = worker_result::deserialize(read_file(w.result_path));
      all.push_back(std::move(r.records));
      tl.merge(r.tl);
      gen += r.generator_bytes;
    } catch (const std::exception& e) {
      failures += fmt::format("worker {} (exit status {}): {}; ", i, status, e.what());
    }
  }
  fs::remove_all(tmp);
  if (!failures.empty())
    throw std::runtime_error("a worker failed: " + failures);
  ls = finish_stats(tl, std::min(load_end, drain_start ? drain_start : stop_at));
  ls.generator_bytes = gen;
  ls.load_s = static_cast<double>(load_end) / 1e9;
  ls.drain_s = o.drain ? static_cast<double>(stop_at - drain_start) / 1e9 : 0;
  return conclude(o, all, std::move(tl), ls, drained);
}

} // namespace

// --- options ---------------------------------------------------------------------------------

void run_options::bind(config_schema& s) {
  s.add_choice("preset", &preset, "population preset", {"steady", "new_years_eve", "reconnect_storm"});
  s.add("phones", &phones, "simulated phones (accounts)", 1, 10'000'000);
  s.add("seed", &seed, "seed: the same seed replays the same schedule", 0, INT64_MAX);
  s.add("duration_s", &duration_s, "length of the load phase", 0, 7 * 24 * 3600);
  s.add("drain", &drain, "after the load, reconnect every device, resume and wait for quiet");
  s.add("drain_timeout_s", &drain_timeout_s, "give up draining after this long", 0, 24 * 3600);
  s.add("drain_quiet_s", &drain_quiet_s, "the drain ends after this long without a frame", 0, 3600);
  s.add_choice("transport", &transport, "ws: worker processes over WebSocket; inproc: embedded node; null: the generator's ceiling",
               {"ws", "inproc", "null"});
  s.add("workers", &workers, "ws: worker processes (plan ~9k connections each: one source address per worker)", 1, 200);
  s.add("nodes", &nodes, "ws: nodes as host:port, comma-separated");
  s.add("node_dirs", &node_dirs, "ws: each node's data directory (admin.token, secret.key), comma-separated");
  s.add("source_base", &source_base, "ws: worker w binds this IPv4 address + w (empty: any)");
  s.add("out_dir", &out_dir, "write report.json, summary.txt, timeline.csv and timeline.png here");
  s.add("user_prefix", &user_prefix, "users are named <prefix><phone>");
  s.add("strict", &strict, "duplicates, order violations and nonce conflicts also fail the run");
  s.add_choice("progress", &progress, "progress line", {"auto", "on", "off"});
  s.add("sends_per_online_minute", &sends_per_online_minute, "override: sends per online device per minute", -1, 1e6);
  s.add("online_mean_s", &online_mean_s, "override: mean online period", -1, 1e9);
  s.add("offline_mean_s", &offline_mean_s, "override: mean offline period", -1, 1e9);
  s.add("ramp_up_s", &ramp_up_s, "override: devices online at the start connect within this", -1, 1e6);
  s.add("multi_device_fraction", &multi_device_fraction, "override: share of phones with several devices", -1, 1);
  s.add("read_delay_median_s", &read_delay_median_s, "override: median delay from delivery to read", -1, 1e6);
  s.add("body_bytes", &body_bytes, "message body length", 24, 16 * 1024);
  s.add("heartbeat_ms", &heartbeat_ms, "ws: heartbeat idle sessions this often", 100, 600'000);
  s.add("inproc_dir", &inproc_dir, "inproc: the embedded node's data directory (default: a temporary one)");
  s.add("inproc_shards", &inproc_shards, "inproc: user and conversation shards of the embedded node", 1, 256);
}

population_options run_options::population() const {
  auto found = agner::loadgen::preset(preset, phones, static_cast<uint64_t>(seed));
  if (!found)
    throw std::runtime_error(fmt::format("unknown preset '{}'", preset));
  auto p = *found;
  if (sends_per_online_minute >= 0)
    p.sends_per_online_minute = sends_per_online_minute;
  if (online_mean_s > 0)
    p.online_mean_s = online_mean_s;
  if (offline_mean_s > 0)
    p.offline_mean_s = offline_mean_s;
  if (ramp_up_s >= 0)
    p.ramp_up_s = ramp_up_s;
  if (multi_device_fraction >= 0)
    p.multi_device_fraction = multi_device_fraction;
  if (read_delay_median_s > 0)
    p.read_delay_median_s = read_delay_median_s;
  return p;
}

std::string load_stats::to_json() const {
  return fmt::format(R"({{"load_s":{:.3f},"drain_s":{:.3f},"peak_ready":{},"sent_per_s":{:.1f},"delivered_per_s":{:.1f},)"
                     R"("errors":{},"resume_too_old":{},"unexpected_closes":{},"generator_bytes":{},"rss_before":{},"rss_peak":{}}})",
                     load_s, drain_s, peak_ready, sent_per_s, delivered_per_s, errors, resume_too_old, unexpected_closes,
                     generator_bytes, rss_before, rss_peak);
}

run_outcome run(const run_options& opts, const run_hooks& hooks) {
  run_options o = opts;
  if (o.user_prefix.empty())
    o.user_prefix = fmt::format("lg{:x}-", std::chrono::system_clock::now().time_since_epoch().count() / 1'000'000);
  auto r = o.transport == "inproc" ? run_inproc(o, hooks) : o.transport == "null" ? run_null(o, hooks) : run_ws(o, hooks);
  write_outputs(o, r);
  return r;
}

} // namespace agner::loadgen
