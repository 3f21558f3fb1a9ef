// One WebSocket session per connection. Reading, writing and deadlines run on the connection's
// I/O thread; the chat core reaches a session only through session_sink (push, close), which
// posts to that thread.
#include "chat/gateway.hpp"

#include "chat/protocol.hpp"
#include "runtime/log.hpp"
#include "runtime/timer/asio_driver.hpp"
#include "runtime/timer/wheel.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/_experimental/test/stream.hpp>

#include <mutex>
#include <future>
#include <unordered_set>

namespace agner::chat {

namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

/// What drain() needs of a session whatever its transport.
class session_base {
public:
  virtual ~session_base() = default;
  /// On the session's I/O thread.
  virtual void do_close(uint16_t code, std::string_view reason) = 0;
};

/// What one I/O thread owns: its timer wheel and the sessions on it.
struct gateway::io_shard {
  explicit io_shard(net::io_context& io)
      : io(io), wheel(1ms, std::chrono::steady_clock::now()), driver(io, wheel) {}
  net::io_context& io;
  timer_wheel wheel;
  asio_driver driver;
  std::unordered_set<session_base*> sessions;
};

struct gateway::shared {
  shared(node& n, chat_core& c, const token_signer& t, gateway_options o)
      : nd(n), core(c), tokens(t), opts(std::move(o)),
        open(n.metrics().make_gauge("agner_ws_connections", "Open WebSocket connections")),
        identified(n.metrics().make_counter("agner_ws_identified_total", "Connections that identified")),
        closed(n.metrics().make_counter("agner_ws_closed_total", "Connections closed")),
        frames_in(n.metrics().make_counter("agner_ws_frames_in_total", "Client frames received")),
        frames_out(n.metrics().make_counter("agner_ws_frames_out_total", "Server frames sent")),
        writes(n.metrics().make_counter("agner_ws_writes_total", "WebSocket writes (each may carry several frames)")),
        bad_frames(n.metrics().make_counter("agner_ws_bad_frames_total", "Client frames answered with an error")),
        slow_closed(n.metrics().make_counter("agner_ws_slow_reader_closed_total", "Connections closed as too slow")),
        paused(n.metrics().make_counter("agner_ws_read_paused_total", "Reads postponed because an owner was overloaded")) {}
  node& nd;
  chat_core& core;
  const token_signer& tokens;
  gateway_options opts;
  std::vector<std::unique_ptr<io_shard>> shards;
  std::atomic<bool> draining{false};
  std::atomic<size_t> count{0};
  metrics::gauge& open;
  metrics::counter &identified, &closed, &frames_in, &frames_out, &writes, &bad_frames, &slow_closed, &paused;

  io_shard& shard_for(const net::any_io_executor& ex) {
    for (auto& s : shards)
      if (&net::query(ex, net::execution::context) == static_cast<net::execution_context*>(&s->io))
        return *s;
    return *shards.front();
  }
};

inline void close_transport(tcp::socket& s) {
  beast::error_code ec;
  s.close(ec);
}
inline void close_transport(beast::test::stream& s) { s.close(); }

/// One connection. `NextLayer` is a TCP socket in production and Beast's in-memory test stream
/// in the protocol tests.
template <class NextLayer>
class ws_session final : public session_base, public session_sink, public std::enable_shared_from_this<ws_session<NextLayer>> {
public:
  ws_session(std::shared_ptr<gateway::shared> g, gateway::io_shard& shard, NextLayer s)
      : g_(std::move(g)), shard_(shard), ws_(std::move(s)),
        tokens_(g_->opts.sends_burst), deadline_(timer::calls<&ws_session::on_deadline>(this)),
        write_stall_(timer::calls<&ws_session::on_write_stall>(this)),
        resume_read_(timer::calls<&ws_session::do_read>(this)) {}

  ~ws_session() override = default;

  void start(http_request req) {
    prepare();
    bool wants_proto = false;
    for (auto p : beast::http::token_list{req[beast::http::field::sec_websocket_protocol]})
      if (p == ws_subprotocol)
        wants_proto = true;
    ws_.set_option(websocket::stream_base::decorator([wants_proto](websocket::response_type& res) {
      res.set(beast::http::field::server, "agner");
      if (wants_proto)
        res.set(beast::http::field::sec_websocket_protocol, ws_subprotocol);
    }));
    req_ = std::make_unique<http_request>(std::move(req));
    ws_.async_accept(*req_, [self = this->shared_from_this()](beast::error_code ec) { self->on_accept(ec); });
  }

  /// Starts on a transport whose upgrade request has not been read yet (the tests' streams).
  void start_reading_request() {
    prepare();
    ws_.async_accept([self = this->shared_from_this()](beast::error_code ec) { self->on_accept(ec); });
  }

  // session_sink: any thread.
  void push(std::string frame) override {
    // Frames from the shards collect here; only the first of a burst posts to the I/O thread,
    // which then takes them all (one post per burst instead of one per frame).
    std::lock_guard lock(inbox_mu_);
    inbox_.push_back(std::move(frame));
    if (inbox_.size() == 1)
      net::post(ws_.get_executor(), [self = this->shared_from_this()] { self->take_inbox(); });
  }

  void take_inbox() {
    std::vector<std::string> frames;
    {
      std::lock_guard lock(inbox_mu_);
      frames.swap(inbox_);
    }
    for (auto& f : frames)
      enqueue(std::move(f));
  }
  void close(uint16_t code, std::string reason) override {
    net::post(ws_.get_executor(), [self = this->shared_from_this(), code, r = std::move(reason)] { self->do_close(code, r); });
  }

  /// On this session's I/O thread.
  void enqueue(std::string frame) {
    if (closing_ || finished_)
      return;
    if (out_.size() + frame.size() + 1 > g_->opts.outbound_bytes_max) {
      g_->slow_closed.inc();
      std::string().swap(out_); // it is in the inbox: the device gets it again when it resumes
      out_frames_ = 0;
      return do_close(proto::close_slow_reader, "outbound queue full; resume to continue");
    }
    if (!out_.empty())
      out_ += '\n';
    out_ += frame;
    ++out_frames_;
    if (!writing_ && accepted_)
      do_write();
  }

  /// Closes with a WebSocket close frame after the frames already queued (an error frame
  /// explaining the close, typically) have been written.
  void do_close(uint16_t code, std::string_view reason) override {
    if (closing_)
      return;
    closing_ = true;
    close_code_ = code;
    close_reason_ = std::string(reason.substr(0, 120));
    deadline_.cancel();
    resume_read_.cancel();
    if (!accepted_)
      return abort(); // mid-handshake: no WebSocket to close yet
    // Bound the whole goodbye: a peer that does not read gets its TCP connection dropped.
    arm(write_stall_, std::chrono::milliseconds(g_->opts.write_stall_ms));
    if (!writing_) {
      if (!out_.empty())
        do_write();
      else
        send_close();
    }
  }

private:
  /// Registers the session on its I/O thread and sets the stream's limits, the same for every
  /// transport.
  void prepare() {
    shard_.sessions.insert(this);
    g_->count.fetch_add(1);
    g_->open.add(1);
    arm(deadline_, std::chrono::milliseconds(g_->opts.identify_timeout_ms));
    ws_.read_message_max(proto::frame_bytes_max);
    ws_.auto_fragment(false);
    if (g_->opts.deflate) {
      websocket::permessage_deflate pmd;
      pmd.server_enable = true;
      pmd.server_max_window_bits = 11;
      pmd.memLevel = 4;
      pmd.compLevel = 1;
      ws_.set_option(pmd);
    }
  }

  void arm(timer& t, std::chrono::milliseconds after) {
    if (!finished_)
      shard_.wheel.arm(t, std::chrono::steady_clock::now() + after);
  }

  void send_close() {
    websocket::close_reason cr(static_cast<websocket::close_code>(close_code_), close_reason_);
    ws_.async_close(cr, [self = this->shared_from_this()](beast::error_code) { self->abort(); });
  }

  /// Drops the TCP connection, which ends every pending operation, and finishes the session.
  void abort() {
    closing_ = true;
    close_transport(ws_.next_layer());
    finish();
  }

  void on_accept(beast::error_code ec) {
    req_.reset();
    if (ec || closing_)
      return abort();
    accepted_ = true;
    ws_.text(true);
    enqueue(proto::encode_hello(g_->opts.heartbeat_ms, g_->opts.node_name));
    do_read();
  }

  void do_read() {
    if (closing_ || reading_)
      return;
    if (user_ && g_->core.overloaded(user_)) {
      // Backpressure: leave the bytes in the socket (TCP pushes back on the phone) and look again
      // shortly; nothing is dropped.
      g_->paused.inc();
      return arm(resume_read_, 5ms);
    }
    reading_ = true;
    ws_.async_read(rbuf_, [self = this->shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    reading_ = false;
    if (ec) {
      if (closing_)
        return;
      if (ec == websocket::error::message_too_big)
        return do_close(proto::close_too_big, "frame too big");
      if (ec == websocket::error::bad_frame_payload)
        return do_close(proto::close_invalid_utf8, "text frame is not valid UTF-8");
      return abort(); // the peer closed or the connection broke
    }
    if (closing_)
      return;
    g_->frames_in.inc();
    auto data = rbuf_.cdata();
    std::string_view text(static_cast<const char*>(data.data()), data.size());
    if (!ws_.got_text()) {
      rbuf_.consume(rbuf_.size());
      return do_close(proto::close_decode_error, "binary frames are not part of the protocol");
    }
    auto decoded = proto::decode(text);
    rbuf_.consume(rbuf_.size());
    if (user_)
      arm(deadline_, std::chrono::milliseconds(static_cast<int64_t>(g_->opts.heartbeat_ms * g_->opts.heartbeat_grace)));
    if (auto* err = std::get_if<proto::decode_error>(&decoded)) {
      g_->bad_frames.inc();
      enqueue(proto::encode_error(err->ref, err->code, err->message));
      if (err->code == proto::error_code::bad_json)
        return do_close(proto::close_decode_error, "frame is not a JSON object");
      return do_read();
    }
    auto& frame = std::get<proto::client_frame>(decoded);
    std::visit([&](auto& r) { handle(frame.ref, r); }, frame.req);
    do_read();
  }

  void handle(const std::string& ref, proto::identify& r) {
    if (user_)
      return reject(ref, proto::error_code::already_identified, proto::close_already_identified, "already identified");
    user_id u = 0;
    if (g_->opts.dev_mode && r.token.starts_with("dev:")) {
      try {
        u = g_->core.create_user(r.token.substr(4));
      } catch (const std::exception& e) {
        return reject(ref, proto::error_code::auth_failed, proto::close_auth_failed, e.what());
      }
    } else {
      auto now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
      auto v = g_->tokens.verify(r.token, now);
      if (auto* e = std::get_if<token_error>(&v))
        return reject(ref, proto::error_code::auth_failed, proto::close_auth_failed, fmt::format("token {}", to_string(*e)));
      u = std::get<user_id>(v);
    }
    user_ = u;
    device_ = r.device;
    g_->identified.inc();
    arm(deadline_, std::chrono::milliseconds(static_cast<int64_t>(g_->opts.heartbeat_ms * g_->opts.heartbeat_grace)));
    g_->core.attach(u, device_, r.last_inbox_seq, this->shared_from_this(), ref);
  }

  void handle(const std::string& ref, proto::heartbeat&) {
    if (!user_)
      return reject(ref, proto::error_code::not_identified, proto::close_not_identified, "identify first");
    enqueue(proto::encode_heartbeat_ack(ref));
  }

  void handle(const std::string& ref, proto::send& r) {
    if (!user_)
      return reject(ref, proto::error_code::not_identified, proto::close_not_identified, "identify first");
    if (!take_token()) {
      g_->bad_frames.inc();
      return enqueue(proto::encode_error(ref, proto::error_code::rate_limited, "too many sends; retry with the same nonce"));
    }
    g_->core.send(user_, r.to, std::move(r.nonce), std::move(r.body), this->shared_from_this(), ref);
  }

  void handle(const std::string& ref, proto::ack& r) {
    if (!user_)
      return reject(ref, proto::error_code::not_identified, proto::close_not_identified, "identify first");
    g_->core.ack(user_, device_, r.inbox_seq);
  }

  void handle(const std::string& ref, proto::history& r) {
    if (!user_)
      return reject(ref, proto::error_code::not_identified, proto::close_not_identified, "identify first");
    g_->core.history(user_, r, this->shared_from_this(), ref);
  }

  void reject(const std::string& ref, proto::error_code code, uint16_t close_code, std::string_view why) {
    g_->bad_frames.inc();
    enqueue(proto::encode_error(ref, code, why));
    do_close(close_code, why);
  }

  bool take_token() {
    auto now = std::chrono::steady_clock::now();
    double elapsed = std::chrono::duration<double>(now - last_refill_).count();
    last_refill_ = now;
    tokens_ = std::min(g_->opts.sends_burst, tokens_ + elapsed * g_->opts.sends_per_sec);
    if (tokens_ < 1)
      return false;
    tokens_ -= 1;
    return true;
  }

  void do_write() {
    // Everything queued goes out as one WebSocket message: frames separated by '\n' (see
    // docs/protocol.md), so a burst of deliveries costs one write and one syscall.
    wbuf_.clear();
    wbuf_.swap(out_);
    writing_ = true;
    g_->frames_out.inc(out_frames_);
    out_frames_ = 0;
    g_->writes.inc();
    arm(write_stall_, std::chrono::milliseconds(g_->opts.write_stall_ms));
    ws_.async_write(net::buffer(wbuf_), [self = this->shared_from_this()](beast::error_code ec, size_t) { self->on_write(ec); });
  }

  void on_write(beast::error_code ec) {
    writing_ = false;
    if (ec)
      return abort();
    if (!out_.empty())
      return do_write();
    if (closing_)
      return send_close(); // the write stall timer still bounds the goodbye
    write_stall_.cancel();
    if (wbuf_.capacity() > 64 * 1024)
      std::string().swap(wbuf_); // do not keep a burst's buffer on an idle connection
    else
      wbuf_.clear();
  }

  void on_deadline() {
    do_close(user_ ? proto::close_heartbeat_timeout : proto::close_identify_timeout,
             user_ ? "no frame within the heartbeat deadline" : "identify within the deadline");
  }

  void on_write_stall() {
    g_->slow_closed.inc();
    abort();
  }

  /// Runs once, on this thread, when the connection is over.
  void finish() {
    if (finished_)
      return;
    finished_ = true;
    // The last reference to this session may be dropped on a shard's thread: leave nothing in
    // this thread's wheel for the destructor to touch.
    deadline_.unlink();
    write_stall_.unlink();
    resume_read_.unlink();
    shard_.sessions.erase(this);
    g_->count.fetch_sub(1);
    g_->open.add(-1);
    g_->closed.inc();
    if (user_)
      g_->core.detach(user_, device_, this->shared_from_this());
  }

  std::shared_ptr<gateway::shared> g_;
  gateway::io_shard& shard_;
  websocket::stream<NextLayer> ws_;
  beast::flat_buffer rbuf_;
  std::unique_ptr<http_request> req_;
  std::mutex inbox_mu_;
  std::vector<std::string> inbox_; ///< pushed by other threads, taken by the I/O thread
  std::string out_;                ///< frames waiting for the next write, '\n'-separated
  size_t out_frames_ = 0;
  std::string wbuf_;
  user_id user_ = 0;
  std::string device_;
  double tokens_;
  std::chrono::steady_clock::time_point last_refill_ = std::chrono::steady_clock::now();
  timer deadline_;
  timer write_stall_;
  timer resume_read_;
  uint16_t close_code_ = 1000;
  std::string close_reason_;
  bool accepted_ = false, reading_ = false, writing_ = false, closing_ = false, finished_ = false;
};

gateway::gateway(node& n, http_server& http, chat_core& core, const token_signer& tokens, gateway_options opts)
    : s_(std::make_shared<shared>(n, core, tokens, std::move(opts))) {
  for (size_t i = 0; i < n.io_thread_count(); ++i)
    s_->shards.push_back(std::make_unique<io_shard>(n.io(i)));
  http.on_upgrade([s = s_](beast::tcp_stream&& stream, http_request&& req) {
    auto& shard = s->shard_for(stream.get_executor());
    auto target = std::string_view(req.target().data(), req.target().size());
    if (s->draining.load() || target.substr(0, target.find('?')) != ws_path) {
      beast::error_code ec;
      stream.socket().close(ec);
      return;
    }
    std::make_shared<ws_session<tcp::socket>>(s, shard, stream.release_socket())->start(std::move(req));
  });
}

gateway::~gateway() {
  // The wheels and drivers belong to the I/O threads; stop them there if those still run.
  for (auto& sh : s_->shards) {
    if (sh->io.stopped())
      continue;
    std::promise<void> done;
    net::post(sh->io, [&] {
      sh->driver.stop();
      done.set_value();
    });
    if (done.get_future().wait_for(2s) != std::future_status::ready)
      log::warn("gateway", "an I/O thread did not stop its timer driver in time");
  }
}

void gateway::start() {
  for (auto& sh : s_->shards) {
    std::promise<void> done;
    net::post(sh->io, [&] {
      sh->driver.start();
      done.set_value();
    });
    done.get_future().wait();
  }
}

void gateway::drain() {
  s_->draining.store(true);
  for (auto& sh : s_->shards) {
    std::promise<void> done;
    net::post(sh->io, [&] {
      // Copy: closing a session removes it from the set.
      std::vector<session_base*> all(sh->sessions.begin(), sh->sessions.end());
      for (auto* s : all)
        s->do_close(proto::close_going_away, "node stopping; resume elsewhere");
      done.set_value();
    });
    done.get_future().wait();
  }
}

size_t gateway::connections() const noexcept { return s_->count.load(); }

void gateway::accept_test_stream(beast::test::stream&& s) {
  auto& shard = s_->shard_for(s.get_executor());
  net::post(shard.io, [st = s_, &shard, s = std::move(s)]() mutable {
    std::make_shared<ws_session<beast::test::stream>>(st, shard, std::move(s))->start_reading_request();
  });
}

} // namespace agner::chat
