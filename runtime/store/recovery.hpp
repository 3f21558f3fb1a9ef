// Recovery by replay: derived state (inbox, cursors, counters) is checkpointed lazily with the log
// position it covers, and rebuilt after a restart by replaying the log from there.
#pragma once

#include "runtime/store/store.hpp"

#include <string>
#include <string_view>

namespace agner::store {

/// Derived state that can be rebuilt from the log. The chat service implements one per domain
/// (e.g. "inbox" of one shard) and registers it at startup.
///
/// Contract: the domain's checkpoint (written with write_batch::checkpoint, normally by
/// write_back_cache::flush_all) promises that the derived state on disk reflects every record up to
/// that position. State written after the checkpoint (an age-based flush, an eviction) may already
/// reflect some later records, so `apply` must be idempotent: applying a record twice must leave the
/// same state as applying it once.
class replayable {
public:
  virtual ~replayable() = default;
  /// The checkpoint name of this state ("inbox/3"); at most domain_bytes_max bytes.
  virtual std::string domain() const = 0;
  /// Applies one durable log record, in log order. Called on the thread that runs `recover`.
  virtual void apply(const log_entry& e) = 0;
};

/// What one recovery did.
struct replay_stats {
  log_position from = 0;    ///< the domain's checkpoint: records after it were replayed
  log_position through = 0; ///< the last record replayed (the log's end when recovery began)
  uint64_t records = 0;
  double seconds = 0;
};

/// Replays every log record after the checkpoint of `state.domain()` into `state`. Run it before the
/// owner accepts new writes for the domain. Throws format_error on a record of a newer format.
replay_stats recover(const node_store& s, replayable& state);

} // namespace agner::store
