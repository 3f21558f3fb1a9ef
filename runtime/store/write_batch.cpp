// Batches keep every byte in one buffer so that a batch of thousands of small writes costs a few
// allocations, not thousands.
#include "runtime/store/write_batch.hpp"

#include "runtime/store/options.hpp"

#include <fmt/format.h>
#include <stdexcept>

namespace agner::store {

void write_batch::append(uint64_t stream, uint64_t seq, std::string_view payload) {
  if (payload.size() > payload_bytes_max)
    throw std::invalid_argument(fmt::format("store: payload of {} bytes exceeds {}", payload.size(), payload_bytes_max));
  op o{kind::append, 0, 0, static_cast<uint32_t>(data_.size()), static_cast<uint32_t>(payload.size()), stream, seq};
  data_.append(payload);
  ops_.push_back(o);
  ++appends_;
}

void write_batch::put(std::string_view key, std::string_view value) {
  if (key.empty() || key.size() > state_key_bytes_max)
    throw std::invalid_argument(fmt::format("store: state key of {} bytes (1..{} allowed)", key.size(), state_key_bytes_max));
  if (value.size() > state_value_bytes_max)
    throw std::invalid_argument(fmt::format("store: state value of {} bytes exceeds {}", value.size(), state_value_bytes_max));
  op o{kind::put, static_cast<uint32_t>(data_.size()), static_cast<uint32_t>(key.size()),
       static_cast<uint32_t>(data_.size() + key.size()), static_cast<uint32_t>(value.size()), 0, 0};
  data_.append(key);
  data_.append(value);
  ops_.push_back(o);
}

void write_batch::del(std::string_view key) {
  if (key.empty() || key.size() > state_key_bytes_max)
    throw std::invalid_argument(fmt::format("store: state key of {} bytes (1..{} allowed)", key.size(), state_key_bytes_max));
  op o{kind::del, static_cast<uint32_t>(data_.size()), static_cast<uint32_t>(key.size()), 0, 0, 0, 0};
  data_.append(key);
  ops_.push_back(o);
}

void write_batch::checkpoint(std::string_view domain, log_position covered) {
  if (domain.empty() || domain.size() > domain_bytes_max)
    throw std::invalid_argument(fmt::format("store: checkpoint domain of {} bytes (1..{} allowed)", domain.size(), domain_bytes_max));
  op o{kind::checkpoint, static_cast<uint32_t>(data_.size()), static_cast<uint32_t>(domain.size()), 0, 0, 0, covered};
  data_.append(domain);
  ops_.push_back(o);
}

void write_batch::clear() noexcept {
  ops_.clear();
  data_.clear();
  appends_ = 0;
  chain_ = 0;
  restart_ = false;
}

} // namespace agner::store
