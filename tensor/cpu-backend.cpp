#include "tensor/cpu-backend.h"

#include "base/error.h"
#include "tensor/thread-pool.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>

namespace gloas {

namespace {
constexpr size_t ALIGN = 64;  // a cache line: rows of any buffer start as aligned as their width allows
}

cpu_backend::cpu_backend(int64_t max_tokens, int n_threads) : max_tokens_(max_tokens) {
    GLOAS_ASSERT(max_tokens > 0);
    if (n_threads > 0) ops::set_n_threads(n_threads);
}

void * cpu_backend::alloc_bytes(size_t bytes) {
    void * p = ::operator new(bytes, std::align_val_t(ALIGN), std::nothrow);
    if (!p) throw error(format("out of memory: %zu bytes of activations asked for", bytes));
    std::memset(p, 0, bytes);
    return p;
}

void cpu_backend::free_bytes(void * p) { ::operator delete(p, std::align_val_t(ALIGN)); }

void cpu_backend::upload(void * dst, const void * src, size_t bytes) {
    if (bytes) std::memcpy(dst, src, bytes);
}

void cpu_backend::to_host(void * dst, const void * src, size_t bytes) {
    if (bytes) std::memcpy(dst, src, bytes);
}

tensor cpu_backend::weight(const tensor & host) {
    if (!host.empty()) {
        const size_t need = ops::matmul_work_size(host.t, host.ne[0], max_tokens_);
        if (need > work_.size()) work_.resize(need);
    }
    return host;
}

void cpu_backend::get_rows(const tensor & w, const int32_t * ids, int64_t n, float * y) {
    op_timer pt(*this, profile::op::GET_ROWS);
    for (int64_t t = 0; t < n; ++t) ops::get_row(w, ids[t], y + t * w.ne[0]);
}

void cpu_backend::rmsnorm(float * y, const float * x, const float * g, int64_t n_tok, int64_t width, float eps) {
    op_timer pt(*this, profile::op::RMSNORM);
    for (int64_t t = 0; t < n_tok; ++t) ops::rmsnorm(y + t * width, x + t * width, g, width, eps);
}

void cpu_backend::matmul(const tensor & w, const float * x, int64_t n_tok, float * y) {
    GLOAS_ASSERT(n_tok <= max_tokens_ && ops::matmul_work_size(w.t, w.ne[0], n_tok) <= work_.size());
    op_timer pt(*this, profile::op::MATMUL);
    ops::matmul(w, x, n_tok, y, work_.data());
}

void cpu_backend::matmul_n(const tensor * const * w, float * const * y, int n, const float * x, int64_t n_tok) {
    GLOAS_ASSERT(n_tok <= max_tokens_);
    for (int i = 0; i < n; ++i) GLOAS_ASSERT(ops::matmul_work_size(w[i]->t, w[i]->ne[0], n_tok) <= work_.size());
    op_timer pt(*this, profile::op::MATMUL);
    ops::matmul_n(w, y, n, x, n_tok, work_.data());
}

void cpu_backend::bias(float * y, const float * b, int64_t n_tok, int64_t width) {
    op_timer pt(*this, profile::op::BIAS);
    for (int64_t t = 0; t < n_tok; ++t) ops::add(y + t * width, b, width);
}

void cpu_backend::add(float * y, const float * x, int64_t n) {
    op_timer pt(*this, profile::op::ADD);
    ops::add(y, x, n);
}

void cpu_backend::rope(float * y, const float * x, int64_t n_tok, int64_t n_head, int64_t head_dim, int64_t n_rot,
                       const int32_t * pos, const ops::rope_params & p) {
    op_timer pt(*this, profile::op::ROPE);
    const int64_t row = n_head * head_dim;
    if (y != x) std::copy(x, x + n_tok * row, y);
    for (int64_t t = 0; t < n_tok; ++t) ops::rope_ex(y + t * row, n_head, head_dim, n_rot, pos[t], p);
}

void cpu_backend::silu_mul(float * y, const float * g, const float * u, int64_t n) {
    op_timer pt(*this, profile::op::FFN_ACT);
    ops::silu_mul(y, g, u, n);
}

void cpu_backend::gelu_mul(float * y, const float * g, const float * u, int64_t n) {
    op_timer pt(*this, profile::op::FFN_ACT);
    const float c = 0.7978845608028654f;  // sqrt(2/pi)
    ops::parallel_for(n, n > 65536 ? ops::n_threads() : 1, 0, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
            const float x = g[i];
            y[i] = 0.5f * x * (1.0f + std::tanh(c * (x + 0.044715f * x * x * x))) * u[i];
        }
    });
}

void cpu_backend::scale(float * y, int64_t n_rows, int64_t width, int64_t n_scaled, float s) {
    GLOAS_ASSERT(n_scaled >= 0 && n_scaled <= width);
    op_timer pt(*this, profile::op::ADD);
    for (int64_t r = 0; r < n_rows; ++r)
        for (int64_t i = 0; i < n_scaled; ++i) y[r * width + i] *= s;
}

void cpu_backend::softcap(float * y, int64_t n, float cap) {
    GLOAS_ASSERT(cap > 0.0f);
    op_timer pt(*this, profile::op::OUTPUT);
    for (int64_t i = 0; i < n; ++i) y[i] = cap * std::tanh(y[i] / cap);
}

void cpu_backend::begin_group(profile::op o) {
    GLOAS_ASSERT(!group_);
    group_.emplace(o, layer_);
}

void cpu_backend::end_group() {
    GLOAS_ASSERT(group_);
    group_.reset();
}

} // namespace gloas
