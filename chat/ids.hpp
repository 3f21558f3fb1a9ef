// 64-bit ids: time-ordered message ids unique across nodes, and the fixed id of a 1:1
// conversation. Ids travel as decimal strings on the wire (JSON numbers lose precision > 2^53).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace agner::chat {

using user_id = uint64_t;
using conversation_id = uint64_t;
using message_id = uint64_t;

/// User ids are below 2^31, so that a 1:1 conversation id can hold both members.
inline constexpr user_id user_id_max = (uint64_t{1} << 31) - 1;

/// Bit 62 marks a 1:1 conversation; group conversations (ids from the id generator) have it clear.
inline constexpr uint64_t direct_tag = uint64_t{1} << 62;

/// The stable id of the 1:1 conversation between a and b (order does not matter).
constexpr conversation_id direct_conversation(user_id a, user_id b) noexcept {
  user_id lo = a < b ? a : b, hi = a < b ? b : a;
  return direct_tag | (lo << 31) | hi;
}

constexpr bool is_direct(conversation_id c) noexcept { return (c & direct_tag) != 0 && (c >> 63) == 0; }

/// The two members of a 1:1 conversation.
constexpr std::pair<user_id, user_id> direct_members(conversation_id c) noexcept {
  return {(c >> 31) & user_id_max, c & user_id_max};
}

/// Snowflake-style ids: 41 bits of milliseconds since 2026-01-01, 10 bits of node id, 12 bits of
/// sequence within the millisecond. Unique across nodes with distinct node ids, ordered by time
/// within a node. Thread-safe (one CAS per id).
class id_generator {
public:
  static constexpr uint64_t epoch_ms = 1767225600000ULL; // 2026-01-01T00:00:00Z
  static constexpr uint32_t node_bits = 10;
  static constexpr uint32_t seq_bits = 12;

  explicit id_generator(uint32_t node_id);
  message_id next() noexcept;

  static uint64_t time_ms(message_id id) noexcept { return (id >> (node_bits + seq_bits)) + epoch_ms; }

private:
  uint64_t node_;
  std::atomic<uint64_t> last_{0};
};

/// Parses a decimal id string ("123"); nullopt for empty, signs, non-digits, overflow.
std::optional<uint64_t> parse_id(std::string_view s) noexcept;
std::string id_string(uint64_t v);

} // namespace agner::chat
