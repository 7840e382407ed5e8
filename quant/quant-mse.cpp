#include "quant/quant-mse.h"

#include "quant/fp16.h"
#include "quant/simd.h"
#include "base/error.h"

#include <cmath>

namespace gloas {

namespace {

// Squared error of quantizing the block with scale d (levels -8..7), and the
// least-squares scale for the levels that d picks.
[[maybe_unused]] float q4_error(const float * x, float d, float * d_ls) {
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    float err = 0.0f, sxq = 0.0f, sqq = 0.0f;
    for (int j = 0; j < QK4_0; ++j) {
        const float q = std::fmin(7.0f, std::fmax(-8.0f, std::nearbyintf(x[j] * id)));
        const float e = x[j] - d * q;
        err += e * e;
        sxq += x[j] * q;
        sqq += q * q;
    }
    *d_ls = sqq > 0.0f ? sxq / sqq : 0.0f;
    return err;
}

#if defined(__AVX512F__)
// q4_error on two vectors of 16: the same levels, sums in another order.
float q4_error_avx512(const float * x, float d, float * d_ls) {
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const __m512 vid = _mm512_set1_ps(id), vd = _mm512_set1_ps(d);
    const __m512 lo = _mm512_set1_ps(-8.0f), hi = _mm512_set1_ps(7.0f);
    __m512 err = _mm512_setzero_ps(), sxq = _mm512_setzero_ps(), sqq = _mm512_setzero_ps();
    for (int h = 0; h < 2; ++h) {
        const __m512 xv = _mm512_loadu_ps(x + 16 * h);
        const __m512 q = _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_roundscale_ps(_mm512_mul_ps(xv, vid),
                                                                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
        const __m512 e = _mm512_fnmadd_ps(vd, q, xv);
        err = _mm512_fmadd_ps(e, e, err);
        sxq = _mm512_fmadd_ps(xv, q, sxq);
        sqq = _mm512_fmadd_ps(q, q, sqq);
    }
    const float sq = _mm512_reduce_add_ps(sqq);
    *d_ls = sq > 0.0f ? _mm512_reduce_add_ps(sxq) / sq : 0.0f;
    return _mm512_reduce_add_ps(err);
}
#endif

template <float (*ERR)(const float *, float, float *)>
void quantize_block_q4_0_mse(const float * xb, block_q4_0 * y) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QK4_0; ++j)
        if (std::fabs(xb[j]) > amax) {
            amax = std::fabs(xb[j]);
            max = xb[j];
        }
    // Candidates: the reference scale max/-8 and shrunken versions (clipping
    // the extreme value buys resolution for the rest), each also refined once
    // by least squares on the levels it picked. A scale is judged after
    // rounding to fp16, as it is stored.
    auto rounded = [](float d) { return fp16_to_fp32(fp32_to_fp16(d)); };
    float best_d = rounded(max / -8.0f), ls = 0.0f;
    float best_err = ERR(xb, best_d, &ls);
    for (int c = 0; c <= 12 && max != 0.0f; ++c) {
        const float d0 = rounded(max / -(8.0f - 0.25f * float(c)));
        const float e0 = ERR(xb, d0, &ls);
        if (e0 < best_err) { best_err = e0; best_d = d0; }
        const float d1 = rounded(ls);
        if (d1 == 0.0f) continue;
        float unused;
        const float e1 = ERR(xb, d1, &unused);
        if (e1 < best_err) { best_err = e1; best_d = d1; }
    }
    const float d = fp16_to_fp32(fp32_to_fp16(best_d));
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y->d = fp32_to_fp16(d);
    for (int j = 0; j < QK4_0 / 2; ++j) {
        const int q0 = int(std::fmin(7.0f, std::fmax(-8.0f, std::nearbyintf(xb[j] * id)))) + 8;
        const int q1 = int(std::fmin(7.0f, std::fmax(-8.0f, std::nearbyintf(xb[j + QK4_0 / 2] * id)))) + 8;
        y->qs[j] = uint8_t(q0 | (q1 << 4));
    }
}

} // namespace

GLOAS_ISA_BEGIN

void quantize_row_q4_0_mse(const float * x, block_q4_0 * y, int64_t k) {
#if defined(__AVX512F__)
    GLOAS_ASSERT(k % QK4_0 == 0);
    for (int64_t i = 0; i < k / QK4_0; ++i) quantize_block_q4_0_mse<q4_error_avx512>(x + i * QK4_0, y + i);
#else
    quantize_row_q4_0_mse_scalar(x, y, k);
#endif
}

GLOAS_ISA_END

#if GLOAS_ISA_BASE
void quantize_row_q4_0_mse_scalar(const float * x, block_q4_0 * y, int64_t k) {
    GLOAS_ASSERT(k % QK4_0 == 0);
    for (int64_t i = 0; i < k / QK4_0; ++i) quantize_block_q4_0_mse<q4_error>(x + i * QK4_0, y + i);
}
#endif

} // namespace gloas
