// The chat core without a gateway: sessions are sinks that keep the frames they get, and a crash
// is the core stopping without its final checkpoint, then a new core on the same store.
#include "chat/core.hpp"
#include "test/chat/chat_test_support.hpp"
#include "test/runtime/store/store_test_support.hpp"

#include <boost/json/parse.hpp>
#include <doctest/doctest.h>

#include <condition_variable>
#include <thread>

using namespace agner;
using namespace agner::chat;
namespace json = boost::json;

namespace {

/// A device's connection: keeps every frame pushed to it.
class frames_sink : public session_sink, public std::enable_shared_from_this<frames_sink> {
public:
  void push(std::string frame) override {
    std::lock_guard lock(mu_);
    frames_.push_back(json::parse(frame).as_object());
    cv_.notify_all();
  }
  void close(uint16_t, std::string) override {}

  /// Waits until `n` frames with op `op` arrived (or `timeout`); returns those there, in order.
  std::vector<json::object> wait_for(std::string_view op, size_t n,
                                     std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    std::unique_lock lock(mu_);
    std::vector<json::object> got;
    cv_.wait_for(lock, timeout, [&] {
      got.clear();
      for (auto& f : frames_)
        if (f.at("op").as_string() == op)
          got.push_back(f);
      return got.size() >= n;
    });
    return got;
  }

private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<json::object> frames_;
};

struct fixture : chat::test::node_with_store {
  std::unique_ptr<chat_core> core;

  explicit fixture(std::function<void(chat_options&)> tweak, store::store_hooks hooks = {})
      : node_with_store("core", std::move(hooks)) {
    tweak(co);
    nd->start(false);
    start_core();
  }
  ~fixture() { core.reset(); }

  void start_core() { core = std::make_unique<chat_core>(nd->system(), *st, nd->metrics(), co, [](const std::string&) {}); }
  /// Everything not yet checkpointed is lost, as in a crash; what the store holds stays.
  void crash_and_restart() {
    core->stop(false);
    core.reset();
    start_core();
  }
  /// Connects `device` of `u`; returns its sink once `ready` came.
  std::shared_ptr<frames_sink> attach(user_id u, const std::string& device) {
    auto s = std::make_shared<frames_sink>();
    core->attach(u, device, std::nullopt, s, "r");
    REQUIRE(s->wait_for("ready", 1).size() == 1);
    return s;
  }
  /// Users with a known device each (a known device keeps the inbox until it acks).
  std::vector<user_id> peers(int n) {
    std::vector<user_id> out;
    for (int i = 0; i < n; ++i) {
      out.push_back(core->create_user(fmt::format("peer{}", i)));
      auto s = attach(out.back(), "phone");
      core->detach(out.back(), "phone", s);
    }
    return out;
  }
  /// Sends one message from `from` (connected as `sink`) to each peer, numbered by `wave`, and
  /// waits until all are stored (`stored_before` were stored on `sink` earlier).
  void wave(user_id from, frames_sink& sink, const std::vector<user_id>& to, int wave, size_t stored_before) {
    for (size_t i = 0; i < to.size(); ++i)
      core->send(from, to[i], fmt::format("w{}-{}", wave, i), fmt::format("wave {} to {}", wave, i), sink.shared_from_this(), "s");
    REQUIRE(sink.wait_for("stored", stored_before + to.size()).size() == stored_before + to.size());
  }
  /// Each peer's device, connecting after a restart, gets waves 1..`waves`, in order, once.
  void check_peers(const std::vector<user_id>& peers, int waves) {
    for (size_t i = 0; i < peers.size(); ++i) {
      auto s = attach(peers[i], "phone");
      auto got = s->wait_for("deliver", static_cast<size_t>(waves));
      REQUIRE(got.size() == static_cast<size_t>(waves));
      for (int w = 1; w <= waves; ++w) {
        CHECK(got[w - 1].at("inbox_seq").as_string() == std::to_string(w));
        CHECK(got[w - 1].at("body").as_string() == fmt::format("wave {} to {}", w, i));
      }
    }
  }
  /// The sender's device, connecting after a restart, gets its own `sends` back, in log order,
  /// once each (they are in its inbox too).
  void check_own(user_id u, const std::string& device, size_t sends) {
    auto s = attach(u, device);
    auto mine = s->wait_for("deliver", sends);
    REQUIRE(mine.size() == sends);
    for (size_t k = 0; k < mine.size(); ++k)
      CHECK(mine[k].at("inbox_seq").as_string() == std::to_string(k + 1));
    CHECK(s->wait_for("deliver", sends + 1, std::chrono::milliseconds(50)).size() == sends); // nothing more
  }
  template <class Pred>
  bool eventually(Pred p) {
    for (int i = 0; i < 20'000; ++i) {
      if (p())
        return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
  }
};

} // namespace

TEST_CASE("the sending session gets its inbox_seq in stored, the sender's other devices a copy, a retry neither") {
  fixture f([](chat_options&) {});
  auto alice = f.core->create_user("alice");
  auto bob = f.core->create_user("bob");
  auto phone = f.attach(alice, "phone");
  auto laptop = f.attach(alice, "laptop");
  auto b = f.attach(bob, "phone");
  for (int i = 1; i <= 3; ++i)
    f.core->send(alice, bob, fmt::format("n{}", i), fmt::format("m{}", i), phone, fmt::format("s{}", i));
  auto stored = phone->wait_for("stored", 3);
  REQUIRE(stored.size() == 3);
  auto copies = laptop->wait_for("deliver", 3);
  REQUIRE(copies.size() == 3);
  auto got = b->wait_for("deliver", 3);
  REQUIRE(got.size() == 3);
  for (size_t k = 0; k < 3; ++k) {
    // In alice's inbox order: the stored replies stand in for the deliveries she did not get.
    CHECK(stored[k].at("ref").as_string() == fmt::format("s{}", k + 1));
    CHECK(stored[k].at("inbox_seq").as_string() == std::to_string(k + 1));
    CHECK(copies[k].at("inbox_seq") == stored[k].at("inbox_seq"));
    CHECK(copies[k].at("id") == stored[k].at("id"));
    CHECK(got[k].at("id") == stored[k].at("id"));
  }
  // A retry from the laptop (the same nonce) is answered from the conversation: the message's
  // identity, without an inbox position (the laptop had the entry as a deliver).
  f.core->send(alice, bob, "n2", "m2", laptop, "again");
  auto retry = laptop->wait_for("stored", 1);
  REQUIRE(retry.size() == 1);
  CHECK(retry[0].at("id") == stored[1].at("id"));
  CHECK_FALSE(retry[0].contains("inbox_seq"));
  // Nothing reached the sending session as a deliver, and nothing more came anywhere.
  CHECK(phone->wait_for("deliver", 1, std::chrono::milliseconds(100)).empty());
  CHECK(b->wait_for("deliver", 4, std::chrono::milliseconds(50)).size() == 3);
  CHECK(laptop->wait_for("deliver", 4, std::chrono::milliseconds(50)).size() == 3);
  // The phone's next session resumes from its ack: after acking 2 of its own, the third comes
  // back as a deliver.
  f.core->ack(alice, "phone", 2);
  f.core->detach(alice, "phone", phone);
  auto again = f.attach(alice, "phone");
  auto replay = again->wait_for("deliver", 1);
  REQUIRE(replay.size() == 1);
  CHECK(replay[0].at("inbox_seq").as_string() == "3");
  CHECK(replay[0].at("body").as_string() == "m3");
}

TEST_CASE("a session still receiving its resume replay gets its own message from the replay, in order, once") {
  fixture f([](chat_options& o) { o.users.replay_page_bytes = 1; }); // one entry per page
  /// Holds the replay's "ready for more" until the test releases it.
  struct paused_sink : frames_sink {
    std::mutex mu;
    std::function<void()> more;
    void replay_paused(std::function<void()> ask_more) override {
      std::lock_guard lock(mu);
      more = std::move(ask_more);
    }
    bool release() {
      std::function<void()> f;
      {
        std::lock_guard lock(mu);
        f.swap(more);
      }
      if (f)
        f();
      return static_cast<bool>(f);
    }
  };
  auto alice = f.core->create_user("alice");
  auto bob = f.core->create_user("bob");
  auto first = f.attach(alice, "phone"); // registers the device
  f.core->detach(alice, "phone", first);
  auto b = f.attach(bob, "phone");
  for (int i = 1; i <= 3; ++i)
    f.core->send(bob, alice, fmt::format("b{}", i), fmt::format("from bob {}", i), b, "s");
  REQUIRE(b->wait_for("stored", 3).size() == 3);
  // Alice comes back: the replay of 1..3 stops after its first page.
  auto a = std::make_shared<paused_sink>();
  f.core->attach(alice, "phone", std::nullopt, a, "r");
  REQUIRE(a->wait_for("deliver", 1).size() == 1);
  REQUIRE(f.eventually([&] { std::lock_guard lock(a->mu); return static_cast<bool>(a->more); }));
  // Her send meanwhile is stored as entry 4, which she must get after 2 and 3.
  f.core->send(alice, bob, "a1", "from alice", a, "mine");
  auto stored = a->wait_for("stored", 1);
  REQUIRE(stored.size() == 1);
  CHECK_FALSE(stored[0].contains("inbox_seq"));
  for (int i = 0; i < 10 && a->wait_for("deliver", 4, std::chrono::milliseconds(20)).size() < 4; ++i)
    a->release();
  auto got = a->wait_for("deliver", 4);
  REQUIRE(got.size() == 4);
  for (size_t k = 0; k < 4; ++k)
    CHECK(got[k].at("inbox_seq").as_string() == std::to_string(k + 1));
  CHECK(got[3].at("body").as_string() == "from alice");
  a->release();
  CHECK(a->wait_for("deliver", 5, std::chrono::milliseconds(100)).size() == 4); // once
}

TEST_CASE("a crash in the middle of a checkpoint walk loses no inbox entry and duplicates none") {
  // One user per 50 ms tick and shard: a walk of ~20 users takes ~1 s, long enough to crash in.
  fixture f([](chat_options& o) {
    o.checkpoint_interval = std::chrono::milliseconds(3000);
    o.tick_interval = std::chrono::milliseconds(50);
    o.checkpoint_slice_users = 1;
  });
  auto& walking = f.nd->metrics().make_gauge("agner_chat_user_checkpoint_walk_users", "");
  constexpr int n = 40;
  auto alice = f.core->create_user("alice");
  auto peers = f.peers(n);
  auto a = f.attach(alice, "a");
  // Wave 1 is applied before the next walk begins, so that walk's mark covers it: users the walk
  // has not reached when the crash comes must still get wave 1 back, from disk or by replay.
  f.wave(alice, *a, peers, 1, 0);
  REQUIRE(f.eventually([&] { return walking.value() == 0; }));
  REQUIRE(f.eventually([&] { return walking.value() > 0; }));
  // Wave 2 lands while the walk goes on: users it reaches afterwards go to disk with wave 2 in
  // them, beyond the mark, and the replay from the mark must not add it to them twice.
  f.wave(alice, *a, peers, 2, n);
  REQUIRE(walking.value() > 0);
  f.crash_and_restart();

  f.check_peers(peers, 2);
  f.check_own(alice, "a", 2 * n);
}

TEST_CASE("a checkpoint flush that failed is written again before a later mark claims it") {
  // A slice's flush fails; its users are clean in memory and dirty only in the cache. No walk
  // visits them as dirty again, so the cache must write them before a later mark, or that mark
  // would cover inbox entries that are on disk nowhere. Walks of ~10 users per shard at one per
  // 50 ms tick, every 2 s: the walk that writes wave 1 is still to come, or under way, when the
  // failure is armed.
  store::test::gated_failure gate;
  fixture f(
    [](chat_options& o) {
      o.checkpoint_interval = std::chrono::milliseconds(2000);
      o.tick_interval = std::chrono::milliseconds(50);
      o.checkpoint_slice_users = 1;
    },
    gate.hooks());
  auto& checkpoints = f.nd->metrics().make_counter("agner_chat_user_checkpoints_total", "");
  constexpr int n = 20;
  auto alice = f.core->create_user("alice");
  auto peers = f.peers(n);
  auto a = f.attach(alice, "a");
  f.wave(alice, *a, peers, 1, 0);
  // Nothing else is written now: the next commit is a checkpoint's.
  gate.arm(ENOSPC);
  REQUIRE(gate.wait_inside());
  gate.release();
  // A mark after the failure (the failed flush cleared the shard's last one), then time for
  // the other shard's walk too.
  auto after = checkpoints.value();
  REQUIRE(f.eventually([&] { return checkpoints.value() > after; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(2600));
  f.crash_and_restart();
  f.check_peers(peers, 1);
  f.check_own(alice, "a", n);
}

TEST_CASE("a checkpoint walks its users a slice per tick, and the mark follows the last slice") {
  fixture f([](chat_options& o) {
    o.user_shards = 1;
    o.checkpoint_interval = std::chrono::milliseconds(400);
    o.tick_interval = std::chrono::milliseconds(10);
    o.checkpoint_slice_users = 2;
  });
  auto& walking = f.nd->metrics().make_gauge("agner_chat_user_checkpoint_walk_users", "");
  auto& checkpoints = f.nd->metrics().make_counter("agner_chat_user_checkpoints_total", "");
  // Ten connected users stay in memory, so each walk visits all ten: five slices of two.
  std::vector<std::shared_ptr<frames_sink>> sinks;
  for (int i = 0; i < 10; ++i)
    sinks.push_back(f.attach(f.core->create_user(fmt::format("u{}", i)), "d"));
  auto before = checkpoints.value();
  std::vector<int64_t> seen;
  REQUIRE(f.eventually([&] {
    auto v = walking.value();
    if (v > 0 && (seen.empty() || seen.back() != v))
      seen.push_back(v);
    return checkpoints.value() > before && v == 0;
  }));
  // The gauge counts down by slices of two over several ticks (8, 6, 4, 2 left after each; a
  // sample may miss some, or catch the 10 before the first slice).
  REQUIRE_FALSE(seen.empty());
  CHECK(std::any_of(seen.begin(), seen.end(), [](int64_t v) { return v > 0 && v < 10 && v % 2 == 0; }));
  for (auto v : seen)
    CHECK((v > 0 && v <= 10 && v % 2 == 0));
}
