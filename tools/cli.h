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

// ---- Warnings about settings the machine or the model cannot honour --------
// One line each on stderr, prefixed with `prog`; the run goes on.
#include <sched.h>
#include <thread>

namespace gloas::cli {

// Cores this process may run on: its CPU affinity mask (taskset, cgroups),
// else std::thread::hardware_concurrency; at least 1.
inline int available_cores() {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof(set), &set) == 0) {
        const int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    const unsigned hc = std::thread::hardware_concurrency();
    return hc > 0 ? int(hc) : 1;
}

// Warns when -t asks for more threads than available_cores(): threads then
// take turns on a core, and spinning ones slow each other down. Returns
// whether it warned.
inline bool warn_threads(int n_threads, const char * flag = "-t") {
    const int cores = available_cores();
    if (n_threads <= cores) return false;
    std::fprintf(stderr, "%s: warning: %s %d is more threads than the %d core%s this process may use; "
                 "they will share cores and run slower\n", prog, flag, n_threads, cores, cores == 1 ? "" : "s");
    return true;
}

// Warns when a context of n_ctx positions (flag as typed, e.g. "-c") is past
// the model's training context n_ctx_train: positions beyond it were never
// trained and the output degrades. Returns whether it warned.
inline bool warn_context(int64_t n_ctx, int64_t n_ctx_train, const char * flag = "-c") {
    if (n_ctx_train <= 0 || n_ctx <= n_ctx_train) return false;
    std::fprintf(stderr, "%s: warning: %s %lld is above the model's training context (%lld); "
                 "positions past %lld were never trained and quality drops there\n", prog, flag, (long long) n_ctx,
                 (long long) n_ctx_train, (long long) n_ctx_train);
    return true;
}

} // namespace gloas::cli
