// The chat client's pure helpers: batched server frames, the position file, printed lines,
// query encoding for the admin API.
#include "tools/ctl_chat.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <unistd.h>

using namespace agner::ctl;

TEST_CASE("a server frame splits into its newline-separated JSON objects") {
  auto parts = split_frames("{\"op\":\"ready\"}\n{\"op\":\"deliver\"}\n\n{\"op\":\"stored\"}");
  REQUIRE(parts.size() == 3);
  CHECK(parts[0] == "{\"op\":\"ready\"}");
  CHECK(parts[1] == "{\"op\":\"deliver\"}");
  CHECK(parts[2] == "{\"op\":\"stored\"}");
  CHECK(split_frames("{\"op\":\"hello\"}").size() == 1);
  CHECK(split_frames("{\"a\":1}\r\n").front() == "{\"a\":1}");
  CHECK(split_frames("").empty());
  CHECK(split_frames("\n\n").empty());
}

TEST_CASE("the position file round-trips and a missing or damaged one reads as none") {
  std::string dir = fmt::format("{}/agner-ctl-pos-{}", std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp", ::getpid());
  std::filesystem::create_directories(dir);
  auto path = position_path(dir, "alice", "terminal");
  CHECK(path == dir + "/ctl-alice-terminal.pos");
  CHECK_FALSE(load_position(path).has_value());
  REQUIRE(save_position(path, 42));
  CHECK(load_position(path) == 42u);
  REQUIRE(save_position(path, 18446744073709551615ull));
  CHECK(load_position(path) == 18446744073709551615ull);
  std::ofstream{path} << "garbage\n";
  CHECK_FALSE(load_position(path).has_value());
  CHECK_FALSE(save_position(dir + "/no/such/dir/x.pos", 1));
  std::filesystem::remove_all(dir);
}

TEST_CASE("names that are not file-safe are flattened in the position file name") {
  CHECK(position_path("d", "../evil", "a b") == "d/ctl-.._evil-a_b.pos");
}

TEST_CASE("a message prints as [HH:MM:SS] who: body") {
  auto line = format_message(1'767'225'600'000, "bob", "hi there");
  REQUIRE(line.size() == 24);
  CHECK(line.ends_with("] bob: hi there"));
  for (size_t i : {1, 2, 4, 5, 7, 8})
    CHECK(std::isdigit(static_cast<unsigned char>(line[i])));
  CHECK(line.substr(0, 1) == "[");
  CHECK(line[3] == ':');
  CHECK(line[6] == ':');
}

TEST_CASE("query values are percent-encoded for the admin API") {
  CHECK(url_encode("alice") == "alice");
  CHECK(url_encode("a b&c=d") == "a%20b%26c%3Dd");
  CHECK(url_encode("ü") == "%C3%BC");
  CHECK(url_encode("A-z_0.9~") == "A-z_0.9~");
}

TEST_CASE("only well-formed UTF-8 lines are sent (the node closes on anything else)") {
  CHECK(is_valid_utf8("hello"));
  CHECK(is_valid_utf8(""));
  CHECK(is_valid_utf8("gr\xC3\xBC\xC3\x9F dich \xE2\x82\xAC \xF0\x9F\x98\x80"));
  CHECK_FALSE(is_valid_utf8("\xC3"));             // truncated
  CHECK_FALSE(is_valid_utf8("a\xE2\x82"));        // truncated at the end
  CHECK_FALSE(is_valid_utf8("\xC0\xAF"));         // overlong '/'
  CHECK_FALSE(is_valid_utf8("\xED\xA0\x80"));     // a UTF-16 surrogate
  CHECK_FALSE(is_valid_utf8("\xF4\x90\x80\x80")); // above U+10FFFF
  CHECK_FALSE(is_valid_utf8("\xFF"));
  CHECK_FALSE(is_valid_utf8("\x80"));
}
