// What agner-loadgen's parent process and its worker processes exchange, and the small helpers
// both sides use: the setup a parent hands its workers, the progress line a worker prints each
// second, and the records it hands back at the end (loadgen/run.cpp is the parent, loadgen/worker.cpp
// the worker).
#pragma once

#include "loadgen/accounting.hpp"
#include "loadgen/codec.hpp"
#include "loadgen/driver.hpp"
#include "loadgen/timeline.hpp"
#include "loadgen/ws_transport.hpp"

#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace agner::loadgen::wire {

inline sim_ns mono_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  while (!s.empty()) {
    auto i = s.find(sep);
    out.emplace_back(s.substr(0, i));
    if (i == std::string_view::npos)
      break;
    s.remove_prefix(i + 1);
  }
  return out;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error(fmt::format("cannot read {}", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_file(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out)
    throw std::runtime_error(fmt::format("cannot write {}", path));
}

/// One progress line of a worker ("P ..."), or the sum of all workers'.
struct progress {
  uint64_t ready = 0, opening = 0, sent = 0, stored = 0, delivered = 0, errors = 0, closed = 0, outbox = 0, too_old = 0;
  bool drained = false;
  latency_histogram recent;

  std::string line() const {
    std::string h = fmt::format("P {} {} {} {} {} {} {} {} {} {}", ready, opening, sent, stored, delivered, errors, closed,
                                outbox, too_old, drained ? 1 : 0);
    h += ' ';
    records_codec c;
    c.put(recent);
    for (unsigned char ch : c.out)
      fmt::format_to(std::back_inserter(h), "{:02x}", ch);
    return h + "\n";
  }
  static std::optional<progress> parse(std::string_view l) {
    std::istringstream in{std::string(l.substr(2))};
    progress p;
    int d = 0;
    std::string hex;
    if (!(in >> p.ready >> p.opening >> p.sent >> p.stored >> p.delivered >> p.errors >> p.closed >> p.outbox >> p.too_old >> d))
      return std::nullopt;
    in >> hex;
    p.drained = d != 0;
    std::string bytes;
    for (size_t i = 0; i + 1 < hex.size(); i += 2)
      bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    records_codec c;
    c.in = bytes;
    try {
      c.get(p.recent);
    } catch (const std::exception&) {
      return std::nullopt;
    }
    return p;
  }
  void add(const progress& o) {
    ready += o.ready, opening += o.opening, sent += o.sent, stored += o.stored, delivered += o.delivered;
    errors += o.errors, closed += o.closed, outbox += o.outbox, too_old += o.too_old;
    recent.merge(o.recent);
  }
};

inline progress progress_of(driver& d, sim_ns now, sim_ns quiet) {
  auto& s = d.stats();
  progress p{s.ready, s.opening, s.sent, s.stored, s.delivered, s.errors, s.closed, s.outbox, s.resume_too_old,
             d.drained(now, quiet), s.recent_latency};
  s.recent_latency = {};
  return p;
}

/// What a worker hands back at the end.
struct worker_result {
  worker_records records;
  timeline tl;
  uint64_t generator_bytes = 0;

  std::string serialize() const {
    records_codec c;
    auto r = records.serialize();
    auto t = tl.serialize();
    c.u64(r.size());
    c.out += r;
    c.u64(t.size());
    c.out += t;
    c.u64(generator_bytes);
    return std::move(c.out);
  }
  static worker_result deserialize(std::string_view bytes) {
    records_codec c;
    c.in = bytes;
    worker_result w;
    auto n = c.get64();
    c.need(n);
    w.records = worker_records::deserialize(c.in.substr(0, n));
    c.in.remove_prefix(n);
    n = c.get64();
    c.need(n);
    w.tl = timeline::deserialize(c.in.substr(0, n));
    c.in.remove_prefix(n);
    w.generator_bytes = c.get64();
    return w;
  }
};

/// The setup a parent hands its workers: the directory and the nodes with their secrets.
struct worker_setup {
  directory dir;
  std::vector<node_target> nodes;

  std::string serialize() const {
    records_codec c;
    auto d = dir.serialize();
    c.u64(d.size());
    c.out += d;
    c.u64(nodes.size());
    for (auto& n : nodes) {
      c.u64(n.port);
      c.u64(n.host.size());
      c.out += n.host;
      c.u64(n.secret.size());
      c.out += n.secret;
    }
    return std::move(c.out);
  }
  static worker_setup deserialize(std::string_view bytes) {
    records_codec c;
    c.in = bytes;
    worker_setup s;
    auto take = [&](uint64_t n) {
      c.need(n);
      std::string v(c.in.substr(0, n));
      c.in.remove_prefix(n);
      return v;
    };
    s.dir = directory::deserialize(take(c.get64()));
    auto k = c.count();
    for (uint64_t i = 0; i < k; ++i) {
      node_target t;
      t.port = static_cast<uint16_t>(c.get64());
      t.host = take(c.get64());
      t.secret = take(c.get64());
      s.nodes.push_back(std::move(t));
    }
    return s;
  }
};

} // namespace agner::loadgen::wire
