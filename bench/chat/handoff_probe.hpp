// What this box charges for handing work to another thread, measured under whatever load runs
// beside it. A sender thread writes an eventfd once per period; a receiver blocked in read()
// records the delay from the write to its return. A chat message is handed between threads
// several times (client -> I/O thread -> store writer -> I/O thread -> client, plus a hop between
// I/O threads when the shard lives on the other one); an echo twice. So the hand-off's tail under
// load is a floor under any server's latency tail on the same box. Used by one translation unit.
#pragma once

#include "runtime/metrics.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <sys/eventfd.h>
#include <thread>
#include <unistd.h>

namespace agner::bench {

class handoff_probe {
public:
  /// Starts both threads; one hand-off per `period` (1 ms: ~1,000 wake-ups/s, a few percent of a
  /// core here, next to the hundreds of thousands the benchmark itself causes).
  explicit handoff_probe(metrics::histogram& into, std::chrono::microseconds period = std::chrono::milliseconds(1))
      : into_(into), period_(period), fd_(::eventfd(0, 0)) {
    if (fd_ < 0)
      throw std::runtime_error("eventfd failed");
    receiver_ = std::thread([this] { receive(); });
    sender_ = std::thread([this] { send(); });
  }
  ~handoff_probe() {
    stop_.store(true);
    sender_.join();
    uint64_t one = 1;
    sent_ns_.store(0);
    [[maybe_unused]] auto n = ::write(fd_, &one, sizeof one); // the receiver's last wake-up
    receiver_.join();
    ::close(fd_);
  }
  handoff_probe(const handoff_probe&) = delete;
  handoff_probe& operator=(const handoff_probe&) = delete;

private:
  static uint64_t now_ns() {
    return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
  }

  void send() {
    uint64_t sent = 0;
    while (!stop_.load()) {
      std::this_thread::sleep_for(period_);
      // One hand-off at a time: the next write only after the receiver took this one (a write
      // into an unread eventfd would merge with it).
      if (taken_.load(std::memory_order_acquire) < sent)
        continue;
      sent_ns_.store(now_ns(), std::memory_order_release);
      uint64_t one = 1;
      if (::write(fd_, &one, sizeof one) == sizeof one)
        ++sent;
    }
  }

  void receive() {
    for (;;) {
      uint64_t v = 0;
      if (::read(fd_, &v, sizeof v) != sizeof v)
        return;
      uint64_t at = sent_ns_.load(std::memory_order_acquire);
      if (at == 0)
        return; // the destructor's wake-up
      into_.observe(now_ns() - at);
      taken_.fetch_add(1, std::memory_order_release);
    }
  }

  metrics::histogram& into_;
  std::chrono::microseconds period_;
  int fd_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> sent_ns_{1};
  std::atomic<uint64_t> taken_{0};
  std::thread sender_, receiver_;
};

} // namespace agner::bench
