// The CPU backend: the backend interface over the CPU ops of ops.h (SIMD
// kernels chosen at start, the threads of tensor/thread-pool.h), in host memory.
//
// Every op calls the ops.h function it names, row by row where that function
// takes one row, so results are those of ops.h bit for bit; gelu_mul, scale
// and softcap, which ops.h does not have, are the plain loops of their
// definitions in backend.h (float arithmetic, tanh from <cmath>). Weights stay
// where they are (views into the mapped model file); `weight` only sizes the
// matmul scratch for them. Ops run synchronously on the calling thread's
// thread pool; upload and to_host are copies. Ops time themselves with
// profile::timer (no cost but an atomic load while profiling is off).
#pragma once

#include "tensor/backend.h"

#include <optional>
#include <vector>

namespace gloas {

class cpu_backend final : public backend {
public:
    // max_tokens: the most rows one matmul takes (a context's n_ubatch).
    // n_threads > 0 sets the ops' threads (ops::set_n_threads, for the whole
    // process); otherwise they stay as they are.
    explicit cpu_backend(int64_t max_tokens, int n_threads = 0);

    const char * name() const override { return "cpu"; }

    void upload(void * dst, const void * src, size_t bytes) override;
    void to_host(void * dst, const void * src, size_t bytes) override;
    tensor weight(const tensor & host) override;

    void get_rows(const tensor & w, const int32_t * ids, int64_t n, float * y) override;
    void rmsnorm(float * y, const float * x, const float * g, int64_t n_tok, int64_t width, float eps) override;
    void matmul(const tensor & w, const float * x, int64_t n_tok, float * y) override;
    void matmul_n(const tensor * const * w, float * const * y, int n, const float * x, int64_t n_tok) override;
    void bias(float * y, const float * b, int64_t n_tok, int64_t width) override;
    void add(float * y, const float * x, int64_t n) override;
    void rope(float * y, const float * x, int64_t n_tok, int64_t n_head, int64_t head_dim, int64_t n_rot,
              const int32_t * pos, const ops::rope_params & p) override;
    void silu_mul(float * y, const float * g, const float * u, int64_t n) override;
    void gelu_mul(float * y, const float * g, const float * u, int64_t n) override;
    void scale(float * y, int64_t n_rows, int64_t width, int64_t n_scaled, float s) override;
    void softcap(float * y, int64_t n, float cap) override;

    void set_layer(int32_t il) override { layer_ = il; }

    // Bytes of matmul scratch held (the largest ops::matmul_work_size of the
    // weights at max_tokens).
    size_t work_bytes() const { return work_.size(); }

private:
    void * alloc_bytes(size_t bytes) override;
    void free_bytes(void * p) override;
    void begin_group(profile::op o) override;
    void end_group() override;

    // Times one op unless a group is open.
    class op_timer {
    public:
        op_timer(const cpu_backend & be, profile::op o) {
            if (!be.group_) t_.emplace(o, be.layer_);
        }

    private:
        std::optional<profile::timer> t_;
    };

    int64_t max_tokens_;
    std::vector<uint8_t> work_;              // matmul activation scratch
    int32_t layer_ = -1;
    std::optional<profile::timer> group_;    // the open group's timer
};

} // namespace gloas
