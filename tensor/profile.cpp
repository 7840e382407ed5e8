#include "tensor/profile.h"

#include "base/error.h"

#include <atomic>
#include <chrono>
#include <cstring>
#include <iterator>
#include <mutex>

namespace gloas::profile {

namespace {

std::atomic<bool> g_on{false};
std::mutex g_mu;
report g_rep;  // guarded by g_mu

constexpr const char * BUILTIN_NAMES[] = {"get_rows", "rmsnorm", "matmul", "bias", "rope", "add", "silu_mul", "output"};
static_assert(sizeof BUILTIN_NAMES / sizeof BUILTIN_NAMES[0] == size_t(op::COUNT), "a name for every built-in op");

// The names of the op types, the built-in ones then those of add_op (a
// function's static: add_op may run during another file's static
// initialization). Guarded by g_mu.
std::vector<const char *> & names() {
    static std::vector<const char *> v(std::begin(BUILTIN_NAMES), std::end(BUILTIN_NAMES));
    return v;
}

// g_rep's op_ns and op_calls sized to the op types. Under g_mu.
void size_report() {
    g_rep.op_ns.resize(names().size(), 0);
    g_rep.op_calls.resize(names().size(), 0);
}

int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

} // namespace

op add_op(const char * name) {
    std::lock_guard<std::mutex> lk(g_mu);
    std::vector<const char *> & v = names();
    for (size_t i = 0; i < v.size(); ++i)
        if (std::strcmp(v[i], name) == 0) return op(i);
    v.push_back(name);
    size_report();
    return op(v.size() - 1);
}

const char * op_name(op o) {
    std::lock_guard<std::mutex> lk(g_mu);
    const std::vector<const char *> & v = names();
    return int(o) >= 0 && size_t(o) < v.size() ? v[size_t(o)] : "unknown";
}

void enable(bool on) { g_on.store(on, std::memory_order_relaxed); }
bool enabled() { return g_on.load(std::memory_order_relaxed); }

void reset() {
    std::lock_guard<std::mutex> lk(g_mu);
    g_rep = report{};
    size_report();
}

void record(op o, int32_t layer, int64_t ns) {
    std::lock_guard<std::mutex> lk(g_mu);
    GLOAS_ASSERT(int(o) >= 0 && size_t(o) < names().size());
    size_report();
    g_rep.op_ns[size_t(o)] += ns;
    g_rep.op_calls[size_t(o)] += 1;
    if (layer >= 0) {
        if (g_rep.layer_ns.size() <= size_t(layer)) {
            g_rep.layer_ns.resize(size_t(layer) + 1, 0);
            g_rep.layer_calls.resize(size_t(layer) + 1, 0);
        }
        g_rep.layer_ns[size_t(layer)] += ns;
        g_rep.layer_calls[size_t(layer)] += 1;
    }
}

timer::timer(op o, int32_t layer) : op_(o), layer_(layer), t0_(enabled() ? now_ns() : -1) {}

timer::~timer() {
    if (t0_ >= 0) record(op_, layer_, now_ns() - t0_);
}

int64_t report::total_ns() const {
    int64_t t = 0;
    for (int64_t v : op_ns) t += v;
    return t;
}

report snapshot() {
    std::lock_guard<std::mutex> lk(g_mu);
    size_report();
    return g_rep;
}

void print(std::FILE * f) {
    const report r = snapshot();
    const int64_t total = r.total_ns();
    if (total == 0) {
        std::fprintf(f, "profile: nothing recorded\n");
        return;
    }
    std::fprintf(f, "profile: %.3f ms in timed ops\n", double(total) * 1e-6);
    std::fprintf(f, "  %-10s %12s %7s %10s %12s\n", "op", "total ms", "share", "calls", "us/call");
    for (size_t i = 0; i < r.op_calls.size(); ++i) {
        if (r.op_calls[i] == 0) continue;
        std::fprintf(f, "  %-10s %12.3f %6.1f%% %10lld %12.2f\n", op_name(op(i)), double(r.op_ns[i]) * 1e-6,
                     100.0 * double(r.op_ns[i]) / double(total), (long long) r.op_calls[i],
                     double(r.op_ns[i]) * 1e-3 / double(r.op_calls[i]));
    }
    if (r.layer_ns.empty()) return;
    std::fprintf(f, "  %-10s %12s %7s\n", "layer", "total ms", "share");
    for (size_t l = 0; l < r.layer_ns.size(); ++l)
        std::fprintf(f, "  %-10zu %12.3f %6.1f%%\n", l, double(r.layer_ns[l]) * 1e-6,
                     100.0 * double(r.layer_ns[l]) / double(total));
}

} // namespace gloas::profile
