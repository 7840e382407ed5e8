// gloas-perplexity: scores a text under any K/V configuration, so every
// compression is measured against full precision.
//
//   gloas-perplexity -m MODEL -f TEXT [-c 512] [--kv-type T] [--save-logits F] [--kl-base F]
//
// Method (as llama.cpp's perplexity tool): the text is tokenized with BOS and
// cut into chunks of -c tokens; each chunk is evaluated from an empty context
// with its first token replaced by BOS, and the second half of each chunk is
// scored: token j+1 against the logits at j. The closing line is `PPL = X`.
// --save-logits writes the scored logits; --kl-base reads such a file (from an
// F32 run) and adds the mean KL divergence KL(base || this) and the top-1
// agreement with it. --ctx-slide N evaluates each chunk in a context of N
// positions that slides, so the scored half lies past that context.
#include "decoder/config.h"
#include "decoder/llama.h"
#include "decoder/model.h"
#include "decoder/strategy.h"
#include "tensor/error.h"
#include "tensor/mmap.h"
#include "tensor/ops.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace gloas;

namespace {

const char * USAGE = R"(usage: gloas-perplexity -m MODEL -f TEXT [options]

  -m, --model FILE     GGUF or llama2.c checkpoint (-z TOKENIZER for the latter)
  -z, --tokenizer FILE
  -f, --file FILE      text to score
  -c, --ctx-size N     tokens per chunk (default 512)
      --chunks N       score at most N chunks (default: all)
      --ctx-slide N    evaluate each chunk in a context of N < -c positions that
                       slides past its end (StreamingLLM), to measure the
                       quality of text beyond the context (default: off)
      --slide-sinks K  pages kept as attention sinks when sliding (default: 1)
  -b, --ubatch N       prefill chunk size (default 512)
  -t, --threads N
      --kv-type T      f32, f16, q8_0, q4_0 (default f32)
      --strategy S     speed, balanced or aggressive (sets K/V type and sparse
                       ratio; --kv-type / --sparse-ratio given after override)
      --sparse-ratio R sparse decode attention; below 1 the text is evaluated
                       one token at a time, as decode reads it (default 1)
      --decode         evaluate one token at a time even when dense
      --kv-page N      tokens per page (default 32)
      --kv-ram SIZE    K/V RAM budget (bytes with k/M/G, tokens with t; 0 =
                       unbounded; default: the strategy's); the scores do not
                       depend on it (pages are in memory: only the mapping shrinks)
      --save-logits F  write the scored positions' logits to F
      --kl-base F      compare with logits saved by an earlier run (KL, top-1)
  -h, --help
)";

constexpr char LOGITS_MAGIC[8] = {'G', 'L', 'O', 'A', 'S', 'L', 'G', 'T'};

[[noreturn]] void usage_error(const std::string & m) {
    std::fprintf(stderr, "gloas-perplexity: %s\nTry 'gloas-perplexity --help'.\n", m.c_str());
    std::exit(2);
}

struct log_softmax_stats {
    double logsum = 0;  // log(sum exp(x - max)) + max
    int32_t argmax = 0;
};

log_softmax_stats lse(const float * x, int32_t n) {
    float mx = x[0];
    int32_t am = 0;
    for (int32_t i = 1; i < n; ++i)
        if (x[i] > mx) { mx = x[i]; am = i; }
    double s = 0;
    for (int32_t i = 0; i < n; ++i) s += std::exp(double(x[i]) - mx);
    return {std::log(s) + mx, am};
}

int run(int argc, char ** argv) {
    std::string model_path, tok_path, text_path, save_path, base_path;
    int32_t n_ctx = 512, n_chunks = -1, ubatch = 512, threads = 0, page = 32;
    type kv_type = type::F32;
    float sparse = 1.0f;
    bool decode = false;
    int32_t slide_ctx = 0, slide_sinks = 1;
    size_t strategy_ram = 0;  // the strategy's K/V RAM budget
    bool ram_given = false;   // --kv-ram
    kv_capacity ram;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage_error(a + " needs a value");
            return argv[++i];
        };
        auto int_value = [&](int lo) {
            std::string v = value();
            char * end = nullptr;
            long x = std::strtol(v.c_str(), &end, 10);
            if (!end || *end || v.empty() || x < lo || x > (1 << 24)) usage_error(a + " expects an integer, got '" + v + "'");
            return int32_t(x);
        };
        if (a == "-h" || a == "--help") { std::fputs(USAGE, stdout); return 0; }
        else if (a == "-m" || a == "--model") model_path = value();
        else if (a == "-z" || a == "--tokenizer") tok_path = value();
        else if (a == "-f" || a == "--file") text_path = value();
        else if (a == "-c" || a == "--ctx-size") n_ctx = int_value(8);
        else if (a == "--chunks") n_chunks = int_value(1);
        else if (a == "--ctx-slide") slide_ctx = int_value(8);
        else if (a == "--slide-sinks") slide_sinks = int_value(0);
        else if (a == "-b" || a == "--ubatch") ubatch = int_value(1);
        else if (a == "-t" || a == "--threads") threads = int_value(1);
        else if (a == "--kv-page") page = int_value(1);
        else if (a == "--kv-type") {
            std::string v = value();
            if (!type_from_name(v.c_str(), &kv_type)) usage_error("unknown --kv-type '" + v + "'");
        }
        else if (a == "--strategy") {
            std::string v = value();
            memory_strategy st;
            if (!memory_strategy_from_name(v.c_str(), &st) || st == memory_strategy::AUTO)
                usage_error("--strategy takes speed, balanced or aggressive, got '" + v + "'");
            context_params sp;
            apply_strategy(st, sp);
            kv_type = sp.kv.kv_type;
            sparse = sp.sparse.ratio;
            strategy_ram = sp.kv.ram_bytes;
        }
        else if (a == "--kv-ram") {
            const std::string v = value();
            try {
                ram = v == "0" ? kv_capacity{kv_capacity::unit::BYTES, 0} : parse_kv_capacity(a, v);
            } catch (const error & e) {
                usage_error(e.what());
            }
            ram_given = true;
        }
        else if (a == "--sparse-ratio") {
            std::string v = value();
            sparse = std::strtof(v.c_str(), nullptr);
            if (!(sparse > 0.0f && sparse <= 1.0f)) usage_error("--sparse-ratio must be in (0, 1], got '" + v + "'");
        }
        else if (a == "--decode") decode = true;
        else if (a == "--save-logits") save_path = value();
        else if (a == "--kl-base") base_path = value();
        else usage_error("unknown option '" + a + "'");
    }
    if (model_path.empty() || text_path.empty()) usage_error("-m MODEL and -f TEXT are required");
    if (threads > 0) ops::set_n_threads(threads);

    auto m = model::load({model_path, tok_path});
    const std::string text = read_whole_file(text_path);
    const std::vector<int32_t> toks = m->tok.encode(text, true);
    const int32_t available = int32_t(toks.size()) / n_ctx;
    if (available == 0)
        throw error(format("%s: %zu tokens, fewer than one chunk of %d (lower -c)", text_path.c_str(), toks.size(), n_ctx));
    const int32_t chunks = n_chunks > 0 ? std::min(n_chunks, available) : available;
    const int32_t first = n_ctx / 2;
    const int32_t V = m->hp.n_vocab;
    const uint64_t n_scored = uint64_t(chunks) * uint64_t(n_ctx - 1 - first);

    FILE * base = nullptr;
    if (!base_path.empty()) {
        base = std::fopen(base_path.c_str(), "rb");
        if (!base) throw error(format("%s: cannot open: %s", base_path.c_str(), std::strerror(errno)));
        char magic[8];
        uint32_t hv[2];
        uint64_t hn = 0;
        if (std::fread(magic, 1, 8, base) != 8 || std::memcmp(magic, LOGITS_MAGIC, 8) != 0 ||
            std::fread(hv, 4, 2, base) != 2 || std::fread(&hn, 8, 1, base) != 1)
            throw error(format("%s: not a logits file written by gloas-perplexity --save-logits", base_path.c_str()));
        if (hv[0] != 1 || int32_t(hv[1]) != V || hn != n_scored)
            throw error(format("%s: holds %llu positions of %u logits (version %u); this run scores %llu of %d",
                               base_path.c_str(), (unsigned long long) hn, hv[1], hv[0], (unsigned long long) n_scored, V));
    }
    FILE * save = nullptr;
    if (!save_path.empty()) {
        save = std::fopen(save_path.c_str(), "wb");
        if (!save) throw error(format("%s: cannot create: %s", save_path.c_str(), std::strerror(errno)));
        const uint32_t hv[2] = {1, uint32_t(V)};
        std::fwrite(LOGITS_MAGIC, 1, 8, save);
        std::fwrite(hv, 4, 2, save);
        std::fwrite(&n_scored, 8, 1, save);
    }

    if (slide_ctx >= n_ctx) usage_error("--ctx-slide must be below -c (the chunk would never slide)");
    context_params cp;
    cp.n_ctx = slide_ctx > 0 ? slide_ctx : n_ctx;
    cp.slide.on = slide_ctx > 0;
    cp.slide.sink_pages = slide_sinks;
    cp.n_ubatch = ubatch;
    cp.kv.kv_type = kv_type;
    cp.kv.page_tokens = page;
    cp.kv.dir = "";  // scoring never reuses pages: every chunk is computed
    cp.sparse.ratio = sparse;
    cp.kv.ram_bytes = strategy_ram;
    if (ram_given) {
        const page_geometry pg{page, m->hp.n_layer, m->hp.n_head_kv, m->hp.head_dim};
        cp.kv.ram_bytes = kv_capacity_bytes(ram, pg.page_bytes(kv_type), page, 0);
    }
    // Sparse attention applies to decoded tokens only: score them as decoded.
    if (sparse < 1.0f) decode = true;
    context ctx(*m, cp);
    std::fprintf(stderr, "gloas-perplexity: %s, %zu tokens, %d chunks of %d, kv %s pages of %d, sparse ratio %g%s\n",
                 text_path.c_str(), toks.size(), chunks, n_ctx, type_name(kv_type), page, double(sparse),
                 decode ? ", token by token" : "");
    if (slide_ctx > 0)
        std::fprintf(stderr, "gloas-perplexity: context of %d sliding with %d sink page(s)\n", slide_ctx, slide_sinks);

    double nll = 0, kl = 0;
    uint64_t count = 0, agree = 0;
    std::vector<float> base_logits(base ? size_t(V) : 0);
    std::vector<int32_t> chunk(static_cast<size_t>(n_ctx));
    const auto t0 = std::chrono::steady_clock::now();
    for (int32_t c = 0; c < chunks; ++c) {
        std::copy(toks.begin() + int64_t(c) * n_ctx, toks.begin() + int64_t(c + 1) * n_ctx, chunk.begin());
        chunk[0] = m->tok.bos();
        ctx.reset();
        auto score = [&](int32_t pos, const float * logits) {
            if (pos < first || pos >= n_ctx - 1) return;
            const log_softmax_stats st = lse(logits, V);
            nll += st.logsum - double(logits[chunk[size_t(pos) + 1]]);
            ++count;
            if (save) std::fwrite(logits, sizeof(float), size_t(V), save);
            if (base) {
                if (std::fread(base_logits.data(), sizeof(float), size_t(V), base) != size_t(V))
                    throw error(format("%s: ends early", base_path.c_str()));
                const log_softmax_stats bs = lse(base_logits.data(), V);
                double d = 0;
                for (int32_t i = 0; i < V; ++i) {
                    const double lp = double(base_logits[size_t(i)]) - bs.logsum;
                    const double lq = double(logits[i]) - st.logsum;
                    d += std::exp(lp) * (lp - lq);
                }
                kl += d;
                agree += bs.argmax == st.argmax;
            }
        };
        if (decode)
            for (int32_t i = 0; i < n_ctx; ++i) ctx.eval(&chunk[size_t(i)], 1, score);
        else
            ctx.eval(chunk.data(), n_ctx, score);
        std::fprintf(stderr, "[%d] %.4f\n", c + 1, std::exp(nll / double(count)));
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (save && std::fclose(save) != 0) throw error(format("%s: write failed", save_path.c_str()));
    if (base) std::fclose(base);
    std::fprintf(stderr, "gloas-perplexity: %llu positions scored in %.2f s (%.1f tokens/s)\n",
                 (unsigned long long) count, secs, double(chunks) * n_ctx / secs);
    if (base)
        std::printf("KL = %.6f\nTOP1 = %.4f\n", kl / double(count), double(agree) / double(count));
    std::printf("PPL = %.4f\n", std::exp(nll / double(count)));
    return 0;
}

} // namespace

int main(int argc, char ** argv) {
    try {
        return run(argc, argv);
    } catch (const error & e) {
        std::fprintf(stderr, "gloas-perplexity: error: %s\n", e.what());
        return 1;
    }
}
