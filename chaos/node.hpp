// agner-chaos's hands on the machine: agner-node processes (start, kill, pause, power cut, fsync
// failure, restart) and their disks (a tmpfs per node, filled and freed). docs/chaos.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace agner::chaos {

/// A loopback port nothing listens on right now (bound, then released).
uint16_t free_port();

/// How to run one agner-node process.
struct node_spec {
  std::string binary;       ///< path to agner-node
  std::string data_dir;
  uint16_t port = 0;        ///< fixed, so a restarted node is found at the same address
  std::vector<std::string> extra_args; ///< more --key=value flags
  /// Power-loss mode: run under the power-cut shim; its shadows live here.
  std::string powercut_shadow_dir;
  /// Run with libfiu's remote control over named pipes at this prefix (fiu-run's -f) and the
  /// fsync failure points of fiu_sync_shim.c, so that `fail_fsync` can make fsync/fdatasync
  /// fail. Empty: no libfiu.
  std::string fiu_fifo_prefix;
};

/// One agner-node process: start, kill, pause, power cut, restart. Owns its pid; kills it on
/// destruction. Every wait is bounded.
class node_handle {
public:
  explicit node_handle(node_spec s);
  ~node_handle();
  node_handle(const node_handle&) = delete;
  node_handle& operator=(const node_handle&) = delete;

  /// Spawns the node and waits until it logs that it is ready (within `timeout`); returns how
  /// long that took. Throws std::runtime_error if it exits or times out.
  std::chrono::nanoseconds start(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  /// SIGKILL and reap.
  void kill();
  /// SIGKILL, then throw away every write not made durable (power-loss mode only); returns the
  /// bytes discarded.
  uint64_t power_cut();
  void pause();
  void resume();
  /// From now on every fsync and fdatasync of the process fails with EIO (libfiu, through
  /// fiu-ctrl). Throws if the node does not run under libfiu or fiu-ctrl fails.
  void fail_fsync();
  /// SIGTERM and wait for the exit code (nullopt on timeout, then SIGKILL).
  std::optional<int> stop(std::chrono::milliseconds timeout = std::chrono::seconds(20));

  bool running() const noexcept { return pid_ > 0; }
  bool paused() const noexcept { return paused_; }
  /// True if the process died on its own since the last check (reaps it).
  bool died();
  pid_t pid() const noexcept { return pid_; }
  const node_spec& spec() const noexcept { return s_; }
  std::string address() const;
  std::string log_path() const { return s_.data_dir + ".log"; }

private:
  node_spec s_;
  pid_t pid_ = -1;
  bool paused_ = false;
};

/// Takes all free space of the file system holding `dir` with a file `dir`/chaos-filler; returns
/// its size. `release_disk` removes it.
uint64_t fill_disk(const std::string& dir);
void release_disk(const std::string& dir);

/// A tmpfs of `mib` MiB mounted at `dir` (created if missing) for the object's life: a node's data
/// directory in a disk-full run. Needs root or CAP_SYS_ADMIN; throws with a clear message without.
class tmpfs_mount {
public:
  tmpfs_mount(const std::string& dir, uint32_t mib);
  ~tmpfs_mount();
  tmpfs_mount(const tmpfs_mount&) = delete;
  tmpfs_mount& operator=(const tmpfs_mount&) = delete;

private:
  std::string dir_;
};

} // namespace agner::chaos
