// The WebSocket gateway: phones and browsers connect at /v1/ws, identify with a token, and talk
// the JSON protocol (docs/protocol.md). Every connection lives on one I/O thread for its whole
// life; its deadlines (handshake+identify, heartbeat, write stall) are intrusive timers in that
// thread's timer wheel, never one steady_timer per connection.
#pragma once

#include "chat/core.hpp"
#include "chat/token.hpp"
#include "runtime/http_server.hpp"
#include "runtime/node.hpp"

#include <boost/beast/_experimental/test/stream.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace agner::chat {

struct gateway_options {
  /// Announced in hello: the client sends a frame (a heartbeat if nothing else) at least this often.
  uint32_t heartbeat_ms = 30'000;
  /// A connection with no frame for heartbeat_ms x this factor is closed (4009): allows one lost
  /// heartbeat on a slow mobile network.
  double heartbeat_grace = 1.5;
  /// From TCP accept to `ready`: the WebSocket handshake plus identify (4006 after it).
  uint32_t identify_timeout_ms = 10'000;
  /// A write that makes no progress for this long means a stalled reader: close (4010).
  uint32_t write_stall_ms = 15'000;
  /// Queued outbound bytes per connection; above it the reader is too slow: close (4010). Its
  /// messages stay in its inbox and replay on resume.
  uint32_t outbound_bytes_max = 1 << 20;
  /// Sends per second per connection (token bucket rate) and the burst above it.
  double sends_per_sec = 100;
  double sends_burst = 200;
  /// Accept permessage-deflate from clients that offer it, without context takeover either way:
  /// one zlib codec per I/O thread, no compression state per connection.
  bool deflate = true;
  /// Accept identify tokens "dev:<name>" (users created on the fly). For trying things out only.
  bool dev_mode = false;
  /// Name of this node in hello frames.
  std::string node_name = "agner";
};

using proto::ws_path;
using proto::ws_subprotocol;

class gateway {
public:
  gateway(node& n, http_server& http, chat_core& core, const token_signer& tokens, gateway_options opts);
  ~gateway();
  gateway(const gateway&) = delete;
  gateway& operator=(const gateway&) = delete;

  /// Starts the per-thread timer wheels and takes WebSocket upgrades from `http`.
  void start();
  /// Closes every connection with 1001 (going away: resume elsewhere) and refuses new ones.
  /// Blocks until the I/O threads have run the closes.
  void drain();
  /// Connections currently open (all states).
  size_t connections() const noexcept;

  /// sizeof one TCP session object (without the shared_ptr control block, Asio's per-socket
  /// reactor state and the user's state in its shard): what an idle connection costs the gateway.
  static size_t session_object_bytes() noexcept;

  /// Tests: serves one connection over Beast's in-memory test stream (its executor picks the I/O
  /// thread); the client side performs the WebSocket handshake as over TCP.
  void accept_test_stream(boost::beast::test::stream&& s);

  struct io_shard;
  struct shared;

private:
  std::shared_ptr<shared> s_;
};

} // namespace agner::chat
