// Errors. pirt throws; the program's main() turns an Error into one line on stderr and exit code 2.
#pragma once

#include <stdexcept>
#include <string>

namespace pirt {

// Something the user gave us is wrong: a file, an argument, a request. The message names what.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// printf-style formatting into a std::string.
std::string strformat(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

[[noreturn]] void throw_error(const std::string& what);

}  // namespace pirt

// Internal invariant: a failure here is a bug in pirt, not bad input.
#define PIRT_CHECK(cond, ...)                                                                  \
  do {                                                                                         \
    if (!(cond))                                                                               \
      ::pirt::throw_error(::pirt::strformat("internal check failed at %s:%d: %s: ", __FILE__, \
                                            __LINE__, #cond) +                                 \
                          ::pirt::strformat(__VA_ARGS__));                                     \
  } while (0)
