#include "chat/ids.hpp"

#include <doctest/doctest.h>

#include <set>
#include <thread>
#include <vector>

using namespace agner::chat;

TEST_CASE("a 1:1 conversation id is the same from both sides and gives back its members") {
  auto c = direct_conversation(7, 3);
  CHECK(c == direct_conversation(3, 7));
  CHECK(is_direct(c));
  CHECK(direct_members(c) == std::pair<user_id, user_id>{3, 7});
  CHECK(direct_conversation(1, 2) != direct_conversation(1, 3));
  auto big = direct_conversation(user_id_max, user_id_max - 1);
  CHECK(direct_members(big) == std::pair<user_id, user_id>{user_id_max - 1, user_id_max});
}

TEST_CASE("ids from one generator are unique and increasing, even across threads") {
  id_generator g(5);
  std::vector<std::vector<message_id>> per(4);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < 20000; ++i)
        per[t].push_back(g.next());
    });
  for (auto& t : ts)
    t.join();
  std::set<message_id> all;
  for (auto& v : per) {
    for (size_t i = 1; i < v.size(); ++i)
      REQUIRE(v[i] > v[i - 1]);
    all.insert(v.begin(), v.end());
  }
  CHECK(all.size() == 80000);
}

TEST_CASE("ids of different nodes never collide and carry their time") {
  id_generator a(1), b(2);
  auto x = a.next(), y = b.next();
  CHECK(x != y);
  CHECK(((x >> 12) & 1023) == 1);
  CHECK(((y >> 12) & 1023) == 2);
  CHECK(id_generator::time_ms(x) > id_generator::epoch_ms);
  CHECK_THROWS(id_generator(1024));
}

TEST_CASE("decimal id strings parse strictly") {
  CHECK(parse_id("0") == 0u);
  CHECK(parse_id("18446744073709551615") == UINT64_MAX);
  CHECK_FALSE(parse_id("18446744073709551616"));
  CHECK_FALSE(parse_id(""));
  CHECK_FALSE(parse_id("-1"));
  CHECK_FALSE(parse_id("+1"));
  CHECK_FALSE(parse_id("12a"));
  CHECK_FALSE(parse_id(" 1"));
}
