#include "chat/record.hpp"

#include <algorithm>
#include <cstring>
#include <fmt/format.h>

namespace agner::chat {

namespace {

class writer {
public:
  explicit writer(uint8_t format) { out_.push_back(static_cast<char>(format)); }
  void u64(uint64_t v) {
    // LEB128: small numbers (seqs, user ids) take one or two bytes.
    do {
      uint8_t b = v & 0x7f;
      v >>= 7;
      out_.push_back(static_cast<char>(b | (v ? 0x80 : 0)));
    } while (v);
  }
  void str(std::string_view s) {
    u64(s.size());
    out_.append(s);
  }
  std::string take() { return std::move(out_); }

private:
  std::string out_;
};

class reader {
public:
  reader(std::string_view in, uint8_t format, const char* what) : in_(in), what_(what) {
    if (in_.empty())
      throw record_error(fmt::format("{}: empty record", what));
    auto v = static_cast<uint8_t>(in_[0]);
    if (v > format)
      throw record_error(fmt::format("{}: format {} is newer than this build understands ({})", what, v, format));
    if (v == 0)
      throw record_error(fmt::format("{}: format 0 is invalid", what));
    version_ = v;
    in_.remove_prefix(1);
  }
  /// The format version the record was written with.
  uint8_t version() const noexcept { return version_; }
  uint64_t u64() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (in_.empty())
        throw record_error(fmt::format("{}: truncated", what_));
      auto b = static_cast<uint8_t>(in_[0]);
      in_.remove_prefix(1);
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80))
        return v;
    }
    throw record_error(fmt::format("{}: bad varint", what_));
  }
  std::string str() {
    auto n = u64();
    if (n > in_.size())
      throw record_error(fmt::format("{}: truncated string", what_));
    std::string s(in_.substr(0, n));
    in_.remove_prefix(n);
    return s;
  }
  void done() const {
    if (!in_.empty())
      throw record_error(fmt::format("{}: {} trailing bytes", what_, in_.size()));
  }

private:
  std::string_view in_;
  const char* what_;
  uint8_t version_ = 0;
};

} // namespace

std::string message_record::encode() const {
  writer w(format);
  w.u64(id);
  w.u64(from);
  w.u64(static_cast<uint64_t>(time_ms));
  w.str(nonce);
  w.str(body);
  return w.take();
}

message_record message_record::decode(std::string_view bytes) {
  reader r(bytes, format, "message record");
  message_record m;
  m.id = r.u64();
  m.from = r.u64();
  m.time_ms = static_cast<int64_t>(r.u64());
  m.nonce = r.str();
  m.body = r.str();
  r.done();
  return m;
}

std::string user_record::encode() const {
  writer w(format);
  w.u64(last_inbox_seq);
  w.u64(applied_through);
  w.u64(devices.size());
  for (auto& [d, st] : devices) {
    w.str(d);
    w.u64(st.acked);
    w.u64(static_cast<uint64_t>(std::max<int64_t>(st.seen_ms, 0)));
  }
  w.u64(pending.size());
  for (auto& e : pending) {
    w.u64(e.inbox_seq);
    w.u64(e.log_position);
    w.u64(e.conversation);
    w.u64(e.seq);
  }
  return w.take();
}

user_record user_record::decode(std::string_view bytes) {
  reader r(bytes, format, "user record");
  user_record u;
  u.last_inbox_seq = r.u64();
  u.applied_through = r.u64();
  auto nd = r.u64();
  if (nd > bytes.size())
    throw record_error("user record: impossible device count");
  for (uint64_t i = 0; i < nd; ++i) {
    auto d = r.str();
    device_state st;
    st.acked = r.u64();
    if (r.version() >= 2)
      st.seen_ms = static_cast<int64_t>(r.u64());
    u.devices[std::move(d)] = st;
  }
  auto np = r.u64();
  if (np > bytes.size())
    throw record_error("user record: impossible entry count");
  u.pending.reserve(np);
  for (uint64_t i = 0; i < np; ++i) {
    inbox_entry e{};
    e.inbox_seq = r.u64();
    e.log_position = r.u64();
    e.conversation = r.u64();
    e.seq = r.u64();
    u.pending.push_back(e);
  }
  r.done();
  return u;
}

std::string user_key(user_id u) { return fmt::format("u/{}", u); }

uint64_t user_key_order(user_id u) noexcept {
  // Bytes compare digit by digit, and a prefix first ("u/1" < "u/10" < "u/9"): the digits
  // left-aligned in 10 places (zero-filled), then the count of digits.
  static_assert(user_id_max < 10'000'000'000ULL, "user ids have at most 10 digits");
  unsigned digits = 1;
  for (uint64_t v = u; v >= 10; v /= 10)
    ++digits;
  uint64_t aligned = u;
  for (unsigned d = digits; d < 10; ++d)
    aligned *= 10;
  return aligned << 4 | digits;
}

} // namespace agner::chat
