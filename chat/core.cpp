#include "chat/core.hpp"

#include "runtime/log.hpp"

#include <future>

namespace agner::chat {

namespace {
constexpr std::string_view next_user_key = "users/next";
std::string name_key(std::string_view name) { return fmt::format("name/{}", name); }
std::string id_key(user_id u) { return fmt::format("user/{}", u); }
} // namespace

chat_core::chat_core(caf::actor_system& sys, store::node_store& store, metrics::registry& reg, chat_options opts,
                     escalation escalate)
    : opts_(std::move(opts)), store_(store), metrics_(reg), ids_(opts_.node_id), user_slots_(opts_.user_shards),
      sent_(reg.make_counter("agner_chat_messages_stored_total", "Messages durable in the log")),
      delivered_(reg.make_counter("agner_chat_fanout_total", "Deliveries handed to recipients' owners")),
      evicted_(reg.make_counter("agner_chat_conversations_evicted_total", "Idle conversations dropped from memory (they reload when used)")),
      checkpoints_(reg.make_counter("agner_chat_user_checkpoints_total", "User shard checkpoint marks handed to the store (a crash replays the log from a shard's latest durable one)")),
      checkpoint_walk_(reg.make_gauge("agner_chat_user_checkpoint_walk_users", "Users still to walk in the user checkpoints in progress")),
      send_to_stored_(reg.make_histogram("agner_chat_send_to_stored_seconds", "From a send reaching the chat core to its stored reply (durable)", {}, 1e-9)),
      send_to_deliver_(reg.make_histogram("agner_chat_send_to_deliver_seconds", "From a send reaching the chat core to the push of its delivery to a connected recipient", {}, 1e-9)),
      send_to_sequenced_(reg.make_histogram("agner_chat_send_to_sequenced_seconds", "From a send reaching the chat core to its conversation's owner giving it a seq", {}, 1e-9)),
      durable_to_owner_(reg.make_histogram("agner_chat_durable_to_owner_seconds", "From a message's commit returning to its recipient's owner handling the delivery", {}, 1e-9)) {
  // User checkpoints are per shard: a data directory written with another shard count would map
  // users to other shards and replay from the wrong checkpoints.
  auto key = std::string("chat/user_shards");
  if (auto v = store_.get(key)) {
    if (*v != std::to_string(opts_.user_shards))
      throw std::runtime_error(fmt::format("data directory was written with {} user shards, configured {}", *v, opts_.user_shards));
  } else {
    store::write_batch b;
    b.put(key, std::to_string(opts_.user_shards));
    if (store_.submit_and_wait(std::move(b)) != store::write_status::durable)
      throw std::runtime_error("cannot record the shard count in the store");
  }
  service_options uo;
  uo.name = "users";
  uo.shards = opts_.user_shards;
  uo.homes = opts_.homes;
  users_ = std::make_unique<service<user_shard>>(
    sys, uo, [this](auto& ctx) { return std::make_unique<user_shard>(ctx, *this); }, escalate, &reg);
  service_options co;
  co.name = "conversations";
  co.shards = opts_.conversation_shards;
  co.homes = opts_.homes;
  convs_ = std::make_unique<service<conversation_shard>>(
    sys, co, [this](auto& ctx) { return std::make_unique<conversation_shard>(ctx, *this); }, escalate, &reg);
  // Housekeeping ticks re-arm themselves from then on.
  for (uint32_t i = 0; i < opts_.user_shards; ++i)
    users_->cast_later(i, opts_.tick_interval, user_ops::tick{});
}

chat_core::~chat_core() { stop(); }

void chat_core::stop(bool final_checkpoint) {
  if (convs_)
    convs_->stop();
  if (users_ && final_checkpoint) {
    // A last checkpoint, so a restart replays nothing and devices resume from their acks.
    std::vector<std::future<void>> done;
    for (uint32_t i = 0; i < opts_.user_shards; ++i) {
      auto p = std::make_shared<std::promise<void>>();
      done.push_back(p->get_future());
      users_->cast_to_shard(i, user_ops::final_checkpoint{p});
    }
    for (auto& f : done)
      if (f.wait_for(std::chrono::seconds(10)) != std::future_status::ready)
        log::warn("users", "a shard did not finish its final checkpoint in time");
  }
  if (users_)
    users_->stop();
  if (users_ || convs_) {
    // Completions of writes still at the store cast into the services: let them run (into the
    // stopped services, which drop them) before the services go away. The writer completes in
    // submission order, so an empty batch's completion comes after all of theirs.
    auto drained = std::make_shared<std::promise<void>>();
    if (store_.submit(store::write_batch{}, [drained](const store::commit_result&) { drained->set_value(); }) &&
        drained->get_future().wait_for(std::chrono::seconds(10)) != std::future_status::ready)
      log::warn("chat", "the store did not complete its queued writes in time");
  }
  users_.reset();
  convs_.reset();
}

void chat_core::attach(user_id u, std::string device, std::optional<uint64_t> resume_from, sink_ptr sink, std::string ref) {
  users_->cast(u, user_ops::attach{u, std::move(device), resume_from, std::move(sink), std::move(ref)});
}

void chat_core::detach(user_id u, std::string device, sink_ptr sink) {
  users_->cast(u, user_ops::detach{u, std::move(device), std::move(sink)});
}

void chat_core::send(user_id from, user_id to, std::string nonce, std::string body, sink_ptr sink, std::string ref) {
  auto c = direct_conversation(from, to);
  convs_->cast(c, conv_ops::send{c, from, std::move(nonce), std::move(body), std::move(sink), std::move(ref), time().now()});
}

void chat_core::ack(user_id u, std::string device, uint64_t inbox_seq) {
  users_->cast(u, user_ops::ack{u, std::move(device), inbox_seq});
}

void chat_core::history(user_id u, const proto::history& req, sink_ptr sink, std::string ref) {
  auto c = req.conversation;
  if (!is_direct(c)) {
    sink->push(proto::encode_error(ref, proto::error_code::not_found, "no such conversation"));
    return;
  }
  auto [a, b] = direct_members(c);
  if (u != a && u != b) {
    sink->push(proto::encode_error(ref, proto::error_code::forbidden, "not a member of that conversation"));
    return;
  }
  auto work = [this, c, req, sink, ref] {
    std::vector<store::log_entry> page;
    // One more than asked tells whether there is more beyond the page.
    size_t want = req.limit + 1;
    if (req.after)
      page = store_.history_after(c, *req.after, want);
    else
      page = store_.history_before(c, req.before.value_or(UINT64_MAX), want);
    bool more = page.size() > req.limit;
    if (more) {
      if (req.after)
        page.pop_back();
      else
        page.erase(page.begin());
    }
    std::vector<proto::history_entry> entries;
    entries.reserve(page.size());
    for (auto& e : page) {
      auto m = message_record::decode(e.payload);
      entries.push_back({e.seq, m.id, m.from, std::move(m.body)});
    }
    sink->push(proto::encode_history(ref, c, entries, more));
  };
  convs_->call_async(c, conversation_shard::read_msg{std::move(work)}, opts_.history_timeout,
                     [sink, ref](caf::expected<int> r) {
                       if (!r)
                         sink->push(proto::encode_error(ref, proto::error_code::unavailable,
                                                        "history is busy or failed; retry"));
                     });
}

bool chat_core::overloaded(user_id u) const noexcept { return users_->overloaded(u); }

void chat_core::on_batch_committed(conversation_id c, const store::commit_result& r, std::vector<appended>& msgs) {
  if (r.status == store::write_status::durable) {
    // On the writer thread, in log order: every user owner sees deliveries in log order, which
    // is what makes inbox_seq reproducible by replay.
    auto [a, b] = direct_members(c);
    auto now = time().now();
    for (size_t i = 0; i < msgs.size(); ++i) {
      msgs[i].m->log_position = r.first_position + i;
      msgs[i].m->durable = now;
      message_ptr m = msgs[i].m;
      auto origin_of = [&](user_id u) { return u == m->msg.from ? std::move(msgs[i].origin) : reply_to{}; };
      users_->cast(a, user_ops::deliver{a, m, origin_of(a)});
      if (b != a)
        users_->cast(b, user_ops::deliver{b, m, origin_of(b)});
      delivered_.inc(a == b ? 1 : 2);
    }
    sent_.inc(msgs.size());
  }
  convs_->cast(c, conv_ops::committed{c, r.status, r.first_position});
}

user_id chat_core::create_user(std::string_view name) {
  if (name.empty() || name.size() > 64)
    throw std::invalid_argument("a user name has 1 to 64 bytes");
  std::lock_guard lock(registry_mu_);
  if (auto u = find_user(name))
    return *u;
  user_id next = 1;
  if (auto v = store_.get(next_user_key))
    next = std::stoull(*v);
  if (next > user_id_max)
    throw std::runtime_error("user id space exhausted");
  store::write_batch b;
  b.put(name_key(name), std::to_string(next));
  b.put(id_key(next), name);
  b.put(next_user_key, std::to_string(next + 1));
  auto st = store_.submit_and_wait(std::move(b));
  if (!st)
    throw std::runtime_error("the store refused the write");
  if (*st != store::write_status::durable)
    throw std::runtime_error(fmt::format("cannot store the user: {}", store::to_string(*st)));
  log::info("users", "created user {} ({})", next, name);
  return next;
}

std::vector<user_id> chat_core::create_users(std::string_view prefix, uint32_t start, uint32_t count) {
  if (prefix.empty() || prefix.size() > 40)
    throw std::invalid_argument("a user name prefix has 1 to 40 bytes");
  std::vector<user_id> ids;
  ids.reserve(count);
  std::lock_guard lock(registry_mu_);
  user_id next = 1;
  if (auto v = store_.get(next_user_key))
    next = std::stoull(*v);
  // One durable batch per chunk: a million users cost a few hundred commits, not a million.
  constexpr uint32_t chunk = 8192;
  for (uint32_t first = 0; first < count; first += chunk) {
    store::write_batch b;
    uint32_t created = 0;
    for (uint32_t i = first; i < std::min(count, first + chunk); ++i) {
      auto name = fmt::format("{}{}", prefix, uint64_t{start} + i);
      if (auto u = find_user(name)) {
        ids.push_back(*u);
        continue;
      }
      if (next > user_id_max)
        throw std::runtime_error("user id space exhausted");
      b.put(name_key(name), std::to_string(next));
      b.put(id_key(next), name);
      ids.push_back(next++);
      ++created;
    }
    if (created == 0)
      continue;
    b.put(next_user_key, std::to_string(next));
    auto st = store_.submit_and_wait(std::move(b));
    if (!st)
      throw std::runtime_error("the store refused the write");
    if (*st != store::write_status::durable)
      throw std::runtime_error(fmt::format("cannot store the users: {}", store::to_string(*st)));
  }
  log::info("users", "ensured {} users {}{}..{}{}", count, prefix, start, prefix, uint64_t{start} + count - 1);
  return ids;
}

std::optional<user_id> chat_core::find_user(std::string_view name) const {
  if (auto v = store_.get(name_key(name)))
    return parse_id(*v);
  return std::nullopt;
}

std::optional<std::string> chat_core::user_name(user_id u) const { return store_.get(id_key(u)); }

bool chat_core::user_exists(user_id u) const { return u != 0 && store_.get(id_key(u)).has_value(); }

} // namespace agner::chat
