// Metric arithmetic: histogram buckets, quantiles, rendering shape.
#include "runtime/metrics.hpp"

#include <doctest/doctest.h>

#include <random>
#include <thread>
#include <vector>

using namespace agner::metrics;

TEST_CASE("every value falls in a bucket whose bounds contain it, within 12.5%") {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 100000; ++i) {
    uint64_t v = rng() >> (rng() % 64);
    int b = histogram::bucket_of(v);
    REQUIRE(b >= 0);
    REQUIRE(b < histogram::bucket_count);
    REQUIRE(v <= histogram::bucket_upper(b));
    if (b > 0)
      REQUIRE(v > histogram::bucket_upper(b - 1));
    if (v >= 8)
      REQUIRE(static_cast<double>(histogram::bucket_upper(b) - v) <= 0.125 * static_cast<double>(v));
  }
}

TEST_CASE("quantiles of a uniform sample are close to the truth") {
  histogram h;
  for (uint64_t v = 1; v <= 100000; ++v)
    h.observe(v);
  CHECK(h.count() == 100000);
  auto p50 = h.quantile(0.5), p99 = h.quantile(0.99);
  CHECK(p50 >= 50000);
  CHECK(p50 <= 50000 * 1.125);
  CHECK(p99 >= 99000);
  CHECK(p99 <= 99000 * 1.125);
}

TEST_CASE("counters add up across threads without a lock") {
  registry r;
  auto& c = r.make_counter("x_total", "x");
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 100000; ++i)
        c.inc();
    });
  for (auto& t : ts)
    t.join();
  CHECK(c.value() == 400000);
  CHECK(&r.make_counter("x_total", "x") == &c);
}

TEST_CASE("registering one name as two types is refused") {
  registry r;
  r.make_counter("a_total", "a");
  CHECK_THROWS(r.make_gauge("a_total", "a"));
}

TEST_CASE("rendering writes HELP, TYPE, labels, and cumulative buckets ending in +Inf") {
  registry r;
  r.make_counter("agner_x_total", "things", "shard=\"1\"").inc(3);
  auto& h = r.make_histogram("agner_lat_seconds", "latency", "", 1e-9);
  h.observe(1000);
  h.observe(2000000);
  auto text = r.render();
  CHECK(text.find("# TYPE agner_x_total counter\n") != std::string::npos);
  CHECK(text.find("agner_x_total{shard=\"1\"} 3\n") != std::string::npos);
  CHECK(text.find("agner_lat_seconds_bucket{le=\"+Inf\"} 2\n") != std::string::npos);
  CHECK(text.find("agner_lat_seconds_count 2\n") != std::string::npos);
}
