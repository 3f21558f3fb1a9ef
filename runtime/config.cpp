#include "runtime/config.hpp"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <sstream>

extern char** environ;

namespace agner {

namespace {

template <class T>
T parse_number(std::string_view s) {
  T v{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size() || s.empty())
    throw std::invalid_argument(fmt::format("'{}' is not a valid number", s));
  return v;
}

template <class T>
std::function<void(std::string_view)> ranged(T* target, T min, T max) {
  return [=](std::string_view s) {
    T v = parse_number<T>(s);
    if (v < min || v > max)
      throw std::invalid_argument(fmt::format("{} is out of range [{}, {}]", v, min, max));
    *target = v;
  };
}

} // namespace

std::string config_schema::env_name(std::string_view key) {
  std::string out = "AGNER_";
  for (char c : key)
    out += (c == '.' || c == '-') ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

void config_schema::put(std::string key, entry e) {
  if (!entries_.emplace(std::move(key), std::move(e)).second)
    throw std::logic_error("config key registered twice");
}

void config_schema::add(std::string key, std::string* t, std::string help) {
  put(std::move(key), {std::move(help), "string", [t](std::string_view s) { *t = std::string(s); }, [t] { return *t; }});
}

void config_schema::add(std::string key, bool* t, std::string help) {
  put(std::move(key), {std::move(help), "bool",
                       [t](std::string_view s) {
                         if (s == "true" || s == "1" || s == "yes" || s == "on")
                           *t = true;
                         else if (s == "false" || s == "0" || s == "no" || s == "off")
                           *t = false;
                         else
                           throw std::invalid_argument(fmt::format("'{}' is not a boolean (true/false)", s));
                       },
                       [t] { return std::string(*t ? "true" : "false"); }});
}

void config_schema::add(std::string key, int64_t* t, std::string help, int64_t min, int64_t max) {
  put(std::move(key), {std::move(help), fmt::format("integer {}..{}", min, max), ranged(t, min, max),
                       [t] { return std::to_string(*t); }});
}

void config_schema::add(std::string key, uint32_t* t, std::string help, uint32_t min, uint32_t max) {
  put(std::move(key), {std::move(help), fmt::format("integer {}..{}", min, max), ranged(t, min, max),
                       [t] { return std::to_string(*t); }});
}

void config_schema::add(std::string key, uint16_t* t, std::string help, uint16_t min, uint16_t max) {
  put(std::move(key), {std::move(help), fmt::format("integer {}..{}", min, max), ranged(t, min, max),
                       [t] { return std::to_string(*t); }});
}

void config_schema::add(std::string key, std::chrono::milliseconds* t, std::string help, int64_t min_ms, int64_t max_ms) {
  put(std::move(key), {std::move(help), fmt::format("milliseconds {}..{}", min_ms, max_ms),
                       [=](std::string_view s) {
                         int64_t v = 0;
                         ranged(&v, min_ms, max_ms)(s);
                         *t = std::chrono::milliseconds(v);
                       },
                       [t] { return std::to_string(t->count()); }});
}

void config_schema::add_mib(std::string key, size_t* t, std::string help, size_t min_mib, size_t max_mib) {
  put(std::move(key), {std::move(help), fmt::format("MiB {}..{}", min_mib, max_mib),
                       [=](std::string_view s) {
                         size_t v = 0;
                         ranged(&v, min_mib, max_mib)(s);
                         *t = v << 20;
                       },
                       [t] { return std::to_string(*t >> 20); }});
}

void config_schema::add(std::string key, double* t, std::string help, double min, double max) {
  put(std::move(key), {std::move(help), fmt::format("number {}..{}", min, max), ranged(t, min, max),
                       [t] { return fmt::format("{}", *t); }});
}

void config_schema::add_choice(std::string key, std::string* t, std::string help, std::vector<std::string> choices) {
  std::string type = "one of";
  for (auto& c : choices)
    type += " " + c;
  put(std::move(key), {std::move(help), type,
                       [t, choices](std::string_view s) {
                         if (std::find(choices.begin(), choices.end(), s) == choices.end())
                           throw std::invalid_argument(fmt::format("'{}' is not one of the allowed values", s));
                         *t = std::string(s);
                       },
                       [t] { return *t; }});
}

void config_schema::set(const std::string& key, std::string_view value, std::string_view source) {
  auto it = entries_.find(key);
  if (it == entries_.end())
    throw config_error(fmt::format("{}: unknown configuration key '{}'", source, key));
  try {
    it->second.set(value);
  } catch (const std::invalid_argument& e) {
    throw config_error(fmt::format("{}: bad value for '{}': {} (expected {})", source, key, e.what(), it->second.type));
  }
}

void config_schema::apply_toml(std::string_view text, std::string_view source) {
  toml::table tbl;
  try {
    tbl = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    throw config_error(fmt::format("{}: {} (line {})", source, e.description(), e.source().begin.line));
  }
  std::function<void(const toml::table&, const std::string&)> walk = [&](const toml::table& t, const std::string& prefix) {
    for (auto& [k, node] : t) {
      std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
      if (auto* sub = node.as_table()) {
        walk(*sub, key);
        continue;
      }
      std::string value;
      if (auto* s = node.as_string())
        value = s->get();
      else if (auto* i = node.as_integer())
        value = std::to_string(i->get());
      else if (auto* f = node.as_floating_point())
        value = fmt::format("{}", f->get());
      else if (auto* b = node.as_boolean())
        value = b->get() ? "true" : "false";
      else
        throw config_error(fmt::format("{}: '{}' has an unsupported type (arrays and dates are not used)", source, key));
      set(key, value, source);
    }
  };
  walk(tbl, "");
}

config_schema::env_lookup config_schema::process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    if (const char* v = std::getenv(name.c_str()))
      return std::string(v);
    return std::nullopt;
  };
}

std::vector<std::string> config_schema::process_env_names() {
  std::vector<std::string> out;
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv(*e);
    if (kv.starts_with("AGNER_"))
      out.emplace_back(kv.substr(0, kv.find('=')));
  }
  return out;
}

config_schema::outcome config_schema::load(const std::vector<std::string>& args, const env_lookup& env,
                                           const std::vector<std::string>& env_names) {
  outcome out;
  // Split flags first so --config can be honoured before the environment and the flags.
  std::vector<std::pair<std::string, std::string>> flags;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view a = args[i];
    if (a == "--help" || a == "-h") {
      out.help = true;
      continue;
    }
    if (!a.starts_with("--"))
      throw config_error(fmt::format("command line: unexpected argument '{}' (flags are --key=value)", a));
    a.remove_prefix(2);
    std::string key, value;
    if (auto eq = a.find('='); eq != std::string_view::npos) {
      key = std::string(a.substr(0, eq));
      value = std::string(a.substr(eq + 1));
    } else {
      key = std::string(a);
      auto it = entries_.find(key);
      bool is_bool = it != entries_.end() && it->second.type == "bool";
      if (is_bool && (i + 1 >= args.size() || args[i + 1].starts_with("--"))) {
        value = "true";
      } else {
        if (i + 1 >= args.size())
          throw config_error(fmt::format("command line: --{} needs a value", key));
        value = args[++i];
      }
    }
    flags.emplace_back(std::move(key), std::move(value));
  }
  for (auto& [k, v] : flags)
    if (k == "config")
      out.config_file = v;
  if (out.config_file.empty())
    if (auto v = env("AGNER_CONFIG"))
      out.config_file = *v;
  if (!out.config_file.empty()) {
    std::ifstream in(out.config_file);
    if (!in)
      throw config_error(fmt::format("cannot read config file '{}'", out.config_file));
    std::stringstream ss;
    ss << in.rdbuf();
    apply_toml(ss.str(), out.config_file);
  }
  for (auto& name : env_names) {
    if (name == "AGNER_CONFIG")
      continue;
    auto match = std::find_if(entries_.begin(), entries_.end(), [&](auto& e) { return env_name(e.first) == name; });
    if (match == entries_.end())
      throw config_error(fmt::format("environment: unknown variable {} (see --help)", name));
    if (auto v = env(name))
      set(match->first, *v, "environment " + name);
  }
  for (auto& [k, v] : flags)
    if (k != "config")
      set(k, v, "command line --" + k);
  return out;
}

config_schema::outcome config_schema::load(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return load(args, process_env(), process_env_names());
}

std::string config_schema::help(std::string_view program, std::string_view summary, bool environment) const {
  std::string out = fmt::format("{}\n\nUsage: {} [--config FILE] [--key=value ...]\n\n", summary, program);
  out += environment ? "Each key can also be set in the TOML file (dotted keys are tables) or\n"
                       "in the environment (AGNER_ + key in upper case, '.' -> '_').\n"
                       "Precedence: defaults < file < environment < flags.\n\n"
                     : "Each key can also be set in the TOML file (dotted keys are tables); the\n"
                       "environment is not read (AGNER_* variables belong to agner-node).\n"
                       "Precedence: defaults < file < flags.\n\n";
  for (auto& [k, e] : entries_)
    out += fmt::format("  --{:<28} {} [{}; default {}]\n", k, e.help, e.type, e.show());
  return out;
}

std::string config_schema::dump() const {
  std::string out;
  for (auto& [k, e] : entries_)
    out += fmt::format("{} = {}\n", k, e.show());
  return out;
}

} // namespace agner
