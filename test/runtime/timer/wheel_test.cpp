// Edge cases of the timer wheel on virtual time: rounding, past deadlines, callbacks that arm,
// cancel or destroy timers, deadlines past the top level, large jumps, wrap-around, counters.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
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
