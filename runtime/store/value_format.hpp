// The on-disk value format: every stored value starts with a format version byte, so a node never
// misreads data written by a newer build (it refuses it with format_error instead).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace agner::store {

/// The format this build writes. Bump it when any stored layout changes; older values stay readable
/// as long as the decoders below keep a branch for them.
inline constexpr uint8_t format_version = 1;

/// A stored value this build cannot read: written by a newer format, or malformed.
class format_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// Appends `payload` behind the current version byte.
void encode_value(std::string& out, std::string_view payload);
/// The payload behind the version byte; throws format_error for a newer version or an empty value.
/// `what` names the value in the error ("state key ...", "log position 17").
std::string_view decode_value(std::string_view stored, std::string_view what);

/// A decoded log record (views into the stored value).
struct log_record_view {
  uint64_t stream;
  uint64_t seq;
  std::string_view payload;
};

/// Log record: version byte, stream (8 bytes BE), seq (8 bytes BE), payload.
inline constexpr size_t log_record_header_bytes = 1 + 8 + 8;
void encode_log_record(std::string& out, uint64_t stream, uint64_t seq, std::string_view payload);
log_record_view decode_log_record(std::string_view stored, uint64_t position);

/// A u64 (index entries, checkpoints, meta counters): version byte + 8 bytes BE.
void encode_u64_value(std::string& out, uint64_t v);
uint64_t decode_u64_value(std::string_view stored, std::string_view what);

} // namespace agner::store
