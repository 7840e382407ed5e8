// page_attend / page_attend_multi: attention of query heads over one K/V
// page (kvcache/page.h), K and V read in registers, never expanded in memory.
//
// Q8_0 pages run the integer algorithm of page.h, per window of 32 tokens
// (one block of every row) and chunk of GN query heads:
//   scores  the query times the block's K scales, quantized to int8 per head;
//           4 K channels x 16 tokens interleaved into one vector by a byte
//           permutation (K + 128 as dpbusd's unsigned operand), one VNNI
//           dpbusd per head and 16 tokens adds 4 channels
//   output  the probabilities quantized to u8 per head; V tiles of 16
//           channels x 32 tokens transposed as dwords (4 tokens of one
//           channel) by permutations, one dpbusd per head and 4 tokens adds
//           16 channels, times V's scales at the end
// Q4_0 pages run the same algorithm with a 16-bit query and 15-bit
// probabilities (page.h; 8 bits cost 0.3% perplexity on stories260K on top
// of Q4_0's own 1.8%, past the 2% allowed), per window and chunk of heads:
//   scores  the query as int16 per head; 2 K channels x 16 tokens as words
//           (nibble - 8) by byte unpacks, one vpdpwssd per head and 16
//           tokens adds 2 channels (32 products, twice an FMA's)
//   output  the probabilities as int16; V tiles of 16 channels x 32 tokens
//           transposed by permutations into words (2 tokens of one channel,
//           the nibbles), one vpdpwssd per head and 2 tokens adds 16
//           channels; the nibbles' offset 8 comes off as 8 * sum_t u_t
// (without VNNI, vpmaddwd + vpaddd: the Q4_0 kernel needs AVX-512 BW only).
// attend_int_portable is the scalar twin of both (and the kernel of builds
// without them: no AVX-512, or for Q8_0 no VNNI / VBMI): the same integers
// and the same float operations.
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
// 16/GN channels) in registers and reduce them together. Other builds (AVX2,
// scalar), BF16 pages and head_dim > 256 run a portable kernel that
// dequantizes one 32-token block of a row at a time into a stack buffer; the
// compiler vectorizes its loops. The float and the Q4_0 register kernels are
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
#include "kvcache/page.h"

#include "quant/blocks.h"
#include "quant/fp16.h"
#include "quant/simd.h"
#include "tensor/error.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__F16C__)
#define GLOAS_PAGE_AVX512 1
#if defined(__AVX512VNNI__) && defined(__AVX512VBMI__)
#define GLOAS_PAGE_VNNI 1
#endif
#endif

namespace gloas {

namespace {

// Windows of the portable kernel: one block of the block types.
constexpr int PW = 32;

// Tokens [w0, w0 + nw) of one row as floats in out: the float types read only
// those tokens, the block types dequantize the whole block of 32 at w0.
inline void load_window(const type_traits & tt, const char * row, int w0, int nw, float * out) {
    if (tt.is_quantized) tt.to_float(row + size_t(w0 / tt.blck_size) * tt.type_size, out, PW);
    else                 tt.to_float(row + size_t(w0) * tt.type_size, out, nw);
}

// Tokens of each query head: head h (of n_heads, `group` per query token)
// reads the first n_valid[h / group] tokens of the page.
struct head_counts {
    const int32_t * n_valid;
    int32_t group;
    int operator()(int h) const { return n_valid[h / group]; }
};

// The piece (K rows, V rows) of the page attended next, streamed into the
// cache while the kernel works on the current piece: as the kernel reads n
// rows of its K (V) it calls k_rows(n) (v_rows(n)), which prefetches as many
// bytes of the next piece's K (V) rows, one line ahead, so the next piece
// arrives at the pace the current one is read. A piece of F16 rows is 128
// lines in 2 OS pages: one burst of prefetches would fill the miss buffers
// and stall the core; spread over the work they overlap it. A default-
// constructed one (no next page) prefetches nothing; past the piece's end
// nothing either, so only the first chunk of heads and window of a call
// prefetch. Kernels copy it into a local and back, to keep it in registers.
class next_prefetch {
public:
    next_prefetch() = default;
    // kr, vr: the next piece's D rows of K and of V, rb bytes each.
    next_prefetch(const char * kr, const char * vr, size_t rb, int D)
        : k_(line_of(kr)), v_(line_of(vr)), k_end_(kr + size_t(D) * rb), v_end_(vr + size_t(D) * rb),
          k_due_(size_t(kr - k_) + 64), v_due_(size_t(vr - v_) + 64), rb_(rb) {}
    void k_rows(int n) { fetch(k_, k_end_, k_due_, size_t(n) * rb_); }
    void v_rows(int n) { fetch(v_, v_end_, v_due_, size_t(n) * rb_); }

private:
    static const char * line_of(const char * p) { return p - (reinterpret_cast<uintptr_t>(p) & 63); }
    static void fetch(const char *& cur, const char * end, size_t & due, size_t bytes) {
        for (due += bytes; due >= 64 && cur < end; due -= 64, cur += 64) __builtin_prefetch(cur, 0, 3);
    }
    const char * k_ = nullptr, * v_ = nullptr;          // next line to prefetch
    const char * k_end_ = nullptr, * v_end_ = nullptr;  // end of the next piece's K and V rows
    size_t k_due_ = 0, v_due_ = 0;                      // bytes due to be prefetched
    size_t rb_ = 0;                                     // the next piece's row bytes
};

// Any type, head_dim and number of heads: windows of 32 tokens, one
// online-softmax step per window and head (none where a head has no token).
void attend_portable(type t, const char * kr, const char * vr, size_t rb, int D, const head_counts & cnt,
                     int n_heads, const float * q, attn_state & s, next_prefetch & pf) {
    const type_traits & tt = traits(t);
    GLOAS_ASSERT(!tt.is_quantized || tt.blck_size == PW);
    int n_max = 0;
    for (int h = 0; h < n_heads; ++h) n_max = std::max(n_max, cnt(h));
    thread_local std::vector<float> sbuf;
    sbuf.resize(size_t(n_heads) * PW);
    float * sc = sbuf.data();  // (n_heads, PW) scores, then probabilities
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

constexpr int IW = 32;                 // tokens per window: one block of every row
constexpr float Q_TINY = 1e-30f;       // a head's largest |q_c d_c| or window probability below this counts as 0

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

inline const int_algo & int_algo_of(type t) { return t == type::Q4_0 ? INT_Q4_0 : INT_Q8_0; }

// Value i (0..31) of a Q8_0 block (int8) or a Q4_0 block (nibble - 8; low
// nibbles are values 0..15, high nibbles 16..31).
inline int block_value(type t, const char * b, int i) {
    if (t == type::Q4_0) return (i < 16 ? int(uint8_t(b[2 + i]) & 15) : int(uint8_t(b[2 + i - 16]) >> 4)) - 8;
    return int(int8_t(b[2 + i]));
}

// Scalar twin of the VNNI kernels, any head_dim and number of heads; t is
// Q8_0 or Q4_0.
void attend_int_portable(type t, const char * kr, const char * vr, size_t rb, int D, const head_counts & cnt,
                         int n_heads, const float * q, attn_state & s, next_prefetch & pf) {
    GLOAS_ASSERT(t == type::Q8_0 || t == type::Q4_0);
    GLOAS_ASSERT(t == type::Q8_0 || D <= 4096);  // Q4_0's int16 query: |sum_c qi_c ku_c| < 2^31
    const size_t bs = traits(t).type_size;
    const int_algo & A = int_algo_of(t);
    const float qmax = float(A.q_max), pmax = float(A.p_max);
    int n_max = 0;
    for (int h = 0; h < n_heads; ++h) n_max = std::max(n_max, cnt(h));
    thread_local std::vector<float> fbuf;
    thread_local std::vector<int> ibuf;
    fbuf.resize(size_t(3 * D));
    ibuf.resize(size_t(2 * D * IW + D + IW));
    float * dk = fbuf.data();        // (D) K scales of the window
    float * dv = dk + D;             // (D) V scales
    float * qf = dv + D;             // (D) one head's q_c * dk_c
    int * ku = ibuf.data();          // (D, IW) K values + k_off
    int * vv = ku + D * IW;          // (D, IW) V values + v_off
    int * qi = vv + D * IW;          // (D) one head's integer query
    int * pu = qi + D;               // (IW) one head's quantized probabilities
    for (int w0 = 0; w0 < n_max; w0 += IW) {
        const size_t boff = size_t(w0 / IW) * bs;
        for (int d = 0; d < D; ++d) {
            pf.k_rows(1);
            pf.v_rows(1);
            const char * kb = kr + size_t(d) * rb + boff, * vb = vr + size_t(d) * rb + boff;
            dk[d] = block_scale(kb);
            dv[d] = block_scale(vb);
            for (int i = 0; i < IW; ++i) {
                ku[d * IW + i] = block_value(t, kb, i) + A.k_off;
                vv[d * IW + i] = block_value(t, vb, i) + A.v_off;
            }
        }
        for (int h = 0; h < n_heads; ++h) {
            const int nh = std::max(0, std::min(IW, cnt(h) - w0));
            if (nh == 0) continue;
            // query: int8 per head, scale sq
            float amax = 0.0f;
            for (int d = 0; d < D; ++d) {
                qf[d] = q[int64_t(h) * D + d] * dk[d];
                amax = std::max(amax, std::fabs(qf[d]));
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
                sc[i] = float(a[i] - A.k_off * qsum) * sq;
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

constexpr int MAX_D = 256;  // head_dim of the register kernel; beyond it the portable one

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

// r lane g = op over the 16 lanes of a[g], g = 0..7 (lanes 8..15: unspecified):
// pairs and quads within 128-bit lanes, then across them (24 instructions,
// against 8 dependent chains of ~9 for one reduction per vector).
template <class Op>
inline __m512 hreduce8(const __m512 * a, Op op) {
    __m512 c[2];  // c[k] lane 4L+j: op over 128-bit lane L of a[4k+j]
    for (int k = 0; k < 2; ++k) {
        const __m512 * x = a + 4 * k;
        const __m512 u01 = op(_mm512_unpacklo_ps(x[0], x[1]), _mm512_unpackhi_ps(x[0], x[1]));
        const __m512 u23 = op(_mm512_unpacklo_ps(x[2], x[3]), _mm512_unpackhi_ps(x[2], x[3]));
        c[k] = op(_mm512_shuffle_ps(u01, u23, _MM_SHUFFLE(1, 0, 1, 0)), _mm512_shuffle_ps(u01, u23, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    // f lane 4B+j: a[j] (B = 0, 1) or a[4+j] (B = 2, 3) over 128-bit lanes {B % 2, B % 2 + 2}
    const __m512 f = op(_mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(1, 0, 1, 0)),
                        _mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(3, 2, 3, 2)));
    return op(_mm512_shuffle_f32x4(f, f, _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_f32x4(f, f, _MM_SHUFFLE(3, 1, 3, 1)));
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

inline __m512i load_idx(const void * p) { return _mm512_load_si512(p); }

#if defined(GLOAS_PAGE_VNNI)

// Index vectors of the permutations (see attend_window_int).
struct int_tables {
    alignas(64) uint8_t k8[2][64];     // K: byte 4t+j <- token 16h + t of row j, rows [x0|x1] and [x2|x3]
    alignas(64) int32_t v8a[2][16];    // V stage 1 (half h): lane 4j+i <- dword 4h+j of row i of 4 rows
    alignas(64) int32_t v8b[2][16];    // stage 2 (e): lane 8jj+i <- dword 2e+jj of row i of 8 rows
    alignas(64) int32_t last[2][16];   // last stage (jj): lane i <- dword jj of row i of 16 rows
};

constexpr int_tables make_int_tables() {
    int_tables x{};
    for (int h = 0; h < 2; ++h)
        for (int t = 0; t < 16; ++t)
            for (int j = 0; j < 4; ++j) x.k8[h][4 * t + j] = uint8_t(32 * j + 16 * h + t);
    for (int h = 0; h < 2; ++h)  // two rows of 8 dwords per source: row i at lane 8i (i = 0..3 over a, b)
        for (int j = 0; j < 4; ++j)
            for (int i = 0; i < 4; ++i) x.v8a[h][4 * j + i] = 8 * i + j + 4 * h;
    for (int e = 0; e < 2; ++e)  // 4 rows x dwords 4h..4h+3 per source, [dword][row]
        for (int jj = 0; jj < 2; ++jj)
            for (int i = 0; i < 8; ++i) x.v8b[e][8 * jj + i] = (i < 4 ? 0 : 16) + 4 * (2 * e + jj) + i % 4;
    for (int jj = 0; jj < 2; ++jj)  // 8 rows x 2 dwords per source, [dword][row]
        for (int i = 0; i < 16; ++i) x.last[jj][i] = (i < 8 ? 0 : 16) + 8 * jj + i % 8;
    return x;
}

constexpr int_tables INT_TABLES = make_int_tables();

inline __m512i load2x32(const char * a, const char * b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(a))),
                              _mm256_loadu_si256(reinterpret_cast<const __m256i *>(b)), 1);
}

// V tile: o[j] lane i = dword j (tokens 4j..4j+3) of row d0 + i, j = 0..7;
// `row(i)` is the block (its scale first) of row d0 + i.
template <class Row>
inline void load_v_tile(const Row & row, __m512i * o) {
    const int_tables & X = INT_TABLES;
    __m512i r[8];
    for (int k = 0; k < 8; ++k) r[k] = load2x32(row(2 * k) + 2, row(2 * k + 1) + 2);
    __m512i a[2][4];  // a[h][m]: rows 4m..4m+3, dwords 4h..4h+3, [dword][row]
    for (int m = 0; m < 4; ++m)
        for (int h = 0; h < 2; ++h) a[h][m] = _mm512_permutex2var_epi32(r[2 * m], load_idx(X.v8a[h]), r[2 * m + 1]);
    for (int h = 0; h < 2; ++h)
        for (int e = 0; e < 2; ++e) {
            // rows 8M..8M+7, dwords 4h+2e, 4h+2e+1
            const __m512i b0 = _mm512_permutex2var_epi32(a[h][0], load_idx(X.v8b[e]), a[h][1]);
            const __m512i b1 = _mm512_permutex2var_epi32(a[h][2], load_idx(X.v8b[e]), a[h][3]);
            for (int jj = 0; jj < 2; ++jj) o[4 * h + 2 * e + jj] = _mm512_permutex2var_epi32(b0, load_idx(X.last[jj]), b1);
        }
}

// One online-softmax step of GN query heads over the window of 32 tokens at
// w0 (one block of every row) of a Q8_0 page, head g reading its first
// nh[g] (0..32) tokens: the integer algorithm of page.h, equal to
// attend_int_portable. q (GN, D); m, l (GN); acc (GN, D).
template <int GN>
void attend_window_int(const char * kr, const char * vr, size_t rb, int D, int w0, const int * nh,
                       const float * q, float * m, float * l, float * acc, next_prefetch & pf_io) {
    static_assert(GN == 1 || GN == 2 || GN == 4 || GN == 8, "chunks of 1, 2, 4 or 8 heads");
    constexpr size_t BS = sizeof(block_q8_0);
    constexpr int OFF = 128;  // K as dpbusd's unsigned operand: k + 128
    const int_tables & X = INT_TABLES;
    const size_t boff = size_t(w0 / IW) * BS;
    const int Dp = (D + 15) / 16 * 16;
    auto krow = [&](int c) { return kr + size_t(std::min(c, D - 1)) * rb + boff; };  // rows past D: any row (weight 0)
    auto vrow = [&](int c) { return vr + size_t(std::min(c, D - 1)) * rb + boff; };

    // block scales, zero past D: 16 rows' first 4 bytes (scale, 2 values) per gather
    alignas(64) float dk[MAX_D], dv[MAX_D];
    {
        const __m512i step = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                                _mm512_set1_epi32(int(rb)));
        for (int c0 = 0; c0 < D; c0 += 16) {
            const __mmask16 cm = simd::tail_mask(D - c0);
            const __m512i idx = _mm512_add_epi32(step, _mm512_set1_epi32(int(size_t(c0) * rb)));
            const __m512i k = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), cm, idx, kr + boff, 1);
            const __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), cm, idx, vr + boff, 1);
            _mm512_store_ps(dk + c0, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(k)));
            _mm512_store_ps(dv + c0, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v)));
        }
    }

    // query: q_c * dk_c as int8 per head (qb), scale sq, sum qsum
    alignas(64) int8_t qb[GN][MAX_D];
    alignas(64) float sq[16];
    alignas(64) int32_t qsum[16];
    for (int g = 0; g < GN; ++g) {
        alignas(64) float qf[MAX_D];
        __m512 amax = _mm512_setzero_ps();
        for (int c0 = 0; c0 < Dp; c0 += 16) {
            const __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(simd::tail_mask(D - c0), q + g * D + c0), _mm512_load_ps(dk + c0));
            _mm512_store_ps(qf + c0, x);
            amax = _mm512_max_ps(amax, _mm512_abs_ps(x));
        }
        const float am = _mm512_reduce_max_ps(amax);
        const __m512 inv = _mm512_set1_ps(am >= Q_TINY ? 127.0f / am : 0.0f);
        sq[g] = am / 127.0f;
        __m512i sum = _mm512_setzero_si512();
        for (int c0 = 0; c0 < Dp; c0 += 16) {
            const __m512i x = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_load_ps(qf + c0), inv));
            sum = _mm512_add_epi32(sum, x);
            _mm_store_si128(reinterpret_cast<__m128i *>(qb[g] + c0), _mm512_cvtsepi32_epi8(x));
        }
        qsum[g] = _mm512_reduce_add_epi32(sum);
    }

    // scores: 4 channels at a time, tokens 0..15 in slo, 16..31 in shi
    next_prefetch pf = pf_io;
    __m512i slo[GN], shi[GN];
    for (int g = 0; g < GN; ++g) slo[g] = shi[g] = _mm512_setzero_si512();
    for (int c = 0; c < D; c += 4) {
        pf.k_rows(4);
        const __m512i a = load2x32(krow(c) + 2, krow(c + 1) + 2), b = load2x32(krow(c + 2) + 2, krow(c + 3) + 2);
        const __m512i x80 = _mm512_set1_epi8(char(0x80));
        const __m512i klo = _mm512_xor_si512(_mm512_permutex2var_epi8(a, load_idx(X.k8[0]), b), x80);
        const __m512i khi = _mm512_xor_si512(_mm512_permutex2var_epi8(a, load_idx(X.k8[1]), b), x80);
        #pragma GCC unroll 8
        for (int g = 0; g < GN; ++g) {
            int32_t w;
            std::memcpy(&w, qb[g] + c, 4);
            const __m512i qw = _mm512_set1_epi32(w);
            slo[g] = _mm512_dpbusd_epi32(slo[g], klo, qw);
            shi[g] = _mm512_dpbusd_epi32(shi[g], khi, qw);
        }
    }
    alignas(64) float p[GN * IW];  // (GN, 32) scores
    for (int g = 0; g < GN; ++g) {
        const __m512i o = _mm512_set1_epi32(OFF * qsum[g]);
        const __m512 sv = _mm512_set1_ps(sq[g]);
        _mm512_store_ps(p + g * IW, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(slo[g], o)), sv));
        _mm512_store_ps(p + g * IW + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(shi[g], o)), sv));
    }

    // online softmax; per-head scalars as lanes of one vector
    const __mmask16 hm = __mmask16((1u << GN) - 1);
    alignas(64) float mx[16], corr[16], invp[16], psc[16];
    __mmask16 mh[GN][2];
    for (int g = 0; g < GN; ++g) {
        __m512 x = _mm512_set1_ps(-INFINITY);
        for (int k = 0; k < 2; ++k) {
            mh[g][k] = simd::tail_mask(std::max(0, std::min(16, nh[g] - 16 * k)));
            x = _mm512_mask_max_ps(x, mh[g][k], x, _mm512_load_ps(p + g * IW + 16 * k));
        }
        mx[g] = _mm512_reduce_max_ps(x);  // -inf for a head with no token here
    }
    const __m512 m_old = _mm512_maskz_loadu_ps(hm, m);
    const __m512 mxv = _mm512_maskz_loadu_ps(hm, mx);
    const __m512 m_new = _mm512_max_ps(m_old, mxv);
    const __mmask16 has = _mm512_mask_cmp_ps_mask(hm, mxv, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
    _mm512_store_ps(corr, _mm512_mask_mov_ps(_mm512_set1_ps(1.0f), has, simd::exp_ps(_mm512_sub_ps(m_old, m_new))));
    const __m512 pm = _mm512_maskz_mov_ps(has, simd::exp_ps(_mm512_sub_ps(mxv, m_new)));
    _mm512_store_ps(invp, _mm512_maskz_div_ps(_mm512_cmp_ps_mask(pm, _mm512_set1_ps(Q_TINY), _CMP_GE_OQ),
                                              _mm512_set1_ps(255.0f), pm));
    const __m512 pscv = _mm512_div_ps(pm, _mm512_set1_ps(255.0f));
    _mm512_store_ps(psc, pscv);
    _mm512_store_ps(mx, m_new);
    alignas(64) uint8_t pb[GN][IW];  // u8 probabilities
    alignas(64) int32_t psum[16] = {};
    for (int g = 0; g < GN; ++g) {
        const __m512 mv = _mm512_set1_ps(mx[g]), iv = _mm512_set1_ps(invp[g]);
        __m512i sum = _mm512_setzero_si512();
        for (int k = 0; k < 2; ++k) {
            const __m512 e = _mm512_maskz_mov_ps(mh[g][k], simd::exp_ps(_mm512_sub_ps(_mm512_load_ps(p + g * IW + 16 * k), mv)));
            const __m512i u = _mm512_cvtps_epi32(_mm512_mul_ps(e, iv));
            sum = _mm512_add_epi32(sum, u);
            _mm_store_si128(reinterpret_cast<__m128i *>(pb[g] + 16 * k), _mm512_cvtusepi32_epi8(u));
        }
        psum[g] = _mm512_reduce_add_epi32(sum);
    }
    const __m512 lsum = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(psum)), pscv);
    _mm512_mask_storeu_ps(l, hm, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(hm, l), _mm512_load_ps(corr), lsum));
    _mm512_mask_storeu_ps(m, hm, m_new);

    // output: tiles of 16 channels
    for (int d0 = 0; d0 < D; d0 += 16) {
        __m512i vt[8];
        pf.v_rows(16);
        load_v_tile([&](int i) { return vrow(d0 + i); }, vt);
        __m512i o[GN];
        for (int g = 0; g < GN; ++g) o[g] = _mm512_setzero_si512();
        const uint8_t * pbt = pb[0];
        asm("" : "+r"(pbt));  // no hoisting of the broadcasts out of the tile loop (see attend_window_q4)
        #pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) {
            #pragma GCC unroll 8
            for (int g = 0; g < GN; ++g) {
                int32_t w;
                std::memcpy(&w, pbt + g * IW + 4 * j, 4);
                o[g] = _mm512_dpbusd_epi32(o[g], _mm512_set1_epi32(w), vt[j]);
            }
        }
        const __mmask16 dm = simd::tail_mask(D - d0);
        const __m512 dvv = _mm512_load_ps(dv + d0);
        for (int g = 0; g < GN; ++g) {
            const __m512 w = _mm512_mul_ps(dvv, _mm512_set1_ps(psc[g]));
            const __m512 x = _mm512_mul_ps(_mm512_cvtepi32_ps(o[g]), w);
            float * ag = acc + g * D + d0;
            _mm512_mask_storeu_ps(ag, dm, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(dm, ag), _mm512_set1_ps(corr[g]), x));
        }
    }
    pf_io = pf;
}

#endif // GLOAS_PAGE_VNNI

// acc + the sums of products of the word pairs of a and b: vpdpwssd, or
// without VNNI vpmaddwd and vpaddd (the same int32 sums; no pair here is
// (-32768, -32768) twice, where vpmaddwd would wrap)
inline __m512i dp_words(__m512i acc, __m512i a, __m512i b) {
#if defined(__AVX512VNNI__)
    return _mm512_dpwssd_epi32(acc, a, b);
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(a, b));
#endif
}

// Index vectors of the Q4_0 kernel's permutations (see attend_window_q4).
struct q4_tables {
    alignas(64) int32_t v4a[2][16];    // V stage 1 (e): lane 8jj+i <- dword 2e+jj of row i of 8 rows
    alignas(64) int32_t v4b[2][16];    // stage 2 (jj): lane i <- dword jj of row i of 16 rows
    alignas(64) uint16_t sc[2][32];    // scales of 18-byte rows: lane 8h+i <- word 9i (the scale of row i)
    alignas(64) uint16_t w16[32];      // word i <- the low word of dword i of 2 vectors
    alignas(64) uint16_t pw[32];       // token quad j's words [4j, 4j + 2, 4j + 1, 4j + 3] <- low words of dwords of 2 vectors
};

constexpr q4_tables make_q4_tables() {
    q4_tables x{};
    for (int e = 0; e < 2; ++e)  // 4 rows x 4 dwords per source, [row][dword]
        for (int jj = 0; jj < 2; ++jj)
            for (int i = 0; i < 8; ++i) x.v4a[e][8 * jj + i] = (i < 4 ? 0 : 16) + 4 * (i % 4) + 2 * e + jj;
    for (int jj = 0; jj < 2; ++jj)  // 8 rows x 2 dwords per source, [dword][row]
        for (int i = 0; i < 16; ++i) x.v4b[jj][i] = (i < 8 ? 0 : 16) + 8 * jj + i % 8;
    for (int h = 0; h < 2; ++h)
        for (int i = 0; i < 8; ++i) x.sc[h][8 * h + i] = uint16_t(9 * i);
    for (int i = 0; i < 32; ++i) x.w16[i] = uint16_t(2 * i);
    for (int j = 0; j < 8; ++j) {
        const int t[4] = {4 * j, 4 * j + 2, 4 * j + 1, 4 * j + 3};
        for (int k = 0; k < 4; ++k) x.pw[4 * j + k] = uint16_t(2 * t[k]);
    }
    return x;
}

constexpr q4_tables Q4_TABLES = make_q4_tables();

// The 16 bytes of nibbles of 4 Q4_0 blocks (their scale first) as the 4
// 128-bit lanes of one vector.
inline __m512i load4x16(const char * a, const char * b, const char * c, const char * d) {
    __m512i x = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i *>(a + 2)));
    x = _mm512_inserti32x4(x, _mm_loadu_si128(reinterpret_cast<const __m128i *>(b + 2)), 1);
    x = _mm512_inserti32x4(x, _mm_loadu_si128(reinterpret_cast<const __m128i *>(c + 2)), 2);
    return _mm512_inserti32x4(x, _mm_loadu_si128(reinterpret_cast<const __m128i *>(d + 2)), 3);
}

// The first n bytes from p (none for n <= 0, at most 64), the rest of the
// vector zero; nothing past them is read.
inline __m512i load_head64(const char * p, int n) {
    return _mm512_maskz_loadu_epi8(n >= 64 ? ~__mmask64(0) : (__mmask64(1) << std::max(0, n)) - 1, p);
}

// Scales (as F32) of `rows` Q4_0 blocks rb bytes apart from b0, 16 at a
// time, zero from `rows` to a multiple of 16: permutations of the bytes
// where the rows are one block each (rb == 18), else gathers.
inline void load_scales(const char * b0, size_t rb, int rows, float * out) {
    if (rb == sizeof(block_q4_0)) {
        const q4_tables & X = Q4_TABLES;
        for (int c0 = 0; c0 < rows; c0 += 16) {
            const char * b = b0 + size_t(c0) * rb;
            const int n = (rows - c0) * int(rb);  // bytes of the rows from b
            const __m512i lo = _mm512_maskz_permutex2var_epi16(0x00ff, load_head64(b, n), load_idx(X.sc[0]),
                                                               load_head64(b + 64, n - 64));
            const __m512i hi = _mm512_maskz_permutex2var_epi16(0xff00, load_head64(b + 8 * rb, n - 8 * int(rb)), load_idx(X.sc[1]),
                                                               load_head64(b + 8 * rb + 64, n - 8 * int(rb) - 64));
            _mm512_store_ps(out + c0, _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_or_si512(lo, hi))));
        }
        return;
    }
    const __m512i step = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(int(rb)));
    for (int c0 = 0; c0 < rows; c0 += 16) {  // 16 rows' first 4 bytes (scale, 2 nibble bytes) per gather
        const __m512i idx = _mm512_add_epi32(step, _mm512_set1_epi32(int(size_t(c0) * rb)));
        const __m512i x = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), simd::tail_mask(rows - c0), idx, b0, 1);
        _mm512_store_ps(out + c0, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(x)));
    }
}

// One online-softmax step of GN query heads over the window of 32 tokens at
// w0 (one block of every row) of a Q4_0 page, head g reading its first
// nh[g] (0..32) tokens: the integer algorithm of page.h for Q4_0, equal to
// attend_int_portable (see the top of this file).
// The per-head maxima and sums are reduced together (hreduce8). HD: the
// head_dim as a constant (loops unrolled, no tails), or 0: any, D_.
// q (GN, D); m, l (GN); acc (GN, D).
template <int GN, int HD>
void attend_window_q4(const char * kr, const char * vr, size_t rb, int D_, int w0, const int * nh,
                      const float * q, float * m, float * l, float * acc, next_prefetch & pf_io) {
    static_assert(HD >= 0 && HD <= MAX_D, "head_dim");
    const int D = HD > 0 ? HD : D_;
    static_assert(GN == 1 || GN == 2 || GN == 4 || GN == 8, "chunks of 1, 2, 4 or 8 heads");
    constexpr size_t BS = sizeof(block_q4_0);
    constexpr int OFF = 8;             // nibble - 8 is the value
    constexpr float QMAX = 32767.0f;   // int16 query
    constexpr float PMAX = 32767.0f;   // 15-bit probabilities
    const q4_tables & X = Q4_TABLES;
    const size_t boff = size_t(w0 / IW) * BS;
    const int Dp = (D + 15) / 16 * 16;
    const __mmask16 hm = __mmask16((1u << GN) - 1);
    const auto max_op = [](__m512 a, __m512 b) { return _mm512_max_ps(a, b); };
    const auto add_op = [](__m512 a, __m512 b) { return _mm512_add_ps(a, b); };
    // rows c..c+3 of K or V (rows past D: row D - 1, whose weight is 0)
    auto rows4 = [&](const char * r0, int c) {
        if (c + 4 <= D) {
            const char * r = r0 + size_t(c) * rb + boff;
            return load4x16(r, r + rb, r + 2 * rb, r + 3 * rb);
        }
        auto row = [&](int i) { return r0 + size_t(std::min(i, D - 1)) * rb + boff; };
        return load4x16(row(c), row(c + 1), row(c + 2), row(c + 3));
    };
    // rows c, c + 1 of K as words: dword t = (byte t of row c, of row c + 1)
    auto pair_words = [&](const char * r0, int c) {
        auto row = [&](int i) {
            return reinterpret_cast<const __m128i *>(r0 + size_t(std::min(i, D - 1)) * rb + boff + 2);
        };
        const __m128i a = _mm_loadu_si128(row(c)), b = _mm_loadu_si128(row(c + 1));
        return _mm512_cvtepu8_epi16(_mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi8(a, b)),
                                                            _mm_unpackhi_epi8(a, b), 1));
    };

    // block scales, zero past D
    alignas(64) float dk[MAX_D], dv[MAX_D];
    load_scales(kr + boff, rb, D, dk);
    load_scales(vr + boff, rb, D, dv);

    // query: q_c * dk_c as int16 per head (qw, zero past D), scale sq
    alignas(64) int16_t qw[GN][MAX_D];  // (written 32 channels at a time: MAX_D % 32 == 0)
    alignas(64) float sq[16], qinv[16];
    {
        __m512 am[8];
        for (int g = 0; g < GN; ++g) {
            __m512 a = _mm512_setzero_ps();
            for (int c0 = 0; c0 < D; c0 += 16)
                a = _mm512_max_ps(a, _mm512_abs_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(simd::tail_mask(D - c0), q + g * D + c0),
                                                                 _mm512_load_ps(dk + c0))));
            am[g] = a;
        }
        for (int g = GN; g < 8; ++g) am[g] = am[0];
        const __m512 amv = hreduce8(am, max_op);  // lane g: head g's largest |q_c dk_c|
        _mm512_store_ps(qinv, _mm512_maskz_div_ps(_mm512_cmp_ps_mask(amv, _mm512_set1_ps(Q_TINY), _CMP_GE_OQ),
                                                  _mm512_set1_ps(QMAX), amv));
        _mm512_store_ps(sq, _mm512_div_ps(amv, _mm512_set1_ps(QMAX)));
        // |q_c dk_c| * (32767 / amax) rounds to at most 32767: the low words are the
        // int16 values, gathered by one permutation per 32 channels
        for (int g = 0; g < GN; ++g) {
            const __m512 inv = _mm512_set1_ps(qinv[g]);
            auto qint = [&](int c0) {
                const __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(simd::tail_mask(D - c0), q + g * D + c0), _mm512_load_ps(dk + c0));
                return _mm512_cvtps_epi32(_mm512_mul_ps(x, inv));
            };
            for (int c0 = 0; c0 < Dp; c0 += 32) {
                const __m512i lo = qint(c0), hi = c0 + 16 < Dp ? qint(c0 + 16) : _mm512_setzero_si512();
                _mm512_store_si512(qw[g] + c0, _mm512_permutex2var_epi16(lo, load_idx(X.w16), hi));
            }
        }
    }

    // scores: 4 channels at a time (2 pairs), tokens 0..15 in slo, 16..31 in shi
    next_prefetch pf = pf_io;
    __m512i slo[GN], shi[GN];
    for (int g = 0; g < GN; ++g) slo[g] = shi[g] = _mm512_setzero_si512();
    for (int c = 0; c < D; c += 4) {
        pf.k_rows(4);
        const __m512i nib = _mm512_set1_epi16(15), off = _mm512_set1_epi16(OFF);
        __m512i klo[2], khi[2];  // pair h: dword t = words (row c + 2h, row c + 2h + 1) of token t (klo) or 16 + t (khi)
        for (int h = 0; h < 2; ++h) {
            const __m512i w = pair_words(kr, c + 2 * h);
            klo[h] = _mm512_sub_epi16(_mm512_and_si512(w, nib), off);
            khi[h] = _mm512_sub_epi16(_mm512_srli_epi16(w, 4), off);
        }
        #pragma GCC unroll 8
        for (int g = 0; g < GN; ++g) {
            #pragma GCC unroll 2
            for (int h = 0; h < 2; ++h) {
                int32_t w;
                std::memcpy(&w, qw[g] + c + 2 * h, 4);
                const __m512i qv = _mm512_set1_epi32(w);
                slo[g] = dp_words(slo[g], klo[h], qv);
                shi[g] = dp_words(shi[g], khi[h], qv);
            }
        }
    }

    // online softmax: scores (GN, 32) to probabilities; per-head scalars as lanes of one vector
    alignas(64) float p[GN * IW];
    __mmask16 mh[GN][2];  // tokens of each vector that head g attends
    __m512 xs[8];         // per head, then padded with head 0's
    for (int g = 0; g < GN; ++g) {
        const __m512 sv = _mm512_set1_ps(sq[g]);
        const __m512 s0 = _mm512_mul_ps(_mm512_cvtepi32_ps(slo[g]), sv), s1 = _mm512_mul_ps(_mm512_cvtepi32_ps(shi[g]), sv);
        _mm512_store_ps(p + g * IW, s0);
        _mm512_store_ps(p + g * IW + 16, s1);
        mh[g][0] = simd::tail_mask(std::max(0, std::min(16, nh[g])));
        mh[g][1] = simd::tail_mask(std::max(0, std::min(16, nh[g] - 16)));
        const __m512 x = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), mh[g][0], s0);
        xs[g] = _mm512_mask_max_ps(x, mh[g][1], x, s1);
    }
    for (int g = GN; g < 8; ++g) xs[g] = xs[0];
    alignas(64) float mx[16], corr[16], invp[16], psc[16];
    const __m512 m_old = _mm512_maskz_loadu_ps(hm, m);
    const __m512 mxv = _mm512_maskz_mov_ps(hm, hreduce8(xs, max_op));  // lane g: head g's max, -inf with no token here
    const __m512 m_new = _mm512_max_ps(m_old, mxv);
    const __mmask16 has = _mm512_mask_cmp_ps_mask(hm, mxv, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
    _mm512_store_ps(corr, _mm512_mask_mov_ps(_mm512_set1_ps(1.0f), has, simd::exp_ps(_mm512_sub_ps(m_old, m_new))));
    const __m512 pm = _mm512_maskz_mov_ps(has, simd::exp_ps(_mm512_sub_ps(mxv, m_new)));
    _mm512_store_ps(invp, _mm512_maskz_div_ps(_mm512_cmp_ps_mask(pm, _mm512_set1_ps(Q_TINY), _CMP_GE_OQ),
                                              _mm512_set1_ps(PMAX), pm));
    const __m512 pscv = _mm512_div_ps(pm, _mm512_set1_ps(PMAX));
    _mm512_store_ps(psc, pscv);
    _mm512_store_ps(mx, m_new);
    alignas(64) int16_t pw[GN][IW];  // probabilities, token quad j as words [4j, 4j + 2, 4j + 1, 4j + 3]
    __m512 us[8];                    // per head (sums of integers below 2^24: exact), then padded
    for (int g = 0; g < GN; ++g) {
        const __m512 mv = _mm512_set1_ps(mx[g]), iv = _mm512_set1_ps(invp[g]);
        __m512i u[2];
        for (int k = 0; k < 2; ++k) {
            const __m512 e = _mm512_maskz_mov_ps(mh[g][k], simd::exp_ps(_mm512_sub_ps(_mm512_load_ps(p + g * IW + 16 * k), mv)));
            u[k] = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(e, iv)), _mm512_set1_epi32(32767));
        }
        us[g] = _mm512_add_ps(_mm512_cvtepi32_ps(u[0]), _mm512_cvtepi32_ps(u[1]));
        _mm512_store_si512(pw[g], _mm512_permutex2var_epi16(u[0], load_idx(X.pw), u[1]));
    }
    for (int g = GN; g < 8; ++g) us[g] = us[0];
    const __m512 psumv = hreduce8(us, add_op);  // lane g: head g's sum_t u_t
    alignas(64) int32_t poff[16];               // OFF * sum_t u_t
    _mm512_store_si512(poff, _mm512_mullo_epi32(_mm512_cvtps_epi32(psumv), _mm512_set1_epi32(OFF)));
    _mm512_mask_storeu_ps(l, hm, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(hm, l), _mm512_load_ps(corr), _mm512_mul_ps(psumv, pscv)));
    _mm512_mask_storeu_ps(m, hm, m_new);

    // output: tiles of 16 channels
    for (int d0 = 0; d0 < D; d0 += 16) {
        pf.v_rows(16);
        // va[j], vb[j] lane i: tokens (4j, 4j + 2), (4j + 1, 4j + 3) of channel d0 + i as words (the nibbles)
        __m512i va[8], vb[8];
        {
            __m512i r[4];  // r[k]: rows d0 + 4k .. d0 + 4k + 3
            for (int k = 0; k < 4; ++k) r[k] = rows4(vr, d0 + 4 * k);
            const __m512i nib = _mm512_set1_epi32(0x000f000f);
            for (int e = 0; e < 2; ++e) {
                // rows 8M..8M+7, dwords 2e, 2e + 1
                const __m512i b0 = _mm512_permutex2var_epi32(r[0], load_idx(X.v4a[e]), r[1]);
                const __m512i b1 = _mm512_permutex2var_epi32(r[2], load_idx(X.v4a[e]), r[3]);
                for (int jj = 0; jj < 2; ++jj) {
                    // lane i: dword 2e + jj of row i, bytes b0..b3 = tokens 4j'..4j'+3 (low nibbles), 16 + 4j'.. (high)
                    const int j = 2 * e + jj;
                    const __m512i x = _mm512_permutex2var_epi32(b0, load_idx(X.v4b[jj]), b1);
                    va[j] = _mm512_and_si512(x, nib);
                    vb[j] = _mm512_and_si512(_mm512_srli_epi32(x, 8), nib);
                    va[4 + j] = _mm512_and_si512(_mm512_srli_epi32(x, 4), nib);
                    vb[4 + j] = _mm512_and_si512(_mm512_srli_epi32(x, 12), nib);
                }
            }
        }
        __m512i o[GN];
        for (int g = 0; g < GN; ++g) o[g] = _mm512_setzero_si512();
        // the probabilities as broadcasts from pw: the barrier keeps the
        // compiler from hoisting the GN * 16 broadcasts out of the tile loop
        // into as many 64-byte vectors on the stack, reloaded every tile
        // (about 10% slower per piece, gloas-kernel-bench --pages)
        const int16_t * pwt = pw[0];
        asm("" : "+r"(pwt));
        #pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) {
            #pragma GCC unroll 8
            for (int g = 0; g < GN; ++g) {
                int32_t wa, wb;
                std::memcpy(&wa, pwt + g * IW + 4 * j, 4);
                std::memcpy(&wb, pwt + g * IW + 4 * j + 2, 4);
                o[g] = dp_words(o[g], va[j], _mm512_set1_epi32(wa));
                o[g] = dp_words(o[g], vb[j], _mm512_set1_epi32(wb));
            }
        }
        const __mmask16 dm = simd::tail_mask(D - d0);
        const __m512 dvv = _mm512_load_ps(dv + d0);
        for (int g = 0; g < GN; ++g) {
            const __m512i oi = _mm512_sub_epi32(o[g], _mm512_set1_epi32(poff[g]));
            const __m512 w = _mm512_mul_ps(dvv, _mm512_set1_ps(psc[g]));
            const __m512 x = _mm512_mul_ps(_mm512_cvtepi32_ps(oi), w);
            float * ag = acc + g * D + d0;
            _mm512_mask_storeu_ps(ag, dm, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(dm, ag), _mm512_set1_ps(corr[g]), x));
        }
    }
    pf_io = pf;
}

// GN heads, head g over tokens [0, n[g]) of a Q8_0 or Q4_0 page, in windows of 32.
template <type T, int GN>
void attend_heads_int(const char * kr, const char * vr, size_t rb, int D, const int * n,
                      const float * q, float * m, float * l, float * acc, next_prefetch & pf) {
    int n_max = 0;
    for (int g = 0; g < GN; ++g) n_max = std::max(n_max, n[g]);
    int nh[GN];
    for (int w0 = 0; w0 < n_max; w0 += IW) {
        for (int g = 0; g < GN; ++g) nh[g] = std::max(0, std::min(IW, n[g] - w0));
        if constexpr (T == type::Q4_0) {
            switch (D) {  // TinyLlama's and Llama's head_dim as constants
            case 64:  attend_window_q4<GN, 64>(kr, vr, rb, D, w0, nh, q, m, l, acc, pf); break;
            case 128: attend_window_q4<GN, 128>(kr, vr, rb, D, w0, nh, q, m, l, acc, pf); break;
            default:  attend_window_q4<GN, 0>(kr, vr, rb, D, w0, nh, q, m, l, acc, pf); break;
            }
        } else {
#if defined(GLOAS_PAGE_VNNI)
            attend_window_int<GN>(kr, vr, rb, D, w0, nh, q, m, l, acc, pf);
#endif
        }
    }
}

// The heads in chunks of 8, 4, 2 and 1; K/V are read once per chunk. INT:
// the integer kernel (Q8_0 with VNNI, Q4_0), else the float one.
template <type T, bool INT = false>
void attend_group(const char * kr, const char * vr, size_t rb, int D, const head_counts & cnt,
                  int n_heads, const float * q, attn_state & s, next_prefetch & pf) {
    int n[8];
    int h = 0;
    auto run = [&](auto gn) {
        constexpr int GN = decltype(gn)::value;
        for (int g = 0; g < GN; ++g) n[g] = cnt(h + g);
        if constexpr (INT) attend_heads_int<T, GN>(kr, vr, rb, D, n, q + h * D, s.m + h, s.l + h, s.acc + int64_t(h) * D, pf);
        else attend_heads<T, GN>(kr, vr, rb, D, n, q + h * D, s.m + h, s.l + h, s.acc + int64_t(h) * D, pf);
        h += GN;
    };
    while (n_heads - h >= 8) run(std::integral_constant<int, 8>());
    if (n_heads - h >= 4) run(std::integral_constant<int, 4>());
    if (n_heads - h >= 2) run(std::integral_constant<int, 2>());
    if (n_heads - h >= 1) run(std::integral_constant<int, 1>());
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
    const size_t rb = g.row_bytes(t);
    const char * base = static_cast<const char *>(page);
    const char * kr = base + size_t(g.row_index(layer, 0, kv_head * D)) * rb;  // (D) rows of P tokens
    const char * vr = base + size_t(g.row_index(layer, 1, kv_head * D)) * rb;
#if defined(GLOAS_PAGE_AVX512)
    if (D <= MAX_D) {
        switch (t) {
        case type::F32:  attend_group<type::F32>(kr, vr, rb, D, cnt, n_heads, q, s, pf); return;
        case type::F16:  attend_group<type::F16>(kr, vr, rb, D, cnt, n_heads, q, s, pf); return;
#if defined(GLOAS_PAGE_VNNI)
        case type::Q8_0: attend_group<type::Q8_0, true>(kr, vr, rb, D, cnt, n_heads, q, s, pf); return;
#endif
        case type::Q4_0: attend_group<type::Q4_0, true>(kr, vr, rb, D, cnt, n_heads, q, s, pf); return;
        default: break;  // BF16, and Q8_0 without VNNI / VBMI: the portable kernels
        }
    }
#endif
    if (t == type::Q8_0 || t == type::Q4_0) attend_int_portable(t, kr, vr, rb, D, cnt, n_heads, q, s, pf);
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
    const char * kr = base + size_t(g.row_index(layer, 0, kv_head * D)) * rb;
    const char * vr = base + size_t(g.row_index(layer, 1, kv_head * D)) * rb;
    next_prefetch none;
    if (t == type::Q8_0 || t == type::Q4_0) attend_int_portable(t, kr, vr, rb, D, cnt, n_heads, q, s, none);
    else attend_portable(t, kr, vr, rb, D, cnt, n_heads, q, s, none);
}

// The prefetcher of the piece (layer, kv_head) of page `next` of type tn
// (none where next is null).
next_prefetch prefetch_of(const page_geometry & g, const void * next, type tn, int32_t layer, int32_t kv_head) {
    if (!next) return next_prefetch();
    GLOAS_ASSERT(g.valid_for(tn));
    const int D = g.head_dim;
    const size_t rb = g.row_bytes(tn);
    const char * base = static_cast<const char *>(next);
    return next_prefetch(base + size_t(g.row_index(layer, 0, kv_head * D)) * rb,
                         base + size_t(g.row_index(layer, 1, kv_head * D)) * rb, rb, D);
}

} // namespace

void page_attend(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                 int32_t n, const float * q, int32_t group, attn_state & s) {
    page_attend(g, t, page, layer, kv_head, n, q, group, s, nullptr, t);
}

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

void page_prefetch(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head) {
    const size_t rb = g.row_bytes(t), bytes = size_t(g.head_dim) * rb;
    for (int kind = 0; kind < 2; ++kind) {
        const char * r = static_cast<const char *>(page) + size_t(g.row_index(layer, kind, kv_head * g.head_dim)) * rb;
        for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(r + o, 0, 3);
    }
}

} // namespace gloas
