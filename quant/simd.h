// Internal to the kernels: includes the x86 intrinsics where the build has
// them. GCC 12 reports false -W(maybe-)uninitialized warnings from inside the
// AVX-512 intrinsics headers (their _mm512_undefined_* helpers) once they are
// inlined; the pragma scopes the silence to those headers. The helpers live in
// the variant's inline namespace (quant/isa.h), so that the copies compiled
// for different variants are different functions to the linker.
#pragma once

#include "quant/isa.h"
#include "quant/types.h"

#include <cstddef>
#include <cstdint>

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__F16C__)
#pragma GCC diagnostic push
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace gloas::simd {

// e^x as Cephes expf computes it: n = round(x / ln2), r = x - n ln2 (ln2 in
// two parts, LN2_HI exact in few bits), e^r = 1 + r + r^2 p(r) with p's
// coefficients EXP_P[0] (of r^5) .. EXP_P[5] (of 1), Horner's rule, then
// times 2^n.
constexpr float LOG2E = 1.44269504088896341f;
constexpr float LN2_HI = 0.693359375f;
constexpr float LN2_LO = -2.12194440e-4f;
constexpr float EXP_P[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                            4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

// Decode reads each weight once, and a matrix's rows lie one after another,
// so the kernels that read weight blocks row by row ask for the bytes
// STREAM_AHEAD past those they read, a cache line for every 64 bytes they
// take. The hardware prefetcher alone keeps too few lines in flight, and a
// burst of a whole row's prefetches before each row left a fifth to a third
// of the bandwidth unused with two threads (BENCHMARKS.md, "The weight
// stream prefetched by the kernels"; 2048 to 4096 bytes ahead measured
// alike, 1024 worse). Past the end of a matrix the lines are fetched for
// nothing; a prefetch never faults.
constexpr size_t STREAM_AHEAD = 3072;

// Prefetches [p, p + BYTES) STREAM_AHEAD ahead: one line per 64 bytes, so
// consecutive calls on consecutive blocks leave no line out.
template <size_t BYTES>
inline void prefetch_ahead(const void * p) {
    const char * q = static_cast<const char *>(p) + STREAM_AHEAD;
    for (size_t o = 0; o < BYTES; o += 64) __builtin_prefetch(q + o, 0, 3);
}

} // namespace gloas::simd

#if defined(__AVX512F__)
namespace gloas::simd { inline namespace GLOAS_ISA {

// e^x on 16 lanes, relative error about 2e-7 (Cephes expf's polynomial on
// r = x - n ln2, |r| <= ln2/2, then scaled by 2^n with vscalefps, which
// gives 0 for x below about -104 and +inf above 88.73).
inline __m512 exp_ps(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), _mm512_min_ps(_mm512_set1_ps(88.8f), x));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x));
    __m512 p = _mm512_set1_ps(EXP_P[0]);
    for (int k = 1; k < 6; ++k) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P[k]));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

// Mask of the first n lanes (n <= 16).
inline __mmask16 tail_mask(int64_t n) {
    return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
}

}} // namespace gloas::simd::GLOAS_ISA
#endif

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
namespace gloas::simd { inline namespace GLOAS_ISA {

// e^x on 8 lanes, the polynomial of exp_ps above; x is clamped to
// [-87.3, 88.3], so results below about 1.2e-38 read as that value.
inline __m256 exp256_ps(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(-87.3f), _mm256_min_ps(_mm256_set1_ps(88.3f), x));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x));
    __m256 p = _mm256_set1_ps(EXP_P[0]);
    for (int k = 1; k < 6; ++k) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P[k]));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

}} // namespace gloas::simd::GLOAS_ISA
#endif

#if defined(__AVX2__)
namespace gloas::simd { inline namespace GLOAS_ISA {

// op folded over the 8 floats of v, halves first (op: a lane-wise
// operation on two __m128, as _mm_add_ps).
template <class Op>
inline float hreduce256(__m256 v, Op op) {
    __m128 s = op(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = op(s, _mm_movehl_ps(s, s));
    s = op(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// Horizontal sum and max of 8 floats (any build with AVX2).
inline float hsum256(__m256 v) { return hreduce256(v, [](__m128 a, __m128 b) { return _mm_add_ps(a, b); }); }
inline float hmax256(__m256 v) { return hreduce256(v, [](__m128 a, __m128 b) { return _mm_max_ps(a, b); }); }

}} // namespace gloas::simd::GLOAS_ISA
#endif

#if defined(__AVX2__) && defined(__F16C__)
namespace gloas::simd { inline namespace GLOAS_ISA {

// Values i .. i+7 of a row of F32, F16 or BF16 values, as floats.
template <type T> inline __m256 load8(const void * row, int64_t i);
template <> inline __m256 load8<type::F32>(const void * row, int64_t i) {
    return _mm256_loadu_ps(static_cast<const float *>(row) + i);
}
template <> inline __m256 load8<type::F16>(const void * row, int64_t i) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(static_cast<const uint16_t *>(row) + i)));
}
template <> inline __m256 load8<type::BF16>(const void * row, int64_t i) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i *>(static_cast<const uint16_t *>(row) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

}} // namespace gloas::simd::GLOAS_ISA
#endif
