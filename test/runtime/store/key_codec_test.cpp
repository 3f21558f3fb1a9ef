// Key encoding: big-endian fixed-width parts keep numeric order in LMDB's bytewise order.
#include "runtime/store/key_codec.hpp"
#include "runtime/store/value_format.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <vector>

using namespace agner::store;

TEST_CASE("u64 keys sort bytewise in numeric order") {
  std::vector<uint64_t> values = {0, 1, 255, 256, 65535, 65536, 1ull << 32, (1ull << 32) + 1, UINT64_MAX - 1, UINT64_MAX};
  std::mt19937_64 rng(7);
  for (int i = 0; i < 1000; ++i)
    values.push_back(rng());
  for (size_t i = 0; i < values.size(); ++i)
    for (size_t j = 0; j < values.size(); j += 37) {
      auto a = key_builder().u64(values[i]).str();
      auto b = key_builder().u64(values[j]).str();
      CHECK((a < b) == (values[i] < values[j]));
    }
}

TEST_CASE("composite keys group by their first part and order by the second") {
  std::vector<std::pair<uint64_t, uint64_t>> pairs;
  std::mt19937_64 rng(11);
  for (int i = 0; i < 2000; ++i)
    pairs.push_back({rng() % 50, rng() % 100000});
  std::vector<std::string> keys;
  for (auto [a, b] : pairs)
    keys.push_back(key_builder().u64(a).u64(b).str());
  std::sort(pairs.begin(), pairs.end());
  std::sort(keys.begin(), keys.end());
  for (size_t i = 0; i < keys.size(); ++i) {
    key_reader r(keys[i]);
    CHECK(r.u64() == pairs[i].first);
    CHECK(r.u64() == pairs[i].second);
    CHECK(r.done());
  }
}

TEST_CASE("a key reads back part by part, including a tag byte, a u32 and a trailing string") {
  auto k = key_builder().u8(3).u32(0xdeadbeef).u64(42).bytes("tail").str();
  CHECK(k.size() == 1 + 4 + 8 + 4);
  key_reader r(k);
  CHECK(r.u8() == 3);
  CHECK(r.u32() == 0xdeadbeef);
  CHECK(r.u64() == 42);
  CHECK(r.rest() == "tail");
  CHECK(r.done());
}

TEST_CASE("reading past the end of a key throws instead of reading garbage") {
  key_reader r(std::string_view("\x01\x02\x03", 3));
  CHECK_THROWS_AS(r.u64(), std::out_of_range);
}

TEST_CASE("a value of the current format decodes, a newer one is refused with a clear error") {
  std::string v;
  encode_value(v, "hello");
  CHECK(decode_value(v, "test value") == "hello");
  std::string newer = v;
  newer[0] = static_cast<char>(format_version + 1);
  CHECK_THROWS_WITH_AS(decode_value(newer, "test value"), doctest::Contains("newer than this build"), format_error);
  CHECK_THROWS_AS(decode_value("", "test value"), format_error);
}

TEST_CASE("a log record round-trips and a truncated one is refused") {
  std::string v;
  encode_log_record(v, 7, 9, "payload");
  auto r = decode_log_record(v, 1);
  CHECK(r.stream == 7);
  CHECK(r.seq == 9);
  CHECK(r.payload == "payload");
  CHECK_THROWS_AS(decode_log_record(std::string_view(v).substr(0, 10), 1), format_error);
}
