// One structured log line format: JSON lines when stderr is not a terminal, aligned text when it
// is. Logging is for events, not for the per-message hot path.
#pragma once

#include <fmt/format.h>
#include <string_view>

namespace agner::log {

enum class level { debug = 0, info, warn, error, critical, off };

/// Parses "debug", "info", "warn", "error", "critical", "off"; throws std::invalid_argument.
level parse_level(std::string_view s);
void set_level(level l) noexcept;
level current_level() noexcept;
/// Forces JSON (true) or text (false); by default JSON iff stderr is not a terminal.
void set_json(bool json) noexcept;

/// Writes one line: time, level, component, message. Thread-safe; lines never interleave.
void write(level l, std::string_view component, std::string_view msg);

template <class... Args>
void emit(level l, std::string_view component, fmt::format_string<Args...> f, Args&&... args) {
  if (l < current_level())
    return;
  write(l, component, fmt::format(f, std::forward<Args>(args)...));
}

template <class... Args>
void debug(std::string_view c, fmt::format_string<Args...> f, Args&&... a) { emit(level::debug, c, f, std::forward<Args>(a)...); }
template <class... Args>
void info(std::string_view c, fmt::format_string<Args...> f, Args&&... a) { emit(level::info, c, f, std::forward<Args>(a)...); }
template <class... Args>
void warn(std::string_view c, fmt::format_string<Args...> f, Args&&... a) { emit(level::warn, c, f, std::forward<Args>(a)...); }
template <class... Args>
void error(std::string_view c, fmt::format_string<Args...> f, Args&&... a) { emit(level::error, c, f, std::forward<Args>(a)...); }
template <class... Args>
void critical(std::string_view c, fmt::format_string<Args...> f, Args&&... a) { emit(level::critical, c, f, std::forward<Args>(a)...); }

/// JSON string escaping (quotes, backslash, control characters), shared with other writers.
void append_json_escaped(std::string& out, std::string_view s);

} // namespace agner::log
