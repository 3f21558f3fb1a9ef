// Peer: CAF 0.17's actor clock, the way an actor schedules a delayed message per phone. CAF 0.17
// can only cancel request timeouts, by a linear scan of the actor's entries, so a shard would
// cancel lazily: re-arming schedules a new message and bumps a generation, and the stale
// message is ignored when it arrives. Here that cancel costs nothing, in CAF's favour.
#include <chrono>
#include <vector>

#include <caf/all.hpp>

#include "bench/runtime/timer/peers.hpp"

namespace agner::bench::timer {

namespace {

caf::mailbox_element_ptr idle_message(uint32_t phone, uint32_t gen) {
  return caf::make_mailbox_element(nullptr, caf::make_message_id(), {}, phone, gen);
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
    m.fill_ops_per_s.push_back(w.timers / std::chrono::duration<double>(t1 - t0).count());
    m.churn_ops_per_s.push_back(2.0 * w.rearms / std::chrono::duration<double>(t2 - t1).count());
    // cancel_all releases memory asynchronously on the clock's thread, so only the first fill
    // starts from a clean heap.
    if (rep == 0)
      m.bytes_per_timer = static_cast<double>(heap1 - heap0) / w.timers;
    clock.cancel_all();
  }

  m.note = "schedule_message + lazy cancel (generation); bytes: malloc delta over the fill";
  anon_send_exit(sink, caf::exit_reason::user_shutdown);
  return m;
}

} // namespace agner::bench::timer
