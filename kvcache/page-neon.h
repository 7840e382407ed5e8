// Internal to the page attention kernels: the NEON kernels
// (kvcache/page-attend-neon.cpp), declared where GLOAS_NEON is 1
// (quant/neon.h). page-attend.cpp and page.cpp call them in place of the
// portable ones.
#pragma once

#include "kvcache/page-kernels.h"
#include "quant/neon.h"

#if defined(GLOAS_NEON)
namespace gloas::page_kernels { inline namespace GLOAS_ISA {

// The integer algorithm of Q8_0 and Q4_0 pages (page.h), as
// attend_int_portable in page-attend.cpp (its scalar twin) computes it: the
// same integer scores and outputs, by SDOT / UDOT over K transposed once per
// window to 4 channels per token and V rows against the quantized
// probabilities; the per-head query rounding and softmax step are the twin's.
// Arguments as attend_int_portable's; false (nothing done) where head_dim is
// not a multiple of 4.
bool attend_int_neon(type t, const char * kr, const char * vr, size_t rb, int D, const head_counts & cnt,
                     int n_heads, const float * q, attn_state & s, next_prefetch & pf);

// The same over one piece of a Q4_KIVI page: kr its D K rows (Q4_1 blocks,
// rbk bytes apart), vr its D V rows (Q4_0, rbv apart). Q4_0's algorithm on
// the K nibbles, plus each head's bias sum_c q_c * mk_c (the K minima) added
// to its scores: attend_int_portable's integers and float operations, in its
// order. False (nothing done) where head_dim is not a multiple of 4 or
// exceeds 4096.
bool attend_kivi_neon(const char * kr, const char * vr, size_t rbk, size_t rbv, int D, const head_counts & cnt,
                      int n_heads, const float * q, attn_state & s, next_prefetch & pf);

// The float algorithm of F16 and F32 pages, as attend_portable in
// page-attend.cpp (its scalar twin): per window of 32 tokens K and V are
// widened to f32 once for all heads; scores by FMA of each head's query
// value with a K row, outputs by FMA of a V row with the head's
// probabilities, 4 channels reduced together. Arguments as
// attend_portable's; false (nothing done) for other types.
bool attend_float_neon(type t, const char * kr, const char * vr, size_t rb, int D, const head_counts & cnt,
                       int n_heads, const float * q, attn_state & s, next_prefetch & pf);

// page_score_bounds_f16 (page.h, the Quest page scores; same contract): per
// tile of SUMMARY_TILE pages, each head's bound in 8 vectors of 4 pages,
// FMA of the query value with the kmax (or kmin) row its sign selects.
void score_bounds_f16_neon(const float * q, int32_t group, int32_t head_dim, const uint16_t * tiles, int32_t n,
                           float * out);

}} // namespace gloas::page_kernels::GLOAS_ISA
#endif
