#include "tools/common/cli.h"

#include "decoder/options.h"
#include "base/error.h"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <sched.h>
#include <thread>

namespace gloas::cli {

const char * prog = "gloas";

namespace {

bool g_progress_open = false;  // a progress line is on stderr without its newline

} // namespace

void usage_error(const std::string & msg) {
    end_progress();
    std::fprintf(stderr, "%s: %s\nTry '%s --help'.\n", prog, msg.c_str(), prog);
    std::exit(2);
}

int64_t parse_int(const std::string & flag, const char * s, int64_t lo, int64_t hi) {
    char * end = nullptr;
    errno = 0;
    const long long v = std::strtoll(s, &end, 10);
    if (errno || !end || *end || end == s || v < lo || v > hi)
        usage_error(format("%s: '%s' is not an integer in %lld..%lld", flag.c_str(), s, (long long) lo, (long long) hi));
    return v;
}

const char * next_value(int argc, char ** argv, int & i) {
    if (i + 1 >= argc) usage_error(std::string(argv[i]) + " needs a value");
    return argv[++i];
}

int run_main(const std::function<int()> & body) {
    try {
        return body();
    } catch (const cli_error & e) {
        std::fflush(stdout);
        usage_error(e.what());
    } catch (const error & e) {
        std::fflush(stdout);
        end_progress();
        std::fprintf(stderr, "%s: error: %s\n", prog, e.what());
    } catch (const std::bad_alloc &) {
        std::fflush(stdout);
        end_progress();
        std::fprintf(stderr, "%s: error: out of memory\n", prog);
    }
    return 1;
}

void warning(const std::string & msg) { std::fprintf(stderr, "%s: warning: %s\n", prog, msg.c_str()); }

void warn_lines(const std::string & lines) {
    for (size_t b = 0; b < lines.size();) {
        size_t e = lines.find('\n', b);
        if (e == std::string::npos) e = lines.size();
        warning(lines.substr(b, e - b));
        b = e + 1;
    }
}

int available_cores() {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof(set), &set) == 0) {
        const int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    const unsigned hc = std::thread::hardware_concurrency();
    return hc > 0 ? int(hc) : 1;
}

bool warn_threads(int n_threads, const char * flag) {
    const int cores = available_cores();
    if (n_threads <= cores) return false;
    warning(format("%s %d is more threads than the %d core%s this process may use; they will share cores and run slower",
                   flag, n_threads, cores, cores == 1 ? "" : "s"));
    return true;
}

bool warn_context(int64_t n_ctx, int64_t n_ctx_train, const char * flag) {
    if (n_ctx_train <= 0 || n_ctx <= n_ctx_train) return false;
    warning(format("%s %lld is above the model's training context (%lld); positions past %lld were never trained and "
                   "quality drops there", flag, (long long) n_ctx, (long long) n_ctx_train, (long long) n_ctx_train));
    return true;
}

double now_s() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

std::function<void(size_t, size_t, uint64_t, uint64_t)> progress(const std::string & path, double t0) {
    double last = -1.0;
    return [path, t0, last](size_t i, size_t n, uint64_t done, uint64_t total) mutable {
        const double el = now_s() - t0;
        if (el - last < 0.5 && i < n) return;
        last = el;
        std::fprintf(stderr, "\r%s: %s: tensor %zu/%zu, %.0f/%.0f MiB, %.1f s ", prog, path.c_str(), i, n,
                     double(done) / (1 << 20), double(total) / (1 << 20), el);
        std::fflush(stderr);
        g_progress_open = true;
    };
}

void end_progress() {
    if (!g_progress_open) return;
    std::fputc('\n', stderr);
    g_progress_open = false;
}

} // namespace gloas::cli
