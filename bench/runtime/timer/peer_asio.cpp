// Peer: one boost::asio::steady_timer per phone, the usual Asio idiom; plus the real-time
// lateness probe of the agner wheel under asio_driver (it needs an io_context too).
#include <chrono>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "bench/runtime/timer/peers.hpp"
#include "runtime/timer/asio_driver.hpp"

namespace agner::bench::timer {

namespace {

// Aborted wait handlers pile up in the io_context until it runs; draining every this many
// re-arms keeps that queue (and its memory) small, as a live server loop would.
constexpr size_t drain_every = 1024;

} // namespace

measured run_asio_per_timer(const workload& w) {
  measured m;
  rng r{42};
  for (int rep = 0; rep < w.repeats; ++rep) {
    boost::asio::io_context io;
    uint64_t fired = 0;
    auto handler = [&fired](boost::system::error_code ec) {
      if (!ec)
        ++fired;
    };
    size_t heap0 = heap_bytes();
    std::vector<boost::asio::steady_timer> timers;
    timers.reserve(w.timers);
    auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < w.timers; ++i) {
      timers.emplace_back(io, t0 + r.idle_delay());
      timers.back().async_wait(handler);
    }
    auto t1 = std::chrono::steady_clock::now();
    size_t heap1 = heap_bytes();
    for (size_t k = 0; k < w.rearms; ++k) {
      auto& t = timers[r.below(w.timers)];
      t.expires_at(t1 + r.idle_delay()); // cancels the pending wait
      t.async_wait(handler);
      if (k % drain_every == 0)
        io.poll();
    }
    io.poll();
    auto t2 = std::chrono::steady_clock::now();
    m.fill_ops_per_s.push_back(w.timers / std::chrono::duration<double>(t1 - t0).count());
    m.churn_ops_per_s.push_back(2.0 * w.rearms / std::chrono::duration<double>(t2 - t1).count());
    m.bytes_per_timer = static_cast<double>(heap1 - heap0) / w.timers;
    for (auto& t : timers)
      t.cancel();
    io.poll();
  }

  // Lateness: probe timers due in [1, 50] ms, on a fresh io_context.
  boost::asio::io_context io;
  std::vector<boost::asio::steady_timer> probes;
  std::vector<double> late_us;
  probes.reserve(w.probe_timers);
  auto now = std::chrono::steady_clock::now();
  for (size_t i = 0; i < w.probe_timers; ++i) {
    auto deadline = now + std::chrono::milliseconds(1 + r.below(probe_span_ms));
    probes.emplace_back(io, deadline);
    probes.back().async_wait([&late_us, deadline](boost::system::error_code) {
      late_us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - deadline).count());
    });
  }
  io.run();
  summarize_lateness(std::move(late_us), m);
  m.note = "bytes: malloc delta over the fill (steady_timer objects, wait ops, timer heap)";
  return m;
}

void probe_agner_asio(const workload& w, measured& m) {
  // The I/O-thread configuration: 1 ms tick, one steady_timer for the whole wheel.
  boost::asio::io_context io;
  agner::timer_wheel wheel{std::chrono::milliseconds(1), std::chrono::steady_clock::now()};
  agner::asio_driver driver{io, wheel};
  driver.start();
  struct probe {
    agner::timer t;
    time_point deadline;
    std::vector<double>* late_us;
  };
  std::vector<double> late_us;
  std::vector<probe> probes(w.probe_timers);
  rng r{7};
  auto now = std::chrono::steady_clock::now();
  for (auto& p : probes) {
    p.deadline = now + std::chrono::milliseconds(1 + r.below(probe_span_ms));
    p.late_us = &late_us;
    p.t.bind(
        [](agner::timer&, void* self) {
          auto& p = *static_cast<probe*>(self);
          p.late_us->push_back(
              std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - p.deadline).count());
        },
        &p);
    wheel.arm(p.t, p.deadline);
  }
  io.run_for(std::chrono::milliseconds(probe_span_ms + 200));
  driver.stop();
  summarize_lateness(std::move(late_us), m);
}

} // namespace agner::bench::timer
