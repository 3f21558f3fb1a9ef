// Maps each slot to the shard that owns it. This single small table is the seam where a cluster
// will map slots to (node, shard); today every slot is local.
#pragma once

#include "runtime/hash.hpp"

#include <array>
#include <cassert>
#include <cstdint>

namespace agner {

/// Slot -> shard index for one service. Immutable after construction: ownership changes are
/// made by building a new table and swapping it in whole (with an epoch, once clusters exist).
class slot_table {
public:
  /// Spreads the slots round-robin over `shards` shards: slot s goes to shard s % shards.
  explicit slot_table(uint32_t shards) : shards_(shards) {
    assert(shards > 0 && shards <= slot_count);
    for (uint32_t s = 0; s < slot_count; ++s)
      owner_[s] = static_cast<uint16_t>(s % shards);
  }

  uint32_t shard_of_slot(uint32_t slot) const noexcept { return owner_[slot]; }

  template <class Key>
  uint32_t shard_of(const Key& key) const noexcept {
    return owner_[slot_of(key)];
  }

  uint32_t shards() const noexcept { return shards_; }

private:
  uint32_t shards_;
  std::array<uint16_t, slot_count> owner_{};
};

} // namespace agner
