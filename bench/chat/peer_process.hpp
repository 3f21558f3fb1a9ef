// The benchmark's peer processes (agner-node, the echo server) and what is read off them:
// spawning and killing on every exit path, temp directories, RSS and CPU from /proc, and the
// heap counter's snapshots. No WebSocket code: the load client is in ws_chat_bench.cpp.
#pragma once

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/resource.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace agner::bench::peers {

namespace fs = std::filesystem;
using clk = std::chrono::steady_clock;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------------
// Child processes (the node, the echo server), killed on every exit path.

inline std::mutex children_mu;
inline std::vector<pid_t> children;
inline std::vector<std::string> temp_dirs;

struct child {
  pid_t pid = -1;
  std::string log;

  static child spawn(const std::vector<std::string>& args, const std::string& log, const std::vector<std::string>& env) {
    child c;
    c.log = log;
    pid_t pid = ::fork();
    if (pid < 0)
      throw std::runtime_error("fork failed");
    if (pid == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        ::close(fd);
      }
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      // The node refuses unknown AGNER_* variables: drop the harness's own.
      ::unsetenv("AGNER_BENCH_JSON");
      ::unsetenv("AGNER_BENCH_REPEATS");
      for (auto& e : env)
        ::putenv(const_cast<char*>(e.c_str()));
      std::vector<char*> argv;
      for (auto& a : args)
        argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      std::fprintf(stderr, "exec %s: %s\n", argv[0], std::strerror(errno));
      ::_exit(127);
    }
    c.pid = pid;
    std::lock_guard l(children_mu);
    children.push_back(pid);
    return c;
  }

  /// Waits until the log holds `needle`; returns the text after it on that line.
  std::optional<std::string> wait_for(const std::string& needle, double timeout_s) const {
    auto until = clk::now() + std::chrono::duration<double>(timeout_s);
    while (clk::now() < until) {
      std::ifstream in(log);
      std::string line;
      while (std::getline(in, line))
        if (auto p = line.find(needle); p != std::string::npos)
          return line.substr(p + needle.size());
      int st;
      if (::waitpid(pid, &st, WNOHANG) == pid)
        return std::nullopt;
      std::this_thread::sleep_for(20ms);
    }
    return std::nullopt;
  }

  void stop(double timeout_s = 15) {
    if (pid <= 0)
      return;
    ::kill(pid, SIGTERM);
    auto until = clk::now() + std::chrono::duration<double>(timeout_s);
    int st;
    while (::waitpid(pid, &st, WNOHANG) == 0) {
      if (clk::now() > until) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &st, 0);
        break;
      }
      std::this_thread::sleep_for(20ms);
    }
    std::lock_guard l(children_mu);
    std::erase(children, pid);
    pid = -1;
  }
};

inline void kill_children_and_clean() {
  std::lock_guard l(children_mu);
  for (pid_t p : children)
    ::kill(p, SIGKILL);
  for (pid_t p : children)
    ::waitpid(p, nullptr, 0);
  children.clear();
  for (auto& d : temp_dirs) {
    std::error_code ec;
    fs::remove_all(d, ec);
  }
  temp_dirs.clear();
}

inline std::string make_temp_dir(const std::string& parent, const std::string& tag) {
  std::string tmpl = parent + "/agner-wsbench-" + tag + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back(0);
  if (!::mkdtemp(buf.data()))
    throw std::runtime_error("mkdtemp failed in " + parent);
  std::lock_guard l(children_mu);
  temp_dirs.emplace_back(buf.data());
  return buf.data();
}

// ---------------------------------------------------------------------------------------------
// Memory of a process

struct mem_sample {
  int64_t rss_kb = 0, anon_kb = 0, private_dirty_kb = 0, shmem_kb = 0;
};

inline mem_sample read_mem(pid_t pid) {
  mem_sample m;
  std::ifstream in(fmt::format("/proc/{}/smaps_rollup", pid));
  std::string line0;
  while (std::getline(in, line0)) {
    std::istringstream ls(line0);
    std::string key;
    int64_t v = 0;
    if (!(ls >> key >> v))
      continue;
    if (key == "Rss:")
      m.rss_kb = v;
    else if (key == "Anonymous:")
      m.anon_kb = v;
    else if (key == "Private_Dirty:")
      m.private_dirty_kb = v;
  }
  std::ifstream st(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(st, line))
    if (line.rfind("RssShmem:", 0) == 0)
      m.shmem_kb = std::atoll(line.c_str() + 9);
  return m;
}

/// CPU seconds (user + system) a process has used so far.
inline double cpu_seconds(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto p = all.rfind(')');
  if (p == std::string::npos)
    return 0;
  std::istringstream ls(all.substr(p + 2));
  std::string f;
  unsigned long long ut = 0, st = 0;
  for (int i = 3; i <= 15 && ls >> f; ++i) {
    if (i == 14)
      ut = std::stoull(f);
    if (i == 15)
      st = std::stoull(f);
  }
  return static_cast<double>(ut + st) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

struct heap_sample {
  bool ok = false;
  int64_t live_bytes = 0, live_allocs = 0, total_allocs = 0;
  std::map<int64_t, int64_t> by_class; // usable-size class (bytes, multiple of 16) -> live count
};

/// Asks the heapcount shim in a child for a dump (see heapcount.cpp).
inline heap_sample read_heap(const std::string& path) {
  heap_sample h;
  std::error_code ec;
  fs::remove(path, ec);
  std::ofstream(path + ".req").put('1');
  for (int i = 0; i < 100 && !fs::exists(path); ++i)
    std::this_thread::sleep_for(20ms);
  std::ifstream in(path);
  std::string key;
  while (in >> key) {
    if (key == "class") {
      int64_t c, n;
      in >> c >> n;
      h.by_class[c] = n;
    } else {
      int64_t v;
      in >> v;
      if (key == "live_bytes")
        h.live_bytes = v, h.ok = true;
      else if (key == "live_allocs")
        h.live_allocs = v;
      else if (key == "total_allocs")
        h.total_allocs = v;
    }
  }
  return h;
}

} // namespace agner::bench::peers
