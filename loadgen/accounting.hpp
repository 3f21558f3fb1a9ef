// The accounting oracle of agner-loadgen: every message is tracked by (sender, nonce) from send
// to stored ack to delivery on each device, and a join at the end finds what was lost, what
// arrived that nobody sent, what was shown twice and what arrived out of order.
// Workers record what they saw (recorder); the parent joins the records of all workers (analyze).
#pragma once

#include "loadgen/model.hpp"

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace agner::loadgen {

/// The sender of a delivery whose `from` is not one of the simulated phones.
inline constexpr phone_id unknown_phone = UINT32_MAX;
/// Examples kept per kind of finding, so a report can name them without growing with the run.
inline constexpr size_t examples_max = 16;

/// Latency in nanoseconds, in the buckets of agner::metrics::histogram (log-linear, 8 sub-buckets
/// per power of two, within 12.5%), but with plain counters so it can be copied, merged and
/// serialized; quantile() answers exactly as metrics::histogram::quantile does.
class latency_histogram {
public:
  void observe(uint64_t ns) noexcept;
  void merge(const latency_histogram& other) noexcept;
  uint64_t count() const noexcept { return count_; }
  uint64_t sum() const noexcept { return sum_; }
  /// Upper bound of the bucket holding quantile q in [0, 1]; 0 when empty.
  uint64_t quantile(double q) const noexcept;
  uint64_t bucket(int b) const noexcept { return buckets_[static_cast<size_t>(b)]; }
  bool operator==(const latency_histogram&) const = default;

  static constexpr int bucket_count = 512;

private:
  friend struct records_codec;
  std::array<uint64_t, bucket_count> buckets_{};
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
};

/// One message as its sender's worker saw it. 48 bytes.
struct send_record {
  static constexpr uint8_t stored_bit = 1;        // at least one stored ack arrived
  static constexpr uint8_t conflict_bit = 2;      // stored acks named two different ids
  static constexpr uint8_t without_send_bit = 4;  // a stored ack for a nonce never sent

  uint64_t nonce = 0;
  uint64_t id = 0;             // the id of the first stored ack
  sim_ns sent_at = 0;          // first send attempt
  sim_ns stored_at = sim_never; // first stored ack
  phone_id sender = 0;
  phone_id recipient = 0;
  uint16_t attempts = 0;       // sends of this nonce, saturating
  device_id device = 0;        // the device that sent it first
  uint8_t flags = 0;

  bool operator==(const send_record&) const = default;
};

/// One delivery as the receiving device's worker saw it. 48 bytes.
struct delivery_record {
  uint64_t nonce = 0;
  uint64_t id = 0;
  uint64_t inbox_seq = 0;
  sim_ns at = 0;
  phone_id owner = 0;  // the user whose device received it
  phone_id sender = 0; // `from`, or unknown_phone
  device_id device = 0;

  bool operator==(const delivery_record&) const = default;
};

/// When a device was ready (identify answered): its first and its last session start.
struct device_record {
  phone_id user = 0;
  device_id device = 0;
  sim_ns first_ready = sim_never;
  sim_ns last_ready = sim_never;

  bool operator==(const device_record&) const = default;
};

/// Everything one worker recorded; the unit the parent merges. Serializable.
struct worker_records {
  std::vector<send_record> sends;
  std::vector<delivery_record> deliveries;
  std::vector<device_record> devices;
  /// Deliveries whose seq was below one the device already had for that conversation. The join
  /// decides which are order violations and which are late copies of a message it already had
  /// (duplicates). Rare in a healthy run, so kept in full.
  std::vector<delivery_record> order_suspects;
  uint64_t reads = 0;
  latency_histogram send_to_stored; // found online: send and ack are both at the sender

  /// A compact little-endian binary form (for a worker process to hand to its parent).
  std::string serialize() const;
  /// The inverse of serialize(); throws std::runtime_error on truncated or foreign input.
  static worker_records deserialize(std::string_view bytes);

  bool operator==(const worker_records&) const = default;
};

/// What a delivery frame said, as the driver reports it (ids already parsed from strings).
struct delivery {
  phone_id owner = 0;   ///< the phone whose device got it
  device_id device = 0;
  uint64_t conversation = 0;
  uint64_t seq = 0;
  uint64_t id = 0;
  phone_id sender = unknown_phone; ///< `from` mapped to a phone, or unknown_phone
  uint64_t nonce = 0;   ///< `nonce` parsed back to the number the loadgen sent
  uint64_t inbox_seq = 0;
  sim_ns at = 0;
};

/// Records the events one worker sees, for the phones it simulates. Sender-side events (sent,
/// stored) belong to the worker of the sender, device-side events (ready, delivered, read) to
/// the worker of the device's phone; a phone and all its devices live in one worker.
/// Not thread-safe: one driver thread owns a recorder.
///
/// Memory: 48 bytes per message sent plus its index slot (4 bytes at a load of 3/8 .. 3/4, so
/// 5-11 bytes), 48 bytes per delivery, 24 bytes per device, and one hash-map node (~48 bytes)
/// per (device, conversation) pair for the order check.
class recorder {
public:
  /// A session of (user, device) became ready (the server answered identify).
  void ready(phone_id user, device_id device, sim_ns at);
  /// A send (or a retry: the same nonce again) left device `device` of `sender`.
  void sent(phone_id sender, device_id device, uint64_t nonce, phone_id recipient, sim_ns at);
  /// The server acknowledged (sender, nonce) as stored. Repeats are expected after retries.
  void stored(phone_id sender, uint64_t nonce, uint64_t conversation, uint64_t seq, uint64_t id, sim_ns at);
  /// A deliver frame reached a device. Checks per-(device, conversation) seq order at once.
  /// Report deliveries of one device in the order they arrived.
  void delivered(const delivery& d);
  /// The user of (owner, device) read up to inbox_seq. Counted only.
  void read(phone_id owner, device_id device, uint64_t inbox_seq, sim_ns at);

  const worker_records& records() const noexcept { return r_; }
  /// Hands the records over (the recorder is empty afterwards).
  worker_records take();
  /// Bytes held, for the memory-per-message figures.
  size_t memory_bytes() const noexcept;

private:
  send_record& find_or_add(phone_id sender, uint64_t nonce, bool& added);
  void grow_index();

  struct order_key {
    uint64_t conversation;
    phone_id owner;
    device_id device;
    bool operator==(const order_key&) const = default;
  };
  struct order_hash {
    size_t operator()(const order_key& k) const noexcept;
  };

  worker_records r_;
  std::vector<uint32_t> index_; // open addressing over r_.sends, by (sender, nonce)
  std::unordered_map<uint64_t, uint32_t> device_index_; // (user, device) -> r_.devices
  std::unordered_map<order_key, uint64_t, order_hash> last_seq_;
};

/// A (message, device) named by a finding.
struct finding {
  phone_id sender = 0;
  uint64_t nonce = 0;
  phone_id owner = 0;
  device_id device = 0;
  bool operator==(const finding&) const = default;
  auto operator<=>(const finding&) const = default;
};

/// Knobs of the join.
struct analyze_options {
  /// The server pushes a message to every session of its sender too (docs/protocol.md), so the
  /// sender's devices must receive it. Off: only the recipient's devices are checked.
  bool sender_devices_required = true;
};

/// The verdict on a run. See docs/loadgen.md for the exact definitions.
struct accounting_result {
  uint64_t messages_sent = 0;       ///< distinct (sender, nonce) sent
  uint64_t send_retries = 0;        ///< sends beyond the first of each nonce
  uint64_t messages_stored = 0;     ///< messages with at least one stored ack
  uint64_t stored_without_send = 0; ///< stored acks for a nonce never sent (a driver bug)
  uint64_t messages_unacked = 0;    ///< sent, never stored-acked (no promise was made)
  uint64_t delivered_unacked = 0;   ///< of those, delivered somewhere anyway (allowed)
  uint64_t deliveries = 0;          ///< deliver events seen

  uint64_t lost_messages = 0;         ///< stored-acked messages missing on some required device
  uint64_t lost_deliveries = 0;       ///< (message, required device) pairs missing
  uint64_t unverified_deliveries = 0; ///< missing pairs whose device never reconnected after the ack
  uint64_t unexpected_messages = 0;   ///< distinct (sender, nonce) delivered but never sent
  uint64_t unexpected_deliveries = 0; ///< deliveries of those, plus misdirected ones
  uint64_t misdirected_deliveries = 0; ///< a sent message delivered to a user outside its conversation
  uint64_t duplicates = 0;            ///< deliveries beyond the first of a message to one device
  uint64_t duplicates_replayed = 0;   ///< of those, repeating an inbox_seq the device already had
  uint64_t nonce_conflicts = 0;       ///< messages whose nonce was acked or delivered under two ids
  uint64_t order_violations = 0;      ///< first deliveries with a seq below one the device already had
  uint64_t reads = 0;

  latency_histogram send_to_stored;    ///< first send attempt to first stored ack
  latency_histogram send_to_delivered; ///< first send attempt to first delivery, recipient devices

  std::vector<finding> lost_examples;       ///< up to examples_max, sorted
  std::vector<finding> unexpected_examples;
  std::vector<finding> duplicate_examples;
  std::vector<finding> order_examples;

  /// Lost plus unexpected deliveries: what the exit code reports. `strict` adds duplicates,
  /// order violations and nonce conflicts (what the chaos tests hold the system to).
  uint64_t violations(bool strict = false) const noexcept;
};

/// Joins the records of all workers (any split of the phones) into one verdict. The result does
/// not depend on how the phones were split, only on what was recorded.
accounting_result analyze(std::span<const worker_records> workers, const analyze_options& o = {});

} // namespace agner::loadgen
