// Restart intensity and period, on virtual time.
#include "runtime/supervisor.hpp"

#include <doctest/doctest.h>

using namespace agner;
using namespace std::chrono_literals;

TEST_CASE("restarts within the intensity are allowed, one more escalates") {
  virtual_clock c;
  restart_budget b({3, 10s});
  CHECK(b.allow(c.now()));
  c.advance(1s);
  CHECK(b.allow(c.now()));
  c.advance(1s);
  CHECK(b.allow(c.now()));
  c.advance(1s);
  CHECK_FALSE(b.allow(c.now()));
  CHECK(b.restarts() == 3);
}

TEST_CASE("restarts older than the period no longer count") {
  virtual_clock c;
  restart_budget b({2, 5s});
  CHECK(b.allow(c.now()));
  c.advance(1s);
  CHECK(b.allow(c.now()));
  c.advance(4s); // the first restart is now exactly one period old: it falls out
  CHECK(b.allow(c.now()));
  CHECK_FALSE(b.allow(c.now()));
  c.advance(10s);
  CHECK(b.allow(c.now()));
}

TEST_CASE("an intensity of zero escalates the first failure") {
  virtual_clock c;
  restart_budget b({0, 5s});
  CHECK_FALSE(b.allow(c.now()));
}
