// Internal to matmul: what tensor/matmul.cpp shares with the interleaved
// tile kernels (tensor/matmul-tiles.cpp, tensor/matmul-avx2-*.cpp), compiled
// in every variant's namespace.
//
// Interleaved tiles (prefill). A weight type with a tile_format is multiplied
// in tiles of `mr` rows: per chunk of tokens (their activations L2-resident),
// a tile's rows are unpacked once into the format's interleaved layout (one
// vector holds a piece of each of the tile's rows, so a micro-kernel's
// accumulators hold outputs of several rows for one token and need no
// horizontal sum), then the micro-kernel runs over the chunk's tokens, `mt`
// at a time, in reduction segments whose tile and activations stay in L1.
// Each token row is converted once (quantized to 8 bits for the quantized
// types) into the format's act layout in the work area. Below min_tokens
// tokens the unpacking does not pay and the variant's direct kernels run
// instead. Formats: AVX-512 VNNI Q4_0, Q8_0 and the K-quants (16 rows); AVX2
// Q4_0, Q8_0 (8 rows), the K-quants (8 rows) and the float types (16 rows).
#pragma once

#include "quant/isa.h"
#include "quant/simd.h"
#include "quant/types.h"
#include "tensor/tensor.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace gloas::ops::mm {
inline namespace GLOAS_ISA {

// Matrices multiplied by the same activations: y[i] = x · w[i]^T.
struct mm_set {
    const tensor * const * w;
    float * const * y;
    int n;
    int64_t rows() const {
        int64_t m = 0;
        for (int i = 0; i < n; ++i) m += w[i]->nrows();
        return m;
    }
    // Work items: the tiles of `tile` rows of every matrix, in order.
    int64_t tiles(int64_t tile) const {
        int64_t m = 0;
        for (int i = 0; i < n; ++i) m += (w[i]->nrows() + tile - 1) / tile;
        return m;
    }
    // f(iw, r0, r1) for the rows of items [b, e) of tiles(tile): per matrix,
    // one contiguous run of whole tiles.
    template <class F> void for_rows(int64_t tile, int64_t b, int64_t e, F && f) const {
        int64_t base = 0;
        for (int i = 0; i < n && b < e; ++i) {
            const int64_t rows = w[i]->nrows(), nt = (rows + tile - 1) / tile;
            if (b < base + nt) {
                const int64_t t1 = std::min(e, base + nt);
                f(i, (b - base) * tile, std::min(rows, (t1 - base) * tile));
                b = t1;
            }
            base += nt;
        }
    }
};

// Threads for `macs` multiply-adds over `items` work items: no more than
// n_threads(), than the items, or than gives each thread PAR_MIN_MACS (below
// that, waking a thread costs more than it saves).
int threads_for(double macs, int64_t items);

constexpr size_t CHUNK_BYTES = 768 << 10;  // activations of a token chunk: stay in L2 while the rows stream
constexpr size_t ALIGN = 64;

inline char * align_up(void * p) {
    return reinterpret_cast<char *>((reinterpret_cast<uintptr_t>(p) + ALIGN - 1) & ~uintptr_t(ALIGN - 1));
}

// Scratch reused across calls, one per thread (allocated on first use only).
inline char * thread_scratch(size_t bytes) {
    return static_cast<char *>(isa::thread_scratch(isa::scratch_slot::matmul, bytes));
}

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && !defined(__AVX512F__)
#define GLOAS_MATMUL_AVX2 1
#endif
#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VBMI__)
#define GLOAS_MATMUL_AVX512_TILES 1
#endif
#if defined(GLOAS_MATMUL_AVX2) || defined(GLOAS_MATMUL_AVX512_TILES)
#define GLOAS_MATMUL_TILES 1

// A weight type's tile format. A row is n_groups(n_in) groups of
// group_vals values (the last one may be part padding, read as zero).
struct tile_format {
    int     mr;            // rows per tile
    int     mt;            // tokens per micro-kernel call, at most
    int64_t group_vals;
    size_t  a_group;       // act bytes of a group, per token
    size_t  w_group;       // tile bytes of a group, all mr rows
    size_t  tmp_group;     // convert's scratch per group
    // One token row (n_in floats) -> act layout (n_groups * a_group bytes).
    void (*convert)(const float * x, int64_t n_in, char * out, void * tmp);
    // Rows r0 .. r0 + R - 1 of w (R <= mr) -> one tile (n_groups * w_group
    // bytes); the tile's other rows read as zero.
    void (*unpack)(const tensor & w, int64_t r0, int R, int64_t n_in, char * out);
    // y[t * y_stride + r] (=, or += when `accumulate`) for rows r < R of the
    // tile at `wt` and tokens t < T (T <= mt; act rows a_row bytes apart),
    // over `ng` groups.
    void (*tile)(int R, int T, const char * wt, const char * act, size_t a_row, int64_t ng,
                 float * y, int64_t y_stride, bool accumulate);
    int64_t min_tokens;    // fewer tokens: matmul_blocks
    int64_t n_groups(int64_t n_in) const { return (n_in + group_vals - 1) / group_vals; }
};

// The tile format of weight type t in this variant, or null: each family's
// file answers for its types (Q4_0 and Q8_0: matmul-tiles.cpp; AVX2 Q4_K,
// Q5_K, Q6_K: matmul-avx2-k.cpp; AVX2 F32, F16, BF16: matmul-avx2-f.cpp).
const tile_format * tile_format_for(type t);
const tile_format * legacy_tile_format(type t);
const tile_format * avx2_k_format(type t);
const tile_format * avx2_float_format(type t);
#if defined(GLOAS_MATMUL_AVX512_TILES)
const tile_format * avx512_k_format(type t);   // Q4_K, Q5_K, Q6_K: tensor/matmul.cpp
#endif

// Work bytes of matmul_tiles for n_tok tokens.
size_t tiles_work_size(const tile_format & f, int64_t n_in, int64_t n_tok);

// f(std::integral_constant<int, T>()) for a call of T tokens, T = 1 .. N
// (more than N: N): a format's tile function picking its micro-kernel.
template <int N, class F>
inline void with_tokens(int T, F && f) {
    if constexpr (N > 1)
        if (T < N) return with_tokens<N - 1>(T, f);
    f(std::integral_constant<int, N>());
}

// y[t * ys + r] (=, or += when `accumulate`) = acc[t] lane r, rows r < R:
// the outputs of an 8-row (AVX2) or 16-row (AVX-512) tile.
template <int T>
inline void store_rows(const __m256 (&acc)[T], int R, float * y, int64_t ys, bool accumulate) {
    for (int t = 0; t < T; ++t) {
        float * yt = y + t * ys;
        if (R == 8) {
            const __m256 v = accumulate ? _mm256_add_ps(_mm256_loadu_ps(yt), acc[t]) : acc[t];
            _mm256_storeu_ps(yt, v);
        } else {
            alignas(32) float v[8];
            _mm256_store_ps(v, acc[t]);
            for (int r = 0; r < R; ++r) yt[r] = accumulate ? yt[r] + v[r] : v[r];
        }
    }
}
#if defined(GLOAS_MATMUL_AVX512_TILES)
template <int T>
inline void store_rows(const __m512 (&acc)[T], int R, float * y, int64_t ys, bool accumulate) {
    const __mmask16 m = __mmask16((1u << R) - 1);
    for (int t = 0; t < T; ++t) {
        float * yt = y + t * ys;
        const __m512 v = accumulate ? _mm512_add_ps(_mm512_maskz_loadu_ps(m, yt), acc[t]) : acc[t];
        _mm512_mask_storeu_ps(yt, m, v);
    }
}
#endif

// The 8 x 8 transpose of 32-bit pieces: piece k of v[r] (bytes 4k .. 4k+3)
// -> piece r of out[k], out[k] stored at out + 32 k. A tile's rows (v[r]:
// 32 bytes of row r) become its interleaved vectors.
inline void transpose8_store(const __m256i (&v)[8], char * out) {
    __m256i u[8];
    for (int h = 0; h < 2; ++h) {
        const __m256i * r = v + 4 * h;
        const __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        const __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        u[4 * h + 0] = _mm256_unpacklo_epi64(t0, t2);  // pieces 0 | 4 of rows 4h .. 4h+3
        u[4 * h + 1] = _mm256_unpackhi_epi64(t0, t2);  // 1 | 5
        u[4 * h + 2] = _mm256_unpacklo_epi64(t1, t3);  // 2 | 6
        u[4 * h + 3] = _mm256_unpackhi_epi64(t1, t3);  // 3 | 7
    }
    for (int k = 0; k < 4; ++k) {
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + 32 * k), _mm256_permute2x128_si256(u[k], u[4 + k], 0x20));
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + 32 * (k + 4)), _mm256_permute2x128_si256(u[k], u[4 + k], 0x31));
    }
}

// The set multiplied in tiles of format f (set.w[0]'s type), the activations
// converted into `work` (tiles_work_size bytes, any alignment).
void matmul_tiles(const mm_set & set, const float * x, int64_t n_tok, void * work, const tile_format & f);
#endif

} // namespace GLOAS_ISA
} // namespace gloas::ops::mm
