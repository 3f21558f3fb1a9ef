// Helpers shared by the store tests: a temporary data directory, completions a test can wait for,
// and a self-checking payload format (so a test can tell a record is whole, not half-written).
#pragma once

#include "runtime/store/store.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

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

} // namespace agner::store::test
