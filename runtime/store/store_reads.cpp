// The store's reads: history pages (the in-memory index tail, then one short read transaction),
// single records, state values, checkpoints, and replay in chunks. Any thread; each read takes the
// remap lock shared, so a map resize waits for it (docs/storage.md, "Transactions and threads").
#include "runtime/store/store.hpp"

#include "runtime/store/key_codec.hpp"
#include "runtime/store/lmdb.hpp"
#include "runtime/store/pending_index.hpp"
#include "runtime/store/store_keys.hpp"
#include "runtime/store/value_format.hpp"

#include <algorithm>
#include <mutex>
#include <shared_mutex>

#include <fmt/format.h>

namespace agner::store {

using namespace detail;

std::vector<log_entry> node_store::read_page(uint64_t stream, uint64_t lo, uint64_t hi, size_t limit,
                                        bool highest) const {
  std::vector<pending_index::hit> hits;
  if (limit == 0 || lo >= hi)
    return {};
  // The in-memory tail first, the read transaction second: an entry leaves memory only after the
  // on-disk index holding it committed, so a transaction begun afterwards sees it; and an entry
  // enters memory only after its log record committed, so the transaction sees the record.
  pending_->collect(stream, lo, hi, limit, highest, hits);
  std::shared_lock lk(remap_mu_);
  auto t = lmdb::txn::read(*env_);
  {
    lmdb::cursor c(t, dbs_.index);
    size_t n = 0;
    auto take = [&]() {
      key_reader r(c.key());
      uint64_t s = r.u64(), q = r.u64();
      if (s != stream || q < lo || q >= hi)
        return false;
      hits.push_back({q, decode_u64_value(c.value(), "index entry")});
      return ++n < limit;
    };
    if (highest) {
      index_key k(stream, hi);
      for (bool ok = c.seek(k.view()) ? c.prev() : c.last(); ok && take(); ok = c.prev()) {
      }
    } else {
      index_key k(stream, lo);
      for (bool ok = c.seek(k.view()); ok && take(); ok = c.next()) {
      }
    }
  }
  std::sort(hits.begin(), hits.end(), [](const auto& a, const auto& b) { return a.seq < b.seq; });
  hits.erase(std::unique(hits.begin(), hits.end(), [](const auto& a, const auto& b) { return a.seq == b.seq; }),
             hits.end());
  if (hits.size() > limit) {
    if (highest)
      hits.erase(hits.begin(), hits.end() - static_cast<std::ptrdiff_t>(limit));
    else
      hits.resize(limit);
  }
  std::vector<log_entry> out;
  out.reserve(hits.size());
  for (const auto& h : hits) {
    position_key k(h.pos);
    auto v = t.get(dbs_.log, k.view());
    if (!v)
      throw format_error(fmt::format("store: index entry ({}, {}) points at missing log position {}", stream,
                                     h.seq, h.pos));
    out.push_back(to_entry(h.pos, *v));
  }
  return out;
}

std::vector<log_entry> node_store::history_before(uint64_t stream, uint64_t before_seq, size_t limit) const {
  return read_page(stream, 0, before_seq, limit, true);
}

std::vector<log_entry> node_store::history_after(uint64_t stream, uint64_t after_seq, size_t limit) const {
  if (after_seq == UINT64_MAX)
    return {};
  return read_page(stream, after_seq + 1, UINT64_MAX, limit, false);
}

std::optional<log_entry> node_store::read_log(log_position pos) const {
  std::shared_lock lk(remap_mu_);
  auto t = lmdb::txn::read(*env_);
  position_key k(pos);
  auto v = t.get(dbs_.log, k.view());
  if (!v)
    return std::nullopt;
  return to_entry(pos, *v);
}

std::optional<std::string> node_store::get(std::string_view key) const {
  std::shared_lock lk(remap_mu_);
  auto t = lmdb::txn::read(*env_);
  auto v = t.get(dbs_.state, key);
  if (!v)
    return std::nullopt;
  return std::string(decode_value(*v, "state value"));
}

log_position node_store::checkpoint(std::string_view domain) const {
  std::shared_lock lk(remap_mu_);
  auto t = lmdb::txn::read(*env_);
  auto v = t.get(dbs_.meta, checkpoint_key(domain));
  return v ? decode_u64_value(*v, fmt::format("checkpoint of {}", domain)) : 0;
}

uint64_t node_store::replay(log_position after, const std::function<void(const log_entry&)>& fn) const {
  log_position end = last_position();
  log_position from = after + 1;
  uint64_t count = 0;
  std::vector<log_entry> chunk;
  while (from <= end) {
    chunk.clear();
    {
      // One short transaction per chunk; `fn` runs outside it so a slow consumer pins no pages.
      std::shared_lock lk(remap_mu_);
      auto t = lmdb::txn::read(*env_);
      lmdb::cursor c(t, dbs_.log);
      position_key k(from);
      for (bool ok = c.seek(k.view()); ok && chunk.size() < replay_chunk_records; ok = c.next()) {
        log_position pos = get_u64_be(c.key().data());
        if (pos > end)
          break;
        chunk.push_back(to_entry(pos, c.value()));
      }
    }
    if (chunk.empty())
      break;
    for (const auto& e : chunk)
      fn(e);
    count += chunk.size();
    from = chunk.back().position + 1;
  }
  return count;
}

} // namespace agner::store
