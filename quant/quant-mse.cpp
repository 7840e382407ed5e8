#include "quant/quant-mse.h"

#include "quant/fp16.h"
#include "tensor/error.h"

#include <cmath>

namespace gloas {

namespace {

// Squared error of quantizing the block with scale d (levels -8..7), and the
// least-squares scale for the levels that d picks.
float q4_error(const float * x, float d, float * d_ls) {
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

} // namespace

void quantize_row_q4_0_mse(const float * x, block_q4_0 * y, int64_t k) {
    GLOAS_ASSERT(k % QK4_0 == 0);
    for (int64_t i = 0; i < k / QK4_0; ++i) {
        const float * xb = x + i * QK4_0;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK4_0; ++j)
            if (std::fabs(xb[j]) > amax) {
                amax = std::fabs(xb[j]);
                max = xb[j];
            }
        // Candidates: the reference scale max/-8 and shrunken versions
        // (clipping the extreme value buys resolution for the rest), each also
        // refined once by least squares on the levels it picked. A scale is
        // judged after rounding to fp16, as it is stored.
        auto rounded = [](float d) { return fp16_to_fp32(fp32_to_fp16(d)); };
        float best_d = rounded(max / -8.0f), ls = 0.0f;
        float best_err = q4_error(xb, best_d, &ls);
        for (int c = 0; c <= 12 && max != 0.0f; ++c) {
            const float d0 = rounded(max / -(8.0f - 0.25f * float(c)));
            const float e0 = q4_error(xb, d0, &ls);
            if (e0 < best_err) { best_err = e0; best_d = d0; }
            const float d1 = rounded(ls);
            if (d1 == 0.0f) continue;
            float unused;
            const float e1 = q4_error(xb, d1, &unused);
            if (e1 < best_err) { best_err = e1; best_d = d1; }
        }
        const float d = fp16_to_fp32(fp32_to_fp16(best_d));
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            const int q0 = int(std::fmin(7.0f, std::fmax(-8.0f, std::nearbyintf(xb[j] * id)))) + 8;
            const int q1 = int(std::fmin(7.0f, std::fmax(-8.0f, std::nearbyintf(xb[j + QK4_0 / 2] * id)))) + 8;
            y[i].qs[j] = uint8_t(q0 | (q1 << 4));
        }
    }
}

} // namespace gloas
