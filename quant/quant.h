// Row kernels for the block formats: quantize, dequantize, dot products.
//
// Every kernel has a scalar reference (`*_ref`) that defines its result; the
// unsuffixed version is the fastest path this build has (AVX-512, AVX2 or
// scalar, chosen at compile time in the kernel) and is tested against the
// reference. `k`/`n` count values and must be multiples of 32 for block types.
#pragma once

#include "quant/blocks.h"

#include <cstddef>
#include <cstdint>

namespace gloas {

// ggml's reference formulas: Q8_0 d = amax/127, q = round(x/d);
// Q4_0 d = max/-8 (max = the value of largest magnitude), q = min(15, x/d + 8.5).
void quantize_row_q8_0_ref(const float * x, block_q8_0 * y, int64_t k);
void quantize_row_q8_0    (const float * x, block_q8_0 * y, int64_t k);
void quantize_row_q4_0_ref(const float * x, block_q4_0 * y, int64_t k);
void quantize_row_q4_0    (const float * x, block_q4_0 * y, int64_t k);

void dequantize_row_q8_0(const block_q8_0 * x, float * y, int64_t k);
void dequantize_row_q4_0(const block_q4_0 * x, float * y, int64_t k);

// Dot products of a weight row with an activation row.
float vec_dot_f32_ref (int64_t n, const float * w, const float * x);
float vec_dot_f32     (int64_t n, const float * w, const float * x);
float vec_dot_f16_ref (int64_t n, const uint16_t * w, const float * x);  // fp16 weights, f32 activations
float vec_dot_f16     (int64_t n, const uint16_t * w, const float * x);
float vec_dot_bf16_ref(int64_t n, const uint16_t * w, const float * x);  // bf16 weights, f32 activations
float vec_dot_bf16    (int64_t n, const uint16_t * w, const float * x);
float vec_dot_q8_0_q8_0_ref(int64_t n, const block_q8_0 * w, const block_q8_0 * x);
float vec_dot_q8_0_q8_0    (int64_t n, const block_q8_0 * w, const block_q8_0 * x);
float vec_dot_q4_0_q8_0_ref(int64_t n, const block_q4_0 * w, const block_q8_0 * x);
float vec_dot_q4_0_q8_0    (int64_t n, const block_q4_0 * w, const block_q8_0 * x);

} // namespace gloas
