/* Power-loss simulator: an LD_PRELOAD shim that keeps, for every file in one data directory, a
 * shadow copy holding only what was made durable (fsync, fdatasync, sync, syncfs, or a write
 * through an O_SYNC/O_DSYNC descriptor or with RWF_DSYNC/RWF_SYNC). After the process is
 * SIGKILLed, agner::powercut::apply_cut replaces the files with their shadows: what a disk that
 * loses every un-fsynced write would hold after a power cut. See docs/chaos.md, "Power-loss mode".
 *
 * Configuration (read once: at load time, or at the first open if libc had no environment yet):
 *   POWERCUT_DATA_DIR      the data directory; files directly in it are tracked, except names
 *                          ending in "lock.mdb" (LMDB's lock file holds no data)
 *   POWERCUT_SHADOW_DIR    where the shadows live, one per tracked file, same name
 * With either unset the shim passes every call straight through.
 *
 * Plain C, no sanitizers: it is preloaded in front of ASan's runtime and must not depend on it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* Descriptors tracked by number; a tracked file opened at a higher number stops the process
 * (silently untracked writes would make every result meaningless). */
#define FD_SLOTS_MAX 65536
/* Files in one data directory: LMDB has one, the chat node adds two secrets. */
#define FILES_MAX 32
/* Chunk of a copy from a real file to its shadow (a static buffer, used under the lock). */
#define COPY_CHUNK_BYTES (256 * 1024)
/* Suffix of a shadow being created; renamed into place when whole. */
#define SHADOW_TMP_SUFFIX ".powercut-tmp"

/* ---- the real functions ---------------------------------------------------------------- */

static int (*real_openat)(int, const char*, int, ...);
static int (*real_openat64)(int, const char*, int, ...);
static int (*real_close)(int);
static ssize_t (*real_write)(int, const void*, size_t);
static ssize_t (*real_pwrite)(int, const void*, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void*, size_t, off64_t);
static ssize_t (*real_writev)(int, const struct iovec*, int);
static ssize_t (*real_pwritev)(int, const struct iovec*, int, off_t);
static ssize_t (*real_pwritev64)(int, const struct iovec*, int, off64_t);
static ssize_t (*real_pwritev2)(int, const struct iovec*, int, off_t, int);
static ssize_t (*real_pwritev64v2)(int, const struct iovec*, int, off64_t, int);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off64_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static void (*real_sync)(void);
static int (*real_syncfs)(int);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static void* (*real_mmap)(void*, size_t, int, int, int, off_t);
static void* (*real_mmap64)(void*, size_t, int, int, int, off64_t);
static off_t (*real_lseek)(int, off_t, int);

/* ---- state --------------------------------------------------------------------------- */

struct range {
  off_t start, end; /* [start, end) */
};

struct tracked_file {
  char name[NAME_MAX + 1];
  int src_fd;    /* read-only descriptor of the real file: the source of every copy */
  int shadow_fd; /* the shadow, read-write */
  struct range* dirty; /* sorted, disjoint, not adjacent */
  size_t dirty_count, dirty_cap;
};

/* A slot holds 0 (not tracked) or (file index + 1) | SLOT_SYNC. */
#define SLOT_SYNC 0x10000u
static _Atomic unsigned fd_slots[FD_SLOTS_MAX];

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER; /* guards files[], the shadows, copy_buf */
static struct tracked_file files[FILES_MAX];
static int files_count;
static char copy_buf[COPY_CHUNK_BYTES];

static char data_dir[PATH_MAX];
static char shadow_dir[PATH_MAX];
static int active;           /* configured, with both variables set: written once, under mu */
static atomic_int configured;

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static atomic_int initialized;
static __thread int in_init; /* this thread is inside init: use raw system calls */

/* ---- helpers ------------------------------------------------------------------------- */

/* Stops the process: once a write may have escaped the shadow, every later result is meaningless. */
static void die(const char* what, int err) {
  char msg[512];
  int n = snprintf(msg, sizeof msg, "agner powercut shim: %s%s%s; the simulation would be wrong, aborting\n", what,
                   err ? ": " : "", err ? strerror(err) : "");
  if (n > 0)
    syscall(SYS_write, 2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
  abort();
}

#define RESOLVE(name) real_##name = dlsym(RTLD_NEXT, #name)

static void init(void) {
  in_init = 1;
  RESOLVE(openat);
  RESOLVE(openat64);
  RESOLVE(close);
  RESOLVE(write);
  RESOLVE(pwrite);
  RESOLVE(pwrite64);
  RESOLVE(writev);
  RESOLVE(pwritev);
  RESOLVE(pwritev64);
  RESOLVE(pwritev2);
  RESOLVE(pwritev64v2);
  RESOLVE(ftruncate);
  RESOLVE(ftruncate64);
  RESOLVE(fsync);
  RESOLVE(fdatasync);
  RESOLVE(sync);
  RESOLVE(syncfs);
  RESOLVE(dup);
  RESOLVE(dup2);
  RESOLVE(dup3);
  RESOLVE(mmap);
  RESOLVE(mmap64);
  RESOLVE(lseek);
  in_init = 0;
  atomic_store(&initialized, 1);
}

/* Reads the configuration once. Not part of init: an ASan build calls mmap from its preinit hook,
 * before libc has set up `environ`, and getenv would then find nothing. So this runs from the
 * constructor and, until it has succeeded, again at every open. */
static void configure(void) {
  if (atomic_load(&configured))
    return;
  pthread_mutex_lock(&mu);
  if (!atomic_load(&configured) && environ) {
    const char* d = getenv("POWERCUT_DATA_DIR");
    const char* s = getenv("POWERCUT_SHADOW_DIR");
    if (d && s && *d && *s && strlen(d) < sizeof data_dir && strlen(s) < sizeof shadow_dir) {
      strcpy(data_dir, d);
      strcpy(shadow_dir, s);
      active = 1;
    }
    atomic_store(&configured, 1);
  }
  pthread_mutex_unlock(&mu);
}

/* True once the real functions are known. False only for calls made by init itself (dlsym
 * calling back into an intercepted function); those go to the kernel directly. */
static int ready(void) {
  if (atomic_load_explicit(&initialized, memory_order_acquire))
    return 1;
  if (in_init)
    return 0;
  pthread_once(&init_once, init);
  return 1;
}

__attribute__((constructor)) static void load(void) {
  if (ready())
    configure();
}

static unsigned slot_get(int fd) {
  if (fd < 0 || fd >= FD_SLOTS_MAX)
    return 0;
  return atomic_load_explicit(&fd_slots[fd], memory_order_acquire);
}

static void slot_set(int fd, unsigned v) {
  if (fd < 0)
    return;
  if (fd >= FD_SLOTS_MAX) {
    if (v != 0)
      die("a tracked file got a descriptor above FD_SLOTS_MAX", 0);
    return;
  }
  atomic_store_explicit(&fd_slots[fd], v, memory_order_release);
}

static struct tracked_file* slot_file(unsigned slot) { return &files[(slot & 0xffffu) - 1]; }

/* Is the last component of `path` (relative to `dirfd`) a tracked file directly in the data
 * directory? Compares the parent directory's device and inode with the data directory's, so
 * relative paths, symlinked directories and openat() all resolve the same way. */
static int classify(int dirfd, const char* path, char name[NAME_MAX + 1]) {
  if (!active || !path)
    return 0;
  const char* slash = strrchr(path, '/');
  const char* base = slash ? slash + 1 : path;
  size_t len = strlen(base);
  if (len == 0 || len > NAME_MAX || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
    return 0;
  if (len >= 8 && strcmp(base + len - 8, "lock.mdb") == 0)
    return 0;
  char parent[PATH_MAX];
  if (!slash)
    snprintf(parent, sizeof parent, ".");
  else if (slash == path)
    snprintf(parent, sizeof parent, "/");
  else
    snprintf(parent, sizeof parent, "%.*s", (int)(slash - path), path);
  struct stat ps, ds;
  int rc = (parent[0] == '/' || dirfd == AT_FDCWD) ? fstatat(AT_FDCWD, parent, &ps, 0)
                                                   : fstatat(dirfd, parent, &ps, 0);
  if (rc != 0 || stat(data_dir, &ds) != 0)
    return 0;
  if (ps.st_dev != ds.st_dev || ps.st_ino != ds.st_ino)
    return 0;
  memcpy(name, base, len + 1);
  return 1;
}

static void shadow_path(char out[PATH_MAX], const char* name, const char* suffix) {
  if (snprintf(out, PATH_MAX, "%s/%s%s", shadow_dir, name, suffix) >= PATH_MAX)
    die("shadow path too long", ENAMETOOLONG);
}

/* Copies [start, end) of `src` to the same offsets of `dst` (stops early at the end of `src`). */
static void copy_range(int src, int dst, off_t start, off_t end) {
  while (start < end) {
    size_t want = (size_t)(end - start) < sizeof copy_buf ? (size_t)(end - start) : sizeof copy_buf;
    ssize_t n = pread(src, copy_buf, want, start);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      die("reading a tracked file", errno);
    if (n == 0)
      return;
    for (ssize_t done = 0; done < n;) {
      ssize_t w = real_pwrite(dst, copy_buf + done, (size_t)(n - done), start + done);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0)
        die("writing a shadow", w < 0 ? errno : EIO);
      done += w;
    }
    start += n;
  }
}

static off_t file_size(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0)
    die("fstat of a tracked file", errno);
  return st.st_size;
}

/* Creates the shadow of `name` if it has none: a copy of what the real file holds now (read
 * through `src`, or empty when src < 0). What is on disk when the shim first sees a file is
 * durable: either nothing ran under the shim yet or the previous cut has been applied. Written
 * under a temporary name and renamed, so a kill during the copy never leaves half a shadow. */
static void ensure_shadow(const char* name, int src) {
  char path[PATH_MAX], tmp[PATH_MAX];
  shadow_path(path, name, "");
  struct stat st;
  if (stat(path, &st) == 0)
    return;
  if (mkdir(shadow_dir, 0700) != 0 && errno != EEXIST)
    die("creating the shadow directory", errno);
  shadow_path(tmp, name, SHADOW_TMP_SUFFIX);
  int fd = real_openat(AT_FDCWD, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    die("creating a shadow", errno);
  if (src >= 0)
    copy_range(src, fd, 0, file_size(src));
  real_close(fd);
  if (rename(tmp, path) != 0)
    die("renaming a shadow into place", errno);
}

static int same_file(int a, int b) {
  struct stat sa, sb;
  if (fstat(a, &sa) != 0 || fstat(b, &sb) != 0)
    die("fstat of a tracked file", errno);
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* The tracked file for `name`, set up on first sight; `fd` is an open descriptor of it. */
static int file_index(const char* name, int fd) {
  for (int i = 0; i < files_count; ++i)
    if (strcmp(files[i].name, name) == 0) {
      /* Renames and unlinks are not modelled: a name that now means another file would silently
       * shadow the wrong one. */
      if (!same_file(fd, files[i].src_fd))
        die("a tracked file was replaced (unlink or rename), which is not simulated", 0);
      return i;
    }
  if (files_count == FILES_MAX)
    die("more tracked files than FILES_MAX", 0);
  struct tracked_file* f = &files[files_count];
  memset(f, 0, sizeof *f);
  strcpy(f->name, name);
  /* Reopen through /proc so that the source is readable even when `fd` is write-only. */
  char self[64];
  snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
  f->src_fd = real_openat(AT_FDCWD, self, O_RDONLY | O_CLOEXEC);
  if (f->src_fd < 0)
    die("reopening a tracked file for reading", errno);
  ensure_shadow(name, f->src_fd);
  char path[PATH_MAX];
  shadow_path(path, name, "");
  f->shadow_fd = real_openat(AT_FDCWD, path, O_RDWR | O_CLOEXEC);
  if (f->shadow_fd < 0)
    die("opening a shadow", errno);
  return files_count++;
}

/* Marks [start, end) dirty: inserts it into the sorted list, merging what it overlaps or touches. */
static void mark_dirty(struct tracked_file* f, off_t start, off_t end) {
  if (start >= end)
    return;
  /* First range that ends at or after `start`: everything before it stays. */
  size_t lo = 0, hi = f->dirty_count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (f->dirty[mid].end < start)
      lo = mid + 1;
    else
      hi = mid;
  }
  size_t first = lo, last = lo; /* [first, last) are merged into the new range */
  while (last < f->dirty_count && f->dirty[last].start <= end) {
    if (f->dirty[last].start < start)
      start = f->dirty[last].start;
    if (f->dirty[last].end > end)
      end = f->dirty[last].end;
    ++last;
  }
  if (first == last) {
    if (f->dirty_count == f->dirty_cap) {
      size_t cap = f->dirty_cap ? f->dirty_cap * 2 : 64;
      struct range* r = realloc(f->dirty, cap * sizeof *r);
      if (!r)
        die("growing a dirty list", ENOMEM);
      f->dirty = r;
      f->dirty_cap = cap;
    }
    memmove(&f->dirty[first + 1], &f->dirty[first], (f->dirty_count - first) * sizeof *f->dirty);
    ++f->dirty_count;
  } else if (last - first > 1) {
    memmove(&f->dirty[first + 1], &f->dirty[last], (f->dirty_count - last) * sizeof *f->dirty);
    f->dirty_count -= last - first - 1;
  }
  f->dirty[first].start = start;
  f->dirty[first].end = end;
}

/* The durable point of a whole file: its size and every dirty range reach the shadow. */
static void make_durable(struct tracked_file* f) {
  off_t size = file_size(f->src_fd);
  if (real_ftruncate(f->shadow_fd, size) != 0)
    die("sizing a shadow", errno);
  for (size_t i = 0; i < f->dirty_count; ++i) {
    off_t end = f->dirty[i].end < size ? f->dirty[i].end : size;
    if (f->dirty[i].start < end)
      copy_range(f->src_fd, f->shadow_fd, f->dirty[i].start, end);
  }
  f->dirty_count = 0;
}

/* Records a completed write of [start, end) through a descriptor with slot `slot`. */
static void written(unsigned slot, off_t start, off_t end, int sync) {
  pthread_mutex_lock(&mu);
  struct tracked_file* f = slot_file(slot);
  if (sync || (slot & SLOT_SYNC))
    copy_range(f->src_fd, f->shadow_fd, start, end); /* durable before the write returns */
  else
    mark_dirty(f, start, end);
  pthread_mutex_unlock(&mu);
}

/* After a write that used and advanced the file offset: where it landed. */
static void written_at_offset(int fd, unsigned slot, ssize_t n, int sync) {
  if (n <= 0)
    return;
  off_t end = real_lseek(fd, 0, SEEK_CUR);
  if (end < 0)
    die("lseek after a write to a tracked file", errno);
  written(slot, end - n, end, sync);
}

static void all_durable(void) {
  pthread_mutex_lock(&mu);
  for (int i = 0; i < files_count; ++i)
    make_durable(&files[i]);
  pthread_mutex_unlock(&mu);
}

/* ---- open and close ------------------------------------------------------------------ */

static int do_openat(int dirfd, const char* path, int flags, mode_t mode, int use64) {
  if (!ready())
    return (int)syscall(SYS_openat, dirfd, path, flags, mode);
  int (*real)(int, const char*, int, ...) = use64 && real_openat64 ? real_openat64 : real_openat;
  configure();
  char name[NAME_MAX + 1];
  int tracked = (flags & O_TMPFILE) != O_TMPFILE && classify(dirfd, path, name);
  off_t old_size = 0;
  if (tracked && (flags & O_TRUNC)) {
    /* The truncation is not durable either: the shadow must hold the old content, so it is
     * taken before the real open truncates the file. */
    pthread_mutex_lock(&mu);
    int src = real(dirfd, path, O_RDONLY | O_CLOEXEC);
    if (src >= 0) {
      old_size = file_size(src);
      ensure_shadow(name, src);
      real_close(src);
    } else {
      ensure_shadow(name, -1);
    }
    pthread_mutex_unlock(&mu);
  }
  int fd = real(dirfd, path, flags, mode);
  if (fd < 0 || !tracked)
    return fd;
  pthread_mutex_lock(&mu);
  int i = file_index(name, fd);
  if (old_size > 0)
    mark_dirty(&files[i], 0, old_size);
  slot_set(fd, (unsigned)(i + 1) | ((flags & O_DSYNC) ? SLOT_SYNC : 0));
  pthread_mutex_unlock(&mu);
  return fd;
}

static mode_t mode_arg(int flags, va_list ap) {
  return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

EXPORT int openat(int dirfd, const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return do_openat(dirfd, path, flags, mode, 0);
}

EXPORT int openat64(int dirfd, const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return do_openat(dirfd, path, flags, mode, 1);
}

EXPORT int open(const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return do_openat(AT_FDCWD, path, flags, mode, 0);
}

EXPORT int open64(const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return do_openat(AT_FDCWD, path, flags, mode, 1);
}

/* _FORTIFY_SOURCE builds call these for open() without a mode argument. */
EXPORT int __open_2(const char* path, int flags) { return do_openat(AT_FDCWD, path, flags, 0, 0); }
EXPORT int __open64_2(const char* path, int flags) { return do_openat(AT_FDCWD, path, flags, 0, 1); }
EXPORT int __openat_2(int dirfd, const char* path, int flags) { return do_openat(dirfd, path, flags, 0, 0); }
EXPORT int __openat64_2(int dirfd, const char* path, int flags) { return do_openat(dirfd, path, flags, 0, 1); }

EXPORT int creat(const char* path, mode_t mode) {
  return do_openat(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, 0);
}
EXPORT int creat64(const char* path, mode_t mode) {
  return do_openat(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, 1);
}

EXPORT int close(int fd) {
  if (!ready())
    return (int)syscall(SYS_close, fd);
  /* Forget the descriptor first: once closed, its number may be reused by another thread. */
  slot_set(fd, 0);
  return real_close(fd);
}

EXPORT int dup(int fd) {
  if (!ready())
    return (int)syscall(SYS_dup, fd);
  int nfd = real_dup(fd);
  if (nfd >= 0)
    slot_set(nfd, slot_get(fd));
  return nfd;
}

EXPORT int dup2(int fd, int nfd) {
  if (!ready())
    return (int)syscall(SYS_dup2, fd, nfd);
  int r = real_dup2(fd, nfd);
  if (r >= 0 && r != fd)
    slot_set(r, slot_get(fd));
  return r;
}

EXPORT int dup3(int fd, int nfd, int flags) {
  if (!ready())
    return (int)syscall(SYS_dup3, fd, nfd, flags);
  int r = real_dup3(fd, nfd, flags);
  if (r >= 0)
    slot_set(r, slot_get(fd));
  return r;
}

/* ---- writes -------------------------------------------------------------------------- */

EXPORT ssize_t write(int fd, const void* buf, size_t count) {
  if (!ready())
    return syscall(SYS_write, fd, buf, count);
  unsigned slot = slot_get(fd);
  ssize_t n = real_write(fd, buf, count);
  if (slot)
    written_at_offset(fd, slot, n, 0);
  return n;
}

EXPORT ssize_t pwrite(int fd, const void* buf, size_t count, off_t off) {
  if (!ready())
    return syscall(SYS_pwrite64, fd, buf, count, off);
  unsigned slot = slot_get(fd);
  ssize_t n = real_pwrite(fd, buf, count, off);
  if (slot && n > 0)
    written(slot, off, off + n, 0);
  return n;
}

EXPORT ssize_t pwrite64(int fd, const void* buf, size_t count, off64_t off) {
  if (!ready())
    return syscall(SYS_pwrite64, fd, buf, count, off);
  unsigned slot = slot_get(fd);
  ssize_t n = real_pwrite64 ? real_pwrite64(fd, buf, count, off) : real_pwrite(fd, buf, count, (off_t)off);
  if (slot && n > 0)
    written(slot, (off_t)off, (off_t)off + n, 0);
  return n;
}

EXPORT ssize_t writev(int fd, const struct iovec* iov, int count) {
  if (!ready())
    return syscall(SYS_writev, fd, iov, count);
  unsigned slot = slot_get(fd);
  ssize_t n = real_writev(fd, iov, count);
  if (slot)
    written_at_offset(fd, slot, n, 0);
  return n;
}

EXPORT ssize_t pwritev(int fd, const struct iovec* iov, int count, off_t off) {
  if (!ready())
    return syscall(SYS_pwritev, fd, iov, count, off, 0);
  unsigned slot = slot_get(fd);
  ssize_t n = real_pwritev(fd, iov, count, off);
  if (slot && n > 0)
    written(slot, off, off + n, 0);
  return n;
}

EXPORT ssize_t pwritev64(int fd, const struct iovec* iov, int count, off64_t off) {
  if (!ready())
    return syscall(SYS_pwritev, fd, iov, count, off, 0);
  unsigned slot = slot_get(fd);
  ssize_t n = real_pwritev64 ? real_pwritev64(fd, iov, count, off) : real_pwritev(fd, iov, count, (off_t)off);
  if (slot && n > 0)
    written(slot, (off_t)off, (off_t)off + n, 0);
  return n;
}

/* pwritev2: offset -1 means "at the file offset"; RWF_DSYNC/RWF_SYNC make this one write durable. */
static ssize_t do_pwritev2(int fd, const struct iovec* iov, int count, off_t off, int flags, int use64) {
  if (!ready())
    return syscall(SYS_pwritev2, fd, iov, count, off, 0, flags);
  unsigned slot = slot_get(fd);
  ssize_t n;
  if (use64 && real_pwritev64v2)
    n = real_pwritev64v2(fd, iov, count, off, flags);
  else if (real_pwritev2)
    n = real_pwritev2(fd, iov, count, off, flags);
  else
    n = syscall(SYS_pwritev2, fd, iov, count, off, 0, flags);
  if (!slot || n <= 0)
    return n;
  int sync = (flags & (RWF_DSYNC | RWF_SYNC)) != 0;
  if (off == -1)
    written_at_offset(fd, slot, n, sync);
  else
    written(slot, off, off + n, sync);
  return n;
}

EXPORT ssize_t pwritev2(int fd, const struct iovec* iov, int count, off_t off, int flags) {
  return do_pwritev2(fd, iov, count, off, flags, 0);
}

EXPORT ssize_t pwritev64v2(int fd, const struct iovec* iov, int count, off64_t off, int flags) {
  return do_pwritev2(fd, iov, count, (off_t)off, flags, 1);
}

/* A size change is not durable until the next fsync: the bytes between the old and the new end
 * are dirty (the shadow keeps its old size and content until then). */
static int do_ftruncate(int fd, off_t len, int use64) {
  if (!ready())
    return (int)syscall(SYS_ftruncate, fd, len);
  unsigned slot = slot_get(fd);
  off_t old = slot ? file_size(fd) : 0;
  int rc = use64 && real_ftruncate64 ? real_ftruncate64(fd, len) : real_ftruncate(fd, len);
  if (slot && rc == 0) {
    pthread_mutex_lock(&mu);
    mark_dirty(slot_file(slot), old < len ? old : len, old < len ? len : old);
    pthread_mutex_unlock(&mu);
  }
  return rc;
}

EXPORT int ftruncate(int fd, off_t len) { return do_ftruncate(fd, len, 0); }
EXPORT int ftruncate64(int fd, off64_t len) { return do_ftruncate(fd, (off_t)len, 1); }

/* ---- durable points ------------------------------------------------------------------ */

/* The copy happens after the real call succeeded and before it returns to the caller: the durable
 * point is the moment fsync returns. A process killed during the copy leaves a shadow with some of
 * the dirty ranges and not others, as a disk does that was cut off in the middle of a flush. */
static int do_sync(int fd, int (*real)(int), long nr) {
  if (!ready())
    return (int)syscall(nr, fd);
  int rc = real(fd);
  unsigned slot = slot_get(fd);
  if (rc == 0 && slot) {
    pthread_mutex_lock(&mu);
    make_durable(slot_file(slot));
    pthread_mutex_unlock(&mu);
  }
  return rc;
}

EXPORT int fsync(int fd) { return do_sync(fd, real_fsync, SYS_fsync); }
EXPORT int fdatasync(int fd) { return do_sync(fd, real_fdatasync, SYS_fdatasync); }

EXPORT void sync(void) {
  if (!ready()) {
    syscall(SYS_sync);
    return;
  }
  real_sync();
  all_durable();
}

/* syncfs flushes the whole file system; the data directory is assumed to be on the one `fd` is on. */
EXPORT int syncfs(int fd) {
  if (!ready())
    return (int)syscall(SYS_syncfs, fd);
  int rc = real_syncfs(fd);
  if (rc == 0)
    all_durable();
  return rc;
}

/* sync_file_range is deliberately not a durable point (it flushes no metadata and no disk cache);
 * it is not intercepted. msync is not either: writes through a shared writable mapping cannot be
 * tracked at all, so such a mapping of a tracked file stops the process instead. */
static void check_mapping(int prot, int flags, int fd) {
  if ((prot & PROT_WRITE) && (flags & MAP_SHARED) && slot_get(fd))
    die("writes through a shared writable mapping of a tracked file (MDB_WRITEMAP?) cannot be tracked", 0);
}

EXPORT void* mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  if (!ready())
    return (void*)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
  check_mapping(prot, flags, fd);
  return real_mmap(addr, len, prot, flags, fd, off);
}

EXPORT void* mmap64(void* addr, size_t len, int prot, int flags, int fd, off64_t off) {
  if (!ready())
    return (void*)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
  check_mapping(prot, flags, fd);
  return real_mmap64 ? real_mmap64(addr, len, prot, flags, fd, off) : real_mmap(addr, len, prot, flags, fd, (off_t)off);
}
