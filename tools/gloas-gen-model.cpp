// gloas-gen-model: writes a Llama model with random weights as GGUF, with the
// tensor names and metadata llama.cpp writes, for benchmarks at real sizes.
//
//   gloas-gen-model --preset tinyllama-1.1b --type q4_0 -o tinyllama-q4_0.gguf
//
// The weights are decoder/random-model.h's: uniform, std 0.02, the same file
// for any thread count.
#include "decoder/random-model.h"
#include "quant/types.h"
#include "base/error.h"
#include "tools/common/cli.h"

#include <omp.h>

#include <cstdint>
#include <cstdio>
#include <string>

using namespace gloas;

namespace {

using cli::parse_int;
using cli::usage_error;

struct config {
    int64_t dim = 0, layers = 0, heads = 0, kv_heads = 0, ffn = 0, vocab = 0, ctx = 0;
    float   rms_eps = 1e-5f;
    float   rope_base = 10000.0f;
    std::string name;
    std::string arch = "llama";
    int64_t head_dim = 0;      // 0: dim / heads
    int64_t window = 0;        // attention.sliding_window (Gemma)
    float   attn_cap = 0.0f, final_cap = 0.0f;  // Gemma 2's soft-caps
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
    {"qwen3-0.6b",     {1024, 28, 16, 8, 3072, 151936, 40960, 1e-6f, 1000000.0f, "Qwen3 0.6B shape (random weights)",
                        "qwen3", 128}},
    {"phi3-mini",      {3072, 32, 32, 32, 8192, 32064, 4096, 1e-5f, 10000.0f, "Phi-3 mini shape (random weights)", "phi3"}},
    {"gemma2-2b",      {2304, 26, 8, 4, 9216, 256000, 8192, 1e-6f, 10000.0f, "Gemma 2 2B shape (random weights)",
                        "gemma2", 256, 4096, 50.0f, 30.0f}},
    {"gemma3-1b",      {1152, 26, 4, 1, 6912, 262144, 32768, 1e-6f, 1000000.0f, "Gemma 3 1B shape (random weights)",
                        "gemma3", 256, 512}},
};

void usage(FILE * out) {
    std::fprintf(out,
        "usage: gloas-gen-model [options] -o FILE.gguf\n"
        "\n"
        "Writes a GGUF with random weights (uniform, std 0.02;\n"
        "norm weights 1.0), tensor names and metadata as llama.cpp writes them.\n"
        "\n"
        "  -o, --output FILE     output file (written as FILE.tmp, then renamed)\n"
        "  --preset NAME         tinyllama-1.1b (default), llama2-7b, stories-15m, tiny;\n"
        "                        other families: qwen3-0.6b, phi3-mini, gemma2-2b,\n"
        "                        gemma3-1b\n"
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
        auto value = [&] { return cli::next_value(argc, argv, i); };
        if (a == "-h" || a == "--help") { usage(stdout); return 0; }
        else if (a == "-o" || a == "--output") out = value();
        else if (a == "--preset") {
            const std::string p = value();
            bool found = false;
            for (const auto & pr : PRESETS)
                if (p == pr.name) { c = pr.c; preset_name = p; found = true; }
            if (!found)
                usage_error("--preset: unknown preset '" + p + "' (tinyllama-1.1b, llama2-7b, stories-15m, tiny, qwen3-0.6b, "
                            "phi3-mini, gemma2-2b, gemma3-1b)");
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

    return cli::run_main([&] {
        if (c.head_dim == 0 && c.dim % c.heads != 0)
            usage_error(format("--dim %lld is not a multiple of --heads %lld", (long long) c.dim, (long long) c.heads));
        random_model_params p;
        llama_gguf_hparams & hp = p.hp;
        hp.name = c.name.empty() ? preset_name : c.name;
        hp.n_vocab = c.vocab;
        hp.n_ctx = c.ctx;
        hp.n_embd = c.dim;
        hp.n_ff = c.ffn;
        hp.n_head = c.heads;
        hp.n_head_kv = c.kv_heads;
        hp.n_layer = c.layers;
        hp.head_dim = c.head_dim > 0 && !over.dim && !over.heads ? c.head_dim : c.dim / c.heads;
        hp.arch = c.arch;
        hp.sliding_window = c.window;
        hp.attn_softcap = c.attn_cap;
        hp.final_softcap = c.final_cap;
        hp.rms_eps = c.rms_eps;
        hp.rope_freq_base = c.rope_base;
        hp.wtype = wtype;
        p.seed = seed;
        p.vocab_file = vocab_file;

        const double t0 = cli::now_s();
        if (!quiet) p.progress = cli::progress(out, t0);
        write_random_model(out, p);
        cli::end_progress();
        if (!quiet)
            std::fprintf(stderr, "gloas-gen-model: wrote %s (%s, dim %lld, %lld layers, vocab %lld) in %.1f s\n",
                         out.c_str(), type_name(wtype), (long long) c.dim, (long long) c.layers, (long long) c.vocab,
                         cli::now_s() - t0);
        return 0;
    });
}
