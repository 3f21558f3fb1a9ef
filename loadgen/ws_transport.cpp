#include "loadgen/ws_transport.hpp"

#include "chat/protocol.hpp"
#include "chat/websocket.hpp"
#include "runtime/hash.hpp"
#include "runtime/log.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/error.hpp>
#include <fmt/format.h>

#include <netinet/in.h>
#include <sys/socket.h>

namespace agner::loadgen {

namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;

namespace {
/// Tokens minted for the load are valid this long.
constexpr int64_t token_ttl_s = 7 * 24 * 3600;

std::string quoted(std::string_view s) {
  std::string out = "\"";
  log::append_json_escaped(out, s);
  out += '"';
  return out;
}
} // namespace

/// One device's WebSocket connection. Lives while an operation is pending on it. An idle one holds
/// a socket and a few empty strings: reads wait for readiness and then read into the transport's
/// scratch buffer, so no read buffer is kept per connection (what Beast's stream did cost ~10 KB).
class ws_transport::connection : public std::enable_shared_from_this<connection> {
public:
  connection(ws_transport& t, uint32_t slot) : t_(t), slot_(slot), sock_(t.io_) {}

  void start(const node_target& n, std::string identify) {
    identify_ = std::move(identify);
    beast::error_code ec;
    auto addr = net::ip::make_address(n.host, ec);
    if (ec)
      return fail();
    sock_.open(addr.is_v4() ? tcp::v4() : tcp::v6(), ec);
    if (!ec && !t_.o_.source_address.empty()) {
      sock_.set_option(tcp::socket::reuse_address(true), ec);
#ifdef IP_BIND_ADDRESS_NO_PORT
      // Choose the port at connect(), per destination, rather than at bind(), which needs a port
      // unused by any socket on the address: past ~14k connections per address that search made
      // each connect slower. Best effort: without it bind() still works.
      int on = 1;
      ::setsockopt(sock_.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &on, sizeof on);
#endif
      sock_.bind(tcp::endpoint(net::ip::make_address(t_.o_.source_address), 0), ec);
    }
    if (ec)
      return fail();
    // The TCP connect and the upgrade together must finish within the handshake timeout.
    arm_deadline();
    sock_.async_connect(tcp::endpoint(addr, n.port), [self = shared_from_this(), host = fmt::format("{}:{}", n.host, n.port)](
                                                         beast::error_code ec) { self->on_connect(ec, host); });
  }

  void write(std::string_view text, chat::ws::opcode op = chat::ws::opcode::text) {
    if (done_ || closing_)
      return;
    chat::ws::append_client_frame(out_, op, text, t_.next_mask());
    if (!writing_ && open_)
      do_write();
  }

  /// Stops reading for `pause`, then reads on.
  void stall(std::chrono::milliseconds pause) {
    if (done_ || !open_ || stalled_)
      return;
    stalled_ = true;
    auto t = std::make_shared<net::steady_timer>(t_.io_, pause);
    t->async_wait([self = shared_from_this(), t](beast::error_code) {
      self->stalled_ = false;
      if (self->read_wanted_ && !self->done_) {
        self->read_wanted_ = false;
        self->do_read();
      }
    });
  }

  /// Writes the first half of a masked text frame straight to the socket, then drops it.
  void cut_mid_frame() {
    if (done_ || !open_ || writing_)
      return;
    auto raw = std::make_shared<std::string>();
    chat::ws::append_client_frame(*raw, chat::ws::opcode::text, R"({"op":"heartbeat","ref":"cut-mid-frame"})", t_.next_mask());
    raw->resize(raw->size() - 20); // the header and the first half of the payload
    writing_ = true;
    net::async_write(sock_, net::buffer(*raw), [self = shared_from_this(), raw](beast::error_code, size_t) {
      self->writing_ = false;
      self->fail();
    });
  }

  /// The closing handshake: a close frame, then the server's close (or its end of the
  /// connection), within the handshake timeout.
  void close() {
    if (done_ || closing_)
      return;
    if (!open_) {
      closing_ = true;
      beast::error_code ec;
      sock_.close(ec); // mid-connect: the pending operation fails and finishes us
      return;
    }
    std::string payload{"\x03\xe8", 2}; // 1000, normal closure
    chat::ws::append_client_frame(out_, chat::ws::opcode::close, payload, t_.next_mask());
    closing_ = true;
    arm_deadline();
    if (!writing_)
      do_write();
  }

private:
  void arm_deadline() {
    deadline_ = std::make_shared<net::steady_timer>(t_.io_, t_.o_.handshake_timeout);
    deadline_->async_wait([self = shared_from_this(), d = deadline_](beast::error_code ec) {
      if (!ec && self->deadline_ == d)
        self->fail();
    });
  }

  void disarm_deadline() {
    if (deadline_) {
      deadline_->cancel();
      deadline_.reset();
    }
  }

  void on_connect(beast::error_code ec, const std::string& host) {
    if (ec || closing_)
      return fail();
    sock_.set_option(tcp::no_delay(true), ec);
    sock_.non_blocking(true, ec);
    if (ec)
      return fail();
    // Frames the driver writes before the upgrade is answered wait in out_, behind the identify.
    sending_ = chat::ws::client_upgrade_request(host, chat::proto::ws_path, chat::proto::ws_subprotocol);
    writing_ = true;
    net::async_write(sock_, net::buffer(sending_), [self = shared_from_this()](beast::error_code ec, size_t) { self->on_write(ec); });
    do_read();
  }

  /// The upgrade's answer arrived whole in `partial_`: 101, or the connection ends.
  bool on_upgrade_answer() {
    auto end = partial_.find("\r\n\r\n");
    if (end == std::string::npos)
      return partial_.size() < 16 * 1024 || (fail(), false);
    if (chat::ws::response_status(partial_) != 101) {
      fail();
      return false;
    }
    partial_.erase(0, end + 4); // frames that came with the answer stay
    open_ = true;
    disarm_deadline();
    std::string frames;
    chat::ws::append_client_frame(frames, chat::ws::opcode::text, identify_, t_.next_mask());
    frames += out_;
    out_.swap(frames);
    std::string().swap(identify_);
    if (!writing_)
      do_write();
    return true;
  }

  void do_read() {
    if (done_)
      return;
    if (stalled_) {
      read_wanted_ = true;
      return;
    }
    sock_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) { self->on_readable(ec); });
  }

  void on_readable(beast::error_code ec) {
    if (done_)
      return;
    if (ec)
      return fail();
    auto& scratch = t_.scratch_;
    size_t n = sock_.read_some(net::buffer(scratch), ec);
    if (ec == net::error::would_block || ec == net::error::try_again)
      return do_read();
    if (ec)
      return fail(); // the node closed or the connection broke
    if (!open_) {
      partial_.append(scratch.data(), n);
      if (!on_upgrade_answer() || done_)
        return;
      if (!consume(partial_.data(), partial_.size(), true))
        return;
      return do_read();
    }
    if (!partial_.empty()) {
      partial_.append(scratch.data(), n);
      if (!consume(partial_.data(), partial_.size(), true))
        return;
    } else if (!consume(scratch.data(), n, false)) {
      return;
    }
    do_read();
  }

  /// Hands every whole frame in [data, data + n) to the driver and keeps the rest in `partial_`.
  /// False once the connection is over.
  bool consume(const char* data, size_t n, bool from_partial) {
    using chat::ws::opcode;
    size_t used = chat::ws::parse_server_frames(data, n, t_.o_.message_bytes_max, [&](const chat::ws::server_frame& f) {
      if (f.op == opcode::ping) {
        write(f.payload, opcode::pong);
      } else if (f.op == opcode::close) {
        fail(); // the node ends the connection (draining, a slow reader, a protocol error)
      } else if (f.op == opcode::text || f.op == opcode::binary || f.op == opcode::continuation) {
        if (f.fin && message_.empty() && f.op != opcode::continuation) {
          deliver(f.payload);
        } else {
          message_.append(f.payload);
          if (message_.size() > t_.o_.message_bytes_max)
            fail();
          else if (f.fin)
            deliver(std::exchange(message_, {}));
        }
      }
      return !done_;
    });
    if (used == chat::ws::bad_server_frame) {
      fail();
      return false;
    }
    if (done_)
      return false;
    if (from_partial)
      partial_.erase(0, used);
    else
      partial_.assign(data + used, n - used);
    if (partial_.empty() && partial_.capacity() > 64 * 1024)
      std::string().swap(partial_);
    return true;
  }

  void deliver(std::string_view text) {
    if (t_.d_)
      t_.d_->on_frame(slot_, text, t_.now_());
  }

  /// Everything queued goes out in one write; what is queued meanwhile goes in the next.
  void do_write() {
    writing_ = true;
    sending_.clear();
    sending_.swap(out_);
    net::async_write(sock_, net::buffer(sending_), [self = shared_from_this()](beast::error_code ec, size_t) { self->on_write(ec); });
  }

  void on_write(beast::error_code ec) {
    writing_ = false;
    if (ec)
      return fail();
    if (!out_.empty() && open_)
      return do_write();
    if (sending_.capacity() > 4096)
      std::string().swap(sending_);
  }

  /// The connection is over: drop the socket, tell the driver once.
  void fail() {
    if (done_)
      return;
    done_ = true;
    disarm_deadline();
    beast::error_code ec;
    sock_.close(ec);
    out_.clear();
    t_.finished(slot_, this);
  }

  ws_transport& t_;
  uint32_t slot_;
  tcp::socket sock_;
  std::shared_ptr<net::steady_timer> deadline_; ///< only while connecting or closing
  std::string out_;      ///< frames queued behind the write in flight
  std::string sending_;  ///< the write in flight
  std::string partial_;  ///< the upgrade answer, or a frame not yet whole
  std::string message_;  ///< a fragmented message being joined
  std::string identify_; ///< sent once the upgrade is answered
  bool open_ = false, writing_ = false, closing_ = false, done_ = false, stalled_ = false, read_wanted_ = false;
};

ws_transport::ws_transport(net::io_context& io, std::vector<node_target> nodes, ws_transport_options o,
                           std::function<sim_ns()> now)
    : io_(io), nodes_(std::move(nodes)), o_(std::move(o)), now_(std::move(now)) {
  for (auto& n : nodes_)
    signers_.push_back(std::make_unique<chat::token_signer>(n.secret));
}

ws_transport::~ws_transport() = default;

void ws_transport::open(uint32_t slot, uint32_t node, user_ref user, std::string_view device,
                        std::optional<uint64_t> resume_from) {
  if (slot >= conns_.size())
    conns_.resize(slot + 1);
  auto unix_now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  auto identify = fmt::format(R"({{"op":"identify","ref":"i","token":"{}","device":{}{}}})",
                              signers_[node]->issue(user, unix_now + token_ttl_s), quoted(device),
                              resume_from ? fmt::format(R"(,"last_inbox_seq":"{}")", *resume_from) : std::string());
  auto c = std::make_shared<connection>(*this, slot);
  conns_[slot] = c;
  ++live_;
  c->start(nodes_[node], std::move(identify));
}

void ws_transport::finished(uint32_t slot, connection* c) {
  if (slot < conns_.size() && conns_[slot].get() == c) {
    --live_;
    auto keep = std::move(conns_[slot]); // the handler that called us holds another reference
    if (d_)
      d_->on_closed(slot, now_());
  }
}

void ws_transport::close(uint32_t slot) {
  if (slot < conns_.size() && conns_[slot])
    conns_[slot]->close();
}

void ws_transport::write(uint32_t slot, std::string frame) {
  if (slot < conns_.size() && conns_[slot])
    conns_[slot]->write(std::move(frame));
}

void ws_transport::send(uint32_t slot, user_ref to, std::string_view nonce, std::string_view body, std::string_view ref) {
  write(slot, fmt::format(R"({{"op":"send","ref":"{}","to":"{}","nonce":"{}","body":{}}})", ref, to, nonce, quoted(body)));
}

void ws_transport::ack(uint32_t slot, uint64_t inbox_seq) {
  write(slot, fmt::format(R"({{"op":"ack","inbox_seq":"{}"}})", inbox_seq));
}

void ws_transport::heartbeat(uint32_t slot) { write(slot, R"({"op":"heartbeat"})"); }

namespace {
/// Whether `slot` is among the `fraction` picked by fault number `round`.
bool picked(uint32_t slot, uint64_t round, double fraction) {
  return static_cast<double>(mix64(uint64_t{slot} << 32 ^ round) % 1'000'000) < fraction * 1e6;
}
} // namespace

void ws_transport::fault_slow_readers(double fraction, std::chrono::milliseconds pause) {
  ++fault_round_;
  for (uint32_t s = 0; s < conns_.size(); ++s)
    if (conns_[s] && picked(s, fault_round_, fraction))
      conns_[s]->stall(pause);
}

void ws_transport::fault_mid_frame(double fraction) {
  ++fault_round_;
  for (uint32_t s = 0; s < conns_.size(); ++s)
    if (conns_[s] && picked(s, fault_round_, fraction))
      conns_[s]->cut_mid_frame();
}

} // namespace agner::loadgen
