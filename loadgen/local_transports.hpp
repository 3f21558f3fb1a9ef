// Transports without sockets, for one process:
//  - inproc_transport: phones attach to an embedded chat core through its own session interface
//    (attach/send/ack/detach with a session_sink per device): shards, timer wheels and the store
//    at full scale, a million phones in one process.
//  - null_transport: a perfect server in the driver's own thread (stores and delivers at once,
//    in order, exactly once). It measures the generator's own ceiling and checks the driver and
//    the accounting against a server that cannot lose anything.
// Both hand server frames to the driver from poll(), on the driver's thread, never from inside a
// driver call (the driver is not re-entrant).
#pragma once

#include "chat/session_sink.hpp"
#include "loadgen/driver.hpp"

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace agner::chat {
class chat_core;
}

namespace agner::loadgen {

/// Frames waiting for the driver's thread. Any thread may put; the driver's thread takes.
class frame_queue {
public:
  struct item {
    uint32_t slot;
    uint32_t session; ///< which session of the slot sent it (frames of an old one are dropped)
    bool closed;      ///< the server closed the session
    std::string frame;
  };
  void put(item it);
  /// Takes everything queued (swaps into `out`).
  void take(std::vector<item>& out);
  /// Waits until something is queued or `timeout` passes.
  void wait(std::chrono::nanoseconds timeout);

private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<item> items_;
  bool waiting_ = false;
};

/// The in-process transport over a chat_core.
class inproc_transport final : public transport {
public:
  inproc_transport(chat::chat_core& core, std::function<sim_ns()> now);
  ~inproc_transport() override;
  void attach(driver& d) { d_ = &d; }

  void open(uint32_t slot, uint32_t node, user_ref user, std::string_view device, std::optional<uint64_t> resume_from) override;
  void close(uint32_t slot) override;
  void send(uint32_t slot, user_ref to, std::string_view nonce, std::string_view body, std::string_view ref) override;
  void ack(uint32_t slot, uint64_t inbox_seq) override;
  void heartbeat(uint32_t) override {}

  /// Hands queued frames to the driver; returns how many.
  size_t poll();
  void wait(std::chrono::nanoseconds timeout) { q_.wait(timeout); }
  /// Bytes held by the sessions (sinks and their bookkeeping), for the memory figures.
  size_t memory_bytes() const noexcept;

  class sink;

private:
  struct session {
    std::shared_ptr<sink> s;
    user_ref user = 0;
    uint32_t id = 0;
  };
  chat::chat_core& core_;
  std::function<sim_ns()> now_;
  driver* d_ = nullptr;
  frame_queue q_;
  std::vector<session> sessions_; // by slot
  std::vector<frame_queue::item> batch_;
  uint32_t next_session_ = 1;
};

/// The perfect server in the driver's thread.
class null_transport final : public transport {
public:
  explicit null_transport(std::function<sim_ns()> now);
  void attach(driver& d) { d_ = &d; }

  void open(uint32_t slot, uint32_t node, user_ref user, std::string_view device, std::optional<uint64_t> resume_from) override;
  void close(uint32_t slot) override;
  void send(uint32_t slot, user_ref to, std::string_view nonce, std::string_view body, std::string_view ref) override;
  void ack(uint32_t slot, uint64_t inbox_seq) override;
  void heartbeat(uint32_t) override {}
  size_t poll();

private:
  struct user_state {
    std::vector<std::string> inbox; ///< deliver frames; inbox_seq = index + 1
    std::vector<uint32_t> slots;    ///< sessions ready
  };
  struct slot_state {
    user_ref user = 0;
    std::string device;
    uint64_t base = 0; ///< where the device first started in its user's inbox
    bool base_set = false;
    bool open = false;
    uint32_t session = 0; ///< frames of an earlier session are dropped
  };
  struct stored_msg {
    uint64_t conversation, seq, id;
  };
  std::function<sim_ns()> now_;
  driver* d_ = nullptr;
  std::unordered_map<user_ref, user_state> users_;
  std::vector<slot_state> slots_;
  std::unordered_map<uint64_t, uint64_t> conv_seq_;
  std::unordered_map<std::string, stored_msg> nonces_; // "from/nonce"
  std::deque<frame_queue::item> out_;
  uint64_t next_id_ = 1;
};

} // namespace agner::loadgen
