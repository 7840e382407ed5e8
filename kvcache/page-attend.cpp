// page_attend / page_attend_multi: attention of query heads over one K/V
// page (kvcache/page.h), K and V read in registers, never expanded in memory.
//
// Q8_0, Q4_0 and Q4_KIVI pages run the integer algorithm of page.h: the
// AVX-512 kernels are in page-attend-int.cpp, the AVX2 ones in
// page-attend-kivi.cpp; attend_int_portable below is their scalar twin (and
// the kernel of variants without them: scalar, or AVX-512 without VNNI /
// VBMI for Q8_0), the same integers and the same float operations.
//
// F32 / F16 pages (and BF16 in the portable kernel) run the float
// algorithm. In the channel-major page every K/V channel d of the head is a
// row over the page's tokens, so per window of 32 or 64 tokens:
//   scores  s[g][t] += q[g][d] * K_d[t]   one broadcast FMA per 16 tokens,
//                                          each K_d vector reused by all heads
//   output  o[g][d]  = sum_t p[g][t] V_d[t] a dot product along the tokens,
//                                          each V_d vector reused by all heads
// The AVX-512 kernel takes heads in chunks of GN = 8, 4, 2, 1. For the output,
// GN = 8 transposes 16x16 tiles of V in registers and accumulates 16 channels
// per head with broadcast FMAs; fewer heads keep 16 dot products (GN heads x
// 16/GN channels) in registers and reduce them together. The AVX2 variant
// runs its own register kernel for F32, F16 and BF16 pages whose page size
// is a multiple of 8 (page-attend-float.cpp). The scalar variant, AVX-512's
// BF16 pages and head_dim > 256, and the other page sizes run a portable
// kernel that dequantizes one 32-token block of a row at a time into a stack
// buffer; the compiler vectorizes its loops. The float and the Q4_0 register kernels are
// compiled for head_dim 64 and 128 as constants (loops unrolled, no tail
// masks: about 5-10% less time per piece) and for any head_dim.
//
// Memory: a decode query reads one piece per page (a layer and KV head's K
// and V rows: 2 x 4 KiB for F16 pages of 32 tokens, each row one cache line),
// and consecutive pieces are a page apart, so every piece starts on a new OS
// page where the hardware prefetchers stop. Given the next page (page_attend's
// `next`), every kernel streams the next piece in as it reads the current
// one, the next piece's K (V) rows as it reads the same rows of its own K
// (V) (next_prefetch): over cold F16 pages that took page_attend from about
// 2x its in-cache time to within about 10% of it (gloas-kernel-bench --pages).
//
// The NEON variant (aarch64) runs its own kernels for F32, F16, Q8_0, Q4_0
// and Q4_KIVI pages (page-attend-neon.cpp), with the portable ones as their
// twins.
#include "kvcache/page.h"
#include "kvcache/page-kernels.h"
#include "kvcache/page-neon.h"

#include "quant/blocks.h"
#include "quant/fp16.h"
#include "quant/simd.h"
#include "base/error.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

namespace gloas {

namespace {

using namespace page_kernels;

// Windows of the portable kernel: one block of the block types.
constexpr int PW = 32;

// Tokens [w0, w0 + nw) of one row as floats in out: the float types read only
// those tokens, the block types dequantize the whole block of 32 at w0.
inline void load_window(const type_traits & tt, const char * row, int w0, int nw, float * out) {
    if (tt.is_quantized) tt.to_float(row + size_t(w0 / tt.blck_size) * tt.type_size, out, PW);
    else                 tt.to_float(row + size_t(w0) * tt.type_size, out, nw);
}


// Any type, head_dim and number of heads: windows of 32 tokens, one
// online-softmax step per window and head (none where a head has no token).
void attend_portable(type t, const char * kr, const char * vr, size_t rb, int D, const head_counts & cnt,
                     int n_heads, const float * q, attn_state & s, next_prefetch & pf) {
    const type_traits & tt = traits(t);
    GLOAS_ASSERT(!tt.is_quantized || tt.blck_size == PW);
    int n_max = 0;
    for (int h = 0; h < n_heads; ++h) n_max = std::max(n_max, cnt(h));
    // (n_heads, PW) scores, then probabilities
    float * sc = static_cast<float *>(isa::thread_scratch(isa::scratch_slot::page_scores, sizeof(float) * size_t(n_heads) * PW));
    float x[PW];               // one window of one row
    for (int w0 = 0; w0 < n_max; w0 += PW) {
        const int nw = std::min(PW, n_max - w0);
        std::fill(sc, sc + size_t(n_heads) * PW, 0.0f);
        for (int d = 0; d < D; ++d) {
            pf.k_rows(1);
            load_window(tt, kr + size_t(d) * rb, w0, nw, x);
            for (int h = 0; h < n_heads; ++h) {
                const float qd = q[int64_t(h) * D + d];
                float * sh = sc + h * PW;
                for (int i = 0; i < nw; ++i) sh[i] += qd * x[i];
            }
        }
        for (int h = 0; h < n_heads; ++h) {
            float * sh = sc + h * PW;
            const int nh = std::max(0, std::min(nw, cnt(h) - w0));
            std::fill(sh + nh, sh + PW, 0.0f);
            if (nh == 0) continue;
            float mx = -INFINITY;
            for (int i = 0; i < nh; ++i) mx = std::fmax(mx, sh[i]);
            const float m_new = std::fmax(s.m[h], mx);
            const float corr = std::exp(s.m[h] - m_new);  // 0 on the first window (m = -inf)
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
            load_window(tt, vr + size_t(d) * rb, w0, nw, x);
            for (int h = 0; h < n_heads; ++h) {
                const float * ph = sc + h * PW;
                float o = 0.0f;
                for (int i = 0; i < nw; ++i) o += ph[i] * x[i];
                s.acc[int64_t(h) * D + d] += o;
            }
        }
    }
}

// ---- the integer algorithm for Q8_0 pages (page.h) ----


// a * b + c: fused where the CPU has FMA (as the SIMD kernels are), else two
// roundings (no slow software fma where no SIMD kernel needs matching).
inline float fma_f(float a, float b, float c) {
#if defined(__FMA__)
    return std::fma(a, b, c);
#else
    return a * b + c;
#endif
}

// v rounded to the nearest integer, ties to even, as vcvtps2dq (|v| < 2^22).
inline float round_even(float v) {
#if defined(__SSE4_1__) || !(defined(__x86_64__) || defined(__i386__))
    return std::nearbyint(v);
#else
    const float c = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer (no libm call on plain SSE2)
    return (v + c) - c;
#endif
}

// e^x with the operations of simd::exp_ps, lane by lane: the same float.
inline float exp_poly(float x) {
    x = std::max(-104.0f, std::min(88.8f, x));
    const float n = round_even(x * 1.44269504088896341f);
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
    // p * 2^n (n in [-150, 128]) with one rounding, as vscalefps: two exact
    // powers of two, the first product exact
    const int ni = int(n), n1 = ni / 2, n2 = ni - n1;
    return p * f32_from_bits(uint32_t(n1 + 127) << 23) * f32_from_bits(uint32_t(n2 + 127) << 23);
}

inline float block_scale(const char * b) {
    uint16_t h;
    std::memcpy(&h, b, 2);
    return fp16_to_fp32(h);
}

// The integer algorithms' constants per type (page.h). Their integer K
// values are k + k_off, k the block's value (Q8_0: int8 + 128, dpbusd's
// unsigned operand; Q4_0: the nibbles 0..15, value + 8), their V values
// v + v_off (Q8_0: int8; Q4_0: the nibbles); the query is rounded to
// -q_max-1..q_max (Q8_0: int8; Q4_0: int16) and the probabilities to
// 0..p_max (Q8_0: u8; Q4_0: 15 bits, an int16).
struct int_algo {
    int k_off, v_off, q_max, p_max;
};
constexpr int_algo INT_Q8_0 = {128, 0, 127, 255};
constexpr int_algo INT_Q4_0 = {8, 8, 32767, 32767};
constexpr int_algo INT_Q4_KIVI = {0, 8, 32767, 32767};  // K: Q4_1 nibbles (x = d * q + m); V: Q4_0's

inline const int_algo & int_algo_of(type t) {
    return t == type::Q4_0 ? INT_Q4_0 : t == type::Q4_KIVI ? INT_Q4_KIVI : INT_Q8_0;
}

// Value i (0..31) of a Q8_0 block (int8), a Q4_0 block (nibble - 8; low
// nibbles are values 0..15, high nibbles 16..31) or a Q4_1 block (the
// nibble q of d * q + m).
inline int block_value(type t, const char * b, int i) {
    if (t == type::Q4_0) return (i < 16 ? int(uint8_t(b[2 + i]) & 15) : int(uint8_t(b[2 + i - 16]) >> 4)) - 8;
    if (t == type::Q4_1) return i < 16 ? int(uint8_t(b[4 + i]) & 15) : int(uint8_t(b[4 + i - 16]) >> 4);
    return int(int8_t(b[2 + i]));
}

inline float block_min(const char * b) { return block_scale(b + 2); }  // a Q4_1 block's m

// Scalar twin of the integer register kernels, any head_dim and number of
// heads; t is Q8_0, Q4_0 or Q4_KIVI. kr, vr: the piece's D K rows (rbk
// bytes apart) and D V rows (rbv). Q4_KIVI's K rows are Q4_1 blocks: the
// integer algorithm runs on their nibbles, with dk the blocks' d, and adds
// each head's bias_h = sum_c q_c * m_c (the blocks' minima) to its scores.
void attend_int_portable(type t, const char * kr, const char * vr, size_t rbk, size_t rbv, int D,
                         const head_counts & cnt, int n_heads, const float * q, attn_state & s, next_prefetch & pf) {
    GLOAS_ASSERT(t == type::Q8_0 || t == type::Q4_0 || t == type::Q4_KIVI);
    GLOAS_ASSERT(t == type::Q8_0 || D <= 4096);  // the 4-bit types' int16 query: |sum_c qi_c ku_c| < 2^31
    const type tk = page_row_type(t, 0), tv = page_row_type(t, 1);
    const size_t bsk = traits(tk).type_size, bsv = traits(tv).type_size;
    const bool kmin = tk == type::Q4_1;
    const int_algo & A = int_algo_of(t);
    const float qmax = float(A.q_max), pmax = float(A.p_max);
    int n_max = 0;
    for (int h = 0; h < n_heads; ++h) n_max = std::max(n_max, cnt(h));
    // (D) K scales of the window
    float * dk = static_cast<float *>(isa::thread_scratch(isa::scratch_slot::page_floats, sizeof(float) * size_t(4 * D)));
    float * dv = dk + D;             // (D) V scales
    float * qf = dv + D;             // (D) one head's q_c * dk_c
    float * mk = qf + D;             // (D) K minima (Q4_1 rows)
    // (D, IW) K values + k_off
    int * ku = static_cast<int *>(isa::thread_scratch(isa::scratch_slot::page_ints, sizeof(int) * size_t(2 * D * IW + D + IW)));
    int * vv = ku + D * IW;          // (D, IW) V values + v_off
    int * qi = vv + D * IW;          // (D) one head's integer query
    int * pu = qi + D;               // (IW) one head's quantized probabilities
    for (int w0 = 0; w0 < n_max; w0 += IW) {
        for (int d = 0; d < D; ++d) {
            pf.k_rows(1);
            pf.v_rows(1);
            const char * kb = kr + size_t(d) * rbk + size_t(w0 / IW) * bsk, * vb = vr + size_t(d) * rbv + size_t(w0 / IW) * bsv;
            dk[d] = block_scale(kb);
            dv[d] = block_scale(vb);
            mk[d] = kmin ? block_min(kb) : 0.0f;
            for (int i = 0; i < IW; ++i) {
                ku[d * IW + i] = block_value(tk, kb, i) + A.k_off;
                vv[d * IW + i] = block_value(tv, vb, i) + A.v_off;
            }
        }
        for (int h = 0; h < n_heads; ++h) {
            const int nh = std::max(0, std::min(IW, cnt(h) - w0));
            if (nh == 0) continue;
            // query: int8 per head, scale sq
            float amax = 0.0f, bias = 0.0f;
            for (int d = 0; d < D; ++d) {
                qf[d] = q[int64_t(h) * D + d] * dk[d];
                amax = std::max(amax, std::fabs(qf[d]));
                if (kmin) bias = fma_f(q[int64_t(h) * D + d], mk[d], bias);
            }
            const float inv = amax >= Q_TINY ? qmax / amax : 0.0f, sq = amax / qmax;
            int qsum = 0;
            for (int d = 0; d < D; ++d) {
                qi[d] = std::max(-A.q_max - 1, std::min(A.q_max, int(round_even(qf[d] * inv))));
                qsum += qi[d];
            }
            // scores of the head's nh tokens, their max
            int a[IW] = {};
            for (int d = 0; d < D; ++d)
                for (int i = 0; i < IW; ++i) a[i] += qi[d] * ku[d * IW + i];
            float sc[IW];
            float mx = -INFINITY;
            for (int i = 0; i < nh; ++i) {
                sc[i] = kmin ? fma_f(float(a[i]), sq, bias) : float(a[i] - A.k_off * qsum) * sq;
                mx = std::max(mx, sc[i]);
            }
            // online softmax; probabilities as integers, p_max = the window's largest
            const float m_new = std::max(s.m[h], mx);
            const float corr = exp_poly(s.m[h] - m_new);
            const float pm = exp_poly(mx - m_new);
            const float invp = pm >= Q_TINY ? pmax / pm : 0.0f, psc = pm / pmax;
            int psum = 0;
            for (int i = 0; i < IW; ++i) {
                pu[i] = i < nh ? std::min(A.p_max, int(round_even(exp_poly(sc[i] - m_new) * invp))) : 0;
                psum += pu[i];
            }
            const float lsum = float(psum) * psc;
            s.l[h] = fma_f(s.l[h], corr, lsum);
            s.m[h] = m_new;
            // output
            float * ah = s.acc + int64_t(h) * D;
            for (int d = 0; d < D; ++d) {
                int o = 0;
                for (int i = 0; i < IW; ++i) o += pu[i] * vv[d * IW + i];
                const float w = dv[d] * psc;
                const float x = float(o - A.v_off * psum) * w;
                ah[d] = fma_f(ah[d], corr, x);
            }
        }
    }
}

#if defined(GLOAS_PAGE_AVX512)


// Tokens [t0, t0 + 32) of one row (t0 % 32 == 0) as two vectors of 16 floats.
// Lanes outside m0 / m1 are zero; for the float types their bytes are not
// read, so a page's unwritten tail or a row shorter than 32 tokens is safe.
template <type T>
inline void load32(const char * row, int t0, __mmask16 m0, __mmask16 m1, __m512 & v0, __m512 & v1);

template <>
inline void load32<type::F32>(const char * row, int t0, __mmask16 m0, __mmask16 m1, __m512 & v0, __m512 & v1) {
    const float * x = reinterpret_cast<const float *>(row) + t0;
    v0 = _mm512_maskz_loadu_ps(m0, x);
    v1 = _mm512_maskz_loadu_ps(m1, x + 16);
}

template <>
inline void load32<type::F16>(const char * row, int t0, __mmask16 m0, __mmask16 m1, __m512 & v0, __m512 & v1) {
    const uint16_t * x = reinterpret_cast<const uint16_t *>(row) + t0;
    v0 = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m0, x));
    v1 = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m1, x + 16));
}

// x = d * q: the same float product as dequantize_row_q8_0.
template <>
inline void load32<type::Q8_0>(const char * row, int t0, __mmask16 m0, __mmask16 m1, __m512 & v0, __m512 & v1) {
    const block_q8_0 * b = reinterpret_cast<const block_q8_0 *>(row) + t0 / QK8_0;
    const __m512 d = _mm512_set1_ps(_cvtsh_ss(b->d));
    const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i *>(b->qs));
    const __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i *>(b->qs + 16));
    v0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_maskz_cvtepi8_epi32(m0, q0)), d);
    v1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_maskz_cvtepi8_epi32(m1, q1)), d);
}

// Tokens [t0, t0 + 16) of one row (t0 % 16 == 0) as one vector, lanes
// outside m zero (the same values as load32).
template <type T>
inline __m512 load16(const char * row, int t0, __mmask16 m);

template <>
inline __m512 load16<type::F32>(const char * row, int t0, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, reinterpret_cast<const float *>(row) + t0);
}

template <>
inline __m512 load16<type::F16>(const char * row, int t0, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t *>(row) + t0));
}

template <>
inline __m512 load16<type::Q8_0>(const char * row, int t0, __mmask16 m) {
    const block_q8_0 * b = reinterpret_cast<const block_q8_0 *>(row) + t0 / QK8_0;
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i *>(b->qs + t0 % QK8_0));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_maskz_cvtepi8_epi32(m, q)), _mm512_set1_ps(_cvtsh_ss(b->d)));
}

// In place: lane j of r[i] becomes lane i of the old r[j] (64 shuffles).
inline void transpose16(__m512 * r) {
    __m512 t[16];
    for (int i = 0; i < 8; ++i) {  // per 128-bit lane: [a0 b0 a1 b1], [a2 b2 a3 b3]
        t[2 * i]     = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {  // r[4i+k], 128-bit lane L: element 4L+k of rows 4i..4i+3
        const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i]     = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int k = 0; k < 4; ++k) {  // 4x4 transpose of 128-bit lanes among r[k], r[4+k], r[8+k], r[12+k]
        const __m512 v0 = _mm512_shuffle_f32x4(r[k], r[4 + k], _MM_SHUFFLE(1, 0, 1, 0));
        const __m512 v1 = _mm512_shuffle_f32x4(r[k], r[4 + k], _MM_SHUFFLE(3, 2, 3, 2));
        const __m512 v2 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], _MM_SHUFFLE(1, 0, 1, 0));
        const __m512 v3 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], _MM_SHUFFLE(3, 2, 3, 2));
        t[k]      = _mm512_shuffle_f32x4(v0, v2, _MM_SHUFFLE(2, 0, 2, 0));
        t[4 + k]  = _mm512_shuffle_f32x4(v0, v2, _MM_SHUFFLE(3, 1, 3, 1));
        t[8 + k]  = _mm512_shuffle_f32x4(v1, v3, _MM_SHUFFLE(2, 0, 2, 0));
        t[12 + k] = _mm512_shuffle_f32x4(v1, v3, _MM_SHUFFLE(3, 1, 3, 1));
    }
    for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Output step for many heads (GN >= 8): acc[g][d] = acc[g][d] * corr[g] +
// sum_t p[g][t] V_d[t], with V in tiles of 16 channels x 16 tokens transposed
// in registers, so each head accumulates 16 channels with one broadcast FMA
// per token and nothing needs a horizontal sum.
template <type T, int GN, int NV, int HD>
void output_transposed(const char * vr, size_t rb, int D_, int w0, const __mmask16 * mk,
                       const float * p, const float * corr, float * acc, next_prefetch & pf_io) {
    const int D = HD > 0 ? HD : D_;
    constexpr int W = 16 * NV;
    next_prefetch pf = pf_io;
    for (int d0 = 0; d0 < D; d0 += 16) {
        const int nd = std::min(16, D - d0);
        __m512 o[GN];
        for (int g = 0; g < GN; ++g) o[g] = _mm512_setzero_ps();
        for (int k = 0; k < NV && mk[k]; ++k) {
            __m512 r[16];  // r[j]: channel d0 + j, tokens w0 + 16k + [0, 16); then transposed
            if (k == 0) pf.v_rows(nd / 2);  // the tile's rows of the next piece, in two halves
            if (nd == 16) {
                const char * row = vr + size_t(d0) * rb;
                #pragma GCC unroll 16
                for (int j = 0; j < 16; ++j) r[j] = load16<T>(row + size_t(j) * rb, w0 + 16 * k, mk[k]);
            } else {
                for (int j = 0; j < 16; ++j) r[j] = j < nd ? load16<T>(vr + size_t(d0 + j) * rb, w0 + 16 * k, mk[k]) : _mm512_setzero_ps();
            }
            transpose16(r);
            if (k == 0) pf.v_rows(nd - nd / 2);
            #pragma GCC unroll 16
            for (int i = 0; i < 16; ++i) {
                #pragma GCC unroll 8
                for (int g = 0; g < GN; ++g) o[g] = _mm512_fmadd_ps(_mm512_set1_ps(p[g * W + 16 * k + i]), r[i], o[g]);
            }
        }
        const __mmask16 dm = simd::tail_mask(nd);
        for (int g = 0; g < GN; ++g) {
            float * ag = acc + g * D + d0;
            _mm512_mask_storeu_ps(ag, dm, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(dm, ag), _mm512_set1_ps(corr[g]), o[g]));
        }
    }
    pf_io = pf;
}

// r[i] = the sum of the 16 lanes of a[i], i = 0..15, in natural order:
// pairs and quads within 128-bit lanes, then across them (45 instructions).
inline __m512 hsum16(const __m512 * a) {
    __m512 c[4];  // c[k] lane 4L+j: the part of a[4k+j]'s sum from 128-bit lane L
    for (int k = 0; k < 4; ++k) {
        const __m512 * x = a + 4 * k;
        const __m512 u01 = _mm512_add_ps(_mm512_unpacklo_ps(x[0], x[1]), _mm512_unpackhi_ps(x[0], x[1]));
        const __m512 u23 = _mm512_add_ps(_mm512_unpacklo_ps(x[2], x[3]), _mm512_unpackhi_ps(x[2], x[3]));
        c[k] = _mm512_add_ps(_mm512_shuffle_ps(u01, u23, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(u01, u23, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    const __m512 f01 = _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512 f23 = _mm512_add_ps(_mm512_shuffle_f32x4(c[2], c[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm512_shuffle_f32x4(c[2], c[3], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(f01, f23, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(f01, f23, _MM_SHUFFLE(3, 1, 3, 1)));
}


// Output step for few heads (GN < 8): acc[g][d] = acc[g][d] * corr[g] +
// sum_t p[g][t] V_d[t], each V_d vector reused by the GN heads; DC = 16 / GN
// channels x GN heads give 16 sums reduced together by hsum16.
template <type T, int GN, int NV, int HD>
void output_hsum(const char * vr, size_t rb, int D_, int w0, const __mmask16 * mk,
                 const float * p, const float * corr, float * acc, next_prefetch & pf_io) {
    const int D = HD > 0 ? HD : D_;
    constexpr int W = 16 * NV, DC = 16 / GN;
    next_prefetch pf = pf_io;
    // output sums o (GN, Dp) = sum_t p[g][t] V_d[t]; channels d0..d0+DC give
    // 16 sums a[g * DC + j], reduced together; head g's DC sums go to
    // o[g][d0..d0+DC) by a masked store whose lane g*DC lands on d0
    const int Dp = (D + 15) / 16 * 16;  // >= 16 >= DC: the store bases stay inside o
    alignas(64) float o[GN * MAX_D];
    for (int d0 = 0; d0 < D; d0 += DC) {
        __m512 a[16];
        #pragma GCC unroll 16
        for (int j = 0; j < DC; ++j) {
            if (d0 + j < D) {
                pf.v_rows(1);
                __m512 v[NV];
                for (int b = 0; b < NV / 2; ++b)
                    load32<T>(vr + size_t(d0 + j) * rb, w0 + 32 * b, mk[2 * b], mk[2 * b + 1], v[2 * b], v[2 * b + 1]);
                #pragma GCC unroll 8
                for (int g = 0; g < GN; ++g) {
                    __m512 x = _mm512_mul_ps(_mm512_load_ps(p + g * W), v[0]);
                    for (int k = 1; k < NV; ++k) x = _mm512_fmadd_ps(_mm512_load_ps(p + g * W + 16 * k), v[k], x);
                    a[g * DC + j] = x;
                }
            } else {
                for (int g = 0; g < GN; ++g) a[g * DC + j] = _mm512_setzero_ps();
            }
        }
        const __m512 r = hsum16(a);
        #pragma GCC unroll 8
        for (int g = 0; g < GN; ++g)
            _mm512_mask_storeu_ps(o + g * (Dp - DC) + d0, __mmask16(((1u << DC) - 1) << (g * DC)), r);
    }

    // acc[g][d] = acc[g][d] * corr[g] + o[g][d]
    for (int g = 0; g < GN; ++g) {
        const __m512 c = _mm512_set1_ps(corr[g]);
        float * ag = acc + g * D;
        const float * og = o + g * Dp;
        for (int d0 = 0; d0 < D; d0 += 16) {
            const __mmask16 dm = simd::tail_mask(D - d0);
            _mm512_mask_storeu_ps(ag + d0, dm, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(dm, ag + d0), c, _mm512_load_ps(og + d0)));
        }
    }
    pf_io = pf;
}

// One online-softmax step of GN query heads over the window of tokens
// [w0, w0 + 16 * NV) of the K rows kr and V rows vr (D rows each, rb bytes
// apart), head g reading its first nh[g] (0..16 * NV) tokens; K/V are read up
// to the largest. HD: the head_dim as a constant (loops unrolled, no
// tails), or 0: any, D_. q (GN, D); m, l (GN); acc (GN, D).
template <type T, int GN, int NV, int HD>
void attend_window(const char * kr, const char * vr, size_t rb, int D_, int w0, const int * nh,
                   const float * q, float * m, float * l, float * acc, next_prefetch & pf_io) {
    static_assert(HD >= 0 && HD <= MAX_D, "head_dim");
    const int D = HD > 0 ? HD : D_;
    static_assert(NV == 2 || NV == 4, "windows of 32 or 64 tokens");
    static_assert(GN == 1 || GN == 2 || GN == 4 || GN == 8, "chunks of 1, 2, 4 or 8 heads");
    constexpr int W = 16 * NV;
    int nw = 0;
    for (int g = 0; g < GN; ++g) nw = std::max(nw, nh[g]);
    __mmask16 mk[NV];  // tokens of each 16-token vector that are read
    for (int k = 0; k < NV; ++k) mk[k] = simd::tail_mask(std::max(0, std::min(16, nw - 16 * k)));

    // scores, one 32-token block at a time: 2 * GN accumulators
    alignas(64) float p[GN * W];  // (GN, W) scores, then probabilities
    next_prefetch pf = pf_io;
    for (int b = 0; b < NV / 2; ++b) {
        __m512 s0[GN], s1[GN];
        for (int g = 0; g < GN; ++g) s0[g] = s1[g] = _mm512_setzero_ps();
        const char * row = kr;
        for (int d = 0; d < D; ++d, row += rb) {
            if (d % 4 == 0) pf.k_rows(4);  // (a call per 4 rows: less bookkeeping)
            __m512 k0, k1;
            load32<T>(row, w0 + 32 * b, mk[2 * b], mk[2 * b + 1], k0, k1);
            #pragma GCC unroll 8
            for (int g = 0; g < GN; ++g) {
                const __m512 qd = _mm512_set1_ps(q[g * D + d]);
                s0[g] = _mm512_fmadd_ps(qd, k0, s0[g]);
                s1[g] = _mm512_fmadd_ps(qd, k1, s1[g]);
            }
        }
        for (int g = 0; g < GN; ++g) {
            _mm512_store_ps(p + g * W + 32 * b, s0[g]);
            _mm512_store_ps(p + g * W + 32 * b + 16, s1[g]);
        }
    }

    // online softmax: probabilities in p (0 past nh[g]), l and m updated; the
    // per-head scalars (max, correction, sum) as lanes of one vector
    const __mmask16 hm = __mmask16((1u << GN) - 1);
    const auto max_op = [](__m512 a, __m512 b) { return _mm512_max_ps(a, b); };
    const auto add_op = [](__m512 a, __m512 b) { return _mm512_add_ps(a, b); };
    alignas(64) float mx[16], corr[16];
    __mmask16 mh[GN][NV];  // tokens of each vector that head g attends
    __m512 xs[8];          // per head, then padded with head 0's
    for (int g = 0; g < GN; ++g) {
        __m512 x = _mm512_set1_ps(-INFINITY);
        for (int k = 0; k < NV; ++k) {
            mh[g][k] = simd::tail_mask(std::max(0, std::min(16, nh[g] - 16 * k)));
            x = _mm512_mask_max_ps(x, mh[g][k], x, _mm512_load_ps(p + g * W + 16 * k));
        }
        xs[g] = x;
    }
    for (int g = GN; g < 8; ++g) xs[g] = xs[0];
    const __m512 m_old = _mm512_maskz_loadu_ps(hm, m);
    const __m512 mxv = _mm512_maskz_mov_ps(hm, hreduce8(xs, max_op));  // lane g: head g's max, -inf with no token here
    const __m512 m_new = _mm512_max_ps(m_old, mxv);
    // 0 (or below 1e-45) on a head's first window, where m = -inf; 1 for a
    // head with no token in this window
    _mm512_store_ps(corr, _mm512_mask_mov_ps(simd::exp_ps(_mm512_sub_ps(m_old, m_new)),
                                             _mm512_cmp_ps_mask(mxv, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ),
                                             _mm512_set1_ps(1.0f)));
    _mm512_store_ps(mx, m_new);
    __m512 sv[8];  // per head, then padded with head 0's
    for (int g = 0; g < GN; ++g) {
        float * pg = p + g * W;
        const __m512 mv = _mm512_set1_ps(mx[g]);
        sv[g] = _mm512_setzero_ps();
        for (int k = 0; k < NV; ++k) {
            const __m512 e = _mm512_maskz_mov_ps(mh[g][k], simd::exp_ps(_mm512_sub_ps(_mm512_load_ps(pg + 16 * k), mv)));
            sv[g] = _mm512_add_ps(sv[g], e);
            _mm512_store_ps(pg + 16 * k, e);
        }
    }
    for (int g = GN; g < 8; ++g) sv[g] = sv[0];
    const __m512 sum = hreduce8(sv, add_op);  // lane g: head g's sum
    _mm512_mask_storeu_ps(l, hm, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(hm, l), _mm512_load_ps(corr), sum));
    _mm512_mask_storeu_ps(m, hm, m_new);

    if constexpr (GN >= 8) output_transposed<T, GN, NV, HD>(vr, rb, D, w0, mk, p, corr, acc, pf);
    else                   output_hsum<T, GN, NV, HD>(vr, rb, D, w0, mk, p, corr, acc, pf);
    pf_io = pf;
}

// GN heads, head g over tokens [0, n[g]) of the page: windows of 64 tokens
// while more than 32 remain, else of 32.
template <type T, int GN>
void attend_heads(const char * kr, const char * vr, size_t rb, int D, const int * n,
                  const float * q, float * m, float * l, float * acc, next_prefetch & pf) {
    int n_max = 0;
    for (int g = 0; g < GN; ++g) n_max = std::max(n_max, n[g]);
    int nh[GN];
    for (int w0 = 0; w0 < n_max;) {
        const int W = n_max - w0 > 32 ? 64 : 32;
        for (int g = 0; g < GN; ++g) nh[g] = std::max(0, std::min(W, n[g] - w0));
        auto run = [&](auto hd) {
            constexpr int HD = decltype(hd)::value;
            if (W == 64) attend_window<T, GN, 4, HD>(kr, vr, rb, D, w0, nh, q, m, l, acc, pf);
            else         attend_window<T, GN, 2, HD>(kr, vr, rb, D, w0, nh, q, m, l, acc, pf);
        };
        switch (D) {  // TinyLlama's and Llama's head_dim as constants
        case 64:  run(std::integral_constant<int, 64>()); break;
        case 128: run(std::integral_constant<int, 128>()); break;
        default:  run(std::integral_constant<int, 0>()); break;
        }
        w0 += W;
    }
}


// The heads in chunks of 8, 4, 2 and 1 (for_head_chunks); K/V are read once per chunk.
template <type T>
void attend_group(const char * kr, const char * vr, size_t rb, int D, const head_counts & cnt,
                  int n_heads, const float * q, attn_state & s, next_prefetch & pf) {
    for_head_chunks(n_heads, [&](auto gn, int h) {
        constexpr int GN = decltype(gn)::value;
        int n[GN];
        for (int g = 0; g < GN; ++g) n[g] = cnt(h + g);
        attend_heads<T, GN>(kr, vr, rb, D, n, q + h * D, s.m + h, s.l + h, s.acc + int64_t(h) * D, pf);
    });
}

#endif // GLOAS_PAGE_AVX512

} // namespace

namespace {

// Heads [0, n_heads) of q, counted by cnt, over one page: the register kernel
// where it applies, the portable one otherwise.
void attend_page(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                 const head_counts & cnt, int n_heads, const float * q, attn_state & s, next_prefetch & pf) {
    GLOAS_ASSERT(g.valid_for(t) && layer >= 0 && layer < g.n_layer && kv_head >= 0 && kv_head < g.n_head_kv);
    GLOAS_ASSERT(g.head_dim >= 1);
    const int D = g.head_dim;
    const size_t rb = g.row_bytes(t), rbk = page_row_bytes(g, t, 0), rbv = page_row_bytes(g, t, 1);
    const char * base = static_cast<const char *>(page);
    const char * kr = base + page_row_offset(g, t, layer, 0, kv_head * D);  // (D) rows of P tokens
    const char * vr = base + page_row_offset(g, t, layer, 1, kv_head * D);
    if (t == type::Q4_KIVI) {
#if defined(GLOAS_PAGE_AVX512)
        if (D <= MAX_D) return attend_kivi(kr, vr, rbk, rbv, D, cnt, n_heads, q, s, pf);
#elif defined(GLOAS_PAGE_AVX2)
        return attend_kivi(kr, vr, rbk, rbv, D, cnt, n_heads, q, s, pf);
#elif defined(GLOAS_NEON)
        if (attend_kivi_neon(kr, vr, rbk, rbv, D, cnt, n_heads, q, s, pf)) return;
#endif
        return attend_int_portable(t, kr, vr, rbk, rbv, D, cnt, n_heads, q, s, pf);
    }
#if defined(GLOAS_PAGE_AVX512)
    if (D <= MAX_D) {
        switch (t) {
        case type::F32:  attend_group<type::F32>(kr, vr, rb, D, cnt, n_heads, q, s, pf); return;
        case type::F16:  attend_group<type::F16>(kr, vr, rb, D, cnt, n_heads, q, s, pf); return;
#if defined(GLOAS_PAGE_VNNI)
        case type::Q8_0: attend_int(t, kr, vr, rb, D, cnt, n_heads, q, s, pf); return;
#endif
        case type::Q4_0: attend_int(t, kr, vr, rb, D, cnt, n_heads, q, s, pf); return;
        default: break;  // BF16, and Q8_0 without VNNI / VBMI: the portable kernels
        }
    }
#elif defined(GLOAS_PAGE_AVX2)
    if (t == type::Q8_0 || t == type::Q4_0) return attend_int(t, kr, vr, rb, D, cnt, n_heads, q, s, pf);
    if ((t == type::F32 || t == type::F16 || t == type::BF16) && g.page_tokens % 8 == 0)
        return attend_float(t, kr, vr, rb, D, cnt, n_heads, q, s, pf);
#endif
#if defined(GLOAS_NEON)
    if ((t == type::Q8_0 || t == type::Q4_0) && attend_int_neon(t, kr, vr, rb, D, cnt, n_heads, q, s, pf)) return;
    if ((t == type::F16 || t == type::F32) && attend_float_neon(t, kr, vr, rb, D, cnt, n_heads, q, s, pf)) return;
#endif
    if (t == type::Q8_0 || t == type::Q4_0) attend_int_portable(t, kr, vr, rb, rb, D, cnt, n_heads, q, s, pf);
    else attend_portable(t, kr, vr, rb, D, cnt, n_heads, q, s, pf);
}

// The scalar twin of attend_page: the same algorithm per type.
void attend_page_scalar(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                        const head_counts & cnt, int n_heads, const float * q, attn_state & s) {
    GLOAS_ASSERT(g.valid_for(t) && layer >= 0 && layer < g.n_layer && kv_head >= 0 && kv_head < g.n_head_kv);
    GLOAS_ASSERT(g.head_dim >= 1);
    const int D = g.head_dim;
    const size_t rb = g.row_bytes(t);
    const char * base = static_cast<const char *>(page);
    const char * kr = base + page_row_offset(g, t, layer, 0, kv_head * D);
    const char * vr = base + page_row_offset(g, t, layer, 1, kv_head * D);
    next_prefetch none;
    if (t == type::Q8_0 || t == type::Q4_0 || t == type::Q4_KIVI)
        attend_int_portable(t, kr, vr, page_row_bytes(g, t, 0), page_row_bytes(g, t, 1), D, cnt, n_heads, q, s, none);
    else attend_portable(t, kr, vr, rb, D, cnt, n_heads, q, s, none);
}

// The prefetcher of the piece (layer, kv_head) of page `next` of type tn
// (none where next is null).
next_prefetch prefetch_of(const page_geometry & g, const void * next, type tn, int32_t layer, int32_t kv_head) {
    if (!next) return next_prefetch();
    GLOAS_ASSERT(g.valid_for(tn));
    const int D = g.head_dim;
    const char * base = static_cast<const char *>(next);
    return next_prefetch(base + page_row_offset(g, tn, layer, 0, kv_head * D),
                         base + page_row_offset(g, tn, layer, 1, kv_head * D), page_row_bytes(g, tn, 0),
                         page_row_bytes(g, tn, 1), D);
}

} // namespace

#if GLOAS_ISA_BASE
void page_attend(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                 int32_t n, const float * q, int32_t group, attn_state & s) {
    page_attend(g, t, page, layer, kv_head, n, q, group, s, nullptr, t);
}
#endif

GLOAS_ISA_BEGIN

void page_attend(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                 int32_t n, const float * q, int32_t group, attn_state & s, const void * next, type t_next) {
    GLOAS_ASSERT(n >= 1 && n <= g.page_tokens && group >= 1);
    next_prefetch pf = prefetch_of(g, next, t_next, layer, kv_head);
    attend_page(g, t, page, layer, kv_head, head_counts{&n, group}, group, q, s, pf);
}

void page_attend_multi(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                       int32_t n_q, const int32_t * n_valid, const float * q, int32_t group, attn_state & s) {
    GLOAS_ASSERT(n_q >= 1 && group >= 1);
    for (int32_t i = 0; i < n_q; ++i) GLOAS_ASSERT(n_valid[i] >= 0 && n_valid[i] <= g.page_tokens);
    next_prefetch none;
    attend_page(g, t, page, layer, kv_head, head_counts{n_valid, group}, n_q * group, q, s, none);
}

void page_attend_scalar(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                        int32_t n, const float * q, int32_t group, attn_state & s) {
    GLOAS_ASSERT(n >= 1 && n <= g.page_tokens && group >= 1);
    attend_page_scalar(g, t, page, layer, kv_head, head_counts{&n, group}, group, q, s);
}

void page_attend_multi_scalar(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                              int32_t n_q, const int32_t * n_valid, const float * q, int32_t group, attn_state & s) {
    GLOAS_ASSERT(n_q >= 1 && group >= 1);
    for (int32_t i = 0; i < n_q; ++i) GLOAS_ASSERT(n_valid[i] >= 0 && n_valid[i] <= g.page_tokens);
    attend_page_scalar(g, t, page, layer, kv_head, head_counts{n_valid, group}, n_q * group, q, s);
}

GLOAS_ISA_END

#if GLOAS_ISA_BASE
void page_prefetch_first(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head) {
    const char * p = static_cast<const char *>(page);
    __builtin_prefetch(p + page_row_offset(g, t, layer, 0, kv_head * g.head_dim), 0, 1);
    __builtin_prefetch(p + page_row_offset(g, t, layer, 1, kv_head * g.head_dim), 0, 1);
}

void page_prefetch(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head) {
    for (int kind = 0; kind < 2; ++kind) {
        const size_t bytes = size_t(g.head_dim) * page_row_bytes(g, t, kind);
        const char * r = static_cast<const char *>(page) + page_row_offset(g, t, layer, kind, kv_head * g.head_dim);
        for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(r + o, 0, 3);
    }
}
#endif

} // namespace gloas
