// The AVX2 tile formats of F32, F16 and BF16 weights (tensor/matmul-impl.h):
// the outer-product micro-kernel of a float GEMM.
//
// Layouts, a group being 8 consecutive values of a row:
//   act, per token, 32 bytes: the 8 values as f32 (zero past n_in);
//   tile, per group, 512 bytes: for each value k = 0..7 of the group, the 16
//     rows' value k as f32 (two vectors: rows 0..7, then rows 8..15).
// A micro-kernel step loads the two vectors of one value k (16 rows),
// broadcasts value k of each of MT tokens and adds the products into 2 x MT
// accumulators: one vector holds 8 rows of one token, so the outputs need no
// horizontal sum. 12 accumulators, 2 weight vectors and the broadcast fit in
// the 16 ymm registers. F16 and BF16 rows are widened to f32 once, when the
// tile is unpacked.
// The weights are read only when a tile is unpacked: unpack_f leaves the
// address of the next tile's rows (this thread's next tile, as a rule) in
// next_rows / next_bytes, and the micro-kernel calls on this tile prefetch
// them into L2, one cache line per group, so the next unpack does not wait
// on memory.
#include "tensor/matmul-impl.h"

#include <cstring>
#include <type_traits>

namespace gloas::ops::mm {
inline namespace GLOAS_ISA {  // as tensor/matmul-impl.h declares it

#if defined(GLOAS_MATMUL_AVX2)

namespace {

constexpr int     MR = 16, MT = 6, GV = 8;
constexpr size_t  A_GROUP = GV * sizeof(float);
constexpr size_t  W_GROUP = size_t(MR) * GV * sizeof(float);

// The weight bytes still to prefetch, on this thread (see above).
thread_local const char * next_rows;
thread_local size_t       next_bytes;

void convert_f(const float * x, int64_t n_in, char * out, void *) {
    const int64_t n_pad = (n_in + GV - 1) / GV * GV;
    std::memcpy(out, x, size_t(n_in) * sizeof(float));
    std::memset(out + size_t(n_in) * sizeof(float), 0, size_t(n_pad - n_in) * sizeof(float));
}

// load8 (quant/simd.h): values i .. i+7 of a row as f32; load_tail: the
// last n (< 8) values of the row from i on, the others zero.
using simd::load8;
template <type WT> inline __m256 load_tail(const void * row, int64_t i, int64_t n) {
    using elem = std::conditional_t<WT == type::F32, float, uint16_t>;
    elem v[GV] = {};
    std::memcpy(v, static_cast<const elem *>(row) + i, size_t(n) * sizeof(elem));
    return load8<WT>(v, 0);
}

// The 8 x 8 transpose of v (v[r]: values of row r) -> out + stride * k: value
// k of the 8 rows.
inline void transpose8_store_ps(const __m256 (&v)[8], float * out, int64_t stride) {
    __m256 u[8];
    for (int h = 0; h < 2; ++h) {
        const __m256 * r = v + 4 * h;
        const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
        const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
        u[4 * h + 0] = _mm256_shuffle_ps(t0, t2, 0x44);  // values 0 | 4 of rows 4h .. 4h+3
        u[4 * h + 1] = _mm256_shuffle_ps(t0, t2, 0xee);  // 1 | 5
        u[4 * h + 2] = _mm256_shuffle_ps(t1, t3, 0x44);  // 2 | 6
        u[4 * h + 3] = _mm256_shuffle_ps(t1, t3, 0xee);  // 3 | 7
    }
    for (int k = 0; k < 4; ++k) {
        _mm256_storeu_ps(out + stride * k, _mm256_permute2f128_ps(u[k], u[4 + k], 0x20));
        _mm256_storeu_ps(out + stride * (k + 4), _mm256_permute2f128_ps(u[k], u[4 + k], 0x31));
    }
}

template <type WT>
void unpack_f(const tensor & w, int64_t r0, int R, int64_t n_in, char * out_) {
    float * out = reinterpret_cast<float *>(out_);
    const int64_t n_full = n_in / GV, ng = (n_in + GV - 1) / GV;
    const void * rows[MR];
    for (int r = 0; r < MR; ++r) rows[r] = w.row(r0 + std::min(r, R - 1));
    // the next tile's rows, fetched while this one is multiplied
    const int64_t r_next = r0 + MR, R_next = std::min<int64_t>(MR, w.nrows() - r_next);
    next_rows = R_next > 0 ? static_cast<const char *>(w.row(r_next)) : nullptr;
    next_bytes = R_next > 0 ? size_t(R_next) * w.nb[1] : 0;
    for (int64_t g = 0; g < ng; ++g) {
        for (int h = 0; h < MR / 8; ++h) {
            __m256 v[8];
            for (int r = 0; r < 8; ++r) {
                const int rr = 8 * h + r;
                v[r] = rr >= R ? _mm256_setzero_ps()
                     : g < n_full ? load8<WT>(rows[rr], GV * g)
                     : load_tail<WT>(rows[rr], GV * g, n_in - GV * g);
            }
            transpose8_store_ps(v, out + g * (W_GROUP / sizeof(float)) + 8 * h, MR);
        }
    }
}

// y[t * ys + r] (=, or +=) = v[t][r], rows r < R.
template <int T>
inline void store_rows(const float (&v)[T][MR], int R, float * y, int64_t ys, bool accumulate) {
    for (int t = 0; t < T; ++t) {
        float * yt = y + t * ys;
        if (R == MR) {
            for (int h = 0; h < MR / 8; ++h) {
                const __m256 a = _mm256_load_ps(v[t] + 8 * h);
                _mm256_storeu_ps(yt + 8 * h, accumulate ? _mm256_add_ps(_mm256_loadu_ps(yt + 8 * h), a) : a);
            }
        } else {
            for (int r = 0; r < R; ++r) yt[r] = accumulate ? yt[r] + v[t][r] : v[t][r];
        }
    }
}

template <int T>
void tile_f(int R, const char * wt, const char * act, size_t a_row, int64_t ng, float * y, int64_t ys, bool accumulate) {
    __m256 acc[2][T];
    #pragma GCC unroll 6
    for (int t = 0; t < T; ++t) acc[0][t] = acc[1][t] = _mm256_setzero_ps();
    const float * w = reinterpret_cast<const float *>(wt);
    const float * a[T];
    #pragma GCC unroll 6
    for (int t = 0; t < T; ++t) a[t] = reinterpret_cast<const float *>(act + size_t(t) * a_row);
    const int64_t n = ng * GV;
    const char * pf = next_rows;
    size_t pf_left = next_bytes;
    for (int64_t i = 0; i < n; i += GV) {
        if (pf_left) {
            _mm_prefetch(pf, _MM_HINT_T1);
            pf += 64;
            pf_left = pf_left > 64 ? pf_left - 64 : 0;
        }
        #pragma GCC unroll 8
        for (int k = 0; k < GV; ++k) {
            const __m256 w0 = _mm256_loadu_ps(w + MR * (i + k)), w1 = _mm256_loadu_ps(w + MR * (i + k) + 8);
            #pragma GCC unroll 6
            for (int t = 0; t < T; ++t) {
                const __m256 x = _mm256_broadcast_ss(a[t] + i + k);
                acc[0][t] = _mm256_fmadd_ps(w0, x, acc[0][t]);
                acc[1][t] = _mm256_fmadd_ps(w1, x, acc[1][t]);
            }
        }
    }
    next_rows = pf;
    next_bytes = pf_left;
    // (through memory: indexing acc at run time would keep it out of registers)
    alignas(32) float v[T][MR];
    #pragma GCC unroll 6
    for (int t = 0; t < T; ++t) {
        _mm256_store_ps(v[t], acc[0][t]);
        _mm256_store_ps(v[t] + 8, acc[1][t]);
    }
    store_rows(v, R, y, ys, accumulate);
}

void tile_f_any(int R, int T, const char * wt, const char * act, size_t a_row, int64_t ng, float * y, int64_t ys,
                bool accumulate) {
    with_tokens<MT>(T, [&](auto n) { tile_f<decltype(n)::value>(R, wt, act, a_row, ng, y, ys, accumulate); });
}

// Every token count: one token (decode) reads each tile's rows once, as
// vec_dot would, and no slower; and each output is summed in the same order
// for any token count, so a token's outputs do not depend on its batch.
template <type WT> constexpr tile_format FLOAT_FORMAT = {
    MR, MT, GV, A_GROUP, W_GROUP, 0, convert_f, unpack_f<WT>, tile_f_any, 1};

} // namespace

const tile_format * avx2_float_format(type t) {
    switch (t) {
    case type::F32: return &FLOAT_FORMAT<type::F32>;
    case type::F16: return &FLOAT_FORMAT<type::F16>;
    case type::BF16: return &FLOAT_FORMAT<type::BF16>;
    default: return nullptr;
    }
}

#endif

GLOAS_ISA_END
} // namespace gloas::ops::mm
