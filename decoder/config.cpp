#include "decoder/config.h"

#include "decoder/options.h"
#include "decoder/yaml.h"
#include "kvcache/page.h"
#include "kvcache/policy.h"
#include "base/error.h"
#include "tensor/mmap.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <type_traits>

namespace gloas {

namespace {

const char * const STRATEGY_NAMES[N_MEMORY_STRATEGIES] = {"speed", "balanced", "aggressive"};
const char * const POLICY_NAMES[N_EVICT_POLICIES] = {"lru", "lfu", "fifo", "adaptive", "compressed"};
const char * const DTYPE_NAMES[] = {"float32", "float16", "bfloat16", "int8", "int4"};
const type DTYPE_TYPES[] = {type::F32, type::F16, type::F16, type::Q8_0, type::Q4_0};
const char * const LAYOUT_NAMES[] = {"hierarchical", "flat"};
const char * const STRATEGY_OR_AUTO[] = {"speed", "balanced", "aggressive", "auto"};

std::string join(const char * const * names, size_t n) {
    std::string r;
    for (size_t i = 0; i < n; ++i) {
        if (i) r += ", ";
        r += names[i];
    }
    return r;
}

// A value read from the file, with the line it came from (0: not given).
template <class T> struct given {
    T v{};
    int32_t line = 0;
    bool set() const { return line > 0; }
};

// The keys of ultra_kv_cache and ultra_decoder, read into one struct per
// section; enums are indices into their name tables.
struct section_values {
    given<int64_t> max_cache_size, cache_chunk_size, max_sequence_length, num_workers, quantization_bits;
    given<int64_t> d_model, n_heads, n_layers, d_ff, vocab_size;
    given<int64_t> cache_dtype, memory_layout, cache_strategy, memory_strategy;
    given<bool> use_compression, use_memory_mapping, use_async_loading, use_parallel_processing, use_cuda_streams,
        use_quantization, use_sparse_attention, use_mixed_precision, use_async_processing,
        use_gradient_checkpointing, use_activation_checkpointing;
    given<double> compression_ratio, sparse_attention_ratio;
};

enum key_kind { K_BOOL, K_INT, K_FLOAT, K_ENUM, K_DTYPE };

// The K/V settings as kv_options_problem names them in a file.
constexpr kv_option_names YAML_KV_NAMES{"cache_dtype", "cache_chunk_size", "cache_strategy", ": "};
enum : unsigned { S_KV = 1, S_DEC = 2 };

struct key_def {
    const char * key;
    unsigned sections;
    key_kind kind;
    double lo, hi;                      // K_INT: inclusive; K_FLOAT: (lo, hi]
    const char * const * names;         // K_ENUM
    size_t n_names;
    given<bool> section_values::* b;
    given<int64_t> section_values::* i;  // K_INT, K_ENUM (an index into names), K_DTYPE (a type)
    given<double> section_values::* f;
    int opt = -1;  // the shared option (decoder/options.h) whose row checks the value, its range and words; -1: none
};

constexpr unsigned S_BOTH = S_KV | S_DEC;
using sv = section_values;

key_def B(const char * k, unsigned s, given<bool> sv::* m) { return {k, s, K_BOOL, 0, 0, nullptr, 0, m, nullptr, nullptr}; }
key_def I(const char * k, unsigned s, double lo, double hi, given<int64_t> sv::* m) {
    return {k, s, K_INT, lo, hi, nullptr, 0, nullptr, m, nullptr};
}
// Keys that are a shared option: the option's row checks them.
key_def I(const char * k, unsigned s, shared_opt o, given<int64_t> sv::* m) {
    return {k, s, K_INT, 0, 0, nullptr, 0, nullptr, m, nullptr, o};
}
key_def F(const char * k, unsigned s, shared_opt o, given<double> sv::* m) {
    return {k, s, K_FLOAT, 0, 0, nullptr, 0, nullptr, nullptr, m, o};
}
template <size_t N> key_def E(const char * k, unsigned s, const char * const (&names)[N], given<int64_t> sv::* m,
                              int o = -1) {
    return {k, s, K_ENUM, 0, 0, names, N, nullptr, m, nullptr, o};
}

// In the specification's order.
const key_def KEYS[] = {
    I("max_cache_size", S_KV, 1, double(MAX_CACHE_TOKENS), &sv::max_cache_size),
    I("cache_chunk_size", S_KV, OPT_UBATCH, &sv::cache_chunk_size),
    I("d_model", S_DEC, 1, 1 << 20, &sv::d_model),
    I("n_heads", S_DEC, 1, 4096, &sv::n_heads),
    I("n_layers", S_DEC, 1, 1024, &sv::n_layers),
    I("d_ff", S_DEC, 1, 1 << 22, &sv::d_ff),
    I("vocab_size", S_DEC, 1, 1 << 24, &sv::vocab_size),
    I("max_sequence_length", S_BOTH, OPT_CTX_SIZE, &sv::max_sequence_length),
    {"cache_dtype", S_KV, K_DTYPE, 0, 0, nullptr, 0, nullptr, &sv::cache_dtype, nullptr},
    B("use_compression", S_BOTH, &sv::use_compression),
    F("compression_ratio", S_BOTH, OPT_KV_COMPRESSED_SHARE, &sv::compression_ratio),
    B("use_memory_mapping", S_KV, &sv::use_memory_mapping),
    E("memory_layout", S_KV, LAYOUT_NAMES, &sv::memory_layout),
    E("cache_strategy", S_KV, POLICY_NAMES, &sv::cache_strategy, OPT_KV_POLICY),
    B("use_async_loading", S_KV, &sv::use_async_loading),
    B("use_sparse_attention", S_BOTH, &sv::use_sparse_attention),
    F("sparse_attention_ratio", S_BOTH, OPT_SPARSE_RATIO, &sv::sparse_attention_ratio),
    E("memory_strategy", S_DEC, STRATEGY_OR_AUTO, &sv::memory_strategy, OPT_STRATEGY),
    B("use_gradient_checkpointing", S_DEC, &sv::use_gradient_checkpointing),
    B("use_activation_checkpointing", S_DEC, &sv::use_activation_checkpointing),
    B("use_mixed_precision", S_DEC, &sv::use_mixed_precision),
    B("use_parallel_processing", S_BOTH, &sv::use_parallel_processing),
    I("num_workers", S_BOTH, OPT_THREADS, &sv::num_workers),
    B("use_cuda_streams", S_BOTH, &sv::use_cuda_streams),
    B("use_async_processing", S_DEC, &sv::use_async_processing),
    B("use_quantization", S_BOTH, &sv::use_quantization),
    I("quantization_bits", S_BOTH, 1, 64, &sv::quantization_bits),
};

class reader {
public:
    reader(const std::string & name, std::vector<std::string> & warnings) : name_(name), warnings_(warnings) {}

    [[noreturn]] void fail(int32_t line, const std::string & key, const std::string & msg) const {
        throw error(format("%s:%d: %s: %s", name_.c_str(), line, key.c_str(), msg.c_str()));
    }
    void warn(int32_t line, const std::string & key, const std::string & msg) const {
        warnings_.push_back(format("%s:%d: %s: %s", name_.c_str(), line, key.c_str(), msg.c_str()));
    }

    static int32_t line_of(const yaml_entry & e) { return e.value.line > 0 ? e.value.line : e.line; }

    bool get_bool(const yaml_entry & e, const std::string & key) const {
        const auto b = e.value.as_bool();
        if (!b) fail(line_of(e), key, "expected true or false, got " + e.value.describe());
        return *b;
    }

    int64_t get_int(const yaml_entry & e, const std::string & key, double lo, double hi) const {
        const auto v = e.value.as_int();
        if (!v) fail(line_of(e), key, "expected an integer, got " + e.value.describe());
        if (double(*v) < lo || double(*v) > hi)
            fail(line_of(e), key, format("%lld is out of range [%.0f, %.0f]", (long long) *v, lo, hi));
        return *v;
    }

    double get_float(const yaml_entry & e, const std::string & key, double lo, double hi) const {
        const auto v = e.value.as_float();
        if (!v) fail(line_of(e), key, "expected a number, got " + e.value.describe());
        if (!(*v > lo && *v <= hi)) fail(line_of(e), key, format("%s is out of range (%g, %g]", e.value.text.c_str(), lo, hi));
        return *v;
    }

    int64_t get_enum(const yaml_entry & e, const std::string & key, const char * const * names, size_t n) const {
        if (e.value.kind == yaml_kind::SCALAR)
            for (size_t i = 0; i < n; ++i)
                if (e.value.text == names[i]) return int64_t(i);
        fail(line_of(e), key, format("expected one of %s, got %s", join(names, n).c_str(),
                                     e.value.kind == yaml_kind::SCALAR ? ("'" + e.value.text + "'").c_str()
                                                                       : e.value.describe().c_str()));
    }

    // cache_dtype: the specification's names, or a --kv-type value. As a type.
    int64_t get_dtype(const yaml_entry & e, const std::string & key) const {
        const bool scalar = e.value.kind == yaml_kind::SCALAR;
        for (size_t i = 0; scalar && i < std::size(DTYPE_NAMES); ++i)
            if (e.value.text == DTYPE_NAMES[i]) {
                if (DTYPE_TYPES[i] == type::F16 && e.value.text == "bfloat16")
                    warn(line_of(e), key, "K/V pages have no bfloat16 type; float16 pages are used");
                return int64_t(DTYPE_TYPES[i]);
            }
        type t = type::F16;
        if (scalar && type_from_name(e.value.text.c_str(), &t) && kv_type_supported(t)) return int64_t(t);
        fail(line_of(e), key, format("expected one of %s, or a --kv-type value (%s), got %s",
                                     join(DTYPE_NAMES, std::size(DTYPE_NAMES)).c_str(), kv_type_list().c_str(),
                                     scalar ? ("'" + e.value.text + "'").c_str() : e.value.describe().c_str()));
    }

    // A key that is a shared option: the value as its flag would take it
    // (option_read), so the file and the flag accept the same values.
    void check_shared(const yaml_entry & e, const std::string & key, const option_def & row) const {
        if (e.value.kind != yaml_kind::SCALAR) return;  // the typed read says what was expected
        try {
            option_read(row, key, e.value.text);
        } catch (const cli_error & x) {
            throw error(format("%s:%d: %s", name_.c_str(), line_of(e), x.what()));
        }
    }

    // A section that must be a mapping (or empty).
    const std::vector<yaml_entry> & section(const yaml_entry & e, const std::string & key) const {
        static const std::vector<yaml_entry> none;
        if (e.value.kind == yaml_kind::NUL) return none;
        if (e.value.kind != yaml_kind::MAP) fail(line_of(e), key, "expected a mapping, got " + e.value.describe());
        return e.value.entries;
    }

    void read_values(const yaml_entry & sec, const char * sec_name, unsigned which, section_values & out) const {
        for (const yaml_entry & e : section(sec, sec_name)) {
            const std::string key = std::string(sec_name) + "." + e.key;
            const key_def * d = nullptr;
            for (const key_def & k : KEYS)
                if ((k.sections & which) && e.key == k.key) d = &k;
            if (!d) {
                std::string known;
                for (const key_def & k : KEYS)
                    if (k.sections & which) known += (known.empty() ? "" : ", ") + std::string(k.key);
                fail(e.line, key, "unknown key (known keys: " + known + ")");
            }
            const int32_t line = line_of(e);
            const option_def * row = d->opt >= 0 ? &SHARED_OPTIONS[d->opt] : nullptr;
            if (row) check_shared(e, key, *row);
            const double lo = row ? row->lo : d->lo, hi = row ? row->hi : d->hi;
            switch (d->kind) {
                case K_BOOL: out.*(d->b) = {get_bool(e, key), line}; break;
                case K_INT: out.*(d->i) = {get_int(e, key, lo, hi), line}; break;
                case K_FLOAT: out.*(d->f) = {get_float(e, key, lo, hi), line}; break;
                case K_ENUM: out.*(d->i) = {get_enum(e, key, d->names, d->n_names), line}; break;
                case K_DTYPE: out.*(d->i) = {get_dtype(e, key), line}; break;
            }
        }
    }

    // cache_strategies / memory_strategies: name -> enabled.
    void read_switches(const yaml_entry & sec, const char * sec_name, const char * const * names, size_t n,
                       bool * enabled) const {
        for (const yaml_entry & e : section(sec, sec_name)) {
            const std::string key = std::string(sec_name) + "." + e.key;
            size_t i = 0;
            while (i < n && e.key != names[i]) ++i;
            if (i == n) fail(e.line, key, "unknown key (known keys: " + join(names, n) + ")");
            enabled[i] = get_bool(e, key);
        }
    }

private:
    const std::string & name_;
    std::vector<std::string> & warnings_;
};

// A setting both sections may give: they must agree.
template <class T>
given<T> merge(const reader & r, const char * key, const given<T> & kv, const given<T> & dec) {
    if (kv.set() && dec.set() && kv.v != dec.v) {
        auto show = [](const T & v) {
            if constexpr (std::is_same_v<T, bool>) return std::string(v ? "true" : "false");
            else if constexpr (std::is_same_v<T, double>) return format("%g", v);
            else return std::to_string(v);
        };
        r.fail(dec.line, std::string("ultra_decoder.") + key,
               format("%s disagrees with ultra_kv_cache.%s: %s (line %d)", show(dec.v).c_str(), key,
                      show(kv.v).c_str(), kv.line));
    }
    return kv.set() ? kv : dec;
}

type quant_type(const reader & r, const char * sec, const given<int64_t> & bits) {
    if (!bits.set()) return type::Q8_0;  // use_quantization without bits: 8
    if (bits.v == 8) return type::Q8_0;
    if (bits.v == 4) return type::Q4_0;
    r.fail(bits.line, std::string(sec) + ".quantization_bits", format("expected 4 or 8, got %lld", (long long) bits.v));
}

// Folds the sections into cfg.
void resolve(const reader & r, const section_values & kv, const section_values & dec, int32_t cache_sec_line,
             int32_t mem_sec_line, run_config & cfg) {
    // Context length, prefill chunk, page size.
    const auto n_ctx = merge(r, "max_sequence_length", kv.max_sequence_length, dec.max_sequence_length);
    if (n_ctx.set()) cfg.ctx.n_ctx = int32_t(n_ctx.v);
    if (kv.cache_chunk_size.set()) {
        if (kv.cache_chunk_size.v <= 64) cfg.ctx.kv.page_tokens = int32_t(kv.cache_chunk_size.v);
        else cfg.ctx.n_ubatch = int32_t(kv.cache_chunk_size.v);
    }
    if (kv.max_cache_size.set()) cfg.capacity = {kv_capacity::unit::TOKENS, uint64_t(kv.max_cache_size.v)};

    // K/V page type.
    int32_t type_line = 0;
    if (kv.use_quantization.set() && kv.use_quantization.v) {
        cfg.ctx.kv.kv_type = quant_type(r, "ultra_kv_cache", kv.quantization_bits);
        type_line = kv.use_quantization.line;
    } else if (kv.cache_dtype.set()) {
        cfg.ctx.kv.kv_type = type(kv.cache_dtype.v);
        type_line = kv.cache_dtype.line;
    }
    if (kv.quantization_bits.set() && !(kv.use_quantization.set() && kv.use_quantization.v))
        quant_type(r, "ultra_kv_cache", kv.quantization_bits);  // still checked
    // Page file.
    if (kv.use_memory_mapping.set() || kv.memory_layout.set()) {
        const bool mm = !kv.use_memory_mapping.set() || kv.use_memory_mapping.v;
        const bool hier = !kv.memory_layout.set() || kv.memory_layout.v == 0;
        cfg.kv_file = mm && hier;
        if (kv.use_memory_mapping.set() && mm && !hier)
            r.warn(kv.use_memory_mapping.line, "ultra_kv_cache.use_memory_mapping",
                   format("no page file with memory_layout: flat (line %d); pages stay in memory", kv.memory_layout.line));
    }

    // Eviction policy and compression.
    bool any_policy = false;
    for (bool b : cfg.policy_enabled) any_policy |= b;
    if (!any_policy) r.fail(cache_sec_line, "cache_strategies", "every eviction policy is disabled; enable at least one");
    const auto use_comp = merge(r, "use_compression", kv.use_compression, dec.use_compression);
    const auto comp_ratio = merge(r, "compression_ratio", kv.compression_ratio, dec.compression_ratio);
    if (comp_ratio.set()) cfg.ctx.kv.compressed_share = comp_ratio.v;
    if (kv.cache_strategy.set()) {
        const auto p = evict_policy(kv.cache_strategy.v);
        if (!cfg.policy_enabled[kv.cache_strategy.v])
            r.fail(kv.cache_strategy.line, "ultra_kv_cache.cache_strategy",
                   format("'%s' is disabled in cache_strategies (line %d)", POLICY_NAMES[kv.cache_strategy.v], cache_sec_line));
        if (p == evict_policy::COMPRESSED && use_comp.set() && !use_comp.v)
            r.fail(kv.cache_strategy.line, "ultra_kv_cache.cache_strategy",
                   format("'compressed' needs use_compression: true (line %d says false)", use_comp.line));
        cfg.ctx.kv.policy = p;
        if (use_comp.set() && use_comp.v && p != evict_policy::COMPRESSED)
            r.warn(use_comp.line, kv.use_compression.set() ? "ultra_kv_cache.use_compression" : "ultra_decoder.use_compression",
                   format("pages are compressed only by the compressed policy; cache_strategy is %s (line %d)",
                          POLICY_NAMES[kv.cache_strategy.v], kv.cache_strategy.line));
    } else if (use_comp.set() && use_comp.v) {
        if (!cfg.policy_enabled[int(evict_policy::COMPRESSED)])
            r.fail(use_comp.line, kv.use_compression.set() ? "ultra_kv_cache.use_compression" : "ultra_decoder.use_compression",
                   format("needs the compressed policy, which is disabled in cache_strategies (line %d)", cache_sec_line));
        cfg.ctx.kv.policy = evict_policy::COMPRESSED;
    } else if (!cfg.policy_enabled[int(cfg.ctx.kv.policy)]) {
        int i = 0;
        while (!cfg.policy_enabled[i]) ++i;
        cfg.ctx.kv.policy = evict_policy(i);
    }

    // The K/V type, page size and policy together, as kv_options_problem
    // checks the flags (naming the keys), on the line of the first key given.
    const int32_t kv_line = kv.cache_chunk_size.set() && kv.cache_chunk_size.v <= 64 ? kv.cache_chunk_size.line
                          : type_line ? type_line : kv.cache_strategy.set() ? kv.cache_strategy.line : use_comp.line;
    if (kv_line) {
        const std::string why = kv_options_problem(cfg.ctx.kv.kv_type, cfg.ctx.kv.page_tokens, cfg.ctx.kv.policy, YAML_KV_NAMES);
        if (!why.empty()) r.fail(kv_line, "ultra_kv_cache", why);
    }

    // Background threads.
    if (kv.use_async_loading.set()) cfg.prefetch = kv.use_async_loading.v;
    if (dec.use_async_processing.set()) cfg.async_writeback = dec.use_async_processing.v;
    const auto cuda = merge(r, "use_cuda_streams", kv.use_cuda_streams, dec.use_cuda_streams);
    if (cuda.set()) cfg.use_cuda_streams = cuda.v;

    // Threads.
    const auto par = merge(r, "use_parallel_processing", kv.use_parallel_processing, dec.use_parallel_processing);
    const auto workers = merge(r, "num_workers", kv.num_workers, dec.num_workers);
    if (par.set() && !par.v) {
        cfg.ctx.n_threads = 1;
        if (workers.set() && workers.v != 1)
            r.warn(workers.line, "num_workers", format("ignored: use_parallel_processing is false (line %d), one thread", par.line));
    } else if (workers.set()) {
        cfg.ctx.n_threads = int32_t(std::max<int64_t>(workers.v, 0));  // -1: all, as -t -1
    }

    // Sparse attention.
    const auto sparse = merge(r, "use_sparse_attention", kv.use_sparse_attention, dec.use_sparse_attention);
    const auto ratio = merge(r, "sparse_attention_ratio", kv.sparse_attention_ratio, dec.sparse_attention_ratio);
    if (sparse.set()) cfg.use_sparse_attention = sparse.v;
    if (ratio.set()) cfg.sparse_ratio = ratio.v;

    // Memory strategy.
    bool any_strategy = false;
    for (bool b : cfg.strategy_enabled) any_strategy |= b;
    if (!any_strategy) r.fail(mem_sec_line, "memory_strategies", "every memory strategy is disabled; enable at least one");
    if (dec.memory_strategy.set()) {
        const int64_t s = dec.memory_strategy.v;
        if (s < N_MEMORY_STRATEGIES && !cfg.strategy_enabled[s])
            r.fail(dec.memory_strategy.line, "ultra_decoder.memory_strategy",
                   format("'%s' is disabled in memory_strategies (line %d)", STRATEGY_NAMES[s], mem_sec_line));
        cfg.strategy = STRATEGY_OR_AUTO[s];
    } else {
        const int s = memory_strategy_index(cfg.strategy);
        if (s >= 0 && !cfg.strategy_enabled[s]) cfg.strategy = "auto";
    }

    // Model shape and the weights of a random-weight model.
    const given<int64_t> * shape[5] = {&dec.d_model, &dec.n_heads, &dec.n_layers, &dec.d_ff, &dec.vocab_size};
    int32_t * dst[5] = {&cfg.shape.d_model, &cfg.shape.n_heads, &cfg.shape.n_layers, &cfg.shape.d_ff, &cfg.shape.vocab_size};
    for (int k = 0; k < 5; ++k)
        if (shape[k]->set()) {
            *dst[k] = int32_t(shape[k]->v);
            cfg.shape_line[k] = shape[k]->line;
        }
    if (dec.use_quantization.set() && dec.use_quantization.v) cfg.weight_type = quant_type(r, "ultra_decoder", dec.quantization_bits);
    else if (dec.use_mixed_precision.set()) cfg.weight_type = dec.use_mixed_precision.v ? type::F16 : type::F32;
    if (dec.quantization_bits.set() && !(dec.use_quantization.set() && dec.use_quantization.v))
        quant_type(r, "ultra_decoder", dec.quantization_bits);

    // Training-only keys.
    if (dec.use_gradient_checkpointing.set() && dec.use_gradient_checkpointing.v)
        r.warn(dec.use_gradient_checkpointing.line, "ultra_decoder.use_gradient_checkpointing",
               "training only (saves memory in the backward pass); ignored for inference");
    if (dec.use_activation_checkpointing.set() && dec.use_activation_checkpointing.v)
        r.warn(dec.use_activation_checkpointing.line, "ultra_decoder.use_activation_checkpointing",
               "training only (recomputes activations in the backward pass); ignored for inference");
}

[[noreturn]] void flag_error(const std::string & flag, const std::string & msg) {
    throw cli_error(format("%s: %s", flag.c_str(), msg.c_str()));
}

kv_capacity flag_capacity(const std::string & flag, const std::string & v) {
    char * end = nullptr;
    errno = 0;
    const double x = std::strtod(v.c_str(), &end);
    if (errno || end == v.c_str() || !std::isfinite(x))
        flag_error(flag, format("cannot read '%s' (bytes with k/M/G, pages with p, tokens with t)", v.c_str()));
    if (!(x > 0))
        flag_error(flag, format("'%s': the bound must be more than 0 (bytes with k/M/G, pages with p, tokens with t)",
                                v.c_str()));
    const std::string suf(end);
    kv_capacity c;
    double mul = 1;
    if (suf == "p" || suf == "t") {
        const char * what = suf == "p" ? "pages" : "tokens";
        if (x != std::floor(x)) flag_error(flag, format("'%s': a whole number of %s", v.c_str(), what));
        // the configuration file's bound (max_cache_size), so that every
        // value the flag takes can be written into a file and read back
        if (x > double(MAX_CACHE_TOKENS))
            flag_error(flag, format("'%s': at most %lld %s", v.c_str(), (long long) MAX_CACHE_TOKENS, what));
        c.u = suf == "p" ? kv_capacity::unit::PAGES : kv_capacity::unit::TOKENS;
        c.n = uint64_t(x);
        return c;
    }
    if (suf == "" || suf == "b" || suf == "B") mul = 1;
    else if (suf == "k" || suf == "K") mul = 1024.0;
    else if (suf == "m" || suf == "M") mul = 1024.0 * 1024.0;
    else if (suf == "g" || suf == "G") mul = 1024.0 * 1024.0 * 1024.0;
    else flag_error(flag, format("unknown suffix in '%s' (bytes with k/M/G, pages with p, tokens with t)", v.c_str()));
    if (x * mul > 1e18) flag_error(flag, format("'%s' is too large", v.c_str()));
    c.u = kv_capacity::unit::BYTES;
    c.n = uint64_t(x * mul);
    return c;
}

} // namespace

kv_capacity parse_kv_capacity(const std::string & flag, const std::string & value) { return flag_capacity(flag, value); }

size_t kv_capacity_bytes(const kv_capacity & c, size_t page_bytes, int32_t page_tokens, size_t def) {
    const uint64_t tok = uint64_t(std::max(1, page_tokens));
    switch (c.u) {
        case kv_capacity::unit::DEFAULT: return def;
        case kv_capacity::unit::BYTES: return size_t(c.n);
        case kv_capacity::unit::PAGES:
        case kv_capacity::unit::TOKENS: {
            const uint64_t pages = c.u == kv_capacity::unit::PAGES ? c.n : (c.n + tok - 1) / tok;
            size_t bytes = 0;
            // past size_t: the largest size, which no store can map (one clear error then)
            if (__builtin_mul_overflow(pages, uint64_t(page_bytes), &bytes)) return SIZE_MAX;
            return bytes;
        }
    }
    return def;
}

int memory_strategy_index(const std::string & name) {
    for (int i = 0; i < N_MEMORY_STRATEGIES; ++i)
        if (name == STRATEGY_NAMES[i]) return i;
    return -1;
}

run_config config_parse(const std::string & text, const std::string & name, const run_config & base) {
    run_config cfg = base;
    cfg.path = name;
    const yaml_node root = yaml_parse(text, name);
    const reader r(name, cfg.warnings);
    if (root.kind == yaml_kind::NUL) throw error(format("%s: empty configuration (expected 'gloas:' at the top)", name.c_str()));
    if (root.kind != yaml_kind::MAP)
        throw error(format("%s:%d: expected a mapping with the key 'gloas', got %s", name.c_str(), root.line, root.describe().c_str()));
    const yaml_entry * top = nullptr;
    for (const yaml_entry & e : root.entries) {
        if (e.key != "gloas") r.fail(e.line, e.key, "unknown key (the configuration is under 'gloas:')");
        top = &e;
    }
    if (!top) throw error(format("%s:%d: expected the key 'gloas' at the top", name.c_str(), root.line));
    section_values kv, dec;
    int32_t cache_line = 0, mem_line = 0;
    for (const yaml_entry & e : r.section(*top, "gloas")) {
        if (e.key == "ultra_kv_cache") r.read_values(e, "ultra_kv_cache", S_KV, kv);
        else if (e.key == "ultra_decoder") r.read_values(e, "ultra_decoder", S_DEC, dec);
        else if (e.key == "cache_strategies") {
            r.read_switches(e, "cache_strategies", POLICY_NAMES, N_EVICT_POLICIES, cfg.policy_enabled);
            cache_line = e.line;
        } else if (e.key == "memory_strategies") {
            r.read_switches(e, "memory_strategies", STRATEGY_NAMES, N_MEMORY_STRATEGIES, cfg.strategy_enabled);
            mem_line = e.line;
        } else {
            r.fail(e.line, "gloas." + e.key,
                   "unknown section (known: ultra_kv_cache, ultra_decoder, cache_strategies, memory_strategies)");
        }
    }
    resolve(r, kv, dec, cache_line ? cache_line : top->line, mem_line ? mem_line : top->line, cfg);
    return cfg;
}

run_config config_load(const std::string & path, const run_config & base) {
    return config_parse(read_whole_file(path, size_t(1) << 20, "configuration file"), path, base);
}

namespace {

// The shortest decimal that reads back as v.
std::string number(double v) {
    for (int prec = 6; prec < 17; ++prec) {
        const std::string t = format("%.*g", prec, v);
        if (std::strtod(t.c_str(), nullptr) == v) return t;
    }
    return format("%.17g", v);
}

const char * yes(bool b) { return b ? "true" : "false"; }

} // namespace

std::string config_to_yaml(const run_config & cfg) {
    const context_params defaults;
    const context_params & c = cfg.ctx;
    const kv_store_params & kv = c.kv;
    std::string y = "gloas:\n  ultra_kv_cache:\n";
    auto key = [&](const char * k, const std::string & v) { y += format("    %s: %s\n", k, v.c_str()); };
    // A comment may quote what the user typed (a folder name): control
    // characters are written as \xHH, so the comment stays one line of text.
    auto note = [&](const std::string & t) {
        y += "    # ";
        for (char ch : t) {
            if (uint8_t(ch) < 0x20 || ch == 0x7f) y += format("\\x%02x", unsigned(uint8_t(ch)));
            else y += ch;
        }
        y += "\n";
    };

    switch (cfg.capacity.u) {
        case kv_capacity::unit::DEFAULT:
            note(format("max_cache_size not set: %zu bytes of pages", kv.capacity_bytes));
            break;
        case kv_capacity::unit::BYTES:
            note(format("max_cache_size not set: %llu bytes of pages (--kv-capacity %llu)",
                        (unsigned long long) cfg.capacity.n, (unsigned long long) cfg.capacity.n));
            break;
        case kv_capacity::unit::PAGES: {
            const uint64_t tokens = cfg.capacity.n * uint64_t(std::max(1, kv.page_tokens));
            if (tokens <= uint64_t(MAX_CACHE_TOKENS)) key("max_cache_size", std::to_string(tokens));
            else note(format("max_cache_size not set: %llu pages of %d tokens is past its bound (--kv-capacity %llup)",
                             (unsigned long long) cfg.capacity.n, kv.page_tokens, (unsigned long long) cfg.capacity.n));
            break;
        }
        case kv_capacity::unit::TOKENS: key("max_cache_size", std::to_string(cfg.capacity.n)); break;
    }
    // cache_chunk_size holds the page size (<= 64) or the prefill chunk (> 64).
    const bool page_ok = kv.page_tokens <= 64;
    const bool ubatch_default = c.n_ubatch == defaults.n_ubatch;
    if (page_ok && (ubatch_default || kv.page_tokens != defaults.kv.page_tokens || c.n_ubatch <= 64)) {
        key("cache_chunk_size", std::to_string(kv.page_tokens));
        if (!ubatch_default) note(format("prefill chunk %d tokens (-ub %d)", c.n_ubatch, c.n_ubatch));
    } else {
        if (c.n_ubatch > 64) key("cache_chunk_size", std::to_string(c.n_ubatch));
        else note(format("prefill chunk %d tokens (-ub %d)", c.n_ubatch, c.n_ubatch));
        if (kv.page_tokens != defaults.kv.page_tokens)
            note(format("page size %d tokens (--kv-page %d)", kv.page_tokens, kv.page_tokens));
    }
    if (c.n_ctx > 0) key("max_sequence_length", std::to_string(c.n_ctx));
    else note("max_sequence_length not set: the model's context");
    const bool quant = kv.kv_type == type::Q8_0 || kv.kv_type == type::Q4_0;
    const char * dtype = kv.kv_type == type::F32 ? "float32" : kv.kv_type == type::F16 ? "float16"
                       : kv.kv_type == type::Q8_0 ? "int8" : kv.kv_type == type::Q4_0 ? "int4" : nullptr;
    if (dtype) key("cache_dtype", dtype);
    else note(format("page type %s has no cache_dtype", type_name(kv.kv_type)));
    key("use_compression", yes(kv.policy == evict_policy::COMPRESSED));
    key("compression_ratio", number(kv.compressed_share));
    key("use_memory_mapping", yes(cfg.kv_file));
    key("memory_layout", cfg.kv_file ? "hierarchical" : "flat");
    if (cfg.kv_file && !kv.dir.empty()) note("page folder " + kv.dir + " (--kv-dir)");
    key("cache_strategy", POLICY_NAMES[int(kv.policy)]);
    key("use_async_loading", yes(cfg.prefetch));
    key("use_parallel_processing", yes(c.n_threads != 1));
    key("num_workers", std::to_string(c.n_threads));
    key("use_cuda_streams", yes(cfg.use_cuda_streams));
    key("use_quantization", yes(quant));
    if (quant) key("quantization_bits", kv.kv_type == type::Q8_0 ? "8" : "4");
    key("use_sparse_attention", yes(cfg.use_sparse_attention));
    key("sparse_attention_ratio", number(cfg.sparse_ratio));

    y += "  ultra_decoder:\n";
    const char * shape_keys[5] = {"d_model", "n_heads", "n_layers", "d_ff", "vocab_size"};
    const int32_t shape[5] = {cfg.shape.d_model, cfg.shape.n_heads, cfg.shape.n_layers, cfg.shape.d_ff, cfg.shape.vocab_size};
    for (int k = 0; k < 5; ++k)
        if (shape[k]) key(shape_keys[k], std::to_string(shape[k]));
    key("memory_strategy", cfg.strategy);
    const bool wquant = cfg.weight_type == type::Q8_0 || cfg.weight_type == type::Q4_0;
    if (wquant) {
        key("use_quantization", "true");
        key("quantization_bits", cfg.weight_type == type::Q8_0 ? "8" : "4");
    } else if (cfg.weight_type == type::F16 || cfg.weight_type == type::F32) {
        key("use_quantization", "false");
        key("use_mixed_precision", yes(cfg.weight_type == type::F16));
    } else {
        note(format("weight type %s has no key", type_name(cfg.weight_type)));
    }
    key("use_async_processing", yes(cfg.async_writeback));

    y += "  cache_strategies:\n";
    for (int i = 0; i < N_EVICT_POLICIES; ++i) key(POLICY_NAMES[i], yes(cfg.policy_enabled[i]));
    y += "  memory_strategies:\n";
    for (int i = 0; i < N_MEMORY_STRATEGIES; ++i) key(STRATEGY_NAMES[i], yes(cfg.strategy_enabled[i]));
    return y;
}

void config_check_model(const run_config & cfg, const hparams & hp, const std::string & model_name) {
    static const char * const keys[5] = {"d_model", "n_heads", "n_layers", "d_ff", "vocab_size"};
    const int32_t want[5] = {cfg.shape.d_model, cfg.shape.n_heads, cfg.shape.n_layers, cfg.shape.d_ff, cfg.shape.vocab_size};
    const int32_t have[5] = {hp.n_embd, hp.n_head, hp.n_layer, hp.n_ff, hp.n_vocab};
    for (int k = 0; k < 5; ++k)
        if (want[k] != 0 && want[k] != have[k])
            throw error(format("%s:%d: ultra_decoder.%s: %d, but the model %s has %d", cfg.path.c_str(), cfg.shape_line[k],
                               keys[k], want[k], model_name.c_str(), have[k]));
}

llama_gguf_hparams config_random_model_shape(const run_config & cfg) {
    const model_shape & s = cfg.shape;
    const char * missing = !s.d_model ? "d_model" : !s.n_heads ? "n_heads" : !s.n_layers ? "n_layers" : nullptr;
    if (missing)
        throw error(format("%s: ultra_decoder.%s is needed to make a random-weight model (no model given)",
                           cfg.path.empty() ? "configuration" : cfg.path.c_str(), missing));
    auto fail = [&](int k, const std::string & msg) {
        throw error(format("%s:%d: ultra_decoder.%s: %s", cfg.path.c_str(), cfg.shape_line[k],
                           k == 0 ? "d_model" : k == 1 ? "n_heads" : k == 3 ? "d_ff" : "vocab_size", msg.c_str()));
    };
    if (s.d_model % s.n_heads != 0) fail(1, format("d_model %d is not a multiple of n_heads %d", s.d_model, s.n_heads));
    if ((s.d_model / s.n_heads) % 2 != 0)
        fail(1, format("the head size d_model / n_heads = %d must be even (rotary embedding)", s.d_model / s.n_heads));
    const int64_t blck = traits(cfg.weight_type).blck_size;
    const int32_t d_ff = s.d_ff ? s.d_ff : 4 * s.d_model;
    if (s.d_model % blck != 0) fail(0, format("%d is not a multiple of %lld, the block of %s weights", s.d_model, (long long) blck, type_name(cfg.weight_type)));
    if (d_ff % blck != 0) fail(3, format("%d is not a multiple of %lld, the block of %s weights", d_ff, (long long) blck, type_name(cfg.weight_type)));
    const int32_t vocab = s.vocab_size ? s.vocab_size : 32000;
    if (vocab < 354) fail(4, format("%d is too small for a synthetic vocabulary (at least 354: specials, 256 bytes, pieces)", vocab));
    llama_gguf_hparams hp;
    hp.name = format("random %dx%d (%s)", s.n_layers, s.d_model, cfg.path.empty() ? "config" : cfg.path.c_str());
    hp.n_vocab = vocab;
    hp.n_ctx = cfg.ctx.n_ctx > 0 ? cfg.ctx.n_ctx : 2048;
    hp.n_embd = s.d_model;
    hp.n_ff = d_ff;
    hp.n_head = s.n_heads;
    hp.n_head_kv = s.n_heads;
    hp.n_layer = s.n_layers;
    hp.head_dim = s.d_model / s.n_heads;
    hp.wtype = cfg.weight_type;
    return hp;
}

context_params config_context_params(const run_config & cfg, const hparams & hp, const std::string & default_kv_dir) {
    context_params p = cfg.ctx;
    if (!cfg.kv_file) p.kv.dir.clear();
    else if (p.kv.dir.empty()) p.kv.dir = default_kv_dir;
    page_geometry g{p.kv.page_tokens, hp.n_layer, hp.n_head_kv, hp.head_dim};
    const std::string why = kv_options_problem(p.kv.kv_type, p.kv.page_tokens, p.kv.policy, YAML_KV_NAMES);
    if (!why.empty())
        throw error(format("%s: %s", cfg.path.empty() ? "configuration" : cfg.path.c_str(), why.c_str()));
    p.kv.capacity_bytes = kv_capacity_bytes(cfg.capacity, g.page_bytes(p.kv.kv_type), p.kv.page_tokens, p.kv.capacity_bytes);
    return p;
}

} // namespace gloas
