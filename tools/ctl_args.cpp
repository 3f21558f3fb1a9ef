// agner-ctl's command line parser and help texts.
#include "tools/ctl_args.hpp"

#include <algorithm>
#include <charconv>
#include <tuple>

namespace agner::ctl {

namespace {

constexpr std::string_view global_help = R"(Global options (before or after the subcommand):
  --node HOST:PORT   the node's HTTP address (default 127.0.0.1:8080)
  --data DIR         the node's data directory, where admin.token is (default ./data)
  -h, --help         this help
)";

/// Parses a whole decimal number in [min, max]; nullopt otherwise.
std::optional<int64_t> parse_int(std::string_view s, int64_t min, int64_t max) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || v < min || v > max)
    return std::nullopt;
  return v;
}

void check_name(std::string_view what, const std::string& v) {
  if (v.empty() || v.size() > name_bytes_max)
    throw usage_error(std::string(what) + ": 1 to 64 bytes");
}

/// The options one subcommand takes, besides the global ones.
std::vector<std::string_view> options_of(command c) {
  switch (c) {
  case command::token: return {"--ttl-s"};
  case command::chat: return {"--as", "--to", "--device"};
  default: return {};
  }
}

} // namespace

std::pair<std::string, uint16_t> parse_host_port(std::string_view s) {
  auto colon = s.rfind(':');
  if (colon == std::string_view::npos || colon == 0)
    throw usage_error("--node: expected HOST:PORT, got '" + std::string(s) + "'");
  auto host = s.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  auto port = parse_int(s.substr(colon + 1), 1, 65535);
  if (!port)
    throw usage_error("--node: bad port in '" + std::string(s) + "' (1 to 65535)");
  return {std::string(host), static_cast<uint16_t>(*port)};
}

ctl_args parse_args(const std::vector<std::string>& args) {
  ctl_args out;
  std::vector<std::string> positional;
  std::vector<std::pair<std::string, std::string>> options; // subcommand options, checked below
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view a = args[i];
    if (a == "-h" || a == "--help") {
      out.help = true;
      continue;
    }
    if (!a.starts_with("--") || a == "--") {
      if (a.starts_with("-") && a != "-")
        throw usage_error("unknown option '" + std::string(a) + "'");
      positional.emplace_back(a);
      continue;
    }
    std::string key(a), value;
    if (auto eq = a.find('='); eq != std::string_view::npos) {
      key = std::string(a.substr(0, eq));
      value = std::string(a.substr(eq + 1));
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      throw usage_error(key + " needs a value");
    }
    if (key == "--node") {
      std::tie(out.node_host, out.node_port) = parse_host_port(value);
    } else if (key == "--data") {
      if (value.empty())
        throw usage_error("--data: empty directory");
      out.data_dir = value;
    } else {
      options.emplace_back(key, value);
    }
  }

  if (positional.empty()) {
    if (!out.help)
      throw usage_error("no subcommand (user add, token, status, chat)");
    if (!options.empty())
      throw usage_error("unknown option '" + options.front().first + "'");
    return out;
  }
  const auto& sub = positional.front();
  size_t operands = 0; // positional arguments after the subcommand word(s)
  if (sub == "user") {
    if (positional.size() < 2) {
      if (!out.help)
        throw usage_error("user: expected 'user add NAME'");
      out.cmd = command::user_add;
      return out;
    }
    if (positional[1] != "add")
      throw usage_error("user: unknown action '" + positional[1] + "' (expected 'user add NAME')");
    out.cmd = command::user_add;
    operands = 2;
  } else if (sub == "token") {
    out.cmd = command::token;
    operands = 1;
  } else if (sub == "status") {
    out.cmd = command::status;
    operands = 1;
  } else if (sub == "chat") {
    out.cmd = command::chat;
    operands = 1;
  } else {
    throw usage_error("unknown subcommand '" + sub + "' (user add, token, status, chat)");
  }

  auto allowed = options_of(out.cmd);
  for (auto& [k, v] : options)
    if (std::find(allowed.begin(), allowed.end(), k) == allowed.end())
      throw usage_error("unknown option '" + k + "' for '" + sub + "'");
  if (out.help)
    return out;

  std::vector<std::string> rest(positional.begin() + static_cast<std::ptrdiff_t>(operands), positional.end());
  switch (out.cmd) {
  case command::user_add:
  case command::token:
    if (rest.size() != 1)
      throw usage_error(sub + (out.cmd == command::user_add ? " add" : "") + ": expected exactly one NAME");
    out.name = rest.front();
    check_name("NAME", out.name);
    for (auto& [k, v] : options) {
      // --ttl-s is the only option left here (options_of); the admin API caps it at 10 years.
      auto ttl = parse_int(v, 1, int64_t{10} * 365 * 24 * 3600 - 1);
      if (!ttl)
        throw usage_error("--ttl-s: expected seconds, 1 to 315359999, got '" + v + "'");
      out.ttl_s = *ttl;
    }
    break;
  case command::status:
    if (!rest.empty())
      throw usage_error("status: unexpected argument '" + rest.front() + "'");
    break;
  case command::chat:
    if (!rest.empty())
      throw usage_error("chat: unexpected argument '" + rest.front() + "'");
    for (auto& [k, v] : options)
      (k == "--as" ? out.as : k == "--to" ? out.to : out.device) = v;
    if (out.as.empty() || out.to.empty())
      throw usage_error("chat: --as NAME and --to NAME are required");
    check_name("--as", out.as);
    check_name("--to", out.to);
    check_name("--device", out.device);
    break;
  case command::none: break;
  }
  return out;
}

std::string help_text(command c) {
  std::string s;
  switch (c) {
  case command::none:
    s = R"(agner-ctl: operate an agner chat node through its admin API, or chat from a terminal.

Usage: agner-ctl [--node HOST:PORT] [--data DIR] SUBCOMMAND ...

Subcommands:
  user add NAME                     create a user (idempotent); prints its id
  token NAME [--ttl-s N]            issue a token for a user; prints it
  status                            the node's health, readiness and admin status
  chat --as NAME --to NAME          chat from this terminal (creates both users if missing)

`agner-ctl SUBCOMMAND --help` describes one subcommand. Exit codes: 0 ok, 1 failure, 2 usage.
)";
    break;
  case command::user_add:
    s = R"(Usage: agner-ctl [global options] user add NAME

Creates the user NAME (1 to 64 bytes) and prints its id. A name that exists already prints the
existing id, so running it twice is harmless.
)";
    break;
  case command::token:
    s = R"(Usage: agner-ctl [global options] token NAME [--ttl-s N]

Prints a WebSocket token for the existing user NAME (for identify, see docs/protocol.md), valid
for N seconds (default: the node's auth.token_ttl_s).
)";
    break;
  case command::status:
    s = R"(Usage: agner-ctl [global options] status

Prints the node's /healthz, /readyz and /admin/status. Exit code 0 when the node is healthy and
ready, 1 when it is unreachable, not ready or refuses the admin token.
)";
    break;
  case command::chat:
    s = R"(Usage: agner-ctl [global options] chat --as NAME --to NAME [--device DEVICE]

Creates both users if missing, connects as --as over WebSocket and chats with --to:
  - every line typed is sent to --to (kept and retried after a reconnect until it is stored);
  - every message received is printed as "[HH:MM:SS] name: body" ("you" for your own);
  - the connection comes back by itself after a node restart;
  - end of input (Ctrl-D) exits once every typed line is stored.
--device names this client among the user's devices (default "terminal"). The last position
seen is kept in DATA/ctl-NAME-DEVICE.pos, so a restarted client shows only new messages.
)";
    break;
  }
  return s + "\n" + std::string(global_help);
}

} // namespace agner::ctl
