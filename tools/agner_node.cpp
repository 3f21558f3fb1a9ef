// agner-node: starts a chat node. Thin main: configuration -> library calls.
#include "runtime/config.hpp"
#include "runtime/http_server.hpp"
#include "runtime/log.hpp"
#include "runtime/node.hpp"

#include <fmt/format.h>

#include <cstdint>
#include <string>

int main(int argc, char** argv) {
  agner::config_schema schema;
  agner::node_options node_opts;
  node_opts.bind(schema);
  std::string host = "127.0.0.1";
  uint32_t port = 8080;
  schema.add("http.host", &host, "address to listen on (loopback by default)");
  schema.add("http.port", &port, "TCP port for WebSocket, HTTP API, /metrics, /healthz", 0, 65535);
  try {
    auto got = schema.load(argc, argv);
    if (got.help) {
      fmt::print("{}", schema.help("agner-node", "agner-node: an agner chat node"));
      return 0;
    }
  } catch (const agner::config_error& e) {
    fmt::print(stderr, "agner-node: {}\n", e.what());
    return agner::exit_config;
  }
  try {
    agner::node n(node_opts);
    agner::http_options http_opts;
    http_opts.host = host;
    http_opts.port = static_cast<uint16_t>(port);
    agner::http_server http(n, http_opts);
    n.start();
    http.listen();
    http.set_ready(true);
    n.on_stop("http", [&] {
      http.set_ready(false);
      http.close();
    });
    return n.wait();
  } catch (const std::exception& e) {
    agner::log::critical("node", "cannot start: {}", e.what());
    return agner::exit_fatal;
  }
}
