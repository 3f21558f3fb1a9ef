// Configuration: a schema of named keys bound to variables, filled from defaults < TOML file <
// environment < command-line flags. Unknown keys and bad values are rejected with a message
// that names the key and where it came from.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace agner {

/// Thrown for unknown keys, unparsable or out-of-range values, unreadable config files.
class config_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

class config_schema {
public:
  /// Keys are "section.name" in lower case; the variable's current value is the default.
  /// The environment variable is AGNER_ + the key in upper case with '.' -> '_'; the flag is --key.
  void add(std::string key, std::string* target, std::string help);
  void add(std::string key, bool* target, std::string help);
  void add(std::string key, int64_t* target, std::string help, int64_t min, int64_t max);
  void add(std::string key, uint32_t* target, std::string help, uint32_t min, uint32_t max);
  void add(std::string key, double* target, std::string help, double min, double max);
  void add(std::string key, uint16_t* target, std::string help, uint16_t min, uint16_t max);
  /// A duration given in milliseconds (the key should end in _ms).
  void add(std::string key, std::chrono::milliseconds* target, std::string help, int64_t min_ms, int64_t max_ms);
  /// A byte count given in MiB (the key should end in _mb).
  void add_mib(std::string key, size_t* target, std::string help, size_t min_mib, size_t max_mib);
  /// A string restricted to a fixed set of choices.
  void add_choice(std::string key, std::string* target, std::string help, std::vector<std::string> choices);

  /// Where the environment comes from (tests inject a map).
  using env_lookup = std::function<std::optional<std::string>(const std::string&)>;
  static env_lookup process_env();
  /// Every AGNER_* variable name present in the process environment.
  static std::vector<std::string> process_env_names();

  struct outcome {
    bool help = false;             ///< --help was given; the caller prints help() and exits 0
    std::string config_file;       ///< the file that was read, if any
  };

  /// Applies, in order: the TOML file (--config or AGNER_CONFIG), the environment, the flags.
  /// `env_names` lists the AGNER_* variables present, so that unknown ones can be rejected.
  outcome load(const std::vector<std::string>& args, const env_lookup& env, const std::vector<std::string>& env_names);
  outcome load(int argc, char** argv);

  /// Applies a TOML document given as text (used by load and by tests).
  void apply_toml(std::string_view text, std::string_view source);

  /// `environment`: whether the program reads AGNER_* variables (the tools that drive nodes do
  /// not: those variables belong to the node).
  std::string help(std::string_view program, std::string_view summary, bool environment = true) const;
  /// Every key with its current value, as "key = value" lines (for `--print-config`, logs).
  std::string dump() const;

  static std::string env_name(std::string_view key);

private:
  struct entry {
    std::string help;
    std::string type;
    std::function<void(std::string_view)> set;   // throws std::invalid_argument with a reason
    std::function<std::string()> show;
  };
  void put(std::string key, entry e);
  void set(const std::string& key, std::string_view value, std::string_view source);

  std::map<std::string, entry> entries_;
};

} // namespace agner
