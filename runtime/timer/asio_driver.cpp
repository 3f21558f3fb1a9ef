// The wheel's owner loop on an io_context: one outstanding async_wait at a time, re-aimed at the
// wheel's next deadline after each advance and whenever an arm needs an earlier wake-up.
#include "runtime/timer/asio_driver.hpp"

#include <chrono>

#include <boost/asio/error.hpp>

namespace agner {

asio_driver::asio_driver(boost::asio::io_context& io, timer_wheel& wheel) : wheel_(wheel), sleep_(io) {}

asio_driver::~asio_driver() { stop(); }

void asio_driver::start() {
  running_ = true;
  wheel_.set_wakeup(&asio_driver::on_earlier, this);
  // Catch up with anything due already, then sleep until the next deadline.
  wheel_.advance(std::chrono::steady_clock::now());
  schedule();
}

void asio_driver::stop() {
  running_ = false;
  wheel_.set_wakeup(nullptr, nullptr);
  wheel_.expect_advance(time_point{}); // owner no longer sleeps on a deadline: no more hooks
  sleeping_until_.reset();
  sleep_.cancel();
}

void asio_driver::schedule() {
  auto next = wheel_.next_deadline();
  wheel_.expect_advance(next);
  if (next)
    sleep_until(*next);
  else if (sleeping_until_) {
    sleeping_until_.reset();
    sleep_.cancel();
  }
}

void asio_driver::sleep_until(time_point at) {
  if (sleeping_until_ == at)
    return;
  sleeping_until_ = at;
  // expires_at cancels the previous wait; its handler sees operation_aborted and does nothing.
  sleep_.expires_at(at);
  sleep_.async_wait([this](boost::system::error_code ec) { on_wait(ec); });
}

void asio_driver::on_wait(boost::system::error_code ec) {
  // An aborted wait was replaced or stopped; `this` may be gone, so touch nothing.
  if (ec == boost::asio::error::operation_aborted)
    return;
  if (!running_)
    return;
  sleeping_until_.reset();
  ++wakeups_;
  wheel_.advance(std::chrono::steady_clock::now());
  schedule();
}

void asio_driver::on_earlier(void* self, time_point deadline) {
  auto& d = *static_cast<asio_driver*>(self);
  if (d.running_)
    d.sleep_until(deadline);
}

} // namespace agner
