// The driver against the perfect server (null transport): everything sent is stored and delivered
// exactly once, in order, across connects, disconnects and the drain; and against a server that
// drops sessions, the driver's outbox and resume keep the promise. Plus the serialized forms.
#include "loadgen/driver.hpp"
#include "loadgen/local_transports.hpp"
#include "loadgen/run.hpp"
#include "loadgen/timeline.hpp"

#include <boost/json/parse.hpp>
#include <doctest/doctest.h>
#include <unistd.h>
#include <fmt/format.h>
#include <fstream>
#include <filesystem>

using namespace agner::loadgen;

namespace {

/// A virtual clock shared by the driver and the transport.
struct vclock {
  sim_ns now = 0;
};

/// Runs the driver over `t` on virtual time, `seconds` of load then a drain; returns the verdict.
template <class T>
accounting_result play(const population_options& po, T& t, vclock& clk, double seconds,
                       const std::function<void(driver&, sim_ns)>& each_step = {}) {
  population pop(po);
  schedule sched(pop);
  recorder rec;
  timeline tl;
  std::vector<user_ref> users(po.phones);
  for (uint32_t p = 0; p < po.phones; ++p)
    users[p] = p + 1;
  directory dir(users, 1);
  driver_options o;
  o.heartbeat_ns = 0;
  driver d(pop, sched, rec, tl, dir, t, 0, 1, o);
  t.attach(d);
  const sim_ns end = static_cast<sim_ns>(seconds * 1e9);
  for (clk.now = 0; clk.now < end; clk.now += 10 * ns_per_ms) {
    t.poll();
    d.step(clk.now);
    if (each_step)
      each_step(d, clk.now);
  }
  d.start_drain(clk.now);
  const sim_ns limit = clk.now + 60 * ns_per_s;
  while (!d.drained(clk.now, ns_per_s) && clk.now < limit) {
    t.poll();
    d.step(clk.now);
    clk.now += 10 * ns_per_ms;
  }
  CHECK(d.drained(clk.now, ns_per_s));
  d.close_all();
  std::vector<worker_records> all{rec.take()};
  return analyze(all);
}

population_options busy(uint32_t phones) {
  auto po = steady(phones, 42);
  po.online_mean_s = 20;
  po.offline_mean_s = 20;
  po.ramp_up_s = 2;
  po.sends_per_online_minute = 30;
  po.read_delay_median_s = 2;
  return po;
}

} // namespace

TEST_CASE("against a perfect server the driver loses nothing, duplicates nothing and keeps order") {
  vclock clk;
  null_transport t([&] { return clk.now; });
  auto r = play(busy(300), t, clk, 60);
  CHECK(r.messages_sent > 1000);
  CHECK(r.messages_stored == r.messages_sent);
  CHECK(r.deliveries >= r.messages_sent); // the recipient's devices and the sender's own
  CHECK(r.reads > 0);
  CHECK(r.lost_deliveries == 0);
  CHECK(r.unverified_deliveries == 0); // the drain brought every device back
  CHECK(r.unexpected_deliveries == 0);
  CHECK(r.duplicates == 0);
  CHECK(r.order_violations == 0);
  CHECK(r.violations(true) == 0);
}

/// The perfect server, except that it drops every session now and then (a node restarting):
/// whatever was in flight must come back through the outbox and the resume.
class flaky_transport final : public transport {
public:
  flaky_transport(null_transport& inner) : inner_(inner) {}
  void attach(driver& d) {
    d_ = &d;
    inner_.attach(d);
  }
  void open(uint32_t slot, uint32_t node, user_ref user, std::string_view device, std::optional<uint64_t> resume) override {
    if (slot >= open_.size())
      open_.resize(slot + 1);
    open_[slot] = true;
    inner_.open(slot, node, user, device, resume);
  }
  void close(uint32_t slot) override {
    open_[slot] = false;
    inner_.close(slot);
  }
  void send(uint32_t slot, user_ref to, std::string_view nonce, std::string_view body, std::string_view ref) override {
    // Half the sends are stored but their ack is lost with the session, half never arrive.
    if (drop_sends_ && (++n_ % 2))
      return;
    inner_.send(slot, to, nonce, body, ref);
  }
  void ack(uint32_t slot, uint64_t seq) override { inner_.ack(slot, seq); }
  void heartbeat(uint32_t) override {}
  size_t poll() { return inner_.poll(); }
  /// Drops every session (the driver reconnects them with backoff).
  void drop_all() {
    for (uint32_t s = 0; s < open_.size(); ++s)
      if (open_[s]) {
        open_[s] = false;
        inner_.close(s);
      }
  }
  bool drop_sends_ = false;

private:
  null_transport& inner_;
  driver* d_ = nullptr;
  std::vector<bool> open_;
  uint64_t n_ = 0;
};

TEST_CASE("sessions dropped under load: the outbox retries with the same nonce and resume fills the gaps") {
  vclock clk;
  null_transport inner([&] { return clk.now; });
  flaky_transport t(inner);
  uint64_t drops = 0;
  auto r = play(busy(200), t, clk, 40, [&](driver& d, sim_ns now) {
    // Every 5 s: lose sends for 300 ms, then drop every session.
    auto phase = now % (5 * ns_per_s);
    t.drop_sends_ = phase >= 4700 * ns_per_ms;
    if (phase == 0 && now > 0) {
      t.drop_all();
      ++drops;
      CHECK(d.stats().ready == 0);
    }
  });
  CHECK(drops == 7);
  CHECK(r.send_retries > 0);
  CHECK(r.messages_stored == r.messages_sent);
  CHECK(r.lost_deliveries == 0);
  CHECK(r.unexpected_deliveries == 0);
  CHECK(r.duplicates == 0);
  CHECK(r.nonce_conflicts == 0);
  CHECK(r.order_violations == 0);
}

TEST_CASE("a timeline survives serialization and merges by adding") {
  timeline a, b;
  a.at(0).sent = 3;
  a.at(2 * ns_per_s + 5).latency.observe(1'000'000);
  b.at(3 * ns_per_s).delivered = 7;
  b.at(0).sent = 1;
  auto back = timeline::deserialize(a.serialize());
  CHECK(back == a);
  a.merge(b);
  REQUIRE(a.seconds().size() == 4);
  CHECK(a.seconds()[0].sent == 4);
  CHECK(a.seconds()[3].delivered == 7);
  CHECK(a.seconds()[2].latency.count() == 1);
  auto csv = a.csv();
  CHECK(csv.starts_with("t_s,sent,stored,delivered,errors,connected,p50_ms,p99_ms,p999_ms\n0,4,"));
  CHECK_THROWS(timeline::deserialize("garbage"));
  CHECK_THROWS(timeline::deserialize(a.serialize().substr(0, 20)));
}

TEST_CASE("the timeline's gnuplot script draws a run with deliveries and one without") {
  namespace fs = std::filesystem;
  auto dir = fs::temp_directory_path() / fmt::format("agner-timeline-{}", ::getpid());
  fs::create_directories(dir);
  timeline with, without;
  for (int t = 0; t < 5; ++t) {
    with.at(t * ns_per_s).sent = 10;
    with.at(t * ns_per_s).delivered = 10;
    with.at(t * ns_per_s).latency.observe(2'000'000);
    without.at(t * ns_per_s).connected = 1000; // a capacity run: connections, no messages
  }
  CHECK(with.any_delivery());
  CHECK_FALSE(without.any_delivery());
  for (auto* tl : {&with, &without}) {
    auto name = tl == &with ? std::string("with") : std::string("without");
    auto csv = (dir / (name + ".csv")).string(), png = (dir / (name + ".png")).string(), gp = (dir / (name + ".gp")).string();
    std::ofstream(csv) << tl->csv();
    std::ofstream(gp) << timeline::gnuplot_script(csv, png, name, tl->any_delivery());
    // gnuplot-nox is in deps/debian.txt; without the guard on an empty latency panel the run
    // without deliveries stopped with "all points y value undefined".
    INFO(name);
    CHECK(std::system(fmt::format("gnuplot '{}' 2>/dev/null", gp).c_str()) == 0);
    CHECK(fs::exists(png));
    CHECK(fs::file_size(png) > 1000);
  }
  fs::remove_all(dir);
}

TEST_CASE("a directory maps phones to users and back, and survives serialization") {
  directory d({10, 11, 20, 21, 30}, 2);
  CHECK(d.node_of(3) == 1);
  CHECK(d.user_of(2) == 20);
  CHECK(d.phone_of(0, 20) == 2);
  CHECK(d.phone_of(1, 21) == 3);
  CHECK(d.phone_of(1, 20) == unknown_phone); // user 20 lives on node 0
  CHECK(d.phone_of(0, 999) == unknown_phone);
  auto back = directory::deserialize(d.serialize());
  CHECK(back.phone_of(0, 30) == 4);
  CHECK(back.nodes() == 2);
  CHECK_THROWS(directory::deserialize("AGNERDIR"));
}

TEST_CASE("run options reject nonsense and apply overrides on top of the preset") {
  run_options o;
  agner::config_schema s;
  o.bind(s);
  CHECK_THROWS(s.load({"--transport=carrier-pigeon"}, [](const std::string&) { return std::nullopt; }, {}));
  CHECK_THROWS(s.load({"--phones=0"}, [](const std::string&) { return std::nullopt; }, {}));
  s.load({"--preset=new_years_eve", "--phones=50", "--sends_per_online_minute=7", "--seed=9"},
         [](const std::string&) { return std::nullopt; }, {});
  auto p = o.population();
  CHECK(p.phones == 50);
  CHECK(p.seed == 9);
  CHECK(p.sends_per_online_minute == 7);
  CHECK(p.burst_send_multiplier > 1); // the preset's burst stays
}

TEST_CASE("the null transport runs the whole runner and writes a valid report") {
  run_options o;
  o.transport = "null";
  o.phones = 200;
  o.duration_s = 2;
  o.drain_quiet_s = 0.3;
  o.progress = "off";
  o.sends_per_online_minute = 60;
  o.online_mean_s = 1000;
  o.ramp_up_s = 0.5;
  auto r = run(o);
  CHECK(r.exit_code == exit_ok);
  CHECK(r.info.drained);
  CHECK(r.result.messages_sent > 50);
  CHECK(r.load.peak_ready > 0);
  auto v = boost::json::parse(to_json(r.result, r.info)).as_object();
  CHECK(v.at("run").at("transport").as_string() == "null");
  CHECK(v.at("load").at("sent_per_s").as_double() > 0);
}
