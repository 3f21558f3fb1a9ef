// The population model: every random quantity is a hash of (seed, what, who), or a draw from a
// per-device splitmix64 stream seeded the same way, so nothing depends on the order in which
// phones are simulated or on how many processes share them.
#include "loadgen/model.hpp"

#include "runtime/hash.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <numeric>
#include <stdexcept>

namespace agner::loadgen {
namespace {

constexpr uint64_t golden = 0x9e3779b97f4a7c15ULL;

// Distinct tags keep the hash families of different quantities independent.
enum tag : uint64_t { t_degree = 1, t_contact, t_devices, t_devices_n, t_group_size, t_group_member, t_read, t_read2,
                      t_stream, t_peer, t_layout };

uint64_t combine(uint64_t h, uint64_t x) noexcept { return mix64(h ^ (x + golden + (h << 6) + (h >> 2))); }

uint64_t hash_of(uint64_t seed, uint64_t t, uint64_t a, uint64_t b = 0, uint64_t c = 0) noexcept {
  return combine(combine(combine(combine(mix64(seed + golden), t), a), b), c);
}

// A uniform double in [0, 1) and in (0, 1) from 53 random bits.
double unit(uint64_t x) noexcept { return static_cast<double>(x >> 11) * 0x1.0p-53; }
double unit_open(uint64_t x) noexcept { return (static_cast<double>(x >> 11) + 0.5) * 0x1.0p-53; }

// A standard normal from two independent uniforms (Box-Muller).
double normal(uint64_t a, uint64_t b) noexcept {
  return std::sqrt(-2.0 * std::log(unit_open(a))) * std::cos(2.0 * M_PI * unit(b));
}

// Pareto with minimum `lo` and tail exponent alpha: P(X >= x) = (lo / x)^(alpha - 1).
double pareto(uint64_t x, double lo, double alpha) noexcept {
  return lo * std::pow(unit_open(x), -1.0 / (alpha - 1.0));
}

uint64_t next(uint64_t& state) noexcept {
  state += golden;
  return mix64(state);
}

sim_ns to_ns(double s) noexcept {
  double ns = s * static_cast<double>(ns_per_s);
  return ns >= 9.0e18 ? sim_never : static_cast<sim_ns>(ns);
}

void require(bool ok, const char* what) {
  if (!ok)
    throw std::invalid_argument(what);
}

} // namespace

population_options steady(uint32_t phones, uint64_t seed) {
  population_options o;
  o.phones = phones;
  o.seed = seed;
  return o;
}

population_options new_years_eve(uint32_t phones, uint64_t seed) {
  auto o = steady(phones, seed);
  o.burst_start_s = 60;
  o.burst_s = 60;
  o.burst_send_multiplier = 10;
  return o;
}

population_options reconnect_storm(uint32_t phones, uint64_t seed) {
  auto o = steady(phones, seed);
  // Long sessions so most devices are online when the node goes away.
  o.online_mean_s = 1800;
  o.offline_mean_s = 200;
  o.storm_at_s = 60;
  o.storm_reconnect_window_s = 1;
  return o;
}

std::optional<population_options> preset(std::string_view name, uint32_t phones, uint64_t seed) {
  if (name == "steady")
    return steady(phones, seed);
  if (name == "new_years_eve")
    return new_years_eve(phones, seed);
  if (name == "reconnect_storm")
    return reconnect_storm(phones, seed);
  return std::nullopt;
}

std::string_view to_string(action a) noexcept {
  switch (a) {
  case action::connect: return "connect";
  case action::disconnect: return "disconnect";
  case action::typing: return "typing";
  case action::send: return "send";
  case action::read: return "read";
  }
  return "?";
}

population::population(const population_options& o) : o_(o) {
  require(o.phones >= 2, "population: at least 2 phones (a phone needs someone to write to)");
  require(o.contacts_min >= 1 && o.contacts_max >= o.contacts_min, "population: contacts_min 1 .. contacts_max");
  require(o.contacts_alpha > 1.0, "population: contacts_alpha must be > 1");
  require(o.multi_device_fraction >= 0 && o.multi_device_fraction <= 1, "population: multi_device_fraction in [0, 1]");
  require(o.devices_max >= 1 && o.devices_max <= devices_limit, "population: devices_max in 1 .. 8");
  require(o.online_mean_s > 0 && o.offline_mean_s > 0, "population: session means must be > 0");
  require(o.session_sigma >= 0 && o.read_delay_sigma >= 0, "population: sigmas must be >= 0");
  require(o.sends_per_online_minute >= 0 && o.burst_send_multiplier >= 0, "population: rates must be >= 0");
  require(o.typing_probability >= 0 && o.typing_probability <= 1, "population: typing_probability in [0, 1]");
  require(o.read_delay_median_s > 0, "population: read_delay_median_s must be > 0");
  require(o.groups == 0 || (o.group_size_min >= 1 && o.group_size_max >= o.group_size_min && o.group_size_alpha > 1 &&
                            o.group_size_max <= group_size_limit),
          "population: group sizes 1 .. 1024 with alpha > 1");
  // A stride coprime with the population turns a popularity rank into a phone bijectively, so the
  // popular phones are spread over the id space (and over workers) rather than being 0, 1, 2...
  stride_ = hash_of(o.seed, t_layout, 0) % o.phones | 1;
  while (std::gcd(stride_, uint64_t{o.phones}) != 1)
    stride_ += 2;
}

int population::devices_of(phone_id p) const noexcept {
  if (o_.devices_max < 2 || unit(hash_of(o_.seed, t_devices, p)) >= o_.multi_device_fraction)
    return 1;
  return 2 + static_cast<int>(unit(hash_of(o_.seed, t_devices_n, p)) * (o_.devices_max - 1));
}

uint32_t population::degree_of(phone_id p) const noexcept {
  double cap = std::min({double(o_.contacts_max), double(contacts_limit), double(o_.phones - 1)});
  double d = std::min(pareto(hash_of(o_.seed, t_degree, p), o_.contacts_min, o_.contacts_alpha), cap);
  return std::max<uint32_t>(1, static_cast<uint32_t>(d));
}

phone_id population::contact_of(phone_id p, uint32_t k) const noexcept {
  double u = unit(hash_of(o_.seed, t_contact, p, k));
  auto rank = static_cast<uint64_t>(static_cast<double>(o_.phones) * std::pow(u, o_.popularity_exponent));
  rank = std::min<uint64_t>(rank, o_.phones - 1);
  auto q = static_cast<phone_id>((static_cast<unsigned __int128>(rank) * stride_ + o_.seed) % o_.phones);
  return q == p ? (q + 1) % o_.phones : q;
}

uint32_t population::group_size(uint32_t g) const noexcept {
  double s = std::min(pareto(hash_of(o_.seed, t_group_size, g), o_.group_size_min, o_.group_size_alpha),
                      double(o_.group_size_max));
  return static_cast<uint32_t>(s);
}

phone_id population::group_member(uint32_t g, uint32_t j) const noexcept {
  return static_cast<phone_id>(hash_of(o_.seed, t_group_member, g, j) % o_.phones);
}

sim_ns population::read_delay(phone_id p, device_id d, uint64_t inbox_seq) const noexcept {
  double z = normal(hash_of(o_.seed, t_read, p, d, inbox_seq), hash_of(o_.seed, t_read2, p, d, inbox_seq));
  double s = o_.read_delay_median_s * std::exp(o_.read_delay_sigma * z);
  return std::min(to_ns(s), read_delay_limit_ns);
}

// ---------------------------------------------------------------------------------------------

schedule::schedule(const population& pop, uint32_t worker, uint32_t workers)
    : pop_(&pop), worker_(worker), workers_(workers) {
  static_assert(sizeof(device_state) == 32, "device state is part of the per-phone memory budget");
  if (workers == 0 || worker >= workers)
    throw std::invalid_argument("schedule: worker must be < workers");
  const auto& o = pop.options();
  storm_at_ = o.storm_at_s >= 0 ? to_ns(o.storm_at_s) : sim_never;
  burst_from_ = o.burst_s > 0 && o.burst_send_multiplier != 1 ? to_ns(o.burst_start_s) : sim_never;
  burst_to_ = burst_from_ == sim_never ? sim_never : burst_from_ + to_ns(o.burst_s);

  uint32_t here = worker < o.phones ? (o.phones - worker + workers - 1) / workers : 0;
  first_device_.reserve(here);
  size_t total = 0;
  for (uint32_t l = 0; l < here; ++l)
    total += static_cast<size_t>(pop.devices_of(phone_of_local(l)));
  devices_.reserve(total);
  heap_.reserve(total);

  double online_share = o.online_mean_s / (o.online_mean_s + o.offline_mean_s);
  for (uint32_t l = 0; l < here; ++l) {
    phone_id p = phone_of_local(l);
    first_device_.push_back(static_cast<uint32_t>(devices_.size()));
    for (int d = 0; d < pop.devices_of(p); ++d) {
      device_state s{hash_of(o.seed, t_stream, p, static_cast<uint64_t>(d)), 0, sim_never, 0, 0,
                     static_cast<device_id>(d)};
      // Start in the stationary mix: a device that "is online" at t=0 connects during the ramp-up.
      if (unit(next(s.rng)) < online_share)
        s.next_toggle = static_cast<sim_ns>(unit(next(s.rng)) * static_cast<double>(to_ns(o.ramp_up_s)));
      else
        s.next_toggle = draw_session(s, false);
      devices_.push_back(s);
      auto slot = static_cast<uint32_t>(devices_.size() - 1);
      heap_.push_back({next_of(s).first, slot, l});
    }
  }
  std::make_heap(heap_.begin(), heap_.end(), [](const due& a, const due& b) {
    return a.at != b.at ? a.at > b.at : a.slot > b.slot;
  });
}

sim_ns schedule::draw_session(device_state& s, bool online_period) const noexcept {
  const auto& o = pop_->options();
  double mean = online_period ? o.online_mean_s : o.offline_mean_s;
  double secs;
  if (o.sessions == duration_shape::exponential) {
    secs = -mean * std::log(unit_open(next(s.rng)));
  } else {
    // The lognormal with this mean: mu = ln(mean) - sigma^2 / 2.
    double sigma = o.session_sigma;
    double z = normal(next(s.rng), next(s.rng));
    secs = std::exp(std::log(mean) - sigma * sigma / 2 + sigma * z);
  }
  return std::max<sim_ns>(1, to_ns(secs));
}

sim_ns schedule::advance_sends(sim_ns from, double work) const noexcept {
  // The send process is Poisson with a piecewise-constant rate (base, burst, base): walk the
  // pieces spending `work` (an Exp(1) draw) until it runs out. Exact, one draw per send.
  const auto& o = pop_->options();
  double base = o.sends_per_online_minute / (60.0 * static_cast<double>(ns_per_s));
  if (base <= 0)
    return sim_never;
  double t = static_cast<double>(from);
  auto piece = [&](double until, double rate) -> bool {
    if (t >= until)
      return false;
    double cap = (until - t) * rate;
    if (rate > 0 && work <= cap) {
      t += work / rate;
      return true;
    }
    work -= cap;
    t = until;
    return false;
  };
  if (burst_from_ != sim_never) {
    if (piece(static_cast<double>(burst_from_), base) ||
        piece(static_cast<double>(burst_to_), base * o.burst_send_multiplier))
      return t >= 9.0e18 ? sim_never : static_cast<sim_ns>(t) + 1;
  }
  t += work / base;
  return t >= 9.0e18 ? sim_never : static_cast<sim_ns>(t) + 1;
}

void schedule::schedule_send(device_state& s, sim_ns now) noexcept {
  const auto& o = pop_->options();
  s.flags &= static_cast<uint8_t>(~device_state::typing_bit);
  s.next_send = advance_sends(now, -std::log(unit_open(next(s.rng))));
  bool typing = unit(next(s.rng)) < o.typing_probability;
  // The typing notification goes typing_lead before the send, when the gap leaves room for it.
  if (typing && s.next_send != sim_never && s.next_send - to_ns(o.typing_lead_s) > now)
    s.flags |= device_state::typing_bit;
}

std::pair<sim_ns, schedule::step> schedule::next_of(const device_state& s) const noexcept {
  if (!(s.flags & device_state::online_bit))
    return {s.next_toggle, step::connect};
  std::pair<sim_ns, step> r{s.next_toggle, step::disconnect};
  if (!(s.flags & device_state::storm_done_bit) && storm_at_ <= r.first)
    r = {storm_at_, step::storm};
  if (s.flags & device_state::typing_bit) {
    sim_ns t = s.next_send - to_ns(pop_->options().typing_lead_s);
    if (t < r.first)
      r = {t, step::typing};
  } else if (s.next_send < r.first) {
    r = {s.next_send, step::send};
  }
  return r;
}

event schedule::fire(const due& top) {
  auto& s = devices_[top.slot];
  const auto& o = pop_->options();
  phone_id p = phone_of_local(top.local);
  auto [at, what] = next_of(s);
  assert(at == top.at);
  event e{at, p, s.device, action::connect, 0, 0, 0};
  switch (what) {
  case step::connect:
    s.flags |= device_state::online_bit;
    if (at >= storm_at_)
      s.flags |= device_state::storm_done_bit; // came online after the storm: it missed it
    s.next_toggle = at + draw_session(s, true);
    schedule_send(s, at);
    break;
  case step::disconnect:
    e.what = action::disconnect;
    s.flags &= static_cast<uint8_t>(~(device_state::online_bit | device_state::typing_bit));
    s.next_toggle = at + draw_session(s, false);
    break;
  case step::storm:
    e.what = action::disconnect;
    s.flags &= static_cast<uint8_t>(~(device_state::online_bit | device_state::typing_bit));
    s.flags |= device_state::storm_done_bit;
    s.next_toggle = at + static_cast<sim_ns>(unit(next(s.rng)) * static_cast<double>(to_ns(o.storm_reconnect_window_s)));
    break;
  case step::typing:
  case step::send: {
    e.what = what == step::typing ? action::typing : action::send;
    e.nonce = uint64_t{s.device} << 32 | s.sends;
    // The recipient is a hash of the nonce, so the typing and its send name the same peer.
    double u = unit(hash_of(o.seed, t_peer, p, e.nonce));
    uint32_t deg = pop_->degree_of(p);
    auto k = std::min(deg - 1, static_cast<uint32_t>(static_cast<double>(deg) * std::pow(u, o.favourite_exponent)));
    e.peer = pop_->contact_of(p, k);
    if (what == step::typing) {
      s.flags &= static_cast<uint8_t>(~device_state::typing_bit);
    } else {
      ++s.sends;
      schedule_send(s, at);
    }
    break;
  }
  }
  return e;
}

uint32_t schedule::slot_of(phone_id p, device_id d) const noexcept {
  assert(p % workers_ == worker_);
  return first_device_[p / workers_] + d;
}

bool schedule::online(phone_id p, device_id d) const noexcept {
  return devices_[slot_of(p, d)].flags & device_state::online_bit;
}

namespace {
bool due_after(sim_ns a_at, uint32_t a_slot, sim_ns b_at, uint32_t b_slot) {
  return a_at != b_at ? a_at > b_at : a_slot > b_slot;
}
} // namespace

sim_ns schedule::next_due() const noexcept {
  sim_ns t = heap_.empty() ? sim_never : heap_.front().at;
  if (!reads_.empty())
    t = std::min(t, reads_.front().at);
  return t;
}

void schedule::on_delivered(phone_id p, device_id d, uint64_t inbox_seq, sim_ns now) {
  sim_ns at = now + pop_->read_delay(p, d, inbox_seq);
  reads_.push_back({at, p, d, inbox_seq});
  std::push_heap(reads_.begin(), reads_.end(), [](const pending_read& a, const pending_read& b) {
    return a.at != b.at ? a.at > b.at : a.phone != b.phone ? a.phone > b.phone : a.device > b.device;
  });
}

std::optional<event> schedule::next_event(sim_ns now) {
  auto due_cmp = [](const due& a, const due& b) { return due_after(a.at, a.slot, b.at, b.slot); };
  auto read_cmp = [](const pending_read& a, const pending_read& b) {
    return a.at != b.at ? a.at > b.at : a.phone != b.phone ? a.phone > b.phone : a.device > b.device;
  };
  for (;;) {
    bool have_due = !heap_.empty() && heap_.front().at <= now;
    bool have_read = !reads_.empty() && reads_.front().at <= now;
    if (!have_due && !have_read)
      return std::nullopt;
    if (have_read && have_due) {
      // At the same instant a device's own event (its reconnect) goes before a read.
      const auto& r = reads_.front();
      const auto& d = heap_.front();
      phone_id dp = phone_of_local(d.local);
      device_id dd = devices_[d.slot].device;
      if (d.at < r.at || (d.at == r.at && (dp < r.phone || (dp == r.phone && dd <= r.device))))
        have_read = false;
    }
    if (have_read) {
      std::pop_heap(reads_.begin(), reads_.end(), read_cmp);
      auto r = reads_.back();
      reads_.pop_back();
      const auto& s = devices_[slot_of(r.phone, r.device)];
      if (!(s.flags & device_state::online_bit)) {
        // Read on the phone's next session: right after it reconnects.
        if (s.next_toggle != sim_never) {
          r.at = std::max(r.at, s.next_toggle);
          reads_.push_back(r);
          std::push_heap(reads_.begin(), reads_.end(), read_cmp);
        }
        continue;
      }
      return event{r.at, r.phone, r.device, action::read, 0, 0, r.inbox_seq};
    }
    std::pop_heap(heap_.begin(), heap_.end(), due_cmp);
    due top = heap_.back();
    event e = fire(top);
    heap_.back().at = next_of(devices_[top.slot]).first;
    std::push_heap(heap_.begin(), heap_.end(), due_cmp);
    return e;
  }
}

size_t schedule::state_bytes() const noexcept {
  return first_device_.capacity() * sizeof(uint32_t) + devices_.capacity() * sizeof(device_state) +
         heap_.capacity() * sizeof(due) + sizeof(*this);
}

size_t schedule::pending_read_bytes() const noexcept { return reads_.capacity() * sizeof(pending_read); }

} // namespace agner::loadgen
