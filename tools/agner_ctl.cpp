// agner-ctl: the operator's tool. Users, tokens and a node's status through the admin API, and
// a terminal chat client. Thin main: command line -> admin_client / run_chat.
#include "tools/ctl_admin.hpp"
#include "tools/ctl_args.hpp"
#include "tools/ctl_chat.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <fmt/format.h>

#include <csignal>

namespace ctl = agner::ctl;
namespace json = boost::json;

namespace {

/// The body of a probe (/healthz says "ok", /readyz "ready" or "not ready") without its newline.
std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r'))
    s.pop_back();
  return s;
}

void row(std::string_view label, std::string_view value) { fmt::print("{:<14}{}\n", label, value); }

std::string number(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  if (!v)
    return "?";
  if (v->is_bool())
    return v->get_bool() ? "true" : "false";
  return json::serialize(*v);
}

int status(const ctl::admin_client& admin) {
  // Health first: it needs no admin token, so it works even with the wrong --data.
  ctl::http_reply health, ready;
  try {
    health = admin.request("GET", "/healthz", false);
    ready = admin.request("GET", "/readyz", false);
  } catch (const ctl::unreachable_error& e) {
    fmt::print(stderr, "agner-ctl: {}\n", e.what());
    return ctl::exit_failure;
  }
  bool ok = health.status == 200 && ready.status == 200;
  row("node", admin.address());
  row("healthz", fmt::format("{} ({})", trimmed(health.body), health.status));
  row("readyz", fmt::format("{} ({})", trimmed(ready.body), ready.status));
  std::fflush(stdout);
  try {
    auto v = json::parse(admin.status_json());
    auto& o = v.as_object();
    bool failed = o.contains("store_failed") && o.at("store_failed").is_bool() && o.at("store_failed").get_bool();
    row("node id", number(o, "node"));
    row("connections", number(o, "connections"));
    row("log position", number(o, "log_position"));
    row("store", failed ? "FAILED (the node stops taking writes)" : "ok");
    row("restarts", fmt::format("users {}, conversations {}", number(o, "users_restarts"), number(o, "conversations_restarts")));
    ok = ok && !failed;
  } catch (const std::exception& e) {
    fmt::print(stderr, "agner-ctl: admin status: {}\n", e.what());
    return ctl::exit_failure;
  }
  return ok ? ctl::exit_ok : ctl::exit_failure;
}

int run(const ctl::ctl_args& a) {
  ctl::admin_client admin{a.node_host, a.node_port, a.data_dir};
  switch (a.cmd) {
  case ctl::command::user_add:
    fmt::print("{}\n", admin.create_user(a.name));
    return ctl::exit_ok;
  case ctl::command::token:
    try {
      fmt::print("{}\n", admin.issue_token(a.name, a.ttl_s).token);
    } catch (const ctl::admin_error& e) {
      if (e.code != "not_found")
        throw;
      fmt::print(stderr, "agner-ctl: no user named '{}' (create it with: agner-ctl user add {})\n", a.name, a.name);
      return ctl::exit_failure;
    }
    return ctl::exit_ok;
  case ctl::command::status:
    return status(admin);
  case ctl::command::chat:
    return ctl::run_chat(admin, {a.as, a.to, a.device, a.data_dir});
  case ctl::command::none:
    break;
  }
  return ctl::exit_usage;
}

} // namespace

int main(int argc, char** argv) {
  ctl::ctl_args a;
  try {
    a = ctl::parse_args(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const ctl::usage_error& e) {
    fmt::print(stderr, "agner-ctl: {}\nTry 'agner-ctl --help'.\n", e.what());
    return ctl::exit_usage;
  }
  if (a.help) {
    fmt::print("{}", ctl::help_text(a.cmd));
    return ctl::exit_ok;
  }
  // A node that goes away mid-write must surface as an error code, not kill the process.
  std::signal(SIGPIPE, SIG_IGN);
  try {
    return run(a);
  } catch (const std::exception& e) {
    fmt::print(stderr, "agner-ctl: {}\n", e.what());
    return ctl::exit_failure;
  }
}
