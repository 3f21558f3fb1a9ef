// Power-loss mode: runs a process under the powercut shim (powercut_shim.c), then, once it is
// dead, applies the cut: every file of its data directory goes back to what was durable.
// See docs/chaos.md, "Power-loss mode".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace agner::powercut {

/// Path of the shim library built with this tree (libagner_powercut_shim.so).
std::string shim_path();

/// The environment for a child run under the shim: this process's environment plus
/// `POWERCUT_DATA_DIR=data_dir`, `POWERCUT_SHADOW_DIR=shadow_dir`, the shim first in
/// `LD_PRELOAD`, and `verify_asan_link_order=0:detect_leaks=0` appended to `ASAN_OPTIONS` (an ASan
/// build refuses to start when another library is preloaded before its runtime, and a SIGKILLed
/// child has nothing useful to report about leaks). "KEY=VALUE" strings, for execve.
/// The shim creates `shadow_dir` if it is missing.
std::vector<std::string> child_environment(const std::string& data_dir, const std::string& shadow_dir);

/// What one cut did.
struct cut_stats {
  size_t files = 0;               ///< tracked files put back to their durable content
  uint64_t bytes_discarded = 0;   ///< bytes that differed from the durable content, or lay past its end
};

/// Applies a simulated power cut after the process that ran under the shim is dead: every file
/// with a shadow in `shadow_dir` is rewritten in `data_dir` with the shadow's content and size,
/// and the shadow is removed. Removing it makes the next run start from what is then on disk,
/// including writes made in between by processes that were not under the shim (a checker that
/// reopened the store). Files without a shadow are left alone. Throws std::system_error.
/// Must not run while the process under the shim is alive: it would race with its writes.
cut_stats apply_cut(const std::string& shadow_dir, const std::string& data_dir);

} // namespace agner::powercut
