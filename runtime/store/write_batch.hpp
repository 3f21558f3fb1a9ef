// A batch of writes one producer (a shard) hands to the group-commit writer: log appends, derived
// state puts and deletes, and checkpoints. The batch commits atomically, all or nothing.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace agner::store {

/// A position in the node-local log: 1, 2, 3, ... in commit order; 0 means "none".
using log_position = uint64_t;

/// An ordered set of writes that commit together. Not thread-safe; moved into `store::submit`.
/// Inputs are validated when added: too long keys or payloads throw std::invalid_argument.
class write_batch {
public:
  /// Appends a record to the log of `stream` (a conversation, for the chat service) with the
  /// producer's sequence number `seq`. The store assigns the log position at commit.
  void append(uint64_t stream, uint64_t seq, std::string_view payload);
  /// Sets derived-state `key` to `value`.
  void put(std::string_view key, std::string_view value);
  /// Deletes derived-state `key` (absent is fine).
  void del(std::string_view key);
  /// Records that the derived state of `domain` on disk covers the log up to `covered`. Written in
  /// the same transaction as the rest of the batch.
  void checkpoint(std::string_view domain, log_position covered);
  /// Puts the batch in chain `id` (nonzero; a conversation, for the chat service). Batches of one
  /// chain commit in the order submitted, and once one of them fails, every later batch of the
  /// chain fails too (write_status::chain_broken, nothing written) until one that says `restart`.
  /// A producer with several batches in flight needs this: otherwise a batch could be durable
  /// after an earlier one failed, and the producer's sequence numbers would have a gap. `restart`
  /// is safe whenever the producer has no other batch of the chain in flight.
  void chain(uint64_t id, bool restart) noexcept {
    chain_ = id;
    restart_ = restart;
  }
  uint64_t chain_id() const noexcept { return chain_; }
  bool chain_restart() const noexcept { return restart_; }

  bool empty() const noexcept { return ops_.empty(); }
  size_t size() const noexcept { return ops_.size(); }
  size_t appends() const noexcept { return appends_; }
  size_t bytes() const noexcept { return data_.size() + ops_.size() * sizeof(op); }
  void clear() noexcept;

  enum class kind : uint8_t { append, put, del, checkpoint };
  /// One write; key and value are ranges of the batch's byte buffer.
  struct op {
    kind k;
    uint32_t key_off, key_len, val_off, val_len;
    uint64_t stream, seq; // append: stream, seq; checkpoint: seq = covered position
  };
  const std::vector<op>& ops() const noexcept { return ops_; }
  std::string_view key(const op& o) const noexcept { return {data_.data() + o.key_off, o.key_len}; }
  std::string_view value(const op& o) const noexcept { return {data_.data() + o.val_off, o.val_len}; }

private:
  std::vector<op> ops_;
  std::string data_;
  size_t appends_ = 0;
  uint64_t chain_ = 0;
  bool restart_ = false;
};

} // namespace agner::store
