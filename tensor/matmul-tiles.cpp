// The interleaved tile driver (tensor/matmul-impl.h) and the tile formats of
// Q4_0 and Q8_0 weights: AVX2 and AVX-512 VNNI.
//
// AVX2 Q4_0 / Q8_0 layouts, a group being one 32-value block:
//   act, per token, 40 bytes: qs [32] int8 (the block's Q8_0 values), dx f32
//     (its scale), cx int32 (-8 * sum(qs) for Q4_0: the offset of the
//     weights' levels; 0 for Q8_0);
//   tile, per block: 8 vectors k = 0..7 of the 8 rows' values 4k .. 4k+3
//     (row r at bytes 4r .. 4r+3), as
//       Q4_0: the levels (0..15, the value + 8)            256 bytes
//       Q8_0: |q|, then q                                   512 bytes
//     then dw [8] f32, the rows' scales.
// A micro-kernel step broadcasts 4 activation bytes of a token against one
// vector (4 values of 8 rows): vpmaddubsw then vpmaddwd sum the products of
// each row in its own 32-bit lane. Q4_0 levels are unsigned, so the bytes
// multiply directly and 4 steps add up in 16 bits (|sum| <= 4 * 2 * 15 * 127);
// Q8_0 multiplies |q| by x with q's sign (vpsignb), and each step widens to
// 32 bits at once (2 * 128 * 127 fits 16 bits, twice that does not).
#include "tensor/matmul-impl.h"

#include "quant/blocks.h"
#include "quant/fp16.h"
#include "quant/quant.h"
#include "tensor/ops.h"
#include "tensor/thread-pool.h"

#include <cstring>

namespace gloas::ops::mm {
inline namespace GLOAS_ISA {  // as tensor/matmul-impl.h declares it

#if defined(GLOAS_MATMUL_TILES)

namespace {

constexpr size_t A_BLOCK = 40;
constexpr size_t SEG_BYTES = 24 << 10;  // L1 budget of a reduction segment: a tile's part and mt act rows of it

inline int32_t load32(const char * p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return v;
}
inline float loadf(const char * p) {
    float v;
    std::memcpy(&v, p, 4);
    return v;
}

// The act layout of a token row; OFFSET: the offset of the weights' levels.
template <int OFFSET>
void convert_q(const float * x, int64_t n_in, char * out, void * tmp_) {
    block_q8_0 * tmp = static_cast<block_q8_0 *>(tmp_);
    const int64_t nb = n_in / 32;
    quantize_row_q8_0(x, tmp, n_in);
    for (int64_t b = 0; b < nb; ++b) {
        char * a = out + size_t(b) * A_BLOCK;
        std::memcpy(a, tmp[b].qs, 32);
        const float dx = fp16_to_fp32(tmp[b].d);
        int32_t c = 0;
        if (OFFSET != 0) {
            for (int j = 0; j < 32; ++j) c += tmp[b].qs[j];
            c *= -OFFSET;
        }
        std::memcpy(a + 32, &dx, 4);
        std::memcpy(a + 36, &c, 4);
    }
}

} // namespace
#endif

#if defined(GLOAS_MATMUL_AVX2)
namespace {

constexpr int MR = 8, MT = 4;
template <type WT> constexpr size_t LEVEL_BYTES = WT == type::Q4_0 ? 256 : 512;
template <type WT> constexpr size_t W_BLOCK = LEVEL_BYTES<WT> + 32;

// Block b of row `row` as 32 levels (Q4_0) or values (Q8_0), and its scale.
template <type WT> inline __m256i block_values(const char * row, int64_t b, float & d);
template <> inline __m256i block_values<type::Q4_0>(const char * row, int64_t b, float & d) {
    const char * p = row + size_t(b) * sizeof(block_q4_0);
    uint16_t h;
    std::memcpy(&h, p, 2);
    d = _cvtsh_ss(h);
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p + 2));
    const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
}
template <> inline __m256i block_values<type::Q8_0>(const char * row, int64_t b, float & d) {
    const char * p = row + size_t(b) * sizeof(block_q8_0);
    uint16_t h;
    std::memcpy(&h, p, 2);
    d = _cvtsh_ss(h);
    return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p + 2));
}

template <type WT>
void unpack_q(const tensor & w, int64_t r0, int R, int64_t n_in, char * out) {
    const int64_t nb = n_in / 32;
    const char * rows[MR];
    for (int r = 0; r < MR; ++r) rows[r] = static_cast<const char *>(w.row(r0 + std::min(r, R - 1)));
    for (int64_t b = 0; b < nb; ++b) {
        char * o = out + size_t(b) * W_BLOCK<WT>;
        __m256i v[MR];
        alignas(32) float dw[MR];
        for (int r = 0; r < MR; ++r) {
            v[r] = block_values<WT>(rows[r], b, dw[r]);
            if (r >= R) {
                v[r] = _mm256_setzero_si256();
                dw[r] = 0.0f;
            }
        }
        if (WT == type::Q8_0) {
            __m256i a[MR];
            for (int r = 0; r < MR; ++r) a[r] = _mm256_abs_epi8(v[r]);
            transpose8_store(a, o);
            transpose8_store(v, o + 256);
        } else {
            transpose8_store(v, o);
        }
        _mm256_storeu_ps(reinterpret_cast<float *>(o + LEVEL_BYTES<WT>), _mm256_load_ps(dw));
    }
}

template <type WT, int T>
void tile_q(int R, const char * wt, const char * act, size_t a_row, int64_t nb, float * y, int64_t ys, bool accumulate) {
    __m256 acc[T];
    for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < nb; ++b) {
        const char * w = wt + size_t(b) * W_BLOCK<WT>;
        const char * a = act + size_t(b) * A_BLOCK;
        __m256i isum[T];
        if (WT == type::Q4_0) {
            #pragma GCC unroll 2
            for (int h = 0; h < 2; ++h) {
                __m256i p[T];
                #pragma GCC unroll 4
                for (int k = 4 * h; k < 4 * h + 4; ++k) {
                    const __m256i wk = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(w + 32 * k));
                    #pragma GCC unroll 4
                    for (int t = 0; t < T; ++t) {
                        const __m256i pk = _mm256_maddubs_epi16(wk, _mm256_set1_epi32(load32(a + t * a_row + 4 * k)));
                        p[t] = k == 4 * h ? pk : _mm256_add_epi16(p[t], pk);
                    }
                }
                #pragma GCC unroll 4
                for (int t = 0; t < T; ++t) {
                    const __m256i m = _mm256_madd_epi16(p[t], ones);
                    isum[t] = h == 0 ? m : _mm256_add_epi32(isum[t], m);
                }
            }
            #pragma GCC unroll 4
            for (int t = 0; t < T; ++t) isum[t] = _mm256_add_epi32(isum[t], _mm256_set1_epi32(load32(a + t * a_row + 36)));
        } else {
            #pragma GCC unroll 8
            for (int k = 0; k < 8; ++k) {
                const __m256i wa = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(w + 32 * k));
                const __m256i ws = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(w + 256 + 32 * k));
                #pragma GCC unroll 4
                for (int t = 0; t < T; ++t) {
                    const __m256i xs = _mm256_sign_epi8(_mm256_set1_epi32(load32(a + t * a_row + 4 * k)), ws);
                    const __m256i m = _mm256_madd_epi16(_mm256_maddubs_epi16(wa, xs), ones);
                    isum[t] = k == 0 ? m : _mm256_add_epi32(isum[t], m);
                }
            }
        }
        const __m256 dw = _mm256_loadu_ps(reinterpret_cast<const float *>(w + LEVEL_BYTES<WT>));
        #pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
            const __m256 s = _mm256_mul_ps(dw, _mm256_set1_ps(loadf(a + t * a_row + 32)));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), s, acc[t]);
        }
    }
    store_rows(acc, R, y, ys, accumulate);
}

template <type WT>
void tile_q_any(int R, int T, const char * wt, const char * act, size_t a_row, int64_t ng, float * y, int64_t ys,
                bool accumulate) {
    with_tokens<MT>(T, [&](auto n) { tile_q<WT, decltype(n)::value>(R, wt, act, a_row, ng, y, ys, accumulate); });
}

// Fewer tokens than min_tokens: the rows' one pass of matmul_blocks beats
// unpacking them first.
template <type WT> constexpr tile_format LEGACY_FORMAT = {
    MR, MT, 32, A_BLOCK, W_BLOCK<WT>, sizeof(block_q8_0), convert_q<WT == type::Q4_0 ? 8 : 0>, unpack_q<WT>, tile_q_any<WT>, 8};

} // namespace
#endif

#if defined(GLOAS_MATMUL_AVX512_TILES)
namespace {

// AVX-512 VNNI: 16 rows per tile, a vector k holding values 4k .. 4k+3 of
// each (row r at bytes 4r .. 4r+3; the 8 vectors of a block: 512 bytes),
// then dw [16] f32. Levels are unsigned: Q4_0 the nibbles, Q8_0 q + 128
// (q ^ 0x80); vpdpbusd multiplies them by 4 broadcast activation bytes and
// adds each row's 4 products into its own 32-bit lane, starting from the
// act's cx = -OFFSET * sum(x), so a block's 8 steps end at the exact dot.
constexpr int MR = 16, MT = 8;
constexpr size_t W_BLOCK = 512 + 64;

template <type WT>
void unpack_q(const tensor & w, int64_t r0, int R, int64_t n_in, char * out) {
    const int64_t nb = n_in / 32;
    const char * rows[MR];
    for (int r = 0; r < MR; ++r) rows[r] = static_cast<const char *>(w.row(r0 + std::min(r, R - 1)));
    alignas(64) char half[2][256];
    for (int64_t b = 0; b < nb; ++b) {
        char * o = out + size_t(b) * W_BLOCK;
        alignas(64) float dw[MR];
        for (int h = 0; h < 2; ++h) {
            __m256i v[8];
            for (int i = 0; i < 8; ++i) {
                const int r = 8 * h + i;
                uint16_t d;
                if (WT == type::Q4_0) {
                    const char * p = rows[r] + size_t(b) * sizeof(block_q4_0);
                    std::memcpy(&d, p, 2);
                    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p + 2));
                    v[i] = _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1),
                                            _mm256_set1_epi8(0x0f));
                } else {
                    const char * p = rows[r] + size_t(b) * sizeof(block_q8_0);
                    std::memcpy(&d, p, 2);
                    v[i] = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p + 2)),
                                            _mm256_set1_epi8(char(0x80)));
                }
                dw[r] = _cvtsh_ss(d);
                if (r >= R) {
                    v[i] = _mm256_setzero_si256();
                    dw[r] = 0.0f;
                }
            }
            transpose8_store(v, half[h]);
        }
        for (int k = 0; k < 8; ++k) {
            const __m512i lo = _mm512_castsi256_si512(_mm256_load_si256(reinterpret_cast<const __m256i *>(half[0] + 32 * k)));
            _mm512_storeu_si512(o + 64 * k,
                                _mm512_inserti64x4(lo, _mm256_load_si256(reinterpret_cast<const __m256i *>(half[1] + 32 * k)), 1));
        }
        _mm512_storeu_ps(o + 512, _mm512_load_ps(dw));
    }
}

template <int T>
void tile_q(int R, const char * wt, const char * act, size_t a_row, int64_t nb, float * y, int64_t ys, bool accumulate) {
    __m512 acc[T];
    #pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const char * w = wt + size_t(b) * W_BLOCK;
        const char * a = act + size_t(b) * A_BLOCK;
        __m512i isum[T];
        #pragma GCC unroll 8
        for (int t = 0; t < T; ++t) isum[t] = _mm512_set1_epi32(load32(a + t * a_row + 36));
        #pragma GCC unroll 8
        for (int k = 0; k < 8; ++k) {
            const __m512i wk = _mm512_loadu_si512(w + 64 * k);
            #pragma GCC unroll 8
            for (int t = 0; t < T; ++t)
                isum[t] = _mm512_dpbusd_epi32(isum[t], wk, _mm512_set1_epi32(load32(a + t * a_row + 4 * k)));
        }
        const __m512 dw = _mm512_loadu_ps(w + 512);
        #pragma GCC unroll 8
        for (int t = 0; t < T; ++t)
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(dw, _mm512_set1_ps(loadf(a + t * a_row + 32))),
                                     acc[t]);
    }
    store_rows(acc, R, y, ys, accumulate);
}

void tile_q_any(int R, int T, const char * wt, const char * act, size_t a_row, int64_t ng, float * y, int64_t ys,
                bool accumulate) {
    with_tokens<MT>(T, [&](auto n) { tile_q<decltype(n)::value>(R, wt, act, a_row, ng, y, ys, accumulate); });
}

// min_tokens 1: the direct kernels (tensor/matmul.cpp) take the calls of up to
// their direct_max tokens.
template <type WT> constexpr tile_format LEGACY_FORMAT = {
    MR, MT, 32, A_BLOCK, W_BLOCK, sizeof(block_q8_0), convert_q<WT == type::Q4_0 ? 8 : 128>, unpack_q<WT>, tile_q_any, 1};

} // namespace
#endif

#if defined(GLOAS_MATMUL_TILES)
const tile_format * legacy_tile_format(type t) {
    switch (t) {
    case type::Q4_0: return &LEGACY_FORMAT<type::Q4_0>;
    case type::Q8_0: return &LEGACY_FORMAT<type::Q8_0>;
    default: return nullptr;
    }
}

const tile_format * tile_format_for(type t) {
    if (const tile_format * f = legacy_tile_format(t)) return f;
#if defined(GLOAS_MATMUL_AVX2)
    if (const tile_format * f = avx2_k_format(t)) return f;
    return avx2_float_format(t);
#else
    return avx512_k_format(t);
#endif
}

size_t tiles_work_size(const tile_format & f, int64_t n_in, int64_t n_tok) {
    return size_t(f.n_groups(n_in)) * f.a_group * size_t(n_tok) + ALIGN;
}

void matmul_tiles(const mm_set & set, const float * x, int64_t n_tok, void * work, const tile_format & f) {
    const int64_t n_in = set.w[0]->ne[0], ng = f.n_groups(n_in);
    const size_t a_row = size_t(ng) * f.a_group, w_tile = size_t(ng) * f.w_group;
    // groups per reduction segment, and tokens per chunk (a multiple of mt)
    const int64_t seg = std::max<int64_t>(1, int64_t(SEG_BYTES / (f.w_group + size_t(f.mt) * f.a_group)));
    const int64_t chunk = std::max<int64_t>(f.mt, int64_t(CHUNK_BYTES / a_row) / f.mt * f.mt);
    char * act = align_up(work);
    const int64_t n_tiles = set.tiles(f.mr);
    const int nth = threads_for(double(set.rows()) * double(n_in) * double(n_tok), n_tiles);

    parallel_for(n_tok, n_tok >= 16 ? nth : 1, 0, [&](int64_t b, int64_t e) {
        char * tmp = thread_scratch(size_t(ng) * f.tmp_group);
        for (int64_t t = b; t < e; ++t) f.convert(x + t * n_in, n_in, act + size_t(t) * a_row, tmp);
    });
    for (int64_t t0 = 0; t0 < n_tok; t0 += chunk) {
        const int64_t t1 = std::min(n_tok, t0 + chunk);
        parallel_for(n_tiles, nth, 0, [&](int64_t b, int64_t e) {
            char * wt = thread_scratch(w_tile);
            set.for_rows(f.mr, b, e, [&](int iw, int64_t r0, int64_t r1) {
                const tensor & w = *set.w[iw];
                float * y = set.y[iw];
                const int64_t n_out = w.nrows();
                for (int64_t r = r0; r < r1; r += f.mr) {
                    const int R = int(std::min<int64_t>(f.mr, r1 - r));
                    f.unpack(w, r, R, n_in, wt);
                    for (int64_t g0 = 0; g0 < ng; g0 += seg) {
                        const int64_t g1 = std::min(ng, g0 + seg);
                        for (int64_t t = t0; t < t1; t += f.mt) {
                            const int T = int(std::min<int64_t>(f.mt, t1 - t));
                            f.tile(R, T, wt + size_t(g0) * f.w_group, act + size_t(t) * a_row + size_t(g0) * f.a_group,
                                   a_row, g1 - g0, y + t * n_out + r, n_out, g0 > 0);
                        }
                    }
                }
            });
        });
    }
}

#endif

GLOAS_ISA_END
} // namespace gloas::ops::mm
