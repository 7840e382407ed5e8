// K/V pages: layout, quantization, conversion, key bounds, and page_attend
// against its scalar twin page_attend_scalar, page_attend_ref and the dense
// attention reference.
#include "kvcache/kv-cache.h"
#include "kvcache/page.h"
#include "quant/isa.h"
#include "quant/fp16.h"
#include "quant/quant.h"
#include "tensor/ops.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace gloas;

namespace {

using test::randn;

page_geometry make_geometry(int P, int n_layer, int n_head_kv, int head_dim) {
    return page_geometry(P, n_layer, n_head_kv, head_dim);
}

// K/V of a sequence: (n_layer, n_tok, n_embd_kv) each.
struct kv_seq {
    int n_tok = 0;
    std::vector<float> k, v;
};

kv_seq random_seq(const page_geometry & g, int n_tok, std::mt19937 & rng) {
    kv_seq s;
    s.n_tok = n_tok;
    s.k = randn(rng, size_t(g.n_layer) * n_tok * g.n_embd_kv());
    s.v = randn(rng, size_t(g.n_layer) * n_tok * g.n_embd_kv());
    return s;
}

// Pages of type t holding the sequence, the last one filled up to n_tok; the
// unwritten tail of every open page starts as NaN. Each page is page_bytes + 64
// bytes (so a kernel reading past a page would show under ASan only if it read
// far).
std::vector<std::vector<char>> make_pages(const page_geometry & g, const kv_seq & s, type t) {
    const int P = g.page_tokens, ne = g.n_embd_kv();
    std::vector<std::vector<char>> pages;
    std::vector<float> open(size_t(g.n_rows()) * P);
    for (int p0 = 0; p0 < s.n_tok; p0 += P) {
        std::fill(open.begin(), open.end(), NAN);
        const int n = std::min(P, s.n_tok - p0);
        for (int il = 0; il < g.n_layer; ++il)
            for (int i = 0; i < n; ++i) {
                const size_t off = (size_t(il) * s.n_tok + p0 + i) * ne;
                page_put_token(g, open.data(), il, i, s.k.data() + off, s.v.data() + off);
            }
        if (t != type::F32 && n < P)  // a partial page is only quantized once filled: pad with zeros
            for (float & x : open) if (std::isnan(x)) x = 0.0f;
        std::vector<char> page(g.page_bytes(t));
        if (t == type::F32) std::memcpy(page.data(), open.data(), page.size());
        else page_quantize(g, open.data(), t, page.data());
        pages.push_back(std::move(page));
    }
    return pages;
}

struct state_buf {
    std::vector<float> m, l, acc;
    attn_state s;
    state_buf(int group, int head_dim) : m(size_t(group)), l(size_t(group)), acc(size_t(group) * head_dim) {
        s = attn_state{m.data(), l.data(), acc.data()};
        attn_state_init(s, group, head_dim);
    }
};

// page_attend, page_attend_scalar, page_attend_ref, and page_attend streaming
// in the next page (of type `next_t` where given: its own pages of that type,
// else the next page of the chain; the last page's next is the first)
enum class kernel { FAST, SCALAR, REF, FAST_NEXT };

// Output (group, head_dim) of query heads q (already scaled) of KV head hk of
// layer il over the first n_tok tokens of the pages, with kernel k.
std::vector<float> attend_pages(const page_geometry & g, type t, const std::vector<std::vector<char>> & pages,
                                int n_tok, int il, int hk, const float * q, int group, kernel k,
                                const std::vector<std::vector<char>> * next_pages = nullptr, type next_t = type::F32) {
    state_buf st(group, g.head_dim);
    const size_t n_pages = pages.size();
    for (size_t p = 0; p < n_pages && int(p) * g.page_tokens < n_tok; ++p) {
        const int n = std::min<int>(g.page_tokens, n_tok - int(p) * g.page_tokens);
        const char * next = next_pages ? (*next_pages)[(p + 1) % next_pages->size()].data() : pages[(p + 1) % n_pages].data();
        switch (k) {
        case kernel::FAST:      page_attend(g, t, pages[p].data(), il, hk, n, q, group, st.s); break;
        case kernel::SCALAR:    page_attend_scalar(g, t, pages[p].data(), il, hk, n, q, group, st.s); break;
        case kernel::REF:       page_attend_ref(g, t, pages[p].data(), il, hk, n, q, group, st.s); break;
        case kernel::FAST_NEXT: page_attend(g, t, pages[p].data(), il, hk, n, q, group, st.s, next, next_pages ? next_t : t); break;
        }
    }
    std::vector<float> out(size_t(group) * g.head_dim);
    attn_state_finish(st.s, group, g.head_dim, out.data());
    return out;
}

bool bitwise_equal(const std::vector<float> & a, const std::vector<float> & b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

double max_abs(const std::vector<float> & x) {
    double m = 0.0;
    for (float v : x) m = std::max(m, double(std::fabs(v)));
    return m;
}

double max_abs_diff(const std::vector<float> & a, const std::vector<float> & b) {
    double m = 0.0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
    return m;
}

double cosine(const std::vector<float> & a, const std::vector<float> & b) {
    double ab = 0.0, aa = 0.0, bb = 0.0;
    for (size_t i = 0; i < a.size(); ++i) {
        ab += double(a[i]) * b[i];
        aa += double(a[i]) * a[i];
        bb += double(b[i]) * b[i];
    }
    return ab / std::sqrt(aa * bb);
}

bool all_finite(const std::vector<float> & x) {
    for (float v : x) if (!std::isfinite(v)) return false;
    return true;
}

const type PAGE_TYPES[] = {type::F32, type::F16, type::BF16, type::Q8_0, type::Q4_0};

bool integer_pages(type t) { return t == type::Q8_0 || t == type::Q4_0; }  // page.h: the integer algorithms

// Bound of |page_attend_scalar - page_attend_ref| relative to max(1, max |ref|):
// float rounding for the float types; for Q8_0 the integer algorithm's
// 8-bit query and probabilities (largest seen over the cases of
// the test below: 0.006 for D = 1, 0.020 for D >= 5, where few tokens weigh);
// for Q4_0 its 16-bit query and 15-bit probabilities (largest seen: 1.6e-4
// for D = 1, 7.4e-5 for D >= 5).
double scalar_vs_ref_bound(type t) { return t == type::Q8_0 ? 0.04 : t == type::Q4_0 ? 5e-4 : 2e-6; }

} // namespace

TEST_CASE("page and sequence geometries take a model's K/V shape whole") {
    kv_shape s;
    s.n_layer = 3;
    s.n_head_kv = 2;
    s.head_dim = 8;
    const page_geometry g(64, s);
    CHECK(g.page_tokens == 64);
    CHECK(g.n_layer == 3);
    CHECK(g.n_head_kv == 2);
    CHECK(g.head_dim == 8);
    CHECK(g.n_embd_kv() == 16);
    CHECK(g.n_rows() == 3 * 2 * 16);
    const page_geometry h(64, 3, 2, 8);  // the same, from the numbers
    CHECK(h.page_bytes(type::Q8_0) == g.page_bytes(type::Q8_0));
    const kv_geometry q(g, 4, 512);
    CHECK(q.n_layer == 3);
    CHECK(q.n_head_kv == 2);
    CHECK(q.head_dim == 8);
    CHECK(q.n_head == 4);
    CHECK(q.n_ctx == 512);
}

TEST_CASE("page layout: put tokens, quantize, dequantize rows") {
    std::mt19937 rng(1);
    for (int P : {16, 32, 64}) {
        for (int D : {5, 8, 64}) {
            const page_geometry g = make_geometry(P, 2, 2, D);
            const int ne = g.n_embd_kv();
            const kv_seq s = random_seq(g, P, rng);
            std::vector<float> open(size_t(g.n_rows()) * P, NAN);
            for (int il = 0; il < g.n_layer; ++il)
                for (int i = 0; i < P; ++i) {
                    const size_t off = (size_t(il) * P + i) * ne;
                    page_put_token(g, open.data(), il, i, s.k.data() + off, s.v.data() + off);
                }
            // every value where the layout says: row (layer, K|V, channel), column token
            int misplaced = 0;
            for (int il = 0; il < g.n_layer; ++il)
                for (int kind = 0; kind < 2; ++kind)
                    for (int c = 0; c < ne; ++c)
                        for (int i = 0; i < P; ++i) {
                            const float want = (kind == 0 ? s.k : s.v)[(size_t(il) * P + i) * ne + c];
                            misplaced += open[size_t(g.row_index(il, kind, c)) * P + i] != want;
                        }
            REQUIRE(misplaced == 0);
            for (type t : PAGE_TYPES) {
                if (!g.valid_for(t)) continue;
                CAPTURE(P); CAPTURE(D); CAPTURE(std::string(type_name(t)));
                std::vector<char> page(g.page_bytes(t));
                page_quantize(g, open.data(), t, page.data());
                const size_t rb = g.row_bytes(t);
                std::vector<char> want(rb);
                int out_of_bound = 0;
                std::vector<float> row(static_cast<size_t>(P));
                for (int64_t r = 0; r < g.n_rows(); ++r) {
                    const float * x = open.data() + r * P;
                    traits(t).from_float_ref(x, want.data(), P);  // the quantizer's bytes, row by row
                    REQUIRE(std::memcmp(want.data(), page.data() + size_t(r) * rb, rb) == 0);
                    traits(t).to_float(page.data() + size_t(r) * rb, row.data(), P);
                    for (int b = 0; b < P; b += int(traits(t).blck_size)) {
                        const int nb = int(traits(t).blck_size);
                        float amax = 0.0f;
                        for (int i = b; i < b + nb; ++i) amax = std::max(amax, std::fabs(x[i]));
                        for (int i = b; i < b + nb; ++i) {
                            float bound = 0.0f;
                            switch (t) {
                            case type::F16:  bound = std::fabs(x[i]) * 0x1p-11f + 0x1p-25f; break;  // + half the subnormal step
                            case type::BF16: bound = std::fabs(x[i]) * 0x1p-8f; break;
                            case type::Q8_0: bound = amax * (0.5f / 127.0f + 0x1p-10f); break;  // half a step + fp16 scale
                            case type::Q4_0: bound = amax * (1.0f / 8.0f + 0x1p-8f); break;     // a step at the clamped end
                            default: break;
                            }
                            out_of_bound += !(std::fabs(row[size_t(i)] - x[i]) <= bound);
                        }
                    }
                }
                REQUIRE(out_of_bound == 0);
            }
        }
    }
}

TEST_CASE("page_convert: Q8_0 -> Q4_0 is quantizing the dequantized values; F32 -> T is page_quantize") {
    std::mt19937 rng(2);
    for (int P : {32, 64}) {
        const page_geometry g = make_geometry(P, 3, 2, 8);
        const kv_seq s = random_seq(g, P, rng);
        const std::vector<char> q8 = make_pages(g, s, type::Q8_0)[0];
        const std::vector<char> f32 = make_pages(g, s, type::F32)[0];
        std::vector<char> q4(g.page_bytes(type::Q4_0));
        page_convert(g, q8.data(), type::Q8_0, type::Q4_0, q4.data());
        std::vector<float> row(static_cast<size_t>(P));
        std::vector<char> want(g.row_bytes(type::Q4_0));
        for (int64_t r = 0; r < g.n_rows(); ++r) {
            dequantize_row_q8_0(reinterpret_cast<const block_q8_0 *>(q8.data() + size_t(r) * g.row_bytes(type::Q8_0)), row.data(), P);
            quantize_row_q4_0_ref(row.data(), reinterpret_cast<block_q4_0 *>(want.data()), P);
            REQUIRE(std::memcmp(want.data(), q4.data() + size_t(r) * want.size(), want.size()) == 0);
        }
        for (type t : PAGE_TYPES) {
            std::vector<char> a(g.page_bytes(t)), b(g.page_bytes(t));
            page_convert(g, f32.data(), type::F32, t, a.data());
            page_quantize(g, reinterpret_cast<const float *>(f32.data()), t, b.data());
            CHECK(a == b);
        }
    }
}

TEST_CASE("page_convert: values that are not finite become 0, the others convert as usual") {
    const page_geometry g{32, 1, 1, 2};
    const int64_t n = g.n_rows() * g.page_tokens;
    std::vector<float> page(static_cast<size_t>(n)), clean;
    for (int64_t i = 0; i < n; ++i) page[size_t(i)] = float(i % 7) - 3.0f;
    page[3] = INFINITY;
    page[40] = -INFINITY;
    page[77] = NAN;
    clean = page;
    for (float & x : clean)
        if (!std::isfinite(x)) x = 0.0f;
    for (type to : {type::Q4_0, type::Q8_0, type::F16}) {
        std::vector<char> got(g.page_bytes(to)), want(g.page_bytes(to));
        page_convert(g, page.data(), type::F32, to, got.data());
        page_quantize(g, clean.data(), to, want.data());
        CHECK(got == want);
        std::vector<float> back(static_cast<size_t>(g.page_tokens));
        for (int64_t r = 0; r < g.n_rows(); ++r) {
            traits(to).to_float(got.data() + size_t(r) * g.row_bytes(to), back.data(), g.page_tokens);
            for (float x : back) CHECK(std::isfinite(x));
        }
    }
}

TEST_CASE("attn_state: init and finish") {
    state_buf st(3, 4);
    for (int h = 0; h < 3; ++h) {
        CHECK(std::isinf(st.m[size_t(h)]));
        CHECK(st.m[size_t(h)] < 0.0f);
        CHECK(st.l[size_t(h)] == 0.0f);
    }
    std::vector<float> out(12, 1.0f);
    attn_state_finish(st.s, 3, 4, out.data());  // no tokens: zeros, not NaN
    for (float x : out) CHECK(x == 0.0f);
    st.l[1] = 2.0f;
    st.acc[5] = 3.0f;
    attn_state_finish(st.s, 3, 4, out.data());
    CHECK(out[5] == 1.5f);
}

TEST_CASE("page_attend equals its scalar twin, and the twin is near page_attend_ref: every type, head_dim, group, page size and fill") {
    std::mt19937 rng(3);
    int cases = 0;
    double worst[2][2] = {};  // Q8_0, Q4_0: largest |scalar - ref| / max(1, max |ref|), D < 5 and D >= 5
    for (type t : PAGE_TYPES) {
        // 20: no multiple of 8, the portable kernel on every variant; 24: 3 vectors of 8 tokens
        for (int P : {16, 20, 24, 32, 64}) {
            for (int D : {1, 5, 8, 64, 128}) {
                const page_geometry g = make_geometry(P, 2, 2, D);
                if (!g.valid_for(t)) continue;
                for (int n_last : {1, 7, 31, 32, 33, 63, 64}) {
                    if (n_last > P || (D == 128 && n_last != 7 && n_last != 33)) continue;  // 128: a sample, for time
                    const int n_tok = P + n_last;  // a full page and a partial one, through one state
                    const kv_seq s = random_seq(g, n_tok, rng);
                    const auto pages = make_pages(g, s, t);
                    for (int group : {1, 2, 8, 13}) {  // head chunks of 1, 2, 8, 8 + 4 + 1
                        CAPTURE(std::string(type_name(t))); CAPTURE(P); CAPTURE(D); CAPTURE(n_last); CAPTURE(group);
                        const std::vector<float> q = randn(rng, size_t(group) * D, 1.0f / std::sqrt(float(D)));
                        const auto ref = attend_pages(g, t, pages, n_tok, 1, 1, q.data(), group, kernel::REF);
                        const auto twin = attend_pages(g, t, pages, n_tok, 1, 1, q.data(), group, kernel::SCALAR);
                        const auto out = attend_pages(g, t, pages, n_tok, 1, 1, q.data(), group, kernel::FAST);
                        REQUIRE(all_finite(out));
                        REQUIRE(max_abs_diff(out, twin) <= 2e-6 * std::max(1.0, max_abs(twin)));
                        // the integer algorithms: the same integers, float operations and order
                        // (page.h), in the variants with FMA (quant/isa.h)
                        if (integer_pages(t) && isa::active() != isa::variant::scalar) REQUIRE(bitwise_equal(out, twin));
                        // streaming the next page in changes nothing
                        REQUIRE(bitwise_equal(attend_pages(g, t, pages, n_tok, 1, 1, q.data(), group, kernel::FAST_NEXT), out));
                        const double e = max_abs_diff(twin, ref) / std::max(1.0, max_abs(ref));
                        REQUIRE(e <= scalar_vs_ref_bound(t));
                        if (integer_pages(t)) worst[t == type::Q4_0][D >= 5] = std::max(worst[t == type::Q4_0][D >= 5], e);
                        ++cases;
                    }
                }
            }
        }
    }
    MESSAGE("page_attend vs page_attend_scalar vs page_attend_ref: ", cases, " cases; largest relative error vs ref: q8_0 ",
            worst[0][0], " (D = 1), ", worst[0][1], " (D >= 5); q4_0 ", worst[1][0], " (D = 1), ", worst[1][1], " (D >= 5)");
}

TEST_CASE("page_put_token into an F16 open page gives the F16 page of the F32 open page") {
    // Tokens written out of order into a page of two layers and GQA heads:
    // the F16 staging of kv_sequence (page_staging_type) must be, element for
    // element, what page_quantize makes of the F32 open page.
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.0f, 3.0f);
    const page_geometry g = make_geometry(32, 2, 3, 5);
    std::vector<float> open(size_t(g.n_rows()) * 32, 0.0f);
    std::vector<uint16_t> open16(open.size(), 0);
    std::vector<float> k(size_t(g.n_embd_kv())), v(k.size());
    for (int i = 0; i < 2 * 32; ++i) {
        const int il = i % 2, t = (i / 2 * 7) % 32;
        for (auto & x : k) x = nd(rng);
        for (auto & x : v) x = nd(rng);
        page_put_token(g, open.data(), il, t, k.data(), v.data());
        page_put_token(g, open16.data(), il, t, k.data(), v.data());
    }
    std::vector<uint16_t> page(open.size());
    page_quantize(g, open.data(), type::F16, page.data());
    CHECK(std::memcmp(page.data(), open16.data(), page.size() * sizeof(uint16_t)) == 0);
    CHECK(page_staging_type(type::F16) == type::F16);
    CHECK(page_staging_type(type::Q8_0) == type::F16);
    CHECK(page_staging_type(type::F32) == type::F32);
    CHECK(page_staging_type(type::Q4_0) == type::F32);
}

TEST_CASE("page_attend on Q8_0 and Q4_0 pages made by hand") {
    // One KV head, D = 4, one window: K channel c of token t is c == t % 4 ?
    // 1 : 0 (one Q8_0 block per row, scale 1/127 after quantization), V
    // channel c of token t is t (c + 1) / 32. A query that picks channel 0
    // strongly attends tokens 0, 4, 8, ... equally.
    const page_geometry g = make_geometry(32, 1, 1, 4);
    std::vector<float> open(size_t(g.n_rows()) * 32, 0.0f);
    for (int t = 0; t < 32; ++t) {
        float k[4], v[4];
        for (int c = 0; c < 4; ++c) {
            k[c] = c == t % 4 ? 1.0f : 0.0f;
            v[c] = float(t) * float(c + 1) / 32.0f;
        }
        page_put_token(g, open.data(), 0, t, k, v);
    }
    for (type t : {type::Q8_0, type::Q4_0}) {
        CAPTURE(std::string(type_name(t)));
        std::vector<char> page(g.page_bytes(t));
        page_quantize(g, open.data(), t, page.data());
        const float q[4] = {40.0f, 0.0f, 0.0f, 0.0f};  // exp(-40): the other tokens weigh nothing
        for (auto k : {kernel::FAST, kernel::SCALAR}) {
            state_buf st(1, 4);
            if (k == kernel::FAST) page_attend(g, t, page.data(), 0, 0, 32, q, 1, st.s);
            else page_attend_scalar(g, t, page.data(), 0, 0, 32, q, 1, st.s);
            float out[4];
            attn_state_finish(st.s, 1, 4, out);
            // mean of t over t = 0, 4, ..., 28 is 14: v_c = 14 (c + 1) / 32, up to V's quantization
            for (int c = 0; c < 4; ++c) CHECK(out[c] == doctest::Approx(14.0 * (c + 1) / 32.0).epsilon(t == type::Q8_0 ? 0.01 : 0.1));
            CHECK(st.m[0] == doctest::Approx(40.0).epsilon(1e-3));  // up to K's fp16 scale
        }
    }
}

TEST_CASE("page_attend over F32 pages equals test::attention_ref over the same K/V") {
    std::mt19937 rng(4);
    for (int P : {16, 32, 64}) {
        for (int D : {8, 64}) {
            for (int n_head_kv : {1, 4}) {
                for (int group : {1, 2, 8}) {
                    for (int n_tok : {1, 31, 100}) {
                        CAPTURE(P); CAPTURE(D); CAPTURE(n_head_kv); CAPTURE(group); CAPTURE(n_tok);
                        const page_geometry g = make_geometry(P, 1, n_head_kv, D);
                        const int n_head = n_head_kv * group;
                        const kv_seq s = random_seq(g, n_tok, rng);
                        const auto pages = make_pages(g, s, type::F32);
                        const std::vector<float> q = randn(rng, size_t(n_head) * D);
                        const float scale = 1.0f / std::sqrt(float(D));
                        std::vector<float> ref(size_t(n_head) * D);
                        test::attention_ref(ref.data(), q.data(), s.k.data(), s.v.data(), n_tok, n_head, n_head_kv, D,
                                            g.n_embd_kv(), scale);
                        std::vector<float> qs(q.size());
                        for (size_t i = 0; i < q.size(); ++i) qs[i] = q[i] * scale;
                        for (kernel k : {kernel::REF, kernel::SCALAR, kernel::FAST}) {
                            std::vector<float> out;
                            for (int hk = 0; hk < n_head_kv; ++hk) {
                                const auto o = attend_pages(g, type::F32, pages, n_tok, 0, hk, qs.data() + size_t(hk) * group * D,
                                                            group, k);
                                out.insert(out.end(), o.begin(), o.end());
                            }
                            CAPTURE(int(k));
                            REQUIRE(max_abs_diff(out, ref) <= 1e-5 * max_abs(ref));
                        }
                    }
                }
            }
        }
    }
}

TEST_CASE("quantized pages against the F32 reference: measured error bounds") {
    // Gaussian K, V (sigma 1) and q, 1/sqrt(D) scale, TinyLlama's head shape,
    // 512 tokens in pages of 32: the output error of each page type.
    std::mt19937 rng(5);
    const int D = 64, group = 8, n_head_kv = 2, n_tok = 512;
    const page_geometry g = make_geometry(32, 1, n_head_kv, D);
    const float scale = 1.0f / std::sqrt(float(D));
    struct bound { type t; double max_err; double min_cos; };
    // measured (this seed, max |ref| 0.26): f16 max abs error 1.1e-4, 1 - cosine 5e-8;
    // bf16 7.6e-4, 3e-6; q8_0 4.1e-3, 7.3e-5 (2.5e-3, 3.5e-5 of it from the
    // pages, the rest from the integer algorithm's 8-bit query and
    // probabilities); q4_0 2.6e-2, 7.2e-3
    const bound bounds[] = {
        {type::F16, 5e-4, 1.0 - 5e-7},
        {type::BF16, 3e-3, 1.0 - 2e-5},
        {type::Q8_0, 1e-2, 1.0 - 2e-4},
        {type::Q4_0, 0.1, 0.97},
    };
    const kv_seq s = random_seq(g, n_tok, rng);
    const int n_head = n_head_kv * group;
    const std::vector<float> q = randn(rng, size_t(n_head) * D);
    std::vector<float> ref(size_t(n_head) * D);
    test::attention_ref(ref.data(), q.data(), s.k.data(), s.v.data(), n_tok, n_head, n_head_kv, D, g.n_embd_kv(), scale);
    std::vector<float> qs(q.size());
    for (size_t i = 0; i < q.size(); ++i) qs[i] = q[i] * scale;
    for (const bound & b : bounds) {
        const auto pages = make_pages(g, s, b.t);
        std::vector<float> out;
        for (int hk = 0; hk < n_head_kv; ++hk) {
            const auto o = attend_pages(g, b.t, pages, n_tok, 0, hk, qs.data() + size_t(hk) * group * D, group, kernel::FAST);
            out.insert(out.end(), o.begin(), o.end());
        }
        const double err = max_abs_diff(out, ref), cs = cosine(out, ref);
        MESSAGE(std::string(type_name(b.t)), ": max abs error ", err, ", 1 - cosine ", 1.0 - cs, " (max |ref| ", max_abs(ref), ")");
        CAPTURE(std::string(type_name(b.t)));
        CHECK(err <= b.max_err);
        CHECK(cs >= b.min_cos);
    }
}

TEST_CASE("page_key_bounds: element-wise min and max of the keys; the Quest bound holds") {
    std::mt19937 rng(6);
    for (int P : {32, 64}) {
        for (int D : {1, 8, 64}) {
            const page_geometry g = make_geometry(P, 2, 3, D);
            const kv_seq s = random_seq(g, P, rng);
            const std::vector<char> f32 = make_pages(g, s, type::F32)[0];
            const std::vector<char> q8 = make_pages(g, s, type::Q8_0)[0];
            const float * open = reinterpret_cast<const float *>(f32.data());
            for (int n : {1, 7, 32, P}) {
                for (int hk = 0; hk < g.n_head_kv; ++hk) {
                    CAPTURE(P); CAPTURE(D); CAPTURE(n); CAPTURE(hk);
                    std::vector<float> lo(static_cast<size_t>(D)), hi(static_cast<size_t>(D));
                    page_key_bounds(g, open, 1, hk, n, lo.data(), hi.data());
                    for (int d = 0; d < D; ++d) {
                        float wlo = INFINITY, whi = -INFINITY;
                        for (int i = 0; i < n; ++i) {
                            const float k = s.k[(size_t(1) * P + i) * g.n_embd_kv() + hk * D + d];
                            wlo = std::min(wlo, k);
                            whi = std::max(whi, k);
                        }
                        REQUIRE(lo[size_t(d)] == wlo);
                        REQUIRE(hi[size_t(d)] == whi);
                    }
                    // Quest: sum_d max(q_d min_d, q_d max_d) >= q.k_t for every token
                    const std::vector<float> q = randn(rng, size_t(D));
                    double ub = 0.0;
                    for (int d = 0; d < D; ++d) ub += std::max(q[size_t(d)] * lo[size_t(d)], q[size_t(d)] * hi[size_t(d)]);
                    for (int i = 0; i < n; ++i) {
                        double dot = 0.0;
                        for (int d = 0; d < D; ++d) dot += double(q[size_t(d)]) * s.k[(size_t(1) * P + i) * g.n_embd_kv() + hk * D + d];
                        REQUIRE(dot <= ub + 1e-5);
                    }
                    // a quantized page: the bounds of its dequantized keys
                    page_key_bounds(g, type::Q8_0, q8.data(), 1, hk, n, lo.data(), hi.data());
                    std::vector<float> row(static_cast<size_t>(P));
                    for (int d = 0; d < D; ++d) {
                        const size_t r = size_t(g.row_index(1, 0, hk * D + d));
                        traits(type::Q8_0).to_float(q8.data() + r * g.row_bytes(type::Q8_0), row.data(), P);
                        REQUIRE(lo[size_t(d)] == *std::min_element(row.begin(), row.begin() + n));
                        REQUIRE(hi[size_t(d)] == *std::max_element(row.begin(), row.begin() + n));
                    }
                }
            }
        }
    }
}

TEST_CASE("page_attend_multi: a chunk of causal queries over the pages equals page_attend and the dense reference") {
    std::mt19937 rng(7);
    for (type t : PAGE_TYPES) {
        for (int P : {32, 64}) {
            for (int D : {5, 64}) {
                for (int group : {1, 3, 8}) {
                    CAPTURE(std::string(type_name(t))); CAPTURE(P); CAPTURE(D); CAPTURE(group);
                    const page_geometry g = make_geometry(P, 2, 2, D);
                    const int n_tok = 2 * P + 9, n_q = 13, pos0 = n_tok - n_q;  // queries at the last 13 positions
                    const kv_seq s = random_seq(g, n_tok, rng);
                    const auto pages = make_pages(g, s, t);
                    const std::vector<float> q = randn(rng, size_t(n_q) * group * D, 1.0f / std::sqrt(float(D)));
                    const int nh = n_q * group;
                    state_buf fast(nh, D), twin(nh, D), ref(nh, D);
                    std::vector<int32_t> n_valid(static_cast<size_t>(n_q));
                    for (size_t p = 0; p < pages.size(); ++p) {
                        for (int i = 0; i < n_q; ++i)  // query at pos0 + i sees positions [0, pos0 + i]
                            n_valid[size_t(i)] = std::max(0, std::min(P, pos0 + i + 1 - int(p) * P));
                        page_attend_multi(g, t, pages[p].data(), 1, 0, n_q, n_valid.data(), q.data(), group, fast.s);
                        page_attend_multi_scalar(g, t, pages[p].data(), 1, 0, n_q, n_valid.data(), q.data(), group, twin.s);
                        page_attend_multi_ref(g, t, pages[p].data(), 1, 0, n_q, n_valid.data(), q.data(), group, ref.s);
                    }
                    std::vector<float> out(size_t(nh) * D), want(size_t(nh) * D), exact(size_t(nh) * D);
                    attn_state_finish(fast.s, nh, D, out.data());
                    attn_state_finish(twin.s, nh, D, want.data());
                    attn_state_finish(ref.s, nh, D, exact.data());
                    REQUIRE(all_finite(out));
                    REQUIRE(max_abs_diff(out, want) <= 2e-6 * std::max(1.0, max_abs(want)));
                    REQUIRE(max_abs_diff(want, exact) <= scalar_vs_ref_bound(t) * std::max(1.0, max_abs(exact)));
                    // each query token alone through page_attend
                    for (int i = 0; i < n_q; ++i) {
                        const int n_i = pos0 + i + 1;
                        const auto one = attend_pages(g, t, pages, n_i, 1, 0, q.data() + size_t(i) * group * D, group, kernel::FAST);
                        const std::vector<float> mine(out.begin() + size_t(i) * group * D, out.begin() + size_t(i + 1) * group * D);
                        REQUIRE(max_abs_diff(mine, one) <= 2e-6 * std::max(1.0, max_abs(one)));
                    }
                    if (t != type::F32) continue;
                    // F32 pages: the dense reference over positions [0, pos0 + i]
                    std::vector<float> kl(s.k.begin() + size_t(n_tok) * g.n_embd_kv(), s.k.end());  // layer 1
                    std::vector<float> vl(s.v.begin() + size_t(n_tok) * g.n_embd_kv(), s.v.end());
                    for (int i = 0; i < n_q; ++i) {
                        std::vector<float> d(size_t(group) * D);
                        // KV head 0 of 2: query heads [0, group) of a 2*group-head layer read it
                        std::vector<float> q2(size_t(2 * group) * D, 0.0f);
                        std::copy(q.begin() + size_t(i) * group * D, q.begin() + size_t(i + 1) * group * D, q2.begin());
                        std::vector<float> o2(q2.size());
                        test::attention_ref(o2.data(), q2.data(), kl.data(), vl.data(), pos0 + i + 1, 2 * group, 2, D,
                                            g.n_embd_kv(), 1.0f);
                        std::copy(o2.begin(), o2.begin() + size_t(group) * D, d.begin());
                        const std::vector<float> mine(out.begin() + size_t(i) * group * D, out.begin() + size_t(i + 1) * group * D);
                        REQUIRE(max_abs_diff(mine, d) <= 1e-5 * max_abs(d));
                    }
                }
            }
        }
    }
}

TEST_CASE("page_attend_multi: a query token with no token of the page keeps its state") {
    const page_geometry g = make_geometry(32, 1, 1, 8);
    std::mt19937 rng(8);
    const kv_seq s = random_seq(g, 32, rng);
    const auto pages = make_pages(g, s, type::Q8_0);
    const std::vector<float> q = randn(rng, 3 * 2 * 8);
    state_buf st(6, 8);
    const int32_t n_valid[3] = {0, 5, 0};
    page_attend_multi(g, type::Q8_0, pages[0].data(), 0, 0, 3, n_valid, q.data(), 2, st.s);
    for (int h : {0, 1, 4, 5}) {
        CHECK(std::isinf(st.m[size_t(h)]));
        CHECK(st.l[size_t(h)] == 0.0f);
    }
    for (int i = 0; i < 8; ++i) CHECK(st.acc[size_t(i)] == 0.0f);
    CHECK(st.l[2] > 0.0f);
    page_prefetch(g, type::Q8_0, pages[0].data(), 0, 0);  // a hint: no effect to check but no fault
}

TEST_CASE("page_attend with the next page streamed in: the same bits, whatever the next page's type") {
    std::mt19937 rng(10);
    int cases = 0;
    for (type t : PAGE_TYPES) {
        for (int P : {32, 64}) {
            for (int D : {5, 64, 260}) {  // 260: the portable kernel
                const page_geometry g = make_geometry(P, 3, 2, D);
                const int n_tok = 2 * P + 3;
                const kv_seq s = random_seq(g, n_tok, rng);
                const auto pages = make_pages(g, s, t);
                for (type tn : PAGE_TYPES) {
                    const auto next = make_pages(g, random_seq(g, P, rng), tn);
                    for (int group : {1, 8}) {
                        CAPTURE(std::string(type_name(t))); CAPTURE(std::string(type_name(tn))); CAPTURE(P); CAPTURE(D);
                        CAPTURE(group);
                        const std::vector<float> q = randn(rng, size_t(group) * D, 1.0f / std::sqrt(float(D)));
                        for (int il : {0, 2}) {
                            const auto out = attend_pages(g, t, pages, n_tok, il, 1, q.data(), group, kernel::FAST);
                            REQUIRE(bitwise_equal(attend_pages(g, t, pages, n_tok, il, 1, q.data(), group, kernel::FAST_NEXT,
                                                               &next, tn), out));
                            ++cases;
                        }
                    }
                }
            }
        }
    }
    MESSAGE(cases, " cases");
}

TEST_CASE("Q4_0 pages: the 16-bit query and probabilities at small, usual and peaked scales, one outlier channel") {
    // The int16 query is relative to each head's largest |q_c dk_c| and the
    // 15-bit probabilities to each window's largest: an outlier key channel
    // and query scales from flat (x0.01) to peaked (x8) softmax, against the
    // exact attention over the same pages and the scalar twin. (Peaked, the
    // query's rounding, up to sq / 2 per channel times |k| <= 8, moves the
    // scores that matter the most.)
    std::mt19937 rng(11);
    const int P = 32, group = 8, n_tok = 3 * P + 17;
    double worst = 0.0;
    for (int D : {8, 64, 128}) {
        const page_geometry g = make_geometry(P, 1, 1, D);
        kv_seq s = random_seq(g, n_tok, rng);
        for (int t = 0; t < n_tok; ++t) s.k[size_t(t) * D + 3] *= 20.0f;  // channel 3: 20x the others
        const auto pages = make_pages(g, s, type::Q4_0);
        for (float qs : {0.01f, 1.0f, 8.0f}) {
            CAPTURE(D); CAPTURE(qs);
            const std::vector<float> q = randn(rng, size_t(group) * D, qs / std::sqrt(float(D)));
            const auto ref = attend_pages(g, type::Q4_0, pages, n_tok, 0, 0, q.data(), group, kernel::REF);
            const auto twin = attend_pages(g, type::Q4_0, pages, n_tok, 0, 0, q.data(), group, kernel::SCALAR);
            const auto out = attend_pages(g, type::Q4_0, pages, n_tok, 0, 0, q.data(), group, kernel::FAST);
            REQUIRE(all_finite(out));
            REQUIRE(max_abs_diff(out, twin) <= 2e-6 * std::max(1.0, max_abs(twin)));
            const double e = max_abs_diff(twin, ref) / std::max(1.0, max_abs(ref));
            worst = std::max(worst, e);
            CHECK(e <= (qs > 1.0f ? 1.5e-3 : scalar_vs_ref_bound(type::Q4_0)));  // measured: 2e-4 (x1), 4.2e-4 (x8)
        }
    }
    MESSAGE("Q4_0, largest relative error vs ref: ", worst);
}

TEST_CASE("page_attend beyond the register kernel's head_dim (the portable path)") {
    std::mt19937 rng(9);
    for (type t : {type::F32, type::Q8_0, type::Q4_0}) {
        const int D = 260, P = 32, group = 2;
        const page_geometry g = make_geometry(P, 1, 1, D);
        const kv_seq s = random_seq(g, P + 5, rng);
        const auto pages = make_pages(g, s, t);
        const std::vector<float> q = randn(rng, size_t(group) * D, 1.0f / std::sqrt(float(D)));
        const auto ref = attend_pages(g, t, pages, P + 5, 0, 0, q.data(), group, kernel::REF);
        const auto twin = attend_pages(g, t, pages, P + 5, 0, 0, q.data(), group, kernel::SCALAR);
        const auto out = attend_pages(g, t, pages, P + 5, 0, 0, q.data(), group, kernel::FAST);
        CAPTURE(std::string(type_name(t)));
        REQUIRE(max_abs_diff(out, twin) <= 2e-6 * std::max(1.0, max_abs(twin)));
        REQUIRE(max_abs_diff(twin, ref) <= scalar_vs_ref_bound(t) * std::max(1.0, max_abs(ref)));
    }
}

TEST_CASE("page_score_bounds_f16 of one page vs reference: group sizes, odd head_dim") {
    std::mt19937 rng(77);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (int32_t hd : {1, 5, 8, 16, 64, 80, 128}) {
        for (int32_t group : {1, 2, 8, 13}) {
            std::vector<float> q(size_t(group) * size_t(hd)), lo(static_cast<size_t>(hd)), hi(static_cast<size_t>(hd));
            std::vector<uint16_t> tile(2 * size_t(hd) * SUMMARY_TILE);  // one page: column 0
            for (auto & x : q) x = nd(rng);
            for (int32_t d = 0; d < hd; ++d) {
                const float a = nd(rng), b = nd(rng);
                tile[summary_index(hd, 0, 0, d)] = fp16_floor(std::min(a, b));
                tile[summary_index(hd, 0, 1, d)] = fp16_ceil(std::max(a, b));
                lo[size_t(d)] = fp16_to_fp32(tile[summary_index(hd, 0, 0, d)]);
                hi[size_t(d)] = fp16_to_fp32(tile[summary_index(hd, 0, 1, d)]);
            }
            float f = 0.0f;
            page_score_bounds_f16(q.data(), group, hd, tile.data(), 1, &f);
            const float r = page_score_bound_ref(q.data(), group, hd, lo.data(), hi.data());
            double mag = 0.0;  // sum of the terms' magnitudes bounds the rounding
            for (int32_t g = 0; g < group; ++g)
                for (int32_t d = 0; d < hd; ++d)
                    mag = std::max(mag, double(std::fabs(q[size_t(g * hd + d)])) * (std::fabs(lo[size_t(d)]) + std::fabs(hi[size_t(d)])));
            CHECK_MESSAGE(std::fabs(double(f) - double(r)) <= 1e-6 * mag * hd + 1e-30, "hd=", hd, " group=", group);
        }
    }
}
