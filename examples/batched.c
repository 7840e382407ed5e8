/* batched: decode N sequences together (one forward pass per step) versus
 * one after the other, and print tokens/s of each.
 *   batched MODEL [N_SEQ=4] [N_STEPS=32] [N_THREADS=0]
 * Both runs are greedy from the same prompts and must produce the same tokens. */
#define _POSIX_C_SOURCE 200809L
#include "gloas.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SEQ 16

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

static const char * PROMPTS[4] = {"Once upon a time", "Tom and Lily went to the park", "The little dog",
                                  "One day, a girl named Sue"};

static int fail(const char * what, gloas_context * ctx) {
    fprintf(stderr, "batched: %s: %s\n", what, gloas_last_error(ctx));
    return 1;
}

/* Prefills every prompt (sequence s), then decodes n_steps tokens per
 * sequence: all sequences in one batch per step (batched != 0) or each on its
 * own. Writes the generated tokens to out (n_seq, n_steps); returns decode seconds. */
static double run(const gloas_model * m, int n_seq, int n_steps, int n_threads, int batched, gloas_token * out) {
    gloas_context_params cp = gloas_context_default_params();
    gloas_sampler_params sp = gloas_sampler_default_params();
    gloas_context * ctx;
    gloas_sampler * smp;
    gloas_token toks[MAX_SEQ], ptoks[256];
    gloas_seq_id seqs[MAX_SEQ];
    int8_t want[MAX_SEQ];
    gloas_batch b;
    int32_t n = 0;
    int s, step;
    double t0, dt;
    cp.n_seq_max = n_seq;
    cp.n_ctx = 256;
    cp.n_threads = n_threads;
    sp.temp = 0.0f;
    ctx = gloas_context_new(m, &cp);
    smp = gloas_sampler_new(&sp);
    if (!ctx || !smp) { fail("context", NULL); exit(1); }
    for (s = 0; s < n_seq; ++s) {
        if (gloas_tokenize(m, PROMPTS[s % 4], -1, 1, ptoks, 256, &n) != GLOAS_OK) { fail("tokenize", NULL); exit(1); }
        memset(&b, 0, sizeof b);
        {
            gloas_seq_id sid[256];
            int i;
            for (i = 0; i < n; ++i) sid[i] = s;
            b.n_tokens = n;
            b.token = ptoks;
            b.seq_id = sid;
            if (gloas_decode(ctx, &b) != GLOAS_OK) { fail("prefill", ctx); exit(1); }
        }
        toks[s] = gloas_sampler_sample(smp, ctx, -1);
        out[s * n_steps] = toks[s];
    }
    t0 = now_s();
    for (step = 1; step < n_steps; ++step) {
        if (batched) {
            for (s = 0; s < n_seq; ++s) { seqs[s] = s; want[s] = 1; }
            memset(&b, 0, sizeof b);
            b.n_tokens = n_seq;
            b.token = toks;
            b.seq_id = seqs;
            b.logits = want;
            if (gloas_decode(ctx, &b) != GLOAS_OK) { fail("decode", ctx); exit(1); }
            for (s = 0; s < n_seq; ++s) toks[s] = out[s * n_steps + step] = gloas_sampler_sample(smp, ctx, s);
        } else {
            for (s = 0; s < n_seq; ++s) {
                memset(&b, 0, sizeof b);
                b.n_tokens = 1;
                b.token = &toks[s];
                b.seq_id = &s;
                if (gloas_decode(ctx, &b) != GLOAS_OK) { fail("decode", ctx); exit(1); }
                toks[s] = out[s * n_steps + step] = gloas_sampler_sample(smp, ctx, 0);
            }
        }
    }
    dt = now_s() - t0;
    gloas_sampler_free(smp);
    gloas_context_free(ctx);
    return dt;
}

int main(int argc, char ** argv) {
    gloas_status st;
    gloas_model * m;
    int n_seq = argc > 2 ? atoi(argv[2]) : 4;
    int n_steps = argc > 3 ? atoi(argv[3]) : 32;
    int n_threads = argc > 4 ? atoi(argv[4]) : 0;
    gloas_token * a, * b;
    double t_seq, t_bat, n_tok;
    if (argc < 2 || n_seq < 1 || n_seq > MAX_SEQ || n_steps < 2) {
        fprintf(stderr, "usage: %s MODEL [N_SEQ=4 (1..%d)] [N_STEPS=32] [N_THREADS=0]\n", argv[0], MAX_SEQ);
        return 2;
    }
    m = gloas_model_load(argv[1], NULL, &st);
    if (!m) return fail(gloas_status_name(st), NULL);
    a = (gloas_token *) malloc(sizeof(gloas_token) * (size_t) (n_seq * n_steps));
    b = (gloas_token *) malloc(sizeof(gloas_token) * (size_t) (n_seq * n_steps));
    t_seq = run(m, n_seq, n_steps, n_threads, 0, a);
    t_bat = run(m, n_seq, n_steps, n_threads, 1, b);
    n_tok = (double) (n_seq * (n_steps - 1));
    printf("%d sequences x %d decode steps: sequential %.1f tokens/s, batched %.1f tokens/s (x%.2f); outputs %s\n",
           n_seq, n_steps - 1, n_tok / t_seq, n_tok / t_bat, t_seq / t_bat,
           memcmp(a, b, sizeof(gloas_token) * (size_t) (n_seq * n_steps)) == 0 ? "identical" : "DIFFER");
    free(a);
    free(b);
    gloas_model_free(m);
    return 0;
}
