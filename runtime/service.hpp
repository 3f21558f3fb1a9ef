// A sharded service: keys hash to slots, slots map to shards, each shard exclusively owns the
// state of its keys. A shard has two CAF actors, its write lane (mutations, in order, owns the
// state) and its read lane (queries against what the write lane published), so a slow read
// never delays a write and a burst of writes never starves reads.
//
// The life of a cast: hash the key -> slot -> shard (one table lookup) -> count it as enqueued
// (one relaxed atomic add) -> enqueue into the write-lane actor's mailbox (CAF's lock-free
// push, one allocation). Nothing waits.
#pragma once

#include "runtime/clock.hpp"
#include "runtime/log.hpp"
#include "runtime/metrics.hpp"
#include "runtime/slot_table.hpp"
#include "runtime/supervisor.hpp"
#include "runtime/timer/wheel.hpp"
#include "runtime/wake_batch.hpp"

#include <caf/all.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <mutex>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace agner {

/// Envelopes around a service's own message types, so CAF carries them without requiring them
/// to be serializable (shards are local; a cluster link will serialize explicitly).
template <class T>
struct write_env {
  T msg;
};
template <class T>
struct read_env {
  T msg;
  time_point deadline; ///< a read dequeued after this answers `request_timeout` unrun
};
template <class T>
struct reply_env {
  T value;
};
/// The one self-addressed message that wakes a write lane for its timer wheel's next deadline.
struct wheel_wakeup {};

/// An asynchronous read: the reply goes to a callback, run on the read-lane thread.
template <class T, class R>
struct read_cb_env {
  T msg;
  time_point deadline;
  std::function<void(caf::expected<R>)> done;
};

} // namespace agner

namespace caf {
template <class T>
struct allowed_unsafe_message_type<agner::write_env<T>> : std::true_type {};
template <>
struct allowed_unsafe_message_type<agner::wheel_wakeup> : std::true_type {};
template <class T>
struct allowed_unsafe_message_type<agner::read_env<T>> : std::true_type {};
template <class T>
struct allowed_unsafe_message_type<agner::reply_env<T>> : std::true_type {};
template <class T, class R>
struct allowed_unsafe_message_type<agner::read_cb_env<T, R>> : std::true_type {};
} // namespace caf

namespace agner {

/// Tuning of one service. Every number has a reason.
struct service_options {
  std::string name = "service";
  /// Shards per service: a small multiple of the scheduler's threads, never one per key.
  uint32_t shards = 8;
  /// Write-lane depth at which the shard reports overloaded: ~10 ms of work at 1M msgs/s.
  int64_t queue_high = 10'000;
  /// Depth at which overloaded clears again; the gap avoids flapping at the edge.
  int64_t queue_low = 2'000;
  restart_limits restarts{};
  /// Read lanes on their own threads at lower CPU priority (nice +10), so that a burst of slow
  /// reads cannot take the CPU from write lanes and deliveries. false: reads share CAF's
  /// scheduler with everything else (fewer threads, no isolation).
  bool isolated_reads = true;
  /// Tick of each shard's timer wheel: per-key deadlines (idle eviction, retries, expiry) fire
  /// at most this late.
  duration wheel_tick = std::chrono::milliseconds(10);
  /// Where the write lanes run. Empty: on CAF's workers (one actor per lane). Otherwise shard i
  /// runs on homes[i % homes.size()], a function that posts work to one event loop (an I/O
  /// thread's io_context), which runs it in order. A cast then costs a short lock and, for the
  /// first of a burst, one post; no CAF mailbox and no scheduler hand-off. On a box with few
  /// cores this takes one thread crossing per hop off the hot path (docs/plan-fewer-crossings.md).
  /// Delayed casts and the wheel's wakeups still come through the lane's CAF actor (CAF's clock),
  /// which hands them to the home loop. `stop()` must not be called from a home loop.
  std::vector<std::function<void(std::function<void()>)>> homes;
};

/// Per-shard counters shared between producers and the lanes. Queue depth is two monotonic
/// counts on separate cache lines (enqueued, written by producers; handled, written only by the
/// lane), so the lane never writes the line every producer writes.
struct shard_stats {
  alignas(64) std::atomic<int64_t> writes_enqueued{0};
  alignas(64) std::atomic<int64_t> writes_handled{0};
  std::atomic<uint64_t> read_failures{0};
  alignas(64) std::atomic<int64_t> reads_enqueued{0};
  alignas(64) std::atomic<int64_t> reads_handled{0};
  alignas(64) std::atomic<bool> overloaded{false};
  std::atomic<uint64_t> overload_events{0};

  int64_t write_depth() const noexcept {
    return writes_enqueued.load(std::memory_order_relaxed) - writes_handled.load(std::memory_order_relaxed);
  }
  int64_t read_depth() const noexcept {
    return reads_enqueued.load(std::memory_order_relaxed) - reads_handled.load(std::memory_order_relaxed);
  }
};

namespace detail {
/// The CAF execution unit of the lane actor running on this thread, if any. A cast made from
/// inside a shard passes it along so CAF schedules the receiver on the same worker (as
/// self->send would) instead of handing it to another thread.
inline thread_local caf::execution_unit* current_host = nullptr;

/// Lowers the calling thread's CPU priority (nice +10 relative to the process): read lanes.
void lower_thread_priority() noexcept;

/// Bumps a counter that only one thread writes: a plain load and store, no locked instruction.
inline void bump(std::atomic<int64_t>& c) noexcept { c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed); }
} // namespace detail

/// What a shard implementation sees of its surroundings. Owned by the write lane.
template <class View>
class shard_context {
public:
  shard_context(std::string service, uint32_t index, caf::actor_system& sys)
      : service_(std::move(service)), index_(index), sys_(&sys) {}

  const std::string& service() const noexcept { return service_; }
  uint32_t index() const noexcept { return index_; }
  caf::actor_system& system() const noexcept { return *sys_; }
  /// The write-lane actor, for sending itself work (e.g. store completions).
  const caf::actor& self() const noexcept { return self_; }

  /// This shard's timer wheel, for per-key deadlines (idle eviction, retries, expiry). Write lane
  /// only, from on_write. The service keeps one self-addressed wakeup pending on CAF's clock for
  /// the wheel's next deadline and advances the wheel when it arrives, so a million keys with
  /// deadlines put one entry on CAF's clock, not a million, and a write message that arms
  /// nothing earlier costs nothing. It outlives a restart in place: the old state's timers
  /// unlink themselves when they are destroyed.
  timer_wheel& wheel() noexcept { return *wheel_; }

  /// Publishes an immutable snapshot for the read lane. Write lane only. Readers that already
  /// hold the previous snapshot keep it alive until they finish.
  void publish(std::shared_ptr<const View> v) noexcept { std::atomic_store_explicit(&view_, std::move(v), std::memory_order_release); }
  /// The latest published snapshot; any thread.
  std::shared_ptr<const View> view() const noexcept { return std::atomic_load_explicit(&view_, std::memory_order_acquire); }

private:
  template <class S>
  friend class service;
  std::string service_;
  uint32_t index_;
  caf::actor_system* sys_;
  caf::actor self_;
  std::shared_ptr<const View> view_;
  std::unique_ptr<timer_wheel> wheel_;
  std::optional<time_point> wake_at_;  ///< when the pending wheel_wakeup arrives, if one is pending
  std::optional<time_point> wake_for_; ///< an arm asked for an earlier deadline (the wheel's hook)
};

/// A sharded service over a shard implementation `Shard`, which provides:
///   using write_msg = ...;   // mutations, handled in order on the write lane
///   using read_msg = ...;    // queries, handled on the read lane
///   using read_reply = ...;
///   using view = ...;        // what the write lane publishes for the read lane
///   void on_write(write_msg&);                                   // may throw: shard restarts
///   static read_reply on_read(const view&, read_msg&);           // may throw: caller gets an error
/// and a factory that builds a Shard from durable state, called at start and on every restart.
///
/// Callers use typed client functions built on cast() and call(); they never see CAF messages.
/// Thread-safety: cast, call and overloaded may be called from any thread.
template <class Shard>
class service {
public:
  using write_msg = typename Shard::write_msg;
  using read_msg = typename Shard::read_msg;
  using read_reply = typename Shard::read_reply;
  using view = typename Shard::view;
  using context = shard_context<view>;
  using factory = std::function<std::unique_ptr<Shard>(context&)>;
  /// Called once when restarts exceed the intensity: the node stops loudly.
  using escalation = std::function<void(const std::string& why)>;

  service(caf::actor_system& sys, service_options opts, factory make, escalation escalate,
          metrics::registry* reg = nullptr, const clock& clk = steady_clock_source::instance())
      : sys_(&sys), opts_(std::move(opts)), table_(opts_.shards),
        budget_(std::make_shared<restart_budget>(opts_.restarts)), clock_(&clk), make_(std::move(make)),
        escalate_(std::move(escalate)), stats_(std::make_shared<std::vector<shard_stats>>(opts_.shards)) {
    // Producers look at the depth every (check_mask + 1) casts: often enough to catch the high
    // watermark within 1/16 of it, rarely enough to keep the lane's cache line out of the way.
    int64_t every = std::max<int64_t>(1, opts_.queue_high / 16);
    while ((check_mask_ + 1) * 2 <= every && check_mask_ < 1023)
      check_mask_ = check_mask_ * 2 + 1;
    cores_.reserve(opts_.shards);
    for (uint32_t i = 0; i < opts_.shards; ++i) {
      auto core = std::make_shared<shard_core>(this, context{opts_.name, i, sys});
      core->ctx.wheel_ = std::make_unique<timer_wheel>(opts_.wheel_tick, clock_->now());
      // Until woken: the first arm, and any arm earlier than the next wakeup, calls the hook.
      core->ctx.wheel_->set_wakeup(&service::on_wake_request, &core->ctx);
      core->ctx.wheel_->expect_advance(std::nullopt);
      core->impl = make_(core->ctx);
      if (!core->ctx.view())
        core->ctx.publish(std::make_shared<const view>());
      core->ctx.self_ = sys.spawn(writer_behavior, core);
      cores_.push_back(core);
      writers_.push_back(core->ctx.self_);
      if (opts_.isolated_reads)
        readers_.push_back(sys.spawn<caf::detached>(reader_behavior, core));
      else
        readers_.push_back(sys.spawn(reader_behavior, core));
    }
    if (reg)
      register_metrics(*reg);
  }

  service(const service&) = delete;
  service& operator=(const service&) = delete;
  ~service() { stop(); }

  /// Fire-and-forget: enqueue a mutation at the owner of `key` and return at once.
  template <class Key>
  void cast(const Key& key, write_msg msg) {
    cast_to_shard(table_.shard_of(key), std::move(msg));
  }

  void cast_to_shard(uint32_t shard, write_msg msg) {
    auto& st = (*stats_)[shard];
    auto n = st.writes_enqueued.fetch_add(1, std::memory_order_relaxed) + 1;
    if ((n & check_mask_) == 0 && n - st.writes_handled.load(std::memory_order_relaxed) >= opts_.queue_high &&
        !st.overloaded.load(std::memory_order_relaxed) && !st.overloaded.exchange(true, std::memory_order_relaxed))
      st.overload_events.fetch_add(1, std::memory_order_relaxed);
    if (!opts_.homes.empty())
      return home_push(cores_[shard], std::move(msg));
    // One allocation: the mailbox element holds the envelope inline (anon_send's path). Going
    // through a caf::message costs a second one, freed on another thread.
    writers_[shard]->enqueue(caf::make_mailbox_element(nullptr, caf::make_message_id(), {},
                                                       write_env<write_msg>{std::move(msg)}),
                             detail::current_host);
  }

  /// Casts to a shard after `delay` (a shard's own periodic work: flushes, checkpoints). Uses
  /// CAF's clock, so it is for a handful of timers per shard, never one per key or connection.
  void cast_later(uint32_t shard, duration delay, write_msg msg) {
    (*stats_)[shard].writes_enqueued.fetch_add(1, std::memory_order_relaxed);
    caf::delayed_anon_send(writers_[shard], delay, write_env<write_msg>{std::move(msg)});
  }

  /// Request/reply on the read lane with a mandatory timeout. Blocks the calling thread: for
  /// the edges (tools, admin, tests), never for an actor or an I/O thread (use call_async).
  template <class Key>
  caf::expected<read_reply> call(const Key& key, read_msg msg, duration timeout) {
    auto shard = table_.shard_of(key);
    (*stats_)[shard].reads_enqueued.fetch_add(1, std::memory_order_relaxed);
    caf::scoped_actor self{*sys_};
    caf::expected<read_reply> out{caf::sec::request_timeout};
    self->request(readers_[shard], timeout, read_env<read_msg>{std::move(msg), clock_->now() + timeout})
      .receive([&](reply_env<read_reply>& r) { out = std::move(r.value); },
               [&](caf::error& e) { out = std::move(e); });
    return out;
  }

  /// Asynchronous read: `done` runs on the read lane's thread with the reply or an error. A
  /// request still queued at `now + timeout` is answered with request_timeout without running.
  /// `done` must be cheap (post to the caller's own loop).
  template <class Key>
  void call_async(const Key& key, read_msg msg, duration timeout, std::function<void(caf::expected<read_reply>)> done) {
    auto shard = table_.shard_of(key);
    (*stats_)[shard].reads_enqueued.fetch_add(1, std::memory_order_relaxed);
    caf::anon_send(readers_[shard],
                   read_cb_env<read_msg, read_reply>{std::move(msg), clock_->now() + timeout, std::move(done)});
  }

  /// True while the owner of `key` is past its high watermark (and not yet back below low).
  template <class Key>
  bool overloaded(const Key& key) const noexcept {
    return (*stats_)[table_.shard_of(key)].overloaded.load(std::memory_order_relaxed);
  }

  template <class Key>
  uint32_t shard_of(const Key& key) const noexcept {
    return table_.shard_of(key);
  }
  const shard_stats& stats(uint32_t shard) const noexcept { return (*stats_)[shard]; }
  uint32_t shards() const noexcept { return opts_.shards; }
  uint64_t restarts() const { return budget_->restarts(); }
  const std::string& name() const noexcept { return opts_.name; }

  /// Stops every lane actor and, if `wait`, blocks until they are gone (pass false under CAF's
  /// deterministic test scheduler, which runs actors only when told). Queued messages are
  /// dropped: the caller drains first if it needs to (the node's stop order does). Casts that
  /// other threads make meanwhile or later (a store completion) are dropped too: the shards'
  /// handles stay until the service is destroyed, so a cast never meets a freed shard.
  void stop(bool wait = true) {
    if (stopped_)
      return;
    stopped_ = true;
    if (!opts_.homes.empty())
      stop_homes();
    for (auto& a : writers_)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    for (auto& a : readers_)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    if (wait) {
      caf::scoped_actor self{*sys_};
      for (auto& a : writers_)
        self->wait_for(a);
      for (auto& a : readers_)
        self->wait_for(a);
    }
    for (auto& c : cores_)
      c->ctx.self_ = nullptr; // breaks the core -> actor handle cycle
  }

private:
  struct shard_core {
    shard_core(service* s, context c) : svc(s), ctx(std::move(c)) {}
    service* svc;
    context ctx;
    std::unique_ptr<Shard> impl;
    bool failed = false;
    // Home lane only: casts waiting for the home loop, and whether the service stopped.
    std::mutex home_mu;
    std::vector<write_msg> home_queue;
    bool home_stopped = false;
    std::vector<write_msg> draining; // home loop only
  };

  // Home lane: queue the cast; the first of a burst posts one drain to the home loop.
  void home_push(const std::shared_ptr<shard_core>& core, write_msg msg) {
    {
      std::lock_guard lock(core->home_mu);
      if (core->home_stopped)
        return;
      core->home_queue.push_back(std::move(msg));
      if (core->home_queue.size() > 1)
        return; // a drain is already posted (or deferred)
    }
    // Inside a burst (a drain, a group commit's completions) the drain is posted when the burst
    // ends: one wake-up of the home loop for the whole burst (runtime/wake_batch.hpp).
    wake_batch::defer(core.get(), [core] { core->svc->post_home(core, [](shard_core& c) { c.svc->home_drain(c); }); });
  }

  // Runs `fn(core)` on the shard's home loop, unless the service stopped first.
  template <class Fn>
  void post_home(const std::shared_ptr<shard_core>& core, Fn fn) {
    opts_.homes[core->ctx.index() % opts_.homes.size()]([core, fn] {
      {
        std::lock_guard lock(core->home_mu);
        if (core->home_stopped)
          return; // stop() waits for a run in progress, and later ones see this
      }
      fn(*core);
    });
  }

  void home_drain(shard_core& c) {
    wake_batch burst; // what the handlers hand to other threads wakes them once, after the loop
    {
      std::lock_guard lock(c.home_mu);
      c.draining.swap(c.home_queue);
    }
    for (auto& m : c.draining)
      on_write(c, m);
    c.draining.clear();
    if (auto at = std::exchange(c.ctx.wake_for_, std::nullopt))
      schedule_wakeup(c, *at);
  }

  // No lane runs after this returns: mark every shard stopped, then let each home loop finish
  // what it is running (a marker posted behind it).
  void stop_homes() {
    for (auto& c : cores_) {
      std::lock_guard lock(c->home_mu);
      c->home_stopped = true;
      c->home_queue.clear();
    }
    std::vector<std::future<void>> done;
    for (auto& home : opts_.homes) {
      auto p = std::make_shared<std::promise<void>>();
      done.push_back(p->get_future());
      home([p] { p->set_value(); });
    }
    for (auto& f : done)
      if (f.wait_for(std::chrono::seconds(10)) != std::future_status::ready)
        log::warn(opts_.name, "a home loop did not answer within 10 s while stopping (stopped already?)");
  }

  static caf::behavior writer_behavior(caf::event_based_actor* self, std::shared_ptr<shard_core> core) {
    return {
      [self, core](write_env<write_msg>& e) {
        if (!core->svc->opts_.homes.empty())
          return core->svc->home_push(core, std::move(e.msg)); // a delayed cast: to the home loop
        detail::current_host = self->context();
        core->svc->on_write(*core, e.msg);
        if (auto at = std::exchange(core->ctx.wake_for_, std::nullopt))
          core->svc->schedule_wakeup(*core, *at);
        detail::current_host = nullptr;
      },
      [self, core](wheel_wakeup) {
        if (!core->svc->opts_.homes.empty())
          return core->svc->post_home(core, [](shard_core& c) {
            c.ctx.wake_at_.reset();
            c.svc->run_wheel(c);
          });
        detail::current_host = self->context();
        core->ctx.wake_at_.reset();
        core->svc->run_wheel(*core);
        detail::current_host = nullptr;
      },
    };
  }

  static caf::behavior reader_behavior(caf::event_based_actor* self, std::shared_ptr<shard_core> core) {
    if (core->svc->opts_.isolated_reads)
      detail::lower_thread_priority();
    return {
      [core](read_env<read_msg>& e) -> caf::result<reply_env<read_reply>> {
        auto r = core->svc->on_read(*core, e.msg, e.deadline);
        if (!r)
          return std::move(r.error());
        return reply_env<read_reply>{std::move(*r)};
      },
      [core](read_cb_env<read_msg, read_reply>& e) { e.done(core->svc->on_read(*core, e.msg, e.deadline)); },
    };
  }

  void on_write(shard_core& c, write_msg& m) {
    auto& st = (*stats_)[c.ctx.index()];
    if (!c.failed) {
      try {
        c.impl->on_write(m);
      } catch (const std::exception& e) {
        restart(c, e.what());
      } catch (...) {
        restart(c, "unknown exception");
      }
    }
    detail::bump(st.writes_handled);
    if (st.overloaded.load(std::memory_order_relaxed) && st.write_depth() <= opts_.queue_low)
      st.overloaded.store(false, std::memory_order_relaxed);
  }

  // The wheel's hook, called from an arm on the write lane whose deadline is earlier than the
  // announced next advance: remember it; the lane schedules a wakeup after the message.
  static void on_wake_request(void* ctx, time_point deadline) {
    auto& c = *static_cast<context*>(ctx);
    if (!c.wake_for_ || deadline < *c.wake_for_)
      c.wake_for_ = deadline;
  }

  // Makes sure a wheel_wakeup arrives by `at`: one message on CAF's clock per shard, re-aimed
  // only when a deadline is earlier than the pending one.
  void schedule_wakeup(shard_core& c, time_point at) {
    if (c.ctx.wake_at_ && *c.ctx.wake_at_ <= at)
      return;
    auto now = clock_->now();
    auto delay = at > now ? at - now : duration::zero();
    c.ctx.wake_at_ = now + delay;
    caf::delayed_anon_send(c.ctx.self_, delay, wheel_wakeup{});
  }

  // A wakeup arrived: fire what is due (callbacks run as part of the write lane, like on_write:
  // one that throws restarts the shard) and aim the next wakeup at the wheel's next deadline.
  void run_wheel(shard_core& c) {
    auto& w = *c.ctx.wheel_;
    if (!c.failed) {
      try {
        w.advance(clock_->now());
      } catch (const std::exception& e) {
        restart(c, e.what());
      } catch (...) {
        restart(c, "unknown exception in a timer callback");
      }
    }
    auto next = w.next_deadline();
    w.expect_advance(next); // an arm earlier than this calls the hook (never during advance)
    if (next)
      schedule_wakeup(c, *next);
  }

  caf::expected<read_reply> on_read(shard_core& c, read_msg& m, time_point deadline) {
    auto& st = (*stats_)[c.ctx.index()];
    detail::bump(st.reads_handled);
    if (clock_->now() > deadline)
      return caf::make_error(caf::sec::request_timeout);
    try {
      auto v = c.ctx.view();
      return Shard::on_read(*v, m);
    } catch (const std::exception& e) {
      st.read_failures.fetch_add(1, std::memory_order_relaxed);
      log::warn(opts_.name, "shard {} read failed: {}", c.ctx.index(), e.what());
      return caf::make_error(caf::sec::runtime_error, std::string(e.what()));
    }
  }

  // OTP one_for_one restart in place: the failed message is dropped (as an Erlang process's
  // would be), the state is rebuilt from durable state by the factory, the actor handles and
  // the queued messages stay, so callers never see a stale handle.
  void restart(shard_core& c, const std::string& why) {
    log::error(opts_.name, "shard {} crashed: {}", c.ctx.index(), why);
    c.impl.reset();
    if (!budget_->allow(clock_->now())) {
      c.failed = true;
      auto msg = fmt::format("service {}: more than {} restarts in {} ms, escalating (last: {})", opts_.name,
                             opts_.restarts.intensity,
                             std::chrono::duration_cast<std::chrono::milliseconds>(opts_.restarts.period).count(), why);
      log::critical(opts_.name, "{}", msg);
      if (escalate_)
        escalate_(msg);
      return;
    }
    try {
      c.impl = make_(c.ctx);
      log::info(opts_.name, "shard {} restarted", c.ctx.index());
    } catch (const std::exception& e) {
      restart(c, fmt::format("restart failed: {}", e.what()));
    }
  }

  // The registry outlives the service: each callback holds the stats (or the budget) it reads.
  void register_metrics(metrics::registry& reg) {
    for (uint32_t i = 0; i < opts_.shards; ++i) {
      auto labels = fmt::format("service=\"{}\",shard=\"{}\"", opts_.name, i);
      std::shared_ptr<const shard_stats> st(stats_, &(*stats_)[i]);
      reg.make_gauge_fn("agner_shard_write_queue", "Write-lane messages queued at a shard", labels,
                        [st] { return static_cast<double>(st->write_depth()); });
      reg.make_gauge_fn("agner_shard_read_queue", "Read-lane requests queued at a shard", labels,
                        [st] { return static_cast<double>(st->read_depth()); });
      reg.make_gauge_fn("agner_shard_overloaded", "1 while the shard is past its high watermark", labels,
                        [st] { return st->overloaded.load(std::memory_order_relaxed) ? 1.0 : 0.0; });
      reg.make_counter_fn("agner_shard_writes_total", "Write-lane messages handled", labels,
                        [st] { return static_cast<double>(st->writes_handled.load(std::memory_order_relaxed)); });
      reg.make_counter_fn("agner_shard_reads_total", "Read-lane requests handled", labels,
                        [st] { return static_cast<double>(st->reads_handled.load(std::memory_order_relaxed)); });
      reg.make_counter_fn("agner_shard_overload_events_total", "Times the shard crossed its high watermark", labels,
                        [st] { return static_cast<double>(st->overload_events.load(std::memory_order_relaxed)); });
      reg.make_counter_fn("agner_shard_read_failures_total", "Reads that threw", labels,
                        [st] { return static_cast<double>(st->read_failures.load(std::memory_order_relaxed)); });
    }
    reg.make_counter_fn("agner_service_restarts_total", "Shard restarts after a crash", fmt::format("service=\"{}\"", opts_.name),
                      [b = budget_] { return static_cast<double>(b->restarts()); });
  }

  caf::actor_system* sys_;
  service_options opts_;
  slot_table table_;
  std::shared_ptr<restart_budget> budget_;
  const clock* clock_;
  factory make_;
  escalation escalate_;
  std::shared_ptr<std::vector<shard_stats>> stats_;
  std::vector<std::shared_ptr<shard_core>> cores_;
  std::vector<caf::actor> writers_;
  std::vector<caf::actor> readers_;
  bool stopped_ = false; ///< stop() ran (it is called from one thread: the owner's)
  int64_t check_mask_ = 0;
};

} // namespace agner
