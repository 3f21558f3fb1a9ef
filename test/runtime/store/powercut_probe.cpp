// The powercut shim's own test subject: writes a known pattern of durable and not durable writes
// into a directory, prints "ready" and waits to be SIGKILLed; powercut_test.cpp applies the cut and
// checks what is left. Usage: powercut_probe MODE DIR, MODE one of
//   write    probe.dat, other.dat, unsynced.dat and x-lock.mdb (see the test for what survives)
//   rewrite  after a cut: overwrites probe.dat without fsync, creates new.dat with fsync
//   threads  four threads write and fdatasync their own quarter of threads.dat through their own
//            descriptors, then the main thread overwrites all of it without fsync
//   writemap maps probe.dat shared and writable, which the shim must refuse (abort)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

namespace {

// threads mode: writers, and each one's region written in chunks, each chunk fdatasynced.
constexpr int thread_count = 4;
constexpr size_t thread_chunk_bytes = 4096;
constexpr int thread_chunks = 16;

[[noreturn]] void fail(const char* what) {
  std::perror(what);
  std::exit(1);
}

int open_or_fail(const std::string& path, int flags, mode_t mode = 0600) {
  int fd = ::open(path.c_str(), flags, mode);
  if (fd < 0)
    fail(path.c_str());
  return fd;
}

void pwrite_fill(int fd, char c, size_t n, off_t off) {
  std::string buf(n, c);
  if (::pwrite(fd, buf.data(), n, off) != static_cast<ssize_t>(n))
    fail("pwrite");
}

void write_mode(const std::string& dir) {
  std::string probe = dir + "/probe.dat";
  int fd1 = open_or_fail(probe, O_RDWR | O_CREAT | O_TRUNC);
  std::string a(8192, 'A'), b(4096, 'B');
  if (::write(fd1, a.data(), a.size()) != 8192)
    fail("write");
  iovec two_b[2] = {{b.data(), b.size()}, {b.data(), b.size()}};
  if (::lseek(fd1, 8192, SEEK_SET) != 8192 || ::writev(fd1, two_b, 2) != 8192)
    fail("writev");
  if (::fdatasync(fd1) != 0) // durable: [0, 8192) A, [8192, 16384) B
    fail("fdatasync");
  pwrite_fill(fd1, 'C', 100, 0); // not durable
  int fd2 = open_or_fail(probe, O_WRONLY | O_DSYNC);
  pwrite_fill(fd2, 'D', 10, 200); // durable: an O_DSYNC descriptor
  pwrite_fill(fd1, 'F', 4096, 16384); // not durable, and grows the file
  std::string g(10, 'G');
  iovec gv{g.data(), g.size()};
  if (::pwritev2(fd1, &gv, 1, 300, RWF_DSYNC) != 10) // durable: this one write is O_DSYNC
    fail("pwritev2");
  std::string e(50, 'E');
  iovec ev{e.data(), e.size()};
  if (::pwritev(fd1, &ev, 1, 400) != 50) // not durable
    fail("pwritev");

  int fd3 = open_or_fail(dir + "/other.dat", O_RDWR | O_CREAT);
  std::string x(1000, 'X');
  if (::write(fd3, x.data(), x.size()) != 1000)
    fail("write");
  int fd3b = ::dup(fd3);
  if (fd3b < 0 || ::fsync(fd3b) != 0) // durable, through a duplicate descriptor
    fail("dup+fsync");
  if (::ftruncate(fd3, 100) != 0) // not durable: other.dat keeps 1000 bytes
    fail("ftruncate");

  int fd4 = open_or_fail(dir + "/unsynced.dat", O_WRONLY | O_CREAT);
  std::string y(5000, 'Y');
  if (::write(fd4, y.data(), y.size()) != 5000) // never synced: unsynced.dat ends up empty
    fail("write");
  ::close(fd4);

  int fd5 = open_or_fail(dir + "/x-lock.mdb", O_WRONLY | O_CREAT);
  if (::write(fd5, "ZZZZZZZZZZ", 10) != 10) // not tracked: survives as written
    fail("write");
}

void rewrite_mode(const std::string& dir) {
  int fd = open_or_fail(dir + "/probe.dat", O_RDWR);
  pwrite_fill(fd, 'H', 4096, 0); // not durable: the cut brings back what was on disk at open
  int fd2 = open_or_fail(dir + "/new.dat", O_WRONLY | O_CREAT);
  pwrite_fill(fd2, 'N', 10, 0);
  if (::fsync(fd2) != 0) // durable
    fail("fsync");
}

void threads_mode(const std::string& dir) {
  std::string path = dir + "/threads.dat";
  std::vector<std::thread> writers;
  for (int t = 0; t < thread_count; ++t)
    writers.emplace_back([&, t] {
      int fd = open_or_fail(path, O_RDWR | O_CREAT);
      off_t base = static_cast<off_t>(t) * thread_chunks * thread_chunk_bytes;
      for (int c = 0; c < thread_chunks; ++c) {
        pwrite_fill(fd, static_cast<char>('a' + t), thread_chunk_bytes, base + c * static_cast<off_t>(thread_chunk_bytes));
        if (::fdatasync(fd) != 0)
          fail("fdatasync");
      }
      ::close(fd);
    });
  for (auto& w : writers)
    w.join();
  int fd = open_or_fail(path, O_RDWR);
  pwrite_fill(fd, '#', thread_count * thread_chunks * thread_chunk_bytes, 0); // not durable
}

void writemap_mode(const std::string& dir) {
  int fd = open_or_fail(dir + "/probe.dat", O_RDWR | O_CREAT);
  if (::ftruncate(fd, 4096) != 0)
    fail("ftruncate");
  void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p != MAP_FAILED)
    std::memset(p, 'M', 4096); // the shim must have stopped the process before this
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: powercut_probe write|rewrite|threads|writemap DIR\n");
    return 2;
  }
  std::string mode = argv[1], dir = argv[2];
  if (mode == "write")
    write_mode(dir);
  else if (mode == "rewrite")
    rewrite_mode(dir);
  else if (mode == "threads")
    threads_mode(dir);
  else if (mode == "writemap")
    writemap_mode(dir);
  else
    return 2;
  if (::write(STDOUT_FILENO, "ready\n", 6) != 6)
    return 3;
  for (;;)
    ::pause(); // until the SIGKILL
}
