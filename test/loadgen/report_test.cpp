// The report: valid JSON with the documented fields, a summary a person can read, and an exit
// code that turns on lost and unexpected messages (and, when strict, on duplicates and disorder).
#include "loadgen/report.hpp"

#include <boost/json.hpp>
#include <doctest/doctest.h>

using namespace agner::loadgen;

namespace {

accounting_result sample() {
  accounting_result r;
  r.messages_sent = 10;
  r.messages_stored = 9;
  r.deliveries = 18;
  for (uint64_t ns : {1'000'000u, 2'000'000u, 3'000'000u})
    r.send_to_stored.observe(ns);
  r.send_to_delivered.observe(5'000'000);
  return r;
}

} // namespace

TEST_CASE("the JSON report parses and carries counts, latencies and the verdict") {
  auto r = sample();
  r.lost_deliveries = 1;
  r.lost_messages = 1;
  r.lost_examples.push_back({3, 17, 4, 1});
  run_info run{"steady \"quoted\"", 1000, 7, 2, 60, true, false, "ws", R"({"peak_ready":3})"};
  auto v = boost::json::parse(to_json(r, run)).as_object();
  CHECK(v.at("run").at("preset").as_string() == "steady \"quoted\"");
  CHECK(v.at("run").at("phones").as_int64() == 1000);
  CHECK(v.at("run").at("transport").as_string() == "ws");
  CHECK(v.at("load").at("peak_ready").as_int64() == 3);
  CHECK(v.at("messages").at("sent").as_int64() == 10);
  CHECK(v.at("lost").at("deliveries").as_int64() == 1);
  CHECK(v.at("lost").at("examples").as_array().at(0).at("nonce").as_int64() == 17);
  CHECK(v.at("latency").at("send_to_stored").at("count").as_int64() == 3);
  CHECK(v.at("latency").at("send_to_stored").at("p50_ns").as_int64() >= 2'000'000);
  CHECK(v.at("latency").at("send_to_stored").at("p999_ns").as_int64() >= 3'000'000);
  CHECK(v.at("violations").as_int64() == 1);
  CHECK(v.at("exit_code").as_int64() == exit_violations);
}

TEST_CASE("the exit code is clean unless something was lost or unexpected, or strict finds more") {
  auto r = sample();
  run_info run;
  CHECK(exit_code(r, run) == exit_ok);
  r.duplicates = 2;
  r.order_violations = 1;
  CHECK(exit_code(r, run) == exit_ok);
  run.strict = true;
  CHECK(exit_code(r, run) == exit_violations);
  run.strict = false;
  r.unexpected_deliveries = 1;
  CHECK(exit_code(r, run) == exit_violations);
}

TEST_CASE("the summary names the verdict and the latencies in milliseconds") {
  auto r = sample();
  run_info run{"steady", 1000, 7, 1, 60, false, false, "", ""};
  auto ok = summary(r, run);
  CHECK(ok.find("verdict    OK") != std::string::npos);
  CHECK(ok.find("send->stored") != std::string::npos);
  CHECK(ok.find("ms") != std::string::npos);
  r.lost_deliveries = 2;
  r.lost_examples.push_back({1, 2, 3, 0});
  auto bad = summary(r, run);
  CHECK(bad.find("2 VIOLATION(S)") != std::string::npos);
  CHECK(bad.find("lost: sender=1 nonce=2 user=3 device=0") != std::string::npos);
}
