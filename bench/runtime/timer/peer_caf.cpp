// Peers: CAF 0.17's actor clock, two ways.
//
// 1. `run_caf_clock`: one shard actor schedules a delayed message per phone
//    (`schedule_message`, what `delayed_send` does). Such a message cannot be cancelled, so a
//    shard would cancel lazily: re-arming schedules a new message and bumps a generation, and
//    the stale message is ignored when it arrives. Here that cancel costs nothing, in CAF's
//    favour: the stale messages are never dispatched within the measurement. A second figure
//    charges that deferred work: the clock thread later pops each stale message and enqueues it,
//    and the shard actor dequeues and drops it; measured on messages all due at one instant.
// 2. `run_caf_actor_timeout`: the Erlang-style layout, one actor per phone whose idle timeout
//    is CAF's ordinary timeout (what an `after(...)` receive timeout uses):
//    `set_ordinary_timeout` on an actor that already has one of that type replaces it, so one
//    call is a real cancel plus arm, counted as 2 ops like agner's re-arm.
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include <caf/all.hpp>

#include "bench/runtime/timer/peers.hpp"

namespace agner::bench::timer {

namespace {

caf::mailbox_element_ptr idle_message(uint32_t phone, uint32_t gen) {
  return caf::make_mailbox_element(nullptr, caf::make_message_id(), {}, phone, gen);
}

// Stale messages per second the clock dispatches to a shard actor that drops them: n messages
// due at one instant, timed from that instant until the actor has seen the last one.
double stale_dispatch_rate(caf::actor_system& sys, size_t n) {
  auto seen = std::make_shared<std::atomic<size_t>>(0);
  auto sink = sys.spawn([seen]() -> caf::behavior {
    return {[seen](uint32_t, uint32_t) { seen->fetch_add(1, std::memory_order_relaxed); }};
  });
  auto sink_ptr = caf::actor_cast<caf::strong_actor_ptr>(sink);
  auto due = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  for (size_t i = 0; i < n; ++i)
    sys.clock().schedule_message(due, sink_ptr, idle_message(uint32_t(i), 0));
  std::this_thread::sleep_until(due);
  auto limit = due + std::chrono::seconds(60);
  while (seen->load(std::memory_order_relaxed) < n && std::chrono::steady_clock::now() < limit)
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  auto done = std::chrono::steady_clock::now();
  anon_send_exit(sink, caf::exit_reason::user_shutdown);
  if (seen->load() < n)
    return 0;
  return double(n) / std::chrono::duration<double>(done - due).count();
}

} // namespace

measured run_caf_clock(const workload& w) {
  measured m;
  rng r{42};
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto sink = sys.spawn([]() -> caf::behavior { return {[](uint32_t, uint32_t) {}}; });
  auto sink_ptr = caf::actor_cast<caf::strong_actor_ptr>(sink);
  auto& clock = sys.clock();
  // Lateness first, on an idle clock: delayed messages to a blocking actor, due in [1, 50] ms.
  caf::scoped_actor self{sys};
  auto self_ptr = caf::actor_cast<caf::strong_actor_ptr>(self);
  auto now = std::chrono::steady_clock::now();
  for (size_t i = 0; i < w.probe_timers; ++i) {
    auto deadline = now + std::chrono::milliseconds(1 + r.below(probe_span_ms));
    clock.schedule_message(deadline, self_ptr,
                           caf::make_mailbox_element(nullptr, caf::make_message_id(), {},
                                                     int64_t(deadline.time_since_epoch().count())));
  }
  std::vector<double> late_us;
  for (size_t i = 0; i < w.probe_timers; ++i)
    self->receive([&](int64_t deadline_ns) {
      auto deadline = std::chrono::steady_clock::time_point{std::chrono::nanoseconds(deadline_ns)};
      late_us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - deadline).count());
    });
  summarize_lateness(std::move(late_us), m);

  std::vector<uint32_t> gen(w.timers);
  for (int rep = 0; rep < w.repeats; ++rep) {
    size_t heap0 = heap_bytes();
    auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < w.timers; ++i)
      clock.schedule_message(t0 + r.idle_delay(), sink_ptr, idle_message(uint32_t(i), gen[i]));
    auto t1 = std::chrono::steady_clock::now();
    size_t heap1 = heap_bytes();
    for (size_t k = 0; k < w.rearms; ++k) {
      auto i = r.below(w.timers);
      ++gen[i]; // the lazy cancel
      clock.schedule_message(t1 + r.idle_delay(), sink_ptr, idle_message(uint32_t(i), gen[i]));
    }
    auto t2 = std::chrono::steady_clock::now();
    double churn = 2.0 * w.rearms / std::chrono::duration<double>(t2 - t1).count();
    m.fill_ops_per_s.push_back(w.timers / std::chrono::duration<double>(t1 - t0).count());
    m.churn_ops_per_s.push_back(churn);
    // cancel_all releases memory asynchronously on the clock's thread, so only the first fill
    // starts from a clean heap.
    if (rep == 0)
      m.bytes_per_timer = static_cast<double>(heap1 - heap0) / w.timers;
    clock.cancel_all();
    // Each re-arm (2 ops) leaves one stale message to dispatch and drop later.
    double dispatch = stale_dispatch_rate(sys, w.rearms);
    if (dispatch > 0)
      m.charged_churn_ops_per_s.push_back(2.0 / (2.0 / churn + 1.0 / dispatch));
  }

  m.note = "schedule_message + lazy cancel (generation); bytes: malloc delta over the fill";
  anon_send_exit(sink, caf::exit_reason::user_shutdown);
  return m;
}

measured run_caf_actor_timeout(const workload& w) {
  measured m;
  rng r{42};
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  // The phones: actors that ignore everything, including the timeout messages that do fire.
  std::vector<caf::actor> phones;
  phones.reserve(w.timers);
  for (size_t i = 0; i < w.timers; ++i)
    phones.push_back(sys.spawn([]() -> caf::behavior { return {[](uint32_t) {}}; }));
  std::vector<caf::abstract_actor*> raw(w.timers);
  for (size_t i = 0; i < w.timers; ++i)
    raw[i] = caf::actor_cast<caf::abstract_actor*>(phones[i]);
  auto& clock = sys.clock();
  const auto idle = caf::atom("idle");
  uint64_t id = 0;
  for (int rep = 0; rep < w.repeats; ++rep) {
    size_t heap0 = heap_bytes();
    auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < w.timers; ++i)
      clock.set_ordinary_timeout(t0 + r.idle_delay(), raw[i], idle, ++id);
    auto t1 = std::chrono::steady_clock::now();
    size_t heap1 = heap_bytes();
    for (size_t k = 0; k < w.rearms; ++k)
      clock.set_ordinary_timeout(t1 + r.idle_delay(), raw[r.below(w.timers)], idle, ++id);
    auto t2 = std::chrono::steady_clock::now();
    m.fill_ops_per_s.push_back(w.timers / std::chrono::duration<double>(t1 - t0).count());
    m.churn_ops_per_s.push_back(2.0 * w.rearms / std::chrono::duration<double>(t2 - t1).count());
    if (rep == 0)
      m.bytes_per_timer = static_cast<double>(heap1 - heap0) / w.timers;
    for (auto* a : raw)
      clock.cancel_ordinary_timeout(a, idle);
  }
  m.note = "set_ordinary_timeout per phone actor (replaces its pending one); bytes: malloc delta over the fill";
  for (auto& a : phones)
    anon_send_exit(a, caf::exit_reason::user_shutdown);
  return m;
}

} // namespace agner::bench::timer
