// The timing wheel's slot math, cascading and firing. The invariant everything rests on: a linked
// node sits in a slot the wheel processes no later than its expiry. `place` puts a timer with
// expiry e > now_ at the level of the highest bit group where e and now_ differ, in the slot named
// by e's bits in that group (processed exactly when now_ enters it); timers with e <= now_ sit in
// the due or firing list. A lazy re-arm leaves a node in an earlier slot than `place` would pick,
// and a lazy cancel leaves an unarmed (parked) node linked; processing a slot sorts both out.
#include "runtime/timer/wheel.hpp"

#include <bit>
#include <cassert>
#include <limits>
#include <string>

#include "runtime/metrics.hpp"

namespace agner {

namespace {

constexpr uint64_t slot_mask = timer_wheel::slots_per_level - 1;

// Level L of the wheel counts in units of 2^(slot_bits * L) ticks.
constexpr int level_shift(int level) noexcept { return timer_wheel::slot_bits * level; }

} // namespace

// The registry series of a wheel, plus what was already published so each publish adds deltas.
struct timer_wheel::bound_metrics {
  metrics::gauge* live;
  metrics::counter* armed;
  metrics::counter* cancelled;
  metrics::counter* fired;
  metrics::histogram* late_ticks;
  stats published;
};

// -- timer --------------------------------------------------------------------------------------

timer::~timer() {
  if (wheel_)
    wheel_->erase(*this); // the memory goes away: unlink now, parked or not
}

void timer::cancel() noexcept {
  if (wheel_)
    wheel_->cancel(*this);
}

void timer::unlink() noexcept {
  if (wheel_)
    wheel_->erase(*this);
}

// -- construction -------------------------------------------------------------------------------

timer_wheel::timer_wheel(duration tick, time_point start, int levels)
    : tick_(tick), start_(start), tick_rep_(static_cast<uint64_t>(tick.count())),
      tick_recip_(tick.count() > 0 ? ~uint64_t{0} / static_cast<uint64_t>(tick.count()) : 0),
      start_rep_(static_cast<uint64_t>(start.time_since_epoch().count())), levels_(levels) {
  assert(tick.count() > 0 && "a tick must be a positive duration");
  assert(levels >= 1 && levels <= max_levels);
}

timer_wheel::~timer_wheel() {
  // Timers outlive the wheel in their owners; leave them unarmed so their destructors do not
  // reach back into freed memory.
  for (auto& head : heads_) {
    while (timer* t = head) {
      head = t->next_;
      t->next_ = nullptr;
      t->pprev_ = nullptr;
      t->wheel_ = nullptr;
      t->expiry_ = 0; // a parked node becomes a plain unarmed one
    }
  }
}

// -- time conversion ----------------------------------------------------------------------------

time_point timer_wheel::time_of(uint64_t k) const noexcept {
  using rep = duration::rep;
  auto room = static_cast<uint64_t>(std::numeric_limits<rep>::max() - start_.time_since_epoch().count());
  if (k > room / tick_rep_)
    return time_point::max();
  return start_ + duration{static_cast<rep>(k * tick_rep_)};
}

// -- intrusive lists ----------------------------------------------------------------------------

void timer_wheel::link(timer& t, uint32_t slot) noexcept {
  timer*& head = heads_[slot];
  t.next_ = head;
  if (head)
    head->pprev_ = &t.next_;
  head = &t;
  t.pprev_ = &head;
  t.slot_ = slot;
  if (slot < level_slots)
    occupied_[slot >> slot_bits] |= uint64_t{1} << (slot & slot_mask);
}

void timer_wheel::unlink(timer& t) noexcept {
  *t.pprev_ = t.next_;
  if (t.next_)
    t.next_->pprev_ = t.pprev_;
  if (t.slot_ < level_slots && heads_[t.slot_] == nullptr)
    occupied_[t.slot_ >> slot_bits] &= ~(uint64_t{1} << (t.slot_ & slot_mask));
  t.next_ = nullptr;
  t.pprev_ = nullptr;
}

uint32_t timer_wheel::slot_of(uint64_t e) const noexcept {
  if (e <= now_)
    return due_slot;
  // The highest differing bit names the level: every bit group above it already matches now_,
  // so the timer needs attention exactly when now_ reaches its slot in that level.
  int level = (63 - std::countl_zero(e ^ now_)) / slot_bits;
  if (level >= levels_)
    return overflow_slot;
  return static_cast<uint32_t>(level) * slots_per_level + static_cast<uint32_t>((e >> level_shift(level)) & slot_mask);
}

void timer_wheel::place(timer& t) noexcept {
  uint32_t slot = slot_of(t.expiry_);
  link(t, slot);
  if (slot == overflow_slot && t.expiry_ < overflow_min_)
    overflow_min_ = t.expiry_;
}

void timer_wheel::detach(timer& t) noexcept {
  unlink(t);
  t.wheel_ = nullptr;
  --stats_.live;
}

void timer_wheel::erase(timer& t) noexcept {
  if (t.expiry_ == timer::parked) {
    --stats_.parked;
    t.expiry_ = 0;
  } else {
    --stats_.live;
    ++stats_.cancelled;
  }
  unlink(t);
  t.wheel_ = nullptr;
}

void timer_wheel::revisit(timer& t) noexcept {
  if (t.expiry_ == timer::parked) {
    t.next_ = nullptr;
    t.pprev_ = nullptr;
    t.wheel_ = nullptr;
    t.expiry_ = 0;
    --stats_.parked;
  } else if (t.expiry_ <= now_) {
    link(t, firing_slot);
  } else {
    // A timer that was placed by its expiry moves strictly down a level here (the classic
    // cascade); one whose expiry was moved later lazily may land anywhere after now_.
    place(t);
  }
}

// -- arm and cancel -----------------------------------------------------------------------------

void timer_wheel::arm_slow(timer& t, uint64_t e) noexcept {
  if (t.wheel_ == this) {
    if (t.expiry_ == timer::parked) { // lazily cancelled, still linked: arming it again
      --stats_.parked;
      ++stats_.live;
      ++stats_.armed;
    } else {
      ++stats_.rearmed;
    }
    // Lazy re-arm: a node in a level slot that the wheel processes at or before the new expiry
    // can stay there; processing re-inserts it where e belongs. Only the expiry is written, no
    // other node is touched. A fixed idle timeout re-armed on every frame always takes this
    // path, since its deadline only moves later. An earlier deadline moves the node now.
    if (t.slot_ < level_slots && e >= slot_tick(t.slot_)) {
      t.expiry_ = e;
      ++stats_.lazy;
    } else {
      unlink(t);
      t.expiry_ = e;
      place(t);
    }
  } else {
    if (t.wheel_)
      t.wheel_->erase(t); // another wheel: it must leave that wheel's lists now
    t.wheel_ = this;
    ++stats_.live;
    ++stats_.armed;
    t.expiry_ = e;
    place(t);
  }
  if (e < wake_tick_ && !advancing_) [[unlikely]]
    wake(e);
}

void timer_wheel::wake(uint64_t e) noexcept {
  wake_tick_ = e;
  if (wakeup_fn_)
    wakeup_fn_(wakeup_context_, time_of(e));
}

void timer_wheel::cancel(timer& t) noexcept {
  if (t.wheel_ != this || t.expiry_ == timer::parked)
    return;
  ++stats_.cancelled;
  if constexpr (lazy_cancel) {
    // Lazy cancel: a node in a level slot or the overflow list stays linked, unarmed, until that
    // slot is processed (then it is dropped), it is re-armed, or it is destroyed. Due and firing
    // lists are short and hot and next_deadline reports "now" for them, so those unlink at once.
    if (t.slot_ <= overflow_slot) {
      t.expiry_ = timer::parked;
      --stats_.live;
      ++stats_.parked;
      return;
    }
  }
  detach(t);
}

void timer_wheel::expect_advance(std::optional<time_point> at) noexcept {
  wake_tick_ = at ? ticks_ceil(*at) : ~uint64_t{0};
}

// -- advancing ----------------------------------------------------------------------------------

bool timer_wheel::next_event(uint64_t& tick, uint32_t& slot) const noexcept {
  // Lower levels always come first: an occupied slot of level L lies inside the current block of
  // level L+1, while every occupied slot of level L+1 starts after that block ends.
  for (int level = 0; level < levels_; ++level) {
    uint64_t bits = occupied_[level];
    if (!bits)
      continue;
    auto s = static_cast<uint64_t>(std::countr_zero(bits));
    int above = level_shift(level + 1);
    tick = ((now_ >> above) << above) | (s << level_shift(level));
    slot = static_cast<uint32_t>(level) * slots_per_level + static_cast<uint32_t>(s);
    return true;
  }
  if (heads_[overflow_slot]) {
    // The overflow list needs attention when now_ enters the top-level block of its earliest
    // member; overflow_min_ may be stale (cancelled), which only makes that visit early.
    int top = level_shift(levels_);
    uint64_t block = (overflow_min_ >> top) << top;
    tick = block > now_ ? block : now_ + 1;
    slot = overflow_slot;
    return true;
  }
  return false;
}

void timer_wheel::cascade(uint32_t slot) noexcept {
  // now_ has just entered this slot's range, so every member now differs from now_ only in lower
  // bit groups: each one moves strictly down a level, or to the firing list if due right now.
  // Nothing runs user code here, so the whole list is taken at once and walked without unlinking
  // node by node; no member can come back into this slot (it goes below, or after it).
  timer* list = heads_[slot];
  heads_[slot] = nullptr;
  occupied_[slot >> slot_bits] &= ~(uint64_t{1} << (slot & slot_mask));
  while (timer* t = list) {
    list = t->next_;
    revisit(*t);
  }
}

void timer_wheel::redistribute_overflow() noexcept {
  timer* list = heads_[overflow_slot];
  heads_[overflow_slot] = nullptr;
  overflow_min_ = ~uint64_t{0};
  while (timer* t = list) {
    list = t->next_;
    revisit(*t); // members that still do not fit go back to the overflow list
  }
}

size_t timer_wheel::fire_list(uint32_t slot, uint64_t target) {
  size_t n = 0;
  while (timer* t = heads_[slot]) {
    detach(*t);
    uint64_t late = target > t->expiry_ ? target - t->expiry_ : 0;
    ++stats_.fired;
    ++stats_.late_ticks[late < late_buckets - 1 ? late : late_buckets - 1];
    if (late > stats_.late_max_ticks)
      stats_.late_max_ticks = late;
    if (metrics_)
      metrics_->late_ticks->observe(late);
    ++n;
    // The callback may destroy *t, so nothing below touches it.
    if (t->fn_)
      t->fn_(*t, t->context_);
  }
  return n;
}

size_t timer_wheel::advance(time_point now) {
  assert(!advancing_ && "advance must not be called from a timer callback");
  struct reset_flag {
    bool& flag;
    ~reset_flag() { flag = false; }
  } guard{advancing_};
  advancing_ = true;

  uint64_t target = ticks_floor(now);
  if (target < now_)
    target = now_;
  size_t fired = 0;

  // Leftovers of a callback that threw, then timers armed with past deadlines since last time.
  // Callbacks that arm a timer at or before now_ put it in due_slot, which waits for the next
  // advance: a callback re-arming itself "now" cannot loop forever.
  fired += fire_list(firing_slot, target);
  while (timer* t = heads_[due_slot]) {
    unlink(*t);
    link(*t, firing_slot);
  }
  fired += fire_list(firing_slot, target);

  uint64_t tick;
  uint32_t slot;
  while (next_event(tick, slot) && tick <= target) {
    now_ = tick;
    if (slot == overflow_slot)
      redistribute_overflow();
    else
      cascade(slot); // at level 0 every member expires exactly now, so all of them go to firing
    fired += fire_list(firing_slot, target);
  }
  // No slot needs attention up to target, so every timer's position stays valid there.
  now_ = target;

  if (metrics_)
    publish_metrics();
  return fired;
}

std::optional<time_point> timer_wheel::next_deadline() const noexcept {
  if (stats_.live == 0)
    return std::nullopt; // only parked nodes (if any) are linked: nothing needs a wake-up
  if (heads_[due_slot] || heads_[firing_slot])
    return time_of(now_);
  uint64_t tick;
  uint32_t slot;
  if (!next_event(tick, slot))
    return std::nullopt;
  return time_of(tick);
}

// -- metrics ------------------------------------------------------------------------------------

void timer_wheel::bind_metrics(metrics::registry& registry, std::string_view labels) {
  auto m = std::make_unique<bound_metrics>();
  m->live = &registry.make_gauge("agner_timer_live", "Timers armed now", labels);
  m->armed = &registry.make_counter("agner_timer_armed_total", "Timer arm and re-arm operations", labels);
  m->cancelled = &registry.make_counter("agner_timer_cancelled_total", "Armed timers cancelled", labels);
  m->fired = &registry.make_counter("agner_timer_fired_total", "Timer callbacks run", labels);
  m->late_ticks = &registry.make_histogram("agner_timer_late_ticks",
                                           "Ticks between a timer's rounded-up deadline and its firing", labels);
  // Firings before binding were not observed in the histogram; counters start from now too.
  m->published = stats_;
  metrics_ = std::move(m);
  publish_metrics();
}

void timer_wheel::publish_metrics() noexcept {
  auto& m = *metrics_;
  m.live->set(static_cast<int64_t>(stats_.live));
  m.armed->inc(stats_.armed + stats_.rearmed - m.published.armed - m.published.rearmed);
  m.cancelled->inc(stats_.cancelled - m.published.cancelled);
  m.fired->inc(stats_.fired - m.published.fired);
  m.published = stats_;
}

} // namespace agner
