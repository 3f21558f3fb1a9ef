// The per-shard write-back cache for derived state (inbox entries, cursors, counters): repeated
// updates coalesce, an entry deleted before it was flushed is never written, memory is bounded by
// evicting the largest owners first. The log never goes through it: it is for state that replay
// can rebuild.
#pragma once

#include "runtime/clock.hpp"
#include "runtime/metrics.hpp"
#include "runtime/store/store.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace agner::store {

/// Names one flush handed to the store; 0 means "nothing was flushed".
using flush_ticket = uint64_t;

/// A checkpoint written with a full flush: the derived state of `domain` covers the log to `covered`.
struct checkpoint_mark {
  std::string domain;
  log_position covered;
};

/// What one cache did, for tests and benchmarks (the same numbers also go to metrics).
struct cache_stats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t inserts = 0;         ///< `insert` calls: keys new to the disk
  uint64_t coalesced = 0;       ///< updates folded into a write not yet flushed
  uint64_t never_written = 0;   ///< inserted entries deleted before they reached the disk
  uint64_t writes_avoided = 0;  ///< disk writes saved: coalesced + 2 x never_written
  uint64_t writes_flushed = 0;  ///< puts and deletes handed to the store
  uint64_t flushes = 0;
  uint64_t failed_flushes = 0;
  uint64_t evicted_owners = 0;
  uint64_t evicted_entries = 0;
};

/// One shard's write-back cache in front of the store's derived-state keys.
///
/// Threading: owned by one shard; every member must be called on that shard's thread (no locks
/// inside). The store reports each flush on its writer thread through `notify`; the integrator
/// forwards (ticket, status) to the shard, which calls `on_flushed` on its own thread.
///
/// Contract: a value written here is durable only after a flush holding it reported `durable`;
/// derived state is rebuilt by replay after a crash (recovery.hpp), so this is never a promise to
/// a client. Eviction writes dirty entries before forgetting them, never drops them. When the
/// store refuses writes (full map or disk) the entries stay dirty in memory and memory may exceed
/// the budget by them until a later flush succeeds.
class write_back_cache {
public:
  /// Runs on the store's writer thread: must be cheap and non-blocking (enqueue to the shard).
  using notify_fn = std::function<void(flush_ticket, write_status)>;

  /// `shard_label` distinguishes this cache's metrics (label shard="...").
  write_back_cache(node_store& s, const agner::clock& clk, metrics::registry& m, std::string_view shard_label,
                   notify_fn notify);
  write_back_cache(const write_back_cache&) = delete;
  write_back_cache& operator=(const write_back_cache&) = delete;

  /// Sets a key the caller knows is not on disk (e.g. a freshly assigned inbox_seq). Deleting it
  /// before it is flushed costs no disk write at all.
  void insert(uint64_t owner, std::string_view key, std::string_view value);
  /// Sets a key that may exist on disk. `owner` (a user) is the unit of memory accounting.
  void put(uint64_t owner, std::string_view key, std::string_view value);
  /// Deletes a key.
  void del(uint64_t owner, std::string_view key);
  /// The value from memory, else from the store (then cached); nothing if absent or deleted.
  std::optional<std::string> get(uint64_t owner, std::string_view key);

  /// Hands every dirty entry older than the flush window to the store; 0 if there was none.
  flush_ticket flush();
  /// Hands these keys to the store now if they are dirty (one slice of an incremental checkpoint,
  /// whose keys are close together on disk); 0 if there was nothing to write. With `cp` (the last
  /// slice), also every in-flight entry again, every due entry (writes the store refused are due
  /// at once) and the mark: the mark then holds for every key the caller put before it and
  /// handed to a flush; other dirty keys stay for later.
  flush_ticket flush_keys(const std::vector<std::string>& keys, std::optional<checkpoint_mark> cp = std::nullopt);
  /// Hands every dirty (and every in-flight) entry to the store, with `cp` in the same transaction
  /// if given: when it is durable, the checkpoint is true.
  flush_ticket flush_all(std::optional<checkpoint_mark> cp = std::nullopt);
  /// Completes a flush (call with what `notify` reported).
  void on_flushed(flush_ticket t, write_status s);
  /// When the oldest dirty entry becomes due, for the shard's flush timer; nothing if none is dirty.
  std::optional<time_point> next_due() const;

  /// Bytes held (entries in flight included), an estimate with a fixed per-entry overhead.
  size_t bytes() const noexcept { return bytes_; }
  size_t entries() const noexcept { return map_.size(); }
  size_t dirty_entries() const noexcept { return dirty_count_; }
  size_t flushes_in_flight() const noexcept { return in_flight_.size(); }
  /// The footprint of `owner` in bytes (0 if it holds nothing resident).
  size_t owner_bytes(uint64_t owner) const;
  const cache_stats& stats() const noexcept { return stats_; }

private:
  enum class disk_state : uint8_t { unknown, absent, present };
  struct entry {
    std::string value;
    const std::string* key = nullptr;
    uint64_t owner = 0;
    uint64_t version = 0;          // bumped on every change
    uint64_t flushing_version = 0; // the latest version handed to the store and not completed
    time_point dirty_since{};
    size_t charged = 0;            // bytes counted for this entry
    entry* owner_prev = nullptr;   // the owner's resident entries
    entry* owner_next = nullptr;
    entry* dirty_prev = nullptr;   // dirty entries, oldest first
    entry* dirty_next = nullptr;
    bool deleted = false;
    bool dirty = false;
    bool resident = false;         // counted in its owner's footprint (false while evicted in flight)
    disk_state disk = disk_state::unknown;
  };
  struct owner_info {
    size_t bytes = 0;
    entry* head = nullptr;
  };
  struct flushed_write {
    std::string key;
    uint64_t version;
    bool del;
  };
  struct string_hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  using entry_map = std::unordered_map<std::string, entry, string_hash, std::equal_to<>>;

  entry& set(uint64_t owner, std::string_view key, std::string_view value, bool fresh);
  /// Adds every in-flight entry (its latest version) to `b` again.
  void rewrite_in_flight(write_batch& b, std::vector<flushed_write>& writes);
  /// Adds every entry dirty for the flush window or longer.
  void add_due(write_batch& b, std::vector<flushed_write>& writes);
  void charge(entry& e);
  void account_add(entry& e);
  void account_remove(entry& e);
  void mark_dirty(entry& e);
  void unlink_dirty(entry& e);
  void requeue_dirty(entry& e);
  void erase(entry_map::iterator it);
  void add_write(write_batch& b, entry& e, std::vector<flushed_write>& writes);
  flush_ticket submit(write_batch&& b, std::vector<flushed_write>&& writes);
  void maybe_evict();

  node_store& store_;
  const agner::clock& clock_;
  notify_fn notify_;

  entry_map map_;
  std::unordered_map<uint64_t, owner_info> owners_;
  std::set<std::pair<size_t, uint64_t>> by_size_; // (bytes, owner): the largest is last
  entry* dirty_head_ = nullptr;
  entry* dirty_tail_ = nullptr;
  size_t dirty_count_ = 0;
  std::unordered_map<flush_ticket, std::vector<flushed_write>> in_flight_;
  flush_ticket next_ticket_ = 1;
  size_t bytes_ = 0;
  size_t resident_bytes_ = 0;
  cache_stats stats_;

  metrics::counter& hits_;
  metrics::counter& misses_;
  metrics::counter& writes_avoided_;
  metrics::counter& never_written_;
  metrics::counter& evictions_;
  metrics::counter& evicted_entries_;
  metrics::histogram& flush_writes_;
  metrics::gauge& bytes_gauge_;
};

} // namespace agner::store
