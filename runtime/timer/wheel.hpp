// A hierarchical timing wheel (Varghese & Lauck) with intrusive timer nodes: O(1) arm, re-arm and
// cancel, no allocation per timer. One wheel per owner (an I/O thread, a shard), driven by that
// owner's loop; no lock anywhere. See docs/timers.md for the design.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "runtime/clock.hpp"

namespace agner {

namespace metrics {
class registry;
class counter;
class gauge;
class histogram;
} // namespace metrics

class timer_wheel;

/// A timer node, embedded in its owner (a connection, a session): arming it allocates nothing.
///
/// A timer is armed in at most one wheel at a time. It cannot be copied or moved, because the
/// wheel links to it by address. Destroying an armed (or lazily cancelled, still linked) timer
/// unlinks it at once. The callback runs on the
/// wheel owner's thread from `timer_wheel::advance`; it may arm, re-arm or cancel any timer of
/// that wheel (itself included) and may destroy its own timer (and owner) before returning.
///
/// Note: a timer belongs to the thread that owns the wheel it is armed in; only that thread may
/// arm, cancel or destroy it while it is armed.
class timer {
public:
  /// What runs when the timer fires: the timer itself and the context given at construction.
  using callback = void (*)(timer& self, void* context);

  /// A timer that does nothing when it fires (bind a callback with `bind` before arming).
  timer() noexcept = default;

  /// A timer that calls `fn(*this, context)` when it fires.
  timer(callback fn, void* context) noexcept : fn_(fn), context_(context) {}

  /// A timer that calls `(owner->*Method)()` when it fires, e.g.
  /// `agner::timer idle_ = agner::timer::calls<&connection::on_idle>(this);`
  template <auto Method, class Owner>
  static timer calls(Owner* owner) noexcept {
    return timer{[](timer&, void* context) { (static_cast<Owner*>(context)->*Method)(); }, owner};
  }

  timer(const timer&) = delete;
  timer& operator=(const timer&) = delete;

  /// Cancels the timer if it is armed and unlinks it from its wheel if it is still linked.
  ~timer();

  /// Replaces the callback. Allowed while armed; the new callback runs when it fires.
  void bind(callback fn, void* context) noexcept {
    fn_ = fn;
    context_ = context;
  }

  /// True from `arm` until the timer fires or is cancelled. False inside its own callback
  /// unless the callback re-armed it.
  bool armed() const noexcept { return wheel_ != nullptr && expiry_ != parked; }

  /// Cancels the timer in whichever wheel holds it; does nothing if it is not armed. O(1) and
  /// lazy: the node may stay linked (unarmed, "parked") until its slot is processed.
  void cancel() noexcept;

  /// Cancels and unlinks the timer at once (not lazily), on the wheel's thread. An owner whose
  /// memory may be freed on another thread (a connection whose last reference a shard drops)
  /// calls it when it is done, so that the destructor has no wheel to touch.
  void unlink() noexcept;

  /// The tick (since the wheel's start) the deadline was rounded up to; meaningful while armed.
  uint64_t expiry_tick() const noexcept { return expiry_; }

private:
  friend class timer_wheel;

  // expiry_ of a node that was cancelled lazily: still linked in wheel_, but not armed.
  static constexpr uint64_t parked = ~uint64_t{0};

  // The fields a lazy re-arm or cancel reads and writes come first, so that path touches one
  // cache line of the node for most node addresses.
  uint64_t expiry_ = 0;          // deadline in whole ticks since the wheel's start, rounded up; or parked
  timer_wheel* wheel_ = nullptr; // the wheel this node is linked in; null when unlinked
  uint32_t slot_ = 0;            // index into timer_wheel::heads_ while linked
  timer* next_ = nullptr;        // next node in the same slot list
  timer** pprev_ = nullptr;      // the pointer that points at this node (O(1) unlink, no head needed)
  callback fn_ = nullptr;
  void* context_ = nullptr;
};

/// A hierarchical timing wheel: `levels` levels of 64 slots each, level L counting in units of
/// 64^L ticks, plus an overflow list for deadlines beyond the top level.
///
/// Guarantees: a timer never fires before its deadline, and fires in the first `advance(now)`
/// whose `now` is at or past its deadline rounded up to a whole tick; so an owner that calls
/// `advance` at every tick boundary fires it less than one tick late. Timers fire in deadline-tick
/// order within one `advance`; timers due in the same tick fire in no particular order.
///
/// Note: not thread-safe by design. Only the owning thread (the I/O thread or the shard actor
/// that created the wheel) may call any member function or touch any timer armed in it.
class timer_wheel {
public:
  /// Slots per level: a power of two so a slot is a bit field of the tick, and 64 so one
  /// `uint64_t` bitmap per level finds the next non-empty slot in one instruction.
  static constexpr int slot_bits = 6;
  static constexpr uint32_t slots_per_level = 1u << slot_bits;

  /// Enough levels for 2^60 ticks; more would overflow the 64-bit tick arithmetic.
  static constexpr int max_levels = 10;

  /// Eight levels span 2^48 ticks: 3.2 days at a 1 ns tick, 8.9 years at 1 us, longer than any
  /// timeout at 1 ms. Deadlines past the top level go to the overflow list and are still exact.
  static constexpr int default_levels = 8;

  /// Deadlines are clamped to this many ticks after the start (centuries at 1 ns), so tick
  /// arithmetic never overflows; `time_point::max()` means "never" in practice.
  static constexpr uint64_t tick_limit = uint64_t{1} << 62;

  /// Buckets of the local late-firing histogram: 0, 1, ... late_buckets-2 ticks, and "more".
  static constexpr int late_buckets = 8;

  /// Counters owned by the wheel. Plain integers: read them from the owning thread.
  struct stats {
    uint64_t live = 0;       ///< timers armed now
    uint64_t parked = 0;     ///< cancelled timers still linked until their slot is processed
    uint64_t armed = 0;      ///< arm() calls on a timer that was not armed
    uint64_t rearmed = 0;    ///< arm() calls on a timer that was already armed
    uint64_t lazy = 0;       ///< arm() calls that only wrote the expiry (node left where it sits)
    uint64_t cancelled = 0;  ///< armed timers cancelled (explicitly or by destruction)
    uint64_t fired = 0;      ///< callbacks run
    uint64_t late_max_ticks = 0; ///< the largest lateness seen, in ticks
    /// Firings by lateness: index k counts timers fired k ticks after their rounded-up deadline
    /// tick (0 = on time), the last bucket counts the rest.
    std::array<uint64_t, late_buckets> late_ticks{};
  };

  /// A wheel counting ticks of length `tick` from `start`. `levels` in [1, max_levels].
  timer_wheel(duration tick, time_point start, int levels = default_levels);

  timer_wheel(const timer_wheel&) = delete;
  timer_wheel& operator=(const timer_wheel&) = delete;

  /// Unlinks every timer still linked (they become unarmed; nothing fires).
  ~timer_wheel();

  /// Arms `t` to fire at `deadline`, re-arming it if it is already armed (here or, from the same
  /// thread, in another wheel). A deadline at or before the current tick fires at the next
  /// `advance`, never inside `arm`. O(1). If the timer sits in a level slot that will be
  /// processed no later than the new deadline, only its expiry is written (a lazy re-arm).
  void arm(timer& t, time_point deadline) noexcept {
    uint64_t e = ticks_ceil(deadline);
    // The common case inline (a connection pushing its idle deadline later on every frame): the
    // node is armed here and its slot is processed no later than e, so only the expiry changes.
    if (t.wheel_ == this && t.expiry_ != timer::parked && t.slot_ < level_slots && e >= slot_tick(t.slot_)) {
      t.expiry_ = e;
      ++stats_.rearmed;
      ++stats_.lazy;
      if (e < wake_tick_ && !advancing_) [[unlikely]]
        wake(e);
      return;
    }
    arm_slow(t, e);
  }

  /// Arms `t` to fire `delay` after `now`. Convenience for `arm(t, now + delay)`.
  void arm_after(timer& t, time_point now, duration delay) noexcept { arm(t, now + delay); }

  /// Cancels `t` if it is armed in this wheel; does nothing otherwise. O(1). A timer in a level
  /// slot or the overflow list is only marked parked and stays linked until that slot is
  /// processed, it is re-armed, or it is destroyed (see docs/timers.md, "Lazy re-arm and cancel").
  void cancel(timer& t) noexcept;

  /// True if `t` is armed in this wheel.
  bool armed(const timer& t) const noexcept { return t.wheel_ == this && t.expiry_ != timer::parked; }

  /// Moves the wheel to `now` and runs the callback of every timer due by then; returns how many
  /// fired. `now` earlier than a previous `now` does not move time back. Cost is proportional to
  /// the timers fired or cascaded plus the number of levels, not to the ticks elapsed, so a large
  /// jump is cheap. Must not be called from inside a callback.
  ///
  /// If a callback throws, the exception propagates; the wheel stays consistent and timers that
  /// were due but did not fire yet fire at the next `advance`.
  size_t advance(time_point now);

  /// The time the owner must call `advance` next, or nothing if no timer is armed. Never later
  /// than the earliest deadline rounded up to a tick; it may be earlier (a cascade point of a
  /// higher level, or a slot holding only lazily re-armed or parked nodes), in which case the
  /// next call answers more precisely. O(levels).
  std::optional<time_point> next_deadline() const noexcept;

  /// Called (outside `advance`) when `arm` sets a deadline earlier than the wake-up time the
  /// owner announced with `expect_advance`, so a sleeping loop can wake sooner.
  using wakeup_fn = void (*)(void* context, time_point deadline);

  /// Installs the early-wake hook (see `wakeup_fn`); pass nullptr to remove it.
  void set_wakeup(wakeup_fn fn, void* context) noexcept {
    wakeup_fn_ = fn;
    wakeup_context_ = context;
  }

  /// Tells the wheel when the owner will next call `advance` (nothing: not until woken). An arm
  /// with an earlier deadline calls the wake-up hook once and moves this time to that deadline.
  void expect_advance(std::optional<time_point> at) noexcept;

  /// The wheel's current time: the start of the last tick it advanced to.
  time_point now() const noexcept { return time_of(now_); }
  /// The current tick, counted from the start.
  uint64_t now_tick() const noexcept { return now_; }
  duration tick() const noexcept { return tick_; }
  time_point start() const noexcept { return start_; }
  int levels() const noexcept { return levels_; }

  /// Whole ticks from the start to `t`, rounded up (how deadlines are quantized), clamped to
  /// [0, tick_limit].
  uint64_t ticks_ceil(time_point t) const noexcept {
    if (t <= start_)
      return 0;
    // t > start_, so the true difference is positive and fits in 64 unsigned bits even when the
    // signed subtraction would overflow (time_point::max() minus a negative start).
    uint64_t d = static_cast<uint64_t>(t.time_since_epoch().count()) - start_rep_;
    uint64_t rem;
    uint64_t k = div_tick(d, rem);
    k += rem != 0;
    return k < tick_limit ? k : tick_limit;
  }
  /// Whole ticks from the start to `t`, rounded down (how `advance` reads `now`).
  uint64_t ticks_floor(time_point t) const noexcept {
    if (t <= start_)
      return 0;
    uint64_t rem;
    uint64_t k = div_tick(static_cast<uint64_t>(t.time_since_epoch().count()) - start_rep_, rem);
    return k < tick_limit ? k : tick_limit;
  }
  /// The time at which tick `k` starts, saturating at `time_point::max()`.
  time_point time_of(uint64_t k) const noexcept;

  /// The counters, read without locks by the owning thread.
  const stats& counters() const noexcept { return stats_; }

  /// Registers this wheel's counters in `registry` under `agner_timer_*` names with the given
  /// labels (e.g. `owner="io",thread="0"`). The registry's series are updated at the end of every
  /// `advance` (cheap: a few relaxed atomic adds), so scrapes lag by at most one advance.
  void bind_metrics(metrics::registry& registry, std::string_view labels);

  /// The bytes of wheel state, excluding the timer nodes (which live in their owners).
  static constexpr size_t footprint_bytes() noexcept { return sizeof(timer_wheel); }

private:
  friend class timer;

  // heads_ holds one list per (level, slot), then these special lists.
  static constexpr uint32_t level_slots = max_levels * slots_per_level;
  static constexpr uint32_t overflow_slot = level_slots;     // beyond the top level
  static constexpr uint32_t due_slot = level_slots + 1;      // due, fires at the next advance
  static constexpr uint32_t firing_slot = level_slots + 2;   // due, firing in this advance
  static constexpr uint32_t head_count = level_slots + 3;

  // Whether cancel parks nodes instead of unlinking them (measured in docs/benchmarks-timer.md).
  static constexpr bool lazy_cancel = true;

  void link(timer& t, uint32_t slot) noexcept;
  void unlink(timer& t) noexcept;
  uint32_t slot_of(uint64_t expiry) const noexcept; // where an expiry belongs relative to now_
  void place(timer& t) noexcept; // links an armed timer where its expiry belongs relative to now_
  void detach(timer& t) noexcept; // unlinks and marks unarmed, updating live
  void erase(timer& t) noexcept;  // unlinks an armed or parked node at once (destructor, other wheel)
  // The tick at which now_ enters level slot `slot`, i.e. when the wheel processes it. An
  // occupied slot of level L lies ahead of now_ inside now_'s current level-(L+1) block.
  uint64_t slot_tick(uint32_t slot) const noexcept {
    int level = static_cast<int>(slot >> slot_bits);
    int above = slot_bits * (level + 1);
    return ((now_ >> above) << above) | (uint64_t{slot & (slots_per_level - 1)} << (slot_bits * level));
  }
  void arm_slow(timer& t, uint64_t e) noexcept; // every case of arm but the inline one
  void wake(uint64_t e) noexcept;               // calls the wake-up hook for an earlier expiry
  // Processing of one node taken out of a slot: drops it if parked, queues it for firing if due,
  // otherwise re-inserts it where its (possibly lazily moved) expiry belongs.
  void revisit(timer& t) noexcept;
  // The next tick > now_ at which a slot needs attention, and that slot; false if none.
  bool next_event(uint64_t& tick, uint32_t& slot) const noexcept;
  void cascade(uint32_t slot) noexcept;
  void redistribute_overflow() noexcept;
  size_t fire_list(uint32_t slot, uint64_t target);
  void publish_metrics() noexcept;
  // d / tick_rep_ and d % tick_rep_ without a division instruction (arm's hot path). With
  // m = floor((2^64 - 1) / t), q = floor(d * m / 2^64) undershoots d / t by less than 2, so at
  // most two corrections make it exact. A multiply costs a few cycles; a 64-bit div tens.
  uint64_t div_tick(uint64_t d, uint64_t& rem) const noexcept {
    auto q = static_cast<uint64_t>((static_cast<unsigned __int128>(d) * tick_recip_) >> 64);
    uint64_t r = d - q * tick_rep_;
    while (r >= tick_rep_) {
      ++q;
      r -= tick_rep_;
    }
    rem = r;
    return q;
  }

  duration tick_;
  time_point start_;
  uint64_t tick_rep_;   // tick_ in clock units, > 0
  uint64_t tick_recip_; // floor((2^64 - 1) / tick_rep_): divides by the tick with a multiply
  uint64_t start_rep_;  // start_ in clock units, as unsigned for wrap-free subtraction
  int levels_;
  bool advancing_ = false;
  uint64_t now_ = 0;             // every timer with expiry <= now_ is in due/firing or fired
  uint64_t overflow_min_ = ~uint64_t{0}; // lower bound of overflow expiries (may be stale)
  uint64_t wake_tick_ = 0;       // see expect_advance; 0: the owner polls, no hook calls
  wakeup_fn wakeup_fn_ = nullptr;
  void* wakeup_context_ = nullptr;
  std::array<uint64_t, max_levels> occupied_{}; // bit s of level L set iff its slot s is non-empty
  std::array<timer*, head_count> heads_{};
  stats stats_;

  struct bound_metrics; // registry series, only when bind_metrics was called
  std::unique_ptr<bound_metrics> metrics_;
};

/// The per-live-timer cost the design promises (docs/timers.md): the node with its callback hook.
inline constexpr size_t timer_node_bytes_max = 64;
static_assert(sizeof(timer) <= timer_node_bytes_max, "a timer node must fit in one cache line");

} // namespace agner
