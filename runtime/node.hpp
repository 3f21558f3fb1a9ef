// The process-level object: owns the CAF actor system, the Asio I/O threads (one io_context per
// thread), the metrics registry, and the orderly start/stop of everything registered with it.
#pragma once

#include "runtime/config.hpp"
#include "runtime/metrics.hpp"

#include <boost/asio/io_context.hpp>
#include <caf/fwd.hpp>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace agner {

/// Node-level settings, bound to configuration keys by bind().
struct node_options {
  /// CAF scheduler threads; 0 means one per core.
  uint32_t scheduler_threads = 0;
  /// Polls (50 us apart) an idle scheduler thread makes before it sleeps until work arrives
  /// (CAF's `work-stealing.moderate-poll-attempts`, default 500 there). Every poll is a sleep
  /// and a wake-up; with CAF's 500, two idle workers kept a 2-core node 0.27 cores busy at 100
  /// messages/s, and took CPU from the I/O threads under load (2026-11-30, docs/benchmarks-chat.md).
  uint32_t scheduler_polls = 0;
  /// Run the services' write lanes on the I/O threads (shard i on thread i mod io_threads)
  /// instead of CAF's workers: one thread crossing less per hop (docs/plan-fewer-crossings.md).
  bool shards_on_io_threads = true;
  /// Asio I/O threads, each with its own io_context (and, later, its own timer wheel).
  uint32_t io_threads = 1;
  std::string log_level = "info";
  std::string log_format = "auto";

  void bind(config_schema& schema);
};

/// Exit codes the node returns from wait().
enum exit_code : int { exit_ok = 0, exit_config = 2, exit_fatal = 70, exit_signal_twice = 130 };

class node {
public:
  explicit node(node_options opts);
  ~node();
  node(const node&) = delete;
  node& operator=(const node&) = delete;

  caf::actor_system& system() noexcept { return *system_; }
  metrics::registry& metrics() noexcept { return metrics_; }
  size_t io_thread_count() const noexcept { return ios_.size(); }
  /// The io_context of I/O thread `i`. Connections live on one thread for their whole life.
  boost::asio::io_context& io(size_t i) noexcept { return *ios_[i]; }

  /// Registers a step of the orderly stop. Steps run in reverse order of registration, on the
  /// thread that called wait(), before the I/O threads and the actor system are shut down.
  void on_stop(std::string name, std::function<void()> step);

  /// Starts the I/O threads and, if `handle_signals`, SIGTERM/SIGINT handling: the first signal
  /// stops in order, a second one exits immediately with code 130.
  void start(bool handle_signals = true);

  /// Asks for an orderly stop; any thread, idempotent. The first code given wins.
  void request_stop(int code = exit_ok);
  /// Escalation: logs critically and stops with exit_fatal.
  void fatal(const std::string& why);
  bool stopping() const noexcept { return stopping_.load(std::memory_order_acquire); }

  /// Blocks until a stop is requested, runs the stop steps, joins the I/O threads; returns the
  /// exit code.
  int wait();

private:
  node_options opts_;
  metrics::registry metrics_;
  std::unique_ptr<caf::actor_system_config> cfg_;
  std::unique_ptr<caf::actor_system> system_;
  std::vector<std::unique_ptr<boost::asio::io_context>> ios_;
  std::vector<std::thread> threads_;
  struct signal_state;
  std::unique_ptr<signal_state> signals_;
  std::vector<std::pair<std::string, std::function<void()>>> stop_steps_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> stopping_{false};
  bool stopped_ = false;
  int code_ = exit_ok;
};

} // namespace agner
