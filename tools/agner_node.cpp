// agner-node: starts a chat node. Thin main: configuration -> chat_node.
#include "chat/chat_node.hpp"
#include "runtime/log.hpp"

#include <fmt/format.h>

int main(int argc, char** argv) {
  agner::config_schema schema;
  agner::chat::chat_node_options opts;
  opts.bind(schema);
  try {
    if (schema.load(argc, argv).help) {
      fmt::print("{}", schema.help("agner-node", "agner-node: an agner chat node (docs/operations.md)"));
      return 0;
    }
  } catch (const agner::config_error& e) {
    fmt::print(stderr, "agner-node: {}\n", e.what());
    return agner::exit_config;
  }
  try {
    agner::chat::chat_node n(opts);
    n.start();
    return n.wait();
  } catch (const std::exception& e) {
    agner::log::critical("node", "cannot start: {}", e.what());
    return agner::exit_fatal;
  }
}
