// Sparse decode attention over page summaries (Quest).
#include "decoder/llama.h"
#include "decoder/model.h"
#include "kvcache/page.h"
#include "quant/fp16.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

using namespace gloas;

namespace {

std::unique_ptr<model> load_stories() { return model::load({test::require_model("stories260K.bin"), ""}); }

context_params params(type t, float ratio) {
    context_params cp;
    cp.kv.kv_type = t;
    cp.kv.dir = "";
    cp.sparse.ratio = ratio;
    return cp;
}

std::vector<int32_t> text_tokens(const model & m, size_t n) {
    std::vector<int32_t> t = m.tok.encode(test::read_file(test::require_data("tinystories-valid-excerpt.txt")), true);
    t.resize(std::min(t.size(), n));
    return t;
}

using test::top_token;

} // namespace

TEST_CASE("the page score bounds every key's q·k from above") {
    std::mt19937 rng(3);
    std::normal_distribution<float> gauss(0.0f, 1.0f);
    for (type t : {type::F32, type::F16, type::Q8_0, type::Q4_0}) {
        for (int32_t hd : {8, 64}) {
            const page_geometry g{32, 2, 2, hd};
            std::vector<float> open(size_t(g.n_rows()) * 32);
            std::vector<float> k(static_cast<size_t>(g.n_embd_kv())), v(static_cast<size_t>(g.n_embd_kv()));
            for (int32_t tok = 0; tok < 32; ++tok)
                for (int32_t il = 0; il < 2; ++il) {
                    for (auto & x : k) x = gauss(rng) * 2.0f + 0.5f;
                    for (auto & x : v) x = gauss(rng);
                    page_put_token(g, open.data(), il, tok, k.data(), v.data());
                }
            std::vector<uint8_t> page(g.page_bytes(t));
            page_quantize(g, open.data(), t, page.data());
            for (int32_t il = 0; il < 2; ++il)
                for (int32_t h = 0; h < 2; ++h) {
                    std::vector<float> mn(static_cast<size_t>(hd)), mx(static_cast<size_t>(hd));
                    page_key_bounds(g, t, page.data(), il, h, 32, mn.data(), mx.data());
                    // the keys as attention reads them
                    std::vector<float> rows(size_t(hd) * 32);
                    for (int32_t d = 0; d < hd; ++d) {
                        const uint8_t * row = page.data() + size_t(g.row_index(il, 0, h * hd + d)) * g.row_bytes(t);
                        traits(t).to_float(row, rows.data() + size_t(d) * 32, 32);
                    }
                    for (int trial = 0; trial < 50; ++trial) {
                        std::vector<float> q(static_cast<size_t>(hd));
                        for (auto & x : q) x = gauss(rng);
                        double bound = 0, best = -1e30;
                        for (int32_t d = 0; d < hd; ++d) bound += std::max(q[size_t(d)] * mn[size_t(d)], q[size_t(d)] * mx[size_t(d)]);
                        for (int32_t tok = 0; tok < 32; ++tok) {
                            double dot = 0;
                            for (int32_t d = 0; d < hd; ++d) dot += double(q[size_t(d)]) * rows[size_t(d) * 32 + size_t(tok)];
                            best = std::max(best, dot);
                        }
                        INFO("type " << type_name(t) << " head_dim " << hd);
                        CHECK(bound >= best - 1e-4 * (1 + std::fabs(best)));
                    }
                }
        }
    }
}

TEST_CASE("ratio 1 is exactly dense, and only selected pages are read") {
    auto m = load_stories();
    const std::vector<int32_t> toks = text_tokens(*m, 400);
    context dense(*m, params(type::Q8_0, 1.0f));
    context sparse(*m, params(type::Q8_0, 1.0f));
    dense.eval(toks.data(), 300);
    sparse.eval(toks.data(), 300);
    for (int i = 300; i < 340; ++i) {
        const float * a = dense.eval(&toks[size_t(i)], 1);
        const float * b = sparse.eval(&toks[size_t(i)], 1);
        CHECK(std::equal(a, a + m->hp.n_vocab, b));
    }

    // Page reads: prefill is dense; each decode step reads, per layer and KV
    // head, all sealed pages in the dense layers and sinks + recent + top
    // ceil(ratio * pages) in the others.
    context_params cp = params(type::Q8_0, 0.25f);
    cp.sparse.dense_layers = 2;
    context ctx(*m, cp);
    ctx.eval(toks.data(), 320);  // 10 sealed pages
    const uint64_t before = ctx.kv().page_reads();
    ctx.eval(&toks[320], 1);     // position 320: 10 sealed pages before its own
    const uint64_t reads = ctx.kv().page_reads() - before;
    const int32_t L = m->hp.n_layer, H = m->hp.n_head_kv;
    const uint64_t dense_part = uint64_t(2) * uint64_t(H) * 10;
    const uint64_t sparse_part = uint64_t(L - 2) * uint64_t(H) * (1 + 1 + 3);  // sink, recent, ceil(0.25*10)
    CHECK(reads == dense_part + sparse_part);
}

TEST_CASE("ratio 0.25 over stories260K's full context agrees with dense on the top token") {
    auto m = load_stories();
    const std::vector<int32_t> toks = text_tokens(*m, 512);
    REQUIRE(toks.size() == 512);
    for (type t : {type::F16, type::Q4_0}) {
        context dense(*m, params(t, 1.0f));
        context sparse(*m, params(t, 0.25f));
        test::top1_agreement same;
        for (size_t i = 0; i + 1 < toks.size(); ++i) {
            const int32_t a = top_token(dense.eval(&toks[i], 1), m->hp.n_vocab);
            const int32_t b = top_token(sparse.eval(&toks[i], 1), m->hp.n_vocab);
            if (i >= 128) same.add(a, b);  // positions with enough pages for sparsity to matter
        }
        same.check(std::string(type_name(t)) + " pages, ratio 0.25", "dense", 0.95);
    }
}

TEST_CASE("summaries in F16 are rounded outward, and the F16 score bound still bounds every key") {
    // fp16_floor / fp16_ceil: the nearest F16 on the right side, never past it.
    std::mt19937 rng(5);
    std::vector<float> xs = {0.0f, -0.0f, 1.0f, -1.0f, 1e-8f, -1e-8f, 65504.0f, -65504.0f, 3.14159f, -2.71828f, 6.1e-5f, -6.1e-5f};
    std::normal_distribution<float> gauss(0.0f, 1.0f);
    for (int i = 0; i < 2000; ++i) xs.push_back(gauss(rng) * std::pow(10.0f, float(int(rng() % 9) - 4)));
    int loose = 0;
    for (float x : xs) {
        const float lo = fp16_to_fp32(fp16_floor(x)), hi = fp16_to_fp32(fp16_ceil(x));
        INFO("x = " << x);
        CHECK(lo <= x);
        CHECK(hi >= x);
        // tight: within one F16 step (relative 2^-10, or a subnormal step near 0)
        loose += (hi - lo) > std::max(std::fabs(x) * 0x1p-9f, 0x1p-23f);
    }
    CHECK(loose == 0);

    // The bound over F16 summaries: its SIMD path against its scalar twin, and
    // never below the largest q·k of the page's keys.
    for (type t : {type::F16, type::Q8_0, type::Q4_0}) {
        for (int32_t hd : {8, 20, 64}) {
            const page_geometry g{32, 1, 1, hd};
            std::vector<float> open(size_t(g.n_rows()) * 32);
            std::vector<float> k(static_cast<size_t>(hd)), v(static_cast<size_t>(hd));
            for (int32_t tok = 0; tok < 32; ++tok) {
                for (auto & x : k) x = gauss(rng) * 3.0f - 0.5f;
                for (auto & x : v) x = gauss(rng);
                page_put_token(g, open.data(), 0, tok, k.data(), v.data());
            }
            std::vector<uint8_t> page(g.page_bytes(t));
            page_quantize(g, open.data(), t, page.data());
            std::vector<uint16_t> mn(static_cast<size_t>(hd)), mx(static_cast<size_t>(hd));
            page_key_bounds_f16(g, t, page.data(), 0, 0, 32, mn.data(), mx.data());
            std::vector<float> rows(size_t(hd) * 32);
            for (int32_t d = 0; d < hd; ++d)
                traits(t).to_float(page.data() + size_t(g.row_index(0, 0, d)) * g.row_bytes(t), rows.data() + size_t(d) * 32, 32);
            for (int32_t group : {1, 3, 8}) {
                std::vector<float> q(size_t(group) * size_t(hd));
                for (auto & x : q) x = gauss(rng);
                std::vector<uint16_t> tile(2 * size_t(hd) * SUMMARY_TILE);  // this page: column 0
                for (int32_t d = 0; d < hd; ++d) {
                    tile[summary_index(hd, 0, 0, d)] = mn[size_t(d)];
                    tile[summary_index(hd, 0, 1, d)] = mx[size_t(d)];
                }
                float fast = 0.0f;
                page_score_bounds_f16(q.data(), group, hd, tile.data(), 1, &fast);
                const float ref = page_score_bound_f16_ref(q.data(), group, hd, mn.data(), mx.data());
                INFO("type " << type_name(t) << " head_dim " << hd << " group " << group);
                CHECK(std::fabs(fast - ref) <= 1e-5f * (1.0f + std::fabs(ref)));
                double best = -1e30;
                for (int32_t gi = 0; gi < group; ++gi)
                    for (int32_t tok = 0; tok < 32; ++tok) {
                        double dot = 0;
                        for (int32_t d = 0; d < hd; ++d) dot += double(q[size_t(gi * hd + d)]) * rows[size_t(d) * 32 + size_t(tok)];
                        best = std::max(best, dot);
                    }
                CHECK(ref >= best - 1e-4 * (1 + std::fabs(best)));
            }
        }
    }
}

TEST_CASE("page_score_bounds_f16: many pages at once against the scalar twin and the per-page bound") {
    std::mt19937 rng(11);
    std::normal_distribution<float> gauss(0.0f, 1.0f);
    for (int32_t hd : {1, 5, 8, 64}) {
        for (int32_t group : {1, 2, 3, 8, 13}) {
            for (int32_t n : {1, 15, 16, 17, 33, 100}) {
                const int32_t n_tiles = (n + SUMMARY_TILE - 1) / SUMMARY_TILE;
                // NaN in the last tile's columns past n: never read
                std::vector<uint16_t> tiles(size_t(n_tiles) * 2 * size_t(hd) * SUMMARY_TILE, 0x7e00);
                std::vector<uint16_t> mn(size_t(n) * size_t(hd)), mx(size_t(n) * size_t(hd));  // (n, hd)
                for (int32_t c = 0; c < n; ++c)
                    for (int32_t d = 0; d < hd; ++d) {
                        const float a = gauss(rng) * 2.0f, b = gauss(rng) * 2.0f;
                        const size_t i = size_t(c) * size_t(hd) + size_t(d);
                        mn[i] = tiles[summary_index(hd, c, 0, d)] = fp16_floor(std::min(a, b));
                        mx[i] = tiles[summary_index(hd, c, 1, d)] = fp16_ceil(std::max(a, b));
                    }
                std::vector<float> q(size_t(group) * size_t(hd));
                for (auto & x : q) x = gauss(rng);
                std::vector<float> fast(static_cast<size_t>(n)), twin(static_cast<size_t>(n));
                page_score_bounds_f16(q.data(), group, hd, tiles.data(), n, fast.data());
                page_score_bounds_f16_ref(q.data(), group, hd, tiles.data(), n, twin.data());
                for (int32_t c = 0; c < n; ++c) {
                    const uint16_t * cmn = mn.data() + size_t(c) * size_t(hd), * cmx = mx.data() + size_t(c) * size_t(hd);
                    const float one = page_score_bound_f16_ref(q.data(), group, hd, cmn, cmx);
                    double mag = 0.0;  // the terms' magnitudes bound the rounding
                    for (int32_t g = 0; g < group; ++g)
                        for (int32_t d = 0; d < hd; ++d)
                            mag += std::fabs(double(q[size_t(g * hd + d)])) *
                                   (std::fabs(fp16_to_fp32(cmn[d])) + std::fabs(fp16_to_fp32(cmx[d])));
                    INFO("hd " << hd << " group " << group << " n " << n << " column " << c);
                    CHECK(std::fabs(double(fast[size_t(c)]) - double(twin[size_t(c)])) <= 1e-6 * mag + 1e-30);
                    CHECK(std::fabs(double(one) - double(twin[size_t(c)])) <= 1e-6 * mag + 1e-30);
                }
            }
        }
    }

    // An infinite bound times a zero query value: the page stays a candidate.
    const int32_t hd = 4, n = 20;
    std::vector<uint16_t> tiles(2 * size_t(hd) * SUMMARY_TILE);
    for (int32_t c = 0; c < n; ++c)
        for (int32_t d = 0; d < hd; ++d) {
            tiles[summary_index(hd, c, 0, d)] = fp16_floor(-1.0f);
            tiles[summary_index(hd, c, 1, d)] = fp16_ceil(1.0f);
        }
    tiles[summary_index(hd, 7, 1, 2)] = 0x7c00;  // +inf: a key past F16's range
    const std::vector<float> q = {0.5f, -0.25f, 0.0f, 1.0f};
    std::vector<float> fast(static_cast<size_t>(n)), twin(static_cast<size_t>(n));
    page_score_bounds_f16(q.data(), 1, hd, tiles.data(), n, fast.data());
    page_score_bounds_f16_ref(q.data(), 1, hd, tiles.data(), n, twin.data());
    for (int32_t c = 0; c < n; ++c) {
        const float want = c == 7 ? INFINITY : 1.75f;
        CHECK(fast[size_t(c)] == want);
        CHECK(twin[size_t(c)] == want);
    }
}
