// JSON and text renderings of an accounting result. Written with fmt: every value is a number, a
// bool or a string from a fixed set, so no JSON library is needed (the tests parse the output
// with Boost.JSON to prove it is valid).
#include "loadgen/report.hpp"

#include <fmt/format.h>

namespace agner::loadgen {
namespace {

/// The quantiles every latency is reported at.
constexpr double quantiles[] = {0.5, 0.99, 0.999};
constexpr const char* quantile_names[] = {"p50", "p99", "p999"};

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\')
      out += fmt::format("\\{}", c);
    else if (u < 0x20)
      out += fmt::format("\\u{:04x}", u);
    else
      out += c;
  }
  return out + "\"";
}

std::string json_latency(const latency_histogram& h) {
  std::string out = fmt::format("{{\"count\":{},\"mean_ns\":{}", h.count(), h.count() ? h.sum() / h.count() : 0);
  for (size_t i = 0; i < std::size(quantiles); ++i)
    out += fmt::format(",\"{}_ns\":{}", quantile_names[i], h.quantile(quantiles[i]));
  return out + "}";
}

std::string json_findings(const std::vector<finding>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i)
    out += fmt::format("{}{{\"sender\":{},\"nonce\":{},\"user\":{},\"device\":{}}}", i ? "," : "", v[i].sender,
                       v[i].nonce, v[i].owner, v[i].device);
  return out + "]";
}

double ms(uint64_t ns) { return static_cast<double>(ns) / 1e6; }

} // namespace

std::string to_json(const accounting_result& r, const run_info& run) {
  std::string out = "{";
  out += fmt::format("\"run\":{{\"preset\":{},\"phones\":{},\"seed\":{},\"workers\":{},\"duration_s\":{},"
                     "\"drained\":{},\"strict\":{}}},",
                     json_string(run.preset), run.phones, run.seed, run.workers, run.duration_s, run.drained,
                     run.strict);
  if (!run.transport.empty()) {
    out.pop_back(); // the run object's closing brace and comma, to add the transport inside
    out.pop_back();
    out += fmt::format(",\"transport\":{}}},", json_string(run.transport));
  }
  if (!run.load_json.empty())
    out += fmt::format("\"load\":{},", run.load_json);
  out += fmt::format("\"messages\":{{\"sent\":{},\"retries\":{},\"stored\":{},\"unacked\":{},\"delivered_unacked\":{},"
                     "\"stored_without_send\":{},\"deliveries\":{},\"reads\":{}}},",
                     r.messages_sent, r.send_retries, r.messages_stored, r.messages_unacked, r.delivered_unacked,
                     r.stored_without_send, r.deliveries, r.reads);
  out += fmt::format("\"lost\":{{\"messages\":{},\"deliveries\":{},\"unverified_deliveries\":{},\"examples\":{}}},",
                     r.lost_messages, r.lost_deliveries, r.unverified_deliveries, json_findings(r.lost_examples));
  out += fmt::format("\"unexpected\":{{\"messages\":{},\"deliveries\":{},\"misdirected\":{},\"examples\":{}}},",
                     r.unexpected_messages, r.unexpected_deliveries, r.misdirected_deliveries,
                     json_findings(r.unexpected_examples));
  out += fmt::format("\"duplicates\":{{\"deliveries\":{},\"replayed\":{},\"examples\":{}}},", r.duplicates,
                     r.duplicates_replayed, json_findings(r.duplicate_examples));
  out += fmt::format("\"order_violations\":{{\"deliveries\":{},\"examples\":{}}},", r.order_violations,
                     json_findings(r.order_examples));
  out += fmt::format("\"nonce_conflicts\":{},", r.nonce_conflicts);
  out += fmt::format("\"latency\":{{\"send_to_stored\":{},\"send_to_delivered\":{}}},", json_latency(r.send_to_stored),
                     json_latency(r.send_to_delivered));
  out += fmt::format("\"violations\":{},\"exit_code\":{}", r.violations(run.strict), exit_code(r, run));
  return out + "}";
}

std::string summary(const accounting_result& r, const run_info& run) {
  std::string out = fmt::format("agner-loadgen: {} phones, preset {}, seed {}, {}{} worker(s), {:.0f} s{}\n", run.phones,
                                run.preset, run.seed, run.transport.empty() ? "" : run.transport + ", ", run.workers,
                                run.duration_s, run.drained ? ", drained" : "");
  out += fmt::format("  messages   {} sent ({} retries), {} stored, {} never acked ({} of them delivered)\n",
                     r.messages_sent, r.send_retries, r.messages_stored, r.messages_unacked, r.delivered_unacked);
  out += fmt::format("  deliveries {} ({} reads)\n", r.deliveries, r.reads);
  auto line = [&](const char* name, const latency_histogram& h) {
    out += fmt::format("  {:<18} n={} p50={:.3f} ms p99={:.3f} ms p999={:.3f} ms\n", name, h.count(),
                       ms(h.quantile(0.5)), ms(h.quantile(0.99)), ms(h.quantile(0.999)));
  };
  line("send->stored", r.send_to_stored);
  line("send->delivered", r.send_to_delivered);
  out += fmt::format("  lost       {} messages, {} deliveries ({} unverified: device never came back)\n",
                     r.lost_messages, r.lost_deliveries, r.unverified_deliveries);
  out += fmt::format("  unexpected {} messages, {} deliveries ({} misdirected)\n", r.unexpected_messages,
                     r.unexpected_deliveries, r.misdirected_deliveries);
  out += fmt::format("  duplicates {} ({} replayed entries), order violations {}, nonce conflicts {}\n", r.duplicates,
                     r.duplicates_replayed, r.order_violations, r.nonce_conflicts);
  if (!run.drained && r.unverified_deliveries > 0)
    out += "  note: no drain phase, so deliveries to devices that stayed away are unverified, not judged\n";
  auto examples = [&](const char* name, const std::vector<finding>& v) {
    for (const auto& f : v)
      out += fmt::format("  {} sender={} nonce={} user={} device={}\n", name, f.sender, f.nonce, f.owner, f.device);
  };
  examples("lost:", r.lost_examples);
  examples("unexpected:", r.unexpected_examples);
  uint64_t v = r.violations(run.strict);
  out += v == 0 ? std::string("  verdict    OK\n")
                : fmt::format("  verdict    {} VIOLATION(S){}\n", v, run.strict ? " (strict)" : "");
  return out;
}

int exit_code(const accounting_result& r, const run_info& run) noexcept {
  return r.violations(run.strict) == 0 ? exit_ok : exit_violations;
}

} // namespace agner::loadgen
