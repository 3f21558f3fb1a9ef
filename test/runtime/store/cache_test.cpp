// The write-back cache: coalescing, entries deleted before a flush never written, eviction of the
// largest owners first, bounded memory, and failed flushes kept for a retry. Virtual time only.
#include "runtime/store/write_back_cache.hpp"
#include "test/runtime/store/store_test_support.hpp"

#include <doctest/doctest.h>

#include <deque>
#include <random>

using namespace agner;
using namespace agner::store;
using namespace agner::store::test;

namespace {

// Stands in for the shard's mailbox: the writer thread enqueues flush results, the test thread
// (the "shard") delivers them to the cache.
class flush_pump {
public:
  write_back_cache::notify_fn notify() {
    return [this](flush_ticket t, write_status s) {
      std::lock_guard lk(mu_);
      q_.push_back({t, s});
      cv_.notify_all();
    };
  }
  /// Delivers results until `t` was delivered; returns its status.
  write_status complete(write_back_cache& c, flush_ticket t) {
    REQUIRE(t != 0);
    for (;;) {
      std::pair<flush_ticket, write_status> r;
      {
        std::unique_lock lk(mu_);
        REQUIRE(cv_.wait_for(lk, std::chrono::seconds(20), [&] { return !q_.empty(); }));
        r = q_.front();
        q_.pop_front();
      }
      c.on_flushed(r.first, r.second);
      if (r.first == t)
        return r.second;
    }
  }
  /// Delivers every flush result that arrived so far.
  void deliver_ready(write_back_cache& c) {
    std::deque<std::pair<flush_ticket, write_status>> q;
    {
      std::lock_guard lk(mu_);
      q.swap(q_);
    }
    for (auto [t, s] : q)
      c.on_flushed(t, s);
  }
  /// Waits until every flush in flight completed.
  void drain(write_back_cache& c) {
    while (c.flushes_in_flight() > 0) {
      std::unique_lock lk(mu_);
      REQUIRE(cv_.wait_for(lk, std::chrono::seconds(20), [&] { return !q_.empty(); }));
      lk.unlock();
      deliver_ready(c);
    }
  }

private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<flush_ticket, write_status>> q_;
};

/// Store hooks under which the first commit fails for lack of space.
struct refuse_first_commit {
  std::atomic<int> pending{1};
  store_hooks hooks() {
    store_hooks h;
    h.before_commit = [this] { return pending.exchange(0) ? ENOSPC : 0; };
    return h;
  }
};

/// A store in a temporary directory and one cache shard over it, on virtual time. Test cases use
/// its members by name (doctest's TEST_CASE_FIXTURE).
struct cache_setup {
  explicit cache_setup(store_hooks hooks = {}) : s(test_options(dir.path()), m, std::move(hooks)) {}
  temp_dir dir;
  metrics::registry m;
  virtual_clock clk;
  node_store s;
  flush_pump pump;
  write_back_cache c{s, clk, m, "0", pump.notify()};
};

/// The same, with a store whose first commit fails for lack of space.
struct refusing_hooks {
  refuse_first_commit refuse;
};
struct refusing_cache_setup : refusing_hooks, cache_setup {
  refusing_cache_setup() : cache_setup(refuse.hooks()) {}
};

uint64_t commits_of(metrics::registry& m) { return m.make_counter("agner_store_commits_total", "").value(); }

std::string inbox_key(uint64_t user, uint64_t inbox_seq) { return fmt::format("inbox/{}/{:08}", user, inbox_seq); }

} // namespace

TEST_CASE_FIXTURE(cache_setup, "repeated updates of one key coalesce into one write") {
  for (int i = 0; i < 10; ++i)
    c.put(1, "cursor/1/7", fmt::format("{}", i));
  CHECK(c.flush() == 0); // not due yet
  clk.advance(s.options().flush_window_ms);
  auto t = c.flush();
  CHECK(pump.complete(c, t) == write_status::durable);
  CHECK(c.stats().writes_flushed == 1);
  CHECK(c.stats().coalesced == 9);
  CHECK(s.get("cursor/1/7") == "9");
  CHECK(c.get(1, "cursor/1/7") == "9");
  CHECK(c.stats().hits == 1);
}

TEST_CASE_FIXTURE(cache_setup, "an inbox entry inserted and deleted within the flush window is never written") {
  auto before = commits_of(m);
  c.insert(1, inbox_key(1, 1), "message 1");
  c.insert(1, inbox_key(1, 2), "message 2");
  clk.advance(s.options().flush_window_ms / 2);
  c.del(1, inbox_key(1, 1)); // the phone acknowledged it
  CHECK(c.get(1, inbox_key(1, 1)) == std::nullopt);
  clk.advance(s.options().flush_window_ms);
  auto t = c.flush();
  CHECK(pump.complete(c, t) == write_status::durable);
  CHECK(c.stats().never_written == 1);
  CHECK(c.stats().writes_avoided == 2);
  CHECK(c.stats().writes_flushed == 1); // only the unacknowledged entry
  CHECK_FALSE(s.get(inbox_key(1, 1)));
  CHECK(s.get(inbox_key(1, 2)) == "message 2");
  CHECK(commits_of(m) == before + 1);
}

TEST_CASE_FIXTURE(cache_setup, "a delete of an entry already on disk is written") {
  c.insert(1, inbox_key(1, 1), "m");
  REQUIRE(pump.complete(c, c.flush_all()) == write_status::durable);
  REQUIRE(s.get(inbox_key(1, 1)) == "m");
  c.del(1, inbox_key(1, 1));
  CHECK(c.stats().never_written == 0);
  REQUIRE(pump.complete(c, c.flush_all()) == write_status::durable);
  CHECK_FALSE(s.get(inbox_key(1, 1)));
  CHECK(c.entries() == 0); // the tombstone is gone once the delete is durable
}

TEST_CASE_FIXTURE(cache_setup, "an update made while an older version is in flight is written by the next flush") {
  c.put(1, "k", "v1");
  auto t1 = c.flush_all();
  c.put(1, "k", "v2");
  REQUIRE(pump.complete(c, t1) == write_status::durable);
  CHECK(c.dirty_entries() == 1);
  CHECK(c.get(1, "k") == "v2");
  REQUIRE(pump.complete(c, c.flush_all()) == write_status::durable);
  CHECK(s.get("k") == "v2");
  CHECK(c.dirty_entries() == 0);
}

TEST_CASE_FIXTURE(cache_setup, "a delete made while the insert is in flight is still written") {
  c.insert(1, "k", "v");
  auto t1 = c.flush_all();
  c.del(1, "k");
  REQUIRE(pump.complete(c, t1) == write_status::durable);
  REQUIRE(pump.complete(c, c.flush_all()) == write_status::durable);
  CHECK_FALSE(s.get("k"));
}

TEST_CASE_FIXTURE(cache_setup, "a read miss goes to the store once and is then served from memory") {
  write_batch b;
  b.put("cursor/5/1", "12");
  REQUIRE(commit_now(s, std::move(b)).status == write_status::durable);
  CHECK(c.get(5, "cursor/5/1") == "12");
  CHECK(c.get(5, "cursor/5/1") == "12");
  CHECK(c.get(5, "cursor/5/404") == std::nullopt);
  CHECK(c.stats().misses == 2);
  CHECK(c.stats().hits == 1);
}

TEST_CASE_FIXTURE(cache_setup, "when the cache is full the owner with the largest footprint is evicted first") {
  // 1 MiB budget (test_options)
  const std::string body(1000, 'x');
  for (uint64_t owner = 2; owner <= 40; ++owner)
    for (uint64_t i = 0; i < 10; ++i)
      c.insert(owner, inbox_key(owner, i), body);
  uint64_t i = 0;
  while (c.stats().evicted_owners == 0)
    c.insert(1, inbox_key(1, i++), body); // one huge mailbox grows until the budget is hit
  CHECK(c.stats().evicted_owners == 1);
  CHECK(c.owner_bytes(1) == 0);
  for (uint64_t owner = 2; owner <= 40; ++owner)
    CHECK(c.owner_bytes(owner) > 0);
  pump.drain(c);
  // Evicted means written, then forgotten: the huge mailbox is on disk, nothing was dropped.
  for (uint64_t k = 0; k < i; ++k)
    CHECK(s.get(inbox_key(1, k)) == body);
  CHECK(c.get(1, inbox_key(1, 0)) == body); // and reads of it go to LMDB
  CHECK(c.stats().misses == 1);
}

TEST_CASE_FIXTURE(cache_setup, "memory stays within the budget under a long stream of inserts") {
  const size_t budget = s.options().cache_budget_bytes;
  std::mt19937_64 rng(3);
  std::vector<uint64_t> next_seq(500, 0);
  size_t peak_settled = 0;
  for (int n = 0; n < 20000; ++n) {
    // A skewed population: a few users get most of the traffic.
    uint64_t user = std::min<uint64_t>(rng() % 500, rng() % 500);
    c.insert(user, inbox_key(user, next_seq[user]++), std::string(100 + rng() % 400, 'm'));
    if (n % 64 == 0) {
      pump.deliver_ready(c);
      clk.advance(std::chrono::milliseconds(10));
    }
    if (c.flushes_in_flight() == 0)
      peak_settled = std::max(peak_settled, c.bytes());
  }
  pump.drain(c);
  CHECK(c.bytes() <= budget);
  CHECK(peak_settled <= budget);
  CHECK(c.stats().evicted_owners > 0);
  // Nothing was lost: every entry is in memory or on disk.
  std::mt19937_64 pick(5);
  for (int k = 0; k < 200; ++k) {
    uint64_t user = pick() % 500;
    if (next_seq[user] == 0)
      continue;
    auto key = inbox_key(user, pick() % next_seq[user]);
    CHECK(c.get(user, key).has_value());
  }
}

TEST_CASE_FIXTURE(refusing_cache_setup, "a flush refused for lack of space keeps its entries dirty and a later flush writes them") {
  c.insert(1, "inbox/1/1", "m");
  c.put(1, "cursor/1/1", "3");
  CHECK(pump.complete(c, c.flush_all()) == write_status::no_space);
  CHECK(c.dirty_entries() == 2);
  CHECK_FALSE(s.get("inbox/1/1"));
  CHECK(pump.complete(c, c.flush()) == write_status::durable); // due at once
  CHECK(s.get("inbox/1/1") == "m");
  CHECK(s.get("cursor/1/1") == "3");
  CHECK(c.stats().failed_flushes == 1);
}

TEST_CASE_FIXTURE(cache_setup, "a flush by keys writes those keys only; the other dirty entries wait") {
  c.put(1, "u/1", "a");
  c.put(2, "u/2", "b");
  c.put(3, "u/3", "c");
  REQUIRE(pump.complete(c, c.flush_keys({"u/1", "u/3", "u/4"})) == write_status::durable);
  CHECK(s.get("u/1") == "a");
  CHECK(s.get("u/3") == "c");
  CHECK_FALSE(s.get("u/2"));
  CHECK(c.dirty_entries() == 1);
  CHECK(c.flush_keys({"u/1"}) == 0); // clean: nothing to write
}

TEST_CASE_FIXTURE(refusing_cache_setup, "the last slice's flush writes what the store refused before, then the mark") {
  // An incremental checkpoint: the refused slice's users are clean in their owner's memory, so
  // only the cache can write them again, and the mark must not go without them.
  c.put(1, "u/1", "first slice");
  CHECK(pump.complete(c, c.flush_keys({"u/1"})) == write_status::no_space);
  c.put(2, "u/2", "last slice");
  c.put(3, "u/3", "not in this checkpoint");
  REQUIRE(pump.complete(c, c.flush_keys({"u/2"}, checkpoint_mark{"users/0", 9})) == write_status::durable);
  CHECK(s.checkpoint("users/0") == 9);
  CHECK(s.get("u/1") == "first slice");
  CHECK(s.get("u/2") == "last slice");
  CHECK_FALSE(s.get("u/3"));
  CHECK(c.dirty_entries() == 1);
}

TEST_CASE_FIXTURE(cache_setup, "a full flush writes the state and its checkpoint in one transaction") {
  c.insert(1, "inbox/1/1", "a");
  c.put(2, "cursor/2/1", "b");
  REQUIRE(pump.complete(c, c.flush_all(checkpoint_mark{"inbox/0", 17})) == write_status::durable);
  CHECK(s.checkpoint("inbox/0") == 17);
  CHECK(s.get("inbox/1/1") == "a");
  CHECK(s.get("cursor/2/1") == "b");
}
