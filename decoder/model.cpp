#include "decoder/model.h"

#include "base/error.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <set>
#include <utility>
#include <sys/stat.h>
#include <xxhash.h>

namespace gloas {

namespace {

bool file_exists(const std::string & p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string dir_of(const std::string & p) {
    size_t slash = p.find_last_of('/');
    return slash == std::string::npos ? std::string(".") : p.substr(0, slash);
}

std::string base_of(const std::string & p) {
    size_t slash = p.find_last_of('/');
    return slash == std::string::npos ? p : p.substr(slash + 1);
}

// Shape as "(a, b)" with the outer dimension first, as the comments write it.
std::string shape_str(int n_dims, const int64_t * ne) {
    std::string s = "(";
    for (int i = n_dims - 1; i >= 0; --i) {
        s += std::to_string(ne[i]);
        if (i) s += ", ";
    }
    return s + ")";
}

// Architectures whose blocks are the Llama ones (see model.h), with llama.cpp's
// names and rope types (llama_model_rope_type).
struct arch_info {
    const char * name;
    ops::rope_style rope;
};
constexpr arch_info k_archs[] = {
    {"llama", ops::rope_style::NORM},
    {"qwen2", ops::rope_style::NEOX},
    {"qwen3", ops::rope_style::NEOX},
    {"phi3", ops::rope_style::NEOX},
    {"gemma2", ops::rope_style::NEOX},
    {"gemma3", ops::rope_style::NEOX},
};

// Rows [r0, r0 + n) of a 2-D weight (a part of a fused projection).
tensor rows_of(const tensor & t, int64_t r0, int64_t n) { return make_tensor_2d(t.t, t.ne[0], n, t.row(r0)); }

// Calls fn(const tensor &) for every weight of a layer, the optional biases
// only when present.
template <class F>
void for_each_weight(const layer_weights & l, F fn) {
    for (const tensor * t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm, &l.ffn_gate, &l.ffn_down, &l.ffn_up})
        fn(*t);
    for (const tensor * t : {&l.bq, &l.bk, &l.bv, &l.bo, &l.q_norm, &l.k_norm, &l.attn_post_norm, &l.ffn_post_norm})
        if (!t->empty()) fn(*t);
}

} // namespace

std::string find_llama2c_tokenizer(const std::string & model_path, int32_t n_vocab) {
    const std::string dir = dir_of(model_path);
    for (const std::string & name : {"tok" + std::to_string(n_vocab) + ".bin", std::string("tokenizer.bin")}) {
        std::string p = dir + "/" + name;
        if (file_exists(p)) return p;
    }
    return {};
}

std::unique_ptr<model> model::load(const model_params & p) {
    std::unique_ptr<model> m(new model());
    m->path = p.path;
    m->name = base_of(p.path);
    // The first four bytes tell the format apart.
    {
        FILE * f = std::fopen(p.path.c_str(), "rb");
        if (!f) throw error(format("%s: cannot open: %s", p.path.c_str(), std::strerror(errno)));
        char magic[4] = {};
        size_t n = std::fread(magic, 1, 4, f);
        std::fclose(f);
        if (n == 4 && std::memcmp(magic, "GGUF", 4) == 0) m->load_gguf(p);
        else m->load_llama2c(p);
    }
    m->finish();
    return m;
}

void model::load_gguf(const model_params & p) {
    file_format = "gguf";
    gguf_ = gguf_file::open(p.path);
    const gguf_file & f = *gguf_;

    arch = f.get_str("general.architecture");
    if (arch.empty()) f.fail("missing general.architecture");
    const arch_info * ai = nullptr;
    std::string known;
    for (const arch_info & a : k_archs) {
        if (arch == a.name) ai = &a;
        known += known.empty() ? a.name : std::string(", ") + a.name;
    }
    if (!ai) {
        const bool moe = arch.find("moe") != std::string::npos;
        f.fail(format("%sarchitecture '%s' is not supported (supported: %s)", moe ? "mixture-of-experts " : "",
                      arch.c_str(), known.c_str()));
    }
    hp.rope_type = ai->rope;
    if (!p.tokenizer_path.empty())
        f.fail("a separate tokenizer (-z) is only for llama2.c checkpoints; GGUF files carry their own");
    name = f.get_str("general.name", name);

    // "<arch>.<suffix>"
    auto key = [&](const char * suffix) { return arch + "." + suffix; };
    auto need_u32 = [&](const char * suffix) {
        const std::string k = key(suffix);
        if (!f.find(k)) f.fail(format("missing metadata key %s", k.c_str()));
        return int32_t(f.get_u32(k, 0));
    };
    hp.n_embd      = need_u32("embedding_length");
    hp.n_layer     = need_u32("block_count");
    hp.n_ff        = need_u32("feed_forward_length");
    hp.n_head      = need_u32("attention.head_count");
    hp.n_head_kv   = int32_t(f.get_u32(key("attention.head_count_kv"), uint32_t(hp.n_head)));
    hp.n_ctx_train = need_u32("context_length");
    hp.rms_eps     = f.get_f32(key("attention.layer_norm_rms_epsilon"), 1e-5f);
    hp.rope_freq_base = f.get_f32(key("rope.freq_base"), 10000.0f);
    if (hp.n_head <= 0 || hp.n_embd <= 0)
        f.fail(format("%s and %s must be positive", key("embedding_length").c_str(), key("attention.head_count").c_str()));
    if (!(hp.rope_freq_base > 0.0f) || !std::isfinite(hp.rope_freq_base))
        f.fail(format("%s = %g must be positive", key("rope.freq_base").c_str(), double(hp.rope_freq_base)));
    hp.head_dim = int32_t(f.get_u32(key("attention.key_length"), uint32_t(hp.n_embd / hp.n_head)));
    if (f.find(key("attention.value_length")) &&
        f.get_u32(key("attention.value_length"), 0) != uint32_t(hp.head_dim))
        f.fail(format("%s differs from key_length (not supported)", key("attention.value_length").c_str()));
    hp.n_rot = int32_t(f.get_u32(key("rope.dimension_count"), uint32_t(hp.head_dim)));

    // Rope scaling: none, or linear (positions divided by the factor); the
    // older key rope.scale_linear means linear too.
    {
        std::string st = f.get_str(key("rope.scaling.type"), f.find(key("rope.scale_linear")) ? "linear" : "none");
        float factor = 1.0f;
        if (st == "linear") {
            factor = f.get_f32(key("rope.scaling.factor"), f.get_f32(key("rope.scale_linear"), 1.0f));
            if (factor == 0.0f) factor = 1.0f;  // llama.cpp reads 0 as "not set"
        } else if (st != "none" && !(arch == "phi3" && (st == "longrope" || st == "su"))) {  // phi3: the factor tensors
            f.fail(format("%s '%s' is not supported (supported: none, linear)", key("rope.scaling.type").c_str(),
                          st.c_str()));
        }
        if (!(factor > 0.0f) || !std::isfinite(factor))
            f.fail(format("%s = %g must be positive", key("rope.scaling.factor").c_str(), double(factor)));
        hp.rope_freq_scale = 1.0f / factor;
    }

    // The blocks of the other families (model.h), with llama.cpp's defaults.
    const bool gemma = arch == "gemma2" || arch == "gemma3";
    if (gemma) {
        hp.gelu_ffn = true;
        hp.post_norms = true;
        hp.embd_scale = std::sqrt(float(hp.n_embd));
        const bool is_27b = hp.n_layer == (arch == "gemma2" ? 46 : 62);
        hp.attn_scale = 1.0f / std::sqrt(float(is_27b ? hp.n_embd / hp.n_head : hp.head_dim));
    }
    if (arch == "gemma2") {
        hp.n_swa = int32_t(f.get_u32(key("attention.sliding_window"), 4096));
        hp.swa_period = 2;
        hp.attn_softcap = f.get_f32(key("attn_logit_softcapping"), 50.0f);
        hp.final_softcap = f.get_f32(key("final_logit_softcapping"), 30.0f);
    } else if (arch == "gemma3") {
        hp.n_swa = int32_t(f.get_u32(key("attention.sliding_window"), 0));
        if (hp.n_swa > 0) {
            hp.swa_period = 6;
            hp.rope_freq_base_swa = 10000.0f;
        } else {
            hp.final_softcap = f.get_f32(key("final_logit_softcapping"), 0.0f);
        }
    } else if (arch == "phi3") {
        // llama.cpp runs Phi-3 without its sliding window (it reads the key and
        // turns it off), and so does gloas.
        hp.n_ctx_orig = int32_t(f.get_u32(key("rope.scaling.original_context_length"), uint32_t(hp.n_ctx_train)));
        hp.rope_attn_factor = f.get_f32(key("rope.scaling.attn_factor"), 1.0f);
        if (!(hp.rope_attn_factor > 0.0f) || !std::isfinite(hp.rope_attn_factor))
            f.fail(format("%s = %g must be positive", key("rope.scaling.attn_factor").c_str(), double(hp.rope_attn_factor)));
    }
    if (hp.n_swa < 0 || !(hp.attn_softcap >= 0.0f) || !(hp.final_softcap >= 0.0f) || !std::isfinite(hp.attn_softcap) ||
        !std::isfinite(hp.final_softcap))
        f.fail(format("%s, %s and %s must not be negative", key("attention.sliding_window").c_str(),
                      key("attn_logit_softcapping").c_str(), key("final_logit_softcapping").c_str()));

    tok = tokenizer::from_gguf(f);
    hp.n_vocab = tok.n_vocab();
    if (f.find(key("vocab_size")) && f.get_u32(key("vocab_size"), 0) != uint32_t(hp.n_vocab))
        f.fail(format("%s is %u but the tokenizer has %d tokens", key("vocab_size").c_str(),
                      f.get_u32(key("vocab_size"), 0), hp.n_vocab));

    std::set<std::string> used;  // names of the tensors taken
    auto get = [&](const std::string & tname, int64_t ne0, int64_t ne1, bool required = true) -> tensor {
        const gguf_tensor_info * ti = f.find_tensor(tname);
        if (!ti) {
            if (required) f.fail(format("missing tensor '%s'", tname.c_str()));
            return tensor{};
        }
        used.insert(tname);
        const int64_t want[2] = {ne0, ne1};
        const int want_dims = ne1 > 0 ? 2 : 1;
        bool ok = ti->n_dims == want_dims && ti->ne[0] == ne0 && (want_dims == 1 || ti->ne[1] == ne1);
        if (!ok)
            f.fail(format("tensor '%s' has shape %s, expected %s", tname.c_str(),
                          shape_str(ti->n_dims, ti->ne).c_str(), shape_str(want_dims, want).c_str()));
        return ti->view();
    };
    const int64_t E = hp.n_embd, Q = hp.n_embd_q(), KV = hp.n_embd_kv(), F = hp.n_ff, V = hp.n_vocab;
    tok_embd    = get("token_embd.weight", E, V);
    output_norm = get("output_norm.weight", E, 0);
    output      = get("output.weight", E, V, /*required=*/false);
    if (output.empty()) output = tok_embd;  // tied embeddings
    // Llama 3.1 rope scaling: n_rot/2 factors (n_rot's range and the factors'
    // values are checked in finish()).
    {
        const gguf_tensor_info * ti = f.find_tensor("rope_freqs.weight");
        if (ti) {
            if (ti->n_dims != 1 || ti->ne[0] != hp.n_rot / 2 || hp.n_rot <= 0)
                f.fail(format("tensor 'rope_freqs.weight' has shape %s, expected (%d) (rope dimension count / 2)",
                              shape_str(ti->n_dims, ti->ne).c_str(), hp.n_rot / 2));
            rope_freqs = ti->view();
            used.insert(ti->name);
        }
    }
    if (arch == "phi3") {
        rope_long  = get("rope_factors_long.weight", hp.n_rot / 2, 0, /*required=*/false);
        rope_short = get("rope_factors_short.weight", hp.n_rot / 2, 0, /*required=*/false);
    }
    const bool qk_norm = arch == "qwen3" || arch == "gemma3";
    layers.resize(size_t(hp.n_layer));
    for (int il = 0; il < hp.n_layer; ++il) {
        const std::string b = "blk." + std::to_string(il) + ".";
        layer_weights & l = layers[size_t(il)];
        l.attn_norm = get(b + "attn_norm.weight", E, 0);
        if (arch == "phi3" && f.find_tensor(b + "attn_qkv.weight")) {
            // q, k and v are the consecutive row ranges of one matrix
            const tensor qkv = get(b + "attn_qkv.weight", E, Q + 2 * KV);
            l.wq = rows_of(qkv, 0, Q);
            l.wk = rows_of(qkv, Q, KV);
            l.wv = rows_of(qkv, Q + KV, KV);
        } else {
            l.wq = get(b + "attn_q.weight", E, Q);
            l.wk = get(b + "attn_k.weight", E, KV);
            l.wv = get(b + "attn_v.weight", E, KV);
        }
        l.wo        = get(b + "attn_output.weight", Q, E);
        l.ffn_norm  = get(b + "ffn_norm.weight", E, 0);
        if (arch == "phi3") {
            // gate then up, one matrix of 2 * n_ff rows
            const tensor gu = get(b + "ffn_up.weight", E, 2 * F);
            l.ffn_gate = rows_of(gu, 0, F);
            l.ffn_up = rows_of(gu, F, F);
        } else {
            l.ffn_gate = get(b + "ffn_gate.weight", E, F);
            l.ffn_up   = get(b + "ffn_up.weight", E, F);
        }
        l.ffn_down  = get(b + "ffn_down.weight", F, E);
        if (qk_norm) {
            l.q_norm = get(b + "attn_q_norm.weight", hp.head_dim, 0);
            l.k_norm = get(b + "attn_k_norm.weight", hp.head_dim, 0);
        }
        if (hp.post_norms) {
            l.attn_post_norm = get(b + "post_attention_norm.weight", E, 0);
            l.ffn_post_norm  = get(b + "post_ffw_norm.weight", E, 0);
        }
        l.bq        = get(b + "attn_q.bias", Q, 0, /*required=*/false);
        l.bk        = get(b + "attn_k.bias", KV, 0, /*required=*/false);
        l.bv        = get(b + "attn_v.bias", KV, 0, /*required=*/false);
        l.bo        = get(b + "attn_output.bias", E, 0, /*required=*/false);
    }

    // A tensor nothing reads belongs to a variant this loader does not know
    // (FFN biases, extra norms, more layers): refused rather than ignored.
    if (used.size() != f.tensors().size())
        for (const gguf_tensor_info & ti : f.tensors())
            if (!used.count(ti.name)) {
                const std::string & n = ti.name;
                if (n.find("_exps.") != std::string::npos || n.find("ffn_gate_inp") != std::string::npos)
                    f.fail(format("tensor '%s' belongs to a mixture-of-experts variant of '%s', which gloas does not support",
                                  n.c_str(), arch.c_str()));
                if (n.compare(0, 2, "v.") == 0 || n.compare(0, 3, "mm.") == 0)
                    f.fail(format("tensor '%s' belongs to a vision tower, which gloas does not support (text models only)",
                                  n.c_str()));
                f.fail(format("tensor '%s' is not used by architecture '%s' (a variant gloas does not support)",
                              ti.name.c_str(), arch.c_str()));
            }
}

void model::load_llama2c(const model_params & p) {
    file_format = "llama2.c";
    map_ = mapped_file(p.path);
    const char * fname = p.path.c_str();
    const size_t size = map_.size();
    if (size < 28) throw error(format("%s: not a GGUF file and too small (%zu bytes) for a llama2.c checkpoint", fname, size));
    int32_t h[7];
    std::memcpy(h, map_.data(), sizeof h);
    if (uint32_t(h[0]) == 0x616b3432u)  // "ak42": llama2.c's versioned export
        throw error(format("%s: llama2.c export version %d is not supported (only the legacy float32 export is)", fname, h[1]));
    const char * names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
    for (int i = 0; i < 7; ++i) {
        int64_t v = i == 5 ? (h[i] < 0 ? -int64_t(h[i]) : h[i]) : h[i];
        if (v <= 0 || v > (1 << 20))
            throw error(format("%s: not a GGUF file, and as a llama2.c checkpoint its header field %s = %d is out of range",
                               fname, names[i], h[i]));
    }
    const bool shared = h[5] > 0;
    hp.n_embd = h[0];
    hp.n_ff = h[1];
    hp.n_layer = h[2];
    hp.n_head = h[3];
    hp.n_head_kv = h[4];
    hp.n_vocab = shared ? h[5] : -h[5];
    hp.n_ctx_train = h[6];
    if (hp.n_embd % hp.n_head != 0 || hp.n_head % hp.n_head_kv != 0 || (hp.n_embd / hp.n_head) % 2 != 0)
        throw error(format("%s: llama2.c header is inconsistent: dim %d, n_heads %d, n_kv_heads %d",
                           fname, hp.n_embd, hp.n_head, hp.n_head_kv));
    hp.head_dim = hp.n_embd / hp.n_head;
    hp.n_rot = hp.head_dim;
    hp.rms_eps = 1e-5f;
    hp.rope_freq_base = 10000.0f;

    const int64_t E = hp.n_embd, KV = hp.n_embd_kv(), F = hp.n_ff, V = hp.n_vocab, L = hp.n_layer;
    const int64_t hs = hp.head_dim;
    int64_t n_floats = V * E + L * E + L * E * E + 2 * L * KV * E + L * E * E + L * E + 3 * L * F * E + E +
                       int64_t(hp.n_ctx_train) * hs;
    if (!shared) n_floats += V * E;
    const uint64_t want = 28 + uint64_t(n_floats) * 4;
    if (want != size)
        throw error(format("%s: llama2.c checkpoint should be %llu bytes for its header (dim %d, layers %d, vocab %d), but is %zu",
                           fname, (unsigned long long) want, hp.n_embd, hp.n_layer, hp.n_vocab, size));

    const float * w = reinterpret_cast<const float *>(map_.data() + 28);
    auto take2 = [&](int64_t rows, int64_t cols) {
        tensor t = make_tensor_2d(type::F32, cols, rows, w);
        w += rows * cols;
        return t;
    };
    auto take1 = [&](int64_t n) { return take2(1, n); };
    tok_embd = take2(V, E);
    layers.resize(size_t(L));
    for (auto & l : layers) l.attn_norm = take1(E);
    for (auto & l : layers) l.wq = take2(E, E);
    for (auto & l : layers) l.wk = take2(KV, E);
    for (auto & l : layers) l.wv = take2(KV, E);
    for (auto & l : layers) l.wo = take2(E, E);
    for (auto & l : layers) l.ffn_norm = take1(E);
    for (auto & l : layers) l.ffn_gate = take2(F, E);
    for (auto & l : layers) l.ffn_down = take2(E, F);
    for (auto & l : layers) l.ffn_up = take2(F, E);
    output_norm = take1(E);
    w += int64_t(hp.n_ctx_train) * hs;  // freq_cis_real, freq_cis_imag: recomputed by rope
    output = shared ? tok_embd : take2(V, E);

    std::string tpath = p.tokenizer_path.empty() ? find_llama2c_tokenizer(p.path, hp.n_vocab) : p.tokenizer_path;
    if (tpath.empty())
        throw error(format("%s: llama2.c checkpoint needs a tokenizer: pass -z TOKENIZER (tried tok%d.bin and tokenizer.bin beside the model)",
                           fname, hp.n_vocab));
    // The file does not store its size: read every piece, so that a tokenizer
    // of another model (tokenizer.bin's 32000 pieces for a 512-token model) is
    // refused instead of cut to size.
    tok = tokenizer::from_llama2c(tpath);
    if (tok.n_vocab() != hp.n_vocab)
        throw error(format("%s: tokenizer has %d pieces, the model's vocabulary is %d (%s%s%s)", tpath.c_str(), tok.n_vocab(),
                           hp.n_vocab, p.tokenizer_path.empty() ? "found beside " : "", fname,
                           p.tokenizer_path.empty() ? "; pass --tokenizer FILE" : ""));
}

void model::finish() {
    const char * fname = path.c_str();
    if (hp.n_layer <= 0 || hp.n_embd <= 0 || hp.n_ff <= 0 || hp.n_head <= 0 || hp.n_head_kv <= 0 ||
        hp.head_dim <= 0 || hp.n_vocab <= 0 || hp.n_ctx_train <= 0)
        throw error(format("%s: model dimensions must be positive (layers %d, dim %d, ffn %d, heads %d/%d, head_dim %d, vocab %d, ctx %d)",
                           fname, hp.n_layer, hp.n_embd, hp.n_ff, hp.n_head, hp.n_head_kv, hp.head_dim, hp.n_vocab, hp.n_ctx_train));
    if (hp.n_head % hp.n_head_kv != 0)
        throw error(format("%s: head_count %d is not a multiple of head_count_kv %d", fname, hp.n_head, hp.n_head_kv));
    if (hp.n_rot <= 0 || hp.n_rot > hp.head_dim || hp.n_rot % 2 != 0)
        throw error(format("%s: rope dimension count %d must be even and at most head_dim %d", fname, hp.n_rot, hp.head_dim));
    if (tok.n_vocab() != hp.n_vocab)
        throw error(format("%s: the tokenizer has %d tokens but the model's vocabulary is %d", fname, tok.n_vocab(), hp.n_vocab));

    auto check_f32 = [&](const tensor & t, const char * what) {
        if (t.t != type::F32)
            throw error(format("%s: %s must be f32 (is %s)", fname, what, type_name(t.t)));
    };
    check_f32(output_norm, "output_norm.weight");
    weight_bytes = tok_embd.nbytes() + output_norm.nbytes() + (output.data != tok_embd.data ? output.nbytes() : 0);
    n_params = tok_embd.nelements() + output_norm.nelements() + (output.data != tok_embd.data ? output.nelements() : 0);
    if (!rope_freqs.empty()) {
        check_f32(rope_freqs, "rope_freqs.weight");
        const float * fr = static_cast<const float *>(rope_freqs.data);
        for (int64_t i = 0; i < rope_freqs.ne[0]; ++i)
            if (!(fr[i] > 0.0f) || !std::isfinite(fr[i]))
                throw error(format("%s: rope_freqs.weight[%lld] = %g must be positive", fname, (long long) i, double(fr[i])));
        weight_bytes += rope_freqs.nbytes();
        n_params += rope_freqs.nelements();
    }
    for (const std::pair<const tensor *, const char *> rf : {std::make_pair(&rope_long, "rope_factors_long.weight"),
                                                             std::make_pair(&rope_short, "rope_factors_short.weight")}) {
        if (rf.first->empty()) continue;
        check_f32(*rf.first, rf.second);
        const float * fr = static_cast<const float *>(rf.first->data);
        for (int64_t i = 0; i < rf.first->ne[0]; ++i)
            if (!(fr[i] > 0.0f) || !std::isfinite(fr[i]))
                throw error(format("%s: %s[%lld] = %g must be positive", fname, rf.second, (long long) i, double(fr[i])));
        weight_bytes += rf.first->nbytes();
        n_params += rf.first->nelements();
    }
    for (const auto & l : layers) {
        check_f32(l.attn_norm, "attn_norm.weight");
        check_f32(l.ffn_norm, "ffn_norm.weight");
        const std::pair<const tensor *, const char *> biases[] = {
            {&l.bq, "attn_q.bias"}, {&l.bk, "attn_k.bias"}, {&l.bv, "attn_v.bias"}, {&l.bo, "attn_output.bias"},
            {&l.q_norm, "attn_q_norm.weight"}, {&l.k_norm, "attn_k_norm.weight"},
            {&l.attn_post_norm, "post_attention_norm.weight"}, {&l.ffn_post_norm, "post_ffw_norm.weight"}};
        for (const auto & b : biases)
            if (!b.first->empty() && b.first->t != type::F32)
                throw error(format("%s: blk.%zu.%s must be f32 (is %s)", fname, size_t(&l - layers.data()), b.second,
                                   type_name(b.first->t)));
        for_each_weight(l, [&](const tensor & t) {
            weight_bytes += t.nbytes();
            n_params += t.nelements();
        });
    }
    weight_type = layers.empty() ? tok_embd.t : layers[0].ffn_up.t;

    XXH64_state_t * st = XXH64_createState();
    XXH64_reset(st, 0);
    XXH64_update(st, &hp, sizeof hp);
    auto add = [&](const tensor & t) {
        XXH64_update(st, &t.t, sizeof t.t);
        XXH64_update(st, t.ne, sizeof t.ne);
        const size_t n = t.nbytes(), k = std::min<size_t>(n, 4096);
        const uint8_t * d = static_cast<const uint8_t *>(t.data);
        XXH64_update(st, d, k);
        XXH64_update(st, d + n - k, k);
    };
    add(tok_embd);
    add(output_norm);
    add(output);
    if (!rope_freqs.empty()) add(rope_freqs);
    if (!rope_long.empty()) add(rope_long);
    if (!rope_short.empty()) add(rope_short);
    for (const auto & l : layers) for_each_weight(l, add);
    fingerprint = XXH64_digest(st);
    XXH64_freeState(st);
}

size_t model::bytes_per_token() const {
    size_t b = output.nbytes() + output_norm.nbytes() + tok_embd.row_bytes();
    if (!rope_freqs.empty()) b += rope_freqs.nbytes();
    for (const auto & l : layers) for_each_weight(l, [&](const tensor & t) { b += t.nbytes(); });
    return b;
}

ops::rope_params model::rope() const {
    ops::rope_params r;
    r.style = hp.rope_type;
    r.freq_base = hp.rope_freq_base;
    r.freq_scale = hp.rope_freq_scale;
    r.factors = rope_freqs.empty() ? nullptr : static_cast<const float *>(rope_freqs.data);
    return r;
}

ops::rope_params model::rope(int32_t n_ctx, int32_t il) const {
    ops::rope_params r = rope();
    if (!rope_long.empty() || !rope_short.empty()) {
        const tensor & fr = n_ctx > hp.n_ctx_orig && !rope_long.empty() ? rope_long : rope_short;
        r.factors = fr.empty() ? nullptr : static_cast<const float *>(fr.data);
    }
    if (hp.rope_freq_base_swa > 0.0f && hp.is_swa(il)) {
        r.freq_base = hp.rope_freq_base_swa;
        r.freq_scale = 1.0f;
    }
    return r;
}

} // namespace gloas
