// gloas-bench: prefill and decode throughput, in the spirit of llama-bench.
//
//   gloas-bench -m MODEL[,MODEL...] [-p 512[,...]] [-n 128[,...]] [-pg PP,TG] [-d 0,4096]
//               [-ctk f16,q8_0] [-t 2[,...]] [-r 3] [--bandwidth] [-o md|json|jsonl|csv]
//
// pp<N>: one prefill of N tokens (in eval calls of -b tokens, each split in
// chunks of -ub); tg<N>: N single-token decodes; pp<P>+tg<T>: both in turn,
// timed together; all after -d tokens already in the context (depth; the
// depth's prefill is not timed). Every combination of model, thread count,
// K/V configuration, depth and test is one row. The K/V pages are in memory
// (no page file). Token ids are random
// (speed does not depend on them); tokenization and sampling are not timed.
// A warm-up run (which also pulls the weights into the page cache) precedes
// the timed repetitions. With --bandwidth the machine's read bandwidth is
// measured and decode is reported against its ceiling, bandwidth / bytes of
// weights read per token; prefill is also reported in GFLOP/s per thread,
// counting 2 x matrix parameters per token.
#include "tools/common/cli.h"
#include "tools/common/weights.h"
#include "decoder/config.h"
#include "decoder/options.h"
#include "decoder/llama.h"
#include "decoder/model.h"
#include "decoder/random-model.h"
#include "decoder/strategy.h"
#include "kvcache/page.h"
#include "tensor/bandwidth.h"
#include "tensor/cuda/cuda-backend.h"
#include "base/error.h"
#include "tensor/ops.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <dirent.h>
#include <memory>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

using namespace gloas;

namespace {

// The shared options gloas-bench takes (decoder/options.h): list rows take
// comma-separated values, each read as gloas reads one, and every value is
// measured in turn.
const option_use SHARED[] = {
    {OPT_BATCH, false, "tokens per eval call of a prefill; the prefill chunk (-ub) is at most N (default: 2048)"},
    {OPT_UBATCH, false, "prefill chunk: tokens per forward pass (default: 512)"},
    {OPT_THREADS, true,
     "threads; 0 or -1: all cores (default: all); more than the machine's cores draws a warning"},
    {OPT_STRATEGY, true,
     "memory strategies speed, balanced, aggressive or auto (chosen for each model from its size, the longest "
     "context measured and the free RAM); each sets the K/V type, sparse ratio and K/V RAM budget, and replaces "
     "--kv-type given before it"},
    {OPT_KV_TYPE, true,
     "K/V page types: {words} (default: f16); the quantized types need a page size that is a multiple of 32; replaces "
     "--strategy given before it"},
    {OPT_KV_TYPE_K, true},
    {OPT_KV_TYPE_V, true},
    {OPT_KV_PAGE},
    {OPT_KV_RAM, false,
     "K/V RAM budget of every configuration, in the units of gloas --kv-capacity (default: the strategy's; 0 = "
     "unbounded)"},
    {OPT_KV_READ, true,
     "how decode reads pages: map (through the mapping) or copy (copies of the selected pieces out of the file); "
     "each configuration runs with each (default: the strategy's)"},
    {OPT_NO_MMAP, false,
     "copy each model's weights into memory (transparent huge pages where the kernel allows) instead of reading "
     "them through the file's mapping, as gloas --no-mmap does (the default when they take at most a quarter of the "
     "available RAM); llama-bench -mmp 0 (-lm none in its newer builds) is the same"},
    {OPT_MMAP, false,
     "read each model's weights through the file's mapping whatever their size, as gloas --mmap"},
    {OPT_N_GPU_LAYERS, false,
     "layers on the CUDA GPU, as gloas -ngl: N > 0 runs every layer there or fails with the reason; auto, all or -1 "
     "the GPU when it can, else the CPU"},
    {OPT_GPU_DEVICE, false, "the CUDA device's index, as gloas --device (default: 0)"},
};
constexpr size_t N_SHARED = sizeof SHARED / sizeof SHARED[0];

std::string usage() {
    return std::string(R"(usage: gloas-bench -m MODEL[,MODEL...] [options]

LIST flags take comma-separated values; every combination is measured.

  -m, --model LIST        models (GGUF or llama2.c), comma-separated or repeated
  -p, --n-prompt LIST     prompt tokens for the prefill test (default 512; 0 skips)
  -n, --n-gen LIST        tokens for the decode test (default 128; 0 skips)
  -pg PP,TG               a prompt of PP tokens then TG decodes, timed together
                          and reported as ppPP+tgTG in (PP+TG)/s; repeatable
  -d, --n-depth LIST      tokens already in the context (default 0; also --depth)
      --config FILE       settings from a YAML file in the specification's shape:
                          K/V type and sparsity, page size, ubatch, threads; with
                          no -m, a random-weight model of its ultra_decoder shape
                          (cached under $XDG_CACHE_HOME/gloas/models); flags
                          given too override it
      --fill MODE         how each depth is reached: prefill (default: the model
                          computes it) or random: random K/V rows are stored page
                          by page through the K/V path and taken as a reused
                          prefix, with no prefill, so long depths are affordable
                          (decode cost depends on the K/V size, not its values;
                          sparse selection scores every page whatever the values)
      --kv-dir DIR        page file in a private folder under DIR, removed at exit
                          (default: pages in memory; resident figures only mean
                          RAM saved with a file on disk)
  -r, --repetitions N     timed repetitions (default 3; at least 1)
      --rounds N          run every configuration N times in turn (default 1),
                          the repetitions of all rounds pooled, and report their
                          median: on a shared machine a slow spell then spreads
                          over all configurations instead of falling on one, and
                          does not move the figure
      --bandwidth         measure read bandwidth and report decode against it
  -o, --output FMT        md (default), json, jsonl or csv
  -h, --help

context:
)") + options_usage(SHARED, N_SHARED, OPT_GROUP_CONTEXT) + "\nK/V cache:\n" +
           options_usage(SHARED, N_SHARED, OPT_GROUP_KV) + "\nmodel loading:\n" +
           options_usage(SHARED, N_SHARED, OPT_GROUP_MODEL) +
           "\nExit status: 0 on success, 1 when a model or run fails, 2 for a bad command line.\n";
}

double now_s() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

double cpu_s() {
    struct timespec ts;
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

// What names a row: the model, the configuration and the test.
struct row_key {
    std::string model, type, kv, test;
    double size_mib, params_m;
    int threads, n_batch, n_ubatch;
    double bw;                   // read bandwidth measured for `threads` (with --bandwidth)
};

struct result : row_key {
    double mean = 0, sd = 0;     // tokens/s (with --rounds, mean is the median)
    std::vector<double> samples; // tokens/s of each repetition
    double ceiling_pct = -1;     // decode: % of bandwidth ceiling
    double gflops_thread = -1;   // prefill: GFLOP/s per thread
    // decode, per token: K/V bytes read (pages attended + page summaries
    // scored + the open page), weight bytes read; resident K/V after the run
    bool kv_stats = false;
    double cpu_per_token = 0;  // process CPU seconds per token (all threads; robust to a busy machine)
    double kv_read = 0, summary_read = 0, weight_read = 0;
    double copied = -1;        // K/V bytes per token copied out of the page file (--kv-read copy), as the kernel counted them
    size_t budget = 0, resident = 0, peak = 0, fixed = 0, file = 0;
};

void stats(const std::vector<double> & v, double & mean, double & sd) {
    mean = 0;
    for (double x : v) mean += x;
    mean /= double(v.size());
    sd = 0;
    for (double x : v) sd += (x - mean) * (x - mean);
    sd = v.size() > 1 ? std::sqrt(sd / double(v.size() - 1)) : 0.0;
}

std::vector<std::string> split(const std::string & s) {
    std::vector<std::string> out;
    size_t b = 0;
    while (b <= s.size()) {
        size_t e = s.find(',', b);
        if (e == std::string::npos) e = s.size();
        if (e > b) out.push_back(s.substr(b, e - b));
        b = e + 1;
    }
    return out;
}

// Fills sequence 0 of ctx (empty) to `depth` positions without a forward pass:
// random K/V rows (windows of `pool`) are stored through a kv_sequence on the
// context's store and published, then eval_prompt takes them as a reused
// prefix (only the open page's positions and the last token are computed).
// tokens: depth + 1 ids.
void fill_random(context & ctx, const model & m, const int32_t * tokens, int depth, const std::vector<float> & pool,
                 std::mt19937 & rng) {
    const hparams & hp = m.hp;
    kv_geometry g;
    g.n_layer = hp.n_layer;
    g.n_ctx = ctx.n_ctx();
    g.n_head = hp.n_head;
    g.n_head_kv = hp.n_head_kv;
    g.head_dim = hp.head_dim;
    const int32_t chunk = 64;
    const size_t E = size_t(hp.n_embd_kv()), rows = size_t(chunk) * E;
    GLOAS_ASSERT(pool.size() > 2 * rows);
    std::uniform_int_distribution<size_t> at(0, pool.size() - 2 * rows);
    {
        kv_sequence fill(ctx.store(), g, chunk);
        for (int32_t pos0 = 0; pos0 < depth; pos0 += chunk) {
            const int32_t n = std::min(chunk, depth - pos0);
            for (int32_t il = 0; il < hp.n_layer; ++il) {
                const float * k = pool.data() + at(rng);
                fill.store(il, pos0, n, k, k + rows);
            }
            fill.commit(tokens + pos0, pos0, n);
        }
        ctx.store().flush();
        ctx.eval_prompt(tokens, depth + 1);
    }
    const int32_t P = ctx.store().geometry().page_tokens;
    if (ctx.n_reused() < depth / P * P)
        std::fprintf(stderr, "gloas-bench: warning: only %d of %d filled positions were reused\n", ctx.n_reused(), depth);
}

// Removes the files of a folder made by this program (not the folder).
void remove_files(const std::string & dir) {
    if (dir.empty()) return;
    if (DIR * d = ::opendir(dir.c_str())) {
        while (struct dirent * e = ::readdir(d))
            if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) ::unlink((dir + "/" + e->d_name).c_str());
        ::closedir(d);
    }
}

// A number of a command-line list: an integer in [lo, hi], or a usage error
// naming the flag and what is wrong; `why_lo` says why values below lo fail.
int list_int(const std::string & flag, const std::string & s, int lo, int hi, const char * why_lo) {
    char * end = nullptr;
    errno = 0;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (errno || !end || *end || s.empty())
        cli::usage_error(format("%s%s '%s' is not an integer", flag.c_str(), flag.back() == ':' ? "" : ":", s.c_str()));
    // "-r 0: ..." for a flag, "-pg 5,0: 0 ..." for a part of a value (flag ends in ':')
    const std::string what = flag.back() == ':' ? flag + " " + s : flag + " " + s + ":";
    if (v < lo) cli::usage_error(format("%s %s", what.c_str(), why_lo));
    if (v > hi) cli::usage_error(format("%s at most %d", what.c_str(), hi));
    return int(v);
}

std::vector<int> int_list(const std::string & flag, const std::string & s, int lo, int hi, const char * why_lo) {
    std::vector<int> out;
    for (const auto & x : split(s)) out.push_back(list_int(flag, x, lo, hi, why_lo));
    if (out.empty()) cli::usage_error(format("%s '%s': no value in the list", flag.c_str(), s.c_str()));
    return out;
}

// A configuration's name in the tables: "balanced (q8_0)", "aggressive (q4_kivi, sparse 0.1)".
std::string config_label(const char * what, type t, float sparse) {
    return std::string(what) + " (" + type_name(t) + (sparse < 1.0f ? format(", sparse %.2g)", double(sparse)) : std::string(")"));
}

// One timed test: pp (prefill of n_pp tokens), tg (n_tg decodes) or both in
// turn (-pg), named as llama-bench names them.
struct test_spec {
    int n_pp = 0, n_tg = 0;
    std::string name() const {
        if (n_pp > 0 && n_tg > 0) return "pp" + std::to_string(n_pp) + "+tg" + std::to_string(n_tg);
        return n_pp > 0 ? "pp" + std::to_string(n_pp) : "tg" + std::to_string(n_tg);
    }
};

int run(int argc, char ** argv) {
    cli::prog = "gloas-bench";
    constexpr int MAX_TOKENS = 1 << 24;
    std::vector<std::string> models;
    std::vector<int> depths = {0};
    // Each configuration is a K/V type and a sparse ratio, named for the table;
    // `strategy` AUTO is chosen for each model.
    struct kv_config {
        std::string name;
        type t;
        float sparse;
        size_t ram = 0;
        bool copy = false;
        bool auto_strategy = false;
    };
    std::vector<kv_config> kv_configs = {{"f16", type::F16, 1.0f}};
    int page = 32;
    std::vector<int> n_prompts = {512}, n_gens = {128}, threads = {0};
    std::vector<std::pair<int, int>> pgs;  // -pg PP,TG
    int ubatch = 512, reps = 3, rounds = 1;
    bool bandwidth = false;
    int ngl = 0;                // -ngl: > 0 runs on the CUDA GPU; -1 (auto, all) where it can
    bool fill = false;          // --fill random
    std::string kv_dir;         // --kv-dir
    std::string out_fmt = "md";
    // The shared options: single values in `flags`; each list element in a
    // copy of it (config_apply_list).
    run_config flags;
    std::vector<run_config> k_types, v_types, strategies, read_modes;
    std::string k_given, v_given;  // the flags and values as typed
    bool strategy_last = false;  // --strategy after the K/V type flags: it chooses the configurations
    // --config first, wherever it is: the other flags override it.
    std::unique_ptr<run_config> cfg;
    for (int i = 1; i + 1 < argc; ++i)
        if (std::strcmp(argv[i], "--config") == 0) {
            cfg = std::make_unique<run_config>(config_load(argv[i + 1]));
            for (const auto & w : cfg->warnings) std::fprintf(stderr, "gloas-bench: warning: %s\n", w.c_str());
            memory_strategy st = memory_strategy::SPEED;
            context_params cp = cfg->ctx;
            if (memory_strategy_from_name(cfg->strategy.c_str(), &st) && st != memory_strategy::AUTO) apply_strategy(st, cp);
            else cp.sparse.ratio = 1.0f;
            if (cfg->use_sparse_attention) cp.sparse.ratio = float(cfg->sparse_ratio);
            kv_configs = {{config_label("config", cfg->ctx.kv.kv_type, cp.sparse.ratio), cfg->ctx.kv.kv_type, cp.sparse.ratio}};
            page = cfg->ctx.kv.page_tokens;
            ubatch = cfg->ctx.n_ubatch;
            if (cfg->ctx.n_threads > 0) threads = {cfg->ctx.n_threads};
        }
    const std::vector<std::string> args(argv, argv + argc);
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) cli::usage_error(a + " needs a value");
            return argv[++i];
        };
        if (a == "-h" || a == "--help") { std::fputs(usage().c_str(), stdout); return 0; }
        else if (a == "-m" || a == "--model") for (auto & m : split(value())) models.push_back(m);
        else if (a == "-p" || a == "--n-prompt") n_prompts = int_list(a, value(), 0, MAX_TOKENS, "must be 0 (skip) or more");
        else if (a == "-n" || a == "--n-gen") n_gens = int_list(a, value(), 0, MAX_TOKENS, "must be 0 (skip) or more");
        else if (a == "-pg") {
            const std::string v = value();
            const std::vector<std::string> parts = split(v);
            if (parts.size() != 2 || v.find(',') == std::string::npos)
                cli::usage_error(format("-pg '%s': expected PP,TG (prompt tokens, then generated tokens), e.g. -pg 512,128", v.c_str()));
            const std::string flag = "-pg " + v + ":";
            pgs.push_back({list_int(flag, parts[0], 1, MAX_TOKENS, "needs at least 1 prompt token"),
                           list_int(flag, parts[1], 1, MAX_TOKENS, "needs at least 1 generated token")});
        }
        else if (a == "-d" || a == "--depth" || a == "--n-depth") depths = int_list(a, value(), 0, MAX_TOKENS, "a depth is 0 or more tokens");
        else if (a == "-r" || a == "--repetitions")
            reps = list_int(a, value(), 1, 1 << 20, "at least 1 timed repetition is needed (warm-up runs are not timed)");
        else if (a == "--rounds") rounds = list_int(a, value(), 1, 1 << 20, "at least 1 round is needed");
        else if (a == "--bandwidth") bandwidth = true;
        else if (a == "--fill") {
            const std::string v = value();
            if (v != "random" && v != "prefill") cli::usage_error(format("--fill: '%s' is not random or prefill", v.c_str()));
            fill = v == "random";
        }
        else if (a == "--kv-dir") kv_dir = value();
        else if (a == "--config") value();
        else if (a == "-o" || a == "--output") {
            out_fmt = value();
            if (out_fmt != "md" && out_fmt != "json" && out_fmt != "jsonl" && out_fmt != "csv")
                cli::usage_error(format("%s: '%s' is not md, json, jsonl or csv", a.c_str(), out_fmt.c_str()));
        }
        else if (const option_use * u = option_use_find(SHARED, N_SHARED, a)) {
            if (!u->list) {
                i += int(config_apply_flag(flags, args, size_t(i))) - 1;
                continue;
            }
            std::vector<run_config> list = config_apply_list(flags, args, size_t(i));
            const std::string given = a + " " + value();
            switch (u->id) {
                case OPT_THREADS:
                    threads.clear();
                    for (const run_config & c : list) threads.push_back(c.ctx.n_threads);
                    cli::warn_threads(*std::max_element(threads.begin(), threads.end()));
                    break;
                case OPT_KV_READ: read_modes = list; break;
                case OPT_STRATEGY: strategies = list; strategy_last = true; break;
                case OPT_KV_TYPE_V: v_types = list; v_given = given; strategy_last = false; break;
                default: k_types = list; k_given = given; strategy_last = false; break;  // --kv-type, -ctk
            }
        }
        else cli::usage_error(format("unknown option '%s'", a.c_str()));
    }
    if (flags.flag_given(OPT_KV_PAGE)) page = flags.ctx.kv.page_tokens;
    if (flags.flag_given(OPT_UBATCH)) ubatch = flags.ctx.n_ubatch;
    const int batch = flags.n_batch;
    if (flags.flag_given(OPT_BATCH)) ubatch = std::min(ubatch, batch);
    ngl = flags.n_gpu_layers;
    // -ctk and -ctv name one list (K and V pages have one type): checked
    // element by element as gloas checks one pair.
    if (!k_types.empty() && !v_types.empty() && k_types.size() != v_types.size())
        throw cli_error(format("%s and %s: K and V pages have one type in this build; give the same list to both (or "
                               "--kv-type LIST)", k_given.c_str(), v_given.c_str()));
    for (size_t j = 0; j < k_types.size() && j < v_types.size(); ++j) {
        run_config pair = k_types[j];
        pair.kv_type_v = v_types[j].kv_type_v;
        pair.given |= v_types[j].given;
        config_flags_check(pair);
    }
    if (!strategies.empty() && (strategy_last || (k_types.empty() && v_types.empty()))) {
        kv_configs.clear();
        for (const run_config & c : strategies) {
            memory_strategy st = memory_strategy::SPEED;
            memory_strategy_from_name(c.strategy.c_str(), &st);
            context_params cp;
            if (st == memory_strategy::AUTO) {
                kv_configs.push_back({"auto", type::F16, 1.0f, 0, false, true});
                continue;
            }
            apply_strategy(st, cp);
            kv_configs.push_back({config_label(memory_strategy_name(st), cp.kv.kv_type, cp.sparse.ratio), cp.kv.kv_type, cp.sparse.ratio, cp.kv.ram_bytes, cp.kv.read_copy});
        }
    } else if (!k_types.empty() || !v_types.empty()) {
        kv_configs.clear();
        for (const run_config & c : k_types) kv_configs.push_back({type_name(c.ctx.kv.kv_type), c.ctx.kv.kv_type, 1.0f});
        if (k_types.empty())
            for (const run_config & c : v_types) kv_configs.push_back({type_name(c.kv_type_v), c.kv_type_v, 1.0f});
    }
    if (models.empty() && cfg) {
        const char * xdg = std::getenv("XDG_CACHE_HOME");
        const char * home = std::getenv("HOME");
        const std::string dir = xdg && *xdg ? std::string(xdg) + "/gloas/models"
                              : std::string(home && *home ? home : ".") + "/.cache/gloas/models";
        llama_gguf_hparams hp = config_random_model_shape(*cfg);
        std::fprintf(stderr, "gloas-bench: random-weight model of %s's shape (dim %lld, %lld layers, %lld heads, ffn %lld, "
                     "vocab %lld, %s) in %s\n", cfg->path.c_str(), (long long) hp.n_embd, (long long) hp.n_layer,
                     (long long) hp.n_head, (long long) hp.n_ff, (long long) hp.n_vocab, type_name(hp.wtype), dir.c_str());
        models.push_back(cached_random_model(dir, hp));
    }
    if (models.empty()) cli::usage_error("no model given (-m MODEL or --config FILE)");
    for (const kv_config & kc : kv_configs) {
        const std::string why = kc.auto_strategy ? std::string() : kv_options_problem(kc.t, page, evict_policy::LRU);
        if (!why.empty()) throw cli_error(why);
    }
    if (!read_modes.empty()) {
        std::vector<kv_config> each;
        for (const kv_config & kc : kv_configs)
            for (const run_config & r : read_modes) {
                kv_config c = kc;
                c.copy = r.ctx.kv.read_copy;
                c.name += c.copy ? " copy" : " map";
                each.push_back(c);
            }
        kv_configs = each;
    }
    // The tests, in llama-bench's order: every -p, every -n, then every -pg.
    std::vector<test_spec> tests;
    for (int p : n_prompts)
        if (p > 0) tests.push_back({p, 0});
    for (int n : n_gens)
        if (n > 0) tests.push_back({0, n});
    for (const auto & [p, n] : pgs) tests.push_back({p, n});
    if (tests.empty()) cli::usage_error("nothing to measure: -p and -n are 0 and no -pg is given");
    int longest = 16;  // positions a test adds to its depth (the warm-up needs 16)
    for (const test_spec & t : tests) longest = std::max(longest, t.n_pp + t.n_tg);
    // Each thread count in turn: 0 (no -t) means all cores.
    const int all_threads = ops::n_threads();
    for (int & t : threads) t = t > 0 ? t : all_threads;

    // Read bandwidth, measured once per thread count (with --bandwidth).
    std::vector<std::pair<int, double>> bandwidths;
    auto bandwidth_for = [&](int nt) {
        if (ngl > 0) {  // the GPU's memory, once
            if (bandwidths.empty()) {
                try {
                    bandwidths.push_back({0, cuda_read_bandwidth(size_t(1) << 30, 10, flags.gpu_device)});
                } catch (const error & e) {
                    throw error(format("--bandwidth with -ngl %d: the GPU's read bandwidth cannot be measured: %s", ngl, e.what()));
                }
                std::fprintf(stderr, "gloas-bench: GPU read bandwidth: %.2f GB/s\n", bandwidths[0].second / 1e9);
            }
            return bandwidths[0].second;
        }
        for (const auto & [n, b] : bandwidths)
            if (n == nt) return b;
        const double plain = measure_read_bandwidth(size_t(1) << 30, nt, 10);
        const double pref = measure_read_bandwidth(size_t(1) << 30, nt, 10, true);
        std::fprintf(stderr, "gloas-bench: read bandwidth with %d threads: %.2f GB/s (%.2f GB/s with software prefetch)\n",
                     nt, plain / 1e9, pref / 1e9);
        bandwidths.push_back({nt, std::max(plain, pref)});
        return bandwidths.back().second;
    };

    // A private page-file folder (each configuration's file is removed after it).
    std::string page_dir;
    if (!kv_dir.empty()) {
        std::string tmpl = kv_dir + "/gloas-bench-XXXXXX";
        if (!::mkdtemp(&tmpl[0])) throw error(format("%s: cannot create a folder in it: %s", kv_dir.c_str(), std::strerror(errno)));
        page_dir = tmpl;
    }
    if (fill)
        std::fprintf(stderr, "gloas-bench: --fill random: each depth's K/V is random rows stored through the K/V path and "
                     "reused as a prefix, not a prefill; decode cost depends on the K/V size, not its values, and sparse "
                     "selection scores every page whatever they are\n");
    std::vector<float> pool;
    if (fill) {
        std::mt19937 prng(99);
        std::uniform_real_distribution<float> u(-2.0f, 2.0f);
        pool.resize(size_t(1) << 20);
        for (float & x : pool) x = u(prng);
    }
    std::vector<result> results;
    // A result of a later round joins the first round's: samples pooled, CPU
    // time averaged over them (the other figures do not depend on the round).
    auto add_result = [&](result r) {
        for (result & o : results) {
            if (o.model != r.model || o.kv != r.kv || o.test != r.test || o.threads != r.threads) continue;
            const double n0 = double(o.samples.size()), n1 = double(r.samples.size());
            o.cpu_per_token = (o.cpu_per_token * n0 + r.cpu_per_token * n1) / (n0 + n1);
            o.samples.insert(o.samples.end(), r.samples.begin(), r.samples.end());
            const double old_mean = o.mean;
            stats(o.samples, o.mean, o.sd);
            std::vector<double> v = o.samples;  // the median, as --rounds says
            std::sort(v.begin(), v.end());
            const size_t k = v.size() / 2;
            o.mean = v.size() % 2 ? v[k] : 0.5 * (v[k - 1] + v[k]);
            if (o.ceiling_pct >= 0) o.ceiling_pct *= o.mean / old_mean;
            if (o.gflops_thread >= 0) o.gflops_thread *= o.mean / old_mean;
            return;
        }
        results.push_back(std::move(r));
    };
    std::mt19937 rng(1234);
    for (const auto & path : models) {
        std::fprintf(stderr, "gloas-bench: loading %s\n", path.c_str());
        auto m = model::load({path, ""});
        if (cli::copy_weights(flags, *m)) cli::place_weights(*m, true, false, "gloas-bench");
        if (cfg) config_check_model(*cfg, m->hp, path);
        const int max_depth = *std::max_element(depths.begin(), depths.end());
        std::uniform_int_distribution<int32_t> tok(0, m->hp.n_vocab - 1);
        std::vector<int32_t> tokens(size_t(max_depth + longest + 1));
        for (auto & t : tokens) t = tok(rng);

        // Matrix parameters: every weight except the norms and the embedding table
        // (a row lookup), i.e. what the matmuls multiply.
        double mat_params = double(m->output.nelements());
        for (const auto & l : m->layers)
            for (const tensor * t : {&l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_gate, &l.ffn_down, &l.ffn_up})
                mat_params += double(t->nelements());

        // --strategy auto: the strategy gloas would choose for this model at
        // the longest context measured.
        std::vector<kv_config> configs = kv_configs;
        for (kv_config & kc : configs) {
            if (!kc.auto_strategy) continue;
            std::string why;
            const memory_strategy st = choose_strategy(*m, int32_t(tokens.size()), available_ram_bytes(), &why);
            std::fprintf(stderr, "gloas-bench: strategy auto: %s\n", why.c_str());
            context_params cp;
            apply_strategy(st, cp);
            const bool copy = kc.copy;
            const std::string suffix = kc.name.substr(4);  // " map" / " copy" of --kv-read
            kc = {config_label(format("auto: %s", memory_strategy_name(st)).c_str(), cp.kv.kv_type, cp.sparse.ratio) + suffix,
                  cp.kv.kv_type, cp.sparse.ratio, cp.kv.ram_bytes, suffix.empty() ? cp.kv.read_copy : copy};
            const std::string bad = kv_options_problem(kc.t, page, evict_policy::LRU);
            if (!bad.empty()) throw cli_error(bad);
        }

        for (int round = 0; round < rounds; ++round)
        for (int nt : threads) {
        ops::set_n_threads(nt);
        const double bw = bandwidth ? bandwidth_for(nt) : 0.0;
        for (const kv_config & kc : configs) {
            context_params cp;
            cp.n_ctx = int32_t(tokens.size());
            cp.n_ubatch = ubatch;
            cp.n_threads = nt;
            cp.kv.kv_type = kc.t;
            cp.sparse.ratio = kc.sparse;
            cp.kv.page_tokens = page;
            cp.kv.dir = page_dir;
            cp.kv.ram_bytes = kc.ram;
            cp.kv.read_copy = kc.copy;
            cp.n_gpu_layers = ngl;
            cp.gpu_required = ngl > 0;
            cp.gpu_device = flags.gpu_device;
            const page_geometry pg{page, m->hp.n_layer, m->hp.n_head_kv, m->hp.head_dim};
            if (flags.flag_given(OPT_KV_RAM)) cp.kv.ram_bytes = kv_capacity_bytes(flags.kv_ram, pg.page_bytes(kc.t), page, 0);
            // Room for two sequences of the longest depth: an old fill is evicted, not piled up.
            if (fill) cp.kv.capacity_bytes = pg.page_bytes(kc.t) * size_t(2 * (cp.n_ctx / page + 2));
            remove_files(page_dir);
            // A fresh context (and mapping) per filled depth: resident figures are one sequence's.
            std::unique_ptr<context> ctx = std::make_unique<context>(*m, cp);
            for (std::string n = ctx->store().take_notices(); !n.empty(); n.clear())
                std::fprintf(stderr, "gloas-bench: %s: %s", kc.name.c_str(), n.c_str());
            // Warm-up: touches every weight page and every code path.
            ctx->eval(tokens.data(), 16);
            ctx->eval(tokens.data(), 1);

            auto base = [&](const std::string & test) {
                result r;
                static_cast<row_key &>(r) = {m->name, type_name(m->weight_type), kc.name, test,
                                             double(m->weight_bytes) / (1024.0 * 1024.0), double(m->n_params) / 1e6,
                                             nt, batch, ubatch, bw};
                return r;
            };
            // A prompt of n tokens from `at`, in eval calls of -b tokens (the
            // context splits each into -ub chunks).
            auto prefill = [&](const int32_t * at, int n) {
                for (int i = 0; i < n; i += batch) ctx->eval(at + i, std::min(batch, n - i));
            };
            for (int depth : depths) {
                const std::string at = depth ? " @ d" + std::to_string(depth) : "";
                // The context holds `depth` tokens before each timed run.
                auto to_depth = [&]() {
                    ctx->reset();
                    if (fill) {
                        ctx.reset();
                        ctx = std::make_unique<context>(*m, cp);
                    }
                    if (depth > 0 && fill) {
                        for (int i = 0; i <= depth; ++i) tokens[size_t(i)] = tok(rng);  // new pages, not last run's
                        fill_random(*ctx, *m, tokens.data(), depth, pool, rng);
                    } else if (depth > 0) {
                        prefill(tokens.data(), depth);
                    }
                };
                for (const test_spec & ts : tests) {
                if (ts.n_tg == 0) {
                    const int n_prompt = ts.n_pp;
                    std::vector<double> v;
                    for (int r = 0; r < reps; ++r) {
                        to_depth();
                        double t0 = now_s();
                        prefill(tokens.data() + depth, n_prompt);
                        v.push_back(double(n_prompt) / (now_s() - t0));
                    }
                    result res = base(ts.name() + at);
                    res.samples = v;
                    stats(v, res.mean, res.sd);
                    res.gflops_thread = 2.0 * mat_params * res.mean / 1e9 / nt;
                    add_result(res);
                } else if (ts.n_pp > 0) {
                    // -pg: the prompt, then the decodes, timed together as one
                    // figure of (PP + TG) tokens per second, as llama-bench does.
                    std::vector<double> v;
                    for (int r = 0; r < reps; ++r) {
                        to_depth();
                        const int32_t p0 = ctx->n_past();
                        double t0 = now_s();
                        prefill(tokens.data() + p0, ts.n_pp);
                        for (int i = 0; i < ts.n_tg; ++i) ctx->eval(&tokens[size_t(p0 + ts.n_pp + i)], 1);
                        v.push_back(double(ts.n_pp + ts.n_tg) / (now_s() - t0));
                    }
                    result res = base(ts.name() + at);
                    res.samples = v;
                    stats(v, res.mean, res.sd);
                    add_result(res);
                } else {
                    const int n_gen = ts.n_tg;
                    std::vector<double> v;
                    uint64_t reads = 0, copied = 0;
                    double summaries = 0, open = 0, cpu = 0;
                    for (int r = 0; r < reps; ++r) {
                        to_depth();
                        kv_store & st = ctx->store();
                        st.metrics().resident_peak = 0;
                        const uint64_t reads0 = ctx->kv().page_reads(), copied0 = ctx->kv().bytes_copied();
                        const int32_t p0 = ctx->n_past();
                        double t0 = now_s(), c0 = cpu_s();
                        for (int i = 0; i < n_gen; ++i) ctx->eval(&tokens[size_t(p0 + i)], 1);
                        v.push_back(double(n_gen) / (now_s() - t0));
                        cpu += cpu_s() - c0;
                        reads += ctx->kv().page_reads() - reads0;
                        copied += ctx->kv().bytes_copied() - copied0;
                        // What attention read besides the pages: the Quest summaries
                        // it scored (F16 key min and max per page, layer and KV head;
                        // the rule of kv_sequence::select_pages) and the open page.
                        const sparse_params & sp = ctx->kv().sparse();
                        const hparams & hp = m->hp;
                        for (int i = 0; i < n_gen; ++i) {
                            const int32_t p = p0 + i, n = p / page;
                            const int32_t k = int32_t(std::ceil(double(sp.ratio) * double(n)));
                            const int32_t lo = std::min(n, sp.sink_pages), hi = std::max(lo, n - sp.recent_pages);
                            if (sp.ratio < 1.0f && k + sp.sink_pages + sp.recent_pages < n)
                                summaries += double(std::max(0, hp.n_layer - sp.dense_layers)) * hp.n_head_kv * (hi - lo) * 2.0 *
                                             hp.head_dim * sizeof(uint16_t);
                            open += double(hp.n_layer) * hp.n_head_kv * (p % page + 1) * 2.0 * hp.head_dim *
                                    double(traits(page_staging_type(kc.t)).type_size);
                        }
                    }
                    result res = base("tg" + std::to_string(n_gen) + at);
                    res.samples = v;
                    stats(v, res.mean, res.sd);
                    std::fprintf(stderr, "gloas-bench: %s, %s, %d threads: %.2f tokens/s, %.3f CPU s/token\n", kc.name.c_str(),
                                 res.test.c_str(), nt, res.mean, cpu / (double(n_gen) * reps));
                    {
                        // One page read = the K and V rows of one layer and KV head.
                        kv_store & st = ctx->store();
                        const double seg = 2.0 * m->hp.head_dim * double(pg.row_bytes(kc.t));
                        const double n_tok = double(n_gen) * reps;
                        res.kv_stats = true;
                        res.cpu_per_token = cpu / n_tok;
                        res.summary_read = summaries / n_tok;
                        res.kv_read = (double(reads) * seg + open) / n_tok + res.summary_read;
                        res.weight_read = double(m->bytes_per_token());
                        if (cp.kv.read_copy) res.copied = double(copied) / n_tok;
                        st.flush();
                        res.budget = cp.kv.ram_bytes;
                        res.resident = st.resident_bytes();
                        res.peak = st.metrics().resident_peak;
                        res.fixed = st.fixed_ram_bytes();
                        res.file = st.file_bytes();
                    }
                    if (bw > 0) res.ceiling_pct = 100.0 * res.mean / (bw / (res.weight_read + res.kv_read));
                    add_result(res);
                }
                }
            }
        }
        }
    }

    // One JSON object per result: json writes them as an array, jsonl one a line.
    auto json_row = [&](const result & r) {
        std::printf("{\"model\": \"%s\", \"type\": \"%s\", \"kv_type\": \"%s\", \"size_mib\": %.2f, \"params_m\": %.2f, "
                    "\"threads\": %d, \"n_batch\": %d, \"n_ubatch\": %d, \"test\": \"%s\", \"tokens_per_s\": %.3f, \"sd\": %.3f",
                    r.model.c_str(), r.type.c_str(), r.kv.c_str(), r.size_mib, r.params_m, r.threads, r.n_batch, r.n_ubatch,
                    r.test.c_str(), r.mean, r.sd);
        if (r.ceiling_pct >= 0) std::printf(", \"bandwidth_gbs\": %.3f, \"ceiling_pct\": %.1f", r.bw / 1e9, r.ceiling_pct);
        if (r.gflops_thread >= 0) std::printf(", \"gflops_per_thread\": %.1f", r.gflops_thread);
        if (r.kv_stats)
            std::printf(", \"cpu_s_per_token\": %.4f, \"weight_bytes_per_token\": %.0f, \"kv_bytes_per_token\": %.0f, \"summary_bytes_per_token\": %.0f, "
                        "\"kv_ram_budget\": %zu, \"kv_resident_bytes\": %zu, \"kv_resident_peak_bytes\": %zu, "
                        "\"kv_fixed_ram_bytes\": %zu, \"kv_file_bytes\": %zu",
                        r.cpu_per_token, r.weight_read, r.kv_read, r.summary_read, r.budget, r.resident, r.peak, r.fixed, r.file);
        if (r.copied >= 0) std::printf(", \"kv_copied_bytes_per_token\": %.0f", r.copied);
        std::printf("}");
    };
    if (out_fmt == "json") {
        std::printf("[\n");
        for (size_t i = 0; i < results.size(); ++i) {
            std::printf("  ");
            json_row(results[i]);
            std::printf("%s\n", i + 1 < results.size() ? "," : "");
        }
        std::printf("]\n");
    } else if (out_fmt == "jsonl") {
        for (const result & r : results) {
            json_row(r);
            std::printf("\n");
        }
    } else if (out_fmt == "csv") {
        std::printf("model,type,kv,size_mib,params_m,threads,n_batch,n_ubatch,test,tokens_per_s,sd,ceiling_pct,gflops_per_thread\n");
        for (const result & r : results)
            std::printf("\"%s\",%s,\"%s\",%.2f,%.2f,%d,%d,%d,\"%s\",%.3f,%.3f,%s,%s\n", r.model.c_str(), r.type.c_str(), r.kv.c_str(),
                        r.size_mib, r.params_m, r.threads, r.n_batch, r.n_ubatch, r.test.c_str(), r.mean, r.sd,
                        r.ceiling_pct >= 0 ? format("%.1f", r.ceiling_pct).c_str() : "",
                        r.gflops_thread >= 0 ? format("%.1f", r.gflops_thread).c_str() : "");
    } else {
        std::printf("| model | type | size | params | threads | kv | test | t/s | notes |\n");
        std::printf("|---|---|---:|---:|---:|---|---|---:|---|\n");
        for (const result & r : results) {
            std::string notes;
            if (r.ceiling_pct >= 0) notes = format("%.0f%% of the %.1f GB/s ceiling", r.ceiling_pct, r.bw / 1e9);
            if (r.gflops_thread >= 0) notes = format("%.1f GFLOP/s per thread", r.gflops_thread);
            std::printf("| %s | %s | %.1f MiB | %.1f M | %d | %s | %s | %.2f ± %.2f | %s |\n", r.model.c_str(), r.type.c_str(),
                        r.size_mib, r.params_m, r.threads, r.kv.c_str(), r.test.c_str(), r.mean, r.sd, notes.c_str());
        }
        // Decode traffic and residency: per token, weights and K/V read (pages
        // attended + summaries scored + open page); after the run, page-file
        // pages mapped (most at a pass end when a budget trims them) and the
        // sequences' fixed buffers.
        bool any = false;
        for (const result & r : results) any = any || r.kv_stats;
        if (any) {
            auto mib = [](double b) { return b / 1048576.0; };
            std::printf("\n| threads | kv | test | t/s | CPU ms/tok | weights MiB/tok | K/V MiB/tok (summaries) | copied MiB/tok | GB/s moved | "
                        "budget MiB | resident MiB (mapped + fixed) | mapped at a pass end, most | file MiB |\n");
            std::printf("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            for (const result & r : results) {
                if (!r.kv_stats) continue;
                std::printf("| %d | %s | %s | %.2f | %.2f | %.1f | %.2f (%.2f) | %s | %.2f | %s | %.1f (%.1f + %.1f) | %s | %.1f |\n", r.threads, r.kv.c_str(),
                            r.test.c_str(), r.mean, r.cpu_per_token * 1e3, mib(r.weight_read), mib(r.kv_read), mib(r.summary_read),
                            r.copied >= 0 ? format("%.2f", mib(r.copied)).c_str() : "-", r.mean * (r.weight_read + r.kv_read) / 1e9, r.budget ? format("%.1f", mib(double(r.budget))).c_str() : "-",
                            mib(double(r.resident + r.fixed)), mib(double(r.resident)), mib(double(r.fixed)),
                            r.peak ? format("%.1f", mib(double(r.peak))).c_str() : "-", mib(double(r.file)));
            }
        }
    }
    remove_files(page_dir);
    if (!page_dir.empty()) ::rmdir(page_dir.c_str());
    return 0;
}

} // namespace

int main(int argc, char ** argv) {
    return cli::run_main([&] { return run(argc, argv); });
}
