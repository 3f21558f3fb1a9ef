// A small HTTP/1.1 server on the node's I/O threads: routes for /healthz, /readyz, /metrics and
// whatever a service adds, plus a hook that hands WebSocket upgrades to their owner.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>

namespace agner {

class node;

using http_request = boost::beast::http::request<boost::beast::http::string_body>;
using http_response = boost::beast::http::response<boost::beast::http::string_body>;

struct http_options {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;
  /// Largest request body accepted: API posts are small; anything bigger is an error.
  uint32_t body_bytes_max = 64 * 1024;
  /// A request must arrive whole within this time (slowloris protection).
  std::chrono::milliseconds request_timeout{10'000};
  /// Idle keep-alive connections are closed after this.
  std::chrono::milliseconds idle_timeout{30'000};
};

class http_server {
public:
  using handler = std::function<http_response(const http_request&)>;
  /// Takes over a connection whose request asked for a WebSocket upgrade. Runs on the
  /// connection's I/O thread; the stream's own timer is cancelled before the call.
  using upgrade_handler = std::function<void(boost::beast::tcp_stream&&, http_request&&)>;

  http_server(node& n, http_options opts);
  ~http_server();

  /// Adds a GET (or any-method, if `any_method`) route for an exact path. Before listen().
  void route(std::string path, handler h, bool any_method = false);
  void on_upgrade(upgrade_handler h);

  /// Binds and starts accepting. Throws std::system_error if the address cannot be bound.
  void listen();
  /// The bound port (useful with port 0).
  uint16_t port() const;
  /// Stops accepting new connections (existing ones finish their current request).
  void close();

  /// Ready flag for /readyz: false while starting or draining.
  void set_ready(bool r) noexcept;

  struct impl;

private:
  std::shared_ptr<impl> impl_;
};

/// A plain-text response with the given status.
http_response text_response(const http_request& req, boost::beast::http::status st, std::string body,
                            std::string content_type = "text/plain; charset=utf-8");

} // namespace agner
