// The admin API client: one Beast HTTP request per call, run on a private io_context so that a
// deadline covers resolve, connect, write and read alike.
#include "tools/ctl_admin.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <fmt/format.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>

namespace agner::ctl {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using tcp = net::ip::tcp;

namespace {

/// Admin replies are a few hundred bytes; a bigger body is not from an agner node.
constexpr uint32_t reply_bytes_max = 1 << 20;

/// A string field of a JSON object, or "" when absent or not a string.
std::string field(const json::value& v, std::string_view key) {
  if (auto* o = v.if_object())
    if (auto* f = o->if_contains(key); f && f->is_string())
      return std::string(f->get_string());
  return {};
}

json::value parse_body(const http_reply& r) {
  boost::system::error_code ec;
  auto v = json::parse(r.body, ec);
  if (ec || !v.is_object())
    throw admin_error(0, "bad_reply", fmt::format("unreadable reply from the node: {}", r.body.substr(0, 200)));
  return v;
}

uint64_t parse_u64(const std::string& s, std::string_view what) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc{} || end != s.data() + s.size())
    throw admin_error(0, "bad_reply", fmt::format("the node's reply has no valid {}", what));
  return v;
}

} // namespace

std::string url_encode(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~')
      out += static_cast<char>(c);
    else
      fmt::format_to(std::back_inserter(out), "%{:02X}", c);
  }
  return out;
}

admin_client::admin_client(std::string host, uint16_t port, std::string data_dir)
    : host_(std::move(host)), port_(port), data_dir_(std::move(data_dir)) {}

std::string admin_client::address() const {
  return host_.find(':') != std::string::npos ? fmt::format("[{}]:{}", host_, port_) : fmt::format("{}:{}", host_, port_);
}

std::string admin_client::admin_token() const {
  auto path = data_dir_ + "/admin.token";
  std::ifstream in{path, std::ios::binary};
  if (!in)
    throw std::runtime_error(fmt::format("cannot read {}: {} (the node writes it at its first start; pass the node's "
                                         "store.dir with --data DIR)",
                                         path, std::strerror(errno)));
  std::stringstream ss;
  ss << in.rdbuf();
  auto t = ss.str();
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' '))
    t.pop_back();
  if (t.empty())
    throw std::runtime_error(fmt::format("{} is empty", path));
  return t;
}

http_reply admin_client::request(const std::string& method, const std::string& target, bool admin) const {
  http::request<http::string_body> req{http::string_to_verb(method), target, 11};
  req.set(http::field::host, address());
  req.set(http::field::user_agent, "agner-ctl");
  if (admin)
    req.set(http::field::authorization, "Bearer " + admin_token());
  req.prepare_payload();

  net::io_context ioc;
  tcp::resolver resolver{ioc};
  beast::tcp_stream stream{ioc};
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(reply_bytes_max);
  boost::system::error_code failure;
  std::string step;
  auto fail = [&](std::string_view what, boost::system::error_code ec) {
    failure = ec;
    step = what;
  };

  stream.expires_after(request_timeout);
  resolver.async_resolve(host_, std::to_string(port_), [&](auto ec, tcp::resolver::results_type results) {
    if (ec)
      return fail("resolve", ec);
    stream.async_connect(results, [&](auto ec, auto) {
      if (ec)
        return fail("connect", ec);
      http::async_write(stream, req, [&](auto ec, size_t) {
        if (ec)
          return fail("write", ec);
        http::async_read(stream, buffer, parser, [&](auto ec, size_t) {
          if (ec)
            return fail("read", ec);
          beast::error_code ignored;
          stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
        });
      });
    });
  });
  // The resolver has no deadline of its own; a stuck lookup is bounded by run_for.
  ioc.run_for(request_timeout + std::chrono::seconds(1));
  if (!ioc.stopped() && !failure)
    failure = net::error::timed_out;
  if (failure) {
    auto why = failure == beast::error::timeout || failure == net::error::timed_out ? std::string("timed out")
                                                                                  : failure.message();
    throw unreachable_error(fmt::format("cannot reach the node at {} ({}: {})", address(), step.empty() ? "request" : step, why));
  }
  auto& res = parser.get();
  return {res.result_int(), res.body()};
}

void admin_client::check(const http_reply& r) {
  if (r.status < 400)
    return;
  boost::system::error_code ec;
  auto v = json::parse(r.body, ec);
  std::string code = ec ? "" : field(v, "error");
  std::string message = ec ? r.body : field(v, "message");
  while (!message.empty() && message.back() == '\n')
    message.pop_back();
  throw admin_error(r.status, code, fmt::format("the node answered {}: {}", r.status, message.empty() ? code : message));
}

uint64_t admin_client::create_user(const std::string& name) const {
  auto r = request("POST", "/admin/users?name=" + url_encode(name), true);
  check(r);
  return parse_u64(field(parse_body(r), "user"), "user id");
}

std::vector<uint64_t> admin_client::create_users(const std::string& prefix, uint32_t start, uint32_t count) const {
  auto r = request("POST", fmt::format("/admin/users?prefix={}&start={}&count={}", url_encode(prefix), start, count), true);
  check(r);
  auto v = parse_body(r);
  auto* users = v.as_object().if_contains("users");
  if (!users || !users->is_array() || users->as_array().size() != count)
    throw admin_error(0, "bad_reply", "the node's reply does not list the users");
  std::vector<uint64_t> ids;
  ids.reserve(count);
  for (auto& u : users->as_array())
    ids.push_back(parse_u64(u.is_string() ? std::string(u.get_string()) : std::string(), "user id"));
  return ids;
}

issued_token admin_client::issue_token(const std::string& name, std::optional<int64_t> ttl_s) const {
  auto target = "/admin/tokens?name=" + url_encode(name);
  if (ttl_s)
    target += fmt::format("&ttl_s={}", *ttl_s);
  auto r = request("POST", target, true);
  check(r);
  auto v = parse_body(r);
  issued_token t;
  t.user = parse_u64(field(v, "user"), "user id");
  t.token = field(v, "token");
  if (t.token.empty())
    throw admin_error(0, "bad_reply", "the node's reply has no token");
  if (auto* e = v.as_object().if_contains("expires"); e && e->is_int64())
    t.expires = e->get_int64();
  return t;
}

std::string admin_client::status_json() const {
  auto r = request("GET", "/admin/status", true);
  check(r);
  parse_body(r);
  return r.body;
}

} // namespace agner::ctl
