// The node's store: one LMDB environment, one group-commit writer thread, reads from any thread.
// The log is the only thing an acknowledgement waits for; derived state is checkpointed lazily and
// rebuilt by replaying the log (see recovery.hpp, and docs/storage.md for the layout).
#pragma once

#include "runtime/metrics.hpp"
#include "runtime/store/options.hpp"
#include "runtime/store/write_batch.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <vector>

namespace agner::store {

namespace lmdb {
class env;
class txn;
}
class pending_index;

/// The outcome of one submitted batch. Only `durable` may be acknowledged to anyone.
enum class write_status : uint8_t {
  durable,  ///< committed with a full sync: survives any crash
  map_full, ///< the LMDB map is full: nothing of the batch was written; retry after `grow_map`
  no_space, ///< the file system is full (ENOSPC, EDQUOT): nothing written; retry when there is room
  rejected, ///< LMDB refused the batch itself (e.g. it alone overflows a transaction); do not retry
  failed,   ///< the store hit a fatal error or is closing: nothing written, nothing ever will be
  chain_broken, ///< an earlier batch of the same chain failed (write_batch::chain): nothing written
};
std::string_view to_string(write_status s) noexcept;
/// True for the statuses that may succeed when retried later (map_full, no_space).
inline bool retryable(write_status s) noexcept { return s == write_status::map_full || s == write_status::no_space; }

/// What a completion callback learns about its batch.
struct commit_result {
  write_status status;
  /// Position of the batch's first append when durable (the others follow contiguously); else 0.
  log_position first_position;
  /// Appends in the batch.
  size_t appends;
};

/// Called once per submitted batch, on the writer thread, after mdb_txn_commit returned (or after
/// the batch definitely failed). Must be cheap and must not block: enqueue a message to the owning
/// shard and return. It must not call back into `submit` synchronously waiting for a result.
using completion = std::function<void(const commit_result&)>;

/// One log record as read back.
struct log_entry {
  log_position position;
  uint64_t stream;
  uint64_t seq;
  std::string payload;
};

/// Hooks for the process around the store.
struct store_hooks {
  /// Called on the writer thread when a commit or sync fails with anything but a full map or disk:
  /// after such an error no write may be acknowledged again (PostgreSQL's fsync lesson). The
  /// default logs at critical level and aborts the process. If a test's handler returns, the store
  /// completes every pending and later batch with write_status::failed and writes nothing more.
  std::function<void(const std::string& reason)> on_fatal;
  /// Tests only: called before each commit; a nonzero result (an errno or LMDB code) aborts the
  /// transaction and is treated as what mdb_txn_commit returned.
  std::function<int()> before_commit;
};

/// The store of one node. Construction opens (or creates) the environment, rebuilds the in-memory
/// index tail from the log and starts the writer thread; destruction commits everything already
/// submitted and stops it. All members are thread-safe unless noted.
///
/// Caveats: reads see only durable data (acknowledged or about to be). A history page merges the
/// on-disk index with the in-memory tail, so it costs a short read transaction and one lock.
/// Destroy the store only when no read is in flight.
class node_store {
public:
  /// Opens the store; throws lmdb::error on I/O errors and format_error when the data directory
  /// was written by a newer format.
  node_store(store_options options, metrics::registry& metrics, store_hooks hooks = {});
  ~node_store();
  node_store(const node_store&) = delete;
  node_store& operator=(const node_store&) = delete;

  // ---- writes (any thread) ----

  /// Queues `batch` for the next group commit; `done` runs on the writer thread once it is durable
  /// or has failed. Returns false, without calling `done`, when the queue holds more than
  /// `queue_bytes_max` (backpressure: retry later) or the store has failed or is closing.
  bool submit(write_batch&& batch, completion done);
  /// `submit`, then blocks until the batch is durable or has failed; nullopt when refused. Not
  /// from the writer thread (a completion). Runs the wake-ups the caller's burst deferred first
  /// (runtime/wake_batch.hpp), the writer's among them.
  std::optional<write_status> submit_and_wait(write_batch&& batch);
  /// Grows the LMDB map to `bytes` between two commits (readers are held back for the remap);
  /// `done(ok)` runs on the writer thread.
  void grow_map(size_t bytes, std::function<void(bool ok)> done = {});

  // ---- reads (any thread; each is one short read transaction) ----

  /// Up to `limit` records of `stream` with seq < `before_seq`, the highest ones, in ascending
  /// seq order. `before_seq = UINT64_MAX` reads the newest page.
  std::vector<log_entry> history_before(uint64_t stream, uint64_t before_seq, size_t limit) const;
  /// Up to `limit` records of `stream` with seq > `after_seq`, the lowest ones, ascending.
  std::vector<log_entry> history_after(uint64_t stream, uint64_t after_seq, size_t limit) const;
  /// The record at `pos`, if any.
  std::optional<log_entry> read_log(log_position pos) const;
  /// Derived-state value of `key`; throws format_error for a value of a newer format.
  std::optional<std::string> get(std::string_view key) const;
  /// The log position the derived state of `domain` covers (0: no checkpoint yet).
  log_position checkpoint(std::string_view domain) const;
  /// The last durable log position (0: empty log).
  log_position last_position() const noexcept { return last_durable_.load(std::memory_order_acquire); }
  /// Calls `fn` for every record with position in (`after`, last_position()] in order, in chunks of
  /// short read transactions; returns how many. Throws format_error on a newer record.
  uint64_t replay(log_position after, const std::function<void(const log_entry&)>& fn) const;

  /// True once a fatal error stopped the writer.
  bool failed() const noexcept { return failed_.load(std::memory_order_acquire); }
  const store_options& options() const noexcept { return options_; }
  /// Bytes queued and not yet taken by the writer.
  size_t queued_bytes() const;
  /// Blocks until the in-memory index tail is written to disk (tests, benchmarks, shutdown tools).
  void flush_index();

private:
  struct queued {
    write_batch batch;
    completion done;
    std::function<void()> control; // grow_map and flush_index run between commits
    std::chrono::steady_clock::time_point submitted{};
  };
  struct dbs {
    unsigned meta = 0, log = 0, index = 0, state = 0;
  };

  void open_databases();
  void rebuild_pending_index();
  void writer_loop();
  void run_group(std::vector<queued>& group);
  /// Commits `n` queued batches, with the frozen index entries up to `index_end` (frozen_done_:
  /// none) in the same transaction.
  bool commit_some(queued** first, size_t n, size_t index_end);
  int try_commit(queued** first, size_t n, std::vector<log_position>& firsts, size_t index_end);
  /// Where the next group commit's share of the frozen index generation ends.
  size_t index_share(size_t appends) const;
  int put_index(lmdb::txn& t, size_t end);
  void index_written(size_t end);
  void index_retry_later(int rc);
  int finish(lmdb::txn& t);
  int reserve_disk(size_t estimate_bytes);
  bool write_index_slice();
  void write_whole_index();
  void fail_fatal(const std::string& reason, queued** first, size_t n);
  /// Runs `q`'s completion; a batch of a chain that did not become durable breaks its chain.
  void complete(queued& q, const commit_result& r);
  std::vector<log_entry> read_page(uint64_t stream, uint64_t lo, uint64_t hi, size_t limit, bool highest) const;

  store_options options_;
  store_hooks hooks_;
  std::unique_ptr<lmdb::env> env_;
  dbs dbs_;
  std::unique_ptr<pending_index> pending_;

  // Readers share this; grow_map takes it exclusively because a remap moves every page.
  mutable std::shared_mutex remap_mu_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<queued> queue_;
  size_t queued_bytes_ = 0;
  bool stopping_ = false;

  // Writer thread only.
  log_position next_position_ = 1;
  log_position indexed_through_ = 0;
  size_t frozen_done_ = 0;
  log_position frozen_through_ = 0;
  std::chrono::steady_clock::time_point last_freeze_;
  std::chrono::steady_clock::time_point index_retry_after_;
  std::chrono::steady_clock::time_point last_commit_; // the last group commit's end
  std::string scratch_;
  std::unordered_set<uint64_t> broken_chains_; // chains whose last batch failed (write_batch::chain)
  size_t reserved_end_ = 0;    // data file bytes with disk blocks reserved
  bool reserve_enabled_ = true; // false once writing the reserve failed other than for space

  std::atomic<log_position> last_durable_{0};
  std::atomic<bool> failed_{false};

  metrics::counter& commits_;
  metrics::counter& appends_;
  metrics::counter& map_full_errors_;
  metrics::counter& no_space_errors_;
  metrics::counter& fatal_errors_;
  metrics::histogram& queue_wait_ns_;
  metrics::histogram& commit_ns_;
  metrics::histogram& commit_writes_;
  metrics::histogram& index_slice_ns_;
  metrics::counter& index_carried_;
  metrics::gauge& queue_bytes_gauge_;
  metrics::gauge& index_pending_;
  metrics::gauge& broken_chains_gauge_;

  std::thread writer_;
};

} // namespace agner::store
