#include "loadgen/local_transports.hpp"

#include "chat/core.hpp"
#include "chat/ids.hpp"
#include "chat/protocol.hpp"

#include <fmt/format.h>

namespace agner::loadgen {

// --- frame_queue ----------------------------------------------------------------------------

void frame_queue::put(item it) {
  bool wake;
  {
    std::lock_guard lock(mu_);
    items_.push_back(std::move(it));
    wake = waiting_ && items_.size() == 1;
  }
  if (wake)
    cv_.notify_one();
}

void frame_queue::take(std::vector<item>& out) {
  out.clear();
  std::lock_guard lock(mu_);
  out.swap(items_);
}

void frame_queue::wait(std::chrono::nanoseconds timeout) {
  std::unique_lock lock(mu_);
  if (!items_.empty())
    return;
  waiting_ = true;
  cv_.wait_for(lock, timeout, [&] { return !items_.empty(); });
  waiting_ = false;
}

// --- inproc_transport ---------------------------------------------------------------------------

/// What the chat core holds of an in-process device: frames go to the driver's queue.
class inproc_transport::sink final : public chat::session_sink {
public:
  sink(frame_queue& q, uint32_t slot, uint32_t session, std::string device)
      : q_(q), slot_(slot), session_(session), device_(std::move(device)) {}
  void push(std::string frame) override { q_.put({slot_, session_, false, std::move(frame)}); }
  void close(uint16_t, std::string) override { q_.put({slot_, session_, true, {}}); }
  const std::string& device() const noexcept { return device_; }

private:
  frame_queue& q_;
  uint32_t slot_;
  uint32_t session_;
  std::string device_;
};

inproc_transport::inproc_transport(chat::chat_core& core, std::function<sim_ns()> now) : core_(core), now_(std::move(now)) {}

inproc_transport::~inproc_transport() = default;

void inproc_transport::open(uint32_t slot, uint32_t, user_ref user, std::string_view device,
                            std::optional<uint64_t> resume_from) {
  if (slot >= sessions_.size())
    sessions_.resize(slot + 1);
  auto& s = sessions_[slot];
  s.id = next_session_++;
  s.user = user;
  s.s = std::make_shared<sink>(q_, slot, s.id, std::string(device));
  core_.attach(user, std::string(device), resume_from, s.s, "i");
}

void inproc_transport::close(uint32_t slot) {
  if (slot >= sessions_.size() || !sessions_[slot].s)
    return;
  auto& s = sessions_[slot];
  core_.detach(s.user, s.s->device(), s.s);
  s.s.reset();
  s.id = 0;
  if (d_)
    d_->on_closed(slot, now_());
}

void inproc_transport::send(uint32_t slot, user_ref to, std::string_view nonce, std::string_view body, std::string_view ref) {
  auto& s = sessions_[slot];
  if (s.s)
    core_.send(s.user, to, std::string(nonce), std::string(body), s.s, std::string(ref));
}

void inproc_transport::ack(uint32_t slot, uint64_t inbox_seq) {
  auto& s = sessions_[slot];
  if (s.s)
    core_.ack(s.user, s.s->device(), inbox_seq);
}

size_t inproc_transport::poll() {
  q_.take(batch_);
  for (auto& it : batch_) {
    if (it.slot >= sessions_.size() || sessions_[it.slot].id != it.session)
      continue; // a frame of a session the driver already closed
    if (it.closed) {
      sessions_[it.slot].s.reset();
      sessions_[it.slot].id = 0;
      if (d_)
        d_->on_closed(it.slot, now_());
    } else if (d_) {
      d_->on_frame(it.slot, it.frame, now_());
    }
  }
  return batch_.size();
}

size_t inproc_transport::memory_bytes() const noexcept {
  size_t live = 0;
  for (auto& s : sessions_)
    live += s.s != nullptr;
  // make_shared: the control block and the sink in one allocation (~16 bytes of malloc overhead).
  return sessions_.capacity() * sizeof(session) + live * (sizeof(sink) + 16 + 16);
}

// --- null_transport -----------------------------------------------------------------------------

null_transport::null_transport(std::function<sim_ns()> now) : now_(std::move(now)) {}

void null_transport::open(uint32_t slot, uint32_t, user_ref user, std::string_view device, std::optional<uint64_t> resume_from) {
  if (slot >= slots_.size())
    slots_.resize(slot + 1);
  auto& s = slots_[slot];
  auto& u = users_[user];
  s.user = user;
  s.device = device;
  s.open = true;
  ++s.session;
  // As the real server: a resume position if given; else where this device started (a new device
  // starts at the end of the inbox).
  uint64_t from = resume_from ? *resume_from : (s.base_set ? s.base : u.inbox.size());
  if (!s.base_set) {
    s.base = from;
    s.base_set = true;
  }
  out_.push_back({slot, s.session, false, chat::proto::encode_ready("i", user, device, u.inbox.size(), from)});
  for (uint64_t i = from; i < u.inbox.size(); ++i)
    out_.push_back({slot, s.session, false, u.inbox[i]});
  u.slots.push_back(slot);
}

void null_transport::close(uint32_t slot) {
  auto& s = slots_[slot];
  if (!s.open)
    return;
  s.open = false;
  auto& v = users_[s.user].slots;
  std::erase(v, slot);
  if (d_)
    d_->on_closed(slot, now_());
}

void null_transport::send(uint32_t slot, user_ref to, std::string_view nonce, std::string_view body, std::string_view ref) {
  auto& s = slots_[slot];
  if (!s.open)
    return;
  auto key = fmt::format("{}/{}", s.user, nonce);
  if (auto it = nonces_.find(key); it != nonces_.end()) {
    out_.push_back({slot, s.session, false, chat::proto::encode_stored(ref, it->second.conversation, it->second.seq, it->second.id, nonce)});
    return;
  }
  auto conv = chat::direct_conversation(s.user, to);
  stored_msg m{conv, ++conv_seq_[conv], next_id_++};
  nonces_.emplace(std::move(key), m);
  user_ref from = s.user;
  uint64_t own_inbox_seq = 0;
  for (user_ref u : {to, from}) {
    auto& us = users_[u];
    auto frame = chat::proto::encode_deliver({us.inbox.size() + 1, conv, m.seq, m.id, from, nonce, body});
    for (auto sl : us.slots)
      if (u != from || sl != slot) // as the node does: the sending session gets `stored` instead
        out_.push_back({sl, slots_[sl].session, false, frame});
    if (u == from)
      own_inbox_seq = us.inbox.size() + 1;
    us.inbox.push_back(std::move(frame));
    if (to == from)
      break;
  }
  out_.push_back({slot, s.session, false, chat::proto::encode_stored(ref, m.conversation, m.seq, m.id, nonce, own_inbox_seq)});
}

void null_transport::ack(uint32_t, uint64_t) {}

size_t null_transport::poll() {
  size_t n = 0;
  while (!out_.empty() && n < 100'000) {
    auto it = std::move(out_.front());
    out_.pop_front();
    ++n;
    if (d_ && slots_[it.slot].open && slots_[it.slot].session == it.session)
      d_->on_frame(it.slot, it.frame, now_());
  }
  return n;
}

} // namespace agner::loadgen
