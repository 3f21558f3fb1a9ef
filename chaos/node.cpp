#include "chaos/node.hpp"

#include "tools/powercut/powercut.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <netinet/in.h>
#include <sstream>
#include <stdexcept>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char** environ;

namespace agner::chaos {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;

uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    throw std::runtime_error("socket failed");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot find a free port");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

namespace {

size_t file_size(const std::string& path) {
  std::error_code ec;
  auto n = fs::file_size(path, ec);
  return ec ? 0 : static_cast<size_t>(n);
}

std::string read_from(const std::string& path, size_t offset) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// libfiu's remote control (Debian's libfiu0, pulled by fiu-utils) and our fsync/fdatasync failure
// points on libfiu (fiu_sync_shim.c; libfiu's own POSIX preload crashes ASan builds). Set here
// rather than through fiu-run, so the node stays the direct child and its pid is the one fiu-ctrl
// talks to.
const std::string fiu_preload = std::string("/usr/lib/fiu/fiu_run_preload.so:") + AGNER_FIU_SYNC_SHIM_PATH;

/// `env` with `libs` first in LD_PRELOAD, and ASan told not to insist on coming first (an ASan
/// build refuses to start otherwise).
void add_preload(std::vector<std::string>& env, const std::string& libs) {
  std::string preload = libs, asan = "verify_asan_link_order=0:detect_leaks=0";
  std::erase_if(env, [&](const std::string& kv) {
    if (kv.starts_with("LD_PRELOAD=")) {
      if (kv.size() > 11)
        preload.append(":").append(kv, 11); // (not ":" + substr: a GCC 12 -Wrestrict false positive)
      return true;
    }
    if (kv.starts_with("ASAN_OPTIONS=")) {
      if (kv.size() > 13)
        asan = kv.substr(13) + ":" + asan;
      return true;
    }
    return false;
  });
  env.push_back("LD_PRELOAD=" + preload);
  env.push_back("ASAN_OPTIONS=" + asan);
}

/// Forks and execs `args` with stdout and stderr appended to `log` and stdin from /dev/null; the
/// child's pid (throws if fork fails). `env` null: this process's environment and a PATH lookup
/// of args[0]; otherwise exactly `env` and args[0] as a path.
pid_t spawn(const std::vector<std::string>& args, const std::string& log, const std::vector<std::string>* env) {
  pid_t pid = ::fork();
  if (pid < 0)
    throw std::runtime_error("fork failed");
  if (pid == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
    }
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0)
      ::dup2(devnull, STDIN_FILENO);
    std::vector<char*> argv, envp;
    for (auto& a : args)
      argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    if (!env) {
      ::execvp(argv[0], argv.data());
    } else {
      for (auto& e : *env)
        envp.push_back(const_cast<char*>(e.c_str()));
      envp.push_back(nullptr);
      ::execve(argv[0], argv.data(), envp.data());
    }
    _exit(127);
  }
  return pid;
}

/// Runs args (no shell) to completion, output appended to `log`; the exit code, or -1.
int run_command(const std::vector<std::string>& args, const std::string& log) {
  pid_t pid = spawn(args, log, nullptr);
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid)
    return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

} // namespace

// --- node_handle ------------------------------------------------------------------------------

node_handle::node_handle(node_spec s) : s_(std::move(s)) {}

node_handle::~node_handle() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

std::string node_handle::address() const { return fmt::format("127.0.0.1:{}", s_.port); }

std::chrono::nanoseconds node_handle::start(std::chrono::milliseconds timeout) {
  if (pid_ > 0)
    throw std::logic_error("node already running");
  auto t0 = clk::now();
  auto log = log_path();
  size_t offset = file_size(log);
  std::vector<std::string> args{s_.binary, "--http.host=127.0.0.1", fmt::format("--http.port={}", s_.port),
                                "--store.dir=" + s_.data_dir};
  args.insert(args.end(), s_.extra_args.begin(), s_.extra_args.end());
  std::vector<std::string> env;
  if (!s_.powercut_shadow_dir.empty()) {
    env = powercut::child_environment(s_.data_dir, s_.powercut_shadow_dir);
  } else {
    for (char** e = environ; e && *e; ++e)
      env.emplace_back(*e);
  }
  if (!s_.fiu_fifo_prefix.empty()) {
    std::erase_if(env, [](const std::string& kv) { return kv.starts_with("FIU_"); });
    env.push_back("FIU_CTRL_FIFO=" + s_.fiu_fifo_prefix);
    add_preload(env, fiu_preload);
  }
  pid_t pid = spawn(args, log, &env);
  pid_ = pid;
  paused_ = false;
  // The node logs "chat node ready on HOST:PORT" once it accepts connections.
  for (;;) {
    if (read_from(log, offset).find("chat node ready on") != std::string::npos)
      return clk::now() - t0;
    if (died())
      throw std::runtime_error(fmt::format("agner-node exited during startup; see {}", log));
    if (clk::now() - t0 > timeout) {
      kill();
      throw std::runtime_error(fmt::format("agner-node not ready within {} ms; see {}", timeout.count(), log));
    }
    std::this_thread::sleep_for(10ms);
  }
}

void node_handle::kill() {
  if (pid_ <= 0)
    return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
  paused_ = false;
}

uint64_t node_handle::power_cut() {
  kill();
  if (s_.powercut_shadow_dir.empty())
    return 0;
  return powercut::apply_cut(s_.powercut_shadow_dir, s_.data_dir).bytes_discarded;
}

void node_handle::pause() {
  if (pid_ > 0 && !paused_ && ::kill(pid_, SIGSTOP) == 0)
    paused_ = true;
}

void node_handle::resume() {
  if (pid_ > 0 && paused_ && ::kill(pid_, SIGCONT) == 0)
    paused_ = false;
}

void node_handle::fail_fsync() {
  if (s_.fiu_fifo_prefix.empty() || pid_ <= 0)
    throw std::logic_error("fail_fsync: the node does not run under libfiu");
  int rc = run_command({"fiu-ctrl", "-f", s_.fiu_fifo_prefix, "-c", "enable name=posix/io/sync/fsync,failinfo=5", "-c",
                        "enable name=posix/io/sync/fdatasync,failinfo=5", std::to_string(pid_)},
                       log_path());
  if (rc != 0)
    throw std::runtime_error(fmt::format("fiu-ctrl failed ({}); is fiu-utils installed? see {}", rc, log_path()));
}

bool node_handle::died() {
  if (pid_ <= 0)
    return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    paused_ = false;
    return true;
  }
  return false;
}

std::optional<int> node_handle::stop(std::chrono::milliseconds timeout) {
  if (pid_ <= 0)
    return std::nullopt;
  resume();
  ::kill(pid_, SIGTERM);
  auto t0 = clk::now();
  while (clk::now() - t0 < timeout) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(10ms);
  }
  kill();
  return std::nullopt;
}


// --- the disk ------------------------------------------------------------------------------------

uint64_t fill_disk(const std::string& dir) {
  auto path = dir + "/chaos-filler";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    throw std::runtime_error(fmt::format("cannot create {}", path));
  // Take the space in shrinking steps: what the file system reports free is approximate, and
  // what is left after the big steps is taken down to the last page.
  uint64_t taken = 0;
  struct statvfs v {};
  uint64_t step = ::fstatvfs(fd, &v) == 0 ? static_cast<uint64_t>(v.f_bavail) * v.f_frsize : uint64_t{1} << 30;
  step = std::max<uint64_t>(step, 4096);
  while (step >= 4096) {
    if (::fallocate(fd, 0, static_cast<off_t>(taken), static_cast<off_t>(step)) == 0)
      taken += step;
    else if (errno == ENOSPC)
      step /= 2;
    else {
      ::close(fd);
      throw std::runtime_error(fmt::format("fallocate on {}: {}", path, std::strerror(errno)));
    }
  }
  ::close(fd);
  return taken;
}

void release_disk(const std::string& dir) {
  std::error_code ec;
  fs::remove(dir + "/chaos-filler", ec);
}

tmpfs_mount::tmpfs_mount(const std::string& dir, uint32_t mib) : dir_(dir) {
  fs::create_directories(dir);
  auto opts = fmt::format("size={}m,mode=0755", mib);
  if (::mount("agner-chaos", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) != 0)
    throw std::runtime_error(fmt::format("chaos.disk_fulls: cannot mount a {} MiB tmpfs at {}: {} (needs root or "
                                         "CAP_SYS_ADMIN)",
                                         mib, dir, std::strerror(errno)));
}

tmpfs_mount::~tmpfs_mount() { ::umount2(dir_.c_str(), MNT_DETACH); }

} // namespace agner::chaos
