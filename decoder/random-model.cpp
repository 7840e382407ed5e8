#include "decoder/random-model.h"

#include "decoder/gguf.h"
#include "decoder/tokenizer.h"
#include "base/error.h"
#include "tensor/mmap.h"

#include <sys/stat.h>
#include <xxhash.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

namespace gloas {

namespace {

// splitmix64: a small, fast, well-mixed generator; one per row.
struct rng {
    uint64_t s;
    uint64_t next() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    // Uniform in [-1, 1).
    float uniform() { return float(int32_t(uint32_t(next() >> 32))) * (1.0f / 2147483648.0f); }
};

uint64_t mix(uint64_t a, uint64_t b) {
    rng r{a ^ (b * 0x9e3779b97f4a7c15ull)};
    return r.next();
}

constexpr int64_t MIN_SYNTH_VOCAB = 259 + 95;

// A valid SentencePiece-style vocabulary of n tokens: <unk>, <s>, </s>, the 256
// byte tokens <0x00>..<0xFF>, then distinct printable pieces ("▁" marks a word
// start) with decreasing scores.
void synth_vocab(gguf_writer & w, int64_t n) {
    vocab v;
    auto add = [&](std::string s, float score, token_type t) {
        v.pieces.push_back(std::move(s));
        v.scores.push_back(score);
        v.types.push_back(t);
    };
    add("<unk>", 0.0f, token_type::UNKNOWN);
    add("<s>", 0.0f, token_type::CONTROL);
    add("</s>", 0.0f, token_type::CONTROL);
    for (int b = 0; b < 256; ++b) add(format("<0x%02X>", b), 0.0f, token_type::BYTE);
    const std::string space = "\xe2\x96\x81";  // U+2581
    const std::string letters = "etaoinshrdlcumwfgypbvkjxqz";
    // Pieces in order of length: single printable characters, then letter
    // strings of growing length, each also with a leading word marker.
    std::vector<std::string> pieces;
    pieces.push_back(space);
    for (int c = 33; c < 127; ++c) pieces.push_back(std::string(1, char(c)));
    for (int c = 33; c < 127; ++c) pieces.push_back(space + char(c));
    std::vector<std::string> level = {""};
    while (int64_t(v.pieces.size() + pieces.size()) < n) {
        std::vector<std::string> next;
        for (const auto & p : level)
            for (char c : letters) next.push_back(p + c);
        for (const auto & p : next) {
            if (p.size() < 2) continue;
            pieces.push_back(space + p);
            pieces.push_back(p);
        }
        level.swap(next);
        if (level.size() > size_t(n) * 26) break;
    }
    for (size_t i = 0; int64_t(v.pieces.size()) < n && i < pieces.size(); ++i)
        add(pieces[i], -float(i), token_type::NORMAL);
    GLOAS_ASSERT(int64_t(v.pieces.size()) == n);
    v.bos = 1;
    v.eos = 2;
    v.unk = 0;
    llama_gguf_set_vocab(w, v);
}

// Fill callback for one tensor: rows of `ne0` values, each row from its own
// generator, converted to type t. Norm weights (`ones`) are all 1.0.
gguf_writer::fill_fn make_fill(type t, int64_t ne0, uint64_t seed, bool ones) {
    return [t, ne0, seed, ones](void * dst, int64_t row0, int64_t n_rows) {
        const type_traits & tr = traits(t);
        const size_t rs = row_size(t, ne0);
        const float a = 0.02f * std::sqrt(3.0f);  // uniform(-a, a) has std 0.02
        #pragma omp parallel
        {
            std::vector<float> row(static_cast<size_t>(ne0));
            #pragma omp for schedule(static)
            for (int64_t r = 0; r < n_rows; ++r) {
                if (ones) {
                    for (auto & x : row) x = 1.0f;
                } else {
                    rng g{mix(seed, uint64_t(row0 + r))};
                    for (auto & x : row) x = a * g.uniform();
                }
                uint8_t * out = static_cast<uint8_t *>(dst) + size_t(r) * rs;
                if (t == type::F32) std::memcpy(out, row.data(), rs);
                else tr.from_float(row.data(), out, ne0);
            }
        }
    };
}

} // namespace

void random_model_check(const llama_gguf_hparams & hp, bool synthetic_vocab) {
    auto ll = [](int64_t v) { return (long long) v; };
    if (hp.n_embd <= 0 || hp.n_head <= 0 || hp.n_head_kv <= 0 || hp.n_layer <= 0 || hp.n_ff <= 0 || hp.n_ctx <= 0)
        throw error(format("random model: every dimension must be positive (dim %lld, heads %lld, kv heads %lld, "
                           "layers %lld, ffn %lld, context %lld)", ll(hp.n_embd), ll(hp.n_head), ll(hp.n_head_kv),
                           ll(hp.n_layer), ll(hp.n_ff), ll(hp.n_ctx)));
    if (hp.head_dim <= 0 && hp.n_embd % hp.n_head != 0)
        throw error(format("random model: dim %lld is not a multiple of heads %lld", ll(hp.n_embd), ll(hp.n_head)));
    if (hp.arch != "llama" && hp.arch != "qwen2" && hp.arch != "qwen3" && hp.arch != "phi3" && hp.arch != "gemma2" &&
        hp.arch != "gemma3")
        throw error(format("random model: architecture '%s' is not one gloas runs", hp.arch.c_str()));
    if (hp.n_head % hp.n_head_kv != 0)
        throw error(format("random model: heads %lld is not a multiple of kv heads %lld", ll(hp.n_head), ll(hp.n_head_kv)));
    const int64_t blck = traits(hp.wtype).blck_size;
    if (hp.n_embd % blck != 0 || hp.n_ff % blck != 0)
        throw error(format("random model: dim %lld and ffn %lld must be multiples of %lld for weight type %s",
                           ll(hp.n_embd), ll(hp.n_ff), ll(blck), type_name(hp.wtype)));
    if (synthetic_vocab && hp.n_vocab < MIN_SYNTH_VOCAB)
        throw error(format("random model: vocabulary of %lld is too small for a synthetic vocabulary (at least %lld)",
                           ll(hp.n_vocab), ll(MIN_SYNTH_VOCAB)));
}

void write_random_model(const std::string & path, const random_model_params & p) {
    llama_gguf_hparams hp = p.hp;
    gguf_writer w;
    std::unique_ptr<gguf_file> vf;
    if (!p.vocab_file.empty()) {
        vf = gguf_file::open(p.vocab_file);
        const auto toks = vf->get_str_array("tokenizer.ggml.tokens");
        if (toks.empty()) throw error(p.vocab_file + ": tokenizer.ggml.tokens is empty");
        hp.n_vocab = int64_t(toks.size());
    }
    random_model_check(hp, !vf);
    if (hp.head_dim <= 0) hp.head_dim = hp.n_embd / hp.n_head;
    const int64_t kv_dim = int64_t(hp.head_dim) * hp.n_head_kv, q_dim = hp.head_dim * hp.n_head;
    llama_gguf_set_hparams(w, hp);
    if (vf) w.copy_metadata(*vf, "tokenizer.");
    else synth_vocab(w, hp.n_vocab);

    uint64_t tensor_no = 0;
    auto add = [&](const std::string & name, int64_t ne0, int64_t ne1) {
        const bool norm = ne1 == 0;
        const type t = norm ? type::F32 : hp.wtype;
        const int64_t ne[2] = {ne0, norm ? 1 : ne1};
        w.add_tensor(name, t, norm ? 1 : 2, ne, make_fill(t, ne0, mix(p.seed, ++tensor_no), norm));
    };
    const std::string & a = hp.arch;
    const bool gemma = a == "gemma2" || a == "gemma3", phi3 = a == "phi3";
    auto blk = [](int64_t l, const char * n) { return "blk." + std::to_string(l) + "." + n; };
    add(llama_tensor_name(llama_tensor::TOKEN_EMBD), hp.n_embd, hp.n_vocab);
    for (int64_t l = 0; l < hp.n_layer; ++l) {
        add(llama_tensor_name(llama_tensor::ATTN_NORM, l), hp.n_embd, 0);
        if (phi3) {
            add(blk(l, "attn_qkv.weight"), hp.n_embd, q_dim + 2 * kv_dim);
        } else {
            add(llama_tensor_name(llama_tensor::ATTN_Q, l), hp.n_embd, q_dim);
            add(llama_tensor_name(llama_tensor::ATTN_K, l), hp.n_embd, kv_dim);
            add(llama_tensor_name(llama_tensor::ATTN_V, l), hp.n_embd, kv_dim);
        }
        if (a == "qwen2") {
            add(blk(l, "attn_q.bias"), q_dim, 0);
            add(blk(l, "attn_k.bias"), kv_dim, 0);
            add(blk(l, "attn_v.bias"), kv_dim, 0);
        }
        if (a == "qwen3" || a == "gemma3") {
            add(blk(l, "attn_q_norm.weight"), hp.head_dim, 0);
            add(blk(l, "attn_k_norm.weight"), hp.head_dim, 0);
        }
        add(llama_tensor_name(llama_tensor::ATTN_OUTPUT, l), q_dim, hp.n_embd);
        if (gemma) add(blk(l, "post_attention_norm.weight"), hp.n_embd, 0);
        add(llama_tensor_name(llama_tensor::FFN_NORM, l), hp.n_embd, 0);
        if (phi3) {
            add(llama_tensor_name(llama_tensor::FFN_UP, l), hp.n_embd, 2 * hp.n_ff);
        } else {
            add(llama_tensor_name(llama_tensor::FFN_GATE, l), hp.n_embd, hp.n_ff);
            add(llama_tensor_name(llama_tensor::FFN_UP, l), hp.n_embd, hp.n_ff);
        }
        add(llama_tensor_name(llama_tensor::FFN_DOWN, l), hp.n_ff, hp.n_embd);
        if (gemma) add(blk(l, "post_ffw_norm.weight"), hp.n_embd, 0);
    }
    add(llama_tensor_name(llama_tensor::OUTPUT_NORM), hp.n_embd, 0);
    if (!gemma) add(llama_tensor_name(llama_tensor::OUTPUT), hp.n_embd, hp.n_vocab);  // Gemma ties it
    if (p.progress) w.set_progress(p.progress);
    w.write(path);
}

std::string cached_random_model(const std::string & dir, const llama_gguf_hparams & hp) {
    const std::string key = format("v1 %s%lld %lld %lld %lld %lld %lld %lld %lld %g %g %s",
                                   hp.arch == "llama" ? "" : (hp.arch + " ").c_str(), (long long) hp.n_vocab,
                                   (long long) hp.n_ctx, (long long) hp.n_embd, (long long) hp.n_ff,
                                   (long long) hp.n_head, (long long) hp.n_head_kv, (long long) hp.n_layer,
                                   (long long) hp.head_dim, double(hp.rms_eps), double(hp.rope_freq_base),
                                   type_name(hp.wtype));
    const std::string path = format("%s/random-%016llx.gguf", dir.c_str(),
                                    (unsigned long long) XXH64(key.data(), key.size(), 0));
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) return path;
    if (make_dirs(dir) != 0)
        throw error(format("%s: cannot create the folder: %s", dir.c_str(), std::strerror(errno)));
    random_model_params p;
    p.hp = hp;
    write_random_model(path, p);
    return path;
}

} // namespace gloas
