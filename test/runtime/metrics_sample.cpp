// Prints a registry with every metric kind, for the Prometheus parser test.
#include "runtime/metrics.hpp"

#include <cstdio>

int main() {
  agner::metrics::registry r;
  r.make_counter("agner_sample_total", "a counter", "service=\"users\",shard=\"0\"").inc(5);
  r.make_counter("agner_sample_total", "a counter", "service=\"users\",shard=\"1\"").inc(7);
  r.make_gauge("agner_sample_gauge", "a gauge").set(-3);
  r.make_gauge_fn("agner_sample_fn", "a computed gauge", "kind=\"x\"", [] { return 1.5; });
  r.make_counter_fn("agner_sample_computed_total", "a computed counter", "", [] { return 9.0; });
  auto& h = r.make_histogram("agner_sample_seconds", "a latency histogram", "lane=\"write\"", 1e-9);
  for (uint64_t v = 1; v < 5'000'000'000ULL; v = v * 3 + 1)
    h.observe(v);
  r.make_histogram("agner_empty_seconds", "an empty histogram", "", 1e-9);
  std::fputs(r.render().c_str(), stdout);
}
