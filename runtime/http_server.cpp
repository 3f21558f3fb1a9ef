#include "runtime/http_server.hpp"

#include "runtime/log.hpp"
#include "runtime/node.hpp"

#include <boost/asio/strand.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include <atomic>

namespace agner {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

struct http_server::impl : std::enable_shared_from_this<impl> {
  impl(node& n, http_options o) : nd(n), opts(std::move(o)), acceptor(n.io(0)) {}

  node& nd;
  http_options opts;
  tcp::acceptor acceptor;
  std::map<std::string, std::pair<handler, bool>> routes;
  upgrade_handler upgrade;
  std::atomic<bool> ready{false};
  std::atomic<size_t> next_io{0};
  metrics::counter* requests = nullptr;

  void do_accept() {
    auto& io = nd.io(next_io.fetch_add(1) % nd.io_thread_count());
    acceptor.async_accept(io, [self = shared_from_this()](beast::error_code ec, tcp::socket s) {
      self->on_accept(ec, std::move(s));
    });
  }

  void on_accept(beast::error_code ec, tcp::socket s);
  http_response dispatch(const http_request& req);
};

namespace {

// One HTTP connection: read a request, answer it, repeat while keep-alive.
class session : public std::enable_shared_from_this<session> {
public:
  session(std::shared_ptr<http_server::impl> srv, tcp::socket s) : srv_(std::move(srv)), stream_(std::move(s)) {}

  void do_read() {
    parser_.emplace();
    parser_->body_limit(srv_->opts.body_bytes_max);
    stream_.expires_after(srv_->opts.request_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

private:
  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == net::error::operation_aborted)
      return close();
    if (ec) {
      // Malformed or oversized request: answer 400/413 and close; nothing else happens.
      auto st = ec == http::error::body_limit ? http::status::payload_too_large : http::status::bad_request;
      http_request dummy;
      write(text_response(dummy, st, ec.message() + "\n"), true);
      return;
    }
    auto req = parser_->release();
    if (beast::websocket::is_upgrade(req) && srv_->upgrade) {
      stream_.expires_never();
      srv_->upgrade(std::move(stream_), std::move(req));
      return;
    }
    auto res = srv_->dispatch(req);
    write(std::move(res), !req.keep_alive());
  }

  void write(http_response res, bool close_after) {
    res.keep_alive(!close_after);
    res.prepare_payload();
    res_ = std::make_unique<http_response>(std::move(res));
    stream_.expires_after(srv_->opts.request_timeout);
    http::async_write(stream_, *res_, [self = shared_from_this(), close_after](beast::error_code ec, size_t) {
      if (ec || close_after)
        return self->close();
      self->res_.reset();
      self->do_read();
    });
  }

  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  }

  std::shared_ptr<http_server::impl> srv_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::unique_ptr<http_response> res_;
};

} // namespace

void http_server::impl::on_accept(beast::error_code ec, tcp::socket s) {
  if (ec == net::error::operation_aborted || !acceptor.is_open())
    return;
  if (!ec) {
    s.set_option(tcp::no_delay(true), ec);
    std::make_shared<session>(shared_from_this(), std::move(s))->do_read();
  } else {
    // EMFILE and friends: keep accepting; the error is counted in logs, not fatal.
    log::warn("http", "accept failed: {}", ec.message());
  }
  do_accept();
}

http_response http_server::impl::dispatch(const http_request& req) {
  if (requests)
    requests->inc();
  auto target = std::string(req.target());
  auto q = target.find('?');
  auto path = target.substr(0, q);
  auto it = routes.find(path);
  if (it == routes.end())
    return text_response(req, http::status::not_found, "not found\n");
  if (!it->second.second && req.method() != http::verb::get && req.method() != http::verb::head)
    return text_response(req, http::status::method_not_allowed, "method not allowed\n");
  try {
    return it->second.first(req);
  } catch (const std::exception& e) {
    log::error("http", "handler for {} failed: {}", path, e.what());
    return text_response(req, http::status::internal_server_error, "internal error\n");
  }
}

http_response text_response(const http_request& req, http::status st, std::string body, std::string content_type) {
  http_response res{st, req.version() ? req.version() : 11};
  res.set(http::field::server, "agner");
  res.set(http::field::content_type, content_type);
  res.body() = std::move(body);
  return res;
}

http_server::http_server(node& n, http_options opts) : impl_(std::make_shared<impl>(n, std::move(opts))) {
  impl_->requests = &n.metrics().make_counter("agner_http_requests_total", "HTTP requests answered");
  route("/healthz", [](const http_request& r) { return text_response(r, http::status::ok, "ok\n"); });
  route("/readyz", [this](const http_request& r) {
    return impl_->ready.load() ? text_response(r, http::status::ok, "ready\n")
                               : text_response(r, http::status::service_unavailable, "not ready\n");
  });
  route("/metrics", [&n](const http_request& r) {
    return text_response(r, http::status::ok, n.metrics().render(), "text/plain; version=0.0.4; charset=utf-8");
  });
}

http_server::~http_server() { close(); }

void http_server::route(std::string path, handler h, bool any_method) {
  impl_->routes[std::move(path)] = {std::move(h), any_method};
}

void http_server::on_upgrade(upgrade_handler h) { impl_->upgrade = std::move(h); }

void http_server::listen() {
  auto addr = net::ip::make_address(impl_->opts.host);
  tcp::endpoint ep{addr, impl_->opts.port};
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.set_option(net::socket_base::reuse_address(true));
  impl_->acceptor.bind(ep);
  impl_->acceptor.listen(net::socket_base::max_listen_connections);
  log::info("http", "listening on {}:{}", impl_->opts.host, port());
  impl_->do_accept();
}

uint16_t http_server::port() const {
  beast::error_code ec;
  auto ep = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

void http_server::close() {
  if (!impl_)
    return;
  // The acceptor belongs to I/O thread 0: close it there.
  auto p = impl_;
  net::post(impl_->acceptor.get_executor(), [p] {
    beast::error_code ec;
    p->acceptor.close(ec);
  });
}

void http_server::set_ready(bool r) noexcept { impl_->ready.store(r); }

} // namespace agner
