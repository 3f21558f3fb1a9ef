// The population model: the same seed replays the same schedule whatever the worker split, and
// the distributions (degrees, devices, sessions, sends, reads, bursts, storms) are what was asked.
#include "loadgen/model.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <stdexcept>
#include <vector>

using namespace agner::loadgen;

namespace {

std::vector<event> run_until(schedule& s, sim_ns until) {
  std::vector<event> out;
  while (auto e = s.next_event(until))
    out.push_back(*e);
  return out;
}

constexpr sim_ns minute = 60 * ns_per_s;

} // namespace

TEST_CASE("the same seed replays the same schedule and another seed does not") {
  population pop(steady(2000, 7));
  schedule a(pop), b(pop);
  auto ea = run_until(a, 20 * minute);
  auto eb = run_until(b, 20 * minute);
  REQUIRE(ea.size() > 1000);
  CHECK(ea == eb);

  population other(steady(2000, 8));
  schedule c(other);
  CHECK(run_until(c, 20 * minute) != ea);
}

TEST_CASE("events come out in time order, and none before it is due") {
  population pop(new_years_eve(500, 3));
  schedule s(pop);
  sim_ns last = 0;
  for (sim_ns now = 0; now < 5 * minute; now += 7 * ns_per_s) {
    while (auto e = s.next_event(now)) {
      CHECK(e->at <= now);
      CHECK(e->at >= last);
      last = e->at;
    }
    CHECK(s.next_due() > now);
  }
}

TEST_CASE("a phone's schedule does not depend on how many workers share the population") {
  auto o = new_years_eve(1500, 11);
  o.typing_probability = 0.5;
  population pop(o);
  std::map<phone_id, std::vector<event>> single, split;
  schedule one(pop);
  for (auto& e : run_until(one, 10 * minute))
    single[e.phone].push_back(e);
  for (uint32_t w = 0; w < 3; ++w) {
    schedule part(pop, w, 3);
    CHECK(part.phones_here() == 500);
    for (auto& e : run_until(part, 10 * minute)) {
      CHECK(e.phone % 3 == w);
      split[e.phone].push_back(e);
    }
  }
  REQUIRE(single.size() > 100);
  CHECK(single == split);
}

TEST_CASE("contact degrees follow the configured power law and some phones are far more popular") {
  population pop(steady(200000, 5));
  const auto& o = pop.options();
  std::vector<uint32_t> deg;
  uint64_t sum = 0, at_least_50 = 0;
  for (phone_id p = 0; p < o.phones; ++p) {
    deg.push_back(pop.degree_of(p));
    sum += deg.back();
    at_least_50 += deg.back() >= 50;
    REQUIRE(deg.back() >= o.contacts_min);
    REQUIRE(deg.back() <= o.contacts_max);
  }
  // Pareto(min 5, alpha 2.5): P(D >= 50) = (5/50)^1.5 = 0.0316; the median is 5 * 2^(1/1.5) = 7.94.
  CHECK(double(at_least_50) / o.phones == doctest::Approx(0.0316).epsilon(0.08));
  std::nth_element(deg.begin(), deg.begin() + deg.size() / 2, deg.end());
  CHECK(deg[deg.size() / 2] == 7); // the floor of 7.94
  // The mean is 15 for the uncapped law; the cap at 1000 and the floor take a little off.
  CHECK(double(sum) / o.phones == doctest::Approx(14.0).epsilon(0.08));
  CHECK(*std::max_element(deg.begin(), deg.end()) > 500);

  // Popularity: rank = N u^2, so the 1% most popular phones hold 10% of all contact slots.
  std::vector<uint32_t> in(o.phones);
  uint64_t slots = 0;
  for (phone_id p = 0; p < 20000; ++p)
    for (uint32_t k = 0; k < pop.degree_of(p); ++k) {
      phone_id q = pop.contact_of(p, k);
      REQUIRE(q != p);
      REQUIRE(q < o.phones);
      ++in[q];
      ++slots;
    }
  std::sort(in.begin(), in.end(), std::greater<>());
  uint64_t top = 0;
  for (size_t i = 0; i < o.phones / 100; ++i)
    top += in[i];
  CHECK(double(top) / double(slots) == doctest::Approx(0.10).epsilon(0.15));
}

TEST_CASE("the configured fraction of phones has several devices, evenly 2 to devices_max") {
  auto o = steady(100000, 9);
  o.devices_max = 4;
  population pop(o);
  std::map<int, int> count;
  for (phone_id p = 0; p < o.phones; ++p)
    ++count[pop.devices_of(p)];
  CHECK(count.rbegin()->first == 4);
  CHECK(count.begin()->first == 1);
  double multi = 1.0 - double(count[1]) / o.phones;
  CHECK(multi == doctest::Approx(0.2).epsilon(0.05));
  for (int d = 2; d <= 4; ++d)
    CHECK(double(count[d]) / o.phones == doctest::Approx(0.2 / 3).epsilon(0.1));
}

TEST_CASE("about half of messages are read within 60 s and a long tail reads after an hour") {
  population pop(steady(1000, 2));
  int n = 100000, within_minute = 0, after_hour = 0;
  for (int i = 0; i < n; ++i) {
    sim_ns d = pop.read_delay(static_cast<phone_id>(i % 1000), 0, static_cast<uint64_t>(i));
    REQUIRE(d > 0);
    REQUIRE(d <= read_delay_limit_ns);
    within_minute += d <= minute;
    after_hour += d > 60 * minute;
  }
  CHECK(double(within_minute) / n == doctest::Approx(0.5).epsilon(0.02));
  // ln(3600/60) / sigma 2 = 2.047 standard deviations: 2.03% of reads take over an hour.
  CHECK(double(after_hour) / n == doctest::Approx(0.0203).epsilon(0.12));
  CHECK(pop.read_delay(3, 0, 42) == pop.read_delay(3, 0, 42));
}

namespace {

// Runs a schedule and measures the share of devices online and the sends per online minute.
struct session_stats {
  double online_share = 0;
  double sends_per_online_minute = 0;
};

session_stats measure_sessions(const population_options& o, sim_ns from, sim_ns until) {
  population pop(o);
  schedule s(pop);
  uint64_t devices = 0;
  for (phone_id p = 0; p < o.phones; ++p)
    devices += static_cast<uint64_t>(pop.devices_of(p));
  int64_t online = 0;
  double online_ns = 0; // integral of the online count over [from, until)
  uint64_t sends = 0;
  sim_ns last = from;
  while (auto e = s.next_event(until)) {
    if (e->at > from) {
      online_ns += double(online) * double(e->at - std::max(last, from));
      last = e->at;
    }
    if (e->what == action::connect)
      ++online;
    if (e->what == action::disconnect)
      --online;
    if (e->what == action::send && e->at >= from)
      ++sends;
    CHECK(s.online(e->phone, e->device) == (e->what != action::disconnect));
  }
  online_ns += double(online) * double(until - last);
  return {online_ns / double(until - from) / double(devices), double(sends) / (online_ns / double(minute))};
}

} // namespace

TEST_CASE("the share of devices online and the send rate match the session means") {
  auto o = steady(4000, 13);
  auto st = measure_sessions(o, 2 * minute, 120 * minute);
  CHECK(st.online_share == doctest::Approx(0.1).epsilon(0.08));
  CHECK(st.sends_per_online_minute == doctest::Approx(2.0).epsilon(0.05));

  SUBCASE("lognormal sessions keep the same means") {
    o.sessions = duration_shape::lognormal;
    auto ln = measure_sessions(o, 2 * minute, 120 * minute);
    CHECK(ln.online_share == doctest::Approx(0.1).epsilon(0.1));
  }
}

TEST_CASE("new_years_eve sends ten times as often inside its window") {
  auto o = new_years_eve(4000, 17);
  population pop(o);
  schedule s(pop);
  uint64_t burst = 0, after = 0;
  for (auto& e : run_until(s, 4 * minute)) {
    if (e.what != action::send)
      continue;
    if (e.at >= minute && e.at < 2 * minute)
      ++burst;
    else if (e.at >= 2 * minute && e.at < 3 * minute)
      ++after;
  }
  REQUIRE(after > 200);
  CHECK(double(burst) / double(after) == doctest::Approx(10).epsilon(0.15));
}

TEST_CASE("a reconnect storm drops every online device at once and brings each back within the window") {
  auto o = reconnect_storm(2000, 19);
  population pop(o);
  schedule s(pop);
  const sim_ns storm = 60 * ns_per_s;
  std::set<std::pair<phone_id, device_id>> online, dropped;
  uint64_t devices = 0;
  for (phone_id p = 0; p < o.phones; ++p)
    devices += static_cast<uint64_t>(pop.devices_of(p));
  for (auto& e : run_until(s, storm - 1)) {
    if (e.what == action::connect)
      online.insert({e.phone, e.device});
    if (e.what == action::disconnect)
      online.erase({e.phone, e.device});
  }
  CHECK(double(online.size()) / double(devices) > 0.8);
  for (auto& e : run_until(s, storm)) {
    CHECK(e.at == storm);
    if (e.what == action::disconnect)
      dropped.insert({e.phone, e.device});
  }
  CHECK(dropped == online);
  std::set<std::pair<phone_id, device_id>> back;
  for (auto& e : run_until(s, storm + static_cast<sim_ns>(o.storm_reconnect_window_s * ns_per_s)))
    if (e.what == action::connect)
      back.insert({e.phone, e.device});
  for (auto& d : dropped)
    CHECK(back.count(d) == 1);
}

TEST_CASE("a phone never writes to itself and its typing names the peer of the send that follows") {
  auto o = steady(1000, 23);
  o.typing_probability = 1.0;
  population pop(o);
  schedule s(pop);
  std::map<std::pair<phone_id, uint64_t>, phone_id> typed;
  uint64_t sends = 0, typed_sends = 0;
  std::set<std::pair<phone_id, uint64_t>> nonces;
  for (auto& e : run_until(s, 30 * minute)) {
    if (e.what == action::typing)
      typed[{e.phone, e.nonce}] = e.peer;
    if (e.what != action::send)
      continue;
    ++sends;
    CHECK(e.peer != e.phone);
    CHECK(nonces.insert({e.phone, e.nonce}).second);
    if (auto it = typed.find({e.phone, e.nonce}); it != typed.end()) {
      ++typed_sends;
      CHECK(it->second == e.peer);
    }
  }
  REQUIRE(sends > 1000);
  // Typing needs typing_lead (3 s) of room before the send: P(gap > 3 s) = exp(-0.1) = 0.905.
  CHECK(double(typed_sends) / double(sends) == doctest::Approx(0.905).epsilon(0.05));
}

TEST_CASE("a read comes a read delay after its delivery, or right after the device reconnects") {
  population pop(steady(300, 29));
  schedule s(pop);
  run_until(s, 2 * minute);
  // Deliver one message to every device that is online now.
  const sim_ns now = 2 * minute;
  std::map<std::pair<phone_id, device_id>, sim_ns> expected;
  for (phone_id p = 0; p < 300; ++p)
    for (int d = 0; d < pop.devices_of(p); ++d)
      if (s.online(p, static_cast<device_id>(d))) {
        s.on_delivered(p, static_cast<device_id>(d), 1, now);
        expected[{p, static_cast<device_id>(d)}] = now + pop.read_delay(p, static_cast<device_id>(d), 1);
      }
  REQUIRE(expected.size() > 10);
  std::map<std::pair<phone_id, device_id>, sim_ns> connected_at;
  size_t reads = 0, late = 0;
  while (auto e = s.next_event(now + 48 * 60 * minute)) {
    std::pair<phone_id, device_id> k{e->phone, e->device};
    if (e->what == action::connect)
      connected_at[k] = e->at;
    if (e->what != action::read)
      continue;
    ++reads;
    CHECK(e->inbox_seq == 1);
    if (e->at != expected[k]) {
      // The device was offline when the read fell due: it reads as soon as it is back.
      ++late;
      CHECK(e->at > expected[k]);
      CHECK(connected_at[k] == e->at);
    }
  }
  CHECK(reads == expected.size());
  CHECK(late > 0);
  CHECK(late < reads);
}

TEST_CASE("a million phones cost well under 200 bytes of model state each") {
  population pop(steady(1000000, 31));
  schedule s(pop);
  double per_phone = double(s.state_bytes()) / 1e6;
  MESSAGE("model state per phone: " << per_phone << " bytes");
  CHECK(per_phone < 100);
  CHECK(s.next_event(10 * ns_per_s).has_value());
}

TEST_CASE("presets are found by name and nonsense options are refused") {
  CHECK(preset("steady", 10)->phones == 10);
  CHECK(preset("new_years_eve", 10)->burst_send_multiplier == 10);
  CHECK(preset("reconnect_storm", 10)->storm_at_s == 60);
  CHECK_FALSE(preset("christmas", 10).has_value());
  CHECK_THROWS_AS(population(steady(1)), std::invalid_argument);
  auto o = steady(10);
  o.online_mean_s = 0;
  CHECK_THROWS_AS(population{o}, std::invalid_argument);
  population pop(steady(10));
  CHECK_THROWS_AS(schedule(pop, 3, 3), std::invalid_argument);
}

TEST_CASE("groups have skewed sizes within their bounds (model only: the server has no groups yet)") {
  auto o = steady(10000, 37);
  o.groups = 20000;
  population pop(o);
  uint64_t small = 0, big = 0;
  for (uint32_t g = 0; g < o.groups; ++g) {
    auto n = pop.group_size(g);
    REQUIRE(n >= o.group_size_min);
    REQUIRE(n <= o.group_size_max);
    small += n < 6;
    big += n >= 30;
    REQUIRE(pop.group_member(g, 0) < o.phones);
  }
  // Pareto(min 3, alpha 2): P(size >= x) = 3 / x.
  CHECK(double(small) / o.groups == doctest::Approx(0.5).epsilon(0.05));
  CHECK(double(big) / o.groups == doctest::Approx(0.1).epsilon(0.1));
}
