#include "chat/users.hpp"

#include "chat/core.hpp"
#include "chat/protocol.hpp"
#include "runtime/log.hpp"

#include <algorithm>

namespace agner::chat {

user_shard::user_shard(shard_context<view>& ctx, chat_core& core) : ctx_(ctx), core_(core) {
  auto index = ctx.index();
  cache_ = std::make_unique<store::write_back_cache>(
    core.store(), core.time(), core.metrics(), fmt::format("users-{}", index),
    [&core, index](store::flush_ticket t, store::write_status s) {
      core.users().cast_to_shard(index, user_ops::flushed{t, s});
    });
  auto st = store::recover(core.store(), *this);
  checkpointed_ = st.from;
  applied_max_ = std::max(applied_max_, st.through);
  // Shards take their checkpoints at staggered moments (shard i at i/N of the interval), so the
  // writer gets N small flushes of dirty users spread over the interval instead of one burst of
  // all of them, which held log appends behind it for up to a second at a million phones.
  const auto& o = core.options();
  last_checkpoint_ = core.time().now() - o.checkpoint_interval * index / std::max<uint32_t>(o.user_shards, 1);
  if (st.records)
    log::info("users", "shard {} replayed {} log records ({}..{}) in {:.3f} s", index, st.records, st.from, st.through,
              st.seconds);
}

user_shard::~user_shard() { end_walk(); }

std::string user_shard::domain() const { return fmt::format("users/{}", ctx_.index()); }

void user_shard::on_write(write_msg& m) {
  std::visit([this](auto& op) { handle(op); }, m);
}

namespace {

int64_t wall_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

} // namespace

user_shard::user_state& user_shard::load(user_id u) {
  auto it = users_.find(u);
  if (it != users_.end())
    return it->second;
  user_state s;
  if (auto v = cache_->get(u, user_key(u))) {
    s.rec = user_record::decode(*v);
    for (auto& [d, st] : s.rec.devices)
      if (st.seen_ms == 0)
        st.seen_ms = wall_ms(); // written by format 1, which kept no time: count from now
  }
  return users_.emplace(u, std::move(s)).first->second;
}

void user_shard::apply(const store::log_entry& e) {
  // Replay: the same fan-out the writer thread does live, restricted to this shard's users.
  if (!is_direct(e.stream))
    return;
  auto [a, b] = direct_members(e.stream);
  std::shared_ptr<durable_message> m;
  for (user_id u : {a, b}) {
    if (core_.user_shard_of(u) != ctx_.index() || (u == b && a == b))
      continue;
    if (!m)
      m = std::make_shared<durable_message>(durable_message{e.position, e.stream, e.seq, message_record::decode(e.payload), {}});
    auto& s = load(u);
    apply_deliver(u, s, m);
  }
  applied_max_ = std::max(applied_max_, e.position);
}

bool user_shard::apply_deliver(user_id u, user_state& s, const message_ptr& m) {
  if (m->log_position <= s.rec.applied_through)
    return false; // replayed, or delivered twice across a restart: already in this inbox
  auto& rec = s.rec;
  inbox_entry e{++rec.last_inbox_seq, m->log_position, m->conversation, m->seq};
  rec.applied_through = m->log_position;
  rec.pending.push_back(e);
  if (rec.pending.size() > core_.options().users.pending_max)
    rec.pending.erase(rec.pending.begin(), rec.pending.begin() + (rec.pending.size() - core_.options().users.pending_max));
  s.recent.push(e.inbox_seq, m, std::max<size_t>(1, core_.options().users.recent_max));
  s.dirty = true;
  return true;
}

namespace {

// The error that tells a device its resume position is older than what the inbox still keeps.
std::string resume_too_old(std::string_view ref, uint64_t after, uint64_t oldest) {
  return proto::encode_error(ref, proto::error_code::resume_too_old,
                             fmt::format("entries after {} are no longer kept (oldest kept: {}); fetch history", after, oldest));
}

} // namespace

std::string user_shard::deliver_frame(const user_state& s, const inbox_entry& e) {
  if (auto* hit = s.recent.find(e.inbox_seq)) {
    auto& m = **hit;
    return proto::encode_deliver({e.inbox_seq, m.conversation, m.seq, m.msg.id, m.msg.from, m.msg.nonce, m.msg.body});
  }
  // Not in memory (after a restart, or an old entry): read it back from the log.
  auto rec = core_.store().read_log(e.log_position);
  if (!rec)
    throw std::runtime_error(fmt::format("inbox entry {} points at missing log position {}", e.inbox_seq, e.log_position));
  auto msg = message_record::decode(rec->payload);
  return proto::encode_deliver({e.inbox_seq, e.conversation, e.seq, msg.id, msg.from, msg.nonce, msg.body});
}

void user_shard::handle(user_ops::attach& m) {
  auto& s = load(m.user);
  auto& rec = s.rec;
  uint64_t from;
  if (m.resume_from) {
    if (*m.resume_from > rec.last_inbox_seq) {
      m.sink->push(proto::encode_error(m.ref, proto::error_code::bad_request,
                                       fmt::format("last_inbox_seq {} is ahead of the inbox ({})", *m.resume_from, rec.last_inbox_seq)));
      m.sink->close(proto::close_decode_error, "bad resume position");
      return;
    }
    from = *m.resume_from;
  } else if (auto it = rec.devices.find(m.device); it != rec.devices.end()) {
    from = it->second.acked;
  } else {
    from = rec.last_inbox_seq; // a new device starts now; older messages come from history
  }
  // Everything in (from, last] must still be pending, or the device is too far behind.
  uint64_t oldest = rec.pending.empty() ? rec.last_inbox_seq + 1 : rec.pending.front().inbox_seq;
  if (from < rec.last_inbox_seq && from + 1 < oldest) {
    m.sink->push(resume_too_old(m.ref, from, oldest));
    from = rec.last_inbox_seq;
  }
  auto known = rec.devices.find(m.device);
  if (known == rec.devices.end()) {
    // A device the node has never seen: its registration must be durable before it gets a
    // position. Otherwise a crash could forget it, the other devices' acks would prune entries
    // it still needs, and its resume would come back "too old" (found by agner-chaos).
    remember_device(s, m.device, from);
    auto value = rec.encode();
    cache_->put(m.user, user_key(m.user), value); // the cache never flushes an older copy over it
    store::write_batch b;
    b.put(user_key(m.user), value);
    auto index = ctx_.index();
    auto* core = &core_;
    auto done = [core, index, a = m, from](const store::commit_result& r) mutable {
      core->users().cast_to_shard(index, user_ops::registered{std::move(a), from, r.status});
    };
    if (!core_.store().submit(std::move(b), std::move(done))) {
      m.sink->push(proto::encode_error(m.ref, proto::error_code::unavailable, "cannot register the device now; retry"));
      m.sink->close(proto::close_going_away, "store unavailable");
    }
    return;
  }
  known->second.acked = std::max(known->second.acked, from);
  known->second.seen_ms = wall_ms();
  s.dirty = true;
  open_session(s, m, from);
}

void user_shard::handle(user_ops::registered& m) {
  if (m.status != store::write_status::durable) {
    m.a.sink->push(proto::encode_error(m.a.ref, proto::error_code::unavailable, "cannot register the device now; retry"));
    m.a.sink->close(proto::close_going_away, "store unavailable");
    return;
  }
  auto& s = load(m.a.user);
  if (!s.rec.devices.contains(m.a.device)) {
    // Forgotten while its registration was being written (more new devices than devices_max at
    // once): it is connecting now, so it is the most recent; remember it again.
    remember_device(s, m.a.device, m.from);
  }
  open_session(s, m.a, m.from);
}

void user_shard::open_session(user_state& s, user_ops::attach& m, uint64_t from) {
  auto& rec = s.rec;
  // One device name has one live session: a reconnect replaces the old one.
  close_sessions_of(s, m.device, "the same device connected again");
  if (s.sessions.size() >= core_.options().users.sessions_max) {
    s.sessions.front().sink->close(proto::close_session_replaced, "too many sessions for this user");
    s.sessions.erase(s.sessions.begin());
  }
  s.sessions.push_back({m.device, m.sink});
  m.sink->push(proto::encode_ready(m.ref, m.user, m.device, rec.last_inbox_seq, from));
  replay_page(m.user, s, s.sessions.back(), from);
  prune(s);
}

void user_shard::replay_page(user_id u, user_state& s, device_session& d, uint64_t after) {
  auto& p = s.rec.pending;
  auto it = std::upper_bound(p.begin(), p.end(), after, [](uint64_t v, const inbox_entry& e) { return v < e.inbox_seq; });
  if (d.replaying && it != p.end() && it->inbox_seq > after + 1) {
    // The resume buffer overflowed (pending_max) while this device was catching up.
    d.sink->push(resume_too_old("", after, it->inbox_seq));
  }
  size_t bytes = 0;
  for (; it != p.end(); ++it) {
    if (bytes >= core_.options().users.replay_page_bytes) {
      d.replaying = true;
      d.replay_after = std::prev(it)->inbox_seq;
      auto* core = &core_;
      d.sink->replay_paused([core, u, w = std::weak_ptr<session_sink>(d.sink)] {
        core->users().cast(u, user_ops::more{u, w});
      });
      return;
    }
    auto frame = deliver_frame(s, *it);
    bytes += frame.size();
    d.sink->push(std::move(frame));
  }
  d.replaying = false;
}

void user_shard::handle(user_ops::more& m) {
  auto sink = m.sink.lock();
  auto it = users_.find(m.user);
  if (!sink || it == users_.end())
    return; // the session or the user went away meanwhile
  auto& s = it->second;
  for (auto& d : s.sessions)
    if (d.sink == sink && d.replaying)
      return replay_page(m.user, s, d, d.replay_after);
}

void user_shard::handle(user_ops::detach& m) {
  auto it = users_.find(m.user);
  if (it == users_.end())
    return;
  auto& ss = it->second.sessions;
  ss.erase(std::remove_if(ss.begin(), ss.end(), [&](auto& d) { return d.sink == m.sink; }), ss.end());
  if (auto d = it->second.rec.devices.find(m.device); d != it->second.rec.devices.end())
    d->second.seen_ms = wall_ms(); // idle from now on, not from its identify
}

void user_shard::handle(user_ops::deliver& m) {
  auto& s = load(m.user);
  applied_max_ = std::max(applied_max_, m.m->log_position);
  bool fresh = apply_deliver(m.user, s, m.m);
  auto& msg = *m.m;
  std::optional<time_point> now; // one clock reading for every latency series
  auto since = [&](time_point t) {
    if (!now)
      now = core_.time().now();
    return static_cast<uint64_t>(std::max<int64_t>(0, (*now - t).count()));
  };
  auto latency = [&] { return since(msg.received); };
  if (m.user != msg.msg.from && msg.durable != time_point{})
    core_.durable_to_owner().observe(since(msg.durable));
  // The session that sent the message already has it: its `stored` carries the inbox_seq in
  // place of a copy (the user's other sessions get the copy). A session still in its resume
  // replay gets the entry from `pending` in order, so its `stored` goes without one.
  const device_session* origin = nullptr;
  if (m.origin.sink) {
    for (auto& d : s.sessions)
      if (d.sink == m.origin.sink && !d.replaying)
        origin = &d;
    core_.send_to_stored().observe(latency());
    m.origin.sink->push(proto::encode_stored(m.origin.ref, msg.conversation, msg.seq, msg.msg.id, msg.msg.nonce,
                                             fresh && origin ? s.rec.last_inbox_seq : 0));
  }
  if (!fresh)
    return;
  std::string frame;
  for (auto& d : s.sessions) {
    if (d.replaying || &d == origin) // a replaying device gets it from `pending`, after what came before it
      continue;
    if (frame.empty()) {
      if (m.user != msg.msg.from)
        core_.send_to_deliver().observe(latency());
      frame = proto::encode_deliver(
        {s.rec.last_inbox_seq, msg.conversation, msg.seq, msg.msg.id, msg.msg.from, msg.msg.nonce, msg.msg.body});
    }
    d.sink->push(frame);
  }
}

void user_shard::handle(user_ops::ack& m) {
  auto& s = load(m.user);
  auto d = s.rec.devices.find(m.device);
  if (d == s.rec.devices.end())
    return; // forgotten meanwhile (replaced by newer devices): its acks hold nothing back
  d->second.seen_ms = wall_ms();
  auto v = std::min(m.inbox_seq, s.rec.last_inbox_seq);
  if (v > d->second.acked) {
    d->second.acked = v;
    s.dirty = true;
    prune(s);
  }
}

void user_shard::close_sessions_of(user_state& s, const std::string& device, std::string_view why) {
  std::erase_if(s.sessions, [&](device_session& d) {
    if (d.device != device)
      return false;
    d.sink->close(proto::close_session_replaced, std::string(why));
    return true;
  });
}

void user_shard::remember_device(user_state& s, const std::string& device, uint64_t acked) {
  make_room_for_device(s);
  s.rec.devices[device] = {acked, wall_ms()};
  s.dirty = true;
}

void user_shard::make_room_for_device(user_state& s) {
  auto& devs = s.rec.devices;
  while (!devs.empty() && devs.size() >= std::max<uint32_t>(core_.options().users.devices_max, 1)) {
    // The device seen longest ago, preferring one that is not connected.
    auto victim = std::min_element(devs.begin(), devs.end(), [&](auto& a, auto& b) {
      return std::pair(connected(s, a.first), a.second.seen_ms) < std::pair(connected(s, b.first), b.second.seen_ms);
    });
    close_sessions_of(s, victim->first, "too many devices for this user");
    devs.erase(victim);
    s.dirty = true;
  }
}

void user_shard::prune(user_state& s) {
  // A device gone quiet for device_forget_after no longer holds anything back.
  auto now = wall_ms();
  auto forget_after = core_.options().users.device_forget_after.count();
  for (auto it = s.rec.devices.begin(); it != s.rec.devices.end();) {
    if (now - it->second.seen_ms > forget_after && !connected(s, it->first)) {
      it = s.rec.devices.erase(it);
      s.dirty = true;
    } else {
      ++it;
    }
  }
  // An entry leaves the resume buffer once every known device acknowledged it.
  uint64_t min_acked = s.rec.last_inbox_seq;
  for (auto& [d, st] : s.rec.devices)
    min_acked = std::min(min_acked, st.acked);
  auto& p = s.rec.pending;
  auto keep = std::find_if(p.begin(), p.end(), [&](auto& e) { return e.inbox_seq > min_acked; });
  if (keep != p.begin()) {
    p.erase(p.begin(), keep);
    s.dirty = true;
  }
}

bool user_shard::checkpoint_user(std::unordered_map<user_id, user_state>::iterator& it, std::vector<std::string>* keys) {
  auto& [u, s] = *it;
  bool wrote = false;
  if (s.dirty) {
    auto key = user_key(u);
    cache_->put(u, key, s.rec.encode());
    if (keys)
      keys->push_back(std::move(key));
    s.dirty = false;
    wrote = true;
  }
  // Forgetting rides on the checkpoint's walk rather than a walk of its own every tick, which
  // cost a full pass over a million users five times a second. The record is in the cache now.
  if (s.sessions.empty())
    it = users_.erase(it);
  else
    ++it;
  return wrote;
}

void user_shard::checkpoint() {
  end_walk();
  bool wrote = false;
  for (auto it = users_.begin(); it != users_.end();)
    wrote |= checkpoint_user(it, nullptr);
  if (applied_max_ > checkpointed_ || wrote) {
    cache_->flush_all(store::checkpoint_mark{domain(), applied_max_});
    checkpointed_ = applied_max_;
    core_.checkpoints().inc();
  }
  last_checkpoint_ = core_.time().now();
}

void user_shard::begin_checkpoint() {
  end_walk();
  walk_mark_ = applied_max_;
  walk_wrote_ = false;
  walk_.reserve(users_.size());
  for (auto& [u, s] : users_)
    walk_.emplace_back(user_key_order(u), u);
  // In the order of their keys on disk, so that each slice's writes share B-tree pages: slices
  // of scattered users would dirty about one page per user, several times the pages of the same
  // users written at once.
  std::sort(walk_.begin(), walk_.end());
  const auto& o = core_.options();
  auto ticks = std::max<int64_t>(1, (o.checkpoint_interval / 2) / std::max(o.tick_interval, std::chrono::milliseconds(1)));
  walk_step_ = std::max<size_t>({1, o.checkpoint_slice_users, (walk_.size() + ticks - 1) / static_cast<size_t>(ticks)});
  core_.checkpoint_walk().add(static_cast<int64_t>(walk_.size()));
  last_checkpoint_ = core_.time().now();
  checkpoint_slice();
}

void user_shard::checkpoint_slice() {
  size_t start = walk_at_, end = std::min(walk_.size(), walk_at_ + walk_step_);
  std::vector<std::string> keys;
  for (; walk_at_ < end; ++walk_at_)
    if (auto it = users_.find(walk_[walk_at_].second); it != users_.end())
      walk_wrote_ |= checkpoint_user(it, &keys);
  core_.checkpoint_walk().add(-static_cast<int64_t>(end - start));
  if (walk_at_ < walk_.size()) {
    cache_->flush_keys(keys);
    return;
  }
  if (walk_mark_ > checkpointed_ || walk_wrote_) {
    // The mark goes with the last slice, the flushes still in flight (written again) and the
    // writes the store refused (their users are clean in memory: nothing else would write them).
    // Dirty keys the walk did not put, devices registered meanwhile and already on disk, wait for
    // the next walk.
    cache_->flush_keys(keys, store::checkpoint_mark{domain(), walk_mark_});
    checkpointed_ = walk_mark_;
    core_.checkpoints().inc();
  }
  end_walk();
}

void user_shard::end_walk() {
  core_.checkpoint_walk().add(-static_cast<int64_t>(walk_.size() - walk_at_));
  std::vector<std::pair<uint64_t, user_id>>().swap(walk_);
  walk_at_ = 0;
}

void user_shard::handle(user_ops::final_checkpoint& m) {
  // From here on the shard writes nothing more on its own (ticks stop flushing), and `done` waits
  // for every flush still in flight, not only this one: the store reports a flush through a
  // callback into this service, which must not outlive it.
  final_ = true;
  checkpoint();
  final_waiters_.push_back(m.done);
  settle_final_waiters();
}

void user_shard::settle_final_waiters() {
  if (cache_->flushes_in_flight() != 0)
    return;
  for (auto& w : final_waiters_)
    w->set_value();
  final_waiters_.clear();
}

void user_shard::handle(user_ops::tick&) {
  if (final_)
    return;
  auto now = core_.time().now();
  if (!walk_.empty())
    checkpoint_slice();
  else if (now - last_checkpoint_ >= core_.options().checkpoint_interval)
    begin_checkpoint();
  else
    cache_->flush();
  core_.users().cast_later(ctx_.index(), core_.options().tick_interval, user_ops::tick{});
}

void user_shard::handle(user_ops::flushed& m) {
  cache_->on_flushed(m.ticket, m.status);
  settle_final_waiters();
  if (m.status != store::write_status::durable) {
    // The checkpoint did not land: take it again at the next interval.
    checkpointed_ = 0;
    log::warn("users", "shard {} flush failed: {}", ctx_.index(), store::to_string(m.status));
  }
}

} // namespace agner::chat
