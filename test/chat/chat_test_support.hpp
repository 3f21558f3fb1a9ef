// What the chat tests run the chat core on: a node (two scheduler threads, one I/O thread) and a
// store in a temporary directory, and chat options with two shards per service homed on the I/O
// thread, as agner-node runs them. Fixtures derive from it and own what they add on top; their
// members are gone before the store and the node go.
#pragma once

#include "chat/core.hpp"
#include "runtime/node.hpp"
#include "runtime/store/store.hpp"

#include <boost/asio/post.hpp>
#include <fmt/format.h>

#include <filesystem>
#include <memory>
#include <string>
#include <unistd.h>

namespace agner::chat::test {

struct node_with_store {
  std::string dir;
  std::unique_ptr<node> nd;
  std::unique_ptr<store::node_store> st;
  chat_options co;

  /// `tag` names the data directory (with the process id and this object's address).
  explicit node_with_store(std::string_view tag, store::store_hooks hooks = {}) {
    dir = (std::filesystem::temp_directory_path() /
           fmt::format("agner-{}-{}-{}", tag, ::getpid(), reinterpret_cast<uintptr_t>(this)))
            .string();
    std::filesystem::remove_all(dir);
    node_options no;
    no.scheduler_threads = 2;
    no.io_threads = 1;
    no.log_level = "warn";
    nd = std::make_unique<node>(no);
    store::store_options so;
    so.data_dir = dir;
    so.map_size_bytes = size_t{256} << 20;
    st = std::make_unique<store::node_store>(so, nd->metrics(), std::move(hooks));
    co.user_shards = 2;
    co.conversation_shards = 2;
    co.homes.push_back([io = &nd->io(0)](std::function<void()> f) { boost::asio::post(*io, std::move(f)); });
  }
  ~node_with_store() {
    st.reset();
    nd->request_stop();
    nd->wait();
    nd.reset();
    std::filesystem::remove_all(dir);
  }
  node_with_store(const node_with_store&) = delete;
  node_with_store& operator=(const node_with_store&) = delete;
};

} // namespace agner::chat::test
