#include "chat/conversations.hpp"

#include "chat/core.hpp"
#include "chat/protocol.hpp"
#include "runtime/hash.hpp"
#include "runtime/log.hpp"

#include <chrono>

namespace agner::chat {

namespace {

uint64_t nonce_key(user_id from, std::string_view nonce) { return key_hash(nonce) ^ mix64(from + 0x9e3779b97f4a7c15ULL); }

} // namespace

conversation_shard::conversation_shard(shard_context<view>& ctx, chat_core& core) : ctx_(ctx), core_(core) {
  // A restart in place may leave batches of the previous incarnation queued at the store; wait
  // until they are through, so that the seqs read back below are the final ones.
  core.store().submit_and_wait(store::write_batch{});
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

void conversation_shard::touch(conv_state& s, time_point now) {
  ctx_.wheel().arm(s.idle, now + core_.options().conversations.idle_evict);
}

void conversation_shard::on_idle(timer&, void* state) {
  auto& s = *static_cast<conv_state*>(state);
  if (!s.in_flight.empty() || !s.queued.empty())
    return s.shard->touch(s, s.shard->core_.time().now()); // still writing: look again later
  s.shard->core_.evicted().inc();
  if (s.chain_broken) {
    // Nothing of the chain is in flight: an empty batch restarts it, so the store forgets it
    // now rather than when (if ever) the conversation sends again.
    store::write_batch restart;
    restart.chain(s.id, true);
    s.shard->core_.store().submit(std::move(restart), [](const store::commit_result&) {});
  }
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
  auto now = core_.time().now();
  core_.send_to_sequenced().observe(static_cast<uint64_t>(std::max<int64_t>(0, (now - m.received).count())));
  touch(*s, now);
  auto key = nonce_key(m.from, m.nonce);
  if (auto it = s->nonces.find(key); it != s->nonces.end()) {
    // A retry: answer with the original message, never create a second one.
    if (it->second.durable) {
      m.sink->push(proto::encode_stored(m.ref, m.conversation, it->second.seq, it->second.id, m.nonce));
      return;
    }
    auto join = [&](std::vector<outgoing>& msgs) {
      for (auto& o : msgs)
        if (o.seq == it->second.seq) {
          o.waiters.push_back({m.sink, m.ref});
          return true;
        }
      return false;
    };
    if (join(s->queued))
      return;
    for (auto& b : s->in_flight)
      if (!b.doomed && join(b.msgs))
        return;
  }
  if (s->queued.size() >= core_.options().conversations.queued_max) {
    m.sink->push(proto::encode_error(m.ref, proto::error_code::unavailable, "conversation backlog full; retry"));
    return;
  }
  outgoing o;
  o.seq = s->next_seq++;
  o.msg.id = core_.ids().next();
  o.msg.from = m.from;
  o.msg.time_ms = static_cast<int64_t>(id_generator::time_ms(o.msg.id)); // the id's own clock reading
  o.msg.nonce = std::move(m.nonce);
  o.msg.body = std::move(m.body);
  o.waiters.push_back({std::move(m.sink), std::move(m.ref)});
  o.received = m.received;
  remember(*s, key, {o.seq, o.msg.id, false});
  s->queued.push_back(std::move(o));
  maybe_submit(m.conversation, *s);
}

void conversation_shard::maybe_submit(conversation_id c, conv_state& s) {
  // After a failure, nothing new goes out until the doomed batches are back: the next batch
  // restarts the chain, and must not overtake them.
  if (s.queued.empty() || s.in_flight.size() >= core_.options().conversations.batches_in_flight_max ||
      (!s.in_flight.empty() && s.in_flight.front().doomed))
    return;
  store::write_batch wb;
  bool restart = s.in_flight.empty(); // safe with nothing of the chain in flight
  wb.chain(c, restart);
  auto msgs = std::make_shared<std::vector<chat_core::appended>>();
  msgs->reserve(s.queued.size());
  for (auto& o : s.queued) {
    wb.append(c, o.seq, o.msg.encode());
    // The body moves on with the message: from here this shard needs only its identity (a
    // retry's answer, the nonce window). The first waiter stays here too: if the batch fails,
    // this shard tells it to retry.
    message_record rec{o.msg.id, o.msg.from, o.msg.time_ms, o.msg.nonce, std::move(o.msg.body)};
    msgs->push_back({std::make_shared<durable_message>(durable_message{0, c, o.seq, std::move(rec), o.received}), o.waiters.front()});
  }
  auto& b = s.in_flight.emplace_back();
  b.msgs.swap(s.queued);
  auto* core = &core_;
  bool queued = core_.store().submit(std::move(wb), [core, c, msgs](const store::commit_result& r) {
    core->on_batch_committed(c, r, *msgs);
  });
  if (!queued) {
    // The store's queue is full or the store failed: nothing of this batch was written (the
    // batches before it may still be), so its seqs are free again.
    s.next_seq = b.msgs.front().seq;
    refuse(s, b);
    s.in_flight.pop_back();
  } else if (restart) {
    s.chain_broken = false;
  }
}

void conversation_shard::refuse(conv_state& s, batch& b) {
  for (auto& o : b.msgs) {
    s.nonces.erase(nonce_key(o.msg.from, o.msg.nonce));
    for (auto& w : o.waiters)
      w.sink->push(proto::encode_error(w.ref, proto::error_code::unavailable, "the node cannot store right now; retry"));
  }
  b.msgs.clear();
}

void conversation_shard::handle(conv_ops::committed& m) {
  auto it = convs_.find(m.conversation);
  if (it == convs_.end())
    return;
  auto& s = it->second;
  if (s.in_flight.empty())
    return;
  // Completions come back in submission order: this one is for the oldest batch.
  auto& b = s.in_flight.front();
  if (b.doomed) {
    if (m.status == store::write_status::durable)
      log::error("conversations", "a batch of {} behind a failed one was stored anyway", m.conversation);
  } else if (m.status == store::write_status::durable) {
    for (auto& o : b.msgs) {
      s.nonces[nonce_key(o.msg.from, o.msg.nonce)].durable = true;
      // The first waiter is answered by the sender's owner, with the inbox_seq; retries that
      // joined on the way are answered here.
      for (size_t i = 1; i < o.waiters.size(); ++i)
        o.waiters[i].sink->push(proto::encode_stored(o.waiters[i].ref, m.conversation, o.seq, o.msg.id, o.msg.nonce));
    }
  } else {
    // Nothing of the batch was written, and the store fails every later batch of the
    // conversation until one restarts the chain. Roll the seq back to this batch's first message
    // (so seq stays dense), tell every sender of it and of the later batches to retry, and give
    // the queued messages behind them new seqs.
    log::warn("conversations", "append to {} failed: {}", m.conversation, store::to_string(m.status));
    s.chain_broken = true;
    if (!b.msgs.empty())
      s.next_seq = b.msgs.front().seq;
    for (auto& later : s.in_flight) {
      refuse(s, later);
      later.doomed = true;
    }
    for (auto& o : s.queued) {
      o.seq = s.next_seq++;
      s.nonces[nonce_key(o.msg.from, o.msg.nonce)] = {o.seq, o.msg.id, false};
    }
  }
  s.in_flight.pop_front();
  maybe_submit(m.conversation, s);
}

} // namespace agner::chat
