// The legacy 32-value formats besides Q8_0/Q4_0: Q4_1, Q5_0, Q5_1, and the
// Q8_1 activations that Q4_1/Q5_1 dot against. Quantize, dequantize, dot.
#include "quant/fp16.h"
#include "quant/quant-impl.h"
#include "quant/quant.h"
#include "quant/simd.h"
#include "base/error.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "quant/no-contract.h"  // last: it applies to what follows

namespace gloas {

using detail::mad;

namespace {

inline uint32_t load_qh(const uint8_t * qh) {
    uint32_t u;
    std::memcpy(&u, qh, 4);
    return u;
}

} // namespace

#if GLOAS_ISA_BASE
namespace {

// The 32 5-bit values of a Q5_0/Q5_1 block, 0..31, in value order.
inline void unpack_q5(const uint8_t * qs, const uint8_t * qh, int * q) {
    const uint32_t h = load_qh(qh);
    for (int j = 0; j < 16; ++j) {
        q[j]      = (qs[j] & 0x0F) | int(((h >> j) << 4) & 0x10);
        q[j + 16] = (qs[j] >> 4)   | int((h >> (j + 12)) & 0x10);
    }
}

// Stores the scale d = (max - min) / nmax and the min of the 32 values at x
// into b (Q4_1, Q5_1) and returns min and 1/d (0 when d is 0).
template <class B>
void scale_min(const float * x, float nmax, B & b, float & mn, float & id) {
    mn = FLT_MAX;
    float mx = -FLT_MAX;
    for (int j = 0; j < 32; ++j) {
        if (x[j] < mn) mn = x[j];
        if (x[j] > mx) mx = x[j];
    }
    const float d = (mx - mn) / nmax;
    id = d != 0.0f ? 1.0f / d : 0.0f;
    b.d = fp32_to_fp16(d);
    b.m = fp32_to_fp16(mn);
}

// Packs 32 levels, 0..15 (Q4_1) or 0..31 (Q5_0, Q5_1): low nibbles values
// 0..15, high nibbles 16..31; with qh, bit 4 of value j in bit j of qh.
inline void pack_levels(const int * q, uint8_t * qs, uint8_t * qh = nullptr) {
    for (int j = 0; j < 16; ++j) qs[j] = uint8_t((q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4));
    if (!qh) return;
    uint32_t h = 0;
    for (int j = 0; j < 32; ++j) h |= uint32_t((q[j] & 0x10) >> 4) << j;
    std::memcpy(qh, &h, 4);
}

} // namespace

void quantize_row_q4_1_ref(const float * x, block_q4_1 * y, int64_t k) {
    GLOAS_ASSERT(k % QK4_1 == 0);
    for (int64_t i = 0; i < k / QK4_1; ++i, x += QK4_1) {
        float mn, id;
        scale_min(x, 15, y[i], mn, id);
        int q[QK4_1];
        for (int j = 0; j < QK4_1; ++j) q[j] = std::min(15, int(int8_t((x[j] - mn) * id + 0.5f)));
        pack_levels(q, y[i].qs);
    }
}

void quantize_row_q5_0_ref(const float * x, block_q5_0 * y, int64_t k) {
    GLOAS_ASSERT(k % QK5_0 == 0);
    for (int64_t i = 0; i < k / QK5_0; ++i, x += QK5_0) {
        const float d = detail::max_by_magnitude(x, QK5_0) / -16;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        // truncation toward zero of a value in [0.5, 32.5], as ggml's (int8_t) cast
        int q[QK5_0];
        for (int j = 0; j < QK5_0; ++j) q[j] = std::min(31, int(int8_t(x[j] * id + 16.5f)));
        pack_levels(q, y[i].qs, y[i].qh);
    }
}

void quantize_row_q5_1_ref(const float * x, block_q5_1 * y, int64_t k) {
    GLOAS_ASSERT(k % QK5_1 == 0);
    for (int64_t i = 0; i < k / QK5_1; ++i, x += QK5_1) {
        float mn, id;
        scale_min(x, 31, y[i], mn, id);
        int q[QK5_1];
        for (int j = 0; j < QK5_1; ++j) q[j] = int(uint8_t((x[j] - mn) * id + 0.5f));
        pack_levels(q, y[i].qs, y[i].qh);
    }
}

void quantize_row_q8_1_ref(const float * x, block_q8_1 * y, int64_t k) {
    GLOAS_ASSERT(k % QK8_1 == 0);
    const int64_t nb = k / QK8_1;
    for (int64_t i = 0; i < nb; ++i, x += QK8_1) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_1; ++j) amax = std::fmax(amax, std::fabs(x[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK8_1; ++j) {
            y[i].qs[j] = int8_t(std::roundf(x[j] * id));
            sum += y[i].qs[j];
        }
        y[i].d = fp32_to_fp16(d);
        y[i].s = fp32_to_fp16(float(sum) * d);
    }
}

void quantize_row_q8_1(const float * x, block_q8_1 * y, int64_t k) {
    // Q8_0's fast quantizer gives the same d and values; s is d * their sum.
    GLOAS_ASSERT(k % QK8_1 == 0);
    const int64_t nb = k / QK8_1;
    for (int64_t i = 0; i < nb; ++i, x += QK8_1) {
        block_q8_0 b;
        quantize_row_q8_0(x, &b, QK8_1);
        // two loops: GCC 12 for aarch64 fails (internal compiler error) to
        // vectorize the two reductions in one
        float amax = 0.0f;
        for (int j = 0; j < QK8_1; ++j) amax = std::fmax(amax, std::fabs(x[j]));
        int sum = 0;
        for (int j = 0; j < QK8_1; ++j) sum += b.qs[j];
        y[i].d = b.d;
        y[i].s = fp32_to_fp16(float(sum) * (amax / 127.0f));
        std::memcpy(y[i].qs, b.qs, QK8_1);
    }
}

void dequantize_row_q4_1(const block_q4_1 * x, float * y, int64_t k) {
    GLOAS_ASSERT(k % QK4_1 == 0);
    const int64_t nb = k / QK4_1;
    for (int64_t i = 0; i < nb; ++i, y += QK4_1) {
        const float d = fp16_to_fp32(x[i].d), m = fp16_to_fp32(x[i].m);
        for (int j = 0; j < QK4_1 / 2; ++j) {
            y[j]             = mad(float(x[i].qs[j] & 0x0F), d, m);
            y[j + QK4_1 / 2] = mad(float(x[i].qs[j] >> 4), d, m);
        }
    }
}

void dequantize_row_q5_0(const block_q5_0 * x, float * y, int64_t k) {
    GLOAS_ASSERT(k % QK5_0 == 0);
    const int64_t nb = k / QK5_0;
    for (int64_t i = 0; i < nb; ++i, y += QK5_0) {
        const float d = fp16_to_fp32(x[i].d);
        int q[32];
        unpack_q5(x[i].qs, x[i].qh, q);
        for (int j = 0; j < QK5_0; ++j) y[j] = float(q[j] - 16) * d;
    }
}

void dequantize_row_q5_1(const block_q5_1 * x, float * y, int64_t k) {
    GLOAS_ASSERT(k % QK5_1 == 0);
    const int64_t nb = k / QK5_1;
    for (int64_t i = 0; i < nb; ++i, y += QK5_1) {
        const float d = fp16_to_fp32(x[i].d), m = fp16_to_fp32(x[i].m);
        int q[32];
        unpack_q5(x[i].qs, x[i].qh, q);
        for (int j = 0; j < QK5_1; ++j) y[j] = mad(float(q[j]), d, m);
    }
}

void dequantize_row_q8_1(const block_q8_1 * x, float * y, int64_t k) {
    GLOAS_ASSERT(k % QK8_1 == 0);
    const int64_t nb = k / QK8_1;
    for (int64_t i = 0; i < nb; ++i) {
        const float d = fp16_to_fp32(x[i].d);
        for (int j = 0; j < QK8_1; ++j) *y++ = float(x[i].qs[j]) * d;
    }
}

// ---- dot products --------------------------------------------------------------

// (detail::block_dot_ref.) Q4_1 and Q5_1 against Q8_1: d_w*d_x*sum + m_w*s_x.
namespace {
template <class W>
float scaled_sum_min(const W & w, const block_q8_1 & x, int sumi) {
    return fp16_to_fp32(w.d) * fp16_to_fp32(x.d) * float(sumi) + fp16_to_fp32(w.m) * fp16_to_fp32(x.s);
}
} // namespace

float vec_dot_q4_1_q8_1_ref(int64_t n, const block_q4_1 * w, const block_q8_1 * x) {
    auto unpack = [](const block_q4_1 & b, int * q) {
        for (int j = 0; j < QK4_1 / 2; ++j) {
            q[j] = b.qs[j] & 0x0F;
            q[j + QK4_1 / 2] = b.qs[j] >> 4;
        }
    };
    return detail::block_dot_ref(n, w, x, unpack, scaled_sum_min<block_q4_1>);
}

float vec_dot_q5_0_q8_0_ref(int64_t n, const block_q5_0 * w, const block_q8_0 * x) {
    auto unpack = [](const block_q5_0 & b, int * q) {
        unpack_q5(b.qs, b.qh, q);
        for (int j = 0; j < QK5_0; ++j) q[j] -= 16;
    };
    auto combine = [](const block_q5_0 & b, const block_q8_0 & a, int sumi) {
        return float(sumi) * (fp16_to_fp32(b.d) * fp16_to_fp32(a.d));
    };
    return detail::block_dot_ref(n, w, x, unpack, combine);
}

float vec_dot_q5_1_q8_1_ref(int64_t n, const block_q5_1 * w, const block_q8_1 * x) {
    auto unpack = [](const block_q5_1 & b, int * q) { unpack_q5(b.qs, b.qh, q); };
    return detail::block_dot_ref(n, w, x, unpack, scaled_sum_min<block_q5_1>);
}
#endif

GLOAS_ISA_BEGIN

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
namespace {

// The 32 4-bit values of a block (16 bytes, low nibbles = values 0..15) as
// 32 bytes 0..15 in value order.
inline __m256i unpack_nibbles(const uint8_t * qs) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i *>(qs));
    const __m128i m4 = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m4), _mm_and_si128(v, m4));
}
// Bit i of the 32-bit qh as byte i: 0x10 where set, 0 elsewhere.
inline __m256i spread_bits(const uint8_t * qh) {
    const uint32_t h = load_qh(qh);
    // byte i takes byte i/8 of h, then tests bit i%8 of it
    const __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32(int(h)),
                                          _mm256_setr_epi64x(0x0000000000000000LL, 0x0101010101010101LL,
                                                             0x0202020202020202LL, 0x0303030303030303LL));
    const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201ULL));
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(b, bit), bit), _mm256_set1_epi8(0x10));
}
// Sum of the 32 products of unsigned bytes u (0..31) and signed bytes s, as 8 int32 lanes.
inline __m256i dot_u8_s8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
} // namespace
#endif

// The fast kernels: the exact int32 block sum with 8-lane integer dot
// products, the scales combined as the references do.
float vec_dot_q4_1_q8_1(int64_t n, const block_q4_1 * w, const block_q8_1 * x) {
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    GLOAS_ASSERT(n % QK8_1 == 0);
    const int64_t nb = n / QK8_1;
    __m256 acc = _mm256_setzero_ps();
    float sm = 0.0f;
    for (int64_t i = 0; i < nb; ++i) {
        simd::prefetch_ahead<sizeof(block_q4_1)>(w + i);
        const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x[i].qs));
        const __m256i d = dot_u8_s8(unpack_nibbles(w[i].qs), xq);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_set1_ps(_cvtsh_ss(w[i].d) * _cvtsh_ss(x[i].d)), acc);
        sm += _cvtsh_ss(w[i].m) * _cvtsh_ss(x[i].s);
    }
    return simd::hsum256(acc) + sm;
#else
    return vec_dot_q4_1_q8_1_ref(n, w, x);
#endif
}

float vec_dot_q5_0_q8_0(int64_t n, const block_q5_0 * w, const block_q8_0 * x) {
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    GLOAS_ASSERT(n % QK8_0 == 0);
    const int64_t nb = n / QK8_0;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; ++i) {
        simd::prefetch_ahead<sizeof(block_q5_0)>(w + i);
        const __m256i q = _mm256_or_si256(unpack_nibbles(w[i].qs), spread_bits(w[i].qh));  // 0..31
        const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x[i].qs));
        // (q - 16) * x = q * x - 16 * x
        const __m256i d = _mm256_sub_epi32(dot_u8_s8(q, xq), dot_u8_s8(_mm256_set1_epi8(16), xq));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_set1_ps(_cvtsh_ss(w[i].d) * _cvtsh_ss(x[i].d)), acc);
    }
    return simd::hsum256(acc);
#else
    return vec_dot_q5_0_q8_0_ref(n, w, x);
#endif
}

float vec_dot_q5_1_q8_1(int64_t n, const block_q5_1 * w, const block_q8_1 * x) {
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    GLOAS_ASSERT(n % QK8_1 == 0);
    const int64_t nb = n / QK8_1;
    __m256 acc = _mm256_setzero_ps();
    float sm = 0.0f;
    for (int64_t i = 0; i < nb; ++i) {
        simd::prefetch_ahead<sizeof(block_q5_1)>(w + i);
        const __m256i q = _mm256_or_si256(unpack_nibbles(w[i].qs), spread_bits(w[i].qh));
        const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x[i].qs));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_u8_s8(q, xq)), _mm256_set1_ps(_cvtsh_ss(w[i].d) * _cvtsh_ss(x[i].d)), acc);
        sm += _cvtsh_ss(w[i].m) * _cvtsh_ss(x[i].s);
    }
    return simd::hsum256(acc) + sm;
#else
    return vec_dot_q5_1_q8_1_ref(n, w, x);
#endif
}

GLOAS_ISA_END

} // namespace gloas
