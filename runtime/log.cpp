#include "runtime/log.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <stdexcept>
#include <unistd.h>

namespace agner::log {

namespace {
std::atomic<level> g_level{level::info};
std::atomic<int> g_json{-1}; // -1: decide from isatty on first use
std::mutex g_mu;
constexpr std::string_view level_names[] = {"debug", "info", "warn", "error", "critical", "off"};
} // namespace

level parse_level(std::string_view s) {
  for (int i = 0; i < 6; ++i)
    if (s == level_names[i])
      return static_cast<level>(i);
  throw std::invalid_argument(fmt::format("unknown log level '{}' (debug, info, warn, error, critical, off)", s));
}

void set_level(level l) noexcept { g_level.store(l, std::memory_order_relaxed); }
level current_level() noexcept { return g_level.load(std::memory_order_relaxed); }
void set_json(bool json) noexcept { g_json.store(json ? 1 : 0); }

void append_json_escaped(std::string& out, std::string_view s) {
  // Runs of characters that need no escape are appended whole: chat bodies are mostly such runs.
  size_t run = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\')
      continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default: fmt::format_to(std::back_inserter(out), "\\u{:04x}", c);
    }
  }
  out.append(s.data() + run, s.size() - run);
}

void write(level l, std::string_view component, std::string_view msg) {
  int json = g_json.load();
  if (json < 0) {
    json = isatty(STDERR_FILENO) ? 0 : 1;
    g_json.store(json);
  }
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char ts[32];
  std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string line;
  line.reserve(96 + msg.size());
  auto lv = level_names[static_cast<int>(l)];
  if (json) {
    fmt::format_to(std::back_inserter(line), R"({{"ts":"{}.{:03}Z","level":"{}","component":")", ts, ms, lv);
    append_json_escaped(line, component);
    line += R"(","msg":")";
    append_json_escaped(line, msg);
    line += "\"}\n";
  } else {
    fmt::format_to(std::back_inserter(line), "{}.{:03}Z {:<8} {}: {}\n", ts, ms, lv, component, msg);
  }
  std::lock_guard lock(g_mu);
  std::fwrite(line.data(), 1, line.size(), stderr);
}

} // namespace agner::log
