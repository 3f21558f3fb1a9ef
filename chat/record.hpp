// The chat records kept in the store: a message as appended to the log, and a user's derived
// state (inbox position, devices, undelivered entries) as one value. Binary, versioned, checked.
#pragma once

#include "chat/ids.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace agner::chat {

/// Thrown when a stored record is truncated, corrupt, or of a newer format.
class record_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// A message as appended to the log (stream = conversation, seq = its per-conversation seq).
struct message_record {
  static constexpr uint8_t format = 1;
  message_id id = 0;
  user_id from = 0;
  int64_t time_ms = 0;
  std::string nonce;
  std::string body;

  std::string encode() const;
  static message_record decode(std::string_view bytes);
};

/// One undelivered (unacknowledged) inbox entry: where the message is in the log.
struct inbox_entry {
  uint64_t inbox_seq;
  uint64_t log_position;
  conversation_id conversation;
  uint64_t seq;
};

/// What the node remembers of one of a user's devices.
struct device_state {
  uint64_t acked = 0;  ///< last acknowledged inbox_seq
  int64_t seen_ms = 0; ///< wall clock (unix ms) of its last identify or ack; 0: not known (format 1)
};

/// A user's derived state, stored as one value so that it is always self-consistent on disk.
/// `applied_through` is the last log position folded in: replay skips records at or below it.
/// Format 2 added `seen_ms` per device; format 1 records still decode (seen_ms = 0).
struct user_record {
  static constexpr uint8_t format = 2;
  uint64_t last_inbox_seq = 0;
  uint64_t applied_through = 0;
  std::map<std::string, device_state> devices; ///< every device known to the node
  std::vector<inbox_entry> pending;            ///< ascending inbox_seq, unacked by some device

  std::string encode() const;
  static user_record decode(std::string_view bytes);
};

/// Derived-state keys. Keep them short: they are written often.
std::string user_key(user_id u);
/// Sorts like user_key(u) does as bytes (decimal digits: "u/10" before "u/9"), without building
/// it. For ids up to user_id_max.
uint64_t user_key_order(user_id u) noexcept;

} // namespace agner::chat
