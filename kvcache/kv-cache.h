// The attention memory of one sequence, behind the interface the forward pass
// uses: store the K/V of new positions, attend a query over positions [0, pos].
//
// kv_cache_f32 is the simple contiguous implementation: per layer a K and a V
// buffer of (n_ctx, n_embd_kv) f32. The paged, quantized K/V store replaces it
// behind the same interface.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace gloas {

struct kv_geometry {
    int32_t n_layer = 0;
    int32_t n_ctx = 0;       // positions held
    int32_t n_head = 0;      // query heads
    int32_t n_head_kv = 0;
    int32_t head_dim = 0;

    int32_t n_embd_kv() const { return n_head_kv * head_dim; }
};

class kv_cache {
public:
    virtual ~kv_cache() = default;

    const kv_geometry & geometry() const { return g_; }

    // Stores k, v (n_tok, n_embd_kv) of layer `il` at positions [pos0, pos0 + n_tok).
    virtual void store(int32_t il, int32_t pos0, int32_t n_tok, const float * k, const float * v) = 0;

    // For each of n_tok query tokens t at position pos0 + t (already stored):
    // out[t] (n_head, head_dim) = softmax(q[t]·K^T * scale) V over positions
    // [0, pos0 + t], per head with grouped-query sharing of KV heads.
    virtual void attend(int32_t il, int32_t pos0, int32_t n_tok, const float * q, float * out, float scale) = 0;

    // Forgets positions >= pos (all with pos = 0).
    virtual void truncate(int32_t pos) = 0;

    // Bytes held in RAM for K/V.
    virtual size_t ram_bytes() const = 0;

protected:
    explicit kv_cache(const kv_geometry & g) : g_(g) {}
    kv_geometry g_;
};

class kv_cache_f32 final : public kv_cache {
public:
    explicit kv_cache_f32(const kv_geometry & g);

    void store(int32_t il, int32_t pos0, int32_t n_tok, const float * k, const float * v) override;
    void attend(int32_t il, int32_t pos0, int32_t n_tok, const float * q, float * out, float scale) override;
    void truncate(int32_t) override {}
    size_t ram_bytes() const override { return (k_.size() + v_.size()) * sizeof(float); }

private:
    std::vector<float> k_;  // (n_layer, n_ctx, n_embd_kv)
    std::vector<float> v_;  // (n_layer, n_ctx, n_embd_kv)
};

} // namespace gloas
