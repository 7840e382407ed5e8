// The NEON dot products of one weight row with one activation row (quant/neon.h):
// compiled only where GLOAS_NEON is 1, empty otherwise. The block kernels sum
// each block (or sub-block) exactly in int32 with SDOT, four signed bytes per
// lane, as the references do, and scale in float; only the float rounding
// order differs from the references.
#include "quant/neon.h"

#if defined(GLOAS_NEON)

#include "quant/quant-impl.h"
#include "base/error.h"

#include <cstring>

namespace gloas::neon_kernels { inline namespace GLOAS_ISA {

namespace {

inline float h2f(uint16_t h) {
    __fp16 f;
    std::memcpy(&f, &h, 2);
    return float(f);
}

// Sum of the int32 dot products of a (16 bytes) with b, and of c with d.
inline int32x4_t dot2(int8x16_t a, int8x16_t b, int8x16_t c, int8x16_t d) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), a, b), c, d);
}

inline float32x4_t load_f16(const uint16_t * p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
inline float32x4_t load_bf16(const uint16_t * p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }

} // namespace

float vec_dot_f32(int64_t n, const float * w, const float * x) {
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = vfmaq_f32(a0, vld1q_f32(w + i), vld1q_f32(x + i));
        a1 = vfmaq_f32(a1, vld1q_f32(w + i + 4), vld1q_f32(x + i + 4));
        a2 = vfmaq_f32(a2, vld1q_f32(w + i + 8), vld1q_f32(x + i + 8));
        a3 = vfmaq_f32(a3, vld1q_f32(w + i + 12), vld1q_f32(x + i + 12));
    }
    for (; i + 4 <= n; i += 4) a0 = vfmaq_f32(a0, vld1q_f32(w + i), vld1q_f32(x + i));
    float s = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
    for (; i < n; ++i) s += w[i] * x[i];
    return s;
}

float vec_dot_f16(int64_t n, const uint16_t * w, const float * x) {
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = vfmaq_f32(a0, load_f16(w + i), vld1q_f32(x + i));
        a1 = vfmaq_f32(a1, load_f16(w + i + 4), vld1q_f32(x + i + 4));
        a2 = vfmaq_f32(a2, load_f16(w + i + 8), vld1q_f32(x + i + 8));
        a3 = vfmaq_f32(a3, load_f16(w + i + 12), vld1q_f32(x + i + 12));
    }
    for (; i + 4 <= n; i += 4) a0 = vfmaq_f32(a0, load_f16(w + i), vld1q_f32(x + i));
    float s = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
    for (; i < n; ++i) s += h2f(w[i]) * x[i];
    return s;
}

float vec_dot_bf16(int64_t n, const uint16_t * w, const float * x) {
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = vfmaq_f32(a0, load_bf16(w + i), vld1q_f32(x + i));
        a1 = vfmaq_f32(a1, load_bf16(w + i + 4), vld1q_f32(x + i + 4));
        a2 = vfmaq_f32(a2, load_bf16(w + i + 8), vld1q_f32(x + i + 8));
        a3 = vfmaq_f32(a3, load_bf16(w + i + 12), vld1q_f32(x + i + 12));
    }
    for (; i + 4 <= n; i += 4) a0 = vfmaq_f32(a0, load_bf16(w + i), vld1q_f32(x + i));
    float s = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
    for (; i < n; ++i) {
        uint32_t u = uint32_t(w[i]) << 16;
        float f;
        std::memcpy(&f, &u, 4);
        s += f * x[i];
    }
    return s;
}

// Two blocks per step into two accumulators (independent chains).
float vec_dot_q8_0_q8_0(int64_t n, const block_q8_0 * w, const block_q8_0 * x) {
    GLOAS_ASSERT(n % QK8_0 == 0);
    const int64_t nb = n / QK8_0;
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = acc0;
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        const int32x4_t p0 = dot2(vld1q_s8(w[i].qs), vld1q_s8(x[i].qs), vld1q_s8(w[i].qs + 16), vld1q_s8(x[i].qs + 16));
        const int32x4_t p1 = dot2(vld1q_s8(w[i + 1].qs), vld1q_s8(x[i + 1].qs), vld1q_s8(w[i + 1].qs + 16),
                                  vld1q_s8(x[i + 1].qs + 16));
        acc0 = vfmaq_n_f32(acc0, vcvtq_f32_s32(p0), h2f(w[i].d) * h2f(x[i].d));
        acc1 = vfmaq_n_f32(acc1, vcvtq_f32_s32(p1), h2f(w[i + 1].d) * h2f(x[i + 1].d));
    }
    if (i < nb) {
        const int32x4_t p0 = dot2(vld1q_s8(w[i].qs), vld1q_s8(x[i].qs), vld1q_s8(w[i].qs + 16), vld1q_s8(x[i].qs + 16));
        acc0 = vfmaq_n_f32(acc0, vcvtq_f32_s32(p0), h2f(w[i].d) * h2f(x[i].d));
    }
    return vaddvq_f32(vaddq_f32(acc0, acc1));
}

// Nibbles 0..15 minus 8 as signed bytes: low nibbles are values 0..15 of the
// block, high nibbles 16..31, matching the activation's two 16-byte halves.
float vec_dot_q4_0_q8_0(int64_t n, const block_q4_0 * w, const block_q8_0 * x) {
    GLOAS_ASSERT(n % QK8_0 == 0);
    const int64_t nb = n / QK8_0;
    const uint8x16_t m4 = vdupq_n_u8(0x0f);
    const int8x16_t eight = vdupq_n_s8(8);
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = acc0;
    auto block = [&](int64_t b) {
        const uint8x16_t v = vld1q_u8(w[b].qs);
        const int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, m4)), eight);
        const int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), eight);
        return vcvtq_f32_s32(dot2(lo, vld1q_s8(x[b].qs), hi, vld1q_s8(x[b].qs + 16)));
    };
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        acc0 = vfmaq_n_f32(acc0, block(i), h2f(w[i].d) * h2f(x[i].d));
        acc1 = vfmaq_n_f32(acc1, block(i + 1), h2f(w[i + 1].d) * h2f(x[i + 1].d));
    }
    if (i < nb) acc0 = vfmaq_n_f32(acc0, block(i), h2f(w[i].d) * h2f(x[i].d));
    return vaddvq_f32(vaddq_f32(acc0, acc1));
}

namespace {

// Blocks of a weight row against 4 activation rows: each weight block once
// (load(b, lo, hi): its 32 values as signed bytes, 0..15 then 16..31).
template <typename B, typename L>
void dot_x4(int64_t n, const void * w_, const void * x_, size_t x_stride, float * out, L load) {
    GLOAS_ASSERT(n % QK8_0 == 0);
    const int64_t nb = n / QK8_0;
    const B * w = static_cast<const B *>(w_);
    const block_q8_0 * x[4];
    for (int j = 0; j < 4; ++j) x[j] = reinterpret_cast<const block_q8_0 *>(static_cast<const char *>(x_) + j * x_stride);
    float32x4_t acc[4];
    for (int j = 0; j < 4; ++j) acc[j] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nb; ++b) {
        int8x16_t lo, hi;
        load(w[b], lo, hi);
        const float dw = h2f(w[b].d);
        for (int j = 0; j < 4; ++j) {
            const int32x4_t p = dot2(lo, vld1q_s8(x[j][b].qs), hi, vld1q_s8(x[j][b].qs + 16));
            acc[j] = vfmaq_n_f32(acc[j], vcvtq_f32_s32(p), dw * h2f(x[j][b].d));
        }
    }
    for (int j = 0; j < 4; ++j) out[j] = vaddvq_f32(acc[j]);
}

void dot_x4_q4_0(int64_t n, const void * w, const void * x, size_t x_stride, float * out) {
    dot_x4<block_q4_0>(n, w, x, x_stride, out, [](const block_q4_0 & b, int8x16_t & lo, int8x16_t & hi) {
        const uint8x16_t v = vld1q_u8(b.qs);
        lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0f))), vdupq_n_s8(8));
        hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), vdupq_n_s8(8));
    });
}

void dot_x4_q8_0(int64_t n, const void * w, const void * x, size_t x_stride, float * out) {
    dot_x4<block_q8_0>(n, w, x, x_stride, out, [](const block_q8_0 & b, int8x16_t & lo, int8x16_t & hi) {
        lo = vld1q_s8(b.qs);
        hi = vld1q_s8(b.qs + 16);
    });
}

} // namespace

vec_dot_x4_fn vec_dot_x4(type t) {
    switch (t) {
    case type::Q4_0: return dot_x4_q4_0;
    case type::Q8_0: return dot_x4_q8_0;
    default: return nullptr;
    }
}

namespace {

// The mins term of a Q4_K/Q5_K super-block: sum_j m_j * (sum of the
// activations of sub-block j of 32), exact in int32.
inline int32_t k4_mins_dot(const uint8_t * mins8, const int16_t * bsums) {
    const int16x8_t bs = vpaddq_s16(vld1q_s16(bsums), vld1q_s16(bsums + 8));  // sums of 32
    const int16x8_t m = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mins8)));
    return vaddvq_s32(vaddq_s32(vmull_s16(vget_low_s16(m), vget_low_s16(bs)), vmull_high_s16(m, bs)));
}

// The K-quants with 8 scales and mins (Q4_K; Q5_K with its fifth bits).
template <bool Q5, typename B>
float dot_k4(int64_t n, const B * w, const block_q8_K * x) {
    GLOAS_ASSERT(n % QK_K == 0);
    const int64_t nb = n / QK_K;
    const uint8x16_t m4 = vdupq_n_u8(0x0f);
    float s = 0.0f;
    for (int64_t i = 0; i < nb; ++i) {
        const B & b = w[i];
        uint8_t sm[16];  // scales 0..7, mins 8..15
        detail::scales_mins_k4(b.scales, sm);
        const uint8_t * qs = b.qs;
        const int8_t * q8 = x[i].qs;
        uint8x16_t qh0 = vdupq_n_u8(0), qh1 = qh0;
        if constexpr (Q5) {
            qh0 = vld1q_u8(b.qh);
            qh1 = vld1q_u8(b.qh + 16);
        }
        int32_t sumi = 0;
        for (int c = 0; c < 4; ++c) {  // values 64c .. 64c + 63: low nibbles then high ones
            const uint8x16_t v0 = vld1q_u8(qs + 32 * c), v1 = vld1q_u8(qs + 32 * c + 16);
            uint8x16_t l0 = vandq_u8(v0, m4), l1 = vandq_u8(v1, m4);
            uint8x16_t h0 = vshrq_n_u8(v0, 4), h1 = vshrq_n_u8(v1, 4);
            if constexpr (Q5) {
                const uint8x16_t sixteen = vdupq_n_u8(16);
                const uint8x16_t bl = vdupq_n_u8(uint8_t(1u << (2 * c))), bh = vdupq_n_u8(uint8_t(2u << (2 * c)));
                l0 = vorrq_u8(l0, vandq_u8(vtstq_u8(qh0, bl), sixteen));
                l1 = vorrq_u8(l1, vandq_u8(vtstq_u8(qh1, bl), sixteen));
                h0 = vorrq_u8(h0, vandq_u8(vtstq_u8(qh0, bh), sixteen));
                h1 = vorrq_u8(h1, vandq_u8(vtstq_u8(qh1, bh), sixteen));
            }
            const int8_t * xc = q8 + 64 * c;
            const int32x4_t pl = dot2(vreinterpretq_s8_u8(l0), vld1q_s8(xc), vreinterpretq_s8_u8(l1), vld1q_s8(xc + 16));
            const int32x4_t ph =
                dot2(vreinterpretq_s8_u8(h0), vld1q_s8(xc + 32), vreinterpretq_s8_u8(h1), vld1q_s8(xc + 48));
            sumi += vaddvq_s32(pl) * int32_t(sm[2 * c]) + vaddvq_s32(ph) * int32_t(sm[2 * c + 1]);
        }
        const int32_t summ = k4_mins_dot(sm + 8, x[i].bsums);
        s += (x[i].d * h2f(b.d)) * float(sumi) - (x[i].d * h2f(b.dmin)) * float(summ);
    }
    return s;
}

} // namespace

float vec_dot_q4_K_q8_K(int64_t n, const block_q4_K * w, const block_q8_K * x) { return dot_k4<false>(n, w, x); }
float vec_dot_q5_K_q8_K(int64_t n, const block_q5_K * w, const block_q8_K * x) { return dot_k4<true>(n, w, x); }

// Q6_K: value 128h + 32g + l (h = 0, 1; g = 0..3; l = 0..31) has its low
// four bits in ql[64h + l + 32(g % 2)] (low nibble for g < 2, high for g >= 2)
// and its top two in bits 2g, 2g+1 of qh[32h + l]; level - 32, one int8
// scale per 16 values.
float vec_dot_q6_K_q8_K(int64_t n, const block_q6_K * w, const block_q8_K * x) {
    GLOAS_ASSERT(n % QK_K == 0);
    const int64_t nb = n / QK_K;
    const uint8x16_t m4 = vdupq_n_u8(0x0f), m3 = vdupq_n_u8(0x30);
    const int8x16_t k32 = vdupq_n_s8(32);
    float s = 0.0f;
    for (int64_t i = 0; i < nb; ++i) {
        const block_q6_K & b = w[i];
        int32_t sumi = 0;
        for (int h = 0; h < 2; ++h) {
            const uint8_t * ql = b.ql + 64 * h;
            const uint8x16_t qh0 = vld1q_u8(b.qh + 32 * h), qh1 = vld1q_u8(b.qh + 32 * h + 16);
            const uint8x16_t l0 = vld1q_u8(ql), l1 = vld1q_u8(ql + 16), l2 = vld1q_u8(ql + 32), l3 = vld1q_u8(ql + 48);
            const int8_t * xh = x[i].qs + 128 * h;
            const int8_t * sc = b.scales + 8 * h;
            auto level = [&](uint8x16_t lo, uint8x16_t qh, int g) {
                const uint8x16_t hi = g == 0   ? vshlq_n_u8(qh, 4)
                                      : g == 1 ? vshlq_n_u8(qh, 2)
                                      : g == 2 ? qh
                                               : vshrq_n_u8(qh, 2);
                return vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, vandq_u8(hi, m3))), k32);
            };
            const uint8x16_t lo[4][2] = {{vandq_u8(l0, m4), vandq_u8(l1, m4)},
                                         {vandq_u8(l2, m4), vandq_u8(l3, m4)},
                                         {vshrq_n_u8(l0, 4), vshrq_n_u8(l1, 4)},
                                         {vshrq_n_u8(l2, 4), vshrq_n_u8(l3, 4)}};
            for (int g = 0; g < 4; ++g) {
                const int8x16_t q0 = level(lo[g][0], qh0, g), q1 = level(lo[g][1], qh1, g);
                const int32_t d0 = vaddvq_s32(vdotq_s32(vdupq_n_s32(0), q0, vld1q_s8(xh + 32 * g)));
                const int32_t d1 = vaddvq_s32(vdotq_s32(vdupq_n_s32(0), q1, vld1q_s8(xh + 32 * g + 16)));
                sumi += d0 * int32_t(sc[2 * g]) + d1 * int32_t(sc[2 * g + 1]);
            }
        }
        s += (x[i].d * h2f(b.d)) * float(sumi);
    }
    return s;
}

}} // namespace gloas::neon_kernels::GLOAS_ISA

#endif // GLOAS_NEON
