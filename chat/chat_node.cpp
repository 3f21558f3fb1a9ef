#include "chat/chat_node.hpp"

#include "runtime/log.hpp"

#include <boost/url/parse.hpp>
#include <openssl/crypto.h>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace agner::chat {

namespace http = boost::beast::http;

void chat_node_options::bind(config_schema& s) {
  node.bind(s);
  s.add("node.id", &chat.node_id, "node id in message ids, unique per node of a cluster", 0, 1023);
  s.add("http.host", &http.host, "address to listen on (loopback by default)");
  s.add("http.port", &http.port, "TCP port for WebSocket, admin API, /metrics, /healthz (0: any free port)", 0, 65535);
  s.add("store.dir", &store.data_dir, "data directory (LMDB environment, secrets)");
  s.add_mib("store.map_size_mb", &store.map_size_bytes, "largest size of the LMDB data file", 1, size_t{1} << 24);
  s.add("store.flush_window_ms", &store.flush_window_ms, "how long derived state may stay dirty in the write-back cache", 0,
        3'600'000);
  s.add_mib("store.disk_reserve_mb", &store.disk_reserve_bytes,
            "disk space reserved ahead of the data file, so a full disk fails a commit cleanly", 0, 1 << 16);
  s.add_mib("store.cache_mb", &store.cache_budget_bytes, "write-back cache budget per shard", 1, 1 << 20);
  store_durability = std::string(store::to_string(store.durability));
  s.add_choice("store.durability", &store_durability,
               "sync: acknowledge a write only once it is on disk; unsafe_nosync: skip the flush (loses acknowledged "
               "writes on power loss; tests only)",
               {"sync", "unsafe_nosync"});
  s.add("chat.user_shards", &chat.user_shards, "user service shards (fixed for a data directory)", 1, 4096);
  s.add("chat.conversation_shards", &chat.conversation_shards, "conversation service shards", 1, 4096);
  s.add("chat.checkpoint_interval_ms", &chat.checkpoint_interval, "user state checkpoint period (bounds replay after a crash)",
        100, 3'600'000);
  s.add("chat.checkpoint_slice_users", &chat.checkpoint_slice_users,
        "users a checkpoint walks per 200 ms tick at least (it also walks enough to finish within half the period)", 1,
        100'000'000);
  s.add("gateway.heartbeat_ms", &gateway.heartbeat_ms, "heartbeat interval announced to clients", 1000, 600'000);
  s.add("gateway.identify_timeout_ms", &gateway.identify_timeout_ms, "deadline from connect to identify", 100, 600'000);
  s.add("gateway.write_stall_ms", &gateway.write_stall_ms, "a write stalled this long closes the connection", 100, 600'000);
  s.add("gateway.outbound_bytes_max", &gateway.outbound_bytes_max, "queued bytes per connection before it is closed as slow",
        4096, 1u << 30);
  s.add("gateway.sends_per_sec", &gateway.sends_per_sec, "sends per second per connection (token bucket)", 0.1, 1e6);
  s.add("gateway.sends_burst", &gateway.sends_burst, "burst of sends above the rate", 1, 1e6);
  s.add("gateway.deflate", &gateway.deflate, "accept permessage-deflate (no context takeover)");
  s.add("gateway.dev_mode", &gateway.dev_mode, "accept 'dev:<name>' tokens and create users on the fly (never in production)");
  s.add("auth.secret_file", &secret_file, "token signing secret (default <store.dir>/secret.key, created if missing)");
  s.add("auth.token_ttl_s", &token_ttl_s, "lifetime of tokens issued by the admin API", 60, int64_t{10} * 365 * 24 * 3600);
}

std::string load_or_create_secret(const std::string& path, const std::function<std::string()>& make) {
  if (std::ifstream in{path, std::ios::binary}) {
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  auto secret = make();
  // O_EXCL: if another process created it meanwhile, read theirs instead of overwriting it.
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    if (errno == EEXIST)
      return load_or_create_secret(path, make);
    throw std::runtime_error(fmt::format("cannot create {}: {}", path, std::strerror(errno)));
  }
  bool ok = ::write(fd, secret.data(), secret.size()) == static_cast<ssize_t>(secret.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok)
    throw std::runtime_error(fmt::format("cannot write {}", path));
  return secret;
}

namespace {

std::string hex(std::string_view bytes) {
  std::string out;
  for (unsigned char c : bytes)
    fmt::format_to(std::back_inserter(out), "{:02x}", c);
  return out;
}

/// Users one bulk request may create: the reply lists every id (~10 bytes each).
constexpr uint64_t users_per_request_max = 1'000'000;

http_response json_response(const http_request& req, http::status st, std::string body) {
  return text_response(req, st, std::move(body) + "\n", "application/json");
}

std::string json_error(std::string_view code, std::string_view message) {
  std::string m;
  log::append_json_escaped(m, message);
  return fmt::format(R"({{"error":"{}","message":"{}"}})", code, m);
}

/// The value of query parameter `key` in the request target, if present.
std::optional<std::string> query_param(const http_request& req, std::string_view key) {
  auto r = boost::urls::parse_origin_form(std::string_view(req.target().data(), req.target().size()));
  if (!r)
    return std::nullopt;
  auto params = r->params();
  auto it = params.find(key);
  if (it == params.end())
    return std::nullopt;
  return std::string((*it).value);
}

} // namespace

chat_node::chat_node(chat_node_options opts) : opts_(std::move(opts)) {
  if (!opts_.store_durability.empty()) {
    auto d = store::parse_durability(opts_.store_durability);
    if (!d)
      throw std::invalid_argument("store.durability: " + opts_.store_durability);
    opts_.store.durability = *d;
  }
  std::filesystem::create_directories(opts_.store.data_dir);
  if (opts_.secret_file.empty())
    opts_.secret_file = opts_.store.data_dir + "/secret.key";
  tokens_ = std::make_unique<token_signer>(load_or_create_secret(opts_.secret_file, token_signer::random_secret));
  admin_token_ = load_or_create_secret(opts_.store.data_dir + "/admin.token", [] { return hex(token_signer::random_secret()); });
  node_ = std::make_unique<node>(opts_.node);
  store::store_hooks hooks;
  // A fatal store error must stop the process before anything else is acknowledged.
  store_ = std::make_unique<store::node_store>(opts_.store, node_->metrics(), hooks);
  // A resume replay page must fit in a connection's outbound bound with room for live traffic.
  opts_.chat.users.replay_page_bytes = std::min<uint32_t>(opts_.chat.users.replay_page_bytes, opts_.gateway.outbound_bytes_max / 4);
  if (opts_.node.shards_on_io_threads)
    for (size_t i = 0; i < node_->io_thread_count(); ++i)
      opts_.chat.homes.push_back([io = &node_->io(i)](std::function<void()> f) { boost::asio::post(*io, std::move(f)); });
  core_ = std::make_unique<chat_core>(node_->system(), *store_, node_->metrics(), opts_.chat,
                                      [n = node_.get()](const std::string& why) { n->fatal(why); });
  http_ = std::make_unique<http_server>(*node_, opts_.http);
  gateway_ = std::make_unique<gateway>(*node_, *http_, *core_, *tokens_, opts_.gateway);
  add_admin_routes();
}

chat_node::~chat_node() {
  gateway_.reset();
  http_.reset();
  if (core_)
    core_->stop();
  core_.reset();
  store_.reset();
  node_.reset();
}

void chat_node::start(bool handle_signals) {
  node_->start(handle_signals);
  gateway_->start();
  http_->listen();
  // The ordered stop, last registered first: stop taking connections, tell clients to go
  // elsewhere, stop the services, then let the store commit what it holds.
  node_->on_stop("store", [this] { store_.reset(); });
  node_->on_stop("chat services", [this] { core_->stop(); });
  node_->on_stop("gateway", [this] {
    http_->set_ready(false);
    http_->close();
    gateway_->drain();
  });
  http_->set_ready(true);
  log::info("node", "chat node ready on {}:{} (data in {}{})", opts_.http.host, port(), opts_.store.data_dir,
            opts_.gateway.dev_mode ? ", DEV MODE: dev:<name> tokens accepted" : "");
}

int chat_node::wait() { return node_->wait(); }

void chat_node::add_admin_routes() {
  auto authorized = [this](const http_request& req) {
    auto h = req[http::field::authorization];
    std::string expect = "Bearer " + admin_token_;
    return h.size() == expect.size() && CRYPTO_memcmp(h.data(), expect.data(), h.size()) == 0;
  };
  http_->route(
    "/admin/users",
    [this, authorized](const http_request& req) {
      if (!authorized(req))
        return json_response(req, http::status::unauthorized, json_error("unauthorized", "admin token required"));
      if (req.method() != http::verb::post)
        return json_response(req, http::status::method_not_allowed,
                             json_error("method", "POST /admin/users?name=NAME or ?prefix=P&count=N[&start=K]"));
      if (auto prefix = query_param(req, "prefix")) {
        auto count = query_param(req, "count");
        // 0 and UINT64_MAX stand for "missing or not a number": both are refused below.
        uint64_t n = count ? parse_id(*count).value_or(0) : 0;
        auto start_param = query_param(req, "start");
        uint64_t start = start_param ? parse_id(*start_param).value_or(UINT64_MAX) : 0;
        if (prefix->empty() || prefix->size() > 40 || n < 1 || n > users_per_request_max || start > UINT32_MAX)
          return json_response(req, http::status::bad_request,
                               json_error("bad_request", fmt::format("prefix: 1 to 40 bytes; count: 1 to {}; start: a number",
                                                                     users_per_request_max)));
        try {
          auto ids = core_->create_users(*prefix, static_cast<uint32_t>(start), static_cast<uint32_t>(n));
          std::string body = R"({"users":[)";
          for (size_t i = 0; i < ids.size(); ++i)
            fmt::format_to(std::back_inserter(body), "{}\"{}\"", i ? "," : "", ids[i]);
          body += "]}";
          return json_response(req, http::status::ok, std::move(body));
        } catch (const std::exception& e) {
          return json_response(req, http::status::service_unavailable, json_error("unavailable", e.what()));
        }
      }
      auto name = query_param(req, "name");
      if (!name || name->empty() || name->size() > 64)
        return json_response(req, http::status::bad_request, json_error("bad_request", "name: 1 to 64 bytes"));
      try {
        auto id = core_->create_user(*name);
        return json_response(req, http::status::ok, fmt::format(R"({{"user":"{}","name":"{}"}})", id, *name));
      } catch (const std::exception& e) {
        return json_response(req, http::status::service_unavailable, json_error("unavailable", e.what()));
      }
    },
    true);
  http_->route(
    "/admin/tokens",
    [this, authorized](const http_request& req) {
      if (!authorized(req))
        return json_response(req, http::status::unauthorized, json_error("unauthorized", "admin token required"));
      auto name = query_param(req, "name");
      std::optional<user_id> u;
      if (name)
        u = core_->find_user(*name);
      else if (auto id = query_param(req, "user"))
        if (auto v = parse_id(*id); v && core_->user_exists(*v))
          u = v;
      if (!u)
        return json_response(req, http::status::not_found, json_error("not_found", "no such user (name= or user=)"));
      int64_t ttl = opts_.token_ttl_s;
      if (auto t = query_param(req, "ttl_s"))
        if (auto v = parse_id(*t); v && *v > 0 && *v < 10ull * 365 * 24 * 3600)
          ttl = static_cast<int64_t>(*v);
      auto now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
      return json_response(req, http::status::ok,
                           fmt::format(R"({{"user":"{}","token":"{}","expires":{}}})", *u, tokens_->issue(*u, now + ttl), now + ttl));
    },
    true);
  http_->route("/admin/status", [this, authorized](const http_request& req) {
    if (!authorized(req))
      return json_response(req, http::status::unauthorized, json_error("unauthorized", "admin token required"));
    return json_response(req, http::status::ok,
                         fmt::format(R"({{"node":{},"connections":{},"log_position":{},"store_failed":{},"users_restarts":{},"conversations_restarts":{}}})",
                                     opts_.chat.node_id, gateway_->connections(), store_->last_position(),
                                     store_->failed() ? "true" : "false", core_->users().restarts(),
                                     core_->conversations().restarts()));
  });
}

} // namespace agner::chat
