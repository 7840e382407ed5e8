/* simple: generate text from a prompt through the C API.
 *   simple MODEL [PROMPT] [N_PREDICT]
 * Prints the prompt and the generated text on stdout, metrics on stderr. */
#include "gloas.h"

#include <stdio.h>
#include <stdlib.h>

static int print_piece(gloas_token token, const char * piece, size_t len, void * user_data) {
    (void) token;
    (void) user_data;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return 0; /* non-zero would stop the generation */
}

int main(int argc, char ** argv) {
    const char * prompt = argc > 2 ? argv[2] : "Once upon a time";
    gloas_model_params mp = gloas_model_default_params();
    gloas_context_params cp = gloas_context_default_params();
    gloas_generate_params gp = gloas_generate_default_params();
    gloas_metrics met;
    gloas_status st;
    gloas_model * model;
    gloas_context * ctx;
    int32_t n_gen = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL [PROMPT] [N_PREDICT]\n", argv[0]);
        return 2;
    }
    model = gloas_model_load(argv[1], &mp, &st);
    if (!model) {
        fprintf(stderr, "simple: %s: %s\n", gloas_status_name(st), gloas_last_error(NULL));
        return 1;
    }
    ctx = gloas_context_new(model, &cp);
    if (!ctx) {
        fprintf(stderr, "simple: %s\n", gloas_last_error(NULL));
        gloas_model_free(model);
        return 1;
    }
    gp.n_predict = argc > 3 ? atoi(argv[3]) : 64;
    gp.n_generated = &n_gen;
    fputs(prompt, stdout);
    st = gloas_generate(ctx, prompt, &gp, print_piece, NULL); /* greedy: gp.sampling is NULL */
    fputc('\n', stdout);
    if (st != GLOAS_OK) fprintf(stderr, "simple: %s: %s\n", gloas_status_name(st), gloas_last_error(ctx));
    met.size = sizeof met; /* the library fills the fields this program knows */
    if (gloas_get_metrics(ctx, &met) == GLOAS_OK)
        fprintf(stderr, "simple: %d tokens generated; %llu tokens evaluated in %.3f s; K/V pages hit %llu, written %llu\n",
                n_gen, (unsigned long long) met.tokens_evaluated, met.eval_seconds,
                (unsigned long long) met.pages_hit, (unsigned long long) met.pages_written);
    gloas_context_free(ctx);
    gloas_model_free(model);
    return st == GLOAS_OK ? 0 : 1;
}
