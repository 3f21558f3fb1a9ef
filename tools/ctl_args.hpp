// agner-ctl's command line: global options (--node, --data) and one subcommand with its own
// options. Pure parsing, no I/O, so tests call it directly.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace agner::ctl {

/// Exit codes shared by every subcommand.
enum exit_code : int { exit_ok = 0, exit_failure = 1, exit_usage = 2 };

/// A command line that cannot be run; the message names the offending argument.
class usage_error : public std::invalid_argument {
public:
  using std::invalid_argument::invalid_argument;
};

enum class command { none, user_add, token, status, chat };

/// A user or device name: what the admin API and the protocol accept (1 to 64 bytes).
inline constexpr size_t name_bytes_max = 64;

struct ctl_args {
  std::string node_host = "127.0.0.1";
  uint16_t node_port = 8080;
  /// The node's data directory: admin.token is read from here, chat positions are kept here.
  /// The default matches agner-node's default store.dir when both run from the repo root.
  std::string data_dir = "./data";

  command cmd = command::none;
  bool help = false;             ///< --help: print the help of `cmd` (or the overview) and exit 0

  std::string name;              ///< user add NAME, token NAME
  std::optional<int64_t> ttl_s;  ///< token --ttl-s N

  std::string as;                ///< chat --as NAME
  std::string to;                ///< chat --to NAME
  std::string device = "terminal";
};

/// Parses the arguments after the program name. Global options may appear before or after the
/// subcommand; `--key value` and `--key=value` are both accepted. Throws usage_error.
ctl_args parse_args(const std::vector<std::string>& args);

/// The help text of one subcommand, or the overview for command::none.
std::string help_text(command c);

/// Splits "HOST:PORT" ("[::1]:8080" for IPv6). Throws usage_error.
std::pair<std::string, uint16_t> parse_host_port(std::string_view s);

} // namespace agner::ctl
