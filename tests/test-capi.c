/* The C API from plain C: greedy generation against llama2.c's golden text,
 * batched sequences against single ones, fork and save/restore sharing pages,
 * and every error path returning a status with a message.
 * A tiny runner: each test_* function counts its failed checks; main prints
 * "N passed, N failed" and returns non-zero on any failure. */
#define _POSIX_C_SOURCE 200809L
#include "gloas.h"

#include <math.h>
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
static char g_models_dir[4096];  /* the folder of g_model_path */
static gloas_model * g_model = NULL;

static int find_model(void) {
    const char * env = getenv("GLOAS_MODELS");
    if (env) {
        snprintf(g_models_dir, sizeof g_models_dir, "%.4000s", env);
        snprintf(g_model_path, sizeof g_model_path, "%.4000s/stories260K.bin", g_models_dir);
        if (access(g_model_path, R_OK) == 0) return 1;
    }
    snprintf(g_models_dir, sizeof g_models_dir, "%.4000s/models", GLOAS_SOURCE_DIR);
    snprintf(g_model_path, sizeof g_model_path, "%.4000s/stories260K.bin", g_models_dir);
    return access(g_model_path, R_OK) == 0;
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

static void test_golden(void) {
    static struct text_buf out;
    const char * prompt = "Once upon a time";
    gloas_token toks[64];
    int32_t n = 0, i, n_gen = -1;
    char path[4200], piece[64];
    size_t len;
    char * golden;
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
    snprintf(path, sizeof path, "%.4000s/golden/stories260K_greedy_n128_once_upon_a_time.txt", g_models_dir);
    golden = read_text(path);
    CHECK(golden != NULL);
    if (golden) {
        size_t gl = strlen(golden);
        while (gl && golden[gl - 1] == '\n') golden[--gl] = '\0';
        CHECK(strcmp(out.s, golden) == 0);
        if (strcmp(out.s, golden) != 0) fprintf(stderr, "got:\n%s\nexpected:\n%s\n", out.s, golden);
        free(golden);
    }
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
    gp.n_predict = 100; /* 5 + 100 positions: three sealed pages of 32 */
    gp.ignore_eos = 1;
    CHECK_STATUS(gloas_generate(ctx, "Once upon a time", &gp, NULL, NULL), GLOAS_OK, ctx);
    n = gloas_seq_n_tokens(ctx, 0);
    CHECK(n >= 100);
    expect_shared = (n - 1) / 32;
    CHECK(gloas_seq_n_shared_pages(ctx, 0) == 0);

    CHECK_STATUS(gloas_seq_fork(ctx, 0, 1), GLOAS_OK, ctx);
    CHECK(gloas_seq_n_tokens(ctx, 1) == n);
    CHECK(gloas_seq_n_shared_pages(ctx, 1) == expect_shared);
    CHECK(gloas_seq_n_shared_pages(ctx, 0) == expect_shared);
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

/* ---- error paths ---- */

static int stop_after_two(gloas_token token, const char * piece, size_t len, void * user) {
    int * count = (int *) user;
    (void) token;
    (void) piece;
    (void) len;
    return ++*count >= 2;
}

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

    /* loading */
    CHECK(gloas_model_load("/nonexistent/model.bin", NULL, &st) == NULL);
    CHECK(st == GLOAS_ERR_IO);
    CHECK(strstr(gloas_last_error(NULL), "/nonexistent/model.bin") != NULL);
    snprintf(path, sizeof path, "%.4000s/golden/stories260K_greedy_n128_once_upon_a_time.txt", g_models_dir);
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
    CHECK(strstr(gloas_last_error(NULL), "kv_type") != NULL);
    cp = gloas_context_default_params();
    cp.n_seq_max = 0;
    CHECK(gloas_context_new(g_model, &cp) == NULL);
    cp = gloas_context_default_params();
    cp.kv_page_tokens = 0;
    CHECK(gloas_context_new(g_model, &cp) == NULL);
    CHECK(gloas_last_error(NULL)[0] != '\0');

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

int main(void) {
    struct {
        const char * name;
        void (*fn)(void);
    } tests[] = {
        {"golden greedy generation", test_golden},
        {"batched sequences equal single ones", test_batch},
        {"fork and save/restore share pages", test_fork_and_restore},
        {"error paths", test_errors},
        {"a sliding context generates past n_ctx", test_slide},
    };
    int passed = 0, failed = 0;
    size_t i;
    gloas_status st;
    gloas_model_params mp = gloas_model_default_params();
    if (!find_model()) {
        fprintf(stderr, "test-capi: stories260K.bin not found in %s/models or $GLOAS_MODELS; run models/fetch.sh --default\n",
                GLOAS_SOURCE_DIR);
        return 1;
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
