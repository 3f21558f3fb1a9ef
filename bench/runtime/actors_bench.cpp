// bench_actors: agner's sharded services against raw CAF and Erlang/OTP, in one run.
//   fan-in    P producer threads cast to K shards (agner) / anon_send to K actors (CAF) /
//             P processes send to K processes (erl)
//   ping-pong two owners bounce a counter
//   ring      a token passes around 503 owners
//   head-of-line  p99 of write-lane latency with and without a heavy read load on the same shards
// Environment: AGNER_BENCH_REPEATS (default 5), AGNER_BENCH_SCALE (default 1.0, scales counts).
#include "bench/harness.hpp"
#include "runtime/service.hpp"

#include <atomic>
#include <cstdio>
#include <future>
#include <memory>
#include <thread>

using namespace agner;
using namespace std::chrono_literals;

namespace {

double scale() {
  const char* s = std::getenv("AGNER_BENCH_SCALE");
  return s ? std::atof(s) : 1.0;
}

/// Completion detection shared by every workload: each consumer counts its own messages and
/// reports once when it reached its quota; the last one fulfils the promise.
struct finish_line {
  std::atomic<int> pending;
  std::promise<void> done;
  explicit finish_line(int consumers) : pending(consumers) {}
  void arrive() {
    if (pending.fetch_sub(1) == 1)
      done.set_value();
  }
};

/// An actor system with two scheduler threads. CAF keeps a reference to its config, so the
/// config lives beside the system.
struct system_holder {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  system_holder() {
    cfg.set("scheduler.max-threads", size_t{2});
    sys = std::make_unique<caf::actor_system>(cfg);
  }
};

// ---------------------------------------------------------------- fan-in

struct count_msg {
  uint64_t n;
};

struct fanin_shard {
  using write_msg = count_msg;
  struct read_msg {};
  using read_reply = int;
  struct view {};
  static inline uint64_t quota = 0;
  static inline finish_line* finish = nullptr;
  explicit fanin_shard(shard_context<view>&) {}
  void on_write(write_msg&) {
    if (++seen_ == quota)
      finish->arrive();
  }
  static read_reply on_read(const view&, read_msg&) { return 0; }
  uint64_t seen_ = 0;
};

/// For each shard, a key it owns, so producers can spread evenly (round-robin over shards).
template <class Svc>
std::vector<uint64_t> keys_per_shard(const Svc& svc) {
  std::vector<uint64_t> keys(svc.shards(), UINT64_MAX);
  uint32_t found = 0;
  for (uint64_t k = 1; found < svc.shards(); ++k)
    if (auto s = svc.shard_of(k); keys[s] == UINT64_MAX) {
      keys[s] = k;
      ++found;
    }
  return keys;
}

uint64_t agner_fanin(int producers, uint64_t per_producer, uint32_t shards) {
  system_holder holder;
  auto* sys = holder.sys.get();
  finish_line fin(static_cast<int>(shards));
  fanin_shard::quota = producers * per_producer / shards;
  fanin_shard::finish = &fin;
  service_options o;
  o.shards = shards;
  o.queue_high = INT64_MAX; // measure raw throughput, not backpressure
  service<fanin_shard> svc(*sys, o, [](auto& ctx) { return std::make_unique<fanin_shard>(ctx); }, nullptr);
  auto keys = keys_per_shard(svc);
  std::vector<std::thread> ts;
  for (int p = 0; p < producers; ++p)
    ts.emplace_back([&, p] {
      for (uint64_t i = 0; i < per_producer; ++i)
        svc.cast(keys[(i + p) % shards], count_msg{i});
    });
  for (auto& t : ts)
    t.join();
  fin.done.get_future().wait();
  svc.stop();
  return producers * per_producer;
}

/// Raw CAF: P producer threads anon_send `make(i)` round-robin to K actors that count.
template <class Make>
uint64_t caf_fanin_of(int producers, uint64_t per_producer, uint32_t shards, Make make) {
  using msg_type = decltype(make(uint64_t{0}));
  system_holder holder;
  auto* sys = holder.sys.get();
  finish_line fin(static_cast<int>(shards));
  uint64_t quota = producers * per_producer / shards;
  std::vector<caf::actor> actors;
  for (uint32_t s = 0; s < shards; ++s)
    actors.push_back(sys->spawn([quota, &fin](caf::event_based_actor*) -> caf::behavior {
      auto seen = std::make_shared<uint64_t>(0);
      return {[=, &fin](msg_type&) {
        if (++*seen == quota)
          fin.arrive();
      }};
    }));
  std::vector<std::thread> ts;
  for (int p = 0; p < producers; ++p)
    ts.emplace_back([&, p] {
      for (uint64_t i = 0; i < per_producer; ++i)
        caf::anon_send(actors[(i + p) % shards], make(i));
    });
  for (auto& t : ts)
    t.join();
  fin.done.get_future().wait();
  for (auto& a : actors)
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  return producers * per_producer;
}

/// The peer of issue 2: a builtin uint64_t per message.
uint64_t caf_fanin(int producers, uint64_t per_producer, uint32_t shards) {
  return caf_fanin_of(producers, per_producer, shards, [](uint64_t i) { return i; });
}

/// Raw CAF sending agner's own message type (write_env<count_msg>, an unsafe message type) instead
/// of a builtin uint64_t: separates what CAF charges for a custom type from what agner adds.
uint64_t caf_fanin_env(int producers, uint64_t per_producer, uint32_t shards) {
  return caf_fanin_of(producers, per_producer, shards, [](uint64_t i) { return write_env<count_msg>{count_msg{i}}; });
}

// ---------------------------------------------------------------- ping-pong and ring

struct hop_shard {
  using write_msg = count_msg;
  struct read_msg {};
  using read_reply = int;
  struct view {};
  static inline service<hop_shard>* svc = nullptr;
  static inline finish_line* finish = nullptr;
  explicit hop_shard(shard_context<view>& ctx) : index_(ctx.index()) {}
  void on_write(write_msg& m) {
    if (m.n == 0)
      return finish->arrive();
    svc->cast_to_shard((index_ + 1) % svc->shards(), count_msg{m.n - 1});
  }
  static read_reply on_read(const view&, read_msg&) { return 0; }
  uint32_t index_;
};

uint64_t agner_hops(uint32_t owners, uint64_t hops) {
  system_holder holder;
  auto* sys = holder.sys.get();
  finish_line fin(1);
  hop_shard::finish = &fin;
  service_options o;
  o.shards = owners;
  o.queue_high = INT64_MAX;
  service<hop_shard> svc(*sys, o, [](auto& ctx) { return std::make_unique<hop_shard>(ctx); }, nullptr);
  hop_shard::svc = &svc;
  svc.cast_to_shard(0, count_msg{hops});
  fin.done.get_future().wait();
  svc.stop();
  return hops;
}

uint64_t caf_hops(uint32_t owners, uint64_t hops) {
  system_holder holder;
  auto* sys = holder.sys.get();
  finish_line fin(1);
  std::vector<caf::actor> actors;
  auto next = std::make_shared<std::vector<caf::actor>>();
  for (uint32_t i = 0; i < owners; ++i)
    actors.push_back(sys->spawn([i, owners, next, &fin](caf::event_based_actor* self) -> caf::behavior {
      return {[=, &fin](uint64_t n) {
        if (n == 0)
          return fin.arrive();
        self->send((*next)[(i + 1) % owners], n - 1);
      }};
    }));
  *next = actors;
  caf::anon_send(actors[0], hops);
  fin.done.get_future().wait();
  for (auto& a : actors)
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  next->clear();
  return hops;
}

// ---------------------------------------------------------------- head-of-line

struct hol_msg {
  time_point sent;
};

struct hol_shard {
  using write_msg = hol_msg;
  struct read_msg {
    std::chrono::microseconds work;
  };
  using read_reply = int;
  struct view {};
  static inline metrics::histogram* latency = nullptr;
  explicit hol_shard(shard_context<view>&) {}
  void on_write(write_msg& m) {
    latency->observe(static_cast<uint64_t>((std::chrono::steady_clock::now() - m.sent).count()));
  }
  // A cold read: busy for `work` (standing in for page faults on a history page).
  static read_reply on_read(const view&, read_msg& m) {
    auto until = std::chrono::steady_clock::now() + m.work;
    while (std::chrono::steady_clock::now() < until) {
    }
    return 1;
  }
};

struct hol_result {
  uint64_t p50, p99, reads;
};

hol_result head_of_line(bool with_reads, bool isolated, std::chrono::milliseconds run_for, uint32_t writes_per_sec) {
  system_holder holder;
  auto* sys = holder.sys.get();
  metrics::histogram lat;
  hol_shard::latency = &lat;
  service_options o;
  o.shards = 4;
  o.queue_high = INT64_MAX;
  o.isolated_reads = isolated;
  service<hol_shard> svc(*sys, o, [](auto& ctx) { return std::make_unique<hol_shard>(ctx); }, nullptr);
  auto keys = keys_per_shard(svc);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads{0};
  std::atomic<int> in_flight{0};
  // The read load keeps two 200 us reads queued at every shard: each completion issues the next,
  // so no benchmark thread spins for it (on 2 cores a spinning feeder would be the interference).
  std::function<void(uint32_t)> issue = [&](uint32_t shard) {
    in_flight.fetch_add(1);
    svc.call_async(keys[shard], {200us}, 10s, [&, shard](auto) {
      reads.fetch_add(1);
      if (!stop.load())
        issue(shard);
      in_flight.fetch_sub(1);
    });
  };
  if (with_reads)
    for (uint32_t sh = 0; sh < o.shards; ++sh)
      for (int k = 0; k < 2; ++k)
        issue(sh);
  // Writes go out in bursts every millisecond (the producer sleeps in between, as a gateway
  // thread waiting on its sockets would); latency is measured from each cast.
  const uint32_t per_ms = writes_per_sec / 1000;
  auto start = std::chrono::steady_clock::now();
  auto next = start;
  uint64_t i = 0;
  while (next - start < run_for) {
    std::this_thread::sleep_until(next);
    for (uint32_t k = 0; k < per_ms; ++k)
      svc.cast(keys[i++ % o.shards], hol_msg{std::chrono::steady_clock::now()});
    next += 1ms;
  }
  stop.store(true);
  while (in_flight.load() > 0)
    std::this_thread::yield();
  svc.stop();
  return {lat.quantile(0.5), lat.quantile(0.99), reads.load()};
}

// ---------------------------------------------------------------- Erlang peer

std::map<std::string, std::vector<double>> run_erlang(int producers, uint64_t per_producer, uint32_t shards,
                                                      uint64_t pingpong, uint32_t ring, uint64_t rounds, int repeats) {
  std::map<std::string, std::vector<double>> out;
  std::string dir = AGNER_BENCH_DIR;
  std::string cmd = fmt::format("erlc -o /tmp {0}/actors.erl && erl -noshell -pa /tmp -run actors main {1} {2} {3} {4} {5} {6} {7}",
                                dir, producers, per_producer, shards, pingpong, ring, rounds, repeats);
  FILE* p = popen(cmd.c_str(), "r");
  if (!p)
    return out;
  char line[256];
  while (std::fgets(line, sizeof line, p)) {
    char name[64];
    double v;
    if (std::sscanf(line, "RESULT %63s %lf", name, &v) == 2)
      out[name].push_back(v);
  }
  pclose(p);
  return out;
}

} // namespace

int main() {
  using bench::measure;
  using bench::report;
  const int n = bench::repeats(5);
  const double k = scale();
  const uint32_t shards = 8;
  const auto per_producer = static_cast<uint64_t>(2'000'000 * k);
  const auto pingpong = static_cast<uint64_t>(500'000 * k);
  const uint32_t ring = 503;
  const auto rounds = static_cast<uint64_t>(200 * k);

  fmt::print("bench_actors: {} repeats, 2 CAF scheduler threads, {} shards/actors for fan-in\n\n", n, shards);
  for (int producers : {1, 2}) {
    auto caf_r = measure(fmt::format("fan-in raw CAF anon_send, {} producer(s)", producers), n,
                         [&] { return caf_fanin(producers, per_producer / producers, shards); });
    auto agner_r = measure(fmt::format("fan-in agner cast, {} producer(s)", producers), n,
                           [&] { return agner_fanin(producers, per_producer / producers, shards); });
    auto caf_env = measure(fmt::format("fan-in raw CAF, agner's message type, {} producer(s)", producers), n,
                           [&] { return caf_fanin_env(producers, per_producer / producers, shards); });
    report(caf_r);
    report(caf_env, &caf_r);
    report(agner_r, &caf_r);
    report(agner_r, &caf_env);
    if (producers == 1) {
      auto erl = run_erlang(1, per_producer, shards, pingpong, ring, rounds, n);
      auto erl_fanin = bench::from_samples("fan-in Erlang/OTP 25, 1 producer", erl["fanin"]);
      report(erl_fanin);
      report(agner_r, &erl_fanin);
      auto caf_pp = measure("ping-pong raw CAF", n, [&] { return caf_hops(2, pingpong); });
      auto agner_pp = measure("ping-pong agner", n, [&] { return agner_hops(2, pingpong); });
      auto erl_pp = bench::from_samples("ping-pong Erlang/OTP 25", erl["pingpong"]);
      report(caf_pp);
      report(erl_pp);
      report(agner_pp, &caf_pp);
      report(agner_pp, &erl_pp);
      auto caf_ring = measure("ring of 503, raw CAF", n, [&] { return caf_hops(ring, ring * rounds); });
      auto agner_ring = measure("ring of 503, agner", n, [&] { return agner_hops(ring, ring * rounds); });
      auto erl_ring = bench::from_samples("ring of 503, Erlang/OTP 25", erl["ring"]);
      report(caf_ring);
      report(erl_ring);
      report(agner_ring, &caf_ring);
      report(agner_ring, &erl_ring);
    }
  }

  fmt::print("\nhead-of-line: 20k writes/s (bursts of 20 per ms) over 4 shards for 2 s, with and without 2x200us reads queued per shard\n");
  for (bool isolated : {true, false}) {
    std::vector<double> unloaded, loaded;
    for (int i = 0; i < n; ++i) {
      auto u = head_of_line(false, isolated, 2000ms, 20'000);
      auto l = head_of_line(true, isolated, 2000ms, 20'000);
      fmt::print("  {} run {}: unloaded p50 {:.1f} us p99 {:.1f} us | loaded p50 {:.1f} us p99 {:.1f} us ({} reads)\n",
                 isolated ? "isolated" : "shared", i, u.p50 / 1e3, u.p99 / 1e3, l.p50 / 1e3, l.p99 / 1e3, l.reads);
      unloaded.push_back(static_cast<double>(u.p99));
      loaded.push_back(static_cast<double>(l.p99));
    }
    auto tag = isolated ? "isolated read lanes" : "reads on the shared scheduler";
    auto ur = bench::from_samples(fmt::format("write p99 unloaded, {}", tag), unloaded, "ns");
    auto lr = bench::from_samples(fmt::format("write p99 heavy reads, {}", tag), loaded, "ns");
    report(ur);
    report(lr, &ur);
  }
}
