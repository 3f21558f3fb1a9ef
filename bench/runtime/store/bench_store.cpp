// Store benchmarks, each beside its peer in the same run: durable appends spread over 100k streams
// (uniform and Zipf) vs raw LMDB sequential puts at 1000 per commit; history pages vs a raw LMDB
// range scan; and the share of inbox entries a WhatsApp-like trace never writes to disk.
// Data goes under $AGNER_BENCH_DIR (default /tmp) and is deleted afterwards.
#include "bench/harness.hpp"
#include "runtime/clock.hpp"
#include "runtime/metrics.hpp"
#include "runtime/store/key_codec.hpp"
#include "runtime/store/store.hpp"
#include "runtime/store/write_back_cache.hpp"

#include <lmdb.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <queue>
#include <random>
#include <thread>

using namespace agner;
using namespace agner::store;

namespace {

constexpr size_t message_bytes = 200;          // the message size
constexpr uint64_t streams = 100'000;          // conversations the appends are spread over
constexpr size_t raw_puts_per_commit = 1000;   // the raw LMDB peer's batch
constexpr uint64_t raw_puts_per_sample = 200'000;
constexpr uint64_t appends_per_sample = 400'000;
constexpr size_t appends_per_batch = 64;       // what one shard hands over per mailbox drain
constexpr size_t history_page = 50;
// Batches in flight from the producer: enough to fill two full group commits, so the writer is
// never idle, yet acknowledgement latency measures the store and not an ever longer queue.
constexpr int batches_in_flight_max = 256;

std::string bench_dir() {
  const char* base = std::getenv("AGNER_BENCH_DIR");
  std::string tmpl = fmt::format("{}/agner-bench-store-XXXXXX", base ? base : "/tmp");
  if (!mkdtemp(tmpl.data()))
    throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

void check(int rc, const char* what) {
  if (rc != 0)
    throw std::runtime_error(fmt::format("{}: {}", what, mdb_strerror(rc)));
}

// Raw LMDB: sequential 8-byte keys, 200-byte values, 1000 puts per fully synced commit.
class raw_lmdb {
public:
  explicit raw_lmdb(const std::string& dir) {
    std::filesystem::create_directories(dir);
    check(mdb_env_create(&env_), "create");
    check(mdb_env_set_mapsize(env_, size_t{8} << 30), "mapsize");
    check(mdb_env_open(env_, dir.c_str(), 0, 0600), "open");
  }
  ~raw_lmdb() { mdb_env_close(env_); }

  uint64_t put_batch_sample() {
    std::string value(message_bytes, 'v');
    for (uint64_t done = 0; done < raw_puts_per_sample; done += raw_puts_per_commit) {
      MDB_txn* txn;
      check(mdb_txn_begin(env_, nullptr, 0, &txn), "begin");
      MDB_dbi dbi;
      check(mdb_dbi_open(txn, nullptr, 0, &dbi), "dbi");
      for (size_t i = 0; i < raw_puts_per_commit; ++i) {
        char k[8];
        put_u64_be(k, next_key_++);
        MDB_val key{8, k}, val{value.size(), value.data()};
        check(mdb_put(txn, dbi, &key, &val, 0), "put");
      }
      check(mdb_txn_commit(txn), "commit");
    }
    return raw_puts_per_sample;
  }

  // Reads `history_page` consecutive records at a random place: the best case a page can have.
  uint64_t scan_sample(uint64_t pages, std::mt19937_64& rng) {
    uint64_t bytes = 0;
    for (uint64_t p = 0; p < pages; ++p) {
      MDB_txn* txn;
      check(mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn), "begin");
      MDB_dbi dbi;
      check(mdb_dbi_open(txn, nullptr, 0, &dbi), "dbi");
      MDB_cursor* c;
      check(mdb_cursor_open(txn, dbi, &c), "cursor");
      char k[8];
      put_u64_be(k, rng() % (next_key_ - history_page));
      MDB_val key{8, k}, val;
      int rc = mdb_cursor_get(c, &key, &val, MDB_SET_RANGE);
      for (size_t i = 0; i < history_page && rc == 0; ++i) {
        std::string copy(static_cast<const char*>(val.mv_data), val.mv_size); // as the store copies
        bytes += copy.size();
        rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
      }
      mdb_cursor_close(c);
      mdb_txn_abort(txn);
    }
    bench::keep(bytes);
    return pages;
  }

private:
  MDB_env* env_ = nullptr;
  uint64_t next_key_ = 0;
};

// Zipf(s) over [0, n): a precomputed CDF and a binary search.
class zipf {
public:
  zipf(uint64_t n, double s) : cdf_(n) {
    double sum = 0;
    for (uint64_t i = 0; i < n; ++i)
      cdf_[i] = (sum += 1.0 / std::pow(static_cast<double>(i + 1), s));
    for (auto& c : cdf_)
      c /= sum;
  }
  uint64_t operator()(std::mt19937_64& rng) const {
    double u = std::uniform_real_distribution<double>(0, 1)(rng);
    return static_cast<uint64_t>(std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin());
  }

private:
  std::vector<double> cdf_;
};

// Durable appends from one producer (a shard), in batches, with a bounded number in flight.
struct append_run {
  node_store& s;
  std::vector<uint64_t> next_seq = std::vector<uint64_t>(streams, 1);
  metrics::histogram ack_ns{1e-9};

  template <class Pick>
  uint64_t sample(Pick pick, std::mt19937_64& rng) {
    std::string payload(message_bytes, 'm');
    std::atomic<uint64_t> durable{0};
    std::atomic<int> in_flight{0};
    std::mutex mu;
    std::condition_variable cv;
    for (uint64_t sent = 0; sent < appends_per_sample; sent += appends_per_batch) {
      write_batch b;
      for (size_t i = 0; i < appends_per_batch; ++i) {
        uint64_t st = pick(rng);
        b.append(st, next_seq[st]++, payload);
      }
      while (in_flight.load(std::memory_order_acquire) >= batches_in_flight_max)
        std::this_thread::yield();
      in_flight.fetch_add(1);
      auto t0 = std::chrono::steady_clock::now();
      auto done = [&, t0](const commit_result& r) {
        if (r.status != write_status::durable)
          std::abort();
        ack_ns.observe(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count()));
        in_flight.fetch_sub(1, std::memory_order_release);
        if (durable.fetch_add(r.appends) + r.appends == appends_per_sample) {
          std::lock_guard lk(mu);
          cv.notify_all();
        }
      };
      while (!s.submit(std::move(b), done))
        std::this_thread::yield(); // backpressure: queue_bytes_max reached
    }
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return durable.load() == appends_per_sample; });
    lk.unlock();
    s.flush_index(); // charge the index build to the run that caused it
    return appends_per_sample;
  }
};

double ms(uint64_t ns) { return static_cast<double>(ns) / 1e6; }

void bench_appends(const std::string& root, int n) {
  raw_lmdb raw(root + "/raw");
  auto peer = bench::measure("raw LMDB seq puts, 1000/commit, 200 B", n, [&] { return raw.put_batch_sample(); });
  bench::report(peer);

  for (int skewed = 0; skewed < 2; ++skewed) {
    std::string dir = root + (skewed ? "/zipf" : "/uniform");
    metrics::registry m;
    store_options o;
    o.data_dir = dir;
    o.map_size_bytes = size_t{8} << 30;
    auto& commit_ns = m.make_histogram("agner_store_commit_seconds", "", {}, 1e-9);
    auto& writes = m.make_histogram("agner_store_commit_writes", "");
    std::mt19937_64 rng(42);
    zipf z(streams, 1.0);
    bench::result r;
    double p99_ack = 0;
    {
      node_store s(o, m);
      append_run run{s};
      if (skewed)
        r = bench::measure("durable appends, Zipf(1.0) over 100k streams", n,
                           [&] { return run.sample([&](std::mt19937_64& g) { return z(g); }, rng); });
      else
        r = bench::measure("durable appends, uniform over 100k streams", n,
                           [&] { return run.sample([](std::mt19937_64& g) { return g() % streams; }, rng); });
      p99_ack = ms(run.ack_ns.quantile(0.99));
    }
    bench::report(r, &peer);
    fmt::print("    commit latency p50 {:.2f} ms  p99 {:.2f} ms  max-bucket {:.2f} ms; writes/commit mean {:.0f}; "
               "ack latency p99 {:.2f} ms\n",
               ms(commit_ns.quantile(0.5)), ms(commit_ns.quantile(0.99)), ms(commit_ns.quantile(1.0)),
               writes.count() ? static_cast<double>(writes.sum()) / writes.count() : 0.0, p99_ack);
    std::filesystem::remove_all(dir);
  }
}

void bench_history(const std::string& root, int n) {
  // 2000 conversations x 200 messages, interleaved in the log as real traffic would be.
  constexpr uint64_t convs = 2000, per_conv = 200, pages = 20000;
  metrics::registry m;
  store_options o;
  o.data_dir = root + "/history";
  o.map_size_bytes = size_t{8} << 30;
  node_store s(o, m);
  std::string payload(message_bytes, 'h');
  std::mt19937_64 rng(7);
  for (uint64_t seq = 1; seq <= per_conv; ++seq) {
    write_batch b;
    for (uint64_t c = 0; c < convs; ++c)
      b.append(c, seq, payload);
    while (!s.submit(std::move(b), {}))
      std::this_thread::yield();
  }
  s.flush_index();
  raw_lmdb raw(root + "/history-raw");
  raw.put_batch_sample();
  auto peer = bench::measure("raw LMDB 50-record range scan", n, [&] { return raw.scan_sample(pages, rng); });
  auto r = bench::measure("history page: 50 before a random seq", n, [&] {
    uint64_t got = 0;
    for (uint64_t p = 0; p < pages; ++p) {
      uint64_t before = history_page + 1 + rng() % (per_conv - history_page);
      got += s.history_before(rng() % convs, before, history_page).size();
    }
    if (got != pages * history_page)
      std::abort();
    return pages;
  });
  r.unit = peer.unit = "pages/s";
  bench::report(peer);
  bench::report(r, &peer);
}

// A WhatsApp-like inbox trace on virtual time: messages land in users' inboxes; half are
// acknowledged within 60 s, most of the rest within minutes, a few users stay offline for hours.
void bench_trace(const std::string& dir, std::chrono::minutes window) {
  constexpr uint64_t users = 100'000;
  constexpr double per_second = 1000;       // inbox inserts per second of virtual time
  constexpr int measure_from_s = 10 * 60;   // warm-up
  constexpr int measure_to_s = 30 * 60;
  constexpr int run_to_s = 45 * 60;         // let the measured entries meet their fate
  metrics::registry m;
  virtual_clock clk;
  store_options o;
  o.data_dir = dir;
  o.map_size_bytes = size_t{8} << 30;
  o.flush_window_ms = window;
  o.cache_budget_bytes = size_t{512} << 20;
  node_store s(o, m);
  std::mutex mu;
  std::deque<std::pair<flush_ticket, write_status>> results;
  write_back_cache c(s, clk, m, "0", [&](flush_ticket t, write_status st) {
    std::lock_guard lk(mu);
    results.push_back({t, st});
  });
  auto deliver = [&] {
    std::deque<std::pair<flush_ticket, write_status>> q;
    {
      std::lock_guard lk(mu);
      q.swap(results);
    }
    for (auto [t, st] : q)
      c.on_flushed(t, st);
  };
  std::mt19937_64 rng(99);
  zipf who(users, 0.8);
  std::vector<uint64_t> next_seq(users, 0);
  struct ack {
    double at;
    uint64_t user, seq;
    bool measured;
    bool operator>(const ack& o) const { return at > o.at; }
  };
  std::priority_queue<ack, std::vector<ack>, std::greater<>> acks;
  std::exponential_distribution<double> tail(1.0 / 120.0); // mean 2 min after the first minute
  std::string value(32, 'i'); // an inbox entry: a reference to a log record
  auto start = clk.now();
  auto key = [](uint64_t user, uint64_t seq) { return key_builder().u8(1).u64(user).u64(seq).str(); };
  uint64_t measured = 0, measured_never = 0;
  cache_stats before{};
  double t = 0;
  int last_flush_s = -1;
  auto t0 = std::chrono::steady_clock::now();
  while (t < run_to_s) {
    t += std::exponential_distribution<double>(per_second)(rng);
    while (!acks.empty() && acks.top().at <= t) {
      auto a = acks.top();
      acks.pop();
      clk.set(start + std::chrono::duration_cast<duration>(std::chrono::duration<double>(a.at)));
      uint64_t nw = c.stats().never_written;
      c.del(a.user, key(a.user, a.seq));
      if (a.measured && c.stats().never_written > nw)
        ++measured_never; // acknowledged before it was ever written
    }
    clk.set(start + std::chrono::duration_cast<duration>(std::chrono::duration<double>(t)));
    if (static_cast<int>(t) != last_flush_s) {
      last_flush_s = static_cast<int>(t); // the shard's flush timer, once a second
      deliver();
      c.flush();
      if (last_flush_s == measure_from_s)
        before = c.stats();
    }
    if (t >= measure_to_s)
      continue; // only acknowledgements from here on
    uint64_t u = who(rng);
    uint64_t seq = next_seq[u]++;
    c.insert(u, key(u, seq), value);
    bool in_window = t >= measure_from_s;
    measured += in_window;
    double r = std::uniform_real_distribution<double>(0, 1)(rng);
    double delay = r < 0.50 ? 60.0 * r / 0.50         // half within 60 s
                   : r < 0.97 ? 60.0 + tail(rng)      // most of the rest within minutes
                              : 6 * 3600.0;           // 3% offline for hours
    acks.push({t + delay, u, seq, in_window});
  }
  deliver();
  auto st = c.stats();
  double never = static_cast<double>(measured_never);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print("inbox trace, flush window {:>3} min: {:.1f}% of {} inbox entries never reached the disk "
             "(goal >= 95%); writes avoided {}, flushed {}, evicted owners {}; cache {:.0f} MiB; {:.1f} s wall\n",
             window.count(), 100.0 * never / static_cast<double>(measured), measured,
             st.writes_avoided - before.writes_avoided, st.writes_flushed - before.writes_flushed,
             st.evicted_owners - before.evicted_owners, static_cast<double>(c.bytes()) / (1 << 20), secs);
  std::fflush(stdout);
  while (c.flushes_in_flight() > 0) {
    deliver();
    std::this_thread::yield();
  }
}

} // namespace

int main() {
  std::string root = bench_dir();
  int n = bench::repeats(5);
  fmt::print("bench_store: data under {}, {} repeats\n", root, n);
  try {
    bench_appends(root, n);
    bench_history(root, n);
    bench_trace(root + "/trace-1", std::chrono::minutes(1));
    bench_trace(root + "/trace-10", std::chrono::minutes(10));
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_store: {}\n", e.what());
    std::filesystem::remove_all(root);
    return 1;
  }
  std::filesystem::remove_all(root);
}
