// Edge cases of the timer wheel on virtual time: rounding, past deadlines, callbacks that arm,
// cancel or destroy timers, deadlines past the top level, large jumps, wrap-around, counters.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <thread>
#include <stdexcept>
#include <vector>

#include "runtime/metrics.hpp"
#include "runtime/timer/wheel.hpp"

using namespace std::chrono_literals;
using agner::duration;
using agner::time_point;
using agner::timer;
using agner::timer_wheel;

namespace {

const time_point t0 = time_point{} + 1h;

// A timer that records every firing (the wheel's tick at that moment) and can run an action.
struct probe {
  timer t{&probe::on_fire, this};
  std::vector<uint64_t> fired_at;
  timer_wheel* wheel = nullptr;
  std::function<void(probe&)> action;

  static void on_fire(timer&, void* self) {
    auto& p = *static_cast<probe*>(self);
    p.fired_at.push_back(p.wheel ? p.wheel->now_tick() : 0);
    if (p.action)
      p.action(p);
  }
};

} // namespace

TEST_CASE("a timer node with its callback hook fits in 64 bytes") {
  CHECK(sizeof(timer) <= 64);
}

TEST_CASE("a timer fires at its deadline tick and not a tick earlier") {
  timer_wheel w{1ms, t0};
  probe p;
  p.wheel = &w;
  w.arm(p.t, t0 + 10ms);
  CHECK(w.armed(p.t));
  CHECK(w.advance(t0 + 9ms) == 0);
  CHECK(p.fired_at.empty());
  CHECK(w.advance(t0 + 10ms) == 1);
  REQUIRE(p.fired_at.size() == 1);
  CHECK(p.fired_at[0] == 10);
  CHECK_FALSE(w.armed(p.t));
  CHECK(w.counters().late_max_ticks == 0);
}

TEST_CASE("a deadline between two ticks is rounded up so the timer never fires early") {
  timer_wheel w{1ms, t0};
  probe p;
  w.arm(p.t, t0 + 10ms + 1ns);
  CHECK(p.t.expiry_tick() == 11);
  CHECK(w.advance(t0 + 10ms + 999us) == 0);
  CHECK(w.advance(t0 + 11ms) == 1);
}

TEST_CASE("tick rounding matches exact division for every tick length, near the limits too") {
  // ticks_ceil/ticks_floor divide by a multiply with a reciprocal; check them against `/` and `%`.
  uint64_t s = 12345;
  auto next = [&s] {
    s += 0x9e3779b97f4a7c15ULL;
    uint64_t z = (s ^ (s >> 31)) * 0xbf58476d1ce4e5b9ULL;
    return z ^ (z >> 29);
  };
  const time_point start = time_point{} + 1h;
  for (int64_t tick : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{7}, int64_t{999'999}, int64_t{1'000'000},
                       int64_t{1'000'001}, int64_t{1} << 40, (int64_t{1} << 62) + 1}) {
    timer_wheel w{duration{tick}, start};
    auto u = static_cast<uint64_t>(tick);
    for (int i = 0; i < 20000; ++i) {
      // Offsets of every magnitude, plus exact multiples and their neighbours.
      uint64_t d = next() >> (next() % 64);
      if (i % 4 == 1)
        d = (d / u) * u;
      if (i % 4 == 2)
        d = (d / u) * u + u - 1;
      d &= (uint64_t{1} << 62) - 1; // stays inside time_point's range from this start
      auto t = start + duration{static_cast<int64_t>(d)};
      uint64_t floor = std::min(d / u, timer_wheel::tick_limit);
      uint64_t ceil = std::min(d / u + (d % u != 0), timer_wheel::tick_limit);
      REQUIRE(w.ticks_floor(t) == floor);
      REQUIRE(w.ticks_ceil(t) == ceil);
    }
  }
}

TEST_CASE("a deadline in the past fires at the next advance, never inside arm") {
  timer_wheel w{1ms, t0};
  w.advance(t0 + 100ms);
  probe p;
  w.arm(p.t, t0 + 5ms);
  CHECK(p.fired_at.empty());
  CHECK(w.next_deadline() == w.now());
  CHECK(w.advance(t0 + 100ms) == 1);
  CHECK(p.fired_at.size() == 1);
  // Its lateness is counted: it was due 95 ticks before it could fire.
  CHECK(w.counters().late_max_ticks == 95);
}

TEST_CASE("a deadline before the wheel's start fires at the first advance") {
  timer_wheel w{1ms, t0};
  probe p;
  w.arm(p.t, t0 - 1h);
  CHECK(w.advance(t0) == 1);
}

TEST_CASE("re-arming an armed timer moves it instead of adding a second one") {
  timer_wheel w{1ms, t0};
  probe p;
  w.arm(p.t, t0 + 5ms);
  w.arm(p.t, t0 + 50ms);
  CHECK(w.counters().live == 1);
  CHECK(w.counters().rearmed == 1);
  CHECK(w.advance(t0 + 49ms) == 0);
  CHECK(w.advance(t0 + 50ms) == 1);
  CHECK(p.fired_at.size() == 1);
}

TEST_CASE("a cancelled timer does not fire and cancelling twice is harmless") {
  timer_wheel w{1ms, t0};
  probe p;
  w.arm(p.t, t0 + 5ms);
  w.cancel(p.t);
  w.cancel(p.t);
  p.t.cancel();
  CHECK_FALSE(p.t.armed());
  CHECK(w.advance(t0 + 1s) == 0);
  CHECK(w.counters().cancelled == 1);
  CHECK(w.counters().live == 0);
}

TEST_CASE("a callback may re-arm its own timer, making it periodic") {
  timer_wheel w{1ms, t0};
  probe p;
  p.wheel = &w;
  p.action = [&](probe& self) {
    if (self.fired_at.size() < 5)
      w.arm(self.t, w.now() + 10ms);
  };
  w.arm(p.t, t0 + 10ms);
  // One big advance runs all five periods: re-arms inside the window fire in the same advance.
  CHECK(w.advance(t0 + 1s) == 5);
  CHECK(p.fired_at == std::vector<uint64_t>{10, 20, 30, 40, 50});
}

TEST_CASE("a callback re-arming its timer for the current tick fires it at the next advance, not in a loop") {
  timer_wheel w{1ms, t0};
  probe p;
  p.wheel = &w;
  p.action = [&](probe& self) { w.arm(self.t, w.now()); };
  w.arm(p.t, t0 + 1ms);
  CHECK(w.advance(t0 + 1ms) == 1);
  CHECK(p.t.armed());
  CHECK(w.advance(t0 + 1ms) == 1);
  CHECK(w.advance(t0 + 2ms) == 1);
  CHECK(p.fired_at.size() == 3);
}

TEST_CASE("a callback may cancel another timer due in the same tick") {
  timer_wheel w{1ms, t0};
  probe a, b;
  // Whichever fires first cancels the other, so exactly one of them fires.
  a.action = [&](probe&) { w.cancel(b.t); };
  b.action = [&](probe&) { w.cancel(a.t); };
  w.arm(a.t, t0 + 3ms);
  w.arm(b.t, t0 + 3ms);
  CHECK(w.advance(t0 + 3ms) == 1);
  CHECK(a.fired_at.size() + b.fired_at.size() == 1);
  CHECK(w.counters().live == 0);
  CHECK(w.counters().cancelled == 1);
}

TEST_CASE("a callback may cancel a later timer and arm a new one inside the same advance window") {
  timer_wheel w{1ms, t0};
  probe a, later, added;
  a.action = [&](probe&) {
    w.cancel(later.t);
    w.arm(added.t, t0 + 7ms);
  };
  w.arm(a.t, t0 + 2ms);
  w.arm(later.t, t0 + 6ms);
  CHECK(w.advance(t0 + 10ms) == 2);
  CHECK(later.fired_at.empty());
  CHECK(added.fired_at.size() == 1);
}

TEST_CASE("a callback may destroy its own timer and owner") {
  timer_wheel w{1ms, t0};
  auto owned = std::make_unique<probe>();
  auto* raw = owned.get();
  raw->action = [&](probe&) { owned.reset(); };
  probe other;
  w.arm(raw->t, t0 + 1ms);
  w.arm(other.t, t0 + 1ms);
  CHECK(w.advance(t0 + 1ms) == 2);
  CHECK(owned == nullptr);
  CHECK(other.fired_at.size() == 1);
}

TEST_CASE("destroying an armed timer cancels it") {
  timer_wheel w{1ms, t0};
  {
    probe p;
    w.arm(p.t, t0 + 5ms);
    CHECK(w.counters().live == 1);
  }
  CHECK(w.counters().live == 0);
  CHECK(w.advance(t0 + 1s) == 0);
  CHECK_FALSE(w.next_deadline().has_value());
}

TEST_CASE("destroying the wheel leaves its timers unarmed and safe to destroy") {
  probe p;
  {
    timer_wheel w{1ms, t0};
    w.arm(p.t, t0 + 5ms);
  }
  CHECK_FALSE(p.t.armed());
}

TEST_CASE("arming a timer in a second wheel takes it out of the first") {
  timer_wheel a{1ms, t0}, b{1ms, t0};
  probe p;
  a.arm(p.t, t0 + 5ms);
  b.arm(p.t, t0 + 5ms);
  CHECK(a.counters().live == 0);
  CHECK(b.armed(p.t));
  CHECK(a.advance(t0 + 1s) == 0);
  CHECK(b.advance(t0 + 1s) == 1);
}

TEST_CASE("timers beyond the top level fire on their tick") {
  // Two levels cover 4096 ticks; everything further goes through the overflow list.
  timer_wheel w{1ms, t0, 2};
  std::vector<std::unique_ptr<probe>> ps;
  std::vector<uint64_t> deadlines = {4095, 4096, 4097, 8191, 8192, 100'000, 1'000'003, 5'000'000};
  for (auto d : deadlines) {
    ps.push_back(std::make_unique<probe>());
    ps.back()->wheel = &w;
    w.arm(ps.back()->t, t0 + std::chrono::milliseconds(d));
  }
  // Small steps through the first few top-level blocks: exactly the near ones fire.
  for (uint64_t ms = 1; ms <= 10'000; ms += 7)
    w.advance(t0 + std::chrono::milliseconds(ms));
  for (size_t i = 0; i < deadlines.size(); ++i)
    CHECK(ps[i]->fired_at.size() == (deadlines[i] <= 9'997 ? 1u : 0u));
  // Then one jump past all of them: each still fires on its own tick, in order.
  w.advance(t0 + 6'000'000ms);
  for (size_t i = 0; i < deadlines.size(); ++i) {
    REQUIRE(ps[i]->fired_at.size() == 1);
    CHECK(ps[i]->fired_at[0] == deadlines[i]);
  }
  CHECK(w.counters().live == 0);
}

TEST_CASE("a deadline of time_point::max never fires and cancels cleanly") {
  timer_wheel w{1ns, t0};
  probe p;
  w.arm(p.t, time_point::max());
  CHECK(p.t.expiry_tick() == timer_wheel::tick_limit);
  CHECK(w.advance(t0 + 24h * 365 * 100) == 0);
  CHECK(p.t.armed());
  p.t.cancel();
  CHECK(w.counters().live == 0);
}

TEST_CASE("a jump of a year fires every timer due in it, in deadline order, without walking the ticks") {
  timer_wheel w{1ms, t0};
  constexpr int n = 10'000;
  std::vector<probe> ps(n);
  std::vector<uint64_t> order;
  for (int i = 0; i < n; ++i) {
    ps[i].wheel = &w;
    ps[i].action = [&](probe& self) { order.push_back(self.t.expiry_tick()); };
    // Spread over one second to 200 days.
    w.arm(ps[i].t, t0 + 1s + std::chrono::milliseconds(uint64_t(i) * 1'728'000));
  }
  auto began = std::chrono::steady_clock::now();
  CHECK(w.advance(t0 + 24h * 365) == n);
  // 3e10 ticks walked one by one would take far longer than this.
  CHECK(std::chrono::steady_clock::now() - began < 2s);
  CHECK(std::is_sorted(order.begin(), order.end()));
  for (auto& p : ps) {
    REQUIRE(p.fired_at.size() == 1);
    CHECK(p.fired_at[0] == p.t.expiry_tick());
  }
}

TEST_CASE("timers on both sides of every level boundary fire on their tick (wrap-around)") {
  timer_wheel w{1ms, t0, 4};
  // Around 64^k boundaries of each level, armed from just before the boundary.
  for (uint64_t boundary : {uint64_t{64}, uint64_t{4096}, uint64_t{262'144}, uint64_t{16'777'216}}) {
    w.advance(t0 + std::chrono::milliseconds(boundary - 2));
    probe before, at, after;
    for (probe* p : {&before, &at, &after})
      p->wheel = &w;
    w.arm(before.t, t0 + std::chrono::milliseconds(boundary - 1));
    w.arm(at.t, t0 + std::chrono::milliseconds(boundary));
    w.arm(after.t, t0 + std::chrono::milliseconds(boundary + 1));
    for (uint64_t k = boundary - 1; k <= boundary + 1; ++k)
      w.advance(t0 + std::chrono::milliseconds(k));
    CHECK(before.fired_at == std::vector<uint64_t>{boundary - 1});
    CHECK(at.fired_at == std::vector<uint64_t>{boundary});
    CHECK(after.fired_at == std::vector<uint64_t>{boundary + 1});
  }
}

TEST_CASE("time that goes backwards fires nothing new") {
  timer_wheel w{1ms, t0};
  probe p;
  w.advance(t0 + 100ms);
  w.arm(p.t, t0 + 101ms);
  CHECK(w.advance(t0 + 50ms) == 0);
  CHECK(w.now_tick() == 100);
  CHECK(w.advance(t0 + 101ms) == 1);
}

TEST_CASE("next_deadline is never later than the earliest deadline and empty when nothing is armed") {
  timer_wheel w{1ms, t0};
  CHECK_FALSE(w.next_deadline().has_value());
  probe near, far;
  w.arm(far.t, t0 + 10min);
  auto nd = w.next_deadline();
  REQUIRE(nd.has_value());
  CHECK(*nd <= t0 + 10min);
  CHECK(*nd > t0);
  w.arm(near.t, t0 + 3ms);
  CHECK(w.next_deadline() == t0 + 3ms);
  // Following next_deadline from wake-up to wake-up reaches the far timer exactly on its tick.
  while (auto at = w.next_deadline())
    w.advance(*at);
  CHECK(near.fired_at.size() == 1);
  CHECK(far.fired_at.size() == 1);
  CHECK(w.now() == t0 + 10min);
}

TEST_CASE("an arm earlier than the owner's announced wake-up calls the wake-up hook once") {
  timer_wheel w{1ms, t0};
  std::vector<time_point> wakes;
  w.set_wakeup([](void* v, time_point at) { static_cast<std::vector<time_point>*>(v)->push_back(at); }, &wakes);
  probe a, b, c;
  w.expect_advance(t0 + 100ms);
  w.arm(a.t, t0 + 200ms); // later: no wake-up needed
  w.arm(b.t, t0 + 50ms);  // earlier: wake up at 50 ms
  w.arm(c.t, t0 + 60ms);  // already waking at 50 ms
  CHECK(wakes == std::vector<time_point>{t0 + 50ms});
}

TEST_CASE("an exception from a callback leaves the wheel consistent and the rest fire next advance") {
  timer_wheel w{1ms, t0};
  std::vector<probe> ps(4);
  bool thrown = false;
  for (auto& p : ps) {
    p.action = [&](probe&) {
      if (!thrown) {
        thrown = true;
        throw std::runtime_error("boom");
      }
    };
    w.arm(p.t, t0 + 5ms);
  }
  CHECK_THROWS_AS(w.advance(t0 + 5ms), std::runtime_error);
  CHECK(w.advance(t0 + 5ms) == 3);
  int total = 0;
  for (auto& p : ps)
    total += static_cast<int>(p.fired_at.size());
  CHECK(total == 4);
  CHECK(w.counters().live == 0);
}

TEST_CASE("counters count live, armed, cancelled, fired and late ticks") {
  timer_wheel w{1ms, t0};
  probe a, b, c;
  w.arm(a.t, t0 + 1ms);
  w.arm(b.t, t0 + 2ms);
  w.arm(c.t, t0 + 3ms);
  w.arm(c.t, t0 + 4ms);
  w.cancel(b.t);
  CHECK(w.counters().live == 2);
  w.advance(t0 + 1ms);
  w.advance(t0 + 7ms); // c is due at tick 4, fires 3 ticks late
  auto& s = w.counters();
  CHECK(s.armed == 3);
  CHECK(s.rearmed == 1);
  CHECK(s.cancelled == 1);
  CHECK(s.fired == 2);
  CHECK(s.live == 0);
  CHECK(s.late_ticks[0] == 1);
  CHECK(s.late_ticks[3] == 1);
  CHECK(s.late_max_ticks == 3);
}

TEST_CASE("a wheel bound to a metrics registry publishes labeled series after each advance") {
  agner::metrics::registry reg;
  timer_wheel w{1ms, t0};
  w.bind_metrics(reg, R"(owner="io",thread="0")");
  probe a, b;
  w.arm(a.t, t0 + 1ms);
  w.arm(b.t, t0 + 9ms);
  w.advance(t0 + 2ms);
  auto text = reg.render();
  CHECK(text.find(R"(agner_timer_live{owner="io",thread="0"} 1)") != std::string::npos);
  CHECK(text.find(R"(agner_timer_fired_total{owner="io",thread="0"} 1)") != std::string::npos);
  CHECK(text.find(R"(agner_timer_armed_total{owner="io",thread="0"} 2)") != std::string::npos);
  CHECK(text.find("agner_timer_late_ticks") != std::string::npos);
}

// -- lazy re-arm and lazy cancel ------------------------------------------------------------------

TEST_CASE("a timer re-armed later only has its expiry moved and fires at the new deadline, not the old one") {
  timer_wheel w{1ms, t0};
  probe p;
  p.wheel = &w;
  w.arm(p.t, t0 + 10ms);
  w.arm(p.t, t0 + 500ms);
  CHECK(w.counters().lazy == 1);
  CHECK(w.counters().rearmed == 1);
  CHECK(w.counters().live == 1);
  // The node still sits in tick 10's slot: processing it must re-insert it, not fire it.
  CHECK(w.advance(t0 + 10ms) == 0);
  CHECK(w.armed(p.t));
  CHECK(w.advance(t0 + 499ms) == 0);
  CHECK(w.advance(t0 + 500ms) == 1);
  CHECK(p.fired_at == std::vector<uint64_t>{500});
  CHECK(w.counters().live == 0);
}

TEST_CASE("re-arming earlier after a lazy re-arm moves the timer so it fires on time") {
  timer_wheel w{1ms, t0};
  probe p, q;
  p.wheel = &w;
  q.wheel = &w;
  // 5000 ticks sits in the level-2 slot processed at tick 4096.
  w.arm(p.t, t0 + 5000ms);
  w.arm(p.t, t0 + 9000ms); // later: lazy, stays in the 4096 slot
  w.arm(p.t, t0 + 100ms);  // before that slot is processed: must move now
  w.arm(q.t, t0 + 5000ms);
  w.arm(q.t, t0 + 9000ms); // lazy
  w.arm(q.t, t0 + 4500ms); // earlier, but not before its slot (4096): lazy again
  CHECK(w.counters().lazy == 3);
  CHECK(w.advance(t0 + 99ms) == 0);
  CHECK(w.advance(t0 + 100ms) == 1);
  CHECK(w.advance(t0 + 4499ms) == 0);
  CHECK(w.advance(t0 + 20s) == 1);
  CHECK(p.fired_at == std::vector<uint64_t>{100});
  CHECK(q.fired_at == std::vector<uint64_t>{4500});
}

TEST_CASE("a cancelled timer is unarmed at once and can be armed again, earlier or later") {
  timer_wheel w{1ms, t0};
  probe later, earlier;
  later.wheel = &w;
  earlier.wheel = &w;
  w.arm(later.t, t0 + 5000ms);
  w.arm(earlier.t, t0 + 5000ms);
  later.t.cancel();
  w.cancel(earlier.t);
  CHECK_FALSE(later.t.armed());
  CHECK_FALSE(w.armed(earlier.t));
  CHECK(w.counters().live == 0);
  CHECK(w.counters().parked == 2);
  CHECK(w.counters().cancelled == 2);
  CHECK_FALSE(w.next_deadline().has_value()); // parked nodes need no wake-up
  w.cancel(later.t);                          // cancelling a parked timer again does nothing
  CHECK(w.counters().cancelled == 2);

  w.arm(later.t, t0 + 6000ms);  // from its parked place: lazy
  w.arm(earlier.t, t0 + 100ms); // before its parked slot: moved
  CHECK(later.t.armed());
  CHECK(earlier.t.armed());
  CHECK(w.counters().live == 2);
  CHECK(w.counters().parked == 0);
  CHECK(w.counters().armed == 4);
  CHECK(w.advance(t0 + 1h) == 2);
  CHECK(earlier.fired_at == std::vector<uint64_t>{100});
  CHECK(later.fired_at == std::vector<uint64_t>{6000});
}

TEST_CASE("parked timers are dropped, not fired, when their slot is processed") {
  timer_wheel w{1ms, t0};
  std::vector<probe> ps(100);
  for (size_t i = 0; i < ps.size(); ++i)
    w.arm(ps[i].t, t0 + std::chrono::milliseconds(4100 + 10 * i));
  for (size_t i = 0; i < ps.size(); i += 2)
    w.cancel(ps[i].t);
  CHECK(w.counters().parked == 50);
  CHECK(w.counters().live == 50);
  CHECK(w.advance(t0 + 1h) == 50);
  CHECK(w.counters().parked == 0);
  for (size_t i = 0; i < ps.size(); ++i) {
    CHECK(ps[i].fired_at.size() == (i % 2 ? 1u : 0u));
    CHECK_FALSE(ps[i].t.armed());
  }
}

TEST_CASE("destroying a lazily cancelled timer unlinks it from the wheel") {
  timer_wheel w{1ms, t0};
  probe before, after;
  w.arm(before.t, t0 + 5000ms);
  auto doomed = std::make_unique<probe>();
  w.arm(doomed->t, t0 + 5000ms);
  w.arm(after.t, t0 + 5000ms); // the doomed node has linked neighbours on both sides
  doomed->t.cancel();
  CHECK(w.counters().parked == 1);
  doomed.reset(); // must unlink now: the slot list may not keep a pointer into freed memory
  CHECK(w.counters().parked == 0);
  CHECK(w.counters().cancelled == 1);
  CHECK(w.advance(t0 + 1h) == 2);
  CHECK(before.fired_at.size() == 1);
  CHECK(after.fired_at.size() == 1);
}

TEST_CASE("unlink removes a cancelled timer at once, so its owner may die on another thread") {
  timer_wheel w{1ms, t0};
  probe before, after;
  w.arm(before.t, t0 + 5000ms);
  auto owner = std::make_unique<probe>();
  w.arm(owner->t, t0 + 5000ms);
  w.arm(after.t, t0 + 5000ms);
  owner->t.cancel();
  CHECK(w.counters().parked == 1);
  owner->t.unlink();
  CHECK(w.counters().parked == 0);
  CHECK_FALSE(owner->t.armed());
  // The wheel holds nothing of it now: freeing it from another thread touches no wheel state.
  std::thread([o = std::move(owner)]() mutable { o.reset(); }).join();
  CHECK(w.advance(t0 + 1h) == 2);
  CHECK(before.fired_at.size() == 1);
  CHECK(after.fired_at.size() == 1);
  probe armed;
  w.arm(armed.t, t0 + 2h);
  armed.t.unlink(); // an armed timer: cancelled and unlinked in one step
  CHECK(w.counters().live == 0);
  CHECK(w.advance(t0 + 3h) == 0);
  CHECK(armed.fired_at.empty());
}

TEST_CASE("a lazily re-armed timer cascades across levels and fires exactly on its tick") {
  timer_wheel w{1ms, t0, 4};
  probe p;
  p.wheel = &w;
  w.arm(p.t, t0 + 100ms);       // level 1, slot processed at tick 64
  w.arm(p.t, t0 + 300'000ms);   // level 3 by its expiry, left in the level-1 slot
  w.arm(p.t, t0 + 20'000'000ms); // past four levels (16'777'216 ticks): overflow by its expiry
  CHECK(w.counters().lazy == 2);
  // Walk the wake-ups the wheel asks for; each visit re-inserts the node further down.
  int wakeups = 0;
  while (auto at = w.next_deadline()) {
    CHECK(p.fired_at.empty());
    w.advance(*at);
    ++wakeups;
  }
  CHECK(p.fired_at == std::vector<uint64_t>{20'000'000});
  CHECK(wakeups >= 3);
  CHECK(w.counters().late_max_ticks == 0);
}

TEST_CASE("a callback may re-arm another lazily re-armed timer earlier, into the same advance") {
  timer_wheel w{1ms, t0};
  probe a, b;
  a.wheel = &w;
  b.wheel = &w;
  w.arm(b.t, t0 + 5000ms);
  w.arm(b.t, t0 + 7000ms); // lazy: in the 4096 slot
  a.action = [&](probe&) { w.arm(b.t, t0 + 20ms); };
  w.arm(a.t, t0 + 10ms);
  CHECK(w.advance(t0 + 30ms) == 2);
  CHECK(a.fired_at == std::vector<uint64_t>{10});
  CHECK(b.fired_at == std::vector<uint64_t>{20});
}

TEST_CASE("arming a lazily cancelled timer in a second wheel unlinks it from the first") {
  timer_wheel a{1ms, t0}, b{1ms, t0};
  probe p;
  a.arm(p.t, t0 + 5000ms);
  a.cancel(p.t);
  CHECK(a.counters().parked == 1);
  b.arm(p.t, t0 + 5000ms);
  CHECK(a.counters().parked == 0);
  CHECK(a.counters().cancelled == 1);
  CHECK(a.advance(t0 + 1h) == 0);
  CHECK(b.advance(t0 + 1h) == 1);
}
