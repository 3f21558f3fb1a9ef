// The load client of bench_ws_chat: WebSocket connections on a few io_context threads, grouped by
// target (the echo peer, or a chat node as pairs of users messaging each other), each keeping a
// window of messages in flight or sending at a paced rate. Used by one translation unit.
//
// It speaks RFC 6455's client side through chat/websocket.hpp, not Beast's websocket::stream, so
// that the client costs the shared two cores as little as it can: every frame a connection
// produces in one turn of its thread (sends, acks, pongs) goes out in one write, and one read
// takes every whole frame that arrived. Both peers get the same client, so the comparison stays
// like for like.
#pragma once

#include "bench/chat/peer_process.hpp"
#include "chat/websocket.hpp"
#include "runtime/metrics.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace agner::bench::wsload {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;
using clk = std::chrono::steady_clock;
using namespace std::chrono_literals;
using peers::cpu_seconds;

// ---------------------------------------------------------------------------------------------
// Tiny frame parsing (the node's frames are flat JSON with string values)

inline std::string_view field(std::string_view line, std::string_view key) {
  // Finds "key":" by the key, then checks the quotes around it: no pattern to build per call.
  for (size_t p = line.find(key); p != std::string_view::npos; p = line.find(key, p + 1)) {
    size_t after = p + key.size();
    if (p == 0 || line[p - 1] != '"' || line.substr(after, 3) != "\":\"")
      continue;
    after += 3;
    auto e = line.find('"', after);
    return line.substr(after, e == std::string_view::npos ? std::string_view::npos : e - after);
  }
  return {};
}

inline uint64_t to_u64(std::string_view s) {
  uint64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

inline uint64_t now_ns() { return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(clk::now().time_since_epoch()).count()); }

// ---------------------------------------------------------------------------------------------
// Connections

enum class kind { echo, chat };

struct group;

struct conn : std::enable_shared_from_this<conn> {
  conn(group& g, int idx, net::io_context& io) : g(g), idx(idx), io(io), sock(io), mask_state(0x9E3779B9u ^ static_cast<uint32_t>(idx)) {}

  group& g;
  int idx;
  net::io_context& io;
  tcp::socket sock;
  std::string rbuf;     ///< bytes read and not yet parsed (rbuf[0, rlen))
  size_t rlen = 0;
  std::string message;  ///< a fragmented message being reassembled
  std::string out;      ///< frames queued while a write is in flight
  std::string sending;  ///< the bytes of the write in flight
  bool writing = false, closed = false, counted_ready = false;
  uint64_t user = 0, peer = 0;
  uint64_t max_inbox = 0;
  int unacked = 0;
  int inflight = 0;
  uint64_t nonce = 0;
  double credit = 0;
  uint32_t mask_state;

  void start(const net::ip::address& src, const tcp::endpoint& to);
  void handshake();
  void on_connected();
  void read();
  bool parse();
  void on_message(std::string_view text);
  void on_line(std::string_view line, uint64_t now);
  void send_one();
  void fill_window(int window);
  void write(std::string_view text, chat::ws::opcode op = chat::ws::opcode::text);
  void do_write();
  void fail(const char* what, error_code ec);
  void mark_ready();
  uint32_t next_mask() {
    mask_state ^= mask_state << 13;
    mask_state ^= mask_state >> 17;
    mask_state ^= mask_state << 5;
    return mask_state;
  }
  void close() {
    closed = true;
    error_code ec;
    sock.shutdown(tcp::socket::shutdown_both, ec);
    sock.close(ec);
  }
};

struct group {
  kind k;
  std::string name;
  tcp::endpoint target;
  std::string host;
  std::string user_prefix;
  int window = 8;
  int ack_every = 8;
  std::vector<std::shared_ptr<conn>> conns;
  std::vector<net::ip::address> sources;
  std::atomic<int> next_to_connect{0}, ready{0}, failed{0};
  std::atomic<int64_t> inflight{0};
  std::atomic<uint64_t> done{0}, self_copies{0}, stored{0}, errors{0}, sent{0};
  std::atomic<bool> active{false}, measuring{false}, paced{false};
  double per_conn_rate = 0;
  int inflight_cap = 1000;
  metrics::histogram lat{1e-9};
  pid_t server = -1;
  std::vector<double> server_cpu_us; ///< server CPU microseconds per counted message, per window

  void launch_next() {
    int i = next_to_connect.fetch_add(1);
    if (i >= static_cast<int>(conns.size()))
      return;
    auto c = conns[i];
    auto src = sources.empty() ? net::ip::address() : sources[i % sources.size()];
    net::post(c->io, [c, src, to = target] { c->start(src, to); });
  }
};

inline void conn::fail(const char* what, error_code ec) {
  if (closed)
    return;
  closed = true;
  if (!counted_ready) {
    if (g.failed.fetch_add(1) < 5)
      fmt::print(stderr, "[{}] connection {} {}: {}\n", g.name, idx, what, ec.message());
    g.launch_next();
  } else if (ec != net::error::operation_aborted && ec != net::error::bad_descriptor && g.errors.fetch_add(1) < 5) {
    fmt::print(stderr, "[{}] connection {} {}: {}\n", g.name, idx, what, ec.message());
  }
}

inline void conn::start(const net::ip::address& src, const tcp::endpoint& to) {
  error_code ec;
  sock.open(tcp::v4(), ec);
  if (!ec && !src.is_unspecified()) {
    // Several 127.0.0.x source addresses: more ephemeral ports than one address has.
    sock.set_option(net::socket_base::reuse_address(true), ec);
    sock.bind(tcp::endpoint(src, 0), ec);
  }
  if (ec)
    return fail("open/bind", ec);
  sock.async_connect(to, [self = shared_from_this()](error_code ec) {
    if (ec)
      return self->fail("connect", ec);
    error_code ig;
    self->sock.set_option(tcp::no_delay(true), ig);
    self->handshake();
  });
}

inline void conn::handshake() {
  sending = chat::ws::client_upgrade_request(g.host, g.k == kind::chat ? "/v1/ws" : "/", {});
  net::async_write(sock, net::buffer(sending), [self = shared_from_this()](error_code ec, size_t) {
    if (ec)
      return self->fail("handshake", ec);
    self->sending.clear();
    net::async_read_until(self->sock, net::dynamic_buffer(self->rbuf), "\r\n\r\n",
                          [self](error_code ec, size_t head) {
                            if (ec)
                              return self->fail("handshake", ec);
                            if (chat::ws::response_status(self->rbuf) != 101)
                              return self->fail("handshake", net::error::connection_refused);
                            // Frames that came with the answer stay in the buffer.
                            self->rbuf.erase(0, head);
                            self->rlen = self->rbuf.size();
                            self->on_connected();
                          });
  });
}

inline void conn::on_connected() {
  if (g.k == kind::chat)
    write(fmt::format(R"({{"op":"identify","ref":"i","token":"dev:{}{}","device":"d"}})", g.user_prefix, idx));
  else
    mark_ready();
  if (!parse())
    return;
  read();
}

inline void conn::mark_ready() {
  if (counted_ready)
    return;
  counted_ready = true;
  g.ready.fetch_add(1);
  g.launch_next();
}

inline void conn::read() {
  if (rbuf.size() < rlen + 4096)
    rbuf.resize(std::max<size_t>(rlen + 4096, 8192));
  sock.async_read_some(net::buffer(rbuf.data() + rlen, rbuf.size() - rlen), [self = shared_from_this()](error_code ec, size_t n) {
    if (ec)
      return self->fail("read", ec);
    self->rlen += n;
    if (self->parse())
      self->read();
  });
}

/// Hands every whole frame in the buffer on; keeps a partial one. False once the connection ends.
inline bool conn::parse() {
  using chat::ws::opcode;
  size_t used = chat::ws::parse_server_frames(rbuf.data(), rlen, 16u << 20, [&](const chat::ws::server_frame& f) {
    if (f.op == opcode::ping) {
      write(f.payload, opcode::pong);
    } else if (f.op == opcode::close) {
      close();
    } else if (f.fin && message.empty() && f.op != opcode::continuation) {
      on_message(f.payload);
    } else {
      message.append(f.payload);
      if (f.fin) {
        on_message(message);
        message.clear();
      }
    }
    return !closed;
  });
  if (used == chat::ws::bad_server_frame) {
    fail("read", net::error::invalid_argument);
    return false;
  }
  if (used > 0) {
    std::memmove(rbuf.data(), rbuf.data() + used, rlen - used);
    rlen -= used;
  }
  return !closed;
}

inline void conn::on_message(std::string_view text) {
  uint64_t now = now_ns();
  if (g.k == kind::echo) {
    --inflight;
    g.inflight.fetch_sub(1, std::memory_order_relaxed);
    if (g.measuring.load(std::memory_order_relaxed)) {
      g.done.fetch_add(1, std::memory_order_relaxed);
      g.lat.observe(now - to_u64(field(text, "body")));
    }
    if (g.active.load(std::memory_order_relaxed) && !g.paced.load(std::memory_order_relaxed))
      fill_window(g.window);
    return;
  }
  // Server messages may carry several JSON objects separated by '\n'.
  size_t pos = 0;
  while (pos < text.size()) {
    auto e = text.find('\n', pos);
    if (e == std::string_view::npos)
      e = text.size();
    on_line(text.substr(pos, e - pos), now);
    pos = e + 1;
  }
  if (unacked >= g.ack_every) {
    unacked = 0;
    write(fmt::format(R"({{"op":"ack","inbox_seq":"{}"}})", max_inbox));
  }
  if (g.active.load(std::memory_order_relaxed) && !g.paced.load(std::memory_order_relaxed))
    fill_window(g.window);
}

inline void conn::on_line(std::string_view line, uint64_t now) {
  auto op = field(line, "op");
  if (op == "deliver") {
    max_inbox = std::max(max_inbox, to_u64(field(line, "inbox_seq")));
    ++unacked;
    if (to_u64(field(line, "from")) == user) {
      g.self_copies.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (g.measuring.load(std::memory_order_relaxed)) {
      g.done.fetch_add(1, std::memory_order_relaxed);
      g.lat.observe(now - to_u64(field(line, "body")));
    }
  } else if (op == "stored") {
    // The sending connection gets no copy of its own message: `stored` carries its inbox_seq.
    if (auto seq = to_u64(field(line, "inbox_seq")); seq != 0) {
      max_inbox = std::max(max_inbox, seq);
      ++unacked;
    }
    --inflight;
    g.inflight.fetch_sub(1, std::memory_order_relaxed);
    g.stored.fetch_add(1, std::memory_order_relaxed);
  } else if (op == "ready") {
    user = to_u64(field(line, "user"));
    mark_ready();
  } else if (op == "error") {
    if (g.errors.fetch_add(1) < 5)
      fmt::print(stderr, "[{}] connection {}: {}\n", g.name, idx, line);
    if (field(line, "code") == "rate_limited" || field(line, "code") == "unavailable") {
      --inflight;
      g.inflight.fetch_sub(1, std::memory_order_relaxed);
    }
  }
}

inline void conn::send_one() {
  ++inflight;
  g.inflight.fetch_add(1, std::memory_order_relaxed);
  g.sent.fetch_add(1, std::memory_order_relaxed);
  // The same frame, byte for byte in shape, for the echo peer and the node.
  write(fmt::format(R"({{"op":"send","to":"{}","nonce":"{}-{}","body":"{}"}})", peer, idx, ++nonce, now_ns()));
}

inline void conn::fill_window(int window) {
  if (closed || !counted_ready)
    return;
  while (inflight < window)
    send_one();
}

inline void conn::write(std::string_view text, chat::ws::opcode op) {
  if (closed)
    return;
  chat::ws::append_client_frame(out, op, text, next_mask());
  if (!writing)
    do_write();
}

/// Everything queued goes out in one write; what is queued meanwhile goes in the next.
inline void conn::do_write() {
  writing = true;
  sending.clear();
  sending.swap(out);
  net::async_write(sock, net::buffer(sending), [self = shared_from_this()](error_code ec, size_t) {
    if (ec) {
      self->writing = false;
      self->out.clear();
      return self->fail("write", ec);
    }
    if (self->out.empty())
      self->writing = false;
    else
      self->do_write();
  });
}

// ---------------------------------------------------------------------------------------------
// The client: io threads, groups, windows

struct client {
  std::vector<std::unique_ptr<net::io_context>> ios;
  std::vector<std::thread> threads;
  std::vector<net::executor_work_guard<net::io_context::executor_type>> guards;

  explicit client(int n) {
    for (int i = 0; i < n; ++i) {
      ios.push_back(std::make_unique<net::io_context>(1));
      guards.push_back(net::make_work_guard(*ios.back()));
    }
    for (auto& io : ios)
      threads.emplace_back([&io = *io] { io.run(); });
  }
  ~client() {
    for (auto& g : guards)
      g.reset();
    for (auto& io : ios)
      io->stop();
    for (auto& t : threads)
      t.join();
  }

  /// Opens `n` connections (at most `concurrency` connecting at once); waits until all are
  /// ready (chat: identified) or failed, or the timeout.
  std::unique_ptr<group> open(kind k, std::string name, uint16_t port, int n, int sources, std::string user_prefix,
                              int concurrency, double timeout_s) {
    auto g = std::make_unique<group>();
    g->k = k;
    g->name = std::move(name);
    g->target = tcp::endpoint(net::ip::make_address("127.0.0.1"), port);
    g->host = fmt::format("127.0.0.1:{}", port);
    g->user_prefix = std::move(user_prefix);
    for (int s = 0; s < sources && sources > 1; ++s)
      g->sources.push_back(net::ip::make_address(fmt::format("127.0.0.{}", 2 + s)));
    for (int i = 0; i < n; ++i)
      g->conns.push_back(std::make_shared<conn>(*g, i, *ios[i % ios.size()]));
    for (int i = 0; i < std::min(n, concurrency); ++i)
      g->launch_next();
    auto until = clk::now() + std::chrono::duration<double>(timeout_s);
    while (g->ready.load() + g->failed.load() < n && clk::now() < until)
      std::this_thread::sleep_for(10ms);
    if (g->ready.load() < n)
      fmt::print(stderr, "[{}] only {} of {} connections ready ({} failed)\n", g->name, g->ready.load(), n, g->failed.load());
    return g;
  }

  void close(std::unique_ptr<group>& g) {
    if (!g)
      return;
    std::atomic<int> pending{static_cast<int>(g->conns.size())};
    for (auto& c : g->conns)
      net::post(c->io, [c, &pending] {
        c->close();
        pending.fetch_sub(1);
      });
    while (pending.load() > 0)
      std::this_thread::sleep_for(5ms);
    // Let the aborted handlers run and drop their references before the group goes.
    for (auto& io : ios) {
      std::atomic<bool> done{false};
      net::post(*io, [&] { done = true; });
      while (!done)
        std::this_thread::sleep_for(1ms);
    }
    std::this_thread::sleep_for(50ms);
    g->conns.clear();
    g.reset();
  }

  /// Stops sending, waits for what is in flight.
  void pause(group& g) {
    g.active = false;
    g.measuring = false;
    auto until = clk::now() + 10s;
    while (g.inflight.load() > 0 && clk::now() < until)
      std::this_thread::sleep_for(2ms);
    std::this_thread::sleep_for(50ms); // stragglers: the recipient copies of the last sends
  }

  /// One closed-loop window: every connection keeps `window` in flight. Returns done/s.
  double run_window(group& g, double warmup_s, double seconds) {
    g.paced = false;
    g.active = true;
    for (auto& c : g.conns)
      net::post(c->io, [c, w = g.window] { c->fill_window(w); });
    std::this_thread::sleep_for(std::chrono::duration<double>(warmup_s));
    g.done = 0;
    double cpu0 = cpu_seconds(g.server);
    auto t0 = clk::now();
    g.measuring = true;
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    g.measuring = false;
    double secs = std::chrono::duration<double>(clk::now() - t0).count();
    uint64_t n = g.done.load();
    double r = static_cast<double>(n) / secs;
    if (n > 0)
      g.server_cpu_us.push_back(1e6 * (cpu_seconds(g.server) - cpu0) / static_cast<double>(n));
    pause(g);
    return r;
  }

  /// One open-loop window at `rate` sends/s in total, paced by a 1 ms tick on each I/O thread.
  double run_paced(group& g, double rate, double warmup_s, double seconds) {
    g.paced = true;
    g.per_conn_rate = rate / static_cast<double>(g.conns.size());
    g.active = true;
    std::atomic<bool> stop{false};
    std::vector<std::shared_ptr<net::steady_timer>> timers;
    std::atomic<int> running{0};
    for (size_t t = 0; t < ios.size(); ++t) {
      auto timer = std::make_shared<net::steady_timer>(*ios[t]);
      timers.push_back(timer);
      std::vector<std::shared_ptr<conn>> mine;
      for (size_t i = t; i < g.conns.size(); i += ios.size())
        mine.push_back(g.conns[i]);
      // Each connection starts at its own phase of the send period, so the offered load is
      // spread over time: with equal credits every connection would cross 1 on the same tick
      // and the "open loop" would be synchronized bursts of one message per connection.
      net::post(*ios[t], [mine, n = g.conns.size(), first = t, step = ios.size()] {
        for (size_t k = 0; k < mine.size(); ++k)
          mine[k]->credit = (static_cast<double>(first + k * step) + 0.5) / static_cast<double>(n);
      });
      running.fetch_add(1);
      auto tick = std::make_shared<std::function<void(clk::time_point)>>();
      *tick = [&, timer, mine = std::move(mine), tick_w = std::weak_ptr(tick)](clk::time_point last) {
        auto tick = tick_w.lock();
        if (stop.load() || !tick) {
          running.fetch_sub(1);
          return;
        }
        auto now = clk::now();
        double dt = std::chrono::duration<double>(now - last).count();
        for (auto& c : mine) {
          c->credit = std::min(c->credit + g.per_conn_rate * dt, 50.0);
          while (c->credit >= 1 && c->inflight < g.inflight_cap && !c->closed && c->counted_ready) {
            c->send_one();
            c->credit -= 1;
          }
        }
        timer->expires_at(now + 1ms);
        timer->async_wait([tick, now](error_code) { (*tick)(now); });
      };
      net::post(*ios[t], [tick] { (*tick)(clk::now()); });
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(warmup_s));
    g.done = 0;
    uint64_t sent0 = g.sent.load();
    double server0 = cpu_seconds(g.server), client0 = cpu_seconds(::getpid());
    auto t0 = clk::now();
    g.measuring = true;
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    g.measuring = false;
    double secs = std::chrono::duration<double>(clk::now() - t0).count();
    double r = static_cast<double>(g.done.load()) / secs;
    double offered = static_cast<double>(g.sent.load() - sent0) / secs;
    double server_cpu = cpu_seconds(g.server) - server0, client_cpu = cpu_seconds(::getpid()) - client0;
    stop = true;
    while (running.load() > 0)
      std::this_thread::sleep_for(2ms);
    pause(g);
    for (auto& c : g.conns)
      net::post(c->io, [c] { c->credit = 0; });
    // How busy the box was: at a fixed rate, batching is thinner than at the maximum, so a message
    // can cost the node more CPU than it does flat out.
    fmt::print("  paced window: offered {:.0f} sends/s, delivered {:.0f}/s; server {:.2f} cores ({:.2f} us per "
               "message), load client {:.2f} cores\n",
               offered, r, server_cpu / secs, r > 0 ? 1e6 * server_cpu / (r * secs) : 0.0, client_cpu / secs);
    return r;
  }
};

} // namespace agner::bench::wsload
