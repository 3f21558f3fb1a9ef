// The WebSocket transport: one client connection per online device (RFC 6455's client side from
// chat/websocket.hpp, on Asio sockets), all on one io_context thread (the worker's). Each connection binds a source address of the worker's own, so that
// several workers together hold more connections than one address has ephemeral ports.
#pragma once

#include "chat/token.hpp"
#include "loadgen/driver.hpp"

#include <boost/asio/io_context.hpp>

#include <array>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace agner::loadgen {

/// A node to connect to: its address and the secret its tokens are signed with.
struct node_target {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;
  std::string secret; ///< raw token secret (the node's secret.key)
};

struct ws_transport_options {
  /// Local address every connection binds (empty: let the kernel choose).
  std::string source_address;
  /// TCP connect plus WebSocket handshake must finish within this.
  std::chrono::milliseconds handshake_timeout{5'000};
  /// Largest server message (a batch of frames): the node's outbound queue bound and then some.
  size_t message_bytes_max = 16 << 20;
};

class ws_transport final : public transport {
public:
  /// `now` gives simulated time for the driver callbacks.
  ws_transport(boost::asio::io_context& io, std::vector<node_target> nodes, ws_transport_options o,
               std::function<sim_ns()> now);
  ~ws_transport() override;

  /// The driver to report to; set before the first open().
  void attach(driver& d) { d_ = &d; }

  void open(uint32_t slot, uint32_t node, user_ref user, std::string_view device, std::optional<uint64_t> resume_from) override;
  void close(uint32_t slot) override;
  void send(uint32_t slot, user_ref to, std::string_view nonce, std::string_view body, std::string_view ref) override;
  void ack(uint32_t slot, uint64_t inbox_seq) override;
  void heartbeat(uint32_t slot) override;

  /// Connections currently open or opening.
  size_t connections() const noexcept { return live_; }

  // Client faults for agner-chaos. Each picks about `fraction` of the open connections.
  /// Slow readers: stop reading for `pause` (the node's outbound queue fills; it may close them
  /// as too slow, and their messages must come back through resume).
  void fault_slow_readers(double fraction, std::chrono::milliseconds pause);
  /// Half a frame, then the TCP connection drops (a phone losing its network mid-send).
  void fault_mid_frame(double fraction);

  class connection;

private:
  friend class connection;
  void write(uint32_t slot, std::string frame);
  void finished(uint32_t slot, connection* c);

  boost::asio::io_context& io_;
  std::vector<node_target> nodes_;
  std::vector<std::unique_ptr<chat::token_signer>> signers_;
  ws_transport_options o_;
  std::function<sim_ns()> now_;
  driver* d_ = nullptr;
  std::vector<std::shared_ptr<connection>> conns_; // by slot
  size_t live_ = 0;
  uint64_t fault_round_ = 0;
  std::array<char, 64 * 1024> scratch_; ///< every connection reads into it (one thread)
  uint32_t mask_state_ = 0x2545F491;
  uint32_t next_mask() noexcept { // xorshift32: masks need not be secret here, only present
    mask_state_ ^= mask_state_ << 13;
    mask_state_ ^= mask_state_ >> 17;
    mask_state_ ^= mask_state_ << 5;
    return mask_state_;
  }
};

} // namespace agner::loadgen
