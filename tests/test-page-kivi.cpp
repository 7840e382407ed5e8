// Q4_KIVI pages (kvcache/page.h): the layout of their two row types, the
// quantization (K rows Q4_1 per channel, V rows Q4_0), key bounds,
// conversion, and page_attend's kernels (AVX-512, AVX2, NEON, scalar) under
// every SIMD variant this CPU runs against the scalar twin and page_attend_ref.
#include "kvcache/page.h"
#include "quant/blocks.h"
#include "quant/fp16.h"
#include "quant/isa.h"
#include "quant/quant-mse.h"
#include "quant/quant.h"
#include "quant/types.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

using namespace gloas;

namespace {

constexpr type KIVI = type::Q4_KIVI;

page_geometry make_geometry(int P, int n_layer, int n_head_kv, int head_dim) {
    page_geometry g;
    g.page_tokens = P;
    g.n_layer = n_layer;
    g.n_head_kv = n_head_kv;
    g.head_dim = head_dim;
    return g;
}

// A full F32 open page of random K/V: keys with a per-channel offset (as
// real keys have: some channels far from 0) and one outlier channel per head.
std::vector<float> random_open_page(const page_geometry & g, std::mt19937 & rng) {
    const int P = g.page_tokens, E = g.n_embd_kv();
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> off(static_cast<size_t>(E), 0.0f);
    for (int c = 0; c < E; ++c) off[size_t(c)] = (c % 3 == 0 ? 4.0f : 0.5f) * nd(rng) + (c % g.head_dim == 1 ? 12.0f : 0.0f);
    std::vector<float> open(size_t(g.n_rows()) * size_t(P));
    std::vector<float> k(static_cast<size_t>(E)), v(static_cast<size_t>(E));
    for (int il = 0; il < g.n_layer; ++il)
        for (int t = 0; t < P; ++t) {
            for (int c = 0; c < E; ++c) {
                k[size_t(c)] = off[size_t(c)] + nd(rng);
                v[size_t(c)] = nd(rng);
            }
            page_put_token(g, open.data(), il, t, k.data(), v.data());
        }
    return open;
}

// Row (layer, kind, c) of an F32 open page.
const float * open_row(const page_geometry & g, const std::vector<float> & open, int il, int kind, int c) {
    return open.data() + g.row_index(il, kind, c) * g.page_tokens;
}

std::vector<float> attend(const page_geometry & g, const std::vector<char> & page, int il, int h, int n,
                          const std::vector<float> & q, int group, int which) {
    const int D = g.head_dim;
    std::vector<float> m(static_cast<size_t>(group)), l(m.size()), acc(m.size() * size_t(D)), out(acc.size());
    attn_state s{m.data(), l.data(), acc.data()};
    attn_state_init(s, group, D);
    if (which == 0) page_attend_ref(g, KIVI, page.data(), il, h, n, q.data(), group, s);
    else if (which == 1) page_attend_scalar(g, KIVI, page.data(), il, h, n, q.data(), group, s);
    else page_attend(g, KIVI, page.data(), il, h, n, q.data(), group, s, page.data(), KIVI);
    attn_state_finish(s, group, D, out.data());
    return out;
}

bool bitwise_equal(const std::vector<float> & a, const std::vector<float> & b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

double rel_diff(const std::vector<float> & a, const std::vector<float> & b) {
    double mag = 1.0, d = 0.0;
    for (size_t i = 0; i < a.size(); ++i) {
        mag = std::max(mag, double(std::fabs(b[i])));
        d = std::max(d, double(std::fabs(a[i] - b[i])));
    }
    return d / mag;
}

} // namespace

TEST_CASE("q4_kivi: a page-only type in the table, its rows Q4_1 (K) and Q4_0 (V), 0.297x F16") {
    type t{};
    REQUIRE(type_from_name("q4_kivi", &t));
    CHECK(t == KIVI);
    CHECK_FALSE(type_is_weight(KIVI));
    CHECK_FALSE(bool(traits(KIVI).to_float));
    CHECK(page_row_type(KIVI, 0) == type::Q4_1);
    CHECK(page_row_type(KIVI, 1) == type::Q4_0);
    CHECK(page_row_type(type::Q8_0, 1) == type::Q8_0);
    const page_geometry g = make_geometry(32, 5, 4, 8);
    CHECK(g.page_bytes(KIVI) * 1000 / g.page_bytes(type::F16) == 296);  // 38 / 128 bytes per channel and 32 tokens
    CHECK(g.page_bytes(KIVI) * 100 <= g.page_bytes(type::F16) * 30);
}

TEST_CASE("q4_kivi layout: the rows tile the page, pieces where page_geometry puts them") {
    for (const page_geometry & g : {make_geometry(32, 2, 3, 8), make_geometry(64, 1, 2, 5), make_geometry(32, 1, 1, 128)}) {
        const size_t bytes = g.page_bytes(KIVI);
        std::vector<int> cover(bytes, 0);
        const int D = g.head_dim;
        for (int il = 0; il < g.n_layer; ++il)
            for (int kind = 0; kind < 2; ++kind)
                for (int c = 0; c < g.n_embd_kv(); ++c) {
                    const size_t o = page_row_offset(g, KIVI, il, kind, c), rb = page_row_bytes(g, KIVI, kind);
                    REQUIRE(o + rb <= bytes);
                    for (size_t i = 0; i < rb; ++i) ++cover[o + i];
                    if (kind == 0 && c % D == 0)  // a piece starts where the uniform layout's does
                        CHECK(o == size_t(g.row_index(il, 0, c)) * g.row_bytes(KIVI));
                }
        CHECK(std::all_of(cover.begin(), cover.end(), [](int x) { return x == 1; }));
        CHECK(page_row_bytes(g, KIVI, 0) == size_t(g.page_tokens / 32) * sizeof(block_q4_1));
        CHECK(page_row_bytes(g, KIVI, 1) == size_t(g.page_tokens / 32) * sizeof(block_q4_0));
    }
}

TEST_CASE("q4_kivi quantization: K per channel keeps offset channels to half a step, V as Q4_0 pages") {
    std::mt19937 rng(3);
    const page_geometry g = make_geometry(64, 2, 2, 8);
    const std::vector<float> open = random_open_page(g, rng);
    std::vector<char> page(g.page_bytes(KIVI));
    page_quantize(g, open.data(), KIVI, page.data());
    const int P = g.page_tokens;
    std::vector<float> row(static_cast<size_t>(P));
    double k_err_kivi = 0.0, k_err_q4_0 = 0.0;
    for (int il = 0; il < g.n_layer; ++il)
        for (int c = 0; c < g.n_embd_kv(); ++c) {
            const float * x = open_row(g, open, il, 0, c);
            page_row_to_float(g, KIVI, page.data(), il, 0, c, row.data());
            for (int b = 0; b < P / 32; ++b) {  // per block of 32 tokens: error <= d / 2 (+ F16 rounding of d and m)
                float lo = x[32 * b], hi = lo;
                for (int i = 0; i < 32; ++i) {
                    lo = std::min(lo, x[32 * b + i]);
                    hi = std::max(hi, x[32 * b + i]);
                }
                const float step = (hi - lo) / 15.0f, slack = 0.51f * step + 2e-3f * std::max(std::fabs(lo), std::fabs(hi));
                for (int i = 0; i < 32; ++i) CHECK(std::fabs(row[size_t(32 * b + i)] - x[32 * b + i]) <= slack);
            }
            std::vector<block_q4_0> q4(static_cast<size_t>(P / 32));
            std::vector<float> back(static_cast<size_t>(P));
            quantize_row_q4_0_mse(x, q4.data(), P);
            dequantize_row_q4_0(q4.data(), back.data(), P);
            for (int i = 0; i < P; ++i) {
                k_err_kivi += double(row[size_t(i)] - x[i]) * double(row[size_t(i)] - x[i]);
                k_err_q4_0 += double(back[size_t(i)] - x[i]) * double(back[size_t(i)] - x[i]);
            }
            // V: the Q4_0 page's row, byte for byte
            const float * xv = open_row(g, open, il, 1, c);
            quantize_row_q4_0_mse(xv, q4.data(), P);
            CHECK(std::memcmp(page.data() + page_row_offset(g, KIVI, il, 1, c), q4.data(), q4.size() * sizeof(block_q4_0)) == 0);
        }
    MESSAGE("K squared error, q4_kivi / q4_0 rows: ", k_err_kivi / k_err_q4_0);
    CHECK(k_err_kivi < 0.5 * k_err_q4_0);  // the offset channels
}

TEST_CASE("q4_kivi key bounds: the min and max of the dequantized keys") {
    std::mt19937 rng(5);
    const page_geometry g = make_geometry(32, 2, 2, 8);
    const std::vector<float> open = random_open_page(g, rng);
    std::vector<char> page(g.page_bytes(KIVI));
    page_quantize(g, open.data(), KIVI, page.data());
    std::vector<float> row(static_cast<size_t>(g.page_tokens)), kmin(static_cast<size_t>(g.head_dim)), kmax(kmin.size());
    for (int il = 0; il < g.n_layer; ++il)
        for (int h = 0; h < g.n_head_kv; ++h)
            for (int n : {32, 7}) {
                page_key_bounds(g, KIVI, page.data(), il, h, n, kmin.data(), kmax.data());
                for (int d = 0; d < g.head_dim; ++d) {
                    page_row_to_float(g, KIVI, page.data(), il, 0, h * g.head_dim + d, row.data());
                    CHECK(kmin[size_t(d)] == *std::min_element(row.begin(), row.begin() + n));
                    CHECK(kmax[size_t(d)] == *std::max_element(row.begin(), row.begin() + n));
                }
            }
}

TEST_CASE("q4_kivi page_convert: to and from other types through the dequantized rows") {
    std::mt19937 rng(9);
    const page_geometry g = make_geometry(32, 1, 2, 8);
    const std::vector<float> open = random_open_page(g, rng);
    std::vector<char> kivi(g.page_bytes(KIVI)), direct(g.page_bytes(KIVI)), f32(g.page_bytes(type::F32));
    page_quantize(g, open.data(), KIVI, direct.data());
    page_quantize(g, open.data(), type::F32, f32.data());
    page_convert(g, f32.data(), type::F32, KIVI, kivi.data());
    CHECK(kivi == direct);
    std::vector<char> q4(g.page_bytes(type::Q4_0)), want(g.page_bytes(type::Q4_0));
    page_convert(g, kivi.data(), KIVI, type::Q4_0, q4.data());
    std::vector<float> row(32);
    for (int kind = 0; kind < 2; ++kind)
        for (int c = 0; c < g.n_embd_kv(); ++c) {
            page_row_to_float(g, KIVI, kivi.data(), 0, kind, c, row.data());
            quantize_row_q4_0(row.data(), reinterpret_cast<block_q4_0 *>(want.data() + page_row_offset(g, type::Q4_0, 0, kind, c)), 32);
        }
    CHECK(q4 == want);
}

TEST_CASE("q4_kivi page_attend: every SIMD variant against the scalar twin, the twin against page_attend_ref") {
    const isa::variant start = isa::active();
    std::mt19937 rng(11);
    double worst_twin = 0.0, worst_fast = 0.0;
    int n_variants = 0;
    for (const page_geometry & g : {make_geometry(32, 2, 2, 8), make_geometry(64, 1, 2, 64), make_geometry(32, 1, 1, 128),
                                    make_geometry(32, 1, 2, 5), make_geometry(32, 1, 1, 40), make_geometry(32, 1, 1, 264)}) {
        const std::vector<float> open = random_open_page(g, rng);
        std::vector<char> page(g.page_bytes(KIVI));
        page_quantize(g, open.data(), KIVI, page.data());
        for (int group : {1, 3, 8, 11}) {
            std::normal_distribution<float> nd(0.0f, 1.0f / std::sqrt(float(g.head_dim)));
            std::vector<float> q(static_cast<size_t>(group * g.head_dim));
            for (float & x : q) x = nd(rng);
            for (int il = 0; il < g.n_layer; ++il)
                for (int h = 0; h < g.n_head_kv; ++h)
                    for (int n : {g.page_tokens, 1, 19, g.page_tokens - 5}) {
                        CAPTURE(g.head_dim);
                        CAPTURE(g.page_tokens);
                        CAPTURE(group);
                        CAPTURE(n);
                        // (a GLOAS_NATIVE=ON build has one variant: the twins only)
                        REQUIRE((isa::native_build() || isa::select(isa::variant::scalar)));
                        const std::vector<float> ref = attend(g, page, il, h, n, q, group, 0);
                        const std::vector<float> twin = attend(g, page, il, h, n, q, group, 1);
                        const double e = rel_diff(twin, ref);
                        worst_twin = std::max(worst_twin, e);
                        CHECK(e <= 1e-3);  // the 16-bit query and 15-bit probabilities
                        for (int vi = 0; vi < isa::N_VARIANTS; ++vi) {
                            const isa::variant v = isa::variant(vi);
                            if (isa::native_build() || !isa::supported(v)) continue;
                            REQUIRE(isa::select(v));
                            CAPTURE(isa::name(v));
                            const std::vector<float> fast = attend(g, page, il, h, n, q, group, 2);
                            const double f = rel_diff(fast, twin);
                            worst_fast = std::max(worst_fast, f);
                            CHECK(f <= 1e-4);  // the same integers; floats in another order
                            // NEON: the twin's float operations in its order (the
                            // twin of the same variant: the same compiler flags)
                            if (v == isa::variant::neon) CHECK(bitwise_equal(fast, attend(g, page, il, h, n, q, group, 1)));
                            if (g.head_dim == 8 && group == 1 && n == 1 && il == 0 && h == 0) ++n_variants;
                        }
                    }
        }
    }
    isa::select(start);
    MESSAGE("variants run: ", n_variants, "; largest relative difference: twin vs ref ", worst_twin,
            ", variants vs twin ", worst_fast);
}

TEST_CASE("q4_kivi page_attend_multi equals page_attend per query token") {
    std::mt19937 rng(13);
    const page_geometry g = make_geometry(32, 1, 2, 64);
    const std::vector<float> open = random_open_page(g, rng);
    std::vector<char> page(g.page_bytes(KIVI));
    page_quantize(g, open.data(), KIVI, page.data());
    const int group = 4, n_q = 3, D = g.head_dim;
    std::normal_distribution<float> nd(0.0f, 0.125f);
    std::vector<float> q(static_cast<size_t>(n_q * group * D));
    for (float & x : q) x = nd(rng);
    const int32_t n_valid[n_q] = {32, 0, 17};
    std::vector<float> m(static_cast<size_t>(n_q * group)), l(m.size()), acc(m.size() * size_t(D)), out(acc.size());
    attn_state s{m.data(), l.data(), acc.data()};
    attn_state_init(s, n_q * group, D);
    page_attend_multi(g, KIVI, page.data(), 0, 1, n_q, n_valid, q.data(), group, s);
    attn_state_finish(s, n_q * group, D, out.data());
    for (int i = 0; i < n_q; ++i) {
        if (n_valid[i] == 0) {
            for (int j = 0; j < group; ++j) CHECK(l[size_t(i * group + j)] == 0.0f);
            continue;
        }
        const std::vector<float> qi(q.begin() + i * group * D, q.begin() + (i + 1) * group * D);
        const std::vector<float> one = attend(g, page, 0, 1, n_valid[i], qi, group, 2);
        const std::vector<float> got(out.begin() + i * group * D, out.begin() + (i + 1) * group * D);
        CHECK(rel_diff(got, one) <= 1e-5);
    }
}
