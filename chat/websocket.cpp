#include "chat/websocket.hpp"

#include <openssl/evp.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

namespace agner::chat::ws {

namespace {

constexpr std::string_view accept_guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

char lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size())
    return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i]))
      return false;
  return true;
}

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

// Calls f(item) for each comma-separated item of a header value, trimmed, empty ones skipped.
template <class F>
void for_each_item(std::string_view list, char sep, F&& f) {
  while (!list.empty()) {
    auto at = list.find(sep);
    auto item = trim(list.substr(0, at));
    if (!item.empty())
      f(item);
    if (at == std::string_view::npos)
      break;
    list.remove_prefix(at + 1);
  }
}

bool has_token(std::string_view list, std::string_view token) {
  bool found = false;
  for_each_item(list, ',', [&](std::string_view item) { found = found || iequals(item, token); });
  return found;
}

// One permessage-deflate offer we can accept: the server window it allows, if it limits it.
// No context takeover is our choice for both directions whatever the offer says (RFC 7692
// 7.1.1: the server may always add both parameters).
struct deflate_offer {
  int server_bits = 15;     // the largest window the server may compress with
  bool limited = false;     // the client named it (server_max_window_bits): echo it back
};
std::optional<deflate_offer> acceptable_deflate_offer(std::string_view offer) {
  bool first = true, ok = true, seen_server_bits = false, seen_client_bits = false;
  bool seen_snct = false, seen_cnct = false;
  int server_bits = 15;
  for_each_item(offer, ';', [&](std::string_view param) {
    if (first) {
      first = false;
      ok = iequals(param, "permessage-deflate");
      return;
    }
    auto eq = param.find('=');
    auto name = trim(param.substr(0, eq));
    std::string_view value = eq == std::string_view::npos ? std::string_view{} : trim(param.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
      value = value.substr(1, value.size() - 2);
    auto bits = [&](bool required) -> std::optional<int> {
      if (value.empty())
        return required ? std::nullopt : std::optional<int>(15);
      if (value.size() > 2 || !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return std::nullopt;
      int v = std::stoi(std::string(value));
      if (v < 8 || v > 15)
        return std::nullopt;
      return v;
    };
    if (iequals(name, "server_no_context_takeover") && value.empty() && !seen_snct) {
      seen_snct = true;
    } else if (iequals(name, "client_no_context_takeover") && value.empty() && !seen_cnct) {
      seen_cnct = true;
    } else if (iequals(name, "server_max_window_bits") && !seen_server_bits) {
      seen_server_bits = true;
      auto b = bits(true);
      // zlib cannot make a raw deflate stream with an 8-bit window: decline such an offer.
      if (!b || *b < 9)
        ok = false;
      else
        server_bits = *b;
    } else if (iequals(name, "client_max_window_bits") && !seen_client_bits) {
      seen_client_bits = true;
      if (!bits(false))
        ok = false;
    } else {
      ok = false; // unknown or repeated parameter: decline this offer
    }
  });
  if (!ok || first)
    return std::nullopt;
  return deflate_offer{server_bits, seen_server_bits};
}

std::string http_error(unsigned status, std::string_view reason, std::string_view why, std::string_view extra) {
  return fmt::format("HTTP/1.1 {} {}\r\nConnection: close\r\nContent-Type: text/plain\r\n{}Content-Length: {}\r\n\r\n{}\n",
                     status, reason, extra, why.size() + 1, why);
}

} // namespace

// -- handshake ---------------------------------------------------------------------------------

std::string accept_key(std::string_view client_key) {
  std::string input;
  input.reserve(client_key.size() + accept_guid.size());
  input.append(client_key).append(accept_guid);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(input.data(), input.size(), digest, &len, EVP_sha1(), nullptr) != 1)
    throw std::runtime_error("SHA-1 failed");
  std::string out(4 * ((len + 2) / 3), '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), digest, static_cast<int>(len));
  out.resize(static_cast<size_t>(n));
  return out;
}

upgrade_answer answer_upgrade(const upgrade_request& r, std::string_view subprotocol, bool allow_deflate,
                              std::string_view server_name) {
  upgrade_answer a;
  auto fail = [&](unsigned status, std::string_view reason, std::string_view why, std::string_view extra = {}) {
    a.status = status;
    a.response = http_error(status, reason, why, extra);
    return a;
  };
  if (r.method != "GET")
    return fail(400, "Bad Request", "a WebSocket upgrade must be a GET");
  if (!has_token(r.upgrade, "websocket"))
    return fail(400, "Bad Request", "Upgrade: websocket is missing");
  if (!has_token(r.connection, "upgrade"))
    return fail(400, "Bad Request", "Connection: upgrade is missing");
  if (trim(r.version) != "13")
    return fail(426, "Upgrade Required", "only WebSocket version 13 is supported", "Sec-WebSocket-Version: 13\r\n");
  // The key is 16 random bytes in base64: 24 characters ending in "==".
  auto key = trim(r.key);
  if (key.size() != 24 || key.substr(22) != "==")
    return fail(400, "Bad Request", "Sec-WebSocket-Key is missing or malformed");

  bool echo_protocol = false;
  for_each_item(r.protocols, ',', [&](std::string_view p) { echo_protocol = echo_protocol || p == subprotocol; });
  std::string extension;
  if (allow_deflate) {
    for_each_item(r.extensions, ',', [&](std::string_view offer) {
      if (a.deflate)
        return;
      if (auto o = acceptable_deflate_offer(offer)) {
        a.deflate = true;
        a.deflate_window_bits = o->server_bits;
        extension = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        if (o->limited)
          extension += fmt::format("; server_max_window_bits={}", o->server_bits);
      }
    });
  }
  a.response = fmt::format("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Accept: {}\r\nServer: {}\r\n",
                           accept_key(key), server_name);
  if (echo_protocol)
    a.response += fmt::format("Sec-WebSocket-Protocol: {}\r\n", subprotocol);
  if (a.deflate)
    a.response += fmt::format("Sec-WebSocket-Extensions: {}\r\n", extension);
  a.response += "\r\n";
  return a;
}

// -- UTF-8 ---------------------------------------------------------------------------------------

bool valid_utf8(std::string_view s) noexcept {
  auto p = reinterpret_cast<const unsigned char*>(s.data());
  auto end = p + s.size();
  while (p < end) {
    // ASCII runs, eight bytes at a time.
    while (end - p >= 8) {
      uint64_t w;
      std::memcpy(&w, p, 8);
      if (w & 0x8080808080808080ULL)
        break;
      p += 8;
    }
    if (p == end)
      break;
    unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    size_t need;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      need = 1;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      need = 2;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      need = 3;
      cp = c & 0x07;
    } else {
      return false; // a continuation byte, an overlong 2-byte lead (C0, C1) or above F4
    }
    if (static_cast<size_t>(end - p) <= need)
      return false;
    for (size_t i = 1; i <= need; ++i) {
      if ((p[i] & 0xC0) != 0x80)
        return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false; // overlong, beyond Unicode, or a surrogate
    p += need + 1;
  }
  return true;
}

// -- writing -------------------------------------------------------------------------------------

frame_header make_header(opcode op, size_t n, bool compressed) noexcept {
  frame_header h;
  h.bytes[0] = static_cast<char>(0x80 | (compressed ? 0x40 : 0) | static_cast<uint8_t>(op));
  if (n < 126) {
    h.bytes[1] = static_cast<char>(n);
    h.size = 2;
  } else if (n <= 0xFFFF) {
    h.bytes[1] = 126;
    h.bytes[2] = static_cast<char>(n >> 8);
    h.bytes[3] = static_cast<char>(n);
    h.size = 4;
  } else {
    h.bytes[1] = 127;
    for (int i = 0; i < 8; ++i)
      h.bytes[2 + i] = static_cast<char>(static_cast<uint64_t>(n) >> (56 - 8 * i));
    h.size = 10;
  }
  return h;
}

void append_frame(std::string& out, opcode op, std::string_view payload, bool compressed) {
  auto h = make_header(op, payload.size(), compressed);
  out.append(h.bytes, h.size).append(payload);
}

void append_close(std::string& out, uint16_t code, std::string_view reason) {
  if (code == close_no_status)
    return append_frame(out, opcode::close, {});
  // A control payload is at most 125 bytes: the code, then the reason cut on a character boundary.
  reason = reason.substr(0, 123);
  while (!reason.empty() && !valid_utf8(reason))
    reason.remove_suffix(1);
  char payload[125];
  payload[0] = static_cast<char>(code >> 8);
  payload[1] = static_cast<char>(code);
  std::memcpy(payload + 2, reason.data(), reason.size());
  append_frame(out, opcode::close, std::string_view(payload, 2 + reason.size()));
}

// -- the client side -----------------------------------------------------------------------------

void append_client_frame(std::string& out, opcode op, std::string_view payload, uint32_t mask_key) {
  char h[14];
  auto sh = make_header(op, payload.size());
  std::memcpy(h, sh.bytes, sh.size);
  h[1] = static_cast<char>(h[1] | 0x80); // masked
  char mask[4];
  std::memcpy(mask, &mask_key, 4);
  std::memcpy(h + sh.size, mask, 4);
  size_t head = sh.size + 4;
  size_t at = out.size();
  out.resize(at + head + payload.size());
  std::memcpy(out.data() + at, h, head);
  char* p = out.data() + at + head;
  for (size_t i = 0; i < payload.size(); ++i)
    p[i] = static_cast<char>(payload[i] ^ mask[i & 3]);
}

std::string client_upgrade_request(std::string_view host, std::string_view path, std::string_view subprotocol) {
  return fmt::format("GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{}\r\n",
                     path, host, subprotocol.empty() ? std::string() : fmt::format("Sec-WebSocket-Protocol: {}\r\n", subprotocol));
}

unsigned response_status(std::string_view head) noexcept {
  if (head.size() < 12 || head.substr(0, 9) != "HTTP/1.1 ")
    return 0;
  unsigned code = 0;
  for (size_t i = 9; i < 12; ++i) {
    if (head[i] < '0' || head[i] > '9')
      return 0;
    code = code * 10 + static_cast<unsigned>(head[i] - '0');
  }
  return code;
}

// -- permessage-deflate --------------------------------------------------------------------------

struct deflate_codec::state {
  z_stream in{};
  bool in_ready = false;
  std::array<z_stream, 16> out{}; // by window bits, created on first use
  std::array<bool, 16> out_ready{};
  ~state() {
    if (in_ready)
      inflateEnd(&in);
    for (int b = 0; b < 16; ++b)
      if (out_ready[b])
        deflateEnd(&out[b]);
  }
};

deflate_codec::deflate_codec() : s_(std::make_unique<state>()) {}
deflate_codec::~deflate_codec() = default;

deflate_codec& deflate_codec::for_this_thread() {
  thread_local deflate_codec codec;
  return codec;
}

deflate_codec::inflate_result deflate_codec::inflate(std::string_view payload, std::string& out, size_t max) {
  auto& z = s_->in;
  if (!s_->in_ready) {
    if (inflateInit2(&z, -15) != Z_OK) // raw deflate; a 32 KiB window reads any client window
      throw std::runtime_error("zlib inflateInit2 failed");
    s_->in_ready = true;
  } else {
    inflateReset(&z); // no context takeover: every message starts afresh
  }
  // RFC 7692 7.2.2: the sender removed the final empty block's 00 00 FF FF; put it back.
  static const unsigned char tail[4] = {0x00, 0x00, 0xFF, 0xFF};
  out.clear();
  char chunk[16 * 1024];
  for (int part = 0; part < 2; ++part) {
    z.next_in = part == 0 ? reinterpret_cast<Bytef*>(const_cast<char*>(payload.data())) : const_cast<Bytef*>(tail);
    z.avail_in = part == 0 ? static_cast<uInt>(payload.size()) : 4;
    do {
      z.next_out = reinterpret_cast<Bytef*>(chunk);
      z.avail_out = sizeof chunk;
      int rc = ::inflate(&z, Z_SYNC_FLUSH);
      if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
        return inflate_result::corrupt;
      size_t got = sizeof chunk - z.avail_out;
      if (out.size() + got > max)
        return inflate_result::too_big; // a decompression bomb stops here, bounded by max
      out.append(chunk, got);
      if (rc == Z_STREAM_END || (rc == Z_BUF_ERROR && got == 0))
        break;
    } while (z.avail_in > 0 || z.avail_out == 0);
  }
  return inflate_result::ok;
}

void deflate_codec::deflate(std::string_view in, std::string& out, int window_bits) {
  window_bits = std::clamp(window_bits, 9, 15);
  auto& z = s_->out[window_bits];
  if (!s_->out_ready[window_bits]) {
    // Level 1: chat frames are small and latency matters more than the last few percent.
    if (deflateInit2(&z, 1, Z_DEFLATED, -window_bits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
      throw std::runtime_error("zlib deflateInit2 failed");
    s_->out_ready[window_bits] = true;
  } else {
    deflateReset(&z);
  }
  out.resize(deflateBound(&z, static_cast<uLong>(in.size())) + 16);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  size_t done = 0;
  for (;;) {
    z.next_out = reinterpret_cast<Bytef*>(out.data() + done);
    z.avail_out = static_cast<uInt>(out.size() - done);
    int rc = ::deflate(&z, Z_SYNC_FLUSH);
    if (rc != Z_OK && rc != Z_BUF_ERROR)
      throw std::runtime_error("zlib deflate failed");
    done = out.size() - z.avail_out;
    if (z.avail_out != 0)
      break; // all input taken and the flush complete
    // The bound was short: give zlib more room and go on (messages are far below 1 GiB).
    size_t grown = out.size() + out.size() / 2 + 64;
    if (grown > (size_t{1} << 30))
      throw std::length_error("deflate output too large");
    out.resize(grown);
  }
  out.erase(done); // done <= size (erase, not resize: g++ 12 -O3 warns on the latter)
  // Z_SYNC_FLUSH ends with an empty stored block, 00 00 FF FF, which the receiver adds back.
  if (out.size() >= 4 && std::memcmp(out.data() + out.size() - 4, "\x00\x00\xff\xff", 4) == 0)
    out.resize(out.size() - 4);
}

// -- reading -------------------------------------------------------------------------------------

namespace {

void unmask(char* p, size_t n, const unsigned char key[4]) noexcept {
  uint32_t k32;
  std::memcpy(&k32, key, 4);
  uint64_t k64 = (uint64_t{k32} << 32) | k32;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    w ^= k64;
    std::memcpy(p + i, &w, 8);
  }
  for (; i < n; ++i)
    p[i] = static_cast<char>(p[i] ^ key[i & 3]);
}

bool valid_close_code(uint16_t c) noexcept {
  if (c >= 3000 && c <= 4999)
    return true;
  return c >= 1000 && c <= 1011 && c != 1004 && c != 1005 && c != 1006;
}

} // namespace

size_t frame_reader::parse_impl(char* data, size_t n, sink on, void* ctx) {
  size_t pos = 0;
  auto fail = [&](uint16_t code, std::string_view why) {
    failed_ = true;
    event e{};
    e.kind = event::error;
    e.code = code;
    e.payload = why;
    on(ctx, e);
  };
  while (!failed_ && n - pos >= 2) {
    auto b0 = static_cast<uint8_t>(data[pos]);
    auto b1 = static_cast<uint8_t>(data[pos + 1]);
    bool fin = b0 & 0x80;
    uint8_t rsv = (b0 >> 4) & 0x7;
    auto op = static_cast<opcode>(b0 & 0x0F);
    uint64_t len = 0;
    size_t head = decode_payload_length(data + pos, n - pos, len);
    if (head == 0)
      break;
    // Everything a header alone decides is checked before waiting for the payload, so a bad or
    // oversized frame is refused without buffering it.
    if (!(b1 & 0x80))
      return fail(close_protocol_error, "client frames must be masked"), pos;
    bool control = static_cast<uint8_t>(op) & 0x8;
    if (control) {
      if (op != opcode::close && op != opcode::ping && op != opcode::pong)
        return fail(close_protocol_error, "unknown opcode"), pos;
      if (!fin || len > 125)
        return fail(close_protocol_error, "control frames must be whole and at most 125 bytes"), pos;
      if (rsv)
        return fail(close_protocol_error, "reserved bits set on a control frame"), pos;
    } else {
      if (op != opcode::continuation && op != opcode::text && op != opcode::binary)
        return fail(close_protocol_error, "unknown opcode"), pos;
      if (op == opcode::continuation) {
        if (!in_message_)
          return fail(close_protocol_error, "continuation frame outside a message"), pos;
        if (rsv)
          return fail(close_protocol_error, "reserved bits set on a continuation frame"), pos;
      } else {
        if (in_message_)
          return fail(close_protocol_error, "a new message inside a fragmented one"), pos;
        if ((rsv & 0x3) || ((rsv & 0x4) && !deflate_))
          return fail(close_protocol_error, "reserved bits set without an extension that defines them"), pos;
      }
      if (len > max_ || buffered() + len > max_)
        return fail(close_too_big, "message too big"), pos;
    }
    head += 4; // the masking key
    if (n - pos < head + len)
      break; // wait for the rest of this frame
    unsigned char key[4];
    std::memcpy(key, data + pos + head - 4, 4);
    char* payload = data + pos + head;
    auto size = static_cast<size_t>(len);
    unmask(payload, size, key);
    pos += head + size;
    std::string_view body(payload, size);

    if (control) {
      event e{};
      e.kind = op == opcode::close ? event::close : op == opcode::ping ? event::ping : event::pong;
      e.payload = body;
      if (op == opcode::close) {
        e.code = close_no_status;
        e.payload = {};
        if (size == 1)
          return fail(close_protocol_error, "a close frame with a 1-byte payload"), pos;
        if (size >= 2) {
          e.code = static_cast<uint16_t>((static_cast<uint8_t>(payload[0]) << 8) | static_cast<uint8_t>(payload[1]));
          e.payload = body.substr(2);
          if (!valid_close_code(e.code))
            return fail(close_protocol_error, "invalid close code"), pos;
          if (!valid_utf8(e.payload))
            return fail(close_invalid_payload, "close reason is not UTF-8"), pos;
        }
      }
      on(ctx, e);
      continue;
    }
    if (op != opcode::continuation) {
      op_ = op;
      compressed_ = rsv & 0x4;
    }
    event e{};
    e.kind = event::message;
    e.op = op_;
    e.compressed = compressed_;
    if (fin && !in_message_) {
      e.payload = body; // the common case: one frame, reported in place
      on(ctx, e);
      continue;
    }
    if (!fragments_)
      fragments_ = std::make_unique<std::string>();
    fragments_->append(body);
    in_message_ = !fin;
    if (fin) {
      e.payload = *fragments_;
      on(ctx, e);
      fragments_.reset(); // an idle connection keeps no message buffer
    }
  }
  return pos;
}

} // namespace agner::chat::ws
