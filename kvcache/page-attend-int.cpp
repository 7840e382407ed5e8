// The integer register kernels of page attention (kvcache/page.h: the
// integer algorithm; page-kernels.h: attend_int), AVX-512.
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
// Q4_KIVI pages run the Q4_0 kernel with K rows of Q4_1 blocks: the K
// nibbles without the offset 8, and each head's bias sum_c q_c * m_c added
// to its scores (attend_kivi).
// attend_int_portable (page-attend.cpp) is the scalar twin of both (the kernel
// of variants without them: no AVX-512, or for Q8_0 no VNNI / VBMI): the same
// integers and the same float operations.
#include "kvcache/page-kernels.h"

#include "quant/blocks.h"
#include "quant/fp16.h"
#include "base/error.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace gloas::page_kernels { inline namespace GLOAS_ISA {

#if defined(GLOAS_PAGE_AVX512)

namespace {

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

// Lane 8h+i of the (d, m) dwords of 16 consecutive 20-byte Q4_1 blocks:
// dword 5i of the three vectors from the block 8h's start (i < 7), or of the
// third alone (i = 7, dword 35).
struct q4_1_tables {
    alignas(64) int32_t dm2[2][16];  // lane 8h+i <- dword 5i of (v0, v1), i = 0..6
    alignas(64) int32_t dm3[2][16];  // lane 8h+7 <- dword 3 of v2
};

constexpr q4_1_tables make_q4_1_tables() {
    q4_1_tables x{};
    for (int h = 0; h < 2; ++h) {
        for (int i = 0; i < 7; ++i) x.dm2[h][8 * h + i] = 5 * i;
        x.dm3[h][8 * h + 7] = 3;
    }
    return x;
}

constexpr q4_1_tables Q4_1_TABLES = make_q4_1_tables();

// Scales d and minima m (as F32) of `rows` Q4_1 blocks rb bytes apart from
// b0, 16 at a time, zero from `rows` to a multiple of 16: each block's first
// dword (d, m), by permutations where the rows are one block each (rb ==
// 20), else by gathers.
inline void load_scales_min(const char * b0, size_t rb, int rows, float * d, float * m) {
    if (rb == sizeof(block_q4_1)) {
        const q4_1_tables & X = Q4_1_TABLES;
        for (int c0 = 0; c0 < rows; c0 += 16) {
            const char * b = b0 + size_t(c0) * rb;
            const int n = (rows - c0) * int(rb);  // bytes of the rows from b
            __m512i x = _mm512_setzero_si512();
            for (int h = 0; h < 2; ++h) {  // rows 8h..8h+7: 160 bytes from b + 160h
                const char * p = b + 160 * h;
                const int nh = n - 160 * h;
                if (nh <= 0) break;
                const __m512i v0 = load_head64(p, nh), v1 = load_head64(p + 64, nh - 64), v2 = load_head64(p + 128, nh - 128);
                __m512i t = _mm512_permutex2var_epi32(v0, load_idx(X.dm2[h]), v1);
                t = _mm512_mask_permutexvar_epi32(t, __mmask16(1u << (8 * h + 7)), load_idx(X.dm3[h]), v2);
                x = _mm512_mask_mov_epi32(x, __mmask16(0xFFu << (8 * h)), t);
            }
            _mm512_store_ps(d + c0, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(x)));
            _mm512_store_ps(m + c0, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(x, 16))));
        }
        return;
    }
    const __m512i step = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(int(rb)));
    for (int c0 = 0; c0 < rows; c0 += 16) {
        const __m512i idx = _mm512_add_epi32(step, _mm512_set1_epi32(int(size_t(c0) * rb)));
        const __m512i x = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), simd::tail_mask(rows - c0), idx, b0, 1);
        _mm512_store_ps(d + c0, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(x)));
        _mm512_store_ps(m + c0, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(x, 16))));
    }
}

// One online-softmax step of GN query heads over the window of 32 tokens at
// w0 (one block of every row) of a Q4_0 page, head g reading its first
// nh[g] (0..32) tokens: the integer algorithm of page.h for Q4_0, equal to
// attend_int_portable (see the top of this file).
// The per-head maxima and sums are reduced together (hreduce8). HD: the
// head_dim as a constant (loops unrolled, no tails), or 0: any, D_.
// KIVI: a Q4_KIVI page, whose K rows are Q4_1 blocks (rbk bytes apart; V
// rows Q4_0, rbv apart): the same algorithm on the K nibbles (no offset 8)
// with each head's bias sum_c q_c * m_c added to its scores (page.h).
// q (GN, D); m, l (GN); acc (GN, D).
template <int GN, int HD, bool KIVI = false>
void attend_window_q4(const char * kr, const char * vr, size_t rbk, size_t rbv, int D_, int w0, const int * nh,
                      const float * q, float * m, float * l, float * acc, next_prefetch & pf_io) {
    static_assert(HD >= 0 && HD <= MAX_D, "head_dim");
    const int D = HD > 0 ? HD : D_;
    static_assert(GN == 1 || GN == 2 || GN == 4 || GN == 8, "chunks of 1, 2, 4 or 8 heads");
    constexpr size_t BSK = KIVI ? sizeof(block_q4_1) : sizeof(block_q4_0), BSV = sizeof(block_q4_0);
    constexpr int KNIB = KIVI ? 4 : 2;  // bytes before a K block's nibbles
    constexpr int OFF = 8;             // nibble - 8 is the value (K: none for KIVI)
    constexpr float QMAX = 32767.0f;   // int16 query
    constexpr float PMAX = 32767.0f;   // 15-bit probabilities
    const q4_tables & X = Q4_TABLES;
    const size_t boffk = size_t(w0 / IW) * BSK, boff = size_t(w0 / IW) * BSV;
    const size_t rb = rbv;  // rows4 reads V rows only
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
            return reinterpret_cast<const __m128i *>(r0 + size_t(std::min(i, D - 1)) * rbk + boffk + KNIB);
        };
        const __m128i a = _mm_loadu_si128(row(c)), b = _mm_loadu_si128(row(c + 1));
        return _mm512_cvtepu8_epi16(_mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi8(a, b)),
                                                            _mm_unpackhi_epi8(a, b), 1));
    };

    // block scales, zero past D
    alignas(64) float dk[MAX_D], dv[MAX_D], mk[KIVI ? MAX_D : 1];
    if constexpr (KIVI) load_scales_min(kr + boffk, rbk, D, dk, mk);
    else load_scales(kr + boffk, rbk, D, dk);
    load_scales(vr + boff, rbv, D, dv);

    // query: q_c * dk_c as int16 per head (qw, zero past D), scale sq
    alignas(64) int16_t qw[GN][MAX_D];  // (written 32 channels at a time: MAX_D % 32 == 0)
    alignas(64) float sq[16], qinv[16], bias[16] = {};
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
        const __m512i nib = _mm512_set1_epi16(15), off = _mm512_set1_epi16(KIVI ? 0 : OFF);
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

    // KIVI's bias lane g: head g's sum_c q_c * m_c, after the scores: its
    // shuffles stay off the path from the scales to the scores
    if constexpr (KIVI) {
        __m512 b[8];
        for (int g = 0; g < GN; ++g) {
            __m512 a = _mm512_setzero_ps();
            for (int c0 = 0; c0 < D; c0 += 16)
                a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(simd::tail_mask(D - c0), q + g * D + c0), _mm512_load_ps(mk + c0), a);
            b[g] = a;
        }
        for (int g = GN; g < 8; ++g) b[g] = b[0];
        _mm512_store_ps(bias, hreduce8(b, add_op));
    }

    // online softmax: scores (GN, 32) to probabilities; per-head scalars as lanes of one vector
    alignas(64) float p[GN * IW];
    __mmask16 mh[GN][2];  // tokens of each vector that head g attends
    __m512 xs[8];         // per head, then padded with head 0's
    for (int g = 0; g < GN; ++g) {
        const __m512 sv = _mm512_set1_ps(sq[g]);
        __m512 s0, s1;
        if constexpr (KIVI) {
            const __m512 bv = _mm512_set1_ps(bias[g]);
            s0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(slo[g]), sv, bv);
            s1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(shi[g]), sv, bv);
        } else {
            s0 = _mm512_mul_ps(_mm512_cvtepi32_ps(slo[g]), sv);
            s1 = _mm512_mul_ps(_mm512_cvtepi32_ps(shi[g]), sv);
        }
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
            case 64:  attend_window_q4<GN, 64>(kr, vr, rb, rb, D, w0, nh, q, m, l, acc, pf); break;
            case 128: attend_window_q4<GN, 128>(kr, vr, rb, rb, D, w0, nh, q, m, l, acc, pf); break;
            default:  attend_window_q4<GN, 0>(kr, vr, rb, rb, D, w0, nh, q, m, l, acc, pf); break;
            }
        } else {
#if defined(GLOAS_PAGE_VNNI)
            attend_window_int<GN>(kr, vr, rb, D, w0, nh, q, m, l, acc, pf);
#endif
        }
    }
}

} // namespace

void attend_int(type t, const char * kr, const char * vr, size_t rb, int D, const head_counts & cnt, int n_heads,
                const float * q, attn_state & s, next_prefetch & pf) {
    GLOAS_ASSERT(D <= MAX_D);
    for_head_chunks(n_heads, [&](auto gn, int h) {
        constexpr int GN = decltype(gn)::value;
        int n[GN];
        for (int g = 0; g < GN; ++g) n[g] = cnt(h + g);
        float * acc = s.acc + int64_t(h) * D;
        if (t == type::Q4_0) {
            attend_heads_int<type::Q4_0, GN>(kr, vr, rb, D, n, q + h * D, s.m + h, s.l + h, acc, pf);
        } else {
#if defined(GLOAS_PAGE_VNNI)
            GLOAS_ASSERT(t == type::Q8_0);
            attend_heads_int<type::Q8_0, GN>(kr, vr, rb, D, n, q + h * D, s.m + h, s.l + h, acc, pf);
#else
            GLOAS_ASSERT(false && "Q8_0's register kernel needs AVX-512 VNNI / VBMI");
#endif
        }
    });
}

void attend_kivi(const char * kr, const char * vr, size_t rbk, size_t rbv, int D, const head_counts & cnt, int n_heads,
                 const float * q, attn_state & s, next_prefetch & pf) {
    GLOAS_ASSERT(D <= MAX_D);
    for_head_chunks(n_heads, [&](auto gn, int h) {
        constexpr int GN = decltype(gn)::value;
        int n[GN], nh[GN], n_max = 0;
        for (int g = 0; g < GN; ++g) n_max = std::max(n_max, n[g] = cnt(h + g));
        for (int w0 = 0; w0 < n_max; w0 += IW) {
            for (int g = 0; g < GN; ++g) nh[g] = std::max(0, std::min(IW, n[g] - w0));
            auto run = [&](auto hd) {
                attend_window_q4<GN, decltype(hd)::value, true>(kr, vr, rbk, rbv, D, w0, nh, q + h * D, s.m + h, s.l + h,
                                                                s.acc + int64_t(h) * D, pf);
            };
            switch (D) {  // TinyLlama's and Llama's head_dim as constants
            case 64:  run(std::integral_constant<int, 64>()); break;
            case 128: run(std::integral_constant<int, 128>()); break;
            default:  run(std::integral_constant<int, 0>()); break;
            }
        }
    });
}

#endif // GLOAS_PAGE_AVX512

}} // namespace gloas::page_kernels::GLOAS_ISA
