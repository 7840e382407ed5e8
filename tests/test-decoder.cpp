// The decoder against the reference: greedy generation from stories260K, as a
// llama2.c checkpoint and as llama.cpp's GGUF conversion, must equal
// llama2.c's output token for token.
#include "decoder/llama.h"
#include "decoder/model.h"
#include "decoder/sampler.h"
#include "base/error.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <cmath>
#include <string>

using namespace gloas;

namespace {

std::string generate_like_llama2c(const model & m, const std::string & prompt, int steps, int ubatch = 512) {
    context_params cp;
    cp.n_ubatch = ubatch;
    cp.kv.kv_type = type::F32;
    context ctx(m, cp);
    return test::generate_like_llama2c(ctx, prompt, steps);
}

std::string golden(const std::string & name) { return test::read_file(test::data_file("golden/" + name)); }

std::unique_ptr<model> load(const std::string & name) {
    return model::load({test::require_model(name), ""});
}

// llama2.c's greedy output of stories260K for three prompts.
void check_llama2c_goldens(const model & m) {
    const struct {
        const char * prompt;
        int steps;
        const char * golden;
    } runs[] = {
        {"", 200, "stories260K_greedy_n200_noprompt.txt"},
        {"Once upon a time", 128, "stories260K_greedy_n128_once_upon_a_time.txt"},
        {"Tom and Lily went to the park", 256, "stories260K_greedy_n256_tom_and_lily.txt"},
    };
    for (const auto & r : runs) {
        INFO(r.golden);
        CHECK(generate_like_llama2c(m, r.prompt, r.steps) == golden(r.golden));
    }
}

} // namespace

TEST_CASE("stories260K llama2.c checkpoint matches llama2.c's greedy output") {
    auto m = load("stories260K.bin");
    CHECK(m->file_format == "llama2.c");
    CHECK(m->hp.n_embd == 64);
    CHECK(m->hp.n_layer == 5);
    CHECK(m->hp.n_head == 8);
    CHECK(m->hp.n_head_kv == 4);
    CHECK(m->hp.n_vocab == 512);
    check_llama2c_goldens(*m);
}

TEST_CASE("stories260K GGUF written by llama.cpp matches llama2.c's greedy output") {
    auto m = load("stories260K_f32.gguf");
    CHECK(m->file_format == "gguf");
    CHECK(m->hp.n_ctx_train == 512);
    check_llama2c_goldens(*m);
}

TEST_CASE("chunked prefill equals token-by-token prefill") {
    auto m = load("stories260K.bin");
    const std::string prompt = "Tom and Lily went to the park. They saw a big dog and a small cat.";
    std::vector<int32_t> toks = m->tok.encode(prompt, true);
    REQUIRE(toks.size() > 10);
    context_params cp;
    cp.n_ubatch = 512;
    cp.kv.kv_type = type::F32;
    context whole(*m, cp);
    whole.eval(toks.data(), int32_t(toks.size()));
    const float * la = whole.eval(toks.data(), 1);  // one more step after the prompt
    std::vector<float> logits_whole(la, la + m->hp.n_vocab);

    for (int ub : {1, 3, 7}) {
        context_params cq;
        cq.n_ubatch = ub;
        cq.kv.kv_type = type::F32;
        context chunked(*m, cq);
        chunked.eval(toks.data(), int32_t(toks.size()));
        const float * lb = chunked.eval(toks.data(), 1);
        double max_diff = 0;
        for (int i = 0; i < m->hp.n_vocab; ++i) max_diff = std::max(max_diff, double(std::fabs(lb[i] - logits_whole[size_t(i)])));
        INFO("ubatch " << ub);
        CHECK(max_diff < 1e-4);
    }
    // The same generation through chunks of 3 still gives the golden text.
    CHECK(generate_like_llama2c(*m, "Once upon a time", 128, 3) == golden("stories260K_greedy_n128_once_upon_a_time.txt"));
}

TEST_CASE("eval rejects bad token ids and context overflow without changing state") {
    auto m = load("stories260K.bin");
    context_params cp;
    cp.n_ctx = 8;
    context ctx(*m, cp);
    int32_t bad[2] = {1, 512};
    CHECK_THROWS_AS(ctx.eval(bad, 2), error);
    CHECK(ctx.n_past() == 0);
    int32_t neg = -1;
    CHECK_THROWS_AS(ctx.eval(&neg, 1), error);
    std::vector<int32_t> toks(8, 1);
    ctx.eval(toks.data(), 8);
    CHECK(ctx.n_past() == 8);
    CHECK_THROWS_WITH_AS(ctx.eval(toks.data(), 1), doctest::Contains("context full"), error);
    CHECK(ctx.n_past() == 8);
    ctx.reset();
    CHECK(ctx.n_past() == 0);
}
