// matmul: y (n_tok, n_out) = x (n_tok, n_in) · w^T.
//
// Quantized weights, each token row quantized once to 8 bits (Q8_0 for
// Q4_0/Q8_0, Q8_K for the K-quants, as matmul_ref does):
//  - prefill: interleaved tiles (tensor/matmul-impl.h, the driver in
//    tensor/matmul-tiles.cpp): AVX-512 VNNI Q4_0, Q8_0 (matmul-tiles.cpp) and
//    Q4_K, Q5_K, Q6_K (below), 16 rows per tile; AVX2 8 rows per tile, Q4_0
//    and Q8_0 in matmul-tiles.cpp, the K-quants in matmul-avx2-k.cpp;
//  - AVX-512 VNNI + VBMI, up to a format's direct_max tokens (decode, small
//    batches): the weight rows of every matrix of a set, MR at a time, are the
//    work items of one job of the thread pool (tensor/thread-pool.h: each
//    thread a contiguous share, a late thread's share taken by the others),
//    read straight from the weights, one pass, with the next tile prefetched
//    (memory bound), DIRECT_MAX_TOK tokens at a time, in the act layout below.
// Float weights (F32/F16/BF16): AVX-512 an MR x MT f32 FMA micro-kernel over
// the same row split; AVX2 interleaved tiles (matmul-avx2-f.cpp). Other block
// types (Q2_K, Q3_K, Q4_1/Q5_0/Q5_1), decode in the AVX2 variant, and the
// other variants use matmul_blocks: one vec_dot per (row, token), rows split
// over threads, tokens chunked so activations stay in L2 (the NEON variant
// takes Q4_0 / Q8_0 rows against 4 tokens at a time, quant/neon.h).
// Every output value is computed by one thread, in an order that does not
// depend on the split: results are the same for any thread count.
#include "tensor/ops.h"

#include "quant/fp16.h"
#include "quant/neon.h"
#include "quant/quant.h"
#include "quant/simd.h"
#include "base/error.h"
#include "tensor/matmul-impl.h"
#include "tensor/thread-pool.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

namespace gloas::ops {

namespace mm { inline namespace GLOAS_ISA {  // as tensor/matmul-impl.h declares it
constexpr double PAR_MIN_MACS = 1 << 16;
int threads_for(double macs, int64_t items) {
    const double by_work = std::max(1.0, macs / PAR_MIN_MACS);
    return int(std::max<int64_t>(1, std::min<int64_t>({int64_t(n_threads()), items, int64_t(std::min(by_work, 1e6))})));
}
GLOAS_ISA_END }

namespace {

using namespace mm;

[[maybe_unused]] constexpr int MR = 4;         // weight rows per micro-tile
constexpr int     MT = 4;           // tokens per micro-tile

// Tokens per chunk for activation rows of `row_bytes`: a multiple of MT.
[[maybe_unused]] int64_t tok_chunk(size_t row_bytes) {
    return std::max<int64_t>(MT, int64_t(CHUNK_BYTES / row_bytes) / MT * MT);
}

[[maybe_unused]] bool is_float(type t) { return t == type::F32 || t == type::F16 || t == type::BF16; }

// act layout, per token, per pair p of 32-value blocks (2p, 2p+1): 192 bytes
//   qs  [64] int8   the 64 values (zero past the row)
//   dxv [16] f32    lane i = the activation scale of the values lane i sums
//   cx  [16] int32  per group of lanes under one weight scale (8 lanes = 32
//                   values; Q6_K: 4 lanes = 16 values): -K * (sum of the
//                   group's values) in its first lane, 0 in the others
// where K is the offset the weight bytes carry (8 for Q4_0, 128 for Q8_0, 32
// for Q6_K, 0 for Q4_K/Q5_K), so dpbusd(cx, w + K, x) is the exact int32 dot
// of each group, split over its lanes.
[[maybe_unused]] constexpr size_t ACT_PAIR = 192;
// The K-quants group 4 pairs (one super-block of 256 values); Q4_K/Q5_K add
// their mins term per super-block, sm · xm with
//   weights: sm [16] f32  lanes j < 8: d * sc_j, lanes 8 + j: dmin * m_j
//   act:     xm [16] f32  lanes j < 8: 0,        lanes 8 + j: -d_x * sum(x of sub-block j)
// after the super-block's 4 pairs.
[[maybe_unused]] constexpr size_t MINS_BYTES = 64;

#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VBMI__)
#define GLOAS_MATMUL_VNNI 1

// ---- Q4_0 / Q8_0: groups of one pair of blocks ---------------------------------

// Pairs of 32-value blocks in a row of n_in values (the last may be half padding).
int64_t n_pairs(int64_t n_in) { return (n_in / 32 + 1) / 2; }

// One token row -> act layout (Q8_0 values, K = k_off); tmp: n_in/32 block_q8_0.
template <int K>
void quantize_act(const float * x, int64_t n_in, char * out, void * tmp_) {
    block_q8_0 * tmp = static_cast<block_q8_0 *>(tmp_);
    const int64_t nb = n_in / 32, np = n_pairs(n_in);
    quantize_row_q8_0(x, tmp, n_in);
    for (int64_t p = 0; p < np; ++p) {
        char * a = out + size_t(p) * ACT_PAIR;
        float dx[2] = {0.0f, 0.0f};
        int32_t sx[2] = {0, 0};
        for (int h = 0; h < 2; ++h) {
            const int64_t b = 2 * p + h;
            if (b < nb) {
                std::memcpy(a + 32 * h, tmp[b].qs, 32);
                dx[h] = _cvtsh_ss(tmp[b].d);
                int s = 0;
                for (int j = 0; j < 32; ++j) s += tmp[b].qs[j];
                sx[h] = -K * s;
            } else {
                std::memset(a + 32 * h, 0, 32);
            }
        }
        _mm512_store_ps(reinterpret_cast<float *>(a + 64), _mm512_insertf32x8(_mm512_set1_ps(dx[0]), _mm256_set1_ps(dx[1]), 1));
        const __m512i c = _mm512_mask_set1_epi32(_mm512_setzero_si512(), 0x0001, sx[0]);
        _mm512_store_si512(a + 128, _mm512_mask_set1_epi32(c, 0x0100, sx[1]));
    }
}

// Pair p of blocks (2p, 2p+1) of a weight row, straight from the weight
// bytes: u = the 64 values + K as unsigned bytes, dw = [d(2p) x8, d(2p+1) x8].
// `two` is false for a lone last block, whose partner reads as zero.
template <type WT> constexpr size_t PAIR_BYTES = 2 * (WT == type::Q4_0 ? sizeof(block_q4_0) : sizeof(block_q8_0));

template <type WT> inline void load_pair(const char * b, bool two, __m512i & u, __m512 & dw);

// vpermb / vpermw indices of load_pair: every qs byte of a Q4_0 block twice
// (low nibbles are values 0..15, high ones 16..31); the two scales of a pair
// as [d0 x8, d1 x8].
alignas(64) constexpr uint8_t Q4_IDX_B[64] = {
    2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17,
    2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17,
    20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35,
    20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35};
alignas(64) constexpr uint16_t Q4_IDX_D[32] = {0, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9};
alignas(64) constexpr uint16_t Q8_IDX_D[32] = {0, 0, 0, 0, 0, 0, 0, 0, 17, 17, 17, 17, 17, 17, 17, 17};

// Q4_0 pair, 36 bytes: d0 [0,2), qs0 [2,18), d1 [18,20), qs1 [20,36).
template <> inline void load_pair<type::Q4_0>(const char * b, bool two, __m512i & u, __m512 & dw) {
    // every byte of a qs array twice: low nibbles give values 0..15, high ones 16..31
    const __m512i idx_b = _mm512_load_si512(Q4_IDX_B);
    const __m512i idx_d = _mm512_load_si512(Q4_IDX_D);
    const __m512i v = _mm512_maskz_loadu_epi8(two ? __mmask64(0xfffffffffULL) : __mmask64(0x3ffffULL), b);
    __m512i x = _mm512_permutexvar_epi8(idx_b, v);
    x = _mm512_mask_srli_epi16(x, __mmask32(0xff00ff00u), x, 4);
    u = _mm512_and_si512(x, _mm512_set1_epi8(0x0f));
    dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(idx_d, v)));
}

// Q8_0 pair, 68 bytes: d0 [0,2), qs0 [2,34), d1 [34,36), qs1 [36,68).
template <> inline void load_pair<type::Q8_0>(const char * b, bool two, __m512i & u, __m512 & dw) {
    const __m512i idx_d = _mm512_load_si512(Q8_IDX_D);
    __m512i q, head;
    if (two) {
        q = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(b + 2))),
                               _mm256_loadu_si256(reinterpret_cast<const __m256i *>(b + 36)), 1);
        head = _mm512_loadu_si512(b);  // the 64 bytes that hold both scales
    } else {
        // lone last block: read only its 34 bytes
        head = _mm512_maskz_loadu_epi8(__mmask64(0x3ffffffffULL), b);
        q = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(b + 2)));
        q = _mm512_inserti64x4(q, _mm256_setzero_si256(), 1);
    }
    u = _mm512_xor_si512(q, _mm512_set1_epi8(char(0x80)));
    dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(idx_d, head)));
}

// ---- K-quants Q4_K / Q5_K / Q6_K: groups of one super-block (4 pairs) ----------

template <type WT> struct kq;
template <> struct kq<type::Q4_K> { using block = block_q4_K; static constexpr bool MINS = true;  static constexpr int K = 0; };
template <> struct kq<type::Q5_K> { using block = block_q5_K; static constexpr bool MINS = true;  static constexpr int K = 0; };
template <> struct kq<type::Q6_K> { using block = block_q6_K; static constexpr bool MINS = false; static constexpr int K = 32; };

// The byte offsets k_scales / k_levels read.
static_assert(offsetof(block_q4_K, scales) == 4 && offsetof(block_q4_K, qs) == 16, "block_q4_K layout");
static_assert(offsetof(block_q5_K, scales) == 4 && offsetof(block_q5_K, qh) == 16 && offsetof(block_q5_K, qs) == 48,
              "block_q5_K layout");
static_assert(offsetof(block_q6_K, qh) == 128 && offsetof(block_q6_K, scales) == 192 && offsetof(block_q6_K, d) == 208,
              "block_q6_K layout");

template <type WT> constexpr size_t K_AGROUP = 4 * ACT_PAIR + (kq<WT>::MINS ? MINS_BYTES : 0);

// One token row -> K act layout (Q8_K values); tmp: n_in/256 block_q8_K.
template <type WT>
void quantize_act_k(const float * x, int64_t n_in, char * out, void * tmp_) {
    block_q8_K * q = static_cast<block_q8_K *>(tmp_);
    const int64_t nsb = n_in / QK_K;
    quantize_row_q8_K(x, q, n_in);
    for (int64_t i = 0; i < nsb; ++i) {
        char * a = out + size_t(i) * K_AGROUP<WT>;
        const __m512 dx = _mm512_set1_ps(q[i].d);
        for (int p = 0; p < 4; ++p) {
            char * ap = a + p * ACT_PAIR;
            _mm512_store_si512(ap, _mm512_loadu_si512(q[i].qs + 64 * p));
            _mm512_store_ps(reinterpret_cast<float *>(ap + 64), dx);
            alignas(64) int32_t cx[16] = {};
            for (int g = 0; g < 4; ++g) cx[4 * g] = -kq<WT>::K * q[i].bsums[4 * p + g];
            _mm512_store_si512(ap + 128, _mm512_load_si512(cx));
        }
        if (kq<WT>::MINS) {
            alignas(64) float xm[16] = {};
            for (int j = 0; j < 8; ++j) xm[8 + j] = -q[i].d * float(q[i].bsums[2 * j] + q[i].bsums[2 * j + 1]);
            _mm512_store_ps(reinterpret_cast<float *>(a + 4 * ACT_PAIR), _mm512_load_ps(xm));
        }
    }
}

// The scales of super-block b: Q4_K/Q5_K the sm vector above; Q6_K lanes
// j = d * scales[j] (the 16 sub-blocks of 16).
template <type WT> inline __m512 k_scales(const char * b);
// Levels + K of pair p (values 64p .. 64p+63) of super-block b, unsigned bytes.
template <type WT> inline __m512i k_levels(const char * b, int p);

// Lane i of pair p's dw: Q4_K/Q5_K sub-block 2p + i/8, Q6_K sub-block 4p + i/4.
alignas(64) constexpr int32_t K4_IDX[4][16] = {
    {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1}, {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
    {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5}, {6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7}};
alignas(64) constexpr int32_t K6_IDX[4][16] = {
    {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3}, {4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7},
    {8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11}, {12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15}};
alignas(64) constexpr int32_t DD_IDX[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};

template <type WT> inline __m512 k_pair_scale(__m512 sc, int p) {
    return _mm512_permutexvar_ps(_mm512_load_si512(WT == type::Q6_K ? K6_IDX[p] : K4_IDX[p]), sc);
}

// Q4_K/Q5_K: d, dmin at [0, 4), the 12 packed scale bytes at [4, 16)
// (unpacked as detail::scales_mins_k4: 32-bit words u0..u2 ->
//  sc 0..3 = u0 & 0x3f..., sc 4..7 = u2 & 0x0f.. | (u0 >> 6 & 3..) << 4,
//  m 0..3 = u1 & 0x3f..,   m 4..7 = u2 >> 4 & 0x0f.. | (u1 >> 6 & 3..) << 4).
inline __m512 k4_scales(const char * b) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i *>(b + 4));
    const __m128i a = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0));   // u0 u2 u1 u2
    const __m128i c = _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0));   // u0 u0 u1 u1
    const __m128i lo = _mm_and_si128(_mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 0, 4)),
                                     _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    const __m128i hi = _mm_slli_epi32(_mm_and_si128(_mm_srli_epi32(c, 6), _mm_setr_epi32(0, 0x03030303, 0, 0x03030303)), 4);
    const __m512 s = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_or_si128(lo, hi)));
    int32_t ddw;
    std::memcpy(&ddw, b, 4);
    const __m512 dd = _mm512_permutexvar_ps(_mm512_load_si512(DD_IDX),
                                            _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(ddw))));
    return _mm512_mul_ps(s, dd);
}
template <> inline __m512 k_scales<type::Q4_K>(const char * b) { return k4_scales(b); }
template <> inline __m512 k_scales<type::Q5_K>(const char * b) { return k4_scales(b); }
// Q6_K: int8 scales at [192, 208), d at [208, 210).
template <> inline __m512 k_scales<type::Q6_K>(const char * b) {
    const __m512 s = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b + 192))));
    uint16_t d;
    std::memcpy(&d, b + 208, 2);
    return _mm512_mul_ps(s, _mm512_set1_ps(_cvtsh_ss(d)));
}

// Q4_K: qs at [16, 144); pair p is qs[32p, 32p+32): low nibbles then high ones.
inline __m512i k4_nibbles(const char * qs, int p) {
    const __m512i x = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(qs + 32 * p)));
    return _mm512_and_si512(_mm512_mask_srli_epi16(x, __mmask32(0xffff0000u), x, 4), _mm512_set1_epi8(0x0f));
}
template <> inline __m512i k_levels<type::Q4_K>(const char * b, int p) { return k4_nibbles(b + 16, p); }
// Q5_K: qh at [16, 48), qs at [48, 176); bit 4 of value 32j + l is bit j of qh[l].
template <> inline __m512i k_levels<type::Q5_K>(const char * b, int p) {
    const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(b + 16)));
    const __m512i bit = _mm512_inserti64x4(_mm512_set1_epi8(char(1 << (2 * p))), _mm256_set1_epi8(char(1 << (2 * p + 1))), 1);
    const __m512i u = k4_nibbles(b + 48, p);
    return _mm512_mask_add_epi8(u, _mm512_test_epi8_mask(qh, bit), u, _mm512_set1_epi8(0x10));
}
// Q6_K: ql at [0, 128), qh at [128, 192). Pair p = 2h + g: low nibbles (g = 0)
// or high nibbles (g = 1) of ql[64h, 64h+64); high 2 bits from qh[32h, 32h+32):
// bits 4g..4g+1 for the first 32 values, 4g+2..4g+3 for the next 32.
template <> inline __m512i k_levels<type::Q6_K>(const char * b, int p) {
    const int h = p / 2, g = p % 2;
    __m512i ql = _mm512_loadu_si512(b + 64 * h);
    const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(b + 128 + 32 * h)));
    // move the two bits to bits 4..5 of each byte (16-bit lane shifts: what
    // crosses a byte boundary is masked off)
    __m512i hb;
    if (g == 0) {
        hb = _mm512_sllv_epi16(qh, _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1));
    } else {
        ql = _mm512_srli_epi16(ql, 4);
        hb = _mm512_srlv_epi16(qh, _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1));
    }
    return _mm512_or_si512(_mm512_and_si512(ql, _mm512_set1_epi8(0x0f)), _mm512_and_si512(hb, _mm512_set1_epi8(0x30)));
}

// ---- micro-kernels ---------------------------------------------------------------

// acc[r][t] += the pair at `a` (act rows a_row bytes apart) · weight pair
// (u[r], dw[r]) of row r, for R rows and T tokens. DX: dw is multiplied by
// the activation scales dxv (false: dw already holds them); CX: the weights
// carry an offset K (false: K = 0, cx is not read).
template <int R, int T, bool DX, bool CX>
inline void pair_step(const __m512i * u, const __m512 * dw, const char * a0, size_t a_row, __m512 (&acc)[R][T]) {
    #pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
        const char * a = a0 + t * a_row;
        const __m512i s  = _mm512_load_si512(a);
        const __m512i c  = CX ? _mm512_load_si512(a + 128) : _mm512_setzero_si512();
        #pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
            const __m512 f = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(c, u[r], s));
            const __m512 scale = DX ? _mm512_mul_ps(dw[r], _mm512_load_ps(reinterpret_cast<const float *>(a + 64))) : dw[r];
            acc[r][t] = _mm512_fmadd_ps(f, scale, acc[r][t]);
        }
    }
}

template <int R, int T>
inline void acc_zero(__m512 (&acc)[R][T]) {
    #pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
        #pragma GCC unroll 4
        for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
}

// y[t * y_stride + r] (=, or += when `accumulate`) = the lanes of acc[r][t] summed.
template <int R, int T>
inline void acc_store(__m512 (&acc)[R][T], float * y, int64_t y_stride, bool accumulate) {
    #pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
        #pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
            const float v = _mm512_reduce_add_ps(acc[r][t]);
            y[t * y_stride + r] = accumulate ? y[t * y_stride + r] + v : v;
        }
}

// Small token counts: y[t * y_stride + r] for R rows starting at row r0 and T
// tokens, reading the weights directly (no unpacked copy).
template <type WT, int R, int T>
void tile_direct(const tensor & w, int64_t r0, const char * act, int64_t n_in, float * y, int64_t y_stride) {
    const int64_t nb = n_in / 32, np = n_pairs(n_in);
    const size_t a_row = size_t(np) * ACT_PAIR;
    __m512 acc[R][T];
    acc_zero(acc);
    const char * rows[R];
    #pragma GCC unroll 4
    for (int r = 0; r < R; ++r) rows[r] = static_cast<const char *>(w.row(r0 + r));
    // the next tile's rows follow these ones: prefetch them linearly, spread
    // over this tile's pairs, so the stream never waits on DRAM. Into L2, not
    // L1: with two threads, a Q8_0 matrix streamed at 9-17 GB/s prefetched
    // into L1 and at 24-26 GB/s into L2 (an AVX-512 Xeon; Q4_0 alike either
    // way; the K-quant and float tiles below measured no better into L2).
    const char * next = rows[0] + R * w.nb[1];
    constexpr size_t step = R * PAIR_BYTES<WT>;
    for (int64_t p = 0; p < np; ++p) {
        for (size_t o = 0; o < step; o += 64) _mm_prefetch(next + size_t(p) * step + o, _MM_HINT_T1);
        const bool two = 2 * p + 1 < nb;
        __m512i u[R];
        __m512 dw[R];
        #pragma GCC unroll 4
        for (int r = 0; r < R; ++r) load_pair<WT>(rows[r] + size_t(p) * PAIR_BYTES<WT>, two, u[r], dw[r]);
        pair_step<R, T, true, true>(u, dw, act + size_t(p) * ACT_PAIR, a_row, acc);
    }
    acc_store(acc, y, y_stride, false);
}

// The same for the K-quants, a super-block at a time.
template <type WT, int R, int T>
void tile_direct_k(const tensor & w, int64_t r0, const char * act, int64_t n_in, float * y, int64_t y_stride) {
    constexpr size_t BB = sizeof(typename kq<WT>::block);
    const int64_t nsb = n_in / QK_K;
    const size_t a_row = size_t(nsb) * K_AGROUP<WT>;
    __m512 acc[R][T];
    acc_zero(acc);
    const char * rows[R];
    #pragma GCC unroll 4
    for (int r = 0; r < R; ++r) rows[r] = static_cast<const char *>(w.row(r0 + r));
    const char * next = rows[0] + R * w.nb[1];
    constexpr size_t step = R * BB;
    for (int64_t i = 0; i < nsb; ++i) {
        for (size_t o = 0; o < step; o += 64) _mm_prefetch(next + size_t(i) * step + o, _MM_HINT_T0);
        const char * a = act + size_t(i) * K_AGROUP<WT>;
        // one token: its scale (one per super-block) goes into the weight
        // scales once per super-block rather than once per pair
        const __m512 dx1 = _mm512_load_ps(reinterpret_cast<const float *>(a + 64));
        __m512 sc[R], scx[R];
        #pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
            sc[r] = k_scales<WT>(rows[r] + size_t(i) * BB);
            scx[r] = T == 1 ? _mm512_mul_ps(sc[r], dx1) : sc[r];
        }
        #pragma GCC unroll 4
        for (int p = 0; p < 4; ++p) {
            __m512i u[R];
            __m512 dw[R];
            #pragma GCC unroll 4
            for (int r = 0; r < R; ++r) {
                u[r] = k_levels<WT>(rows[r] + size_t(i) * BB, p);
                dw[r] = k_pair_scale<WT>(scx[r], p);
            }
            pair_step<R, T, T != 1, kq<WT>::K != 0>(u, dw, a + p * ACT_PAIR, a_row, acc);
        }
        if (kq<WT>::MINS) {
            #pragma GCC unroll 4
            for (int t = 0; t < T; ++t) {
                const __m512 xm = _mm512_load_ps(reinterpret_cast<const float *>(a + t * a_row + 4 * ACT_PAIR));
                #pragma GCC unroll 4
                for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(sc[r], xm, acc[r][t]);
            }
        }
    }
    acc_store(acc, y, y_stride, false);
}

constexpr int DIRECT_MAX_TOK = 3;  // tokens per call of a direct kernel
using tile_direct_fn = void (*)(const tensor &, int64_t, const char *, int64_t, float *, int64_t);
template <type WT, int R> constexpr tile_direct_fn tile_direct_row[DIRECT_MAX_TOK] = {
    tile_direct<WT, R, 1>, tile_direct<WT, R, 2>, tile_direct<WT, R, 3>};
template <type WT> constexpr const tile_direct_fn * TILE_DIRECT[MR] = {
    tile_direct_row<WT, 1>, tile_direct_row<WT, 2>, tile_direct_row<WT, 3>, tile_direct_row<WT, 4>};
template <type WT, int R> constexpr tile_direct_fn tile_direct_k_row[DIRECT_MAX_TOK] = {
    tile_direct_k<WT, R, 1>, tile_direct_k<WT, R, 2>, tile_direct_k<WT, R, 3>};
template <type WT> constexpr const tile_direct_fn * TILE_DIRECT_K[MR] = {
    tile_direct_k_row<WT, 1>, tile_direct_k_row<WT, 2>, tile_direct_k_row<WT, 3>, tile_direct_k_row<WT, 4>};

// A weight type's direct format: a row is n_groups groups of group_vals
// values (the last one may be partly padding), a_group bytes each in the act
// layout.
struct qformat {
    int64_t group_vals;
    size_t  a_group;
    size_t  tmp_group;   // quantizer scratch per group
    void (*quantize)(const float * x, int64_t n_in, char * out, void * tmp);
    const tile_direct_fn * const * direct;
    // Up to this many tokens the direct kernels (DIRECT_MAX_TOK tokens at a
    // time, each tile's rows read again from L1 for the next tokens) beat
    // unpacking the rows into interleaved tiles (tensor/matmul-impl.h), which
    // costs about as much as a direct pass and pays once enough tokens share it.
    int64_t direct_max;
    int64_t n_groups(int64_t n_in) const { return (n_in + group_vals - 1) / group_vals; }
};

template <type WT> constexpr qformat LEGACY_FORMAT = {
    64, ACT_PAIR, 2 * sizeof(block_q8_0), quantize_act<WT == type::Q4_0 ? 8 : 128>,
    TILE_DIRECT<WT>, WT == type::Q4_0 ? 8 : DIRECT_MAX_TOK};
template <type WT> constexpr qformat K_FORMAT = {
    QK_K, K_AGROUP<WT>, sizeof(block_q8_K), quantize_act_k<WT>, TILE_DIRECT_K<WT>, WT == type::Q4_K ? 8 : 6};

} // namespace

// ---- K-quants in 16-row interleaved tiles (tensor/matmul-impl.h) --------------
//
// Group: one super-block. act, per token (K_ACT bytes): qs [256] int8 (Q8_K),
// then 16 4-byte sums: Q4_K/Q5_K the 8 sub-block sums of x (f32), Q6_K the
// 16 offsets -32 * (sum of x over sub-block j) (int32); then d_x f32.
// tile (K_TILE bytes, 16 rows): 64 vectors k of values 4k .. 4k+3 of each row
// (levels, unsigned), then per sub-block j the rows' scales d * sc_j (f32 x
// 16; Q6_K 16 sub-blocks of 16 values, Q4_K/Q5_K 8 of 32 followed by the 8
// vectors dmin * m_j). A sub-block's vpdpbusd sums are converted once and
// scaled by its vector of row scales; the mins come off per super-block; d_x
// multiplies at the end of the super-block.
namespace {

constexpr int    KI_MR = 16, KI_MT = 8;
constexpr size_t K_ACT = 256 + 64 + 64;
constexpr size_t K_TILE = 4096 + 1024;

template <type WT>
void convert_k16(const float * x, int64_t n_in, char * out, void * tmp_) {
    block_q8_K * q = static_cast<block_q8_K *>(tmp_);
    const int64_t nsb = n_in / QK_K;
    quantize_row_q8_K(x, q, n_in);
    for (int64_t i = 0; i < nsb; ++i) {
        char * a = out + size_t(i) * K_ACT;
        std::memcpy(a, q[i].qs, 256);
        for (int j = 0; j < 16; ++j) {
            if (WT == type::Q6_K) {
                const int32_t c = -kq<WT>::K * q[i].bsums[j];
                std::memcpy(a + 256 + 4 * j, &c, 4);
            } else {
                const float s = j < 8 ? float(q[i].bsums[2 * j] + q[i].bsums[2 * j + 1]) : 0.0f;
                std::memcpy(a + 256 + 4 * j, &s, 4);
            }
        }
        std::memcpy(a + 320, &q[i].d, 4);
    }
}

template <type WT>
void unpack_k16(const tensor & w, int64_t r0, int R, int64_t n_in, char * out) {
    constexpr size_t BB = sizeof(typename kq<WT>::block);
    const int64_t nsb = n_in / QK_K;
    alignas(64) char lv[KI_MR][256];
    alignas(64) float sc[KI_MR][16];
    alignas(64) char half[2][256];
    for (int64_t i = 0; i < nsb; ++i) {
        char * o = out + size_t(i) * K_TILE;
        for (int r = 0; r < KI_MR; ++r) {
            if (r >= R) {
                std::memset(lv[r], 0, 256);
                std::memset(sc[r], 0, sizeof sc[r]);
                continue;
            }
            const char * b = static_cast<const char *>(w.row(r0 + r)) + size_t(i) * BB;
            for (int p = 0; p < 4; ++p) _mm512_store_si512(lv[r] + 64 * p, k_levels<WT>(b, p));
            _mm512_store_ps(sc[r], k_scales<WT>(b));
        }
        // 32-byte segment s of every row -> vectors 8s .. 8s+7, 8 rows at a time
        for (int sg = 0; sg < 8; ++sg) {
            for (int h = 0; h < 2; ++h) {
                __m256i v[8];
                for (int j = 0; j < 8; ++j) v[j] = _mm256_load_si256(reinterpret_cast<const __m256i *>(lv[8 * h + j] + 32 * sg));
                mm::transpose8_store(v, half[h]);
            }
            for (int k = 0; k < 8; ++k) {
                const __m512i lo = _mm512_castsi256_si512(_mm256_load_si256(reinterpret_cast<const __m256i *>(half[0] + 32 * k)));
                _mm512_storeu_si512(o + 64 * (8 * sg + k),
                                    _mm512_inserti64x4(lo, _mm256_load_si256(reinterpret_cast<const __m256i *>(half[1] + 32 * k)), 1));
            }
        }
        float * f = reinterpret_cast<float *>(o + 4096);
        for (int j = 0; j < 16; ++j)
            for (int r = 0; r < KI_MR; ++r) f[16 * j + r] = sc[r][j];
    }
}

template <type WT, int T>
void tile_k16(int R, const char * wt, const char * act, size_t a_row, int64_t ng, float * y, int64_t ys, bool accumulate) {
    constexpr int NS = WT == type::Q6_K ? 16 : 8;  // sub-blocks
    constexpr int KS = 64 / NS;                     // vectors per sub-block
    __m512 acc[T];
    #pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t g = 0; g < ng; ++g) {
        const char * w = wt + size_t(g) * K_TILE;
        const char * a = act + size_t(g) * K_ACT;
        __m512 facc[T];
        #pragma GCC unroll 8
        for (int t = 0; t < T; ++t) facc[t] = _mm512_setzero_ps();
        for (int j = 0; j < NS; ++j) {
            __m512i isum[T];
            #pragma GCC unroll 8
            for (int t = 0; t < T; ++t) {
                int32_t c = 0;
                if (WT == type::Q6_K) std::memcpy(&c, a + t * a_row + 256 + 4 * j, 4);
                isum[t] = _mm512_set1_epi32(c);
            }
            #pragma GCC unroll 8
            for (int kk = 0; kk < KS; ++kk) {
                const int k = j * KS + kk;
                const __m512i wk = _mm512_loadu_si512(w + 64 * k);
                #pragma GCC unroll 8
                for (int t = 0; t < T; ++t) {
                    int32_t x4;
                    std::memcpy(&x4, a + t * a_row + 4 * k, 4);
                    isum[t] = _mm512_dpbusd_epi32(isum[t], wk, _mm512_set1_epi32(x4));
                }
            }
            const __m512 sc = _mm512_loadu_ps(w + 4096 + 64 * j);
            #pragma GCC unroll 8
            for (int t = 0; t < T; ++t) facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), sc, facc[t]);
        }
        if (kq<WT>::MINS) {
            #pragma GCC unroll 8
            for (int j = 0; j < 8; ++j) {
                const __m512 mn = _mm512_loadu_ps(w + 4096 + 512 + 64 * j);
                #pragma GCC unroll 8
                for (int t = 0; t < T; ++t) {
                    float sx;
                    std::memcpy(&sx, a + t * a_row + 256 + 4 * j, 4);
                    facc[t] = _mm512_fnmadd_ps(mn, _mm512_set1_ps(sx), facc[t]);
                }
            }
        }
        #pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
            float dx;
            std::memcpy(&dx, a + t * a_row + 320, 4);
            acc[t] = _mm512_fmadd_ps(facc[t], _mm512_set1_ps(dx), acc[t]);
        }
    }
    mm::store_rows(acc, R, y, ys, accumulate);
}

template <type WT>
void tile_k16_any(int R, int T, const char * wt, const char * act, size_t a_row, int64_t ng, float * y, int64_t ys,
                  bool accumulate) {
    mm::with_tokens<KI_MT>(T, [&](auto n) { tile_k16<WT, decltype(n)::value>(R, wt, act, a_row, ng, y, ys, accumulate); });
}

// min_tokens 1: the direct kernels take the calls of up to K_FORMAT's direct_max tokens.
template <type WT> constexpr mm::tile_format K16_FORMAT = {
    KI_MR, KI_MT, QK_K, K_ACT, K_TILE, sizeof(block_q8_K), convert_k16<WT>, unpack_k16<WT>, tile_k16_any<WT>, 1};

} // namespace

namespace mm { inline namespace GLOAS_ISA {  // as tensor/matmul-impl.h declares it
const tile_format * avx512_k_format(type t) {
    switch (t) {
    case type::Q4_K: return &K16_FORMAT<type::Q4_K>;
    case type::Q5_K: return &K16_FORMAT<type::Q5_K>;
    case type::Q6_K: return &K16_FORMAT<type::Q6_K>;
    default: return nullptr;
    }
}
GLOAS_ISA_END }

namespace {

// The direct format of weight type t, or null.
const qformat * direct_format(type t) {
    switch (t) {
    case type::Q4_0: return &LEGACY_FORMAT<type::Q4_0>;
    case type::Q8_0: return &LEGACY_FORMAT<type::Q8_0>;
    case type::Q4_K: return &K_FORMAT<type::Q4_K>;
    case type::Q5_K: return &K_FORMAT<type::Q5_K>;
    case type::Q6_K: return &K_FORMAT<type::Q6_K>;
    default: return nullptr;
    }
}

// Up to f.direct_max tokens: each token quantized once into the act layout,
// then the MR-row tiles of every matrix are the work items, their rows read
// straight from the weights (one pass, the next tile prefetched),
// DIRECT_MAX_TOK tokens at a time.
void matmul_direct(const mm_set & set, const float * x, int64_t n_tok, void * work, const qformat & f) {
    const int64_t n_in = set.w[0]->ne[0], ng = f.n_groups(n_in);
    const size_t a_row = size_t(ng) * f.a_group;
    char * act = align_up(work);
    const int64_t n_tiles = set.tiles(MR);
    const int nth = threads_for(double(set.rows()) * double(n_in) * double(n_tok), n_tiles);
    char * tmp = thread_scratch(size_t(ng) * f.tmp_group);
    for (int64_t t = 0; t < n_tok; ++t) f.quantize(x + t * n_in, n_in, act + size_t(t) * a_row, tmp);
    parallel_for(n_tiles, nth, 0, [&](int64_t b, int64_t e) {
        set.for_rows(MR, b, e, [&](int iw, int64_t r0, int64_t r1) {
            const tensor & w = *set.w[iw];
            float * y = set.y[iw];
            const int64_t n_out = w.nrows();
            for (int64_t r = r0; r < r1; r += MR) {
                const int R = int(std::min<int64_t>(MR, r1 - r));
                for (int64_t t = 0; t < n_tok; t += DIRECT_MAX_TOK) {
                    const int T = int(std::min<int64_t>(DIRECT_MAX_TOK, n_tok - t));
                    f.direct[R - 1][T - 1](w, r, act + size_t(t) * a_row, n_in, y + t * n_out + r, n_out);
                }
            }
        });
    });
}
#endif

#if defined(__AVX512F__)
#define GLOAS_MATMUL_AVX512_FLOAT 1

template <type WT> __m512 load_w(const void * row, int64_t i, __mmask16 m);
template <> inline __m512 load_w<type::F32>(const void * row, int64_t i, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, static_cast<const float *>(row) + i);
}
template <> inline __m512 load_w<type::F16>(const void * row, int64_t i, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t *>(row) + i));
}
template <> inline __m512 load_w<type::BF16>(const void * row, int64_t i, __mmask16 m) {
    const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t *>(row) + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

template <type WT, int R, int T>
void tile_f(const tensor & w, int64_t r0, const float * x, int64_t n_in, float * y, int64_t y_stride) {
    __m512 acc[R][T];
    #pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
        #pragma GCC unroll 4
        for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
    const void * rows[R];
    #pragma GCC unroll 4
    for (int r = 0; r < R; ++r) rows[r] = w.row(r0 + r);
    // few tokens: memory bound, prefetch the next tile's rows (see tile_direct)
    const char * next = static_cast<const char *>(rows[0]) + R * w.nb[1];
    constexpr size_t step = R * 16 * (WT == type::F32 ? 4 : 2);
    for (int64_t i = 0; i < n_in; i += 16) {
        if (T < MT) {
            for (size_t o = 0; o < step; o += 64) _mm_prefetch(next + size_t(i / 16) * step + o, _MM_HINT_T0);
        }
        const __mmask16 m = n_in - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n_in - i)) - 1);
        __m512 wv[R];
        #pragma GCC unroll 4
        for (int r = 0; r < R; ++r) wv[r] = load_w<WT>(rows[r], i, m);
        #pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
            const __m512 xv = _mm512_maskz_loadu_ps(m, x + t * n_in + i);
            #pragma GCC unroll 4
            for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
    #pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
        #pragma GCC unroll 4
        for (int t = 0; t < T; ++t) y[t * y_stride + r] = _mm512_reduce_add_ps(acc[r][t]);
}

using tile_f_fn = void (*)(const tensor &, int64_t, const float *, int64_t, float *, int64_t);
template <type WT, int R> constexpr tile_f_fn tile_f_row[MT] = {tile_f<WT, R, 1>, tile_f<WT, R, 2>, tile_f<WT, R, 3>, tile_f<WT, R, 4>};
template <type WT> constexpr const tile_f_fn * TILE_F[MR] = {tile_f_row<WT, 1>, tile_f_row<WT, 2>, tile_f_row<WT, 3>, tile_f_row<WT, 4>};

void matmul_float(const mm_set & set, const float * x, int64_t n_tok) {
    const tensor & w0 = *set.w[0];
    const int64_t n_in = w0.ne[0];
    const tile_f_fn * const * table = w0.t == type::F32 ? TILE_F<type::F32> : w0.t == type::F16 ? TILE_F<type::F16> : TILE_F<type::BF16>;
    const int64_t n_tiles = set.tiles(MR);
    const int nth = threads_for(double(set.rows()) * double(n_in) * double(n_tok), n_tiles);
    const int64_t chunk = tok_chunk(size_t(n_in) * sizeof(float));
    for (int64_t t0 = 0; t0 < n_tok; t0 += chunk) {
        const int64_t t1 = std::min(n_tok, t0 + chunk);
        parallel_for(n_tiles, nth, 0, [&](int64_t b, int64_t e) {
            set.for_rows(MR, b, e, [&](int iw, int64_t r0, int64_t r1) {
                const tensor & w = *set.w[iw];
                float * y = set.y[iw];
                const int64_t n_out = w.nrows();
                for (int64_t r = r0; r < r1; r += MR) {
                    const int R = int(std::min<int64_t>(MR, r1 - r));
                    for (int64_t t = t0; t < t1; t += MT) {
                        const int T = int(std::min<int64_t>(MT, t1 - t));
                        table[R - 1][T - 1](w, r, x + t * n_in, n_in, y + t * n_out + r, n_out);
                    }
                }
            });
        });
    }
}
#endif

} // namespace

GLOAS_ISA_BEGIN

// Bytes of one activation row of `vt` in the work area of matmul_blocks.
static size_t act_row_bytes(type vt, int64_t n_in) { return (row_size(vt, n_in) + ALIGN - 1) & ~(ALIGN - 1); }

size_t matmul_work_size(type wt, int64_t n_in, int64_t n_tok) {
    // the most any path n_tok or fewer tokens take needs
    const type vt = traits(wt).vec_dot_type;
    size_t bytes = vt == type::F32 ? 0 : act_row_bytes(vt, n_in) * size_t(n_tok) + ALIGN;  // matmul_blocks
#if defined(GLOAS_MATMUL_VNNI)
    if (const qformat * f = direct_format(wt))
        bytes = std::max(bytes, size_t(f->n_groups(n_in)) * f->a_group * size_t(std::min(n_tok, f->direct_max)) + ALIGN);
#endif
#if defined(GLOAS_MATMUL_TILES)
    if (const mm::tile_format * f = mm::tile_format_for(wt); f && n_tok >= f->min_tokens)
        bytes = std::max(bytes, mm::tiles_work_size(*f, n_in, n_tok));
#endif
    return bytes;
}

GLOAS_ISA_END

#if GLOAS_ISA_BASE
void matmul_ref(const tensor & w, const float * x, int64_t n_tok, float * y) {
    const type_traits & tw = traits(w.t);
    const type_traits & tv = traits(tw.vec_dot_type);
    const int64_t n_in = w.ne[0], n_out = w.nrows();
    std::vector<char> xq(row_size(tw.vec_dot_type, n_in));
    for (int64_t t = 0; t < n_tok; ++t) {
        tv.from_float_ref(x + t * n_in, xq.data(), n_in);
        for (int64_t r = 0; r < n_out; ++r) y[t * n_out + r] = tw.vec_dot_ref(n_in, w.row(r), xq.data());
    }
}
#endif

GLOAS_ISA_BEGIN

// Float weights in variants without float tiles (AVX-512's above, AVX2's in
// tensor/matmul-avx2-f.cpp): one vec_dot per (row, token).
static void matmul_generic(const tensor & w, const float * x, int64_t n_tok, float * y) {
    const type_traits & tw = traits(w.t);
    const int64_t n_in = w.ne[0], n_out = w.nrows();
    const int nth = threads_for(double(n_out) * double(n_in) * double(n_tok), n_out);
    parallel_for(n_out, nth, 0, [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r)
            for (int64_t t = 0; t < n_tok; ++t) y[t * n_out + r] = tw.vec_dot(n_in, w.row(r), x + t * n_in);
    });
}

// Block weights without a tile format above (Q2_K, Q3_K, Q4_1/Q5_0/Q5_1,
// and every block type in variants without VNNI): each token row is quantized
// once to the type's vec_dot_type (act_row_bytes apart in `work`); the rows
// are split over threads and, per chunk of tokens
// whose activations stay in L2, reads each of its rows once (then from L1)
// for every token of the chunk. With one token (decode) that is one pass over
// the weights, prefetched ahead (by the kernels themselves on x86).
static void matmul_blocks(const mm_set & set, const float * x, int64_t n_tok, void * work) {
    const type_traits & tw = traits(set.w[0]->t);
    const type_traits & tv = traits(tw.vec_dot_type);
    const int64_t n_in = set.w[0]->ne[0];
    const size_t vrow = act_row_bytes(tw.vec_dot_type, n_in);
    char * act = align_up(work);
    const int64_t n_rows = set.rows();
    const int nth = threads_for(double(n_rows) * double(n_in) * double(n_tok), n_rows);
    const int64_t chunk = std::max<int64_t>(1, int64_t(CHUNK_BYTES / vrow));
#if defined(GLOAS_NEON)
    const neon_kernels::vec_dot_x4_fn dot_x4 = neon_kernels::vec_dot_x4(set.w[0]->t);
#endif
    parallel_for(n_tok, n_tok >= 16 ? nth : 1, 0, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) tv.from_float(x + t * n_in, act + size_t(t) * vrow, n_in);
    });
    for (int64_t t0 = 0; t0 < n_tok; t0 += chunk) {
        const int64_t t1 = std::min(n_tok, t0 + chunk);
        parallel_for(n_rows, nth, 0, [&](int64_t b, int64_t e) {
            set.for_rows(1, b, e, [&](int iw, int64_t r0, int64_t r1) {
                const tensor & w = *set.w[iw];
                float * y = set.y[iw];
                const int64_t n_out = w.nrows();
                for (int64_t r = r0; r < r1; ++r) {
                    const char * wr = static_cast<const char *>(w.row(r));
#if !defined(__AVX2__)
                    // two rows ahead (the x86 kernels stream theirs, quant/simd.h)
                    const size_t w_row = w.nb[1];
                    if (r + 2 < r1)
                        for (size_t o = 0; o < w_row; o += 64) __builtin_prefetch(wr + 2 * w_row + o, 0, 3);
#endif
                    int64_t t = t0;
#if defined(GLOAS_NEON)
                    // prefill: 4 tokens per pass over the row (quant/neon.h)
                    if (dot_x4)
                        for (float o[4]; t + 4 <= t1; t += 4) {
                            dot_x4(n_in, wr, act + size_t(t) * vrow, vrow, o);
                            for (int j = 0; j < 4; ++j) y[(t + j) * n_out + r] = o[j];
                        }
#endif
                    for (; t < t1; ++t) y[t * n_out + r] = tw.vec_dot(n_in, wr, act + size_t(t) * vrow);
                }
            });
        });
    }
}

// Matrices of one type and input width, with the same input rows: the
// activations are converted once and every matrix is computed in one job of
// the thread pool.
static void matmul_set(const mm_set & set, const float * x, int64_t n_tok, void * work) {
    const tensor & w = *set.w[0];
#if defined(GLOAS_MATMUL_VNNI)
    if (const qformat * f = direct_format(w.t); f && n_tok <= f->direct_max) return matmul_direct(set, x, n_tok, work, *f);
#endif
#if defined(GLOAS_MATMUL_TILES)
    if (const mm::tile_format * f = mm::tile_format_for(w.t); f && n_tok >= f->min_tokens)
        return mm::matmul_tiles(set, x, n_tok, work, *f);
#endif
#if defined(GLOAS_MATMUL_AVX512_FLOAT)
    if (is_float(w.t)) return matmul_float(set, x, n_tok);
#endif
    if (traits(w.t).vec_dot_type != type::F32) return matmul_blocks(set, x, n_tok, work);
    for (int i = 0; i < set.n; ++i) matmul_generic(*set.w[i], x, n_tok, set.y[i]);
}

void matmul(const tensor & w, const float * x, int64_t n_tok, float * y, void * work) {
    GLOAS_ASSERT(w.nb[0] == traits(w.t).type_size);  // rows are contiguous
    if (n_tok <= 0 || w.nrows() <= 0) return;
    const tensor * ws[1] = {&w};
    float * ys[1] = {y};
    matmul_set(mm_set{ws, ys, 1}, x, n_tok, work);
}

void matmul_n(const tensor * const * w, float * const * y, int n, const float * x, int64_t n_tok, void * work) {
    if (n_tok <= 0) return;
    // Runs of matrices of one type and width go together.
    for (int i = 0; i < n;) {
        GLOAS_ASSERT(w[i]->nb[0] == traits(w[i]->t).type_size && w[i]->ne[0] == w[0]->ne[0]);
        int j = i + 1;
        while (j < n && w[j]->t == w[i]->t) ++j;
        if (w[i]->nrows() > 0) matmul_set(mm_set{w + i, y + i, j - i}, x, n_tok, work);
        i = j;
    }
}

GLOAS_ISA_END

} // namespace gloas::ops
