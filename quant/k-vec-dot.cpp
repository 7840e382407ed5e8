// Dot products of K-quant weight rows with Q8_K activation rows.
//
// The references unpack each super-block to its integer levels and
// per-16-value scales (and mins), sum exactly in int32 and combine the
// super-blocks in float. The fast kernels (AVX2; also used by the AVX-512 variant)
// compute the same int32 sums 8 lanes at a time: maddubs (unsigned weight
// level x signed activation, pairs to int16, no saturation as levels <= 63),
// then madd with the sub-block scale (int16 pairs to int32).
#include "quant/fp16.h"
#include "quant/neon.h"
#include "quant/quant-impl.h"
#include "quant/quant.h"
#include "quant/simd.h"
#include "base/error.h"

namespace gloas {

#if GLOAS_ISA_BASE
namespace {

// One super-block in a common form: levels q (signed, offsets applied) and
// per-16 scales sc and mins m (x = d*sc*q - dmin*m).
struct kblock {
    int q[QK_K];
    int sc[QK_K / 16];
    int m[QK_K / 16];
};

void unpack(const block_q2_K & b, kblock & o) {
    for (int v = 0; v < QK_K; ++v) o.q[v] = (b.qs[32 * (v / 128) + v % 32] >> (2 * ((v / 32) % 4))) & 3;
    for (int j = 0; j < 16; ++j) {
        o.sc[j] = b.scales[j] & 0xF;
        o.m[j] = b.scales[j] >> 4;
    }
}
void unpack(const block_q3_K & b, kblock & o) {
    for (int v = 0; v < QK_K; ++v) {
        const int lo = (b.qs[32 * (v / 128) + v % 32] >> (2 * ((v / 32) % 4))) & 3;
        o.q[v] = lo - ((b.hmask[v % 32] >> (v / 32)) & 1 ? 0 : 4);
    }
    int8_t sc[16];
    detail::scales_q3_K(b.scales, sc);
    for (int j = 0; j < 16; ++j) {
        o.sc[j] = sc[j];
        o.m[j] = 0;
    }
}
void unpack_k4_scales(const uint8_t * scales, kblock & o) {
    for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        detail::scale_min_k4(j, scales, sc, m);
        o.sc[2 * j] = o.sc[2 * j + 1] = sc;
        o.m[2 * j] = o.m[2 * j + 1] = m;
    }
}
void unpack(const block_q4_K & b, kblock & o) {
    for (int v = 0; v < QK_K; ++v) {
        const uint8_t byte = b.qs[32 * (v / 64) + v % 32];
        o.q[v] = (v / 32) % 2 ? byte >> 4 : byte & 0xF;
    }
    unpack_k4_scales(b.scales, o);
}
void unpack(const block_q5_K & b, kblock & o) {
    for (int v = 0; v < QK_K; ++v) {
        const uint8_t byte = b.qs[32 * (v / 64) + v % 32];
        o.q[v] = ((v / 32) % 2 ? byte >> 4 : byte & 0xF) | (((b.qh[v % 32] >> (v / 32)) & 1) << 4);
    }
    unpack_k4_scales(b.scales, o);
}
void unpack(const block_q6_K & b, kblock & o) {
    for (int v = 0; v < QK_K; ++v) {
        const int h = v / 128, g = (v / 32) % 4, l = v % 32;
        const uint8_t lq = b.ql[64 * h + l + 32 * (g % 2)];
        const int lo = g < 2 ? lq & 0xF : lq >> 4;
        const int hi = (b.qh[32 * h + l] >> (2 * g)) & 3;
        o.q[v] = (lo | (hi << 4)) - 32;
    }
    for (int j = 0; j < 16; ++j) {
        o.sc[j] = b.scales[j];
        o.m[j] = 0;
    }
}

inline float dmin_of(const block_q2_K & b) { return fp16_to_fp32(b.dmin); }
inline float dmin_of(const block_q3_K &) { return 0.0f; }
inline float dmin_of(const block_q4_K & b) { return fp16_to_fp32(b.dmin); }
inline float dmin_of(const block_q5_K & b) { return fp16_to_fp32(b.dmin); }
inline float dmin_of(const block_q6_K &) { return 0.0f; }

template <typename B>
float dot_ref(int64_t n, const B * w, const block_q8_K * x) {
    GLOAS_ASSERT(n % QK_K == 0);
    const int64_t nb = n / QK_K;
    float s = 0.0f;
    kblock k;
    for (int64_t i = 0; i < nb; ++i) {
        unpack(w[i], k);
        int sumi = 0, summ = 0;
        for (int j = 0; j < 16; ++j) {
            int t = 0;
            for (int l = 0; l < 16; ++l) t += k.q[16 * j + l] * x[i].qs[16 * j + l];
            sumi += k.sc[j] * t;
            summ += k.m[j] * x[i].bsums[j];
        }
        s += (x[i].d * fp16_to_fp32(w[i].d)) * float(sumi) - (x[i].d * dmin_of(w[i])) * float(summ);
    }
    return s;
}

} // namespace

float vec_dot_q2_K_q8_K_ref(int64_t n, const block_q2_K * w, const block_q8_K * x) { return dot_ref(n, w, x); }
float vec_dot_q3_K_q8_K_ref(int64_t n, const block_q3_K * w, const block_q8_K * x) { return dot_ref(n, w, x); }
float vec_dot_q4_K_q8_K_ref(int64_t n, const block_q4_K * w, const block_q8_K * x) { return dot_ref(n, w, x); }
float vec_dot_q5_K_q8_K_ref(int64_t n, const block_q5_K * w, const block_q8_K * x) { return dot_ref(n, w, x); }
float vec_dot_q6_K_q8_K_ref(int64_t n, const block_q6_K * w, const block_q8_K * x) { return dot_ref(n, w, x); }
#endif

GLOAS_ISA_BEGIN

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define GLOAS_KDOT_AVX2 1

namespace {

inline __m256i load256(const void * p) { return _mm256_loadu_si256(static_cast<const __m256i *>(p)); }
// int16 lanes 0..7 = a, lanes 8..15 = b (a 256-bit madd multiplier for two
// 16-value sub-blocks whose maddubs results fill the low / high 128 bits).
inline __m256i set_halves_epi16(int a, int b) {
    return _mm256_set_m128i(_mm_set1_epi16(int16_t(b)), _mm_set1_epi16(int16_t(a)));
}
// Sum of sc * (u . s) over 32 value pairs, as 8 int32 lanes: u unsigned
// levels (<= 63), s signed activations, sc the int16 multiplier per lane.
inline __m256i dot_scaled(__m256i u, __m256i s, __m256i sc) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), sc);
}
// The mins term sum_j m_j * bsum_j of a super-block, 16 int16 mins.
inline __m256i mins_term(__m256i m16, const int16_t * bsums) {
    return _mm256_madd_epi16(m16, load256(bsums));
}

} // namespace

#endif

// Each fast kernel keeps two float accumulators of 8 lanes: acc (the scale
// term, times d_x*d_w per super-block) and accm (the mins, times d_x*dmin_w).

float vec_dot_q2_K_q8_K(int64_t n, const block_q2_K * w, const block_q8_K * x) {
#if defined(GLOAS_KDOT_AVX2)
    GLOAS_ASSERT(n % QK_K == 0);
    const int64_t nb = n / QK_K;
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int64_t i = 0; i < nb; ++i) {
        const block_q2_K & b = w[i];
        simd::prefetch_ahead<sizeof(block_q2_K)>(&b);
        const int8_t * xq = x[i].qs;
        const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i *>(b.scales));
        const __m256i m16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc8, 4), _mm_set1_epi8(0x0F)));
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; ++h) {
            const __m256i q = load256(b.qs + 32 * h);
            for (int g = 0; g < 4; ++g) {
                const int j = 8 * h + 2 * g;  // sub-blocks j, j+1 (values 128h + 32g ..)
                const __m256i u = _mm256_and_si256(_mm256_srli_epi16(q, 2 * g), m3);
                const __m256i sc = set_halves_epi16(b.scales[j] & 0xF, b.scales[j + 1] & 0xF);
                sumi = _mm256_add_epi32(sumi, dot_scaled(u, load256(xq + 128 * h + 32 * g), sc));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(x[i].d * _cvtsh_ss(b.d)), acc);
        accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mins_term(m16, x[i].bsums)), _mm256_set1_ps(x[i].d * _cvtsh_ss(b.dmin)), accm);
    }
    return simd::hsum256(acc) - simd::hsum256(accm);
#else
    return vec_dot_q2_K_q8_K_ref(n, w, x);
#endif
}

float vec_dot_q3_K_q8_K(int64_t n, const block_q3_K * w, const block_q8_K * x) {
#if defined(GLOAS_KDOT_AVX2)
    GLOAS_ASSERT(n % QK_K == 0);
    const int64_t nb = n / QK_K;
    __m256 acc = _mm256_setzero_ps();
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int64_t i = 0; i < nb; ++i) {
        const block_q3_K & b = w[i];
        simd::prefetch_ahead<sizeof(block_q3_K)>(&b);
        const int8_t * xq = x[i].qs;
        int8_t sc[16];
        detail::scales_q3_K(b.scales, sc);
        // levels lo + 4*hbit in 0..7; the -4 offset is -4 * sum_j sc_j * bsum_j
        const __m256i hm = load256(b.hmask);
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; ++h) {
            const __m256i q = load256(b.qs + 32 * h);
            for (int g = 0; g < 4; ++g) {
                const int j = 8 * h + 2 * g;
                const int bit = 4 * h + g;  // value 32*bit + l has its high bit at bit `bit` of hmask[l]
                const __m256i hb = _mm256_and_si256(_mm256_srli_epi16(hm, bit), _mm256_set1_epi8(1));
                const __m256i u = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 2 * g), m3), _mm256_slli_epi16(hb, 2));
                sumi = _mm256_add_epi32(sumi, dot_scaled(u, load256(xq + 128 * h + 32 * g), set_halves_epi16(sc[j], sc[j + 1])));
            }
        }
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(sc)));
        sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(mins_term(sc16, x[i].bsums), 2));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(x[i].d * _cvtsh_ss(b.d)), acc);
    }
    return simd::hsum256(acc);
#else
    return vec_dot_q3_K_q8_K_ref(n, w, x);
#endif
}

#if defined(GLOAS_KDOT_AVX2)
namespace {
// Q4_K/Q5_K: the 8 scales and 8 mins as int16, and the super-block's mins term.
struct k4_scales {
    alignas(32) int16_t sc[8];
    __m256i mins;  // sum_j m_j * bsum_j over pairs of bsums, 8 int32 lanes
};
inline void load_k4_scales(const uint8_t * packed, const int16_t * bsums, k4_scales & o) {
    alignas(16) uint8_t sm[16];
    detail::scales_mins_k4(packed, sm);
    const __m128i v = _mm_load_si128(reinterpret_cast<const __m128i *>(sm));
    _mm_store_si128(reinterpret_cast<__m128i *>(o.sc), _mm_cvtepu8_epi16(v));
    // each min twice, for the two bsums (of 16) of its 32-value sub-block
    const __m128i m8 = _mm_cvtepu8_epi16(_mm_srli_si128(v, 8));
    const __m256i m16 = _mm256_set_m128i(_mm_unpackhi_epi16(m8, m8), _mm_unpacklo_epi16(m8, m8));
    o.mins = mins_term(m16, bsums);
}
} // namespace
#endif

float vec_dot_q4_K_q8_K(int64_t n, const block_q4_K * w, const block_q8_K * x) {
#if defined(GLOAS_KDOT_AVX2)
    GLOAS_ASSERT(n % QK_K == 0);
    const int64_t nb = n / QK_K;
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int64_t i = 0; i < nb; ++i) {
        const block_q4_K & b = w[i];
        simd::prefetch_ahead<sizeof(block_q4_K)>(&b);
        const int8_t * xq = x[i].qs;
        k4_scales ks;
        load_k4_scales(b.scales, x[i].bsums, ks);
        __m256i sumi = _mm256_setzero_si256();
        for (int g = 0; g < 4; ++g) {
            const __m256i q = load256(b.qs + 32 * g);
            const __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            sumi = _mm256_add_epi32(sumi, dot_scaled(lo, load256(xq + 64 * g), _mm256_set1_epi16(ks.sc[2 * g])));
            sumi = _mm256_add_epi32(sumi, dot_scaled(hi, load256(xq + 64 * g + 32), _mm256_set1_epi16(ks.sc[2 * g + 1])));
        }
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(x[i].d * _cvtsh_ss(b.d)), acc);
        accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ks.mins), _mm256_set1_ps(x[i].d * _cvtsh_ss(b.dmin)), accm);
    }
    return simd::hsum256(acc) - simd::hsum256(accm);
#elif defined(GLOAS_NEON)
    return neon_kernels::vec_dot_q4_K_q8_K(n, w, x);
#else
    return vec_dot_q4_K_q8_K_ref(n, w, x);
#endif
}

float vec_dot_q5_K_q8_K(int64_t n, const block_q5_K * w, const block_q8_K * x) {
#if defined(GLOAS_KDOT_AVX2)
    GLOAS_ASSERT(n % QK_K == 0);
    const int64_t nb = n / QK_K;
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    for (int64_t i = 0; i < nb; ++i) {
        const block_q5_K & b = w[i];
        simd::prefetch_ahead<sizeof(block_q5_K)>(&b);
        const int8_t * xq = x[i].qs;
        k4_scales ks;
        load_k4_scales(b.scales, x[i].bsums, ks);
        const __m256i qh = load256(b.qh);
        __m256i sumi = _mm256_setzero_si256();
        for (int g = 0; g < 4; ++g) {
            const __m256i q = load256(b.qs + 32 * g);
            const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * g), one), 4);
            const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * g + 1), one), 4);
            const __m256i lo = _mm256_or_si256(_mm256_and_si256(q, m4), h0);
            const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), h1);
            sumi = _mm256_add_epi32(sumi, dot_scaled(lo, load256(xq + 64 * g), _mm256_set1_epi16(ks.sc[2 * g])));
            sumi = _mm256_add_epi32(sumi, dot_scaled(hi, load256(xq + 64 * g + 32), _mm256_set1_epi16(ks.sc[2 * g + 1])));
        }
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(x[i].d * _cvtsh_ss(b.d)), acc);
        accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ks.mins), _mm256_set1_ps(x[i].d * _cvtsh_ss(b.dmin)), accm);
    }
    return simd::hsum256(acc) - simd::hsum256(accm);
#elif defined(GLOAS_NEON)
    return neon_kernels::vec_dot_q5_K_q8_K(n, w, x);
#else
    return vec_dot_q5_K_q8_K_ref(n, w, x);
#endif
}

float vec_dot_q6_K_q8_K(int64_t n, const block_q6_K * w, const block_q8_K * x) {
#if defined(GLOAS_KDOT_AVX2)
    GLOAS_ASSERT(n % QK_K == 0);
    const int64_t nb = n / QK_K;
    __m256 acc = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    for (int64_t i = 0; i < nb; ++i) {
        const block_q6_K & b = w[i];
        simd::prefetch_ahead<sizeof(block_q6_K)>(&b);
        const int8_t * xq = x[i].qs;
        const int8_t * sc = b.scales;
        // levels q in 0..63; the -32 offset is -32 * sum_j sc_j * bsum_j
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; ++h) {
            const __m256i l0 = load256(b.ql + 64 * h), l1 = load256(b.ql + 64 * h + 32);
            const __m256i qh = load256(b.qh + 32 * h);
            const __m256i u[4] = {
                _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4)),
                _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4)),
            };
            for (int g = 0; g < 4; ++g) {
                const int j = 8 * h + 2 * g;
                sumi = _mm256_add_epi32(sumi, dot_scaled(u[g], load256(xq + 128 * h + 32 * g), set_halves_epi16(sc[j], sc[j + 1])));
            }
        }
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(sc)));
        sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(mins_term(sc16, x[i].bsums), 5));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(x[i].d * _cvtsh_ss(b.d)), acc);
    }
    return simd::hsum256(acc);
#elif defined(GLOAS_NEON)
    return neon_kernels::vec_dot_q6_K_q8_K(n, w, x);
#else
    return vec_dot_q6_K_q8_K_ref(n, w, x);
#endif
}

GLOAS_ISA_END

} // namespace gloas
