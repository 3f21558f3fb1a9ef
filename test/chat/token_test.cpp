#include "chat/token.hpp"

#include <doctest/doctest.h>

using namespace agner::chat;

namespace {
const std::string secret(32, 'k');
}

TEST_CASE("an issued token verifies to its user until it expires") {
  token_signer s(secret);
  auto t = s.issue(42, 1000);
  CHECK(t.starts_with("v1.42.1000."));
  CHECK(std::get<user_id>(s.verify(t, 999)) == 42);
  CHECK(std::get<token_error>(s.verify(t, 1000)) == token_error::expired);
}

TEST_CASE("a token signed with another secret, or altered, is refused") {
  token_signer s(secret), other(std::string(32, 'x'));
  auto t = s.issue(42, 1000);
  CHECK(std::get<token_error>(other.verify(t, 0)) == token_error::bad_signature);
  auto forged = t;
  forged.replace(3, 2, "43"); // claim another user with the same signature
  CHECK(std::get<token_error>(s.verify(forged, 0)) == token_error::bad_signature);
  auto longer_exp = "v1.42.9999." + t.substr(t.rfind('.') + 1);
  CHECK(std::get<token_error>(s.verify(longer_exp, 0)) == token_error::bad_signature);
}

TEST_CASE("the version prefix pins the algorithm") {
  token_signer s(secret);
  auto t = s.issue(42, 1000);
  auto v2 = "v2" + t.substr(2);
  CHECK(std::get<token_error>(s.verify(v2, 0)) == token_error::bad_version);
  CHECK(std::get<token_error>(s.verify("none.42.1000.", 0)) == token_error::bad_version);
}

TEST_CASE("malformed tokens are refused without throwing") {
  token_signer s(secret);
  for (const char* bad : {"", ".", "v1", "v1.42", "v1..", "garbage", "v1.x.y.z"})
    CHECK(std::holds_alternative<token_error>(s.verify(bad, 0)));
  CHECK(std::get<token_error>(s.verify(std::string(1000, 'a'), 0)) == token_error::malformed);
}

TEST_CASE("a short secret is refused and random secrets differ") {
  CHECK_THROWS(token_signer("short"));
  CHECK(token_signer::random_secret() != token_signer::random_secret());
  CHECK(token_signer::random_secret().size() == 32);
}

TEST_CASE("base64url has no padding and uses the URL alphabet") {
  CHECK(base64url("") == "");
  CHECK(base64url("f") == "Zg");
  CHECK(base64url("fo") == "Zm8");
  CHECK(base64url("foo") == "Zm9v");
  CHECK(base64url("\xfb\xff") == "-_8");
}
