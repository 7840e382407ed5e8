// Dot products of one weight row with one activation row.
#include "quant/quant.h"

#include "quant/fp16.h"
#include "quant/quant-impl.h"
#include "quant/neon.h"
#include "quant/simd.h"
#include "base/error.h"


namespace gloas {

#if GLOAS_ISA_BASE
// The float references accumulate in double: they define the exact-ish value
// the fast kernels are measured against.
float vec_dot_f32_ref(int64_t n, const float * w, const float * x) {
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += double(w[i]) * double(x[i]);
    return float(s);
}

float vec_dot_f16_ref(int64_t n, const uint16_t * w, const float * x) {
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += double(fp16_to_fp32(w[i])) * double(x[i]);
    return float(s);
}

float vec_dot_bf16_ref(int64_t n, const uint16_t * w, const float * x) {
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += double(bf16_to_fp32(w[i])) * double(x[i]);
    return float(s);
}

// The block references are ggml's: an exact int32 sum per block, scaled by
// the product of the two fp16 scales and summed in float, block by block.
// (detail::block_dot_ref).
namespace {
template <class W>
float scaled_sum(const W & w, const block_q8_0 & x, int sumi) {
    return float(sumi) * (fp16_to_fp32(w.d) * fp16_to_fp32(x.d));
}
} // namespace

float vec_dot_q8_0_q8_0_ref(int64_t n, const block_q8_0 * w, const block_q8_0 * x) {
    static_assert(QK8_0 == 32, "a block of 32");
    auto unpack = [](const block_q8_0 & b, int * q) {
        for (int j = 0; j < QK8_0; ++j) q[j] = b.qs[j];
    };
    return detail::block_dot_ref(n, w, x, unpack, scaled_sum<block_q8_0>);
}

float vec_dot_q4_0_q8_0_ref(int64_t n, const block_q4_0 * w, const block_q8_0 * x) {
    static_assert(QK4_0 == 32, "a block of 32");
    auto unpack = [](const block_q4_0 & b, int * q) {
        for (int j = 0; j < QK4_0 / 2; ++j) {
            q[j] = (b.qs[j] & 0x0f) - 8;
            q[j + QK4_0 / 2] = (b.qs[j] >> 4) - 8;
        }
    };
    return detail::block_dot_ref(n, w, x, unpack, scaled_sum<block_q4_0>);
}
#endif

GLOAS_ISA_BEGIN

#if defined(__AVX512F__)
namespace {

// The first min(n, 16) floats at p; lanes past n read as zero.
inline __m512 load_tail_ps(const float * p, int64_t n) {
    return _mm512_maskz_loadu_ps(__mmask16((1u << n) - 1), p);
}
inline __m512 load_tail_f16(const uint16_t * p, int64_t n) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(__mmask16((1u << n) - 1), p));
}
inline __m512 widen_bf16(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline __m512 load_tail_bf16(const uint16_t * p, int64_t n) {
    return widen_bf16(_mm256_maskz_loadu_epi16(__mmask16((1u << n) - 1), p));
}

// Two blocks' 32 signed values each, as one 64-byte vector: [block 0 | block 1].
inline __m512i load_q8_pair(const block_q8_0 * b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(b[0].qs))),
                              _mm256_loadu_si256(reinterpret_cast<const __m256i *>(b[1].qs)), 1);
}
// Two Q4_0 blocks' nibbles as 64 unsigned bytes 0..15 in value order:
// [block 0 values 0..31 | block 1 values 0..31].
inline __m512i load_q4_pair(const block_q4_0 * b) {
    const __m256i v = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b[0].qs))),
        _mm_loadu_si128(reinterpret_cast<const __m128i *>(b[1].qs)), 1);  // [b0 | b1]
    const __m256i m = _mm256_set1_epi8(0x0f);
    const __m256i lo = _mm256_and_si256(v, m);                         // [b0 0..15 | b1 0..15]
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);  // [b0 16..31 | b1 16..31]
    const __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    return _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0));
}
// Lanes 0..7 = a, lanes 8..15 = b.
inline __m512 set_halves(float a, float b) {
    return _mm512_insertf32x8(_mm512_set1_ps(a), _mm256_set1_ps(b), 1);
}
inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

} // namespace
#endif

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
namespace {
// The AVX2 Q4_0 dot product takes 4 blocks at a time: each block's exact
// int32 sum in its own lane (hsum4), times the 4 blocks' d_w * d_x (scales4,
// one fp16 conversion for all 8 scales) in one FMA, where a block at a time
// spent more on its scale and float steps than on its products. Q8_0's
// larger blocks gained nothing from it (the shuffles of hsum4, then three
// vphaddd, and scales4 cost more there), so it keeps one block per step.

// Lane j = the 8 int32 lanes of v[j] summed (exact): interleaves and adds,
// single-uop steps where vphaddd takes three.
inline __m128i hsum4(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
    // per 128-bit half: [v0 lanes 0+2, v1 0+2, v0 1+3, v1 1+3], the same of v2, v3
    const __m256i a = _mm256_add_epi32(_mm256_unpacklo_epi32(v0, v1), _mm256_unpackhi_epi32(v0, v1));
    const __m256i b = _mm256_add_epi32(_mm256_unpacklo_epi32(v2, v3), _mm256_unpackhi_epi32(v2, v3));
    // per half: [v0, v1, v2, v3] each summed over the half
    const __m256i h = _mm256_add_epi32(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}
// Lane j = d_w of block j times d_x of block j, j < 4.
template <class WB>
inline __m128 scales4(const WB * w, const block_q8_0 * x) {
    const __m256 f = _mm256_cvtph_ps(_mm_setr_epi16(short(w[0].d), short(w[1].d), short(w[2].d), short(w[3].d),
                                                    short(x[0].d), short(x[1].d), short(x[2].d), short(x[3].d)));
    return _mm_mul_ps(_mm256_castps256_ps128(f), _mm256_extractf128_ps(f, 1));
}
// The int32 lanes of a block's dot product (8 lanes of 4 products each).
inline __m256i block_q8_avx2(const block_q8_0 & w, const block_q8_0 & x) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(w.qs));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x.qs));
    // |a| * (b with a's sign): no saturation, |a| <= 128 and |b| <= 127
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a)), _mm256_set1_epi16(1));
}
inline __m256i block_q4_avx2(const block_q4_0 & w, const block_q8_0 & x) {
    // the 16 bytes in both halves, the upper one shifted by 4: low nibbles
    // (values 0..15) below, high nibbles (16..31) above
    const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(w.qs)));
    const __m256i q = _mm256_and_si256(_mm256_srlv_epi32(v, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)),
                                       _mm256_set1_epi8(0x0f));  // levels 0..15
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x.qs));
    // (q - 8) * b = q * b - 8 * b, in 16 bits: |q b pairs| <= 3810, |8 b pairs| <= 2032
    const __m256i p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(q, b), _mm256_maddubs_epi16(_mm256_set1_epi8(8), b));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}
template <class WB, class F>
inline float dot_blocks4(int64_t & i, int64_t nb, const WB * w, const block_q8_0 * x, F block) {
    __m128 acc = _mm_setzero_ps();
    for (; i + 4 <= nb; i += 4) {
        simd::prefetch_ahead<4 * sizeof(WB)>(w + i);
        const __m128i s = hsum4(block(w[i], x[i]), block(w[i + 1], x[i + 1]), block(w[i + 2], x[i + 2]),
                                block(w[i + 3], x[i + 3]));
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(s), scales4(w + i, x + i), acc);
    }
    acc = _mm_add_ps(acc, _mm_movehl_ps(acc, acc));
    return _mm_cvtss_f32(_mm_add_ss(acc, _mm_movehdup_ps(acc)));
}
} // namespace
#endif

float vec_dot_f32(int64_t n, const float * w, const float * x) {
#if defined(__AVX512F__)
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i),      _mm512_loadu_ps(x + i),      a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 32), _mm512_loadu_ps(x + i + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 48), _mm512_loadu_ps(x + i + 48), a3);
    }
    for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
    if (i < n) a1 = _mm512_fmadd_ps(load_tail_ps(w + i, n - i), load_tail_ps(x + i, n - i), a1);
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
#elif defined(__AVX2__) && defined(__FMA__)
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i),     _mm256_loadu_ps(x + i),     a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    }
    float s = simd::hsum256(_mm256_add_ps(a0, a1));
    for (; i < n; ++i) s += w[i] * x[i];
    return s;
#elif defined(GLOAS_NEON)
    return neon_kernels::vec_dot_f32(n, w, x);
#else
    float s = 0.0f;
    for (int64_t i = 0; i < n; ++i) s += w[i] * x[i];
    return s;
#endif
}

float vec_dot_f16(int64_t n, const uint16_t * w, const float * x) {
#if defined(__AVX512F__)
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(w + i))),
                             _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(w + i + 16))),
                             _mm512_loadu_ps(x + i + 16), a1);
    }
    for (; i < n; i += 16) {
        const int64_t m = n - i < 16 ? n - i : 16;
        a0 = _mm512_fmadd_ps(load_tail_f16(w + i, m), load_tail_ps(x + i, m), a0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    __m256 a0 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(w + i))), _mm256_loadu_ps(x + i), a0);
    float s = simd::hsum256(a0);
    for (; i < n; ++i) s += fp16_to_fp32(w[i]) * x[i];
    return s;
#elif defined(GLOAS_NEON)
    return neon_kernels::vec_dot_f16(n, w, x);
#else
    float s = 0.0f;
    for (int64_t i = 0; i < n; ++i) s += fp16_to_fp32(w[i]) * x[i];
    return s;
#endif
}

float vec_dot_bf16(int64_t n, const uint16_t * w, const float * x) {
#if defined(__AVX512F__)
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_fmadd_ps(widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(w + i))),
                             _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(w + i + 16))),
                             _mm512_loadu_ps(x + i + 16), a1);
    }
    for (; i < n; i += 16) {
        const int64_t m = n - i < 16 ? n - i : 16;
        a0 = _mm512_fmadd_ps(load_tail_bf16(w + i, m), load_tail_ps(x + i, m), a0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
#elif defined(__AVX2__) && defined(__FMA__)
    __m256 a0 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(w + i)));
        a0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(h, 16)), _mm256_loadu_ps(x + i), a0);
    }
    float s = simd::hsum256(a0);
    for (; i < n; ++i) s += bf16_to_fp32(w[i]) * x[i];
    return s;
#elif defined(GLOAS_NEON)
    return neon_kernels::vec_dot_bf16(n, w, x);
#else
    float s = 0.0f;
    for (int64_t i = 0; i < n; ++i) s += bf16_to_fp32(w[i]) * x[i];
    return s;
#endif
}

// Block dot products: per pair of blocks, exact int32 lane sums (VNNI
// dpbusd: unsigned x signed bytes), scaled per block in float lanes.
float vec_dot_q8_0_q8_0(int64_t n, const block_q8_0 * w, const block_q8_0 * x) {
    GLOAS_ASSERT(n % QK8_0 == 0);
    const int64_t nb = n / QK8_0;
    int64_t i = 0;
    float s = 0.0f;
#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
    __m512 acc = _mm512_setzero_ps();
    for (; i + 2 <= nb; i += 2) {
        simd::prefetch_ahead<2 * sizeof(block_q8_0)>(w + i);
        const __m512i wq = load_q8_pair(w + i);
        const __m512i xq = load_q8_pair(x + i);
        // w*x = |w| * (x with w's sign)
        const __m512i aw = _mm512_abs_epi8(wq);
        const __m512i sx = _mm512_mask_sub_epi8(xq, _mm512_movepi8_mask(wq), _mm512_setzero_si512(), xq);
        const __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, sx);
        const __m512 sc = set_halves(h2f(w[i].d) * h2f(x[i].d), h2f(w[i + 1].d) * h2f(x[i + 1].d));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), sc, acc);
    }
    s = _mm512_reduce_add_ps(acc);
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    __m256 acc = _mm256_setzero_ps();
    for (; i < nb; ++i) {
        simd::prefetch_ahead<sizeof(block_q8_0)>(w + i);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_q8_avx2(w[i], x[i])), _mm256_set1_ps(_cvtsh_ss(w[i].d) * _cvtsh_ss(x[i].d)), acc);
    }
    s = simd::hsum256(acc);
#elif defined(GLOAS_NEON)
    return neon_kernels::vec_dot_q8_0_q8_0(n, w, x);
#endif
    if (i < nb) s += vec_dot_q8_0_q8_0_ref((nb - i) * QK8_0, w + i, x + i);
    return s;
}

float vec_dot_q4_0_q8_0(int64_t n, const block_q4_0 * w, const block_q8_0 * x) {
    GLOAS_ASSERT(n % QK8_0 == 0);
    const int64_t nb = n / QK8_0;
    int64_t i = 0;
    float s = 0.0f;
#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
    __m512 acc = _mm512_setzero_ps();
    const __m512i eight = _mm512_set1_epi8(8);
    for (; i + 2 <= nb; i += 2) {
        simd::prefetch_ahead<2 * sizeof(block_q4_0)>(w + i);
        const __m512i wq = load_q4_pair(w + i);  // q + 8, unsigned
        const __m512i xq = load_q8_pair(x + i);
        // (q+8)*x - 8*x, exact in int32
        const __m512i d = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), wq, xq),
                                           _mm512_dpbusd_epi32(_mm512_setzero_si512(), eight, xq));
        const __m512 sc = set_halves(h2f(w[i].d) * h2f(x[i].d), h2f(w[i + 1].d) * h2f(x[i + 1].d));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), sc, acc);
    }
    s = _mm512_reduce_add_ps(acc);
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    s = dot_blocks4(i, nb, w, x, [](const block_q4_0 & a, const block_q8_0 & b) { return block_q4_avx2(a, b); });
#elif defined(GLOAS_NEON)
    return neon_kernels::vec_dot_q4_0_q8_0(n, w, x);
#endif
    if (i < nb) s += vec_dot_q4_0_q8_0_ref((nb - i) * QK8_0, w + i, x + i);
    return s;
}

GLOAS_ISA_END

} // namespace gloas
