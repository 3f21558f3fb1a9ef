// Configuration precedence (defaults < file < environment < flags) and rejection of bad input.
#include "runtime/config.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <map>
#include <unistd.h>

using namespace agner;

namespace {

struct fixture {
  std::string host = "127.0.0.1";
  uint32_t port = 8080;
  bool dev = false;
  int64_t window_ms = 5;
  std::string mode = "auto";
  config_schema schema;
  std::map<std::string, std::string> env;

  fixture() {
    schema.add("http.host", &host, "address");
    schema.add("http.port", &port, "port", 0, 65535);
    schema.add("dev.enabled", &dev, "development mode");
    schema.add("store.flush_window_ms", &window_ms, "flush window", 0, 10000);
    schema.add_choice("log.format", &mode, "format", {"auto", "json", "text"});
  }

  config_schema::outcome load(std::vector<std::string> args) {
    std::vector<std::string> names;
    for (auto& [k, v] : env)
      names.push_back(k);
    return schema.load(
      args,
      [this](const std::string& n) -> std::optional<std::string> {
        auto it = env.find(n);
        return it == env.end() ? std::nullopt : std::optional<std::string>(it->second);
      },
      names);
  }
};

std::string write_file(const std::string& text) {
  auto path = "/tmp/agner_config_test_" + std::to_string(::getpid()) + ".toml";
  std::ofstream(path) << text;
  return path;
}

} // namespace

TEST_CASE("defaults hold when nothing is given") {
  fixture f;
  f.load({});
  CHECK(f.port == 8080);
  CHECK(f.host == "127.0.0.1");
  CHECK_FALSE(f.dev);
}

TEST_CASE("a file overrides defaults, the environment overrides the file, flags override both") {
  fixture f;
  auto path = write_file("[http]\nport = 9000\nhost = \"127.0.0.2\"\n[store]\nflush_window_ms = 7\n");
  f.env["AGNER_HTTP_PORT"] = "9100";
  f.load({"--config", path, "--http.host=127.0.0.3"});
  CHECK(f.port == 9100);          // environment beat the file
  CHECK(f.host == "127.0.0.3");   // flag beat the file
  CHECK(f.window_ms == 7);        // file beat the default
  std::remove(path.c_str());
}

TEST_CASE("AGNER_CONFIG names the file when no --config flag is given") {
  fixture f;
  auto path = write_file("dev.enabled = true\n");
  f.env["AGNER_CONFIG"] = path;
  f.load({});
  CHECK(f.dev);
  std::remove(path.c_str());
}

TEST_CASE("a bare boolean flag means true") {
  fixture f;
  f.load({"--dev.enabled", "--http.port", "1"});
  CHECK(f.dev);
  CHECK(f.port == 1);
}

TEST_CASE("unknown keys are rejected wherever they come from") {
  fixture f;
  CHECK_THROWS_WITH_AS(f.load({"--http.prot=1"}), doctest::Contains("unknown configuration key 'http.prot'"), config_error);
  auto path = write_file("[http]\nprot = 1\n");
  CHECK_THROWS_WITH_AS(f.load({"--config=" + path}), doctest::Contains("unknown configuration key 'http.prot'"), config_error);
  std::remove(path.c_str());
  fixture g;
  g.env.emplace("AGNER_HTTP_PROT", "1");
  CHECK_THROWS_WITH_AS(g.load({}), doctest::Contains("unknown variable AGNER_HTTP_PROT"), config_error);
}

TEST_CASE("bad values are rejected with the key and the source named, and change nothing") {
  fixture f;
  CHECK_THROWS_WITH_AS(f.load({"--http.port=70000"}), doctest::Contains("out of range"), config_error);
  CHECK(f.port == 8080);
  CHECK_THROWS_WITH_AS(f.load({"--http.port=12ab"}), doctest::Contains("not a valid number"), config_error);
  CHECK_THROWS_WITH_AS(f.load({"--dev.enabled=maybe"}), doctest::Contains("not a boolean"), config_error);
  CHECK_THROWS_WITH_AS(f.load({"--log.format=xml"}), doctest::Contains("not one of"), config_error);
  CHECK_THROWS_WITH_AS(f.load({"positional"}), doctest::Contains("unexpected argument"), config_error);
  CHECK_THROWS_WITH_AS(f.load({"--http.port"}), doctest::Contains("needs a value"), config_error);
  CHECK_THROWS_WITH_AS(f.load({"--config=/nonexistent/agner.toml"}), doctest::Contains("cannot read config file"), config_error);
  auto path = write_file("[http\nport = 1\n");
  CHECK_THROWS_WITH_AS(f.load({"--config=" + path}), doctest::Contains("line 1"), config_error);
  std::remove(path.c_str());
}

TEST_CASE("--help is reported and lists every key with its environment form") {
  fixture f;
  CHECK(f.load({"--help"}).help);
  auto h = f.schema.help("prog", "summary");
  CHECK(h.find("--http.port") != std::string::npos);
  CHECK(config_schema::env_name("store.flush_window_ms") == "AGNER_STORE_FLUSH_WINDOW_MS");
}
