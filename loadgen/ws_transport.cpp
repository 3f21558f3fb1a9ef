#include "loadgen/ws_transport.hpp"

#include "chat/protocol.hpp"
#include "runtime/hash.hpp"
#include "runtime/log.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket.hpp>
#include <fmt/format.h>

#include <deque>

#include <netinet/in.h>
#include <sys/socket.h>

namespace agner::loadgen {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
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

/// One device's WebSocket connection. Lives while an operation is pending on it.
class ws_transport::connection : public std::enable_shared_from_this<connection> {
public:
  connection(ws_transport& t, uint32_t slot) : t_(t), slot_(slot), ws_(t.io_) {}

  void start(const node_target& n, std::string identify) {
    identify_ = std::move(identify);
    host_ = fmt::format("{}:{}", n.host, n.port);
    beast::error_code ec;
    auto addr = net::ip::make_address(n.host, ec);
    if (ec)
      return fail();
    auto& sock = ws_.next_layer();
    sock.open(addr.is_v4() ? tcp::v4() : tcp::v6(), ec);
    if (!ec && !t_.o_.source_address.empty()) {
      sock.set_option(tcp::socket::reuse_address(true), ec);
#ifdef IP_BIND_ADDRESS_NO_PORT
      // Choose the port at connect(), per destination, rather than at bind(), which needs a port
      // unused by any socket on the address: past ~14k connections per address that search made
      // each connect slower. Best effort: without it bind() still works.
      int on = 1;
      ::setsockopt(sock.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &on, sizeof on);
#endif
      sock.bind(tcp::endpoint(net::ip::make_address(t_.o_.source_address), 0), ec);
    }
    if (ec)
      return fail();
    websocket::stream_base::timeout to{};
    to.handshake_timeout = t_.o_.handshake_timeout;
    to.idle_timeout = websocket::stream_base::none();
    to.keep_alive_pings = false;
    ws_.set_option(to);
    ws_.read_message_max(t_.o_.message_bytes_max);
    ws_.set_option(websocket::stream_base::decorator([](websocket::request_type& req) {
      req.set(beast::http::field::sec_websocket_protocol, chat::proto::ws_subprotocol);
    }));
    // The handshake timeout covers the WebSocket upgrade; bound the TCP connect with it too.
    sock.async_connect(tcp::endpoint(addr, n.port), [self = shared_from_this()](beast::error_code ec) { self->on_connect(ec); });
  }

  void write(std::string frame) {
    if (done_)
      return;
    queue_.push_back(std::move(frame));
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
    std::string payload = R"({"op":"heartbeat","ref":"cut-mid-frame"})";
    raw->push_back(static_cast<char>(0x81));                          // FIN, text
    raw->push_back(static_cast<char>(0x80 | payload.size()));         // masked, length < 126
    const char mask[4] = {0x11, 0x22, 0x33, 0x44};
    raw->append(mask, 4);
    for (size_t i = 0; i < payload.size() / 2; ++i)
      raw->push_back(static_cast<char>(payload[i] ^ mask[i % 4]));
    writing_ = true;
    net::async_write(ws_.next_layer(), net::buffer(*raw), [self = shared_from_this(), raw](beast::error_code, size_t) {
      self->writing_ = false;
      self->fail();
    });
  }

  void close() {
    if (done_ || closing_)
      return;
    closing_ = true;
    if (!open_) {
      beast::error_code ec;
      ws_.next_layer().close(ec); // mid-connect: the pending operation fails and finishes us
      return;
    }
    if (!writing_)
      send_close();
  }

private:
  void on_connect(beast::error_code ec) {
    if (ec || closing_)
      return fail();
    ws_.next_layer().set_option(tcp::no_delay(true), ec);
    ws_.async_handshake(host_, chat::proto::ws_path, [self = shared_from_this()](beast::error_code ec) { self->on_handshake(ec); });
  }

  void on_handshake(beast::error_code ec) {
    if (ec || closing_)
      return fail();
    open_ = true;
    ws_.text(true);
    queue_.push_front(std::move(identify_));
    do_write();
    do_read();
  }

  void do_read() {
    ws_.async_read(buf_, [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec)
      return fail();
    if (stalled_)
      read_wanted_ = true; // handle this message now, read the next after the stall
    auto data = buf_.cdata();
    if (t_.d_)
      t_.d_->on_frame(slot_, std::string_view(static_cast<const char*>(data.data()), data.size()), t_.now_());
    buf_.consume(buf_.size());
    if (buf_.capacity() > 64 * 1024)
      buf_.shrink_to_fit();
    if (!done_ && !stalled_)
      do_read();
  }

  void do_write() {
    writing_ = true;
    ws_.async_write(net::buffer(queue_.front()), [self = shared_from_this()](beast::error_code ec, size_t) { self->on_write(ec); });
  }

  void on_write(beast::error_code ec) {
    writing_ = false;
    if (ec)
      return fail();
    queue_.pop_front();
    if (closing_)
      return send_close();
    if (!queue_.empty())
      do_write();
  }

  void send_close() {
    writing_ = true;
    ws_.async_close(websocket::close_code::normal, [self = shared_from_this()](beast::error_code) {
      self->writing_ = false;
      self->fail();
    });
  }

  /// The connection is over: drop the socket, tell the driver once.
  void fail() {
    if (done_)
      return;
    done_ = true;
    beast::error_code ec;
    ws_.next_layer().close(ec);
    queue_.clear();
    t_.finished(slot_, this);
  }

  ws_transport& t_;
  uint32_t slot_;
  websocket::stream<tcp::socket> ws_;
  beast::flat_buffer buf_;
  std::deque<std::string> queue_;
  std::string identify_;
  std::string host_;
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
