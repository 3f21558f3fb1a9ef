// The crash test: a child process appends under load and reports every acknowledgement; the parent
// kills it with SIGKILL at random moments, reopens the store and checks that every acknowledged
// record is there, whole, and that no record anywhere is half-written.
// AGNER_TEST_LONG=1 runs more cycles; AGNER_TEST_SEED picks the kill schedule.
#include "runtime/store/store.hpp"
#include "test/runtime/store/store_test_support.hpp"

#include <doctest/doctest.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <map>
#include <poll.h>
#include <random>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

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

struct ack {
  uint64_t stream, seq, position;
};

// Runs one child for `run_ms`, then SIGKILLs it; returns every acknowledgement it reported.
std::vector<ack> run_child(const std::string& dir, int cycle, int run_ms) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    std::string c = std::to_string(cycle);
    execl(STORE_CRASH_CHILD, STORE_CRASH_CHILD, dir.c_str(), c.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  std::string out;
  char buf[65536];
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(run_ms);
  bool killed = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (!killed && left.count() <= 0) {
      kill(pid, SIGKILL);
      killed = true;
    }
    pollfd p{fds[0], POLLIN, 0};
    int r = poll(&p, 1, killed ? 5000 : static_cast<int>(std::max<int64_t>(left.count(), 1)));
    if (r < 0 && errno == EINTR)
      continue;
    REQUIRE(r >= 0);
    if (r == 0)
      continue;
    ssize_t n = read(fds[0], buf, sizeof buf);
    if (n <= 0)
      break; // EOF: the child is gone and everything it wrote has been read
    out.append(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  // The child must have died by our signal, not by a crash of its own.
  CHECK_MESSAGE((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL), "child status " << status);
  std::vector<ack> acks;
  std::istringstream in(out);
  std::string tag;
  ack a{};
  while (in >> tag >> a.stream >> a.seq >> a.position) {
    REQUIRE(tag == "A");
    acks.push_back(a);
  }
  return acks;
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
  log_position verified_through = 0;
  std::map<uint64_t, uint64_t> last_seq; // per stream, across all cycles, in log order
  uint64_t total_acks = 0, total_records = 0;
  for (int cycle = 0; cycle < cycles; ++cycle) {
    int run_ms = kill_after_ms_min + static_cast<int>(rng() % (kill_after_ms_max - kill_after_ms_min));
    auto acks = run_child(data, cycle, run_ms);
    total_acks += acks.size();
    metrics::registry m;
    node_store s(o, m);
    // Every acknowledged record is there, at the position reported, whole.
    for (const auto& a : acks) {
      auto e = s.read_log(a.position);
      REQUIRE_MESSAGE(e, "acknowledged record at " << a.position << " is missing (cycle " << cycle << ")");
      CHECK(e->stream == a.stream);
      CHECK(e->seq == a.seq);
      CHECK(payload_ok(e->payload, a.stream, a.seq));
    }
    // Every record written since the last check is whole, and each stream's seqs only grow: no
    // torn, duplicated or reordered record is visible.
    uint64_t bad = 0;
    total_records += s.replay(verified_through, [&](const log_entry& e) {
      if (!payload_ok(e.payload, e.stream, e.seq) || e.seq <= last_seq[e.stream])
        ++bad;
      last_seq[e.stream] = e.seq;
    });
    CHECK(bad == 0);
    verified_through = s.last_position();
    // And the acknowledged records are reachable through the per-stream index.
    if (!acks.empty()) {
      const auto& a = acks[rng() % acks.size()];
      auto page = s.history_before(a.stream, a.seq + 1, 1);
      REQUIRE(page.size() == 1);
      CHECK(page[0].seq == a.seq);
    }
  }
  MESSAGE("crash test: " << total_acks << " acknowledged, " << total_records << " records checked");
  CHECK(total_acks > 0);
}
