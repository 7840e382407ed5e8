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

// The op types of the backend interface (tensor/backend.h says which op
// counts as which). Layers above add their own with add_op: they follow
// COUNT, in the order they were added.
enum class op : int32_t {
    GET_ROWS,   // row lookup (the token embeddings)
    RMSNORM,    // norms (the final norm counts as OUTPUT)
    MATMUL,     // projections (not the output projection)
    BIAS,       // bias adds
    ROPE,
    ADD,        // adds and scales (residuals)
    FFN_ACT,    // gated activations: silu(gate) * up, gelu(gate) * up
    OUTPUT,     // the output head: final norm, projection and soft-capping of the kept rows
    COUNT
};
// The op type named `name` (a string that lives as long as the process, e.g.
// a literal): the one added before under that name, else a new one.
// Thread-safe.
op add_op(const char * name);
const char * op_name(op o);  // "matmul", "silu_mul", or the name given to add_op

void enable(bool on);
bool enabled();
// Forgets everything recorded.
void reset();

// Adds `ns` nanoseconds and one call to op `o` (a built-in type or one from
// add_op) and, when layer >= 0, to that layer (layers grow as needed).
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
    std::vector<int64_t> op_ns;        // (op types) indexed by int(op)
    std::vector<int64_t> op_calls;     // (op types)
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
