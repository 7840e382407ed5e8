#include "decoder/options.h"

#include "decoder/strategy.h"
#include "kvcache/page.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sys/stat.h>
#include <unistd.h>

namespace gloas {

namespace {

using K = opt_kind;
constexpr const char * CTX = OPT_GROUP_CONTEXT;
constexpr const char * KV = OPT_GROUP_KV;
constexpr const char * SMP = OPT_GROUP_SAMPLING;
constexpr const char * MDL = OPT_GROUP_MODEL;
constexpr const char * KV_TYPES = "f32|f16|q8_0|q4_0";

} // namespace

// clang-format off
const option_def SHARED_OPTIONS[N_SHARED_OPTS] = {
    {OPT_CTX_SIZE, "-c|--ctx-size", "N", K::INT, 0, 1 << 24, false, nullptr, CTX,
     "context size in tokens; 0: the model's training context (default: 0)"},
    {OPT_BATCH, "-b|--batch-size", "N", K::INT, 1, 1 << 24, false, nullptr, CTX,
     "logical batch, as in llama.cpp: the prefill chunk (-ub) is at most N (default: 2048)"},
    {OPT_UBATCH, "-ub|--ubatch-size|--ubatch", "N", K::INT, 1, 1 << 16, false, nullptr, CTX,
     "PREFILL runs the prompt in chunks of N tokens, so activation memory stays bounded however long it is "
     "(default: 512, at most -b); DECODE then runs one token at a time; a prompt partly in the K/V store "
     "(HYBRID) prefills only its uncached tail and decodes from the reused pages"},
    {OPT_THREADS, "-t|--threads", "N", K::INT, -1, 1024, false, nullptr, CTX,
     "CPU threads; 0 or -1: all (default: all)"},
    {OPT_CTX_SLIDE, "--ctx-slide|--context-shift", nullptr, K::SWITCH, 0, 0, false, nullptr, CTX,
     "at the end of the context, keep going: keep the first K/V page (attention sinks) and slide a window over "
     "the latest positions (StreamingLLM); a long prompt slides too (default: off, stop there)"},

    {OPT_STRATEGY, "--strategy", "S", K::WORD, 0, 0, false, "speed|balanced|aggressive|auto", KV,
     "speed (f16 pages, dense), balanced (q8_0, dense), aggressive (q4_0, sparse decode attention), or auto: "
     "chosen from the model, context and free RAM (default: speed); the flags below override it"},
    {OPT_KV_TYPE, "--kv-type", "T", K::WORD, 0, 0, false, KV_TYPES, KV,
     "page type: f32, f16, q8_0, q4_0 (default: the strategy's, f16); q8_0 and q4_0 need a page size that is "
     "a multiple of 32"},
    {OPT_KV_TYPE_K, "-ctk|--cache-type-k", "T", K::WORD, 0, 0, false, KV_TYPES, KV,
     "llama.cpp's spelling of --kv-type; K and V pages have one type, so -ctv must agree"},
    {OPT_KV_TYPE_V, "-ctv|--cache-type-v", "T", K::WORD, 0, 0, false, KV_TYPES, KV,
     "llama.cpp's spelling of --kv-type for V; must equal -ctk (or --kv-type) when both are given"},
    {OPT_KV_PAGE, "--kv-page", "N", K::INT, 1, 4096, false, nullptr, KV,
     "tokens per page (default: 32)"},
    {OPT_KV_DIR, "--kv-dir", "DIR", K::TEXT, 0, 0, false, nullptr, KV,
     "folder of page files, reused across runs (default: $GLOAS_KV_DIR, else $XDG_CACHE_HOME/gloas/kv or "
     "~/.cache/gloas/kv; a default folder that cannot be used leaves the pages in memory, with a warning); "
     "'none' keeps pages in memory only"},
    {OPT_KV_CAPACITY, "--kv-capacity", "SIZE", K::SIZE, 0, 0, false, nullptr, KV,
     "bound on the K/V folder (the page files of every model and K/V type): bytes with a k/M/G suffix, pages "
     "with 'p', tokens with 't' (default: 4G)"},
    {OPT_KV_POLICY, "--kv-policy", "P", K::WORD, 0, 0, false, "lru|lfu|fifo|adaptive|compressed", KV,
     "eviction: lru, lfu, fifo, adaptive, compressed (default: lru); compressed re-quantizes evicted pages to "
     "q4_0 first, so it needs a page size that is a multiple of 32"},
    {OPT_KV_COMPRESSED_SHARE, "--kv-compressed-share", "R", K::FLOAT, 0, 1, true, nullptr, KV,
     "with --kv-policy compressed: share of the capacity for compressed pages, 0 < R <= 1 (default: 0.3)"},
    {OPT_KV_RAM, "--kv-ram", "SIZE", K::SIZE, 0, 0, false, nullptr, KV,
     "bound on the K/V pages resident in RAM (page-file pages mapped by this process; the fixed buffers of "
     "open pages, scratch and summaries come on top), in the units of --kv-capacity; least recently read pages "
     "are unmapped after each pass and the page file holds them (default: the strategy's, 8M for aggressive; "
     "0 = unbounded)"},
    {OPT_KV_READ, "--kv-read", "MODE", K::WORD, 0, 0, false, "map|copy", KV,
     "how decode reads pages of a page file: map (through the mapping) or copy (copies only the pieces it "
     "selected, so they are never mapped: resident K/V stays within --kv-ram; default: the strategy's, copy for "
     "aggressive)"},
    {OPT_SPARSE_RATIO, "--sparse-ratio", "R", K::FLOAT, 0, 1, true, nullptr, KV,
     "share of K/V pages a decoded token attends to, plus the first and latest pages, 0 < R <= 1 (default: the "
     "strategy's, 1 = dense)"},
    {OPT_NO_SPARSE, "--no-sparse", nullptr, K::SWITCH, 0, 0, false, nullptr, KV,
     "dense decode attention, whatever the strategy (the same as --sparse-ratio 1)"},

    {OPT_TEMP, "--temp", "T", K::FLOAT, 0, 100, false, nullptr, SMP,
     "temperature; 0 is greedy (default: 0.8)"},
    {OPT_TOP_K, "--top-k", "K", K::INT, 0, 1 << 30, false, nullptr, SMP,
     "keep the K most likely tokens; 0 disables (default: 40)"},
    {OPT_TOP_P, "--top-p", "P", K::FLOAT, 0, 1, false, nullptr, SMP,
     "nucleus sampling; 1.0 disables (default: 0.95)"},
    {OPT_MIN_P, "--min-p", "P", K::FLOAT, 0, 1, false, nullptr, SMP,
     "drop tokens below P x the top probability (default: 0)"},
    {OPT_REPEAT_PENALTY, "--repeat-penalty", "R", K::FLOAT, 0, 100, true, nullptr, SMP,
     "divide positive logits (multiply negative ones) of the tokens among the last --repeat-last-n by R "
     "(default: 1.0 = off)"},
    {OPT_REPEAT_LAST_N, "--repeat-last-n", "N", K::INT, -1, 1 << 20, false, nullptr, SMP,
     "tokens the penalties look back over; 0: none, -1: the whole context (default: 64)"},
    {OPT_PRESENCE_PENALTY, "--presence-penalty", "A", K::FLOAT, -100, 100, false, nullptr, SMP,
     "subtract A from the logit of every token that occurs among the last --repeat-last-n (default: 0 = off)"},
    {OPT_FREQUENCY_PENALTY, "--frequency-penalty", "A", K::FLOAT, -100, 100, false, nullptr, SMP,
     "subtract A x its count from the logit of every token among the last --repeat-last-n (default: 0 = off)"},
    {OPT_SEED, "-s|--seed", "N", K::TEXT, 0, 0, false, nullptr, SMP,
     "random seed; -1: from the clock (default: -1); the seed used is printed on stderr"},

    {OPT_N_GPU_LAYERS, "-ngl|--n-gpu-layers|--gpu-layers", "N", K::TEXT, 0, 0, false, nullptr, MDL,
     "layers to put on the CUDA GPU (a number, auto or all; default 0: the CPU). Any N > 0 runs every layer "
     "there (there is no partial offload) or, when the GPU cannot (no device, a build without CUDA, too little "
     "memory, a weight type it does not read), fails with the reason (exit status 1); auto, all or -1 run on "
     "the GPU when it can and else on the CPU, saying why on stderr"},
    {OPT_MLOCK, "--mlock", nullptr, K::SWITCH, 0, 0, false, nullptr, MDL,
     "lock the model's weights in RAM (mlock) so they are never paged out; a warning if the system refuses "
     "(see ulimit -l)"},
    {OPT_NO_MMAP, "--no-mmap", nullptr, K::SWITCH, 0, 0, false, nullptr, MDL,
     "read the model's weights into memory instead of mapping the file (the file may then change or go while "
     "the run goes on)"},
};
// clang-format on

namespace {

// The spellings of a row.
std::vector<std::string> spellings(const option_def & d) {
    std::vector<std::string> r;
    for (const char * p = d.names; *p;) {
        const char * e = std::strchr(p, '|');
        if (!e) e = p + std::strlen(p);
        r.emplace_back(p, size_t(e - p));
        p = *e ? e + 1 : e;
    }
    return r;
}

// "a, b or c"
std::string words_list(const char * words) {
    std::string r(words);
    const size_t last = r.rfind('|');
    if (last != std::string::npos) r.replace(last, 1, " or ");
    for (size_t k; (k = r.find('|')) != std::string::npos;) r.replace(k, 1, ", ");
    return r;
}

bool is_word(const char * words, const std::string & v) {
    for (const char * p = words; *p;) {
        const char * e = std::strchr(p, '|');
        if (!e) e = p + std::strlen(p);
        if (v.size() == size_t(e - p) && v.compare(0, v.size(), p, v.size()) == 0) return true;
        p = *e ? e + 1 : e;
    }
    return false;
}

[[noreturn]] void bad(const std::string & flag, const std::string & msg) {
    throw cli_error(format("%s: %s", flag.c_str(), msg.c_str()));
}

std::string range_text(const option_def & d) {
    auto num = [](double x) {
        if (x == std::floor(x) && std::fabs(x) < 1e15) return format("%lld", (long long) x);
        return format("%g", x);
    };
    return format("%s%s, %s]", d.lo_open ? "(" : "[", num(d.lo).c_str(), num(d.hi).c_str());
}

} // namespace

const option_def * option_find(const option_def * table, size_t n, const std::string & flag) {
    for (size_t k = 0; k < n; ++k)
        for (const std::string & s : spellings(table[k]))
            if (s == flag) return &table[k];
    return nullptr;
}

option_value option_read(const option_def & d, const std::string & flag, const std::string & value) {
    option_value v;
    v.s = value;
    const char * s = value.c_str();
    char * end = nullptr;
    switch (d.kind) {
        case K::SWITCH:
        case K::TEXT:
        case K::SIZE:
            break;
        case K::INT: {
            errno = 0;
            const long long x = std::strtoll(s, &end, 10);
            if (errno || end == s || *end || double(x) < d.lo || double(x) > d.hi)
                bad(flag, format("expected an integer in %s, got '%s'", range_text(d).c_str(), s));
            v.i = x;
            break;
        }
        case K::FLOAT: {
            const double x = std::strtod(s, &end);
            const bool in = d.lo_open ? x > d.lo : x >= d.lo;
            if (end == s || *end || !std::isfinite(x) || !in || x > d.hi)
                bad(flag, format("expected a number in %s, got '%s'", range_text(d).c_str(), s));
            v.f = x;
            break;
        }
        case K::WORD:
            if (!is_word(d.words, value))
                throw cli_error(format("%s takes %s, got '%s'", flag.c_str(), words_list(d.words).c_str(), s));
            break;
    }
    return v;
}

std::string options_usage(const option_def * table, size_t n, const char * group) {
    constexpr size_t COL = 26, WIDTH = 79;
    std::string out;
    for (size_t k = 0; k < n; ++k) {
        const option_def & d = table[k];
        if (std::strcmp(d.group, group) != 0) continue;
        std::string head = d.names[1] == '-' ? "      " : "  ";
        const std::vector<std::string> sp = spellings(d);
        for (size_t j = 0; j < sp.size(); ++j) head += (j ? ", " : "") + sp[j];
        if (d.arg) head += std::string(" ") + d.arg;
        head += head.size() + 2 <= COL ? std::string(COL - head.size(), ' ') : std::string("  ");
        std::string line = head;
        bool first = true;
        for (const char * p = d.help; *p;) {
            while (*p == ' ') ++p;
            const char * e = p;
            while (*e && *e != ' ') ++e;
            const std::string word(p, size_t(e - p));
            p = e;
            if (word.empty()) break;
            if (!first && line.size() + 1 + word.size() > WIDTH) {
                out += line + "\n";
                line = std::string(COL, ' ');
                first = true;
            }
            line += (first ? "" : " ") + word;
            first = false;
        }
        out += line + "\n";
    }
    return out;
}

bool kv_type_supported(type t) { return t == type::F32 || t == type::F16 || t == type::Q8_0 || t == type::Q4_0; }

std::string kv_options_problem(type t, int32_t page_tokens, evict_policy policy) {
    if (!kv_type_supported(t))
        return format("--kv-type %s: K/V pages are f32, f16, q8_0 or q4_0", type_name(t));
    if (page_tokens < 1 || page_tokens > 4096) return format("--kv-page %d: expected 1 to 4096 tokens", page_tokens);
    const page_geometry g{page_tokens, 1, 1, 1};
    const int64_t blck = traits(t).blck_size;
    if (!g.valid_for(t))
        return format("--kv-type %s needs --kv-page to be a multiple of %lld (each page row holds one channel's "
                      "tokens in blocks of %lld), got --kv-page %d; use --kv-page %lld or --kv-type f16",
                      type_name(t), (long long) blck, (long long) blck, page_tokens,
                      (long long) std::max<int64_t>(blck, (page_tokens + blck - 1) / blck * blck));
    if (policy == evict_policy::COMPRESSED && !g.valid_for(type::Q4_0)) {
        const int64_t q = traits(type::Q4_0).blck_size;
        return format("--kv-policy compressed re-quantizes evicted pages to q4_0, which needs --kv-page to be a "
                      "multiple of %lld, got --kv-page %d; use --kv-page %lld or another --kv-policy",
                      (long long) q, page_tokens, (long long) std::max<int64_t>(q, (page_tokens + q - 1) / q * q));
    }
    return {};
}

size_t config_apply_flag(run_config & cfg, const std::vector<std::string> & args, size_t i) {
    GLOAS_ASSERT(i < args.size());
    const std::string & a = args[i];
    const option_def * d = option_find(SHARED_OPTIONS, N_SHARED_OPTS, a);
    if (!d) return 0;
    option_value v;
    if (d->kind != opt_kind::SWITCH) {
        if (i + 1 >= args.size()) throw cli_error(format("%s needs a value (%s)", a.c_str(), d->arg));
        v = option_read(*d, a, args[i + 1]);
    }
    auto kv_type = [&]() {
        type t = type::F16;
        type_from_name(v.s.c_str(), &t);
        return t;
    };
    auto capacity = [&]() {
        try {
            return parse_kv_capacity(a, v.s);
        } catch (const cli_error &) {
            throw;
        } catch (const error & e) {
            throw cli_error(e.what());
        }
    };
    context_params & c = cfg.ctx;
    sampler_params & sp = cfg.sampling;
    switch (shared_opt(d->id)) {
        case OPT_CTX_SIZE: c.n_ctx = int32_t(v.i); break;
        case OPT_BATCH: cfg.n_batch = int32_t(v.i); break;
        case OPT_UBATCH: c.n_ubatch = int32_t(v.i); break;
        case OPT_THREADS: c.n_threads = int32_t(std::max<int64_t>(v.i, 0)); break;
        case OPT_CTX_SLIDE: c.slide.on = true; break;
        case OPT_STRATEGY: {
            const int k = memory_strategy_index(v.s);
            if (k >= 0 && !cfg.strategy_enabled[k])
                bad(a, format("'%s' is disabled by memory_strategies in %s", v.s.c_str(), cfg.path.c_str()));
            cfg.strategy = v.s;
            break;
        }
        case OPT_KV_TYPE:
        case OPT_KV_TYPE_K: c.kv.kv_type = kv_type(); break;
        case OPT_KV_TYPE_V: cfg.kv_type_v = kv_type(); break;
        case OPT_KV_PAGE: c.kv.page_tokens = int32_t(v.i); break;
        case OPT_KV_DIR:
            cfg.kv_file = v.s != "none";
            c.kv.dir = cfg.kv_file ? v.s : std::string();
            break;
        case OPT_KV_CAPACITY: cfg.capacity = capacity(); break;
        case OPT_KV_POLICY: {
            evict_policy p = evict_policy::LRU;
            evict_policy_from_name(v.s.c_str(), &p);
            if (!cfg.policy_enabled[int(p)])
                bad(a, format("'%s' is disabled by cache_strategies in %s", v.s.c_str(), cfg.path.c_str()));
            c.kv.policy = p;
            break;
        }
        case OPT_KV_COMPRESSED_SHARE: c.kv.compressed_share = v.f; break;
        case OPT_KV_RAM: cfg.kv_ram = v.s == "0" ? kv_capacity{kv_capacity::unit::BYTES, 0} : capacity(); break;
        case OPT_KV_READ: c.kv.read_copy = v.s == "copy"; break;
        case OPT_SPARSE_RATIO:
            cfg.sparse_ratio = v.f;
            cfg.use_sparse_attention = true;
            break;
        case OPT_NO_SPARSE: cfg.use_sparse_attention = false; break;
        case OPT_TEMP: sp.temp = float(v.f); break;
        case OPT_TOP_K: sp.top_k = int32_t(v.i); break;
        case OPT_TOP_P: sp.top_p = float(v.f); break;
        case OPT_MIN_P: sp.min_p = float(v.f); break;
        case OPT_REPEAT_PENALTY: sp.repeat_penalty = float(v.f); break;
        case OPT_REPEAT_LAST_N: sp.repeat_last_n = int32_t(v.i); break;
        case OPT_PRESENCE_PENALTY: sp.presence_penalty = float(v.f); break;
        case OPT_FREQUENCY_PENALTY: sp.frequency_penalty = float(v.f); break;
        case OPT_SEED: {
            if (v.s == "-1") {
                sp.seed = SEED_RANDOM;
                break;
            }
            const char * s = v.s.c_str();
            char * end = nullptr;
            errno = 0;
            const unsigned long long x = std::strtoull(s, &end, 10);
            if (errno || end == s || *end || s[0] == '-' || s[0] == '+' || x == SEED_RANDOM)
                bad(a, format("expected -1 (random) or an integer in [0, %llu], got '%s'",
                              (unsigned long long) (SEED_RANDOM - 1), s));
            sp.seed = x;
            break;
        }
        case OPT_N_GPU_LAYERS: {
            char * end = nullptr;
            errno = 0;
            const long long x = std::strtoll(v.s.c_str(), &end, 10);
            const bool number = !errno && end != v.s.c_str() && !*end && x >= -1 && x <= (1 << 20);
            if (!number && v.s != "auto" && v.s != "all")
                bad(a, format("expected a number of layers in [-1, %d], auto or all, got '%s'", 1 << 20, v.s.c_str()));
            cfg.n_gpu_layers = number ? int32_t(x) : -1;
            break;
        }
        case OPT_MLOCK: cfg.mlock = true; break;
        case OPT_NO_MMAP: cfg.no_mmap = true; break;
        case N_SHARED_OPTS: GLOAS_ASSERT(false);
    }
    cfg.given |= uint64_t(1) << d->id;
    return d->kind == opt_kind::SWITCH ? 1 : 2;
}

void config_flags_check(const run_config & f) {
    if (f.flag_given(OPT_KV_TYPE_V) && (f.flag_given(OPT_KV_TYPE_K) || f.flag_given(OPT_KV_TYPE)) &&
        f.kv_type_v != f.ctx.kv.kv_type)
        throw cli_error(format("%s %s and -ctv %s: K and V pages have one type in this build; give the same type "
                               "to both (or --kv-type T)",
                               f.flag_given(OPT_KV_TYPE_K) ? "-ctk" : "--kv-type", type_name(f.ctx.kv.kv_type),
                               type_name(f.kv_type_v)));
}

void config_override(const run_config & f, const hparams & hp, context_params & cp) {
    config_flags_check(f);
    auto given = [&](shared_opt o) { return f.flag_given(o); };
    if (given(OPT_CTX_SIZE)) cp.n_ctx = f.ctx.n_ctx;
    if (given(OPT_UBATCH)) cp.n_ubatch = f.ctx.n_ubatch;
    if (given(OPT_BATCH)) cp.n_ubatch = std::min(cp.n_ubatch, f.n_batch);
    if (given(OPT_THREADS)) cp.n_threads = f.ctx.n_threads;
    if (given(OPT_CTX_SLIDE)) cp.slide.on = f.ctx.slide.on;
    if (given(OPT_KV_TYPE) || given(OPT_KV_TYPE_K)) cp.kv.kv_type = f.ctx.kv.kv_type;
    else if (given(OPT_KV_TYPE_V)) cp.kv.kv_type = f.kv_type_v;
    if (given(OPT_KV_PAGE)) cp.kv.page_tokens = f.ctx.kv.page_tokens;
    if (given(OPT_KV_DIR)) cp.kv.dir = f.kv_file ? f.ctx.kv.dir : std::string();
    if (given(OPT_KV_POLICY)) cp.kv.policy = f.ctx.kv.policy;
    if (given(OPT_KV_COMPRESSED_SHARE)) cp.kv.compressed_share = f.ctx.kv.compressed_share;
    if (given(OPT_KV_READ)) cp.kv.read_copy = f.ctx.kv.read_copy;
    if (given(OPT_SPARSE_RATIO) || given(OPT_NO_SPARSE)) cp.sparse.ratio = f.use_sparse_attention ? float(f.sparse_ratio) : 1.0f;
    if (given(OPT_N_GPU_LAYERS)) {
        cp.n_gpu_layers = f.n_gpu_layers;
        cp.gpu_required = f.n_gpu_layers > 0;
    }

    const std::string why = kv_options_problem(cp.kv.kv_type, cp.kv.page_tokens, cp.kv.policy);
    if (!why.empty()) throw cli_error(why);
    const page_geometry pg{cp.kv.page_tokens, hp.n_layer, hp.n_head_kv, hp.head_dim};
    if (given(OPT_KV_CAPACITY))
        cp.kv.capacity_bytes = kv_capacity_bytes(f.capacity, pg.page_bytes(cp.kv.kv_type), cp.kv.page_tokens, cp.kv.capacity_bytes);
    if (given(OPT_KV_RAM)) cp.kv.ram_bytes = kv_capacity_bytes(f.kv_ram, pg.page_bytes(cp.kv.kv_type), cp.kv.page_tokens, 0);

    const int64_t n_ctx = cp.n_ctx > 0 ? cp.n_ctx : hp.n_ctx_train;
    const int64_t need = (int64_t(std::max(cp.slide.sink_pages, 0)) + 2) * cp.kv.page_tokens;
    if (cp.slide.on && n_ctx < need)
        throw cli_error(format("--ctx-slide needs a context of at least %lld positions (the sink page and two pages of "
                               "--kv-page %d), got %s %lld; raise -c or lower --kv-page",
                               (long long) need, cp.kv.page_tokens, cp.n_ctx > 0 ? "-c" : "the model's", (long long) n_ctx));
}

sampler_params config_sampling(const run_config & f, int32_t n_ctx) {
    sampler_params sp = f.sampling;
    if (sp.repeat_last_n < 0) sp.repeat_last_n = std::max(n_ctx, 0);
    return sp;
}

} // namespace gloas

namespace gloas {

namespace {

bool is_regular_file(const std::string & p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The source tree the running tool was built in: <exe>/../.. when it holds
// models/manifest.tsv; empty otherwise.
std::string source_dir() {
    char buf[4096];
    const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return {};
    buf[n] = '\0';
    std::string p(buf);
    for (int up = 0; up < 3; ++up) {
        const size_t k = p.find_last_of('/');
        if (k == std::string::npos || k == 0) return {};
        p.resize(k);
    }
    return is_regular_file(p + "/models/manifest.tsv") ? p : std::string();
}

// The file models/manifest.tsv gives for `name` (its first two fields).
std::string manifest_file(const std::string & manifest, const std::string & name) {
    FILE * f = std::fopen(manifest.c_str(), "r");
    if (!f) return {};
    char line[4096];
    std::string r;
    while (r.empty() && std::fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        const char * t1 = std::strchr(line, '\t');
        if (!t1) continue;
        const char * t2 = std::strchr(t1 + 1, '\t');
        if (!t2) continue;
        if (std::string(line, size_t(t1 - line)) == name) r.assign(t1 + 1, size_t(t2 - t1 - 1));
    }
    std::fclose(f);
    return r;
}

} // namespace

model_search model_find(const std::string & name) {
    model_search s;
    if (name.empty()) return s;
    if (name.find('/') != std::string::npos || is_regular_file(name)) {
        s.path = name;
        return s;
    }
    const std::string src = source_dir();
    const char * env = std::getenv("GLOAS_MODELS");
    std::vector<std::string> dirs = {"./models"};
    if (!src.empty()) dirs.push_back(src + "/models");
    if (env && *env) dirs.push_back(env);
    dirs.push_back(src.empty() ? std::string("../shared/models") : src + "/../shared/models");
    s.manifest_file = manifest_file(src.empty() ? std::string("models/manifest.tsv") : src + "/models/manifest.tsv", name);
    std::vector<std::string> names = {name};
    if (!s.manifest_file.empty() && s.manifest_file != name) names.push_back(s.manifest_file);
    names.push_back(name + ".gguf");
    names.push_back(name + ".bin");
    for (const std::string & d : dirs) {
        if (std::find(s.tried.begin(), s.tried.end(), d) != s.tried.end()) continue;
        s.tried.push_back(d);
        for (const std::string & n : names)
            if (s.path.empty() && is_regular_file(d + "/" + n)) s.path = d + "/" + n;
        if (!s.path.empty()) break;
    }
    return s;
}

std::string model_not_found(const std::string & name, const model_search & s, const char * what) {
    std::string dirs;
    for (size_t k = 0; k < s.tried.size(); ++k) dirs += (k ? ", " : "") + s.tried[k];
    const char * env = std::getenv("GLOAS_MODELS");
    if (!env || !*env) dirs += " ($GLOAS_MODELS is not set)";
    const std::string fetch = !s.manifest_file.empty()
        ? format("models/fetch.sh %s downloads it", name.c_str())
        : std::string("models/fetch.sh NAME downloads the files models/manifest.tsv lists (models/fetch.sh --list)");
    return format("%s: no %s of that name; looked in %s; %s", name.c_str(), what, dirs.c_str(), fetch.c_str());
}

} // namespace gloas
