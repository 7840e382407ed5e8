// A cheap global profiler of the forward pass: wall time per op type and per
// layer, summed over every forward of every context of the process.
//
// Off by default. While off, a `timer` costs one relaxed atomic load and
// records nothing. While on, each timer reads the steady clock twice and adds
// its nanoseconds under a mutex (a few tens of ns per op, against ops of
// microseconds or more). Ops parallelize internally, so the times are wall
// times of the calling thread, not CPU times.
//
// Use (the CLI's --profile):
//   gloas::profile::enable(true);   // before generation
//   ... generate ...
//   gloas::profile::print(stderr);  // the table
#pragma once

#include <cstdint>
#include <cstdio>
#include <vector>

namespace gloas::profile {

enum class op : int32_t {
    GET_ROWS,   // token embedding lookup
    RMSNORM,    // attention and FFN norms (the final norm counts as OUTPUT)
    MATMUL,     // Q, K, V, O and FFN projections (not the output projection)
    BIAS,       // Q/K/V/O bias adds (Qwen2)
    ROPE,
    KV_STORE,   // K/V appended to the cache (quantized into the open page)
    ATTENTION,  // attention over the cached pages
    ADD,        // residual adds
    FFN_ACT,    // silu(gate) * up
    OUTPUT,     // final norm + output projection of the rows whose logits are kept
    COUNT
};
const char * op_name(op o);  // "matmul", "attention", ...

void enable(bool on);
bool enabled();
// Forgets everything recorded.
void reset();

// Adds `ns` nanoseconds and one call to op `o` and, when layer >= 0, to that
// layer (layers grow as needed).
void record(op o, int32_t layer, int64_t ns);

// Times its own lifetime as one call of `o` in `layer` (-1: outside the
// layers) when profiling was enabled at its construction.
class timer {
public:
    explicit timer(op o, int32_t layer = -1);
    ~timer();
    timer(const timer &) = delete;
    timer & operator=(const timer &) = delete;

private:
    op op_;
    int32_t layer_;
    int64_t t0_;  // steady clock ns; -1 when profiling is off
};

struct report {
    int64_t op_ns[int(op::COUNT)] = {};
    int64_t op_calls[int(op::COUNT)] = {};
    std::vector<int64_t> layer_ns;     // (layers seen) sum of that layer's ops
    std::vector<int64_t> layer_calls;  // (layers seen) ops timed in that layer
    int64_t total_ns() const;
};
report snapshot();

// Prints the table: per op type total ms, share of the total, calls and mean
// us per call (rows with no calls left out), then ms per layer. Prints a one
// line note when nothing was recorded.
void print(std::FILE * f);

} // namespace gloas::profile
