// wake_batch: the wake-ups a burst of work owes other threads go out once, at the end of the burst.
//
// A group commit's completions cast to many shards; a drain of a shard's queue submits to the store
// and pushes to sessions; a socket's frames cast to several shards. Each of those hand-offs wakes
// the receiving thread if it sleeps. Woken in the middle of the burst, the receiver can preempt the
// sender (on this 2-vCPU box a woken thread often lands on the waker's CPU), take the one item
// handed over so far, and sleep again, while the rest of the burst waits for the sender to get its
// CPU back: one wake-up per item instead of one per burst, and the burst's tail late by a slice.
//
// Open a wake_batch around the burst. A hand-off made while one is open queues its item as usual
// and defers the wake (`defer`); the outermost batch runs the deferred wakes when it closes, once
// per key. Without an open batch, `defer` runs the wake at once. Everything stays on one thread.
#pragma once

#include <functional>
#include <utility>
#include <vector>

namespace agner {

class wake_batch {
public:
  wake_batch() noexcept : outer_(current_ == nullptr) {
    if (outer_)
      current_ = this;
  }
  ~wake_batch() {
    if (!outer_)
      return;
    // A wake may open a batch of its own (it runs on this thread): this one is closed first.
    current_ = nullptr;
    flush();
  }
  wake_batch(const wake_batch&) = delete;
  wake_batch& operator=(const wake_batch&) = delete;

  /// Runs `wake` now if no batch is open on this thread, else when the outermost one closes, in
  /// the order deferred. Wakes deferred under the same non-null `key` run once (the first one
  /// given); a null key never merges.
  template <class Fn>
  static void defer(const void* key, Fn&& wake) {
    if (current_ == nullptr)
      return std::forward<Fn>(wake)();
    if (key != nullptr)
      for (auto& w : wakes_)
        if (w.first == key)
          return;
    wakes_.emplace_back(key, std::forward<Fn>(wake));
  }

  /// Runs the wakes deferred so far now. Call it before blocking on an answer from another
  /// thread inside a burst: the request's wake-up may be among them.
  static void flush_now() {
    if (current_ != nullptr)
      flush();
  }

  /// Whether a batch is open on this thread.
  static bool open() noexcept { return current_ != nullptr; }

private:
  using wake_list = std::vector<std::pair<const void*, std::function<void()>>>;

  static void flush() {
    // Taken out first (a wake that opened a batch of its own would add to the list), and given
    // back empty afterwards, so that bursts reuse one allocation per thread.
    wake_list wakes;
    wakes.swap(wakes_);
    for (auto& w : wakes)
      w.second();
    wakes.clear();
    if (wakes_.empty())
      wakes_.swap(wakes);
  }

  bool outer_;
  static inline thread_local wake_batch* current_ = nullptr;
  static inline thread_local wake_list wakes_;
};

} // namespace agner
