// The WebSocket protocol (RFC 6455) as the gateway speaks it, server side, without Beast's
// websocket::stream: the answer to an upgrade request, an incremental reader of client frames,
// the writer of server frames, UTF-8 validation, and permessage-deflate (RFC 7692) with no
// context takeover in either direction, so one codec per I/O thread serves all its connections
// and an idle connection holds no compression state. Pure functions and small classes: no
// sockets here (chat/gateway.cpp owns the I/O). See docs/ARCHITECTURE.md, "The gateway".
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace agner::chat::ws {

enum class opcode : uint8_t { continuation = 0x0, text = 0x1, binary = 0x2, close = 0x8, ping = 0x9, pong = 0xA };

/// Close codes of RFC 6455 that the framing layer itself sends.
inline constexpr uint16_t close_normal = 1000;
inline constexpr uint16_t close_protocol_error = 1002;
inline constexpr uint16_t close_no_status = 1005; ///< received as "no code"; never sent
inline constexpr uint16_t close_invalid_payload = 1007;
inline constexpr uint16_t close_too_big = 1009;

/// The Sec-WebSocket-Accept value for a client's Sec-WebSocket-Key.
std::string accept_key(std::string_view client_key);

/// True if `s` is well-formed UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool valid_utf8(std::string_view s) noexcept;

/// The parts of an upgrade request the answer depends on (header values as received).
struct upgrade_request {
  std::string_view method, upgrade, connection, version, key, protocols, extensions;
};

/// What the server answers an upgrade request with.
struct upgrade_answer {
  unsigned status = 101;   ///< 101, or 400 / 426 (then `response` explains and the connection ends)
  std::string response;    ///< the whole HTTP response head to write
  bool deflate = false;    ///< permessage-deflate negotiated (no context takeover either way)
  int deflate_window_bits = 15; ///< the window the server may compress with
};

/// Validates an upgrade request and builds the response. `subprotocol` is echoed if the client
/// lists it; permessage-deflate is accepted if `allow_deflate` and the client offers it with
/// parameters we can honour.
upgrade_answer answer_upgrade(const upgrade_request& r, std::string_view subprotocol, bool allow_deflate,
                              std::string_view server_name);

/// Decodes the payload length of the frame starting at `p` (`avail` bytes there, at least 2):
/// the 7-bit form, or the 16- or 64-bit extended one. Returns the header's size up to the mask
/// key (2, 4 or 10 bytes), or 0 if the extended length has not fully arrived.
inline size_t decode_payload_length(const char* p, size_t avail, uint64_t& len) noexcept {
  len = static_cast<uint8_t>(p[1]) & 0x7F;
  if (len < 126)
    return 2;
  size_t head = len == 126 ? 4 : 10;
  if (avail < head)
    return 0;
  len = 0;
  for (size_t i = 2; i < head; ++i)
    len = (len << 8) | static_cast<uint8_t>(p[i]);
  return head;
}

/// The bytes of one server frame header (FIN set, unmasked): 2, 4 or 10 bytes.
struct frame_header {
  char bytes[10];
  size_t size = 0;
};
frame_header make_header(opcode op, size_t payload_bytes, bool compressed = false) noexcept;

/// Appends one whole server frame (FIN set, unmasked).
void append_frame(std::string& out, opcode op, std::string_view payload, bool compressed = false);

/// Appends a close frame; `code` 1005 means "no code" (an empty payload). The reason is cut to fit.
void append_close(std::string& out, uint16_t code, std::string_view reason);

// The client side, for agner's own clients (the load generator's WebSocket transport and the
// benchmark's load client): masked frames, the upgrade request, and a reader of server frames.

/// Appends one whole client frame (FIN set), its payload masked with `mask_key` (RFC 6455 5.3).
void append_client_frame(std::string& out, opcode op, std::string_view payload, uint32_t mask_key);

/// A client's upgrade request for `path` on `host` (with a fixed key: agner's clients check only
/// the 101); offers `subprotocol` unless it is empty.
std::string client_upgrade_request(std::string_view host, std::string_view path, std::string_view subprotocol);

/// The status code of an HTTP/1.1 response head; 0 if it does not start like one.
unsigned response_status(std::string_view head) noexcept;

/// One frame from a server, as a client reads it.
struct server_frame {
  opcode op;
  bool fin;
  std::string_view payload;
};

/// Returned by parse_server_frames for a frame no server may send.
inline constexpr size_t bad_server_frame = static_cast<size_t>(-1);

/// Calls `on(const server_frame&)` for each whole frame in [data, data + n), until `on` returns
/// false. Returns the bytes of the frames handed on (the caller keeps the rest for later), or
/// `bad_server_frame` if a frame is masked or longer than `max`.
template <class F>
size_t parse_server_frames(const char* data, size_t n, uint64_t max, F&& on) {
  size_t at = 0;
  while (n - at >= 2) {
    if (static_cast<uint8_t>(data[at + 1]) & 0x80)
      return bad_server_frame;
    uint64_t len = 0;
    size_t head = decode_payload_length(data + at, n - at, len);
    if (head == 0)
      break;
    if (len > max)
      return bad_server_frame;
    if (n - at - head < len)
      break;
    auto b0 = static_cast<uint8_t>(data[at]);
    server_frame f{static_cast<opcode>(b0 & 0x0F), (b0 & 0x80) != 0, std::string_view(data + at + head, len)};
    at += head + len;
    if (!on(f))
      break;
  }
  return at;
}

/// permessage-deflate with no context takeover: every message is compressed and decompressed on
/// its own, so one codec per thread serves every connection of that thread, and its memory
/// (zlib's window and tables, a few hundred KiB) is per thread, not per connection.
class deflate_codec {
public:
  deflate_codec();
  ~deflate_codec();
  deflate_codec(const deflate_codec&) = delete;
  deflate_codec& operator=(const deflate_codec&) = delete;

  enum class inflate_result { ok, too_big, corrupt };
  /// Decompresses one message's payload into `out` (replacing it), at most `max` bytes.
  inflate_result inflate(std::string_view payload, std::string& out, size_t max);
  /// Compresses one message into `out` (replacing it) with a window of 2^window_bits (9..15).
  void deflate(std::string_view in, std::string& out, int window_bits);

  /// The calling thread's codec (created on first use).
  static deflate_codec& for_this_thread();

private:
  struct state;
  std::unique_ptr<state> s_;
};

/// Incremental reader of client frames: feed it whatever the socket gave, it reports whole
/// messages (fragments joined), control frames and protocol errors. A single-frame message is
/// reported in place (unmasked in the caller's buffer, no copy); only a fragmented message is
/// copied into the reader.
class frame_reader {
public:
  struct event {
    enum kind_t : uint8_t { message, ping, pong, close, error } kind = message;
    opcode op = opcode::text;  ///< message: text or binary
    bool compressed = false;   ///< message: RSV1 was set on its first frame (permessage-deflate)
    uint16_t code = 0;         ///< close: the peer's code (1005 if none); error: the code to close with
    std::string_view payload;  ///< message, ping, pong: the payload; close: the reason; error: why.
                               ///< Valid until the next call to parse.
  };

  /// `message_max`: the largest message (all fragments together, before decompression) a client
  /// may send; a frame that would exceed it is an error (1009) as soon as its header arrives.
  /// `deflate`: permessage-deflate was negotiated, so RSV1 may be set on a message's first frame.
  frame_reader(uint32_t message_max, bool deflate) noexcept : max_(message_max), deflate_(deflate) {}

  /// Parses the frames that are complete in [data, data + n), unmasking them in place, and calls
  /// `on(const event&)` for each message, control frame or the first error (after which it stops
  /// and `failed()` is true). Returns the bytes consumed; the caller presents the rest again,
  /// followed by more bytes.
  template <class F>
  size_t parse(char* data, size_t n, F&& on) {
    return parse_impl(data, n, [](void* f, const event& e) { (*static_cast<F*>(f))(e); }, &on);
  }

  bool failed() const noexcept { return failed_; }
  /// Bytes held for a fragmented message still arriving (0 when idle).
  size_t buffered() const noexcept { return fragments_ ? fragments_->size() : 0; }

private:
  using sink = void (*)(void*, const event&);
  size_t parse_impl(char* data, size_t n, sink on, void* ctx);

  uint32_t max_;
  bool deflate_;
  bool failed_ = false;
  bool in_message_ = false; ///< a fragmented message has started and not finished
  bool compressed_ = false; ///< of the message in progress
  opcode op_ = opcode::text; ///< of the message in progress
  /// The fragmented message so far; allocated only while one arrives (every connection has a
  /// reader, few ever fragment).
  std::unique_ptr<std::string> fragments_;
};

} // namespace agner::chat::ws
