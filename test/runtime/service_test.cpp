// Sharded services: ordering, watermarks, lanes, call timeouts, restarts. Ordering and watermark
// tests run on CAF's deterministic test scheduler; lane and timeout tests block a real read lane
// on a latch (no sleeps: the only waits are on events the test itself triggers).
#include "runtime/service.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <doctest/doctest.h>

#include <future>
#include <optional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

using namespace agner;
using namespace std::chrono_literals;

namespace {

/// Stand-in for durable storage that survives shard restarts.
struct durable {
  std::mutex mu;
  std::map<uint64_t, std::vector<int64_t>> values;
  int builds = 0;
};

struct gate {
  std::promise<void> entered;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
};

/// A shard that appends values per key; a value of -1 throws (a poison message).
struct kv_shard {
  struct write_msg {
    uint64_t key;
    int64_t value;
  };
  struct read_msg {
    uint64_t key;
    std::shared_ptr<gate> hold; // if set, the read blocks until released
  };
  using read_reply = std::vector<int64_t>;
  struct view {
    std::map<uint64_t, std::vector<int64_t>> values;
  };

  kv_shard(shard_context<view>& ctx, durable& d) : ctx_(ctx), d_(d) {
    std::lock_guard lock(d_.mu);
    ++d_.builds;
    publish_locked();
  }

  void on_write(write_msg& m) {
    if (m.value == -1)
      throw std::runtime_error("poison");
    std::lock_guard lock(d_.mu);
    d_.values[m.key].push_back(m.value);
    publish_locked();
  }

  static read_reply on_read(const view& v, read_msg& m) {
    if (m.hold) {
      m.hold->entered.set_value();
      m.hold->released.wait();
    }
    auto it = v.values.find(m.key);
    return it == v.values.end() ? read_reply{} : it->second;
  }

private:
  void publish_locked() { ctx_.publish(std::make_shared<const view>(view{d_.values})); }
  shard_context<view>& ctx_;
  durable& d_;
};

using kv_service = service<kv_shard>;

kv_service::factory make_factory(durable& d) {
  return [&d](shard_context<kv_shard::view>& ctx) { return std::make_unique<kv_shard>(ctx, d); };
}

struct test_system {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  test_system() {
    cfg.set("scheduler.policy", caf::atom("testing"));
    sys = std::make_unique<caf::actor_system>(cfg);
  }
  caf::scheduler::test_coordinator& sched() { return dynamic_cast<caf::scheduler::test_coordinator&>(sys->scheduler()); }
};

struct real_system {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  real_system() {
    cfg.set("scheduler.max-threads", size_t{2});
    sys = std::make_unique<caf::actor_system>(cfg);
  }
};

} // namespace

TEST_CASE("casts from one sender to one key are applied in the order they were sent") {
  test_system ts;
  durable d;
  service_options o;
  o.isolated_reads = false; // detached lanes would run outside the deterministic scheduler
  o.shards = 4;
  kv_service svc(*ts.sys, o, make_factory(d), nullptr);
  for (int64_t i = 0; i < 500; ++i)
    for (uint64_t k = 0; k < 10; ++k)
      svc.cast(k, {k, i});
  ts.sched().run();
  for (uint64_t k = 0; k < 10; ++k) {
    REQUIRE(d.values[k].size() == 500);
    for (int64_t i = 0; i < 500; ++i)
      REQUIRE(d.values[k][i] == i);
  }
  svc.stop(false);
  ts.sched().run();
}

TEST_CASE("a shard turns overloaded at the high watermark and clears at the low one") {
  test_system ts;
  durable d;
  service_options o;
  o.isolated_reads = false; // detached lanes would run outside the deterministic scheduler
  o.shards = 2;
  o.queue_high = 10;
  o.queue_low = 3;
  kv_service svc(*ts.sys, o, make_factory(d), nullptr);
  ts.sched().run(); // let the lane actors start, so each run_once below handles one message
  const uint64_t key = 5;
  auto shard = svc.shard_of(key);
  for (int i = 0; i < 9; ++i)
    svc.cast(key, {key, i});
  CHECK_FALSE(svc.overloaded(key));
  svc.cast(key, {key, 9});
  CHECK(svc.overloaded(key));
  CHECK(svc.stats(shard).overload_events.load() == 1);
  // Drain one message at a time: overloaded holds until the depth reaches the low watermark.
  int handled = 0;
  while (svc.stats(shard).write_depth() > 3) {
    CHECK(svc.overloaded(key));
    ts.sched().run_once();
    ++handled;
  }
  CHECK_FALSE(svc.overloaded(key));
  CHECK(handled == 7);
  // Nothing was dropped while overloaded.
  ts.sched().run();
  CHECK(d.values[key].size() == 10);
  svc.stop(false);
  ts.sched().run();
}

TEST_CASE("a slow read does not delay writes on the same shard") {
  real_system rs;
  durable d;
  service_options o;
  o.shards = 1;
  kv_service svc(*rs.sys, o, make_factory(d), nullptr);
  auto g = std::make_shared<gate>();
  auto entered = g->entered.get_future();
  std::promise<caf::expected<std::vector<int64_t>>> reply;
  svc.call_async(uint64_t{1}, {1, g}, 10s, [&](caf::expected<std::vector<int64_t>> r) { reply.set_value(std::move(r)); });
  entered.wait(); // the read lane is now blocked inside a read
  // Writes still flow: cast 100 values and observe them through a second, unblocked path.
  for (int64_t i = 0; i < 100; ++i)
    svc.cast(uint64_t{1}, {1, i});
  bool applied = false;
  for (int spin = 0; spin < 10'000'000 && !applied; ++spin) {
    std::lock_guard lock(d.mu);
    applied = d.values[1].size() == 100;
  }
  CHECK(applied);
  g->release.set_value();
  auto r = reply.get_future().get();
  REQUIRE(r);
  svc.stop();
}

TEST_CASE("a call that is not answered in time fails with request_timeout") {
  real_system rs;
  durable d;
  service_options o;
  o.shards = 1;
  kv_service svc(*rs.sys, o, make_factory(d), nullptr);
  auto g = std::make_shared<gate>();
  std::promise<void> first_done;
  svc.call_async(uint64_t{1}, {1, g}, 10s, [&](auto) { first_done.set_value(); });
  g->entered.get_future().wait();
  // The read lane is busy: this call waits in its queue and must time out.
  auto r = svc.call(uint64_t{1}, {1, nullptr}, 50ms);
  REQUIRE_FALSE(r);
  CHECK(r.error() == caf::sec::request_timeout);
  g->release.set_value();
  first_done.get_future().wait();
  // Once the lane is free, a call succeeds.
  svc.cast(uint64_t{1}, {1, 7});
  std::vector<int64_t> got;
  for (int i = 0; i < 1000 && got.empty(); ++i) {
    auto ok = svc.call(uint64_t{1}, {1, nullptr}, 1s);
    REQUIRE(ok);
    got = *ok;
  }
  CHECK(got == std::vector<int64_t>{7});
  svc.stop();
}

TEST_CASE("a read that waited past its deadline is answered without running") {
  test_system ts;
  durable d;
  service_options o;
  o.isolated_reads = false; // detached lanes would run outside the deterministic scheduler
  o.shards = 1;
  virtual_clock clk;
  kv_service svc(*ts.sys, o, make_factory(d), nullptr, nullptr, clk);
  std::optional<caf::expected<std::vector<int64_t>>> got;
  svc.call_async(uint64_t{3}, {3, nullptr}, 100ms, [&](caf::expected<std::vector<int64_t>> r) { got = std::move(r); });
  clk.advance(200ms);
  ts.sched().run();
  REQUIRE(got.has_value());
  REQUIRE_FALSE(*got);
  CHECK(got->error() == caf::sec::request_timeout);
  svc.stop(false);
  ts.sched().run();
}

TEST_CASE("a shard that throws is restarted from durable state and keeps its queue") {
  test_system ts;
  durable d;
  service_options o;
  o.isolated_reads = false; // detached lanes would run outside the deterministic scheduler
  o.shards = 1;
  o.restarts = {3, 10s};
  std::string escalated;
  kv_service svc(*ts.sys, o, make_factory(d), [&](const std::string& why) { escalated = why; });
  svc.cast(uint64_t{1}, {1, 10});
  svc.cast(uint64_t{1}, {1, -1}); // crashes the shard
  svc.cast(uint64_t{1}, {1, 11});
  ts.sched().run();
  CHECK(d.builds == 2); // built at start, rebuilt once
  CHECK(svc.restarts() == 1);
  CHECK(d.values[1] == std::vector<int64_t>{10, 11}); // the poison was dropped, the rest applied
  CHECK(escalated.empty());
  svc.stop(false);
  ts.sched().run();
}

TEST_CASE("more restarts than the intensity within the period escalate") {
  test_system ts;
  durable d;
  service_options o;
  o.isolated_reads = false; // detached lanes would run outside the deterministic scheduler
  o.name = "kv";
  o.shards = 1;
  o.restarts = {2, 10s};
  virtual_clock clk;
  std::string escalated;
  kv_service svc(*ts.sys, o, make_factory(d), [&](const std::string& why) { escalated = why; }, nullptr, clk);
  svc.cast(uint64_t{1}, {1, -1});
  svc.cast(uint64_t{1}, {1, -1});
  ts.sched().run();
  CHECK(escalated.empty());
  CHECK(svc.restarts() == 2);
  svc.cast(uint64_t{1}, {1, -1});
  ts.sched().run();
  CHECK(escalated.find("more than 2 restarts") != std::string::npos);
  CHECK(escalated.find("kv") != std::string::npos);
  svc.stop(false);
  ts.sched().run();
}

TEST_CASE("restarts spread wider than the period do not escalate") {
  test_system ts;
  durable d;
  service_options o;
  o.isolated_reads = false; // detached lanes would run outside the deterministic scheduler
  o.shards = 1;
  o.restarts = {1, 5s};
  virtual_clock clk;
  bool escalated = false;
  kv_service svc(*ts.sys, o, make_factory(d), [&](const std::string&) { escalated = true; }, nullptr, clk);
  for (int i = 0; i < 5; ++i) {
    svc.cast(uint64_t{1}, {1, -1});
    ts.sched().run();
    clk.advance(6s);
  }
  CHECK_FALSE(escalated);
  CHECK(svc.restarts() == 5);
  svc.stop(false);
  ts.sched().run();
}

TEST_CASE("shard metrics are registered per service and shard") {
  test_system ts;
  durable d;
  metrics::registry reg;
  service_options o;
  o.isolated_reads = false; // detached lanes would run outside the deterministic scheduler
  o.name = "users";
  o.shards = 2;
  kv_service svc(*ts.sys, o, make_factory(d), nullptr, &reg);
  svc.cast(uint64_t{1}, {1, 1});
  auto text = reg.render();
  CHECK(text.find("agner_shard_write_queue{service=\"users\",shard=\"" + std::to_string(svc.shard_of(uint64_t{1})) + "\"} 1") !=
        std::string::npos);
  ts.sched().run();
  CHECK(reg.render().find("agner_service_restarts_total{service=\"users\"} 0") != std::string::npos);
  svc.stop(false);
  ts.sched().run();
}

namespace {

/// A shard with a per-key deadline on its own timer wheel: `delay_ms > 0` (re-)arms the key's
/// timer, 0 cancels it. Firings are recorded with their deadlines.
struct timed_shard {
  struct fired_log {
    std::mutex mu;
    std::map<uint64_t, std::pair<time_point, time_point>> fired; // key -> (deadline, fired at)
    std::atomic<int> count{0};
  };
  struct write_msg {
    uint64_t key;
    int delay_ms;
  };
  struct read_msg {};
  using read_reply = int;
  struct view {};
  struct entry {
    entry(timed_shard& s, uint64_t k) : shard(&s), key(k), t(&timed_shard::on_fire, this) {}
    timed_shard* shard;
    uint64_t key;
    time_point deadline{};
    agner::timer t;
  };

  timed_shard(shard_context<view>& ctx, fired_log& log) : ctx_(ctx), log_(log) {}

  void on_write(write_msg& m) {
    if (m.delay_ms == 0) {
      entries_.erase(m.key); // the timer's destructor cancels it
      return;
    }
    auto& e = entries_.try_emplace(m.key, *this, m.key).first->second;
    e.deadline = steady_clock_source::instance().now() + std::chrono::milliseconds(m.delay_ms);
    ctx_.wheel().arm(e.t, e.deadline);
  }
  static read_reply on_read(const view&, read_msg&) { return 0; }

  static void on_fire(agner::timer&, void* p) {
    auto& e = *static_cast<entry*>(p);
    auto& log = e.shard->log_;
    {
      std::lock_guard lock(log.mu);
      log.fired[e.key] = {e.deadline, steady_clock_source::instance().now()};
    }
    log.count.fetch_add(1);
    e.shard->entries_.erase(e.key); // destroys the timer inside its own callback
  }

private:
  shard_context<view>& ctx_;
  fired_log& log_;
  std::map<uint64_t, entry> entries_;
};

} // namespace

TEST_CASE("a shard's own timer wheel fires per-key deadlines on time, and cancelled ones never") {
  real_system rs;
  timed_shard::fired_log log;
  service_options o;
  o.shards = 2;
  service<timed_shard> svc(
    *rs.sys, o, [&log](auto& ctx) { return std::make_unique<timed_shard>(ctx, log); }, nullptr);
  constexpr int keys = 2000;
  for (int k = 0; k < keys; ++k)
    svc.cast(uint64_t(k), {uint64_t(k), 20 + k % 60});
  for (int k = 0; k < keys; k += 10)
    svc.cast(uint64_t(k), {uint64_t(k), 0}); // cancel every tenth
  for (int k = 1; k < keys; k += 10)
    svc.cast(uint64_t(k), {uint64_t(k), 100}); // re-arm later
  const int expected = keys - keys / 10;
  for (int i = 0; i < 500 && log.count.load() < expected; ++i)
    std::this_thread::sleep_for(10ms);
  std::this_thread::sleep_for(100ms); // a cancelled one that wrongly fired would show up now
  std::lock_guard lock(log.mu);
  CHECK(log.count.load() == expected);
  CHECK(log.fired.size() == size_t(expected));
  for (int k = 0; k < keys; k += 10)
    CHECK(log.fired.count(uint64_t(k)) == 0);
  for (auto& [key, when] : log.fired) {
    CHECK(when.second >= when.first); // never before its deadline
    CHECK(when.second - when.first < 2s); // and no later than a loose bound for a loaded box
  }
  svc.stop();
}

namespace {
/// Home loops for shards: event loops on their own threads, like the node's I/O threads.
struct home_loops {
  std::vector<std::unique_ptr<boost::asio::io_context>> ios;
  std::vector<std::thread> threads;
  std::vector<std::thread::id> ids;
  explicit home_loops(int n) {
    for (int i = 0; i < n; ++i)
      ios.push_back(std::make_unique<boost::asio::io_context>(1));
    for (auto& io : ios)
      threads.emplace_back([io = io.get()] {
        auto guard = boost::asio::make_work_guard(*io);
        io->run();
      });
    for (auto& t : threads)
      ids.push_back(t.get_id());
  }
  ~home_loops() {
    for (auto& io : ios)
      io->stop();
    for (auto& t : threads)
      t.join();
  }
  std::vector<std::function<void(std::function<void()>)>> posters() {
    std::vector<std::function<void(std::function<void()>)>> out;
    for (auto& io : ios)
      out.push_back([io = io.get()](std::function<void()> f) { boost::asio::post(*io, std::move(f)); });
    return out;
  }
};

/// Records which thread ran each write, per key, besides what kv_shard does.
struct where_shard : kv_shard {
  static inline std::mutex mu;
  static inline std::map<uint64_t, std::set<std::thread::id>> threads;
  using kv_shard::kv_shard;
  void on_write(write_msg& m) {
    {
      std::lock_guard lock(mu);
      threads[m.key].insert(std::this_thread::get_id());
    }
    kv_shard::on_write(m);
  }
};
} // namespace

TEST_CASE("on home loops, each shard runs on its own loop's thread, in cast order, and restarts in place") {
  real_system rs;
  home_loops homes(2);
  durable d;
  service_options o;
  o.shards = 4;
  o.homes = homes.posters();
  o.restarts = {3, 10s};
  where_shard::threads.clear();
  service<where_shard> svc(
    *rs.sys, o, [&d](auto& ctx) { return std::make_unique<where_shard>(ctx, d); }, nullptr);
  // Casts from two threads at once, as from two I/O threads.
  auto producer = [&](uint64_t first) {
    for (int64_t i = 0; i < 2000; ++i)
      for (uint64_t k = first; k < first + 8; ++k)
        svc.cast(k, {k, i});
  };
  std::thread a(producer, 0), b(producer, 8);
  a.join();
  b.join();
  svc.cast(uint64_t{100}, {100, 1});
  svc.cast(uint64_t{100}, {100, -1}); // crashes that shard
  svc.cast(uint64_t{100}, {100, 2});
  auto all_in = [&] {
    std::lock_guard lock(d.mu);
    bool done = d.values[100].size() == 2;
    for (uint64_t k = 0; k < 16; ++k)
      done = done && d.values[k].size() == 2000;
    return done;
  };
  for (int i = 0; i < 2000 && !all_in(); ++i)
    std::this_thread::sleep_for(10ms);
  std::lock_guard lock(d.mu);
  for (uint64_t k = 0; k < 16; ++k) {
    REQUIRE(d.values[k].size() == 2000);
    for (int64_t i = 0; i < 2000; ++i)
      REQUIRE(d.values[k][i] == i);
    // One thread per key, and it is the home loop of the key's shard.
    auto shard = svc.shard_of(k);
    CHECK(where_shard::threads[k] == std::set<std::thread::id>{homes.ids[shard % 2]});
  }
  CHECK(d.values[100] == std::vector<int64_t>{1, 2}); // the poison was dropped, the rest applied
  CHECK(svc.restarts() == 1);
  CHECK(svc.stats(svc.shard_of(uint64_t{100})).write_depth() == 0);
}

TEST_CASE("on home loops, delayed casts and per-key timers run on the home loop; nothing runs after stop") {
  real_system rs;
  home_loops homes(1);
  timed_shard::fired_log log;
  service_options o;
  o.shards = 2;
  o.homes = homes.posters();
  auto svc = std::make_unique<service<timed_shard>>(
    *rs.sys, o, [&log](auto& ctx) { return std::make_unique<timed_shard>(ctx, log); }, nullptr);
  for (int k = 0; k < 200; ++k)
    svc->cast(uint64_t(k), {uint64_t(k), 20 + k % 30});
  for (int k = 0; k < 200; k += 10)
    svc->cast(uint64_t(k), {uint64_t(k), 0}); // cancel every tenth
  svc->cast_later(0, 30ms, {1000, 10}); // a delayed cast arms one more timer
  const int expected = 200 - 20 + 1;
  for (int i = 0; i < 500 && log.count.load() < expected; ++i)
    std::this_thread::sleep_for(10ms);
  {
    std::lock_guard lock(log.mu);
    CHECK(log.count.load() == expected);
    for (auto& [key, when] : log.fired)
      CHECK(when.second >= when.first);
  }
  // Casts racing with stop() either run before it returns or never; after it, nothing runs.
  for (int k = 0; k < 50; ++k)
    svc->cast(uint64_t(5000 + k), {uint64_t(5000 + k), 1});
  svc->stop();
  int at_stop = log.count.load();
  for (int k = 0; k < 50; ++k)
    svc->cast(uint64_t(6000 + k), {uint64_t(6000 + k), 1});
  std::this_thread::sleep_for(100ms); // 1 ms timers that ran would have fired by now
  CHECK(log.count.load() == at_stop);
  svc.reset();
}

TEST_CASE("on home loops, the casts of a burst post one drain per shard, when the burst ends") {
  // As a group commit's completions or a shard's drain do (runtime/wake_batch.hpp): the home loop
  // is woken once for everything the burst handed it, not at the first cast.
  real_system rs;
  home_loops homes(1);
  std::atomic<int> posts{0};
  durable d;
  service_options o;
  o.shards = 2;
  for (auto& post : homes.posters())
    o.homes.push_back([post, &posts](std::function<void()> f) {
      posts.fetch_add(1);
      post(std::move(f));
    });
  service<kv_shard> svc(
    *rs.sys, o, [&d](auto& ctx) { return std::make_unique<kv_shard>(ctx, d); }, nullptr);
  auto applied = [&](uint64_t keys, size_t each) {
    for (int i = 0; i < 500; ++i) {
      {
        std::lock_guard lock(d.mu);
        bool all = true;
        for (uint64_t k = 0; k < keys; ++k)
          all = all && d.values[k].size() == each;
        if (all)
          return true;
      }
      std::this_thread::sleep_for(10ms);
    }
    return false;
  };
  int before = posts.load();
  {
    wake_batch burst;
    for (int64_t i = 0; i < 100; ++i)
      for (uint64_t k = 0; k < 8; ++k)
        svc.cast(k, {k, i});
    CHECK(posts.load() == before); // nothing woken yet
  }
  // One drain per shard that got casts, posted as the burst closed.
  std::set<size_t> shards;
  for (uint64_t k = 0; k < 8; ++k)
    shards.insert(svc.shard_of(k));
  CHECK(posts.load() - before == static_cast<int>(shards.size()));
  REQUIRE(applied(8, 100));
  std::lock_guard lock(d.mu);
  for (uint64_t k = 0; k < 8; ++k)
    for (int64_t i = 0; i < 100; ++i)
      REQUIRE(d.values[k][i] == i);
}

TEST_CASE("casts from another thread while the service stops, and after it, are dropped safely") {
  // As the store's writer does: a completion can cast into a service that its owner is stopping.
  for (bool homed : {true, false}) {
    CAPTURE(homed);
    real_system rs;
    home_loops homes(1);
    durable d;
    service_options o;
    o.shards = 4;
    if (homed)
      o.homes = homes.posters();
    auto svc = std::make_unique<service<kv_shard>>(
      *rs.sys, o, [&d](auto& ctx) { return std::make_unique<kv_shard>(ctx, d); }, nullptr);
    std::atomic<bool> done{false};
    std::atomic<int64_t> casts{0};
    auto deadline = std::chrono::steady_clock::now() + 20s; // bounds the run if something hangs
    std::thread producer([&] {
      for (int64_t i = 0; !done.load() && std::chrono::steady_clock::now() < deadline; ++i) {
        svc->cast(uint64_t(i % 64), {uint64_t(i % 64), i});
        casts.store(i + 1);
      }
    });
    while (casts.load() < 1000)
      std::this_thread::yield();
    svc->stop();
    auto at_stop = casts.load();
    // It goes on casting into the stopped service.
    while (casts.load() < at_stop + 1000 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::yield();
    done = true;
    producer.join();
    CHECK(casts.load() > at_stop);
    svc.reset();
  }
}
