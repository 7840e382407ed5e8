// A Llama-family model: hyperparameters, weight views and its tokenizer.
//
// Two file formats load:
//  - GGUF (v2/v3) with llama.cpp's metadata keys (prefixed by the architecture
//    name, "<arch>.context_length", ...) and tensor names; weights are views
//    into the read-only mapping. Architectures (general.architecture):
//      "llama": Llama 1/2/3, TinyLlama, Mistral, SmolLM (llama.cpp names them
//               all so); NORM rope; optional Q/K/V/O biases.
//      "qwen2": the same blocks with Q/K/V biases; NEOX rope.
//    Both: <arch>.attention.key_length is head_dim when present (it may differ
//    from n_embd / n_head), <arch>.rope.dimension_count is n_rot,
//    <arch>.rope.freq_base the rope base, "linear" rope scaling by
//    <arch>.rope.scaling.factor, the optional rope_freqs.weight (n_rot/2 f32,
//    Llama 3.1 scaling: the angle of pair i is divided by factor i), and a
//    missing output.weight means the output is tied to token_embd.
//      "qwen3": qwen2's blocks without Q/K/V biases and with a per-head
//               RMSNorm of q and k before rope (attn_q_norm, attn_k_norm).
//      "phi3":  Phi-3/3.5/4-mini; NEOX rope, q/k/v fused in attn_qkv (or
//               separate), gate and up fused in ffn_up (gate first), the
//               long/short rope factors rope_factors_long/short (long when
//               the context is larger than rope.scaling.original_context_length,
//               as llama.cpp picks them) and rope.scaling.attn_factor.
//      "gemma2", "gemma3": embeddings scaled by sqrt(n_embd), norms after
//               attention and FFN (post_attention_norm, post_ffw_norm), a
//               GELU(tanh)-gated FFN, the query scale 1/sqrt(head_dim)
//               (1/sqrt(n_embd/n_head) for the 27B shapes, as llama.cpp),
//               sliding-window layers (attention.sliding_window: gemma2 every
//               other layer from layer 0, gemma3 five of every six), and
//               gemma2's attention and final-logit soft-capping; gemma3 adds
//               attn_q_norm/attn_k_norm and rope base 10000 on its sliding
//               layers. Norm weights are used as stored (llama.cpp's converter
//               has already added Gemma's +1).
//    Other architectures are refused naming them; a missing required tensor,
//    or a tensor nothing reads (a variant not supported: mixture-of-experts
//    and vision towers are named as such), is refused naming it.
//  - llama2.c checkpoints (the legacy export): seven int32 (dim, hidden_dim,
//    n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size
//    signals a separate classifier — a hack of that format), then f32 arrays in
//    the order token_embedding (vocab, dim), rms_att (L, dim), wq (L, dim, dim),
//    wk (L, kv_dim, dim), wv (L, kv_dim, dim), wo (L, dim, dim), rms_ffn (L, dim),
//    w1 (L, hidden, dim), w2 (L, dim, hidden), w3 (L, hidden, dim), rms_final
//    (dim), freq_cis_real and freq_cis_imag (seq_len, head_size/2) each, unused
//    here, and wcls (vocab, dim) if unshared. Its tokenizer is a separate
//    tokenizer.bin.
// Every shape, type and size is checked at load; a bad file throws gloas::error
// naming the file and the tensor or field.
#pragma once

#include "decoder/gguf.h"
#include "decoder/tokenizer.h"
#include "kvcache/kv-shape.h"
#include "tensor/mmap.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace gloas {

// The K/V shape (n_layer, n_head_kv, head_dim; head_dim is usually
// n_embd / n_head) and the rest of the model's hyperparameters.
struct hparams : kv_shape {
    int32_t n_vocab = 0;
    int32_t n_ctx_train = 0;   // context length the model was trained with
    int32_t n_embd = 0;        // model width (dim)
    int32_t n_ff = 0;          // FFN hidden width
    int32_t n_head = 0;
    int32_t n_rot = 0;         // rotary dims per head (<= head_dim, even)
    float   rms_eps = 1e-5f;
    float   rope_freq_base = 10000.0f;
    float   rope_freq_scale = 1.0f;  // 1 / linear rope scaling factor
    ops::rope_style rope_type = ops::rope_style::NORM;
    float   rope_attn_factor = 1.0f;  // rotated dims of q and k scaled by it (phi3's long rope)
    int32_t n_ctx_orig = 0;           // phi3: the context the short rope factors are for

    // Per-architecture blocks (zero / false: the Llama block).
    bool    gelu_ffn = false;         // GELU(tanh) gating instead of SiLU
    bool    post_norms = false;       // RMSNorm of the attention and FFN outputs
    float   embd_scale = 0.0f;        // > 0: embeddings multiplied by it
    float   attn_scale = 0.0f;        // > 0: query scale instead of 1/sqrt(head_dim)
    float   attn_softcap = 0.0f;      // > 0: scores s -> c*tanh(s/c) before softmax
    float   final_softcap = 0.0f;     // > 0: logits capped the same way
    int32_t n_swa = 0;                // sliding window (positions a query sees, itself included); 0: none
    int32_t swa_period = 0;           // layer il slides when il % period < period - 1
    float   rope_freq_base_swa = 0.0f;  // > 0: rope base of the sliding layers (scale 1 there)

    int32_t n_embd_q() const { return n_head * head_dim; }
    // Whether layer il attends only to the last n_swa positions.
    bool is_swa(int32_t il) const { return n_swa > 0 && swa_period > 0 && il % swa_period < swa_period - 1; }
    float query_scale() const { return attn_scale > 0.0f ? attn_scale : 1.0f / std::sqrt(float(head_dim)); }
};

struct layer_weights {
    tensor attn_norm;  // (n_embd) f32
    tensor wq;         // (n_embd_q, n_embd)
    tensor wk;         // (n_embd_kv, n_embd)
    tensor wv;         // (n_embd_kv, n_embd)
    tensor wo;         // (n_embd, n_embd_q)
    tensor ffn_norm;   // (n_embd) f32
    tensor ffn_gate;   // (n_ff, n_embd)   w1
    tensor ffn_down;   // (n_embd, n_ff)   w2
    tensor ffn_up;     // (n_ff, n_embd)   w3
    // Optional f32 biases added after the projections; empty when absent.
    tensor bq;         // (n_embd_q)
    tensor bk;         // (n_embd_kv)
    tensor bv;         // (n_embd_kv)
    tensor bo;         // (n_embd)
    // Optional f32 norms of other families; empty when absent.
    tensor q_norm;     // (head_dim) per-head RMSNorm of q before rope
    tensor k_norm;     // (head_dim)
    tensor attn_post_norm;  // (n_embd) of the attention output
    tensor ffn_post_norm;   // (n_embd) of the FFN output
};

struct model_params {
    std::string path;
    std::string tokenizer_path;  // llama2.c only; empty: looked up beside the model
};

class model {
public:
    // Throws gloas::error naming the file and what is wrong.
    static std::unique_ptr<model> load(const model_params & p);

    hparams hp;
    tensor tok_embd;      // (n_vocab, n_embd)
    tensor output_norm;   // (n_embd) f32
    tensor output;        // (n_vocab, n_embd); tok_embd when tied
    tensor rope_freqs;    // (n_rot/2) f32 rope frequency factors, or empty
    tensor rope_long, rope_short;  // phi3: (n_rot/2) f32 factors past / within n_ctx_orig, or empty
    std::vector<layer_weights> layers;
    tokenizer tok;

    std::string path;
    std::string file_format;  // "gguf" or "llama2.c"
    std::string arch = "llama";  // general.architecture ("llama" for llama2.c)
    std::string name;        // general.name or the file name
    type weight_type = type::F32;  // type of the largest matrices (for display)
    size_t weight_bytes = 0;       // bytes of all weight tensors
    int64_t n_params = 0;          // number of weight values

    // Bytes of weights read to decode one token: every matrix once, plus one
    // row of the embedding table (the bandwidth floor of decode).
    size_t bytes_per_token() const;

    // The rope of this model for ops::rope_ex: style, base, scale and the
    // factors (pointing into the weights; valid while the model lives).
    ops::rope_params rope() const;
    // The rope of a context of n_ctx positions for layer il: phi3's long or
    // short factors by n_ctx, gemma3's local base on its sliding layers.
    ops::rope_params rope(int32_t n_ctx, int32_t il) const;

    // Identifies the weights (shape, types and a sample of every tensor's
    // bytes): K/V pages computed with one model are never reused by another.
    uint64_t fingerprint = 0;

private:
    model() = default;
    void load_gguf(const model_params & p);
    void load_llama2c(const model_params & p);
    void finish();  // checks shapes, computes sizes

    std::unique_ptr<gguf_file> gguf_;
    mapped_file map_;  // llama2.c checkpoint
};

// Finds a tokenizer for a llama2.c checkpoint: tok<vocab>.bin, then tokenizer.bin,
// in the checkpoint's folder. Empty if none.
std::string find_llama2c_tokenizer(const std::string & model_path, int32_t n_vocab);

} // namespace gloas
