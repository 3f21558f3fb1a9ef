// The oracle's recorder (per worker, online) and its join (in the parent, at the end).
// Only device-local checks run online (seq order, send->stored latency); everything that needs
// both the sender's and the receiver's view is computed by sorting the records and merging them.
#include "loadgen/accounting.hpp"
#include "loadgen/codec.hpp"

#include "runtime/hash.hpp"
#include "runtime/metrics.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <tuple>

namespace agner::loadgen {

static_assert(latency_histogram::bucket_count == metrics::histogram::bucket_count);
static_assert(sizeof(send_record) == 48, "the per-message memory figure in docs/loadgen.md");
static_assert(sizeof(delivery_record) == 48, "the per-delivery memory figure in docs/loadgen.md");

namespace {

constexpr uint32_t empty_slot = UINT32_MAX;
/// The index starts small and doubles; 3/4 keeps linear probing short.
constexpr size_t index_initial = 1024;
constexpr size_t index_load_num = 3, index_load_den = 4;

uint64_t message_hash(phone_id sender, uint64_t nonce) noexcept { return mix64(mix64(sender + 1) ^ nonce); }
uint64_t device_key(phone_id user, device_id d) noexcept { return uint64_t{user} << 8 | d; }

template <class V>
void keep_example(V& v, const typename V::value_type& x) {
  if (v.size() < examples_max)
    v.push_back(x);
}

} // namespace

// --- latency_histogram ---------------------------------------------------------------------

void latency_histogram::observe(uint64_t ns) noexcept {
  ++buckets_[static_cast<size_t>(metrics::histogram::bucket_of(ns))];
  ++count_;
  sum_ += ns;
}

void latency_histogram::merge(const latency_histogram& other) noexcept {
  for (size_t b = 0; b < buckets_.size(); ++b)
    buckets_[b] += other.buckets_[b];
  count_ += other.count_;
  sum_ += other.sum_;
}

uint64_t latency_histogram::quantile(double q) const noexcept {
  return metrics::histogram::quantile_of([this](int b) { return buckets_[static_cast<size_t>(b)]; }, count_, q);
}

// --- recorder ------------------------------------------------------------------------------

size_t recorder::order_hash::operator()(const order_key& k) const noexcept {
  return mix64(k.conversation ^ mix64(device_key(k.owner, k.device)));
}

void recorder::grow_index() {
  size_t n = index_.empty() ? index_initial : index_.size() * 2;
  std::vector<uint32_t> next(n, empty_slot);
  for (uint32_t i = 0; i < r_.sends.size(); ++i) {
    size_t h = message_hash(r_.sends[i].sender, r_.sends[i].nonce) & (n - 1);
    while (next[h] != empty_slot)
      h = (h + 1) & (n - 1);
    next[h] = i;
  }
  index_.swap(next);
}

send_record& recorder::find_or_add(phone_id sender, uint64_t nonce, bool& added) {
  if ((r_.sends.size() + 1) * index_load_den > index_.size() * index_load_num)
    grow_index();
  size_t mask = index_.size() - 1;
  size_t h = message_hash(sender, nonce) & mask;
  while (index_[h] != empty_slot) {
    auto& s = r_.sends[index_[h]];
    if (s.sender == sender && s.nonce == nonce) {
      added = false;
      return s;
    }
    h = (h + 1) & mask;
  }
  if (r_.sends.size() >= empty_slot)
    throw std::length_error("recorder: more than 2^32-1 messages in one worker");
  index_[h] = static_cast<uint32_t>(r_.sends.size());
  added = true;
  auto& s = r_.sends.emplace_back();
  s.sender = sender;
  s.nonce = nonce;
  return s;
}

void recorder::ready(phone_id user, device_id device, sim_ns at) {
  auto [it, added] = device_index_.try_emplace(device_key(user, device), static_cast<uint32_t>(r_.devices.size()));
  if (added)
    r_.devices.push_back({user, device, at, at});
  auto& d = r_.devices[it->second];
  d.first_ready = std::min(d.first_ready, at);
  d.last_ready = std::max(d.last_ready == sim_never ? at : d.last_ready, at);
}

void recorder::sent(phone_id sender, device_id device, uint64_t nonce, phone_id recipient, sim_ns at) {
  bool added;
  auto& s = find_or_add(sender, nonce, added);
  if (added || (s.flags & send_record::without_send_bit)) {
    s.recipient = recipient;
    s.device = device;
    s.sent_at = at;
    s.flags &= static_cast<uint8_t>(~send_record::without_send_bit);
  }
  s.sent_at = std::min(s.sent_at, at);
  if (s.attempts < UINT16_MAX)
    ++s.attempts;
}

void recorder::stored(phone_id sender, uint64_t nonce, uint64_t conversation, uint64_t seq, uint64_t id, sim_ns at) {
  bool added;
  auto& s = find_or_add(sender, nonce, added);
  if (added) {
    // The driver acked something it never reported sending: keep it, flagged, with no latency.
    s.sent_at = at;
    s.flags |= send_record::without_send_bit;
  }
  if (!(s.flags & send_record::stored_bit)) {
    s.flags |= send_record::stored_bit;
    s.id = id;
    s.stored_at = at;
    if (!(s.flags & send_record::without_send_bit))
      r_.send_to_stored.observe(static_cast<uint64_t>(std::max<sim_ns>(0, at - s.sent_at)));
  } else if (s.id != id) {
    s.flags |= send_record::conflict_bit;
  }
}

void recorder::delivered(const delivery& d) {
  r_.deliveries.push_back({d.nonce, d.id, d.inbox_seq, d.at, d.owner, d.sender, d.device});
  // A seq below the highest one this device already has for this conversation is an order
  // violation; an equal seq is the same message again (a duplicate, counted by the join).
  auto [it, added] = last_seq_.try_emplace(order_key{d.conversation, d.owner, d.device}, d.seq);
  if (!added) {
    if (d.seq < it->second) {
      r_.order_suspects.push_back(r_.deliveries.back());
    } else {
      it->second = d.seq;
    }
  }
}

void recorder::read(phone_id owner, device_id device, uint64_t inbox_seq, sim_ns at) { ++r_.reads; }

worker_records recorder::take() {
  worker_records out = std::move(r_);
  r_ = {};
  index_.clear();
  device_index_.clear();
  last_seq_.clear();
  return out;
}

size_t recorder::memory_bytes() const noexcept {
  // Hash-map nodes: the key, the value, a next pointer and the cached hash, rounded by malloc.
  constexpr size_t node_overhead = 2 * sizeof(void*);
  return r_.sends.capacity() * sizeof(send_record) + r_.deliveries.capacity() * sizeof(delivery_record) +
         r_.devices.capacity() * sizeof(device_record) + index_.capacity() * sizeof(uint32_t) +
         device_index_.size() * (sizeof(std::pair<uint64_t, uint32_t>) + node_overhead) +
         device_index_.bucket_count() * sizeof(void*) +
         last_seq_.size() * (sizeof(std::pair<order_key, uint64_t>) + node_overhead) +
         last_seq_.bucket_count() * sizeof(void*);
}

// --- the join ------------------------------------------------------------------------------

uint64_t accounting_result::violations(bool strict) const noexcept {
  uint64_t v = lost_deliveries + unexpected_deliveries;
  if (strict)
    v += duplicates + order_violations + nonce_conflicts;
  return v;
}

accounting_result analyze(std::span<const worker_records> workers, const analyze_options& o) {
  accounting_result r;
  std::vector<send_record> sends;
  std::vector<delivery_record> dels;
  std::vector<device_record> devs;
  std::vector<delivery_record> suspects;
  for (const auto& w : workers) {
    sends.insert(sends.end(), w.sends.begin(), w.sends.end());
    dels.insert(dels.end(), w.deliveries.begin(), w.deliveries.end());
    devs.insert(devs.end(), w.devices.begin(), w.devices.end());
    suspects.insert(suspects.end(), w.order_suspects.begin(), w.order_suspects.end());
    r.reads += w.reads;
    r.send_to_stored.merge(w.send_to_stored);
  }

  // One record per message, even if a message was (wrongly) recorded by two workers.
  std::sort(sends.begin(), sends.end(), [](const auto& a, const auto& b) {
    return std::tie(a.sender, a.nonce, a.sent_at) < std::tie(b.sender, b.nonce, b.sent_at);
  });
  size_t out = 0;
  for (size_t i = 0; i < sends.size(); ++i) {
    if (out > 0 && sends[out - 1].sender == sends[i].sender && sends[out - 1].nonce == sends[i].nonce) {
      auto& m = sends[out - 1];
      const auto& x = sends[i];
      if ((m.flags & x.flags & send_record::stored_bit) && m.id != x.id)
        m.flags |= send_record::conflict_bit;
      if (!(m.flags & send_record::stored_bit) && (x.flags & send_record::stored_bit)) {
        m.id = x.id;
        m.stored_at = x.stored_at;
      }
      m.stored_at = std::min(m.stored_at, x.stored_at);
      m.flags |= x.flags & (send_record::stored_bit | send_record::conflict_bit);
      m.attempts = static_cast<uint16_t>(std::min<uint32_t>(UINT16_MAX, uint32_t{m.attempts} + x.attempts));
      continue;
    }
    sends[out++] = sends[i];
  }
  sends.resize(out);

  std::sort(devs.begin(), devs.end(),
            [](const auto& a, const auto& b) { return std::tie(a.user, a.device) < std::tie(b.user, b.device); });
  out = 0;
  for (size_t i = 0; i < devs.size(); ++i) {
    if (out > 0 && devs[out - 1].user == devs[i].user && devs[out - 1].device == devs[i].device) {
      devs[out - 1].first_ready = std::min(devs[out - 1].first_ready, devs[i].first_ready);
      devs[out - 1].last_ready = std::max(devs[out - 1].last_ready, devs[i].last_ready);
      continue;
    }
    devs[out++] = devs[i];
  }
  devs.resize(out);
  auto devices_of = [&](phone_id user) {
    auto lo = std::lower_bound(devs.begin(), devs.end(), user, [](const auto& d, phone_id u) { return d.user < u; });
    auto hi = std::upper_bound(lo, devs.end(), user, [](phone_id u, const auto& d) { return u < d.user; });
    return std::span<const device_record>(lo, hi);
  };

  std::sort(dels.begin(), dels.end(), [](const auto& a, const auto& b) {
    return std::tie(a.sender, a.nonce, a.owner, a.device, a.at, a.inbox_seq) <
           std::tie(b.sender, b.nonce, b.owner, b.device, b.at, b.inbox_seq);
  });
  r.deliveries = dels.size();

  struct got { // one (owner, device) that received the message
    phone_id owner;
    device_id device;
  };
  std::vector<got> received;
  size_t di = 0;
  auto same_message = [](const delivery_record& d, phone_id s, uint64_t n) { return d.sender == s && d.nonce == n; };

  auto unexpected_group = [&] {
    // The deliveries of one (sender, nonce) with no send record: all unexpected.
    size_t end = di;
    while (end < dels.size() && same_message(dels[end], dels[di].sender, dels[di].nonce))
      ++end;
    ++r.unexpected_messages;
    r.unexpected_deliveries += end - di;
    for (size_t k = di; k < end; ++k)
      keep_example(r.unexpected_examples, {dels[k].sender, dels[k].nonce, dels[k].owner, dels[k].device});
    di = end;
  };

  for (const auto& s : sends) {
    while (di < dels.size() && std::tie(dels[di].sender, dels[di].nonce) < std::tie(s.sender, s.nonce))
      unexpected_group();
    bool is_stored = s.flags & send_record::stored_bit;
    bool conflict = s.flags & send_record::conflict_bit;
    if (s.flags & send_record::without_send_bit)
      ++r.stored_without_send;
    else
      ++r.messages_sent;
    r.send_retries += s.attempts > 1 ? s.attempts - 1u : 0u;
    if (is_stored)
      ++r.messages_stored;
    else
      ++r.messages_unacked;

    received.clear();
    while (di < dels.size() && same_message(dels[di], s.sender, s.nonce)) {
      size_t end = di;
      while (end < dels.size() && same_message(dels[end], s.sender, s.nonce) && dels[end].owner == dels[di].owner &&
             dels[end].device == dels[di].device)
        ++end;
      const auto& first = dels[di];
      if (first.owner != s.sender && first.owner != s.recipient) {
        r.misdirected_deliveries += end - di;
        r.unexpected_deliveries += end - di;
        keep_example(r.unexpected_examples, {s.sender, s.nonce, first.owner, first.device});
      } else {
        received.push_back({first.owner, first.device});
        for (size_t k = di + 1; k < end; ++k) {
          ++r.duplicates;
          bool replay = false;
          for (size_t j = di; j < k; ++j)
            replay = replay || dels[j].inbox_seq == dels[k].inbox_seq;
          r.duplicates_replayed += replay;
          keep_example(r.duplicate_examples, {s.sender, s.nonce, first.owner, first.device});
        }
        for (size_t k = di; k < end; ++k)
          conflict = conflict || (is_stored && dels[k].id != s.id);
        if (first.owner == s.recipient && !(s.flags & send_record::without_send_bit))
          r.send_to_delivered.observe(static_cast<uint64_t>(std::max<sim_ns>(0, first.at - s.sent_at)));
      }
      di = end;
    }
    r.nonce_conflicts += conflict;
    if (!is_stored) {
      r.delivered_unacked += !received.empty();
      continue; // no stored ack, no promise: nothing can be lost
    }
    if (s.flags & send_record::without_send_bit)
      continue; // no send recorded, so no recipient known: counted as a driver bug instead

    // The devices that must have it: registered (first ready) before the first send attempt.
    bool lost = false;
    auto check = [&](phone_id user) {
      for (const auto& d : devices_of(user)) {
        if (d.first_ready >= s.sent_at)
          continue;
        bool has = std::any_of(received.begin(), received.end(),
                               [&](const got& g) { return g.owner == d.user && g.device == d.device; });
        if (has)
          continue;
        if (d.last_ready >= s.stored_at) {
          ++r.lost_deliveries;
          lost = true;
          keep_example(r.lost_examples, {s.sender, s.nonce, d.user, d.device});
        } else {
          ++r.unverified_deliveries; // never reconnected after the ack: no drain covered it
        }
      }
    };
    check(s.recipient);
    if (o.sender_devices_required && s.sender != s.recipient)
      check(s.sender);
    r.lost_messages += lost;
  }
  // Whatever is left sorts after the last message sent: unexpected as well.
  while (di < dels.size())
    unexpected_group();

  // A delivery with a seq below one its device already had is an order violation, unless the
  // device had this very message earlier: then it is a late copy, already counted as a duplicate.
  auto key = [](const delivery_record& d) { return std::tie(d.sender, d.nonce, d.owner, d.device); };
  std::sort(suspects.begin(), suspects.end(), [&](const auto& a, const auto& b) {
    return std::tuple_cat(key(a), std::tie(a.at)) < std::tuple_cat(key(b), std::tie(b.at));
  });
  for (const auto& x : suspects) {
    auto lo = std::lower_bound(dels.begin(), dels.end(), x, [&](const auto& a, const auto& b) { return key(a) < key(b); });
    bool earlier_copy = lo != dels.end() && key(*lo) == key(x) && lo->at < x.at;
    if (!earlier_copy) {
      ++r.order_violations;
      keep_example(r.order_examples, {x.sender, x.nonce, x.owner, x.device});
    }
  }

  for (auto* v : {&r.lost_examples, &r.unexpected_examples, &r.duplicate_examples, &r.order_examples}) {
    std::sort(v->begin(), v->end());
    if (v->size() > examples_max)
      v->resize(examples_max);
  }
  return r;
}

// --- serialization -------------------------------------------------------------------------

namespace {
constexpr std::string_view records_magic = "AGNERLG1";
} // namespace

std::string worker_records::serialize() const {
  records_codec c;
  c.out.reserve(records_magic.size() + 48 * (sends.size() + deliveries.size()) + 64);
  c.out.append(records_magic);
  c.put_all(sends);
  c.put_all(deliveries);
  c.put_all(devices);
  c.put_all(order_suspects);
  c.u64(reads);
  c.put(send_to_stored);
  return std::move(c.out);
}

worker_records worker_records::deserialize(std::string_view bytes) {
  if (bytes.substr(0, records_magic.size()) != records_magic)
    throw std::runtime_error("loadgen records: not a worker's records (bad magic)");
  records_codec c;
  c.in = bytes.substr(records_magic.size());
  worker_records r;
  c.get_all(r.sends);
  c.get_all(r.deliveries);
  c.get_all(r.devices);
  c.get_all(r.order_suspects);
  r.reads = c.get64();
  c.get(r.send_to_stored);
  if (!c.in.empty())
    throw std::runtime_error("loadgen records: trailing bytes");
  return r;
}

} // namespace agner::loadgen
