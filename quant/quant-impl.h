// Internal to quant/: small helpers shared by the quantizer files.
#pragma once

#include "base/error.h"

#include <cmath>
#include <cstdint>
#include <cstring>

namespace gloas::detail {

// ggml's nearest_int: round half to even through the float adder
// (exact for |x| < 2^22, which every caller guarantees by construction).
inline int nearest_int(float x) {
    const float v = x + 12582912.0f;  // 1.5 * 2^23
    int32_t i;
    std::memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

// The value of largest magnitude among x[0, n), sign kept: the first of equal
// magnitudes, as ggml's reference loops pick it (Q4_0, Q5_0).
inline float max_by_magnitude(const float * x, int n) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; ++j) {
        if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            max = x[j];
        }
    }
    return max;
}

// The reference dot of the formats of 32-value blocks, as ggml's: per block
// the exact int32 sum of the weight levels q (unpack(w[i], q) fills q[32])
// times the activation values x[i].qs, then combine(w[i], x[i], sum), the
// block's float term, summed in block order.
template <class W, class X, class Unpack, class Combine>
float block_dot_ref(int64_t n, const W * w, const X * x, Unpack unpack, Combine combine) {
    GLOAS_ASSERT(n % 32 == 0);
    float s = 0.0f;
    for (int64_t i = 0; i < n / 32; ++i) {
        int q[32];
        unpack(w[i], q);
        int sumi = 0;
        for (int j = 0; j < 32; ++j) sumi += q[j] * x[i].qs[j];
        s += combine(w[i], x[i], sumi);
    }
    return s;
}

// a * b + c as ggml's dequantizers compute it. Every caller multiplies an
// fp16 scale (times a scale of at most 8 bits) by a level of at most 6 bits,
// a product exact in f32, so fusing the multiply-add or not (compilers and
// builds differ) gives the same bits.
inline float mad(float a, float b, float c) { return a * b + c; }

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K super-block.
inline void scale_min_k4(int j, const uint8_t * q, uint8_t & sc, uint8_t & m) {
    if (j < 4) {
        sc = q[j] & 63;
        m  = q[j + 4] & 63;
    } else {
        sc = uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        m  = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

// All 8 scales (bytes 0..7) and 8 mins (bytes 8..15) of a Q4_K/Q5_K
// super-block at once, from its 12 packed bytes.
inline void scales_mins_k4(const uint8_t * q, uint8_t * out16) {
    uint32_t u[4];
    std::memcpy(u, q, 12);
    const uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
    u[3] = ((u[2] >> 4) & m4) | (((u[1] >> 6) & m2) << 4);   // mins 4..7
    const uint32_t mins_lo = u[1] & m6;                        // mins 0..3
    u[1] = (u[2] & m4) | (((u[0] >> 6) & m2) << 4);           // scales 4..7
    u[2] = mins_lo;
    u[0] &= m6;                                                // scales 0..3
    std::memcpy(out16, u, 16);
}

// The 16 6-bit scales of a Q3_K super-block, minus 32.
inline void scales_q3_K(const uint8_t * s, int8_t * out) {
    for (int j = 0; j < 16; ++j) {
        const int lo = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
        const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        out[j] = int8_t((lo | (hi << 4)) - 32);
    }
}

} // namespace gloas::detail
