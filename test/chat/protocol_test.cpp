// Every client frame shape, and every kind of bad input, decoded without throwing.
#include "chat/protocol.hpp"

#include <boost/json/parse.hpp>
#include <doctest/doctest.h>

using namespace agner::chat;
using namespace agner::chat::proto;

namespace {
template <class T>
T req(std::string_view text) {
  auto r = decode(text);
  REQUIRE(std::holds_alternative<client_frame>(r));
  auto& f = std::get<client_frame>(r);
  REQUIRE(std::holds_alternative<T>(f.req));
  return std::get<T>(f.req);
}
decode_error err(std::string_view text) {
  auto r = decode(text);
  REQUIRE(std::holds_alternative<decode_error>(r));
  return std::get<decode_error>(r);
}
} // namespace

TEST_CASE("identify carries the token, device and optional resume position") {
  auto r = req<identify>(R"({"op":"identify","ref":"1","token":"t","device":"phone","last_inbox_seq":"17"})");
  CHECK(r.token == "t");
  CHECK(r.device == "phone");
  CHECK(r.last_inbox_seq == 17u);
  auto d = req<identify>(R"({"op":"identify","token":"t"})");
  CHECK(d.device == "default");
  CHECK_FALSE(d.last_inbox_seq);
}

TEST_CASE("send takes ids as decimal strings or integers") {
  auto r = req<send>(R"({"op":"send","ref":"9","to":"12","nonce":"n-1","body":"hi \u00e9"})");
  CHECK(r.to == 12);
  CHECK(r.nonce == "n-1");
  CHECK(r.body == "hi \xc3\xa9");
  CHECK(req<send>(R"({"op":"send","to":12,"nonce":"n","body":""})").to == 12);
}

TEST_CASE("ack, heartbeat and history decode with their defaults") {
  CHECK(req<ack>(R"({"op":"ack","inbox_seq":"5"})").inbox_seq == 5);
  req<heartbeat>(R"({"op":"heartbeat"})");
  auto h = req<history>(R"({"op":"history","conversation":"99","before":"10"})");
  CHECK(h.conversation == 99);
  CHECK(h.before == 10u);
  CHECK(h.limit == history_limit_default);
  CHECK(req<history>(R"({"op":"history","conversation":"99","after":"0","limit":5})").limit == 5);
}

TEST_CASE("bad input gets a precise error code and keeps the ref when it can") {
  CHECK(err("not json").code == error_code::bad_json);
  CHECK(err("[1,2]").code == error_code::bad_json);
  CHECK(err(R"({"op":"send",})").code == error_code::bad_json);
  CHECK(err(R"({"a":[[[[[[[[[[1]]]]]]]]]]})").code == error_code::bad_json); // too deep
  CHECK(err(R"({"ref":"1"})").code == error_code::unknown_op);
  CHECK(err(R"({"op":"dance","ref":"7"})").ref == "7");
  CHECK(err(R"({"op":"dance","ref":"7"})").code == error_code::unknown_op);
  CHECK(err(R"({"op":5})").code == error_code::unknown_op);
  auto e = err(R"({"op":"send","ref":"3","to":"x","nonce":"n","body":"b"})");
  CHECK(e.code == error_code::bad_request);
  CHECK(e.ref == "3");
  CHECK(e.message.find("'to'") != std::string::npos);
  CHECK(err(R"({"op":"send","to":"1","body":"b"})").message.find("'nonce' is required") != std::string::npos);
  CHECK(err(R"({"op":"send","to":"1","nonce":"","body":"b"})").code == error_code::bad_request);
  CHECK(err(R"({"op":"send","to":"0","nonce":"n","body":"b"})").code == error_code::bad_request);
  CHECK(err(R"({"op":"send","to":"4294967296","nonce":"n","body":"b"})").code == error_code::bad_request);
  CHECK(err(R"({"op":"send","to":-1,"nonce":"n","body":"b"})").code == error_code::bad_request);
  CHECK(err(R"({"op":"send","to":"1","nonce":1,"body":"b"})").code == error_code::bad_request);
  CHECK(err(R"({"op":"ack"})").code == error_code::bad_request);
  CHECK(err(R"({"op":"history","conversation":"1","limit":1000})").code == error_code::bad_request);
  CHECK(err(R"({"op":"history","conversation":"1","limit":"5"})").code == error_code::bad_request);
  CHECK(err(R"({"op":"history","conversation":"1","before":"2","after":"1"})").code == error_code::bad_request);
  CHECK(err(R"({"op":"heartbeat","ref":5})").code == error_code::bad_request);
}

TEST_CASE("oversized fields are refused") {
  std::string body(body_bytes_max + 1, 'a');
  CHECK(err(R"({"op":"send","to":"1","nonce":"n","body":")" + body + "\"}").code == error_code::bad_request);
  std::string nonce(nonce_bytes_max + 1, 'n');
  CHECK(err(R"({"op":"send","to":"1","nonce":")" + nonce + R"(","body":"b"})").code == error_code::bad_request);
}

TEST_CASE("invalid UTF-8 inside a string is a decode error") {
  CHECK(err("{\"op\":\"send\",\"to\":\"1\",\"nonce\":\"n\",\"body\":\"\xff\xfe\"}").code == error_code::bad_json);
}

TEST_CASE("server frames are valid JSON with ids as strings and escaped text") {
  auto check = [](const std::string& s) {
    auto v = boost::json::parse(s);
    REQUIRE(v.is_object());
    return v.as_object();
  };
  auto d = check(encode_deliver({5, 77, 3, 123456789012345678ULL, 9, "n\"1", "line1\nline2 \"q\" \\"}));
  CHECK(d.at("op").as_string() == "deliver");
  CHECK(d.at("id").as_string() == "123456789012345678");
  CHECK(d.at("body").as_string() == "line1\nline2 \"q\" \\");
  CHECK(d.at("nonce").as_string() == "n\"1");
  auto e = check(encode_error("r1", error_code::forbidden, "not a member"));
  CHECK(e.at("code").as_string() == "forbidden");
  CHECK(e.at("ref").as_string() == "r1");
  CHECK_FALSE(check(encode_error("", error_code::internal, "x")).contains("ref"));
  auto h = check(encode_history("2", 77, {{1, 10, 9, "a"}, {2, 11, 8, "b"}}, true));
  CHECK(h.at("messages").as_array().size() == 2);
  CHECK(h.at("more").as_bool());
  CHECK(check(encode_history("2", 77, {}, false)).at("messages").as_array().empty());
  auto hello = check(encode_hello(30000, "node-1"));
  CHECK(hello.at("version").as_int64() == version);
  CHECK(hello.at("heartbeat_ms").as_int64() == 30000);
  CHECK(hello.at("node").as_string() == "node-1");
  auto ready = check(encode_ready("1", 9, "phone", 18446744073709551615ULL, 7));
  CHECK(ready.at("ref").as_string() == "1");
  CHECK(ready.at("user").as_string() == "9");
  CHECK(ready.at("device").as_string() == "phone");
  CHECK(ready.at("inbox_seq").as_string() == "18446744073709551615");
  CHECK(ready.at("resume_from").as_string() == "7");
  auto stored = check(encode_stored("3", 77, 4, 99, "n"));
  CHECK(stored.at("op").as_string() == "stored");
  CHECK(stored.at("ref").as_string() == "3");
  CHECK(stored.at("conversation").as_string() == "77");
  CHECK(stored.at("seq").as_string() == "4");
  CHECK(stored.at("id").as_string() == "99");
  CHECK(stored.at("nonce").as_string() == "n");
  auto ack = check(encode_heartbeat_ack("4"));
  CHECK(ack.size() == 2);
  CHECK(ack.at("ref").as_string() == "4");
}

TEST_CASE("every string survives the server's JSON escaping") {
  // Control characters, quotes and backslashes at the start, middle and end, around runs that
  // need no escape, and multi-byte UTF-8.
  std::string all_controls;
  for (char c = 0; c < 0x20; ++c)
    all_controls += c;
  for (std::string body : {std::string(), std::string("\""), std::string("\\"), std::string("plain"), all_controls,
                           std::string("\x01" "a\x1f" "b\"c\\d\te\rf\ng"), std::string("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x99\x82"),
                           std::string("ends with a quote\""), std::string("\x7f del is not escaped")}) {
    auto s = encode_deliver({1, 2, 3, 4, 5, body, body});
    auto v = boost::json::parse(s).as_object();
    CHECK(v.at("body").as_string() == body);
    CHECK(v.at("nonce").as_string() == body);
  }
}
