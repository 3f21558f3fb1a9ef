// The gateway's protocol over Beast's in-memory test stream: a real chat core, store and timer
// wheels, no sockets. The client side is a synchronous Beast WebSocket client on the test thread.
#include "chat/chat_node.hpp"
#include "test/chat/chat_test_support.hpp"
#include "test/runtime/store/store_test_support.hpp"

#include <boost/beast/_experimental/test/stream.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/json/parse.hpp>
#include <doctest/doctest.h>

#include <thread>

using namespace agner;
using namespace agner::chat;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace json = boost::json;

namespace {

struct fixture : chat::test::node_with_store {
  std::unique_ptr<token_signer> tokens;
  std::unique_ptr<chat_core> core;
  std::unique_ptr<http_server> http;
  std::unique_ptr<gateway> gw;

  explicit fixture(gateway_options gopts = {}, std::chrono::milliseconds idle_evict = std::chrono::seconds(60),
                   store::store_hooks hooks = {}, std::function<void(chat_options&)> tweak = {})
      : node_with_store("gw", std::move(hooks)) {
    tokens = std::make_unique<token_signer>(std::string(32, 's'));
    co.conversations.idle_evict = idle_evict;
    if (tweak)
      tweak(co);
    core = std::make_unique<chat_core>(nd->system(), *st, nd->metrics(), co, [](const std::string&) {});
    http = std::make_unique<http_server>(*nd, http_options{});
    gw = std::make_unique<gateway>(*nd, *http, *core, *tokens, gopts);
    nd->start(false);
    gw->start();
  }

  ~fixture() {
    gw->drain();
    gw.reset();
    http.reset();
    core->stop();
    core.reset();
  }

  std::string token_for(std::string_view name) {
    auto u = core->create_user(name);
    return tokens->issue(u, 4'000'000'000LL);
  }
};

/// A synchronous client over an in-memory stream connected to the gateway.
struct client {
  websocket::stream<beast::test::stream> ws;
  std::deque<json::object> pending;

  /// `deflate`: offer permessage-deflate (Beast's client side), which the gateway accepts.
  explicit client(fixture& f, bool deflate = false) : ws(beast::test::stream(f.nd->io(0))) {
    if (deflate) {
      websocket::permessage_deflate pmd;
      pmd.client_enable = true;
      ws.set_option(pmd);
    }
    beast::test::stream server(f.nd->io(0));
    ws.next_layer().connect(server);
    f.gw->accept_test_stream(std::move(server));
    ws.handshake("localhost", "/v1/ws");
    CHECK(next()["op"].as_string() == "hello");
  }

  void send(std::string_view text) { ws.write(boost::asio::buffer(text)); }

  /// The next server frame (server messages may carry several, newline-separated).
  json::object next() {
    while (pending.empty()) {
      beast::flat_buffer b;
      ws.read(b);
      std::string text = beast::buffers_to_string(b.data());
      size_t start = 0;
      while (start <= text.size()) {
        auto nl = text.find('\n', start);
        auto line = text.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
        pending.push_back(json::parse(line).as_object());
        if (nl == std::string::npos)
          break;
        start = nl + 1;
      }
    }
    auto f = std::move(pending.front());
    pending.pop_front();
    return f;
  }

  json::object next_op(std::string_view op) {
    for (int i = 0; i < 100; ++i) {
      auto f = next();
      if (f["op"].as_string() == op)
        return f;
    }
    FAIL("op not seen");
    return {};
  }

  /// Reads until the server closes; returns the code of the close frame it sent (0 if none came).
  /// The read may end with `closed`, or with the error of this client's automatic close reply
  /// when the server already dropped the transport (Beast does, after a protocol error); the
  /// close frame's code is recorded either way.
  uint16_t close_code() {
    try {
      for (int i = 0; i < 100; ++i)
        next();
    } catch (const beast::system_error&) {
      return static_cast<uint16_t>(ws.reason().code);
    }
    return 0;
  }
};

} // namespace

TEST_CASE("identify, send, stored, deliver and ack over in-memory streams") {
  fixture f;
  auto ta = f.token_for("alice");
  auto tb = f.token_for("bob");
  client a(f), b(f);
  a.send(R"({"op":"identify","ref":"1","token":")" + ta + R"(","device":"phone"})");
  auto ready = a.next_op("ready");
  CHECK(ready["ref"].as_string() == "1");
  CHECK(ready["user"].as_string() == "1");
  b.send(R"({"op":"identify","ref":"1","token":")" + tb + R"("})");
  b.next_op("ready");
  a.send(R"({"op":"send","ref":"s","to":"2","nonce":"n1","body":"hi"})");
  auto stored = a.next_op("stored");
  CHECK(stored["seq"].as_string() == "1");
  CHECK(stored["inbox_seq"].as_string() == "1"); // alice's own entry: no deliver of it comes to her
  auto d = b.next_op("deliver");
  CHECK(d["body"].as_string() == "hi");
  CHECK(d["id"] == stored["id"]);
  b.send(R"({"op":"ack","inbox_seq":")" + std::string(d["inbox_seq"].as_string()) + R"("})");
  b.send(R"({"op":"heartbeat","ref":"hb"})");
  CHECK(b.next_op("heartbeat_ack")["ref"].as_string() == "hb");
  // The node's own latency series saw the message once each.
  CHECK(f.core->send_to_stored().count() == 1);
  CHECK(f.core->send_to_deliver().count() == 1);
  CHECK(f.core->send_to_stored().sum() > 0); // a commit with a sync takes time
  auto text = f.nd->metrics().render();
  CHECK(text.find("agner_chat_send_to_stored_seconds_count 1") != std::string::npos);
  CHECK(text.find("agner_chat_send_to_deliver_seconds_count 1") != std::string::npos);
}

TEST_CASE("Beast's client interoperates: compression both ways, fragments, ping and the close handshake") {
  fixture f;
  auto ta = f.token_for("alice");
  auto tb = f.token_for("bob");
  client a(f, true), b(f, true);
  a.send(R"({"op":"identify","ref":"1","token":")" + ta + R"(","device":"phone"})");
  a.next_op("ready");
  b.send(R"({"op":"identify","ref":"1","token":")" + tb + R"(","device":"phone"})");
  b.next_op("ready");
  // A body long enough that both sides compress it.
  std::string body;
  for (int i = 0; i < 300; ++i)
    body += "pack me ";
  a.send(R"({"op":"send","ref":"s","to":"2","nonce":"z1","body":")" + body + R"("})");
  CHECK(a.next_op("stored")["seq"].as_string() == "1");
  CHECK(b.next_op("deliver")["body"].as_string() == body);
  // One message in fragments of 8 bytes.
  a.ws.auto_fragment(true);
  a.ws.write_buffer_bytes(8);
  a.send(R"({"op":"heartbeat","ref":"fragmented"})");
  CHECK(a.next_op("heartbeat_ack")["ref"].as_string() == "fragmented");
  a.ws.auto_fragment(false);
  // A ping is answered with a pong carrying the same data.
  std::string pong;
  a.ws.control_callback([&](websocket::frame_type kind, beast::string_view payload) {
    if (kind == websocket::frame_type::pong)
      pong = std::string(payload);
  });
  a.ws.ping("are you there");
  a.send(R"({"op":"heartbeat","ref":"after-ping"})");
  CHECK(a.next_op("heartbeat_ack")["ref"].as_string() == "after-ping");
  CHECK(pong == "are you there");
  // The client closes; the gateway answers with the same code and the read ends cleanly.
  b.ws.close(websocket::close_code::normal);
  CHECK(b.ws.reason().code == websocket::close_code::normal);
}

TEST_CASE("an idle conversation leaves memory on its own timer and comes back whole") {
  fixture f({}, std::chrono::milliseconds(50));
  auto ta = f.token_for("alice");
  f.token_for("bob"); // the recipient must exist
  client a(f);
  a.send(R"({"op":"identify","ref":"1","token":")" + ta + R"("})");
  a.next_op("ready");
  a.send(R"({"op":"send","ref":"s1","to":"2","nonce":"keep","body":"one"})");
  auto first = a.next_op("stored");
  CHECK(first["seq"].as_string() == "1");
  for (int i = 0; i < 200 && f.core->evicted().value() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  REQUIRE(f.core->evicted().value() == 1);
  // Reloaded from the store: a retried nonce is still recognised and seq continues.
  a.send(R"({"op":"send","ref":"s2","to":"2","nonce":"keep","body":"one"})");
  auto again = a.next_op("stored");
  CHECK(again["id"] == first["id"]);
  CHECK(again["seq"].as_string() == "1");
  a.send(R"({"op":"send","ref":"s3","to":"2","nonce":"new","body":"two"})");
  CHECK(a.next_op("stored")["seq"].as_string() == "2");
}

TEST_CASE("a failed append fails the conversation's later batches in flight too, and seq stays dense") {
  // The writer stops inside the failing commit while the conversation pipelines two more
  // batches behind it; the store then fails those (a broken chain) and the senders retry.
  store::test::gated_failure gate;
  fixture f({}, std::chrono::seconds(60), gate.hooks());
  auto ta = f.token_for("alice");
  f.token_for("bob");
  client a(f);
  a.send(R"({"op":"identify","ref":"1","token":")" + ta + R"("})");
  a.next_op("ready");
  a.send(R"({"op":"send","ref":"s1","to":"2","nonce":"n1","body":"one"})");
  CHECK(a.next_op("stored")["seq"].as_string() == "1");
  gate.arm(ENOSPC);
  a.send(R"({"op":"send","ref":"s2","to":"2","nonce":"n2","body":"two"})");
  REQUIRE(gate.wait_inside());
  // Each of these goes to the store as its own batch while the first is still at the writer.
  size_t queued = 0;
  for (auto [ref, nonce] : {std::pair{"s3", "n3"}, std::pair{"s4", "n4"}}) {
    a.send(fmt::format(R"({{"op":"send","ref":"{}","to":"2","nonce":"{}","body":"{}"}})", ref, nonce, nonce));
    for (int i = 0; i < 2000 && f.st->queued_bytes() <= queued; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    REQUIRE(f.st->queued_bytes() > queued);
    queued = f.st->queued_bytes();
  }
  gate.release();
  for (auto ref : {"s2", "s3", "s4"}) {
    auto e = a.next_op("error");
    CHECK(e["ref"].as_string() == ref);
    CHECK(e["code"].as_string() == "unavailable");
  }
  // Retried with the same nonces: stored again, with the seqs the failure freed, in order.
  for (auto [ref, nonce, seq] : {std::tuple{"r2", "n2", "2"}, std::tuple{"r3", "n3", "3"}, std::tuple{"r4", "n4", "4"}}) {
    a.send(fmt::format(R"({{"op":"send","ref":"{}","to":"2","nonce":"{}","body":"{}"}})", ref, nonce, nonce));
    auto s = a.next_op("stored");
    CHECK(s["ref"].as_string() == ref);
    CHECK(s["seq"].as_string() == seq);
  }
  auto page = f.st->history_after(direct_conversation(1, 2), 0, 100);
  REQUIRE(page.size() == 4);
  for (size_t i = 0; i < page.size(); ++i)
    CHECK(page[i].seq == i + 1);
}

TEST_CASE("a conversation whose append failed restarts its chain when it leaves memory") {
  // The store remembers a broken chain until a batch restarts it. A conversation that never
  // sends again would pin it forever; leaving memory restarts it with an empty batch.
  store::test::gated_failure gate;
  fixture f({}, std::chrono::milliseconds(50), gate.hooks());
  auto& broken = f.nd->metrics().make_gauge("agner_store_broken_chains", "");
  auto ta = f.token_for("alice");
  f.token_for("bob");
  client a(f);
  a.send(R"({"op":"identify","ref":"1","token":")" + ta + R"("})");
  a.next_op("ready");
  gate.arm(ENOSPC);
  a.send(R"({"op":"send","ref":"s1","to":"2","nonce":"n1","body":"one"})");
  REQUIRE(gate.wait_inside());
  gate.release();
  CHECK(a.next_op("error")["code"].as_string() == "unavailable");
  CHECK(broken.value() == 1);
  for (int i = 0; i < 300 && (f.core->evicted().value() == 0 || broken.value() != 0); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(f.core->evicted().value() == 1);
  CHECK(broken.value() == 0);
  // Back in memory, the conversation goes on from seq 1: nothing was written.
  a.send(R"({"op":"send","ref":"s2","to":"2","nonce":"n1","body":"one"})");
  CHECK(a.next_op("stored")["seq"].as_string() == "1");
}

namespace {
// Identifies `c` as device `device` of the user holding `token`; returns the ready frame.
json::object identify(client& c, const std::string& token, std::string_view device, std::string_view extra = "") {
  c.send(fmt::format(R"({{"op":"identify","ref":"i","token":"{}","device":"{}"{}}})", token, device, extra));
  return c.next_op("ready");
}
} // namespace

TEST_CASE("a user keeps at most devices_max devices: one more forgets the one seen longest ago") {
  fixture f({}, std::chrono::seconds(60), {}, [](chat_options& o) { o.users.devices_max = 3; });
  auto ta = f.token_for("alice");
  auto tb = f.token_for("bob");
  for (auto d : {"d1", "d2", "d3", "d4"}) { // each connects once and goes away
    client a(f);
    identify(a, ta, d);
    a.ws.close(websocket::close_code::normal);
    std::this_thread::sleep_for(std::chrono::milliseconds(5)); // distinct "seen" times
  }
  client b(f);
  identify(b, tb, "phone");
  b.send(R"({"op":"send","ref":"s","to":"1","nonce":"x","body":"hi"})");
  b.next_op("stored");
  // d2 is still known: it resumes from its position and gets the message.
  {
    client a(f);
    auto r = identify(a, ta, "d2");
    CHECK(r["resume_from"].as_string() == "0");
    CHECK(a.next_op("deliver")["body"].as_string() == "hi");
  }
  // d1 was forgotten when d4 came: it is a new device now and starts at the end.
  client a(f);
  auto r = identify(a, ta, "d1");
  CHECK(r["resume_from"].as_string() == "1");
  CHECK(r["inbox_seq"].as_string() == "1");
}

TEST_CASE("a device quiet for device_forget_after no longer holds entries back") {
  fixture f({}, std::chrono::seconds(60), {}, [](chat_options& o) { o.users.device_forget_after = std::chrono::milliseconds(100); });
  auto ta = f.token_for("alice");
  auto tb = f.token_for("bob");
  {
    client old(f);
    identify(old, ta, "old-phone");
    old.ws.close(websocket::close_code::normal);
  }
  client a(f);
  identify(a, ta, "new-phone");
  client b(f);
  identify(b, tb, "phone");
  auto send_and_ack = [&](std::string_view nonce) {
    b.send(fmt::format(R"({{"op":"send","ref":"s","to":"1","nonce":"{}","body":"{}"}})", nonce, nonce));
    b.next_op("stored");
    auto d = a.next_op("deliver");
    a.send(fmt::format(R"({{"op":"ack","inbox_seq":"{}"}})", d["inbox_seq"].as_string()));
  };
  send_and_ack("m1");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  send_and_ack("m2"); // this ack prunes: old-phone has been quiet for longer than 100 ms
  // The entries old-phone never acknowledged are gone: resuming from 0 is too old now.
  client old(f);
  old.send(R"({"op":"identify","ref":"i","token":")" + ta + R"(","device":"old-phone","last_inbox_seq":"0"})");
  auto e = old.next_op("error");
  CHECK(e["code"].as_string() == "resume_too_old");
}

TEST_CASE("requests before identify close with 4003 after an error frame") {
  fixture f;
  client c(f);
  c.send(R"({"op":"heartbeat","ref":"x"})");
  auto e = c.next();
  CHECK(e["code"].as_string() == "not_identified");
  CHECK(c.close_code() == 4003);
}

TEST_CASE("a forged token closes with 4004") {
  fixture f;
  f.token_for("alice");
  client c(f);
  auto forged = token_signer(std::string(32, 'x')).issue(1, 4'000'000'000LL);
  c.send(R"({"op":"identify","token":")" + forged + R"("})");
  CHECK(c.next()["code"].as_string() == "auth_failed");
  CHECK(c.close_code() == 4004);
}

TEST_CASE("malformed JSON closes with 4002, and an unknown op only gets an error") {
  fixture f;
  auto t = f.token_for("alice");
  client c(f);
  c.send(R"({"op":"identify","token":")" + t + R"("})");
  c.next_op("ready");
  c.send(R"({"op":"fly","ref":"u"})");
  auto e = c.next_op("error");
  CHECK(e["code"].as_string() == "unknown_op");
  CHECK(e["ref"].as_string() == "u");
  c.send("{nope");
  CHECK(c.next_op("error")["code"].as_string() == "bad_json");
  CHECK(c.close_code() == 4002);
}

TEST_CASE("a frame above the limit closes with 1009") {
  fixture f;
  client c(f);
  c.send(std::string(proto::frame_bytes_max + 1, 'a'));
  CHECK(c.close_code() == 1009);
}

TEST_CASE("no identify within the deadline closes with 4006") {
  gateway_options g;
  g.identify_timeout_ms = 100;
  fixture f(g);
  client c(f);
  CHECK(c.close_code() == 4006);
}

TEST_CASE("a silent identified connection is closed at the heartbeat deadline with 4009") {
  gateway_options g;
  g.heartbeat_ms = 100;
  fixture f(g);
  auto t = f.token_for("alice");
  client c(f);
  c.send(R"({"op":"identify","token":")" + t + R"("})");
  c.next_op("ready");
  CHECK(c.close_code() == 4009);
}

TEST_CASE("sends above the rate limit are refused with rate_limited and create nothing") {
  gateway_options g;
  g.sends_per_sec = 0.1;
  g.sends_burst = 2;
  fixture f(g);
  auto ta = f.token_for("alice");
  f.token_for("bob");
  client a(f);
  a.send(R"({"op":"identify","token":")" + ta + R"("})");
  a.next_op("ready");
  for (int i = 0; i < 3; ++i)
    a.send(R"({"op":"send","ref":")" + std::to_string(i) + R"(","to":"2","nonce":"n)" + std::to_string(i) + R"(","body":"x"})");
  int stored = 0, limited = 0;
  for (int i = 0; i < 3; ++i) {
    auto fr = a.next();
    while (fr["op"].as_string() == "deliver")
      fr = a.next();
    if (fr["op"].as_string() == "stored")
      ++stored;
    else if (fr["code"].as_string() == "rate_limited")
      ++limited;
  }
  CHECK(stored == 2);
  CHECK(limited == 1);
  CHECK(f.st->history_before(direct_conversation(1, 2), UINT64_MAX, 10).size() == 2);
}

TEST_CASE("draining closes connections with 1001") {
  fixture f;
  auto t = f.token_for("alice");
  client c(f);
  c.send(R"({"op":"identify","token":")" + t + R"("})");
  c.next_op("ready");
  f.gw->drain();
  CHECK(c.close_code() == 1001);
}

TEST_CASE("an idle session object stays small: the 2 KB per idle connection budget depends on it") {
  // docs/benchmarks-chat.md accounts for every byte of an idle connection; the session object is
  // the largest part the gateway owns. Beast's websocket::stream impl alone was 2,576 bytes.
  MESSAGE("session object: " << gateway::session_object_bytes() << " bytes");
  CHECK(gateway::session_object_bytes() <= 512);
}

TEST_CASE("the recent-message ring finds exactly the newest entries, across wrap-around and jumps") {
  recent_ring r;
  auto msg = [](uint64_t seq) { return std::make_shared<const durable_message>(durable_message{seq, 1, seq, {}, {}}); };
  CHECK(r.find(1) == nullptr);
  for (uint64_t seq = 1; seq <= 10; ++seq)
    r.push(seq, msg(seq), 4);
  for (uint64_t seq = 1; seq <= 12; ++seq) {
    auto* hit = r.find(seq);
    if (seq >= 7 && seq <= 10) {
      REQUIRE(hit != nullptr);
      CHECK((*hit)->log_position == seq);
    } else {
      CHECK(hit == nullptr);
    }
  }
  r.push(20, msg(20), 4); // a jump (after a restart): only the new entry is known
  CHECK(r.find(10) == nullptr);
  REQUIRE(r.find(20) != nullptr);
  CHECK((*r.find(20))->log_position == 20);
}
