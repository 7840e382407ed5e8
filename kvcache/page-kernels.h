// Internal to the page attention kernels, shared by page-attend.cpp (the
// portable kernels, the AVX-512 float register kernels and the dispatch),
// page-attend-int.cpp (the AVX-512 integer register kernels of Q8_0, Q4_0 and
// Q4_KIVI pages), page-attend-kivi.cpp (the AVX2 ones) and
// page-attend-float.cpp (the AVX2 float register kernel).
// Not part of the API: page.h is.
#pragma once

#include "kvcache/page.h"
#include "quant/simd.h"

#include <cstddef>
#include <cstdint>
#include <type_traits>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__F16C__)
#define GLOAS_PAGE_AVX512 1
#if defined(__AVX512VNNI__) && defined(__AVX512VBMI__)
#define GLOAS_PAGE_VNNI 1
#endif
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define GLOAS_PAGE_AVX2 1  // the AVX2 register kernels: Q8_0, Q4_0 and Q4_KIVI pages (page-attend-kivi.cpp), float pages (page-attend-float.cpp)
#endif

// In the variant's inline namespace (quant/isa.h): each variant's two files
// share their own copy.
namespace gloas::page_kernels { inline namespace GLOAS_ISA {

constexpr int IW = 32;                 // integer kernels: tokens per window, one block of every row
constexpr float Q_TINY = 1e-30f;       // a head's largest |q_c d_c| or window probability below this counts as 0

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
    // kr, vr: the next piece's D rows of K (rbk bytes each) and of V (rbv).
    next_prefetch(const char * kr, const char * vr, size_t rbk, size_t rbv, int D)
        : k_(line_of(kr)), v_(line_of(vr)), k_end_(kr + size_t(D) * rbk), v_end_(vr + size_t(D) * rbv),
          k_due_(size_t(kr - k_) + 64), v_due_(size_t(vr - v_) + 64), rbk_(rbk), rbv_(rbv) {}
    void k_rows(int n) { fetch(k_, k_end_, k_due_, size_t(n) * rbk_); }
    void v_rows(int n) { fetch(v_, v_end_, v_due_, size_t(n) * rbv_); }

private:
    static const char * line_of(const char * p) { return p - (reinterpret_cast<uintptr_t>(p) & 63); }
    static void fetch(const char *& cur, const char * end, size_t & due, size_t bytes) {
        for (due += bytes; due >= 64 && cur < end; due -= 64, cur += 64) __builtin_prefetch(cur, 0, 3);
    }
    const char * k_ = nullptr, * v_ = nullptr;          // next line to prefetch
    const char * k_end_ = nullptr, * v_end_ = nullptr;  // end of the next piece's K and V rows
    size_t k_due_ = 0, v_due_ = 0;                      // bytes due to be prefetched
    size_t rbk_ = 0, rbv_ = 0;                          // the next piece's K and V row bytes
};

// Calls f(std::integral_constant<int, GN>(), h) for consecutive chunks of
// GN = 8, 4, 2 and 1 heads from h = 0 to n_heads: the register kernels take
// a chunk's K/V once for all its heads.
template <class F>
inline void for_head_chunks(int n_heads, F && f) {
    int h = 0;
    auto run = [&](auto gn) {
        f(gn, h);
        h += decltype(gn)::value;
    };
    while (n_heads - h >= 8) run(std::integral_constant<int, 8>());
    if (n_heads - h >= 4) run(std::integral_constant<int, 4>());
    if (n_heads - h >= 2) run(std::integral_constant<int, 2>());
    if (n_heads - h >= 1) run(std::integral_constant<int, 1>());
}

#if defined(GLOAS_PAGE_AVX512)

constexpr int MAX_D = 256;  // head_dim of the register kernels; beyond it the portable ones

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

#endif // GLOAS_PAGE_AVX512

#if defined(GLOAS_PAGE_AVX512) || defined(GLOAS_PAGE_AVX2)
// Heads [0, n_heads) of q (n_heads, D), counted by cnt, over one piece of a
// Q8_0 or Q4_0 page: the integer register kernels, equal to
// attend_int_portable (AVX-512: page-attend-int.cpp, D <= MAX_D, Q8_0 with
// VNNI / VBMI only; AVX2: page-attend-kivi.cpp, any D). kr, vr: the piece's D
// rows of K and of V, rb bytes each.
void attend_int(type t, const char * kr, const char * vr, size_t rb, int D, const head_counts & cnt, int n_heads,
                const float * q, attn_state & s, next_prefetch & pf);

// The same over one piece of a Q4_KIVI page: kr its D K rows (Q4_1 blocks,
// rbk bytes apart), vr its D V rows (Q4_0, rbv apart); the integer algorithm
// of page.h with the K minima's bias, equal to attend_int_portable (AVX-512:
// page-attend-int.cpp, D <= MAX_D; AVX2: page-attend-kivi.cpp, any D).
void attend_kivi(const char * kr, const char * vr, size_t rbk, size_t rbv, int D, const head_counts & cnt, int n_heads,
                 const float * q, attn_state & s, next_prefetch & pf);
#endif

#if defined(GLOAS_PAGE_AVX2)
// The same over one piece of an F32, F16 or BF16 page (rows of P tokens, P a
// multiple of 8; the float algorithm of attend_portable, equal within
// rounding): page-attend-float.cpp.
void attend_float(type t, const char * kr, const char * vr, size_t rb, int D, const head_counts & cnt, int n_heads,
                  const float * q, attn_state & s, next_prefetch & pf);
#endif

}} // namespace gloas::page_kernels::GLOAS_ISA
