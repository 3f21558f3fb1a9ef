// What the chat core sees of a connected device: a thread-safe way to push frames to it and to
// close it. The gateway's WebSocket session implements it; tests implement it with a vector.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace agner::chat {

class session_sink {
public:
  virtual ~session_sink() = default;
  /// Queues one server frame for the device. Any thread; cheap (posts to the connection's own
  /// I/O thread). Frames pushed from one thread arrive in the order pushed.
  virtual void push(std::string frame) = 0;
  /// Closes the connection with a WebSocket close code. Any thread.
  virtual void close(uint16_t code, std::string reason) = 0;
  /// A resume replay is sent in pages: the user's owner pushed one and has more. Call
  /// `ask_more` once (any thread) when ready for the next page. A connection calls it when its
  /// outbound queue has drained, so a long replay never overflows the queue's bound. The default
  /// asks at once: a sink without an outbound bound takes everything.
  virtual void replay_paused(std::function<void()> ask_more) { ask_more(); }
};

using sink_ptr = std::shared_ptr<session_sink>;

/// Where a request's answer goes: the session that asked, and the request's `ref`.
struct reply_to {
  sink_ptr sink;
  std::string ref;
};

} // namespace agner::chat
