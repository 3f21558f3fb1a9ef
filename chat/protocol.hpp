// The wire protocol: JSON text frames over WebSocket (docs/protocol.md). Decoding turns one frame
// into a typed client request or a typed error; encoding writes server frames. No I/O here.
#pragma once

#include "chat/ids.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace agner::chat::proto {

/// Protocol version announced in hello; bumped on any incompatible change.
inline constexpr int version = 1;
/// Path and subprotocol of the WebSocket endpoint.
inline constexpr std::string_view ws_path = "/v1/ws";
inline constexpr std::string_view ws_subprotocol = "agner.v1";

// Limits, each with its reason.
/// Largest WebSocket message accepted; a frame above it closes with 1009 (Beast enforces it).
inline constexpr size_t frame_bytes_max = 32 * 1024;
/// Largest message body: generous for chat text, small enough to keep a 1M-entry cache bounded.
inline constexpr size_t body_bytes_max = 16 * 1024;
/// Client nonces are short opaque strings (a UUID is 36 bytes).
inline constexpr size_t nonce_bytes_max = 64;
/// Device names identify a user's phone, tablet, browser.
inline constexpr size_t device_bytes_max = 64;
/// Request refs are echoed back; a client counter or short string.
inline constexpr size_t ref_bytes_max = 32;
/// History pages are capped so one request cannot hold a read lane for long.
inline constexpr uint32_t history_limit_max = 100;
inline constexpr uint32_t history_limit_default = 50;

/// Stable error codes (the `code` field of error frames).
enum class error_code {
  bad_json,           ///< not a JSON object: connection closed with 4002
  unknown_op,         ///< op is missing or not known
  bad_request,        ///< a field is missing, has the wrong type, or is out of range
  not_identified,     ///< any op but identify before identify: closed with 4003
  auth_failed,        ///< bad or expired token: closed with 4004
  already_identified, ///< a second identify: closed with 4005
  rate_limited,       ///< too many sends per second: retry later with the same nonce
  forbidden,          ///< not a member of that conversation
  not_found,          ///< no such user or conversation
  resume_too_old,     ///< the resume position is older than what is kept: fetch history
  unavailable,        ///< the node cannot store right now (disk full, draining): retry
  internal,           ///< a bug: reported, nothing half-applied
};
std::string_view to_string(error_code c) noexcept;

/// WebSocket close codes used by the server (4000-4999 are the application's).
enum close_code : uint16_t {
  close_going_away = 1001,      ///< node stopping: resume on another node
  close_invalid_utf8 = 1007,    ///< a text frame that is not UTF-8
  close_too_big = 1009,         ///< frame above frame_bytes_max
  close_decode_error = 4002,    ///< a frame that is not a JSON object
  close_not_identified = 4003,  ///< request before identify
  close_auth_failed = 4004,     ///< bad or expired token
  close_already_identified = 4005,
  close_identify_timeout = 4006, ///< no identify within the deadline
  close_heartbeat_timeout = 4009, ///< no frame within the heartbeat deadline
  close_slow_reader = 4010,     ///< outbound queue overflowed: resume to get the rest
  close_session_replaced = 4011, ///< too many sessions for this user: the oldest is closed
};

struct identify {
  std::string token;
  std::string device;
  std::optional<uint64_t> last_inbox_seq; ///< resume after this position
};
struct heartbeat {};
struct send {
  user_id to = 0;
  std::string nonce;
  std::string body;
};
struct ack {
  uint64_t inbox_seq = 0;
};
struct history {
  conversation_id conversation = 0;
  std::optional<uint64_t> before;
  std::optional<uint64_t> after;
  uint32_t limit = history_limit_default;
};

using request = std::variant<identify, heartbeat, send, ack, history>;

struct client_frame {
  std::string ref;
  request req;
};

struct decode_error {
  error_code code;
  std::string message;
  std::string ref; ///< the request's ref when it could be read
};

/// Decodes one text frame. Never throws for bad input.
std::variant<client_frame, decode_error> decode(std::string_view text);

// ---- server frames

struct delivered_message {
  uint64_t inbox_seq;
  conversation_id conversation;
  uint64_t seq;
  message_id id;
  user_id from;
  std::string_view nonce;
  std::string_view body;
};

struct history_entry {
  uint64_t seq;
  message_id id;
  user_id from;
  std::string body;
};

std::string encode_hello(uint32_t heartbeat_ms, std::string_view node);
/// `last_inbox_seq`: the user's newest inbox position; `resume_from`: the position the replay
/// that follows starts after (the device's position from now on).
std::string encode_ready(std::string_view ref, user_id user, std::string_view device, uint64_t last_inbox_seq,
                         uint64_t resume_from);
std::string encode_heartbeat_ack(std::string_view ref);
/// `inbox_seq`: the message's position in the sender's inbox, for the session that sent it (it
/// gets no deliver of its own message); 0 leaves the field out (a retry's answer).
std::string encode_stored(std::string_view ref, conversation_id conv, uint64_t seq, message_id id, std::string_view nonce,
                          uint64_t inbox_seq = 0);
std::string encode_deliver(const delivered_message& m);
std::string encode_history(std::string_view ref, conversation_id conv, const std::vector<history_entry>& entries, bool more);
std::string encode_error(std::string_view ref, error_code code, std::string_view message);

} // namespace agner::chat::proto
