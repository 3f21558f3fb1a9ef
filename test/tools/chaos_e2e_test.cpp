// agner-loadgen and agner-chaos end to end, as users run them: real binaries, a real agner-node,
// worker processes over WebSocket on 127.0.0.x. Each verdict is read from the tools' JSON reports.
#include "chaos/chaos.hpp"

#include <boost/json/parse.hpp>
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

class temp_dir {
public:
  temp_dir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = fmt::format("{}/agner-chaos-test-XXXXXX", base ? base : "/tmp");
    if (!::mkdtemp(tmpl.data()))
      throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const noexcept { return path_; }

private:
  std::string path_;
};

json::object read_json(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str()).as_object();
}

std::string tail(const std::string& path, size_t bytes = 4000) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto s = ss.str();
  return s.size() > bytes ? s.substr(s.size() - bytes) : s;
}

/// Runs a command line with its output in `log`; returns the exit code.
int run(const std::string& cmd, const std::string& log) {
  int st = std::system(fmt::format("{} >'{}' 2>&1", cmd, log).c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

int64_t at(const json::object& o, std::initializer_list<std::string_view> path) {
  const json::value* v = nullptr;
  const json::object* cur = &o;
  for (auto k : path) {
    v = &cur->at(k);
    if (v->is_object())
      cur = &v->as_object();
  }
  return v->to_number<int64_t>();
}

} // namespace

TEST_CASE("agner-loadgen: three thousand WebSocket phones over two workers, nothing lost") {
  temp_dir dir;
  agner::chaos::node_spec spec;
  spec.binary = AGNER_NODE_PATH;
  spec.data_dir = dir.path() + "/node";
  spec.port = agner::chaos::free_port();
  agner::chaos::node_handle node(spec);
  node.start();
  auto log = dir.path() + "/loadgen.log";
  auto out = dir.path() + "/out";
  auto cmd = fmt::format("{} --transport=ws --workers=2 --nodes={} --node_dirs={}/node --phones=3000 --duration_s=20 "
                         "--ramp_up_s=3 --online_mean_s=20 --offline_mean_s=20 --sends_per_online_minute=10 "
                         "--read_delay_median_s=3 --strict=true --drain_timeout_s=60 --out_dir={}",
                         AGNER_LOADGEN_PATH, node.address(), dir.path(), out);
  int code = run(cmd, log);
  INFO("loadgen output: " << tail(log));
  INFO("node log: " << tail(node.log_path()));
  CHECK(code == 0);
  auto r = read_json(out + "/report.json");
  CHECK(at(r, {"run", "workers"}) == 2);
  CHECK(r.at("run").at("drained").as_bool());
  CHECK(at(r, {"messages", "sent"}) > 2000);
  CHECK(at(r, {"messages", "stored"}) == at(r, {"messages", "sent"}));
  CHECK(at(r, {"messages", "deliveries"}) > at(r, {"messages", "sent"}));
  CHECK(at(r, {"load", "peak_ready"}) > 1000);
  CHECK(at(r, {"lost", "deliveries"}) == 0);
  CHECK(at(r, {"lost", "unverified_deliveries"}) == 0);
  CHECK(at(r, {"unexpected", "deliveries"}) == 0);
  CHECK(at(r, {"duplicates", "deliveries"}) == 0);
  CHECK(at(r, {"order_violations", "deliveries"}) == 0);
  CHECK(fs::exists(out + "/timeline.csv"));
  CHECK(node.stop() == 0);
}

TEST_CASE("agner-chaos: ten SIGKILL/restart cycles, a pause and client faults under load, nothing lost") {
  temp_dir dir;
  auto log = dir.path() + "/chaos.log";
  auto out = dir.path() + "/out";
  auto cmd = fmt::format("{} --phones=2500 --duration_s=45 --seed=7 --chaos.kills=10 --chaos.pauses=1 --chaos.slow_readers=1 "
                         "--chaos.mid_frames=1 --chaos.work_dir={}/work --out_dir={}",
                         AGNER_CHAOS_PATH, dir.path(), out);
  int code = run(cmd, log);
  INFO("chaos output: " << tail(log, 8000));
  CHECK(code == 0);
  auto r = read_json(out + "/chaos.json");
  auto& faults = r.at("faults").as_array();
  CHECK(std::count_if(faults.begin(), faults.end(), [](auto& f) { return f.at("kind").as_string() == "kill"; }) == 10);
  CHECK(std::count_if(faults.begin(), faults.end(), [](auto& f) { return f.at("kind").as_string() == "pause"; }) == 1);
  for (auto& f : faults)
    if (f.at("kind").as_string() == "kill")
      CHECK(f.at("serving_after_s").to_number<double>() > 0);
  auto& load = r.at("load").as_object();
  CHECK(load.at("run").at("strict").as_bool());
  CHECK(load.at("run").at("drained").as_bool());
  CHECK(at(load, {"messages", "stored"}) > 1000);
  CHECK(at(load, {"lost", "deliveries"}) == 0);
  CHECK(at(load, {"unexpected", "deliveries"}) == 0);
  CHECK(at(load, {"duplicates", "deliveries"}) == 0);
  CHECK(at(load, {"order_violations", "deliveries"}) == 0);
  CHECK(at(load, {"nonce_conflicts"}) == 0);
}

namespace {
/// A power-loss run with phones coming and going, so that stored messages wait in inboxes.
int power_loss_run(const std::string& dir, const std::string& durability, uint32_t cuts, json::object& report) {
  auto log = dir + "/chaos.log";
  auto out = dir + "/out";
  auto cmd = fmt::format("{} --phones=500 --duration_s={} --seed=11 --online_mean_s=4 --offline_mean_s=4 "
                         "--sends_per_online_minute=20 --drain_timeout_s=20 --chaos.kills={} --chaos.pauses=0 "
                         "--chaos.slow_readers=0 --chaos.mid_frames=0 --chaos.power_loss=true --chaos.durability={} "
                         "--chaos.work_dir={}/work --out_dir={}",
                         AGNER_CHAOS_PATH, cuts * 3 / 2 + 6, cuts, durability, dir, out);
  int code = run(cmd, log);
  INFO("chaos output: " << tail(log, 8000));
  REQUIRE(fs::exists(out + "/chaos.json"));
  report = read_json(out + "/chaos.json");
  return code;
}
} // namespace

TEST_CASE("agner-chaos power-loss mode: twenty power cuts lose nothing acknowledged with default LMDB flags") {
  temp_dir dir;
  json::object r;
  CHECK(power_loss_run(dir.path(), "sync", 20, r) == 0);
  auto& faults = r.at("faults").as_array();
  CHECK(std::count_if(faults.begin(), faults.end(), [](auto& f) { return f.at("kind").as_string() == "power_cut"; }) == 20);
  auto& load = r.at("load").as_object();
  CHECK(at(load, {"messages", "stored"}) > 300);
  CHECK(at(load, {"lost", "deliveries"}) == 0);
  CHECK(at(load, {"unexpected", "deliveries"}) == 0);
}

TEST_CASE("agner-chaos power-loss mode catches the loss when durability is switched off") {
  temp_dir dir;
  json::object r;
  CHECK(power_loss_run(dir.path(), "unsafe_nosync", 3, r) == 1);
  CHECK(at(r.at("load").as_object(), {"lost", "deliveries"}) > 0);
}

TEST_CASE("agner-chaos: a full disk and failing fsyncs under load lose nothing acknowledged") {
  // Disk-full faults mount a tmpfs per node, which needs root; without it the run keeps the
  // fsync failures (libfiu works unprivileged) and says what it left out.
  bool root = ::geteuid() == 0;
  if (!root)
    MESSAGE("not root: the disk-full faults are skipped (a tmpfs mount needs CAP_SYS_ADMIN)");
  temp_dir dir;
  auto log = dir.path() + "/chaos.log";
  auto out = dir.path() + "/out";
  auto cmd = fmt::format("{} --phones=1000 --duration_s=40 --seed=5 --sends_per_online_minute=30 --body_bytes=2000 --chaos.kills=1 "
                         "--chaos.pauses=0 --chaos.slow_readers=0 --chaos.mid_frames=0 --chaos.disk_fulls={} "
                         "--chaos.disk_mb=256 --chaos.fsync_failures=2 --chaos.work_dir={}/work --out_dir={}",
                         AGNER_CHAOS_PATH, root ? 2 : 0, dir.path(), out);
  int code = run(cmd, log);
  INFO("chaos output: " << tail(log, 8000));
  CHECK(code == 0);
  REQUIRE(fs::exists(out + "/chaos.json"));
  auto r = read_json(out + "/chaos.json");
  int64_t refused = 0, disk_fulls = 0, fsync_faults = 0;
  for (auto& f : r.at("faults").as_array()) {
    auto kind = f.at("kind").as_string();
    if (kind == "disk_full") {
      ++disk_fulls;
      CHECK(f.at("filled_bytes").to_number<int64_t>() > 0);
      refused += std::max<int64_t>(0, f.at("store_errors").to_number<int64_t>());
    }
    if (kind == "fsync_failure") {
      ++fsync_faults;
      // The store must stop rather than acknowledge after a failed fsync; the run restarted it.
      CHECK(f.at("store_errors").to_number<int64_t>() == 1);
      CHECK(f.at("serving_after_s").to_number<double>() > 0);
    }
  }
  CHECK(fsync_faults == 2);
  if (root) {
    CHECK(disk_fulls == 2);
    CHECK(refused > 0); // the faults were felt: the node refused commits while the disk was full
  }
  CHECK(at(r, {"node_deaths"}) == 0);
  auto& load = r.at("load").as_object();
  CHECK(load.at("run").at("drained").as_bool());
  CHECK(at(load, {"messages", "stored"}) > 500);
  CHECK(at(load, {"lost", "deliveries"}) == 0);
  CHECK(at(load, {"unexpected", "deliveries"}) == 0);
  CHECK(at(load, {"duplicates", "deliveries"}) == 0);
  CHECK(at(load, {"order_violations", "deliveries"}) == 0);
}
