#include "chat/token.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <fmt/format.h>
#include <stdexcept>

namespace agner::chat {

namespace {
constexpr std::string_view version = "v1";
constexpr size_t secret_bytes_min = 32;
} // namespace

std::string_view to_string(token_error e) noexcept {
  switch (e) {
    case token_error::malformed: return "malformed";
    case token_error::bad_version: return "bad_version";
    case token_error::bad_signature: return "bad_signature";
    case token_error::expired: return "expired";
  }
  return "unknown";
}

std::string base64url(std::string_view bytes) {
  static constexpr char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    out += tbl[v >> 18];
    out += tbl[(v >> 12) & 63];
    out += tbl[(v >> 6) & 63];
    out += tbl[v & 63];
  }
  if (i + 1 == bytes.size()) {
    uint32_t v = uint8_t(bytes[i]) << 16;
    out += tbl[v >> 18];
    out += tbl[(v >> 12) & 63];
  } else if (i + 2 == bytes.size()) {
    uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8);
    out += tbl[v >> 18];
    out += tbl[(v >> 12) & 63];
    out += tbl[(v >> 6) & 63];
  }
  return out;
}

token_signer::token_signer(std::string secret) : secret_(std::move(secret)) {
  if (secret_.size() < secret_bytes_min)
    throw std::invalid_argument(fmt::format("token secret must be at least {} bytes", secret_bytes_min));
}

std::string token_signer::random_secret() {
  std::string s(secret_bytes_min, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(s.data()), static_cast<int>(s.size())) != 1)
    throw std::runtime_error("RAND_bytes failed");
  return s;
}

std::string token_signer::mac(std::string_view payload) const {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret_.data(), static_cast<int>(secret_.size()), reinterpret_cast<const unsigned char*>(payload.data()),
       payload.size(), out, &len);
  return base64url(std::string_view(reinterpret_cast<char*>(out), len));
}

std::string token_signer::issue(user_id user, int64_t expires_unix) const {
  auto payload = fmt::format("{}.{}.{}", version, user, expires_unix);
  return payload + "." + mac(payload);
}

std::variant<user_id, token_error> token_signer::verify(std::string_view token, int64_t now_unix) const {
  auto last = token.rfind('.');
  if (last == std::string_view::npos || token.size() > 256)
    return token_error::malformed;
  auto payload = token.substr(0, last);
  auto sig = token.substr(last + 1);
  auto d1 = payload.find('.');
  auto d2 = payload.find('.', d1 == std::string_view::npos ? d1 : d1 + 1);
  if (d1 == std::string_view::npos || d2 == std::string_view::npos)
    return token_error::malformed;
  if (payload.substr(0, d1) != version)
    return token_error::bad_version;
  auto expected = mac(payload);
  if (expected.size() != sig.size() || CRYPTO_memcmp(expected.data(), sig.data(), sig.size()) != 0)
    return token_error::bad_signature;
  auto user = parse_id(payload.substr(d1 + 1, d2 - d1 - 1));
  auto exp = parse_id(payload.substr(d2 + 1));
  if (!user || !exp || *user > user_id_max || *user == 0)
    return token_error::malformed;
  if (static_cast<int64_t>(*exp) <= now_unix)
    return token_error::expired;
  return *user;
}

} // namespace agner::chat
