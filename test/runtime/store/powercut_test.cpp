// The power-loss test: a child runs under the powercut shim (tools/powercut), which keeps what
// was made durable apart from what only reached the page cache; the parent SIGKILLs it, applies the
// cut (every un-fsynced write is gone, as after a power cut) and checks the store. First the shim
// itself against a probe with known durable and not durable writes, then the store: nothing
// acknowledged may be lost with LMDB's default flags, and with MDB_NOSYNC the loss must be caught.
// AGNER_TEST_LONG=1 runs more cuts; AGNER_TEST_SEED picks the cut schedule (as in the crash test).
#include "runtime/store/store.hpp"
#include "test/runtime/store/store_test_support.hpp"
#include "tools/powercut/powercut.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <random>
#include <sstream>

using namespace agner;
using namespace agner::store;
using namespace agner::store::test;

namespace {

// Power cuts with durable commits (the issue asks for at least 20), and with AGNER_TEST_LONG=1.
constexpr int cuts_sync = 24;
constexpr int cuts_sync_long = 200;
// Most cuts with MDB_NOSYNC before the test gives up on seeing a loss.
constexpr int cuts_nosync_max = 20;
// Cut moments: after the child has opened the store and committed for a while.
constexpr int cut_after_ms_min = 50;
constexpr int cut_after_ms_max = 300;
// How long a probe may take to print "ready" (an ASan build starts slowly).
constexpr auto probe_timeout = std::chrono::seconds(20);

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string fill(size_t n, char c) { return std::string(n, c); }

// Empty if the file at `path` holds `want`, else where it first differs (not the whole content).
std::string differs(const std::string& path, const std::string& want) {
  std::string got = slurp(path);
  if (got == want)
    return {};
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i])
    ++i;
  std::ostringstream os;
  os << path << ": " << got.size() << " bytes, want " << want.size() << "; first difference at offset " << i;
  if (i < got.size() && i < want.size())
    os << " ('" << got[i] << "', want '" << want[i] << "')";
  return os.str();
}

#define CHECK_FILE(path, want)                                                                                         \
  do {                                                                                                                 \
    auto why = differs(path, want);                                                                                    \
    CHECK_MESSAGE(why.empty(), why);                                                                                   \
  } while (0)

// Runs the probe in `mode` under the shim until it is ready, kills it, applies the cut.
powercut::cut_stats probe(const temp_dir& dir, const std::string& mode) {
  std::string data = dir.sub("data"), shadow = dir.sub("shadow");
  std::filesystem::create_directories(data);
  auto r = run_and_kill({POWERCUT_PROBE, mode, data}, powercut::child_environment(data, shadow), probe_timeout,
                        "ready\n");
  REQUIRE_MESSAGE(r.out == "ready\n", "probe " << mode << " printed '" << r.out << "'");
  REQUIRE(r.killed_by_us());
  return powercut::apply_cut(shadow, data);
}

uint64_t seed() {
  const char* s = std::getenv("AGNER_TEST_SEED");
  return s ? std::strtoull(s, nullptr, 10) : std::random_device{}();
}

struct cuts_result {
  int cuts = 0;
  uint64_t acked = 0, lost = 0, bad_records = 0, discarded_bytes = 0;
  int cuts_with_loss = 0, cuts_discarding = 0;
};

// Cycles of: the crash child under the shim with `mode`, a cut at a random moment, a reopen and a
// check of everything it acknowledged. Stops after `cuts` cycles, or at the first loss if asked.
cuts_result run_cuts(durability mode, int cuts, bool stop_at_loss, uint64_t seed) {
  temp_dir dir;
  std::string data = dir.sub("data"), shadow = dir.sub("shadow");
  std::mt19937_64 rng(seed);
  store_options o;
  o.data_dir = data;
  o.map_size_bytes = size_t{1} << 30;
  auto env = powercut::child_environment(data, shadow);
  log_checker log;
  cuts_result res;
  for (int cycle = 0; cycle < cuts; ++cycle) {
    int run_ms = cut_after_ms_min + static_cast<int>(rng() % (cut_after_ms_max - cut_after_ms_min));
    auto r = run_and_kill({STORE_CRASH_CHILD, data, std::to_string(cycle), std::string(to_string(mode))}, env,
                          std::chrono::milliseconds(run_ms));
    CHECK_MESSAGE(r.killed_by_us(), "child status " << r.status);
    auto acks = parse_acks(r.out);
    auto cut = powercut::apply_cut(shadow, data);
    metrics::registry m;
    node_store s(o, m);
    auto lost = lost_acks(s, acks);
    ++res.cuts;
    res.acked += acks.size();
    res.lost += lost.size();
    res.cuts_with_loss += !lost.empty();
    res.discarded_bytes += cut.bytes_discarded;
    res.cuts_discarding += cut.bytes_discarded > 0;
    // Whatever was lost, what is there is whole and in order: the cut leaves a consistent store.
    res.bad_records += log.check(s);
    if (lost.empty() && !acks.empty()) {
      const auto& a = acks[rng() % acks.size()];
      auto page = s.history_before(a.stream, a.seq + 1, 1);
      REQUIRE(page.size() == 1);
      CHECK(page[0].seq == a.seq);
    }
    if (stop_at_loss && !lost.empty())
      break;
  }
  MESSAGE("power cuts (" << to_string(mode) << ", AGNER_TEST_SEED=" << seed << "): " << res.cuts << " cuts, "
                         << res.acked << " acknowledged, " << res.lost << " lost in " << res.cuts_with_loss
                         << " cuts; " << res.cuts_discarding << " cuts discarded un-fsynced writes ("
                         << res.discarded_bytes << " bytes)");
  return res;
}

} // namespace

TEST_CASE("powercut shim: only fsynced, O_DSYNC and RWF_DSYNC writes survive a cut") {
  temp_dir dir;
  auto cut = probe(dir, "write");
  std::string expect = fill(8192, 'A') + fill(8192, 'B');
  expect.replace(200, 10, fill(10, 'D'));
  expect.replace(300, 10, fill(10, 'G'));
  CHECK_FILE(dir.sub("data/probe.dat"), expect);            // C, E and the growth by F are gone
  CHECK_FILE(dir.sub("data/other.dat"), fill(1000, 'X'));   // fsync through a dup; truncation lost
  CHECK_FILE(dir.sub("data/unsynced.dat"), "");             // created, written, never synced
  CHECK_FILE(dir.sub("data/x-lock.mdb"), fill(10, 'Z'));    // *lock.mdb is not tracked
  CHECK(cut.files == 3);
  // C (100 bytes), E (50), F past the durable end (4096), other.dat's lost 900, unsynced.dat's 5000.
  CHECK(cut.bytes_discarded == 100 + 50 + 4096 + 900 + 5000);
  CHECK(std::filesystem::is_empty(dir.sub("shadow"))); // the cut consumed the shadows

  // What is on disk when a file is opened again is durable: the next cut goes back to it.
  auto again = probe(dir, "rewrite");
  CHECK_FILE(dir.sub("data/probe.dat"), expect);
  CHECK_FILE(dir.sub("data/new.dat"), fill(10, 'N'));
  CHECK(again.files == 2);
  CHECK(again.bytes_discarded == 4096);
}

TEST_CASE("powercut shim: concurrent writers and fdatasyncs through separate descriptors") {
  temp_dir dir;
  probe(dir, "threads");
  std::string expect;
  for (int t = 0; t < 4; ++t)
    expect += fill(16 * 4096, static_cast<char>('a' + t));
  CHECK_FILE(dir.sub("data/threads.dat"), expect);
}

TEST_CASE("powercut shim: refuses a writable shared mapping of a tracked file") {
  temp_dir dir;
  std::string data = dir.sub("data");
  std::filesystem::create_directories(data);
  auto r = run_and_kill({POWERCUT_PROBE, "writemap", data}, powercut::child_environment(data, dir.sub("shadow")),
                        probe_timeout, "ready\n");
  CHECK(r.out.empty());
  CHECK((WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT));
}

TEST_CASE("no acknowledged append is lost over 24 power cuts with LMDB's default flags") {
  int cuts = std::getenv("AGNER_TEST_LONG") ? cuts_sync_long : cuts_sync;
  auto res = run_cuts(durability::sync, cuts, false, seed());
  CHECK(res.cuts == cuts);
  CHECK(res.acked > 0);
  CHECK(res.lost == 0);
  CHECK(res.bad_records == 0);
}

TEST_CASE("with durability unsafe_nosync a power cut loses acknowledged appends, and the check catches it") {
  auto res = run_cuts(durability::unsafe_nosync, cuts_nosync_max, true, seed());
  REQUIRE_MESSAGE(res.lost > 0, "no loss caught in " << res.cuts << " cuts: the power-loss test has no teeth");
  CHECK(res.bad_records == 0);
}
