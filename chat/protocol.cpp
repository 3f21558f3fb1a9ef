// JSON decoding with Boost.JSON (strict: no comments, no trailing commas, depth-limited) and
// encoding by hand with fmt (server frames have a fixed shape; this is the per-message hot path).
#include "chat/protocol.hpp"

#include "runtime/log.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <fmt/format.h>

namespace agner::chat::proto {

namespace json = boost::json;

std::string_view to_string(error_code c) noexcept {
  switch (c) {
    case error_code::bad_json: return "bad_json";
    case error_code::unknown_op: return "unknown_op";
    case error_code::bad_request: return "bad_request";
    case error_code::not_identified: return "not_identified";
    case error_code::auth_failed: return "auth_failed";
    case error_code::already_identified: return "already_identified";
    case error_code::rate_limited: return "rate_limited";
    case error_code::forbidden: return "forbidden";
    case error_code::not_found: return "not_found";
    case error_code::resume_too_old: return "resume_too_old";
    case error_code::unavailable: return "unavailable";
    case error_code::internal: return "internal";
  }
  return "internal";
}

namespace {

/// Reads typed fields out of a JSON object, remembering the first problem.
class fields {
public:
  explicit fields(const json::object& o) : o_(o) {}

  std::optional<std::string> str(std::string_view key, size_t max_bytes, bool required) {
    auto* v = o_.if_contains(key);
    if (!v) {
      if (required)
        fail(fmt::format("'{}' is required", key));
      return std::nullopt;
    }
    if (!v->is_string())
      return fail(fmt::format("'{}' must be a string", key)), std::nullopt;
    auto& s = v->get_string();
    if (s.size() > max_bytes)
      return fail(fmt::format("'{}' is longer than {} bytes", key, max_bytes)), std::nullopt;
    return std::string(s.data(), s.size());
  }

  /// An id: a decimal string (preferred, JSON numbers lose precision above 2^53) or a
  /// non-negative integer.
  std::optional<uint64_t> id(std::string_view key, bool required) {
    auto* v = o_.if_contains(key);
    if (!v) {
      if (required)
        fail(fmt::format("'{}' is required", key));
      return std::nullopt;
    }
    if (v->is_string()) {
      if (auto r = parse_id(v->get_string()))
        return r;
    } else if (v->is_uint64()) {
      return v->get_uint64();
    } else if (v->is_int64() && v->get_int64() >= 0) {
      return static_cast<uint64_t>(v->get_int64());
    }
    fail(fmt::format("'{}' must be a non-negative integer as a decimal string", key));
    return std::nullopt;
  }

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }

private:
  void fail(std::string m) {
    if (error_.empty())
      error_ = std::move(m);
  }
  const json::object& o_;
  std::string error_;
};

} // namespace

std::variant<client_frame, decode_error> decode(std::string_view text) {
  json::parse_options po;
  po.max_depth = 8; // frames are flat; deep nesting is an attack, not a message
  boost::system::error_code ec;
  json::value v = json::parse(json::string_view(text.data(), text.size()), ec, {}, po);
  if (ec || !v.is_object())
    return decode_error{error_code::bad_json, ec ? ec.message() : "a frame must be a JSON object", {}};
  auto& o = v.get_object();
  fields f(o);
  client_frame out;
  if (auto ref = f.str("ref", ref_bytes_max, false))
    out.ref = *ref;
  if (!f.ok())
    return decode_error{error_code::bad_request, f.error(), {}};
  auto* opv = o.if_contains("op");
  if (!opv || !opv->is_string())
    return decode_error{error_code::unknown_op, "'op' must be a string", out.ref};
  std::string_view op = opv->get_string();
  if (op == "identify") {
    identify r;
    r.token = f.str("token", 512, true).value_or("");
    r.device = f.str("device", device_bytes_max, false).value_or("default");
    r.last_inbox_seq = f.id("last_inbox_seq", false);
    out.req = std::move(r);
  } else if (op == "heartbeat") {
    out.req = heartbeat{};
  } else if (op == "send") {
    send r;
    r.to = f.id("to", true).value_or(0);
    r.nonce = f.str("nonce", nonce_bytes_max, true).value_or("");
    r.body = f.str("body", body_bytes_max, true).value_or("");
    if (f.ok() && r.nonce.empty())
      return decode_error{error_code::bad_request, "'nonce' must not be empty", out.ref};
    if (f.ok() && (r.to == 0 || r.to > user_id_max))
      return decode_error{error_code::bad_request, "'to' is not a valid user id", out.ref};
    out.req = std::move(r);
  } else if (op == "ack") {
    out.req = ack{f.id("inbox_seq", true).value_or(0)};
  } else if (op == "history") {
    history r;
    r.conversation = f.id("conversation", true).value_or(0);
    r.before = f.id("before", false);
    r.after = f.id("after", false);
    if (auto* l = o.if_contains("limit")) {
      if (!l->is_int64() || l->get_int64() < 1 || l->get_int64() > history_limit_max)
        return decode_error{error_code::bad_request, fmt::format("'limit' must be an integer in 1..{}", history_limit_max), out.ref};
      r.limit = static_cast<uint32_t>(l->get_int64());
    }
    if (f.ok() && r.before && r.after)
      return decode_error{error_code::bad_request, "give 'before' or 'after', not both", out.ref};
    out.req = std::move(r);
  } else {
    return decode_error{error_code::unknown_op, fmt::format("unknown op '{}'", op.substr(0, 32)), out.ref};
  }
  if (!f.ok())
    return decode_error{error_code::bad_request, f.error(), out.ref};
  return out;
}

namespace {

// Builds one server frame with a single allocation: the frames sent per message (stored,
// deliver) are on the hot path, and a runtime-parsed format string plus a temporary per quoted
// field cost more than the JSON itself.
class frame_builder {
public:
  explicit frame_builder(size_t reserve) { out_.reserve(reserve); }
  frame_builder& raw(std::string_view s) {
    out_ += s;
    return *this;
  }
  frame_builder& number(uint64_t v) {
    fmt::format_int f(v);
    out_.append(f.data(), f.size());
    return *this;
  }
  /// A 64-bit id or counter as a decimal string (JSON numbers lose precision above 2^53).
  frame_builder& id(uint64_t v) { return raw("\"").number(v).raw("\""); }
  frame_builder& string(std::string_view s) {
    out_ += '"';
    log::append_json_escaped(out_, s);
    out_ += '"';
    return *this;
  }
  /// `,"ref":"..."`, or nothing for a frame that answers no request.
  frame_builder& ref(std::string_view r) { return r.empty() ? *this : raw(",\"ref\":").string(r); }
  std::string take() { return std::move(out_); }

private:
  std::string out_;
};

} // namespace

std::string encode_hello(uint32_t heartbeat_ms, std::string_view node) {
  return frame_builder(64 + node.size())
    .raw(R"({"op":"hello","version":)")
    .number(version)
    .raw(R"(,"heartbeat_ms":)")
    .number(heartbeat_ms)
    .raw(R"(,"node":)")
    .string(node)
    .raw("}")
    .take();
}

std::string encode_ready(std::string_view ref, user_id user, std::string_view device, uint64_t last_inbox_seq,
                         uint64_t resume_from) {
  return frame_builder(128 + ref.size() + device.size())
    .raw(R"({"op":"ready")")
    .ref(ref)
    .raw(R"(,"user":)")
    .id(user)
    .raw(R"(,"device":)")
    .string(device)
    .raw(R"(,"inbox_seq":)")
    .id(last_inbox_seq)
    .raw(R"(,"resume_from":)")
    .id(resume_from)
    .raw("}")
    .take();
}

std::string encode_heartbeat_ack(std::string_view ref) {
  return frame_builder(32 + ref.size()).raw(R"({"op":"heartbeat_ack")").ref(ref).raw("}").take();
}

std::string encode_stored(std::string_view ref, conversation_id conv, uint64_t seq, message_id id, std::string_view nonce,
                          uint64_t inbox_seq) {
  frame_builder f(136 + ref.size() + nonce.size());
  f.raw(R"({"op":"stored")")
    .ref(ref)
    .raw(R"(,"conversation":)")
    .id(conv)
    .raw(R"(,"seq":)")
    .id(seq)
    .raw(R"(,"id":)")
    .id(id)
    .raw(R"(,"nonce":)")
    .string(nonce);
  if (inbox_seq != 0)
    f.raw(R"(,"inbox_seq":)").id(inbox_seq);
  return f.raw("}").take();
}

std::string encode_deliver(const delivered_message& m) {
  return frame_builder(160 + m.nonce.size() + m.body.size())
    .raw(R"({"op":"deliver","inbox_seq":)")
    .id(m.inbox_seq)
    .raw(R"(,"conversation":)")
    .id(m.conversation)
    .raw(R"(,"seq":)")
    .id(m.seq)
    .raw(R"(,"id":)")
    .id(m.id)
    .raw(R"(,"from":)")
    .id(m.from)
    .raw(R"(,"nonce":)")
    .string(m.nonce)
    .raw(R"(,"body":)")
    .string(m.body)
    .raw("}")
    .take();
}

std::string encode_history(std::string_view ref, conversation_id conv, const std::vector<history_entry>& entries, bool more) {
  size_t bytes = 64 + ref.size();
  for (auto& e : entries)
    bytes += 80 + e.body.size();
  frame_builder f(bytes);
  f.raw(R"({"op":"history")").ref(ref).raw(R"(,"conversation":)").id(conv);
  f.raw(more ? R"(,"more":true,"messages":[)" : R"(,"more":false,"messages":[)");
  for (size_t i = 0; i < entries.size(); ++i) {
    auto& e = entries[i];
    f.raw(i ? R"(,{"seq":)" : R"({"seq":)").id(e.seq).raw(R"(,"id":)").id(e.id).raw(R"(,"from":)").id(e.from);
    f.raw(R"(,"body":)").string(e.body).raw("}");
  }
  return f.raw("]}").take();
}

std::string encode_error(std::string_view ref, error_code code, std::string_view message) {
  return frame_builder(48 + ref.size() + message.size())
    .raw(R"({"op":"error")")
    .ref(ref)
    .raw(R"(,"code":")")
    .raw(to_string(code))
    .raw(R"(","message":)")
    .string(message)
    .raw("}")
    .take();
}

} // namespace agner::chat::proto
