// posix_spawn with pipes; every parent-side descriptor is close-on-exec, so one child never
// holds another's stdin open (which would hide its end of input).
#include "test/tools/child_process.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdexcept>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char** environ;

namespace agner::test {

namespace {

void make_pipe(int fds[2]) {
  if (::pipe2(fds, O_CLOEXEC) != 0)
    throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
}

void close_fd(int& fd) {
  if (fd >= 0)
    ::close(fd);
  fd = -1;
}

} // namespace

child_process::child_process(const std::vector<std::string>& argv, const std::string& log_file) {
  // Writing to a child that already exited must fail with EPIPE, not kill the test.
  std::signal(SIGPIPE, SIG_IGN);
  int in[2], out[2] = {-1, -1}, err[2] = {-1, -1};
  make_pipe(in);
  if (log_file.empty()) {
    make_pipe(out);
    make_pipe(err);
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  if (log_file.empty()) {
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  } else {
    posix_spawn_file_actions_addopen(&fa, 1, log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
  }
  std::vector<char*> args;
  for (auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int rc = posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(in[0]);
  in_ = in[1];
  if (log_file.empty()) {
    ::close(out[1]);
    ::close(err[1]);
    out_fd_ = out[0];
    err_fd_ = err[0];
    ::fcntl(out_fd_, F_SETFL, O_NONBLOCK);
    ::fcntl(err_fd_, F_SETFL, O_NONBLOCK);
  }
  if (rc != 0) {
    close_fd(in_);
    close_fd(out_fd_);
    close_fd(err_fd_);
    pid_ = -1;
    throw std::runtime_error(std::string("posix_spawn ") + argv[0] + ": " + std::strerror(rc));
  }
}

child_process::~child_process() {
  close_fd(in_);
  if (pid_ > 0 && !code_) {
    ::kill(pid_, SIGKILL);
    int st = 0;
    ::waitpid(pid_, &st, 0);
  }
  close_fd(out_fd_);
  close_fd(err_fd_);
}

void child_process::write_stdin(std::string_view text) {
  while (!text.empty() && in_ >= 0) {
    auto n = ::write(in_, text.data(), text.size());
    if (n < 0) {
      if (errno == EINTR)
        continue;
      throw std::runtime_error(std::string("write to child: ") + std::strerror(errno));
    }
    text.remove_prefix(static_cast<size_t>(n));
  }
}

void child_process::close_stdin() { close_fd(in_); }

void child_process::signal(int sig) {
  if (pid_ > 0 && !code_)
    ::kill(pid_, sig);
}

void child_process::pump(std::chrono::milliseconds max_wait) {
  pollfd fds[2];
  int n = 0;
  if (out_fd_ >= 0)
    fds[n++] = {out_fd_, POLLIN, 0};
  if (err_fd_ >= 0)
    fds[n++] = {err_fd_, POLLIN, 0};
  if (n == 0) {
    std::this_thread::sleep_for(max_wait);
    return;
  }
  if (::poll(fds, static_cast<nfds_t>(n), static_cast<int>(max_wait.count())) <= 0)
    return;
  for (int i = 0; i < n; ++i) {
    if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
      continue;
    int& fd = fds[i].fd == out_fd_ ? out_fd_ : err_fd_;
    std::string& buf = fds[i].fd == out_fd_ ? out_ : err_;
    char chunk[4096];
    for (;;) {
      auto r = ::read(fd, chunk, sizeof chunk);
      if (r > 0) {
        buf.append(chunk, static_cast<size_t>(r));
        continue;
      }
      if (r == 0)
        close_fd(fd);
      break; // EAGAIN, or the end
    }
  }
}

bool child_process::reap() {
  if (code_)
    return true;
  int st = 0;
  if (pid_ <= 0 || ::waitpid(pid_, &st, WNOHANG) != pid_)
    return false;
  code_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return true;
}

bool child_process::wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline)
      return false;
    pump(std::chrono::milliseconds(20));
  }
  return true;
}

std::optional<int> child_process::wait_exit(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!reap()) {
    if (std::chrono::steady_clock::now() >= deadline)
      return std::nullopt;
    pump(std::chrono::milliseconds(20));
  }
  // Whatever the child wrote before it exited (bounded: a grandchild could hold the pipes).
  auto drain_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while ((out_fd_ >= 0 || err_fd_ >= 0) && std::chrono::steady_clock::now() < drain_deadline)
    pump(std::chrono::milliseconds(100));
  return code_;
}

run_result run(const std::vector<std::string>& argv, std::string_view input, std::chrono::milliseconds timeout) {
  child_process p{argv};
  p.write_stdin(input);
  p.close_stdin();
  run_result r;
  r.code = p.wait_exit(timeout);
  r.out = p.out();
  r.err = p.err();
  return r;
}

} // namespace agner::test
