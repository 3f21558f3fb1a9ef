// The crash test: a child process appends under load and reports every acknowledgement; the parent
// kills it with SIGKILL at random moments, reopens the store and checks that every acknowledged
// record is there, whole, and that no record anywhere is half-written.
// AGNER_TEST_LONG=1 runs more cycles; AGNER_TEST_SEED picks the kill schedule.
#include "runtime/store/store.hpp"
#include "test/runtime/store/store_test_support.hpp"

#include <doctest/doctest.h>

#include <random>

using namespace agner;
using namespace agner::store;
using namespace agner::store::test;

namespace {

// Cycles in the regular run (the issue asks for at least 20) and in the long mode.
constexpr int cycles_regular = 24;
constexpr int cycles_long = 300;
// Kill moments: from "during open" to "well into steady load".
constexpr int kill_after_ms_min = 5;
constexpr int kill_after_ms_max = 400;

// Runs one child for `run_ms`, then SIGKILLs it; returns every acknowledgement it reported.
std::vector<ack> run_child(const std::string& dir, int cycle, int run_ms) {
  auto r = run_and_kill({STORE_CRASH_CHILD, dir, std::to_string(cycle)}, {}, std::chrono::milliseconds(run_ms));
  // The child must have died by our signal, not by a crash of its own.
  CHECK_MESSAGE(r.killed_by_us(), "child status " << r.status);
  return parse_acks(r.out);
}

} // namespace

TEST_CASE("every acknowledged append survives SIGKILL at random moments, and nothing is half-written") {
  temp_dir dir;
  bool long_mode = std::getenv("AGNER_TEST_LONG") != nullptr;
  int cycles = long_mode ? cycles_long : cycles_regular;
  uint64_t seed = std::getenv("AGNER_TEST_SEED") ? std::strtoull(std::getenv("AGNER_TEST_SEED"), nullptr, 10)
                                                 : std::random_device{}();
  MESSAGE("crash test: " << cycles << " cycles, AGNER_TEST_SEED=" << seed);
  std::mt19937_64 rng(seed);
  std::string data = dir.sub("data");
  store_options o;
  o.data_dir = data;
  o.map_size_bytes = size_t{1} << 30;
  log_checker log;
  uint64_t total_acks = 0;
  for (int cycle = 0; cycle < cycles; ++cycle) {
    int run_ms = kill_after_ms_min + static_cast<int>(rng() % (kill_after_ms_max - kill_after_ms_min));
    auto acks = run_child(data, cycle, run_ms);
    total_acks += acks.size();
    metrics::registry m;
    node_store s(o, m);
    // Every acknowledged record is there, at the position reported, whole.
    auto lost = lost_acks(s, acks);
    REQUIRE_MESSAGE(lost.empty(), lost.size() << " acknowledged records missing or damaged, the first at position "
                                              << (lost.empty() ? 0 : lost[0].position) << " (cycle " << cycle << ")");
    // Every record written since the last check is whole, and each stream's seqs only grow.
    CHECK(log.check(s) == 0);
    // And the acknowledged records are reachable through the per-stream index.
    if (!acks.empty()) {
      const auto& a = acks[rng() % acks.size()];
      auto page = s.history_before(a.stream, a.seq + 1, 1);
      REQUIRE(page.size() == 1);
      CHECK(page[0].seq == a.seq);
    }
  }
  MESSAGE("crash test: " << total_acks << " acknowledged, " << log.records() << " records checked");
  CHECK(total_acks > 0);
}
