// A whole chat node in one object: the runtime node, the store, the chat core, the HTTP server
// with its admin API, and the WebSocket gateway, started and stopped in order. agner-node is a
// thin main around it; tests and the in-process load generator embed it.
#pragma once

#include "chat/core.hpp"
#include "chat/gateway.hpp"
#include "chat/token.hpp"
#include "runtime/config.hpp"
#include "runtime/http_server.hpp"
#include "runtime/node.hpp"
#include "runtime/store/store.hpp"

#include <memory>
#include <string>

namespace agner::chat {

struct chat_node_options {
  node_options node;
  http_options http;
  store::store_options store;
  chat_options chat;
  gateway_options gateway;
  /// File holding the token signing secret; created (0600) with a random secret if missing.
  /// Empty: <store dir>/secret.key.
  std::string secret_file;
  /// Lifetime of tokens issued through the admin API unless asked otherwise.
  int64_t token_ttl_s = 30 * 24 * 3600;
  /// `store.durability` as configured ("sync", "unsafe_nosync"); set by `bind`, applied to
  /// `store.durability` by the node's constructor. Empty: keep `store.durability` as it is.
  std::string store_durability;

  /// Binds every setting to a configuration key (see docs/operations.md).
  void bind(config_schema& schema);
};

class chat_node {
public:
  /// Opens the store (recovering by replay), builds the services. Throws on any startup error.
  explicit chat_node(chat_node_options opts);
  ~chat_node();

  /// Starts I/O threads, binds the listener, turns ready. `handle_signals`: SIGTERM/SIGINT stop.
  void start(bool handle_signals = true);
  /// Blocks until stopped (signal or request_stop); runs the ordered stop; returns the exit code.
  int wait();
  void request_stop(int code = 0) { node_->request_stop(code); }

  uint16_t port() const { return http_->port(); }
  chat_core& core() { return *core_; }
  node& runtime() { return *node_; }
  store::node_store& store() { return *store_; }
  const token_signer& tokens() const { return *tokens_; }
  /// The admin API's bearer token (also written to <store dir>/admin.token for agner-ctl).
  const std::string& admin_token() const { return admin_token_; }

private:
  void add_admin_routes();

  chat_node_options opts_;
  std::unique_ptr<node> node_;
  std::unique_ptr<store::node_store> store_;
  std::unique_ptr<token_signer> tokens_;
  std::string admin_token_;
  std::unique_ptr<chat_core> core_;
  std::unique_ptr<http_server> http_;
  std::unique_ptr<gateway> gateway_;
};

/// Reads a secret file, creating it with `make()` and mode 0600 if it does not exist.
std::string load_or_create_secret(const std::string& path, const std::function<std::string()>& make);

} // namespace agner::chat
