// The only translation unit that includes <lmdb.h>. Errors become return codes where the caller
// must classify them (the group-commit writer), exceptions elsewhere.
#include "runtime/store/lmdb.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <fcntl.h>
#include <lmdb.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

namespace agner::store::lmdb {

namespace {
MDB_val to_val(std::string_view s) noexcept { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
std::string_view to_view(const MDB_val& v) noexcept { return {static_cast<const char*>(v.mv_data), v.mv_size}; }
} // namespace

std::string describe(int rc) { return mdb_strerror(rc); }
bool is_map_full(int rc) noexcept { return rc == MDB_MAP_FULL; }
bool is_no_space(int rc) noexcept { return rc == ENOSPC || rc == EDQUOT; }
bool is_txn_full(int rc) noexcept { return rc == MDB_TXN_FULL; }
bool is_bad_size(int rc) noexcept { return rc == MDB_BAD_VALSIZE; }

error::error(int rc, std::string_view op)
  : std::runtime_error(fmt::format("lmdb: {}: {} ({})", op, mdb_strerror(rc), rc)), rc_(rc) {}

env::env(const env_options& o) {
  if (int rc = mdb_env_create(&env_))
    throw error(rc, "mdb_env_create");
  // From here on the environment must be closed on failure, hence the lambda.
  auto check = [this](int rc, const char* op) {
    if (rc != 0) {
      mdb_env_close(env_);
      env_ = nullptr;
      throw error(rc, op);
    }
  };
  check(mdb_env_set_mapsize(env_, o.map_size_bytes), "mdb_env_set_mapsize");
  check(mdb_env_set_maxdbs(env_, o.max_dbs), "mdb_env_set_maxdbs");
  check(mdb_env_set_maxreaders(env_, o.max_readers), "mdb_env_set_maxreaders");
  // MDB_NOTLS: read transactions run on a thread pool and may be resumed by another thread.
  // No MDB_NOMETASYNC / MDB_WRITEMAP, and MDB_NOSYNC only when asked for: by default every commit
  // is fully synchronous (data pages fdatasynced, then the meta page written with O_DSYNC).
  unsigned flags = MDB_NOTLS | (o.no_sync ? MDB_NOSYNC : 0u);
  check(mdb_env_open(env_, o.path.c_str(), flags, 0600), "mdb_env_open");
}

env::~env() {
  if (env_)
    mdb_env_close(env_);
}

int env::set_meta_sync(bool on) noexcept { return mdb_env_set_flags(env_, MDB_NOMETASYNC, on ? 0 : 1); }

int env::set_map_size(size_t bytes) noexcept { return mdb_env_set_mapsize(env_, bytes); }

size_t env::map_size() const noexcept {
  MDB_envinfo info{};
  mdb_env_info(env_, &info);
  return info.me_mapsize;
}

size_t env::used_bytes() const noexcept {
  MDB_envinfo info{};
  MDB_stat st{};
  mdb_env_info(env_, &info);
  mdb_env_stat(env_, &st);
  return (info.me_last_pgno + 1) * st.ms_psize;
}

int env::reserve(size_t from, size_t to) noexcept {
  int fd = -1;
  if (int rc = mdb_env_get_fd(env_, &fd))
    return rc;
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    return errno;
  // From the end of the file: below it are LMDB's pages and the zeros of earlier reservations.
  from = std::max(from, static_cast<size_t>(st.st_size));
  if (to <= from)
    return 0;
  // Zeros, not fallocate: blocks fallocate reserves are "unwritten", and LMDB's first write to
  // each converts it (and appends move the file size), so every commit's fdatasync had to commit
  // the file system's journal too. Written zeros cost one such commit per reservation step.
  static const std::array<char, 64 * 1024> zeros{};
  for (size_t at = from; at < to;) {
    auto n = ::pwrite(fd, zeros.data(), std::min(zeros.size(), to - at), static_cast<off_t>(at));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return errno;
    }
    at += static_cast<size_t>(n);
  }
  // Start the writeback now, so the next commit's fdatasync does not write the zeros itself.
  ::sync_file_range(fd, static_cast<off_t>(from), static_cast<off_t>(to - from), SYNC_FILE_RANGE_WRITE);
  return 0;
}

size_t env::max_key_size() const noexcept { return static_cast<size_t>(mdb_env_get_maxkeysize(env_)); }

txn txn::read(const env& e) {
  MDB_txn* t = nullptr;
  if (int rc = mdb_txn_begin(e.handle(), nullptr, MDB_RDONLY, &t))
    throw error(rc, "mdb_txn_begin(read)");
  return txn(t);
}

int txn::write(const env& e, txn& out) noexcept {
  MDB_txn* t = nullptr;
  int rc = mdb_txn_begin(e.handle(), nullptr, 0, &t);
  if (rc == 0)
    out = txn(t);
  return rc;
}

txn& txn::operator=(txn&& o) noexcept {
  if (this != &o) {
    abort();
    txn_ = o.txn_;
    o.txn_ = nullptr;
  }
  return *this;
}

int txn::commit() noexcept {
  MDB_txn* t = txn_;
  txn_ = nullptr;
  return mdb_txn_commit(t);
}

void txn::abort() noexcept {
  if (txn_)
    mdb_txn_abort(txn_);
  txn_ = nullptr;
}

dbi txn::open(const char* name, bool create) {
  MDB_dbi d = 0;
  if (int rc = mdb_dbi_open(txn_, name, create ? MDB_CREATE : 0, &d))
    throw error(rc, fmt::format("mdb_dbi_open({})", name));
  return d;
}

std::optional<std::string_view> txn::get(dbi d, std::string_view key) const {
  MDB_val k = to_val(key), v{};
  int rc = mdb_get(txn_, d, &k, &v);
  if (rc == MDB_NOTFOUND)
    return std::nullopt;
  if (rc != 0)
    throw error(rc, "mdb_get");
  return to_view(v);
}

int txn::put(dbi d, std::string_view key, std::string_view value) noexcept {
  MDB_val k = to_val(key), v = to_val(value);
  return mdb_put(txn_, d, &k, &v, 0);
}

int txn::append(dbi d, std::string_view key, std::string_view value) noexcept {
  MDB_val k = to_val(key), v = to_val(value);
  return mdb_put(txn_, d, &k, &v, MDB_APPEND);
}

int txn::del(dbi d, std::string_view key) noexcept {
  MDB_val k = to_val(key);
  int rc = mdb_del(txn_, d, &k, nullptr);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

cursor::cursor(const txn& t, dbi d) {
  if (int rc = mdb_cursor_open(t.handle(), d, &cur_))
    throw error(rc, "mdb_cursor_open");
}

cursor::~cursor() { mdb_cursor_close(cur_); }

bool cursor::move(int op, std::string_view key) {
  MDB_val k = to_val(key), v{};
  int rc = mdb_cursor_get(cur_, &k, &v, static_cast<MDB_cursor_op>(op));
  if (rc == MDB_NOTFOUND) {
    key_ = value_ = {};
    return false;
  }
  if (rc != 0)
    throw error(rc, "mdb_cursor_get");
  key_ = to_view(k);
  value_ = to_view(v);
  return true;
}

bool cursor::seek(std::string_view key) { return move(MDB_SET_RANGE, key); }
bool cursor::first() { return move(MDB_FIRST); }
bool cursor::last() { return move(MDB_LAST); }
bool cursor::next() { return move(MDB_NEXT); }
bool cursor::prev() { return move(MDB_PREV); }

int cursor::put(std::string_view key, std::string_view value) noexcept {
  MDB_val k = to_val(key), v = to_val(value);
  return mdb_cursor_put(cur_, &k, &v, 0);
}

} // namespace agner::store::lmdb
