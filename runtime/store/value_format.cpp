// Decoders check the version byte first: a newer version is refused with a message that says which
// value and which versions, so an operator who rolled back a binary knows what happened.
#include "runtime/store/value_format.hpp"

#include "runtime/store/key_codec.hpp"

#include <fmt/format.h>

namespace agner::store {

void encode_value(std::string& out, std::string_view payload) {
  out.push_back(static_cast<char>(format_version));
  out.append(payload);
}

std::string_view decode_value(std::string_view stored, std::string_view what) {
  if (stored.empty())
    throw format_error(fmt::format("store: {} is empty (no format version byte)", what));
  auto v = static_cast<uint8_t>(stored[0]);
  if (v > format_version)
    throw format_error(fmt::format("store: {} was written by format version {}, newer than this build "
                                   "supports ({}); refusing to read it (upgrade the binary)",
                                   what, v, format_version));
  if (v == 0)
    throw format_error(fmt::format("store: {} has format version 0 (corrupt)", what));
  return stored.substr(1);
}

void encode_log_record(std::string& out, uint64_t stream, uint64_t seq, std::string_view payload) {
  char hdr[log_record_header_bytes];
  hdr[0] = static_cast<char>(format_version);
  put_u64_be(hdr + 1, stream);
  put_u64_be(hdr + 9, seq);
  out.append(hdr, sizeof hdr);
  out.append(payload);
}

log_record_view decode_log_record(std::string_view stored, uint64_t position) {
  auto body = decode_value(stored, fmt::format("log record at position {}", position));
  if (body.size() < log_record_header_bytes - 1)
    throw format_error(fmt::format("store: log record at position {} is truncated ({} bytes)", position,
                                   stored.size()));
  return {get_u64_be(body.data()), get_u64_be(body.data() + 8), body.substr(16)};
}

void encode_u64_value(std::string& out, uint64_t v) {
  char b[9];
  b[0] = static_cast<char>(format_version);
  put_u64_be(b + 1, v);
  out.append(b, 9);
}

uint64_t decode_u64_value(std::string_view stored, std::string_view what) {
  auto body = decode_value(stored, what);
  if (body.size() != 8)
    throw format_error(fmt::format("store: {} has {} bytes, expected 8", what, body.size()));
  return get_u64_be(body.data());
}

} // namespace agner::store
