// gloas-perplexity: scores a text under any K/V configuration, so every
// compression is measured against full precision.
//
//   gloas-perplexity -m MODEL -f TEXT [-c 512] [--kv-type T] [--save-logits F] [--kl-base F]
//
// Method (as llama.cpp's perplexity tool): the text is tokenized with BOS and
// cut into chunks of -c tokens; each chunk is evaluated from an empty context
// with its first token replaced by BOS, and the second half of each chunk is
// scored: token j+1 against the logits at j. The closing line is
// `PPL = X +/- U`, U the standard error of X: the per-token negative
// log-likelihoods' standard deviation over sqrt(their count), carried through
// exp() to first order (PPL = exp(mean NLL), so dPPL = PPL dNLL).
// --save-logits writes the scored logits; --kl-base reads such a file (from an
// F32 run) and adds the mean KL divergence KL(base || this) and the top-1
// agreement with it. --ctx-slide with --chunk-size N > -c evaluates chunks of
// N tokens in a context of -c positions that slides (as gloas --ctx-slide), so
// the scored half lies past that context.
#include "tools/common/cli.h"
#include "tools/common/weights.h"
#include "decoder/config.h"
#include "decoder/options.h"
#include "decoder/llama.h"
#include "decoder/model.h"
#include "decoder/strategy.h"
#include "base/error.h"
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

// The shared options gloas-perplexity takes (decoder/options.h), with its own
// help text where its default or meaning differs from gloas's.
const option_use SHARED[] = {
    {OPT_CTX_SIZE, false,
     "context size: tokens per chunk (default: 512; 0: the model's training context); above the model's "
     "training context draws a warning"},
    {OPT_BATCH, false, "tokens per eval call (default: 2048); the prefill chunk (-ub) is at most N"},
    {OPT_UBATCH, false, "prefill chunk: tokens per forward pass (default: 512)"},
    {OPT_THREADS},
    {OPT_CTX_SLIDE, false,
     "the context slides past its end as in gloas --ctx-slide (StreamingLLM: sink pages and a window of the "
     "latest positions), so chunks of --chunk-size tokens are scored in a -c window, to measure the quality of "
     "text beyond the context (default: off)"},
    {OPT_STRATEGY, false,
     "speed, balanced, aggressive or auto (sets the K/V type, sparse ratio and K/V RAM budget; the flags below "
     "override it; default: f32 pages, dense)"},
    {OPT_KV_TYPE, false, "page type: {words} (default: f32); the quantized types need a page size that is "
                         "a multiple of 32"},
    {OPT_KV_TYPE_K},
    {OPT_KV_TYPE_V},
    {OPT_KV_PAGE},
    {OPT_KV_RAM, false,
     "K/V RAM budget in the units of gloas --kv-capacity (0 = unbounded; default: the strategy's); the scores do "
     "not depend on it (pages are in memory: only the mapping shrinks)"},
    {OPT_SPARSE_RATIO, false,
     "share of K/V pages a decoded token attends to, 0 < R <= 1; below 1 the text is evaluated one token at a "
     "time, as decode reads it (default: 1 = dense)"},
    {OPT_NO_SPARSE},
    {OPT_NO_MMAP},
    {OPT_MMAP},
};
constexpr size_t N_SHARED = sizeof SHARED / sizeof SHARED[0];

std::string usage() {
    return std::string(R"(usage: gloas-perplexity -m MODEL -f TEXT [options]

  -m, --model FILE        GGUF or llama2.c checkpoint (-z TOKENIZER for the latter)
  -z, --tokenizer FILE
  -f, --file FILE         text to score
      --chunk-size N      tokens per chunk when it differs from -c: larger than
                          -c needs --ctx-slide (default: -c)
      --chunks N          score at most N chunks (default: all)
      --slide-sinks K     pages kept as attention sinks when sliding (default: 1)
      --decode            evaluate one token at a time even when dense
      --save-logits F     write the scored positions' logits to F
      --kl-base F         compare with logits saved by an earlier run (KL, top-1)
  -h, --help

context:
)") + options_usage(SHARED, N_SHARED, OPT_GROUP_CONTEXT) +
           "\nK/V cache (pages are in memory: scoring never reuses them):\n" +
           options_usage(SHARED, N_SHARED, OPT_GROUP_KV) + "\nmodel loading:\n" +
           options_usage(SHARED, N_SHARED, OPT_GROUP_MODEL) + R"(
Progress goes to stderr: the number of chunks and the estimated time, then
each chunk's running perplexity and the time left. stdout gets the result:
  PPL = X +/- U        U: standard error of X (from the per-token log-likelihoods)
and with --kl-base, first KL = K +/- U and TOP1 = fraction.

Exit status: 0 on success, 1 when a file or the run fails, 2 for a bad command line.
)";
}

constexpr char LOGITS_MAGIC[8] = {'G', 'L', 'O', 'A', 'S', 'L', 'G', 'T'};

using cli::usage_error;

// Running mean and variance of a series (Welford's update: no cancellation
// however long the series).
struct running_stats {
    uint64_t n = 0;
    double mean = 0, m2 = 0;  // m2: sum of squared deviations from the mean
    void add(double x) {
        ++n;
        const double d = x - mean;
        mean += d / double(n);
        m2 += d * (x - mean);
    }
    // Standard error of the mean: sample standard deviation / sqrt(n).
    double std_error() const { return n > 1 ? std::sqrt(m2 / double(n - 1) / double(n)) : 0.0; }
};

// "12 s" or "3.4 min": a duration for progress lines.
std::string duration_text(double s) {
    return s < 60.0 ? format("%.0f s", s) : format("%.1f min", s / 60.0);
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
    cli::prog = "gloas-perplexity";
    std::string model_path, tok_path, text_path, save_path, base_path;
    int32_t chunk_size = 0, n_chunks = -1;
    bool decode = false;
    int32_t slide_sinks = 1;
    run_config flags;  // the shared options given
    const std::vector<std::string> args(argv + 1, argv + argc);
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string & a = args[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= args.size()) usage_error(a + " needs a value");
            return args[++i];
        };
        auto int_value = [&](int64_t lo) { return int32_t(cli::parse_int(a, value().c_str(), lo, 1 << 24)); };
        if (a == "-h" || a == "--help") { std::fputs(usage().c_str(), stdout); return 0; }
        else if (a == "-m" || a == "--model") model_path = value();
        else if (a == "-z" || a == "--tokenizer") tok_path = value();
        else if (a == "-f" || a == "--file") text_path = value();
        else if (a == "--chunk-size") chunk_size = int_value(8);
        else if (a == "--chunks") n_chunks = int_value(1);
        else if (a == "--slide-sinks") slide_sinks = int_value(0);
        else if (a == "--decode") decode = true;
        else if (a == "--save-logits") save_path = value();
        else if (a == "--kl-base") base_path = value();
        else if (option_use_find(SHARED, N_SHARED, a)) i += config_apply_flag(flags, args, i) - 1;
        else if (i > 0 && (args[i - 1] == "--ctx-slide" || args[i - 1] == "--context-shift"))
            usage_error(format("'%s': %s takes no value: the window is -c, the tokens per chunk --chunk-size", a.c_str(),
                               args[i - 1].c_str()));
        else if (!a.empty() && a[0] == '-') usage_error("unknown option '" + a + "'");
        else usage_error("unexpected argument '" + a + "' (the text to score is -f FILE)");
    }
    if (model_path.empty() || text_path.empty()) usage_error("-m MODEL and -f TEXT are required");
    config_flags_check(flags);
    int32_t n_ctx = flags.flag_given(OPT_CTX_SIZE) ? flags.ctx.n_ctx : 512;
    if (n_ctx > 0 && n_ctx < 8) usage_error(format("-c %d: a context holds at least 8 tokens (0: the model's)", n_ctx));
    const bool slide = flags.ctx.slide.on;
    if (flags.ctx.n_threads > 0) {
        cli::warn_threads(flags.ctx.n_threads);
        ops::set_n_threads(flags.ctx.n_threads);
    }

    // -c and --chunk-size agree with --ctx-slide (once -c 0 is the model's).
    auto check_chunks = [&]() {
        if (chunk_size == 0) chunk_size = n_ctx;
        if (slide && chunk_size <= n_ctx)
            usage_error(format("--ctx-slide: chunks of %d tokens (--chunk-size) never slide past -c %d: make --chunk-size larger than -c",
                               chunk_size, n_ctx));
        if (!slide && chunk_size > n_ctx)
            usage_error(format("--chunk-size %d is larger than -c %d: add --ctx-slide to score chunks past the context", chunk_size, n_ctx));
    };
    if (n_ctx > 0) check_chunks();

    auto m = model::load({model_path, tok_path});
    if (cli::copy_weights(flags, *m)) cli::place_weights(*m, true, false, "gloas-perplexity");
    if (n_ctx == 0) n_ctx = m->hp.n_ctx_train;
    cli::warn_context(n_ctx, m->hp.n_ctx_train);
    check_chunks();

    // f32 pages, dense, in memory; then the strategy's settings; then the flags given.
    context_params cp;
    cp.n_ctx = n_ctx;
    cp.slide.sink_pages = slide_sinks;
    cp.kv.kv_type = type::F32;
    cp.kv.dir = "";  // scoring never reuses pages: every chunk is computed
    if (flags.flag_given(OPT_STRATEGY)) {
        memory_strategy st = memory_strategy::SPEED;
        memory_strategy_from_name(flags.strategy.c_str(), &st);
        if (st == memory_strategy::AUTO) {
            std::string why;
            st = choose_strategy(*m, n_ctx, available_ram_bytes(), &why);
            std::fprintf(stderr, "gloas-perplexity: strategy auto: %s\n", why.c_str());
        }
        apply_strategy(st, cp);
    }
    flags.given &= ~(uint64_t(1) << OPT_CTX_SIZE);  // -c 0 is resolved above
    config_override(flags, m->hp, cp);
    const type kv_type = cp.kv.kv_type;
    const int32_t page = cp.kv.page_tokens, batch = flags.n_batch;
    const float sparse = cp.sparse.ratio;
    const std::string text = read_whole_file(text_path);
    const std::vector<int32_t> toks = m->tok.encode(text, true);
    const int32_t available = int32_t(toks.size()) / chunk_size;
    if (available == 0)
        throw error(format("%s: %zu tokens, fewer than one chunk of %d (lower %s)", text_path.c_str(), toks.size(), chunk_size,
                           slide ? "--chunk-size" : "-c"));
    const int32_t chunks = n_chunks > 0 ? std::min(n_chunks, available) : available;
    const int32_t first = chunk_size / 2;
    const int32_t V = m->hp.n_vocab;
    const uint64_t n_scored = uint64_t(chunks) * uint64_t(chunk_size - 1 - first);

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

    // Sparse attention applies to decoded tokens only: score them as decoded.
    if (sparse < 1.0f) decode = true;
    context ctx(*m, cp);
    std::fprintf(stderr, "gloas-perplexity: %s, %zu tokens, %d chunks of %d, kv %s pages of %d, sparse ratio %g%s\n",
                 text_path.c_str(), toks.size(), chunks, chunk_size, type_name(kv_type), page, double(sparse),
                 decode ? ", token by token" : "");
    if (slide)
        std::fprintf(stderr, "gloas-perplexity: context of %d sliding with %d sink page(s)\n", n_ctx, slide_sinks);

    double nll = 0, kl = 0;
    running_stats nll_stats, kl_stats;  // per scored token: its NLL, its KL
    uint64_t count = 0, agree = 0;
    std::vector<float> base_logits(base ? size_t(V) : 0);
    std::vector<int32_t> chunk(static_cast<size_t>(chunk_size));
    const auto t0 = std::chrono::steady_clock::now();
    auto elapsed = [&]() { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    for (int32_t c = 0; c < chunks; ++c) {
        std::copy(toks.begin() + int64_t(c) * chunk_size, toks.begin() + int64_t(c + 1) * chunk_size, chunk.begin());
        chunk[0] = m->tok.bos();
        ctx.reset();
        auto score = [&](int32_t pos, const float * logits) {
            if (pos < first || pos >= chunk_size - 1) return;
            const log_softmax_stats st = lse(logits, V);
            const double x = st.logsum - double(logits[chunk[size_t(pos) + 1]]);
            nll += x;
            nll_stats.add(x);
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
                kl_stats.add(d);
                agree += bs.argmax == st.argmax;
            }
        };
        if (decode)
            for (int32_t i = 0; i < chunk_size; ++i) ctx.eval(&chunk[size_t(i)], 1, score);
        else
            for (int32_t i = 0; i < chunk_size; i += batch) ctx.eval(&chunk[size_t(i)], std::min(batch, chunk_size - i), score);
        // Chunks take the same time: the time left is the mean so far times those left.
        const double per_chunk = elapsed() / double(c + 1);
        if (c == 0)
            std::fprintf(stderr, "gloas-perplexity: %d chunks, %.2f s per chunk, estimated time %s\n", chunks, per_chunk,
                         duration_text(per_chunk * chunks).c_str());
        std::fprintf(stderr, "[%d] %.4f  (%s left)\n", c + 1, std::exp(nll / double(count)),
                     duration_text(per_chunk * double(chunks - c - 1)).c_str());
    }
    const double secs = elapsed();
    if (save && std::fclose(save) != 0) throw error(format("%s: write failed", save_path.c_str()));
    if (base) std::fclose(base);
    std::fprintf(stderr, "gloas-perplexity: %llu positions scored in %.2f s (%.1f tokens/s)\n",
                 (unsigned long long) count, secs, double(chunks) * chunk_size / secs);
    if (base)
        std::printf("KL = %.6f +/- %.6f\nTOP1 = %.4f\n", kl / double(count), kl_stats.std_error(), double(agree) / double(count));
    // PPL = exp(mean NLL): its standard error is PPL times the mean's.
    const double ppl = std::exp(nll / double(count));
    std::printf("PPL = %.4f +/- %.5f\n", ppl, ppl * nll_stats.std_error());
    return 0;
}

} // namespace

int main(int argc, char ** argv) {
    return cli::run_main([&] { return run(argc, argv); });
}
