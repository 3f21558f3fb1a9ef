// Configuration of one node's store (the integrator wires it to the config system), and the
// fixed limits behind it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace agner::store {

/// Whether a commit waits for the disk.
enum class durability {
  /// LMDB's default: data pages written and fsynced, then the meta page written through an
  /// O_DSYNC descriptor. A commit is acknowledged only after both: the store's promise.
  sync,
  /// MDB_NOSYNC: commits reach the page cache only. A process crash loses nothing, a power cut or
  /// an OS crash loses acknowledged writes. Exists so that the power-loss test can prove it
  /// catches such a loss; never for a node that keeps data.
  unsafe_nosync,
};

/// The configuration spelling of `d` ("sync", "unsafe_nosync").
constexpr std::string_view to_string(durability d) noexcept {
  return d == durability::sync ? "sync" : "unsafe_nosync";
}

/// Parses the configuration spelling; nothing for anything else.
constexpr std::optional<durability> parse_durability(std::string_view s) noexcept {
  if (s == "sync")
    return durability::sync;
  if (s == "unsafe_nosync")
    return durability::unsafe_nosync;
  return std::nullopt;
}

/// Store configuration with production defaults.
struct store_options {
  /// Directory of the LMDB environment (data.mdb, lock.mdb); created if missing.
  std::string data_dir = "./data";
  /// Largest the data file may grow. Address space only: LMDB maps it, the file grows as written.
  /// When it is reached, writes fail with write_status::map_full until `store::grow_map`.
  size_t map_size_bytes = size_t{16} << 30;
  /// How long the write-back cache keeps a dirty entry before writing it: an inbox entry the phone
  /// acknowledges within this window never reaches the disk. Derived state only; the log is
  /// never delayed by it. Ten minutes: on the inbox trace (half read within 60 s, most of the rest
  /// within minutes) one minute saves 50% of the writes and ten minutes 96% (benchmarks-store.md).
  std::chrono::milliseconds flush_window_ms{600'000};
  /// Memory budget of one shard's write-back cache; above it the largest owners are evicted.
  size_t cache_budget_bytes = size_t{64} << 20;
  /// Most writes in one group commit: bounds the pages one transaction dirties and the latency of
  /// the writes queued behind it.
  size_t max_batch_writes = 8192;
  /// Queued bytes above which `store::submit` refuses work, so producers see backpressure instead
  /// of the writer's queue growing without bound.
  size_t queue_bytes_max = size_t{256} << 20;
  /// Appends kept in the in-memory index before they are written to the on-disk per-stream index
  /// as one sorted batch. Larger batches touch each index page once for many appends.
  size_t index_batch_entries = 262'144;
  /// Sorted index entries written per transaction, so one index transaction never holds back the
  /// group commits queued behind it for long. 4,096 (was 16,384): a 16k slice stalled the writer
  /// long enough to set a chat node's p99 at half load (10.5-18.9 ms with the store on /dev/shm,
  /// 4.7-5.2 ms with 4,096), for the same bulk append rate (docs/benchmarks-store.md).
  size_t index_slice_entries = 4'096;
  /// While a sorted batch is being written, each group commit carries this many of its entries per
  /// append it makes (at most index_slice_entries, fewer if they span many streams), in its own
  /// transaction: under load the index then needs no transactions, and syncs, of its own, and
  /// keeps pace with the log. Slices of index_slice_entries run only when no commit came for a
  /// while or the next batch is full.
  size_t index_entries_per_append = 2;
  /// No group commit for this long: the writer may spend a transaction of its own on an index slice.
  std::chrono::milliseconds index_slice_quiet_ms{20};
  /// An idle writer writes the in-memory index after this long even if the batch is not full.
  std::chrono::milliseconds index_idle_ms{2'000};
  /// Disk space reserved (written as zeros) ahead of the data file's use, so that a full disk
  /// shows up as ENOSPC from the reservation before LMDB writes a page, and commits overwrite
  /// blocks that exist (docs/storage.md). Larger: fewer reservations; smaller: a full disk is
  /// noticed sooner. 0 reserves only what each commit may need.
  size_t disk_reserve_bytes = size_t{8} << 20;
  /// How far one commit extends that lead while the lead covers it: the commit's fdatasync also
  /// writes back the zeros (about 0.5 ms plus 2.5 ms per MiB on this project's test disk), so the
  /// lead is topped up a little per commit instead of 8 MiB at once (~20 ms for that one commit;
  /// docs/storage.md). A commit the lead does not cover takes the whole lead.
  size_t disk_reserve_step_bytes = size_t{256} << 10;
  /// `sync` unless a test must show what losing un-flushed commits looks like (see `durability`).
  store::durability durability = store::durability::sync;
};

/// LMDB's default key limit is 511 bytes; state keys stay well below it.
inline constexpr size_t state_key_bytes_max = 400;
/// A log payload is a message, not a blob; larger bodies belong in a blob store.
inline constexpr size_t payload_bytes_max = size_t{1} << 20;
/// A derived-state value (inbox entry, cursor, counter) is small; this catches misuse.
inline constexpr size_t state_value_bytes_max = size_t{1} << 20;
/// Checkpoint domains are short names ("inbox", "cursors").
inline constexpr size_t domain_bytes_max = 64;
/// Named databases: meta, log, index, state (and room to grow).
inline constexpr unsigned max_dbs = 8;
/// Concurrent read transactions: read lanes of every shard plus tools, well above 2 x cores.
inline constexpr unsigned max_readers = 510;
/// Log records read per read transaction during replay ("avoid long-lived transactions").
inline constexpr size_t replay_chunk_records = 4096;

} // namespace agner::store
