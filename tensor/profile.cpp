#include "tensor/profile.h"

#include "tensor/error.h"

#include <atomic>
#include <chrono>
#include <mutex>

namespace gloas::profile {

namespace {

std::atomic<bool> g_on{false};
std::mutex g_mu;
report g_rep;  // guarded by g_mu

int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

} // namespace

const char * op_name(op o) {
    switch (o) {
        case op::GET_ROWS:  return "get_rows";
        case op::RMSNORM:   return "rmsnorm";
        case op::MATMUL:    return "matmul";
        case op::BIAS:      return "bias";
        case op::ROPE:      return "rope";
        case op::KV_STORE:  return "kv_store";
        case op::ATTENTION: return "attention";
        case op::ADD:       return "add";
        case op::FFN_ACT:   return "silu_mul";
        case op::OUTPUT:    return "output";
        case op::COUNT:     break;
    }
    return "unknown";
}

void enable(bool on) { g_on.store(on, std::memory_order_relaxed); }
bool enabled() { return g_on.load(std::memory_order_relaxed); }

void reset() {
    std::lock_guard<std::mutex> lk(g_mu);
    g_rep = report{};
}

void record(op o, int32_t layer, int64_t ns) {
    GLOAS_ASSERT(int(o) >= 0 && o < op::COUNT);
    std::lock_guard<std::mutex> lk(g_mu);
    g_rep.op_ns[int(o)] += ns;
    g_rep.op_calls[int(o)] += 1;
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
    for (int i = 0; i < int(op::COUNT); ++i) {
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
