// Failures: a full map or disk fails the affected writes cleanly and the store recovers when there
// is room; any other commit error is fatal and nothing is acknowledged after it.
#include "runtime/store/store.hpp"
#include "test/runtime/store/store_test_support.hpp"

#include <doctest/doctest.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sys/mount.h>

using namespace agner;
using namespace agner::store;
using namespace agner::store::test;

namespace {

write_batch messages(uint64_t stream, uint64_t first_seq, int n, size_t bytes) {
  write_batch b;
  for (int i = 0; i < n; ++i)
    b.append(stream, first_seq + i, make_payload(stream, first_seq + i, bytes));
  return b;
}

// Submits batches of `per_batch` records until one fails; returns the results in submission order
// and how many records became durable.
struct fill_result {
  std::vector<commit_result> results;
  uint64_t durable_records = 0;
  uint64_t next_seq = 1;
};
fill_result fill_until_failure(node_store& s, uint64_t stream, int per_batch, size_t bytes, int max_rounds = 10000) {
  fill_result f;
  for (int round = 0; round < max_rounds; ++round) {
    // Several batches at once, so that the failure hits a group of more than one.
    completions c;
    int n = 8;
    for (int i = 0; i < n; ++i) {
      REQUIRE(s.submit(messages(stream, f.next_seq, per_batch, bytes), c.make()));
      f.next_seq += per_batch;
    }
    REQUIRE(c.wait(n));
    bool failed = false;
    for (auto& r : c.results()) {
      f.results.push_back(r);
      if (r.status == write_status::durable)
        f.durable_records += r.appends;
      else
        failed = true;
    }
    if (failed)
      return f;
  }
  FAIL("the store never filled up");
  return f;
}

// Checks that once a batch failed, no later one in the run was durable.
bool no_durable_after_failure(const std::vector<commit_result>& rs) {
  bool failed = false;
  for (auto& r : rs) {
    if (r.status != write_status::durable)
      failed = true;
    else if (failed)
      return false;
  }
  return true;
}

uint64_t count_stream(const node_store& s, uint64_t stream) {
  uint64_t n = 0;
  s.replay(0, [&](const log_entry& e) {
    if (e.stream == stream && payload_ok(e.payload, e.stream, e.seq))
      ++n;
  });
  return n;
}

} // namespace

TEST_CASE("a full map fails the affected writes, reads go on, and writes succeed once the map grows") {
  temp_dir dir;
  metrics::registry m;
  auto o = test_options(dir.path());
  o.map_size_bytes = size_t{1} << 20;
  node_store s(o, m);
  auto f = fill_until_failure(s, 1, 20, 200);
  CHECK(no_durable_after_failure(f.results));
  CHECK(f.results.back().status == write_status::map_full);
  CHECK(f.results.back().first_position == 0);
  CHECK_FALSE(s.failed());
  // The node still serves reads of everything acknowledged.
  CHECK(count_stream(s, 1) == f.durable_records);
  auto page = s.history_before(1, UINT64_MAX, 50);
  CHECK(page.size() == 50);
  CHECK(m.make_counter("agner_store_commit_errors_total", "", "kind=\"map_full\"").value() > 0);
  // Room: grow the map, and the same writes go through.
  completions grown;
  bool ok = false;
  s.grow_map(size_t{16} << 20, [&](bool r) {
    ok = r;
    grown.make()({write_status::durable, 0, 0});
  });
  REQUIRE(grown.wait(1));
  CHECK(ok);
  auto r = commit_now(s, messages(2, 1, 20, 200));
  CHECK(r.status == write_status::durable);
  CHECK(count_stream(s, 2) == 20);
}

TEST_CASE("a full file system fails writes with no_space and they succeed once files are removed") {
  temp_dir dir;
  std::string mnt = dir.sub("mnt");
  std::filesystem::create_directories(mnt);
  if (mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=3m") != 0) {
    MESSAGE("skipped: cannot mount a tmpfs here (" << std::strerror(errno) << "); the tiny-map test covers MAP_FULL");
    return;
  }
  struct unmount_at_exit {
    std::string path;
    ~unmount_at_exit() { umount2(path.c_str(), MNT_DETACH); }
  } unmount{mnt};
  // Ballast that is deleted later to make room.
  {
    std::ofstream ballast(mnt + "/ballast", std::ios::binary);
    std::string mb(1 << 20, 'b');
    ballast << mb;
  }
  metrics::registry m;
  auto o = test_options(mnt + "/data");
  o.map_size_bytes = size_t{64} << 20; // far above the file system: the disk fills first
  std::atomic<int> fatal_calls{0};
  store_hooks hooks;
  hooks.on_fatal = [&](const std::string& r) { // ENOSPC must never be fatal
    std::fprintf(stderr, "fatal: %s\n", r.c_str());
    ++fatal_calls;
  };
  {
    node_store s(o, m, hooks);
    auto f = fill_until_failure(s, 1, 20, 200);
    CHECK(no_durable_after_failure(f.results));
    CHECK(f.results.back().status == write_status::no_space);
    CHECK_FALSE(s.failed());
    CHECK(count_stream(s, 1) == f.durable_records);
    CHECK(s.history_before(1, UINT64_MAX, 10).size() == 10);
    std::filesystem::remove(mnt + "/ballast");
    auto r = commit_now(s, messages(2, 1, 20, 200));
    CHECK(r.status == write_status::durable);
  }
  CHECK(fatal_calls == 0);
  // And the data survives a reopen.
  node_store s(o, m);
  CHECK(count_stream(s, 2) == 20);
}

TEST_CASE("the data file is zero-filled a reservation step ahead of LMDB's pages, and LMDB writes over the zeros") {
  temp_dir dir;
  metrics::registry m;
  auto o = test_options(dir.sub("data"));
  o.disk_reserve_bytes = size_t{1} << 20;
  auto file = dir.sub("data") + "/data.mdb";
  size_t size = 0;
  {
    node_store s(o, m);
    REQUIRE(commit_now(s, messages(1, 1, 20, 200)).status == write_status::durable);
    // A few pages of data, then zeros up to a full step: the blocks exist and lie within the
    // file's size, so a commit that writes there has no metadata for its fdatasync to journal.
    size = std::filesystem::file_size(file);
    CHECK(size >= o.disk_reserve_bytes);
    std::ifstream in(file, std::ios::binary);
    std::string tail(size_t{512} << 10, 'x');
    in.seekg(static_cast<std::streamoff>(size - tail.size()));
    REQUIRE(in.read(tail.data(), static_cast<std::streamsize>(tail.size())));
    CHECK(tail.find_first_not_of('\0') == std::string::npos);
  }
  // Reopened with the zeros behind its last page, LMDB grows into them and past them.
  {
    node_store s(o, m);
    CHECK(count_stream(s, 1) == 20);
    for (int b = 0; b < 30; ++b)
      REQUIRE(commit_now(s, messages(2, 1 + 100 * b, 100, 400)).status == write_status::durable);
  }
  CHECK(std::filesystem::file_size(file) > size + o.disk_reserve_bytes); // 1.2 MB of messages later
  node_store s(o, m);
  CHECK(count_stream(s, 1) == 20);
  CHECK(count_stream(s, 2) == 3000);
}

TEST_CASE("after the first reservation, each commit extends the zeros by at most one step") {
  // The commit's fdatasync writes the zeros back, so topping up the lead in small steps keeps any
  // one commit from waiting for megabytes of them.
  temp_dir dir;
  metrics::registry m;
  auto o = test_options(dir.sub("data"));
  o.disk_reserve_bytes = size_t{2} << 20;
  o.disk_reserve_step_bytes = size_t{64} << 10;
  o.index_batch_entries = 1 << 20; // no index slices between the commits watched here
  o.index_idle_ms = std::chrono::milliseconds(600'000);
  auto file = dir.sub("data") + "/data.mdb";
  node_store s(o, m);
  REQUIRE(commit_now(s, messages(1, 1, 10, 200)).status == write_status::durable);
  size_t first = std::filesystem::file_size(file);
  CHECK(first >= o.disk_reserve_bytes); // the first one takes the whole lead
  size_t last = first, grew = 0;
  for (int b = 0; b < 60; ++b) {
    REQUIRE(commit_now(s, messages(2, 1 + 100 * b, 100, 400)).status == write_status::durable);
    size_t now = std::filesystem::file_size(file);
    CHECK(now - last <= o.disk_reserve_step_bytes);
    grew += now > last;
    last = now;
  }
  CHECK(grew > 10);      // 2.4 MB of messages: the lead kept up, step by step
  CHECK(last > first + o.disk_reserve_bytes / 2);
  CHECK(count_stream(s, 2) == 6000);
}

TEST_CASE("an ENOSPC from the commit fails that batch only and the next write succeeds") {
  temp_dir dir;
  metrics::registry m;
  std::atomic<int> fail_next{0};
  store_hooks hooks;
  hooks.before_commit = [&] { return fail_next.exchange(0); };
  node_store s(test_options(dir.path()), m, hooks);
  REQUIRE(commit_now(s, messages(1, 1, 3, 10)).status == write_status::durable);
  fail_next = ENOSPC;
  auto r = commit_now(s, messages(1, 4, 3, 10));
  CHECK(r.status == write_status::no_space);
  CHECK(r.first_position == 0);
  auto again = commit_now(s, messages(1, 4, 3, 10));
  CHECK(again.status == write_status::durable);
  CHECK(again.first_position == 4); // the failed batch consumed no log positions
  CHECK(count_stream(s, 1) == 6);
}

TEST_CASE("a commit error other than a full disk is fatal and nothing is acknowledged after it") {
  temp_dir dir;
  metrics::registry m;
  std::atomic<int> commits{0};
  std::atomic<int> fatal_calls{0};
  std::string reason;
  store_hooks hooks;
  hooks.before_commit = [&] { return ++commits == 3 ? EIO : 0; };
  hooks.on_fatal = [&](const std::string& r) {
    reason = r;
    ++fatal_calls;
  };
  auto o = test_options(dir.path());
  {
    node_store s(o, m, hooks);
    CHECK(commit_now(s, messages(1, 1, 2, 10)).status == write_status::durable);
    CHECK(commit_now(s, messages(1, 3, 2, 10)).status == write_status::durable);
    // Queue several batches behind the failing commit.
    completions c;
    for (int i = 0; i < 5; ++i)
      if (!s.submit(messages(1, 5 + 2 * i, 2, 10), c.make()))
        c.make()({write_status::failed, 0, 0});
    REQUIRE(c.wait(5));
    for (auto& r : c.results())
      CHECK(r.status == write_status::failed);
    CHECK(fatal_calls == 1);
    CHECK(reason.find("Input/output error") != std::string::npos);
    CHECK(s.failed());
    CHECK_FALSE(s.submit(messages(1, 100, 1, 10), [](const commit_result&) { FAIL("acknowledged after fatal"); }));
    CHECK(m.make_counter("agner_store_commit_errors_total", "", "kind=\"fatal\"").value() == 1);
  }
  // After a restart only the acknowledged writes are there.
  node_store s(o, m);
  CHECK(count_stream(s, 1) == 4);
}

TEST_CASE("a chain whose batch failed fails its later batches until one restarts it; other chains go on") {
  temp_dir dir;
  metrics::registry m;
  // The writer stops inside the failing commit until the test has queued the batches behind it,
  // so they arrive in a later group (a failure within one group fails the rest of that group).
  gated_failure gate;
  node_store s(test_options(dir.path()), m, gate.hooks());
  auto chained = [](uint64_t stream, uint64_t first_seq, int n, bool restart) {
    auto b = messages(stream, first_seq, n, 10);
    b.chain(stream, restart);
    return b;
  };
  REQUIRE(commit_now(s, chained(7, 1, 2, true)).status == write_status::durable);
  gate.arm(ENOSPC);
  // One collector per batch: a refused batch completes before the commit of its group does.
  completions c[5];
  REQUIRE(s.submit(chained(7, 3, 2, false), c[0].make())); // fails in the commit
  REQUIRE(gate.wait_inside());
  REQUIRE(s.submit(chained(7, 5, 2, false), c[1].make())); // behind the failure: must fail unwritten
  REQUIRE(s.submit(chained(9, 1, 2, true), c[2].make()));  // another chain: unaffected
  REQUIRE(s.submit(messages(8, 1, 2, 10), c[3].make()));   // no chain at all: unaffected
  REQUIRE(s.submit(chained(7, 7, 2, false), c[4].make())); // still broken
  gate.release();
  std::vector<commit_result> r;
  for (auto& one : c) {
    REQUIRE(one.wait(1));
    r.push_back(one.results().front());
  }
  CHECK(r[0].status == write_status::no_space);
  CHECK(r[1].status == write_status::chain_broken);
  CHECK(r[2].status == write_status::durable);
  CHECK(r[3].status == write_status::durable);
  CHECK(r[4].status == write_status::chain_broken);
  CHECK(r[1].first_position == 0);
  CHECK(r[3].first_position == r[2].first_position + 2); // the refused batches took no positions
  auto& broken = m.make_gauge("agner_store_broken_chains", "");
  CHECK(broken.value() == 1);
  // The producer rolled its seq back to 3 and restarts the chain: stream 7 stays dense.
  auto again = commit_now(s, chained(7, 3, 2, true));
  CHECK(again.status == write_status::durable);
  CHECK(broken.value() == 0);
  CHECK(commit_now(s, chained(7, 5, 1, false)).status == write_status::durable);
  auto page = s.history_after(7, 0, 100);
  REQUIRE(page.size() == 5);
  for (size_t i = 0; i < page.size(); ++i)
    CHECK(page[i].seq == i + 1);
  CHECK(to_string(write_status::chain_broken) == "chain_broken");
}
