// agner-loadgen: plays a population of phones against chat nodes and checks every message
// (docs/loadgen.md). Thin main: flags -> loadgen::run -> report, summary, exit code.
#include "loadgen/run.hpp"
#include "runtime/log.hpp"
#include "runtime/node.hpp"

#include <fmt/format.h>

#include <csignal>

int main(int argc, char** argv) {
  using namespace agner;
  if (loadgen::is_worker_invocation(argc, argv))
    return loadgen::worker_main(argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  loadgen::run_options o;
  config_schema schema;
  o.bind(schema);
  try {
    // Flags only: the environment's AGNER_* variables belong to the node.
    auto out = schema.load(std::vector<std::string>(argv + 1, argv + argc), [](const std::string&) { return std::nullopt; }, {});
    if (out.help) {
      fmt::print("{}", schema.help("agner-loadgen", "agner-loadgen: simulated phones against agner nodes, every message "
                                                    "accounted for (docs/loadgen.md)",
                                   false));
      return 0;
    }
    o.population(); // rejects a bad preset or override before anything starts
  } catch (const std::exception& e) {
    fmt::print(stderr, "agner-loadgen: {}\n", e.what());
    return exit_config;
  }
  try {
    auto r = loadgen::run(o);
    fmt::print("{}", loadgen::summary(r.result, r.info));
    if (!o.out_dir.empty())
      fmt::print("report: {}/report.json, plot: {}/timeline.png\n", o.out_dir, o.out_dir);
    return r.exit_code;
  } catch (const std::exception& e) {
    fmt::print(stderr, "agner-loadgen: {}\n", e.what());
    return exit_fatal;
  }
}
