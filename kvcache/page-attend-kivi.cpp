// The AVX2 register kernels of the integer page types, Q8_0, Q4_0 and
// Q4_KIVI pages (page-kernels.h: attend_int, attend_kivi; the AVX-512 ones
// are in page-attend-int.cpp). The integer algorithm of page.h, per window of
// 32 tokens (one block of every row):
//   unpack  the window's K values as word pairs of two channels per token
//           (one vpmaddwd adds 2 channels x 8 tokens; Q8_0: the int8 values,
//           Q4_0: nibble - 8, Q4_KIVI: the Q4_1 nibbles), V's as words per
//           channel (Q8_0: the int8 values; the 4-bit types: the nibbles,
//           whose offset 8 comes off as 8 * sum_t u_t); scales (and Q4_KIVI's
//           minima) as floats, once for all the heads
//   query   per head, 8 channels at a time: x_c = q_c * dk_c, its largest
//           |x_c|, the integers round(x_c / sq) packed to words (Q4_KIVI:
//           bias = sum_c q_c * mk_c, 8 lanes then summed)
//   scores  per head, one broadcast query pair and 4 vpmaddwd per 2 channels
//   softmax 8 tokens per vector; the probabilities as words
//   output  per 8 channels, vpmaddwd along the tokens and one transposing
//           horizontal sum
// For Q8_0 and Q4_0 every integer and float operation is attend_int_portable's
// (page-attend.cpp), in its order: the results are bitwise equal. Q4_KIVI's
// bias is summed in another order (8 lanes, then across them).
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

inline __m128i load16(const char * p) { return _mm_loadu_si128(reinterpret_cast<const __m128i *>(p)); }

// The 32 nibbles of a block (16 bytes at p) as bytes in token order: low
// nibbles are tokens 0..15, high nibbles 16..31.
inline void nibbles(const char * p, __m128i & lo, __m128i & hi) {
    const __m128i b = load16(p);
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

// The first dword of each block's (d, then Q4_1's m or two value bytes) of 8
// rows as floats: d of the low halves, m of the high.
inline void halves8(const uint32_t * raw, float * d, float * m) {
    const __m256i idx = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                         0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    const __m256i x = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(_mm256_load_si256(reinterpret_cast<const __m256i *>(raw)), idx),
                                               _MM_SHUFFLE(3, 1, 2, 0));
    _mm256_store_ps(d, _mm256_cvtph_ps(_mm256_castsi256_si128(x)));
    if (m) _mm256_store_ps(m, _mm256_cvtph_ps(_mm256_extracti128_si256(x, 1)));
}

inline int32_t hsum_epi32(__m256i v) {
    __m128i x = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, _MM_SHUFFLE(1, 0, 3, 2)));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(x);
}

// e^x on 8 lanes with the operations of exp_poly (page-attend.cpp), lane by
// lane the same float: x clamped to [-104, 88.8], the polynomial of
// simd::exp_ps, and p * 2^n (n in [-150, 128]) as two exact powers of two,
// n / 2 (toward zero) first.
inline __m256 exp8(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(-104.0f), _mm256_min_ps(_mm256_set1_ps(88.8f), x));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i n1 = _mm256_srai_epi32(_mm256_add_epi32(ni, _mm256_srli_epi32(ni, 31)), 1);
    const __m256i n2 = _mm256_sub_epi32(ni, n1);
    const auto pow2 = [](__m256i k) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23)); };
    return _mm256_mul_ps(_mm256_mul_ps(p, pow2(n1)), pow2(n2));
}

// Heads [0, n_heads) over one piece of a page of type T (Q8_0, Q4_0 or
// Q4_KIVI): kr its D K rows (rbk bytes apart), vr its D V rows (rbv). HD: the
// head_dim as a constant (loops unrolled, no tails), or 0: any, D_.
template <type T, int HD>
void attend_piece(const char * kr, const char * vr, size_t rbk, size_t rbv, int D_, const head_counts & cnt,
                  int n_heads, const float * q, attn_state & s, next_prefetch & pf_io) {
    constexpr bool Q8 = T == type::Q8_0, KIVI = T == type::Q4_KIVI;
    constexpr size_t BSK = Q8 ? sizeof(block_q8_0) : KIVI ? sizeof(block_q4_1) : sizeof(block_q4_0);
    constexpr size_t BSV = Q8 ? sizeof(block_q8_0) : sizeof(block_q4_0);
    constexpr int KV0 = KIVI ? 4 : 2;              // bytes before a K block's values
    constexpr int QMAX = Q8 ? 127 : 32767;         // query: -QMAX-1..QMAX
    constexpr int PMAX = Q8 ? 255 : 32767;         // probabilities: 0..PMAX
    constexpr int VOFF = Q8 ? 0 : 8;               // V words: v + VOFF
    const int D = HD > 0 ? HD : D_;
    const int D2 = (D + 1) / 2, D8 = (D + 7) / 8 * 8, D16 = (D + 15) / 16 * 16;
    int n_max = 0;
    for (int h = 0; h < n_heads; ++h) n_max = std::max(n_max, cnt(h));
    // (D16 each, zero past D) dk, mk K scales and minima, dv V scales, qf one
    // head's q_c * dk_c, qz its query where D % 16 != 0
    float * dk = static_cast<float *>(isa::thread_scratch(isa::scratch_slot::page_floats, sizeof(float) * size_t(5 * D16)));
    float * mk = dk + D16, * dv = mk + D16, * qf = dv + D16, * qz = qf + D16;
    // kp (D2, 4) vectors: channel pair j, tokens 8i..8i+7 as word pairs (k_2j, k_2j+1);
    // vw (D8, 2) vectors: channel d, tokens 16i..16i+15 as words; qw (D16) one head's query as words;
    // kd, vd (D16, zero past D) the first dword of each K and V block
    __m256i * kp = static_cast<__m256i *>(isa::thread_scratch(
        isa::scratch_slot::page_ints, sizeof(__m256i) * size_t(4 * D2 + 2 * D8) + (sizeof(int16_t) + 2 * sizeof(uint32_t)) * size_t(D16)));
    __m256i * vw = kp + 4 * D2;
    int16_t * qw = reinterpret_cast<int16_t *>(vw + 2 * D8);
    uint32_t * kd = reinterpret_cast<uint32_t *>(qw + D16), * vd = kd + D16;
    for (int d = D; d < D16; ++d) {
        qz[d] = 0.0f;
        kd[d] = vd[d] = 0;
    }
    next_prefetch pf = pf_io;
    for (int w0 = 0; w0 < n_max; w0 += IW) {
        const size_t bk = size_t(w0 / IW) * BSK, bv = size_t(w0 / IW) * BSV;
        for (int j = 0; j < D2; ++j) {
            const char * a = kr + size_t(2 * j) * rbk + bk;
            const bool has_b = 2 * j + 1 < D;  // else: row 2j + 1's words are zero, as its query word
            const char * b = a + rbk;
            std::memcpy(kd + 2 * j, a, 4);
            if (has_b) std::memcpy(kd + 2 * j + 1, b, 4);
            if constexpr (Q8) {
                const __m128i z = _mm_setzero_si128();
                const __m128i a0 = load16(a + KV0), a1 = load16(a + KV0 + 16);
                const __m128i b0 = has_b ? load16(b + KV0) : z, b1 = has_b ? load16(b + KV0 + 16) : z;
                kp[4 * j + 0] = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a0, b0));
                kp[4 * j + 1] = _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(a0, b0));
                kp[4 * j + 2] = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a1, b1));
                kp[4 * j + 3] = _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(a1, b1));
            } else {
                __m128i alo, ahi, blo = _mm_setzero_si128(), bhi = _mm_setzero_si128();
                nibbles(a + KV0, alo, ahi);
                if (has_b) nibbles(b + KV0, blo, bhi);
                const __m128i lo0 = _mm_unpacklo_epi8(alo, blo), lo1 = _mm_unpackhi_epi8(alo, blo);
                const __m128i hi0 = _mm_unpacklo_epi8(ahi, bhi), hi1 = _mm_unpackhi_epi8(ahi, bhi);
                if constexpr (KIVI) {  // the Q4_1 nibbles
                    kp[4 * j + 0] = _mm256_cvtepu8_epi16(lo0);
                    kp[4 * j + 1] = _mm256_cvtepu8_epi16(lo1);
                    kp[4 * j + 2] = _mm256_cvtepu8_epi16(hi0);
                    kp[4 * j + 3] = _mm256_cvtepu8_epi16(hi1);
                } else {  // Q4_0's values, nibble - 8
                    const __m128i o8 = _mm_set1_epi8(8);
                    kp[4 * j + 0] = _mm256_cvtepi8_epi16(_mm_sub_epi8(lo0, o8));
                    kp[4 * j + 1] = _mm256_cvtepi8_epi16(_mm_sub_epi8(lo1, o8));
                    kp[4 * j + 2] = _mm256_cvtepi8_epi16(_mm_sub_epi8(hi0, o8));
                    kp[4 * j + 3] = _mm256_cvtepi8_epi16(_mm_sub_epi8(hi1, o8));
                }
            }
        }
        for (int d = 0; d < D8; ++d) {
            if (d < D) {
                const char * v = vr + size_t(d) * rbv + bv;
                std::memcpy(vd + d, v, 4);
                if constexpr (Q8) {
                    vw[2 * d] = _mm256_cvtepi8_epi16(load16(v + 2));
                    vw[2 * d + 1] = _mm256_cvtepi8_epi16(load16(v + 18));
                } else {
                    __m128i lo, hi;
                    nibbles(v + 2, lo, hi);
                    vw[2 * d] = _mm256_cvtepu8_epi16(lo);
                    vw[2 * d + 1] = _mm256_cvtepu8_epi16(hi);
                }
            } else {
                vw[2 * d] = vw[2 * d + 1] = _mm256_setzero_si256();
            }
        }
        for (int c0 = 0; c0 < D16; c0 += 8) {
            halves8(kd + c0, dk + c0, KIVI ? mk + c0 : nullptr);
            halves8(vd + c0, dv + c0, nullptr);
        }
        for (int h = 0; h < n_heads; ++h) {
            // the next piece streamed in over the heads' work, D / n_heads of its K and V rows
            // per head (in one burst with the unpacking, its lines would fill the miss buffers)
            const int rows = D * (h + 1) / n_heads - D * h / n_heads;
            pf.k_rows(rows);
            pf.v_rows(rows);
            const int nh = std::max(0, std::min(IW, cnt(h) - w0));
            if (nh == 0) continue;
            const float * qh = q + int64_t(h) * D;
            if (D % 16 != 0) {
                std::memcpy(qz, qh, sizeof(float) * size_t(D));
                qh = qz;
            }
            // query: x_c = q_c * dk_c, its largest |x_c|, the integers as words (zero past D)
            __m256 am = _mm256_setzero_ps(), bs = _mm256_setzero_ps();
            const __m256 sign = _mm256_set1_ps(-0.0f);
            for (int c0 = 0; c0 < D16; c0 += 8) {
                const __m256 qv = _mm256_loadu_ps(qh + c0);
                const __m256 x = _mm256_mul_ps(qv, _mm256_load_ps(dk + c0));
                _mm256_store_ps(qf + c0, x);
                am = _mm256_max_ps(am, _mm256_andnot_ps(sign, x));
                if constexpr (KIVI) bs = _mm256_fmadd_ps(qv, _mm256_load_ps(mk + c0), bs);
            }
            const float amax = simd::hmax256(am);
            const float inv = amax >= Q_TINY ? float(QMAX) / amax : 0.0f, sq = amax / float(QMAX);
            {
                const __m256 iv = _mm256_set1_ps(inv);
                const __m256i lo_q = _mm256_set1_epi32(-QMAX - 1), hi_q = _mm256_set1_epi32(QMAX);
                auto qint = [&](int c0) {
                    const __m256i x = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_load_ps(qf + c0), iv));
                    return _mm256_max_epi32(lo_q, _mm256_min_epi32(hi_q, x));
                };
                for (int c0 = 0; c0 < D16; c0 += 16)
                    _mm256_store_si256(reinterpret_cast<__m256i *>(qw + c0),
                                       _mm256_permute4x64_epi64(_mm256_packs_epi32(qint(c0), qint(c0 + 8)), 0xD8));
            }
            // scores of tokens 8i..8i+7 in a[i]
            __m256i a[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
            for (int j = 0; j < D2; ++j) {
                int32_t w;
                std::memcpy(&w, qw + 2 * j, 4);
                const __m256i qv = _mm256_set1_epi32(w);
                for (int i = 0; i < 4; ++i) a[i] = _mm256_add_epi32(a[i], _mm256_madd_epi16(kp[4 * j + i], qv));
            }
            const __m256 sqv = _mm256_set1_ps(sq);
            const __m256 biasv = _mm256_set1_ps(KIVI ? simd::hsum256(bs) : 0.0f);
            __m256 sc[4];
            __m256i live[4];  // tokens below nh
            __m256 mxv = _mm256_set1_ps(-INFINITY);
            for (int i = 0; i < 4; ++i) {
                sc[i] = KIVI ? _mm256_fmadd_ps(_mm256_cvtepi32_ps(a[i]), sqv, biasv) : _mm256_mul_ps(_mm256_cvtepi32_ps(a[i]), sqv);
                live[i] = _mm256_cmpgt_epi32(_mm256_set1_epi32(nh), _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                                                                     _mm256_set1_epi32(8 * i)));
                mxv = _mm256_max_ps(mxv, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), sc[i], _mm256_castsi256_ps(live[i])));
            }
            const float mx = simd::hmax256(mxv);
            // online softmax; probabilities as words, PMAX = the window's largest
            const float m_new = std::max(s.m[h], mx);
            alignas(32) float e2[8];
            _mm256_store_ps(e2, exp8(_mm256_setr_ps(s.m[h] - m_new, mx - m_new, 0, 0, 0, 0, 0, 0)));
            const float corr = e2[0], pm = e2[1];
            const float invp = pm >= Q_TINY ? float(PMAX) / pm : 0.0f, psc = pm / float(PMAX);
            const __m256 mv = _mm256_set1_ps(m_new), ivp = _mm256_set1_ps(invp);
            __m256i u[4], usum = _mm256_setzero_si256();
            for (int i = 0; i < 4; ++i) {
                const __m256 e = exp8(_mm256_sub_ps(sc[i], mv));
                u[i] = _mm256_and_si256(_mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(e, ivp)), _mm256_set1_epi32(PMAX)), live[i]);
                usum = _mm256_add_epi32(usum, u[i]);
            }
            const int32_t psum = hsum_epi32(usum);
            s.l[h] = std::fma(s.l[h], corr, float(psum) * psc);
            s.m[h] = m_new;
            // tokens 16k..16k+15 as words
            const __m256i pw0 = _mm256_permute4x64_epi64(_mm256_packs_epi32(u[0], u[1]), 0xD8);
            const __m256i pw1 = _mm256_permute4x64_epi64(_mm256_packs_epi32(u[2], u[3]), 0xD8);
            // output, 8 channels at a time
            float * ah = s.acc + int64_t(h) * D;
            const __m256 pscv = _mm256_set1_ps(psc), cv = _mm256_set1_ps(corr);
            const __m256i off = _mm256_set1_epi32(VOFF * psum);
            for (int d0 = 0; d0 < D8; d0 += 8) {
                __m256i o[8];
                for (int j = 0; j < 8; ++j)
                    o[j] = _mm256_add_epi32(_mm256_madd_epi16(vw[2 * (d0 + j)], pw0), _mm256_madd_epi16(vw[2 * (d0 + j) + 1], pw1));
                __m256i oi = hsum8x8(o);
                if constexpr (VOFF != 0) oi = _mm256_sub_epi32(oi, off);
                const __m256 x = _mm256_mul_ps(_mm256_cvtepi32_ps(oi), _mm256_mul_ps(_mm256_load_ps(dv + d0), pscv));
                if (d0 + 8 <= D) {
                    _mm256_storeu_ps(ah + d0, _mm256_fmadd_ps(_mm256_loadu_ps(ah + d0), cv, x));
                } else {
                    alignas(32) float r[8];
                    _mm256_store_ps(r, x);
                    for (int j = 0; d0 + j < D; ++j) ah[d0 + j] = std::fma(ah[d0 + j], corr, r[j]);
                }
            }
        }
    }
    pf_io = pf;
}

template <type T>
void attend_type(const char * kr, const char * vr, size_t rbk, size_t rbv, int D, const head_counts & cnt, int n_heads,
                 const float * q, attn_state & s, next_prefetch & pf) {
    switch (D) {  // TinyLlama's and Llama's head_dim as constants
    case 64:  attend_piece<T, 64>(kr, vr, rbk, rbv, D, cnt, n_heads, q, s, pf); break;
    case 128: attend_piece<T, 128>(kr, vr, rbk, rbv, D, cnt, n_heads, q, s, pf); break;
    default:  attend_piece<T, 0>(kr, vr, rbk, rbv, D, cnt, n_heads, q, s, pf); break;
    }
}

} // namespace

void attend_int(type t, const char * kr, const char * vr, size_t rb, int D, const head_counts & cnt, int n_heads,
                const float * q, attn_state & s, next_prefetch & pf) {
    GLOAS_ASSERT(D >= 1 && (t == type::Q8_0 || D <= 4096));  // the 4-bit types' int16 query: |sum_c qi_c k_c| < 2^31
    if (t == type::Q8_0) return attend_type<type::Q8_0>(kr, vr, rb, rb, D, cnt, n_heads, q, s, pf);
    GLOAS_ASSERT(t == type::Q4_0);
    attend_type<type::Q4_0>(kr, vr, rb, rb, D, cnt, n_heads, q, s, pf);
}

void attend_kivi(const char * kr, const char * vr, size_t rbk, size_t rbv, int D, const head_counts & cnt, int n_heads,
                 const float * q, attn_state & s, next_prefetch & pf) {
    GLOAS_ASSERT(D >= 1 && D <= 4096);  // the int16 query: |sum_c qi_c k_c| < 2^31
    attend_type<type::Q4_KIVI>(kr, vr, rbk, rbv, D, cnt, n_heads, q, s, pf);
}

#endif // GLOAS_PAGE_AVX2

}} // namespace gloas::page_kernels::GLOAS_ISA
