/* gloas: the plain C API (C99; no C++ type, exception or header crosses it).
 *
 * Usage:
 *   gloas_model_params mp = gloas_model_default_params();
 *   gloas_status st;
 *   gloas_model * m = gloas_model_load("stories260K.bin", &mp, &st);
 *   if (!m) { fprintf(stderr, "%s\n", gloas_last_error(NULL)); ... }
 *   gloas_context_params cp = gloas_context_default_params();
 *   gloas_context * ctx = gloas_context_new(m, &cp);
 *   ... gloas_tokenize / gloas_decode / gloas_get_logits / gloas_sampler_sample,
 *       or gloas_generate with a token callback ...
 *   gloas_context_free(ctx);
 *   gloas_model_free(m);
 * Build: `pkg-config --cflags --libs gloas` (shared library), or with
 * `--static` for libgloas.a (adds the C++ runtime, OpenMP and xxhash), or
 * CMake's find_package(gloas) -> gloas::gloas / gloas::gloas-static.
 *
 * ABI: handles are opaque and enum values never change. Every params struct,
 * and gloas_metrics, begins with `size_t size`: the struct's size as the
 * program's copy of this header declares it. Fields are only ever appended,
 * never reordered, removed or retyped. *_default_params() are inline here, so
 * they record the size this program was compiled with, and fill every field
 * with its default (given beside each field below). The library reads only
 * the fields a struct's size covers and gives the others their defaults: a
 * program built against an older gloas.h runs unchanged on a newer library.
 * A size below the first layout (gloas 0.2.0: the whole struct, or up to the
 * line that marks its end), or above the library's own (a program built
 * against a newer gloas.h than the library it runs with), is refused with
 * GLOAS_ERR_INVALID_ARG; so is a size never set (0). Bindings that cannot call
 * inline functions call gloas_*_params_init(&p, sizeof p). Start from the
 * defaults and change fields: a struct written out by hand gets 0 in fields it
 * does not name, whatever their default. gloas_batch and gloas_token_callback
 * are fixed: they never change. The soname changes when the ABI does
 * (libgloas.so.0.2 for 0.2.x).
 *
 * Errors: every fallible call returns a gloas_status (or NULL for a handle)
 * and records a message naming the file or argument at fault. Read it with
 * gloas_last_error(ctx) for calls that take a context, gloas_last_error(NULL)
 * for the others (a thread-local: the last failing context-less call of the
 * calling thread; calls with a context also set it). No call aborts or throws
 * on bad input; NULL arguments are reported as GLOAS_ERR_INVALID_ARG.
 *
 * Thread safety: a gloas_model is read-only once loaded and may be shared by
 * any number of threads and contexts (tokenize, token_to_piece, detokenize,
 * the metadata calls and context_new may be called concurrently on it). A
 * gloas_context, and a gloas_sampler, is used by one thread at a time. The CPU
 * thread count is process-wide (the last n_threads set wins).
 *
 * Sequences: a context holds n_seq_max sequences (ids 0 .. n_seq_max-1) on one
 * K/V store of pages. Sequences whose tokens share a prefix share its sealed
 * pages (found through the store's prefix index). gloas_decode evaluates the
 * tokens of several sequences in one forward pass (each weight read once per
 * chunk of n_ubatch tokens). */
#ifndef GLOAS_H
#define GLOAS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define GLOAS_API __declspec(dllexport)
#elif defined(__GNUC__)
#define GLOAS_API __attribute__((visibility("default")))
#else
#define GLOAS_API
#endif

/* Defines gloas_NAME_default_params(): a gloas_NAME_params with this header's
 * size and every field at its default, from gloas_NAME_params_init (see
 * "ABI"). Inline, so the size recorded is the one this program was compiled
 * with. */
#define GLOAS_DEFAULT_PARAMS(NAME)                                               \
    static inline gloas_##NAME##_params gloas_##NAME##_default_params(void) {    \
        gloas_##NAME##_params p;                                                 \
        p.size = 0;                                                              \
        gloas_##NAME##_params_init(&p, sizeof p);                                \
        return p;                                                                \
    }

typedef struct gloas_model gloas_model;
typedef struct gloas_context gloas_context;
typedef struct gloas_sampler gloas_sampler;

typedef int32_t gloas_token;
typedef int32_t gloas_pos;
typedef int32_t gloas_seq_id;

typedef enum gloas_status {
    GLOAS_OK = 0,
    GLOAS_ERR_IO = 1,             /* a file could not be opened, read or written */
    GLOAS_ERR_FORMAT = 2,         /* a file is not what it should be (bad model, bad sequence file) */
    GLOAS_ERR_INVALID_ARG = 3,    /* NULL, out of range, bad token id, buffer too small, ... */
    GLOAS_ERR_CONTEXT_FULL = 4,   /* positions would go past n_ctx; nothing was changed */
    GLOAS_ERR_OOM = 5,
    GLOAS_ERR_CANCELLED = 6,      /* the token callback asked to stop */
    GLOAS_ERR_INTERNAL = 7
} gloas_status;

/* K/V page element types. */
enum {
    GLOAS_KV_F32 = 0,
    GLOAS_KV_F16 = 1,
    GLOAS_KV_Q8_0 = 2,
    GLOAS_KV_Q4_0 = 3,
    GLOAS_KV_Q4_KIVI = 4  /* 4-bit: keys per channel with a minimum, values as Q4_0 */
};

/* Eviction policies of the K/V store. */
enum {
    GLOAS_EVICT_LRU = 0,
    GLOAS_EVICT_LFU = 1,
    GLOAS_EVICT_FIFO = 2,
    GLOAS_EVICT_ADAPTIVE = 3,
    GLOAS_EVICT_COMPRESSED = 4
};

/* The library's version, "MAJOR.MINOR.PATCH" (CMake's project version). */
GLOAS_API const char * gloas_version(void);

/* Name of a status ("GLOAS_OK", ...). Never NULL. */
GLOAS_API const char * gloas_status_name(gloas_status st);

/* The message of the last failure (see "Errors" above); "" if none. The
 * string stays valid until the next failing call on the same context/thread. */
GLOAS_API const char * gloas_last_error(const gloas_context * ctx);

/* ---- model ---- */

typedef struct gloas_model_params {
    size_t size;                  /* sizeof(gloas_model_params); see "ABI" above */
    const char * tokenizer_path;  /* llama2.c checkpoints: their tokenizer.bin. Default NULL:
                                     tok<n_vocab>.bin, then tokenizer.bin, beside the model */
    int32_t n_threads;            /* CPU threads (process-wide). Default 0: keep the current
                                     setting (all hardware threads unless set before) */
} gloas_model_params;

/* Sets params->size = size and every field the size covers to its default.
 * GLOAS_ERR_INVALID_ARG for a NULL params or a size this library does not
 * take (see "ABI"); then nothing is written. */
GLOAS_API gloas_status gloas_model_params_init(gloas_model_params * params, size_t size);
GLOAS_DEFAULT_PARAMS(model) /* gloas_model_default_params() */

/* Loads a GGUF file or a llama2.c checkpoint. Returns NULL on failure with
 * *status (if status is not NULL) GLOAS_ERR_IO (cannot open/read),
 * GLOAS_ERR_FORMAT (not a usable model), GLOAS_ERR_INVALID_ARG or
 * GLOAS_ERR_OOM; params may be NULL (defaults). */
GLOAS_API gloas_model * gloas_model_load(const char * path, const gloas_model_params * params, gloas_status * status);
GLOAS_API void gloas_model_free(gloas_model * model);  /* NULL is fine; free contexts first */

/* Metadata. For a NULL model: 0, "" or NULL. Strings live as long as the model. */
GLOAS_API const char * gloas_model_name(const gloas_model * model);  /* GGUF general.name, else the file name */
GLOAS_API const char * gloas_model_arch(const gloas_model * model);  /* general.architecture: "llama", "qwen2"
                                                                         ("llama" for llama2.c checkpoints) */
GLOAS_API int32_t gloas_model_n_vocab(const gloas_model * model);     /* tokens in the vocabulary */
GLOAS_API int32_t gloas_model_n_ctx_train(const gloas_model * model); /* context length it was trained with */
GLOAS_API int32_t gloas_model_n_layer(const gloas_model * model);
GLOAS_API int32_t gloas_model_n_embd(const gloas_model * model);      /* model width */
GLOAS_API uint64_t gloas_model_n_params(const gloas_model * model);   /* weight values */
GLOAS_API uint64_t gloas_model_size(const gloas_model * model);       /* bytes of the weights as stored */
/* The GGUF's tokenizer.chat_template (Jinja text); NULL when the file has none
 * (llama2.c checkpoints never do). */
GLOAS_API const char * gloas_model_chat_template(const gloas_model * model);
GLOAS_API gloas_token gloas_token_bos(const gloas_model * model);
GLOAS_API gloas_token gloas_token_eos(const gloas_model * model);
/* Non-zero for end-of-generation tokens (eos, end of turn). */
GLOAS_API int gloas_token_is_eog(const gloas_model * model, gloas_token token);

/* ---- tokenizer ---- */

/* Encodes text[0..len) (len < 0: up to the terminating NUL). Writes at most
 * max tokens; *n_tokens gets the count needed. If max is too small, returns
 * GLOAS_ERR_INVALID_ARG with *n_tokens set, so the caller can retry. */
GLOAS_API gloas_status gloas_tokenize(const gloas_model * model, const char * text, int32_t len, int add_bos,
                                      gloas_token * tokens_out, int32_t max, int32_t * n_tokens);

/* The text of `token` following `prev` (-1: none; SentencePiece drops the
 * leading space after BOS). Writes at most buf_size bytes, NUL-terminated when
 * room is left; *len gets the byte length of the piece (without NUL). If
 * buf_size <= length, returns GLOAS_ERR_INVALID_ARG with *len set. The piece
 * of a byte-fallback token may be an incomplete UTF-8 sequence. */
GLOAS_API gloas_status gloas_token_to_piece(const gloas_model * model, gloas_token prev, gloas_token token,
                                            char * buf, size_t buf_size, size_t * len);

/* The text of tokens[0..n), as gloas_token_to_piece would give piece by piece;
 * the same buffer contract. */
GLOAS_API gloas_status gloas_detokenize(const gloas_model * model, const gloas_token * tokens, int32_t n,
                                        char * buf, size_t buf_size, size_t * len);

/* ---- context ---- */

/* Defaults after each field. */
typedef struct gloas_context_params {
    size_t size;                /* sizeof(gloas_context_params); see "ABI" above */
    int32_t n_ctx;              /* positions per sequence. 0: the model's training context */
    int32_t n_ubatch;           /* tokens per forward pass (chunk); activation memory grows with
                                   it. 512 */
    int32_t n_threads;          /* CPU threads (process-wide). 0: keep the current setting (all
                                   hardware threads unless set before) */
    int32_t n_seq_max;          /* sequences the context holds. 1 */
    int32_t kv_type;            /* element type of the K/V pages, GLOAS_KV_*. GLOAS_KV_F16 */
    int32_t kv_page_tokens;     /* positions per K/V page (the unit of reuse and sharing). 32 */
    const char * kv_dir;        /* folder of page files reused across runs and processes.
                                   NULL (or ""): pages live in memory only. A folder that
                                   cannot be created or used makes gloas_context_new
                                   return NULL; a disk that fills up later only keeps new
                                   pages in memory */
    uint64_t kv_capacity_bytes; /* bound on the bytes of stored pages; past it the policy
                                   evicts. 4 GiB (4 << 30) */
    int32_t kv_policy;          /* eviction policy, GLOAS_EVICT_*. GLOAS_EVICT_LRU */
    float sparse_ratio;         /* share of pages a decoded token attends to. 1: dense */
    int32_t ctx_slide;          /* non-zero: a sequence reaching n_ctx positions keeps its first
                                   K/V page and slides a window over the latest ones
                                   (StreamingLLM) instead of failing with CONTEXT_FULL;
                                   n_ctx must hold the sink page and two more pages;
                                   gloas_seq_restore still takes at most n_ctx tokens. 0: off */
    /* ---- the first layout ends here: a struct that ends here is accepted, the fields
       below taking their defaults ---- */
    uint64_t kv_ram_bytes;      /* with kv_dir: bound on the page-file bytes mapped in RAM; the
                                   least recently read pages are unmapped past it (the file
                                   keeps them). 0: unbounded */
    int32_t n_gpu_layers;       /* layers on the GPU (the CUDA backend), as the tools' -ngl:
                                   0 none; any other value runs the whole forward pass there
                                   (no partial offload yet). Above 0 the GPU is required:
                                   gloas_context_new returns NULL with the reason (no device,
                                   too little memory, a build without CUDA) when it cannot
                                   run it. -1: the GPU when it can, else the CPU, said once
                                   on stderr. 0 */
    int32_t gpu_device;         /* the CUDA device the GPU layers run on, by index (the tools'
                                   --device); one that is not there is the same as no GPU. 0 */
} gloas_context_params;

/* As gloas_model_params_init, for context params. */
GLOAS_API gloas_status gloas_context_params_init(gloas_context_params * params, size_t size);
GLOAS_DEFAULT_PARAMS(context) /* gloas_context_default_params() */

/* Returns NULL on failure (message in gloas_last_error(NULL)). params may be
 * NULL (defaults). The model must outlive the context. */
GLOAS_API gloas_context * gloas_context_new(const gloas_model * model, const gloas_context_params * params);
GLOAS_API void gloas_context_free(gloas_context * ctx);  /* NULL is fine */

GLOAS_API int32_t gloas_n_ctx(const gloas_context * ctx);
GLOAS_API int32_t gloas_n_seq_max(const gloas_context * ctx);

/* ---- decoding ---- */

/* Tokens of one or several sequences to evaluate together.
 * token: (n_tokens) ids; pos: (n_tokens) positions, or NULL (each token
 * continues its sequence); seq_id: (n_tokens), or NULL (all sequence 0);
 * logits: (n_tokens) non-zero where that token's logits are wanted, or NULL
 * (only the last token's).
 * Rules: the tokens of one sequence are contiguous in the batch, at
 * consecutive positions starting where the sequence ends (gloas_seq_n_tokens).
 * A sequence that is empty before the batch first reuses the leading pages of
 * its tokens found in the K/V store (never past its first token whose logits
 * are wanted). */
typedef struct gloas_batch {
    int32_t n_tokens;
    const gloas_token * token;
    const gloas_pos * pos;
    const gloas_seq_id * seq_id;
    const int8_t * logits;
} gloas_batch;

/* Evaluates a batch in one forward pass per n_ubatch chunk. On any error
 * (bad token id, sequence id or position: GLOAS_ERR_INVALID_ARG; past n_ctx:
 * GLOAS_ERR_CONTEXT_FULL) nothing is changed. */
GLOAS_API gloas_status gloas_decode(gloas_context * ctx, const gloas_batch * batch);

/* Logits (n_vocab floats) of token i of the last gloas_decode (i = -1: its
 * last token), valid until the next decode on ctx. NULL (with a message) if
 * those logits were not asked for. */
GLOAS_API const float * gloas_get_logits(gloas_context * ctx, int32_t i);

/* ---- sampling ---- */

#define GLOAS_SEED_RANDOM 0xFFFFFFFFFFFFFFFFull

/* Defaults after each field. */
typedef struct gloas_sampler_params {
    size_t size;           /* sizeof(gloas_sampler_params); see "ABI" above */
    float temp;            /* temperature; <= 0: greedy (argmax, lowest id on ties). 0.8 */
    int32_t top_k;         /* keep the k likeliest tokens; <= 0: off. 40 */
    float top_p;           /* keep the likeliest tokens whose probabilities sum to p; 1: off. 0.95 */
    float min_p;           /* drop tokens below min_p times the likeliest's probability;
                              0: off. 0 */
    float repeat_penalty;  /* divides the logits (multiplies the negative ones) of recent
                              tokens; 1: off. 1 */
    int32_t repeat_last_n; /* tokens the penalty looks back over. 64 */
    uint64_t seed;         /* GLOAS_SEED_RANDOM: from the clock. GLOAS_SEED_RANDOM */
} gloas_sampler_params;

/* As gloas_model_params_init, for sampler params. */
GLOAS_API gloas_status gloas_sampler_params_init(gloas_sampler_params * params, size_t size);
GLOAS_DEFAULT_PARAMS(sampler) /* gloas_sampler_default_params() */
/* Steps in llama.cpp's order: repetition penalty, top-k, top-p, min-p,
 * temperature, draw. Returns NULL for rejected parameters (NaN temperature,
 * penalty <= 0, ...), message in gloas_last_error(NULL). */
GLOAS_API gloas_sampler * gloas_sampler_new(const gloas_sampler_params * params);
GLOAS_API void gloas_sampler_free(gloas_sampler * s);  /* NULL is fine */
/* Samples from the logits of token i of ctx's last decode (i = -1: the last
 * token). Returns the token id, or -1 on error (message on ctx). Does not
 * accept the token. */
GLOAS_API gloas_token gloas_sampler_sample(gloas_sampler * s, gloas_context * ctx, int32_t i);
/* Remembers a token (prompt or generated) for the repetition penalty. */
GLOAS_API gloas_status gloas_sampler_accept(gloas_sampler * s, gloas_token token);
/* Forgets accepted tokens and restarts the generator from the seed. */
GLOAS_API void gloas_sampler_reset(gloas_sampler * s);

/* ---- generation ---- */

/* Called for each generated token with its text (not NUL-terminated). Return
 * 0 to go on, non-zero to stop (gloas_generate then returns
 * GLOAS_ERR_CANCELLED). */
typedef int (*gloas_token_callback)(gloas_token token, const char * piece, size_t piece_len, void * user_data);

/* Defaults after each field. */
typedef struct gloas_generate_params {
    size_t size;                            /* sizeof(gloas_generate_params); see "ABI" above */
    int32_t n_predict;                      /* tokens to sample at most. 128 */
    const gloas_sampler_params * sampling;  /* how to sample (copied at each call). NULL: greedy */
    gloas_seq_id seq_id;                    /* the sequence to extend. 0 */
    int32_t add_bos;                        /* non-zero: prepend BOS to the prompt when the
                                               sequence is empty. 1 */
    int32_t ignore_eos;                     /* non-zero: keep going past end-of-generation
                                               tokens. 0 */
    int32_t * n_generated;                  /* if not NULL: receives the count of tokens
                                               sampled. NULL */
} gloas_generate_params;

/* As gloas_model_params_init, for generate params. */
GLOAS_API gloas_status gloas_generate_params_init(gloas_generate_params * params, size_t size);
GLOAS_DEFAULT_PARAMS(generate) /* gloas_generate_default_params() */

/* Appends the prompt's tokens to sequence seq_id (an empty sequence first
 * reuses stored pages of the prompt), then samples up to n_predict tokens,
 * calling callback (may be NULL) for each and appending each to the sequence.
 * Stops, returning GLOAS_OK, after n_predict tokens, at an end-of-generation
 * token (neither passed to the callback, as the CLI does, nor appended) or
 * when the context is full (the token that found it full is passed to the
 * callback but not appended). So the sequence holds its earlier tokens, the
 * prompt and every token passed to the callback, and a later call with an
 * empty prompt ("" or NULL) continues it exactly where this one stopped: two
 * calls of n tokens give the tokens of one call of 2n. An empty prompt on an
 * empty sequence starts from BOS (as llama.cpp does with no prompt). A prompt
 * that does not fit returns GLOAS_ERR_CONTEXT_FULL with nothing changed, as
 * does an empty prompt on a full sequence. When the callback stops the
 * generation, the token it was given is appended too. Each call starts its own
 * sampler from params->sampling (its seed included); the repetition penalty
 * looks back over the sequence's tokens. */
GLOAS_API gloas_status gloas_generate(gloas_context * ctx, const char * prompt, const gloas_generate_params * params,
                                      gloas_token_callback callback, void * user_data);

/* ---- sequences ---- */

GLOAS_API int32_t gloas_seq_n_tokens(const gloas_context * ctx, gloas_seq_id seq);
/* Forgets a sequence; its pages go back to the store (and stay findable by
 * prefix while not evicted). */
GLOAS_API gloas_status gloas_seq_remove(gloas_context * ctx, gloas_seq_id seq);
/* Makes dst (cleared first) a copy of src: dst references the same sealed
 * pages as src (shared, reference counted in the store); only the positions of
 * src's last, still open page are computed again. */
GLOAS_API gloas_status gloas_seq_fork(gloas_context * ctx, gloas_seq_id src, gloas_seq_id dst);
/* Pages of seq that another sequence of ctx shares. */
GLOAS_API int32_t gloas_seq_n_shared_pages(const gloas_context * ctx, gloas_seq_id seq);
/* Writes a sequence's token ids (and the model's fingerprint) to path. The K/V
 * values are not written: they live in the store's pages. */
GLOAS_API gloas_status gloas_seq_save(gloas_context * ctx, gloas_seq_id seq, const char * path);
/* Reads a file from gloas_seq_save into seq (cleared first). Its leading full
 * pages are taken from the K/V store through the prefix index (from this
 * context's memory, or from the page file of an earlier run when kv_dir is
 * set); only the rest is computed. GLOAS_ERR_FORMAT for a file of another
 * model or a damaged one. */
GLOAS_API gloas_status gloas_seq_restore(gloas_context * ctx, gloas_seq_id seq, const char * path);

/* ---- metrics ---- */

/* Counters of a context. Set `size` before the call (gloas_metrics m;
 * m.size = sizeof m;): the library fills the fields that size covers (those
 * of the caller's gloas.h) and writes nothing past it. */
typedef struct gloas_metrics {
    size_t size;                 /* sizeof(gloas_metrics); see "ABI" above */
    uint64_t pages_hit;          /* prompt pages found in the store */
    uint64_t pages_missed;       /* full prompt pages computed */
    uint64_t tokens_reused;      /* prefill positions skipped thanks to hits */
    uint64_t pages_written;      /* pages published to the store */
    uint64_t pages_evicted;
    uint64_t pages_compressed;
    uint64_t pages_corrupt;      /* failed their checksum: recomputed */
    double   hit_rate;           /* pages_hit / (pages_hit + pages_missed) */
    double   kv_bytes_per_token; /* stored K/V bytes per position */
    uint64_t kv_store_bytes;     /* bytes of the pages in the store */
    uint64_t kv_file_bytes;      /* bytes of the page file on disk (0: memory only) */
    uint64_t kv_ram_bytes;       /* private K/V RAM of the context's sequences */
    uint64_t shared_pages;       /* pages held by more than one sequence of the context, counted per holder */
    uint64_t tokens_evaluated;   /* tokens that went through the forward pass */
    uint64_t decode_calls;       /* gloas_decode calls (gloas_generate's included) */
    double   eval_seconds;       /* wall time spent in forward passes */
} gloas_metrics;

/* GLOAS_ERR_INVALID_ARG for a NULL out or a size the library does not take. */
GLOAS_API gloas_status gloas_get_metrics(gloas_context * ctx, gloas_metrics * out);

#ifdef __cplusplus
}
#endif

#endif /* GLOAS_H */
