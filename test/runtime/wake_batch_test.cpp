// wake_batch: wake-ups deferred to the end of a burst, once per key, in order.
#include "runtime/wake_batch.hpp"

#include <doctest/doctest.h>

#include <string>
#include <thread>
#include <vector>

using namespace agner;

TEST_CASE("without a burst a wake runs at once") {
  int ran = 0;
  CHECK_FALSE(wake_batch::open());
  wake_batch::defer(&ran, [&] { ++ran; });
  CHECK(ran == 1);
}

TEST_CASE("in a burst wakes run when it ends, in the order deferred, once per key") {
  std::vector<std::string> log;
  int a = 0, b = 0;
  {
    wake_batch burst;
    CHECK(wake_batch::open());
    wake_batch::defer(&a, [&] { log.push_back("a"); });
    wake_batch::defer(nullptr, [&] { log.push_back("close 1"); });
    wake_batch::defer(&b, [&] { log.push_back("b"); });
    wake_batch::defer(&a, [&] { log.push_back("a again"); }); // merged into the first
    wake_batch::defer(nullptr, [&] { log.push_back("close 2"); }); // a null key never merges
    CHECK(log.empty());
  }
  CHECK_FALSE(wake_batch::open());
  CHECK(log == std::vector<std::string>{"a", "close 1", "b", "close 2"});
  // The next burst starts empty: the same key wakes again.
  {
    wake_batch burst;
    wake_batch::defer(&a, [&] { log.push_back("a"); });
  }
  CHECK(log.size() == 5);
}

TEST_CASE("a nested burst defers to the outermost one") {
  int ran = 0;
  {
    wake_batch outer;
    {
      wake_batch inner;
      wake_batch::defer(&ran, [&] { ++ran; });
    }
    CHECK(ran == 0);
    CHECK(wake_batch::open());
  }
  CHECK(ran == 1);
}

TEST_CASE("flush_now runs what was deferred so far, and the burst goes on") {
  int first = 0, second = 0;
  {
    wake_batch burst;
    wake_batch::defer(&first, [&] { ++first; });
    wake_batch::flush_now();
    CHECK(first == 1);
    wake_batch::defer(&first, [&] { ++first; }); // a new wake under the same key
    wake_batch::defer(&second, [&] { ++second; });
    CHECK(second == 0);
  }
  CHECK(first == 2);
  CHECK(second == 1);
  wake_batch::flush_now(); // no burst: nothing to do
}

TEST_CASE("a wake that defers another runs it at once (the burst is over), and bursts are per thread") {
  int inner = 0, other_thread = 0;
  {
    wake_batch burst;
    wake_batch::defer(&inner, [&] { wake_batch::defer(&other_thread, [&] { ++inner; }); });
    // Another thread has no burst open: its wake runs at once.
    std::thread([&] { wake_batch::defer(&other_thread, [&] { ++other_thread; }); }).join();
    CHECK(other_thread == 1);
    CHECK(inner == 0);
  }
  CHECK(inner == 1);
}
