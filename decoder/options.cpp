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
constexpr const char * KV_TYPES = "f32|f16|q8_0|q4_0|q4_kivi";

} // namespace

const option_def SHARED_OPTIONS[N_SHARED_OPTS] = {
#define GLOAS_OPTION(id, names, arg, kind, lo, hi, lo_open, words, group, help) \
    {id, names, arg, K::kind, lo, hi, lo_open, words, group, help},
#include "decoder/options.def"
#undef GLOAS_OPTION
};

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
        std::string line = head, help = d.help;
        const size_t at = help.find("{words}");
        if (at != std::string::npos && d.words) help.replace(at, 7, words_list(d.words));
        bool first = true;
        for (const char * p = help.c_str(); *p;) {
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

bool kv_type_supported(type t) { return is_word(KV_TYPES, type_name(t)); }

std::string kv_type_list() { return words_list(KV_TYPES); }

std::string kv_options_problem(type t, int32_t page_tokens, evict_policy policy) {
    return kv_options_problem(t, page_tokens, policy, KV_FLAG_NAMES);
}

std::string kv_options_problem(type t, int32_t page_tokens, evict_policy policy, const kv_option_names & nm) {
    // "--kv-page 16", "cache_chunk_size: 16"
    auto named = [&](const char * name, const std::string & v) { return std::string(name) + nm.sep + v; };
    auto round_up = [&](int64_t blck) {
        return named(nm.page, std::to_string(std::max<int64_t>(blck, (page_tokens + blck - 1) / blck * blck)));
    };
    const std::string ty = named(nm.type, type_name(t)), pg = named(nm.page, std::to_string(page_tokens));
    if (!kv_type_supported(t)) return format("%s: K/V pages are %s", ty.c_str(), kv_type_list().c_str());
    const option_def & page_row = SHARED_OPTIONS[OPT_KV_PAGE];
    if (page_tokens < page_row.lo || page_tokens > page_row.hi)
        return format("%s: expected %.0f to %.0f tokens", pg.c_str(), page_row.lo, page_row.hi);
    const page_geometry g{page_tokens, 1, 1, 1};
    const int64_t blck = traits(t).blck_size;
    if (!g.valid_for(t))
        return format("%s needs %s to be a multiple of %lld (each page row holds one channel's tokens in blocks of "
                      "%lld), got %s; use %s or %s",
                      ty.c_str(), nm.page, (long long) blck, (long long) blck, pg.c_str(), round_up(blck).c_str(),
                      named(nm.type, "f16").c_str());
    if (policy == evict_policy::COMPRESSED && !g.valid_for(type::Q4_0)) {
        const int64_t q = traits(type::Q4_0).blck_size;
        return format("%s re-quantizes evicted pages to q4_0, which needs %s to be a multiple of %lld, got %s; use %s "
                      "or another %s",
                      named(nm.policy, "compressed").c_str(), nm.page, (long long) q, pg.c_str(), round_up(q).c_str(),
                      nm.policy);
    }
    return {};
}

const option_use * option_use_find(const option_use * uses, size_t n, const std::string & flag) {
    const option_def * d = option_find(SHARED_OPTIONS, N_SHARED_OPTS, flag);
    for (size_t k = 0; d && k < n; ++k)
        if (uses[k].id == d->id) return &uses[k];
    return nullptr;
}

std::string options_usage(const option_use * uses, size_t n, const char * group) {
    std::string out;
    for (size_t k = 0; k < n; ++k) {
        option_def d = SHARED_OPTIONS[uses[k].id];
        const std::string list = d.arg ? format("%s[,%s...]", d.arg, d.arg) : std::string();
        if (uses[k].list && d.arg) d.arg = list.c_str();
        if (uses[k].help) d.help = uses[k].help;
        out += options_usage(&d, 1, group);
    }
    return out;
}

std::vector<run_config> config_apply_list(const run_config & base, const std::vector<std::string> & args, size_t i) {
    GLOAS_ASSERT(i < args.size());
    const option_def * d = option_find(SHARED_OPTIONS, N_SHARED_OPTS, args[i]);
    GLOAS_ASSERT(d && d->kind != opt_kind::SWITCH);
    if (i + 1 >= args.size()) throw cli_error(format("%s needs a value (%s)", args[i].c_str(), d->arg));
    const std::string & v = args[i + 1];
    std::vector<run_config> out;
    for (size_t b = 0;;) {
        const size_t e = std::min(v.find(',', b), v.size());
        out.push_back(base);
        config_apply_flag(out.back(), {args[i], v.substr(b, e - b)}, 0);
        if (e == v.size()) return out;
        b = e + 1;
    }
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
        case OPT_GPU_DEVICE: cfg.gpu_device = int32_t(v.i); break;
        case OPT_MLOCK: cfg.mlock = true; break;
        case OPT_NO_MMAP:
            cfg.no_mmap = true;
            cfg.mmap = false;
            break;
        case OPT_MMAP:
            cfg.mmap = true;
            cfg.no_mmap = false;
            break;
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
    if (given(OPT_GPU_DEVICE)) cp.gpu_device = f.gpu_device;

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
