// The WebSocket gateway: takes upgrades from the HTTP server, runs one ws_session per connection
// on its I/O thread (chat/ws_session.hpp), starts and stops the per-thread timer wheels, drains.
#include "chat/gateway.hpp"

#include "chat/ws_session.hpp"

#include <future>

namespace agner::chat {

gateway::gateway(node& n, http_server& http, chat_core& core, const token_signer& tokens, gateway_options opts)
    : s_(std::make_shared<shared>(n, core, tokens, std::move(opts))) {
  for (size_t i = 0; i < n.io_thread_count(); ++i)
    s_->shards.push_back(std::make_unique<io_shard>(n.io(i)));
  http.on_upgrade([s = s_](beast::tcp_stream&& stream, http_request&& req) {
    auto& shard = s->shard_for(stream.get_executor());
    auto target = std::string_view(req.target().data(), req.target().size());
    if (s->draining.load() || target.substr(0, target.find('?')) != ws_path) {
      beast::error_code ec;
      stream.socket().close(ec);
      return;
    }
    // Move the descriptor into a socket bound to this thread's io_context (see gateway_socket).
    beast::error_code ec;
    auto raw = stream.release_socket();
    auto protocol = raw.local_endpoint(ec).protocol();
    gateway_socket sock(shard.io);
    if (!ec)
      sock.assign(protocol, raw.release(ec), ec);
    if (ec) {
      raw.close(ec);
      return;
    }
    std::make_shared<ws_session<gateway_socket>>(s, shard, std::move(sock))->start(std::move(req));
  });
}

gateway::~gateway() {
  // The wheels and drivers belong to the I/O threads; stop them there if those still run.
  for (auto& sh : s_->shards) {
    if (sh->io.stopped())
      continue;
    std::promise<void> done;
    net::post(sh->io, [&] {
      sh->driver.stop();
      sh->retry.unlink();
      sh->paused.clear(); // they hold the shared state: drop them here, not in a cycle
      done.set_value();
    });
    if (done.get_future().wait_for(2s) != std::future_status::ready)
      log::warn("gateway", "an I/O thread did not stop its timer driver in time");
  }
}

void gateway::start() {
  for (auto& sh : s_->shards) {
    std::promise<void> done;
    net::post(sh->io, [&] {
      sh->driver.start();
      done.set_value();
    });
    done.get_future().wait();
  }
}

void gateway::drain() {
  s_->draining.store(true);
  for (auto& sh : s_->shards) {
    std::promise<void> done;
    net::post(sh->io, [&] {
      // Copy: closing a session removes it from the set.
      std::vector<session_base*> all(sh->sessions.begin(), sh->sessions.end());
      for (auto* s : all)
        s->do_close(proto::close_going_away, "node stopping; resume elsewhere");
      done.set_value();
    });
    done.get_future().wait();
  }
}

size_t gateway::connections() const noexcept { return s_->count.load(); }

size_t gateway::session_object_bytes() noexcept { return sizeof(ws_session<gateway_socket>); }

void gateway::accept_test_stream(beast::test::stream&& s) {
  auto& shard = s_->shard_for(s.get_executor());
  net::post(shard.io, [st = s_, &shard, s = std::move(s)]() mutable {
    std::make_shared<ws_session<beast::test::stream>>(st, shard, std::move(s))->start_reading_request();
  });
}

} // namespace agner::chat
