// The group-commit writer. It takes everything queued, applies it in one write transaction (log
// appends with MDB_APPEND, so they fill pages sequentially), commits with LMDB's default full
// sync, and only then runs the completions. Index entries for the appends are kept in memory and
// written later in large sorted batches (see docs/storage.md). The reads: store_reads.cpp.
#include "runtime/store/store.hpp"

#include "runtime/log.hpp"
#include "runtime/store/key_codec.hpp"
#include "runtime/store/lmdb.hpp"
#include "runtime/store/pending_index.hpp"
#include "runtime/store/store_keys.hpp"
#include "runtime/store/value_format.hpp"
#include "runtime/wake_batch.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <pthread.h>

#include <fmt/format.h>

namespace agner::store {

using namespace detail;

namespace {

uint64_t elapsed_ns(std::chrono::steady_clock::time_point t0) {
  return static_cast<uint64_t>(
    std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
}

// Worst-case pages a state put or delete dirties beyond its bytes: the path from root to leaf.
constexpr size_t pages_per_random_write = 4;
// Slack for branch pages and the free list LMDB writes at commit.
constexpr size_t commit_slack_bytes = 256 << 10;
constexpr size_t page_bytes = 4096;
/// Index leaves (changes of stream) one group commit's share of the index may touch: ~256 KiB
/// more for its fdatasync at worst.
constexpr size_t index_leaves_per_commit = 64;

// Retrying a failed group in halves stops after this depth: 2^12 batches is above any group size.
constexpr int split_depth_max = 12;

} // namespace

std::string_view to_string(write_status s) noexcept {
  switch (s) {
    case write_status::durable: return "durable";
    case write_status::map_full: return "map_full";
    case write_status::no_space: return "no_space";
    case write_status::rejected: return "rejected";
    case write_status::failed: return "failed";
    case write_status::chain_broken: return "chain_broken";
  }
  return "unknown";
}

node_store::node_store(store_options options, metrics::registry& m, store_hooks hooks)
  : options_(std::move(options)),
    hooks_(std::move(hooks)),
    commits_(m.make_counter("agner_store_commits_total", "Write transactions committed by the group-commit writer")),
    appends_(m.make_counter("agner_store_appends_total", "Log records made durable")),
    map_full_errors_(m.make_counter("agner_store_commit_errors_total", "Failed commits by cause", "kind=\"map_full\"")),
    no_space_errors_(m.make_counter("agner_store_commit_errors_total", "Failed commits by cause", "kind=\"no_space\"")),
    fatal_errors_(m.make_counter("agner_store_commit_errors_total", "Failed commits by cause", "kind=\"fatal\"")),
    queue_wait_ns_(m.make_histogram("agner_store_queue_wait_seconds", "Time a write batch waits in the writer's queue before its group commit begins", {}, 1e-9)),
    commit_ns_(m.make_histogram("agner_store_commit_seconds", "Time from transaction begin to durable commit", {}, 1e-9)),
    commit_writes_(m.make_histogram("agner_store_commit_writes", "Writes per group commit")),
    index_slice_ns_(m.make_histogram("agner_store_index_slice_commit_seconds", "Time to commit one slice of the on-disk index in a transaction of its own", {}, 1e-9)),
    index_carried_(m.make_counter("agner_store_index_entries_in_commits_total", "On-disk index entries written inside group commits")),
    queue_bytes_gauge_(m.make_gauge("agner_store_queue_bytes", "Bytes submitted and not yet taken by the writer")),
    index_pending_(m.make_gauge("agner_store_index_pending", "Appends durable in the log but not yet in the on-disk index")),
    broken_chains_gauge_(m.make_gauge("agner_store_broken_chains", "Chains whose batches fail unwritten until one restarts the chain")) {
  if (!hooks_.on_fatal)
    hooks_.on_fatal = [](const std::string& reason) {
      log::critical("store", "fatal storage error: {}; stopping the process so that nothing is acknowledged after it",
                    reason);
      std::abort();
    };
  std::filesystem::create_directories(options_.data_dir);
  const bool no_sync = options_.durability == durability::unsafe_nosync;
  if (no_sync)
    log::warn("store", "UNSAFE: store.durability = unsafe_nosync: commits in {} are acknowledged before they reach "
              "the disk; a power cut or OS crash loses acknowledged writes. For tests only, never for real data.",
              options_.data_dir);
  env_ = std::make_unique<lmdb::env>(
    lmdb::env_options{options_.data_dir, options_.map_size_bytes, max_dbs, max_readers, no_sync});
  pending_ = std::make_unique<pending_index>();
  open_databases();
  rebuild_pending_index();
  last_freeze_ = std::chrono::steady_clock::now();
  writer_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "agner.writer");
    writer_loop();
  });
}

node_store::~node_store() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable())
    writer_.join();
}

void node_store::open_databases() {
  lmdb::txn t;
  if (int rc = lmdb::txn::write(*env_, t))
    throw lmdb::error(rc, "begin the setup transaction");
  dbs_.meta = t.open("meta", true);
  dbs_.log = t.open("log", true);
  dbs_.index = t.open("index", true);
  dbs_.state = t.open("state", true);
  if (auto v = t.get(dbs_.meta, meta_format_key)) {
    auto layout = decode_u64_value(*v, "the data directory's format marker");
    if (layout > format_version)
      throw format_error(fmt::format("store: data directory {} was written by format version {}, newer than this "
                                     "build supports ({}); refusing to open it",
                                     options_.data_dir, layout, format_version));
  } else {
    std::string s;
    encode_u64_value(s, format_version);
    if (int rc = t.put(dbs_.meta, meta_format_key, s))
      throw lmdb::error(rc, "write the format marker");
  }
  if (int rc = t.commit())
    throw lmdb::error(rc, "commit the setup transaction");
}

void node_store::rebuild_pending_index() {
  // The log past `indexed_through` is durable but not in the on-disk index (the process stopped
  // before the writer got to it): put it back into memory. It is at most a few index batches.
  auto t = lmdb::txn::read(*env_);
  if (auto v = t.get(dbs_.meta, meta_indexed_key))
    indexed_through_ = decode_u64_value(*v, "meta indexed_through");
  lmdb::cursor c(t, dbs_.log);
  log_position last = c.last() ? get_u64_be(c.key().data()) : 0;
  next_position_ = last + 1;
  last_durable_.store(last, std::memory_order_release);
  std::vector<pending_index::entry> tail;
  if (last > indexed_through_) {
    position_key from(indexed_through_ + 1);
    for (bool ok = c.seek(from.view()); ok; ok = c.next()) {
      log_position pos = get_u64_be(c.key().data());
      auto r = decode_log_record(c.value(), pos);
      tail.push_back({r.stream, r.seq, pos});
    }
  }
  pending_->add(tail);
  index_pending_.set(static_cast<int64_t>(tail.size()));
  if (!tail.empty())
    log::info("store", "opened {}: log ends at {}, {} records to re-index", options_.data_dir, last, tail.size());
}

bool node_store::submit(write_batch&& batch, completion done) {
  auto at = std::chrono::steady_clock::now();
  {
    std::lock_guard lk(mu_);
    if (stopping_ || failed_.load(std::memory_order_acquire))
      return false;
    // An empty queue always accepts, so a single batch larger than the limit can still pass.
    if (!queue_.empty() && queued_bytes_ + batch.bytes() > options_.queue_bytes_max)
      return false;
    queued_bytes_ += batch.bytes();
    queue_bytes_gauge_.set(static_cast<int64_t>(queued_bytes_));
    queue_.push_back(queued{std::move(batch), std::move(done), {}, at});
  }
  // From inside a burst (a shard's drain), the writer is woken once when the burst ends, and
  // finds every batch of it queued: one group commit rather than one for the first batch.
  wake_batch::defer(&cv_, [this] { cv_.notify_one(); });
  return true;
}

std::optional<write_status> node_store::submit_and_wait(write_batch&& batch) {
  auto done = std::make_shared<std::promise<write_status>>();
  if (!submit(std::move(batch), [done](const commit_result& r) { done->set_value(r.status); }))
    return std::nullopt;
  wake_batch::flush_now();
  return done->get_future().get();
}

void node_store::grow_map(size_t bytes, std::function<void(bool)> done) {
  auto control = [this, bytes, done = std::move(done)] {
    int rc;
    {
      // A remap moves every page, so no read transaction may be open; the writer has none open
      // between commits.
      std::unique_lock lk(remap_mu_);
      rc = env_->set_map_size(bytes);
    }
    if (rc != 0)
      log::error("store", "growing the map to {} bytes failed: {}", bytes, lmdb::describe(rc));
    else
      log::info("store", "map grown to {} bytes", bytes);
    if (done)
      done(rc == 0);
  };
  {
    std::lock_guard lk(mu_);
    queue_.push_back(queued{{}, {}, std::move(control)});
  }
  cv_.notify_one();
}

void node_store::flush_index() {
  auto p = std::make_shared<std::promise<void>>();
  auto f = p->get_future();
  {
    std::lock_guard lk(mu_);
    if (stopping_ || failed_.load())
      return;
    queue_.push_back(queued{{}, {}, [this, p] {
                              write_whole_index();
                              p->set_value();
                            }});
  }
  cv_.notify_one();
  try {
    f.get();
  } catch (const std::future_error&) {
    // The store failed before it got to it; there is nothing to wait for.
  }
}

size_t node_store::queued_bytes() const {
  std::lock_guard lk(mu_);
  return queued_bytes_;
}

void node_store::writer_loop() {
  using clk = std::chrono::steady_clock;
  std::vector<queued> group;
  for (;;) {
    {
      std::unique_lock lk(mu_);
      auto has_work = [this] { return !queue_.empty() || stopping_; };
      if (!pending_->frozen().empty())
        cv_.wait_until(lk, std::max(index_retry_after_, last_commit_ + options_.index_slice_quiet_ms), has_work);
      else if (pending_->active_size() > 0)
        cv_.wait_until(lk, last_freeze_ + options_.index_idle_ms, has_work);
      else
        cv_.wait(lk, has_work);
      if (queue_.empty() && stopping_)
        break;
      // Take everything queued up to max_batch_writes; a control item runs alone.
      size_t n = 0, writes = 0, bytes = 0;
      if (!queue_.empty() && queue_.front().control) {
        n = 1;
      } else {
        while (n < queue_.size() && !queue_[n].control &&
               (n == 0 || writes + queue_[n].batch.size() <= options_.max_batch_writes)) {
          writes += queue_[n].batch.size();
          bytes += queue_[n].batch.bytes();
          ++n;
        }
      }
      group.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.begin() + n));
      queue_.erase(queue_.begin(), queue_.begin() + n);
      queued_bytes_ -= bytes;
      queue_bytes_gauge_.set(static_cast<int64_t>(queued_bytes_));
    }
    if (!group.empty() && !group.front().control) {
      auto now = clk::now();
      for (const auto& q : group)
        queue_wait_ns_.observe(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(now - q.submitted).count()));
    }
    if (!group.empty()) {
      wake_batch burst; // the completions' casts wake each shard's home once, after the last one
      run_group(group);
    }
    group.clear();
    if (failed_.load(std::memory_order_acquire))
      return;
    // Index work between commits: freeze a full (or idle) generation, then one slice per round so
    // that commits queued meanwhile wait for one slice at most.
    auto now = clk::now();
    if (pending_->frozen().empty() && pending_->active_size() > 0 &&
        (pending_->active_size() >= options_.index_batch_entries || now >= last_freeze_ + options_.index_idle_ms)) {
      frozen_through_ = last_durable_.load(std::memory_order_relaxed);
      pending_->freeze();
      frozen_done_ = 0;
      last_freeze_ = now;
    }
    // Under load the group commits carry the frozen generation (commit_some); a slice of its own
    // runs once no commit came for a while, or when the next generation filled up meanwhile.
    if (!pending_->frozen().empty() && now >= index_retry_after_ &&
        (now >= last_commit_ + options_.index_slice_quiet_ms || pending_->active_size() >= options_.index_batch_entries))
      write_index_slice();
    if (failed_.load(std::memory_order_acquire))
      return;
  }
  if (!failed_.load(std::memory_order_acquire))
    write_whole_index();
}

void node_store::run_group(std::vector<queued>& group) {
  if (group.front().control) {
    group.front().control();
    return;
  }
  std::vector<queued*> ptrs;
  ptrs.reserve(group.size());
  for (auto& q : group) {
    // A chain that broke stays broken until a batch restarts it; its later batches fail unwritten.
    if (auto c = q.batch.chain_id()) {
      if (q.batch.chain_restart()) {
        if (broken_chains_.erase(c))
          broken_chains_gauge_.set(static_cast<int64_t>(broken_chains_.size()));
      } else if (broken_chains_.contains(c)) {
        complete(q, {write_status::chain_broken, 0, q.batch.appends()});
        continue;
      }
    }
    ptrs.push_back(&q);
  }
  if (!ptrs.empty()) {
    size_t appends = 0;
    for (auto* q : ptrs)
      appends += q->batch.appends();
    commit_some(ptrs.data(), ptrs.size(), index_share(appends));
    last_commit_ = std::chrono::steady_clock::now();
  }
}

size_t node_store::index_share(size_t appends) const {
  // The next entries of the frozen generation: index_entries_per_append for each append the
  // commit carries, so the index keeps pace with the log (the frozen generation is written before
  // the active one is half full) and a commit's share grows with the commit, up to a slice's
  // worth (a bulk commit carrying 16k entries took 200 ms at times). Bounded by the index
  // leaves they may dirty: sorted entries of one stream share leaves, so each change of stream
  // counts as one; a million one-message conversations give each commit index_leaves_per_commit.
  const auto& frozen = pending_->frozen();
  if (frozen.empty() || std::chrono::steady_clock::now() < index_retry_after_)
    return frozen_done_;
  size_t share = std::min(std::max<size_t>(appends * options_.index_entries_per_append, index_leaves_per_commit),
                          options_.index_slice_entries);
  size_t end = std::min(frozen.size(), frozen_done_ + share);
  size_t leaves = 1;
  for (size_t i = frozen_done_ + 1; i < end; ++i)
    if (frozen[i].stream != frozen[i - 1].stream && ++leaves > index_leaves_per_commit)
      return i;
  return end;
}

int node_store::put_index(lmdb::txn& t, size_t end) {
  const auto& frozen = pending_->frozen();
  // Sorted keys: consecutive puts land in the same leaf, so a slice dirties each page once.
  lmdb::cursor c(t, dbs_.index);
  for (size_t i = frozen_done_; i < end; ++i) {
    index_key k(frozen[i].stream, frozen[i].seq);
    scratch_.clear();
    encode_u64_value(scratch_, frozen[i].pos);
    if (int rc = c.put(k.view(), scratch_))
      return rc;
  }
  if (end < frozen.size())
    return 0;
  scratch_.clear();
  encode_u64_value(scratch_, frozen_through_);
  return t.put(dbs_.meta, meta_indexed_key, scratch_);
}

void node_store::index_written(size_t end) {
  index_pending_.add(-static_cast<int64_t>(end - frozen_done_));
  frozen_done_ = end;
  if (end == pending_->frozen().size()) {
    pending_->clear_frozen();
    indexed_through_ = frozen_through_;
  }
}

void node_store::index_retry_later(int rc) {
  // The index is derived from the log: keep it in memory and try again later.
  (lmdb::is_no_space(rc) ? no_space_errors_ : map_full_errors_).inc();
  log::warn("store", "index entries not written ({}); retrying in 1 s", lmdb::describe(rc));
  index_retry_after_ = std::chrono::steady_clock::now() + std::chrono::seconds(1);
}

void node_store::complete(queued& q, const commit_result& r) {
  if (r.status != write_status::durable && q.batch.chain_id() && broken_chains_.insert(q.batch.chain_id()).second)
    broken_chains_gauge_.set(static_cast<int64_t>(broken_chains_.size()));
  if (q.done)
    q.done(r);
}

int node_store::finish(lmdb::txn& t) {
  if (hooks_.before_commit) {
    if (int rc = hooks_.before_commit()) {
      t.abort();
      return rc;
    }
  }
  return t.commit();
}

int node_store::reserve_disk(size_t estimate) {
  // LMDB turns a write that runs out of disk into a short write and reports EIO, which we must
  // treat as fatal. So the space a commit may need is reserved first: a full disk then shows up
  // here, as ENOSPC, before LMDB writes a page, and fails only this commit.
  if (!reserve_enabled_)
    return 0;
  size_t limit = env_->map_size();
  size_t need = std::min(env_->used_bytes() + estimate, limit);
  size_t lead = std::min(need + options_.disk_reserve_bytes, limit);
  if (lead <= reserved_end_)
    return 0;
  // This commit's fdatasync writes back whatever zeros are written here, so while the lead
  // covers the commit it grows by one step per commit: a whole 8 MiB lead at once held its commit
  // ~20 ms, and every send queued behind it. A commit the lead does not cover (the first after
  // open, or the file growing faster than a step per commit, as when a million devices register)
  // must write zeros anyway and takes the whole lead, so the next ones do not grow the file, and
  // journal its new size, one by one.
  size_t want = need > reserved_end_ ? lead : std::min(reserved_end_ + options_.disk_reserve_step_bytes, lead);
  int rc = env_->reserve(reserved_end_, want);
  if (lmdb::is_no_space(rc) && want > need) {
    if (need <= reserved_end_)
      return 0; // this commit fits; the disk is full beyond it, which a later commit will meet
    want = need;
    rc = env_->reserve(reserved_end_, want);
  }
  if (rc == 0) {
    reserved_end_ = want;
  } else if (!lmdb::is_no_space(rc)) {
    reserve_enabled_ = false;
    log::warn("store", "cannot reserve disk space for {} ({}); a full disk may then stop the process",
              options_.data_dir, lmdb::describe(rc));
    return 0;
  }
  return rc;
}

int node_store::try_commit(queued** first, size_t n, std::vector<log_position>& firsts, size_t index_end) {
  // Worst case every index entry lands in its own leaf.
  size_t estimate = commit_slack_bytes + (index_end - frozen_done_) * page_bytes;
  for (size_t i = 0; i < n; ++i) {
    const auto& b = first[i]->batch;
    estimate += 2 * b.bytes() + (b.size() - b.appends()) * pages_per_random_write * page_bytes;
  }
  if (int rc = reserve_disk(estimate))
    return rc;
  lmdb::txn t;
  if (int rc = lmdb::txn::write(*env_, t))
    return rc;
  firsts.clear();
  for (size_t i = 0; i < n; ++i) {
    const auto& b = first[i]->batch;
    firsts.push_back(b.appends() ? next_position_ : 0);
    for (const auto& o : b.ops()) {
      int rc = 0;
      scratch_.clear();
      switch (o.k) {
        case write_batch::kind::append: {
          position_key k(next_position_);
          encode_log_record(scratch_, o.stream, o.seq, b.value(o));
          rc = t.append(dbs_.log, k.view(), scratch_);
          ++next_position_;
          break;
        }
        case write_batch::kind::put:
          encode_value(scratch_, b.value(o));
          rc = t.put(dbs_.state, b.key(o), scratch_);
          break;
        case write_batch::kind::del:
          rc = t.del(dbs_.state, b.key(o));
          break;
        case write_batch::kind::checkpoint:
          encode_u64_value(scratch_, o.seq);
          rc = t.put(dbs_.meta, checkpoint_key(b.key(o)), scratch_);
          break;
      }
      if (rc != 0)
        return rc; // the transaction aborts as `t` goes out of scope
    }
  }
  if (index_end > frozen_done_)
    if (int rc = put_index(t, index_end))
      return rc;
  return finish(t);
}

bool node_store::commit_some(queued** first, size_t n, size_t index_end) {
  auto t0 = std::chrono::steady_clock::now();
  log_position saved = next_position_;
  std::vector<log_position> firsts;
  int rc = try_commit(first, n, firsts, index_end);
  if (rc != 0 && index_end > frozen_done_ &&
      (lmdb::is_map_full(rc) || lmdb::is_no_space(rc) || lmdb::is_txn_full(rc))) {
    // The index share must never cost the writes their commit: again without it.
    index_retry_later(rc);
    index_end = frozen_done_;
    next_position_ = saved;
    rc = try_commit(first, n, firsts, index_end);
  }
  if (rc == 0) {
    commit_ns_.observe(elapsed_ns(t0));
    commits_.inc();
    if (index_end > frozen_done_) {
      index_carried_.inc(index_end - frozen_done_);
      index_written(index_end);
    }
    size_t writes = 0, appends = 0;
    std::vector<pending_index::entry> entries;
    for (size_t i = 0; i < n; ++i) {
      const auto& b = first[i]->batch;
      writes += b.size();
      log_position pos = firsts[i];
      for (const auto& o : b.ops())
        if (o.k == write_batch::kind::append)
          entries.push_back({o.stream, o.seq, pos++});
    }
    appends = entries.size();
    commit_writes_.observe(writes);
    appends_.inc(appends);
    // Readers must find a record as soon as anyone may learn it is durable: index it first.
    pending_->add(entries);
    index_pending_.add(static_cast<int64_t>(appends));
    last_durable_.store(next_position_ - 1, std::memory_order_release);
    for (size_t i = 0; i < n; ++i)
      complete(*first[i], {write_status::durable, firsts[i], first[i]->batch.appends()});
    return true;
  }
  next_position_ = saved;
  bool full = lmdb::is_map_full(rc) || lmdb::is_no_space(rc);
  if (full || lmdb::is_txn_full(rc) || lmdb::is_bad_size(rc)) {
    if (n > 1) {
      // Find the longest prefix that fits; what was queued behind a failed batch fails with it, so
      // a producer never sees a later batch durable after an earlier one failed in the same group.
      size_t half = n / 2;
      if (commit_some(first, half, frozen_done_))
        return commit_some(first + half, n - half, frozen_done_);
      for (size_t i = half; i < n; ++i)
        complete(*first[i], {lmdb::is_map_full(rc)   ? write_status::map_full
                             : lmdb::is_no_space(rc) ? write_status::no_space
                                                     : write_status::rejected,
                             0, first[i]->batch.appends()});
      return false;
    }
    write_status s = lmdb::is_map_full(rc)   ? write_status::map_full
                     : lmdb::is_no_space(rc) ? write_status::no_space
                                             : write_status::rejected;
    if (s == write_status::map_full)
      map_full_errors_.inc();
    else if (s == write_status::no_space)
      no_space_errors_.inc();
    log::warn("store", "batch of {} writes not stored ({}): {}", first[0]->batch.size(), to_string(s),
              lmdb::describe(rc));
    complete(*first[0], {s, 0, first[0]->batch.appends()});
    return false;
  }
  fail_fatal(fmt::format("commit of {} batches failed: {} ({})", n, lmdb::describe(rc), rc), first, n);
  return false;
}

void node_store::fail_fatal(const std::string& reason, queued** first, size_t n) {
  fatal_errors_.inc();
  failed_.store(true, std::memory_order_release);
  hooks_.on_fatal(reason);
  // Only a test's handler returns. Nothing queued may become durable now; tell everyone.
  std::vector<queued> rest;
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
    rest.swap(queue_);
    queued_bytes_ = 0;
  }
  for (size_t i = 0; i < n; ++i)
    complete(*first[i], {write_status::failed, 0, first[i]->batch.appends()});
  for (auto& q : rest)
    complete(q, {write_status::failed, 0, q.batch.appends()});
}

bool node_store::write_index_slice() {
  size_t end = std::min(pending_->frozen().size(), frozen_done_ + options_.index_slice_entries);
  lmdb::txn t;
  // Worst case every entry lands in its own leaf.
  int rc = reserve_disk(commit_slack_bytes + (end - frozen_done_) * page_bytes);
  if (rc == 0)
    rc = lmdb::txn::write(*env_, t);
  if (rc == 0)
    rc = put_index(t, end);
  if (rc == 0) {
    // The index is derived from the log: a crash that undoes this transaction costs a re-scan
    // of the log tail at open, nothing more. So it skips the meta page's own sync (LMDB keeps
    // integrity; the next commit's data sync covers this meta page too), and the commits queued
    // behind it wait for one sync, not two.
    env_->set_meta_sync(false);
    auto t0 = std::chrono::steady_clock::now();
    rc = finish(t);
    index_slice_ns_.observe(elapsed_ns(t0));
    env_->set_meta_sync(true);
  } else {
    t.abort();
  }
  if (rc == 0) {
    index_written(end);
    return true;
  }
  if (lmdb::is_map_full(rc) || lmdb::is_no_space(rc) || lmdb::is_txn_full(rc)) {
    index_retry_later(rc);
    return false;
  }
  fail_fatal(fmt::format("index commit failed: {} ({})", lmdb::describe(rc), rc), nullptr, 0);
  return false;
}

void node_store::write_whole_index() {
  for (;;) {
    if (pending_->frozen().empty()) {
      if (pending_->active_size() == 0)
        return;
      frozen_through_ = last_durable_.load(std::memory_order_relaxed);
      pending_->freeze();
      frozen_done_ = 0;
      last_freeze_ = std::chrono::steady_clock::now();
    }
    if (!write_index_slice())
      return;
  }
}

} // namespace agner::store
