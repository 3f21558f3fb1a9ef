// Order-preserving key encoding: big-endian, fixed-width integers, so that LMDB's bytewise key
// order equals the numeric order of composite keys such as (stream, seq) or (user, inbox_seq).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace agner::store {

/// Writes `v` as 8 big-endian bytes at `out`.
inline void put_u64_be(char* out, uint64_t v) noexcept {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}

/// Reads 8 big-endian bytes at `in`.
inline uint64_t get_u64_be(const char* in) noexcept {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v = (v << 8) | static_cast<uint8_t>(in[i]);
  return v;
}

/// Builds a composite key from fixed-width big-endian parts. Keys compare bytewise in the order of
/// their parts, so prefixes group (all keys of one user) and the last part orders (by sequence).
/// A variable-length part (`bytes`) keeps the order only as the last part of a key.
class key_builder {
public:
  key_builder& u8(uint8_t v) {
    key_.push_back(static_cast<char>(v));
    return *this;
  }
  key_builder& u32(uint32_t v) {
    for (int s = 24; s >= 0; s -= 8)
      key_.push_back(static_cast<char>((v >> s) & 0xff));
    return *this;
  }
  key_builder& u64(uint64_t v) {
    char b[8];
    put_u64_be(b, v);
    key_.append(b, 8);
    return *this;
  }
  key_builder& bytes(std::string_view s) {
    key_.append(s);
    return *this;
  }

  std::string_view view() const noexcept { return key_; }
  std::string str() && { return std::move(key_); }
  const std::string& str() const& { return key_; }

private:
  std::string key_;
};

/// Reads the parts of a key in the order they were built; throws std::out_of_range when the key
/// is shorter than the parts asked for.
class key_reader {
public:
  explicit key_reader(std::string_view key) noexcept : key_(key) {}

  uint8_t u8() { return static_cast<uint8_t>(take(1)[0]); }
  uint32_t u32() {
    auto b = take(4);
    uint32_t v = 0;
    for (char c : b)
      v = (v << 8) | static_cast<uint8_t>(c);
    return v;
  }
  uint64_t u64() { return get_u64_be(take(8).data()); }
  /// Everything not read yet.
  std::string_view rest() noexcept {
    auto r = key_.substr(pos_);
    pos_ = key_.size();
    return r;
  }
  bool done() const noexcept { return pos_ == key_.size(); }

private:
  std::string_view take(size_t n) {
    if (key_.size() - pos_ < n)
      throw std::out_of_range("key_reader: key too short");
    auto r = key_.substr(pos_, n);
    pos_ += n;
    return r;
  }
  std::string_view key_;
  size_t pos_ = 0;
};

} // namespace agner::store
