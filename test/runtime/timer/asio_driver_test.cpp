// The Asio driver on a real io_context and the real steady clock: short deadlines only, so the
// whole file runs in well under a second.
#include <doctest/doctest.h>

#include <chrono>
#include <optional>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "runtime/timer/asio_driver.hpp"

using namespace std::chrono_literals;
using agner::time_point;
using agner::timer;
using agner::timer_wheel;

namespace {

// The tick of the driven wheels: coarse enough for a loaded CI machine to keep up.
constexpr auto tick = 5ms;
// Scheduling slack allowed on top of one tick on a loaded, sanitized CI machine.
constexpr auto os_slack = 50ms;

struct stamp {
  timer t{&stamp::on_fire, this};
  std::optional<time_point> fired_at;
  static void on_fire(timer&, void* self) { static_cast<stamp*>(self)->fired_at = std::chrono::steady_clock::now(); }
};

} // namespace

TEST_CASE("the asio driver fires a timer no earlier than its deadline and within a tick plus scheduling slack") {
  boost::asio::io_context io;
  timer_wheel wheel{tick, std::chrono::steady_clock::now()};
  agner::asio_driver driver{io, wheel};
  driver.start();
  stamp s;
  auto deadline = std::chrono::steady_clock::now() + 30ms;
  wheel.arm(s.t, deadline);
  io.run_for(200ms);
  REQUIRE(s.fired_at.has_value());
  CHECK(*s.fired_at >= deadline);
  CHECK(*s.fired_at - deadline < tick + os_slack);
  CHECK(wheel.counters().late_max_ticks <= 1);
}

TEST_CASE("a timer cancelled through the asio driver's wheel never fires") {
  boost::asio::io_context io;
  timer_wheel wheel{tick, std::chrono::steady_clock::now()};
  agner::asio_driver driver{io, wheel};
  driver.start();
  stamp cancelled, kept;
  wheel.arm(cancelled.t, std::chrono::steady_clock::now() + 20ms);
  wheel.arm(kept.t, std::chrono::steady_clock::now() + 40ms);
  boost::asio::steady_timer canceller{io, 10ms};
  canceller.async_wait([&](boost::system::error_code) { wheel.cancel(cancelled.t); });
  io.run_for(150ms);
  CHECK_FALSE(cancelled.fired_at.has_value());
  CHECK(kept.fired_at.has_value());
}

TEST_CASE("arming a timer earlier than the driver's current sleep wakes it early") {
  boost::asio::io_context io;
  timer_wheel wheel{tick, std::chrono::steady_clock::now()};
  agner::asio_driver driver{io, wheel};
  driver.start();
  stamp far, near;
  wheel.arm(far.t, std::chrono::steady_clock::now() + 10s); // the driver now sleeps ~10 s
  std::optional<time_point> near_deadline;
  boost::asio::post(io, [&] {
    near_deadline = std::chrono::steady_clock::now() + 20ms;
    wheel.arm(near.t, *near_deadline);
  });
  io.run_for(150ms);
  REQUIRE(near.fired_at.has_value());
  CHECK(*near.fired_at >= *near_deadline);
  CHECK(*near.fired_at - *near_deadline < tick + os_slack);
  CHECK_FALSE(far.fired_at.has_value());
}

TEST_CASE("a stopped asio driver fires nothing until it is started again") {
  boost::asio::io_context io;
  timer_wheel wheel{tick, std::chrono::steady_clock::now()};
  agner::asio_driver driver{io, wheel};
  driver.start();
  stamp s;
  wheel.arm(s.t, std::chrono::steady_clock::now() + 10ms);
  driver.stop();
  io.run_for(50ms);
  CHECK_FALSE(s.fired_at.has_value());
  io.restart();
  driver.start(); // catches up at once: the deadline has passed
  io.run_for(20ms);
  CHECK(s.fired_at.has_value());
}
