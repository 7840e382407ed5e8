// Command-line helpers shared by the tools: one way to report a bad command
// line (the message, a pointer to --help, exit status 2), a failed run (exit
// status 1), to read flag values, and to warn about settings the machine or
// the model cannot honour.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace gloas::cli {

// The tool's name in messages; main() sets it first thing.
extern const char * prog;

// "PROG: MSG" and a pointer to --help on stderr; exits with status 2.
[[noreturn]] void usage_error(const std::string & msg);

// The integer in `s`, which must lie in [lo, hi]; a usage error otherwise.
int64_t parse_int(const std::string & flag, const char * s, int64_t lo, int64_t hi);

// The value after the flag argv[i] (advancing i to it); a usage error
// "FLAG needs a value" when the command line ends there.
const char * next_value(int argc, char ** argv, int & i);

// Runs a tool's work and turns what it throws into the exit status: a
// cli_error is a usage error (2); a gloas::error "PROG: error: MSG" and 1;
// running out of memory the same. An open progress line (progress_reporter)
// is ended first, so the message starts a line of its own.
int run_main(const std::function<int()> & body);

// "PROG: warning: MSG" on stderr; the run goes on.
void warning(const std::string & msg);
// Each line of `lines` (newline-separated, as kv_store::take_notices gives
// them) as a warning.
void warn_lines(const std::string & lines);

// Cores this process may run on: its CPU affinity mask (taskset, cgroups),
// else std::thread::hardware_concurrency; at least 1.
int available_cores();

// Warns when -t asks for more threads than available_cores(): threads then
// take turns on a core, and spinning ones slow each other down. Returns
// whether it warned.
bool warn_threads(int n_threads, const char * flag = "-t");

// Warns when a context of n_ctx positions (flag as typed, e.g. "-c") is past
// the model's training context n_ctx_train: positions beyond it were never
// trained and the output degrades. Returns whether it warned.
bool warn_context(int64_t n_ctx, int64_t n_ctx_train, const char * flag = "-c");

// Seconds on a monotonic clock (steady_clock), for timing a run's steps.
double now_s();

// A progress callback for writing `path`, as gguf_writer::set_progress and
// random_model_params::progress take it: "\rPROG: PATH: tensor I/N, D/T MiB,
// S s" on stderr at most twice a second and at the last tensor, S counted
// from `t0` (now_s()). The line stays open until end_progress().
std::function<void(size_t, size_t, uint64_t, uint64_t)> progress(const std::string & path, double t0);
// Ends an open progress line with a newline; nothing when none is open.
void end_progress();

} // namespace gloas::cli
