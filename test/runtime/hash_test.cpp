// The key hash and the slot mapping are a storage and cluster format: their values are pinned.
#include "runtime/hash.hpp"
#include "runtime/slot_table.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace agner;

TEST_CASE("key_hash of integers matches the pinned splitmix64 values") {
  CHECK(key_hash(uint64_t{0}) == 0x0000000000000000ULL);
  CHECK(key_hash(uint64_t{1}) == 0x5692161d100b05e5ULL);
  CHECK(key_hash(uint64_t{42}) == 0xa759ea27d4727622ULL);
  CHECK(key_hash(uint64_t{0xffffffffffffffffULL}) == 0xb4d055fcf2cbbd7bULL);
}

TEST_CASE("key_hash of strings is FNV-1a 64 then mix64, pinned") {
  CHECK(key_hash(std::string_view{""}) == mix64(0xcbf29ce484222325ULL));
  CHECK(key_hash(std::string_view{"alice"}) == 0xc5d1556d66774a5cULL);
  CHECK(key_hash(std::string_view{"conversation:1:2"}) == 0x64ab1c6ec91092deULL);
}

TEST_CASE("slot_of takes the top 12 bits and stays in range") {
  CHECK(slot_of(uint64_t{1}) == 0x569);
  CHECK(slot_of(uint64_t{42}) == 0xa75);
  for (uint64_t k = 0; k < 100000; ++k)
    REQUIRE(slot_of(k) < slot_count);
}

TEST_CASE("slots spread sequential ids evenly over shards") {
  slot_table t(8);
  std::vector<int> per_shard(8);
  const int n = 800000;
  for (uint64_t k = 0; k < n; ++k)
    per_shard[t.shard_of(k)]++;
  for (int c : per_shard) {
    CHECK(c > n / 8 * 0.97);
    CHECK(c < n / 8 * 1.03);
  }
}

TEST_CASE("a slot table maps every slot to a shard below its shard count") {
  slot_table t(3);
  for (uint32_t s = 0; s < slot_count; ++s)
    REQUIRE(t.shard_of_slot(s) == s % 3);
}
