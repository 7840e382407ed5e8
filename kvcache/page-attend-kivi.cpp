// The AVX2 register kernel of Q4_KIVI pages (page-kernels.h: attend_kivi;
// the AVX-512 one is attend_window_q4 in page-attend-int.cpp). The integer
// algorithm of page.h, per window of 32 tokens (one block of every row):
//   unpack  the window's K nibbles as word pairs of two channels per token
//           (one vpmaddwd adds 2 channels x 8 tokens), V's as words per
//           channel; scales and minima as floats
//   scores  per head, the query as int16 (q_c * dk_c rounded relative to the
//           largest), bias = sum_c q_c * mk_c in channel order, s_t = sq *
//           sum_c qi_c * k_c[t] + bias
//   output  15-bit probabilities as words; per 8 channels, vpmaddwd along
//           the tokens and one transposing horizontal sum
// The integers are attend_int_portable's (page-attend.cpp); the floats differ
// from it by exp's polynomial clamp and rounding order only.
#include "kvcache/page-kernels.h"

#include "quant/blocks.h"
#include "quant/fp16.h"
#include "quant/isa.h"
#include "base/error.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace gloas::page_kernels { inline namespace GLOAS_ISA {

#if defined(GLOAS_PAGE_AVX2)

namespace {

inline float half(const char * p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return fp16_to_fp32(h);
}

// The 32 nibbles of a block (16 bytes at p) as bytes in token order: low
// nibbles are tokens 0..15, high nibbles 16..31.
inline void nibbles(const char * p, __m128i & lo, __m128i & hi) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
    const __m128i m = _mm_set1_epi8(15);
    lo = _mm_and_si128(b, m);
    hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
}

// Lane j of the result: the sum of the 8 lanes of s[j].
inline __m256i hsum8x8(const __m256i * s) {
    const __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
    const __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(s[4], s[5]), _mm256_hadd_epi32(s[6], s[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}

} // namespace

void attend_kivi(const char * kr, const char * vr, size_t rbk, size_t rbv, int D, const head_counts & cnt, int n_heads,
                 const float * q, attn_state & s, next_prefetch & pf) {
    GLOAS_ASSERT(D >= 1 && D <= 4096);  // the int16 query: |sum_c qi_c k_c| < 2^31
    constexpr size_t BSK = sizeof(block_q4_1), BSV = sizeof(block_q4_0);
    constexpr float QMAX = 32767.0f, PMAX = 32767.0f;
    const int D2 = (D + 1) / 2, D8 = (D + 7) / 8 * 8;
    int n_max = 0;
    for (int h = 0; h < n_heads; ++h) n_max = std::max(n_max, cnt(h));
    // dk, mk (D) K scales and minima, dv (D8) V scales, qf (D) one head's q_c * dk_c
    float * dk = static_cast<float *>(isa::thread_scratch(isa::scratch_slot::page_floats, sizeof(float) * size_t(3 * D + D8)));
    float * mk = dk + D, * dv = mk + D, * qf = dv + D8;
    // kp (D2, 4) vectors: channel pair j, tokens 8i..8i+7 as word pairs (k_2j, k_2j+1);
    // vw (D8, 2) vectors: channel d, tokens 16i..16i+15 as words; qp (D2) the query's word pairs
    __m256i * kp = static_cast<__m256i *>(isa::thread_scratch(isa::scratch_slot::page_ints,
                                                              sizeof(__m256i) * size_t(4 * D2 + 2 * D8) + sizeof(int32_t) * size_t(D2)));
    __m256i * vw = kp + 4 * D2;
    int32_t * qp = reinterpret_cast<int32_t *>(vw + 2 * D8);
    for (int w0 = 0; w0 < n_max; w0 += IW) {
        const size_t bk = size_t(w0 / IW) * BSK, bv = size_t(w0 / IW) * BSV;
        for (int j = 0; j < D2; ++j) {
            pf.k_rows(2);
            const char * a = kr + size_t(2 * j) * rbk + bk;
            const char * b = 2 * j + 1 < D ? a + rbk : nullptr;
            dk[2 * j] = half(a);
            mk[2 * j] = half(a + 2);
            __m128i alo, ahi, blo = _mm_setzero_si128(), bhi = _mm_setzero_si128();
            nibbles(a + 4, alo, ahi);
            if (b) {
                dk[2 * j + 1] = half(b);
                mk[2 * j + 1] = half(b + 2);
                nibbles(b + 4, blo, bhi);
            }
            kp[4 * j + 0] = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(alo, blo));
            kp[4 * j + 1] = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(alo, blo));
            kp[4 * j + 2] = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(ahi, bhi));
            kp[4 * j + 3] = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(ahi, bhi));
        }
        for (int d = 0; d < D8; ++d) {
            if (d < D) {
                pf.v_rows(1);
                const char * v = vr + size_t(d) * rbv + bv;
                dv[d] = half(v);
                __m128i lo, hi;
                nibbles(v + 2, lo, hi);
                vw[2 * d] = _mm256_cvtepu8_epi16(lo);
                vw[2 * d + 1] = _mm256_cvtepu8_epi16(hi);
            } else {
                dv[d] = 0.0f;
                vw[2 * d] = vw[2 * d + 1] = _mm256_setzero_si256();
            }
        }
        for (int h = 0; h < n_heads; ++h) {
            const int nh = std::max(0, std::min(IW, cnt(h) - w0));
            if (nh == 0) continue;
            const float * qh = q + int64_t(h) * D;
            // query: int16 per head, scale sq; bias in channel order
            float amax = 0.0f, bias = 0.0f;
            for (int d = 0; d < D; ++d) {
                qf[d] = qh[d] * dk[d];
                amax = std::max(amax, std::fabs(qf[d]));
                bias = std::fma(qh[d], mk[d], bias);
            }
            const float inv = amax >= Q_TINY ? QMAX / amax : 0.0f, sq = amax / QMAX;
            for (int j = 0; j < D2; ++j) {
                const int a = int(std::nearbyint(qf[2 * j] * inv));
                const int b = 2 * j + 1 < D ? int(std::nearbyint(qf[2 * j + 1] * inv)) : 0;
                qp[j] = int32_t(uint32_t(uint16_t(int16_t(a))) | (uint32_t(uint16_t(int16_t(b))) << 16));
            }
            // scores of tokens 8i..8i+7 in acc[i]
            __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
            for (int j = 0; j < D2; ++j) {
                const __m256i qv = _mm256_set1_epi32(qp[j]);
                for (int i = 0; i < 4; ++i) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(kp[4 * j + i], qv));
            }
            alignas(32) float sc[IW];
            const __m256 sqv = _mm256_set1_ps(sq), bv8 = _mm256_set1_ps(bias);
            for (int i = 0; i < 4; ++i) _mm256_store_ps(sc + 8 * i, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i]), sqv, bv8));
            float mx = -INFINITY;
            for (int i = 0; i < nh; ++i) mx = std::max(mx, sc[i]);
            // online softmax; probabilities as 15-bit words, p_max = the window's largest
            const float m_new = std::max(s.m[h], mx);
            const float corr = s.m[h] == -INFINITY ? 0.0f : std::exp(s.m[h] - m_new);
            const float pm = std::exp(mx - m_new);
            const float invp = pm >= Q_TINY ? PMAX / pm : 0.0f, psc = pm / PMAX;
            alignas(32) int32_t pu[IW];
            __m256i psum8 = _mm256_setzero_si256();
            const __m256 mv = _mm256_set1_ps(m_new), iv = _mm256_set1_ps(invp);
            for (int i = 0; i < 4; ++i) {
                const __m256i tok = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(8 * i));
                const __m256i live = _mm256_cmpgt_epi32(_mm256_set1_epi32(nh), tok);
                const __m256 e = simd::exp256_ps(_mm256_sub_ps(_mm256_load_ps(sc + 8 * i), mv));
                __m256i u = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(e, iv)), _mm256_set1_epi32(32767));
                u = _mm256_and_si256(u, live);
                _mm256_store_si256(reinterpret_cast<__m256i *>(pu + 8 * i), u);
                psum8 = _mm256_add_epi32(psum8, u);
            }
            alignas(32) int32_t ps8[8];
            _mm256_store_si256(reinterpret_cast<__m256i *>(ps8), psum8);
            int psum = 0;
            for (int i = 0; i < 8; ++i) psum += ps8[i];
            s.l[h] = std::fma(s.l[h], corr, float(psum) * psc);
            s.m[h] = m_new;
            // pw[k]: tokens 16k..16k+15 as words (each int32 pair packed in token order)
            __m256i pw[2];
            for (int k = 0; k < 2; ++k) {
                const __m256i a = _mm256_load_si256(reinterpret_cast<const __m256i *>(pu + 16 * k));
                const __m256i b = _mm256_load_si256(reinterpret_cast<const __m256i *>(pu + 16 * k + 8));
                pw[k] = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
            }
            // output, 8 channels at a time
            float * ah = s.acc + int64_t(h) * D;
            const __m256 pscv = _mm256_set1_ps(psc), cv = _mm256_set1_ps(corr);
            const __m256i off = _mm256_set1_epi32(8 * psum);
            for (int d0 = 0; d0 < D8; d0 += 8) {
                __m256i o[8];
                for (int j = 0; j < 8; ++j)
                    o[j] = _mm256_add_epi32(_mm256_madd_epi16(vw[2 * (d0 + j)], pw[0]), _mm256_madd_epi16(vw[2 * (d0 + j) + 1], pw[1]));
                const __m256 x = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(hsum8x8(o), off)),
                                               _mm256_mul_ps(_mm256_loadu_ps(dv + d0), pscv));
                alignas(32) float r[8];
                if (d0 + 8 <= D) {
                    _mm256_storeu_ps(ah + d0, _mm256_fmadd_ps(_mm256_loadu_ps(ah + d0), cv, x));
                } else {
                    _mm256_store_ps(r, x);
                    for (int j = 0; d0 + j < D; ++j) ah[d0 + j] = std::fma(ah[d0 + j], corr, r[j]);
                }
            }
        }
    }
}

#endif // GLOAS_PAGE_AVX2

}} // namespace gloas::page_kernels::GLOAS_ISA
