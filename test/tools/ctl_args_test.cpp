// agner-ctl's command line: subcommands, global options anywhere, and usage errors.
#include "tools/ctl_args.hpp"

#include <doctest/doctest.h>

using namespace agner::ctl;

TEST_CASE("global options have defaults matching a node started from the repo root") {
  auto a = parse_args({"status"});
  CHECK(a.cmd == command::status);
  CHECK(a.node_host == "127.0.0.1");
  CHECK(a.node_port == 8080);
  CHECK(a.data_dir == "./data");
}

TEST_CASE("global options may come before or after the subcommand, spaced or with '='") {
  auto a = parse_args({"--node", "10.0.0.2:9000", "user", "add", "alice", "--data=/srv/agner"});
  CHECK(a.cmd == command::user_add);
  CHECK(a.name == "alice");
  CHECK(a.node_host == "10.0.0.2");
  CHECK(a.node_port == 9000);
  CHECK(a.data_dir == "/srv/agner");
  auto b = parse_args({"--node=[::1]:8081", "status"});
  CHECK(b.node_host == "::1");
  CHECK(b.node_port == 8081);
}

TEST_CASE("token takes a name and an optional lifetime") {
  auto a = parse_args({"token", "bob", "--ttl-s", "3600"});
  CHECK(a.cmd == command::token);
  CHECK(a.name == "bob");
  CHECK(a.ttl_s == 3600);
  CHECK_FALSE(parse_args({"token", "bob"}).ttl_s.has_value());
  CHECK_THROWS_AS(parse_args({"token", "bob", "--ttl-s", "0"}), usage_error);
  CHECK_THROWS_AS(parse_args({"token", "bob", "--ttl-s", "soon"}), usage_error);
  CHECK_THROWS_AS(parse_args({"token"}), usage_error);
  CHECK_THROWS_AS(parse_args({"token", "a", "b"}), usage_error);
}

TEST_CASE("chat needs --as and --to and defaults the device to terminal") {
  auto a = parse_args({"chat", "--as", "alice", "--to", "bob"});
  CHECK(a.cmd == command::chat);
  CHECK(a.as == "alice");
  CHECK(a.to == "bob");
  CHECK(a.device == "terminal");
  CHECK(parse_args({"chat", "--as", "a", "--to", "b", "--device", "laptop"}).device == "laptop");
  CHECK_THROWS_AS(parse_args({"chat", "--as", "alice"}), usage_error);
  CHECK_THROWS_AS(parse_args({"chat", "--to", "bob"}), usage_error);
  CHECK_THROWS_AS(parse_args({"chat", "--as", std::string(65, 'x'), "--to", "bob"}), usage_error);
}

TEST_CASE("unknown subcommands, actions and options are usage errors") {
  CHECK_THROWS_AS(parse_args({}), usage_error);
  CHECK_THROWS_AS(parse_args({"frobnicate"}), usage_error);
  CHECK_THROWS_AS(parse_args({"user", "remove", "alice"}), usage_error);
  CHECK_THROWS_AS(parse_args({"status", "--as", "alice"}), usage_error);
  CHECK_THROWS_AS(parse_args({"status", "-x"}), usage_error);
  CHECK_THROWS_AS(parse_args({"status", "extra"}), usage_error);
  CHECK_THROWS_AS(parse_args({"--node", "localhost", "status"}), usage_error);
  CHECK_THROWS_AS(parse_args({"--node", "localhost:99999", "status"}), usage_error);
  CHECK_THROWS_AS(parse_args({"status", "--node"}), usage_error);
}

TEST_CASE("--help is accepted alone and after any subcommand") {
  auto a = parse_args({"--help"});
  CHECK(a.help);
  CHECK(a.cmd == command::none);
  auto b = parse_args({"chat", "--help"});
  CHECK(b.help);
  CHECK(b.cmd == command::chat);
  CHECK(parse_args({"user", "-h"}).cmd == command::user_add);
  CHECK(help_text(command::chat).find("--as NAME --to NAME") != std::string::npos);
  CHECK(help_text(command::none).find("user add NAME") != std::string::npos);
}
