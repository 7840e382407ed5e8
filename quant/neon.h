// Internal to the kernels: the NEON variant (quant/isa.h, variant::neon:
// ARMv8.2-A with the dot-product and fp16 arithmetic extensions). Where the
// translation unit is compiled with both (the neon variant of an aarch64
// build, or a GLOAS_NATIVE=ON build on such a CPU), GLOAS_NEON is 1, the
// intrinsics are included and the NEON kernels of quant/vec-dot-neon.cpp are
// declared, in the variant's namespace; the generic kernels of the files with
// SIMD paths call them in place of their portable loops.
#pragma once

#include "quant/blocks.h"
#include "quant/isa.h"
#include "quant/types.h"

#include <cstddef>
#include <cstdint>

#if defined(__aarch64__) && defined(__ARM_NEON) && defined(__ARM_FEATURE_DOTPROD) && \
    defined(__ARM_FEATURE_FP16_VECTOR_ARITHMETIC)
#define GLOAS_NEON 1
#include <arm_neon.h>

namespace gloas::neon_kernels { inline namespace GLOAS_ISA {

// The dot products of quant/quant.h (same contracts): int8 dot products
// (SDOT) per block, exact in int32, scaled per block in float lanes; float
// rows by FMA in f32 lanes (f16 and bf16 weights widened to f32).
float vec_dot_f32(int64_t n, const float * w, const float * x);
float vec_dot_f16(int64_t n, const uint16_t * w, const float * x);
float vec_dot_bf16(int64_t n, const uint16_t * w, const float * x);
float vec_dot_q8_0_q8_0(int64_t n, const block_q8_0 * w, const block_q8_0 * x);
float vec_dot_q4_0_q8_0(int64_t n, const block_q4_0 * w, const block_q8_0 * x);
float vec_dot_q4_K_q8_K(int64_t n, const block_q4_K * w, const block_q8_K * x);
float vec_dot_q5_K_q8_K(int64_t n, const block_q5_K * w, const block_q8_K * x);
float vec_dot_q6_K_q8_K(int64_t n, const block_q6_K * w, const block_q8_K * x);

// One weight row against 4 activation rows at once, for prefill (each
// weight block loaded and unpacked once for the 4): out[j] = the dot product
// with the activation row at x + j * x_stride bytes. Q4_0 and Q8_0 weights
// (Q8_0 activations); vec_dot_x4(t) is the kernel of weight type t, or null.
using vec_dot_x4_fn = void (*)(int64_t n, const void * w, const void * x, size_t x_stride, float * out);
vec_dot_x4_fn vec_dot_x4(type t);

}} // namespace gloas::neon_kernels::GLOAS_ISA
#endif
