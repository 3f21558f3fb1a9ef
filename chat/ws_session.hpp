// One WebSocket session per connection (`ws_session`), and what it sees of its gateway: the I/O
// thread's shard (timer wheel, sessions, paused reads) and the gateway's shared state. Reading,
// writing and deadlines run on the connection's I/O thread; the chat core reaches a session only
// through session_sink (push, close, replay_paused), which posts to that thread. Private to
// chat/gateway.cpp (and its tests through gateway's public interface).
#pragma once

#include "chat/gateway.hpp"

#include "chat/protocol.hpp"
#include "chat/websocket.hpp"
#include "runtime/log.hpp"
#include "runtime/timer/asio_driver.hpp"
#include "runtime/timer/wheel.hpp"
#include "runtime/wake_batch.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/_experimental/test/stream.hpp>

#include <array>
#include <future>
#include <mutex>
#include <span>
#include <type_traits>
#include <unordered_set>

namespace agner::chat {

namespace beast = boost::beast;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

/// What drain() and the read-resume timer need of a session whatever its transport. It derives
/// from session_sink so a session carries one vtable pointer, not two.
class session_base : public session_sink {
public:
  /// On the session's I/O thread.
  virtual void do_close(uint16_t code, std::string_view reason) = 0;
  /// On the session's I/O thread: reading was paused for backpressure; look again.
  virtual void resume_reading() = 0;
};

/// The sockets the gateway holds: bound to an io_context's executor directly, which makes the
/// socket object 40 bytes smaller than tcp::socket with its polymorphic executor.
using gateway_socket = net::basic_stream_socket<tcp, net::io_context::executor_type>;

/// What one I/O thread owns: its timer wheel, the sessions on it, and the sessions whose reading
/// is paused because their owner was overloaded (one timer retries them all, not one per session).
struct gateway::io_shard {
  explicit io_shard(net::io_context& io)
      : io(io), wheel(1ms, std::chrono::steady_clock::now()), driver(io, wheel),
        retry(timer::calls<&io_shard::resume_paused>(this)) {}
  net::io_context& io;
  timer_wheel wheel;
  asio_driver driver;
  std::unordered_set<session_base*> sessions;
  std::vector<std::shared_ptr<session_base>> paused;
  timer retry;

  static constexpr auto retry_after = 5ms;

  /// Buffers between writes. A busy connection takes one per write and gives it back when the
  /// write completes, instead of a malloc and a free per write; an idle connection holds none.
  std::vector<std::string> spare;
  static constexpr size_t spare_max = 64, spare_bytes_max = 64 * 1024;

  std::string take_buffer() {
    if (spare.empty())
      return {};
    auto b = std::move(spare.back());
    spare.pop_back();
    return b;
  }
  /// Leaves `b` empty and without capacity.
  void give_buffer(std::string& b) {
    if (b.capacity() > 15 && b.capacity() <= spare_bytes_max && spare.size() < spare_max) {
      b.clear();
      spare.push_back(std::move(b));
    }
    std::string().swap(b);
  }

  void pause(std::shared_ptr<session_base> s) {
    paused.push_back(std::move(s));
    if (!retry.armed())
      wheel.arm(retry, std::chrono::steady_clock::now() + retry_after);
  }
  void resume_paused() {
    std::vector<std::shared_ptr<session_base>> now;
    now.swap(paused);
    for (auto& s : now)
      s->resume_reading(); // may pause again, re-arming the timer
  }
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
        paused(n.metrics().make_counter("agner_ws_read_paused_total", "Reads postponed because an owner was overloaded")),
        deflated(n.metrics().make_counter("agner_ws_messages_deflated_total", "Server messages sent compressed (permessage-deflate)")),
        inflated(n.metrics().make_counter("agner_ws_messages_inflated_total", "Client messages received compressed (permessage-deflate)")),
        refused(n.metrics().make_counter("agner_ws_upgrades_refused_total", "Upgrade requests answered with an HTTP error")) {}
  node& nd;
  chat_core& core;
  const token_signer& tokens;
  gateway_options opts;
  std::vector<std::unique_ptr<io_shard>> shards;
  std::atomic<bool> draining{false};
  std::atomic<size_t> count{0};
  metrics::gauge& open;
  metrics::counter &identified, &closed, &frames_in, &frames_out, &writes, &bad_frames, &slow_closed, &paused;
  metrics::counter &deflated, &inflated, &refused;

  io_shard& shard_for(const net::any_io_executor& ex) {
    for (auto& s : shards)
      if (&net::query(ex, net::execution::context) == static_cast<net::execution_context*>(&s->io))
        return *s;
    return *shards.front();
  }
};

inline void close_transport(gateway_socket& s) {
  beast::error_code ec;
  s.close(ec);
}
inline void close_transport(beast::test::stream& s) { s.close(); }

/// Where an I/O thread reads sockets into: one buffer per thread, shared by all its connections,
/// so an idle connection holds no read buffer (only a partial frame is copied into the session).
inline std::span<char> read_scratch() {
  thread_local std::unique_ptr<char[]> buf(new char[64 * 1024]);
  return {buf.get(), 64 * 1024};
}

/// Milliseconds of the steady clock, cut to 32 bits (the token bucket's stamp).
inline uint32_t now_ms32() {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch());
  return static_cast<uint32_t>(ms.count());
}

/// Messages to clients are compressed (when negotiated) from this size on: below it, deflate
/// saves a few bytes and costs more CPU than the bytes are worth.
constexpr size_t deflate_min_bytes = 256;

/// One connection. `NextLayer` is a TCP socket in production and Beast's in-memory test stream
/// in the protocol tests. WebSocket framing is ours (chat/websocket.hpp), not Beast's stream:
/// on TCP the session waits for readability and reads into the thread's scratch buffer, so an
/// idle connection owns no buffers at all.
template <class NextLayer>
class ws_session final : public session_base, public std::enable_shared_from_this<ws_session<NextLayer>> {
  static constexpr bool is_tcp = std::is_same_v<NextLayer, gateway_socket>;

public:
  ws_session(std::shared_ptr<gateway::shared> g, gateway::io_shard& shard, NextLayer s)
      : g_(std::move(g)), shard_(shard), sock_(std::move(s)), reader_(static_cast<uint32_t>(proto::frame_bytes_max), false),
        tokens_(static_cast<float>(g_->opts.sends_burst)), last_refill_ms_(now_ms32()),
        deadline_(timer::calls<&ws_session::on_deadline>(this)),
        write_stall_(timer::calls<&ws_session::on_write_stall>(this)) {}

  ~ws_session() override = default;

  /// Answers an upgrade request http_server has read.
  void start(const http_request& req) {
    prepare();
    begin(req);
  }

  /// Starts on a transport whose upgrade request has not been read yet (the tests' streams).
  void start_reading_request() {
    prepare();
    auto buf = std::make_shared<beast::flat_buffer>();
    auto req = std::make_shared<http_request>();
    beast::http::async_read(sock_, *buf, *req, [self = this->shared_from_this(), buf, req](beast::error_code ec, size_t) {
      if (ec)
        return self->abort();
      // Bytes after the request (a client that did not wait for our answer) are frames.
      self->partial_ = beast::buffers_to_string(buf->data());
      self->begin(*req);
    });
  }

  // session_sink: any thread.
  void push(std::string frame) override {
    // Frames from the shards collect here; only the first of a burst posts to the I/O thread,
    // which then takes them all (one post per burst instead of one per frame).
    std::lock_guard lock(inbox_mu_);
    inbox_.push_back(std::move(frame));
    if (inbox_.size() == 1) // inside a shard's drain, posted when the drain ends (runtime/wake_batch.hpp)
      wake_batch::defer(this, [self = this->shared_from_this()] {
        net::post(self->sock_.get_executor(), [self] { self->take_inbox(); });
      });
  }

  void take_inbox() {
    std::vector<std::string> frames;
    {
      std::lock_guard lock(inbox_mu_);
      frames.swap(inbox_);
    }
    for (auto& f : frames)
      enqueue(f);
    flush();
  }
  // Deferred like push (never merged), so that a burst's frames still go out before its close.
  void close(uint16_t code, std::string reason) override {
    wake_batch::defer(nullptr, [self = this->shared_from_this(), code, r = std::move(reason)]() mutable {
      net::post(self->sock_.get_executor(), [self, code, r = std::move(r)] { self->do_close(code, r); });
    });
  }
  void replay_paused(std::function<void()> ask_more) override {
    // Posted after the page's frames (same thread, FIFO), so they are queued when this runs.
    wake_batch::defer(nullptr, [self = this->shared_from_this(), f = std::move(ask_more)]() mutable {
      net::post(self->sock_.get_executor(), [self, f = std::move(f)]() mutable {
        if (self->closing_ || self->finished_)
          return;
        self->ask_more_ = std::make_unique<std::function<void()>>(std::move(f));
        self->maybe_ask_more();
      });
    });
  }

  /// On this session's I/O thread: queues a frame for the next write (see flush).
  void enqueue(std::string_view frame) {
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
    else if (out_.capacity() < frame.size())
      out_ = shard_.take_buffer();
    out_ += frame;
    ++out_frames_;
  }

  /// Starts a write of everything queued unless one is in flight (its completion writes the rest).
  void flush() {
    if (!writing_ && accepted_ && !finished_ && (!out_.empty() || !ctrl_.empty()))
      do_write();
  }

  /// Closes with a WebSocket close frame after the frames already queued (an error frame
  /// explaining the close, typically), then waits for the client's close frame, all bounded by
  /// the write-stall deadline.
  void do_close(uint16_t code, std::string_view reason) override {
    if (closing_)
      return;
    closing_ = true;
    deadline_.cancel();
    if (!accepted_)
      return abort(); // mid-handshake: no WebSocket to close yet
    // Nothing is queued after closing_ is set, so the close frame ends the last write.
    close_at_ = static_cast<uint32_t>(ctrl_.size());
    ws::append_close(ctrl_, code, reason.substr(0, 120));
    close_queued_ = true;
    // The write-stall deadline bounds the goodbye: armed by the write in flight, or by this one.
    if (!writing_)
      do_write();
    do_read(); // keep reading: the client answers with its close frame
  }

private:
  /// Registers the session on its I/O thread and arms the handshake+identify deadline.
  void prepare() {
    shard_.sessions.insert(this);
    g_->count.fetch_add(1);
    g_->open.add(1);
    arm(deadline_, std::chrono::milliseconds(g_->opts.identify_timeout_ms));
  }

  /// Answers the upgrade; the answer and the hello frame go out in one write.
  void begin(const http_request& req) {
    auto field = [&](beast::http::field f) {
      auto v = req[f];
      return std::string_view(v.data(), v.size());
    };
    auto method = req.method_string();
    ws::upgrade_request r{std::string_view(method.data(), method.size()),
                          field(beast::http::field::upgrade),
                          field(beast::http::field::connection),
                          field(beast::http::field::sec_websocket_version),
                          field(beast::http::field::sec_websocket_key),
                          field(beast::http::field::sec_websocket_protocol),
                          field(beast::http::field::sec_websocket_extensions)};
    auto answer = ws::answer_upgrade(r, ws_subprotocol, g_->opts.deflate, "agner");
    if constexpr (is_tcp) {
      beast::error_code ec;
      sock_.non_blocking(true, ec); // reads happen after readiness: they must never block
      if (ec)
        return abort();
    }
    wbuf_ = std::move(answer.response); // goes out first, with the hello frame
    if (answer.status != 101) {
      // Not a WebSocket: the HTTP error goes out, then the connection ends.
      g_->refused.inc();
      refused_ = true;
      accepted_ = true;
      closing_ = true;
      return do_write(); // the write-stall deadline bounds it
    }
    deflate_ = answer.deflate;
    window_bits_ = static_cast<uint8_t>(answer.deflate_window_bits);
    reader_ = ws::frame_reader(static_cast<uint32_t>(proto::frame_bytes_max), deflate_);
    accepted_ = true;
    enqueue(proto::encode_hello(g_->opts.heartbeat_ms, g_->opts.node_name));
    flush();
    if (!partial_.empty()) {
      std::string early;
      early.swap(partial_);
      if (!consume(early.data(), early.size()))
        return;
      flush();
    }
    do_read();
  }

  void arm(timer& t, std::chrono::milliseconds after) {
    if (!finished_)
      shard_.wheel.arm(t, std::chrono::steady_clock::now() + after);
  }

  /// Drops the TCP connection, which ends every pending operation, and finishes the session.
  void abort() {
    closing_ = true;
    close_transport(sock_);
    finish();
  }

  // -- reading -----------------------------------------------------------------------------------

  void resume_reading() override { do_read(); }

  void do_read() {
    if (finished_ || reading_)
      return;
    if (!closing_ && user_ && g_->core.overloaded(user_)) {
      // Backpressure: leave the bytes in the socket (TCP pushes back on the phone) and look again
      // shortly; nothing is dropped.
      g_->paused.inc();
      return shard_.pause(this->shared_from_this());
    }
    if (!is_tcp && parsing_)
      return; // the parser is reading test_buf_; on_test_read reads again when it is done
    reading_ = true;
    if constexpr (is_tcp) {
      sock_.async_wait(gateway_socket::wait_read, [self = this->shared_from_this()](beast::error_code ec) { self->on_readable(ec); });
    } else {
      test_buf_.resize(4096);
      sock_.async_read_some(net::buffer(test_buf_), [self = this->shared_from_this()](beast::error_code ec, size_t n) {
        self->on_test_read(ec, n);
      });
    }
  }

  void on_readable(beast::error_code ec) {
    reading_ = false;
    if (finished_)
      return;
    if (ec)
      return abort();
    auto scratch = read_scratch();
    wake_batch burst; // the frames' casts wake their shards' homes once, after the last frame
    // A few reads per wake-up at most, so one busy connection cannot hold the thread.
    for (int round = 0; round < 4; ++round) {
      size_t n = sock_.read_some(net::buffer(scratch.data(), scratch.size()), ec);
      if (ec == net::error::would_block || ec == net::error::try_again)
        break;
      if (ec)
        return abort(); // the peer closed or the connection broke
      if (!consume(scratch.data(), n))
        return;
      if (n < scratch.size())
        break;
    }
    flush();
    do_read();
  }

  void on_test_read(beast::error_code ec, size_t n) {
    reading_ = false;
    if (finished_)
      return;
    if (ec)
      return abort();
    if (!consume(test_buf_.data(), n))
      return;
    flush();
    do_read();
  }

  /// Parses what arrived (after any partial frame kept from before) and handles every event.
  /// False if the session finished meanwhile.
  bool consume(char* data, size_t n) {
    if (reader_.failed())
      return !finished_; // after a protocol error only the close handshake matters: discard
    char* p = data;
    size_t len = n;
    if (!partial_.empty()) {
      partial_.append(data, n);
      p = partial_.data();
      len = partial_.size();
    }
    parsing_ = true;
    size_t used = reader_.parse(p, len, [this](const ws::frame_reader::event& e) { on_event(e); });
    parsing_ = false;
    if (finished_)
      return false;
    if (p == data)
      partial_.assign(data + used, len - used);
    else
      partial_.erase(0, used);
    if (partial_.empty() && partial_.capacity() > 0)
      std::string().swap(partial_); // an idle connection keeps no buffer
    return true;
  }

  void on_event(const ws::frame_reader::event& e) {
    if (finished_)
      return;
    switch (e.kind) {
    case ws::frame_reader::event::message:
      if (!closing_)
        on_message(e);
      break;
    case ws::frame_reader::event::ping:
      // A ping flood gets pongs for what fits in 64 KiB per write; TCP backpressure does the rest.
      if (!closing_ && ctrl_.size() < 64 * 1024)
        ws::append_frame(ctrl_, ws::opcode::pong, e.payload);
      break;
    case ws::frame_reader::event::pong:
      break;
    case ws::frame_reader::event::close:
      peer_closed_ = true;
      if (closing_) {
        if (close_sent_)
          abort(); // both close frames exchanged
        return;    // ours is queued; on_write ends the connection after it
      }
      do_close(e.code, ""); // echo the client's code (or none), then end
      break;
    case ws::frame_reader::event::error:
      g_->bad_frames.inc();
      do_close(e.code, e.payload);
      break;
    }
  }

  void on_message(const ws::frame_reader::event& e) {
    std::string_view text = e.payload;
    if (e.compressed) {
      thread_local std::string inflated;
      switch (ws::deflate_codec::for_this_thread().inflate(e.payload, inflated, proto::frame_bytes_max)) {
      case ws::deflate_codec::inflate_result::ok:
        break;
      case ws::deflate_codec::inflate_result::too_big:
        return do_close(proto::close_too_big, "frame too big");
      case ws::deflate_codec::inflate_result::corrupt:
        return do_close(ws::close_invalid_payload, "compressed data is corrupt");
      }
      text = inflated;
      g_->inflated.inc();
    }
    g_->frames_in.inc();
    if (e.op != ws::opcode::text)
      return do_close(proto::close_decode_error, "binary frames are not part of the protocol");
    if (!ws::valid_utf8(text))
      return do_close(proto::close_invalid_utf8, "text frame is not valid UTF-8");
    auto decoded = proto::decode(text);
    if (user_)
      arm(deadline_, std::chrono::milliseconds(static_cast<int64_t>(g_->opts.heartbeat_ms * g_->opts.heartbeat_grace)));
    if (auto* err = std::get_if<proto::decode_error>(&decoded)) {
      g_->bad_frames.inc();
      enqueue(proto::encode_error(err->ref, err->code, err->message));
      if (err->code == proto::error_code::bad_json)
        do_close(proto::close_decode_error, "frame is not a JSON object");
      return;
    }
    auto& frame = std::get<proto::client_frame>(decoded);
    std::visit([&](auto& r) { handle(frame.ref, r); }, frame.req);
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
    // A 32-bit millisecond stamp: it wraps after 49 days, and the unsigned difference stays right.
    auto now = now_ms32();
    double elapsed = static_cast<uint32_t>(now - last_refill_ms_) / 1000.0;
    last_refill_ms_ = now;
    tokens_ = static_cast<float>(std::min(g_->opts.sends_burst, tokens_ + elapsed * g_->opts.sends_per_sec));
    if (tokens_ < 1)
      return false;
    tokens_ -= 1;
    return true;
  }

  // -- writing -----------------------------------------------------------------------------------

  void do_write() {
    // One write: the upgrade answer (first write only, already in wbuf_), pongs, everything
    // queued as one WebSocket text message, frames separated by '\n' (see docs/protocol.md), and
    // our close frame last once closing: a burst of deliveries costs one write and one syscall.
    // The payload is copied once into wbuf_, which is cheaper than the buffers a gathered write
    // would keep per connection.
    std::string_view control(ctrl_);
    std::string_view pongs = close_queued_ && !close_sent_ ? control.substr(0, close_at_) : control;
    if (wbuf_.empty())
      wbuf_ = shard_.take_buffer();
    wbuf_ += pongs;
    if (!out_.empty()) {
      if (deflate_ && out_.size() >= deflate_min_bytes) {
        thread_local std::string packed;
        ws::deflate_codec::for_this_thread().deflate(out_, packed, window_bits_);
        g_->deflated.inc();
        ws::append_frame(wbuf_, ws::opcode::text, packed, true);
      } else {
        ws::append_frame(wbuf_, ws::opcode::text, out_);
      }
      out_.clear();
      g_->frames_out.inc(out_frames_);
      out_frames_ = 0;
    }
    wbuf_ += control.substr(pongs.size()); // the close frame, if queued
    ctrl_.clear();
    if (close_queued_)
      close_sent_ = true;
    writing_ = true;
    g_->writes.inc();
    arm(write_stall_, std::chrono::milliseconds(g_->opts.write_stall_ms));
    net::async_write(sock_, net::buffer(wbuf_), [self = this->shared_from_this()](beast::error_code ec, size_t) { self->on_write(ec); });
  }

  void on_write(beast::error_code ec) {
    writing_ = false;
    if (finished_)
      return;
    if (ec || refused_)
      return abort();
    // An idle connection keeps no buffers: they go back to the I/O thread's spares, for the next
    // write of any connection on it.
    shard_.give_buffer(wbuf_);
    if (out_.empty())
      shard_.give_buffer(out_);
    if (close_sent_) {
      if (peer_closed_)
        return abort(); // both close frames exchanged
      return;           // wait for the client's close frame; the write-stall deadline bounds it
    }
    if (!out_.empty() || !ctrl_.empty())
      return do_write();
    write_stall_.cancel();
    maybe_ask_more();
  }

  /// A paged resume replay waits for the outbound queue to drain before its next page.
  void maybe_ask_more() {
    if (ask_more_ && !writing_ && out_.empty()) {
      auto f = std::move(ask_more_);
      (*f)();
    }
  }

  void on_deadline() {
    do_close(user_ ? proto::close_heartbeat_timeout : proto::close_identify_timeout,
             user_ ? "no frame within the heartbeat deadline" : "identify within the deadline");
  }

  void on_write_stall() {
    if (!close_sent_)
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
    shard_.sessions.erase(this);
    g_->count.fetch_sub(1);
    g_->open.add(-1);
    g_->closed.inc();
    // partial_ stays: finish() can run from inside the parser, which may be reading it. The
    // session's destructor frees it.
    std::string().swap(out_);
    if (user_)
      g_->core.detach(user_, device_, this->shared_from_this());
  }

  std::shared_ptr<gateway::shared> g_;
  gateway::io_shard& shard_;
  NextLayer sock_;
  ws::frame_reader reader_;
  std::string partial_;  ///< the start of a frame whose rest has not arrived yet
  struct no_buffer {};
  /// The read buffer of the in-memory test transport only (TCP reads into the thread's scratch).
  [[no_unique_address]] std::conditional_t<is_tcp, no_buffer, std::vector<char>> test_buf_;
  std::mutex inbox_mu_;
  std::vector<std::string> inbox_; ///< pushed by other threads, taken by the I/O thread
  std::string out_;                ///< frames waiting for the next write, '\n'-separated
  uint32_t out_frames_ = 0;
  uint32_t close_at_ = 0;   ///< where our close frame starts in ctrl_, once queued
  std::string ctrl_;    ///< control frames (pongs, then our close) for the next write
  std::string wbuf_;    ///< the write in flight (before the first write: the upgrade answer)
  user_id user_ = 0;
  std::string device_;
  float tokens_;                 ///< the send token bucket
  uint32_t last_refill_ms_;      ///< steady clock (ms, 32 bits) of its last refill
  std::unique_ptr<std::function<void()>> ask_more_; ///< a paged replay's request for its next page
  timer deadline_;
  timer write_stall_;
  bool deflate_ = false, accepted_ = false, reading_ = false, writing_ = false, closing_ = false, finished_ = false;
  bool refused_ = false, close_queued_ = false, close_sent_ = false, peer_closed_ = false, parsing_ = false;
  // Beside the flags, not after the 32-bit fields: there it padded the session by 8 bytes, and
  // 8 more made make_shared's block 520 bytes instead of 512 (jemalloc's next class is 640).
  uint8_t window_bits_ = 15;
};

} // namespace agner::chat
