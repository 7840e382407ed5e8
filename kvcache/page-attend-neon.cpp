// The NEON page attention kernels (kvcache/page-neon.h): compiled only where
// GLOAS_NEON is 1, empty otherwise.
//
// Q8_0, Q4_0 and Q4_KIVI pages, the integer algorithm of page.h per window of
// IW = 32 tokens (one block of every K and V row):
//  - K is transposed once per window, for all heads, into groups of 4
//    channels: 16 bytes hold 4 tokens x 4 channels, so one SDOT adds 4
//    channels of the integer query to the scores of 4 tokens;
//  - V rows stay as they are (32 tokens in 2 x 16 bytes): UDOT of a row with
//    the quantized probabilities gives 4 partial sums, and pairwise adds of
//    4 rows give 4 channels' outputs.
// Q8_0: scores are SDOT of the int8 query with the int8 K values; outputs
// UDOT of the u8 probabilities with V + 128 (unsigned), less 128 x their sum.
// Q4_0: the int16 query is split into a signed high byte and an unsigned low
// byte (q = 256 qh + ql), each dotted with the nibbles (SDOT, UDOT); the
// 15-bit probabilities likewise (p = 256 ph + pl, both UDOT). Q4_KIVI: K rows
// are Q4_1 blocks, whose nibbles (no offset) take Q4_0's query split; V rows
// are Q4_0's; each head's bias sum_c q_c * mk_c (the K blocks' minima) is
// summed per channel in the twin's order, 4 heads in the lanes of a vector,
// and added to its scores. All exact in int32: the integers are
// attend_int_portable's (page-attend.cpp, the scalar twin), and so are the
// float operations on them, in the same order.
//
// F16 and F32 pages, the float algorithm: per window K and V are widened to
// f32 once for all heads (in the thread's scratch, L1-resident); scores by
// broadcast multiply-adds two heads at a time, outputs by FMA of 4 V rows
// with the head's probabilities, reduced together by pairwise adds.
//
// Quest scoring (page_score_bounds_f16): 32 pages in 8 vectors, the bound
// row each query value's sign selects widened and multiplied in.
#include "kvcache/page-neon.h"

#if defined(GLOAS_NEON)

#include "quant/blocks.h"
#include "quant/fp16.h"
#include "base/error.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace gloas::page_kernels { inline namespace GLOAS_ISA {

namespace {

// The twin's helpers where the build has no x86 FMA: a * b + c in two
// roundings, round to nearest even, and its e^x polynomial.
inline float fma_f(float a, float b, float c) { return a * b + c; }

inline float exp_poly(float x) {
    x = std::max(-104.0f, std::min(88.8f, x));
    const float n = std::nearbyint(x * 1.44269504088896341f);
    float r = fma_f(-n, 0.693359375f, x);
    r = fma_f(-n, -2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fma_f(p, r, 1.3981999507e-3f);
    p = fma_f(p, r, 8.3334519073e-3f);
    p = fma_f(p, r, 4.1665795894e-2f);
    p = fma_f(p, r, 1.6666665459e-1f);
    p = fma_f(p, r, 5.0000001201e-1f);
    const float r2 = r * r, r1 = r + 1.0f;
    p = fma_f(p, r2, r1);
    const int ni = int(n), n1 = ni / 2, n2 = ni - n1;
    return p * f32_from_bits(uint32_t(n1 + 127) << 23) * f32_from_bits(uint32_t(n2 + 127) << 23);
}

inline float block_scale(const char * b) {
    __fp16 h;
    std::memcpy(&h, b, 2);
    return float(h);
}

// Bytes 4j .. 4j+3 of the 16 at `out` = channels c0..c0+3 of token 4k + j,
// for the 16 tokens whose rows r[0..3] hold (one byte per token).
inline void transpose4x16(const int8x16_t * r, int8_t * out) {
    const int16x8_t z01a = vreinterpretq_s16_s8(vzip1q_s8(r[0], r[1])), z01b = vreinterpretq_s16_s8(vzip2q_s8(r[0], r[1]));
    const int16x8_t z23a = vreinterpretq_s16_s8(vzip1q_s8(r[2], r[3])), z23b = vreinterpretq_s16_s8(vzip2q_s8(r[2], r[3]));
    vst1q_s8(out, vreinterpretq_s8_s16(vzip1q_s16(z01a, z23a)));
    vst1q_s8(out + 16, vreinterpretq_s8_s16(vzip2q_s16(z01a, z23a)));
    vst1q_s8(out + 32, vreinterpretq_s8_s16(vzip1q_s16(z01b, z23b)));
    vst1q_s8(out + 48, vreinterpretq_s8_s16(vzip2q_s16(z01b, z23b)));
}

inline int8x16_t dup4(const int8_t * p) {
    int32_t w;
    std::memcpy(&w, p, 4);
    return vreinterpretq_s8_s32(vdupq_n_s32(w));
}

// Each head's bias of a Q4_KIVI window, b[h] = sum_c q_c * mk_c (q: n_heads
// rows of D), as the twin sums it: channel by channel from 0, one fused
// multiply-add each (the twin's fma_f, a * b + c, is contracted to one: the
// compilers' default in C++ on aarch64); 4 heads at a time in the lanes of a
// vector (their 4 x 4 blocks of q transposed), the rest one by one. D % 4 == 0.
void kivi_bias(const float * q, const float * mk, int D, int n_heads, float * b) {
    int h = 0;
    for (; h + 4 <= n_heads; h += 4) {
        const float * q0 = q + int64_t(h) * D;
        float32x4_t acc = vdupq_n_f32(0.0f);
        for (int d = 0; d < D; d += 4) {
            const float32x4_t r0 = vld1q_f32(q0 + d), r1 = vld1q_f32(q0 + D + d);
            const float32x4_t r2 = vld1q_f32(q0 + 2 * D + d), r3 = vld1q_f32(q0 + 3 * D + d);
            const float64x2_t t0 = vreinterpretq_f64_f32(vtrn1q_f32(r0, r1)), t1 = vreinterpretq_f64_f32(vtrn2q_f32(r0, r1));
            const float64x2_t t2 = vreinterpretq_f64_f32(vtrn1q_f32(r2, r3)), t3 = vreinterpretq_f64_f32(vtrn2q_f32(r2, r3));
            // the columns of the 4 x 4 block: lane i of column j is channel d + j of head h + i
            const float32x4_t m = vld1q_f32(mk + d);
            acc = vfmaq_laneq_f32(acc, vreinterpretq_f32_f64(vtrn1q_f64(t0, t2)), m, 0);
            acc = vfmaq_laneq_f32(acc, vreinterpretq_f32_f64(vtrn1q_f64(t1, t3)), m, 1);
            acc = vfmaq_laneq_f32(acc, vreinterpretq_f32_f64(vtrn2q_f64(t0, t2)), m, 2);
            acc = vfmaq_laneq_f32(acc, vreinterpretq_f32_f64(vtrn2q_f64(t1, t3)), m, 3);
        }
        vst1q_f32(b + h, acc);
    }
    for (; h < n_heads; ++h) {
        const float * qh = q + int64_t(h) * D;
        float acc = 0.0f;
        for (int d = 0; d < D; ++d) acc = std::fma(qh[d], mk[d], acc);
        b[h] = acc;
    }
}

// Q8_0, Q4_0 or Q4_KIVI pages (T): kr the piece's D K rows (rbk bytes apart),
// vr its D V rows (rbv).
template <type T>
void attend_int(const char * kr, const char * vr, size_t rbk, size_t rbv, int D, const head_counts & cnt, int n_heads,
                const float * q, attn_state & s, next_prefetch & pf) {
    constexpr bool KIVI = T == type::Q4_KIVI, Q4 = T == type::Q4_0 || KIVI;
    constexpr size_t BSK = KIVI ? sizeof(block_q4_1) : Q4 ? sizeof(block_q4_0) : sizeof(block_q8_0);
    constexpr size_t BSV = Q4 ? sizeof(block_q4_0) : sizeof(block_q8_0);
    constexpr int K0 = KIVI ? 4 : 2;      // bytes before a K block's values (Q4_1: d, m)
    constexpr int K_OFF = T == type::Q4_0 ? 8 : 0;  // the K values kt holds: nibbles (Q4_0: value + 8) or int8
    constexpr int V_SUB = Q4 ? 8 : 128;   // vt holds V + V_SUB (nibbles, or int8 + 128)
    constexpr int Q_MAX = Q4 ? 32767 : 127, P_MAX = Q4 ? 32767 : 255;
    const float qmax = float(Q_MAX), pmax = float(P_MAX);
    int n_max = 0;
    for (int h = 0; h < n_heads; ++h) n_max = std::max(n_max, cnt(h));
    float * dk = static_cast<float *>(
        isa::thread_scratch(isa::scratch_slot::page_floats, sizeof(float) * (size_t(4 * D) + size_t(KIVI ? n_heads : 0))));
    float * dv = dk + D;             // (D) V scales
    float * qf = dv + D;             // (D) one head's q_c * dk_c
    float * mk = qf + D;             // (D) Q4_KIVI: the K minima
    float * bias = mk + D;           // (n_heads) Q4_KIVI: each head's sum_c q_c * mk_c
    // kt (D/4 groups of 128 bytes: K transposed), vt (D rows of 32 bytes),
    // qi (D int32), qb (D bytes: Q8_0 the int8 query, the 4-bit types its
    // high bytes), ql (D bytes: the 4-bit types' low bytes)
    int8_t * kt = static_cast<int8_t *>(isa::thread_scratch(isa::scratch_slot::page_ints, size_t(D) * (64 + 4 + 2)));
    uint8_t * vt = reinterpret_cast<uint8_t *>(kt + size_t(D) * IW);
    int32_t * qi = reinterpret_cast<int32_t *>(vt + size_t(D) * IW);
    int8_t * qb = reinterpret_cast<int8_t *>(qi + D);
    uint8_t * ql = reinterpret_cast<uint8_t *>(qb + D);
    const uint8x16_t m4 = vdupq_n_u8(0x0f), x80 = vdupq_n_u8(0x80);
    for (int w0 = 0; w0 < n_max; w0 += IW) {
        const size_t bk = size_t(w0 / IW) * BSK, bv = size_t(w0 / IW) * BSV;
        for (int c = 0; c < D; c += 4) {
            pf.k_rows(4);
            pf.v_rows(4);
            int8x16_t lo[4], hi[4];  // K of tokens 0..15, 16..31 of the 4 channels
            for (int j = 0; j < 4; ++j) {
                const char * kb = kr + size_t(c + j) * rbk + bk, * vb = vr + size_t(c + j) * rbv + bv;
                dk[c + j] = block_scale(kb);
                if (KIVI) mk[c + j] = block_scale(kb + 2);
                dv[c + j] = block_scale(vb);
                uint8_t * vo = vt + size_t(c + j) * IW;
                if (Q4) {
                    const uint8x16_t k = vld1q_u8(reinterpret_cast<const uint8_t *>(kb + K0));
                    lo[j] = vreinterpretq_s8_u8(vandq_u8(k, m4));
                    hi[j] = vreinterpretq_s8_u8(vshrq_n_u8(k, 4));
                    const uint8x16_t v = vld1q_u8(reinterpret_cast<const uint8_t *>(vb + 2));
                    vst1q_u8(vo, vandq_u8(v, m4));
                    vst1q_u8(vo + 16, vshrq_n_u8(v, 4));
                } else {
                    lo[j] = vld1q_s8(reinterpret_cast<const int8_t *>(kb + 2));
                    hi[j] = vld1q_s8(reinterpret_cast<const int8_t *>(kb + 18));
                    vst1q_u8(vo, veorq_u8(vld1q_u8(reinterpret_cast<const uint8_t *>(vb + 2)), x80));
                    vst1q_u8(vo + 16, veorq_u8(vld1q_u8(reinterpret_cast<const uint8_t *>(vb + 18)), x80));
                }
            }
            transpose4x16(lo, kt + size_t(c) * IW);
            transpose4x16(hi, kt + size_t(c) * IW + 64);
        }
        if (KIVI) kivi_bias(q, mk, D, n_heads, bias);
        for (int h = 0; h < n_heads; ++h) {
            const int nh = std::max(0, std::min(IW, cnt(h) - w0));
            if (nh == 0) continue;
            // the integer query, as the twin rounds it
            const float * qh = q + int64_t(h) * D;
            float32x4_t am = vdupq_n_f32(0.0f);
            for (int d = 0; d < D; d += 4) {
                const float32x4_t f = vmulq_f32(vld1q_f32(qh + d), vld1q_f32(dk + d));
                vst1q_f32(qf + d, f);
                am = vmaxq_f32(am, vabsq_f32(f));
            }
            const float amax = vmaxvq_f32(am);
            const float inv = amax >= Q_TINY ? qmax / amax : 0.0f, sq = amax / qmax;
            int32x4_t qs4 = vdupq_n_s32(0);
            for (int d = 0; d < D; d += 4) {
                int32x4_t v = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(qf + d), inv));
                v = vmaxq_s32(vdupq_n_s32(-Q_MAX - 1), vminq_s32(vdupq_n_s32(Q_MAX), v));
                vst1q_s32(qi + d, v);
                qs4 = vaddq_s32(qs4, v);
            }
            const int qsum = vaddvq_s32(qs4);
            for (int d = 0; d < D; ++d) {
                qb[d] = int8_t(Q4 ? qi[d] >> 8 : qi[d]);
                ql[d] = uint8_t(qi[d] & 255);
            }
            // scores: a[i] = sum_c qi_c k_c[i], k the K values kt holds
            int32x4_t acc[8], accl[8];
            for (int j = 0; j < 8; ++j) acc[j] = accl[j] = vdupq_n_s32(0);
            for (int c = 0; c < D; c += 4) {
                const int8_t * kc = kt + size_t(c) * IW;
                const int8x16_t qv = dup4(qb + c);
                for (int j = 0; j < 8; ++j) acc[j] = vdotq_s32(acc[j], vld1q_s8(kc + 16 * j), qv);
                if (Q4) {
                    const uint8x16_t lv = vreinterpretq_u8_s8(dup4(reinterpret_cast<const int8_t *>(ql + c)));
                    for (int j = 0; j < 8; ++j)
                        accl[j] = vreinterpretq_s32_u32(vdotq_u32(vreinterpretq_u32_s32(accl[j]),
                                                                  vreinterpretq_u8_s8(vld1q_s8(kc + 16 * j)), lv));
                }
            }
            int32_t a[IW];
            for (int j = 0; j < 8; ++j) vst1q_s32(a + 4 * j, Q4 ? vaddq_s32(vshlq_n_s32(acc[j], 8), accl[j]) : acc[j]);
            float sc[IW];
            float mx = -INFINITY;
            for (int i = 0; i < nh; ++i) {
                sc[i] = KIVI ? std::fma(float(a[i]), sq, bias[h]) : float(a[i] - K_OFF * qsum) * sq;
                mx = std::max(mx, sc[i]);
            }
            // online softmax; probabilities as integers, p_max = the window's largest
            const float m_new = std::max(s.m[h], mx);
            const float corr = exp_poly(s.m[h] - m_new);
            const float pm = exp_poly(mx - m_new);
            const float invp = pm >= Q_TINY ? pmax / pm : 0.0f, psc = pm / pmax;
            alignas(16) uint8_t pb[IW], pl[IW];  // Q8_0: the probabilities; the 4-bit types: their high, low bytes
            int psum = 0;
            for (int i = 0; i < IW; ++i) {
                const int p = i < nh ? std::min(P_MAX, int(std::nearbyint(exp_poly(sc[i] - m_new) * invp))) : 0;
                psum += p;
                pb[i] = uint8_t(Q4 ? p >> 8 : p);
                pl[i] = uint8_t(p & 255);
            }
            const float lsum = float(psum) * psc;
            s.l[h] = fma_f(s.l[h], corr, lsum);
            s.m[h] = m_new;
            // output: ah[d] = ah[d] corr + (sum_i p_i v_d[i]) dv_d psc
            const uint8x16_t p0 = vld1q_u8(pb), p1 = vld1q_u8(pb + 16);
            const uint8x16_t l0 = vld1q_u8(pl), l1 = vld1q_u8(pl + 16);
            const int32x4_t sub = vdupq_n_s32(V_SUB * psum);
            float * ah = s.acc + int64_t(h) * D;
            for (int d = 0; d < D; d += 4) {
                uint32x4_t o[4];
                for (int r = 0; r < 4; ++r) {
                    const uint8_t * v = vt + size_t(d + r) * IW;
                    const uint8x16_t v0 = vld1q_u8(v), v1 = vld1q_u8(v + 16);
                    o[r] = vdotq_u32(vdotq_u32(vdupq_n_u32(0), p0, v0), p1, v1);
                    if (Q4) {
                        const uint32x4_t ol = vdotq_u32(vdotq_u32(vdupq_n_u32(0), l0, v0), l1, v1);
                        o[r] = vaddq_u32(vshlq_n_u32(o[r], 8), ol);
                    }
                }
                const int32x4_t o4 = vsubq_s32(
                    vreinterpretq_s32_u32(vpaddq_u32(vpaddq_u32(o[0], o[1]), vpaddq_u32(o[2], o[3]))), sub);
                const float32x4_t w = vmulq_n_f32(vld1q_f32(dv + d), psc);
                const float32x4_t x = vmulq_f32(vcvtq_f32_s32(o4), w);
                vst1q_f32(ah + d, vaddq_f32(vmulq_n_f32(vld1q_f32(ah + d), corr), x));
            }
        }
    }
}

} // namespace

bool attend_int_neon(type t, const char * kr, const char * vr, size_t rb, int D, const head_counts & cnt,
                     int n_heads, const float * q, attn_state & s, next_prefetch & pf) {
    if (D % 4 != 0) return false;
    if (t == type::Q8_0) attend_int<type::Q8_0>(kr, vr, rb, rb, D, cnt, n_heads, q, s, pf);
    else if (t == type::Q4_0 && D <= 4096) attend_int<type::Q4_0>(kr, vr, rb, rb, D, cnt, n_heads, q, s, pf);
    else return false;
    return true;
}

bool attend_kivi_neon(const char * kr, const char * vr, size_t rbk, size_t rbv, int D, const head_counts & cnt,
                      int n_heads, const float * q, attn_state & s, next_prefetch & pf) {
    if (D % 4 != 0 || D > 4096) return false;  // D > 4096: the int16 query's sums would leave int32
    attend_int<type::Q4_KIVI>(kr, vr, rbk, rbv, D, cnt, n_heads, q, s, pf);
    return true;
}

namespace {

// Tokens [w0, w0 + nw) of a row of type T as 32 floats, zero past nw.
template <type T>
inline void widen_window(const char * row, int w0, int nw, float * out) {
    if (nw == 32) {
        if (T == type::F16) {
            const uint16_t * h = reinterpret_cast<const uint16_t *>(row) + w0;
            for (int k = 0; k < 4; ++k) {
                const float16x8_t v = vreinterpretq_f16_u16(vld1q_u16(h + 8 * k));
                vst1q_f32(out + 8 * k, vcvt_f32_f16(vget_low_f16(v)));
                vst1q_f32(out + 8 * k + 4, vcvt_high_f32_f16(v));
            }
        } else {
            std::memcpy(out, reinterpret_cast<const float *>(row) + w0, 32 * sizeof(float));
        }
        return;
    }
    for (int i = 0; i < 32; ++i) {
        if (i >= nw) out[i] = 0.0f;
        else if (T == type::F16) out[i] = block_scale(row + 2 * size_t(w0 + i));
        else std::memcpy(out + i, row + 4 * size_t(w0 + i), 4);
    }
}

template <type T>
void attend_float(const char * kr, const char * vr, size_t rb, int D, const head_counts & cnt, int n_heads,
                  const float * q, attn_state & s, next_prefetch & pf) {
    constexpr int PW = 32;
    int n_max = 0;
    for (int h = 0; h < n_heads; ++h) n_max = std::max(n_max, cnt(h));
    // (n_heads, PW) scores, then probabilities
    float * sc = static_cast<float *>(isa::thread_scratch(isa::scratch_slot::page_scores, sizeof(float) * size_t(n_heads) * PW));
    // (D, PW) the window's K, then (D, PW) its V, as floats
    float * kf = static_cast<float *>(isa::thread_scratch(isa::scratch_slot::page_floats, sizeof(float) * size_t(2 * D) * PW));
    float * vf = kf + size_t(D) * PW;
    for (int w0 = 0; w0 < n_max; w0 += PW) {
        const int nw = std::min(PW, n_max - w0);
        for (int d = 0; d < D; ++d) {
            pf.k_rows(1);
            widen_window<T>(kr + size_t(d) * rb, w0, nw, kf + size_t(d) * PW);
        }
        // scores, two heads at a time: 16 accumulators
        for (int h0 = 0; h0 < n_heads; h0 += 2) {
            const int hn = std::min(2, n_heads - h0);
            float32x4_t a[2][8];
            for (int j = 0; j < 2; ++j)
                for (int k = 0; k < 8; ++k) a[j][k] = vdupq_n_f32(0.0f);
            const float * q0 = q + int64_t(h0) * D, * q1 = q + int64_t(h0 + hn - 1) * D;
            for (int d = 0; d < D; ++d) {
                const float * kd = kf + size_t(d) * PW;
                const float qa = q0[d], qb = q1[d];
                for (int k = 0; k < 8; ++k) {
                    const float32x4_t kv = vld1q_f32(kd + 4 * k);
                    a[0][k] = vaddq_f32(a[0][k], vmulq_n_f32(kv, qa));
                    a[1][k] = vaddq_f32(a[1][k], vmulq_n_f32(kv, qb));
                }
            }
            for (int j = 0; j < hn; ++j)
                for (int k = 0; k < 8; ++k) vst1q_f32(sc + size_t(h0 + j) * PW + 4 * k, a[j][k]);
        }
        // online softmax, as the twin
        for (int h = 0; h < n_heads; ++h) {
            float * sh = sc + h * PW;
            const int nh = std::max(0, std::min(nw, cnt(h) - w0));
            std::fill(sh + nh, sh + PW, 0.0f);
            if (nh == 0) continue;
            float mx = -INFINITY;
            for (int i = 0; i < nh; ++i) mx = std::fmax(mx, sh[i]);
            const float m_new = std::fmax(s.m[h], mx);
            const float corr = std::exp(s.m[h] - m_new);
            float sum = 0.0f;
            for (int i = 0; i < nh; ++i) {
                sh[i] = std::exp(sh[i] - m_new);
                sum += sh[i];
            }
            s.l[h] = s.l[h] * corr + sum;
            s.m[h] = m_new;
            float * ah = s.acc + int64_t(h) * D;
            for (int d = 0; d < D; ++d) ah[d] *= corr;
        }
        for (int d = 0; d < D; ++d) {
            pf.v_rows(1);
            widen_window<T>(vr + size_t(d) * rb, w0, nw, vf + size_t(d) * PW);
        }
        // outputs: 4 channels of a head at a time, their sums reduced together
        for (int h = 0; h < n_heads; ++h) {
            if (cnt(h) - w0 <= 0) continue;
            const float * ph = sc + h * PW;
            float32x4_t p[8];
            for (int k = 0; k < 8; ++k) p[k] = vld1q_f32(ph + 4 * k);
            float * ah = s.acc + int64_t(h) * D;
            int d = 0;
            for (; d + 4 <= D; d += 4) {
                float32x4_t o[4];
                for (int r = 0; r < 4; ++r) {
                    const float * v = vf + size_t(d + r) * PW;
                    float32x4_t x = vmulq_f32(p[0], vld1q_f32(v)), y = vmulq_f32(p[1], vld1q_f32(v + 4));
                    for (int k = 2; k < 8; k += 2) {
                        x = vfmaq_f32(x, p[k], vld1q_f32(v + 4 * k));
                        y = vfmaq_f32(y, p[k + 1], vld1q_f32(v + 4 * k + 4));
                    }
                    o[r] = vaddq_f32(x, y);
                }
                const float32x4_t o4 = vpaddq_f32(vpaddq_f32(o[0], o[1]), vpaddq_f32(o[2], o[3]));
                vst1q_f32(ah + d, vaddq_f32(vld1q_f32(ah + d), o4));
            }
            for (; d < D; ++d) {
                const float * v = vf + size_t(d) * PW;
                float32x4_t x = vmulq_f32(p[0], vld1q_f32(v));
                for (int k = 1; k < 8; ++k) x = vfmaq_f32(x, p[k], vld1q_f32(v + 4 * k));
                ah[d] += vaddvq_f32(x);
            }
        }
    }
}

} // namespace

bool attend_float_neon(type t, const char * kr, const char * vr, size_t rb, int D, const head_counts & cnt,
                       int n_heads, const float * q, attn_state & s, next_prefetch & pf) {
    if (t == type::F16) attend_float<type::F16>(kr, vr, rb, D, cnt, n_heads, q, s, pf);
    else if (t == type::F32) attend_float<type::F32>(kr, vr, rb, D, cnt, n_heads, q, s, pf);
    else return false;
    return true;
}

void score_bounds_f16_neon(const float * q, int32_t group, int32_t head_dim, const uint16_t * tiles, int32_t n,
                           float * out) {
    static_assert(SUMMARY_TILE == 32, "8 vectors of 4 pages per tile");
    GLOAS_ASSERT(group >= 1 && head_dim >= 1);
    const size_t hd = size_t(head_dim), tile = 2 * hd * SUMMARY_TILE;
    const float32x4_t inf = vdupq_n_f32(INFINITY);
    for (int32_t c0 = 0; c0 < n; c0 += SUMMARY_TILE) {
        const int32_t nc = std::min(SUMMARY_TILE, n - c0);
        const uint16_t * t = tiles + size_t(c0 / SUMMARY_TILE) * tile;
        if (nc < SUMMARY_TILE) {
            // a partial last tile: its columns past n are never read, so
            // the valid ones are copied into a zero-padded tile
            uint16_t * pad = static_cast<uint16_t *>(isa::thread_scratch(isa::scratch_slot::page_bounds, 2 * tile));
            for (size_t r = 0; r < 2 * hd; ++r) {
                std::memcpy(pad + r * SUMMARY_TILE, t + r * SUMMARY_TILE, size_t(nc) * 2);
                std::memset(pad + r * SUMMARY_TILE + nc, 0, size_t(SUMMARY_TILE - nc) * 2);
            }
            t = pad;
        }
        float32x4_t best[8];
        for (int k = 0; k < 8; ++k) best[k] = vdupq_n_f32(-INFINITY);
        for (int32_t g = 0; g < group; ++g) {
            const float * qg = q + size_t(g) * hd;
            float32x4_t a[8];
            for (int k = 0; k < 8; ++k) a[k] = vdupq_n_f32(0.0f);
            for (size_t d = 0; d < hd; ++d) {
                const float qd = qg[d];
                // kmin rows come first in the tile, then the kmax rows
                const uint16_t * row = t + ((qd >= 0.0f ? hd : 0) + d) * SUMMARY_TILE;
                for (int k = 0; k < 4; ++k) {
                    const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(row + 8 * k));
                    a[2 * k] = vfmaq_n_f32(a[2 * k], vcvt_f32_f16(vget_low_f16(h)), qd);
                    a[2 * k + 1] = vfmaq_n_f32(a[2 * k + 1], vcvt_high_f32_f16(h), qd);
                }
            }
            // a NaN sum (an infinite bound times a zero query value) counts as +inf
            for (int k = 0; k < 8; ++k) best[k] = vmaxq_f32(best[k], vbslq_f32(vceqq_f32(a[k], a[k]), a[k], inf));
        }
        float o[SUMMARY_TILE];
        for (int k = 0; k < 8; ++k) vst1q_f32(o + 4 * k, best[k]);
        std::memcpy(out + c0, o, size_t(nc) * sizeof(float));
    }
}

}} // namespace gloas::page_kernels::GLOAS_ISA

#endif // GLOAS_NEON
