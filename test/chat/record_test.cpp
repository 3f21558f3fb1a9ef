// The chat layer's stored records: round trips, the older format still read, and bad bytes refused.
#include "chat/record.hpp"

#include <doctest/doctest.h>

#include <random>

using namespace agner::chat;

TEST_CASE("a user record round-trips, with its devices and when each was last seen") {
  user_record u;
  u.last_inbox_seq = 42;
  u.applied_through = 1'000'000;
  u.devices["phone"] = {40, 1'790'000'000'123};
  u.devices["laptop"] = {42, 1'790'000'100'000};
  u.pending.push_back({41, 999'998, (uint64_t{1} << 62) | 7, 3});
  u.pending.push_back({42, 1'000'000, (uint64_t{1} << 62) | 7, 4});
  auto back = user_record::decode(u.encode());
  CHECK(back.last_inbox_seq == 42);
  CHECK(back.applied_through == 1'000'000);
  REQUIRE(back.devices.size() == 2);
  CHECK(back.devices["phone"].acked == 40);
  CHECK(back.devices["phone"].seen_ms == 1'790'000'000'123);
  CHECK(back.devices["laptop"].seen_ms == 1'790'000'100'000);
  REQUIRE(back.pending.size() == 2);
  CHECK(back.pending[1].log_position == 1'000'000);
  CHECK(back.pending[1].conversation == ((uint64_t{1} << 62) | 7));
}

TEST_CASE("user_key_order sorts ids as their keys sort on disk") {
  std::vector<user_id> ids{1, 2, 9, 10, 11, 19, 20, 99, 100, 101, 109, 110, 999, 1000, 1'000'000, 999'999, 2'147'483'647,
                           1'000'000'000, 999'999'999, 5, 50, 500, 5'000'001};
  std::mt19937_64 rng(7);
  for (int i = 0; i < 500; ++i)
    ids.push_back(rng() % (user_id_max + 1));
  std::vector<std::pair<std::string, uint64_t>> keyed;
  for (auto u : ids)
    keyed.emplace_back(user_key(u), user_key_order(u));
  int wrong = 0;
  for (auto& a : keyed)
    for (auto& b : keyed)
      wrong += (a.first < b.first) != (a.second < b.second);
  CHECK(wrong == 0);
}

TEST_CASE("a user record of format 1 (no seen time per device) still decodes") {
  // Version byte 1; last_inbox_seq 5, applied_through 9; one device "d" acked 3; no pending.
  std::string v1{"\x01\x05\x09\x01\x01" "d" "\x03\x00", 8};
  auto u = user_record::decode(v1);
  CHECK(u.last_inbox_seq == 5);
  CHECK(u.applied_through == 9);
  REQUIRE(u.devices.count("d") == 1);
  CHECK(u.devices["d"].acked == 3);
  CHECK(u.devices["d"].seen_ms == 0); // the user shard counts from load time
  CHECK(u.pending.empty());
}

TEST_CASE("a user record that is newer, truncated or inconsistent is refused") {
  user_record u;
  u.devices["d"] = {1, 2};
  auto good = u.encode();
  auto newer = good;
  newer[0] = static_cast<char>(user_record::format + 1);
  CHECK_THROWS_AS(user_record::decode(newer), record_error);
  CHECK_THROWS_AS(user_record::decode(good.substr(0, good.size() - 1)), record_error);
  CHECK_THROWS_AS(user_record::decode(good + "x"), record_error);
  CHECK_THROWS_AS(user_record::decode(""), record_error);
  // A device count larger than the record could hold.
  CHECK_THROWS_AS(user_record::decode(std::string{"\x02\x00\x00\x7f", 4}), record_error);
}
