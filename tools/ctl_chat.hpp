// `agner-ctl chat`: a terminal chat client over the WebSocket protocol (docs/protocol.md), plus
// the pure helpers it is built from (frame splitting, the position file, line formatting).
#pragma once

#include "tools/ctl_admin.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace agner::ctl {

struct chat_options {
  std::string as;
  std::string to;
  std::string device = "terminal";
  /// Where the position file is kept (the node's data directory).
  std::string data_dir;
};

/// Runs the chat until end of input (exit_ok once every line typed is stored) or an
/// unrecoverable error (exit_failure). Reads stdin on a helper thread; everything else runs on
/// one io_context thread, the caller's. Messages go to stdout, status and errors to stderr.
int run_chat(const admin_client& admin, const chat_options& opts);

/// The JSON objects of one server frame: the gateway batches them, separated by '\n'.
/// Empty lines are skipped.
std::vector<std::string_view> split_frames(std::string_view frame);

/// True if `s` is well-formed UTF-8 (no overlong forms, surrogates or code points > U+10FFFF).
bool is_valid_utf8(std::string_view s);

/// DATA/ctl-NAME-DEVICE.pos, with bytes other than [A-Za-z0-9._-] in the names replaced by '_'.
std::string position_path(const std::string& data_dir, std::string_view name, std::string_view device);
/// The inbox_seq stored in a position file; nullopt if it is missing or unreadable.
std::optional<uint64_t> load_position(const std::string& path);
/// Replaces the position file (write to a temporary file, then rename). Returns false on error.
bool save_position(const std::string& path, uint64_t inbox_seq);

/// "[HH:MM:SS] who: body", the time in local time.
std::string format_message(uint64_t unix_ms, std::string_view who, std::string_view body);

} // namespace agner::ctl
