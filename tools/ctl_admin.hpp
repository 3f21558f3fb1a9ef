// A client for one node's HTTP endpoints: the admin API (users, tokens, status) and the health
// probes. Each call is one short-lived connection with a deadline; no threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace agner::ctl {

/// The node could not be reached or did not answer in time (connection refused, timeout).
class unreachable_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// The node answered with an error (HTTP status >= 400) or an unreadable body.
class admin_error : public std::runtime_error {
public:
  admin_error(unsigned status, std::string code, const std::string& what)
      : std::runtime_error(what), status(status), code(std::move(code)) {}
  unsigned status;   ///< HTTP status, 0 when the body was unreadable
  std::string code;  ///< the node's "error" field ("not_found", "unauthorized", ...)
};

struct http_reply {
  unsigned status = 0;
  std::string body;
};

struct issued_token {
  uint64_t user = 0;
  std::string token;
  int64_t expires = 0;  ///< unix seconds
};

class admin_client {
public:
  /// A whole request (connect, write, read) must finish within this; the node answers admin
  /// calls from memory or one LMDB read, so anything slower means it is stuck or unreachable.
  static constexpr std::chrono::milliseconds request_timeout{5000};

  admin_client(std::string host, uint16_t port, std::string data_dir);

  /// POST /admin/users?name=NAME: the user's id (the existing one if the name is taken).
  uint64_t create_user(const std::string& name) const;
  /// POST /admin/users?prefix=P&start=K&count=N: ids of users PK..P(K+N-1), created where missing.
  std::vector<uint64_t> create_users(const std::string& prefix, uint32_t start, uint32_t count) const;
  /// POST /admin/tokens?name=NAME[&ttl_s=N].
  issued_token issue_token(const std::string& name, std::optional<int64_t> ttl_s = std::nullopt) const;
  /// GET /admin/status: the node's JSON body, unchanged.
  std::string status_json() const;

  /// One request. `admin` adds the bearer token read from DATA/admin.token (read at each call,
  /// so a node that was reset with a new data directory is followed). Throws unreachable_error.
  http_reply request(const std::string& method, const std::string& target, bool admin) const;

  const std::string& host() const noexcept { return host_; }
  uint16_t port() const noexcept { return port_; }
  std::string address() const;

private:
  std::string admin_token() const;
  /// Throws admin_error for a status >= 400, with the node's message.
  static void check(const http_reply& r);

  std::string host_;
  uint16_t port_;
  std::string data_dir_;
};

/// Percent-encodes a query parameter value (RFC 3986 unreserved characters pass through).
std::string url_encode(std::string_view s);

} // namespace agner::ctl
