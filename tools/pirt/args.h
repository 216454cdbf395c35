// A small argument parser for the pirt subcommands: --key value and --flag, nothing positional.
// A wrong argument throws UsageError; main() prints it as one line and exits with code 2.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"

namespace pirt {

class Args {
 public:
  // `options` take a value, `flags` do not.
  Args(int argc, char** argv, const std::set<std::string>& options, const std::set<std::string>& flags) {
    for (int i = 0; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        help_ = true;
        continue;
      }
      if (flags.count(a)) {
        set_.insert(a);
      } else if (options.count(a)) {
        if (i + 1 >= argc) throw_error(a + " needs a value");
        values_[a] = argv[++i];
      } else {
        throw_error("unknown argument \"" + a + "\" (see --help)");
      }
    }
  }
  bool help() const { return help_; }
  bool flag(const std::string& f) const { return set_.count(f) > 0; }
  bool has(const std::string& k) const { return values_.count(k) > 0; }
  std::string str(const std::string& k, const std::string& def = "") const {
    auto it = values_.find(k);
    return it == values_.end() ? def : it->second;
  }
  std::string required(const std::string& k) const {
    if (!has(k)) throw_error(k + " is required (see --help)");
    return values_.at(k);
  }
  long integer(const std::string& k, long def, long lo, long hi) const {
    if (!has(k)) return def;
    const std::string& v = values_.at(k);
    char* end = nullptr;
    const long x = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0') throw_error(k + " must be an integer, not \"" + v + "\"");
    if (x < lo || x > hi) throw_error(strformat("%s must be in [%ld, %ld], not %ld", k.c_str(), lo, hi, x));
    return x;
  }

 private:
  bool help_ = false;
  std::set<std::string> set_;
  std::map<std::string, std::string> values_;
};

}  // namespace pirt
