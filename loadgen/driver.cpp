#include "loadgen/driver.hpp"

#include "loadgen/codec.hpp"
#include "runtime/hash.hpp"

#include <boost/json/monotonic_resource.hpp>
#include <boost/json/parse.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <charconv>

namespace agner::loadgen {

namespace json = boost::json;

namespace {

std::optional<uint64_t> to_u64(std::string_view s) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty())
    return std::nullopt;
  return v;
}

/// A decimal-string (or number) field of a server frame.
std::optional<uint64_t> id_field(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  if (!v)
    return std::nullopt;
  if (v->is_string())
    return to_u64(v->get_string());
  if (v->is_uint64())
    return v->get_uint64();
  if (v->is_int64() && v->get_int64() >= 0)
    return static_cast<uint64_t>(v->get_int64());
  return std::nullopt;
}

std::string_view str_field(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  if (!v || !v->is_string())
    return {};
  return v->get_string();
}

constexpr sim_ns sweep_ns = 100 * ns_per_ms;
constexpr size_t json_scratch_bytes = 16 * 1024;

} // namespace

std::string device_name(device_id d) { return fmt::format("d{}", d); }

// --- directory ------------------------------------------------------------------------------

directory::directory(std::vector<user_ref> users, uint32_t nodes) : users_(std::move(users)), nodes_(std::max(nodes, 1u)) {
  by_user_.resize(nodes_);
  for (phone_id p = 0; p < users_.size(); ++p)
    by_user_[node_of(p)].emplace_back(users_[p], p);
  for (auto& v : by_user_)
    std::sort(v.begin(), v.end());
}

phone_id directory::phone_of(uint32_t node, uint64_t u) const noexcept {
  if (node >= by_user_.size() || u > UINT32_MAX)
    return unknown_phone;
  auto& v = by_user_[node];
  auto it = std::lower_bound(v.begin(), v.end(), std::pair<user_ref, phone_id>(static_cast<user_ref>(u), 0));
  if (it == v.end() || it->first != u)
    return unknown_phone;
  return it->second;
}

std::string directory::serialize() const {
  records_codec c;
  c.out.append("AGNERDIR");
  c.u64(nodes_);
  c.u64(users_.size());
  for (auto u : users_)
    c.u64(u);
  return std::move(c.out);
}

directory directory::deserialize(std::string_view bytes) {
  if (bytes.substr(0, 8) != "AGNERDIR")
    throw std::runtime_error("loadgen directory: bad magic");
  records_codec c;
  c.in = bytes.substr(8);
  auto nodes = static_cast<uint32_t>(c.get64());
  uint64_t n = c.count();
  std::vector<user_ref> users(n);
  for (auto& u : users)
    u = static_cast<user_ref>(c.get64());
  return directory(std::move(users), nodes);
}

// --- driver ---------------------------------------------------------------------------------

size_t driver::send_key_hash::operator()(const send_key& k) const noexcept { return mix64(k.nonce ^ mix64(k.phone)); }

driver::driver(const population& pop, schedule& sched, recorder& rec, timeline& tl, const directory& dir, transport& t,
               uint32_t worker, uint32_t workers, driver_options o)
    : pop_(pop), sched_(sched), rec_(rec), tl_(tl), dir_(dir), t_(t), worker_(worker), workers_(workers), o_(o),
      json_buf_(json_scratch_bytes) {
  for (phone_id p = worker; p < pop.phones(); p += workers) {
    first_slot_.push_back(static_cast<uint32_t>(devs_.size()));
    for (int d = 0; d < pop.devices_of(p); ++d) {
      auto& s = devs_.emplace_back();
      s.phone = p;
      s.device = static_cast<device_id>(d);
    }
  }
}

uint32_t driver::slot_of(phone_id p, device_id d) const noexcept { return first_slot_[p / workers_] + d; }

size_t driver::memory_bytes() const noexcept {
  return first_slot_.capacity() * sizeof(uint32_t) + devs_.capacity() * sizeof(device_state) +
         outbox_.size() * (sizeof(send_key) + sizeof(outgoing) + 2 * sizeof(void*)) + outbox_.bucket_count() * sizeof(void*) +
         outbox_by_slot_.size() * (sizeof(uint32_t) + sizeof(std::vector<uint64_t>) + 2 * sizeof(void*) + sizeof(uint64_t)) +
         outbox_by_slot_.bucket_count() * sizeof(void*) + reconnect_at_.capacity() * sizeof(reconnect_at_[0]) +
         json_buf_.capacity();
}

void driver::step(sim_ns now) {
  if (!draining_)
    while (auto e = sched_.next_event(now))
      handle(*e, now);
  if (now - last_sweep_ >= sweep_ns || (!reconnect_at_.empty() && reconnect_at_.front().first <= now))
    sweep(now);
}

sim_ns driver::next_wake() const noexcept {
  sim_ns w = last_sweep_ + sweep_ns;
  if (!draining_)
    w = std::min(w, sched_.next_due());
  if (!reconnect_at_.empty())
    w = std::min(w, reconnect_at_.front().first);
  return w;
}

void driver::handle(const event& e, sim_ns now) {
  uint32_t slot = slot_of(e.phone, e.device);
  auto& d = devs_[slot];
  switch (e.what) {
  case action::connect:
    d.want = true;
    if (d.state == conn::offline && !d.reconnect_due)
      open(slot, now);
    break;
  case action::disconnect:
    d.want = false;
    if (d.state != conn::offline)
      t_.close(slot);
    break;
  case action::typing:
    break; // the protocol has no typing notification yet
  case action::send: {
    auto [it, added] = outbox_.try_emplace(send_key{e.phone, e.nonce}, outgoing{e.peer, e.device, 0, false});
    if (added) {
      ++stats_.outbox;
      outbox_by_slot_[slot].push_back(e.nonce);
    }
    if (d.state == conn::ready)
      transmit(slot, e.phone, e.nonce, it->second, now);
    break;
  }
  case action::read:
    rec_.read(e.phone, e.device, e.inbox_seq, now);
    d.read_upto = std::max(d.read_upto, e.inbox_seq);
    maybe_ack(slot, now);
    break;
  }
}

void driver::open(uint32_t slot, sim_ns now) {
  auto& d = devs_[slot];
  d.state = conn::opening;
  d.last_tx = now;
  ++stats_.opening;
  std::optional<uint64_t> resume;
  if (d.received)
    resume = d.highest;
  t_.open(slot, dir_.node_of(d.phone), dir_.user_of(d.phone), device_name(d.device), resume);
}

std::string driver::body_for(sim_ns now) const {
  auto b = fmt::format("t{}.", now);
  if (b.size() < o_.body_bytes)
    b.append(o_.body_bytes - b.size(), 'x');
  return b;
}

void driver::transmit(uint32_t slot, phone_id p, uint64_t nonce, outgoing& o, sim_ns now) {
  auto n = fmt::format_int(nonce);
  auto ref = fmt::format("s{}", nonce);
  t_.send(slot, dir_.user_of(o.peer), n.str(), body_for(now), ref);
  rec_.sent(p, o.device, nonce, o.peer, now);
  if (!o.first_sent) {
    o.first_sent = true;
    ++stats_.sent;
    ++tl_.at(now).sent;
  } else {
    ++stats_.resent;
  }
  o.next_try = now + o_.resend_ns;
  devs_[slot].last_tx = now;
}

void driver::flush_outbox(uint32_t slot, sim_ns now) {
  auto mine = outbox_by_slot_.find(slot);
  if (mine == outbox_by_slot_.end())
    return;
  phone_id p = devs_[slot].phone;
  for (uint64_t nonce : mine->second)
    if (auto it = outbox_.find(send_key{p, nonce}); it != outbox_.end())
      transmit(slot, p, nonce, it->second, now);
}

void driver::outbox_erase(uint32_t slot, uint64_t nonce) {
  auto mine = outbox_by_slot_.find(slot);
  if (mine == outbox_by_slot_.end())
    return;
  auto& v = mine->second;
  // Erase in place (a device has few sends waiting), so resends keep the order of the first sends.
  if (auto it = std::find(v.begin(), v.end(), nonce); it != v.end())
    v.erase(it);
  if (v.empty())
    outbox_by_slot_.erase(mine);
}

void driver::maybe_ack(uint32_t slot, sim_ns now) {
  auto& d = devs_[slot];
  if (d.state != conn::ready || d.read_upto <= d.acked)
    return;
  d.acked = d.read_upto;
  d.last_tx = now;
  t_.ack(slot, d.acked);
}

void driver::sweep(sim_ns now) {
  bool heartbeats = o_.heartbeat_ns > 0 && now / ns_per_s != last_sweep_ / ns_per_s;
  last_sweep_ = now;
  while (!reconnect_at_.empty() && reconnect_at_.front().first <= now) {
    std::pop_heap(reconnect_at_.begin(), reconnect_at_.end(), std::greater<>());
    uint32_t slot = reconnect_at_.back().second;
    reconnect_at_.pop_back();
    auto& d = devs_[slot];
    d.reconnect_due = false;
    if (d.want && d.state == conn::offline)
      open(slot, now);
  }
  // Resends are due seconds apart: a walk every 50 ms is late by at most that, and keeps a large
  // outbox from being walked on every step.
  constexpr sim_ns retry_walk_ns = 50 * ns_per_ms;
  if (now >= next_retry_walk_) {
    next_retry_walk_ = now + retry_walk_ns;
    for (auto& [k, o] : outbox_)
      if (o.next_try <= now) {
        uint32_t slot = slot_of(k.phone, o.device);
        if (devs_[slot].state == conn::ready)
          transmit(slot, k.phone, k.nonce, o, now);
      }
  }
  if (heartbeats)
    for (uint32_t slot = 0; slot < devs_.size(); ++slot) {
      auto& d = devs_[slot];
      if (d.state == conn::ready && now - d.last_tx >= o_.heartbeat_ns) {
        d.last_tx = now;
        t_.heartbeat(slot);
      }
    }
  tl_.at(now).connected = stats_.ready;
}

void driver::on_closed(uint32_t slot, sim_ns now) {
  auto& d = devs_[slot];
  if (d.state == conn::ready)
    --stats_.ready;
  else if (d.state == conn::opening)
    --stats_.opening;
  else
    return; // already offline
  d.state = conn::offline;
  if (!d.want || d.reconnect_due)
    return;
  ++stats_.closed;
  // Exponential backoff with jitter, so a restarted node is not hit by every phone at once.
  sim_ns base = std::min(o_.reconnect_max_ns, o_.reconnect_min_ns << std::min<int>(d.backoff_steps, 20));
  d.backoff_steps = static_cast<uint16_t>(std::min<int>(d.backoff_steps + 1, 20));
  uint64_t r = mix64(static_cast<uint64_t>(now) ^ (uint64_t{slot} << 20));
  sim_ns delay = base / 2 + static_cast<sim_ns>(r % static_cast<uint64_t>(std::max<sim_ns>(base, 1)));
  d.reconnect_due = true;
  reconnect_at_.emplace_back(now + delay, slot);
  std::push_heap(reconnect_at_.begin(), reconnect_at_.end(), std::greater<>());
}

void driver::on_frame(uint32_t slot, std::string_view text, sim_ns now) {
  while (!text.empty()) {
    auto nl = text.find('\n');
    handle_frame(slot, text.substr(0, nl), now);
    if (nl == std::string_view::npos)
      break;
    text.remove_prefix(nl + 1);
  }
}

void driver::handle_frame(uint32_t slot, std::string_view text, sim_ns now) {
  ++stats_.frames_in;
  json::monotonic_resource mr(json_buf_.data(), json_buf_.size());
  boost::system::error_code ec;
  auto v = json::parse(json::string_view(text.data(), text.size()), ec, &mr);
  if (ec || !v.is_object()) {
    ++stats_.errors;
    ++tl_.at(now).errors;
    return;
  }
  auto& o = v.get_object();
  auto op = str_field(o, "op");
  auto& d = devs_[slot];
  if (op != "heartbeat_ack" && op != "hello")
    last_frame_ = now; // the drain waits for quiet: heartbeats go on forever
  // An entry of the device's inbox: a deliver, or the `stored` of a message this connection sent.
  auto inbox_entry = [&](phone_id sender, uint64_t nonce, uint64_t inbox_seq) {
    delivery x;
    x.owner = d.phone;
    x.device = d.device;
    x.conversation = id_field(o, "conversation").value_or(0);
    x.seq = id_field(o, "seq").value_or(0);
    x.id = id_field(o, "id").value_or(0);
    x.sender = sender;
    x.nonce = nonce;
    x.inbox_seq = inbox_seq;
    x.at = now;
    rec_.delivered(x);
    d.highest = std::max(d.highest, x.inbox_seq);
    d.received = true;
    if (!draining_)
      sched_.on_delivered(d.phone, d.device, x.inbox_seq, now);
    return x;
  };
  if (op == "deliver") {
    auto x = inbox_entry(dir_.phone_of(dir_.node_of(d.phone), id_field(o, "from").value_or(0)),
                         to_u64(str_field(o, "nonce")).value_or(UINT64_MAX), id_field(o, "inbox_seq").value_or(0));
    if (x.sender != d.phone) {
      ++stats_.delivered;
      auto& b = tl_.at(now);
      ++b.delivered;
      auto body = str_field(o, "body");
      if (body.starts_with('t'))
        if (auto sent = to_u64(body.substr(1, body.find('.') - 1)); sent && static_cast<sim_ns>(*sent) <= now) {
          b.latency.observe(static_cast<uint64_t>(now - static_cast<sim_ns>(*sent)));
          stats_.recent_latency.observe(static_cast<uint64_t>(now - static_cast<sim_ns>(*sent)));
        }
    }
  } else if (op == "stored") {
    auto nonce = to_u64(str_field(o, "nonce"));
    if (!nonce)
      return;
    rec_.stored(d.phone, *nonce, id_field(o, "conversation").value_or(0), id_field(o, "seq").value_or(0),
                id_field(o, "id").value_or(0), now);
    // The sending connection gets no deliver of its own message: `stored` is its inbox entry.
    if (auto inbox_seq = id_field(o, "inbox_seq"))
      inbox_entry(d.phone, *nonce, *inbox_seq);
    if (auto it = outbox_.find(send_key{d.phone, *nonce}); it != outbox_.end()) {
      outbox_erase(slot_of(d.phone, it->second.device), *nonce);
      outbox_.erase(it);
      --stats_.outbox;
      ++stats_.stored;
      ++tl_.at(now).stored;
    }
  } else if (op == "ready") {
    if (d.state == conn::opening) {
      --stats_.opening;
      ++stats_.ready;
      d.state = conn::ready;
    }
    d.backoff_steps = 0;
    // The replay starts after resume_from: that is the device's position from now on, so a
    // reconnect resumes from it even if nothing was delivered yet (docs/protocol.md).
    if (auto from = id_field(o, "resume_from")) {
      d.highest = std::max(d.highest, *from);
      d.received = true;
    }
    rec_.ready(d.phone, d.device, now);
    flush_outbox(slot, now);
    maybe_ack(slot, now);
  } else if (op == "error") {
    ++stats_.errors;
    ++tl_.at(now).errors;
    if (str_field(o, "code") == "resume_too_old")
      ++stats_.resume_too_old;
    auto ref = str_field(o, "ref");
    if (ref.starts_with('s'))
      if (auto nonce = to_u64(ref.substr(1)))
        if (auto it = outbox_.find(send_key{d.phone, *nonce}); it != outbox_.end())
          it->second.next_try = now + o_.retry_after_error_ns;
  }
  // hello, heartbeat_ack, history: nothing to do
}

void driver::start_drain(sim_ns now) {
  draining_ = true;
  for (uint32_t slot = 0; slot < devs_.size(); ++slot) {
    auto& d = devs_[slot];
    d.want = true;
    if (d.state == conn::offline && !d.reconnect_due)
      open(slot, now);
  }
}

bool driver::drained(sim_ns now, sim_ns quiet_ns) const noexcept {
  return draining_ && stats_.ready == devs_.size() && outbox_.empty() && now - last_frame_ >= quiet_ns;
}

void driver::close_all() {
  for (uint32_t slot = 0; slot < devs_.size(); ++slot) {
    auto& d = devs_[slot];
    d.want = false;
    if (d.state != conn::offline)
      t_.close(slot);
  }
}

} // namespace agner::loadgen
