// Quantize / dequantize rows of Q8_0 and Q4_0 blocks.
#include "quant/quant.h"

#include "quant/fp16.h"
#include "quant/quant-impl.h"
#include "quant/simd.h"
#include "base/error.h"

#include <algorithm>
#include <cmath>

#include "quant/no-contract.h"  // last: it applies to what follows

namespace gloas {

#if GLOAS_ISA_BASE
void quantize_row_q8_0_ref(const float * x, block_q8_0 * y, int64_t k) {
    GLOAS_ASSERT(k % QK8_0 == 0);
    const int64_t nb = k / QK8_0;
    for (int64_t i = 0; i < nb; ++i) {
        const float * xb = x + i * QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; ++j) amax = std::fmax(amax, std::fabs(xb[j]));
        const float d  = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK8_0; ++j) y[i].qs[j] = int8_t(std::roundf(xb[j] * id));
    }
}

void quantize_row_q4_0_ref(const float * x, block_q4_0 * y, int64_t k) {
    GLOAS_ASSERT(k % QK4_0 == 0);
    const int64_t nb = k / QK4_0;
    for (int64_t i = 0; i < nb; ++i) {
        const float * xb = x + i * QK4_0;
        const float d  = detail::max_by_magnitude(xb, QK4_0) / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            const float x0 = xb[j] * id;
            const float x1 = xb[j + QK4_0 / 2] * id;
            // truncation toward zero of a value in [0.5, 16.5], as ggml's (int8_t) cast
            const int q0 = std::min(15, int(int8_t(x0 + 8.5f)));
            const int q1 = std::min(15, int(int8_t(x1 + 8.5f)));
            y[i].qs[j] = uint8_t(q0 | (q1 << 4));
        }
    }
}
#endif

GLOAS_ISA_BEGIN

#if defined(__AVX512F__)
// roundf (half away from zero) on 16 lanes, then to int32: with t = trunc(|v|),
// |v| - t is exact, so r = t + (|v| - t >= 0.5) is |round(v)| with no double
// rounding (unlike trunc(|v| + 0.5), which is wrong for 0.49999997).
static inline __m512i round_away_epi32(__m512 v) {
    const __m512 a = _mm512_abs_ps(v);
    const __m512 t = _mm512_roundscale_ps(a, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __mmask16 up = _mm512_cmp_ps_mask(_mm512_sub_ps(a, t), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    const __m512 r = _mm512_mask_add_ps(t, up, t, _mm512_set1_ps(1.0f));
    // copy the sign of v onto r
    const __m512 s = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(int(0x80000000u))));
    return _mm512_cvttps_epi32(_mm512_or_ps(r, s));
}
#endif

void quantize_row_q8_0(const float * x, block_q8_0 * y, int64_t k) {
    GLOAS_ASSERT(k % QK8_0 == 0);
    const int64_t nb = k / QK8_0;
    int64_t i = 0;
#if defined(__AVX512F__)
    const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    for (; i < nb; ++i) {
        const __m512 v0 = _mm512_loadu_ps(x + i * QK8_0);
        const __m512 v1 = _mm512_loadu_ps(x + i * QK8_0 + 16);
        const __m512 a  = _mm512_max_ps(_mm512_and_ps(v0, abs_mask), _mm512_and_ps(v1, abs_mask));
        const float amax = _mm512_reduce_max_ps(a);
        const float d  = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        const __m512 vid = _mm512_set1_ps(id);
        const __m512i q0 = round_away_epi32(_mm512_mul_ps(v0, vid));
        const __m512i q1 = round_away_epi32(_mm512_mul_ps(v1, vid));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(y[i].qs), _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(y[i].qs + 16), _mm512_cvtepi32_epi8(q1));
    }
#elif defined(__AVX2__) && defined(__F16C__)
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 sign_mask = _mm256_castsi256_ps(_mm256_set1_epi32(int(0x80000000u)));
    for (; i < nb; ++i) {
        __m256 v[4];
        __m256 a = _mm256_setzero_ps();
        for (int j = 0; j < 4; ++j) {
            v[j] = _mm256_loadu_ps(x + i * QK8_0 + 8 * j);
            a = _mm256_max_ps(a, _mm256_and_ps(v[j], abs_mask));
        }
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        const float d  = _mm_cvtss_f32(m) / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        __m256i q[4];
        for (int j = 0; j < 4; ++j) {
            // roundf as in the AVX-512 path: t = trunc(|v|), + 1 when |v| - t >= 0.5
            const __m256 s = _mm256_mul_ps(v[j], _mm256_set1_ps(id));
            const __m256 av = _mm256_and_ps(s, abs_mask);
            const __m256 t = _mm256_round_ps(av, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            const __m256 up = _mm256_and_ps(_mm256_cmp_ps(_mm256_sub_ps(av, t), _mm256_set1_ps(0.5f), _CMP_GE_OQ), _mm256_set1_ps(1.0f));
            q[j] = _mm256_cvttps_epi32(_mm256_or_ps(_mm256_add_ps(t, up), _mm256_and_ps(s, sign_mask)));
        }
        // int32 -> int8 with the lane order packs scrambles put back
        const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        const __m256i r = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(y[i].qs), r);
    }
#endif
    if (i < nb) quantize_row_q8_0_ref(x + i * QK8_0, y + i, (nb - i) * QK8_0);
}

GLOAS_ISA_END

#if GLOAS_ISA_BASE

void quantize_row_q4_0(const float * x, block_q4_0 * y, int64_t k) {
    // Weights are quantized offline; the reference is fast enough.
    quantize_row_q4_0_ref(x, y, k);
}

void dequantize_row_q8_0(const block_q8_0 * x, float * y, int64_t k) {
    GLOAS_ASSERT(k % QK8_0 == 0);
    const int64_t nb = k / QK8_0;
    for (int64_t i = 0; i < nb; ++i) {
        const float d = fp16_to_fp32(x[i].d);
        for (int j = 0; j < QK8_0; ++j) y[i * QK8_0 + j] = d * float(x[i].qs[j]);
    }
}

void dequantize_row_q4_0(const block_q4_0 * x, float * y, int64_t k) {
    GLOAS_ASSERT(k % QK4_0 == 0);
    const int64_t nb = k / QK4_0;
    for (int64_t i = 0; i < nb; ++i) {
        const float d = fp16_to_fp32(x[i].d);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            y[i * QK4_0 + j]             = d * float((x[i].qs[j] & 0x0f) - 8);
            y[i * QK4_0 + j + QK4_0 / 2] = d * float((x[i].qs[j] >> 4) - 8);
        }
    }
}
#endif

} // namespace gloas
