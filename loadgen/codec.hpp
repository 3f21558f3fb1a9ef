// The little-endian binary form in which workers hand their records and timelines to the parent.
// Internal to the loadgen library.
#pragma once

#include "loadgen/accounting.hpp"

#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace agner::loadgen {

/// A record count above this is garbage, not a worker's output (2^32 messages at 48 bytes is 192 GiB).
inline constexpr uint64_t records_count_max = uint64_t{1} << 32;

struct records_codec {
  std::string out;
  std::string_view in;

  void u8(uint8_t v) { out.push_back(static_cast<char>(v)); }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i)
      out.push_back(static_cast<char>(v >> (8 * i)));
  }
  uint8_t get8() {
    need(1);
    auto v = static_cast<uint8_t>(in[0]);
    in.remove_prefix(1);
    return v;
  }
  uint64_t get64() {
    need(8);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i)
      v |= uint64_t{static_cast<uint8_t>(in[static_cast<size_t>(i)])} << (8 * i);
    in.remove_prefix(8);
    return v;
  }
  uint64_t count() {
    uint64_t n = get64();
    if (n > records_count_max)
      throw std::runtime_error("loadgen records: implausible count");
    return n;
  }
  void need(size_t n) const {
    if (in.size() < n)
      throw std::runtime_error("loadgen records: truncated");
  }

  void put(const send_record& s) {
    u64(s.nonce), u64(s.id), u64(static_cast<uint64_t>(s.sent_at)), u64(static_cast<uint64_t>(s.stored_at));
    u64(uint64_t{s.sender} | uint64_t{s.recipient} << 32);
    u64(uint64_t{s.attempts} | uint64_t{s.device} << 16 | uint64_t{s.flags} << 24);
  }
  void get(send_record& s) {
    s.nonce = get64(), s.id = get64(), s.sent_at = static_cast<sim_ns>(get64()), s.stored_at = static_cast<sim_ns>(get64());
    uint64_t a = get64(), b = get64();
    s.sender = static_cast<phone_id>(a), s.recipient = static_cast<phone_id>(a >> 32);
    s.attempts = static_cast<uint16_t>(b), s.device = static_cast<device_id>(b >> 16), s.flags = static_cast<uint8_t>(b >> 24);
  }
  void put(const delivery_record& d) {
    u64(d.nonce), u64(d.id), u64(d.inbox_seq), u64(static_cast<uint64_t>(d.at));
    u64(uint64_t{d.owner} | uint64_t{d.sender} << 32), u8(d.device);
  }
  void get(delivery_record& d) {
    d.nonce = get64(), d.id = get64(), d.inbox_seq = get64(), d.at = static_cast<sim_ns>(get64());
    uint64_t a = get64();
    d.owner = static_cast<phone_id>(a), d.sender = static_cast<phone_id>(a >> 32), d.device = get8();
  }
  void put(const device_record& d) {
    u64(d.user), u8(d.device), u64(static_cast<uint64_t>(d.first_ready)), u64(static_cast<uint64_t>(d.last_ready));
  }
  void get(device_record& d) {
    d.user = static_cast<phone_id>(get64()), d.device = get8();
    d.first_ready = static_cast<sim_ns>(get64()), d.last_ready = static_cast<sim_ns>(get64());
  }
  void put(const latency_histogram& h) {
    // Sparse: most of the 512 buckets of a latency histogram are empty.
    uint64_t n = 0;
    for (auto c : h.buckets_)
      n += c != 0;
    u64(n);
    for (size_t b = 0; b < h.buckets_.size(); ++b)
      if (h.buckets_[b] != 0)
        u64(b), u64(h.buckets_[b]);
    u64(h.sum_);
  }
  void get(latency_histogram& h) {
    uint64_t n = get64();
    if (n > h.buckets_.size())
      throw std::runtime_error("loadgen records: bad histogram");
    for (uint64_t i = 0; i < n; ++i) {
      uint64_t b = get64(), c = get64();
      if (b >= h.buckets_.size())
        throw std::runtime_error("loadgen records: bad histogram bucket");
      h.buckets_[b] += c;
      h.count_ += c;
    }
    h.sum_ = get64();
  }
  template <class T>
  void put_all(const std::vector<T>& v) {
    u64(v.size());
    for (const auto& x : v)
      put(x);
  }
  template <class T>
  void get_all(std::vector<T>& v) {
    uint64_t n = count();
    v.resize(0);
    for (uint64_t i = 0; i < n; ++i)
      get(v.emplace_back());
  }
};

} // namespace agner::loadgen
