#include "decoder/llama-gguf.h"

#include "base/error.h"

#include <vector>

namespace gloas {

void llama_gguf_set_hparams(gguf_writer & w, const llama_gguf_hparams & hp) {
    const int64_t head_dim = hp.head_dim > 0 ? hp.head_dim : (hp.n_head > 0 ? hp.n_embd / hp.n_head : 0);
    auto u32 = [](const char * what, int64_t v) {
        if (v <= 0 || v > int64_t(UINT32_MAX)) throw error(format("llama model: %s = %lld is out of range", what, (long long) v));
        return uint32_t(v);
    };
    if (hp.arch.empty()) throw error("llama model: no architecture");
    const std::string a = hp.arch + ".";
    auto key = [&](const char * k) { return a + k; };
    w.set_str("general.architecture", hp.arch);
    w.set_str("general.name", hp.name);
    if (!type_is_weight(hp.wtype))
        throw error(format("llama model: %s is an activation type, not a weight type", type_name(hp.wtype)));
    w.set_u32("general.file_type", traits(hp.wtype).file_type);
    if (traits(hp.wtype).is_quantized) w.set_u32("general.quantization_version", 2);
    w.set_u32(key("context_length"), u32("context_length", hp.n_ctx));
    w.set_u32(key("embedding_length"), u32("embedding_length", hp.n_embd));
    w.set_u32(key("block_count"), u32("block_count", hp.n_layer));
    w.set_u32(key("feed_forward_length"), u32("feed_forward_length", hp.n_ff));
    w.set_u32(key("rope.dimension_count"), u32("head_dim", hp.n_rot > 0 ? hp.n_rot : head_dim));
    w.set_u32(key("attention.head_count"), u32("head_count", hp.n_head));
    w.set_u32(key("attention.head_count_kv"), u32("head_count_kv", hp.n_head_kv));
    if (head_dim * hp.n_head != hp.n_embd) {
        w.set_u32(key("attention.key_length"), uint32_t(head_dim));
        w.set_u32(key("attention.value_length"), uint32_t(head_dim));
    }
    w.set_f32(key("attention.layer_norm_rms_epsilon"), hp.rms_eps);
    w.set_f32(key("rope.freq_base"), hp.rope_freq_base);
    w.set_u32(key("vocab_size"), u32("vocab_size", hp.n_vocab));
    if (hp.rope_linear > 0.0f) {
        w.set_str(key("rope.scaling.type"), "linear");
        w.set_f32(key("rope.scaling.factor"), hp.rope_linear);
    }
    if (hp.ctx_orig > 0) w.set_u32(key("rope.scaling.original_context_length"), u32("original_context_length", hp.ctx_orig));
    if (hp.rope_attn_factor > 0.0f) w.set_f32(key("rope.scaling.attn_factor"), hp.rope_attn_factor);
    if (hp.sliding_window > 0) w.set_u32(key("attention.sliding_window"), u32("sliding_window", hp.sliding_window));
    if (hp.attn_softcap > 0.0f) w.set_f32(key("attn_logit_softcapping"), hp.attn_softcap);
    if (hp.final_softcap > 0.0f) w.set_f32(key("final_logit_softcapping"), hp.final_softcap);
}

void llama_gguf_set_vocab(gguf_writer & w, const vocab & v) {
    if (v.scores.size() != v.pieces.size() || v.types.size() != v.pieces.size())
        throw error("vocabulary: pieces, scores and types differ in length");
    std::vector<int32_t> types(v.types.size());
    for (size_t i = 0; i < types.size(); ++i) types[i] = int32_t(v.types[i]);
    const bool bpe = v.kind == vocab_kind::BPE;
    w.set_str("tokenizer.ggml.model", bpe ? "gpt2" : "llama");
    w.set_str("tokenizer.ggml.pre", bpe && !v.pre.empty() ? v.pre : "default");
    w.set_str_array("tokenizer.ggml.tokens", v.pieces);
    if (!bpe) w.set_array("tokenizer.ggml.scores", v.scores);
    w.set_array("tokenizer.ggml.token_type", types);
    if (bpe) w.set_str_array("tokenizer.ggml.merges", v.merges);
    if (v.bos >= 0) w.set_u32("tokenizer.ggml.bos_token_id", uint32_t(v.bos));
    if (v.eos >= 0) w.set_u32("tokenizer.ggml.eos_token_id", uint32_t(v.eos));
    if (v.unk >= 0) w.set_u32("tokenizer.ggml.unknown_token_id", uint32_t(v.unk));
    w.set_bool("tokenizer.ggml.add_bos_token", v.add_bos);
    w.set_bool("tokenizer.ggml.add_eos_token", false);
    if (!bpe && !v.add_space_prefix) w.set_bool("tokenizer.ggml.add_space_prefix", false);
}

std::string llama_tensor_name(llama_tensor t, int64_t layer) {
    const char * s = "";
    switch (t) {
        case llama_tensor::TOKEN_EMBD:  return "token_embd.weight";
        case llama_tensor::OUTPUT_NORM: return "output_norm.weight";
        case llama_tensor::OUTPUT:      return "output.weight";
        case llama_tensor::ATTN_NORM:   s = "attn_norm"; break;
        case llama_tensor::ATTN_Q:      s = "attn_q"; break;
        case llama_tensor::ATTN_K:      s = "attn_k"; break;
        case llama_tensor::ATTN_V:      s = "attn_v"; break;
        case llama_tensor::ATTN_OUTPUT: s = "attn_output"; break;
        case llama_tensor::FFN_NORM:    s = "ffn_norm"; break;
        case llama_tensor::FFN_GATE:    s = "ffn_gate"; break;
        case llama_tensor::FFN_DOWN:    s = "ffn_down"; break;
        case llama_tensor::FFN_UP:      s = "ffn_up"; break;
    }
    return "blk." + std::to_string(layer) + "." + s + ".weight";
}

} // namespace gloas
