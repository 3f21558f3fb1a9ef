// The fixed key hash and the slot space: the one function that decides which shard owns a key.
// Changing anything here moves every key to another owner; the values are pinned in a test.
#pragma once

#include <cstdint>
#include <string_view>

namespace agner {

/// Number of slots a key space is divided into. Fixed for the life of a data set: a slot is the
/// unit a cluster moves between nodes, so 4096 lets 64 nodes x 64 shards each own whole slots.
inline constexpr uint32_t slot_count = 4096;

/// The splitmix64 finalizer (Steele, Lea, Flood 2014): a bijective 64-bit mix with full avalanche.
constexpr uint64_t mix64(uint64_t x) noexcept {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

/// Hash of a 64-bit key (user id, conversation id, record id): mix64(key).
constexpr uint64_t key_hash(uint64_t key) noexcept { return mix64(key); }

/// Hash of a byte-string key: 64-bit FNV-1a over the bytes, then mix64.
constexpr uint64_t key_hash(std::string_view key) noexcept {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : key) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return mix64(h);
}

/// The slot of a hash: its top 12 bits (the best-mixed ones), so slot = hash >> 52.
constexpr uint32_t slot_of_hash(uint64_t h) noexcept {
  static_assert(slot_count == 4096, "slot_of_hash takes the top 12 bits");
  return static_cast<uint32_t>(h >> 52);
}

template <class Key>
constexpr uint32_t slot_of(const Key& key) noexcept {
  return slot_of_hash(key_hash(key));
}

} // namespace agner
