// Internal to the page attention kernels: the NEON kernels
// (kvcache/page-attend-neon.cpp), declared where GLOAS_NEON is 1
// (quant/neon.h). page-attend.cpp calls them in place of the portable ones.
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

}} // namespace gloas::page_kernels::GLOAS_ISA
#endif
