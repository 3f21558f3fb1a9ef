#include "runtime/node.hpp"

#include "runtime/log.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/signal_set.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <fmt/format.h>

#include <csignal>
#include <pthread.h>
#include <unistd.h>

namespace agner {

void node_options::bind(config_schema& s) {
  s.add("node.scheduler_threads", &scheduler_threads, "CAF scheduler threads (0 = one per core)", 0, 256);
  s.add("node.scheduler_polls", &scheduler_polls,
        "polls (50 us apart) an idle scheduler thread makes before it sleeps until woken (CAF's default: 500)", 0,
        100'000);
  s.add("node.io_threads", &io_threads, "network I/O threads, one io_context each", 1, 64);
  s.add("node.shards_on_io_threads", &shards_on_io_threads,
        "run the chat services' shards on the I/O threads (false: on CAF's scheduler threads)");
  s.add_choice("log.level", &log_level, "minimum log level", {"debug", "info", "warn", "error", "critical", "off"});
  s.add_choice("log.format", &log_format, "log line format (auto = json unless stderr is a terminal)",
               {"auto", "json", "text"});
}

struct node::signal_state {
  explicit signal_state(boost::asio::io_context& io) : set(io, SIGTERM, SIGINT) {}
  boost::asio::signal_set set;
  int seen = 0;
};

node::node(node_options opts) : opts_(std::move(opts)) {
  log::set_level(log::parse_level(opts_.log_level));
  if (opts_.log_format != "auto")
    log::set_json(opts_.log_format == "json");
  cfg_ = std::make_unique<caf::actor_system_config>();
  uint32_t threads = opts_.scheduler_threads ? opts_.scheduler_threads : std::max(1u, std::thread::hardware_concurrency());
  cfg_->set("scheduler.max-threads", static_cast<size_t>(threads));
  // An idle worker spins briefly (CAF's aggressive phase), then polls scheduler_polls times, then
  // sleeps on its queue until an enqueue wakes it (or 10 ms pass, when it tries to steal).
  cfg_->set("work-stealing.moderate-poll-attempts", static_cast<size_t>(opts_.scheduler_polls));
  // CAF's own timers and middleman are not used: connections are Asio's, timers are ours.
  system_ = std::make_unique<caf::actor_system>(*cfg_);
  for (uint32_t i = 0; i < opts_.io_threads; ++i)
    ios_.push_back(std::make_unique<boost::asio::io_context>(1));
  metrics_.make_gauge_fn("agner_node_up", "1 while the node runs, 0 while it stops", "",
                         [this] { return stopping() ? 0.0 : 1.0; });
}

node::~node() {
  if (!threads_.empty() && !stopped_) {
    request_stop();
    wait();
  }
}

void node::on_stop(std::string name, std::function<void()> step) {
  std::lock_guard lock(mu_);
  stop_steps_.emplace_back(std::move(name), std::move(step));
}

void node::start(bool handle_signals) {
  if (handle_signals) {
    signals_ = std::make_unique<signal_state>(*ios_[0]);
    // The handler re-arms itself; keep it alive in the signal state by value.
    struct rearm {
      node* self;
      void operator()(const boost::system::error_code& ec, int sig) const {
        if (ec)
          return;
        if (++self->signals_->seen == 1) {
          log::info("node", "signal {}: stopping in order (send again to exit immediately)", sig);
          self->request_stop(exit_ok);
          self->signals_->set.async_wait(rearm{self});
        } else {
          log::warn("node", "second signal {}: exiting immediately", sig);
          ::_exit(exit_signal_twice);
        }
      }
    };
    signals_->set.async_wait(rearm{this});
  }
  for (auto& io : ios_) {
    threads_.emplace_back([io = io.get(), n = threads_.size()] {
      // Named for top -H, perf and /proc (15 characters at most).
      pthread_setname_np(pthread_self(), fmt::format("agner.io.{}", n).c_str());
      auto guard = boost::asio::make_work_guard(*io);
      io->run();
    });
  }
  log::info("node", "started: {} scheduler threads, {} I/O threads", caf::get_or(*cfg_, "scheduler.max-threads", size_t{0}), ios_.size());
}

void node::request_stop(int code) {
  {
    std::lock_guard lock(mu_);
    if (stopping_.load())
      return;
    code_ = code;
    stopping_.store(true, std::memory_order_release);
  }
  cv_.notify_all();
}

void node::fatal(const std::string& why) {
  log::critical("node", "fatal: {}", why);
  request_stop(exit_fatal);
}

int node::wait() {
  std::vector<std::pair<std::string, std::function<void()>>> steps;
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return stopping_.load(); });
    if (stopped_)
      return code_;
    steps.swap(stop_steps_);
  }
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    log::info("node", "stopping: {}", it->first);
    try {
      it->second();
    } catch (const std::exception& e) {
      log::error("node", "stop step {} failed: {}", it->first, e.what());
    }
  }
  for (auto& io : ios_)
    io->stop();
  for (auto& t : threads_)
    t.join();
  threads_.clear();
  signals_.reset();
  stopped_ = true;
  log::info("node", "stopped with code {}", code_);
  return code_;
}

} // namespace agner
