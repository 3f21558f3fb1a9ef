// A child process for end-to-end tests: spawned with pipes to its stdin, stdout and stderr
// (or its output sent to a file), read with deadlines, and killed if still running at scope exit.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace agner::test {

class child_process {
public:
  /// Starts argv[0] (a path) with argv. With `log_file`, stdout and stderr go to that file
  /// (a node that logs a lot can never block on a full pipe); otherwise both are piped.
  explicit child_process(const std::vector<std::string>& argv, const std::string& log_file = "");
  ~child_process();
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  void write_stdin(std::string_view text);
  void close_stdin();
  void signal(int sig);

  /// Reads output until `done()` holds or `timeout` passes; returns done().
  bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout);
  /// Waits for the exit (reading output meanwhile): the exit code, 128 + signal if killed,
  /// nullopt on timeout.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);

  const std::string& out() const noexcept { return out_; }
  const std::string& err() const noexcept { return err_; }
  pid_t pid() const noexcept { return pid_; }

private:
  /// Reads whatever is available within `max_wait`.
  void pump(std::chrono::milliseconds max_wait);
  bool reap();

  pid_t pid_ = -1;
  int in_ = -1, out_fd_ = -1, err_fd_ = -1;
  std::string out_, err_;
  std::optional<int> code_;
};

struct run_result {
  std::optional<int> code;  ///< nullopt: did not exit in time (and was killed)
  std::string out, err;
};

/// Runs a command to completion with `input` on its stdin, within `timeout`.
run_result run(const std::vector<std::string>& argv, std::string_view input = "",
               std::chrono::milliseconds timeout = std::chrono::seconds(15));

} // namespace agner::test
