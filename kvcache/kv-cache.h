// The attention memory of one sequence, behind the interface the forward pass
// uses: store the K/V of new positions, attend queries over what is stored,
// and commit each evaluated chunk (which seals and publishes full pages).
#pragma once

#include "kvcache/kv-shape.h"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace gloas {

// A sequence's shape: the model's K/V shape, its query heads and the
// positions it holds.
struct kv_geometry : kv_shape {
    int32_t n_head = 0;  // query heads
    int32_t n_ctx = 0;   // positions held

    kv_geometry() = default;
    kv_geometry(const kv_shape & s, int32_t n_head_, int32_t n_ctx_) : kv_shape(s), n_head(n_head_), n_ctx(n_ctx_) {}
};

class kv_cache {
public:
    virtual ~kv_cache() = default;

    const kv_geometry & geometry() const { return g_; }

    // Stores k, v (n_tok, n_embd_kv) of layer `il` at positions [pos0, pos0 + n_tok).
    virtual void store(int32_t il, int32_t pos0, int32_t n_tok, const float * k, const float * v) = 0;

    // For each of n_tok query tokens t at position pos0 + t (already stored):
    // out[t] (n_head, head_dim) = softmax(q[t]·K^T * scale) V over positions
    // [0, pos0 + t] (those still held: see slide_shift), per head with
    // grouped-query sharing of KV heads. q (n_tok, n_head, head_dim), rotated
    // at pos, reads the window; q_sink, the same queries rotated at their
    // logical positions pos - slide_shift(pos), reads the sink positions (it
    // may be null when slide_shift is 0 for every token).
    virtual void attend(int32_t il, int32_t pos0, int32_t n_tok, const float * q, const float * q_sink, float * out,
                        float scale) = 0;

    // Positions dropped between the attention sinks and the window as seen by
    // a query at position pos (a sliding window past n_ctx; 0 otherwise). The
    // sinks sit at logical positions [0, sinks), the rest of what the query
    // sees, itself included, at pos - slide_shift(pos).
    virtual int32_t slide_shift(int32_t pos) const { (void) pos; return 0; }

    // Called once all layers of a chunk are stored: `tokens` are the ids at
    // [pos0, pos0 + n_tok).
    virtual void commit(const int32_t * tokens, int32_t pos0, int32_t n_tok) = 0;

    // On an empty sequence: takes the leading stored pages of `tokens`, then
    // the stored leading tokens of the next page (a tail), never all of them:
    // at least the last token is left to evaluate; returns how many positions
    // they cover; those positions need no prefill.
    virtual int32_t reuse_prefix(const int32_t * tokens, int32_t n_tok) = 0;

    // The same, and when the store also holds the logits of the last token
    // (the same prompt ended there before), takes all n_tok positions and
    // copies those logits (n_vocab) into `logits`: then it returns n_tok.
    virtual int32_t reuse_prompt(const int32_t * tokens, int32_t n_tok, float * logits, int32_t n_vocab) {
        (void) logits;
        (void) n_vocab;
        return reuse_prefix(tokens, n_tok);
    }

    // After a forward pass that computed the logits (n_vocab) of the token at
    // `pos`, the sequence's latest: kept with a stored tail (kv-store.h).
    virtual void keep_logits(int32_t pos, const float * logits, int32_t n_vocab) {
        (void) pos;
        (void) logits;
        (void) n_vocab;
    }

    // Forgets every position.
    virtual void clear() = 0;

    // Bytes of K/V this sequence keeps in private RAM (open pages, scratch).
    virtual size_t ram_bytes() const = 0;

    // Limits of layer il's attention (Gemma), both off by default: with
    // window > 0 a query at position p sees only positions
    // [p - window + 1, p] (sealed pages wholly before that are not read);
    // with softcap > 0 each scaled score s becomes softcap * tanh(s / softcap)
    // before the softmax. Set before the first token.
    struct layer_attention {
        int32_t window = 0;
        float softcap = 0.0f;
    };
    void set_layer_attention(int32_t il, const layer_attention & a) {
        if (layer_attn_.size() < size_t(g_.n_layer)) layer_attn_.resize(size_t(g_.n_layer));
        layer_attn_[size_t(il)] = a;
    }
    layer_attention get_layer_attention(int32_t il) const {
        return size_t(il) < layer_attn_.size() ? layer_attn_[size_t(il)] : layer_attention();
    }

protected:
    explicit kv_cache(const kv_geometry & g) : g_(g) {}
    kv_geometry g_;
    std::vector<layer_attention> layer_attn_;  // (n_layer) or empty: no limits
};

} // namespace gloas
