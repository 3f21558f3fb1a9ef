// A thin RAII layer over LMDB: environment, transactions, databases and cursors. This is the only
// code in agner that includes <lmdb.h>; everything else sees byte strings and error codes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

struct MDB_env;
struct MDB_txn;
struct MDB_cursor;

namespace agner::store::lmdb {

/// A database handle inside an environment (LMDB's MDB_dbi).
using dbi = unsigned int;

/// The LMDB error text for `rc` (LMDB codes and errno values alike).
std::string describe(int rc);
/// True for MDB_MAP_FULL: the memory map (the configured map size) has no free page left.
bool is_map_full(int rc) noexcept;
/// True for ENOSPC and EDQUOT: the file system refused to grow the data file.
bool is_no_space(int rc) noexcept;
/// True for MDB_TXN_FULL: one transaction dirtied more pages than LMDB can track.
bool is_txn_full(int rc) noexcept;
/// True for MDB_BAD_VALSIZE: a key (or a DUPSORT value) is empty or too long.
bool is_bad_size(int rc) noexcept;

/// An LMDB failure with the operation that produced it.
class error : public std::runtime_error {
public:
  error(int rc, std::string_view op);
  int code() const noexcept { return rc_; }

private:
  int rc_;
};

/// How `env` is opened.
struct env_options {
  std::string path;        ///< an existing directory; LMDB creates data.mdb and lock.mdb in it
  size_t map_size_bytes;   ///< the largest the data file may grow
  unsigned max_dbs;        ///< named databases in the environment
  unsigned max_readers;    ///< concurrent read transactions
  bool no_sync = false;    ///< MDB_NOSYNC: commits are not flushed (unsafe; tests only)
};

/// One LMDB environment (one data file, one memory map). Opened with MDB_NOTLS, so a read
/// transaction is not tied to the thread that began it, and with LMDB's default, fully
/// synchronous commit unless `env_options::no_sync` asks otherwise. Thread-safe as LMDB is: one
/// write transaction at a time per process.
class env {
public:
  /// Opens or creates the environment; throws `error`.
  explicit env(const env_options& o);
  ~env();
  env(const env&) = delete;
  env& operator=(const env&) = delete;

  MDB_env* handle() const noexcept { return env_; }
  /// Changes the map size. Only with no transaction of this process active; returns an rc.
  int set_map_size(size_t bytes) noexcept;
  /// With `false`, commits skip the meta page's own sync (MDB_NOMETASYNC): the data pages are
  /// still synced, integrity holds, and a crash may undo only the last transaction. Only between
  /// write transactions, from the writing thread.
  int set_meta_sync(bool on) noexcept;
  size_t map_size() const noexcept;
  /// The longest key LMDB accepts (511 bytes in the default build).
  size_t max_key_size() const noexcept;
  /// Bytes of the data file in use as of the last commit ((last page + 1) x page size).
  size_t used_bytes() const noexcept;
  /// Reserves disk blocks for the data file up to `to` by writing zeros from the file's end (never
  /// below it, nor below `from`), and starts their writeback. Later page writes there cannot hit
  /// ENOSPC, and, as they overwrite blocks that exist and lie within the file's size, an
  /// fdatasync after them has no metadata to journal. Call between write transactions only (the
  /// writer thread): LMDB uses nothing past the last committed page then. Returns 0 or an errno
  /// (ENOSPC, EDQUOT, ...); after a failure the zeros written so far stay (unused by LMDB).
  int reserve(size_t from, size_t to) noexcept;

private:
  MDB_env* env_ = nullptr;
};

/// A transaction. Aborted by the destructor unless committed. A write transaction belongs to the
/// thread that began it; a read transaction may move between threads but is used by one at a time.
/// Views returned by `get` and cursors point into the map and die with the transaction.
class txn {
public:
  /// Begins a read-only transaction; throws `error`.
  static txn read(const env& e);
  /// Begins the write transaction; returns the rc (0 on success) and sets `out`.
  static int write(const env& e, txn& out) noexcept;

  txn() = default;
  txn(txn&& o) noexcept : txn_(o.txn_) { o.txn_ = nullptr; }
  txn& operator=(txn&& o) noexcept;
  ~txn() { abort(); }

  explicit operator bool() const noexcept { return txn_ != nullptr; }
  MDB_txn* handle() const noexcept { return txn_; }

  /// Commits (a write transaction: pages written and fsynced, then the meta page). The
  /// transaction is finished whatever the result; returns the rc.
  int commit() noexcept;
  void abort() noexcept;

  /// Opens (creating with `create`, write transactions only) a named database; throws `error`.
  dbi open(const char* name, bool create);
  /// The value stored under `key`, or nothing; throws `error` on anything but MDB_NOTFOUND.
  std::optional<std::string_view> get(dbi d, std::string_view key) const;
  /// Inserts or replaces; returns the rc.
  int put(dbi d, std::string_view key, std::string_view value) noexcept;
  /// Appends a key greater than every key in `d` (MDB_APPEND: no search, fills pages fully).
  int append(dbi d, std::string_view key, std::string_view value) noexcept;
  /// Deletes `key`; an absent key is not an error. Returns the rc.
  int del(dbi d, std::string_view key) noexcept;

private:
  explicit txn(MDB_txn* t) noexcept : txn_(t) {}
  MDB_txn* txn_ = nullptr;
};

/// A cursor over one database inside one transaction. Positioning calls return false when there is
/// no such entry; other failures throw `error`.
class cursor {
public:
  cursor(const txn& t, dbi d);
  ~cursor();
  cursor(const cursor&) = delete;
  cursor& operator=(const cursor&) = delete;

  /// Positions at the first key >= `key`.
  bool seek(std::string_view key);
  bool first();
  bool last();
  bool next();
  bool prev();
  /// Inserts or replaces at the cursor's database; returns the rc.
  int put(std::string_view key, std::string_view value) noexcept;

  std::string_view key() const noexcept { return key_; }
  std::string_view value() const noexcept { return value_; }

private:
  bool move(int op, std::string_view key = {});
  MDB_cursor* cur_ = nullptr;
  std::string_view key_, value_;
};

} // namespace agner::store::lmdb
