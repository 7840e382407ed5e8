// The AVX2 tile formats of Q4_K, Q5_K and Q6_K weights (tensor/matmul-impl.h).
//
// A group is one super-block of 256 values. Layouts:
//   act, per token (from quantize_row_q8_K): qs [256] int8, dx f32, then the
//     activation sums the weights' mins or offset need, int16: Q4_K/Q5_K
//     bs [8] (sums of the 8 sub-blocks of 32), Q6_K bs [16] (the 16 of 16);
//   tile: lv, 64 vectors k of the 8 rows' levels 4k .. 4k+3 (row r at bytes
//     4r .. 4r+3), unsigned: Q4_K 0..15, Q5_K 0..31, Q6_K 0..63 (the value + 32);
//     sc, one vector per sub-block j (8 of 32 values; Q6_K 16 of 16) whose
//     lane r is row r's scale in both 16-bit halves;
//     Q4_K/Q5_K: mn, 4 vectors i whose lane r holds row r's mins m[2i],
//       m[2i+1] as 16-bit pairs; then d [8] and dmin [8] f32;
//     Q6_K: sp, 8 vectors i whose lane r holds scales 2i, 2i+1 as 16-bit
//       pairs; then d [8] f32.
// The micro-kernel broadcasts 4 activation bytes of a token against a vector
// of levels (vpmaddubsw: 16-bit pairs), adds a few steps in 16 bits, then
// vpmaddwd by the sub-block's sc widens to 32 bits and applies the scale, so
// each lane sums sum_j sc_j * (levels . x over sub-block j) of its row. Per
// (super-block, token) the rest is a correction and one float multiply-add:
//   Q4_K/Q5_K: y += d dx * isum - dmin dx * sum_j m_j bs_j  (vpmaddwd mn, bs),
//   Q6_K:      y += d dx * (isum - 32 sum_j sc_j bs_j)      (vpmaddwd sp, bs).
// 16-bit bounds (|x| <= 128): one step's lane is at most 2 * L * 128 for
// levels <= L, so 8 steps of Q4_K (30720), 4 of Q5_K (31744) and 2 of Q6_K
// (32256) fit in int16: Q4_K applies the scale once per sub-block of 32, Q5_K
// twice, Q6_K twice per sub-block of 16. In 32 bits a super-block is at most
// 32 * 2 * 32767 * 128 plus the offset term 32 * 16 * 128 * 2048: far below 2^31.
#include "tensor/matmul-impl.h"

#include "quant/blocks.h"
#include "quant/quant.h"

#include <cstddef>
#include <cstring>

namespace gloas::ops::mm {
inline namespace GLOAS_ISA {  // as tensor/matmul-impl.h declares it

#if defined(GLOAS_MATMUL_AVX2)

namespace {

constexpr int MR = 8, MT = 4;
constexpr size_t LV_BYTES = 64 * 32;  // the levels of a super-block, 8 rows

template <type WT> constexpr bool MINS = WT != type::Q6_K;
// Sub-blocks per super-block, and k-steps (4 values) of one.
template <type WT> constexpr int N_SUB = MINS<WT> ? 8 : 16;
template <type WT> constexpr int SUB_STEPS = 64 / N_SUB<WT>;
// k-steps summed in 16 bits before vpmaddwd (the bounds above).
template <type WT> constexpr int STEPS = WT == type::Q4_K ? 8 : WT == type::Q5_K ? 4 : 2;
// Activation sums per super-block: one per sub-block.
template <type WT> constexpr int N_BS = N_SUB<WT>;

template <type WT> constexpr size_t A_GROUP = 256 + 4 + 2 * size_t(N_BS<WT>);
template <type WT> constexpr size_t SC_OFF = LV_BYTES;
template <type WT> constexpr size_t CORR_OFF = SC_OFF<WT> + 32 * size_t(N_SUB<WT>);  // mn or sp
template <type WT> constexpr size_t D_OFF = CORR_OFF<WT> + 32 * size_t(N_BS<WT> / 2);
template <type WT> constexpr size_t W_GROUP = D_OFF<WT> + (MINS<WT> ? 64 : 32);

template <type WT> struct kblock;
template <> struct kblock<type::Q4_K> { using type = block_q4_K; };
template <> struct kblock<type::Q5_K> { using type = block_q5_K; };
template <> struct kblock<type::Q6_K> { using type = block_q6_K; };
template <type WT> constexpr size_t BLOCK_BYTES = sizeof(typename kblock<WT>::type);

static_assert(offsetof(block_q4_K, scales) == 4 && offsetof(block_q4_K, qs) == 16, "block_q4_K layout");
static_assert(offsetof(block_q5_K, scales) == 4 && offsetof(block_q5_K, qh) == 16 && offsetof(block_q5_K, qs) == 48,
              "block_q5_K layout");
static_assert(offsetof(block_q6_K, qh) == 128 && offsetof(block_q6_K, scales) == 192 && offsetof(block_q6_K, d) == 208,
              "block_q6_K layout");

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
inline float load_half(const char * p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}
inline __m256i load256(const char * p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)); }
// An empty asm on v: the compiler may no longer re-associate a chain of adds
// through it into a tree, which would hold every product of the chain in its
// own register and spill the micro-kernel's accumulators.
inline void pin(__m256i & v) { asm("" : "+x"(v)); }

// One token row -> act layout; tmp: n_in / 256 block_q8_K.
template <type WT>
void convert_k(const float * x, int64_t n_in, char * out, void * tmp_) {
    block_q8_K * q = static_cast<block_q8_K *>(tmp_);
    const int64_t nsb = n_in / QK_K;
    quantize_row_q8_K(x, q, n_in);
    for (int64_t i = 0; i < nsb; ++i) {
        char * a = out + size_t(i) * A_GROUP<WT>;
        std::memcpy(a, q[i].qs, QK_K);
        std::memcpy(a + 256, &q[i].d, 4);
        int16_t bs[N_BS<WT>];
        for (int j = 0; j < N_BS<WT>; ++j)
            bs[j] = MINS<WT> ? int16_t(q[i].bsums[2 * j] + q[i].bsums[2 * j + 1]) : q[i].bsums[j];
        std::memcpy(a + 260, bs, sizeof bs);
    }
}

// Values 32c .. 32c+31 (c < 8) of super-block b, as levels.
template <type WT> inline __m256i k_levels(const char * b, int c);
template <> inline __m256i k_levels<type::Q4_K>(const char * b, int c) {
    const __m256i q = load256(b + 16 + 32 * (c / 2));
    return _mm256_and_si256(c % 2 ? _mm256_srli_epi16(q, 4) : q, _mm256_set1_epi8(0x0f));
}
// Q5_K: bit 4 of value 32c + l is bit c of qh[l].
template <> inline __m256i k_levels<type::Q5_K>(const char * b, int c) {
    const __m256i q = load256(b + 48 + 32 * (c / 2));
    const __m256i lo = _mm256_and_si256(c % 2 ? _mm256_srli_epi16(q, 4) : q, _mm256_set1_epi8(0x0f));
    const __m256i bit = _mm256_set1_epi8(char(1 << c));
    const __m256i hi = _mm256_cmpeq_epi8(_mm256_and_si256(load256(b + 16), bit), bit);
    return _mm256_or_si256(lo, _mm256_and_si256(hi, _mm256_set1_epi8(0x10)));
}
// Q6_K: value 128h + 32s + l: low 4 bits from ql[64h + 32(s % 2) + l] (low
// nibble for s < 2), high 2 bits are bits 2s, 2s+1 of qh[32h + l]. The 16-bit
// shifts that move those to bits 4, 5 carry only bits that the mask drops.
template <> inline __m256i k_levels<type::Q6_K>(const char * b, int c) {
    const int h = c / 4, s = c % 4;
    const __m256i ql = load256(b + 64 * h + 32 * (s % 2));
    const __m256i lo = _mm256_and_si256(s < 2 ? ql : _mm256_srli_epi16(ql, 4), _mm256_set1_epi8(0x0f));
    const __m256i qh = load256(b + 128 + 32 * h);
    const __m256i hs = s < 2 ? _mm256_slli_epi16(qh, 4 - 2 * s) : _mm256_srli_epi16(qh, 2 * s - 4);
    return _mm256_or_si256(lo, _mm256_and_si256(hs, _mm256_set1_epi8(0x30)));
}

// Two 16-bit values as one 32-bit lane.
inline int32_t pair16(int lo, int hi) { return int32_t(uint32_t(uint16_t(lo)) | uint32_t(uint16_t(hi)) << 16); }

// The scales (sc, and mn or sp) and d (and dmin) of super-block b of row r
// into the tile's arrays, lane r.
template <type WT>
inline void k_scales(const char * b, int r, int32_t (*sc)[MR], int32_t (*corr)[MR], float * d, float * dmin) {
    if constexpr (MINS<WT>) {
        // 6-bit scales and mins (quant/blocks.h): words u0, u1, u2 of the 12 bytes
        uint32_t u[3];
        std::memcpy(u, b + 4, 12);
        const uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
        const uint32_t w[4] = {u[0] & m6, (u[2] & m4) | (((u[0] >> 6) & m2) << 4),          // scales 0..3, 4..7
                               u[1] & m6, ((u[2] >> 4) & m4) | (((u[1] >> 6) & m2) << 4)};  // mins 0..3, 4..7
        uint8_t v[16];
        std::memcpy(v, w, 16);
        for (int j = 0; j < 8; ++j) sc[j][r] = pair16(v[j], v[j]);
        for (int i = 0; i < 4; ++i) corr[i][r] = pair16(v[8 + 2 * i], v[9 + 2 * i]);
        d[r] = load_half(b);
        dmin[r] = load_half(b + 2);
    } else {
        const int8_t * s = reinterpret_cast<const int8_t *>(b + 192);
        for (int j = 0; j < 16; ++j) sc[j][r] = pair16(s[j], s[j]);
        for (int i = 0; i < 8; ++i) corr[i][r] = pair16(s[2 * i], s[2 * i + 1]);
        d[r] = load_half(b + 208);
    }
}

template <type WT>
void unpack_k(const tensor & w, int64_t r0, int R, int64_t n_in, char * out) {
    const int64_t nsb = n_in / QK_K;
    const char * rows[MR];
    for (int r = 0; r < MR; ++r) rows[r] = static_cast<const char *>(w.row(r0 + std::min(r, R - 1)));
    for (int64_t i = 0; i < nsb; ++i) {
        char * o = out + size_t(i) * W_GROUP<WT>;
        const size_t bo = size_t(i) * BLOCK_BYTES<WT>;
        for (int c = 0; c < 8; ++c) {
            __m256i v[MR];
            for (int r = 0; r < MR; ++r) v[r] = r < R ? k_levels<WT>(rows[r] + bo, c) : _mm256_setzero_si256();
            transpose8_store(v, o + 256 * c);
        }
        alignas(32) int32_t sc[N_SUB<WT>][MR] = {}, corr[N_BS<WT> / 2][MR] = {};
        alignas(32) float d[2][MR] = {};
        for (int r = 0; r < R; ++r) k_scales<WT>(rows[r] + bo, r, sc, corr, d[0], d[1]);
        std::memcpy(o + SC_OFF<WT>, sc, sizeof sc);
        std::memcpy(o + CORR_OFF<WT>, corr, sizeof corr);
        std::memcpy(o + D_OFF<WT>, d, MINS<WT> ? 64 : 32);
    }
}

template <type WT, int T>
void tile_k(int R, const char * wt, const char * act, size_t a_row, int64_t nsb, float * y, int64_t ys, bool accumulate) {
    constexpr int S = STEPS<WT>;
    __m256 acc[T];
    for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nsb; ++i) {
        const char * w = wt + size_t(i) * W_GROUP<WT>;
        const char * a = act + size_t(i) * A_GROUP<WT>;
        __m256i isum[T];
        for (int t = 0; t < T; ++t) isum[t] = _mm256_setzero_si256();
        for (int k0 = 0; k0 < 64; k0 += S) {
            __m256i p[T];
            #pragma GCC unroll 8
            for (int s = 0; s < S; ++s) {
                const __m256i wk = load256(w + 32 * (k0 + s));
                #pragma GCC unroll 4
                for (int t = 0; t < T; ++t) {
                    const __m256i pk = _mm256_maddubs_epi16(wk, _mm256_set1_epi32(load32(a + t * a_row + 4 * (k0 + s))));
                    p[t] = s == 0 ? pk : _mm256_add_epi16(p[t], pk);
                    pin(p[t]);
                }
            }
            const __m256i sc = load256(w + SC_OFF<WT> + 32 * (k0 / SUB_STEPS<WT>));
            #pragma GCC unroll 4
            for (int t = 0; t < T; ++t) isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(p[t], sc));
        }
        // the mins (Q4_K/Q5_K) or the -32 offset (Q6_K) against the activation sums
        __m256i cs[T];
        #pragma GCC unroll 8
        for (int j = 0; j < N_BS<WT> / 2; ++j) {
            const __m256i cw = load256(w + CORR_OFF<WT> + 32 * j);
            #pragma GCC unroll 4
            for (int t = 0; t < T; ++t) {
                const __m256i m = _mm256_madd_epi16(cw, _mm256_set1_epi32(load32(a + t * a_row + 260 + 4 * j)));
                cs[t] = j == 0 ? m : _mm256_add_epi32(cs[t], m);
                pin(cs[t]);
            }
        }
        const __m256 d = _mm256_loadu_ps(reinterpret_cast<const float *>(w + D_OFF<WT>));
        #pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
            const __m256 dx = _mm256_set1_ps(loadf(a + t * a_row + 256));
            if constexpr (MINS<WT>) {
                const __m256 dmin = _mm256_loadu_ps(reinterpret_cast<const float *>(w + D_OFF<WT> + 32));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(d, dx), acc[t]);
                acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(cs[t]), _mm256_mul_ps(dmin, dx), acc[t]);
            } else {
                const __m256i v = _mm256_sub_epi32(isum[t], _mm256_slli_epi32(cs[t], 5));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), _mm256_mul_ps(d, dx), acc[t]);
            }
        }
    }
    store_rows(acc, R, y, ys, accumulate);
}

template <type WT>
void tile_k_any(int R, int T, const char * wt, const char * act, size_t a_row, int64_t ng, float * y, int64_t ys,
                bool accumulate) {
    with_tokens<MT>(T, [&](auto n) { tile_k<WT, decltype(n)::value>(R, wt, act, a_row, ng, y, ys, accumulate); });
}

// Fewer tokens than min_tokens: the rows' one pass of matmul_blocks beats
// unpacking them first (measured with gloas-kernel-bench: the tiles are
// ahead from 4 tokens on for Q4_K and Q5_K, from about 6 for Q6_K).
template <type WT> constexpr int64_t MIN_TOKENS = WT == type::Q6_K ? 6 : 4;
template <type WT> constexpr tile_format K_FORMAT = {
    MR, MT, QK_K, A_GROUP<WT>, W_GROUP<WT>, sizeof(block_q8_K), convert_k<WT>, unpack_k<WT>, tile_k_any<WT>, MIN_TOKENS<WT>};

} // namespace

const tile_format * avx2_k_format(type t) {
    switch (t) {
    case type::Q4_K: return &K_FORMAT<type::Q4_K>;
    case type::Q5_K: return &K_FORMAT<type::Q5_K>;
    case type::Q6_K: return &K_FORMAT<type::Q6_K>;
    default: return nullptr;
    }
}

#endif

GLOAS_ISA_END
} // namespace gloas::ops::mm
