#include "decoder/kv-cache.h"

#include "tensor/error.h"
#include "tensor/ops.h"

#include <cstring>

namespace gloas {

kv_cache_f32::kv_cache_f32(const kv_geometry & g) : kv_cache(g) {
    const size_t n = size_t(g.n_layer) * size_t(g.n_ctx) * size_t(g.n_embd_kv());
    k_.assign(n, 0.0f);
    v_.assign(n, 0.0f);
}

void kv_cache_f32::store(int32_t il, int32_t pos0, int32_t n_tok, const float * k, const float * v) {
    GLOAS_ASSERT(il >= 0 && il < g_.n_layer && pos0 >= 0 && n_tok >= 0 && pos0 + n_tok <= g_.n_ctx);
    const size_t row = size_t(g_.n_embd_kv());
    const size_t off = (size_t(il) * size_t(g_.n_ctx) + size_t(pos0)) * row;
    std::memcpy(k_.data() + off, k, size_t(n_tok) * row * sizeof(float));
    std::memcpy(v_.data() + off, v, size_t(n_tok) * row * sizeof(float));
}

void kv_cache_f32::attend(int32_t il, int32_t pos0, int32_t n_tok, const float * q, float * out, float scale) {
    GLOAS_ASSERT(il >= 0 && il < g_.n_layer && pos0 >= 0 && pos0 + n_tok <= g_.n_ctx);
    const int64_t row = g_.n_embd_kv();
    const float * kl = k_.data() + size_t(il) * size_t(g_.n_ctx) * size_t(row);
    const float * vl = v_.data() + size_t(il) * size_t(g_.n_ctx) * size_t(row);
    const int32_t n_head = g_.n_head, hd = g_.head_dim, group = g_.n_head / g_.n_head_kv;
    const int64_t n_items = int64_t(n_tok) * n_head;
    // One (token, head) pair per item: parallel both in prefill and in decode.
#pragma omp parallel for schedule(dynamic, 1) if (n_items * (pos0 + n_tok) > 4096)
    for (int64_t it = 0; it < n_items; ++it) {
        const int32_t t = int32_t(it / n_head), h = int32_t(it % n_head);
        const int64_t off_q = int64_t(t) * n_head * hd + int64_t(h) * hd;
        const int64_t off_kv = int64_t(h / group) * hd;
        ops::attention_f32(out + off_q, q + off_q, kl + off_kv, vl + off_kv, pos0 + t + 1,
                           1, 1, hd, row, scale);
    }
}

} // namespace gloas
