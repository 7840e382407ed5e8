// The C API (include/gloas.h) over the C++ decoder. Every entry point catches
// every exception and turns it into a status plus a message; nothing C++
// crosses the boundary.
#include "include/gloas.h"

#include "decoder/gguf.h"
#include "decoder/llama.h"
#include "decoder/model.h"
#include "decoder/options.h"
#include "decoder/sampler.h"
#include "base/error.h"
#include "tensor/ops.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <memory>
#include <new>
#include <string>
#include <vector>

using namespace gloas;

#ifndef GLOAS_VERSION
#error "GLOAS_VERSION (the project version) is defined by CMakeLists.txt"
#endif

struct gloas_model {
    std::unique_ptr<model> m;
    bool has_chat_template = false;
    std::string chat_template;  // tokenizer.chat_template of a GGUF
};

struct gloas_context {
    const gloas_model * model = nullptr;
    std::unique_ptr<context> ctx;
    std::string last_error;
    // Per sequence: the index, in ctx's last decode, of the sequence's latest
    // token if its logits were kept there, else -1 (gloas_generate continues
    // from those logits).
    std::vector<int32_t> last_row;
    uint64_t tokens_evaluated = 0;
    uint64_t decode_calls = 0;
    double eval_seconds = 0.0;
};

struct gloas_sampler {
    sampler_params params;
    std::unique_ptr<sampler> s;      // made at the first sample, once n_vocab is known
    std::vector<int32_t> pending;    // tokens accepted before that
};

namespace {

thread_local std::string t_last_error;

// A failure: status and message.
struct failure {
    gloas_status st;
    std::string msg;
};

struct status_error : error {
    gloas_status st;
    status_error(gloas_status s, const std::string & m) : error(m), st(s) {}
};

[[noreturn]] void fail(gloas_status st, const std::string & msg) { throw status_error(st, msg); }

// Maps the exception in flight to a failure. `dflt` is the status of a plain
// gloas::error (who is at fault depends on the call).
failure current_failure(gloas_status dflt) {
    try {
        throw;
    } catch (const status_error & e) {
        return {e.st, e.what()};
    } catch (const context_full_error & e) {
        return {GLOAS_ERR_CONTEXT_FULL, e.what()};
    } catch (const error & e) {
        return {dflt, e.what()};
    } catch (const std::bad_alloc &) {
        return {GLOAS_ERR_OOM, "out of memory"};
    } catch (const std::exception & e) {
        return {GLOAS_ERR_INTERNAL, std::string("internal error: ") + e.what()};
    } catch (...) {
        return {GLOAS_ERR_INTERNAL, "internal error: unknown exception"};
    }
}

gloas_status record(gloas_context * ctx, const failure & f) {
    try {
        t_last_error = f.msg;
        if (ctx) ctx->last_error = f.msg;
    } catch (...) {
    }
    return f.st;
}

// Runs fn, catching everything; returns GLOAS_OK or the failure's status.
template <class F> gloas_status guard(gloas_context * ctx, gloas_status dflt, F && fn) {
    try {
        fn();
        return GLOAS_OK;
    } catch (...) {
        return record(ctx, current_failure(dflt));
    }
}

void need(bool ok, const char * what) {
    if (!ok) fail(GLOAS_ERR_INVALID_ARG, what);
}

void check_seq(const gloas_context * ctx, gloas_seq_id seq) {
    if (seq < 0 || seq >= ctx->ctx->n_seq_max())
        fail(GLOAS_ERR_INVALID_ARG,
             format("sequence id %d is outside [0, %d) (raise n_seq_max)", seq, ctx->ctx->n_seq_max()));
}

void check_token(const model & m, gloas_token t) {
    if (t < 0 || t >= m.hp.n_vocab)
        fail(GLOAS_ERR_INVALID_ARG, format("token id %d is out of range (vocabulary has %d tokens)", t, m.hp.n_vocab));
}

// Copies s into buf (NUL-terminated); the buffer contract of token_to_piece.
void copy_out(const std::string & s, char * buf, size_t buf_size, size_t * len) {
    if (len) *len = s.size();
    if (s.size() >= buf_size)
        fail(GLOAS_ERR_INVALID_ARG, format("buffer of %zu bytes is too small for %zu bytes of text", buf_size, s.size() + 1));
    std::memcpy(buf, s.data(), s.size());
    buf[s.size()] = '\0';
}

// ---- params structs (the "ABI" rule of gloas.h) ----
//
// Each struct begins with `size_t size`. A caller's struct covers a prefix of
// ours: sizes from the end of the first layout's last field (0.2.0) up to
// sizeof ours are taken, the fields the size covers are read and the others
// keep their defaults. A field appended later must start at or past sizeof
// every earlier layout (so that a caller's size covers a field entirely or
// not at all): a static_assert for each appended field, as for
// gloas_context_params below. (test-capi.c passes a copy of the first layout,
// as a program built against 0.2.0 declares it.)

#define GLOAS_END_OF(T, field) (offsetof(T, field) + sizeof(((T *) nullptr)->field))

// The first layouts: up to and including these fields.
constexpr size_t MODEL_PARAMS_MIN = GLOAS_END_OF(gloas_model_params, n_threads);
constexpr size_t CONTEXT_PARAMS_MIN = GLOAS_END_OF(gloas_context_params, ctx_slide);
constexpr size_t SAMPLER_PARAMS_MIN = GLOAS_END_OF(gloas_sampler_params, seed);
constexpr size_t GENERATE_PARAMS_MIN = GLOAS_END_OF(gloas_generate_params, n_generated);
constexpr size_t METRICS_MIN = GLOAS_END_OF(gloas_metrics, eval_seconds);

// The size of an earlier layout that ends `end` bytes in: at most `end`
// padded to the strictest alignment (a struct's alignment divides it).
constexpr size_t layout_size(size_t end) {
    return (end + alignof(std::max_align_t) - 1) / alignof(std::max_align_t) * alignof(std::max_align_t);
}
static_assert(offsetof(gloas_context_params, kv_ram_bytes) >= layout_size(CONTEXT_PARAMS_MIN),
              "an appended field starts past the padding of every earlier layout");
// The second layout (up to kv_ram_bytes) has no padding to reach past: it ends
// on a multiple of the struct's alignment (that of its 8-byte fields), so its
// size is where it ends.
static_assert(GLOAS_END_OF(gloas_context_params, kv_ram_bytes) % alignof(gloas_context_params) == 0 &&
                  offsetof(gloas_context_params, n_gpu_layers) == GLOAS_END_OF(gloas_context_params, kv_ram_bytes),
              "an appended field starts past the padding of every earlier layout");

// Refuses a size outside [min_size, sizeof(T)].
template <class T> void check_size(size_t size, size_t min_size, const char * what) {
    if (size < min_size || size > sizeof(T))
        fail(GLOAS_ERR_INVALID_ARG,
             format("%s: size is %zu bytes, this library (gloas %s) takes %zu to %zu; start from the struct's "
                    "*_default_params() (or *_params_init(&p, sizeof p)) and build against a gloas.h no newer "
                    "than the library",
                    what, size, GLOAS_VERSION, min_size, sizeof(T)));
}

// The caller's struct `in` (NULL: the defaults) as ours: the fields its size
// covers, the defaults for the others.
template <class T> T read_params(const T * in, const T & dflt, size_t min_size, const char * what) {
    T p = dflt;
    if (!in) return p;
    check_size<T>(in->size, min_size, what);
    std::memcpy(static_cast<void *>(&p), in, in->size);
    p.size = sizeof(T);
    return p;
}

// *_params_init: the defaults, as much of them as `size` covers.
template <class T> gloas_status init_params(T * p, size_t size, const T & dflt, size_t min_size, const char * what) {
    return guard(nullptr, GLOAS_ERR_INVALID_ARG, [&] {
        if (!p) fail(GLOAS_ERR_INVALID_ARG, format("%s: params is NULL", what));
        check_size<T>(size, min_size, what);
        std::memcpy(static_cast<void *>(p), &dflt, size);
        p->size = size;
    });
}

// A struct of zeros but for its size: the start of each *_defaults().
template <class T> T zeroed() {
    T p;
    std::memset(static_cast<void *>(&p), 0, sizeof p);
    p.size = sizeof p;
    return p;
}

// The fields gloas_sampler_params shares, by name, with sampler_params.
#define GLOAS_SAMPLER_FIELDS(X) X(temp) X(top_k) X(top_p) X(min_p) X(repeat_penalty) X(repeat_last_n) X(seed)

// tokenizer_path NULL, n_threads 0.
gloas_model_params model_defaults() { return zeroed<gloas_model_params>(); }

gloas_context_params context_defaults() {
    gloas_context_params p = zeroed<gloas_context_params>();
    p.n_ctx = 0;
    p.n_ubatch = 512;
    p.n_threads = 0;
    p.n_seq_max = 1;
    p.kv_type = GLOAS_KV_F16;
    p.kv_page_tokens = 32;
    p.kv_dir = nullptr;
    p.kv_capacity_bytes = uint64_t(4) << 30;
    p.kv_policy = GLOAS_EVICT_LRU;
    p.sparse_ratio = 1.0f;
    p.ctx_slide = 0;
    p.kv_ram_bytes = 0;
    p.n_gpu_layers = 0;
    p.gpu_device = 0;
    return p;
}

// sampler_params' defaults.
gloas_sampler_params sampler_defaults() {
    gloas_sampler_params p = zeroed<gloas_sampler_params>();
    const sampler_params d;
#define GLOAS_COPY(f) p.f = d.f;
    GLOAS_SAMPLER_FIELDS(GLOAS_COPY)
#undef GLOAS_COPY
    return p;
}

gloas_generate_params generate_defaults() {
    gloas_generate_params p = zeroed<gloas_generate_params>();
    p.n_predict = 128;
    p.sampling = nullptr;
    p.seq_id = 0;
    p.add_bos = 1;
    p.ignore_eos = 0;
    p.n_generated = nullptr;
    return p;
}

double now_s() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// After a decode (or a call that decodes: fork, restore): which sequences'
// latest logits the batch kept. `b` is null when the call's batch is not
// known (then only `seq`, the sequence it filled, is marked).
void note_logits(gloas_context * c, const batch * b, int32_t seq = -1) {
    std::fill(c->last_row.begin(), c->last_row.end(), -1);
    if (b) {
        for (int32_t i = 0; i < b->n_tokens; ++i)
            c->last_row[size_t(b->seq ? b->seq[i] : 0)] = c->ctx->batch_logits(i) ? i : -1;
    } else if (seq >= 0) {
        const int32_t i = c->ctx->batch_size() - 1;
        if (i >= 0 && c->ctx->seq_n_past(seq) > 0 && c->ctx->batch_logits(i)) c->last_row[size_t(seq)] = i;
    }
}

// Decodes a batch with timing and counters.
void timed_decode(gloas_context * c, const batch & b) {
    const double t0 = now_s();
    try {
        c->ctx->decode(b);
    } catch (...) {
        note_logits(c, nullptr);
        throw;
    }
    c->eval_seconds += now_s() - t0;
    c->decode_calls += 1;
    c->tokens_evaluated += uint64_t(b.n_tokens - c->ctx->n_batch_reused());
    note_logits(c, &b);
}

// The logits of sequence s's latest token: from ctx's last decode when it
// kept them, else computed again (the sequence is refilled from its tokens:
// its sealed pages come back from the store, its open page is recomputed).
const float * seq_last_logits(gloas_context * c, int32_t s) {
    context & x = *c->ctx;
    const int32_t row = c->last_row[size_t(s)];
    if (row >= 0) return x.batch_logits(row);
    const int32_t n = x.seq_n_past(s);
    if (n > x.n_ctx())
        fail(GLOAS_ERR_INVALID_ARG,
             format("gloas_generate: sequence %d has slid past n_ctx and its latest logits were dropped by a later "
                    "decode; give a prompt to continue it", s));
    const std::vector<int32_t> toks = x.seq_tokens(s);
    const double t0 = now_s();
    const float * l = nullptr;
    try {
        l = x.seq_restore(s, toks.data(), n);
    } catch (...) {
        note_logits(c, nullptr);
        throw;
    }
    c->eval_seconds += now_s() - t0;
    c->decode_calls += 1;
    c->tokens_evaluated += uint64_t(n - x.n_batch_reused());
    note_logits(c, nullptr, s);
    return l;
}

sampler_params to_cpp(const gloas_sampler_params & p) {
    sampler_params s;
#define GLOAS_COPY(f) s.f = p.f;
    GLOAS_SAMPLER_FIELDS(GLOAS_COPY)
#undef GLOAS_COPY
    return s;
}

} // namespace

// Sequence files: "GLSQ", u32 version 1, u64 model fingerprint, i32 n, then n
// i32 token ids (little-endian, as written by this machine).
static const char SEQ_MAGIC[4] = {'G', 'L', 'S', 'Q'};
static const uint32_t SEQ_VERSION = 1;

extern "C" {

const char * gloas_version(void) { return GLOAS_VERSION; }

const char * gloas_status_name(gloas_status st) {
    switch (st) {
    case GLOAS_OK: return "GLOAS_OK";
    case GLOAS_ERR_IO: return "GLOAS_ERR_IO";
    case GLOAS_ERR_FORMAT: return "GLOAS_ERR_FORMAT";
    case GLOAS_ERR_INVALID_ARG: return "GLOAS_ERR_INVALID_ARG";
    case GLOAS_ERR_CONTEXT_FULL: return "GLOAS_ERR_CONTEXT_FULL";
    case GLOAS_ERR_OOM: return "GLOAS_ERR_OOM";
    case GLOAS_ERR_CANCELLED: return "GLOAS_ERR_CANCELLED";
    case GLOAS_ERR_INTERNAL: return "GLOAS_ERR_INTERNAL";
    }
    return "GLOAS_ERR_UNKNOWN";
}

const char * gloas_last_error(const gloas_context * ctx) {
    return ctx ? ctx->last_error.c_str() : t_last_error.c_str();
}

gloas_status gloas_model_params_init(gloas_model_params * p, size_t size) {
    return init_params(p, size, model_defaults(), MODEL_PARAMS_MIN, "gloas_model_params_init");
}

gloas_status gloas_context_params_init(gloas_context_params * p, size_t size) {
    return init_params(p, size, context_defaults(), CONTEXT_PARAMS_MIN, "gloas_context_params_init");
}

gloas_status gloas_sampler_params_init(gloas_sampler_params * p, size_t size) {
    return init_params(p, size, sampler_defaults(), SAMPLER_PARAMS_MIN, "gloas_sampler_params_init");
}

gloas_status gloas_generate_params_init(gloas_generate_params * p, size_t size) {
    return init_params(p, size, generate_defaults(), GENERATE_PARAMS_MIN, "gloas_generate_params_init");
}

gloas_model * gloas_model_load(const char * path, const gloas_model_params * params, gloas_status * status) {
    gloas_model * out = nullptr;
    gloas_status st = guard(nullptr, GLOAS_ERR_FORMAT, [&] {
        need(path != nullptr, "gloas_model_load: path is NULL");
        const gloas_model_params p =
            read_params(params, model_defaults(), MODEL_PARAMS_MIN, "gloas_model_load: params");
        need(p.n_threads >= 0, "gloas_model_load: n_threads is negative");
        // Who is at fault: a file that cannot be opened is IO, a bad one FORMAT.
        FILE * f = std::fopen(path, "rb");
        if (!f) fail(GLOAS_ERR_IO, format("%s: cannot open: %s", path, std::strerror(errno)));
        std::fclose(f);
        if (p.n_threads > 0) ops::set_n_threads(p.n_threads);
        model_params mp;
        mp.path = path;
        if (p.tokenizer_path) mp.tokenizer_path = p.tokenizer_path;
        auto m = std::make_unique<gloas_model>();
        m->m = model::load(mp);
        if (m->m->file_format == "gguf") {
            const std::unique_ptr<gguf_file> gf = gguf_file::open(path);
            m->has_chat_template = gf->find("tokenizer.chat_template") != nullptr;
            if (m->has_chat_template) m->chat_template = gf->get_str("tokenizer.chat_template");
        }
        out = m.release();
    });
    if (status) *status = st;
    return out;
}

void gloas_model_free(gloas_model * model) { delete model; }

const char * gloas_model_name(const gloas_model * m) { return m ? m->m->name.c_str() : ""; }
const char * gloas_model_arch(const gloas_model * m) { return m ? m->m->arch.c_str() : ""; }
int32_t gloas_model_n_vocab(const gloas_model * m) { return m ? m->m->hp.n_vocab : 0; }
int32_t gloas_model_n_ctx_train(const gloas_model * m) { return m ? m->m->hp.n_ctx_train : 0; }
int32_t gloas_model_n_layer(const gloas_model * m) { return m ? m->m->hp.n_layer : 0; }
int32_t gloas_model_n_embd(const gloas_model * m) { return m ? m->m->hp.n_embd : 0; }
uint64_t gloas_model_n_params(const gloas_model * m) { return m ? uint64_t(m->m->n_params) : 0; }
uint64_t gloas_model_size(const gloas_model * m) { return m ? uint64_t(m->m->weight_bytes) : 0; }
const char * gloas_model_chat_template(const gloas_model * m) {
    return m && m->has_chat_template ? m->chat_template.c_str() : nullptr;
}
gloas_token gloas_token_bos(const gloas_model * m) { return m ? m->m->tok.bos() : -1; }
gloas_token gloas_token_eos(const gloas_model * m) { return m ? m->m->tok.eos() : -1; }
int gloas_token_is_eog(const gloas_model * m, gloas_token t) { return m && m->m->tok.is_eog(t) ? 1 : 0; }

gloas_status gloas_tokenize(const gloas_model * model, const char * text, int32_t len, int add_bos,
                            gloas_token * tokens_out, int32_t max, int32_t * n_tokens) {
    return guard(nullptr, GLOAS_ERR_INVALID_ARG, [&] {
        need(model && text && n_tokens, "gloas_tokenize: model, text or n_tokens is NULL");
        need(max >= 0 && (tokens_out || max == 0), "gloas_tokenize: tokens_out is NULL or max is negative");
        const size_t n = len < 0 ? std::strlen(text) : size_t(len);
        std::vector<int32_t> ids = model->m->tok.encode(std::string_view(text, n), add_bos != 0);
        *n_tokens = int32_t(ids.size());
        if (int64_t(ids.size()) > max)
            fail(GLOAS_ERR_INVALID_ARG, format("gloas_tokenize: %zu tokens do not fit in %d", ids.size(), max));
        std::copy(ids.begin(), ids.end(), tokens_out);
    });
}

gloas_status gloas_token_to_piece(const gloas_model * model, gloas_token prev, gloas_token token, char * buf,
                                  size_t buf_size, size_t * len) {
    return guard(nullptr, GLOAS_ERR_INVALID_ARG, [&] {
        need(model && (buf || buf_size == 0), "gloas_token_to_piece: model or buf is NULL");
        check_token(*model->m, token);
        if (prev != -1) check_token(*model->m, prev);
        copy_out(model->m->tok.token_to_piece(prev, token), buf, buf_size, len);
    });
}

gloas_status gloas_detokenize(const gloas_model * model, const gloas_token * tokens, int32_t n, char * buf,
                              size_t buf_size, size_t * len) {
    return guard(nullptr, GLOAS_ERR_INVALID_ARG, [&] {
        need(model && (tokens || n == 0) && (buf || buf_size == 0) && n >= 0,
             "gloas_detokenize: model, tokens or buf is NULL, or n is negative");
        std::string s;
        for (int32_t i = 0; i < n; ++i) {
            check_token(*model->m, tokens[i]);
            s += model->m->tok.token_to_piece(i ? tokens[i - 1] : -1, tokens[i]);
        }
        copy_out(s, buf, buf_size, len);
    });
}

gloas_context * gloas_context_new(const gloas_model * model, const gloas_context_params * params) {
    gloas_context * out = nullptr;
    guard(nullptr, GLOAS_ERR_INVALID_ARG, [&] {
        need(model != nullptr, "gloas_context_new: model is NULL");
        const gloas_context_params p =
            read_params(params, context_defaults(), CONTEXT_PARAMS_MIN, "gloas_context_new: params");
        context_params cp;
        need(p.n_ctx >= 0 && p.n_ubatch > 0 && p.n_threads >= 0 && p.n_seq_max > 0,
             "gloas_context_new: n_ctx, n_ubatch, n_threads or n_seq_max out of range");
        cp.n_ctx = p.n_ctx;
        cp.n_ubatch = p.n_ubatch;
        cp.n_threads = p.n_threads;
        cp.n_seq_max = p.n_seq_max;
        static const type kv_types[] = {type::F32, type::F16, type::Q8_0, type::Q4_0, type::Q4_KIVI};  // GLOAS_KV_* in order
        if (p.kv_type < 0 || p.kv_type >= int32_t(std::size(kv_types)))
            fail(GLOAS_ERR_INVALID_ARG, format("gloas_context_new: kv_type %d is not a GLOAS_KV_* value (K/V pages are %s)",
                                               p.kv_type, kv_type_list().c_str()));
        cp.kv.kv_type = kv_types[p.kv_type];
        cp.kv.page_tokens = p.kv_page_tokens;
        cp.kv.dir = p.kv_dir ? p.kv_dir : "";
        cp.kv.dir_required = !cp.kv.dir.empty();  // a folder the program named must be usable
        need(p.kv_capacity_bytes > 0, "gloas_context_new: kv_capacity_bytes is 0");
        cp.kv.capacity_bytes = size_t(p.kv_capacity_bytes);
        if (p.kv_policy < 0 || p.kv_policy > 4)
            fail(GLOAS_ERR_INVALID_ARG, format("gloas_context_new: kv_policy %d is not a GLOAS_EVICT_* value", p.kv_policy));
        cp.kv.policy = evict_policy(p.kv_policy);
        // The check the flags and the configuration file get, naming the fields.
        const std::string why = kv_options_problem(cp.kv.kv_type, cp.kv.page_tokens, cp.kv.policy,
                                                   {"kv_type", "kv_page_tokens", "kv_policy", " "});
        if (!why.empty()) fail(GLOAS_ERR_INVALID_ARG, "gloas_context_new: " + why);
        cp.sparse.ratio = p.sparse_ratio;
        cp.slide.on = p.ctx_slide != 0;
        cp.kv.ram_bytes = size_t(p.kv_ram_bytes);
        need(p.n_gpu_layers >= -1, "gloas_context_new: n_gpu_layers is below -1 (0: none, -1: all that can run there)");
        cp.n_gpu_layers = p.n_gpu_layers;
        cp.gpu_required = p.n_gpu_layers > 0;
        need(p.gpu_device >= 0, "gloas_context_new: gpu_device is negative");
        cp.gpu_device = p.gpu_device;
        auto c = std::make_unique<gloas_context>();
        c->model = model;
        c->ctx = std::make_unique<context>(*model->m, cp);
        c->last_row.assign(size_t(c->ctx->n_seq_max()), -1);
        out = c.release();
    });
    return out;
}

void gloas_context_free(gloas_context * ctx) {
    try {
        delete ctx;
    } catch (...) {
    }
}

int32_t gloas_n_ctx(const gloas_context * ctx) { return ctx ? ctx->ctx->n_ctx() : 0; }
int32_t gloas_n_seq_max(const gloas_context * ctx) { return ctx ? ctx->ctx->n_seq_max() : 0; }

gloas_status gloas_decode(gloas_context * ctx, const gloas_batch * b) {
    if (!ctx) return record(nullptr, {GLOAS_ERR_INVALID_ARG, "gloas_decode: ctx is NULL"});
    return guard(ctx, GLOAS_ERR_INVALID_ARG, [&] {
        need(b && b->token && b->n_tokens > 0, "gloas_decode: the batch is NULL, has no token array or no tokens");
        batch cb;
        cb.n_tokens = b->n_tokens;
        cb.token = b->token;
        cb.pos = b->pos;
        cb.seq = b->seq_id;
        cb.logits = b->logits;
        timed_decode(ctx, cb);
    });
}

const float * gloas_get_logits(gloas_context * ctx, int32_t i) {
    if (!ctx) {
        record(nullptr, {GLOAS_ERR_INVALID_ARG, "gloas_get_logits: ctx is NULL"});
        return nullptr;
    }
    const float * l = nullptr;
    guard(ctx, GLOAS_ERR_INVALID_ARG, [&] {
        const int32_t n = ctx->ctx->batch_size();
        const int32_t idx = i == -1 ? n - 1 : i;
        l = idx >= 0 ? ctx->ctx->batch_logits(idx) : nullptr;
        if (!l)
            fail(GLOAS_ERR_INVALID_ARG,
                 format("gloas_get_logits: no logits for token %d of the last batch (%d tokens)", i, n));
    });
    return l;
}

gloas_sampler * gloas_sampler_new(const gloas_sampler_params * params) {
    gloas_sampler * out = nullptr;
    guard(nullptr, GLOAS_ERR_INVALID_ARG, [&] {
        const gloas_sampler_params p =
            read_params(params, sampler_defaults(), SAMPLER_PARAMS_MIN, "gloas_sampler_new: params");
        auto s = std::make_unique<gloas_sampler>();
        s->params = to_cpp(p);
        sampler check(s->params, 1);  // rejects bad parameters now, not at the first sample
        if (s->params.seed == SEED_RANDOM) s->params.seed = check.seed();  // one seed for the lazily made sampler
        out = s.release();
    });
    return out;
}

void gloas_sampler_free(gloas_sampler * s) { delete s; }

gloas_token gloas_sampler_sample(gloas_sampler * s, gloas_context * ctx, int32_t i) {
    gloas_token tok = -1;
    gloas_status st = guard(ctx, GLOAS_ERR_INVALID_ARG, [&] {
        need(s && ctx, "gloas_sampler_sample: sampler or ctx is NULL");
        const float * l = gloas_get_logits(ctx, i);
        if (!l) fail(GLOAS_ERR_INVALID_ARG, ctx->last_error);
        const int32_t nv = ctx->model->m->hp.n_vocab;
        if (s->s && s->s->n_vocab() != nv)
            fail(GLOAS_ERR_INVALID_ARG, format("gloas_sampler_sample: the sampler was used with a vocabulary of %d tokens, "
                                               "this model has %d", s->s->n_vocab(), nv));
        if (!s->s) {
            s->s = std::make_unique<sampler>(s->params, nv);
            for (int32_t t : s->pending) s->s->accept(t);
            s->pending.clear();
        }
        tok = s->s->sample(l);
    });
    return st == GLOAS_OK ? tok : -1;
}

gloas_status gloas_sampler_accept(gloas_sampler * s, gloas_token token) {
    return guard(nullptr, GLOAS_ERR_INVALID_ARG, [&] {
        need(s != nullptr, "gloas_sampler_accept: sampler is NULL");
        if (s->s) {
            s->s->accept(token);
        } else {
            if (token < 0) fail(GLOAS_ERR_INVALID_ARG, format("gloas_sampler_accept: token id %d is negative", token));
            s->pending.push_back(token);
        }
    });
}

void gloas_sampler_reset(gloas_sampler * s) {
    if (!s) return;
    s->pending.clear();
    if (s->s) s->s->reset();
}

gloas_status gloas_generate(gloas_context * ctx, const char * prompt, const gloas_generate_params * params,
                            gloas_token_callback callback, void * user_data) {
    if (!ctx) return record(nullptr, {GLOAS_ERR_INVALID_ARG, "gloas_generate: ctx is NULL"});
    return guard(ctx, GLOAS_ERR_INVALID_ARG, [&] {
        const gloas_generate_params p =
            read_params(params, generate_defaults(), GENERATE_PARAMS_MIN, "gloas_generate: params");
        if (p.n_generated) *p.n_generated = 0;
        need(p.n_predict >= 0, "gloas_generate: n_predict is negative");
        check_seq(ctx, p.seq_id);
        sampler_params sp;
        if (p.sampling)
            sp = to_cpp(read_params(p.sampling, sampler_defaults(), SAMPLER_PARAMS_MIN, "gloas_generate: sampling"));
        else
            sp.temp = 0.0f;
        const model & m = *ctx->model->m;
        context & c = *ctx->ctx;
        const int32_t s = p.seq_id;
        const bool empty = c.seq_n_past(s) == 0;
        auto full = [&] { return !c.slides() && c.seq_n_past(s) >= c.n_ctx(); };

        std::vector<int32_t> toks = m.tok.encode(prompt ? prompt : "", empty && p.add_bos);
        if (toks.empty() && empty) toks.push_back(m.tok.bos());

        sampler smp(sp, m.hp.n_vocab);
        for (int32_t t : c.seq_tokens(s)) smp.accept(t);
        for (int32_t t : toks) smp.accept(t);

        int32_t prev = empty ? -1 : c.seq_tokens(s).back();
        const float * logits = nullptr;
        if (!toks.empty()) {
            if (!c.slides() && c.seq_n_past(s) + int64_t(toks.size()) > c.n_ctx())
                fail(GLOAS_ERR_CONTEXT_FULL, format("gloas_generate: the prompt is %zu tokens, sequence %d holds %d of "
                                                    "a context of %d", toks.size(), s, c.seq_n_past(s), c.n_ctx()));
            std::vector<int32_t> seqv(toks.size(), s);
            batch b;
            b.n_tokens = int32_t(toks.size());
            b.token = toks.data();
            b.seq = seqv.data();
            timed_decode(ctx, b);
            logits = c.batch_logits(c.batch_size() - 1);
            prev = toks.back();
        } else {
            // An empty prompt continues the sequence from its latest token.
            if (full())
                fail(GLOAS_ERR_CONTEXT_FULL, format("gloas_generate: sequence %d is full (%d positions of a context "
                                                    "of %d): nothing to continue", s, c.seq_n_past(s), c.n_ctx()));
            logits = seq_last_logits(ctx, s);
        }

        // Each token passed to the callback is decoded (appended to the
        // sequence) unless the context is full, so that the next call with an
        // empty prompt continues after it.
        int32_t n_gen = 0;
        while (n_gen < p.n_predict) {
            const int32_t tok = smp.sample(logits);
            ++n_gen;
            if (p.n_generated) *p.n_generated = n_gen;
            if (!p.ignore_eos && (m.tok.is_eog(tok) || tok == m.tok.bos())) break;
            smp.accept(tok);
            const std::string piece = m.tok.token_to_piece(prev, tok);
            prev = tok;
            const bool stop = callback && callback(tok, piece.data(), piece.size(), user_data) != 0;
            const bool was_full = full();
            if (!was_full) {
                batch b;
                b.n_tokens = 1;
                b.token = &tok;
                b.seq = &s;
                timed_decode(ctx, b);
                logits = c.batch_logits(0);
            }
            if (stop) fail(GLOAS_ERR_CANCELLED, "gloas_generate: stopped by the token callback");
            if (was_full) break;
        }
    });
}

int32_t gloas_seq_n_tokens(const gloas_context * ctx, gloas_seq_id seq) {
    if (!ctx || seq < 0 || seq >= ctx->ctx->n_seq_max()) return 0;
    return ctx->ctx->seq_n_past(seq);
}

gloas_status gloas_seq_remove(gloas_context * ctx, gloas_seq_id seq) {
    if (!ctx) return record(nullptr, {GLOAS_ERR_INVALID_ARG, "gloas_seq_remove: ctx is NULL"});
    return guard(ctx, GLOAS_ERR_INVALID_ARG, [&] {
        check_seq(ctx, seq);
        ctx->ctx->seq_clear(seq);
        ctx->last_row[size_t(seq)] = -1;
    });
}

gloas_status gloas_seq_fork(gloas_context * ctx, gloas_seq_id src, gloas_seq_id dst) {
    if (!ctx) return record(nullptr, {GLOAS_ERR_INVALID_ARG, "gloas_seq_fork: ctx is NULL"});
    return guard(ctx, GLOAS_ERR_INVALID_ARG, [&] {
        check_seq(ctx, src);
        check_seq(ctx, dst);
        const double t0 = now_s();
        try {
            ctx->ctx->seq_fork(src, dst);
        } catch (...) {
            note_logits(ctx, nullptr);
            throw;
        }
        ctx->eval_seconds += now_s() - t0;
        note_logits(ctx, nullptr, dst);
    });
}

int32_t gloas_seq_n_shared_pages(const gloas_context * ctx, gloas_seq_id seq) {
    if (!ctx || seq < 0 || seq >= ctx->ctx->n_seq_max()) return 0;
    return ctx->ctx->seq_n_shared_pages(seq);
}

gloas_status gloas_seq_save(gloas_context * ctx, gloas_seq_id seq, const char * path) {
    if (!ctx) return record(nullptr, {GLOAS_ERR_INVALID_ARG, "gloas_seq_save: ctx is NULL"});
    return guard(ctx, GLOAS_ERR_INVALID_ARG, [&] {
        need(path != nullptr, "gloas_seq_save: path is NULL");
        check_seq(ctx, seq);
        const std::vector<int32_t> & toks = ctx->ctx->seq_tokens(seq);
        const uint64_t fp = ctx->model->m->fingerprint;
        const int32_t n = int32_t(toks.size());
        FILE * f = std::fopen(path, "wb");
        if (!f) fail(GLOAS_ERR_IO, format("%s: cannot create: %s", path, std::strerror(errno)));
        bool ok = std::fwrite(SEQ_MAGIC, 1, 4, f) == 4 && std::fwrite(&SEQ_VERSION, 4, 1, f) == 1 &&
                  std::fwrite(&fp, 8, 1, f) == 1 && std::fwrite(&n, 4, 1, f) == 1 &&
                  (n == 0 || std::fwrite(toks.data(), 4, size_t(n), f) == size_t(n));
        ok = (std::fclose(f) == 0) && ok;
        if (!ok) fail(GLOAS_ERR_IO, format("%s: write failed: %s", path, std::strerror(errno)));
    });
}

gloas_status gloas_seq_restore(gloas_context * ctx, gloas_seq_id seq, const char * path) {
    if (!ctx) return record(nullptr, {GLOAS_ERR_INVALID_ARG, "gloas_seq_restore: ctx is NULL"});
    return guard(ctx, GLOAS_ERR_INVALID_ARG, [&] {
        need(path != nullptr, "gloas_seq_restore: path is NULL");
        check_seq(ctx, seq);
        FILE * f = std::fopen(path, "rb");
        if (!f) fail(GLOAS_ERR_IO, format("%s: cannot open: %s", path, std::strerror(errno)));
        std::unique_ptr<FILE, int (*)(FILE *)> guard_f(f, std::fclose);
        char magic[4];
        uint32_t version = 0;
        uint64_t fp = 0;
        int32_t n = -1;
        if (std::fread(magic, 1, 4, f) != 4 || std::memcmp(magic, SEQ_MAGIC, 4) != 0)
            fail(GLOAS_ERR_FORMAT, format("%s: not a gloas sequence file (bad magic)", path));
        if (std::fread(&version, 4, 1, f) != 1 || version != SEQ_VERSION)
            fail(GLOAS_ERR_FORMAT, format("%s: sequence file version %u, expected %u", path, version, SEQ_VERSION));
        if (std::fread(&fp, 8, 1, f) != 1 || fp != ctx->model->m->fingerprint)
            fail(GLOAS_ERR_FORMAT, format("%s: the sequence was saved with another model", path));
        if (std::fread(&n, 4, 1, f) != 1 || n < 0)
            fail(GLOAS_ERR_FORMAT, format("%s: bad token count", path));
        if (n > ctx->ctx->n_ctx())
            fail(GLOAS_ERR_CONTEXT_FULL, format("%s: %d tokens do not fit in a context of %d", path, n, ctx->ctx->n_ctx()));
        std::vector<int32_t> toks(static_cast<size_t>(n));
        if (n && std::fread(toks.data(), 4, size_t(n), f) != size_t(n))
            fail(GLOAS_ERR_FORMAT, format("%s: truncated: %d token ids expected", path, n));
        for (int32_t t : toks)
            if (t < 0 || t >= ctx->model->m->hp.n_vocab)
                fail(GLOAS_ERR_FORMAT, format("%s: token id %d is out of range", path, t));
        const double t0 = now_s();
        try {
            ctx->ctx->seq_restore(seq, toks.data(), n);
        } catch (...) {
            note_logits(ctx, nullptr);
            throw;
        }
        ctx->eval_seconds += now_s() - t0;
        note_logits(ctx, nullptr, seq);
    });
}

gloas_status gloas_get_metrics(gloas_context * ctx, gloas_metrics * out) {
    if (!ctx) return record(nullptr, {GLOAS_ERR_INVALID_ARG, "gloas_get_metrics: ctx is NULL"});
    return guard(ctx, GLOAS_ERR_INVALID_ARG, [&] {
        need(out != nullptr, "gloas_get_metrics: out is NULL");
        const size_t size = out->size;
        check_size<gloas_metrics>(size, METRICS_MIN, "gloas_get_metrics: out");
        context & c = *ctx->ctx;
        kv_store & st = c.store();
        st.flush();
        const kv_metrics & km = st.metrics();
        gloas_metrics all = zeroed<gloas_metrics>();
#define GLOAS_COPY(f) all.f = km.f;  // the store's counters, by name
        GLOAS_COPY(pages_hit) GLOAS_COPY(pages_missed) GLOAS_COPY(tokens_reused) GLOAS_COPY(pages_written)
        GLOAS_COPY(pages_evicted) GLOAS_COPY(pages_compressed) GLOAS_COPY(pages_corrupt)
#undef GLOAS_COPY
        all.hit_rate = km.hit_rate();
        all.kv_bytes_per_token = double(st.page_bytes()) / double(st.geometry().page_tokens);
        all.kv_store_bytes = st.stored_bytes();
        all.kv_file_bytes = st.persistent() ? st.file_bytes() : 0;
        for (int32_t s = 0; s < c.n_seq_max(); ++s) {
            all.kv_ram_bytes += c.seq_kv(s).ram_bytes();
            all.shared_pages += uint64_t(c.seq_n_shared_pages(s));
        }
        all.tokens_evaluated = ctx->tokens_evaluated;
        all.decode_calls = ctx->decode_calls;
        all.eval_seconds = ctx->eval_seconds;
        all.size = size;
        std::memcpy(static_cast<void *>(out), &all, size);  // the fields the caller's size covers
    });
}

} // extern "C"
