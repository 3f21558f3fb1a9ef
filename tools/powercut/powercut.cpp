// Power-loss mode, the parent's side: the child's environment and the cut itself.
#include "tools/powercut/powercut.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <system_error>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

extern char** environ;

namespace agner::powercut {

namespace {

// Bytes compared and copied at a time while a cut is applied.
constexpr size_t cut_chunk_bytes = size_t{1} << 20;
// A shadow the shim was still creating when the process died (see powercut_shim.c).
constexpr std::string_view shadow_tmp_suffix = ".powercut-tmp";

[[noreturn]] void fail(const std::string& what) { throw std::system_error(errno, std::generic_category(), what); }

class fd_guard {
public:
  explicit fd_guard(int fd) : fd_(fd) {}
  ~fd_guard() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  int get() const noexcept { return fd_; }

private:
  int fd_;
};

// Reads up to `n` bytes at `off`, fewer only at the end of the file.
size_t read_at(int fd, char* buf, size_t n, off_t off, const std::string& path) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, buf + done, n - done, off + static_cast<off_t>(done));
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      fail("powercut: reading " + path);
    if (r == 0)
      break;
    done += static_cast<size_t>(r);
  }
  return done;
}

void write_at(int fd, const char* buf, size_t n, off_t off, const std::string& path) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = ::pwrite(fd, buf + done, n - done, off + static_cast<off_t>(done));
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      fail("powercut: writing " + path);
    done += static_cast<size_t>(w);
  }
}

off_t size_of(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    fail("powercut: fstat " + path);
  return st.st_size;
}

// Puts `data_path` back to the content of `shadow_path`; returns the bytes that differed.
uint64_t restore(const std::string& shadow_path, const std::string& data_path) {
  fd_guard shadow(::open(shadow_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (shadow.get() < 0)
    fail("powercut: opening " + shadow_path);
  fd_guard data(::open(data_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (data.get() < 0)
    fail("powercut: opening " + data_path);
  const off_t shadow_size = size_of(shadow.get(), shadow_path);
  const off_t data_size = size_of(data.get(), data_path);
  uint64_t discarded = 0;
  std::string want(cut_chunk_bytes, '\0'), have(cut_chunk_bytes, '\0');
  for (off_t off = 0; off < shadow_size; off += static_cast<off_t>(cut_chunk_bytes)) {
    size_t n = std::min(cut_chunk_bytes, static_cast<size_t>(shadow_size - off));
    if (read_at(shadow.get(), want.data(), n, off, shadow_path) != n)
      fail("powercut: " + shadow_path + " shrank while a cut was applied");
    size_t m = read_at(data.get(), have.data(), n, off, data_path);
    size_t differ = n - m;
    for (size_t i = 0; i < m; ++i)
      differ += want[i] != have[i];
    if (differ > 0) {
      write_at(data.get(), want.data(), n, off, data_path);
      discarded += differ;
    }
  }
  if (data_size > shadow_size)
    discarded += static_cast<uint64_t>(data_size - shadow_size);
  if (::ftruncate(data.get(), shadow_size) != 0)
    fail("powercut: truncating " + data_path);
  return discarded;
}

} // namespace

std::string shim_path() { return AGNER_POWERCUT_SHIM_PATH; }

std::vector<std::string> child_environment(const std::string& data_dir, const std::string& shadow_dir) {
  std::vector<std::string> env;
  std::string preload = shim_path();
  std::string asan = "verify_asan_link_order=0:detect_leaks=0";
  for (char** e = environ; *e; ++e) {
    std::string_view kv(*e);
    auto value = [&](std::string_view key) { return std::string(kv.substr(key.size())); };
    if (kv.starts_with("POWERCUT_DATA_DIR=") || kv.starts_with("POWERCUT_SHADOW_DIR="))
      continue;
    if (kv.starts_with("LD_PRELOAD=")) {
      if (auto v = value("LD_PRELOAD="); !v.empty())
        preload += ":" + v;
      continue;
    }
    if (kv.starts_with("ASAN_OPTIONS=")) {
      if (auto v = value("ASAN_OPTIONS="); !v.empty())
        asan = v + ":" + asan; // later options win, so ours go last
      continue;
    }
    env.emplace_back(kv);
  }
  env.push_back("POWERCUT_DATA_DIR=" + data_dir);
  env.push_back("POWERCUT_SHADOW_DIR=" + shadow_dir);
  env.push_back("LD_PRELOAD=" + preload);
  env.push_back("ASAN_OPTIONS=" + asan);
  return env;
}

cut_stats apply_cut(const std::string& shadow_dir, const std::string& data_dir) {
  cut_stats st;
  std::error_code ec;
  if (!std::filesystem::exists(shadow_dir, ec))
    return st; // the child died before it opened a tracked file
  // Collected first: the loop removes what it applied.
  std::vector<std::filesystem::path> shadows;
  for (const auto& entry : std::filesystem::directory_iterator(shadow_dir))
    shadows.push_back(entry.path());
  for (const auto& path : shadows) {
    std::string name = path.filename().string();
    if (!name.ends_with(shadow_tmp_suffix)) {
      st.bytes_discarded += restore(path.string(), data_dir + "/" + name);
      ++st.files;
    }
    std::filesystem::remove(path);
  }
  return st;
}

} // namespace agner::powercut
