// Entry states: dirty (newer than the disk), in flight (handed to the store, version recorded),
// clean. An entry's version tells a completed flush whether what it wrote is still the latest.
// Dirty entries form a list in the order they became dirty, so an age-based flush walks only the
// due ones; each owner's resident entries form a list, so evicting an owner walks only its own.
#include "runtime/store/write_back_cache.hpp"

#include <cassert>

#include <fmt/format.h>

namespace agner::store {

namespace {
// Per entry beyond key and value: the hash node, the entry's fields, the two strings' headers.
constexpr size_t entry_overhead_bytes = 192;
// Eviction frees down to this share of the budget, so that one eviction is not followed by
// another on the very next put.
constexpr size_t eviction_target_pct = 90;

std::string labels_for(std::string_view shard) { return fmt::format("shard=\"{}\"", shard); }
} // namespace

write_back_cache::write_back_cache(node_store& s, const agner::clock& clk, metrics::registry& m, std::string_view shard,
                                   notify_fn notify)
  : store_(s),
    clock_(clk),
    notify_(std::move(notify)),
    hits_(m.make_counter("agner_store_cache_hits_total", "Cache reads served from memory", labels_for(shard))),
    misses_(m.make_counter("agner_store_cache_misses_total", "Cache reads that went to LMDB", labels_for(shard))),
    writes_avoided_(m.make_counter("agner_store_cache_writes_avoided_total",
                                   "Disk writes saved by coalescing and by deletes before flush", labels_for(shard))),
    never_written_(m.make_counter("agner_store_cache_never_written_total",
                                  "Inserted entries deleted before they reached the disk", labels_for(shard))),
    evictions_(m.make_counter("agner_store_cache_evictions_total", "Owners evicted from the cache", labels_for(shard))),
    evicted_entries_(m.make_counter("agner_store_cache_evicted_entries_total", "Entries evicted from the cache",
                                    labels_for(shard))),
    flush_writes_(m.make_histogram("agner_store_cache_flush_writes", "Writes per cache flush", labels_for(shard))),
    bytes_gauge_(m.make_gauge("agner_store_cache_bytes", "Bytes held by the write-back cache", labels_for(shard))) {}

void write_back_cache::charge(entry& e) {
  bytes_ -= e.charged;
  e.charged = e.key->size() + e.value.size() + entry_overhead_bytes;
  bytes_ += e.charged;
}

void write_back_cache::account_add(entry& e) {
  assert(!e.resident);
  auto& o = owners_[e.owner];
  if (o.bytes > 0)
    by_size_.erase({o.bytes, e.owner});
  o.bytes += e.charged;
  by_size_.insert({o.bytes, e.owner});
  e.owner_prev = nullptr;
  e.owner_next = o.head;
  if (o.head)
    o.head->owner_prev = &e;
  o.head = &e;
  e.resident = true;
  resident_bytes_ += e.charged;
}

void write_back_cache::account_remove(entry& e) {
  assert(e.resident);
  auto it = owners_.find(e.owner);
  assert(it != owners_.end());
  auto& o = it->second;
  by_size_.erase({o.bytes, e.owner});
  o.bytes -= e.charged;
  if (e.owner_prev)
    e.owner_prev->owner_next = e.owner_next;
  else
    o.head = e.owner_next;
  if (e.owner_next)
    e.owner_next->owner_prev = e.owner_prev;
  e.owner_prev = e.owner_next = nullptr;
  if (o.head == nullptr)
    owners_.erase(it);
  else
    by_size_.insert({o.bytes, e.owner});
  e.resident = false;
  resident_bytes_ -= e.charged;
}

void write_back_cache::mark_dirty(entry& e) {
  if (e.dirty) {
    // Still waiting for its first flush: this update costs no extra write.
    ++stats_.coalesced;
    ++stats_.writes_avoided;
    writes_avoided_.inc();
    return;
  }
  e.dirty = true;
  e.dirty_since = clock_.now();
  e.dirty_prev = dirty_tail_;
  e.dirty_next = nullptr;
  if (dirty_tail_)
    dirty_tail_->dirty_next = &e;
  else
    dirty_head_ = &e;
  dirty_tail_ = &e;
  ++dirty_count_;
}

void write_back_cache::unlink_dirty(entry& e) {
  if (!e.dirty)
    return;
  if (e.dirty_prev)
    e.dirty_prev->dirty_next = e.dirty_next;
  else
    dirty_head_ = e.dirty_next;
  if (e.dirty_next)
    e.dirty_next->dirty_prev = e.dirty_prev;
  else
    dirty_tail_ = e.dirty_prev;
  e.dirty_prev = e.dirty_next = nullptr;
  e.dirty = false;
  --dirty_count_;
}

void write_back_cache::requeue_dirty(entry& e) {
  // A write the store refused: dirty again and due at once, so the next flush retries it first.
  assert(!e.dirty);
  e.dirty = true;
  e.dirty_since = clock_.now() - store_.options().flush_window_ms;
  e.dirty_prev = nullptr;
  e.dirty_next = dirty_head_;
  if (dirty_head_)
    dirty_head_->dirty_prev = &e;
  else
    dirty_tail_ = &e;
  dirty_head_ = &e;
  ++dirty_count_;
}

void write_back_cache::erase(entry_map::iterator it) {
  entry& e = it->second;
  if (e.resident)
    account_remove(e);
  unlink_dirty(e);
  bytes_ -= e.charged;
  map_.erase(it);
}

write_back_cache::entry& write_back_cache::set(uint64_t owner, std::string_view key, std::string_view value,
                                               bool fresh) {
  auto it = map_.find(key);
  if (it == map_.end()) {
    it = map_.emplace(std::string(key), entry{}).first;
    it->second.key = &it->first;
    it->second.disk = fresh ? disk_state::absent : disk_state::unknown;
  }
  entry& e = it->second;
  if (e.resident)
    account_remove(e);
  e.owner = owner;
  e.value.assign(value);
  e.deleted = false;
  ++e.version;
  charge(e);
  account_add(e);
  mark_dirty(e);
  return e;
}

void write_back_cache::insert(uint64_t owner, std::string_view key, std::string_view value) {
  ++stats_.inserts;
  set(owner, key, value, true);
  bytes_gauge_.set(static_cast<int64_t>(bytes_));
  maybe_evict();
}

void write_back_cache::put(uint64_t owner, std::string_view key, std::string_view value) {
  set(owner, key, value, false);
  bytes_gauge_.set(static_cast<int64_t>(bytes_));
  maybe_evict();
}

void write_back_cache::del(uint64_t owner, std::string_view key) {
  auto it = map_.find(key);
  if (it != map_.end()) {
    entry& e = it->second;
    if (e.disk == disk_state::absent && e.flushing_version == 0) {
      // Never reached the disk and nothing in flight: forget it, and the insert with it.
      if (e.dirty && !e.deleted) {
        ++stats_.never_written;
        stats_.writes_avoided += 2;
        never_written_.inc();
        writes_avoided_.inc(2);
      }
      erase(it);
      bytes_gauge_.set(static_cast<int64_t>(bytes_));
      return;
    }
    if (e.deleted && !e.dirty && e.flushing_version == 0)
      return; // already deleted on disk
  } else {
    it = map_.emplace(std::string(key), entry{}).first;
    it->second.key = &it->first;
  }
  entry& e = it->second;
  if (e.resident)
    account_remove(e);
  e.owner = owner;
  e.value.clear();
  e.value.shrink_to_fit();
  e.deleted = true;
  ++e.version;
  charge(e);
  account_add(e);
  mark_dirty(e);
  bytes_gauge_.set(static_cast<int64_t>(bytes_));
  maybe_evict();
}

std::optional<std::string> write_back_cache::get(uint64_t owner, std::string_view key) {
  if (auto it = map_.find(key); it != map_.end()) {
    ++stats_.hits;
    hits_.inc();
    if (it->second.deleted)
      return std::nullopt;
    return it->second.value;
  }
  ++stats_.misses;
  misses_.inc();
  auto v = store_.get(key);
  if (v) {
    auto it = map_.emplace(std::string(key), entry{}).first;
    entry& e = it->second;
    e.key = &it->first;
    e.owner = owner;
    e.value = *v;
    e.disk = disk_state::present;
    charge(e);
    account_add(e);
    bytes_gauge_.set(static_cast<int64_t>(bytes_));
    maybe_evict();
  }
  return v;
}

void write_back_cache::add_write(write_batch& b, entry& e, std::vector<flushed_write>& writes) {
  if (e.deleted)
    b.del(*e.key);
  else
    b.put(*e.key, e.value);
  writes.push_back({*e.key, e.version, e.deleted});
  unlink_dirty(e);
  e.flushing_version = e.version;
}

flush_ticket write_back_cache::submit(write_batch&& b, std::vector<flushed_write>&& writes) {
  flush_ticket t = next_ticket_++;
  size_t n = writes.size();
  bool ok = store_.submit(std::move(b), [notify = notify_, t](const commit_result& r) { notify(t, r.status); });
  if (!ok) {
    // Backpressure or a failed store: nothing was taken, so everything is dirty again.
    in_flight_.emplace(t, std::move(writes));
    on_flushed(t, write_status::failed);
    return 0;
  }
  in_flight_.emplace(t, std::move(writes));
  ++stats_.flushes;
  stats_.writes_flushed += n;
  flush_writes_.observe(n);
  return t;
}

void write_back_cache::add_due(write_batch& b, std::vector<flushed_write>& writes) {
  auto now = clock_.now();
  auto window = store_.options().flush_window_ms;
  while (dirty_head_ && dirty_head_->dirty_since + window <= now)
    add_write(b, *dirty_head_, writes);
}

flush_ticket write_back_cache::flush() {
  write_batch b;
  std::vector<flushed_write> writes;
  add_due(b, writes);
  if (writes.empty())
    return 0;
  return submit(std::move(b), std::move(writes));
}

void write_back_cache::rewrite_in_flight(write_batch& b, std::vector<flushed_write>& writes) {
  // If their earlier flush fails, a checkpoint must not claim state that is not on disk.
  for (const auto& [ticket, ws] : in_flight_)
    for (const auto& w : ws)
      if (auto it = map_.find(w.key); it != map_.end() && !it->second.dirty && it->second.flushing_version == w.version)
        add_write(b, it->second, writes);
}

flush_ticket write_back_cache::flush_keys(const std::vector<std::string>& keys, std::optional<checkpoint_mark> cp) {
  write_batch b;
  std::vector<flushed_write> writes;
  if (cp) {
    rewrite_in_flight(b, writes);
    add_due(b, writes); // refused writes are due at once (requeue_dirty)
  }
  for (auto& k : keys)
    if (auto it = map_.find(k); it != map_.end() && it->second.dirty)
      add_write(b, it->second, writes);
  if (cp)
    b.checkpoint(cp->domain, cp->covered);
  if (b.empty())
    return 0;
  return submit(std::move(b), std::move(writes));
}

flush_ticket write_back_cache::flush_all(std::optional<checkpoint_mark> cp) {
  write_batch b;
  std::vector<flushed_write> writes;
  rewrite_in_flight(b, writes);
  while (dirty_head_)
    add_write(b, *dirty_head_, writes);
  if (cp)
    b.checkpoint(cp->domain, cp->covered);
  if (b.empty())
    return 0;
  return submit(std::move(b), std::move(writes));
}

void write_back_cache::on_flushed(flush_ticket t, write_status s) {
  auto node = in_flight_.extract(t);
  if (node.empty())
    return;
  bool ok = s == write_status::durable;
  if (!ok)
    ++stats_.failed_flushes;
  for (const auto& w : node.mapped()) {
    auto it = map_.find(w.key);
    if (it == map_.end())
      continue;
    entry& e = it->second;
    if (e.flushing_version == w.version)
      e.flushing_version = 0;
    if (ok) {
      e.disk = w.del ? disk_state::absent : disk_state::present;
      // The latest version is on disk: a tombstone or an evicted entry can go.
      if (e.version == w.version && e.flushing_version == 0 && (w.del || !e.resident))
        erase(it);
    } else if (e.version == w.version && !e.dirty) {
      if (!e.resident)
        account_add(e); // an eviction that did not happen
      requeue_dirty(e);
    }
  }
  bytes_gauge_.set(static_cast<int64_t>(bytes_));
}

std::optional<time_point> write_back_cache::next_due() const {
  if (!dirty_head_)
    return std::nullopt;
  return dirty_head_->dirty_since + store_.options().flush_window_ms;
}

size_t write_back_cache::owner_bytes(uint64_t owner) const {
  auto it = owners_.find(owner);
  return it == owners_.end() ? 0 : it->second.bytes;
}

void write_back_cache::maybe_evict() {
  size_t budget = store_.options().cache_budget_bytes;
  if (resident_bytes_ <= budget)
    return;
  size_t target = budget / 100 * eviction_target_pct;
  write_batch b;
  std::vector<flushed_write> writes;
  while (resident_bytes_ > target && !by_size_.empty()) {
    uint64_t owner = by_size_.rbegin()->second;
    ++stats_.evicted_owners;
    evictions_.inc();
    entry* e = owners_.at(owner).head;
    while (e) {
      entry* next = e->owner_next;
      account_remove(*e);
      ++stats_.evicted_entries;
      evicted_entries_.inc();
      if (e->dirty)
        add_write(b, *e, writes); // written first, forgotten when durable
      else if (e->flushing_version == 0)
        erase(map_.find(*e->key)); // clean: the disk has it
      // else: in flight already; on_flushed forgets it once durable.
      e = next;
    }
  }
  if (!writes.empty())
    submit(std::move(b), std::move(writes));
  bytes_gauge_.set(static_cast<int64_t>(bytes_));
}

} // namespace agner::store
