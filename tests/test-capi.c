/* The C API from plain C: greedy generation against llama2.c's golden text
 * (from a prompt, from nothing, and continued over several calls), batched
 * sequences against single ones, fork and save/restore sharing pages, the
 * params structs' size rule and documented defaults, version and model
 * metadata, and every error path returning a status with a message.
 * A tiny runner: each test_* function counts its failed checks; main prints
 * "N passed, N failed" and returns non-zero on any failure, or 77 (ctest:
 * skipped) when the model is not there. Goldens: tests/data/golden/. */
#define _POSIX_C_SOURCE 200809L
#include "gloas.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int g_checks_failed = 0;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            ++g_checks_failed;                                                       \
        }                                                                            \
    } while (0)

/* A status check that also requires a message for every failure. */
#define CHECK_STATUS(expr, want, ctx)                                                              \
    do {                                                                                           \
        gloas_status st_ = (expr);                                                                 \
        if (st_ != (want)) {                                                                       \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s (%s)\n", __FILE__, __LINE__, #expr, \
                    gloas_status_name(st_), gloas_status_name(want), gloas_last_error(ctx));       \
            ++g_checks_failed;                                                                     \
        } else if ((want) != GLOAS_OK && gloas_last_error(ctx)[0] == '\0') {                       \
            fprintf(stderr, "%s:%d: %s failed without a message\n", __FILE__, __LINE__, #expr);   \
            ++g_checks_failed;                                                                     \
        }                                                                                          \
    } while (0)

static char g_model_path[4096];
static gloas_model * g_model = NULL;

/* Finds models/NAME as the tools do: <source>/models, $GLOAS_MODELS, then
 * <source>/../shared/models. Writes the path to out; 0 if not found. */
static int find_model(const char * name, char * out, size_t size) {
    const char * env = getenv("GLOAS_MODELS");
    const char * dirs[3];
    char src_models[4096], shared_models[4096];
    int i;
    snprintf(src_models, sizeof src_models, "%.4000s/models", GLOAS_SOURCE_DIR);
    snprintf(shared_models, sizeof shared_models, "%.4000s/../shared/models", GLOAS_SOURCE_DIR);
    dirs[0] = src_models;
    dirs[1] = env && env[0] ? env : NULL;
    dirs[2] = shared_models;
    for (i = 0; i < 3; ++i) {
        if (!dirs[i]) continue;
        snprintf(out, size, "%.2000s/%.1000s", dirs[i], name);
        if (access(out, R_OK) == 0) return 1;
    }
    return 0;
}

/* tests/data/golden/NAME */
static void golden_path(const char * name, char * out, size_t size) {
    snprintf(out, size, "%.3000s/tests/data/golden/%.500s", GLOAS_SOURCE_DIR, name);
}

static char * read_text(const char * path) {
    FILE * f = fopen(path, "rb");
    long n;
    char * s;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    s = (char *) malloc((size_t) n + 1);
    if (s && fread(s, 1, (size_t) n, f) != (size_t) n) n = 0;
    if (s) s[n] = '\0';
    fclose(f);
    return s;
}

static gloas_context * new_ctx(int32_t n_seq, int32_t n_ctx) {
    gloas_context_params cp = gloas_context_default_params();
    cp.kv_type = GLOAS_KV_F32;
    cp.kv_dir = NULL;
    cp.n_seq_max = n_seq;
    cp.n_ctx = n_ctx;
    return gloas_context_new(g_model, &cp);
}

/* ---- greedy generation equals llama2.c ---- */

struct text_buf {
    char s[8192];
    size_t n;
};

static void append(struct text_buf * b, const char * p, size_t n) {
    if (b->n + n < sizeof b->s) {
        memcpy(b->s + b->n, p, n);
        b->n += n;
        b->s[b->n] = '\0';
    }
}

static int on_token(gloas_token token, const char * piece, size_t len, void * user) {
    (void) token;
    append((struct text_buf *) user, piece, len);
    return 0;
}

/* Compares text with tests/data/golden/NAME (without its final newlines). */
static void check_golden(const char * text, const char * name) {
    char path[4200];
    char * golden;
    golden_path(name, path, sizeof path);
    golden = read_text(path);
    CHECK(golden != NULL);
    if (!golden) {
        fprintf(stderr, "cannot read %s\n", path);
        return;
    }
    {
        size_t gl = strlen(golden);
        while (gl && golden[gl - 1] == '\n') golden[--gl] = '\0';
    }
    CHECK(strcmp(text, golden) == 0);
    if (strcmp(text, golden) != 0) fprintf(stderr, "got:\n%s\nexpected (%s):\n%s\n", text, name, golden);
    free(golden);
}

static int stop_after_two(gloas_token token, const char * piece, size_t len, void * user) {
    int * count = (int *) user;
    (void) token;
    (void) piece;
    (void) len;
    return ++*count >= 2;
}

static void test_golden(void) {
    static struct text_buf out;
    const char * prompt = "Once upon a time";
    gloas_token toks[64];
    int32_t n = 0, i, n_gen = -1;
    char piece[64];
    size_t len;
    gloas_generate_params gp = gloas_generate_default_params();
    gloas_context * ctx = new_ctx(1, 0);
    CHECK(ctx != NULL);
    if (!ctx) return;
    out.n = 0;
    out.s[0] = '\0';
    /* The prompt is echoed as llama2.c prints it: every piece after BOS. */
    CHECK_STATUS(gloas_tokenize(g_model, prompt, -1, 1, toks, 64, &n), GLOAS_OK, NULL);
    CHECK(n == 5);
    for (i = 1; i < n; ++i) {
        CHECK_STATUS(gloas_token_to_piece(g_model, toks[i - 1], toks[i], piece, sizeof piece, &len), GLOAS_OK, NULL);
        append(&out, piece, len);
    }
    /* llama2.c's -n 128 counts positions: 5 prompt tokens + 124 sampled. */
    gp.n_predict = 128 - n + 1;
    gp.n_generated = &n_gen;
    CHECK_STATUS(gloas_generate(ctx, prompt, &gp, on_token, &out), GLOAS_OK, ctx);
    CHECK(n_gen == 124);
    check_golden(out.s, "stories260K_greedy_n128_once_upon_a_time.txt");
    gloas_context_free(ctx);
}

/* ---- an empty prompt: from BOS on an empty sequence, else a continuation ---- */

/* The prompt as llama2.c echoes it: every piece after BOS. */
static void echo_prompt(struct text_buf * out, const char * prompt) {
    gloas_token toks[64];
    int32_t n = 0, i;
    char piece[64];
    size_t len;
    CHECK_STATUS(gloas_tokenize(g_model, prompt, -1, 1, toks, 64, &n), GLOAS_OK, NULL);
    for (i = 1; i < n; ++i) {
        CHECK_STATUS(gloas_token_to_piece(g_model, toks[i - 1], toks[i], piece, sizeof piece, &len), GLOAS_OK, NULL);
        append(out, piece, len);
    }
}

/* out: "Once upon a time" as echoed, then the 40 tokens generated after it. */
static void once_upon_40(gloas_context * ctx, gloas_generate_params * gp, struct text_buf * out) {
    out->n = 0;
    out->s[0] = '\0';
    echo_prompt(out, "Once upon a time");
    gp->n_predict = 40;
    CHECK_STATUS(gloas_generate(ctx, "Once upon a time", gp, on_token, out), GLOAS_OK, ctx);
}

static void test_empty_prompt(void) {
    static struct text_buf out;
    gloas_generate_params gp = gloas_generate_default_params();
    gloas_context * ctx = new_ctx(2, 0);
    int32_t n_gen = 0, total = 0, n_before;
    int count = 0;
    CHECK(ctx != NULL);
    if (!ctx) return;
    gp.n_generated = &n_gen;

    /* Nothing to continue from: generation starts at BOS, as llama2.c's run.c
     * does with no prompt (-n 200: 200 positions, each sampling a token). */
    out.n = 0;
    out.s[0] = '\0';
    gp.n_predict = 200;
    CHECK_STATUS(gloas_generate(ctx, "", &gp, on_token, &out), GLOAS_OK, ctx);
    check_golden(out.s, "stories260K_greedy_n200_noprompt.txt");
    CHECK_STATUS(gloas_seq_remove(ctx, 0), GLOAS_OK, ctx);

    /* A prompt, then continuations with "" and NULL: three calls give the
     * tokens of one (golden: 5 prompt positions + 124 sampled). */
    once_upon_40(ctx, &gp, &out);
    total += n_gen;
    CHECK(gloas_seq_n_tokens(ctx, 0) == 5 + 40); /* every token passed to the callback is in the sequence */
    CHECK_STATUS(gloas_generate(ctx, "", &gp, on_token, &out), GLOAS_OK, ctx);
    total += n_gen;
    gp.n_predict = 44;
    CHECK_STATUS(gloas_generate(ctx, NULL, &gp, on_token, &out), GLOAS_OK, ctx);
    total += n_gen;
    CHECK(total == 124);
    check_golden(out.s, "stories260K_greedy_n128_once_upon_a_time.txt");

    /* The same when another sequence's decode dropped sequence 0's latest
     * logits in between (they are computed again). */
    CHECK_STATUS(gloas_seq_remove(ctx, 0), GLOAS_OK, ctx);
    once_upon_40(ctx, &gp, &out);
    gp.seq_id = 1;
    gp.n_predict = 8;
    CHECK_STATUS(gloas_generate(ctx, "Tom and Lily", &gp, NULL, NULL), GLOAS_OK, ctx);
    gp.seq_id = 0;
    gp.n_predict = 84;
    CHECK_STATUS(gloas_generate(ctx, "", &gp, on_token, &out), GLOAS_OK, ctx);
    check_golden(out.s, "stories260K_greedy_n128_once_upon_a_time.txt");

    /* A callback that stops the generation: the token it saw is in the sequence. */
    n_before = gloas_seq_n_tokens(ctx, 1);
    gp.seq_id = 1;
    gp.n_predict = 8;
    gp.ignore_eos = 1;
    CHECK_STATUS(gloas_generate(ctx, "", &gp, stop_after_two, &count), GLOAS_ERR_CANCELLED, ctx);
    CHECK(count == 2);
    CHECK(gloas_seq_n_tokens(ctx, 1) == n_before + 2);
    gloas_context_free(ctx);
}

/* ---- batched sequences equal single ones ---- */

#define N_STEPS 24

/* Greedy continuation of `prompt` on its own context: N_STEPS tokens. */
static void run_single(const char * prompt, gloas_token * out, float * first_logits) {
    gloas_token toks[128];
    int32_t n = 0, step;
    gloas_batch b;
    gloas_sampler_params sp = gloas_sampler_default_params();
    gloas_sampler * smp;
    gloas_context * ctx = new_ctx(1, 0);
    sp.temp = 0.0f;
    smp = gloas_sampler_new(&sp);
    CHECK(ctx && smp);
    if (!ctx || !smp) return;
    CHECK_STATUS(gloas_tokenize(g_model, prompt, -1, 1, toks, 128, &n), GLOAS_OK, NULL);
    memset(&b, 0, sizeof b);
    b.n_tokens = n;
    b.token = toks;
    CHECK_STATUS(gloas_decode(ctx, &b), GLOAS_OK, ctx);
    memcpy(first_logits, gloas_get_logits(ctx, -1), sizeof(float) * (size_t) gloas_model_n_vocab(g_model));
    for (step = 0; step < N_STEPS; ++step) {
        out[step] = gloas_sampler_sample(smp, ctx, -1);
        b.n_tokens = 1;
        b.token = &out[step];
        CHECK_STATUS(gloas_decode(ctx, &b), GLOAS_OK, ctx);
    }
    gloas_sampler_free(smp);
    gloas_context_free(ctx);
}

static void test_batch(void) {
    const char * prompts[2] = {"Once upon a time", "Tom and Lily went to the park"};
    gloas_token single[2][N_STEPS], batched[2][N_STEPS];
    static float logits_single[2][512];
    gloas_token toks[256], step_toks[2];
    gloas_seq_id seqs[256], step_seqs[2] = {0, 1};
    int8_t want[256];
    int32_t n0 = 0, n1 = 0, i, step, s;
    gloas_batch b;
    gloas_sampler_params sp = gloas_sampler_default_params();
    gloas_sampler * smp;
    gloas_context * ctx;
    double max_diff = 0;
    const int32_t nv = gloas_model_n_vocab(g_model);

    run_single(prompts[0], single[0], logits_single[0]);
    run_single(prompts[1], single[1], logits_single[1]);

    ctx = new_ctx(2, 0);
    sp.temp = 0.0f;
    smp = gloas_sampler_new(&sp);
    CHECK(ctx && smp);
    if (!ctx || !smp) return;
    CHECK(gloas_n_seq_max(ctx) == 2);
    /* One batch with both prompts (HYBRID prefill), logits of both last tokens. */
    CHECK_STATUS(gloas_tokenize(g_model, prompts[0], -1, 1, toks, 128, &n0), GLOAS_OK, NULL);
    CHECK_STATUS(gloas_tokenize(g_model, prompts[1], -1, 1, toks + n0, 128, &n1), GLOAS_OK, NULL);
    for (i = 0; i < n0 + n1; ++i) {
        seqs[i] = i < n0 ? 0 : 1;
        want[i] = (int8_t) (i == n0 - 1 || i == n0 + n1 - 1);
    }
    memset(&b, 0, sizeof b);
    b.n_tokens = n0 + n1;
    b.token = toks;
    b.seq_id = seqs;
    b.logits = want;
    CHECK_STATUS(gloas_decode(ctx, &b), GLOAS_OK, ctx);
    CHECK(gloas_seq_n_tokens(ctx, 0) == n0);
    CHECK(gloas_seq_n_tokens(ctx, 1) == n1);
    CHECK(gloas_get_logits(ctx, 0) == NULL); /* not asked for */
    for (s = 0; s < 2; ++s) {
        const float * l = gloas_get_logits(ctx, s == 0 ? n0 - 1 : n0 + n1 - 1);
        CHECK(l != NULL);
        if (!l) return;
        for (i = 0; i < nv; ++i) {
            double d = fabs((double) l[i] - (double) logits_single[s][i]);
            if (d > max_diff) max_diff = d;
        }
    }
    CHECK(max_diff < 1e-4);
    batched[0][0] = gloas_sampler_sample(smp, ctx, n0 - 1);
    batched[1][0] = gloas_sampler_sample(smp, ctx, n0 + n1 - 1);
    /* Then one token of each sequence per batch (DECODE of two sequences). */
    for (step = 0; step < N_STEPS; ++step) {
        step_toks[0] = batched[0][step];
        step_toks[1] = batched[1][step];
        memset(&b, 0, sizeof b);
        b.n_tokens = 2;
        b.token = step_toks;
        b.seq_id = step_seqs;
        want[0] = want[1] = 1;
        b.logits = want;
        CHECK_STATUS(gloas_decode(ctx, &b), GLOAS_OK, ctx);
        if (step + 1 < N_STEPS) {
            batched[0][step + 1] = gloas_sampler_sample(smp, ctx, 0);
            batched[1][step + 1] = gloas_sampler_sample(smp, ctx, 1);
        }
    }
    CHECK(memcmp(single[0], batched[0], sizeof single[0]) == 0);
    CHECK(memcmp(single[1], batched[1], sizeof single[1]) == 0);
    CHECK(memcmp(single[0], single[1], sizeof single[0]) != 0); /* the test can tell them apart */
    gloas_sampler_free(smp);
    gloas_context_free(ctx);
}

/* ---- fork and save/restore share pages ---- */

static void test_fork_and_restore(void) {
    gloas_generate_params gp = gloas_generate_default_params();
    gloas_context * ctx = new_ctx(3, 0);
    gloas_metrics met;
    gloas_token next[3];
    gloas_sampler_params sp = gloas_sampler_default_params();
    gloas_sampler * smp;
    int32_t n, s, expect_shared;
    char path[256];
    gloas_batch b;
    sp.temp = 0.0f;
    smp = gloas_sampler_new(&sp);
    CHECK(ctx && smp);
    if (!ctx || !smp) return;
    gp.n_predict = 100; /* 5 + 100 positions: three sealed pages of 32 and an open one */
    gp.ignore_eos = 1;
    CHECK_STATUS(gloas_generate(ctx, "Once upon a time", &gp, NULL, NULL), GLOAS_OK, ctx);
    n = gloas_seq_n_tokens(ctx, 0);
    CHECK(n == 105);
    expect_shared = (n - 1) / 32;
    CHECK(gloas_seq_n_shared_pages(ctx, 0) == 0);

    CHECK_STATUS(gloas_seq_fork(ctx, 0, 1), GLOAS_OK, ctx);
    CHECK(gloas_seq_n_tokens(ctx, 1) == n);
    CHECK(gloas_seq_n_shared_pages(ctx, 1) == expect_shared);
    CHECK(gloas_seq_n_shared_pages(ctx, 0) == expect_shared);
    met.size = sizeof met;
    CHECK_STATUS(gloas_get_metrics(ctx, &met), GLOAS_OK, ctx);
    CHECK(met.shared_pages == (uint64_t) (2 * expect_shared));
    CHECK(met.pages_hit >= (uint64_t) expect_shared);
    CHECK(met.tokens_reused >= (uint64_t) (expect_shared * 32));

    /* Save sequence 0's tokens, restore them into sequence 2: pages shared again. */
    snprintf(path, sizeof path, "/tmp/gloas-test-capi-%d.seq", (int) getpid());
    CHECK_STATUS(gloas_seq_save(ctx, 0, path), GLOAS_OK, ctx);
    CHECK_STATUS(gloas_seq_restore(ctx, 2, path), GLOAS_OK, ctx);
    CHECK(gloas_seq_n_tokens(ctx, 2) == n);
    CHECK(gloas_seq_n_shared_pages(ctx, 2) == expect_shared);

    /* All three continue identically: one batch of one token per sequence. */
    {
        gloas_token last[3];
        gloas_seq_id seqs[3] = {0, 1, 2};
        int8_t want[3] = {1, 1, 1};
        /* the same last token goes to each (the sequences are equal) */
        gloas_token t0 = 42;
        last[0] = last[1] = last[2] = t0;
        memset(&b, 0, sizeof b);
        b.n_tokens = 3;
        b.token = last;
        b.seq_id = seqs;
        b.logits = want;
        CHECK_STATUS(gloas_decode(ctx, &b), GLOAS_OK, ctx);
        for (s = 0; s < 3; ++s) next[s] = gloas_sampler_sample(smp, ctx, s);
        CHECK(next[0] >= 0 && next[0] == next[1] && next[1] == next[2]);
        {
            const float * l0 = gloas_get_logits(ctx, 0), * l1 = gloas_get_logits(ctx, 1), * l2 = gloas_get_logits(ctx, 2);
            CHECK(l0 && l1 && l2 && memcmp(l0, l1, 512 * sizeof(float)) == 0 && memcmp(l0, l2, 512 * sizeof(float)) == 0);
        }
    }

    /* Removing a sequence stops the sharing with it. */
    CHECK_STATUS(gloas_seq_remove(ctx, 1), GLOAS_OK, ctx);
    CHECK_STATUS(gloas_seq_remove(ctx, 2), GLOAS_OK, ctx);
    CHECK(gloas_seq_n_tokens(ctx, 1) == 0);
    CHECK(gloas_seq_n_shared_pages(ctx, 0) == 0);
    unlink(path);
    gloas_sampler_free(smp);
    gloas_context_free(ctx);
}

/* ---- params structs: the size rule of gloas.h ("ABI") ---- */

/* gloas_context_params as the first layout (gloas 0.2.0) declared it: what a
 * program built against that header passes. */
typedef struct context_params_0_2 {
    size_t size;
    int32_t n_ctx, n_ubatch, n_threads, n_seq_max, kv_type, kv_page_tokens;
    const char * kv_dir;
    uint64_t kv_capacity_bytes;
    int32_t kv_policy;
    float sparse_ratio;
    int32_t ctx_slide;
} context_params_0_2;

/* Greedy text of "Once upon a time" (8 tokens) on ctx. */
static void greedy8(gloas_context * ctx, struct text_buf * out) {
    gloas_generate_params gp = gloas_generate_default_params();
    out->n = 0;
    out->s[0] = '\0';
    gp.n_predict = 8;
    CHECK_STATUS(gloas_generate(ctx, "Once upon a time", &gp, on_token, out), GLOAS_OK, ctx);
}

static void test_params_size(void) {
    static struct text_buf want, got;
    /* the old struct, followed by garbage where the newer fields would be */
    struct {
        context_params_0_2 p;
        unsigned char after[64];
    } old;
    struct {
        gloas_metrics m;
        unsigned char after[16];
    } met;
    gloas_context_params cp = gloas_context_default_params();
    gloas_model_params mp = gloas_model_default_params();
    gloas_sampler_params sp = gloas_sampler_default_params();
    gloas_generate_params gp = gloas_generate_default_params();
    gloas_context * ctx;
    gloas_status st = GLOAS_OK;
    size_t i;

    CHECK(cp.size == sizeof cp && mp.size == sizeof mp && sp.size == sizeof sp && gp.size == sizeof gp);
    CHECK(sizeof(context_params_0_2) < sizeof(gloas_context_params)); /* the test has an older layout to use */

    /* reference: the current struct with its defaults */
    cp.kv_type = GLOAS_KV_F32;
    ctx = gloas_context_new(g_model, &cp);
    CHECK(ctx != NULL);
    if (!ctx) return;
    greedy8(ctx, &want);
    gloas_context_free(ctx);

    /* an older program: *_params_init with its smaller size writes nothing past it */
    memset(&old, 0xA5, sizeof old);
    CHECK_STATUS(gloas_context_params_init((gloas_context_params *) (void *) &old.p, sizeof old.p), GLOAS_OK, NULL);
    CHECK(old.p.size == sizeof old.p);
    CHECK(old.p.n_ubatch == 512 && old.p.n_seq_max == 1 && old.p.kv_page_tokens == 32);
    for (i = 0; i < sizeof old.after; ++i) CHECK(old.after[i] == 0xA5);
    /* and its struct works, the fields it lacks taking their defaults */
    memset(old.after, 0xFF, sizeof old.after);
    old.p.kv_type = GLOAS_KV_F32;
    ctx = gloas_context_new(g_model, (const gloas_context_params *) (const void *) &old.p);
    CHECK(ctx != NULL);
    if (!ctx) {
        fprintf(stderr, "%s\n", gloas_last_error(NULL));
        return;
    }
    greedy8(ctx, &got);
    CHECK(strcmp(want.s, got.s) == 0);

    /* metrics into an older (here: the first) layout: nothing written past it */
    memset(&met, 0xA5, sizeof met);
    met.m.size = sizeof met.m;
    CHECK_STATUS(gloas_get_metrics(ctx, &met.m), GLOAS_OK, ctx);
    CHECK(met.m.size == sizeof met.m);
    CHECK(met.m.tokens_evaluated >= 12 && met.m.decode_calls >= 1);
    for (i = 0; i < sizeof met.after; ++i) CHECK(met.after[i] == 0xA5);

    /* bad sizes: below the first layout, above this library's, or never set */
    met.m.size = sizeof met.m + 8;
    CHECK_STATUS(gloas_get_metrics(ctx, &met.m), GLOAS_ERR_INVALID_ARG, ctx);
    CHECK(strstr(gloas_last_error(ctx), "size") != NULL);
    met.m.size = offsetof(gloas_metrics, pages_evicted);
    CHECK_STATUS(gloas_get_metrics(ctx, &met.m), GLOAS_ERR_INVALID_ARG, ctx);
    gloas_context_free(ctx);

    cp = gloas_context_default_params();
    cp.size = offsetof(gloas_context_params, kv_dir);
    CHECK(gloas_context_new(g_model, &cp) == NULL);
    CHECK(strstr(gloas_last_error(NULL), "size") != NULL);
    cp.size = sizeof cp + 8;
    CHECK(gloas_context_new(g_model, &cp) == NULL);
    CHECK(strstr(gloas_last_error(NULL), "gloas_context_new") != NULL);
    cp.size = 0; /* a struct filled by hand */
    CHECK(gloas_context_new(g_model, &cp) == NULL);

    mp.size = 1;
    CHECK(gloas_model_load(g_model_path, &mp, &st) == NULL);
    CHECK(st == GLOAS_ERR_INVALID_ARG);
    CHECK(strstr(gloas_last_error(NULL), "size") != NULL);
    sp.size = sizeof sp * 2;
    CHECK(gloas_sampler_new(&sp) == NULL);
    CHECK(strstr(gloas_last_error(NULL), "size") != NULL);

    ctx = new_ctx(1, 64);
    CHECK(ctx != NULL);
    if (!ctx) return;
    gp.size = 3;
    CHECK_STATUS(gloas_generate(ctx, "Once", &gp, NULL, NULL), GLOAS_ERR_INVALID_ARG, ctx);
    gp = gloas_generate_default_params();
    sp = gloas_sampler_default_params();
    sp.size = 0;
    gp.sampling = &sp; /* the nested struct is checked too */
    CHECK_STATUS(gloas_generate(ctx, "Once", &gp, NULL, NULL), GLOAS_ERR_INVALID_ARG, ctx);
    CHECK(gloas_seq_n_tokens(ctx, 0) == 0);
    gloas_context_free(ctx);

    /* *_params_init refuses what the consumers refuse, and NULL */
    CHECK_STATUS(gloas_context_params_init(&cp, sizeof cp + 1), GLOAS_ERR_INVALID_ARG, NULL);
    CHECK_STATUS(gloas_model_params_init(&mp, 4), GLOAS_ERR_INVALID_ARG, NULL);
    CHECK_STATUS(gloas_sampler_params_init(NULL, sizeof sp), GLOAS_ERR_INVALID_ARG, NULL);
    CHECK_STATUS(gloas_generate_params_init(&gp, sizeof gp), GLOAS_OK, NULL);
}

/* ---- the defaults written in gloas.h ---- */

static void test_defaults(void) {
    gloas_model_params mp = gloas_model_default_params();
    gloas_context_params cp = gloas_context_default_params();
    gloas_sampler_params sp = gloas_sampler_default_params();
    gloas_generate_params gp = gloas_generate_default_params();
    gloas_context * ctx;
    gloas_metrics met;

    CHECK(mp.tokenizer_path == NULL && mp.n_threads == 0);

    CHECK(cp.n_ctx == 0 && cp.n_ubatch == 512 && cp.n_threads == 0 && cp.n_seq_max == 1);
    CHECK(cp.kv_type == GLOAS_KV_F16 && cp.kv_page_tokens == 32 && cp.kv_dir == NULL);
    CHECK(cp.kv_capacity_bytes == (uint64_t) 4 << 30 && cp.kv_policy == GLOAS_EVICT_LRU && cp.kv_ram_bytes == 0);
    CHECK(cp.sparse_ratio == 1.0f && cp.ctx_slide == 0 && cp.n_gpu_layers == 0 && cp.gpu_device == 0);

    CHECK(sp.temp == 0.8f && sp.top_k == 40 && sp.top_p == 0.95f && sp.min_p == 0.0f);
    CHECK(sp.repeat_penalty == 1.0f && sp.repeat_last_n == 64 && sp.seed == GLOAS_SEED_RANDOM);

    CHECK(gp.n_predict == 128 && gp.sampling == NULL && gp.seq_id == 0);
    CHECK(gp.add_bos == 1 && gp.ignore_eos == 0 && gp.n_generated == NULL);

    /* a context of the defaults: the training context, one sequence, F16
     * pages (K and V: 2 bytes per value, n_layer * n_head_kv * head_dim = 5 *
     * 32 values each per position for stories260K), memory only */
    ctx = gloas_context_new(g_model, NULL);
    CHECK(ctx != NULL);
    if (!ctx) return;
    CHECK(gloas_n_ctx(ctx) == gloas_model_n_ctx_train(g_model));
    CHECK(gloas_n_seq_max(ctx) == 1);
    met.size = sizeof met;
    CHECK_STATUS(gloas_get_metrics(ctx, &met), GLOAS_OK, ctx);
    CHECK(met.kv_bytes_per_token == 2.0 * 5 * 32 * 2);
    CHECK(met.kv_file_bytes == 0);
    gloas_context_free(ctx);
}

/* ---- version and model metadata ---- */

/* Copies the GGUF at src to dst with a tokenizer.chat_template of exactly
 * `len` bytes (a multiple of 256 minus the key's encoding) inserted first in
 * its metadata: the metadata grows by a multiple of 256 bytes, so the tensor
 * data keeps its alignment and the rest is copied unchanged. Returns the
 * template (static), or NULL if src cannot be read. */
static const char * gguf_with_template(const char * src, const char * dst) {
    static char tmpl[512 - 8 - 23 - 4 - 8 + 1];
    static const char key[] = "tokenizer.chat_template";
    const char * text =
        "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n{% endfor %}";
    const size_t len = sizeof tmpl - 1;
    FILE * in = fopen(src, "rb"), * out;
    unsigned char head[24], buf[65536];
    uint64_t n_kv, klen = sizeof key - 1, vlen = len;
    uint32_t type = 8; /* GGUF_TYPE_STRING */
    size_t n;
    if (!in) return NULL;
    memset(tmpl, ' ', len);
    memcpy(tmpl, text, strlen(text));
    tmpl[len] = '\0';
    out = fopen(dst, "wb");
    if (!out || fread(head, 1, 24, in) != 24 || memcmp(head, "GGUF", 4) != 0) {
        fclose(in);
        if (out) fclose(out);
        return NULL;
    }
    memcpy(&n_kv, head + 16, 8);
    ++n_kv;
    memcpy(head + 16, &n_kv, 8);
    fwrite(head, 1, 24, out);
    fwrite(&klen, 8, 1, out);
    fwrite(key, 1, (size_t) klen, out);
    fwrite(&type, 4, 1, out);
    fwrite(&vlen, 8, 1, out);
    fwrite(tmpl, 1, len, out);
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, out);
    fclose(in);
    return fclose(out) == 0 ? tmpl : NULL;
}

static void test_metadata(void) {
    char gguf[4096], path[256];
    const char * v = gloas_version();
    const char * tmpl;
    int major = -1, minor = -1, patch = -1;
    gloas_model * m;
    gloas_status st;

    CHECK(v != NULL && strcmp(v, GLOAS_TEST_VERSION) == 0);
    CHECK(sscanf(v, "%d.%d.%d", &major, &minor, &patch) == 3);

    /* stories260K.bin: a llama2.c checkpoint (dim 64, 5 layers, vocab 512, f32) */
    CHECK(strcmp(gloas_model_name(g_model), "stories260K.bin") == 0);
    CHECK(strcmp(gloas_model_arch(g_model), "llama") == 0);
    CHECK(gloas_model_n_vocab(g_model) == 512);
    CHECK(gloas_model_n_ctx_train(g_model) == 512);
    CHECK(gloas_model_n_layer(g_model) == 5);
    CHECK(gloas_model_n_embd(g_model) == 64);
    CHECK(gloas_model_n_params(g_model) > 200000 && gloas_model_n_params(g_model) < 300000);
    CHECK(gloas_model_size(g_model) == 4 * gloas_model_n_params(g_model));
    CHECK(gloas_model_chat_template(g_model) == NULL);
    CHECK(gloas_model_name(NULL)[0] == '\0' && gloas_model_n_layer(NULL) == 0);
    CHECK(gloas_model_chat_template(NULL) == NULL);

    /* a GGUF with a chat template (stories260K_f32.gguf with one added) */
    if (!find_model("stories260K_f32.gguf", gguf, sizeof gguf)) {
        printf("        (chat template check not run: needs models/stories260K_f32.gguf)\n");
        return;
    }
    m = gloas_model_load(gguf, NULL, &st);
    CHECK(m != NULL);
    if (!m) return;
    CHECK(gloas_model_chat_template(m) == NULL);
    CHECK(gloas_model_n_vocab(m) == 512 && gloas_model_n_layer(m) == 5);
    CHECK(gloas_model_n_params(m) >= gloas_model_n_params(g_model)); /* llama.cpp's converter unties the output */
    gloas_model_free(m);
    snprintf(path, sizeof path, "/tmp/gloas-test-capi-%d.gguf", (int) getpid());
    tmpl = gguf_with_template(gguf, path);
    CHECK(tmpl != NULL);
    m = tmpl ? gloas_model_load(path, NULL, &st) : NULL;
    CHECK(m != NULL);
    if (m) {
        CHECK(gloas_model_chat_template(m) != NULL && strcmp(gloas_model_chat_template(m), tmpl) == 0);
        CHECK(strcmp(gloas_model_arch(m), "llama") == 0);
        gloas_model_free(m);
    } else {
        fprintf(stderr, "%s\n", gloas_last_error(NULL));
    }
    unlink(path);
}

/* ---- error paths ---- */

static void test_errors(void) {
    gloas_status st = GLOAS_OK;
    char path[4200], buf[4];
    size_t len = 0;
    int32_t n = 0, count = 0, i;
    gloas_token toks[32], bad[2] = {1, 512}, neg = -1;
    gloas_seq_id seqs[4] = {0, 1, 0, 0};
    gloas_pos pos[1] = {5};
    gloas_batch b;
    gloas_generate_params gp = gloas_generate_default_params();
    gloas_sampler_params sp = gloas_sampler_default_params();
    gloas_context_params cp = gloas_context_default_params();
    gloas_context * ctx;
    FILE * f;

    /* a K/V folder the program names must be usable */
    cp.kv_dir = "/proc/gloas-no-such-folder/kv";
    CHECK(gloas_context_new(g_model, &cp) == NULL);
    CHECK(strstr(gloas_last_error(NULL), "/proc/gloas-no-such-folder/kv") != NULL);
    cp.kv_dir = NULL;

    /* loading */
    CHECK(gloas_model_load("/nonexistent/model.bin", NULL, &st) == NULL);
    CHECK(st == GLOAS_ERR_IO);
    CHECK(strstr(gloas_last_error(NULL), "/nonexistent/model.bin") != NULL);
    golden_path("stories260K_greedy_n128_once_upon_a_time.txt", path, sizeof path);
    CHECK(gloas_model_load(path, NULL, &st) == NULL);
    CHECK(st == GLOAS_ERR_FORMAT);
    CHECK(gloas_last_error(NULL)[0] != '\0');
    CHECK(gloas_model_load(NULL, NULL, &st) == NULL);
    CHECK(st == GLOAS_ERR_INVALID_ARG);
    CHECK(gloas_model_load(NULL, NULL, NULL) == NULL); /* no status pointer: still no crash */

    /* context creation */
    CHECK(gloas_context_new(NULL, NULL) == NULL);
    cp.kv_type = 99;
    CHECK(gloas_context_new(g_model, &cp) == NULL);
    CHECK(strstr(gloas_last_error(NULL), "kv_type 99 is not a GLOAS_KV_* value (K/V pages are f32, f16, q8_0, q4_0 or q4_kivi)") != NULL);
    cp = gloas_context_default_params();
    cp.n_seq_max = 0;
    CHECK(gloas_context_new(g_model, &cp) == NULL);
    /* The K/V check of the flags and the configuration file (kv_options_problem),
     * naming the fields: test-config compares the messages. */
    cp = gloas_context_default_params();
    cp.kv_page_tokens = 0;
    CHECK(gloas_context_new(g_model, &cp) == NULL);
    CHECK(strcmp(gloas_last_error(NULL), "gloas_context_new: kv_page_tokens 0: expected 1 to 4096 tokens") == 0);
    cp = gloas_context_default_params();
    cp.kv_type = GLOAS_KV_Q8_0;
    cp.kv_page_tokens = 16;
    CHECK(gloas_context_new(g_model, &cp) == NULL);
    CHECK(strcmp(gloas_last_error(NULL),
                 "gloas_context_new: kv_type q8_0 needs kv_page_tokens to be a multiple of 32 (each page row holds one "
                 "channel's tokens in blocks of 32), got kv_page_tokens 16; use kv_page_tokens 32 or kv_type f16") == 0);
    cp.kv_type = GLOAS_KV_F16;
    cp.kv_policy = GLOAS_EVICT_COMPRESSED;
    CHECK(gloas_context_new(g_model, &cp) == NULL);
    CHECK(strstr(gloas_last_error(NULL), "kv_policy compressed re-quantizes evicted pages to q4_0") != NULL);
    cp = gloas_context_default_params();
    cp.kv_dir = NULL;
    { /* every GLOAS_KV_* type runs */
        const int32_t types[5] = {GLOAS_KV_F32, GLOAS_KV_F16, GLOAS_KV_Q8_0, GLOAS_KV_Q4_0, GLOAS_KV_Q4_KIVI};
        int k;
        for (k = 0; k < 5; ++k) {
            gloas_context * c;
            cp.kv_type = types[k];
            c = gloas_context_new(g_model, &cp);
            CHECK(c != NULL);
            gloas_context_free(c);
        }
    }

    /* tokenizer */
    CHECK_STATUS(gloas_tokenize(NULL, "x", -1, 1, toks, 32, &n), GLOAS_ERR_INVALID_ARG, NULL);
    CHECK_STATUS(gloas_tokenize(g_model, NULL, -1, 1, toks, 32, &n), GLOAS_ERR_INVALID_ARG, NULL);
    CHECK_STATUS(gloas_tokenize(g_model, "Once upon a time", -1, 1, toks, 32, &n), GLOAS_OK, NULL);
    CHECK_STATUS(gloas_tokenize(g_model, "Once upon a time", -1, 1, toks, 2, &n), GLOAS_ERR_INVALID_ARG, NULL);
    CHECK(n == 5); /* the count needed */
    CHECK_STATUS(gloas_token_to_piece(g_model, -1, 512, buf, sizeof buf, &len), GLOAS_ERR_INVALID_ARG, NULL);
    CHECK_STATUS(gloas_token_to_piece(g_model, -1, toks[1], buf, 1, &len), GLOAS_ERR_INVALID_ARG, NULL);
    CHECK(len > 0);
    CHECK_STATUS(gloas_detokenize(g_model, bad, 2, path, sizeof path, &len), GLOAS_ERR_INVALID_ARG, NULL);

    /* NULL handles */
    memset(&b, 0, sizeof b);
    b.n_tokens = 1;
    b.token = toks;
    CHECK_STATUS(gloas_decode(NULL, &b), GLOAS_ERR_INVALID_ARG, NULL);
    CHECK(gloas_get_logits(NULL, 0) == NULL);
    CHECK_STATUS(gloas_generate(NULL, "x", NULL, NULL, NULL), GLOAS_ERR_INVALID_ARG, NULL);
    CHECK_STATUS(gloas_get_metrics(NULL, NULL), GLOAS_ERR_INVALID_ARG, NULL);
    CHECK_STATUS(gloas_seq_fork(NULL, 0, 1), GLOAS_ERR_INVALID_ARG, NULL);
    CHECK_STATUS(gloas_sampler_accept(NULL, 1), GLOAS_ERR_INVALID_ARG, NULL);
    CHECK(gloas_sampler_sample(NULL, NULL, 0) == -1);
    gloas_model_free(NULL);
    gloas_context_free(NULL);
    gloas_sampler_free(NULL);

    /* sampler parameters */
    sp.repeat_penalty = 0.0f;
    CHECK(gloas_sampler_new(&sp) == NULL);
    CHECK(strstr(gloas_last_error(NULL), "sampler") != NULL);

    /* decoding: bad tokens, sequences, positions, overflow; nothing changes */
    ctx = new_ctx(2, 16);
    CHECK(ctx != NULL);
    if (!ctx) return;
    CHECK(gloas_n_ctx(ctx) == 16);
    CHECK_STATUS(gloas_decode(ctx, NULL), GLOAS_ERR_INVALID_ARG, ctx);
    memset(&b, 0, sizeof b);
    CHECK_STATUS(gloas_decode(ctx, &b), GLOAS_ERR_INVALID_ARG, ctx); /* no tokens */
    b.n_tokens = 2;
    b.token = bad;
    CHECK_STATUS(gloas_decode(ctx, &b), GLOAS_ERR_INVALID_ARG, ctx);
    CHECK(strstr(gloas_last_error(ctx), "512") != NULL);
    b.n_tokens = 1;
    b.token = &neg;
    CHECK_STATUS(gloas_decode(ctx, &b), GLOAS_ERR_INVALID_ARG, ctx);
    CHECK(gloas_seq_n_tokens(ctx, 0) == 0);
    for (i = 0; i < 32; ++i) toks[i] = 1 + i;
    b.n_tokens = 4;
    b.token = toks;
    b.seq_id = seqs; /* 0 1 0 0: sequence 0 not contiguous */
    CHECK_STATUS(gloas_decode(ctx, &b), GLOAS_ERR_INVALID_ARG, ctx);
    seqs[1] = 7; /* out of range */
    CHECK_STATUS(gloas_decode(ctx, &b), GLOAS_ERR_INVALID_ARG, ctx);
    b.seq_id = NULL;
    b.n_tokens = 1;
    b.pos = pos; /* position 5 on an empty sequence */
    CHECK_STATUS(gloas_decode(ctx, &b), GLOAS_ERR_INVALID_ARG, ctx);
    b.pos = NULL;
    b.n_tokens = 17;
    CHECK_STATUS(gloas_decode(ctx, &b), GLOAS_ERR_CONTEXT_FULL, ctx);
    CHECK(gloas_seq_n_tokens(ctx, 0) == 0);
    b.n_tokens = 16;
    CHECK_STATUS(gloas_decode(ctx, &b), GLOAS_OK, ctx);
    CHECK(gloas_get_logits(ctx, -1) != NULL);
    CHECK(gloas_get_logits(ctx, 3) == NULL); /* not asked for */
    CHECK(gloas_get_logits(ctx, 99) == NULL);
    CHECK(gloas_last_error(ctx)[0] != '\0');
    b.n_tokens = 1;
    CHECK_STATUS(gloas_decode(ctx, &b), GLOAS_ERR_CONTEXT_FULL, ctx);
    CHECK(gloas_seq_n_tokens(ctx, 0) == 16);
    CHECK_STATUS(gloas_generate(ctx, "Once upon a time there was a little girl who liked to play", &gp, NULL, NULL),
                 GLOAS_ERR_CONTEXT_FULL, ctx);
    CHECK_STATUS(gloas_generate(ctx, "", &gp, NULL, NULL), GLOAS_ERR_CONTEXT_FULL, ctx); /* nothing to continue */
    CHECK(gloas_seq_n_tokens(ctx, 0) == 16);

    /* sequence ops on bad ids and files */
    CHECK_STATUS(gloas_seq_fork(ctx, 0, 0), GLOAS_ERR_INVALID_ARG, ctx);
    CHECK_STATUS(gloas_seq_fork(ctx, 0, 5), GLOAS_ERR_INVALID_ARG, ctx);
    CHECK_STATUS(gloas_seq_remove(ctx, -1), GLOAS_ERR_INVALID_ARG, ctx);
    CHECK_STATUS(gloas_seq_save(ctx, 0, "/nonexistent/dir/x.seq"), GLOAS_ERR_IO, ctx);
    CHECK_STATUS(gloas_seq_restore(ctx, 1, "/nonexistent/x.seq"), GLOAS_ERR_IO, ctx);
    CHECK_STATUS(gloas_seq_restore(ctx, 1, path), GLOAS_ERR_FORMAT, ctx); /* a text file */
    snprintf(path, sizeof path, "/tmp/gloas-test-capi-bad-%d.seq", (int) getpid());
    f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        fwrite("GLSQ\1\0\0\0", 1, 8, f); /* truncated after the version */
        fclose(f);
        CHECK_STATUS(gloas_seq_restore(ctx, 1, path), GLOAS_ERR_FORMAT, ctx);
        unlink(path);
    }

    /* the callback cancels generation */
    CHECK_STATUS(gloas_seq_remove(ctx, 0), GLOAS_OK, ctx);
    gp.n_predict = 8;
    gp.ignore_eos = 1;
    CHECK_STATUS(gloas_generate(ctx, "Once", &gp, stop_after_two, &count), GLOAS_ERR_CANCELLED, ctx);
    CHECK(count == 2);
    gp.seq_id = 9;
    CHECK_STATUS(gloas_generate(ctx, "Once", &gp, NULL, NULL), GLOAS_ERR_INVALID_ARG, ctx);

    /* status names */
    CHECK(strcmp(gloas_status_name(GLOAS_ERR_CONTEXT_FULL), "GLOAS_ERR_CONTEXT_FULL") == 0);
    gloas_context_free(ctx);
}

/* ---- a context that slides past n_ctx (ctx_slide) ---- */

static void test_slide(void) {
    static struct text_buf out;
    int32_t n_gen = -1;
    gloas_generate_params gp = gloas_generate_default_params();
    gloas_context_params cp = gloas_context_default_params();
    gloas_context * ctx;
    CHECK(cp.ctx_slide == 0);
    cp.kv_dir = NULL;
    cp.n_ctx = 128;  /* the sink page and at least two more pages of 32 tokens */
    /* without the slide, generation stops at the context's end */
    ctx = gloas_context_new(g_model, &cp);
    CHECK(ctx != NULL);
    if (!ctx) return;
    gp.n_predict = 300;
    gp.ignore_eos = 1;
    gp.n_generated = &n_gen;
    out.n = 0;
    CHECK_STATUS(gloas_generate(ctx, "Once upon a time", &gp, on_token, &out), GLOAS_OK, ctx);
    CHECK(n_gen > 0 && n_gen < 128);
    gloas_context_free(ctx);
    /* with it, the 300 tokens come (more than twice the context) */
    cp.ctx_slide = 1;
    ctx = gloas_context_new(g_model, &cp);
    CHECK(ctx != NULL);
    if (!ctx) return;
    out.n = 0;
    CHECK_STATUS(gloas_generate(ctx, "Once upon a time", &gp, on_token, &out), GLOAS_OK, ctx);
    CHECK(n_gen == 300);
    CHECK(out.n > 300);
    gloas_context_free(ctx);
}

/* Whether a context of cp can be made; when it is, its greedy text must be `want`. */
static int same_text(const gloas_context_params * cp, const struct text_buf * want) {
    static struct text_buf got;
    gloas_context * ctx = gloas_context_new(g_model, cp);
    if (!ctx) return 0;
    greedy8(ctx, &got);
    CHECK(strcmp(got.s, want->s) == 0);
    gloas_context_free(ctx);
    return 1;
}

/* n_gpu_layers: -1 runs on the GPU when it can and on the CPU otherwise, with
 * the same text; above 0 the GPU is required: the context is made only where
 * it can run (the same text then), else NULL with the reason; below -1 is
 * refused. gpu_device: one that is not there is no GPU; negative is refused. */
static void test_gpu_layers(void) {
    static struct text_buf cpu;
    gloas_context_params cp = gloas_context_default_params();
    gloas_context * ctx;
    cp.n_ctx = 64;
    ctx = gloas_context_new(g_model, &cp);
    CHECK(ctx != NULL);
    if (!ctx) return;
    greedy8(ctx, &cpu);
    gloas_context_free(ctx);

    cp.n_gpu_layers = -1;
    CHECK(same_text(&cp, &cpu));
    cp.n_gpu_layers = 1;
    if (!same_text(&cp, &cpu)) CHECK(strstr(gloas_last_error(NULL), "GPU layers were asked for") != NULL);

    /* a device that is not there: no GPU, so -1 runs on the CPU and 1 fails naming it */
    cp.gpu_device = 255;
    cp.n_gpu_layers = -1;
    CHECK(same_text(&cp, &cpu));
    cp.n_gpu_layers = 1;
    CHECK(gloas_context_new(g_model, &cp) == NULL);
    CHECK(strstr(gloas_last_error(NULL), "GPU layers were asked for") != NULL);
    cp.gpu_device = -1;
    CHECK(gloas_context_new(g_model, &cp) == NULL);
    CHECK(strstr(gloas_last_error(NULL), "gpu_device") != NULL);
    cp.gpu_device = 0;

    cp.n_gpu_layers = -2;
    CHECK(gloas_context_new(g_model, &cp) == NULL);
    CHECK(strstr(gloas_last_error(NULL), "n_gpu_layers") != NULL);
}

int main(void) {
    struct {
        const char * name;
        void (*fn)(void);
    } tests[] = {
        {"golden greedy generation", test_golden},
        {"an empty prompt starts at BOS or continues", test_empty_prompt},
        {"params structs: older sizes work, bad sizes are refused", test_params_size},
        {"the defaults written in gloas.h", test_defaults},
        {"version and model metadata", test_metadata},
        {"batched sequences equal single ones", test_batch},
        {"fork and save/restore share pages", test_fork_and_restore},
        {"error paths", test_errors},
        {"a sliding context generates past n_ctx", test_slide},
        {"n_gpu_layers: the GPU when it can, or required", test_gpu_layers},
    };
    int passed = 0, failed = 0;
    size_t i;
    gloas_status st;
    gloas_model_params mp = gloas_model_default_params();
    if (!find_model("stories260K.bin", g_model_path, sizeof g_model_path)) {
        printf("SKIPPED: needs models/stories260K.bin (models/fetch.sh stories260K, or GLOAS_MODELS)\n");
        return 77;
    }
    g_model = gloas_model_load(g_model_path, &mp, &st);
    if (!g_model) {
        fprintf(stderr, "test-capi: %s: %s\n", gloas_status_name(st), gloas_last_error(NULL));
        return 1;
    }
    for (i = 0; i < sizeof tests / sizeof tests[0]; ++i) {
        const int before = g_checks_failed;
        tests[i].fn();
        if (g_checks_failed == before) {
            ++passed;
            printf("ok      %s\n", tests[i].name);
        } else {
            ++failed;
            printf("FAILED  %s\n", tests[i].name);
        }
    }
    gloas_model_free(g_model);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
