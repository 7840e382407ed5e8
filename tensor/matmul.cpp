// matmul: y (n_tok, n_out) = x (n_tok, n_in) · w^T.
//
// Quantized weights (AVX-512 VNNI + VBMI): each token row is quantized once
// to Q8_0 in the act layout below. Each thread owns a contiguous range of
// weight rows, taken MR at a time:
//  - up to DIRECT_MAX_TOK tokens (decode): the rows are read straight from
//    the weights, one pass, with the next tile prefetched (memory bound);
//  - more tokens (prefill): the MR rows are unpacked once per chunk of tokens
//    (CHUNK_BYTES of activations, L2-resident) into the w_tile layout, then an
//    MR x MT micro-kernel of f32 accumulators (integer dot products with
//    dpbusd) runs over every token of the chunk, in reduction segments of
//    K_PAIRS pairs that stay in L1.
// Float weights (F32/F16/BF16) use the same row split and an MR x MT f32 FMA
// micro-kernel. Other block types (K-quants, Q4_1/Q5_0/Q5_1) and other
// builds use matmul_blocks: one vec_dot per (row, token), rows split by
// thread, tokens chunked so activations stay in L2.
#include "tensor/ops.h"

#include "quant/fp16.h"
#include "quant/quant.h"
#include "quant/simd.h"
#include "tensor/error.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace gloas::ops {

namespace {

// Matrices multiplied by the same activations: y[i] = x · w[i]^T.
struct mm_set {
    const tensor * const * w;
    float * const * y;
    int n;
    int64_t max_rows() const {
        int64_t m = 0;
        for (int i = 0; i < n; ++i) m = std::max(m, w[i]->nrows());
        return m;
    }
};

constexpr int     MR = 4;           // weight rows per micro-tile
constexpr int     MT = 4;           // tokens per micro-tile
constexpr size_t  CHUNK_BYTES = 768 << 10;  // activations of a token chunk: stay in L2 while the rows stream

// Tokens per chunk for activation rows of `row_bytes`: a multiple of MT.
[[maybe_unused]] int64_t tok_chunk(size_t row_bytes) {
    return std::max<int64_t>(MT, int64_t(CHUNK_BYTES / row_bytes) / MT * MT);
}
constexpr size_t  ALIGN = 64;

// Types of the integer tile kernels below (the other block types take the
// K-quant / generic paths); float types of the FMA tiles.
[[maybe_unused]] bool is_quant(type t) { return t == type::Q8_0 || t == type::Q4_0; }
[[maybe_unused]] bool is_float(type t) { return t == type::F32 || t == type::F16 || t == type::BF16; }

// Pairs of 32-value blocks in a row of n_in values (the last may be half padding).
[[maybe_unused]] int64_t n_pairs(int64_t n_in) { return (n_in / 32 + 1) / 2; }

// act layout, per token, per pair p of blocks (2p, 2p+1): 192 bytes
//   qs  [64] int8   values of block 2p, then of block 2p+1 (zero past the row)
//   dxv [16] f32    lanes 0..7 = scale of 2p, lanes 8..15 = scale of 2p+1
//   cx  [16] int32  lane 0 = -K*sum(qs of 2p), lane 8 = -K*sum(qs of 2p+1), others 0
// where K is the offset the weight bytes carry (8 for Q4_0, 128 for Q8_0), so
// dpbusd(cx, w + K, x) is the exact int32 dot of each block, split over lanes.
constexpr size_t ACT_PAIR = 192;
// w_tile layout, per row, per pair: 128 bytes
//   u   [64] uint8  weight values + K (Q4_0: the nibbles; Q8_0: q ^ 0x80)
//   dwv [16] f32    lanes 0..7 = scale of 2p, lanes 8..15 = scale of 2p+1
constexpr size_t W_PAIR = 128;
// Pairs per reduction segment: MR w_tile rows + MT act rows of it fit in L1.
constexpr int64_t K_PAIRS = 32;

[[maybe_unused]] char * align_up(void * p) {
    return reinterpret_cast<char *>((reinterpret_cast<uintptr_t>(p) + ALIGN - 1) & ~uintptr_t(ALIGN - 1));
}

// Scratch reused across calls, one per thread (allocated on first use only).
[[maybe_unused]] char * thread_scratch(size_t bytes) {
    thread_local std::vector<char> buf;
    if (buf.size() < bytes + ALIGN) buf.resize(bytes + ALIGN);
    return align_up(buf.data());
}

#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VBMI__)
#define GLOAS_MATMUL_VNNI 1

// One token row -> act layout.
void quantize_act(const float * x, int64_t n_in, int k_off, char * out, block_q8_0 * tmp) {
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
                sx[h] = -k_off * s;
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

// One weight row -> w_tile layout.
template <type WT>
void unpack_row(const void * row, int64_t n_in, char * out) {
    const int64_t nb = n_in / 32, np = n_pairs(n_in);
    const char * b = static_cast<const char *>(row);
    for (int64_t p = 0; p < np; ++p) {
        __m512i u;
        __m512 dw;
        load_pair<WT>(b + size_t(p) * PAIR_BYTES<WT>, 2 * p + 1 < nb, u, dw);
        _mm512_store_si512(out + size_t(p) * W_PAIR, u);
        _mm512_store_ps(reinterpret_cast<float *>(out + size_t(p) * W_PAIR + 64), dw);
    }
}

// Small token counts: y[t * y_stride + r] for R rows starting at row r0 and T
// tokens, reading the weights directly (no unpacked copy).
template <type WT, int R, int T>
void tile_direct(const tensor & w, int64_t r0, const char * act, int64_t n_in, float * y, int64_t y_stride) {
    const int64_t nb = n_in / 32, np = n_pairs(n_in);
    const size_t a_row = size_t(np) * ACT_PAIR;
    __m512 acc[R][T];
    #pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
        #pragma GCC unroll 4
        for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
    const char * rows[R];
    #pragma GCC unroll 4
    for (int r = 0; r < R; ++r) rows[r] = static_cast<const char *>(w.row(r0 + r));
    // the next tile's rows follow these ones: prefetch them linearly, spread
    // over this tile's pairs, so the stream never waits on DRAM
    const char * next = rows[0] + R * w.nb[1];
    constexpr size_t step = R * PAIR_BYTES<WT>;
    for (int64_t p = 0; p < np; ++p) {
        for (size_t o = 0; o < step; o += 64) _mm_prefetch(next + size_t(p) * step + o, _MM_HINT_T0);
        const bool two = 2 * p + 1 < nb;
        __m512i u[R];
        __m512 dw[R];
        #pragma GCC unroll 4
        for (int r = 0; r < R; ++r) load_pair<WT>(rows[r] + size_t(p) * PAIR_BYTES<WT>, two, u[r], dw[r]);
        #pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
            const char * a = act + t * a_row + size_t(p) * ACT_PAIR;
            const __m512i s  = _mm512_load_si512(a);
            const __m512  dx = _mm512_load_ps(reinterpret_cast<const float *>(a + 64));
            const __m512i c  = _mm512_load_si512(a + 128);
            #pragma GCC unroll 4
            for (int r = 0; r < R; ++r) {
                const __m512 f = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(c, u[r], s));
                acc[r][t] = _mm512_fmadd_ps(f, _mm512_mul_ps(dw[r], dx), acc[r][t]);
            }
        }
    }
    #pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
        #pragma GCC unroll 4
        for (int t = 0; t < T; ++t) y[t * y_stride + r] = _mm512_reduce_add_ps(acc[r][t]);
}

constexpr int DIRECT_MAX_TOK = 3;  // up to this many tokens, read weights directly
using tile_direct_fn = void (*)(const tensor &, int64_t, const char *, int64_t, float *, int64_t);
template <type WT, int R> constexpr tile_direct_fn tile_direct_row[DIRECT_MAX_TOK] = {
    tile_direct<WT, R, 1>, tile_direct<WT, R, 2>, tile_direct<WT, R, 3>};
template <type WT> constexpr const tile_direct_fn * TILE_DIRECT[MR] = {
    tile_direct_row<WT, 1>, tile_direct_row<WT, 2>, tile_direct_row<WT, 3>, tile_direct_row<WT, 4>};

// y[t * y_stride + r] (=, or += when `accumulate`) row r of the tile · token t
// over `np` pairs, for R rows (w_tile rows `w_row` bytes apart) and T tokens
// (act rows `a_row` bytes apart).
template <int R, int T>
void tile_q(const char * wt, size_t w_row, const char * act, size_t a_row, int64_t np, float * y, int64_t y_stride,
            bool accumulate) {
    __m512 acc[R][T];
    #pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
        #pragma GCC unroll 4
        for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
    for (int64_t p = 0; p < np; ++p) {
        __m512i u[R];
        __m512 dw[R];
        #pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
            const char * o = wt + r * w_row + size_t(p) * W_PAIR;
            u[r]  = _mm512_load_si512(o);
            dw[r] = _mm512_load_ps(reinterpret_cast<const float *>(o + 64));
        }
        #pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
            const char * a = act + t * a_row + size_t(p) * ACT_PAIR;
            const __m512i s  = _mm512_load_si512(a);
            const __m512  dx = _mm512_load_ps(reinterpret_cast<const float *>(a + 64));
            const __m512i c  = _mm512_load_si512(a + 128);
            #pragma GCC unroll 4
            for (int r = 0; r < R; ++r) {
                const __m512 f = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(c, u[r], s));
                acc[r][t] = _mm512_fmadd_ps(f, _mm512_mul_ps(dw[r], dx), acc[r][t]);
            }
        }
    }
    #pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
        #pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
            const float v = _mm512_reduce_add_ps(acc[r][t]);
            y[t * y_stride + r] = accumulate ? y[t * y_stride + r] + v : v;
        }
}

using tile_q_fn = void (*)(const char *, size_t, const char *, size_t, int64_t, float *, int64_t, bool);
template <int R> constexpr tile_q_fn tile_q_row[MT] = {tile_q<R, 1>, tile_q<R, 2>, tile_q<R, 3>, tile_q<R, 4>};
constexpr const tile_q_fn * TILE_Q[MR] = {tile_q_row<1>, tile_q_row<2>, tile_q_row<3>, tile_q_row<4>};

void matmul_quant(const mm_set & set, const float * x, int64_t n_tok, void * work) {
    const tensor & w0 = *set.w[0];
    const int64_t n_in = w0.ne[0], np = n_pairs(n_in);
    const int k_off = w0.t == type::Q4_0 ? 8 : 128;
    const size_t a_row = size_t(np) * ACT_PAIR;
    char * act = align_up(work);
    const int nth = int(std::min<int64_t>(n_threads(), std::max<int64_t>(1, (set.max_rows() + MR - 1) / MR)));
    const bool q4 = w0.t == type::Q4_0;

    #pragma omp parallel num_threads(nth)
    {
        const int ith = omp_get_thread_num(), nt = omp_get_num_threads();
        block_q8_0 * tmp = reinterpret_cast<block_q8_0 *>(
            thread_scratch(size_t(n_in / 32) * sizeof(block_q8_0) + ALIGN + MR * size_t(np) * W_PAIR));
        char * wt = align_up(tmp + n_in / 32);
        #pragma omp for schedule(static)
        for (int64_t t = 0; t < n_tok; ++t) quantize_act(x + t * n_in, n_in, k_off, act + size_t(t) * a_row, tmp);

        // Each matrix in turn, without a barrier between them (the activations
        // are read-only from here on).
        for (int iw = 0; iw < set.n; ++iw) {
            const tensor & w = *set.w[iw];
            float * y = set.y[iw];
            const int64_t n_out = w.nrows();
            // contiguous row range of this thread, in whole tiles
            const int64_t n_tiles = (n_out + MR - 1) / MR;
            const int64_t per = (n_tiles + nt - 1) / nt;
            const int64_t r0 = std::min(n_out, ith * per * MR), r1 = std::min(n_out, (ith + 1) * per * MR);
            if (n_tok <= DIRECT_MAX_TOK) {
                const tile_direct_fn * const * table = q4 ? TILE_DIRECT<type::Q4_0> : TILE_DIRECT<type::Q8_0>;
                for (int64_t r = r0; r < r1; r += MR) {
                    const int R = int(std::min<int64_t>(MR, r1 - r));
                    table[R - 1][n_tok - 1](w, r, act, n_in, y + r, n_out);
                }
            } else {
                const int64_t chunk = tok_chunk(a_row);
                for (int64_t t0 = 0; t0 < n_tok; t0 += chunk) {
                    const int64_t t1 = std::min(n_tok, t0 + chunk);
                    for (int64_t r = r0; r < r1; r += MR) {
                        const int R = int(std::min<int64_t>(MR, r1 - r));
                        #pragma GCC unroll 4
                        for (int i = 0; i < R; ++i) {
                            char * o = wt + size_t(i) * size_t(np) * W_PAIR;
                            if (q4) unpack_row<type::Q4_0>(w.row(r + i), n_in, o);
                            else    unpack_row<type::Q8_0>(w.row(r + i), n_in, o);
                        }
                        // the reduction in segments whose weights and activations stay in L1
                        for (int64_t p0 = 0; p0 < np; p0 += K_PAIRS) {
                            const int64_t p1 = std::min(np, p0 + K_PAIRS);
                            for (int64_t t = t0; t < t1; t += MT) {
                                const int T = int(std::min<int64_t>(MT, t1 - t));
                                TILE_Q[R - 1][T - 1](wt + size_t(p0) * W_PAIR, size_t(np) * W_PAIR,
                                                     act + size_t(t) * a_row + size_t(p0) * ACT_PAIR, a_row, p1 - p0,
                                                     y + t * n_out + r, n_out, p0 > 0);
                            }
                        }
                    }
                }
            }
        }
    }
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
    const int nth = int(std::min<int64_t>(n_threads(), std::max<int64_t>(1, (set.max_rows() + MR - 1) / MR)));
    #pragma omp parallel num_threads(nth)
    for (int iw = 0; iw < set.n; ++iw) {
        const tensor & w = *set.w[iw];
        float * y = set.y[iw];
        const int64_t n_out = w.nrows();
        const int ith = omp_get_thread_num(), nt = omp_get_num_threads();
        const int64_t n_tiles = (n_out + MR - 1) / MR;
        const int64_t per = (n_tiles + nt - 1) / nt;
        const int64_t r0 = std::min(n_out, ith * per * MR), r1 = std::min(n_out, (ith + 1) * per * MR);
        const int64_t chunk = tok_chunk(size_t(n_in) * sizeof(float));
        for (int64_t t0 = 0; t0 < n_tok; t0 += chunk) {
            const int64_t t1 = std::min(n_tok, t0 + chunk);
            for (int64_t r = r0; r < r1; r += MR) {
                const int R = int(std::min<int64_t>(MR, r1 - r));
                for (int64_t t = t0; t < t1; t += MT) {
                    const int T = int(std::min<int64_t>(MT, t1 - t));
                    table[R - 1][T - 1](w, r, x + t * n_in, n_in, y + t * n_out + r, n_out);
                }
            }
        }
    }
}
#endif

} // namespace

// Bytes of one activation row of `vt` in the work area of matmul_blocks.
static size_t act_row_bytes(type vt, int64_t n_in) { return (row_size(vt, n_in) + ALIGN - 1) & ~(ALIGN - 1); }

size_t matmul_work_size(type wt, int64_t n_in, int64_t n_tok) {
    const type vt = traits(wt).vec_dot_type;
    if (vt == type::F32) return 0;
#if defined(GLOAS_MATMUL_VNNI)
    if (is_quant(wt)) return size_t(n_pairs(n_in)) * ACT_PAIR * size_t(n_tok) + ALIGN;
#endif
    return act_row_bytes(vt, n_in) * size_t(n_tok) + ALIGN;
}

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

// Float weights in builds without the AVX-512 tiles: one vec_dot per (row, token).
static void matmul_generic(const tensor & w, const float * x, int64_t n_tok, float * y) {
    const type_traits & tw = traits(w.t);
    const int64_t n_in = w.ne[0], n_out = w.nrows();
    const int nth = n_threads();
    #pragma omp parallel for num_threads(nth) schedule(static)
    for (int64_t r = 0; r < n_out; ++r) {
        for (int64_t t = 0; t < n_tok; ++t) y[t * n_out + r] = tw.vec_dot(n_in, w.row(r), x + t * n_in);
    }
}

// Block weights without a tile kernel above (the K-quants, Q4_1/Q5_0/Q5_1,
// and every block type in builds without VNNI): each token row is quantized
// once to the type's vec_dot_type (act_row_bytes apart in `work`); each
// thread owns a contiguous range of weight rows and, per chunk of tokens
// whose activations stay in L2, reads each of its rows once (then from L1)
// for every token of the chunk. With one token (decode) that is one pass over
// the weights, the next rows prefetched.
static void matmul_blocks(const mm_set & set, const float * x, int64_t n_tok, void * work) {
    const type_traits & tw = traits(set.w[0]->t);
    const type_traits & tv = traits(tw.vec_dot_type);
    const int64_t n_in = set.w[0]->ne[0];
    const size_t vrow = act_row_bytes(tw.vec_dot_type, n_in);
    char * act = align_up(work);
    const int nth = int(std::min<int64_t>(n_threads(), set.max_rows()));
    const int64_t chunk = std::max<int64_t>(1, int64_t(CHUNK_BYTES / vrow));
    #pragma omp parallel num_threads(nth)
    {
        const int ith = omp_get_thread_num(), nt = omp_get_num_threads();
        #pragma omp for schedule(static)
        for (int64_t t = 0; t < n_tok; ++t) tv.from_float(x + t * n_in, act + size_t(t) * vrow, n_in);
        for (int iw = 0; iw < set.n; ++iw) {
            const tensor & w = *set.w[iw];
            float * y = set.y[iw];
            const int64_t n_out = w.nrows();
            const size_t w_row = w.nb[1];
            const int64_t per = (n_out + nt - 1) / nt;
            const int64_t r0 = std::min(n_out, ith * per), r1 = std::min(n_out, (ith + 1) * per);
            for (int64_t t0 = 0; t0 < n_tok; t0 += chunk) {
                const int64_t t1 = std::min(n_tok, t0 + chunk);
                for (int64_t r = r0; r < r1; ++r) {
                    const char * wr = static_cast<const char *>(w.row(r));
                    // two rows ahead
                    if (r + 2 < r1)
                        for (size_t o = 0; o < w_row; o += 64) __builtin_prefetch(wr + 2 * w_row + o, 0, 3);
                    for (int64_t t = t0; t < t1; ++t) y[t * n_out + r] = tw.vec_dot(n_in, wr, act + size_t(t) * vrow);
                }
            }
        }
    }
}

// Matrices of one type and input width, with the same input rows: the
// activations are converted once and every matrix is computed in one
// parallel region.
static void matmul_set(const mm_set & set, const float * x, int64_t n_tok, void * work) {
    const tensor & w = *set.w[0];
#if defined(GLOAS_MATMUL_VNNI)
    if (is_quant(w.t)) return matmul_quant(set, x, n_tok, work);
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

} // namespace gloas::ops
