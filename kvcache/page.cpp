// Page layout, quantization, the online-softmax state, the scalar reference
// attention over one page and the key bounds. The fast attention kernels are
// in page-attend.cpp.
#include "kvcache/page.h"
#include "kvcache/page-neon.h"

#include "quant/fp16.h"
#include "quant/quant-mse.h"
#include "quant/simd.h"
#include "base/error.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

namespace gloas {

#if GLOAS_ISA_BASE
type page_row_type(type t, int32_t kind) {
    if (t == type::Q4_KIVI) return kind == 0 ? type::Q4_1 : type::Q4_0;
    return t;
}

size_t page_row_bytes(const page_geometry & g, type t, int32_t kind) { return row_size(page_row_type(t, kind), g.page_tokens); }

size_t page_row_offset(const page_geometry & g, type t, int32_t layer, int32_t kind, int32_t c) {
    if (t != type::Q4_KIVI) return size_t(g.row_index(layer, kind, c)) * g.row_bytes(t);
    const size_t D = size_t(g.head_dim), rbk = page_row_bytes(g, t, 0), rbv = page_row_bytes(g, t, 1);
    const size_t piece = size_t(layer) * size_t(g.n_head_kv) + size_t(c) / D;  // D K rows, then D V rows
    return piece * D * (rbk + rbv) + (kind == 0 ? 0 : D * rbk) + (size_t(c) % D) * (kind == 0 ? rbk : rbv);
}

void page_row_to_float(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kind, int32_t c,
                       float * out) {
    traits(page_row_type(t, kind)).to_float(static_cast<const char *>(page) + page_row_offset(g, t, layer, kind, c), out,
                                            g.page_tokens);
}

namespace {

// Quantizes one row of P values into a row of block type rt: Q4_0 rows with
// the error-minimizing scale (quant-mse.h), the others with the type's quantizer.
void quantize_page_row(type rt, const float * x, char * dst, int64_t P) {
    if (rt == type::Q4_0) quantize_row_q4_0_mse(x, reinterpret_cast<block_q4_0 *>(dst), P);
    else traits(rt).from_float(x, dst, P);
}

} // namespace

namespace {

template <class T>
void put_token(const page_geometry & g, T * open_page, int32_t layer, int32_t tok, const T * k, const T * v) {
    GLOAS_ASSERT(layer >= 0 && layer < g.n_layer && tok >= 0 && tok < g.page_tokens);
    const int32_t D = g.head_dim;
    const int64_t P = g.page_tokens;
    for (int32_t h = 0; h < g.n_head_kv; ++h) {
        T * kr = open_page + g.row_index(layer, 0, h * D) * P + tok;  // (D, P) rows of the piece
        T * vr = open_page + g.row_index(layer, 1, h * D) * P + tok;
        for (int32_t d = 0; d < D; ++d) {
            kr[d * P] = k[h * D + d];
            vr[d * P] = v[h * D + d];
        }
    }
}

} // namespace

void page_put_token(const page_geometry & g, float * open_page, int32_t layer, int32_t tok,
                    const float * k, const float * v) {
    put_token(g, open_page, layer, tok, k, v);
}

void page_put_token(const page_geometry & g, uint16_t * open_page, int32_t layer, int32_t tok,
                    const float * k, const float * v) {
    static thread_local std::vector<uint16_t> kv;  // k then v, converted as rows (the SIMD conversion)
    const size_t E = size_t(g.n_embd_kv());
    kv.resize(2 * E);
    fp32_to_fp16_row(k, kv.data(), int64_t(E));
    fp32_to_fp16_row(v, kv.data() + E, int64_t(E));
    put_token(g, open_page, layer, tok, kv.data(), kv.data() + E);
}

void page_quantize(const page_geometry & g, const float * open_page, type t, void * dst) {
    GLOAS_ASSERT(g.valid_for(t));
    const int64_t P = g.page_tokens;
    char * out = static_cast<char *>(dst);
    if (t == type::Q4_KIVI) {  // rows in page order: row r of the open page is row r of the page
        const int32_t E = g.n_embd_kv();
        for (int32_t il = 0; il < g.n_layer; ++il)
            for (int32_t kind = 0; kind < 2; ++kind)
                for (int32_t c = 0; c < E; ++c)
                    quantize_page_row(page_row_type(t, kind), open_page + g.row_index(il, kind, c) * P,
                                      out + page_row_offset(g, t, il, kind, c), P);
        return;
    }
    const size_t rb = g.row_bytes(t);
    const from_float_fn q = traits(t).from_float;
    for (int64_t r = 0; r < g.n_rows(); ++r) q(open_page + r * P, out + size_t(r) * rb, P);
}

void page_convert(const page_geometry & g, const void * src, type from, type to, void * dst) {
    GLOAS_ASSERT(g.valid_for(from) && g.valid_for(to));
    const int64_t P = g.page_tokens;
    std::vector<float> row(static_cast<size_t>(P));  // one row at a time, per page (not per token)
    const char * in = static_cast<const char *>(src);
    char * out = static_cast<char *>(dst);
    const int32_t E = g.n_embd_kv();
    for (int32_t il = 0; il < g.n_layer; ++il)
        for (int32_t kind = 0; kind < 2; ++kind) {
            const type rf = page_row_type(from, kind), rt = page_row_type(to, kind);
            for (int32_t c = 0; c < E; ++c) {
                traits(rf).to_float(in + page_row_offset(g, from, il, kind, c), row.data(), P);
                // An overflowed K/V value (inf, NaN: a model's, or a stored page's)
                // would make the quantizer's float-to-int conversions undefined.
                for (float & x : row)
                    if (!std::isfinite(x)) x = 0.0f;
                char * o = out + page_row_offset(g, to, il, kind, c);
                if (to == type::Q4_KIVI) quantize_page_row(rt, row.data(), o, P);
                else traits(rt).from_float(row.data(), o, P);
            }
        }
}

void attn_state_init(attn_state & s, int32_t group, int32_t head_dim) {
    for (int32_t h = 0; h < group; ++h) {
        s.m[h] = -INFINITY;
        s.l[h] = 0.0f;
    }
    std::fill(s.acc, s.acc + int64_t(group) * head_dim, 0.0f);
}

void attn_state_finish(const attn_state & s, int32_t group, int32_t head_dim, float * out) {
    for (int32_t h = 0; h < group; ++h) {
        const float inv = s.l[h] > 0.0f ? 1.0f / s.l[h] : 0.0f;  // no tokens seen: zeros
        for (int32_t d = 0; d < head_dim; ++d) out[int64_t(h) * head_dim + d] = s.acc[int64_t(h) * head_dim + d] * inv;
    }
}

// The reference: every K/V row of the head is dequantized whole (P values)
// with the type's to_float, scores and sums in double, one online-softmax
// step for the page's n tokens.
void page_attend_ref(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                     int32_t n, const float * q, int32_t group, attn_state & s) {
    GLOAS_ASSERT(g.valid_for(t) && layer >= 0 && layer < g.n_layer && kv_head >= 0 && kv_head < g.n_head_kv);
    GLOAS_ASSERT(n >= 1 && n <= g.page_tokens && group >= 1);
    const int32_t D = g.head_dim, P = g.page_tokens;

    std::vector<float> row(static_cast<size_t>(P));
    std::vector<double> sc(size_t(group) * size_t(n), 0.0);  // (group, n) scores, then probabilities
    for (int32_t d = 0; d < D; ++d) {
        page_row_to_float(g, t, page, layer, 0, kv_head * D + d, row.data());
        for (int32_t h = 0; h < group; ++h) {
            const double qd = q[int64_t(h) * D + d];
            for (int32_t i = 0; i < n; ++i) sc[size_t(h) * n + i] += qd * double(row[size_t(i)]);
        }
    }
    std::vector<float> corr(static_cast<size_t>(group));
    for (int32_t h = 0; h < group; ++h) {
        double * sh = sc.data() + size_t(h) * n;
        float mx = -INFINITY;
        for (int32_t i = 0; i < n; ++i) {
            sh[i] = double(float(sh[i]));  // scores are floats, as in the fast kernel
            mx = std::fmax(mx, float(sh[i]));
        }
        const float m_new = std::fmax(s.m[h], mx);
        corr[size_t(h)] = std::exp(s.m[h] - m_new);  // 0 on the first page (m = -inf)
        double sum = 0.0;
        for (int32_t i = 0; i < n; ++i) {
            sh[i] = std::exp(sh[i] - double(m_new));
            sum += sh[i];
        }
        s.l[h] = float(double(s.l[h]) * corr[size_t(h)] + sum);
        s.m[h] = m_new;
    }
    for (int32_t d = 0; d < D; ++d) {
        page_row_to_float(g, t, page, layer, 1, kv_head * D + d, row.data());
        for (int32_t h = 0; h < group; ++h) {
            const double * ph = sc.data() + size_t(h) * n;
            double o = 0.0;
            for (int32_t i = 0; i < n; ++i) o += ph[i] * double(row[size_t(i)]);
            float & a = s.acc[int64_t(h) * D + d];
            a = float(double(a) * corr[size_t(h)] + o);
        }
    }
}

void page_attend_multi_ref(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                           int32_t n_q, const int32_t * n_valid, const float * q, int32_t group, attn_state & s) {
    const int64_t D = g.head_dim;
    for (int32_t i = 0; i < n_q; ++i) {
        GLOAS_ASSERT(n_valid[i] >= 0 && n_valid[i] <= g.page_tokens);
        if (n_valid[i] == 0) continue;
        attn_state si{s.m + int64_t(i) * group, s.l + int64_t(i) * group, s.acc + int64_t(i) * group * D};
        page_attend_ref(g, t, page, layer, kv_head, n_valid[i], q + int64_t(i) * group * D, group, si);
    }
}

void page_key_bounds(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                     int32_t n, float * kmin, float * kmax) {
    GLOAS_ASSERT(g.valid_for(t) && layer >= 0 && layer < g.n_layer && kv_head >= 0 && kv_head < g.n_head_kv);
    GLOAS_ASSERT(n >= 1 && n <= g.page_tokens);
    const int32_t D = g.head_dim;
    const char * base = static_cast<const char *>(page);
    std::vector<float> row;
    if (t != type::F32) row.resize(size_t(g.page_tokens));
    for (int32_t d = 0; d < D; ++d) {
        const char * kr = base + page_row_offset(g, t, layer, 0, kv_head * D + d);
        const float * x;
        if (t == type::F32) {
            x = reinterpret_cast<const float *>(kr);
        } else {
            page_row_to_float(g, t, page, layer, 0, kv_head * D + d, row.data());
            x = row.data();
        }
        float lo = x[0], hi = x[0];
        for (int32_t i = 1; i < n; ++i) {
            lo = std::min(lo, x[i]);
            hi = std::max(hi, x[i]);
        }
        kmin[d] = lo;
        kmax[d] = hi;
    }
}

void page_key_bounds(const page_geometry & g, const float * open_page, int32_t layer, int32_t kv_head,
                     int32_t n, float * kmin, float * kmax) {
    page_key_bounds(g, type::F32, open_page, layer, kv_head, n, kmin, kmax);
}

float page_score_bound_ref(const float * q, int32_t group, int32_t head_dim, const float * kmin, const float * kmax) {
    float best = -INFINITY;
    for (int32_t g = 0; g < group; ++g) {
        const float * qg = q + size_t(g) * size_t(head_dim);
        float b = 0.0f;
        for (int32_t d = 0; d < head_dim; ++d) b += std::max(qg[d] * kmin[d], qg[d] * kmax[d]);
        best = std::max(best, b);
    }
    return best;
}

uint16_t fp16_floor(float x) {
    const uint16_t h = fp32_to_fp16(x);
    if (fp16_to_fp32(h) <= x) return h;
    // one F16 step towards -inf: a positive value shrinks, +0 becomes the
    // smallest negative subnormal, a negative one grows in magnitude
    if (h == 0x0000) return 0x8001;
    return (h & 0x8000) ? uint16_t(h + 1) : uint16_t(h - 1);
}

uint16_t fp16_ceil(float x) {
    const uint16_t h = fp32_to_fp16(x);
    if (fp16_to_fp32(h) >= x) return h;
    if (h == 0x8000) return 0x0001;
    return (h & 0x8000) ? uint16_t(h - 1) : uint16_t(h + 1);
}

void page_key_bounds_f16(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                         int32_t n, uint16_t * kmin, uint16_t * kmax) {
    const size_t D = size_t(g.head_dim);
    std::vector<float> b(2 * D);
    float * mn = b.data(), * mx = mn + D;
    page_key_bounds(g, t, page, layer, kv_head, n, mn, mx);
    for (size_t d = 0; d < D; ++d) {
        kmin[d] = fp16_floor(mn[d]);
        kmax[d] = fp16_ceil(mx[d]);
    }
}

float page_score_bound_f16_ref(const float * q, int32_t group, int32_t head_dim, const uint16_t * kmin, const uint16_t * kmax) {
    std::vector<float> mn(static_cast<size_t>(head_dim)), mx(static_cast<size_t>(head_dim));
    for (int32_t d = 0; d < head_dim; ++d) {
        mn[size_t(d)] = fp16_to_fp32(kmin[d]);
        mx[size_t(d)] = fp16_to_fp32(kmax[d]);
    }
    return page_score_bound_ref(q, group, head_dim, mn.data(), mx.data());
}
#endif

namespace {

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
// Heads q (GN, hd) over columns [0, n), a tile of 32 at a time: out[c] = the
// largest head's bound, or max(out[c], it) unless `first`.
template <int GN>
void bounds_chunk(const float * q, int32_t hd, const uint16_t * tiles, int32_t n, float * out, bool first) {
    static_assert(SUMMARY_TILE == 32, "two vectors per tile");
    // sel[g * hd + d]: every lane where q[g][d] >= 0 (its term reads kmax), none where it reads kmin
    const size_t n_sel = size_t(GN) * size_t(hd);
    __mmask16 * sel = static_cast<__mmask16 *>(isa::thread_scratch(isa::scratch_slot::page_bounds, sizeof(__mmask16) * n_sel));
    for (size_t i = 0; i < n_sel; ++i) sel[i] = q[i] >= 0.0f ? __mmask16(0xFFFF) : __mmask16(0);
    const __m512 inf = _mm512_set1_ps(INFINITY);
    const size_t tile = 2 * size_t(hd) * SUMMARY_TILE;
    for (int32_t c0 = 0; c0 < n; c0 += SUMMARY_TILE) {
        const __mmask16 m0 = simd::tail_mask(n - c0), m1 = n - c0 > 16 ? simd::tail_mask(n - c0 - 16) : __mmask16(0);
        const uint16_t * lo = tiles + size_t(c0 / SUMMARY_TILE) * tile;
        const uint16_t * hi = lo + size_t(hd) * SUMMARY_TILE;
        __m512 a0[GN], a1[GN];
        for (int g = 0; g < GN; ++g) a0[g] = a1[g] = _mm512_setzero_ps();
        for (int32_t d = 0; d < hd; ++d, lo += SUMMARY_TILE, hi += SUMMARY_TILE) {
            const __m512 lo0 = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m0, lo));
            const __m512 lo1 = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m1, lo + 16));
            const __m512 hi0 = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m0, hi));
            const __m512 hi1 = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m1, hi + 16));
            for (int g = 0; g < GN; ++g) {
                const __m512 qv = _mm512_set1_ps(q[g * hd + d]);
                const __mmask16 k = sel[size_t(g * hd + d)];
                a0[g] = _mm512_fmadd_ps(qv, _mm512_mask_blend_ps(k, lo0, hi0), a0[g]);
                a1[g] = _mm512_fmadd_ps(qv, _mm512_mask_blend_ps(k, lo1, hi1), a1[g]);
            }
        }
        __m512 b0 = first ? _mm512_set1_ps(-INFINITY) : _mm512_maskz_loadu_ps(m0, out + c0);
        __m512 b1 = first ? _mm512_set1_ps(-INFINITY) : _mm512_maskz_loadu_ps(m1, out + c0 + 16);
        for (int g = 0; g < GN; ++g) {
            b0 = _mm512_max_ps(b0, _mm512_mask_mov_ps(a0[g], _mm512_cmp_ps_mask(a0[g], a0[g], _CMP_UNORD_Q), inf));
            b1 = _mm512_max_ps(b1, _mm512_mask_mov_ps(a1[g], _mm512_cmp_ps_mask(a1[g], a1[g], _CMP_UNORD_Q), inf));
        }
        _mm512_mask_storeu_ps(out + c0, m0, b0);
        _mm512_mask_storeu_ps(out + c0 + 16, m1, b1);
    }
}
#endif

} // namespace

#if GLOAS_ISA_BASE
void page_score_bounds_f16_ref(const float * q, int32_t group, int32_t head_dim, const uint16_t * tiles, int32_t n,
                               float * out) {
    GLOAS_ASSERT(group >= 1 && head_dim >= 1);
    for (int32_t c = 0; c < n; ++c) {
        double best = -INFINITY;
        for (int32_t g = 0; g < group; ++g) {
            const float * qg = q + size_t(g) * size_t(head_dim);
            double b = 0.0;
            for (int32_t d = 0; d < head_dim; ++d) {
                const uint16_t bound = tiles[summary_index(head_dim, c, qg[d] >= 0.0f ? 1 : 0, d)];
                b += double(qg[d]) * double(fp16_to_fp32(bound));
            }
            best = std::max(best, std::isnan(b) ? double(INFINITY) : b);
        }
        out[c] = float(best);
    }
}
#endif

GLOAS_ISA_BEGIN

void page_score_bounds_f16(const float * q, int32_t group, int32_t head_dim, const uint16_t * tiles, int32_t n,
                           float * out) {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    GLOAS_ASSERT(group >= 1 && head_dim >= 1);
    int32_t g = 0;
    auto run = [&](auto gn) {
        constexpr int GN = decltype(gn)::value;
        bounds_chunk<GN>(q + size_t(g) * size_t(head_dim), head_dim, tiles, n, out, g == 0);
        g += GN;
    };
    while (group - g >= 8) run(std::integral_constant<int, 8>());
    if (group - g >= 4) run(std::integral_constant<int, 4>());
    if (group - g >= 2) run(std::integral_constant<int, 2>());
    if (group - g >= 1) run(std::integral_constant<int, 1>());
#elif defined(GLOAS_NEON)
    page_kernels::score_bounds_f16_neon(q, group, head_dim, tiles, n, out);
#else
    page_score_bounds_f16_ref(q, group, head_dim, tiles, n, out);
#endif
}

GLOAS_ISA_END

} // namespace gloas
