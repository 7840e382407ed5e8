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
#include "tools/cli.h"
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
  -c, --ctx-size N     context size: tokens per chunk (default 512; 0: the
                       model's training context); above the model's training
                       context draws a warning
      --chunk-size N   tokens per chunk when it differs from -c: larger than -c
                       needs --ctx-slide (default: -c)
      --chunks N       score at most N chunks (default: all)
      --ctx-slide      the context slides past its end as in gloas --ctx-slide
                       (StreamingLLM: sink pages and a window of the latest
                       positions), so chunks of --chunk-size tokens are scored
                       in a -c window, to measure the quality of text beyond
                       the context (default: off)
      --slide-sinks K  pages kept as attention sinks when sliding (default: 1)
  -b, --batch-size N   tokens per eval call (default 2048)
  -ub, --ubatch-size N prefill chunk: tokens per forward pass (default 512;
                       also --ubatch)
  -t, --threads N      threads (default: all cores); more than the machine's
                       cores draws a warning
  -ctk, --cache-type-k T
  -ctv, --cache-type-v T
      --kv-type T      f32, f16, q8_0, q4_0, q4_kivi (default f32); K and V
                       share one type, so -ctk and -ctv name the same
      --strategy S     speed, balanced or aggressive (sets K/V type and sparse
                       ratio; --kv-type / --sparse-ratio given after override)
      --sparse-ratio R sparse decode attention; below 1 the text is evaluated
                       one token at a time, as decode reads it (default 1)
      --decode         evaluate one token at a time even when dense
      --kv-page N      tokens per page (default 32; a multiple of the K/V
                       type's block: 32 for q8_0 and q4_0)
      --kv-ram SIZE    K/V RAM budget (bytes with k/M/G, tokens with t; 0 =
                       unbounded; default: the strategy's); the scores do not
                       depend on it (pages are in memory: only the mapping shrinks)
      --save-logits F  write the scored positions' logits to F
      --kl-base F      compare with logits saved by an earlier run (KL, top-1)
  -h, --help

Progress goes to stderr: the number of chunks and the estimated time, then
each chunk's running perplexity and the time left. stdout gets the result:
  PPL = X +/- U        U: standard error of X (from the per-token log-likelihoods)
and with --kl-base, first KL = K +/- U and TOP1 = fraction.

Exit status: 0 on success, 1 when a file or the run fails, 2 for a bad command line.
)";

constexpr char LOGITS_MAGIC[8] = {'G', 'L', 'O', 'A', 'S', 'L', 'G', 'T'};

using cli::usage_error;

// The K/V page types (the store's); the other weight types are not.
bool is_kv_type(type t) {
    return t == type::F32 || t == type::F16 || t == type::Q8_0 || t == type::Q4_0 || t == type::Q4_KIVI;
}

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
    int32_t n_ctx = 512, chunk_size = 0, n_chunks = -1, ubatch = 512, batch = 2048, threads = 0, page = 32;
    type kv_type = type::F32;
    std::string kv_given;  // the flag that set the K/V type and its value, as typed
    float sparse = 1.0f;
    bool decode = false;
    bool slide = false;
    int32_t slide_sinks = 1;
    size_t strategy_ram = 0;  // the strategy's K/V RAM budget
    bool ram_given = false;   // --kv-ram
    kv_capacity ram;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage_error(a + " needs a value");
            return argv[++i];
        };
        auto int_value = [&](int64_t lo) { return int32_t(cli::parse_int(a, value().c_str(), lo, 1 << 24)); };
        if (a == "-h" || a == "--help") { std::fputs(USAGE, stdout); return 0; }
        else if (a == "-m" || a == "--model") model_path = value();
        else if (a == "-z" || a == "--tokenizer") tok_path = value();
        else if (a == "-f" || a == "--file") text_path = value();
        else if (a == "-c" || a == "--ctx-size") {
            n_ctx = int_value(0);
            if (n_ctx > 0 && n_ctx < 8) usage_error(format("-c %d: a context holds at least 8 tokens (0: the model's)", n_ctx));
        }
        else if (a == "--chunk-size") chunk_size = int_value(8);
        else if (a == "--chunks") n_chunks = int_value(1);
        else if (a == "--ctx-slide" || a == "--context-shift") slide = true;
        else if (a == "--slide-sinks") slide_sinks = int_value(0);
        else if (a == "-ub" || a == "--ubatch-size" || a == "--ubatch") ubatch = int_value(1);
        else if (a == "-b" || a == "--batch-size") batch = int_value(1);
        else if (a == "-t" || a == "--threads") threads = int_value(1);
        else if (a == "--kv-page") page = int_value(1);
        else if (a == "--kv-type" || a == "-ctk" || a == "--cache-type-k" || a == "-ctv" || a == "--cache-type-v") {
            const std::string v = value();
            type t;
            if (!type_from_name(v.c_str(), &t) || !is_kv_type(t))
                usage_error(format("%s: '%s' is not a K/V type (f32, f16, q8_0, q4_0, q4_kivi)", a.c_str(), v.c_str()));
            // One type holds K and V: -ctk and -ctv given together must agree.
            const bool pair = a.find("-ct") == 0 || a.find("--cache-type") == 0;
            const bool pair_before = kv_given.find("-ct") == 0 || kv_given.find("--cache-type") == 0;
            if (pair && pair_before && t != kv_type)
                usage_error(format("%s %s differs from %s: K and V pages share one type here (or use --kv-type)", a.c_str(),
                                   v.c_str(), kv_given.c_str()));
            kv_type = t;
            kv_given = a + " " + v;
        }
        else if (a == "--strategy") {
            const std::string v = value();
            memory_strategy st;
            if (!memory_strategy_from_name(v.c_str(), &st) || st == memory_strategy::AUTO)
                usage_error("--strategy: '" + v + "' is not speed, balanced or aggressive");
            context_params sp;
            apply_strategy(st, sp);
            kv_type = sp.kv.kv_type;
            kv_given = a + " " + v;
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
            const std::string v = value();
            char * end = nullptr;
            sparse = std::strtof(v.c_str(), &end);
            if (v.empty() || !end || *end || !(sparse > 0.0f && sparse <= 1.0f))
                usage_error("--sparse-ratio: '" + v + "' is not a number in (0, 1]");
        }
        else if (a == "--decode") decode = true;
        else if (a == "--save-logits") save_path = value();
        else if (a == "--kl-base") base_path = value();
        else if (i > 1 && (std::strcmp(argv[i - 1], "--ctx-slide") == 0 || std::strcmp(argv[i - 1], "--context-shift") == 0))
            usage_error(format("'%s': %s takes no value: the window is -c, the tokens per chunk --chunk-size", a.c_str(), argv[i - 1]));
        else if (!a.empty() && a[0] == '-') usage_error("unknown option '" + a + "'");
        else usage_error("unexpected argument '" + a + "' (the text to score is -f FILE)");
    }
    if (model_path.empty() || text_path.empty()) usage_error("-m MODEL and -f TEXT are required");
    if (!page_geometry{page, 1, 1, 1}.valid_for(kv_type))
        usage_error(format("--kv-page %d does not suit K/V type %s (%s): its pages hold a multiple of %lld tokens", page,
                           type_name(kv_type), kv_given.empty() ? "the default" : kv_given.c_str(),
                           (long long) traits(kv_type).blck_size));
    if (threads > 0) {
        cli::warn_threads(threads);
        ops::set_n_threads(threads);
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
    if (n_ctx == 0) n_ctx = m->hp.n_ctx_train;
    cli::warn_context(n_ctx, m->hp.n_ctx_train);
    check_chunks();
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

    context_params cp;
    cp.n_ctx = n_ctx;
    cp.slide.on = slide;
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
    try {
        return run(argc, argv);
    } catch (const error & e) {
        std::fprintf(stderr, "gloas-perplexity: error: %s\n", e.what());
        return 1;
    }
}
