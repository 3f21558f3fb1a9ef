// LD_PRELOAD shim for bench_ws_chat's memory breakdown: replaces the global operator new/delete
// (C++ allocations only; C malloc callers such as LMDB and zlib are not counted) and keeps the
// live bytes and the live allocations per malloc size class (usable size / 16). A background
// thread writes a dump to $WSBENCH_HEAPCOUNT_FILE whenever "<that file>.req" appears, then removes
// the request file. Not for production; the counting is two relaxed atomics per call.
#include <malloc.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <thread>
#include <unistd.h>

namespace {

constexpr size_t classes = 4097; // 16-byte classes up to 64 KiB, the last one takes the rest
std::atomic<int64_t> live_bytes{0}, live_allocs{0}, total_allocs{0};
std::atomic<int64_t> by_class[classes];

inline size_t class_of(size_t usable) { return usable / 16 < classes - 1 ? usable / 16 : classes - 1; }

inline void* counted_alloc(size_t n) {
  void* p = std::malloc(n ? n : 1);
  if (p) {
    size_t u = malloc_usable_size(p);
    live_bytes.fetch_add(static_cast<int64_t>(u), std::memory_order_relaxed);
    live_allocs.fetch_add(1, std::memory_order_relaxed);
    total_allocs.fetch_add(1, std::memory_order_relaxed);
    by_class[class_of(u)].fetch_add(1, std::memory_order_relaxed);
  }
  return p;
}

inline void counted_free(void* p) {
  if (!p)
    return;
  size_t u = malloc_usable_size(p);
  live_bytes.fetch_sub(static_cast<int64_t>(u), std::memory_order_relaxed);
  live_allocs.fetch_sub(1, std::memory_order_relaxed);
  by_class[class_of(u)].fetch_sub(1, std::memory_order_relaxed);
  std::free(p);
}

void dump(const std::string& path) {
  std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (!f)
    return;
  std::fprintf(f, "live_bytes %lld\nlive_allocs %lld\ntotal_allocs %lld\n", (long long)live_bytes.load(),
               (long long)live_allocs.load(), (long long)total_allocs.load());
  for (size_t c = 0; c < classes; ++c)
    if (auto v = by_class[c].load())
      std::fprintf(f, "class %zu %lld\n", c * 16, (long long)v);
  std::fclose(f);
  std::rename(tmp.c_str(), path.c_str());
}

struct reporter {
  reporter() {
    const char* p = std::getenv("WSBENCH_HEAPCOUNT_FILE");
    if (!p)
      return;
    std::string path = p;
    std::thread([path] {
      std::string req = path + ".req";
      for (;;) {
        if (::access(req.c_str(), F_OK) == 0) {
          dump(path);
          ::unlink(req.c_str());
        }
        ::usleep(50'000);
      }
    }).detach();
  }
} the_reporter;

} // namespace

void* operator new(size_t n) {
  if (void* p = counted_alloc(n))
    return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) {
  if (void* p = counted_alloc(n))
    return p;
  throw std::bad_alloc();
}
void* operator new(size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n); }
void* operator new[](size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n); }
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, size_t) noexcept { counted_free(p); }
void operator delete[](void* p, size_t) noexcept { counted_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { counted_free(p); }
