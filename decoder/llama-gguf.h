// Metadata keys and tensor names of a Llama GGUF, as llama.cpp writes them;
// shared by the tools that write models (gloas-convert, gloas-gen-model).
//
// Keys written by llama_gguf_set_hparams, in this order (with "<arch>."
// for "llama." when another architecture is named; then its optional keys):
//   general.architecture = "llama", general.name, general.file_type (llama_ftype),
//   general.quantization_version = 2 (quantized weight types only),
//   llama.context_length, llama.embedding_length, llama.block_count,
//   llama.feed_forward_length, llama.rope.dimension_count (= head_dim),
//   llama.attention.head_count, llama.attention.head_count_kv,
//   llama.attention.key_length / value_length (only when head_dim != n_embd / n_head),
//   llama.attention.layer_norm_rms_epsilon, llama.rope.freq_base, llama.vocab_size.
// Tensors (ne = GGUF order, innermost first):
//   token_embd.weight (n_embd, n_vocab), output_norm.weight (n_embd),
//   output.weight (n_embd, n_vocab; absent when tied to token_embd),
//   blk.N.attn_norm (n_embd), attn_q (n_embd, n_head*head_dim),
//   attn_k / attn_v (n_embd, n_head_kv*head_dim), attn_output (n_head*head_dim, n_embd),
//   ffn_norm (n_embd), ffn_gate / ffn_up (n_embd, n_ff), ffn_down (n_ff, n_embd),
//   each with the suffix ".weight".
#pragma once

#include "decoder/gguf-writer.h"
#include "decoder/tokenizer.h"
#include "kvcache/kv-shape.h"
#include "quant/types.h"

#include <cstdint>
#include <string>

namespace gloas {

// n_layer, n_head_kv and head_dim are the kv_shape's (head_dim 0: n_embd / n_head).
struct llama_gguf_hparams : kv_shape {
    std::string arch = "llama"; // general.architecture and the keys' prefix (model.h lists them)
    std::string name;           // general.name
    int64_t n_vocab = 0;
    int64_t n_ctx = 0;          // llama.context_length
    int64_t n_embd = 0;
    int64_t n_ff = 0;
    int64_t n_head = 0;
    float   rms_eps = 1e-5f;
    float   rope_freq_base = 10000.0f;
    type    wtype = type::F32;  // type of most weights: general.file_type
    // Written only when set (> 0), as llama.cpp's converter writes them:
    int64_t n_rot = 0;            // rope.dimension_count (0: head_dim)
    float   rope_linear = 0.0f;   // rope.scaling.type "linear", rope.scaling.factor
    int64_t ctx_orig = 0;         // rope.scaling.original_context_length (phi3)
    float   rope_attn_factor = 0.0f;  // rope.scaling.attn_factor (phi3)
    int64_t sliding_window = 0;   // attention.sliding_window (gemma2, gemma3)
    float   attn_softcap = 0.0f;  // attn_logit_softcapping (gemma2)
    float   final_softcap = 0.0f; // final_logit_softcapping (gemma2)
};

// The general.* and llama.* keys above (general.file_type from wtype's
// type_traits). Throws gloas::error when a dimension is not positive or does
// not fit in u32, or wtype is not a weight type.
void llama_gguf_set_hparams(gguf_writer & w, const llama_gguf_hparams & hp);

// tokenizer.ggml.* of a vocabulary. A GPT-2-style BPE one (vocab_kind::BPE):
// model = "gpt2", pre = v.pre, tokens, token_type, merges, the ids and
// add_bos_token. A SentencePiece one: model = "llama",
// pre = "default", tokens, scores, token_type, bos/eos/unknown_token_id (ids
// that are -1 are left out), add_bos_token, add_eos_token = false, and
// add_space_prefix when it is false.
void llama_gguf_set_vocab(gguf_writer & w, const vocab & v);

enum class llama_tensor {
    TOKEN_EMBD, OUTPUT_NORM, OUTPUT,
    ATTN_NORM, ATTN_Q, ATTN_K, ATTN_V, ATTN_OUTPUT, FFN_NORM, FFN_GATE, FFN_DOWN, FFN_UP,
};
// "token_embd.weight", "blk.3.attn_q.weight", ... (layer ignored for the
// first three).
std::string llama_tensor_name(llama_tensor t, int64_t layer = -1);

} // namespace gloas
