// Drives one timer wheel from one Asio io_context thread with a single steady_timer, so
// connection code on that thread arms intrusive timers instead of one steady_timer each.
#pragma once

#include <optional>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "runtime/timer/wheel.hpp"

namespace agner {

/// Sleeps the io_context's one steady_timer until the wheel's next deadline, then advances the
/// wheel to the current steady_clock time and sleeps again. Arming a timer earlier than the
/// current sleep wakes it early (through the wheel's wake-up hook).
///
/// Note: everything here runs on the single thread that runs `io`; the wheel and every timer
/// armed in it belong to that thread. Call `stop()` (on that thread) before destroying the driver
/// while `io` may still run handlers.
class asio_driver {
public:
  /// Drives `wheel`, whose clock must be std::chrono::steady_clock (what steady_timer waits on).
  asio_driver(boost::asio::io_context& io, timer_wheel& wheel);

  asio_driver(const asio_driver&) = delete;
  asio_driver& operator=(const asio_driver&) = delete;

  /// Stops driving and uninstalls the wheel's wake-up hook.
  ~asio_driver();

  /// Starts driving: from now on armed timers fire from `io`'s thread.
  void start();

  /// Stops driving; armed timers stay armed but no longer fire until `start()`.
  void stop();

  timer_wheel& wheel() noexcept { return wheel_; }

  /// Times the steady_timer expired and the wheel was advanced (for tests and metrics).
  uint64_t wakeups() const noexcept { return wakeups_; }

private:
  void schedule();
  void sleep_until(time_point at);
  void on_wait(boost::system::error_code ec);
  static void on_earlier(void* self, time_point deadline);

  timer_wheel& wheel_;
  boost::asio::steady_timer sleep_;
  std::optional<time_point> sleeping_until_;
  bool running_ = false;
  uint64_t wakeups_ = 0;
};

} // namespace agner
