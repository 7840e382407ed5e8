// gloas-gen-model: writes a Llama model with random weights as GGUF, with the
// tensor names and metadata llama.cpp writes, for benchmarks at real sizes.
//
//   gloas-gen-model --preset tinyllama-1.1b --type q4_0 -o tinyllama-q4_0.gguf
//
// Weights are uniform with a standard deviation of 0.02 (norm weights are 1.0)
// so activations stay finite. Each row's values come from a generator seeded by
// (seed, tensor, row): the file is the same for any thread count. Tensors are
// generated and quantized a chunk of rows at a time and streamed to the file.
#include "tools/cli.h"
#include "decoder/gguf-writer.h"
#include "decoder/gguf.h"
#include "decoder/llama-gguf.h"
#include "decoder/tokenizer.h"
#include "quant/types.h"
#include "tensor/error.h"

#include <omp.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

using namespace gloas;

namespace {

using cli::parse_int;
using cli::usage_error;

struct config {
    int64_t dim = 0, layers = 0, heads = 0, kv_heads = 0, ffn = 0, vocab = 0, ctx = 0;
    float   rms_eps = 1e-5f;
    float   rope_base = 10000.0f;
    std::string name;
};

struct preset {
    const char * name;
    config c;
};

const preset PRESETS[] = {
    {"tinyllama-1.1b", {2048, 22, 32, 4, 5632, 32000, 4096, 1e-5f, 10000.0f, "TinyLlama 1.1B (random weights)"}},
    {"llama2-7b",      {4096, 32, 32, 32, 11008, 32000, 4096, 1e-5f, 10000.0f, "Llama 2 7B (random weights)"}},
    {"stories-15m",    {288, 6, 6, 6, 768, 32000, 256, 1e-5f, 10000.0f, "stories15M shape (random weights)"}},
    {"tiny",           {64, 2, 4, 2, 192, 512, 256, 1e-5f, 10000.0f, "tiny test model (random weights)"}},
};

void usage(FILE * out) {
    std::fprintf(out,
        "usage: gloas-gen-model [options] -o FILE.gguf\n"
        "\n"
        "Writes a Llama-architecture GGUF with random weights (uniform, std 0.02;\n"
        "norm weights 1.0), tensor names and metadata as llama.cpp writes them.\n"
        "\n"
        "  -o, --output FILE     output file (written as FILE.tmp, then renamed)\n"
        "  --preset NAME         tinyllama-1.1b (default), llama2-7b, stories-15m, tiny\n"
        "  --type T              weight type: f32, f16, bf16, q8_0, q4_0 (default f16);\n"
        "                        norm weights stay f32\n"
        "  --dim N               embedding length\n"
        "  --layers N            block count\n"
        "  --heads N             attention heads\n"
        "  --kv-heads N          key/value heads (grouped-query attention)\n"
        "  --ffn N               feed-forward length\n"
        "  --vocab N|FILE.gguf   vocabulary size (a synthetic SentencePiece vocab), or a\n"
        "                        GGUF whose tokenizer.* metadata is copied (its size wins)\n"
        "  --ctx N               context length\n"
        "  --seed N              random seed (default 42)\n"
        "  --threads N           generator threads (default: all)\n"
        "  -q, --quiet           no progress on stderr\n"
        "  -h, --help            this text\n");
}

bool is_integer(const char * s) {
    if (!*s) return false;
    for (; *s; ++s)
        if (*s < '0' || *s > '9') return false;
    return true;
}

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

// A valid SentencePiece-style vocabulary of n tokens: <unk>, <s>, </s>, the 256
// byte tokens <0x00>..<0xFF>, then distinct printable pieces ("▁" marks a word
// start) with decreasing scores.
void synth_vocab(gguf_writer & w, int64_t n) {
    vocab v;
    std::vector<std::string> & tokens = v.pieces;
    tokens.reserve(size_t(n));
    auto add = [&](std::string s, float score, token_type t) {
        tokens.push_back(std::move(s));
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
    while (int64_t(tokens.size() + pieces.size()) < n) {
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
    for (size_t i = 0; int64_t(tokens.size()) < n && i < pieces.size(); ++i)
        add(pieces[i], -float(i), token_type::NORMAL);
    GLOAS_ASSERT(int64_t(tokens.size()) == n);
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

int main(int argc, char ** argv) {
    cli::prog = "gloas-gen-model";
    config c = PRESETS[0].c;
    std::string preset_name = PRESETS[0].name;
    std::string out, vocab_file;
    type wtype = type::F16;
    uint64_t seed = 42;
    int threads = 0;
    bool quiet = false;
    config over;  // explicit overrides (0 = not given)

    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> const char * {
            if (i + 1 >= argc) usage_error(a + " needs a value");
            return argv[++i];
        };
        if (a == "-h" || a == "--help") { usage(stdout); return 0; }
        else if (a == "-o" || a == "--output") out = value();
        else if (a == "--preset") {
            const std::string p = value();
            bool found = false;
            for (const auto & pr : PRESETS)
                if (p == pr.name) { c = pr.c; preset_name = p; found = true; }
            if (!found) usage_error("--preset: unknown preset '" + p + "' (tinyllama-1.1b, llama2-7b, stories-15m, tiny)");
        }
        else if (a == "--type") {
            const char * s = value();
            if (!type_from_name(s, &wtype)) usage_error(format("--type: unknown type '%s' (f32, f16, bf16, q8_0, q4_0)", s));
        }
        else if (a == "--dim") over.dim = parse_int(a, value(), 1, 1 << 20);
        else if (a == "--layers") over.layers = parse_int(a, value(), 1, 1024);
        else if (a == "--heads") over.heads = parse_int(a, value(), 1, 4096);
        else if (a == "--kv-heads") over.kv_heads = parse_int(a, value(), 1, 4096);
        else if (a == "--ffn") over.ffn = parse_int(a, value(), 1, 1 << 22);
        else if (a == "--ctx") over.ctx = parse_int(a, value(), 1, int64_t(1) << 31);
        else if (a == "--vocab") {
            const char * s = value();
            if (is_integer(s)) over.vocab = parse_int(a, s, 1, int64_t(1) << 24);
            else vocab_file = s;
        }
        else if (a == "--seed") seed = uint64_t(parse_int(a, value(), 0, INT64_MAX));
        else if (a == "--threads") threads = int(parse_int(a, value(), 1, 1024));
        else if (a == "-q" || a == "--quiet") quiet = true;
        else usage_error("unknown option '" + a + "'");
    }
    if (out.empty()) usage_error("no output file (-o FILE.gguf)");
    if (over.dim) c.dim = over.dim;
    if (over.layers) c.layers = over.layers;
    if (over.heads) c.heads = over.heads;
    if (over.kv_heads) c.kv_heads = over.kv_heads;
    if (over.ffn) c.ffn = over.ffn;
    if (over.vocab) c.vocab = over.vocab;
    if (over.ctx) c.ctx = over.ctx;
    if (over.heads && !over.kv_heads && c.kv_heads > c.heads) c.kv_heads = c.heads;
    if (threads > 0) omp_set_num_threads(threads);

    try {
        gguf_writer w;
        std::unique_ptr<gguf_file> vf;
        if (!vocab_file.empty()) {
            vf = gguf_file::open(vocab_file);
            const auto toks = vf->get_str_array("tokenizer.ggml.tokens");
            if (toks.empty()) throw error(vocab_file + ": tokenizer.ggml.tokens is empty");
            c.vocab = int64_t(toks.size());
        }
        // Shape checks: every matrix row must fill whole blocks of the weight type.
        const int64_t blck = traits(wtype).blck_size;
        if (c.dim % c.heads != 0)
            usage_error(format("--dim %lld is not a multiple of --heads %lld", (long long) c.dim, (long long) c.heads));
        if (c.heads % c.kv_heads != 0)
            usage_error(format("--heads %lld is not a multiple of --kv-heads %lld", (long long) c.heads, (long long) c.kv_heads));
        if (c.dim % blck != 0 || c.ffn % blck != 0)
            usage_error(format("--dim %lld and --ffn %lld must be multiples of %lld for type %s", (long long) c.dim,
                               (long long) c.ffn, (long long) blck, type_name(wtype)));
        if (vocab_file.empty() && c.vocab < 259 + 95)
            usage_error(format("--vocab %lld is too small for a synthetic vocab (at least 354)", (long long) c.vocab));
        const int64_t head_dim = c.dim / c.heads;
        const int64_t kv_dim = head_dim * c.kv_heads;

        llama_gguf_hparams hp;
        hp.name = c.name.empty() ? preset_name : c.name;
        hp.n_vocab = c.vocab;
        hp.n_ctx = c.ctx;
        hp.n_embd = c.dim;
        hp.n_ff = c.ffn;
        hp.n_head = c.heads;
        hp.n_head_kv = c.kv_heads;
        hp.n_layer = c.layers;
        hp.head_dim = head_dim;
        hp.rms_eps = c.rms_eps;
        hp.rope_freq_base = c.rope_base;
        hp.wtype = wtype;
        llama_gguf_set_hparams(w, hp);
        if (vf) w.copy_metadata(*vf, "tokenizer.");
        else synth_vocab(w, c.vocab);

        uint64_t tensor_no = 0;
        auto add = [&](const std::string & name, int64_t ne0, int64_t ne1) {
            const bool norm = ne1 == 0;
            const type t = norm ? type::F32 : wtype;
            const int64_t ne[2] = {ne0, norm ? 1 : ne1};
            w.add_tensor(name, t, norm ? 1 : 2, ne, make_fill(t, ne0, mix(seed, ++tensor_no), norm));
        };
        add(llama_tensor_name(llama_tensor::TOKEN_EMBD), c.dim, c.vocab);
        for (int64_t l = 0; l < c.layers; ++l) {
            add(llama_tensor_name(llama_tensor::ATTN_NORM, l), c.dim, 0);
            add(llama_tensor_name(llama_tensor::ATTN_Q, l), c.dim, c.dim);
            add(llama_tensor_name(llama_tensor::ATTN_K, l), c.dim, kv_dim);
            add(llama_tensor_name(llama_tensor::ATTN_V, l), c.dim, kv_dim);
            add(llama_tensor_name(llama_tensor::ATTN_OUTPUT, l), c.dim, c.dim);
            add(llama_tensor_name(llama_tensor::FFN_NORM, l), c.dim, 0);
            add(llama_tensor_name(llama_tensor::FFN_GATE, l), c.dim, c.ffn);
            add(llama_tensor_name(llama_tensor::FFN_DOWN, l), c.ffn, c.dim);
            add(llama_tensor_name(llama_tensor::FFN_UP, l), c.dim, c.ffn);
        }
        add(llama_tensor_name(llama_tensor::OUTPUT_NORM), c.dim, 0);
        add(llama_tensor_name(llama_tensor::OUTPUT), c.dim, c.vocab);

        const auto t0 = std::chrono::steady_clock::now();
        double last = -1.0;
        if (!quiet) {
            w.set_progress([&](size_t i, size_t n, uint64_t done, uint64_t total) {
                const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                if (el - last < 0.5 && i < n) return;
                last = el;
                std::fprintf(stderr, "\rgloas-gen-model: %s: tensor %zu/%zu, %.0f/%.0f MiB, %.1f s ", out.c_str(), i, n,
                             double(done) / (1 << 20), double(total) / (1 << 20), el);
                std::fflush(stderr);
            });
        }
        w.write(out);
        if (!quiet) {
            const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            std::fprintf(stderr, "\ngloas-gen-model: wrote %s (%s, dim %lld, %lld layers, vocab %lld) in %.1f s\n",
                         out.c_str(), type_name(wtype), (long long) c.dim, (long long) c.layers, (long long) c.vocab, el);
        }
    } catch (const error & e) {
        if (!quiet) std::fprintf(stderr, "\n");
        std::fprintf(stderr, "gloas-gen-model: %s\n", e.what());
        return 1;
    } catch (const std::bad_alloc &) {
        std::fprintf(stderr, "gloas-gen-model: out of memory\n");
        return 1;
    }
    return 0;
}
