#include "loadgen/timeline.hpp"

#include "loadgen/codec.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace agner::loadgen {

namespace {
constexpr std::string_view timeline_magic = "AGNERTL1";
/// A run longer than a week of seconds is not a timeline.
constexpr uint64_t seconds_max = 7 * 24 * 3600;
} // namespace

second_bucket& timeline::at(sim_ns t) {
  auto i = static_cast<size_t>(std::max<sim_ns>(t, 0) / ns_per_s);
  if (i >= seconds_max)
    i = seconds_max - 1;
  if (i >= s_.size())
    s_.resize(i + 1);
  return s_[i];
}

void timeline::merge(const timeline& other) {
  if (other.s_.size() > s_.size())
    s_.resize(other.s_.size());
  for (size_t i = 0; i < other.s_.size(); ++i) {
    auto& a = s_[i];
    const auto& b = other.s_[i];
    a.sent += b.sent, a.stored += b.stored, a.delivered += b.delivered, a.errors += b.errors;
    a.connected += b.connected;
    a.latency.merge(b.latency);
  }
}

std::string timeline::serialize() const {
  records_codec c;
  c.out.append(timeline_magic);
  c.u64(s_.size());
  for (auto& b : s_) {
    c.u64(b.sent), c.u64(b.stored), c.u64(b.delivered), c.u64(b.errors), c.u64(b.connected);
    c.put(b.latency);
  }
  return std::move(c.out);
}

timeline timeline::deserialize(std::string_view bytes) {
  if (bytes.substr(0, timeline_magic.size()) != timeline_magic)
    throw std::runtime_error("loadgen timeline: bad magic");
  records_codec c;
  c.in = bytes.substr(timeline_magic.size());
  uint64_t n = c.get64();
  if (n > seconds_max)
    throw std::runtime_error("loadgen timeline: implausible length");
  timeline t;
  t.s_.resize(n);
  for (auto& b : t.s_) {
    b.sent = c.get64(), b.stored = c.get64(), b.delivered = c.get64(), b.errors = c.get64(), b.connected = c.get64();
    c.get(b.latency);
  }
  if (!c.in.empty())
    throw std::runtime_error("loadgen timeline: trailing bytes");
  return t;
}

std::string timeline::csv() const {
  std::string out = "t_s,sent,stored,delivered,errors,connected,p50_ms,p99_ms,p999_ms\n";
  for (size_t i = 0; i < s_.size(); ++i) {
    auto& b = s_[i];
    auto ms = [&](double q) { return static_cast<double>(b.latency.quantile(q)) / 1e6; };
    fmt::format_to(std::back_inserter(out), "{},{},{},{},{},{},{:.3f},{:.3f},{:.3f}\n", i, b.sent, b.stored, b.delivered,
                   b.errors, b.connected, ms(0.5), ms(0.99), ms(0.999));
  }
  return out;
}

bool timeline::any_delivery() const noexcept {
  for (const auto& b : s_)
    if (b.delivered > 0)
      return true;
  return false;
}

std::string timeline::gnuplot_script(std::string_view csv_path, std::string_view png_path, std::string_view title,
                                     bool any_latency) {
  // gnuplot stops at a plot with no defined point, so a run without deliveries (a capacity run
  // that only holds connections) gets an empty latency panel that says why.
  std::string latency = any_latency ? fmt::format(R"(set logscale y
plot '{0}' using 1:($7>0?$7:1/0) every ::1 with lines title 'p50', \
     '{0}' using 1:($8>0?$8:1/0) every ::1 with lines title 'p99', \
     '{0}' using 1:($9>0?$9:1/0) every ::1 with lines title 'p999'
)",
                                                  csv_path)
                                    : fmt::format(R"(set yrange [0:1]
set label 1 'no deliveries in this run: no latency to plot' at graph 0.5,0.5 center
plot '{0}' using 1:(0) every ::1 with lines notitle
)",
                                                  csv_path);
  return fmt::format(R"(set terminal pngcairo size 1200,800 noenhanced
set output '{1}'
set datafile separator ','
set key top left
set multiplot layout 2,1 title '{2}'
set ylabel 'per second'
set y2label 'sessions ready'
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
plot '{0}' using 1:2 every ::1 with lines title 'sent', \
     '{0}' using 1:4 every ::1 with lines title 'delivered', \
     '{0}' using 1:5 every ::1 with impulses title 'errors', \
     '{0}' using 1:6 every ::1 with lines axes x1y2 title 'ready sessions'
set xlabel 'seconds'
set ylabel 'send to delivered (ms)'
unset y2label
unset y2tics
{3}unset multiplot
)",
                     csv_path, png_path, title, latency);
}

} // namespace agner::loadgen
