// bench_ws_chat: a C++ WebSocket load client for the chat node, beside a naive Beast echo peer
// (bench_ws_echo_server) driven by the same client in the same run.
//
// Modes (--mode, default all):
//   echo  each connection keeps --window messages in flight against the echo server: echoes/s, RTT.
//   chat  a real agner-node (child process, own temp store, dev mode, rate limiter opened wide);
//         --conns connections = conns/2 pairs of users messaging each other, each connection
//         keeping --window sends in flight (window on `stored`); receivers ack cumulatively.
//         Counted: deliveries to the recipient (the node also delivers every message to the
//         sender's own devices: those copies are not counted). Latency: send -> recipient deliver.
//   rate  chat at a fixed total rate (--rate, default half the measured chat max): p99 at half load.
//   idle  --idle-conns identified idle connections to the node, then to the echo server: RSS and
//         C++ heap per connection, with the heap broken down by allocation size.
//   all   echo and chat windows interleaved (--repeats each), then rate, then idle.
// Everything is bounded: --time-limit seconds for the whole run; children are killed at exit.
#include "bench/chat/peer_process.hpp"
#include "bench/harness.hpp"
#include "runtime/metrics.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <atomic>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <sys/resource.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace net = boost::asio;
namespace fs = std::filesystem;
using tcp = net::ip::tcp;
using clk = std::chrono::steady_clock;
using namespace std::chrono_literals;
namespace metrics = agner::metrics;
namespace bench = agner::bench;
using namespace agner::bench::peers;

namespace {

// ---------------------------------------------------------------------------------------------
// Options

struct options {
  std::string mode = "all";
  int conns = 100;
  int window = 8;
  double seconds = 3;
  double warmup = 1;
  int repeats = 0; // 0: AGNER_BENCH_REPEATS or 5
  int threads = 2;
  double rate = 0;
  int idle_conns = 10'000;
  int sources = 4;
  int ack_every = 8;
  int node_io_threads = 2;
  int echo_threads = 0;
  double time_limit = 900;
  std::string node_bin, echo_bin, heapcount_lib;
  std::string store_parent = "/tmp";
  std::string idle_store_parent = "/dev/shm";
  bool keep_logs = false;
};

void usage() {
  std::fprintf(stderr,
               "bench_ws_chat [--mode all|echo|chat|rate|idle] [--conns N] [--window W] [--seconds S] [--warmup S]\n"
               "              [--repeats R] [--threads T] [--rate MSGS_PER_S] [--idle-conns K] [--sources S]\n"
               "              [--ack-every A] [--node-io-threads T] [--echo-threads T] [--time-limit S]\n"
               "              [--node PATH] [--echo PATH] [--heapcount PATH] [--store-parent DIR]\n"
               "              [--idle-store-parent DIR] [--keep-logs]\n");
}

// ---------------------------------------------------------------------------------------------
// Tiny frame parsing (the node's frames are flat JSON with string values)

std::string_view field(std::string_view line, std::string_view key) {
  char pat[40];
  size_t n = static_cast<size_t>(std::snprintf(pat, sizeof pat, "\"%.*s\":\"", static_cast<int>(key.size()), key.data()));
  auto p = line.find(std::string_view(pat, n));
  if (p == std::string_view::npos)
    return {};
  p += n;
  auto e = line.find('"', p);
  return line.substr(p, e == std::string_view::npos ? std::string_view::npos : e - p);
}

uint64_t to_u64(std::string_view s) {
  uint64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

uint64_t now_ns() { return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(clk::now().time_since_epoch()).count()); }

// ---------------------------------------------------------------------------------------------
// Connections

enum class kind { echo, chat };

struct group;

struct conn : std::enable_shared_from_this<conn> {
  conn(group& g, int idx, net::io_context& io) : g(g), idx(idx), io(io), ws(io) {}

  group& g;
  int idx;
  net::io_context& io;
  websocket::stream<tcp::socket> ws;
  beast::flat_buffer rbuf;
  std::deque<std::string> wq;
  bool writing = false, closed = false, counted_ready = false;
  uint64_t user = 0, peer = 0;
  uint64_t max_inbox = 0;
  int unacked = 0;
  int inflight = 0;
  uint64_t nonce = 0;
  double credit = 0;

  void start(const net::ip::address& src, const tcp::endpoint& to);
  void on_connected();
  void read();
  void on_message(std::string_view text);
  void on_line(std::string_view line, uint64_t now);
  void send_one();
  void fill_window(int window);
  void write(std::string frame);
  void do_write();
  void fail(const char* what, beast::error_code ec);
  void mark_ready();
  void close() {
    closed = true;
    beast::error_code ec;
    ws.next_layer().shutdown(tcp::socket::shutdown_both, ec);
    ws.next_layer().close(ec);
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

void conn::fail(const char* what, beast::error_code ec) {
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

void conn::start(const net::ip::address& src, const tcp::endpoint& to) {
  beast::error_code ec;
  auto& s = ws.next_layer();
  s.open(tcp::v4(), ec);
  if (!ec && !src.is_unspecified()) {
    // Several 127.0.0.x source addresses: more ephemeral ports than one address has.
    s.set_option(net::socket_base::reuse_address(true), ec);
    s.bind(tcp::endpoint(src, 0), ec);
  }
  if (ec)
    return fail("open/bind", ec);
  s.async_connect(to, [self = shared_from_this()](beast::error_code ec) {
    if (ec)
      return self->fail("connect", ec);
    beast::error_code ig;
    self->ws.next_layer().set_option(tcp::no_delay(true), ig);
    self->ws.auto_fragment(false);
    self->ws.async_handshake(self->g.host, self->g.k == kind::chat ? "/v1/ws" : "/", [self](beast::error_code ec) {
      if (ec)
        return self->fail("handshake", ec);
      self->on_connected();
    });
  });
}

void conn::on_connected() {
  ws.text(true);
  if (g.k == kind::chat)
    write(fmt::format(R"({{"op":"identify","ref":"i","token":"dev:{}{}","device":"d"}})", g.user_prefix, idx));
  else
    mark_ready();
  read();
}

void conn::mark_ready() {
  if (counted_ready)
    return;
  counted_ready = true;
  g.ready.fetch_add(1);
  g.launch_next();
}

void conn::read() {
  ws.async_read(rbuf, [self = shared_from_this()](beast::error_code ec, size_t) {
    if (ec)
      return self->fail("read", ec);
    auto d = self->rbuf.cdata();
    self->on_message(std::string_view(static_cast<const char*>(d.data()), d.size()));
    self->rbuf.consume(self->rbuf.size());
    self->read();
  });
}

void conn::on_message(std::string_view text) {
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

void conn::on_line(std::string_view line, uint64_t now) {
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

void conn::send_one() {
  ++inflight;
  g.inflight.fetch_add(1, std::memory_order_relaxed);
  g.sent.fetch_add(1, std::memory_order_relaxed);
  // The same frame, byte for byte in shape, for the echo peer and the node.
  write(fmt::format(R"({{"op":"send","to":"{}","nonce":"{}-{}","body":"{}"}})", peer, idx, ++nonce, now_ns()));
}

void conn::fill_window(int window) {
  if (closed || !counted_ready)
    return;
  while (inflight < window)
    send_one();
}

void conn::write(std::string frame) {
  if (closed)
    return;
  wq.push_back(std::move(frame));
  if (!writing)
    do_write();
}

void conn::do_write() {
  writing = true;
  ws.async_write(net::buffer(wq.front()), [self = shared_from_this()](beast::error_code ec, size_t) {
    self->wq.pop_front();
    if (ec) {
      self->writing = false;
      self->wq.clear();
      return self->fail("write", ec);
    }
    if (self->wq.empty())
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
        timer->async_wait([tick, now](beast::error_code) { (*tick)(now); });
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

/// One histogram of the node's /metrics: cumulative counts at its `le` bounds (seconds), and sum.
struct scraped_histogram {
  std::vector<std::pair<double, uint64_t>> cum;
  double sum = 0;
  uint64_t count = 0;
  /// Cumulative count at or below `le` (a step function between the rendered bounds).
  uint64_t at(double le) const {
    uint64_t c = 0;
    for (auto& [b, n] : cum)
      if (b <= le)
        c = n;
    return c;
  }
};

scraped_histogram scrape_histogram(uint16_t port, std::string_view name) {
  net::io_context io;
  tcp::socket s(io);
  s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  beast::http::request<beast::http::empty_body> req(beast::http::verb::get, "/metrics", 11);
  req.set(beast::http::field::host, "127.0.0.1");
  beast::http::write(s, req);
  beast::flat_buffer buf;
  beast::http::response<beast::http::string_body> res;
  beast::http::read(s, buf, res);
  scraped_histogram h;
  std::istringstream in(res.body());
  std::string line, bucket = std::string(name) + "_bucket{le=\"", sum = std::string(name) + "_sum ",
                    count = std::string(name) + "_count ";
  while (std::getline(in, line)) {
    if (line.starts_with(bucket)) {
      auto q = line.find('"', bucket.size());
      auto le = line.substr(bucket.size(), q - bucket.size());
      if (le != "+Inf")
        h.cum.emplace_back(std::stod(le), std::stoull(line.substr(line.rfind(' ') + 1)));
    } else if (line.starts_with(sum)) {
      h.sum = std::stod(line.substr(sum.size()));
    } else if (line.starts_with(count)) {
      h.count = std::stoull(line.substr(count.size()));
    }
  }
  return h;
}

/// The node's own send -> deliver latency between two scrapes: mean, and the quantiles to the
/// resolution of its rendered buckets (powers of two).
void print_node_latency(const std::string& what, const scraped_histogram& a, const scraped_histogram& b) {
  uint64_t n = b.count - a.count;
  if (n == 0)
    return;
  auto quantile = [&](double q) {
    auto rank = static_cast<uint64_t>(q * static_cast<double>(n));
    for (auto& [le, c] : b.cum)
      if (c - a.at(le) > rank)
        return le * 1e6;
    return b.cum.empty() ? 0.0 : b.cum.back().first * 1e6;
  };
  fmt::print("{:<44} mean {:>8.1f} us  p50 <= {:.0f} us  p99 <= {:.0f} us  (n={}; from the node's /metrics, "
             "warm-ups included)\n",
             what, (b.sum - a.sum) / static_cast<double>(n) * 1e6, quantile(0.5), quantile(0.99), n);
}

void print_latency(const std::string& what, const metrics::histogram& h) {
  auto us = [&](double q) { return static_cast<double>(h.quantile(q)) / 1e3; };
  fmt::print("{:<44} p50 {:>8.1f} us  p99 {:>8.1f} us  p999 {:>8.1f} us  max-bucket {:>8.1f} us  (n={}, +12.5% bucket bound)\n",
             what, us(0.5), us(0.99), us(0.999), us(1.0), h.count());
  if (const char* path = std::getenv("AGNER_BENCH_JSON")) {
    std::ofstream out(path, std::ios::app);
    out << fmt::format(R"({{"name":"{}","unit":"us","p50":{},"p99":{},"p999":{},"n":{}}})", what, us(0.5), us(0.99),
                       us(0.999), h.count())
        << "\n";
  }
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------------------------
// The peers as children

struct node_proc {
  child c;
  std::string dir;
  uint16_t port = 0;
  std::string heap_file;
};

node_proc start_node(const options& o, const std::string& store_parent, bool heapcount, const std::string& tag) {
  node_proc n;
  n.dir = make_temp_dir(store_parent, tag);
  std::vector<std::string> env;
  if (heapcount) {
    n.heap_file = n.dir + "/heapcount.txt";
    env.push_back("LD_PRELOAD=" + o.heapcount_lib);
    env.push_back("WSBENCH_HEAPCOUNT_FILE=" + n.heap_file);
  }
  n.c = child::spawn({o.node_bin, "--http.host=127.0.0.1", "--http.port=0", "--store.dir=" + n.dir + "/store",
                      "--gateway.dev_mode=true", "--gateway.sends_per_sec=1000000", "--gateway.sends_burst=1000000",
                      "--gateway.heartbeat_ms=600000", "--gateway.identify_timeout_ms=600000",
                      fmt::format("--node.io_threads={}", o.node_io_threads), "--log.format=json"},
                     n.dir + "/node.log", env);
  auto rest = n.c.wait_for("chat node ready on 127.0.0.1:", 60);
  if (!rest) {
    std::ifstream in(n.dir + "/node.log");
    std::deque<std::string> tail;
    for (std::string line; std::getline(in, line);) {
      tail.push_back(line);
      if (tail.size() > 8)
        tail.pop_front();
    }
    for (auto& l : tail)
      fmt::print(stderr, "  node.log: {}\n", l);
    throw std::runtime_error("agner-node did not become ready");
  }
  n.port = static_cast<uint16_t>(std::atoi(rest->c_str()));
  return n;
}

node_proc start_echo(const options& o, bool heapcount, const std::string& tag) {
  node_proc n;
  n.dir = make_temp_dir(o.store_parent, tag);
  std::vector<std::string> env;
  if (heapcount) {
    n.heap_file = n.dir + "/heapcount.txt";
    env.push_back("LD_PRELOAD=" + o.heapcount_lib);
    env.push_back("WSBENCH_HEAPCOUNT_FILE=" + n.heap_file);
  }
  std::vector<std::string> args{o.echo_bin, "--port=0"};
  if (o.echo_threads > 0)
    args.push_back(fmt::format("--threads={}", o.echo_threads));
  n.c = child::spawn(args, n.dir + "/echo.log", env);
  auto rest = n.c.wait_for("echo server listening on 127.0.0.1:", 20);
  if (!rest)
    throw std::runtime_error("echo server did not start; see " + n.dir + "/echo.log");
  n.port = static_cast<uint16_t>(std::atoi(rest->c_str()));
  return n;
}

void finish(node_proc& n, const options& o) {
  n.c.stop();
  {
    std::lock_guard l(children_mu);
    std::erase(temp_dirs, n.dir); // from here on, this function decides whether it stays
  }
  if (!o.keep_logs) {
    std::error_code ec;
    fs::remove_all(n.dir, ec);
  } else {
    fmt::print("  (kept {})\n", n.dir);
  }
}

// ---------------------------------------------------------------------------------------------
// Throughput: echo and chat windows interleaved, then the paced run

struct throughput {
  double chat_max = 0;
};

throughput run_throughput(const options& o, client& cl, bool do_echo, bool do_chat, bool do_rate) {
  throughput out;
  int reps = o.repeats > 0 ? o.repeats : bench::repeats(5);
  std::optional<node_proc> echo, node;
  std::unique_ptr<group> ge, gc;
  if (do_echo) {
    echo = start_echo(o, false, "echo");
    ge = cl.open(kind::echo, "echo", echo->port, o.conns, 1, "", 64, 30);
    ge->window = o.window;
    ge->server = echo->c.pid;
  }
  if (do_chat || do_rate) {
    node = start_node(o, o.store_parent, false, "chat");
    gc = cl.open(kind::chat, "chat", node->port, o.conns, 1, "u", 64, 120);
    gc->window = o.window;
    gc->ack_every = o.ack_every;
    gc->server = node->c.pid;
    for (size_t i = 0; i + 1 < gc->conns.size(); i += 2) {
      gc->conns[i]->peer = gc->conns[i + 1]->user;
      gc->conns[i + 1]->peer = gc->conns[i]->user;
    }
  }
  fmt::print("\n== throughput: {} connections, window {} per connection, {} client threads, {} x {:.1f}s windows "
             "(+{:.1f}s warm-up), node io_threads={}\n",
             o.conns, o.window, o.threads, reps, o.seconds, o.warmup, o.node_io_threads);
  std::vector<double> es, cs;
  for (int r = 0; r < reps; ++r) {
    if (ge) {
      es.push_back(cl.run_window(*ge, o.warmup, o.seconds));
      fmt::print("  window {}: echo {:.0f}/s\n", r + 1, es.back());
    }
    if (gc && do_chat) {
      cs.push_back(cl.run_window(*gc, o.warmup, o.seconds));
      fmt::print("  window {}: chat delivered {:.0f}/s (stored so far {}, own copies {}, errors {})\n", r + 1, cs.back(),
                 gc->stored.load(), gc->self_copies.load(), gc->errors.load());
    }
    std::fflush(stdout);
  }
  std::optional<bench::result> er, cr;
  if (ge) {
    er = bench::from_samples(fmt::format("ws echo (Beast), {} conns x{}", o.conns, o.window), es, "msgs/s");
    bench::report(*er);
  }
  if (gc && do_chat) {
    cr = bench::from_samples(fmt::format("chat delivered 1:1, {} conns x{}", o.conns, o.window), cs, "msgs/s");
    bench::report(*cr, er ? &*er : nullptr);
    out.chat_max = cr->median();
  }
  for (auto* g : {ge.get(), gc.get()})
    if (g && !g->server_cpu_us.empty()) {
      auto c = bench::from_samples(g->name + " server CPU per message", g->server_cpu_us, "us");
      fmt::print("{:<44} median {:>9.2f} us  [{:.2f} .. {:.2f}]  (user+system CPU of the server process / counted messages)\n",
                 c.name, c.median(), c.min(), c.max());
    }
  if (ge)
    print_latency("echo round trip", ge->lat);
  if (gc && do_chat)
    print_latency("chat send->recipient deliver (max load)", gc->lat);
  if (gc && do_rate) {
    double rate = o.rate > 0 ? o.rate : out.chat_max / 2;
    if (rate <= 0)
      throw std::runtime_error("--mode rate needs --rate");
    gc->lat.reset();
    std::vector<double> rs;
    constexpr std::string_view node_series = "agner_chat_send_to_deliver_seconds";
    auto before = scrape_histogram(node->port, node_series);
    for (int r = 0; r < reps; ++r)
      rs.push_back(cl.run_paced(*gc, rate, o.warmup, o.seconds));
    auto after = scrape_histogram(node->port, node_series);
    auto rr = bench::from_samples(fmt::format("chat delivered at target {:.0f}/s", rate), rs, "msgs/s");
    bench::report(rr, cr ? &*cr : nullptr);
    print_latency(fmt::format("chat send->recipient deliver @{:.0f}/s", rate), gc->lat);
    // The part of it inside the node's chat core; the rest is the two sockets, the two I/O
    // threads and the load client.
    print_node_latency("  of which inside the node (core to push)", before, after);
  }
  cl.close(ge);
  cl.close(gc);
  if (echo)
    finish(*echo, o);
  if (node)
    finish(*node, o);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Idle connections: bytes per connection

void print_heap_delta(const heap_sample& a, const heap_sample& b, int k) {
  if (!a.ok || !b.ok) {
    fmt::print("  (no heap counts: heapcount shim not loaded)\n");
    return;
  }
  fmt::print("  C++ heap (operator new, usable sizes): {:+.1f} B/conn in {:+.2f} allocations/conn ({:.1f} allocations/conn "
             "made in total while connecting)\n",
             static_cast<double>(b.live_bytes - a.live_bytes) / k, static_cast<double>(b.live_allocs - a.live_allocs) / k,
             static_cast<double>(b.total_allocs - a.total_allocs) / k);
  std::vector<std::pair<int64_t, int64_t>> rows; // bytes delta, class
  for (auto& [c, n] : b.by_class) {
    int64_t before = a.by_class.count(c) ? a.by_class.at(c) : 0;
    int64_t d = n - before;
    if (d * 10 >= k) // at least 0.1 per connection
      rows.emplace_back(d * c, c);
  }
  std::sort(rows.rbegin(), rows.rend());
  for (auto& [bytes, c] : rows)
    fmt::print("    size class {:>6} B (usable {:>5}..{:>5}): {:>6.2f} live/conn = {:>7.1f} B/conn\n", c, c, c + 15,
               static_cast<double>(bytes / c) / k, static_cast<double>(bytes) / k);
}

void idle_report(const char* who, pid_t pid, const mem_sample& m0, const mem_sample& m1, int k) {
  fmt::print("  {} RSS: {} KiB -> {} KiB: {:.0f} B/conn RSS, {:.0f} B/conn anonymous, {:.0f} B/conn private dirty "
             "(shmem {} -> {} KiB, not counted)\n",
             who, m0.rss_kb, m1.rss_kb, 1024.0 * static_cast<double>(m1.rss_kb - m0.rss_kb) / k,
             1024.0 * static_cast<double>(m1.anon_kb - m0.anon_kb) / k,
             1024.0 * static_cast<double>(m1.private_dirty_kb - m0.private_dirty_kb) / k, m0.shmem_kb, m1.shmem_kb);
  if (const char* path = std::getenv("AGNER_BENCH_JSON")) {
    std::ofstream out(path, std::ios::app);
    out << fmt::format(R"({{"name":"{} idle conn","unit":"B/conn","rss":{},"anon":{},"k":{}}})", who,
                       1024.0 * static_cast<double>(m1.rss_kb - m0.rss_kb) / k,
                       1024.0 * static_cast<double>(m1.anon_kb - m0.anon_kb) / k, k)
        << "\n";
  }
}

void run_idle(const options& o, client& cl) {
  int k = o.idle_conns;
  fmt::print("\n== idle: {} identified idle connections (client and server are separate processes; {} source addresses)\n",
             k, o.sources);
  fmt::print("  sizeof: websocket::stream<tcp::socket> {} B (a shared_ptr to its impl), tcp::socket {} B, flat_buffer {} B, "
             "std::deque<std::string> {} B, std::string {} B, std::shared_ptr {} B\n",
             sizeof(websocket::stream<tcp::socket>), sizeof(tcp::socket), sizeof(beast::flat_buffer),
             sizeof(std::deque<std::string>), sizeof(std::string), sizeof(std::shared_ptr<int>));
  {
    auto n = start_node(o, o.idle_store_parent, true, "idle-node");
    // Warm-up: connect, identify and close a few hundred, so pools, arenas and shards exist.
    auto w = cl.open(kind::chat, "node warm-up", n.port, 500, o.sources, "warm", 128, 120);
    cl.close(w);
    std::this_thread::sleep_for(1500ms);
    auto m0 = read_mem(n.c.pid);
    auto h0 = read_heap(n.heap_file);
    auto t0 = clk::now();
    auto g = cl.open(kind::chat, "node idle", n.port, k, o.sources, "idle", 256, 600);
    double secs = std::chrono::duration<double>(clk::now() - t0).count();
    std::this_thread::sleep_for(2s);
    auto m1 = read_mem(n.c.pid);
    auto h1 = read_heap(n.heap_file);
    int ready = g->ready.load();
    fmt::print("  agner-node: {} of {} identified in {:.1f}s (each identify creates its user, dev mode)\n", ready, k, secs);
    if (ready > 0) {
      idle_report("agner-node", n.c.pid, m0, m1, ready);
      print_heap_delta(h0, h1, ready);
    }
    cl.close(g);
    std::this_thread::sleep_for(1500ms);
    auto m2 = read_mem(n.c.pid);
    auto h2 = read_heap(n.heap_file);
    fmt::print("  after closing them: RSS {} KiB, anonymous {} KiB; C++ heap still {:+.1f} B per closed connection "
               "(user state stays cached)\n",
               m2.rss_kb, m2.anon_kb, h2.ok ? static_cast<double>(h2.live_bytes - h0.live_bytes) / std::max(ready, 1) : 0.0);
    finish(n, o);
  }
  {
    auto e = start_echo(o, true, "idle-echo");
    auto w = cl.open(kind::echo, "echo warm-up", e.port, 500, o.sources, "", 128, 60);
    cl.close(w);
    std::this_thread::sleep_for(1000ms);
    auto m0 = read_mem(e.c.pid);
    auto h0 = read_heap(e.heap_file);
    auto g = cl.open(kind::echo, "echo idle", e.port, k, o.sources, "", 256, 300);
    std::this_thread::sleep_for(2s);
    auto m1 = read_mem(e.c.pid);
    auto h1 = read_heap(e.heap_file);
    int ready = g->ready.load();
    fmt::print("  echo server: {} of {} connected\n", ready, k);
    if (ready > 0) {
      idle_report("echo server (Beast)", e.c.pid, m0, m1, ready);
      print_heap_delta(h0, h1, ready);
    }
    cl.close(g);
    finish(e, o);
  }
}

} // namespace

int main(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string v;
    if (auto eq = a.find('='); eq != std::string::npos) {
      v = a.substr(eq + 1);
      a = a.substr(0, eq);
    } else if (a != "--keep-logs" && i + 1 < argc) {
      v = argv[++i];
    }
    if (a == "--mode") o.mode = v;
    else if (a == "--conns") o.conns = std::stoi(v);
    else if (a == "--window") o.window = std::stoi(v);
    else if (a == "--seconds") o.seconds = std::stod(v);
    else if (a == "--warmup") o.warmup = std::stod(v);
    else if (a == "--repeats") o.repeats = std::stoi(v);
    else if (a == "--threads") o.threads = std::stoi(v);
    else if (a == "--rate") o.rate = std::stod(v);
    else if (a == "--idle-conns") o.idle_conns = std::stoi(v);
    else if (a == "--sources") o.sources = std::stoi(v);
    else if (a == "--ack-every") o.ack_every = std::stoi(v);
    else if (a == "--node-io-threads") o.node_io_threads = std::stoi(v);
    else if (a == "--echo-threads") o.echo_threads = std::stoi(v);
    else if (a == "--time-limit") o.time_limit = std::stod(v);
    else if (a == "--node") o.node_bin = v;
    else if (a == "--echo") o.echo_bin = v;
    else if (a == "--heapcount") o.heapcount_lib = v;
    else if (a == "--store-parent") o.store_parent = v;
    else if (a == "--idle-store-parent") o.idle_store_parent = v;
    else if (a == "--keep-logs") o.keep_logs = true;
    else {
      usage();
      return 2;
    }
  }
  if (o.conns < 2 || o.conns % 2) {
    std::fprintf(stderr, "--conns must be even and >= 2 (pairs of users)\n");
    return 2;
  }
  auto self_dir = fs::canonical("/proc/self/exe").parent_path();
  if (o.node_bin.empty())
    o.node_bin = (self_dir / "../../tools/agner-node").lexically_normal().string();
  if (o.echo_bin.empty())
    o.echo_bin = (self_dir / "bench_ws_echo_server").string();
  if (o.heapcount_lib.empty())
    o.heapcount_lib = (self_dir / "libbench_heapcount.so").string();

  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  std::signal(SIGPIPE, SIG_IGN);
  // Signals and the time limit are handled by one watchdog thread: kill the children, clean up.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  std::thread([sigs, limit = o.time_limit] {
    timespec ts{static_cast<time_t>(limit), 0};
    int s = sigtimedwait(&sigs, nullptr, &ts);
    fmt::print(stderr, "bench_ws_chat: {}; killing children\n", s > 0 ? "signal" : "time limit reached");
    kill_children_and_clean();
    std::_Exit(3);
  }).detach();

  int rc = 0;
  try {
    client cl(o.threads);
    fmt::print("bench_ws_chat: mode {}, node {}, echo {}, fd limit {}\n", o.mode, o.node_bin, o.echo_bin,
               static_cast<long>(rl.rlim_max));
    bool all = o.mode == "all";
    if (all || o.mode == "echo" || o.mode == "chat" || o.mode == "rate")
      run_throughput(o, cl, all || o.mode == "echo", all || o.mode == "chat", all || o.mode == "rate");
    if (all || o.mode == "idle")
      run_idle(o, cl);
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_ws_chat: {}\n", e.what());
    rc = 1;
  }
  kill_children_and_clean();
  return rc;
}
