#include "chat/conversations.hpp"

#include "chat/core.hpp"
#include "chat/protocol.hpp"
#include "runtime/hash.hpp"
#include "runtime/log.hpp"

#include <chrono>
#include <future>

namespace agner::chat {

namespace {

uint64_t nonce_key(user_id from, std::string_view nonce) { return key_hash(nonce) ^ mix64(from + 0x9e3779b97f4a7c15ULL); }

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

} // namespace

conversation_shard::conversation_shard(shard_context<view>& ctx, chat_core& core) : ctx_(ctx), core_(core) {
  // A restart in place may leave batches of the previous incarnation queued at the store; wait
  // until they are through, so that the seqs read back below are the final ones.
  auto drained = std::make_shared<std::promise<void>>();
  store::write_batch empty;
  if (core.store().submit(std::move(empty), [drained](const store::commit_result&) { drained->set_value(); }))
    drained->get_future().wait();
}

void conversation_shard::on_write(write_msg& m) {
  std::visit([this](auto& op) { handle(op); }, m);
}

conversation_shard::conv_state* conversation_shard::load(conversation_id c, const sink_ptr& sink, const std::string& ref) {
  if (auto it = convs_.find(c); it != convs_.end())
    return &it->second;
  auto [a, b] = direct_members(c);
  if (!core_.user_exists(a) || !core_.user_exists(b)) {
    sink->push(proto::encode_error(ref, proto::error_code::not_found, "no such user"));
    return nullptr;
  }
  // The last reload_window messages give the next seq and the nonces to recognise retries of.
  // Read before the entry exists, so that a read that throws leaves nothing half-built.
  auto page = core_.store().history_before(c, UINT64_MAX, core_.options().conversations.reload_window);
  auto& s = convs_.try_emplace(c, *this, c).first->second;
  for (auto& e : page) {
    auto rec = message_record::decode(e.payload);
    remember(s, nonce_key(rec.from, rec.nonce), {e.seq, rec.id, true});
    s.next_seq = e.seq + 1;
  }
  return &s;
}

void conversation_shard::touch(conv_state& s) {
  ctx_.wheel().arm(s.idle, core_.time().now() + core_.options().conversations.idle_evict);
}

void conversation_shard::on_idle(timer&, void* state) {
  auto& s = *static_cast<conv_state*>(state);
  if (!s.in_flight.empty() || !s.queued.empty())
    return s.shard->touch(s); // still writing: look again later
  s.shard->core_.evicted().inc();
  s.shard->convs_.erase(s.id); // destroys s and its timer: allowed from the timer's own callback
}

void conversation_shard::remember(conv_state& s, uint64_t key, nonce_info info) {
  s.nonces[key] = info;
  s.nonce_order.push_back(key);
  while (s.nonce_order.size() > core_.options().conversations.dedup_window) {
    auto& old = s.nonce_order.front();
    if (auto it = s.nonces.find(old); it != s.nonces.end() && it->second.durable)
      s.nonces.erase(it);
    s.nonce_order.pop_front();
  }
}

void conversation_shard::handle(conv_ops::send& m) {
  auto* s = load(m.conversation, m.sink, m.ref);
  if (!s)
    return;
  touch(*s);
  auto key = nonce_key(m.from, m.nonce);
  if (auto it = s->nonces.find(key); it != s->nonces.end()) {
    // A retry: answer with the original message, never create a second one.
    if (it->second.durable) {
      m.sink->push(proto::encode_stored(m.ref, m.conversation, it->second.seq, it->second.id, m.nonce));
      return;
    }
    for (auto* batch : {&s->in_flight, &s->queued})
      for (auto& o : *batch)
        if (o.seq == it->second.seq) {
          o.waiters.push_back({m.sink, m.ref});
          return;
        }
  }
  if (s->queued.size() >= core_.options().conversations.queued_max) {
    m.sink->push(proto::encode_error(m.ref, proto::error_code::unavailable, "conversation backlog full; retry"));
    return;
  }
  outgoing o;
  o.seq = s->next_seq++;
  o.msg.id = core_.ids().next();
  o.msg.from = m.from;
  o.msg.time_ms = now_ms();
  o.msg.nonce = std::move(m.nonce);
  o.msg.body = std::move(m.body);
  o.waiters.push_back({std::move(m.sink), std::move(m.ref)});
  remember(*s, key, {o.seq, o.msg.id, false});
  s->queued.push_back(std::move(o));
  if (s->in_flight.empty())
    submit(m.conversation, *s);
}

void conversation_shard::submit(conversation_id c, conv_state& s) {
  s.in_flight.swap(s.queued);
  store::write_batch batch;
  auto msgs = std::make_shared<std::vector<std::shared_ptr<durable_message>>>();
  msgs->reserve(s.in_flight.size());
  for (auto& o : s.in_flight) {
    batch.append(c, o.seq, o.msg.encode());
    msgs->push_back(std::make_shared<durable_message>(durable_message{0, c, o.seq, o.msg}));
  }
  auto* core = &core_;
  bool queued = core_.store().submit(std::move(batch), [core, c, msgs](const store::commit_result& r) {
    core->on_batch_committed(c, r, *msgs);
  });
  if (!queued) {
    // The store's queue is full or the store failed: nothing was written.
    conv_ops::committed fail{c, store::write_status::failed, 0};
    handle(fail);
  }
}

void conversation_shard::handle(conv_ops::committed& m) {
  auto it = convs_.find(m.conversation);
  if (it == convs_.end())
    return;
  auto& s = it->second;
  if (m.status == store::write_status::durable) {
    for (auto& o : s.in_flight) {
      s.nonces[nonce_key(o.msg.from, o.msg.nonce)].durable = true;
      for (auto& w : o.waiters)
        w.sink->push(proto::encode_stored(w.ref, m.conversation, o.seq, o.msg.id, o.msg.nonce));
    }
    s.in_flight.clear();
  } else {
    // Nothing of the batch was written: roll the seq back to its first message (so seq stays
    // dense), forget its nonces, and tell every sender to retry. Queued messages behind it get
    // new seqs when they are submitted.
    log::warn("conversations", "append to {} failed: {}", m.conversation, store::to_string(m.status));
    if (!s.in_flight.empty()) {
      s.next_seq = s.in_flight.front().seq;
      for (auto& o : s.in_flight) {
        s.nonces.erase(nonce_key(o.msg.from, o.msg.nonce));
        for (auto& w : o.waiters)
          w.sink->push(proto::encode_error(w.ref, proto::error_code::unavailable, "the node cannot store right now; retry"));
      }
      s.in_flight.clear();
      for (auto& o : s.queued) {
        o.seq = s.next_seq++;
        s.nonces[nonce_key(o.msg.from, o.msg.nonce)] = {o.seq, o.msg.id, false};
      }
    }
  }
  if (!s.queued.empty())
    submit(m.conversation, s);
}

} // namespace agner::chat
