// The gateway's own WebSocket layer (chat/websocket.hpp): handshake answers, frame parsing at
// every split point, every protocol error, UTF-8, and permessage-deflate with its bound.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "chat/websocket.hpp"

namespace ws = agner::chat::ws;
using ws::opcode;

namespace {

// A client frame: masked with a fixed key, header as the client would write it.
std::string client_frame(opcode op, std::string_view payload, bool fin = true, uint8_t rsv = 0, bool masked = true) {
  std::string f;
  f += static_cast<char>((fin ? 0x80 : 0) | (rsv << 4) | static_cast<uint8_t>(op));
  uint8_t m = masked ? 0x80 : 0;
  if (payload.size() < 126) {
    f += static_cast<char>(m | payload.size());
  } else if (payload.size() <= 0xFFFF) {
    f += static_cast<char>(m | 126);
    f += static_cast<char>(payload.size() >> 8);
    f += static_cast<char>(payload.size() & 0xFF);
  } else {
    f += static_cast<char>(m | 127);
    for (int i = 7; i >= 0; --i)
      f += static_cast<char>((uint64_t{payload.size()} >> (8 * i)) & 0xFF);
  }
  const unsigned char key[4] = {0x37, 0xfa, 0x21, 0x3d};
  if (masked)
    f.append(reinterpret_cast<const char*>(key), 4);
  for (size_t i = 0; i < payload.size(); ++i)
    f += masked ? static_cast<char>(payload[i] ^ key[i % 4]) : payload[i];
  return f;
}

struct seen {
  ws::frame_reader::event::kind_t kind;
  opcode op;
  bool compressed;
  uint16_t code;
  std::string payload;
  bool operator==(const seen&) const = default;
};

// Feeds `bytes` in pieces of `step` bytes, as a socket might deliver them, keeping what the
// reader did not consume, and returns every event.
std::vector<seen> feed(ws::frame_reader& r, const std::string& bytes, size_t step) {
  std::vector<seen> out;
  std::string pending;
  for (size_t at = 0; at < bytes.size() && !r.failed(); at += step) {
    pending += bytes.substr(at, step);
    size_t used = r.parse(pending.data(), pending.size(), [&](const ws::frame_reader::event& e) {
      out.push_back({e.kind, e.op, e.compressed, e.code, std::string(e.payload)});
    });
    pending.erase(0, used);
  }
  return out;
}

std::vector<seen> feed_all(const std::string& bytes, size_t max = 1024, bool deflate = false) {
  ws::frame_reader r(max, deflate);
  return feed(r, bytes, bytes.size() ? bytes.size() : 1);
}

ws::upgrade_request good_request(std::string_view extensions = {}) {
  return {"GET", "websocket", "Upgrade", "13", "dGhlIHNhbXBsZSBub25jZQ==", "agner.v1", extensions};
}

using K = ws::frame_reader::event;

} // namespace

TEST_CASE("the accept key matches RFC 6455's example") {
  CHECK(ws::accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST_CASE("an upgrade is answered with 101, the accept key and the subprotocol asked for") {
  auto a = ws::answer_upgrade(good_request(), "agner.v1", true, "agner");
  CHECK(a.status == 101);
  CHECK(a.response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
  CHECK(a.response.find("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") != std::string::npos);
  CHECK(a.response.find("Sec-WebSocket-Protocol: agner.v1\r\n") != std::string::npos);
  CHECK_FALSE(a.deflate);
  CHECK(a.response.ends_with("\r\n\r\n"));
  auto r = good_request();
  r.protocols = "chat, other";
  r.connection = "keep-alive, Upgrade";
  r.upgrade = "WebSocket";
  a = ws::answer_upgrade(r, "agner.v1", true, "agner");
  CHECK(a.status == 101);
  CHECK(a.response.find("Sec-WebSocket-Protocol") == std::string::npos);
}

TEST_CASE("bad upgrade requests get 400 or 426 and no WebSocket") {
  auto r = good_request();
  r.method = "POST";
  CHECK(ws::answer_upgrade(r, "agner.v1", true, "agner").status == 400);
  r = good_request();
  r.upgrade = "h2c";
  CHECK(ws::answer_upgrade(r, "agner.v1", true, "agner").status == 400);
  r = good_request();
  r.connection = "keep-alive";
  CHECK(ws::answer_upgrade(r, "agner.v1", true, "agner").status == 400);
  r = good_request();
  r.key = "short";
  CHECK(ws::answer_upgrade(r, "agner.v1", true, "agner").status == 400);
  r = good_request();
  r.version = "8";
  auto a = ws::answer_upgrade(r, "agner.v1", true, "agner");
  CHECK(a.status == 426);
  CHECK(a.response.find("Sec-WebSocket-Version: 13\r\n") != std::string::npos);
}

TEST_CASE("permessage-deflate is negotiated without context takeover, within the client's limits") {
  auto a = ws::answer_upgrade(good_request("permessage-deflate; client_max_window_bits"), "agner.v1", true, "agner");
  CHECK(a.deflate);
  CHECK(a.deflate_window_bits == 15);
  CHECK(a.response.find("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
                        "client_no_context_takeover\r\n") != std::string::npos);
  a = ws::answer_upgrade(good_request("permessage-deflate; server_max_window_bits=10"), "agner.v1", true, "agner");
  CHECK(a.deflate);
  CHECK(a.deflate_window_bits == 10);
  CHECK(a.response.find("server_max_window_bits=10") != std::string::npos);
  // An 8-bit window cannot be honoured with zlib: that offer is declined, the next one taken.
  a = ws::answer_upgrade(good_request("permessage-deflate; server_max_window_bits=8, permessage-deflate"), "agner.v1",
                         true, "agner");
  CHECK(a.deflate);
  CHECK(a.deflate_window_bits == 15);
  CHECK(ws::answer_upgrade(good_request("permessage-deflate; mystery=1"), "agner.v1", true, "agner").deflate == false);
  CHECK(ws::answer_upgrade(good_request("x-webkit-deflate-frame"), "agner.v1", true, "agner").deflate == false);
  CHECK(ws::answer_upgrade(good_request("permessage-deflate"), "agner.v1", false, "agner").deflate == false);
}

TEST_CASE("UTF-8 validation accepts text and refuses overlongs, surrogates and truncation") {
  CHECK(ws::valid_utf8(""));
  CHECK(ws::valid_utf8("plain ascii that is longer than eight bytes"));
  CHECK(ws::valid_utf8("h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80"));  // é € 😀
  CHECK(ws::valid_utf8("\xF4\x8F\xBF\xBF"));                             // U+10FFFF
  CHECK_FALSE(ws::valid_utf8("\xC0\xAF"));                               // overlong '/'
  CHECK_FALSE(ws::valid_utf8("\xE0\x80\xAF"));                           // overlong
  CHECK_FALSE(ws::valid_utf8("\xED\xA0\x80"));                           // surrogate U+D800
  CHECK_FALSE(ws::valid_utf8("\xF4\x90\x80\x80"));                       // above U+10FFFF
  CHECK_FALSE(ws::valid_utf8("abc\xE2\x82"));                            // truncated
  CHECK_FALSE(ws::valid_utf8("\x80"));                                   // lone continuation
  CHECK_FALSE(ws::valid_utf8("{\xff\xfe}"));
}

TEST_CASE("server frame headers use the shortest length form") {
  CHECK(ws::make_header(opcode::text, 125).size == 2);
  CHECK(ws::make_header(opcode::text, 126).size == 4);
  CHECK(ws::make_header(opcode::text, 65535).size == 4);
  CHECK(ws::make_header(opcode::text, 65536).size == 10);
  auto h = ws::make_header(opcode::text, 300, true);
  CHECK(static_cast<uint8_t>(h.bytes[0]) == 0xC1); // FIN, RSV1, text
  CHECK(static_cast<uint8_t>(h.bytes[1]) == 126);
  CHECK(((static_cast<uint8_t>(h.bytes[2]) << 8) | static_cast<uint8_t>(h.bytes[3])) == 300);
  std::string close;
  ws::append_close(close, 4002, std::string(200, 'r'));
  CHECK(close.size() == 2 + 125);
}

TEST_CASE("payload lengths decode in all three forms, and an incomplete extended length asks for more") {
  uint64_t len = 0;
  CHECK(ws::decode_payload_length("\x81\x7d", 2, len) == 2);
  CHECK(len == 125);
  const char l16[] = {'\x81', '\x7e', '\x01', '\x2c'};
  CHECK(ws::decode_payload_length(l16, 3, len) == 0);
  CHECK(ws::decode_payload_length(l16, 4, len) == 4);
  CHECK(len == 300);
  const char l64[] = {'\x82', '\x7f', 0, 0, 0, '\x01', 0, 0, 0, '\x05'};
  CHECK(ws::decode_payload_length(l64, 9, len) == 0);
  CHECK(ws::decode_payload_length(l64, 10, len) == 10);
  CHECK(len == (uint64_t{1} << 32) + 5);
  // The mask bit is not part of the length.
  CHECK(ws::decode_payload_length("\x81\x85", 2, len) == 2);
  CHECK(len == 5);
}

TEST_CASE("frames split at every byte boundary give the same messages, control frames between fragments") {
  std::string big(300, 'b');
  std::string bytes = client_frame(opcode::text, "{\"op\":\"heartbeat\"}") +
                      client_frame(opcode::text, "frag-1 ", false) + client_frame(opcode::ping, "are you there") +
                      client_frame(opcode::continuation, "frag-2 ", false) +
                      client_frame(opcode::continuation, "end", true) + client_frame(opcode::binary, big) +
                      client_frame(opcode::pong, "") + client_frame(opcode::close, std::string("\x03\xe8" "bye", 5));
  std::vector<seen> want{
      {K::message, opcode::text, false, 0, "{\"op\":\"heartbeat\"}"},
      {K::ping, opcode::text, false, 0, "are you there"},
      {K::message, opcode::text, false, 0, "frag-1 frag-2 end"},
      {K::message, opcode::binary, false, 0, big},
      {K::pong, opcode::text, false, 0, ""},
      {K::close, opcode::text, false, 1000, "bye"},
  };
  for (size_t step = 1; step <= bytes.size(); step += (step < 20 ? 1 : 37)) {
    ws::frame_reader r(1024, false);
    auto got = feed(r, bytes, step);
    REQUIRE_MESSAGE(got == want, "step " << step);
    CHECK(r.buffered() == 0);
  }
}

TEST_CASE("every protocol error is reported once with its close code") {
  auto first_error = [](const std::string& bytes, size_t max = 1024, bool deflate = false) {
    auto got = feed_all(bytes, max, deflate);
    REQUIRE_FALSE(got.empty());
    CHECK(got.back().kind == K::error);
    return got.back().code;
  };
  CHECK(first_error(client_frame(opcode::text, "x", true, 0, false)) == 1002);       // unmasked
  CHECK(first_error(client_frame(static_cast<opcode>(3), "x")) == 1002);              // reserved opcode
  CHECK(first_error(client_frame(static_cast<opcode>(0xB), "x")) == 1002);            // reserved control
  CHECK(first_error(client_frame(opcode::ping, std::string(126, 'p'))) == 1002);     // control > 125
  CHECK(first_error(client_frame(opcode::ping, "p", false)) == 1002);                 // fragmented control
  CHECK(first_error(client_frame(opcode::continuation, "x")) == 1002);                // nothing to continue
  CHECK(first_error(client_frame(opcode::text, "a", false) + client_frame(opcode::text, "b")) == 1002);
  CHECK(first_error(client_frame(opcode::text, "x", true, 4)) == 1002);               // RSV1 without deflate
  CHECK(first_error(client_frame(opcode::text, "x", true, 2), 1024, true) == 1002);   // RSV2
  CHECK(first_error(client_frame(opcode::close, "x")) == 1002);                       // 1-byte close
  CHECK(first_error(client_frame(opcode::close, std::string("\x03\xed", 2))) == 1002); // 1005 on the wire
  CHECK(first_error(client_frame(opcode::close, std::string("\x03\xe8\xff", 3))) == 1007);
  CHECK(first_error(client_frame(opcode::text, std::string(2000, 'x'))) == 1009);
  CHECK(first_error(client_frame(opcode::text, std::string(600, 'x'), false) +
                    client_frame(opcode::continuation, std::string(600, 'x'))) == 1009);
  // A 1 GB frame is refused from its header: nothing waits for (or buffers) its payload.
  std::string header = client_frame(opcode::text, "").substr(0, 1);
  header += static_cast<char>(0x80 | 127);
  for (int i = 7; i >= 0; --i)
    header += static_cast<char>((uint64_t{1} << 30 >> (8 * i)) & 0xFF);
  header += "abcd";
  CHECK(first_error(header) == 1009);
  // After an error the reader stops: nothing more is reported.
  ws::frame_reader r(1024, false);
  auto got = feed(r, client_frame(opcode::text, "x", true, 0, false) + client_frame(opcode::text, "ok"), 1);
  CHECK(got.size() == 1);
  CHECK(r.failed());
  // An empty close frame means "no status".
  auto closed = feed_all(client_frame(opcode::close, ""));
  REQUIRE(closed.size() == 1);
  CHECK(closed[0].code == ws::close_no_status);
}

TEST_CASE("permessage-deflate round-trips, flags compressed messages, and bounds what it inflates") {
  auto& codec = ws::deflate_codec::for_this_thread();
  std::string text;
  for (int i = 0; i < 200; ++i)
    text += R"({"op":"deliver","conversation":"12345","seq":)" + std::to_string(i) + "}\n";
  for (int bits : {9, 11, 15}) {
    std::string packed, back;
    codec.deflate(text, packed, bits);
    CHECK(packed.size() < text.size() / 4);
    REQUIRE(codec.inflate(packed, back, 1 << 20) == ws::deflate_codec::inflate_result::ok);
    CHECK(back == text);
    // The reader reports the RSV1 bit of a compressed message, across fragments too.
    auto got = feed_all(client_frame(opcode::text, packed.substr(0, 10), false, 4) +
                            client_frame(opcode::continuation, packed.substr(10)),
                        1 << 20, true);
    REQUIRE(got.size() == 1);
    CHECK(got[0].compressed);
    REQUIRE(codec.inflate(got[0].payload, back, 1 << 20) == ws::deflate_codec::inflate_result::ok);
    CHECK(back == text);
  }
  std::string bomb(4 << 20, 'x'), packed, back;
  codec.deflate(bomb, packed, 15);
  CHECK(packed.size() < 32 * 1024);
  CHECK(codec.inflate(packed, back, 32 * 1024) == ws::deflate_codec::inflate_result::too_big);
  CHECK(back.size() <= 32 * 1024);
  CHECK(codec.inflate("\xff\xff\xff\xff garbage", back, 32 * 1024) == ws::deflate_codec::inflate_result::corrupt);
  // The codec is reusable after an error: no context carries over.
  std::string small;
  codec.deflate("hello", small, 15);
  REQUIRE(codec.inflate(small, back, 100) == ws::deflate_codec::inflate_result::ok);
  CHECK(back == "hello");
}

TEST_CASE("random bytes and mangled frames never crash the reader and never report more than they hold") {
  // A cheap fuzz pass: anything a socket may deliver, in any chunking. Under ASan in CI.
  uint64_t s = 0x5eed;
  auto next = [&s] {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  };
  std::string good = client_frame(opcode::text, "{\"op\":\"heartbeat\"}") + client_frame(opcode::ping, "p") +
                     client_frame(opcode::text, "frag", false) + client_frame(opcode::continuation, "ment") +
                     client_frame(opcode::close, std::string("\x03\xe8", 2));
  for (int round = 0; round < 20000; ++round) {
    std::string bytes;
    if (round % 2 == 0) {
      bytes.resize(next() % 300);
      for (auto& c : bytes)
        c = static_cast<char>(next());
    } else {
      bytes = good;
      for (int flips = 1 + static_cast<int>(next() % 4); flips > 0; --flips)
        bytes[next() % bytes.size()] ^= static_cast<char>(1u << (next() % 8));
    }
    ws::frame_reader r(256, round % 3 == 0);
    std::string pending;
    size_t total = 0;
    for (size_t at = 0; at < bytes.size() && !r.failed();) {
      size_t step = 1 + next() % 64;
      pending += bytes.substr(at, step);
      at += step;
      size_t used = r.parse(pending.data(), pending.size(), [&](const ws::frame_reader::event& e) {
        if (e.kind == K::message)
          CHECK(e.payload.size() <= 256);
        if (e.kind == K::ping || e.kind == K::pong)
          CHECK(e.payload.size() <= 125);
        total += e.payload.size();
      });
      REQUIRE(used <= pending.size());
      pending.erase(0, used);
    }
    CHECK(r.buffered() <= 256);
  }
}

TEST_CASE("the client side: masked frames the server reads back, and server frames read at every split") {
  // Client frames of all three length forms, masked with changing keys, read by the server's reader.
  std::string bytes;
  std::string mid(300, 'm'), large(70'000, 'l');
  ws::append_client_frame(bytes, opcode::text, R"({"op":"heartbeat"})", 0x01020304);
  ws::append_client_frame(bytes, opcode::text, mid, 0xdeadbeef);
  ws::append_client_frame(bytes, opcode::binary, large, 0);
  ws::append_client_frame(bytes, opcode::close, std::string("\x03\xe8", 2), 0x80808080);
  std::vector<seen> want{
      {K::message, opcode::text, false, 0, R"({"op":"heartbeat"})"},
      {K::message, opcode::text, false, 0, mid},
      {K::message, opcode::binary, false, 0, large},
      {K::close, opcode::text, false, 1000, ""},
  };
  CHECK(feed_all(bytes, 100'000) == want);

  // Server frames, fed to the client's reader in every piece size up to 20 bytes and then larger.
  std::string server;
  ws::append_frame(server, opcode::text, "one");
  ws::append_frame(server, opcode::text, mid);
  ws::append_frame(server, opcode::ping, "p");
  ws::append_frame(server, opcode::text, large);
  std::vector<std::pair<opcode, std::string>> expect{{opcode::text, "one"}, {opcode::text, mid}, {opcode::ping, "p"}, {opcode::text, large}};
  for (size_t step = 1; step <= server.size(); step += (step < 20 ? 1 : 4099)) {
    std::vector<std::pair<opcode, std::string>> got;
    std::string pending;
    for (size_t at = 0; at < server.size(); at += step) {
      pending += server.substr(at, step);
      size_t used = ws::parse_server_frames(pending.data(), pending.size(), 100'000, [&](const ws::server_frame& f) {
        CHECK(f.fin);
        got.emplace_back(f.op, std::string(f.payload));
        return true;
      });
      REQUIRE(used != ws::bad_server_frame);
      pending.erase(0, used);
    }
    REQUIRE_MESSAGE(got == expect, "step " << step);
    CHECK(pending.empty());
  }

  // A masked frame (a server must not mask) and a frame over the limit are refused.
  CHECK(ws::parse_server_frames(bytes.data(), bytes.size(), 100'000, [](const ws::server_frame&) { return true; }) ==
        ws::bad_server_frame);
  CHECK(ws::parse_server_frames(server.data(), server.size(), 100, [](const ws::server_frame&) { return true; }) ==
        ws::bad_server_frame);
  // Returning false stops after that frame.
  int calls = 0;
  size_t used = ws::parse_server_frames(server.data(), server.size(), 100'000, [&](const ws::server_frame&) { return ++calls < 2; });
  CHECK(calls == 2);
  CHECK(used == 2 + 3 + 4 + 300);
}

TEST_CASE("the client's upgrade request is one the server accepts, and its answer's status is read") {
  auto req = ws::client_upgrade_request("127.0.0.1:8080", "/v1/ws", "agner.v1");
  CHECK(req.starts_with("GET /v1/ws HTTP/1.1\r\n"));
  CHECK(req.find("Host: 127.0.0.1:8080\r\n") != std::string::npos);
  CHECK(req.find("Sec-WebSocket-Protocol: agner.v1\r\n") != std::string::npos);
  CHECK(req.ends_with("\r\n\r\n"));
  CHECK(ws::client_upgrade_request("h", "/", "").find("Sec-WebSocket-Protocol") == std::string::npos);
  auto answer = ws::answer_upgrade(good_request(), "agner.v1", false, "agner");
  CHECK(ws::response_status(answer.response) == 101);
  CHECK(ws::response_status("HTTP/1.1 426 Upgrade Required\r\n\r\n") == 426);
  CHECK(ws::response_status("HTTP/1.0 200 OK\r\n") == 0);
  CHECK(ws::response_status("HTTP/1.1 1x1") == 0);
  CHECK(ws::response_status("") == 0);
}
