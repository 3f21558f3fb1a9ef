// Helpers shared by the store tests: a temporary data directory, completions a test can wait for,
// a self-checking payload format (so a test can tell a record is whole, not half-written), and the
// pieces of the crash and power-loss tests: running a child until it is killed, and checking what
// it acknowledged against what the store holds afterwards.
#pragma once

#include "runtime/store/store.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

namespace agner::store::test {

/// A fresh directory under $TMPDIR (or /tmp), removed with everything in it at scope exit.
class temp_dir {
public:
  temp_dir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = fmt::format("{}/agner-store-XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(tmpl.data()))
      throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::string& path() const noexcept { return path_; }
  std::string sub(std::string_view name) const { return fmt::format("{}/{}", path_, name); }

private:
  std::string path_;
};

/// Options for tests: a small map, a short flush window, and a tiny index batch so that history
/// reads exercise both the in-memory tail and the on-disk index.
inline store_options test_options(const std::string& dir) {
  store_options o;
  o.data_dir = dir;
  o.map_size_bytes = size_t{64} << 20;
  o.flush_window_ms = std::chrono::milliseconds(1000);
  o.cache_budget_bytes = size_t{1} << 20;
  o.index_batch_entries = 64;
  o.index_slice_entries = 16;
  o.index_idle_ms = std::chrono::milliseconds(50);
  return o;
}

/// Collects completions from the writer thread; the test thread waits on them (no sleeps).
class completions {
public:
  completion make() {
    return [this](const commit_result& r) {
      std::lock_guard lk(mu_);
      results_.push_back(r);
      cv_.notify_all();
    };
  }
  /// Waits until `n` completions arrived (false after `timeout`).
  bool wait(size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, timeout, [&] { return results_.size() >= n; });
  }
  std::vector<commit_result> results() {
    std::lock_guard lk(mu_);
    return results_;
  }
  size_t count() {
    std::lock_guard lk(mu_);
    return results_.size();
  }

private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<commit_result> results_;
};

/// A before_commit hook that, once armed, fails the next commit with an error code and holds the
/// writer inside that commit until released: a test can queue batches behind a failing commit,
/// so that they reach the writer in a later group. Declare it before the store that uses it.
class gated_failure {
public:
  store_hooks hooks() {
    store_hooks h;
    h.before_commit = [this] {
      int rc = next_.exchange(0);
      if (rc != 0) {
        std::unique_lock lk(mu_);
        inside_ = true;
        cv_.notify_all();
        cv_.wait(lk, [&] { return released_; });
      }
      return rc;
    };
    return h;
  }
  /// The next commit fails with `rc` (an errno or LMDB code).
  void arm(int rc) { next_ = rc; }
  /// Waits until the writer is inside the failing commit.
  bool wait_inside(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, timeout, [&] { return inside_; });
  }
  /// Lets the failing commit return.
  void release() {
    {
      std::lock_guard lk(mu_);
      released_ = true;
    }
    cv_.notify_all();
  }

private:
  std::atomic<int> next_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool inside_ = false, released_ = false;
};

/// Submits `b` and waits for its result.
inline commit_result commit_now(node_store& s, write_batch&& b) {
  completions c;
  if (!s.submit(std::move(b), c.make()))
    return {write_status::failed, 0, 0};
  if (!c.wait(1))
    throw std::runtime_error("commit did not complete in time");
  return c.results().front();
}

inline uint64_t fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s)
    h = (h ^ c) * 1099511628211ull;
  return h;
}

/// A payload that names its stream and seq and ends with a checksum of everything before it.
inline std::string make_payload(uint64_t stream, uint64_t seq, size_t filler) {
  std::string p = fmt::format("{}:{}:{}:", stream, seq, filler);
  p.append(filler, static_cast<char>('a' + seq % 26));
  p += fmt::format(":{:016x}", fnv1a(p));
  return p;
}

/// True if `p` is a whole payload for (stream, seq).
inline bool payload_ok(std::string_view p, uint64_t stream, uint64_t seq) {
  if (p.size() < 17 || p[p.size() - 17] != ':')
    return false;
  auto body = p.substr(0, p.size() - 17);
  if (fmt::format("{:016x}", fnv1a(body)) != p.substr(p.size() - 16))
    return false;
  return body.starts_with(fmt::format("{}:{}:", stream, seq));
}

/// One acknowledgement reported by store_crash_child: a line "A stream seq position".
struct ack {
  uint64_t stream, seq, position;
};

/// The acknowledgements in a child's output.
inline std::vector<ack> parse_acks(const std::string& out) {
  std::vector<ack> acks;
  std::istringstream in(out);
  std::string tag;
  ack a{};
  while (in >> tag >> a.stream >> a.seq >> a.position) {
    if (tag != "A")
      throw std::runtime_error("unexpected line from the child: " + tag);
    acks.push_back(a);
  }
  return acks;
}

/// What a child printed before it was killed, and its wait status.
struct killed_child {
  std::string out;
  int status = 0;
  /// True if it died of our SIGKILL, not of a crash of its own.
  bool killed_by_us() const { return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL; }
};

/// Runs `argv` (argv[0] a path) with its stdout on a pipe and `env` as its environment ("KEY=VALUE";
/// empty: this process's), SIGKILLs it once `run_for` has passed or, if `until` is not empty, as
/// soon as its output contains `until`. Then reads its output to the end and reaps it.
inline killed_child run_and_kill(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                                 std::chrono::milliseconds run_for, std::string_view until = {}) {
  // Everything the child needs is built before fork: after it, only async-signal-safe calls.
  std::vector<char*> args, envp;
  for (const auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (const auto& e : env)
    envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  int fds[2];
  if (pipe(fds) != 0)
    throw std::runtime_error("pipe failed");
  pid_t pid = fork();
  if (pid < 0)
    throw std::runtime_error("fork failed");
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    if (env.empty())
      execv(args[0], args.data());
    else
      execve(args[0], args.data(), envp.data());
    _exit(127);
  }
  close(fds[1]);
  killed_child r;
  char buf[65536];
  auto deadline = std::chrono::steady_clock::now() + run_for;
  bool killed = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (!killed && (left.count() <= 0 || (!until.empty() && r.out.find(until) != std::string::npos))) {
      kill(pid, SIGKILL);
      killed = true;
    }
    pollfd p{fds[0], POLLIN, 0};
    int n = poll(&p, 1, killed ? 5000 : static_cast<int>(std::max<int64_t>(left.count(), 1)));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      throw std::runtime_error("poll failed");
    if (n == 0)
      continue;
    ssize_t got = read(fds[0], buf, sizeof buf);
    if (got <= 0)
      break; // EOF: the child is gone and everything it wrote has been read
    r.out.append(buf, static_cast<size_t>(got));
  }
  close(fds[0]);
  waitpid(pid, &r.status, 0);
  return r;
}

/// The acknowledged records that are not at their reported position, whole.
inline std::vector<ack> lost_acks(const node_store& s, const std::vector<ack>& acks) {
  std::vector<ack> lost;
  for (const auto& a : acks) {
    auto e = s.read_log(a.position);
    if (!e || e->stream != a.stream || e->seq != a.seq || !payload_ok(e->payload, a.stream, a.seq))
      lost.push_back(a);
  }
  return lost;
}

/// Checks the log across reopens: every record written since the previous check is whole, and each
/// stream's seqs only grow (no torn, duplicated or reordered record is visible).
class log_checker {
public:
  /// Checks the records after the last checked position; returns how many are bad.
  uint64_t check(const node_store& s) {
    uint64_t bad = 0;
    records_ += s.replay(verified_through_, [&](const log_entry& e) {
      if (!payload_ok(e.payload, e.stream, e.seq) || e.seq <= last_seq_[e.stream])
        ++bad;
      last_seq_[e.stream] = e.seq;
    });
    verified_through_ = s.last_position();
    return bad;
  }
  uint64_t records() const noexcept { return records_; }

private:
  log_position verified_through_ = 0;
  std::map<uint64_t, uint64_t> last_seq_; // per stream, in log order
  uint64_t records_ = 0;
};

} // namespace agner::store::test
