// bench_ws_chat: a C++ WebSocket load client for the chat node, beside a naive Beast echo peer
// (bench_ws_echo_server) driven by the same client in the same run.
//
// Modes (--mode, default all):
//   echo  each connection keeps --window messages in flight against the echo server: echoes/s, RTT.
//   chat  a real agner-node (child process, own temp store, dev mode, rate limiter opened wide);
//         --conns connections = conns/2 pairs of users messaging each other, each connection
//         keeping --window sends in flight (window on `stored`); receivers ack cumulatively.
//         Counted: deliveries to the recipient (copies to the sender's other devices, if it had
//         any, would not count; the sending connection gets `stored` with the inbox_seq instead
//         of a copy). Latency: send -> recipient deliver.
//   rate  chat at a fixed total rate (--rate, default half the measured chat max): p99 at half load;
//         the echo peer is paced at the same rate in windows interleaved with chat's, so the run
//         also shows what the box gives a naive server's round trip at that load.
//   idle  --idle-conns identified idle connections to the node, then to the echo server: RSS and
//         C++ heap per connection, with the heap broken down by allocation size.
//   all   echo and chat windows interleaved (--repeats each), then rate, then idle.
// Everything is bounded: --time-limit seconds for the whole run; children are killed at exit.
#include "bench/chat/handoff_probe.hpp"
#include "bench/chat/peer_process.hpp"
#include "bench/chat/ws_load_client.hpp"
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

#include <array>
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

// net, tcp and clk come with the load client's namespace.
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace fs = std::filesystem;
namespace metrics = agner::metrics;
namespace bench = agner::bench;
using namespace std::chrono_literals;
using namespace agner::bench::peers;
using namespace agner::bench::wsload;

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

/// The node's own split of a send's time (send -> push, and the waits inside it), scraped from
/// /metrics before and after a set of windows.
struct node_stages {
  static constexpr std::array<std::string_view, 5> series = {
    "agner_chat_send_to_deliver_seconds", "agner_chat_send_to_sequenced_seconds", "agner_store_queue_wait_seconds",
    "agner_store_commit_seconds", "agner_chat_durable_to_owner_seconds"};
  std::vector<scraped_histogram> before;

  explicit node_stages(uint16_t port) : before(scrape(port)) {}
  static std::vector<scraped_histogram> scrape(uint16_t port) {
    std::vector<scraped_histogram> v;
    for (auto name : series)
      v.push_back(scrape_histogram(port, name));
    return v;
  }
  /// Prints each series' change since construction.
  void print(uint16_t port) const {
    auto after = scrape(port);
    // The part inside the node's chat core; the rest is the two sockets, the two I/O threads and
    // the load client.
    print_node_latency("  of which inside the node (core to push)", before[0], after[0]);
    print_node_latency("    send to its conversation's owner", before[1], after[1]);
    print_node_latency("    a batch waiting for the store writer", before[2], after[2]);
    print_node_latency("    a group commit (begin to durable)", before[3], after[3]);
    print_node_latency("    durable to the recipient's owner", before[4], after[4]);
  }
};

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
  // The paced run drives the echo peer at the same rate too: what a naive server's round trip
  // looks like at that load on this box, beside the chat latency.
  if (do_echo || do_rate) {
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
  std::optional<node_stages> max_stages;
  if (gc && do_chat)
    max_stages.emplace(node->port);
  for (int r = 0; r < reps; ++r) {
    if (ge && do_echo) {
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
  if (ge && do_echo) {
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
  if (ge && do_echo)
    print_latency("echo round trip", ge->lat);
  if (gc && do_chat) {
    print_latency("chat send->recipient deliver (max load)", gc->lat);
    max_stages->print(node->port);
  }
  if (gc && do_rate) {
    double rate = o.rate > 0 ? o.rate : out.chat_max / 2;
    if (rate <= 0)
      throw std::runtime_error("--mode rate needs --rate");
    gc->lat.reset();
    if (ge)
      ge->lat.reset();
    std::vector<double> rs, res;
    node_stages stages(node->port);
    // The box's own floor under each load: one thread handing work to another (handoff_probe.hpp).
    metrics::histogram handoff_echo, handoff_chat;
    for (int r = 0; r < reps; ++r) {
      // Interleaved like the throughput windows; the node's histogram also sees its idle time
      // during the echo windows, which adds nothing to it.
      if (ge) {
        fmt::print("  echo, paced:\n");
        bench::handoff_probe probe(handoff_echo);
        res.push_back(cl.run_paced(*ge, rate, o.warmup, o.seconds));
      }
      if (ge)
        fmt::print("  chat, paced:\n");
      bench::handoff_probe probe(handoff_chat);
      rs.push_back(cl.run_paced(*gc, rate, o.warmup, o.seconds));
    }
    auto rr = bench::from_samples(fmt::format("chat delivered at target {:.0f}/s", rate), rs, "msgs/s");
    bench::report(rr, cr ? &*cr : nullptr);
    if (ge) {
      auto er2 = bench::from_samples(fmt::format("echo at target {:.0f}/s", rate), res, "msgs/s");
      bench::report(er2);
      print_latency(fmt::format("echo round trip @{:.0f}/s", rate), ge->lat);
    }
    print_latency(fmt::format("chat send->recipient deliver @{:.0f}/s", rate), gc->lat);
    if (ge)
      print_latency("  a thread hand-off, during the echo windows", handoff_echo);
    print_latency("  a thread hand-off, during the chat windows", handoff_chat);
    stages.print(node->port);
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
