#include "chat/ids.hpp"

#include <charconv>
#include <stdexcept>

namespace agner::chat {

id_generator::id_generator(uint32_t node_id) : node_(node_id) {
  if (node_id >= (1u << node_bits))
    throw std::invalid_argument("node id must be below 1024");
}

message_id id_generator::next() noexcept {
  using namespace std::chrono;
  uint64_t now_ms = static_cast<uint64_t>(duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
  uint64_t base = ((now_ms - epoch_ms) << (node_bits + seq_bits)) | (node_ << seq_bits);
  uint64_t last = last_.load(std::memory_order_relaxed);
  for (;;) {
    // Never go backwards: if the clock stepped back or 4096 ids were taken this millisecond,
    // continue from the last id (borrowing from the future, which catches up).
    uint64_t next = base > last ? base : last + 1;
    if (last_.compare_exchange_weak(last, next, std::memory_order_relaxed))
      return next;
  }
}

std::optional<uint64_t> parse_id(std::string_view s) noexcept {
  if (s.empty() || s.size() > 20)
    return std::nullopt;
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size())
    return std::nullopt;
  return v;
}

std::string id_string(uint64_t v) { return std::to_string(v); }

} // namespace agner::chat
