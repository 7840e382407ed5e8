// The Llama forward pass over one sequence.
//
// Per layer: rmsnorm -> q,k,v = x·W -> rope(q, k) -> K/V store -> attention
// -> x += att·Wo -> rmsnorm -> x += W2(silu(W1 x) * W3 x); then the final norm
// and the output projection of the last token.
//
// Prompts are evaluated in chunks of n_ubatch tokens (PREFILL: one matmul per
// weight per chunk, every weight read once per chunk); a single token is the
// DECODE case of the same code. All buffers are allocated here, at creation:
// nothing is allocated per token.
#pragma once

#include "kvcache/kv-sequence.h"
#include "kvcache/kv-store.h"
#include "decoder/model.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace gloas {

struct context_params {
    int32_t n_ctx = 0;       // positions; 0: the model's training context
    int32_t n_ubatch = 512;  // prefill chunk size (activation memory is linear in it)
    int32_t n_threads = 0;   // 0: all hardware threads
    kv_store_params kv;      // K/V pages: type, page size, folder, capacity, policy
    sparse_params sparse;    // sparse decode attention (ratio 1: dense)
};

class context {
public:
    // Throws gloas::error for impossible parameters.
    context(const model & m, const context_params & p);

    // Evaluates `n` tokens at positions [n_past, n_past + n) and returns the
    // logits (n_vocab) of the last one. Throws gloas::error for token ids out of
    // range or when the context would overflow; nothing is changed then.
    const float * eval(const int32_t * tokens, int32_t n);

    // Like eval, and also hands the logits (n_vocab) of every token, in order,
    // to `on_logits(position, logits)` (perplexity needs them all).
    using logits_fn = std::function<void(int32_t pos, const float * logits)>;
    const float * eval(const int32_t * tokens, int32_t n, const logits_fn & on_logits);

    // Evaluates a prompt on an empty context, first reusing every leading page
    // of it already in the K/V store (those positions are not computed again).
    // Returns the last token's logits.
    const float * eval_prompt(const int32_t * tokens, int32_t n);
    // Positions the last eval_prompt took from the store.
    int32_t n_reused() const { return n_reused_; }

    int32_t n_past() const { return n_past_; }
    int32_t n_ctx() const { return n_ctx_; }
    const model & get_model() const { return m_; }
    const kv_sequence & kv() const { return *kv_; }
    kv_store & store() { return *store_; }
    // Forgets every position: the next eval starts at position 0.
    void reset();

private:
    void forward(const int32_t * tokens, int32_t n, int32_t pos0, const logits_fn * on_logits);

    const model & m_;
    int32_t n_ctx_ = 0;
    int32_t n_ubatch_ = 0;
    int32_t n_past_ = 0;
    int32_t n_reused_ = 0;
    std::unique_ptr<kv_store> store_;
    std::unique_ptr<kv_sequence> kv_;

    // Scratch, rows = tokens of the current chunk.
    std::vector<float> x_;       // (n_ubatch, n_embd)  residual stream
    std::vector<float> xb_;      // (n_ubatch, n_embd)  normed input / output projections
    std::vector<float> q_;       // (n_ubatch, n_embd_q)
    std::vector<float> k_;       // (n_ubatch, n_embd_kv)
    std::vector<float> v_;       // (n_ubatch, n_embd_kv)
    std::vector<float> att_;     // (n_ubatch, n_embd_q)
    std::vector<float> hb_;      // (n_ubatch, n_ff)
    std::vector<float> hb2_;     // (n_ubatch, n_ff)
    std::vector<float> logits_;  // (n_vocab), or (n_ubatch, n_vocab) once all logits were asked for
    std::vector<uint8_t> work_;  // matmul activation scratch
};

} // namespace gloas
