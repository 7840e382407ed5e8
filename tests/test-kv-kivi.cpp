// q4_kivi pages through the decoder and the K/V store: closer to F32 pages
// than Q4_0 over a real text, and kept in and reused from a page file.
#include "decoder/llama.h"
#include "decoder/model.h"
#include "kvcache/kv-store.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

using namespace gloas;

namespace {

context_params kv_params(type t, const std::string & dir) {
    context_params cp;
    cp.kv.kv_type = t;
    cp.kv.dir = dir;
    return cp;
}

// Top-1 agreement of a context with pages of type t against F32 pages,
// teacher-forced one token at a time over toks.
double top1_vs_f32(const model & m, type t, const std::vector<int32_t> & toks) {
    context a(m, kv_params(type::F32, ""));
    context b(m, kv_params(t, ""));
    int agree = 0, n = 0;
    for (size_t i = 0; i + 1 < toks.size(); ++i) {
        const float * la = a.eval(&toks[i], 1);
        const int32_t ta = int32_t(std::max_element(la, la + m.hp.n_vocab) - la);
        const float * lb = b.eval(&toks[i], 1);
        const int32_t tb = int32_t(std::max_element(lb, lb + m.hp.n_vocab) - lb);
        agree += ta == tb;
        ++n;
    }
    return double(agree) / n;
}

} // namespace

TEST_CASE("q4_kivi pages: nearer F32 pages than Q4_0 over a real text, decoded token by token") {
    auto m = model::load({test::require_model("stories260K.bin"), ""});
    const std::string text = test::read_file(test::require_data("tinystories-valid-excerpt.txt")).substr(0, 2500);
    std::vector<int32_t> toks = m->tok.encode(text, true);
    REQUIRE(toks.size() > 300);
    toks.resize(std::min<size_t>(toks.size(), 400));
    const double kivi = top1_vs_f32(*m, type::Q4_KIVI, toks), q4 = top1_vs_f32(*m, type::Q4_0, toks);
    MESSAGE("top-1 agreement with F32 pages: q4_kivi " << kivi * 100 << "%, q4_0 " << q4 * 100 << "%");
    CHECK(kivi >= 0.94);
    CHECK(kivi >= q4);
}

TEST_CASE("q4_kivi pages are stored in the page file and reused by a new store") {
    auto m = model::load({test::require_model("stories260K.bin"), ""});
    const std::string dir = test::temp_dir("kv-kivi");
    const std::string prompt = test::read_file(test::require_data("tinystories-valid-excerpt.txt")).substr(0, 700);
    const std::vector<int32_t> toks = m->tok.encode(prompt, true);
    const int32_t n_full = (int32_t(toks.size()) - 1) / 32;
    REQUIRE(n_full >= 3);
    std::string first;
    {
        context ctx(*m, kv_params(type::Q4_KIVI, dir));
        first = test::generate_like_llama2c(ctx, prompt, int(toks.size()) + 40);
        CHECK(ctx.store().metrics().pages_missed == uint64_t(n_full));
    }
    {
        context ctx(*m, kv_params(type::Q4_KIVI, dir));
        CHECK(test::generate_like_llama2c(ctx, prompt, int(toks.size()) + 40) == first);
        CHECK(ctx.n_reused() == int32_t(toks.size()));
        CHECK(ctx.store().metrics().pages_hit == uint64_t(n_full));
        CHECK(ctx.store().metrics().pages_missed == 0);
    }
}
