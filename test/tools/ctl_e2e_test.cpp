// agner-ctl end to end: a real agner-node on 127.0.0.1 (port 0, or a free port when a test
// restarts it), the real agner-ctl binary, pipes for stdin and stdout. Every wait is bounded.
#include "test/tools/child_process.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <arpa/inet.h>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <netinet/in.h>
#include <sstream>
#include <sys/socket.h>
#include <unistd.h>

using agner::test::child_process;
using namespace std::chrono_literals;

namespace {

/// Sanitized binaries start slowly; a node that is not ready by then is broken.
constexpr auto node_start_timeout = 20s;
/// One message through the node and back out, including a reconnect's backoff (at most 5 s).
constexpr auto message_timeout = 15s;
constexpr auto exit_timeout = 15s;

class temp_dir {
public:
  temp_dir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = fmt::format("{}/agner-ctl-XXXXXX", base ? base : "/tmp");
    if (!::mkdtemp(tmpl.data()))
      throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const noexcept { return path_; }

private:
  std::string path_;
};

/// A port nothing listens on right now (bound, then released).
uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string read_file(const std::string& path) {
  std::ifstream in{path};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t count(const std::string& haystack, std::string_view needle) {
  size_t n = 0;
  for (auto p = haystack.find(needle); p != std::string::npos; p = haystack.find(needle, p + 1))
    ++n;
  return n;
}

/// An agner-node with its own data directory; killed at scope exit if still running.
class test_node {
public:
  explicit test_node(const std::string& data_dir, uint16_t port = 0) : data_dir_(data_dir), log_(data_dir + ".log") {
    start(port);
  }

  void start(uint16_t port) {
    std::error_code ec;
    std::filesystem::remove(log_, ec);
    proc_.emplace(std::vector<std::string>{AGNER_NODE_PATH, fmt::format("--http.port={}", port),
                                           "--http.host=127.0.0.1", "--store.dir=" + data_dir_},
                  log_);
    // The node logs "chat node ready on 127.0.0.1:PORT" once it accepts connections.
    constexpr std::string_view marker = "chat node ready on 127.0.0.1:";
    std::string log;
    bool ready = proc_->wait_until(
      [&] {
        log = read_file(log_);
        return log.find(marker) != std::string::npos;
      },
      node_start_timeout);
    INFO("node log: " << log);
    REQUIRE(ready);
    port_ = static_cast<uint16_t>(std::stoi(log.substr(log.find(marker) + marker.size())));
    REQUIRE(port_ != 0);
  }

  /// SIGTERM, the orderly stop; returns the exit code.
  std::optional<int> stop() {
    proc_->signal(SIGTERM);
    return proc_->wait_exit(exit_timeout);
  }

  std::string address() const { return fmt::format("127.0.0.1:{}", port_); }
  uint16_t port() const noexcept { return port_; }
  std::string log() const { return read_file(log_); }

  /// agner-ctl's argv for this node: the global options, then `args`.
  std::vector<std::string> ctl(std::vector<std::string> args) const {
    std::vector<std::string> argv{AGNER_CTL_PATH, "--node", address(), "--data", data_dir_};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }

private:
  std::string data_dir_;
  std::string log_;
  uint16_t port_ = 0;
  std::optional<child_process> proc_;
};

/// Waits until `p`'s stdout holds `text`, with both outputs in the failure message.
void expect_output(child_process& p, std::string_view text, std::string_view who) {
  bool seen = p.wait_until([&] { return p.out().find(text) != std::string::npos; }, message_timeout);
  INFO(who << " stdout: " << p.out());
  INFO(who << " stderr: " << p.err());
  REQUIRE(seen);
}

void expect_clean_exit(child_process& p, std::string_view who) {
  p.close_stdin();
  auto code = p.wait_exit(exit_timeout);
  INFO(who << " stdout: " << p.out());
  INFO(who << " stderr: " << p.err());
  REQUIRE(code.has_value());
  CHECK(*code == 0);
}

} // namespace

TEST_CASE("agner-ctl rejects bad usage with exit code 2 and explains itself") {
  auto r = agner::test::run({AGNER_CTL_PATH, "frobnicate"});
  REQUIRE(r.code);
  CHECK(*r.code == 2);
  CHECK(r.err.find("unknown subcommand 'frobnicate'") != std::string::npos);

  r = agner::test::run({AGNER_CTL_PATH});
  CHECK(r.code == 2);
  r = agner::test::run({AGNER_CTL_PATH, "user", "add"});
  CHECK(r.code == 2);
  r = agner::test::run({AGNER_CTL_PATH, "chat", "--as", "alice"});
  CHECK(r.code == 2);
  CHECK(r.err.find("--to") != std::string::npos);
  r = agner::test::run({AGNER_CTL_PATH, "--node", "localhost", "status"});
  CHECK(r.code == 2);

  r = agner::test::run({AGNER_CTL_PATH, "--help"});
  CHECK(r.code == 0);
  CHECK(r.out.find("Subcommands:") != std::string::npos);
  r = agner::test::run({AGNER_CTL_PATH, "chat", "--help"});
  CHECK(r.code == 0);
  CHECK(r.out.find("--as NAME --to NAME") != std::string::npos);
}

TEST_CASE("agner-ctl status fails when no node listens") {
  temp_dir dir;
  auto r = agner::test::run({AGNER_CTL_PATH, "--node", fmt::format("127.0.0.1:{}", free_port()), "--data", dir.path(), "status"});
  INFO("stderr: " << r.err);
  REQUIRE(r.code);
  CHECK(*r.code == 1);
  CHECK(r.err.find("cannot reach the node") != std::string::npos);

  // The chat client says the same instead of waiting forever for a node that is not there.
  r = agner::test::run({AGNER_CTL_PATH, "--node", fmt::format("127.0.0.1:{}", free_port()), "--data", dir.path(), "chat",
                        "--as", "alice", "--to", "bob"});
  CHECK(r.code == 1);
}

TEST_CASE("agner-ctl creates users, issues tokens and reports a live node's status") {
  temp_dir dir;
  test_node node{dir.path() + "/data"};

  auto alice = agner::test::run(node.ctl({"user", "add", "alice"}));
  INFO("stderr: " << alice.err);
  REQUIRE(alice.code == 0);
  REQUIRE(alice.out.size() > 1);
  CHECK(alice.out.find_first_not_of("0123456789\n") == std::string::npos);
  auto again = agner::test::run(node.ctl({"user", "add", "alice"}));
  CHECK(again.code == 0);
  CHECK(again.out == alice.out);
  auto bob = agner::test::run(node.ctl({"user", "add", "bob"}));
  CHECK(bob.code == 0);
  CHECK(bob.out != alice.out);

  auto token = agner::test::run(node.ctl({"token", "alice", "--ttl-s", "600"}));
  CHECK(token.code == 0);
  CHECK(token.out.starts_with("v1." + alice.out.substr(0, alice.out.size() - 1) + "."));
  auto nobody = agner::test::run(node.ctl({"token", "nobody"}));
  CHECK(nobody.code == 1);
  CHECK(nobody.err.find("no user named 'nobody'") != std::string::npos);

  auto status = agner::test::run(node.ctl({"status"}));
  INFO("status: " << status.out << status.err);
  CHECK(status.code == 0);
  CHECK(status.out.find("ready (200)") != std::string::npos);
  CHECK(status.out.find("connections") != std::string::npos);

  // The wrong data directory: health still shows, the admin call cannot authenticate.
  auto wrong = agner::test::run({AGNER_CTL_PATH, "--node", node.address(), "--data", dir.path(), "status"});
  CHECK(wrong.code == 1);
  CHECK(wrong.err.find("admin.token") != std::string::npos);
}

TEST_CASE("two terminal chats exchange messages and a restarted one shows only new ones") {
  temp_dir dir;
  test_node node{dir.path() + "/data"};

  child_process bob{node.ctl({"chat", "--as", "bob", "--to", "alice"})};
  child_process alice{node.ctl({"chat", "--as", "alice", "--to", "bob"})};
  // No need to wait for the connections: a line typed early is kept until stored, and a
  // first-time terminal is shown what the node still holds for it.
  alice.write_stdin("hello bob\n");
  expect_output(bob, "] alice: hello bob\n", "bob");
  expect_output(alice, "] you: hello bob\n", "alice");
  bob.write_stdin("hi alice\n");
  expect_output(alice, "] bob: hi alice\n", "alice");
  expect_output(bob, "] you: hi alice\n", "bob");
  expect_clean_exit(alice, "alice");
  expect_clean_exit(bob, "bob");
  CHECK(count(bob.out(), "alice: hello bob") == 1);

  // A restarted client resumes from its position file: only what is new is shown.
  child_process alice2{node.ctl({"chat", "--as", "alice", "--to", "bob"})};
  alice2.write_stdin("still there?\n");
  expect_output(alice2, "] you: still there?\n", "alice again");
  expect_clean_exit(alice2, "alice again");
  CHECK(alice2.out().find("hello bob") == std::string::npos);
  CHECK(alice2.out().find("hi alice") == std::string::npos);
}

TEST_CASE("a terminal chat rides out a node restart and stores a line typed meanwhile once") {
  temp_dir dir;
  test_node node{dir.path() + "/data", free_port()};

  child_process bob{node.ctl({"chat", "--as", "bob", "--to", "alice"})};
  child_process alice{node.ctl({"chat", "--as", "alice", "--to", "bob"})};
  alice.write_stdin("before\n");
  expect_output(bob, "] alice: before\n", "bob");

  auto code = node.stop();
  INFO("node log: " << node.log());
  REQUIRE(code == 0);
  bool noticed = alice.wait_until([&] { return alice.err().find("reconnecting") != std::string::npos; }, message_timeout);
  INFO("alice stderr: " << alice.err());
  CHECK(noticed);
  alice.write_stdin("during\n");

  node.start(node.port());
  expect_output(bob, "] alice: during\n", "bob");
  expect_clean_exit(alice, "alice");
  expect_clean_exit(bob, "bob");
  CHECK(count(bob.out(), "alice: during") == 1);
  CHECK(count(bob.out(), "alice: before") == 1);
}
