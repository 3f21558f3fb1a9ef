// agner-chaos's pure parts: the seeded fault schedule, and the disk filler on a real tmpfs.
#include "chaos/chaos.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

using namespace agner::chaos;
using agner::loadgen::ns_per_s;

namespace {

schedule_options busy(uint64_t seed) {
  schedule_options o;
  o.seed = seed;
  o.duration_s = 600;
  o.nodes = 3;
  o.kills = 40;
  o.pauses = 6;
  o.slow_readers = 5;
  o.mid_frames = 5;
  o.disk_fulls = 4;
  o.fsync_failures = 3;
  return o;
}

} // namespace

TEST_CASE("the same seed replays the same schedule, and another seed draws another") {
  CHECK(make_schedule(busy(42)) == make_schedule(busy(42)));
  CHECK(make_schedule(busy(42)) != make_schedule(busy(43)));
}

TEST_CASE("a schedule holds every fault asked for, in time order, inside the margins") {
  auto o = busy(7);
  auto plan = make_schedule(o);
  std::map<fault_kind, uint32_t> count;
  for (auto& f : plan)
    ++count[f.kind];
  CHECK(count[fault_kind::kill] == 40);
  CHECK(count[fault_kind::pause] == 6);
  CHECK(count[fault_kind::slow_readers] == 5);
  CHECK(count[fault_kind::mid_frame] == 5);
  CHECK(count[fault_kind::disk_full] == 4);
  CHECK(count[fault_kind::fsync_failure] == 3);
  CHECK(count[fault_kind::power_cut] == 0);
  CHECK(std::is_sorted(plan.begin(), plan.end(), [](auto& a, auto& b) { return a.at < b.at; }));
  std::map<uint32_t, uint32_t> per_node;
  for (auto& f : plan) {
    CHECK(f.at >= static_cast<sim_ns>(o.margin_s * 1e9));
    CHECK(f.at <= static_cast<sim_ns>((o.duration_s - o.margin_s) * 1e9));
    CHECK(f.node < o.nodes);
    ++per_node[f.node];
    bool timed = f.kind == fault_kind::pause || f.kind == fault_kind::slow_readers || f.kind == fault_kind::disk_full;
    CHECK((f.duration > 0) == timed);
  }
  CHECK(per_node.size() == 3); // 63 faults over 3 nodes: every node gets some
}

TEST_CASE("a timed fault ends before the next fault on any node begins") {
  auto plan = make_schedule(busy(11));
  for (size_t i = 0; i + 1 < plan.size(); ++i)
    CHECK(plan[i].at + plan[i].duration < plan[i + 1].at);
}

TEST_CASE("power-loss mode turns the kills into power cuts") {
  auto o = busy(3);
  o.power_loss = true;
  auto plan = make_schedule(o);
  CHECK(std::count_if(plan.begin(), plan.end(), [](auto& f) { return f.kind == fault_kind::power_cut; }) == 40);
  CHECK(std::none_of(plan.begin(), plan.end(), [](auto& f) { return f.kind == fault_kind::kill; }));
}

TEST_CASE("no faults asked for, no schedule") {
  schedule_options o;
  o.kills = o.pauses = o.slow_readers = o.mid_frames = 0;
  CHECK(make_schedule(o).empty());
}

TEST_CASE("fill_disk takes every free block of a tmpfs and release_disk gives it back") {
  if (::geteuid() != 0) {
    MESSAGE("not root: a tmpfs mount needs CAP_SYS_ADMIN; skipped");
    return;
  }
  const char* base = std::getenv("TMPDIR");
  std::string dir = fmt::format("{}/agner-fill-XXXXXX", base ? base : "/tmp");
  REQUIRE(::mkdtemp(dir.data()));
  REQUIRE(::mount("agner-test", dir.c_str(), "tmpfs", 0, "size=4m") == 0);
  auto free_bytes = [&] {
    struct statvfs v {};
    ::statvfs(dir.c_str(), &v);
    return static_cast<uint64_t>(v.f_bavail) * v.f_frsize;
  };
  uint64_t before = free_bytes();
  uint64_t taken = fill_disk(dir);
  CHECK(taken > 0);
  CHECK(taken <= before);
  CHECK(free_bytes() < 4096 * 2); // at most a page or so left
  release_disk(dir);
  CHECK(free_bytes() == before);
  ::umount2(dir.c_str(), MNT_DETACH);
  std::filesystem::remove(dir);
}
