#include "quant/fp16.h"

#include "quant/neon.h"
#include "quant/simd.h"

namespace gloas {

#if GLOAS_ISA_BASE
float fp16_to_fp32(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000) << 16;
    const uint32_t exp  = (h >> 10) & 0x1f;
    const uint32_t mant = h & 0x3ff;
    if (exp == 0) {
        // zero or subnormal: mant * 2^-24, exact in f32
        const float v = float(mant) * (1.0f / 16777216.0f);
        return f32_from_bits(f32_bits(v) | sign);
    }
    if (exp == 31) {
        // inf, or nan: payload kept and quieted, as F16C's vcvtph2ps does
        return f32_from_bits(sign | 0x7f800000 | (mant << 13) | (mant ? 0x400000u : 0u));
    }
    return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t fp32_to_fp16(float f) {
    const uint32_t x    = f32_bits(f);
    const uint16_t sign = uint16_t((x >> 16) & 0x8000);
    const uint32_t u    = x & 0x7fffffff;
    if (u > 0x7f800000) return uint16_t(sign | 0x7e00 | ((u >> 13) & 0x3ff));  // nan, quieted as F16C does
    if (u >= 0x477ff000) return uint16_t(sign | 0x7c00);  // rounds past 65504: inf
    const uint32_t e = u >> 23;
    if (e >= 113) {
        // normal half: drop 13 mantissa bits, round to nearest even (a carry
        // into the exponent is the correct result)
        uint32_t h = ((e - 112) << 10) | ((u >> 13) & 0x3ff);
        const uint32_t rem = u & 0x1fff;
        if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;
        return uint16_t(sign | h);
    }
    // subnormal half: value = m * 2^(e-150), half units are 2^-24
    const uint32_t shift = 126 - e;  // >= 14
    if (shift > 24) return sign;
    const uint32_t m   = (u & 0x7fffff) | 0x800000;
    uint32_t q         = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) ++q;
    return uint16_t(sign | q);
}
#endif

GLOAS_ISA_BEGIN

void fp16_to_fp32_row(const uint16_t * x, float * y, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
        _mm512_storeu_ps(y + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(x + i))));
    }
#elif defined(__F16C__)
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(x + i))));
    }
#elif defined(GLOAS_NEON)
    // FCVTL: exact, NaNs quieted with their payload, as above
    for (; i + 8 <= n; i += 8) {
        const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(x + i));
        vst1q_f32(y + i, vcvt_f32_f16(vget_low_f16(h)));
        vst1q_f32(y + i + 4, vcvt_high_f32_f16(h));
    }
#endif
    for (; i < n; ++i) y[i] = fp16_to_fp32(x[i]);
}

void fp32_to_fp16_row(const float * x, uint16_t * y, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(y + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
#elif defined(__F16C__)
    for (; i + 8 <= n; i += 8) {
        _mm_storeu_si128(reinterpret_cast<__m128i *>(y + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
#elif defined(GLOAS_NEON)
    // FCVTN in the default rounding mode (nearest even; subnormals kept)
    for (; i + 8 <= n; i += 8) {
        const float16x8_t h = vcvt_high_f16_f32(vcvt_f16_f32(vld1q_f32(x + i)), vld1q_f32(x + i + 4));
        vst1q_u16(y + i, vreinterpretq_u16_f16(h));
    }
#endif
    for (; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
}

void bf16_to_fp32_row(const uint16_t * x, float * y, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
        const __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(x + i)));
        _mm512_storeu_si512(y + i, _mm512_slli_epi32(h, 16));
    }
#elif defined(__AVX2__)
    for (; i + 8 <= n; i += 8) {
        const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(x + i)));
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(y + i), _mm256_slli_epi32(h, 16));
    }
#elif defined(GLOAS_NEON)
    for (; i + 8 <= n; i += 8) {
        const uint16x8_t h = vld1q_u16(x + i);
        vst1q_f32(y + i, vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16)));
        vst1q_f32(y + i + 4, vreinterpretq_f32_u32(vshll_high_n_u16(h, 16)));
    }
#endif
    for (; i < n; ++i) y[i] = bf16_to_fp32(x[i]);
}

// The integer form of fp32_to_bf16 (not vcvtneps2bf16, which flushes
// denormals to zero and so would differ from the scalar definition).
void fp32_to_bf16_row(const float * x, uint16_t * y, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512F__)
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
    const __m512i inf      = _mm512_set1_epi32(0x7f800000);
    const __m512i bias     = _mm512_set1_epi32(0x7fff);
    const __m512i one      = _mm512_set1_epi32(1);
    const __m512i quiet    = _mm512_set1_epi32(64);
    for (; i + 16 <= n; i += 16) {
        const __m512i u = _mm512_loadu_si512(x + i);
        const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
        const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(bias, lsb)), 16);
        r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), quiet);
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(y + i), _mm512_cvtepi32_epi16(r));
    }
#endif
    for (; i < n; ++i) y[i] = fp32_to_bf16(x[i]);
}

GLOAS_ISA_END

} // namespace gloas
