// The per-element arithmetic of the CUDA kernels, as functions both nvcc
// (device and host code) and plain C++ compile, so that the CPU tests
// (tests/test-cuda-math.cpp) run them against the `_ref` twins they mirror on
// every machine, with or without a GPU. Only launch geometry and memory
// movement are left to the kernels in tensor/cuda/*.cu.
//
// Each function states what it equals:
//   half_to_float / float_to_half   fp16_to_fp32 / fp32_to_fp16, bit for bit
//   q*_value                        value j of a block, dequantize_row_* bit for bit
//   quantize_block_q8_0             quantize_row_q8_0_ref on one block, bit for bit
//   block_dot_*                     the exact int32 block sum of vec_dot_*_ref
//   rope_theta                      ops.h's rope angle, in double as the reference
//   softmax_merge                   the online-softmax combine of two partial
//                                   attention results (flash-decoding)
//   quest_bound                     page_score_bound_ref's upper bound of q·k
#pragma once

#include "quant/blocks.h"

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define GLOAS_HD __host__ __device__ __forceinline__
#include <cmath>
#else
#define GLOAS_HD inline
#include <cmath>
#endif

namespace gloas::cuda_math {

GLOAS_HD float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
GLOAS_HD uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

// fp16 bits -> float, exact for every fp16 (denormals, inf, NaN).
GLOAS_HD float half_to_float(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu;
    const uint32_t m = h & 0x3ffu;
    if (e == 0) {  // zero or denormal: m * 2^-24, exact in float
        const float v = float(m) * 5.9604644775390625e-08f;
        return f32_from_bits(f32_bits(v) | sign);
    }
    if (e == 31) return f32_from_bits(sign | 0x7f800000u | (m << 13));  // inf, NaN (payload kept)
    return f32_from_bits(sign | ((e + 112u) << 23) | (m << 13));
}

// float -> fp16 bits, rounding to nearest even; overflow to inf, NaN stays NaN.
GLOAS_HD uint16_t float_to_half(float f) {
    const uint32_t x = f32_bits(f);
    const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return uint16_t(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0u));
    if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: inf
    if (ax < 0x38800000u) {  // below the smallest normal fp16 (2^-14): denormal or zero
        if (ax < 0x33000000u) return sign;  // below half the smallest denormal (2^-25): zero
        const uint32_t e = ax >> 23;
        const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126u - e;  // 14..24 bits beyond the 10 kept
        const uint32_t q = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1u);
        const uint32_t halfway = 1u << (shift - 1u);
        const uint32_t r = q + ((rem > halfway || (rem == halfway && (q & 1u))) ? 1u : 0u);
        return uint16_t(sign | r);
    }
    const uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u);  // round the 13 dropped bits to nearest even
    return uint16_t(sign | (((r >> 13) - (112u << 10)) & 0x7fffu));
}

GLOAS_HD float bf16_to_float(uint16_t h) { return f32_from_bits(uint32_t(h) << 16); }

// Value j (0..31) of a block, as dequantize_row_q8_0 / _q4_0 give it.
GLOAS_HD float q8_0_value(const block_q8_0 & b, int j) { return half_to_float(b.d) * float(b.qs[j]); }
GLOAS_HD int q4_0_quant(const block_q4_0 & b, int j) {
    return j < QK4_0 / 2 ? (b.qs[j] & 0x0f) - 8 : (b.qs[j - QK4_0 / 2] >> 4) - 8;
}
GLOAS_HD float q4_0_value(const block_q4_0 & b, int j) { return half_to_float(b.d) * float(q4_0_quant(b, j)); }

// The other block types, value j of a block as dequantize_row_* gives it, bit
// for bit: the same products in the same order. Each a * b + c multiplies an
// fp16 scale (times a scale of at most 8 bits) by a level of at most 6 bits,
// a product exact in float, so contracting it into a fused multiply-add (as
// nvcc does by default) gives the same bits (quant/quant-impl.h, mad).
GLOAS_HD int q5_level(const uint8_t * qs, const uint8_t * qh, int j) {  // Q5_0 / Q5_1: 0..31
    uint32_t h;
    memcpy(&h, qh, 4);
    return j < 16 ? (qs[j] & 0x0f) | int(((h >> j) << 4) & 0x10) : (qs[j - 16] >> 4) | int((h >> (j - 4)) & 0x10);
}
GLOAS_HD float q4_1_value(const block_q4_1 & b, int j) {
    const int q = j < QK4_1 / 2 ? b.qs[j] & 0x0f : b.qs[j - QK4_1 / 2] >> 4;
    return float(q) * half_to_float(b.d) + half_to_float(b.m);
}
GLOAS_HD float q5_0_value(const block_q5_0 & b, int j) { return float(q5_level(b.qs, b.qh, j) - 16) * half_to_float(b.d); }
GLOAS_HD float q5_1_value(const block_q5_1 & b, int j) {
    return float(q5_level(b.qs, b.qh, j)) * half_to_float(b.d) + half_to_float(b.m);
}
// K-quants: j in a super-block of QK_K = 256 values, two halves of 128.
GLOAS_HD float q2_K_value(const block_q2_K & b, int j) {
    const int half = j / 128, r = j % 128, s = r / 32, l = r % 32;  // s: the 2-bit field
    const uint8_t sc = b.scales[half * 8 + s * 2 + l / 16];
    const float dl = half_to_float(b.d) * float(sc & 0xf), ml = half_to_float(b.dmin) * float(sc >> 4);
    return dl * float((b.qs[32 * half + l] >> (2 * s)) & 3) - ml;
}
GLOAS_HD float q3_K_value(const block_q3_K & b, int j) {
    const int half = j / 128, r = j % 128, s = r / 32, l = r % 32, is = half * 8 + s * 2 + l / 16;
    const int lo = is < 8 ? b.scales[is] & 0xf : b.scales[is - 8] >> 4;
    const int hi = (b.scales[8 + is % 4] >> (2 * (is / 4))) & 3;
    const float dl = half_to_float(b.d) * float((lo | (hi << 4)) - 32);
    const int q = ((b.qs[32 * half + l] >> (2 * s)) & 3) - ((b.hmask[l] >> (4 * half + s)) & 1 ? 0 : 4);
    return dl * float(q);
}
// Q4_K / Q5_K: sub-block j / 32 of 32 values, its 6-bit scale and min;
// Q5_K's fifth bit is bit (j / 32) of qh[j % 32] (null qh: Q4_K).
GLOAS_HD float k4_value(const uint8_t * scales, uint16_t d, uint16_t dmin, const uint8_t * qs, const uint8_t * qh, int j) {
    const int sub = j / 32, l = j % 32;
    int sc, m;
    if (sub < 4) {
        sc = scales[sub] & 63;
        m = scales[sub + 4] & 63;
    } else {
        sc = (scales[sub + 4] & 0xf) | ((scales[sub - 4] >> 6) << 4);
        m = (scales[sub + 4] >> 4) | ((scales[sub] >> 6) << 4);
    }
    const uint8_t byte = qs[32 * (sub / 2) + l];
    int q = sub % 2 == 0 ? byte & 0xf : byte >> 4;
    if (qh && ((qh[l] >> sub) & 1)) q += 16;
    const float dl = half_to_float(d) * float(sc), ml = half_to_float(dmin) * float(m);
    return dl * float(q) - ml;
}
GLOAS_HD float q4_K_value(const block_q4_K & b, int j) { return k4_value(b.scales, b.d, b.dmin, b.qs, nullptr, j); }
GLOAS_HD float q5_K_value(const block_q5_K & b, int j) { return k4_value(b.scales, b.d, b.dmin, b.qs, b.qh, j); }
GLOAS_HD float q6_K_value(const block_q6_K & b, int j) {
    const int half = j / 128, r = j % 128, quarter = r / 32, l = r % 32;
    const uint8_t lo = b.ql[64 * half + l + (quarter & 1) * 32];
    const int q = ((quarter < 2 ? lo & 0xf : lo >> 4) | (((b.qh[32 * half + l] >> (2 * quarter)) & 3) << 4)) - 32;
    return half_to_float(b.d) * float(b.scales[8 * half + l / 16 + 2 * quarter]) * float(q);
}

// One block of 32 floats as quantize_row_q8_0_ref quantizes it (bit for bit:
// the same IEEE operations in the same order; fmaxf / fabsf / roundf are
// exact on host and device).
GLOAS_HD void quantize_block_q8_0(const float * x, block_q8_0 & y) {
    float amax = 0.0f;
    for (int j = 0; j < QK8_0; ++j) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y.d = float_to_half(d);
    for (int j = 0; j < QK8_0; ++j) y.qs[j] = int8_t(roundf(x[j] * id));
}

// The int32 sum of values [j0, j1) of a weight block times the same values
// of an activation block; the whole block (0, 32) is vec_dot_*_ref's `sumi`.
GLOAS_HD int block_dot_q8_0_q8_0(const block_q8_0 & w, const block_q8_0 & x, int j0 = 0, int j1 = QK8_0) {
    int s = 0;
    for (int j = j0; j < j1; ++j) s += int(w.qs[j]) * int(x.qs[j]);
    return s;
}
GLOAS_HD int block_dot_q4_0_q8_0(const block_q4_0 & w, const block_q8_0 & x, int j0 = 0, int j1 = QK4_0) {
    int s = 0;
    for (int j = j0; j < j1; ++j) s += q4_0_quant(w, j) * int(x.qs[j]);
    return s;
}
// A block's share of vec_dot_*_ref: sumi * (d_w * d_x), rounded as there.
GLOAS_HD float block_scale(uint16_t dw, uint16_t dx) { return half_to_float(dw) * half_to_float(dx); }

// Angle of rope pair i at `pos` (tensor/ops.h), in double as rope_ex_ref:
//   pos * freq_scale * freq_base^(-2i/n_rot) / factor
// (factor 1 when the model has no frequency factors).
GLOAS_HD double rope_theta(int64_t i, int64_t n_rot, int64_t pos, float freq_base, float freq_scale, float factor) {
    double theta = double(pos) * pow(double(freq_base), -2.0 * double(i) / double(n_rot));
    if (freq_scale != 1.0f) theta *= double(freq_scale);
    if (factor != 1.0f) theta /= double(factor);
    return theta;
}
// Rotates the pair (a, b) by theta as rope_ex_ref does (cos and sin in double,
// rounded to float, then the float products).
GLOAS_HD void rope_rotate(float & a, float & b, double theta) {
    const float c = float(cos(theta));
    const float s = float(sin(theta));
    const float x0 = a, x1 = b;
    a = x0 * c - x1 * s;
    b = x0 * s + x1 * c;
}

GLOAS_HD float silu(float g) { return g / (1.0f + expf(-g)); }
GLOAS_HD float gelu_tanh(float g) {
    return 0.5f * g * (1.0f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g)));
}

// A partial softmax-attention result over some of a query's keys: m the
// largest score seen, l = sum exp(score - m), and (kept by the caller)
// o = sum exp(score - m) v. An empty part has m = -inf, l = 0.
struct softmax_part {
    float m;
    float l;
};
// Merges part b into part a: returns the merged (m, l) and the factors the
// two parts' o vectors are scaled by before they are added
// (o = o_a * fa + o_b * fb); the final output is o / l. Two empty parts stay
// empty (factors 0).
GLOAS_HD softmax_part softmax_merge(softmax_part a, softmax_part b, float & fa, float & fb) {
    const float m = fmaxf(a.m, b.m);
    if (m == -INFINITY) {
        fa = fb = 0.0f;
        return {m, 0.0f};
    }
    fa = a.l > 0.0f ? expf(a.m - m) : 0.0f;
    fb = b.l > 0.0f ? expf(b.m - m) : 0.0f;
    return {m, a.l * fa + b.l * fb};
}
// Adds one score s to a part (the online softmax step); returns the factor the
// part's o is scaled by before exp(s - m) * v is added, and sets p to that
// exp(s - m).
GLOAS_HD float softmax_push(softmax_part & a, float s, float & p) {
    const float m = fmaxf(a.m, s);
    const float f = a.l > 0.0f ? expf(a.m - m) : 0.0f;
    p = expf(s - m);
    a.m = m;
    a.l = a.l * f + p;
    return f;
}

// Quest's term for one channel: the largest q·k over keys whose channel lies in
// [kmin, kmax] (std::max's order, so a NaN product is handled as there).
GLOAS_HD float quest_term(float q, float kmin, float kmax) {
    const float a = q * kmin, b = q * kmax;
    return a < b ? b : a;
}
// page_score_bound_ref, bit for bit: max over the group's query heads g of
// sum_d quest_term(q[g][d], kmin[d], kmax[d]), summed in float in order.
GLOAS_HD float quest_bound(const float * q, int32_t group, int32_t head_dim, const float * kmin, const float * kmax) {
    float best = -INFINITY;
    for (int32_t g = 0; g < group; ++g) {
        float s = 0.0f;
        for (int32_t d = 0; d < head_dim; ++d) s += quest_term(q[g * head_dim + d], kmin[d], kmax[d]);
        best = best < s ? s : best;
    }
    return best;
}

} // namespace gloas::cuda_math
