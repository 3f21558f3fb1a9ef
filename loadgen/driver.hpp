// The driver: plays one worker's schedule against a transport and reports what comes back to the
// recorder and the timeline. Transport-agnostic and single-threaded: the WebSocket worker runs it
// on its I/O thread, the in-process run on its own thread. It behaves like a careful phone app:
// sends wait in a local outbox until stored (retried with the same nonce, across reconnects),
// a dropped connection is re-opened with backoff while the schedule wants the device online, and
// every reconnect resumes from the highest inbox_seq the device received.
#pragma once

#include "loadgen/accounting.hpp"
#include "loadgen/model.hpp"
#include "loadgen/timeline.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace agner::loadgen {

/// Server user id of a phone (the server's ids are below 2^31).
using user_ref = uint32_t;

/// Where each phone lives on the server side: which node, which user id. Built by the setup
/// (users created through the admin API or directly in an embedded core) and shared by workers.
class directory {
public:
  directory() = default;
  /// `users[p]` is phone p's user id on node `p % nodes`.
  directory(std::vector<user_ref> users, uint32_t nodes);

  uint32_t nodes() const noexcept { return nodes_; }
  uint32_t node_of(phone_id p) const noexcept { return p % nodes_; }
  user_ref user_of(phone_id p) const noexcept { return users_[p]; }
  /// The phone behind user `u` of node `n`, or unknown_phone.
  phone_id phone_of(uint32_t node, uint64_t u) const noexcept;
  size_t phones() const noexcept { return users_.size(); }

  std::string serialize() const;
  static directory deserialize(std::string_view bytes);

private:
  std::vector<user_ref> users_;
  uint32_t nodes_ = 1;
  std::vector<std::vector<std::pair<user_ref, phone_id>>> by_user_; // per node, sorted
};

/// What a transport must do. Calls come from the driver's thread; the transport reports back by
/// calling driver::on_frame / driver::on_closed on that same thread.
class transport {
public:
  virtual ~transport() = default;
  /// Opens a session for device slot `slot` (connect, then identify as `user` with `device`).
  /// `resume_from`: identify.last_inbox_seq. The driver hears back through on_frame (hello,
  /// ready, errors) or on_closed.
  virtual void open(uint32_t slot, uint32_t node, user_ref user, std::string_view device,
                    std::optional<uint64_t> resume_from) = 0;
  /// Closes the session of `slot`; on_closed follows (possibly at once).
  virtual void close(uint32_t slot) = 0;
  virtual void send(uint32_t slot, user_ref to, std::string_view nonce, std::string_view body, std::string_view ref) = 0;
  virtual void ack(uint32_t slot, uint64_t inbox_seq) = 0;
  virtual void heartbeat(uint32_t slot) = 0;
};

struct driver_options {
  /// Heartbeat an idle ready session this often (0: never; the in-process transport has none).
  sim_ns heartbeat_ns = 15 * ns_per_s;
  /// A send not stored within this time is sent again with the same nonce.
  sim_ns resend_ns = 5 * ns_per_s;
  /// Retry delay after a rate_limited or unavailable answer.
  sim_ns retry_after_error_ns = 1 * ns_per_s;
  /// Reconnect backoff: doubles from min to max, with jitter.
  sim_ns reconnect_min_ns = 100 * ns_per_ms;
  sim_ns reconnect_max_ns = 2 * ns_per_s;
  /// Message bodies are this long (the send time and padding).
  uint32_t body_bytes = 64;
};

/// Live counters of one driver (for the progress line).
struct driver_stats {
  uint64_t ready = 0;        ///< sessions ready now
  uint64_t opening = 0;      ///< sessions being opened
  uint64_t sent = 0;         ///< first send attempts
  uint64_t resent = 0;
  uint64_t stored = 0;
  uint64_t delivered = 0;
  uint64_t errors = 0;       ///< error frames
  uint64_t closed = 0;       ///< sessions that ended without being asked to
  uint64_t outbox = 0;       ///< sends waiting to be stored
  uint64_t resume_too_old = 0;
  uint64_t frames_in = 0;
  latency_histogram recent_latency; ///< send to delivered since the last reset (for p99 lines)
};

class driver {
public:
  driver(const population& pop, schedule& sched, recorder& rec, timeline& tl, const directory& dir, transport& t,
         uint32_t worker, uint32_t workers, driver_options o = {});

  /// Runs everything due at `now`: scheduled events, resends, reconnects, heartbeats.
  void step(sim_ns now);
  /// When step() has something to do next (never later than 100 ms from the last step).
  sim_ns next_wake() const noexcept;

  /// The transport received a text message for `slot` (may hold several '\n'-separated frames).
  void on_frame(uint32_t slot, std::string_view text, sim_ns now);
  /// The session of `slot` ended (closed by either side, or failed to open).
  void on_closed(uint32_t slot, sim_ns now);

  /// The drain: the schedule stops; every device of this worker connects (or stays connected)
  /// and resumes; sends still in the outbox keep being retried.
  void start_drain(sim_ns now);
  /// Drain finished: every device ready, the outbox empty, and no frame for `quiet_ns`.
  bool drained(sim_ns now, sim_ns quiet_ns) const noexcept;
  /// Closes every session (end of run).
  void close_all();

  const driver_stats& stats() const noexcept { return stats_; }
  driver_stats& stats() noexcept { return stats_; }
  uint32_t devices() const noexcept { return static_cast<uint32_t>(devs_.size()); }
  /// Bytes of driver state (per-device records, outbox), for the memory-per-phone figures.
  size_t memory_bytes() const noexcept;

private:
  enum class conn : uint8_t { offline, opening, ready };
  struct device_state { // 40 bytes
    uint64_t highest = 0;   // highest inbox_seq received: where a reconnect resumes
    uint64_t read_upto = 0; // highest inbox_seq read
    uint64_t acked = 0;     // highest inbox_seq acked to the server
    sim_ns last_tx = 0;
    phone_id phone = 0;
    uint16_t backoff_steps = 0;
    device_id device = 0;
    conn state = conn::offline;
    bool want = false;      // the schedule (or the drain) wants it online
    bool received = false;  // has a position (a ready or a delivery): resume with last_inbox_seq
    bool reconnect_due = false; // in reconnect_at_
  };
  struct outgoing {
    phone_id peer;
    device_id device;
    sim_ns next_try; // sim_never while waiting for an answer that will reschedule it
    bool first_sent;
  };

  uint32_t slot_of(phone_id p, device_id d) const noexcept;
  void handle(const event& e, sim_ns now);
  void open(uint32_t slot, sim_ns now);
  void transmit(uint32_t slot, phone_id p, uint64_t nonce, outgoing& o, sim_ns now);
  void flush_outbox(uint32_t slot, sim_ns now);
  void outbox_erase(uint32_t slot, uint64_t nonce);
  void maybe_ack(uint32_t slot, sim_ns now);
  void sweep(sim_ns now);
  void handle_frame(uint32_t slot, std::string_view text, sim_ns now);
  std::string body_for(sim_ns now) const;

  const population& pop_;
  schedule& sched_;
  recorder& rec_;
  timeline& tl_;
  const directory& dir_;
  transport& t_;
  uint32_t worker_, workers_;
  driver_options o_;
  std::vector<uint32_t> first_slot_;   // per local phone
  std::vector<device_state> devs_;
  struct send_key {
    phone_id phone;
    uint64_t nonce;
    bool operator==(const send_key&) const = default;
  };
  struct send_key_hash {
    size_t operator()(const send_key& k) const noexcept;
  };
  std::unordered_map<send_key, outgoing, send_key_hash> outbox_; // sends not yet stored
  // The outbox by device slot (nonces), so a ready flushes its own sends without walking
  // everyone's: a reconnect storm of a million phones made that quadratic.
  std::unordered_map<uint32_t, std::vector<uint64_t>> outbox_by_slot_;
  sim_ns next_retry_walk_ = 0; // the outbox is walked for retries at most every retry_walk_ns
  std::vector<std::pair<sim_ns, uint32_t>> reconnect_at_; // min-heap of (when, slot)
  sim_ns last_sweep_ = 0;
  sim_ns last_frame_ = 0;
  bool draining_ = false;
  driver_stats stats_;
  std::vector<unsigned char> json_buf_; // scratch memory for parsing one frame
};

/// The device name on the wire for device index d ("d0", "d1", ...).
std::string device_name(device_id d);

} // namespace agner::loadgen
