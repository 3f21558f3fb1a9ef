// The accounting oracle against synthetic event streams: a perfect server's stream gives no
// findings, and every injected loss, duplicate, stranger and reordering is found, exactly.
#include "loadgen/accounting.hpp"
#include "loadgen/report.hpp"

#include "runtime/hash.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <set>
#include <stdexcept>
#include <vector>

using namespace agner::loadgen;

namespace {

constexpr sim_ns us = 1000;

// A perfect server, on paper: every message is stored and delivered to every device of its
// recipient and of its sender, with per-user inbox_seq and per-conversation seq. Tests then
// damage `deliveries` and feed the stream to recorders.
struct synthetic {
  struct message {
    phone_id sender, recipient;
    device_id device;
    uint64_t nonce, conversation, seq, id;
    sim_ns sent_at, stored_at;
  };

  uint32_t phones;
  std::vector<message> messages;
  std::vector<delivery> deliveries;
  std::map<phone_id, uint64_t> inbox;
  sim_ns end = 0;

  static int devices_of(phone_id p) { return p % 3 == 0 ? 2 : 1; }
  static uint64_t conversation_of(phone_id a, phone_id b) {
    return uint64_t{1} << 62 | uint64_t{std::min(a, b)} << 31 | std::max(a, b);
  }

  synthetic(uint32_t phones_, int count, uint64_t seed) : phones(phones_) {
    std::map<uint64_t, uint64_t> seqs;
    uint64_t state = seed;
    auto draw = [&] {
      state += 0x9e3779b97f4a7c15ULL;
      return agner::mix64(state);
    };
    for (int m = 0; m < count; ++m) {
      phone_id s = static_cast<phone_id>(draw() % phones);
      phone_id r = static_cast<phone_id>((s + 1 + draw() % (phones - 1)) % phones);
      auto c = conversation_of(s, r);
      sim_ns t = (m + 1) * 1000 * us;
      message msg{s, r, static_cast<device_id>(draw() % static_cast<uint64_t>(devices_of(s))),
                  uint64_t{0x5000} + static_cast<uint64_t>(m), c, ++seqs[c], uint64_t{900000} + static_cast<uint64_t>(m),
                  t, t + 300 * us};
      messages.push_back(msg);
      for (phone_id u : {r, s})
        for (int d = 0; d < devices_of(u); ++d)
          deliveries.push_back({u, static_cast<device_id>(d), c, msg.seq, msg.id, s, msg.nonce, ++inbox[u],
                                t + 500 * us + d * us});
    }
    end = (count + 10) * 1000 * us;
  }

  const delivery& find(size_t m, phone_id owner, device_id d) const {
    for (const auto& x : deliveries)
      if (x.id == messages[m].id && x.owner == owner && x.device == d)
        return x;
    FAIL("no such delivery");
    return deliveries.front();
  }
  void drop(size_t m, phone_id owner, device_id d) {
    auto& x = find(m, owner, d);
    deliveries.erase(deliveries.begin() + (&x - deliveries.data()));
  }

  // Feeds the stream to `workers` recorders, each event to the worker of the phone it belongs to:
  // sends and acks to the sender's, readiness and deliveries to the device owner's.
  std::vector<worker_records> feed(uint32_t workers, bool drain = true) const {
    std::vector<recorder> w(workers);
    for (phone_id p = 0; p < phones; ++p)
      for (int d = 0; d < devices_of(p); ++d)
        w[p % workers].ready(p, static_cast<device_id>(d), 0);
    for (const auto& m : messages) {
      w[m.sender % workers].sent(m.sender, m.device, m.nonce, m.recipient, m.sent_at);
      w[m.sender % workers].stored(m.sender, m.nonce, m.conversation, m.seq, m.id, m.stored_at);
    }
    for (const auto& d : deliveries)
      w[(d.owner == unknown_phone ? 0 : d.owner) % workers].delivered(d);
    if (drain)
      for (phone_id p = 0; p < phones; ++p)
        for (int d = 0; d < devices_of(p); ++d)
          w[p % workers].ready(p, static_cast<device_id>(d), end);
    std::vector<worker_records> out;
    for (auto& r : w)
      out.push_back(r.take());
    return out;
  }

  accounting_result analyze_all(uint32_t workers = 1, const analyze_options& o = {}) const {
    return analyze(feed(workers), o);
  }
};

} // namespace

TEST_CASE("a perfect server's stream has no findings and every latency is counted") {
  synthetic w(30, 2000, 1);
  auto r = w.analyze_all();
  CHECK(r.messages_sent == 2000);
  CHECK(r.messages_stored == 2000);
  CHECK(r.deliveries == w.deliveries.size());
  CHECK(r.lost_deliveries == 0);
  CHECK(r.unverified_deliveries == 0);
  CHECK(r.unexpected_deliveries == 0);
  CHECK(r.duplicates == 0);
  CHECK(r.order_violations == 0);
  CHECK(r.nonce_conflicts == 0);
  CHECK(r.violations(true) == 0);
  CHECK(r.send_to_stored.count() == 2000);
  CHECK(r.send_to_stored.quantile(0.5) >= 300 * us);
  CHECK(r.send_to_stored.quantile(0.5) < 300 * us * 9 / 8 + 1);
  // One latency per recipient device: recipients with two devices count twice.
  uint64_t recipient_devices = 0;
  for (auto& m : w.messages)
    recipient_devices += static_cast<uint64_t>(synthetic::devices_of(m.recipient));
  CHECK(r.send_to_delivered.count() == recipient_devices);
}

TEST_CASE("dropped deliveries are found as lost, exactly those, on recipient and sender devices") {
  synthetic w(30, 2000, 2);
  std::set<finding> want;
  for (size_t m : {5u, 77u, 1500u}) {
    const auto& x = w.messages[m];
    want.insert({x.sender, x.nonce, x.recipient, 0});
    w.drop(m, x.recipient, 0);
  }
  // The sender's own other device must see what it sent: dropping that is a loss too.
  size_t own = 0;
  while (synthetic::devices_of(w.messages[own].sender) < 2)
    ++own;
  const auto& x = w.messages[own];
  w.drop(own, x.sender, 1);
  want.insert({x.sender, x.nonce, x.sender, 1});

  auto r = w.analyze_all();
  CHECK(r.lost_messages == 4);
  CHECK(r.lost_deliveries == 4);
  CHECK(std::set<finding>(r.lost_examples.begin(), r.lost_examples.end()) == want);
  CHECK(r.violations() == 4);
  CHECK(exit_code(r, {}) == exit_violations);

  analyze_options recipients_only;
  recipients_only.sender_devices_required = false;
  CHECK(w.analyze_all(1, recipients_only).lost_deliveries == 3);
}

TEST_CASE("deliveries nobody sent, and deliveries to a stranger, are unexpected") {
  synthetic w(30, 500, 3);
  w.deliveries.push_back({4, 0, synthetic::conversation_of(4, 9), 1, 777, 9, 0xdead, 1000, w.end - 1});
  w.deliveries.push_back({4, 0, 0, 1, 778, unknown_phone, 0, 1001, w.end - 1});
  // A message really sent, shown to a user who is neither its sender nor its recipient.
  auto m = w.messages[10];
  phone_id stranger = 0;
  while (stranger == m.sender || stranger == m.recipient)
    ++stranger;
  w.deliveries.push_back({stranger, 0, m.conversation, m.seq, m.id, m.sender, m.nonce, 1002, w.end - 1});

  auto r = w.analyze_all();
  CHECK(r.unexpected_messages == 2);
  CHECK(r.misdirected_deliveries == 1);
  CHECK(r.unexpected_deliveries == 3);
  CHECK(r.lost_deliveries == 0);
  std::set<finding> want{{9, 0xdead, 4, 0}, {unknown_phone, 0, 4, 0}, {m.sender, m.nonce, stranger, 0}};
  CHECK(std::set<finding>(r.unexpected_examples.begin(), r.unexpected_examples.end()) == want);
  CHECK(r.violations() == 3);
}

TEST_CASE("a message shown twice on one device is a duplicate, and a replayed entry is told apart") {
  synthetic w(30, 1000, 4);
  // Right after the original, with the same inbox_seq: a replay of the same inbox entry.
  auto a = w.find(100, w.messages[100].recipient, 0);
  a.at += 50 * us;
  w.deliveries.push_back(a);
  // Much later, under a new inbox_seq: the message entered the inbox twice. It is below the
  // device's newest seq for that conversation, but it is a duplicate, not an order violation.
  auto b = w.find(200, w.messages[200].recipient, 0);
  b.inbox_seq = 1'000'000;
  b.at = w.end - 1;
  w.deliveries.push_back(b);

  auto r = w.analyze_all();
  CHECK(r.duplicates == 2);
  CHECK(r.duplicates_replayed == 1);
  CHECK(r.order_violations == 0);
  CHECK(r.nonce_conflicts == 0);
  CHECK(r.violations() == 0);
  CHECK(r.violations(true) == 2);
  std::set<finding> want{{w.messages[100].sender, w.messages[100].nonce, w.messages[100].recipient, 0},
                         {w.messages[200].sender, w.messages[200].nonce, w.messages[200].recipient, 0}};
  CHECK(std::set<finding>(r.duplicate_examples.begin(), r.duplicate_examples.end()) == want);
}

TEST_CASE("a seq below one the device already had for that conversation is an order violation") {
  synthetic w(30, 1000, 5);
  // Find two consecutive messages of one conversation and swap their delivery to the recipient.
  size_t first = 0, second = 0;
  for (size_t i = 0; i < w.messages.size() && !second; ++i)
    for (size_t j = i + 1; j < w.messages.size(); ++j)
      if (w.messages[j].conversation == w.messages[i].conversation) {
        if (w.messages[j].recipient == w.messages[i].recipient) {
          first = i;
          second = j;
        }
        break;
      }
  REQUIRE(second > first);
  phone_id who = w.messages[first].recipient;
  auto& a = w.find(first, who, 0);
  auto& b = w.find(second, who, 0);
  std::swap(const_cast<delivery&>(a), const_cast<delivery&>(b));

  auto r = w.analyze_all();
  CHECK(r.order_violations == 1);
  REQUIRE(r.order_examples.size() == 1);
  CHECK(r.order_examples[0] == finding{w.messages[first].sender, w.messages[first].nonce, who, 0});
  CHECK(r.duplicates == 0);
  CHECK(r.lost_deliveries == 0);
  CHECK(r.violations() == 0);
  CHECK(r.violations(true) == 1);
}

TEST_CASE("retries and repeated stored acks are one message, and a second id for a nonce is a conflict") {
  recorder rec;
  rec.ready(1, 0, 0);
  rec.ready(2, 0, 0);
  rec.sent(1, 0, 42, 2, 10 * us);
  rec.sent(1, 0, 42, 2, 20 * us); // a retry
  rec.stored(1, 42, 7, 1, 555, 30 * us);
  rec.stored(1, 42, 7, 1, 555, 40 * us); // the retry's answer: the same id
  rec.delivered({2, 0, 7, 1, 555, 1, 42, 1, 50 * us});
  rec.delivered({1, 0, 7, 1, 555, 1, 42, 1, 50 * us});
  rec.sent(1, 0, 43, 2, 60 * us);
  rec.stored(1, 43, 7, 2, 556, 70 * us);
  rec.stored(1, 43, 7, 2, 999, 80 * us); // the server forgot the nonce and stored it again
  rec.delivered({2, 0, 7, 2, 556, 1, 43, 2, 90 * us});
  rec.delivered({1, 0, 7, 2, 556, 1, 43, 2, 90 * us});
  rec.stored(1, 44, 7, 3, 557, 95 * us); // acked but never reported sent: a driver bug
  rec.ready(1, 0, 100 * us);
  rec.ready(2, 0, 100 * us);
  std::vector<worker_records> w{rec.take()};
  auto r = analyze(w);
  CHECK(r.messages_sent == 2);
  CHECK(r.send_retries == 1);
  CHECK(r.messages_stored == 3);
  CHECK(r.stored_without_send == 1);
  CHECK(r.nonce_conflicts == 1);
  CHECK(r.duplicates == 0);
  CHECK(r.send_to_stored.count() == 2); // first ack only, from the first attempt
  // Latencies are 20 us (from the first attempt of nonce 42, not its retry) and 10 us.
  CHECK(r.send_to_stored.quantile(1.0) >= 20 * us);
  CHECK(r.send_to_stored.quantile(1.0) <= 20 * us * 9 / 8);
  CHECK(r.send_to_stored.quantile(0.0) >= 10 * us);
  CHECK(r.violations() == 0);
  CHECK(r.violations(true) == 1);
}

TEST_CASE("only devices registered before the send must receive it, and only after they came back") {
  recorder rec;
  rec.ready(1, 0, 0);
  rec.ready(2, 0, 0);
  rec.sent(1, 0, 1, 2, 10 * us);
  rec.ready(2, 1, 15 * us); // a new device, after the send: not owed this message
  rec.stored(1, 1, 7, 1, 100, 20 * us);
  rec.delivered({1, 0, 7, 1, 100, 1, 1, 1, 30 * us});
  // Recipient device 0 never came back after the ack: unverified (no drain), not lost.
  std::vector<worker_records> w{rec.records()};
  auto r = analyze(w);
  CHECK(r.lost_deliveries == 0);
  CHECK(r.unverified_deliveries == 1);
  // After a drain (device 0 reconnected and resumed) the missing delivery is a loss.
  rec.ready(2, 0, 50 * us);
  w = {rec.records()};
  r = analyze(w);
  CHECK(r.lost_deliveries == 1);
  CHECK(r.unverified_deliveries == 0);
  REQUIRE(r.lost_examples.size() == 1);
  CHECK(r.lost_examples[0] == finding{1, 1, 2, 0});
}

TEST_CASE("a message never acked as stored can be missing, or delivered, without a violation") {
  recorder rec;
  rec.ready(1, 0, 0);
  rec.ready(2, 0, 0);
  rec.sent(1, 0, 1, 2, 10 * us); // the node died before committing: never stored, never shown
  rec.sent(1, 0, 2, 2, 20 * us); // committed, but the ack was lost with the node: shown anyway
  rec.delivered({2, 0, 7, 1, 100, 1, 2, 1, 30 * us});
  rec.ready(1, 0, 40 * us);
  rec.ready(2, 0, 40 * us);
  std::vector<worker_records> w{rec.take()};
  auto r = analyze(w);
  CHECK(r.messages_unacked == 2);
  CHECK(r.delivered_unacked == 1);
  CHECK(r.unexpected_deliveries == 0);
  CHECK(r.violations(true) == 0);
}

TEST_CASE("many injected faults are each found exactly, whatever the worker split") {
  synthetic w(200, 20000, 6);
  // Disjoint victims: a message is damaged at most once.
  std::vector<size_t> victims;
  for (size_t i = 0; i < w.messages.size(); i += 97)
    victims.push_back(i);
  REQUIRE(victims.size() > 150);
  size_t v = 0;
  uint64_t lost = 0, dups = 0, unexpected = 0;
  for (int i = 0; i < 50; ++i, ++v, ++lost) {
    const auto& m = w.messages[victims[v]];
    w.drop(victims[v], m.recipient, 0);
  }
  for (int i = 0; i < 50; ++i, ++v, ++dups) {
    auto d = w.find(victims[v], w.messages[victims[v]].sender, 0);
    d.at = w.end - 1000 + i;
    w.deliveries.push_back(d);
  }
  for (int i = 0; i < 30; ++i, ++unexpected)
    w.deliveries.push_back({static_cast<phone_id>(i), 0, 0, 1, 1, static_cast<phone_id>(i + 1), uint64_t{1} << 40 | i,
                            1, w.end - 1});

  auto one = w.analyze_all(1);
  CHECK(one.lost_deliveries == lost);
  CHECK(one.lost_messages == lost);
  CHECK(one.duplicates == dups);
  CHECK(one.order_violations == 0);
  CHECK(one.unexpected_deliveries == unexpected);
  CHECK(one.violations() == lost + unexpected);

  for (uint32_t workers : {2u, 3u, 7u}) {
    CAPTURE(workers);
    auto split = w.analyze_all(workers);
    CHECK(to_json(split, {}) == to_json(one, {}));
  }
}

TEST_CASE("records survive serialization, and two workers' records join to the single-process verdict") {
  synthetic w(40, 3000, 7);
  w.drop(3, w.messages[3].recipient, 0);
  auto dup = w.find(9, w.messages[9].recipient, 0);
  dup.at += 1;
  w.deliveries.push_back(dup);
  auto single = analyze(w.feed(1));
  auto parts = w.feed(2);
  std::vector<worker_records> back;
  for (const auto& p : parts) {
    auto bytes = p.serialize();
    back.push_back(worker_records::deserialize(bytes));
    CHECK(back.back() == p);
  }
  auto joined = analyze(back);
  CHECK(joined.lost_deliveries == 1);
  CHECK(joined.duplicates == 1);
  CHECK(to_json(joined, {}) == to_json(single, {}));
}

TEST_CASE("truncated or foreign records are refused, not misread") {
  synthetic w(10, 50, 8);
  auto bytes = w.feed(1)[0].serialize();
  CHECK_THROWS_AS(worker_records::deserialize(bytes.substr(0, bytes.size() - 3)), std::runtime_error);
  CHECK_THROWS_AS(worker_records::deserialize("not records at all"), std::runtime_error);
  CHECK_THROWS_AS(worker_records::deserialize(bytes + "x"), std::runtime_error);
}

TEST_CASE("a message costs 48 bytes and its index slot at the sender") {
  recorder rec;
  const int n = 200000;
  for (int i = 0; i < n; ++i)
    rec.sent(static_cast<phone_id>(i % 1000), 0, static_cast<uint64_t>(i), 1, i);
  double per = double(rec.memory_bytes()) / n;
  MESSAGE("recorder bytes per message sent: " << per);
  CHECK(per >= 48);
  CHECK(per < 48 * 2 + 12); // vector doubling at worst, plus the index
}
