// The AVX2 register kernel of the float page types, F32, F16 and BF16
// (page-kernels.h: attend_float; the AVX-512 one is in page-attend.cpp).
// The float algorithm of attend_portable (page-attend.cpp), its scalar twin,
// per window of 32 tokens (4 vectors of 8):
//   scores  s[g][t] += q[g][d] * K_d[t]: per 8 tokens and chunk of up to 8
//           heads, each K_d vector (widened once) reused by the chunk's
//           heads, one broadcast FMA per head
//   softmax per head, 8 tokens per vector (exp256_ps); a head's correction
//           exp(m_old - m_new) as the twin computes it
//   output  o[g][d] = sum_t p[g][t] V_d[t]: per 2 channels and chunk of up
//           to 4 heads, 8 accumulators of 8 tokens, then a transposing
//           horizontal sum per pair of heads gives their 2 channels
// Tokens past the window's last valid one are read (rows hold P tokens, P a
// multiple of 8) but never used: their scores are masked out and their V
// values zeroed, so the NaN of an unwritten open page row cannot reach the
// sums. Sums run in other orders than the twin's: equal within rounding.
#include "kvcache/page-kernels.h"

#include "quant/isa.h"
#include "base/error.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace gloas::page_kernels { inline namespace GLOAS_ISA {

#if defined(GLOAS_PAGE_AVX2)

namespace {

constexpr int FW = 32;  // tokens per window

using simd::load8;  // tokens t0 .. t0+7 of a row as floats

// Lanes below n (0..8) all ones, the others zero.
inline __m256 lanes_below(int n) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx));
}

// Lane j = the 8 lanes of a[j] summed, j < 4.
inline __m128 hsum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

// Scores of GN heads q (GN, D) over the window's nv vectors of tokens from
// w0, into p (GN rows of FW floats): a vector of tokens at a time.
template <type T, int GN>
void scores(const char * kr, size_t rb, int D, int w0, int nv, const float * q, float * p, next_prefetch & pf) {
    for (int k = 0; k < nv; ++k) {
        __m256 sc[GN];
        for (int g = 0; g < GN; ++g) sc[g] = _mm256_setzero_ps();
        const char * row = kr;
        for (int d = 0; d < D; ++d, row += rb) {
            pf.k_rows(1);
            const __m256 kv = load8<T>(row, w0 + 8 * k);
            #pragma GCC unroll 8
            for (int g = 0; g < GN; ++g) sc[g] = _mm256_fmadd_ps(_mm256_broadcast_ss(q + g * D + d), kv, sc[g]);
        }
        for (int g = 0; g < GN; ++g) _mm256_store_ps(p + g * FW + 8 * k, sc[g]);
    }
}

// One head's online-softmax step over its first nh (1..32) scores of p:
// probabilities in p (0 from nh to the window's nv vectors' end), m and l
// updated; returns the correction of its accumulator.
float softmax_step(float * p, int nh, int nv, float & m, float & l) {
    __m256 mx = _mm256_set1_ps(-INFINITY);
    for (int k = 0; k < nv; ++k)
        mx = _mm256_max_ps(mx, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), _mm256_load_ps(p + 8 * k), lanes_below(nh - 8 * k)));
    const float m_new = std::fmax(m, simd::hmax256(mx));
    const float corr = std::exp(m - m_new);  // 0 on the first window (m = -inf)
    const __m256 mv = _mm256_set1_ps(m_new);
    __m256 sum = _mm256_setzero_ps();
    for (int k = 0; k < nv; ++k) {
        const __m256 e = _mm256_and_ps(simd::exp256_ps(_mm256_sub_ps(_mm256_load_ps(p + 8 * k), mv)), lanes_below(nh - 8 * k));
        sum = _mm256_add_ps(sum, e);
        _mm256_store_ps(p + 8 * k, e);
    }
    l = l * corr + simd::hsum256(sum);
    m = m_new;
    return corr;
}

// acc (GN, D) = acc * corr + p V for GN (1, 2 or 4) heads: 2 channels at a
// time, the window's tokens past nw zeroed in V (vm: per vector, the lanes
// kept).
template <type T, int GN>
void output(const char * vr, size_t rb, int D, int w0, int nv, const __m256 * vm, const float * p, const float * corr,
            float * acc, next_prefetch & pf) {
    __m128 cv[(GN + 1) / 2];  // the corrections of each pair of heads, as the lanes of its outputs
    for (int g = 0; g < GN; g += 2) {
        const int g1 = std::min(g + 1, GN - 1);
        cv[g / 2] = _mm_setr_ps(corr[g], corr[g], corr[g1], corr[g1]);
    }
    for (int d0 = 0; d0 < D; d0 += 2) {
        const int nd = std::min(2, D - d0);
        const char * r0 = vr + size_t(d0) * rb;
        const char * r1 = nd == 2 ? r0 + rb : r0;  // past D: a repeat, unused
        pf.v_rows(nd);
        __m256 a[GN][2];
        for (int g = 0; g < GN; ++g) a[g][0] = a[g][1] = _mm256_setzero_ps();
        for (int k = 0; k < nv; ++k) {
            const __m256 v0 = _mm256_and_ps(load8<T>(r0, w0 + 8 * k), vm[k]);
            const __m256 v1 = _mm256_and_ps(load8<T>(r1, w0 + 8 * k), vm[k]);
            #pragma GCC unroll 4
            for (int g = 0; g < GN; ++g) {
                const __m256 pk = _mm256_load_ps(p + g * FW + 8 * k);
                a[g][0] = _mm256_fmadd_ps(pk, v0, a[g][0]);
                a[g][1] = _mm256_fmadd_ps(pk, v1, a[g][1]);
            }
        }
        // per pair of heads, lanes (g, c), (g, c + 1), (g + 1, c), (g + 1, c + 1)
        for (int g = 0; g < GN; g += 2) {
            const int g1 = std::min(g + 1, GN - 1);
            const __m128 o = hsum4(a[g][0], a[g][1], a[g1][0], a[g1][1]);
            float * x0 = acc + size_t(g) * size_t(D) + d0;
            if (GN > 1 && nd == 2) {
                float * x1 = x0 + D;
                const __m128 x = _mm_loadh_pi(_mm_loadl_pi(_mm_setzero_ps(), reinterpret_cast<const __m64 *>(x0)),
                                              reinterpret_cast<const __m64 *>(x1));
                const __m128 r = _mm_fmadd_ps(x, cv[g / 2], o);
                _mm_storel_pi(reinterpret_cast<__m64 *>(x0), r);
                _mm_storeh_pi(reinterpret_cast<__m64 *>(x1), r);
            } else {
                alignas(16) float ov[4];
                _mm_store_ps(ov, o);
                for (int gg = g; gg <= g1; ++gg)
                    for (int j = 0; j < nd; ++j) {
                        float & y = acc[size_t(gg) * size_t(D) + size_t(d0 + j)];
                        y = std::fma(y, corr[gg], ov[2 * (gg - g) + j]);
                    }
            }
        }
    }
}

template <type T>
void attend_float_t(const char * kr, const char * vr, size_t rb, int D, const head_counts & cnt, int n_heads,
                    const float * q, attn_state & s, next_prefetch & pf) {
    int n_max = 0;
    for (int h = 0; h < n_heads; ++h) n_max = std::max(n_max, cnt(h));
    // (n_heads, FW) scores, then probabilities; then the heads' corrections
    float * p = static_cast<float *>(
        isa::thread_scratch(isa::scratch_slot::page_scores, sizeof(float) * (size_t(n_heads) * FW + size_t(n_heads))));
    float * corr = p + size_t(n_heads) * FW;
    for (int w0 = 0; w0 < n_max; w0 += FW) {
        const int nw = std::min(FW, n_max - w0), nv = (nw + 7) / 8;
        __m256 vm[FW / 8];
        for (int k = 0; k < nv; ++k) vm[k] = lanes_below(nw - 8 * k);
        for_head_chunks(n_heads, [&](auto gn, int h) {
            scores<T, decltype(gn)::value>(kr, rb, D, w0, nv, q + size_t(h) * D, p + size_t(h) * FW, pf);
        });
        for (int h = 0; h < n_heads; ++h) {
            const int nh = std::max(0, std::min(nw, cnt(h) - w0));
            if (nh == 0) {  // no token of this head here: its state stays
                std::fill(p + size_t(h) * FW, p + size_t(h + 1) * FW, 0.0f);
                corr[h] = 1.0f;
                continue;
            }
            corr[h] = softmax_step(p + size_t(h) * FW, nh, nv, s.m[h], s.l[h]);
        }
        for (int h = 0; h < n_heads;) {
            float * acc = s.acc + size_t(h) * D;
            const int left = n_heads - h;
            if (left >= 4)      { output<T, 4>(vr, rb, D, w0, nv, vm, p + size_t(h) * FW, corr + h, acc, pf); h += 4; }
            else if (left >= 2) { output<T, 2>(vr, rb, D, w0, nv, vm, p + size_t(h) * FW, corr + h, acc, pf); h += 2; }
            else                { output<T, 1>(vr, rb, D, w0, nv, vm, p + size_t(h) * FW, corr + h, acc, pf); h += 1; }
        }
    }
}

} // namespace

void attend_float(type t, const char * kr, const char * vr, size_t rb, int D, const head_counts & cnt, int n_heads,
                  const float * q, attn_state & s, next_prefetch & pf) {
    switch (t) {
    case type::F32:  return attend_float_t<type::F32>(kr, vr, rb, D, cnt, n_heads, q, s, pf);
    case type::F16:  return attend_float_t<type::F16>(kr, vr, rb, D, cnt, n_heads, q, s, pf);
    case type::BF16: return attend_float_t<type::BF16>(kr, vr, rb, D, cnt, n_heads, q, s, pf);
    default: GLOAS_ASSERT(false && "attend_float: a float page type");
    }
}

#endif // GLOAS_PAGE_AVX2

}} // namespace gloas::page_kernels::GLOAS_ISA
