// The terminal chat client: one WebSocket connection at a time on one io_context thread, a
// helper thread that turns stdin lines into posted events, and an outbox that survives
// reconnects so that every typed line is stored exactly once (same nonce on every retry).
#include "tools/ctl_chat.hpp"

#include "chat/ids.hpp"
#include "chat/protocol.hpp"
#include "tools/ctl_args.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <fmt/format.h>

#include <cctype>
#include <cstdio>
#include <ctime>
#include <deque>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <unistd.h>

namespace agner::ctl {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace json = boost::json;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

namespace {

/// TCP connect plus the WebSocket handshake must finish within this.
constexpr auto connect_timeout = 5s;
/// Reconnect delays double from the first to the last, with +-25% jitter so that many clients
/// dropped by one node restart do not come back in lockstep.
constexpr auto backoff_first = 200ms;
constexpr auto backoff_max = 5s;
/// Until hello announces the node's heartbeat_ms, assume this one.
constexpr uint32_t heartbeat_ms_default = 10'000;
/// After end of input, typed lines not yet stored are retried this long before giving up.
constexpr auto eof_drain_timeout = 15s;
/// A rate_limited or unavailable send is retried after this pause.
constexpr auto send_retry_delay = 1s;
/// The graceful WebSocket close at exit may take this long before the socket is dropped.
constexpr auto close_timeout = 1s;
/// Authentication failing this many times in a row is not transient (revoked secret, clock).
constexpr int auth_failures_max = 3;
/// One server message holds a batch of frames, at most what the gateway queues for a
/// connection (gateway.outbound_bytes_max, 1 MiB by default); leave room for larger settings.
constexpr size_t server_message_bytes_max = 16 << 20;
constexpr std::string_view identify_ref = "identify";

std::string field(const json::object& o, std::string_view key) {
  if (auto* f = o.if_contains(key); f && f->is_string())
    return std::string(f->get_string());
  return {};
}

std::optional<uint64_t> id_field(const json::object& o, std::string_view key) {
  auto* f = o.if_contains(key);
  if (!f)
    return std::nullopt;
  if (f->is_string())
    return chat::parse_id(f->get_string());
  if (f->is_uint64())
    return f->get_uint64();
  if (f->is_int64() && f->get_int64() >= 0)
    return static_cast<uint64_t>(f->get_int64());
  return std::nullopt;
}

/// Writes one line and flushes it: stdout is a pipe as often as a terminal (tests, scripts).
void say(std::FILE* f, std::string_view line) {
  std::fwrite(line.data(), 1, line.size(), f);
  std::fputc('\n', f);
  std::fflush(f);
}

void note(std::string_view line) { say(stderr, fmt::format("agner-ctl: {}", line)); }

/// Stdin lines, read on a helper thread (stdin may be a terminal, a pipe or a file; blocking
/// reads work for all three) and posted to the client's io_context. Once `closed`, nothing more
/// is posted, so the io_context may then be destroyed while the thread still blocks in a read.
struct line_feed {
  std::mutex mutex;
  bool closed = false;
  net::io_context* ioc = nullptr;
  std::function<void(std::optional<std::string>)> on_line;

  static void read_all(std::shared_ptr<line_feed> self) {
    std::string line;
    for (;;) {
      bool more = static_cast<bool>(std::getline(std::cin, line));
      std::lock_guard lock{self->mutex};
      if (self->closed)
        return;
      std::optional<std::string> item;
      if (more)
        item = line;
      net::post(*self->ioc, [fn = self->on_line, item = std::move(item)] { fn(item); });
      if (!more)
        return;
    }
  }
};

struct outgoing {
  std::string ref;
  std::string nonce;
  std::string body;
};

/// One WebSocket connection; a new one per reconnect. Handlers hold it by shared_ptr and
/// ignore their completion once the client moved on to a newer connection.
struct connection {
  explicit connection(net::io_context& ioc) : resolver(ioc), ws(ioc) {}
  tcp::resolver resolver;
  websocket::stream<beast::tcp_stream> ws;
  beast::flat_buffer in;
  std::deque<std::string> out;
  bool writing = false;
  bool open = false;  ///< the WebSocket handshake completed
};
using connection_ptr = std::shared_ptr<connection>;

class chat_session {
public:
  chat_session(const admin_client& admin, const chat_options& opts)
      : admin_(admin), opts_(opts), heartbeat_timer_(ioc_), reconnect_timer_(ioc_), retry_timer_(ioc_), eof_timer_(ioc_),
        close_timer_(ioc_), rng_(std::random_device{}()), pos_path_(position_path(opts.data_dir, opts.as, opts.device)) {
    nonce_prefix_ = fmt::format("{:x}-{:x}", static_cast<unsigned>(::getpid()), rng_());
  }

  int run() {
    try {
      resolve_users();
    } catch (const std::exception& e) {
      note(e.what());
      return exit_failure;
    }
    last_seen_ = load_position(pos_path_);
    auto feed = std::make_shared<line_feed>();
    feed->ioc = &ioc_;
    feed->on_line = [this](std::optional<std::string> l) { on_line(std::move(l)); };
    std::thread reader{line_feed::read_all, feed};
    connect();
    ioc_.run();
    drop();
    {
      std::lock_guard lock{feed->mutex};
      feed->closed = true;
    }
    // After end of input the reader has returned; otherwise it may block in a read forever,
    // and the process exits without it.
    if (eof_)
      reader.join();
    else
      reader.detach();
    return exit_code_;
  }

private:
  void resolve_users() {
    self_ = admin_.create_user(opts_.as);
    peer_ = admin_.create_user(opts_.to);
  }

  // --- connection life cycle

  void connect() {
    if (finishing_)
      return;
    try {
      token_ = admin_.issue_token(opts_.as).token;
    } catch (const admin_error& e) {
      if (e.code == "not_found") {
        // The node lost its users (a new data directory): start over with fresh ids.
        try {
          resolve_users();
          forget_position();
        } catch (const std::exception&) {
        }
      }
      return lost(fmt::format("cannot get a token: {}", e.what()));
    } catch (const std::exception& e) {
      return lost(e.what());
    }
    auto c = std::make_shared<connection>(ioc_);
    conn_ = c;
    identified_ = false;
    c->ws.read_message_max(server_message_bytes_max);
    beast::get_lowest_layer(c->ws).expires_after(connect_timeout);
    c->resolver.async_resolve(admin_.host(), std::to_string(admin_.port()), [this, c](beast::error_code ec, auto results) {
      if (c != conn_)
        return;
      if (ec)
        return lost(fmt::format("cannot resolve {}: {}", admin_.host(), ec.message()));
      beast::get_lowest_layer(c->ws).async_connect(results, [this, c](beast::error_code ec, auto) {
        if (c != conn_)
          return;
        if (ec)
          return lost(fmt::format("cannot connect to {}: {}", admin_.address(), reason_text(ec)));
        c->ws.set_option(websocket::stream_base::decorator([](websocket::request_type& req) {
          req.set(beast::http::field::user_agent, "agner-ctl");
          req.set(beast::http::field::sec_websocket_protocol, chat::proto::ws_subprotocol);
        }));
        c->ws.async_handshake(admin_.address(), "/v1/ws", [this, c](beast::error_code ec) { on_handshake(c, ec); });
      });
    });
  }

  void on_handshake(const connection_ptr& c, beast::error_code ec) {
    if (c != conn_)
      return;
    if (ec)
      return lost(fmt::format("WebSocket handshake with {} failed: {}", admin_.address(), reason_text(ec)));
    // From here on, liveness is ours to judge (heartbeats); the handshake deadline is done.
    beast::get_lowest_layer(c->ws).expires_never();
    c->open = true;
    c->ws.text(true);
    last_rx_ = std::chrono::steady_clock::now();
    heartbeat_ms_ = heartbeat_ms_default;
    arm_heartbeat();
    do_read(c);
  }

  void do_read(const connection_ptr& c) {
    c->ws.async_read(c->in, [this, c](beast::error_code ec, size_t) { on_read(c, ec); });
  }

  void on_read(const connection_ptr& c, beast::error_code ec) {
    if (c != conn_)
      return;
    if (ec) {
      auto r = c->ws.reason();
      if (ec == websocket::error::closed && r.code != websocket::close_code::none)
        return closed_by_node(r.code, std::string(r.reason.data(), r.reason.size()));
      return lost(fmt::format("connection lost: {}", reason_text(ec)));
    }
    last_rx_ = std::chrono::steady_clock::now();
    auto text = beast::buffers_to_string(c->in.data());
    c->in.consume(c->in.size());
    for (auto obj : split_frames(text))
      on_frame(obj);
    if (c != conn_)
      return; // a frame ended the connection
    flush_ack(); // while finishing, the ack is not sent but the position is still saved
    if (!finishing_)
      do_read(c);
  }

  void send_frame(const json::object& o) {
    auto c = conn_;
    if (!c || !c->open || finishing_)
      return;
    c->out.push_back(json::serialize(o));
    if (!c->writing)
      do_write(c);
  }

  void do_write(const connection_ptr& c) {
    c->writing = true;
    c->ws.async_write(net::buffer(c->out.front()), [this, c](beast::error_code ec, size_t) {
      if (c != conn_)
        return;
      c->writing = false;
      if (ec)
        return lost(fmt::format("connection lost: {}", reason_text(ec)));
      c->out.pop_front();
      if (!c->out.empty())
        do_write(c);
    });
  }

  /// Drops the current connection and, unless the client is finishing, schedules the next.
  void lost(const std::string& why) {
    drop();
    if (finishing_)
      return;
    auto delay = std::min<std::chrono::milliseconds>(backoff_max, backoff_first * (1 << std::min(failures_, 8)));
    ++failures_;
    std::uniform_int_distribution<int64_t> jitter(-delay.count() / 4, delay.count() / 4);
    delay += std::chrono::milliseconds(jitter(rng_));
    note(fmt::format("{}; reconnecting in {:.1f} s", why, delay.count() / 1000.0));
    reconnect_timer_.expires_after(delay);
    reconnect_timer_.async_wait([this](beast::error_code ec) {
      if (!ec)
        connect();
    });
  }

  void drop() {
    if (conn_) {
      beast::error_code ignored;
      beast::get_lowest_layer(conn_->ws).socket().close(ignored);
      conn_.reset();
    }
    heartbeat_timer_.cancel();
    identified_ = false;
    in_flight_ = false; // resent with the same nonce once identified again
  }

  void closed_by_node(uint16_t code, const std::string& reason) {
    auto what = fmt::format("the node closed the connection ({}{}{})", code, reason.empty() ? "" : ": ", reason);
    if (code == chat::proto::close_session_replaced) {
      drop();
      note(fmt::format("{}; another client uses device '{}' of {} (give each terminal its own --device)", what,
                       opts_.device, opts_.as));
      return finish(exit_failure);
    }
    if (code == chat::proto::close_auth_failed && ++auth_failures_ >= auth_failures_max) {
      drop();
      note(fmt::format("{}; authentication failed {} times in a row, giving up", what, auth_failures_));
      return finish(exit_failure);
    }
    lost(what);
  }

  void arm_heartbeat() {
    heartbeat_timer_.expires_after(std::chrono::milliseconds(heartbeat_ms_ / 2));
    heartbeat_timer_.async_wait([this, c = conn_](beast::error_code ec) {
      if (ec || c != conn_)
        return;
      // Our heartbeats are answered, so silence this long means the node or the path is gone.
      auto silent = std::chrono::steady_clock::now() - last_rx_;
      if (silent > std::chrono::milliseconds(heartbeat_ms_ + heartbeat_ms_ / 2))
        return lost(fmt::format("no frame from the node for {} ms", heartbeat_ms_ + heartbeat_ms_ / 2));
      // A request before identify would close the connection (4003): heartbeats wait for ready.
      if (identified_)
        send_frame({{"op", "heartbeat"}});
      arm_heartbeat();
    });
  }

  // --- server frames

  void on_frame(std::string_view text) {
    boost::system::error_code ec;
    auto v = json::parse(text, ec);
    if (ec || !v.is_object()) {
      note(fmt::format("unreadable frame from the node: {}", text.substr(0, 200)));
      return;
    }
    auto& o = v.as_object();
    auto op = field(o, "op");
    if (op == "deliver")
      on_deliver(o);
    else if (op == "stored")
      on_stored(o);
    else if (op == "heartbeat_ack")
      ;
    else if (op == "hello")
      on_hello(o);
    else if (op == "ready")
      on_ready(o);
    else if (op == "error")
      on_error(o);
    // Unknown ops are ignored: a newer node may send more than this client knows.
  }

  void on_hello(const json::object& o) {
    if (auto* h = o.if_contains("heartbeat_ms"); h && h->is_number()) {
      boost::system::error_code ec;
      auto ms = h->to_number<int64_t>(ec);
      if (!ec && ms >= 100)
        heartbeat_ms_ = static_cast<uint32_t>(std::min<int64_t>(ms, 3'600'000));
    }
    json::object id{{"op", "identify"}, {"ref", identify_ref}, {"token", token_}, {"device", opts_.device}};
    // Without a position this device resumes from the oldest entry the node still holds, so
    // a message sent before this terminal first connected is shown too.
    id["last_inbox_seq"] = chat::id_string(last_seen_.value_or(0));
    send_frame(id);
    heartbeat_timer_.cancel();
    arm_heartbeat();
  }

  void on_ready(const json::object& o) {
    identified_ = true;
    failures_ = auth_failures_ = 0;
    if (auto u = id_field(o, "user"))
      self_ = *u;
    if (!greeted_) {
      greeted_ = true;
      note(fmt::format("connected to {} as {} (user {}), chatting with {} (user {}); type a line and press Enter, "
                       "Ctrl-D to quit",
                       admin_.address(), opts_.as, self_, opts_.to, peer_));
    } else {
      note("reconnected");
    }
    retry_wait_ = false;
    retry_timer_.cancel();
    pump();
  }

  void on_deliver(const json::object& o) {
    auto seq = id_field(o, "inbox_seq");
    auto from = id_field(o, "from");
    if (!seq || !from) {
      note("a deliver frame without inbox_seq or from; ignored");
      return;
    }
    show(*seq, *from, o, field(o, "body"));
  }

  /// Prints inbox entry `seq` (a deliver, or this client's own line confirmed by `stored`) once.
  void show(uint64_t seq, uint64_t from, const json::object& o, std::string_view body) {
    if (last_seen_ && seq <= *last_seen_)
      return; // already shown (a resume overlapping what this client saw)
    auto msg_id = id_field(o, "id").value_or(0);
    auto when = msg_id ? chat::id_generator::time_ms(msg_id)
                       : static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                 std::chrono::system_clock::now().time_since_epoch())
                                                 .count());
    std::string who;
    auto conv = id_field(o, "conversation").value_or(0);
    if (from == self_) {
      who = "you";
      if (chat::is_direct(conv)) {
        auto [a, b] = chat::direct_members(conv);
        auto other = a == self_ ? b : a;
        if (other != peer_ && other != self_)
          who = fmt::format("you (to user {})", other);
      }
    } else if (from == peer_) {
      who = opts_.to;
    } else {
      who = fmt::format("user {}", from);
    }
    say(stdout, format_message(when, who, body));
    last_seen_ = seq;
    ack_pending_ = true;
  }

  /// One cumulative ack per server message, and the position saved with it.
  void flush_ack() {
    if (!ack_pending_ || !last_seen_)
      return;
    ack_pending_ = false;
    send_frame({{"op", "ack"}, {"inbox_seq", chat::id_string(*last_seen_)}});
    if (!save_position(pos_path_, *last_seen_) && !position_warned_) {
      position_warned_ = true;
      note(fmt::format("cannot write {}; a restarted client may show messages again", pos_path_));
    }
  }

  void forget_position() {
    last_seen_.reset();
    ::unlink(pos_path_.c_str());
  }

  void on_stored(const json::object& o) {
    if (outbox_.empty() || !in_flight_)
      return;
    if (field(o, "nonce") != outbox_.front().nonce && field(o, "ref") != outbox_.front().ref)
      return;
    // The sending session gets no deliver of its own line: `stored` carries its inbox_seq.
    if (auto seq = id_field(o, "inbox_seq"))
      show(*seq, self_, o, outbox_.front().body);
    outbox_.pop_front();
    in_flight_ = false;
    if (eof_ && outbox_.empty())
      return finish(exit_ok);
    pump();
  }

  void on_error(const json::object& o) {
    auto ref = field(o, "ref");
    auto code = field(o, "code");
    auto message = field(o, "message");
    note(fmt::format("the node says {}: {}", code.empty() ? "error" : code, message));
    if (ref == identify_ref) {
      if (code == "bad_request" && message.find("ahead of the inbox") != std::string::npos)
        forget_position(); // the node's inbox is not the one this position was saved for
      return;
    }
    if (!in_flight_ || outbox_.empty() || ref != outbox_.front().ref)
      return;
    in_flight_ = false;
    if (code == "rate_limited" || code == "unavailable") {
      retry_wait_ = true;
      retry_timer_.expires_after(send_retry_delay);
      retry_timer_.async_wait([this](beast::error_code ec) {
        if (ec)
          return;
        retry_wait_ = false;
        pump();
      });
      return;
    }
    // Anything else will fail again the same way: report the line and move on.
    note(fmt::format("not sent: {}", outbox_.front().body.substr(0, 80)));
    outbox_.pop_front();
    if (eof_ && outbox_.empty())
      return finish(exit_ok);
    pump();
  }

  // --- sending

  void on_line(std::optional<std::string> line) {
    if (finishing_)
      return;
    if (!line) {
      eof_ = true;
      if (outbox_.empty())
        return finish(exit_ok);
      eof_timer_.expires_after(eof_drain_timeout);
      eof_timer_.async_wait([this](beast::error_code ec) {
        if (ec)
          return;
        note(fmt::format("{} line(s) not confirmed stored by the node; giving up", outbox_.size()));
        finish(exit_failure);
      });
      return;
    }
    if (!line->empty() && line->back() == '\r')
      line->pop_back();
    if (line->empty())
      return;
    // The node closes a connection over a text frame that is not UTF-8 (1007): a retry would
    // fail the same way forever.
    if (!is_valid_utf8(*line)) {
      note("line not sent: it is not valid UTF-8");
      return;
    }
    if (line->size() > chat::proto::body_bytes_max) {
      note(fmt::format("line not sent: {} bytes, the most a message holds is {}", line->size(), chat::proto::body_bytes_max));
      return;
    }
    ++sent_;
    outbox_.push_back({fmt::format("s{}", sent_), fmt::format("{}-{}", nonce_prefix_, sent_), std::move(*line)});
    pump();
  }

  /// Sends the oldest unstored line, one at a time: lines are stored in the order typed even
  /// when one of them has to be retried.
  void pump() {
    if (!identified_ || in_flight_ || retry_wait_ || outbox_.empty())
      return;
    auto& m = outbox_.front();
    in_flight_ = true;
    send_frame({{"op", "send"}, {"ref", m.ref}, {"to", chat::id_string(peer_)}, {"nonce", m.nonce}, {"body", m.body}});
  }

  // --- the end

  void finish(int code) {
    if (finishing_)
      return;
    finishing_ = true;
    exit_code_ = code;
    heartbeat_timer_.cancel();
    reconnect_timer_.cancel();
    retry_timer_.cancel();
    eof_timer_.cancel();
    auto c = conn_;
    if (!c || !c->open) {
      drop();
      return ioc_.stop();
    }
    close_timer_.expires_after(close_timeout);
    close_timer_.async_wait([this](beast::error_code ec) {
      if (!ec)
        ioc_.stop();
    });
    c->ws.async_close(websocket::close_code::normal, [this, c](beast::error_code) { ioc_.stop(); });
  }

  static std::string reason_text(beast::error_code ec) {
    if (ec == beast::error::timeout)
      return "timed out";
    return ec.message();
  }

  const admin_client& admin_;
  chat_options opts_;
  net::io_context ioc_;
  net::steady_timer heartbeat_timer_, reconnect_timer_, retry_timer_, eof_timer_, close_timer_;
  std::minstd_rand rng_;
  std::string pos_path_;
  std::string nonce_prefix_;

  uint64_t self_ = 0;
  uint64_t peer_ = 0;
  std::string token_;
  connection_ptr conn_;
  bool identified_ = false;
  bool greeted_ = false;
  uint32_t heartbeat_ms_ = heartbeat_ms_default;
  std::chrono::steady_clock::time_point last_rx_{};
  int failures_ = 0;
  int auth_failures_ = 0;

  std::optional<uint64_t> last_seen_;  ///< the newest inbox_seq shown
  bool ack_pending_ = false;
  bool position_warned_ = false;

  std::deque<outgoing> outbox_;  ///< typed lines not yet stored, oldest first
  uint64_t sent_ = 0;
  bool in_flight_ = false;       ///< outbox_.front() was sent on this connection
  bool retry_wait_ = false;

  bool eof_ = false;
  bool finishing_ = false;
  int exit_code_ = exit_ok;
};

} // namespace

std::vector<std::string_view> split_frames(std::string_view frame) {
  std::vector<std::string_view> out;
  while (!frame.empty()) {
    auto nl = frame.find('\n');
    auto line = frame.substr(0, nl);
    if (!line.empty() && line.back() == '\r')
      line.remove_suffix(1);
    if (!line.empty())
      out.push_back(line);
    if (nl == std::string_view::npos)
      break;
    frame.remove_prefix(nl + 1);
  }
  return out;
}

bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size())
      return false;
    for (size_t k = 1; k <= n; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80)
        return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, UTF-16 surrogates and code points above U+10FFFF are not UTF-8.
    static constexpr uint32_t min_of[] = {0, 0x80, 0x800, 0x10000};
    if (cp < min_of[n] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
      return false;
    i += n + 1;
  }
  return true;
}

std::string position_path(const std::string& data_dir, std::string_view name, std::string_view device) {
  auto clean = [](std::string_view s) {
    std::string r(s);
    for (auto& c : r)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
        c = '_';
    return r;
  };
  return fmt::format("{}/ctl-{}-{}.pos", data_dir, clean(name), clean(device));
}

std::optional<uint64_t> load_position(const std::string& path) {
  std::ifstream in{path};
  std::string s;
  if (!in || !std::getline(in, s))
    return std::nullopt;
  return chat::parse_id(s);
}

bool save_position(const std::string& path, uint64_t inbox_seq) {
  auto tmp = path + ".tmp";
  {
    std::ofstream out{tmp, std::ios::trunc};
    if (!(out << inbox_seq << '\n') || !out.flush())
      return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

std::string format_message(uint64_t unix_ms, std::string_view who, std::string_view body) {
  std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  ::localtime_r(&t, &tm);
  return fmt::format("[{:02}:{:02}:{:02}] {}: {}", tm.tm_hour, tm.tm_min, tm.tm_sec, who, body);
}

int run_chat(const admin_client& admin, const chat_options& opts) {
  chat_session s{admin, opts};
  return s.run();
}

} // namespace agner::ctl
