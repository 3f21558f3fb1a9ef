// The population model of agner-loadgen: phones, their contacts and groups, their sessions,
// sends, typing and reading habits, as a deterministic schedule of events a driver pulls.
// Pure logic: no sockets, no actors, no clock of its own (time is passed in, in nanoseconds).
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <string_view>
#include <vector>

namespace agner::loadgen {

/// Index of a simulated phone (an account), 0 .. phones-1. The driver maps it to a server user.
using phone_id = uint32_t;
/// Index of one of a phone's devices, 0 .. devices_of(p)-1. The driver names it on the wire.
using device_id = uint8_t;
/// Simulated time: nanoseconds since the start of the run.
using sim_ns = int64_t;
/// A time that never comes (no event pending).
inline constexpr sim_ns sim_never = INT64_MAX;

inline constexpr sim_ns ns_per_ms = 1'000'000;
inline constexpr sim_ns ns_per_s = 1'000 * ns_per_ms;

/// Most devices a phone may have. The server keeps at most 8 sessions per user (docs/protocol.md).
inline constexpr int devices_limit = 8;
/// Largest group modelled. Caps the Pareto tail so one group cannot hold most of the population.
inline constexpr uint32_t group_size_limit = 1024;
/// Most contacts a phone may have. Caps the power-law tail (the real address-book limit is similar).
inline constexpr uint32_t contacts_limit = 5000;
/// Longest read delay drawn. The lognormal tail is unbounded; a day is longer than any run.
inline constexpr sim_ns read_delay_limit_ns = 24 * 3600 * ns_per_s;

/// How session lengths (online and offline periods) are drawn.
enum class duration_shape : uint8_t {
  exponential, ///< memoryless: the classic on/off model
  lognormal,   ///< most sessions short, some very long (closer to measured app sessions)
};

/// Everything the population model needs. Defaults describe a steady phone population.
struct population_options {
  /// Number of phones (accounts).
  uint32_t phones = 1000;
  /// The run's seed: the same seed replays the same schedule, whatever the worker split.
  uint64_t seed = 1;

  // Social graph. Out-degree is Pareto: P(degree >= x) = (contacts_min / x)^(contacts_alpha - 1),
  // capped at contacts_max. Targets are skewed too: a few phones are in many address books.
  uint32_t contacts_min = 5;
  double contacts_alpha = 2.5;
  uint32_t contacts_max = 1000;
  /// Skew of how popular a phone is as a contact: rank = phones * u^popularity_exponent.
  double popularity_exponent = 2.0;
  /// Skew of whom a phone writes to among its contacts: contact = degree * u^favourite_exponent.
  double favourite_exponent = 2.0;

  // Devices.
  /// Fraction of phones with more than one device.
  double multi_device_fraction = 0.2;
  /// Devices of a multi-device phone: uniform in 2 .. devices_max.
  int devices_max = 3;

  // Sessions, per device: alternate online and offline periods.
  duration_shape sessions = duration_shape::exponential;
  double online_mean_s = 180;
  double offline_mean_s = 1620; // 10% of devices online at any moment
  /// Sigma of the log of a session length when sessions are lognormal.
  double session_sigma = 1.0;
  /// Devices online at the start connect at a uniform time in [0, ramp_up_s) (no herd at t=0).
  double ramp_up_s = 60;

  // Sending, per online device: a Poisson process.
  double sends_per_online_minute = 2;
  /// Probability that a send is preceded by a typing notification, typing_lead_s before it.
  double typing_probability = 0.3;
  double typing_lead_s = 3;

  // Reading: a lognormal delay from delivery to read (and ack). With the median at 60 s half of
  // the messages are read within a minute, and sigma sets the long tail.
  double read_delay_median_s = 60;
  double read_delay_sigma = 2.0;

  // Groups. NOT IN THE SERVER YET: the model describes groups (skewed sizes, members) so a driver
  // can create them once the server has group chat, but the schedule never sends to a group.
  uint32_t groups = 0;
  uint32_t group_size_min = 3;
  double group_size_alpha = 2.0;
  uint32_t group_size_max = 256;

  // A burst (new_years_eve): the send rate is multiplied in [burst_start_s, burst_start_s + burst_s).
  double burst_start_s = 0;
  double burst_s = 0;
  double burst_send_multiplier = 1;

  // A reconnect storm: at storm_at_s every online device disconnects (a node restarted) and
  // reconnects at a uniform time within storm_reconnect_window_s. Negative: no storm.
  double storm_at_s = -1;
  double storm_reconnect_window_s = 1;
};

/// Steady chat: 10% of devices online, 2 sends per online minute.
population_options steady(uint32_t phones, uint64_t seed = 1);
/// New Year's Eve: steady, then at 60 s everyone sends ten times as often for 60 s.
population_options new_years_eve(uint32_t phones, uint64_t seed = 1);
/// Reconnect storm: steady with most devices online; at 60 s every online device drops and all
/// reconnect within one second (a node restarted).
population_options reconnect_storm(uint32_t phones, uint64_t seed = 1);
/// A preset by name ("steady", "new_years_eve", "reconnect_storm"); nullopt if unknown.
std::optional<population_options> preset(std::string_view name, uint32_t phones, uint64_t seed = 1);

/// The static part of the population: who knows whom, devices, groups, read delays.
/// Nothing here is stored per phone; every answer is a pure function of (seed, arguments),
/// so any process can ask about any phone. Thread-safe (const).
class population {
public:
  /// Throws std::invalid_argument on options that make no sense (0 phones, a mean <= 0, ...).
  explicit population(const population_options& o);

  const population_options& options() const noexcept { return o_; }
  uint32_t phones() const noexcept { return o_.phones; }

  /// Number of devices of phone p, 1 .. devices_max.
  int devices_of(phone_id p) const noexcept;
  /// Number of contacts of phone p (Pareto-distributed out-degree), 1 .. min(contacts_max, phones-1).
  uint32_t degree_of(phone_id p) const noexcept;
  /// Contact k (0 <= k < degree_of(p)) of phone p: never p itself; popular phones come up often.
  /// Contacts of one phone may repeat (a skewed draw with replacement).
  phone_id contact_of(phone_id p, uint32_t k) const noexcept;

  /// Size of group g (0 <= g < groups), group_size_min .. group_size_max. Groups: model only.
  uint32_t group_size(uint32_t g) const noexcept;
  /// Member j of group g; members may repeat for tiny populations. Groups: model only.
  phone_id group_member(uint32_t g, uint32_t j) const noexcept;

  /// How long device d of phone p takes to read (and ack) the message at inbox_seq, from its
  /// delivery. A pure function of its arguments, so a replayed delivery reads at the same delay.
  sim_ns read_delay(phone_id p, device_id d, uint64_t inbox_seq) const noexcept;

private:
  population_options o_;
  uint64_t stride_; // coprime with phones: rank -> phone is a bijection
};

/// What a scheduled event asks the driver to do.
enum class action : uint8_t {
  connect,    ///< open a session for (phone, device) and resume (identify with last_inbox_seq)
  disconnect, ///< close that session
  typing,     ///< send a typing notification to `peer` (best effort)
  send,       ///< send a message to `peer` with `nonce`; retry with the same nonce until stored
  read,       ///< the user read everything up to `inbox_seq`: ack it
};

std::string_view to_string(action a) noexcept;

/// One scheduled event.
struct event {
  sim_ns at = 0;
  phone_id phone = 0;
  device_id device = 0;
  action what = action::connect;
  /// The recipient phone (typing, send).
  phone_id peer = 0;
  /// send and typing: unique per phone, (device << 32 | the device's send count).
  uint64_t nonce = 0;
  /// read: the inbox_seq to acknowledge (acks are cumulative: ack the largest read so far).
  uint64_t inbox_seq = 0;

  bool operator==(const event&) const = default;
};

/// The event schedule of one worker's share of the population: phones p with
/// p % workers == worker. Each device draws from its own splitmix64 stream seeded by
/// (seed, phone, device), so a phone's events do not depend on the worker split or on the other
/// phones. Events come out in (time, phone, device, action) order. Reads are the one reactive
/// part: the driver reports deliveries with on_delivered() and the read comes out later.
/// Not thread-safe: one driver thread owns a schedule.
class schedule {
public:
  schedule(const population& pop, uint32_t worker = 0, uint32_t workers = 1);

  /// Pops the earliest event due at or before `now`; nullopt when none is due yet.
  std::optional<event> next_event(sim_ns now);
  /// Time of the earliest pending event (to sleep until, or to advance virtual time to).
  sim_ns next_due() const noexcept;

  /// A delivery reached (p, d) at `now`: schedules its read after population::read_delay.
  /// A read that falls due while the device is offline comes out right after it reconnects.
  void on_delivered(phone_id p, device_id d, uint64_t inbox_seq, sim_ns now);

  /// Whether (p, d) is online in the schedule (between its connect and disconnect events).
  bool online(phone_id p, device_id d) const noexcept;
  /// Phones this schedule simulates.
  uint32_t phones_here() const noexcept { return static_cast<uint32_t>(first_device_.size()); }
  /// Bytes held for the simulated phones (all of them), excluding pending reads.
  size_t state_bytes() const noexcept;
  /// Bytes held by pending reads.
  size_t pending_read_bytes() const noexcept;

private:
  struct device_state { // 32 bytes: part of the per-phone memory budget
    static constexpr uint8_t online_bit = 1;
    static constexpr uint8_t typing_bit = 2; // a typing event comes typing_lead before next_send
    static constexpr uint8_t storm_done_bit = 4;

    uint64_t rng;       // splitmix64 state of this device's stream
    sim_ns next_toggle; // connect when offline, disconnect when online
    sim_ns next_send;   // meaningful only while online
    uint32_t sends;     // sends so far: the low half of the nonce
    uint8_t flags;
    device_id device;
  };
  struct due {         // 16 bytes: one heap entry per device
    sim_ns at;
    uint32_t slot;  // index into devices_
    uint32_t local; // the phone, as an index into first_device_
  };
  struct pending_read { // 24 bytes
    sim_ns at;
    phone_id phone;
    device_id device;
    uint64_t inbox_seq;
  };

  phone_id phone_of_local(uint32_t local) const noexcept { return local * workers_ + worker_; }
  enum class step : uint8_t { connect, disconnect, storm, typing, send };
  uint32_t slot_of(phone_id p, device_id d) const noexcept;
  std::pair<sim_ns, step> next_of(const device_state& s) const noexcept;
  event fire(const due& top);
  void schedule_send(device_state& s, sim_ns now) noexcept;
  sim_ns draw_session(device_state& s, bool online_period) const noexcept;
  sim_ns advance_sends(sim_ns from, double work) const noexcept;

  const population* pop_;
  uint32_t worker_;
  uint32_t workers_;
  std::vector<uint32_t> first_device_; // per local phone: first slot in devices_
  std::vector<device_state> devices_;
  std::vector<due> heap_;              // min-heap, one entry per device
  std::vector<pending_read> reads_;    // min-heap
  sim_ns storm_at_;
  sim_ns burst_from_;
  sim_ns burst_to_;
};

} // namespace agner::loadgen
