// The store's own key layouts and the decoding of a log record, shared by the writer (store.cpp)
// and the reads (store_reads.cpp). Internal to runtime/store; docs/storage.md has the layouts.
#pragma once

#include "runtime/store/key_codec.hpp"
#include "runtime/store/store.hpp"
#include "runtime/store/value_format.hpp"

#include <string>
#include <string_view>

namespace agner::store::detail {

constexpr std::string_view meta_format_key = "format";
constexpr std::string_view meta_indexed_key = "indexed_through";
constexpr std::string_view meta_checkpoint_prefix = "checkpoint/";

// Log keys: the position, 8 bytes big-endian, so appends always go to the right-most leaf.
struct position_key {
  explicit position_key(log_position p) noexcept { put_u64_be(b, p); }
  std::string_view view() const noexcept { return {b, 8}; }
  char b[8];
};

// Index keys: (stream, seq), 16 bytes big-endian, so one stream's history is one key range.
struct index_key {
  index_key(uint64_t stream, uint64_t seq) noexcept {
    put_u64_be(b, stream);
    put_u64_be(b + 8, seq);
  }
  std::string_view view() const noexcept { return {b, 16}; }
  char b[16];
};

inline std::string checkpoint_key(std::string_view domain) {
  std::string k(meta_checkpoint_prefix);
  k.append(domain);
  return k;
}

inline log_entry to_entry(log_position pos, std::string_view stored) {
  auto r = decode_log_record(stored, pos);
  return {pos, r.stream, r.seq, std::string(r.payload)};
}

} // namespace agner::store::detail
