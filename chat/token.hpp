// Bearer tokens: "v1.<user id>.<expiry unix seconds>.<base64url HMAC-SHA256>". The algorithm is
// pinned by the version prefix (nothing else is accepted), the MAC is compared in constant time.
#pragma once

#include "chat/ids.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

namespace agner::chat {

/// Why a token was refused. Stable names: they appear in logs and in close reasons.
enum class token_error { malformed, bad_version, bad_signature, expired };
std::string_view to_string(token_error e) noexcept;

class token_signer {
public:
  /// `secret` is the raw key: at least 32 bytes (a shorter HMAC-SHA256 key weakens it).
  explicit token_signer(std::string secret);

  std::string issue(user_id user, int64_t expires_unix) const;
  /// Verifies the MAC (constant time) and the expiry against `now_unix`.
  std::variant<user_id, token_error> verify(std::string_view token, int64_t now_unix) const;

  /// 32 random bytes from OpenSSL's CSPRNG.
  static std::string random_secret();

private:
  std::string mac(std::string_view payload) const;
  std::string secret_;
};

std::string base64url(std::string_view bytes);

} // namespace agner::chat
