// K-quants: quantize (ggml's reference search) and dequantize rows of
// Q2_K..Q6_K super-blocks, and the Q8_K activations.
#include "quant/fp16.h"
#include "quant/quant-impl.h"
#include "quant/quant.h"
#include "quant/simd.h"
#include "base/error.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/no-contract.h"  // last: it applies to what follows

namespace gloas {

using detail::mad;
using detail::nearest_int;
using detail::scale_min_k4;
using detail::scales_q3_K;

#if GLOAS_ISA_BASE
namespace {

constexpr float GROUP_MAX_EPS = 1e-15f;  // a group whose largest |x| is below this is all zero

// Scale and min of n values with levels 0..nmax: x ~ scale * L + min, min <= 0,
// minimizing the weighted error (squared, or absolute with use_mad) over
// nstep+1 candidate scales (nmax + rmin + rdelta*is) / (max - min), each
// refined by weighted least squares. Returns the scale; *neg_min = -min.
// ggml's make_qkx2_quants, step for step (the float operations and their
// order decide which levels win, so they follow it exactly).
float make_qkx2_quants(int n, int nmax, const float * x, const float * w, uint8_t * L, float * neg_min,
                       uint8_t * Laux, float rmin, float rdelta, int nstep, bool use_mad) {
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *neg_min = -min;
        return 0.0f;
    }
    float iscale = float(nmax) / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * (x[i] - min));
        L[i] = uint8_t(std::max(0, std::min(nmax, l)));
        float diff = scale * float(L[i]) + min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        best_error += w[i] * diff;
    }
    if (nstep < 1) {
        *neg_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * float(is) + float(nmax)) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * (x[i] - min));
            l = std::max(0, std::min(nmax, l));
            Laux[i] = uint8_t(l);
            const float wl = w[i] * float(l);
            sum_l += wl;
            sum_l2 += wl * float(l);
            sum_xl += wl * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * float(Laux[i]) + this_min - x[i];
                diff = use_mad ? std::fabs(diff) : diff * diff;
                cur_error += w[i] * diff;
            }
            if (cur_error < best_error) {
                for (int i = 0; i < n; ++i) L[i] = Laux[i];
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *neg_min = -min;
    return scale;
}

// The levels l = nearest_int(iscale * x) in -nmax..nmax-1 of n values and
// their weighted sums (weights x^2) sumlx = sum w x l, suml2 = sum w l^2;
// with L, L[i] = l + offset.
void level_sums(int n, int nmax, const float * x, float iscale, int8_t * L, int offset, float & sumlx, float & suml2) {
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        l = std::max(-nmax, std::min(nmax - 1, l));
        if (L) L[i] = int8_t(l + offset);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * float(l);
        suml2 += w * float(l) * float(l);
    }
}

// The value of largest magnitude of n values (the first of equals); when it
// is below GROUP_MAX_EPS, every level is 0 and it returns 0.
float group_max(int n, const float * x, int8_t * L) {
    const float max = detail::max_by_magnitude(x, n);
    if (std::fabs(max) >= GROUP_MAX_EPS) return max;
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
}

// Symmetric scale of n values with levels -nmax..nmax-1 (stored + nmax in L),
// weights x^2 (rmse_type 1): the least-squares scale of the levels at
// -nmax/max, then of 18 nearby candidates (nmax + 0.1*is)/max, keeping the
// best. ggml's make_qx_quants with rmse_type 1 and no importance weights.
float make_qx_quants(int n, int nmax, const float * x, int8_t * L) {
    const float max = group_max(n, x, L);
    if (max == 0.0f) return 0.0f;
    float sumlx, suml2;
    level_sums(n, nmax, x, -float(nmax) / max, L, nmax, sumlx, suml2);
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        const float iscale = -(float(nmax) + 0.1f * float(is)) / max;
        level_sums(n, nmax, x, iscale, nullptr, 0, sumlx, suml2);
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                const int l = nearest_int(iscale * x[i]);
                L[i] = int8_t(nmax + std::max(-nmax, std::min(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

// Symmetric scale for Q3_K (levels -nmax..nmax-1, stored + nmax): the levels
// at -nmax/max, then up to 5 rounds of moving single levels where that
// raises sumlx^2/suml2 (weights x^2). ggml's make_q3_quants with do_rmse.
float make_q3_quants(int n, int nmax, const float * x, int8_t * L) {
    const float max = group_max(n, x, L);
    if (max == 0.0f) return 0.0f;
    float sumlx, suml2;
    level_sums(n, nmax, x, -float(nmax) / max, L, 0, sumlx, suml2);
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * float(L[i]);
            if (slx > 0) {
                float sl2 = suml2 - w * float(L[i]) * float(L[i]);
                int new_l = nearest_int(x[i] * sl2 / slx);
                new_l = std::max(-nmax, std::min(nmax - 1, new_l));
                if (new_l != L[i]) {
                    slx += w * x[i] * float(new_l);
                    sl2 += w * float(new_l) * float(new_l);
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = int8_t(new_l);
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; ++i) L[i] = int8_t(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// The levels 0..nmax of n values x ~ d * L - dm with a sub-block's final
// scale d and min dm: L = nearest_int((x + dm) / d), clamped; left as they
// are when d is 0.
void requantize(int n, int nmax, const float * x, float d, float dm, uint8_t * L) {
    if (d == 0.0f) return;
    for (int ii = 0; ii < n; ++ii) L[ii] = uint8_t(std::max(0, std::min(nmax, nearest_int((x[ii] + dm) / d))));
}

// The same for symmetric levels -nmax..nmax-1, stored + nmax: x ~ d * (L - nmax).
void requantize(int n, int nmax, const float * x, float d, int8_t * L) {
    if (d == 0.0f) return;
    for (int ii = 0; ii < n; ++ii) L[ii] = int8_t(std::max(-nmax, std::min(nmax - 1, nearest_int(x[ii] / d))) + nmax);
}

// Packs 256 2-bit levels as Q2_K/Q3_K qs: value 128h + 32s + l -> bits 2s of qs[32h + l].
void pack_2bit(const uint8_t * L, uint8_t * qs) {
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; ++l)
            qs[j / 4 + l] = uint8_t(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

// Per 32-value sub-block of a Q4_K/Q5_K super-block: ggml's weights
// (rms of the sub-block + |x|) and the make_qkx2_quants search; then the 8
// scales and mins quantized to 6 bits and packed; returns nothing, fills
// y_d/y_dmin/scales and the final levels L (0..nmax).
void quantize_k4_scales(const float * x, int nmax, float rmin, int nstep, uint16_t & y_d, uint16_t & y_dmin,
                        uint8_t * scales_out, uint8_t * L) {
    float scales[QK_K / 32], mins[QK_K / 32], weights[32];
    uint8_t Laux[32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 32; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = std::sqrt(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    std::memset(scales_out, 0, K_SCALE_SIZE);
    for (int j = 0; j < QK_K / 32; ++j) {
        const uint8_t ls = uint8_t(std::min(63, int(uint8_t(nearest_int(inv_scale * scales[j])))));
        const uint8_t lm = uint8_t(std::min(63, int(uint8_t(nearest_int(inv_min * mins[j])))));
        if (j < 4) {
            scales_out[j] = ls;
            scales_out[j + 4] = lm;
        } else {
            scales_out[j + 4] = uint8_t((ls & 0xF) | ((lm & 0xF) << 4));
            scales_out[j - 4] |= uint8_t((ls >> 4) << 6);
            scales_out[j] |= uint8_t((lm >> 4) << 6);
        }
    }
    y_d = fp32_to_fp16(max_scale / 63.f);
    y_dmin = fp32_to_fp16(max_min / 63.f);
    for (int j = 0; j < QK_K / 32; ++j) {
        uint8_t sc, m;
        scale_min_k4(j, scales_out, sc, m);
        requantize(32, nmax, x + 32 * j, fp16_to_fp32(y_d) * float(sc), fp16_to_fp32(y_dmin) * float(m), L + 32 * j);
    }
}

// ---- quantize ------------------------------------------------------------------
// One super-block of QK_K values each.

void quantize_block(const float * x, block_q2_K & y) {
    const float q4scale = 15.f;
    uint8_t L[QK_K], Laux[16];
    float weights[16], mins[QK_K / 16], scales[QK_K / 16];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 16; ++j) {
        for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
        scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
        const float iscale = q4scale / max_scale;
        for (int j = 0; j < QK_K / 16; ++j) y.scales[j] = uint8_t(nearest_int(iscale * scales[j]));
        y.d = fp32_to_fp16(max_scale / q4scale);
    } else {
        for (int j = 0; j < QK_K / 16; ++j) y.scales[j] = 0;
        y.d = fp32_to_fp16(0.f);
    }
    if (max_min > 0) {
        const float iscale = q4scale / max_min;
        for (int j = 0; j < QK_K / 16; ++j) y.scales[j] |= uint8_t(nearest_int(iscale * mins[j]) << 4);
        y.dmin = fp32_to_fp16(max_min / q4scale);
    } else {
        y.dmin = fp32_to_fp16(0.f);
    }
    for (int j = 0; j < QK_K / 16; ++j)
        requantize(16, 3, x + 16 * j, fp16_to_fp32(y.d) * float(y.scales[j] & 0xF),
                   fp16_to_fp32(y.dmin) * float(y.scales[j] >> 4), L + 16 * j);
    pack_2bit(L, y.qs);
}

void quantize_block(const float * x, block_q3_K & y) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int j = 0; j < QK_K / 16; ++j) scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
    const float max_scale = detail::max_by_magnitude(scales, QK_K / 16);
    std::memset(y.scales, 0, 12);
    if (max_scale != 0.0f) {
        const float iscale = -32.f / max_scale;
        for (int j = 0; j < QK_K / 16; ++j) {
            int l = int(int8_t(nearest_int(iscale * scales[j])));
            l = std::max(-32, std::min(31, l)) + 32;
            if (j < 8) y.scales[j] = uint8_t(l & 0xF);
            else       y.scales[j - 8] |= uint8_t((l & 0xF) << 4);
            l >>= 4;
            y.scales[j % 4 + 8] |= uint8_t(l << (2 * (j / 4)));
        }
        y.d = fp32_to_fp16(1 / iscale);
    } else {
        y.d = fp32_to_fp16(0.f);
    }
    int8_t sc[16];
    scales_q3_K(y.scales, sc);
    for (int j = 0; j < QK_K / 16; ++j) requantize(16, 4, x + 16 * j, fp16_to_fp32(y.d) * float(sc[j]), L + 16 * j);
    std::memset(y.hmask, 0, QK_K / 8);
    uint8_t Lu[QK_K];
    for (int j = 0; j < QK_K; ++j) {
        int l = L[j];
        if (l > 3) {
            y.hmask[j % 32] |= uint8_t(1u << (j / 32));
            l -= 4;
        }
        Lu[j] = uint8_t(l);
    }
    pack_2bit(Lu, y.qs);
}

void quantize_block(const float * x, block_q4_K & y) {
    uint8_t L[QK_K];
    quantize_k4_scales(x, 15, -1.f, 20, y.d, y.dmin, y.scales, L);
    uint8_t * q = y.qs;
    for (int j = 0; j < QK_K; j += 64, q += 32)
        for (int l = 0; l < 32; ++l) q[l] = uint8_t(L[j + l] | (L[j + l + 32] << 4));
}

void quantize_block(const float * x, block_q5_K & y) {
    uint8_t L[QK_K];
    quantize_k4_scales(x, 31, -0.5f, 15, y.d, y.dmin, y.scales, L);
    uint8_t * qh = y.qh;
    uint8_t * ql = y.qs;
    std::memset(qh, 0, QK_K / 8);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < QK_K; n += 64, ql += 32) {
        for (int j = 0; j < 32; ++j) {
            int l1 = L[n + j];
            if (l1 > 15) { l1 -= 16; qh[j] |= m1; }
            int l2 = L[n + j + 32];
            if (l2 > 15) { l2 -= 16; qh[j] |= m2; }
            ql[j] = uint8_t(l1 | (l2 << 4));
        }
        m1 = uint8_t(m1 << 2);
        m2 = uint8_t(m2 << 2);
    }
}

void quantize_block(const float * x, block_q6_K & y) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int ib = 0; ib < QK_K / 16; ++ib) scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
    const float max_scale = detail::max_by_magnitude(scales, QK_K / 16);
    if (std::fabs(max_scale) < GROUP_MAX_EPS) {
        std::memset(&y, 0, sizeof(block_q6_K));
        y.d = fp32_to_fp16(0.f);
        return;
    }
    const float iscale = -128.f / max_scale;
    y.d = fp32_to_fp16(1 / iscale);
    for (int ib = 0; ib < QK_K / 16; ++ib) y.scales[ib] = int8_t(std::min(127, nearest_int(iscale * scales[ib])));
    for (int j = 0; j < QK_K / 16; ++j) requantize(16, 32, x + 16 * j, fp16_to_fp32(y.d) * float(y.scales[j]), L + 16 * j);
    uint8_t * ql = y.ql;
    uint8_t * qh = y.qh;
    for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
        for (int l = 0; l < 32; ++l) {
            const int q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
            ql[l] = uint8_t(q1 | (q3 << 4));
            ql[l + 32] = uint8_t(q2 | (q4 << 4));
            qh[l] = uint8_t((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                            ((L[j + l + 96] >> 4) << 6));
        }
    }
}

void quantize_block(const float * x, block_q8_K & y) {
    const float max = detail::max_by_magnitude(x, QK_K);
    if (max == 0.0f) {
        std::memset(&y, 0, sizeof(block_q8_K));
        return;
    }
    const float iscale = -127.f / max;
    for (int j = 0; j < QK_K; ++j) y.qs[j] = int8_t(std::min(127, nearest_int(iscale * x[j])));
    for (int j = 0; j < QK_K / 16; ++j) {
        int sum = 0;
        for (int l = 0; l < 16; ++l) sum += y.qs[16 * j + l];
        y.bsums[j] = int16_t(sum);
    }
    y.d = 1 / iscale;
}

// A row of k values (a multiple of QK_K), super-block by super-block.
template <class B>
void quantize_blocks(const float * x, B * y, int64_t k) {
    GLOAS_ASSERT(k % QK_K == 0);
    for (int64_t i = 0; i < k / QK_K; ++i) quantize_block(x + QK_K * i, y[i]);
}

} // namespace

void quantize_row_q2_K_ref(const float * x, block_q2_K * y, int64_t k) { quantize_blocks(x, y, k); }
void quantize_row_q3_K_ref(const float * x, block_q3_K * y, int64_t k) { quantize_blocks(x, y, k); }
void quantize_row_q4_K_ref(const float * x, block_q4_K * y, int64_t k) { quantize_blocks(x, y, k); }
void quantize_row_q5_K_ref(const float * x, block_q5_K * y, int64_t k) { quantize_blocks(x, y, k); }
void quantize_row_q6_K_ref(const float * x, block_q6_K * y, int64_t k) { quantize_blocks(x, y, k); }
void quantize_row_q8_K_ref(const float * x, block_q8_K * y, int64_t k) { quantize_blocks(x, y, k); }

#endif

GLOAS_ISA_BEGIN

void quantize_row_q8_K(const float * x, block_q8_K * y, int64_t k) {
    GLOAS_ASSERT(k % QK_K == 0);
    const int64_t nb = k / QK_K;
    int64_t i = 0;
#if defined(__AVX512F__) && defined(__AVX512BW__)
    const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    for (; i < nb; ++i, x += QK_K) {
        // largest magnitude, then the first value that has it (its sign sets d's)
        __m512 a = _mm512_setzero_ps();
        for (int j = 0; j < QK_K; j += 16) a = _mm512_max_ps(a, _mm512_and_ps(_mm512_loadu_ps(x + j), abs_mask));
        const float amax = _mm512_reduce_max_ps(a);
        if (amax == 0.0f) {
            std::memset(&y[i], 0, sizeof(block_q8_K));
            continue;
        }
        float max = 0;
        for (int j = 0; j < QK_K; ++j)
            if (std::fabs(x[j]) == amax) { max = x[j]; break; }
        const float iscale = -127.f / max;
        const __m512 vs = _mm512_set1_ps(iscale);
        for (int j = 0; j < QK_K; j += 16) {
            // round half to even, as nearest_int; |iscale*x| <= 127 (+1 ulp)
            const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(vs, _mm512_loadu_ps(x + j)));
            const __m512i c = _mm512_min_epi32(q, _mm512_set1_epi32(127));
            _mm_storeu_si128(reinterpret_cast<__m128i *>(y[i].qs + j), _mm512_cvtepi32_epi8(c));
            y[i].bsums[j / 16] = int16_t(_mm512_reduce_add_epi32(c));
        }
        y[i].d = 1 / iscale;
    }
#endif
    if (i < nb) quantize_row_q8_K_ref(x, y + i, (nb - i) * QK_K);
}

GLOAS_ISA_END

#if GLOAS_ISA_BASE
// ---- dequantize ----------------------------------------------------------------
// Bit-exact with ggml: the same products in the same order (Q6_K's
// (d * sc) * q rounds, so that order matters; the others are exact, see mad).
// One super-block into y (QK_K) each.
namespace {

void dequantize_block(const block_q2_K & x, float * y) {
    const float d = fp16_to_fp32(x.d), min = fp16_to_fp32(x.dmin);
    const uint8_t * q = x.qs;
    int is = 0;
    for (int n = 0; n < QK_K; n += 128, q += 32) {
        for (int shift = 0; shift < 8; shift += 2) {
            for (int h = 0; h < 2; ++h) {
                const uint8_t sc = x.scales[is++];
                const float dl = d * float(sc & 0xF), ml = min * float(sc >> 4);
                for (int l = 0; l < 16; ++l) *y++ = mad(dl, float((q[l + 16 * h] >> shift) & 3), -ml);
            }
        }
    }
}

void dequantize_block(const block_q3_K & x, float * y) {
    const float d_all = fp16_to_fp32(x.d);
    int8_t sc[16];
    scales_q3_K(x.scales, sc);
    const uint8_t * q = x.qs;
    const uint8_t * hm = x.hmask;
    int is = 0;
    uint8_t m = 1;
    for (int n = 0; n < QK_K; n += 128, q += 32) {
        for (int shift = 0; shift < 8; shift += 2, m = uint8_t(m << 1)) {
            for (int h = 0; h < 2; ++h) {
                const float dl = d_all * float(sc[is++]);
                for (int l = 16 * h; l < 16 * h + 16; ++l)
                    *y++ = dl * float(((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4));
            }
        }
    }
}

// Q4_K and Q5_K: 8 sub-blocks of 32 values, each with a 6-bit scale and min;
// Q5_K's fifth bits in qh (bits 2s and 2s+1 of qh[l] for the pair of
// sub-blocks s), null for Q4_K.
void dequantize_k4(const uint8_t * scales, uint16_t d16, uint16_t dmin16, const uint8_t * q, const uint8_t * qh,
                   float * y) {
    const float d = fp16_to_fp32(d16), min = fp16_to_fp32(dmin16);
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0; j < 8; j += 2, q += 32) {
        uint8_t sc, m;
        scale_min_k4(j, scales, sc, m);
        const float d1 = d * float(sc), m1 = min * float(m);
        scale_min_k4(j + 1, scales, sc, m);
        const float d2 = d * float(sc), m2 = min * float(m);
        for (int l = 0; l < 32; ++l) *y++ = mad(d1, float((q[l] & 0xF) + (qh && (qh[l] & u1) ? 16 : 0)), -m1);
        for (int l = 0; l < 32; ++l) *y++ = mad(d2, float((q[l] >> 4) + (qh && (qh[l] & u2) ? 16 : 0)), -m2);
        u1 = uint8_t(u1 << 2);
        u2 = uint8_t(u2 << 2);
    }
}
void dequantize_block(const block_q4_K & x, float * y) { dequantize_k4(x.scales, x.d, x.dmin, x.qs, nullptr, y); }
void dequantize_block(const block_q5_K & x, float * y) { dequantize_k4(x.scales, x.d, x.dmin, x.qs, x.qh, y); }

void dequantize_block(const block_q6_K & x, float * y) {
    const float d = fp16_to_fp32(x.d);
    const uint8_t * ql = x.ql;
    const uint8_t * qh = x.qh;
    const int8_t * sc = x.scales;
    for (int n = 0; n < QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
        for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l]      = d * float(sc[is + 0]) * float(q1);
            y[l + 32] = d * float(sc[is + 2]) * float(q2);
            y[l + 64] = d * float(sc[is + 4]) * float(q3);
            y[l + 96] = d * float(sc[is + 6]) * float(q4);
        }
    }
}

void dequantize_block(const block_q8_K & x, float * y) {
    for (int j = 0; j < QK_K; ++j) y[j] = x.d * float(x.qs[j]);
}

template <class B>
void dequantize_blocks(const B * x, float * y, int64_t k) {
    GLOAS_ASSERT(k % QK_K == 0);
    for (int64_t i = 0; i < k / QK_K; ++i) dequantize_block(x[i], y + QK_K * i);
}

} // namespace

void dequantize_row_q2_K(const block_q2_K * x, float * y, int64_t k) { dequantize_blocks(x, y, k); }
void dequantize_row_q3_K(const block_q3_K * x, float * y, int64_t k) { dequantize_blocks(x, y, k); }
void dequantize_row_q4_K(const block_q4_K * x, float * y, int64_t k) { dequantize_blocks(x, y, k); }
void dequantize_row_q5_K(const block_q5_K * x, float * y, int64_t k) { dequantize_blocks(x, y, k); }
void dequantize_row_q6_K(const block_q6_K * x, float * y, int64_t k) { dequantize_blocks(x, y, k); }
void dequantize_row_q8_K(const block_q8_K * x, float * y, int64_t k) { dequantize_blocks(x, y, k); }
#endif

} // namespace gloas
