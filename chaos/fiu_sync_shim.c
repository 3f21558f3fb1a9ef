/* fsync failures for agner-chaos (issue 7), through libfiu.
 *
 * libfiu's own POSIX preload (fiu_posix_preload.so) wraps malloc among a hundred other calls, and
 * an ASan build of agner-node crashes at start under it. This preload wraps only what a durable
 * store depends on, fsync and fdatasync, and asks libfiu whether to fail them, under libfiu's own
 * failure point names ("posix/io/sync/fsync", "posix/io/sync/fdatasync"). libfiu's
 * fiu_run_preload.so, preloaded with it, initializes libfiu and opens the remote control pipes, so
 * the standard `fiu-ctrl -c "enable name=posix/io/sync/fdatasync,failinfo=5" PID` turns the
 * failures on in a running node. failinfo is the errno to fail with (EIO when absent).
 *
 * Plain C, never sanitized: it is preloaded in front of ASan's runtime. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#define FIU_ENABLE 1 /* without it fiu.h turns every failure point into a no-op */
#include <fiu.h>
#include <stdint.h>

#define EXPORT __attribute__((visibility("default")))

/* True (errno set) when libfiu says the named call must fail now. */
static int injected(const char* name) {
  if (!fiu_fail(name))
    return 0;
  intptr_t info = (intptr_t)fiu_failinfo();
  errno = info > 0 ? (int)info : EIO;
  return 1;
}

typedef int (*sync_fn)(int);

static sync_fn next_fn(sync_fn* cache, const char* symbol) {
  if (!*cache)
    *cache = (sync_fn)dlsym(RTLD_NEXT, symbol);
  return *cache;
}

EXPORT int fsync(int fd) {
  static sync_fn real;
  if (injected("posix/io/sync/fsync"))
    return -1;
  return next_fn(&real, "fsync")(fd);
}

EXPORT int fdatasync(int fd) {
  static sync_fn real;
  if (injected("posix/io/sync/fdatasync"))
    return -1;
  return next_fn(&real, "fdatasync")(fd);
}
