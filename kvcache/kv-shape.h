// The shape of a model's attention memory: what the model (decoder/model.h),
// the files that write models (decoder/llama-gguf.h), the K/V sequences
// (kv-cache.h) and the pages of the K/V store (page.h) all agree on. Each of
// those structs derives from it, so the three numbers are held once and
// passed on whole (`page_geometry pg(page_tokens, hp)`), never copied field by
// field.
#pragma once

#include <cstdint>

namespace gloas {

struct kv_shape {
    int32_t n_layer = 0;
    int32_t n_head_kv = 0;  // K/V heads (grouped-query attention: n_head % n_head_kv == 0)
    int32_t head_dim = 0;   // values per head of q, k and v

    int32_t n_embd_kv() const { return n_head_kv * head_dim; }
};

} // namespace gloas
