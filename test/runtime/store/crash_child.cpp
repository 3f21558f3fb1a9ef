// The child of the crash test: appends under load from two producer threads and writes one line per
// acknowledged record to stdout ("A stream seq position"), until the parent kills it with SIGKILL.
// Usage: store_crash_child DATA_DIR CYCLE [sync|unsafe_nosync]; the power-loss test runs it under
// the powercut shim, with unsafe_nosync to show that its check catches lost acknowledgements.
#include "runtime/store/store.hpp"
#include "test/runtime/store/store_test_support.hpp"

#include <atomic>
#include <cstdio>
#include <random>
#include <thread>
#include <unistd.h>

using namespace agner;
using namespace agner::store;

namespace {
// Producers stop submitting while this many batches are unacknowledged: load, not an endless queue.
constexpr int outstanding_max = 64;
// Streams per producer; each producer owns its streams, so seqs of one stream only grow.
constexpr uint64_t streams_per_producer = 16;

void write_all(const std::string& s) {
  const char* p = s.data();
  size_t left = s.size();
  while (left > 0) {
    ssize_t n = ::write(STDOUT_FILENO, p, left);
    if (n <= 0)
      _exit(3);
    p += n;
    left -= static_cast<size_t>(n);
  }
}
} // namespace

int main(int argc, char** argv) {
  auto mode = argc == 4 ? parse_durability(argv[3]) : durability::sync;
  if ((argc != 3 && argc != 4) || !mode) {
    std::fprintf(stderr, "usage: store_crash_child DATA_DIR CYCLE [sync|unsafe_nosync]\n");
    return 2;
  }
  uint64_t cycle = std::strtoull(argv[2], nullptr, 10);
  store_options o;
  o.data_dir = argv[1];
  o.durability = *mode;
  o.map_size_bytes = size_t{1} << 30;
  o.index_batch_entries = 2048; // index batches happen (and get killed) within a cycle
  o.index_slice_entries = 256;
  o.index_idle_ms = std::chrono::milliseconds(20);
  metrics::registry m;
  node_store s(o, m);
  std::atomic<int> outstanding{0};
  auto producer = [&](uint64_t id) {
    std::mt19937_64 rng(cycle * 7919 + id);
    std::vector<uint64_t> next(streams_per_producer, (cycle + 1) << 32); // seqs grow across cycles
    for (uint64_t n = 0;; ++n) {
      while (outstanding.load() >= outstanding_max)
        std::this_thread::yield();
      write_batch b;
      std::vector<std::pair<uint64_t, uint64_t>> keys;
      int records = 1 + static_cast<int>(rng() % 20);
      for (int i = 0; i < records; ++i) {
        uint64_t local = rng() % streams_per_producer;
        uint64_t stream = id * 1000 + local;
        uint64_t seq = next[local]++;
        b.append(stream, seq, test::make_payload(stream, seq, rng() % 300));
        keys.push_back({stream, seq});
      }
      b.put(fmt::format("producer/{}", id), fmt::format("{}:{}", cycle, n));
      ++outstanding;
      while (!s.submit(std::move(b), [&outstanding, keys](const commit_result& r) {
        --outstanding;
        if (r.status != write_status::durable)
          return;
        // One write(2) per batch, below PIPE_BUF: the parent never sees half a line.
        std::string lines;
        for (size_t i = 0; i < keys.size(); ++i)
          lines += fmt::format("A {} {} {}\n", keys[i].first, keys[i].second, r.first_position + i);
        write_all(lines);
      }))
        std::this_thread::yield();
    }
  };
  std::thread a(producer, 1), b(producer, 2);
  a.join(); // never returns: the parent kills the process
  b.join();
}
