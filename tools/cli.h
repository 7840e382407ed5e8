// Command-line helpers shared by the tools: one way to report a bad command
// line (the message, a pointer to --help, exit status 2) and to read integers.
#pragma once

#include "tensor/error.h"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace gloas::cli {

// The tool's name in messages; main() sets it first thing.
inline const char * prog = "gloas";

[[noreturn]] inline void usage_error(const std::string & msg) {
    std::fprintf(stderr, "%s: %s\n(see %s --help)\n", prog, msg.c_str(), prog);
    std::exit(2);
}

// The integer in `s`, which must lie in [lo, hi]; a usage error otherwise.
inline int64_t parse_int(const std::string & flag, const char * s, int64_t lo, int64_t hi) {
    char * end = nullptr;
    errno = 0;
    const long long v = std::strtoll(s, &end, 10);
    if (errno || !end || *end || end == s || v < lo || v > hi)
        usage_error(format("%s: '%s' is not an integer in %lld..%lld", flag.c_str(), s, (long long) lo, (long long) hi));
    return v;
}

} // namespace gloas::cli
