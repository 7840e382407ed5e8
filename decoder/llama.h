// The Llama forward pass over one or several sequences.
//
// Per layer: rmsnorm -> q,k,v = x·W -> rope(q, k) -> K/V store -> attention
// -> x += att·Wo -> rmsnorm -> x += W2(silu(W1 x) * W3 x); then the final norm
// and the output projection of the last token. The other families' steps
// (model.h) are small branches of the same pass: per-head q/k norms before
// rope, scaled embeddings, norms of the attention and FFN outputs, GELU
// gating, soft-capped logits; windows and soft-capped scores are the K/V
// store's (kv_cache::set_layer_attention).
//
// Prompts are evaluated in chunks of n_ubatch tokens (PREFILL: one matmul per
// weight per chunk, every weight read once per chunk); a single token is the
// DECODE case of the same code. A batch may mix tokens of several sequences
// (HYBRID: prefill chunks of some, decode tokens of others): the matmuls take
// all of a chunk's tokens at once (every weight read once per chunk), while
// rope, the K/V store and attention go per sequence, each token at its own
// position. Every sequence is its own kv_sequence on the context's one
// kv_store, so sequences with a common prefix share its sealed pages.
//
// The forward pass runs on a backend (tensor/backend.h) and reaches each
// sequence's K/V only through the kv_cache interface: the weights are made
// resident once, the activations live in backend buffers, and only token ids
// and positions go in and logits come out.
// All buffers are allocated at creation (the batch bookkeeping and the logits
// grow to the largest batch seen): nothing is allocated per token.
#pragma once

#include "kvcache/kv-cache.h"
#include "kvcache/kv-sequence.h"
#include "kvcache/kv-store.h"
#include "decoder/model.h"
#include "tensor/backend.h"
#include "base/error.h"

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
    // Past n_ctx positions: off, eval/decode throw context_full_error; on,
    // each sequence keeps its first sink_pages pages and slides a window over
    // the rest (StreamingLLM; kv-sequence.h), so positions grow without bound
    // while at most n_ctx of them are attended. Needs n_ctx >= (sink_pages + 2) * page_tokens.
    slide_params slide;
    int32_t n_seq_max = 1;   // sequences the context holds, ids [0, n_seq_max)
    // Layers on the GPU (the CUDA backend, tensor/cuda/cuda-backend.h): 0,
    // none; any other value (-1: all) runs the whole forward pass there, as
    // there is no partial offload. When the GPU cannot run it (no device, too
    // little memory, a weight type it does not read) the CPU runs it, said
    // once on stderr, or with gpu_required the context is not made (a
    // gloas::error with the reason).
    int32_t n_gpu_layers = 0;
    bool gpu_required = false;
    int32_t gpu_device = 0;  // the CUDA device's index
};

// Thrown when positions would go past the context size (a gloas::error, so
// callers that catch error keep working; the C API maps it to CONTEXT_FULL).
struct context_full_error : error {
    using error::error;
};

// Tokens of several sequences evaluated together. Arrays of n_tokens entries;
// pos and seq may be null (sequence 0; each token continues its sequence),
// logits may be null (only the last token's logits are kept).
// Preconditions checked by decode (gloas::error otherwise, nothing changed):
// token ids in the vocabulary, sequence ids in [0, n_seq_max), the tokens of
// one sequence contiguous in the batch at consecutive positions starting at
// that sequence's n_past, and every position below n_ctx (unless the context
// slides).
struct batch {
    int32_t n_tokens = 0;
    const int32_t * token = nullptr;  // (n_tokens)
    const int32_t * pos = nullptr;    // (n_tokens) or null
    const int32_t * seq = nullptr;    // (n_tokens) or null
    const int8_t * logits = nullptr;  // (n_tokens) non-zero: keep this token's logits; or null
};

class context {
public:
    // Throws gloas::error for impossible parameters.
    context(const model & m, const context_params & p);
    ~context();
    context(const context &) = delete;
    context & operator=(const context &) = delete;

    // eval, eval_prompt, n_past, n_reused, kv and reset act on sequence 0.

    // Evaluates `n` tokens at positions [n_past, n_past + n) and returns the
    // logits (n_vocab) of the last one. Throws gloas::error for token ids out of
    // range or when the context would overflow (never when it slides);
    // nothing is changed then.
    const float * eval(const int32_t * tokens, int32_t n);

    // Like eval, and also hands the logits (n_vocab) of every token, in order,
    // to `on_logits(position, logits)` (perplexity needs them all).
    using logits_fn = std::function<void(int32_t pos, const float * logits)>;
    const float * eval(const int32_t * tokens, int32_t n, const logits_fn & on_logits);

    // Evaluates a prompt on an empty context, first reusing every leading page
    // of it already in the K/V store (those positions are not computed again;
    // all of them when the store also has the last token's logits, the same
    // prompt having ended there before). Returns the last token's logits.
    const float * eval_prompt(const int32_t * tokens, int32_t n);
    // Positions the last eval_prompt took from the store.
    int32_t n_reused() const { return n_reused_; }

    int32_t n_past() const { return seqs_[0].n_past; }
    int32_t n_ctx() const { return n_ctx_; }
    // Whether sequences slide past n_ctx positions (context_params::slide).
    bool slides() const { return slides_; }
    const model & get_model() const { return m_; }
    // The backend the forward pass runs on: "cpu" or "cuda".
    const char * backend_name() const { return be_->name(); }
    const kv_sequence & kv() const { return seq_kv(0); }
    kv_store & store() { return *store_; }
    // Forgets every position of every sequence: the next eval starts at position 0.
    void reset();

    // Evaluates a batch (see `batch`) in one forward pass per n_ubatch chunk.
    // A sequence that is empty before the batch first takes the leading pages
    // of its tokens already in the store (reuse_prefix; never past its first
    // token whose logits are kept): those positions are not computed again.
    // The kept logits are readable through batch_logits until the next call.
    void decode(const batch & b);
    // Logits (n_vocab) of token i of the last decode; null if not kept.
    const float * batch_logits(int32_t i) const;
    // Tokens of the last decode (0 before the first).
    int32_t batch_size() const { return int32_t(b_logit_row_.size()); }
    // Positions the last decode took from the store, all sequences together.
    int32_t n_batch_reused() const { return n_batch_reused_; }

    int32_t n_seq_max() const { return int32_t(seqs_.size()); }
    // Preconditions (GLOAS_ASSERT): 0 <= s < n_seq_max.
    int32_t seq_n_past(int32_t s) const { return seqs_[size_t(s)].n_past; }
    const std::vector<int32_t> & seq_tokens(int32_t s) const { return seqs_[size_t(s)].tokens; }
    // Sequence s's K/V as pages of the store (statistics, the page list):
    // every kv_cache the context makes is a kv_sequence.
    const kv_sequence & seq_kv(int32_t s) const;
    // Forgets sequence s (its pages are released to the store).
    void seq_clear(int32_t s);
    // Makes sequence `dst` (cleared first) hold the tokens of `src`: every
    // sealed page of src is shared (dst references the same store slots,
    // found through the prefix index), and only the positions of src's open
    // page are computed again. Returns the logits of the last token (null if
    // src is empty). Precision rule of kv_sequence: the results are identical.
    const float * seq_fork(int32_t src, int32_t dst);
    // Fills sequence s (cleared first) with `tokens`, reusing stored pages.
    // Returns the last token's logits.
    const float * seq_restore(int32_t s, const int32_t * tokens, int32_t n);
    // Makes sequence s (cleared first) hold the leading pages of `tokens`
    // already in the store, never the last token (its logits are still to be
    // computed). Returns the positions taken; a decode of tokens[returned..n)
    // continues the sequence. Lets a caller that prefills in chunks of its
    // own (a server's scheduler) reuse a whole prompt's stored prefix first.
    int32_t seq_reuse_prefix(int32_t s, const int32_t * tokens, int32_t n);
    // Pages of sequence s whose store slot another sequence of this context
    // also holds.
    int32_t seq_n_shared_pages(int32_t s) const;

private:
    // A contiguous run of one sequence's tokens inside a chunk.
    struct run {
        int32_t seq = 0;
        int32_t start = 0;  // first row of the chunk
        int32_t n = 0;
        int32_t pos0 = 0;   // position of the first token
    };
    struct sequence {
        std::unique_ptr<kv_cache> kv;
        int32_t n_past = 0;
        std::vector<int32_t> tokens;  // committed token ids, (n_past)
    };
    // The model's weights as the backend holds them (the views its ops read).
    struct weights {
        tensor tok_embd, output_norm, output, rope_freqs, rope_long, rope_short;
        std::vector<layer_weights> layers;
    };

    // Evaluates n tokens (n <= n_ubatch) made of `runs`; writes the logits of
    // the rows listed in `rows` (n_rows) to out (n_rows, n_vocab).
    void forward(const int32_t * tokens, int32_t n, const run * runs, int32_t n_runs, const int32_t * rows,
                 int32_t n_rows, float * out);
    void check_tokens(const int32_t * tokens, int32_t n) const;
    // Makes the weights resident on be_ and allocates the activation buffers;
    // unplace releases them (before be_ goes).
    void place(const context_params & p);
    void unplace();

    const model & m_;
    int32_t n_ctx_ = 0;
    int32_t n_ubatch_ = 0;
    int32_t n_reused_ = 0;
    int32_t n_batch_reused_ = 0;
    bool slides_ = false;
    std::unique_ptr<backend> be_;  // declared before what it allocates, so it goes last
    weights w_;
    std::vector<ops::rope_params> rope_;  // (n_layer) each layer's rope, its factors in backend memory
    std::unique_ptr<kv_store> store_;
    std::vector<sequence> seqs_;

    // Batch bookkeeping (grows to the largest batch, then reused).
    std::vector<int32_t> b_tok_, b_seq_, b_pos_, b_row_;  // compacted batch; kept row per token
    std::vector<int32_t> b_rows_;                         // chunk rows whose logits are kept
    std::vector<int32_t> b_logit_row_;                    // batch index -> row of batch_logits_, -1
    std::vector<float> batch_logits_;                     // (kept rows, n_vocab)
    std::vector<run> b_runs_;
    std::vector<int32_t> b_next_, b_first_;               // per sequence: next position, first index

    // Host side of a chunk's inputs.
    std::vector<int32_t> h_pos_;  // (2, n_ubatch) positions; logical positions past a slide

    // Backend buffers, rows = tokens of the current chunk.
    buffer ids_;     // (n_ubatch) int32 token ids
    buffer pos_;     // (2, n_ubatch) int32 positions; logical positions (q_sink's) past a slide
    buffer x_;       // (n_ubatch, n_embd)  residual stream
    buffer xb_;      // (n_ubatch, n_embd)  normed input / output projections
    buffer q_;       // (n_ubatch, n_embd_q)
    buffer q_sink_;  // (n_ubatch, n_embd_q) q rotated at logical positions; empty unless sliding
    buffer k_;       // (n_ubatch, n_embd_kv)
    buffer v_;       // (n_ubatch, n_embd_kv)
    buffer att_;     // (n_ubatch, n_embd_q)
    buffer hb_;      // (n_ubatch, n_ff)
    buffer hb2_;     // (n_ubatch, n_ff)
    buffer out_;     // (rows, n_vocab) logits of the kept rows: one row, grown to the most rows kept
    std::vector<float> logits_;  // (n_vocab), or (n_ubatch, n_vocab) once all logits were asked for
    // Host copies for the kv_caches when backend memory is not host memory
    // (backend::host_addressable); empty otherwise.
    std::vector<float> h_k_, h_v_;          // (n_ubatch, n_embd_kv)
    std::vector<float> h_q_, h_qs_, h_att_; // (n_ubatch, n_embd_q); h_qs_ only when sliding
};

} // namespace gloas
