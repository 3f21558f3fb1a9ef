// The worker process of agner-loadgen (and agner-chaos): it runs its share of the phones over
// WebSocket, prints a progress line each second, obeys the parent's commands on stdin (drain,
// stop, fault injection) and hands its records back in a file.
#include "loadgen/run.hpp"
#include "loadgen/worker_wire.hpp"

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>

#include <algorithm>
#include <csignal>
#include <functional>
#include <memory>
#include <unistd.h>

namespace agner::loadgen {

namespace net = boost::asio;
using namespace std::chrono_literals;
using namespace wire;

namespace {

/// The source address of worker w: base + w in the last octet.
std::string source_of(const std::string& base, uint32_t w) {
  if (base.empty())
    return {};
  auto parts = split(base, '.');
  if (parts.size() != 4)
    throw std::runtime_error(fmt::format("source_base '{}' is not an IPv4 address", base));
  int last = std::atoi(parts[3].c_str()) + static_cast<int>(w);
  if (last > 254)
    throw std::runtime_error("too many workers for source_base: the last octet passes 254");
  return fmt::format("{}.{}.{}.{}", parts[0], parts[1], parts[2], last);
}

} // namespace

bool is_worker_invocation(int argc, char** argv) { return argc > 1 && std::string_view(argv[1]) == "__worker"; }

int worker_main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  run_options o;
  uint32_t index = 0;
  int64_t t0 = 0;
  std::string setup_path, result_path;
  config_schema s;
  o.bind(s);
  s.add("worker.index", &index, "this worker's index", 0, 1000);
  s.add("worker.t0", &t0, "CLOCK_MONOTONIC ns of the run's start", 0, INT64_MAX);
  s.add("worker.setup", &setup_path, "the setup file");
  s.add("worker.result", &result_path, "where to write the records");
  try {
    s.load(std::vector<std::string>(argv + 2, argv + argc), [](const std::string&) { return std::nullopt; }, {});
  } catch (const std::exception& e) {
    fmt::print(stderr, "agner-loadgen worker: {}\n", e.what());
    return 2;
  }
  auto setup = worker_setup::deserialize(read_file(setup_path));
  population pop(o.population());
  schedule sched(pop, index, o.workers);
  recorder rec;
  timeline tl;
  net::io_context io(1);
  auto now = [t0] { return mono_ns() - t0; };
  ws_transport_options to;
  to.source_address = source_of(o.source_base, index);
  ws_transport t(io, setup.nodes, to, now);
  driver_options dopt;
  dopt.body_bytes = o.body_bytes;
  dopt.heartbeat_ns = int64_t{o.heartbeat_ms} * ns_per_ms;
  driver d(pop, sched, rec, tl, setup.dir, t, index, o.workers, dopt);
  t.attach(d);
  const sim_ns quiet = static_cast<sim_ns>(o.drain_quiet_s * 1e9);
  uint64_t peak_bytes = 0;
  bool stopping = false;

  net::steady_timer tick(io);
  sim_ns next_report = ns_per_s;
  std::function<void()> on_tick = [&] {
    if (stopping)
      return;
    sim_ns n = now();
    d.step(n);
    if (n >= next_report) {
      auto line = progress_of(d, n, quiet).line();
      if (::write(STDOUT_FILENO, line.data(), line.size()) < 0) {
      }
      next_report = n + ns_per_s;
      peak_bytes = std::max<uint64_t>(peak_bytes, sched.state_bytes() + sched.pending_read_bytes() + d.memory_bytes() +
                                                      rec.memory_bytes());
    }
    sim_ns wake = std::clamp<sim_ns>(d.next_wake(), n + ns_per_ms, std::min(n + 100 * ns_per_ms, next_report));
    tick.expires_after(std::chrono::nanoseconds(wake - n));
    tick.async_wait([&](boost::system::error_code ec) {
      if (!ec)
        on_tick();
    });
  };
  auto finish = [&] {
    if (stopping)
      return;
    stopping = true;
    tick.cancel();
    d.close_all();
    // Give the closes a moment to go out, then hand over the records.
    auto t2 = std::make_shared<net::steady_timer>(io, 500ms);
    t2->async_wait([&, t2](boost::system::error_code) {
      worker_result r{rec.take(), std::move(tl), peak_bytes};
      write_file(result_path, r.serialize());
      if (::write(STDOUT_FILENO, "D\n", 2) < 0) {
      }
      io.stop();
    });
  };
  net::posix::stream_descriptor in(io, ::dup(STDIN_FILENO));
  net::streambuf cmd;
  std::function<void()> read_cmd = [&] {
    net::async_read_until(in, cmd, '\n', [&](boost::system::error_code ec, size_t) {
      if (ec)
        return finish(); // the parent is gone
      std::istream is(&cmd);
      std::string c;
      std::getline(is, c);
      std::istringstream words(c);
      std::string verb;
      double fraction = 0;
      int64_t ms = 0;
      words >> verb >> fraction >> ms;
      if (verb == "drain")
        d.start_drain(now());
      else if (verb == "stop")
        return finish();
      else if (verb == "slow")
        t.fault_slow_readers(fraction, std::chrono::milliseconds(ms));
      else if (verb == "midframe")
        t.fault_mid_frame(fraction);
      read_cmd();
    });
  };
  read_cmd();
  on_tick();
  io.run();
  return 0;
}

} // namespace agner::loadgen
