// The store: group commit (completions only after the commit), the log and its history pages,
// derived state, checkpoints and recovery by replay.
#include "runtime/store/recovery.hpp"
#include "runtime/store/store.hpp"
#include "runtime/store/value_format.hpp"
#include "runtime/wake_batch.hpp"
#include "test/runtime/store/store_test_support.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <future>
#include <latch>
#include <map>
#include <random>
#include <thread>

#include <lmdb.h>

using namespace agner;
using namespace agner::store;
using namespace agner::store::test;

TEST_CASE("a completion runs only after its commit returned, and then the write is readable") {
  temp_dir dir;
  metrics::registry m;
  std::atomic<int> commits_started{0};
  store_hooks hooks;
  hooks.before_commit = [&] {
    ++commits_started;
    return 0;
  };
  node_store s(test_options(dir.path()), m, hooks);
  completions c;
  std::atomic<int> unreadable{0}, before_any_commit{0};
  for (uint64_t i = 1; i <= 50; ++i) {
    write_batch b;
    b.append(1, i, make_payload(1, i, 10));
    auto inner = c.make();
    REQUIRE(s.submit(std::move(b), [&, inner, i](const commit_result& r) {
      if (commits_started.load() == 0)
        ++before_any_commit;
      // A fresh read transaction sees only committed data: the record must be there.
      auto e = s.read_log(r.first_position);
      if (!e || e->seq != i)
        ++unreadable;
      inner(r);
    }));
  }
  REQUIRE(c.wait(50));
  CHECK(before_any_commit == 0);
  CHECK(unreadable == 0);
  for (auto& r : c.results())
    CHECK(r.status == write_status::durable);
}

TEST_CASE("writes queued while a commit runs share the next commit") {
  temp_dir dir;
  metrics::registry m;
  std::latch release(1);
  std::atomic<int> commits{0};
  store_hooks hooks;
  hooks.before_commit = [&] {
    if (commits++ == 0)
      release.wait(); // hold the first commit so that everything else queues behind it
    return 0;
  };
  node_store s(test_options(dir.path()), m, hooks);
  completions c;
  constexpr int batches = 200;
  for (int i = 0; i < batches; ++i) {
    write_batch b;
    b.append(static_cast<uint64_t>(i % 7), static_cast<uint64_t>(i), "x");
    REQUIRE(s.submit(std::move(b), c.make()));
  }
  release.count_down();
  REQUIRE(c.wait(batches));
  // One commit for the first batch, then the other 199 in very few group commits (the hook also
  // sees index commits, so count group commits by the store's own metric).
  CHECK(m.make_counter("agner_store_commits_total", "").value() <= 3);
  auto rs = c.results();
  for (size_t i = 0; i < rs.size(); ++i) {
    CHECK(rs[i].status == write_status::durable);
    CHECK(rs[i].first_position == i + 1); // log positions follow submission order
  }
}

TEST_CASE("the batches a burst submits wake the writer once, at its end, and share one commit") {
  // As a shard's drain does (runtime/wake_batch.hpp). The writer sleeps (nothing queued, no index
  // pending) until woken.
  temp_dir dir;
  metrics::registry m;
  node_store s(test_options(dir.path()), m);
  auto& commits = m.make_counter("agner_store_commits_total", "");
  {
    // Waiting for a batch inside a burst wakes the writer first: no deadlock. (On a thread of its
    // own, so that a regression fails here rather than hanging.)
    std::this_thread::sleep_for(std::chrono::milliseconds(100)); // the writer is asleep by now
    std::promise<std::optional<write_status>> status;
    std::thread waiter([&] {
      wake_batch burst;
      write_batch b;
      b.put("k", "v");
      status.set_value(s.submit_and_wait(std::move(b)));
    });
    auto f = status.get_future();
    bool answered = f.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
    CHECK(answered);
    if (!answered)
      s.submit(write_batch{}, [](const commit_result&) {}); // no burst here: wakes the writer
    waiter.join();
    CHECK(f.get() == write_status::durable);
    CHECK(s.get("k") == "v");
  }
  // The writer finishes its round after the completion above (it could still see the burst's
  // first batch without a wake-up); let it go to sleep.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto before = commits.value();
  completions c;
  {
    wake_batch burst;
    for (int i = 0; i < 50; ++i) {
      write_batch b;
      b.append(static_cast<uint64_t>(i % 5), static_cast<uint64_t>(i / 5 + 1), "x");
      REQUIRE(s.submit(std::move(b), c.make()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK(commits.value() == before); // not woken yet: nothing committed
  }
  REQUIRE(c.wait(50));
  CHECK(commits.value() == before + 1); // every batch of the burst in one group commit
}

TEST_CASE("the queue-wait histogram shows how long a batch waited behind a running commit") {
  temp_dir dir;
  metrics::registry m;
  std::latch inside(1), release(1);
  std::atomic<int> commits{0};
  store_hooks hooks;
  hooks.before_commit = [&] {
    if (commits++ == 0) {
      inside.count_down();
      release.wait();
    }
    return 0;
  };
  node_store s(test_options(dir.path()), m, hooks);
  auto& wait = m.make_histogram("agner_store_queue_wait_seconds", "", {}, 1e-9);
  completions c;
  write_batch first, second;
  first.append(1, 1, "a");
  second.append(1, 2, "b");
  REQUIRE(s.submit(std::move(first), c.make()));
  inside.wait(); // the writer holds the first batch's commit
  REQUIRE(s.submit(std::move(second), c.make()));
  std::this_thread::sleep_for(std::chrono::milliseconds(40));
  release.count_down();
  REQUIRE(c.wait(2));
  REQUIRE(wait.count() == 2);
  // The second batch waited at least the 40 ms the first commit was held (buckets are within
  // 12.5%); the first one waited only for the writer to wake.
  CHECK(wait.quantile(1.0) >= 35'000'000);
  CHECK(wait.quantile(0.0) < 35'000'000);
}

TEST_CASE("a batch gets contiguous log positions, in order") {
  temp_dir dir;
  metrics::registry m;
  node_store s(test_options(dir.path()), m);
  write_batch b;
  for (uint64_t i = 0; i < 5; ++i)
    b.append(9, 100 + i, make_payload(9, 100 + i, 3));
  auto r = commit_now(s, std::move(b));
  REQUIRE(r.status == write_status::durable);
  CHECK(r.appends == 5);
  for (uint64_t i = 0; i < 5; ++i) {
    auto e = s.read_log(r.first_position + i);
    REQUIRE(e);
    CHECK(e->stream == 9);
    CHECK(e->seq == 100 + i);
    CHECK(payload_ok(e->payload, 9, 100 + i));
  }
  CHECK(s.last_position() == r.first_position + 4);
}

TEST_CASE("a history page returns the messages before a seq, ascending, across memory and disk") {
  temp_dir dir;
  metrics::registry m;
  node_store s(test_options(dir.path()), m);
  // Interleave 20 streams so each stream's records are spread over the log.
  for (uint64_t seq = 1; seq <= 300; ++seq) {
    write_batch b;
    for (uint64_t stream = 1; stream <= 20; ++stream)
      b.append(stream, seq, make_payload(stream, seq, 20));
    REQUIRE(s.submit(std::move(b), {}));
  }
  s.flush_index();
  // And a tail that stays in memory (index batch of 64 not reached).
  for (uint64_t seq = 301; seq <= 302; ++seq) {
    write_batch b;
    b.append(5, seq, make_payload(5, seq, 20));
    REQUIRE(commit_now(s, std::move(b)).status == write_status::durable);
  }
  auto page = s.history_before(5, 250, 50);
  REQUIRE(page.size() == 50);
  CHECK(page.front().seq == 200);
  CHECK(page.back().seq == 249);
  for (size_t i = 0; i < page.size(); ++i) {
    CHECK(page[i].stream == 5);
    CHECK(payload_ok(page[i].payload, 5, page[i].seq));
  }
  auto newest = s.history_before(5, UINT64_MAX, 5);
  REQUIRE(newest.size() == 5);
  CHECK(newest.front().seq == 298);
  CHECK(newest.back().seq == 302);
  auto after = s.history_after(5, 295, 50);
  REQUIRE(after.size() == 7);
  CHECK(after.front().seq == 296);
  CHECK(after.back().seq == 302);
  CHECK(s.history_before(5, 1, 50).empty());
  CHECK(s.history_before(999, UINT64_MAX, 50).empty());
  auto first = s.history_after(3, 0, 3);
  REQUIRE(first.size() == 3);
  CHECK(first[0].seq == 1);
}

TEST_CASE("a history page is complete at every moment while the index is written in batches") {
  temp_dir dir;
  metrics::registry m;
  auto o = test_options(dir.path());
  o.index_batch_entries = 32;
  o.index_slice_entries = 8;
  SUBCASE("in slices of its own between the commits") { o.index_slice_quiet_ms = std::chrono::milliseconds(0); }
  SUBCASE("carried by the commits") { o.index_slice_quiet_ms = std::chrono::hours(1); }
  node_store s(o, m);
  std::atomic<uint64_t> durable_seq{0};
  std::atomic<bool> done{false};
  std::atomic<int> bad{0};
  std::thread reader([&] {
    while (!done.load()) {
      uint64_t upto = durable_seq.load();
      if (upto == 0)
        continue;
      auto page = s.history_before(1, upto + 1, 10);
      size_t want = std::min<uint64_t>(10, upto);
      if (page.size() < want || page.back().seq < upto)
        ++bad;
    }
  });
  for (uint64_t seq = 1; seq <= 400; ++seq) {
    write_batch b;
    b.append(1, seq, make_payload(1, seq, 5));
    b.append(2, seq, "other stream");
    REQUIRE(commit_now(s, std::move(b)).status == write_status::durable);
    durable_seq = seq;
  }
  done = true;
  reader.join();
  CHECK(bad == 0);
}

TEST_CASE("under steady commits the group commits carry the index, and it keeps pace with the log") {
  temp_dir dir;
  metrics::registry m;
  auto o = test_options(dir.path());
  o.index_batch_entries = 64;
  o.index_slice_quiet_ms = std::chrono::hours(1); // no slice transactions while commits come
  o.index_idle_ms = std::chrono::hours(1);
  auto& carried = m.make_counter("agner_store_index_entries_in_commits_total", "");
  auto& slices = m.make_histogram("agner_store_index_slice_commit_seconds", "", {}, 1e-9);
  auto& pending = m.make_gauge("agner_store_index_pending", "");
  {
    node_store s(o, m);
    // 10 appends per commit on 5 streams: a generation of 64 freezes every 7 commits and the next
    // commits carry 20 of its entries each, so it is written before the next one fills.
    for (uint64_t seq = 1; seq <= 60; ++seq) {
      write_batch b;
      for (uint64_t stream = 1; stream <= 5; ++stream) {
        b.append(stream, 2 * seq - 1, make_payload(stream, 2 * seq - 1, 8));
        b.append(stream, 2 * seq, make_payload(stream, 2 * seq, 8));
      }
      REQUIRE(commit_now(s, std::move(b)).status == write_status::durable);
      CHECK(pending.value() < 2 * 64);
    }
    CHECK(slices.count() == 0);
    CHECK(carried.value() >= 8 * 64);
    CHECK(carried.value() + static_cast<uint64_t>(pending.value()) == 600);
    for (uint64_t stream = 1; stream <= 5; ++stream) {
      auto page = s.history_before(stream, UINT64_MAX, 200);
      REQUIRE(page.size() == 120);
      for (size_t i = 0; i < page.size(); ++i)
        CHECK(page[i].seq == i + 1);
    }
  }
  // Reopened, what the commits carried is on disk and the rest comes back from the log.
  node_store s(o, m);
  for (uint64_t stream = 1; stream <= 5; ++stream)
    CHECK(s.history_after(stream, 0, 200).size() == 120);
}

TEST_CASE("a commit whose index share does not fit commits its writes without it") {
  temp_dir dir;
  metrics::registry m;
  auto o = test_options(dir.path());
  o.index_batch_entries = 64;
  o.index_slice_quiet_ms = std::chrono::hours(1);
  o.index_idle_ms = std::chrono::hours(1);
  std::atomic<int> fail_next{0}, calls{0};
  store_hooks hooks;
  hooks.before_commit = [&] {
    ++calls;
    return fail_next.exchange(0);
  };
  auto& carried = m.make_counter("agner_store_index_entries_in_commits_total", "");
  auto& no_space = m.make_counter("agner_store_commit_errors_total", "", "kind=\"no_space\"");
  node_store s(o, m, hooks);
  auto batch = [](uint64_t first) {
    write_batch b;
    for (uint64_t seq = first; seq < first + 10; ++seq)
      b.append(9, seq, make_payload(9, seq, 8));
    return b;
  };
  for (uint64_t i = 0; i < 7; ++i) // 70 appends: the writer freezes a generation after the 7th
    REQUIRE(commit_now(s, batch(1 + 10 * i)).status == write_status::durable);
  CHECK(carried.value() == 0);
  fail_next = ENOSPC; // the first try, which carries index entries, runs out of disk
  int before = calls.load();
  REQUIRE(commit_now(s, batch(71)).status == write_status::durable);
  CHECK(calls.load() == before + 2);
  CHECK(no_space.value() == 1);
  CHECK(carried.value() == 0); // the index waits a second before it tries again
  s.flush_index();
  auto page = s.history_after(9, 0, 100);
  REQUIRE(page.size() == 80);
  CHECK(page.back().seq == 80);
}

TEST_CASE("the in-memory index tail is rebuilt from the log when the store reopens") {
  temp_dir dir;
  metrics::registry m;
  auto o = test_options(dir.path());
  o.index_batch_entries = 1'000'000; // nothing reaches the on-disk index before close...
  o.index_idle_ms = std::chrono::hours(1);
  {
    node_store s(o, m);
    for (uint64_t seq = 1; seq <= 100; ++seq) {
      write_batch b;
      b.append(4, seq, make_payload(4, seq, 8));
      REQUIRE(s.submit(std::move(b), {}));
    }
    write_batch last;
    last.append(4, 101, make_payload(4, 101, 8));
    REQUIRE(commit_now(s, std::move(last)).status == write_status::durable);
  }
  node_store s(o, m);
  CHECK(s.last_position() == 101);
  auto page = s.history_before(4, UINT64_MAX, 200);
  REQUIRE(page.size() == 101);
  CHECK(page.front().seq == 1);
}

TEST_CASE("derived state is put, read and deleted with a version byte in front") {
  temp_dir dir;
  metrics::registry m;
  node_store s(test_options(dir.path()), m);
  write_batch b;
  b.put("inbox/1/1", "hello");
  b.put("cursor/1/9", "42");
  REQUIRE(commit_now(s, std::move(b)).status == write_status::durable);
  CHECK(s.get("inbox/1/1") == "hello");
  CHECK(s.get("cursor/1/9") == "42");
  write_batch d;
  d.del("inbox/1/1");
  d.del("never/existed");
  REQUIRE(commit_now(s, std::move(d)).status == write_status::durable);
  CHECK_FALSE(s.get("inbox/1/1"));
}

TEST_CASE("invalid writes are refused when added to a batch") {
  write_batch b;
  CHECK_THROWS_AS(b.put("", "v"), std::invalid_argument);
  CHECK_THROWS_AS(b.put(std::string(state_key_bytes_max + 1, 'k'), "v"), std::invalid_argument);
  CHECK_THROWS_AS(b.append(1, 1, std::string(payload_bytes_max + 1, 'p')), std::invalid_argument);
  CHECK_THROWS_AS(b.checkpoint("", 1), std::invalid_argument);
  CHECK(b.empty());
}

namespace {
// A toy derived state: the number of records and the last seq per stream, as the chat service
// would keep unread counters.
struct counters final : replayable {
  std::map<uint64_t, uint64_t> last_seq;
  uint64_t applied = 0;
  std::string domain() const override { return "counters"; }
  void apply(const log_entry& e) override {
    last_seq[e.stream] = std::max(last_seq[e.stream], e.seq);
    ++applied;
  }
};
} // namespace

TEST_CASE("recovery replays exactly the log after the domain's checkpoint") {
  temp_dir dir;
  metrics::registry m;
  auto o = test_options(dir.path());
  {
    node_store s(o, m);
    for (uint64_t seq = 1; seq <= 30; ++seq) {
      write_batch b;
      b.append(seq % 3, seq, "m");
      REQUIRE(s.submit(std::move(b), {}));
    }
    write_batch cp;
    cp.put("counters/state", "through 30");
    cp.checkpoint("counters", 30);
    REQUIRE(commit_now(s, std::move(cp)).status == write_status::durable);
    for (uint64_t seq = 31; seq <= 45; ++seq) {
      write_batch b;
      b.append(seq % 3, seq, "m");
      REQUIRE(s.submit(std::move(b), {}));
    }
    write_batch sync;
    REQUIRE(commit_now(s, std::move(sync)).status == write_status::durable);
  }
  node_store s(o, m);
  CHECK(s.checkpoint("counters") == 30);
  CHECK(s.checkpoint("unknown") == 0);
  counters c;
  auto st = recover(s, c);
  CHECK(st.from == 30);
  CHECK(st.through == 45);
  CHECK(st.records == 15);
  CHECK(c.applied == 15);
  CHECK(c.last_seq[0] == 45);
  CHECK(c.last_seq[1] == 43);
  CHECK(s.get("counters/state") == "through 30");
}

TEST_CASE("replay crosses many read transactions in order") {
  temp_dir dir;
  metrics::registry m;
  node_store s(test_options(dir.path()), m);
  const uint64_t n = replay_chunk_records * 2 + 17;
  write_batch b;
  for (uint64_t i = 1; i <= n; ++i)
    b.append(1, i, "r");
  REQUIRE(commit_now(s, std::move(b)).status == write_status::durable);
  uint64_t expect = 1;
  bool in_order = true;
  auto count = s.replay(0, [&](const log_entry& e) { in_order = in_order && e.position == expect++ && e.seq == e.position; });
  CHECK(count == n);
  CHECK(in_order);
  CHECK(s.replay(n - 3, [](const log_entry&) {}) == 3);
}

namespace {
// Writes a raw value with a given version byte straight into a database, as a newer build would.
void write_raw(const std::string& dir, const char* db, std::string_view key, std::string value) {
  MDB_env* env = nullptr;
  REQUIRE(mdb_env_create(&env) == 0);
  mdb_env_set_maxdbs(env, max_dbs);
  mdb_env_set_mapsize(env, size_t{64} << 20);
  REQUIRE(mdb_env_open(env, dir.c_str(), 0, 0600) == 0);
  MDB_txn* txn = nullptr;
  REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
  MDB_dbi dbi;
  REQUIRE(mdb_dbi_open(txn, db, 0, &dbi) == 0);
  MDB_val k{key.size(), const_cast<char*>(key.data())}, v{value.size(), value.data()};
  REQUIRE(mdb_put(txn, dbi, &k, &v, 0) == 0);
  REQUIRE(mdb_txn_commit(txn) == 0);
  mdb_env_close(env);
}
} // namespace

TEST_CASE("a state value written by a newer format version is refused with a clear error") {
  temp_dir dir;
  metrics::registry m;
  auto o = test_options(dir.path());
  { node_store s(o, m); }
  std::string v(1, static_cast<char>(format_version + 1));
  v += "from the future";
  write_raw(dir.path(), "state", "k", v);
  node_store s(o, m);
  CHECK_THROWS_WITH_AS(s.get("k"), doctest::Contains("newer than this build"), format_error);
}

TEST_CASE("a log record of a newer format version stops replay with a clear error") {
  temp_dir dir;
  metrics::registry m;
  auto o = test_options(dir.path());
  {
    node_store s(o, m);
    write_batch b;
    b.append(1, 1, "old");
    REQUIRE(commit_now(s, std::move(b)).status == write_status::durable);
  }
  std::string v(1, static_cast<char>(format_version + 1));
  v += std::string(16, '\0') + "new";
  std::string key(8, '\0');
  key[7] = 2;
  write_raw(dir.path(), "log", key, v);
  // Opening re-indexes the unindexed tail, so the newer record is refused right there.
  CHECK_THROWS_WITH_AS(node_store(o, m), doctest::Contains("newer than this build"), format_error);
}

TEST_CASE("a data directory written by a newer format is refused at open") {
  temp_dir dir;
  metrics::registry m;
  auto o = test_options(dir.path());
  { node_store s(o, m); }
  std::string v(1, static_cast<char>(format_version));
  v += std::string(7, '\0');
  v.push_back(static_cast<char>(format_version + 1));
  write_raw(dir.path(), "meta", "format", v);
  CHECK_THROWS_WITH_AS(node_store(o, m), doctest::Contains("refusing to open"), format_error);
}
