// Row kernels for the block formats: quantize, dequantize, dot products.
//
// Every kernel has a scalar reference (`*_ref`) that defines its result; the
// unsuffixed version is the fastest path the CPU runs (the AVX-512, AVX2 or
// scalar variant chosen at start, quant/isa.h) and is tested against the
// reference. `k`/`n` count values and must be multiples of the block size
// (32 for the legacy types, QK_K = 256 for the K-quants).
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

// ---- legacy formats Q4_1, Q5_0, Q5_1 and the Q8_1 activations -----------------
// (quant/legacy-quants.cpp) ggml's reference formulas:
//   Q4_1: d = (max - min) / 15, m = min, q = min(15, trunc((x - min)/d + 0.5));
//   Q5_0: d = max / -16 (max = the value of largest magnitude), q = min(31, trunc(x/d + 16.5));
//   Q5_1: d = (max - min) / 31, m = min, q = trunc((x - min)/d + 0.5);
//   Q8_1: as Q8_0, plus s = d * sum(q).
void quantize_row_q4_1_ref(const float * x, block_q4_1 * y, int64_t k);
void quantize_row_q5_0_ref(const float * x, block_q5_0 * y, int64_t k);
void quantize_row_q5_1_ref(const float * x, block_q5_1 * y, int64_t k);
void quantize_row_q8_1_ref(const float * x, block_q8_1 * y, int64_t k);
void quantize_row_q8_1    (const float * x, block_q8_1 * y, int64_t k);

void dequantize_row_q4_1(const block_q4_1 * x, float * y, int64_t k);
void dequantize_row_q5_0(const block_q5_0 * x, float * y, int64_t k);
void dequantize_row_q5_1(const block_q5_1 * x, float * y, int64_t k);
void dequantize_row_q8_1(const block_q8_1 * x, float * y, int64_t k);

// References: an exact int32 sum per block, then ggml's float combination
// (Q4_1/Q5_1: d_w*d_x*sum + m_w*s_x).
float vec_dot_q4_1_q8_1_ref(int64_t n, const block_q4_1 * w, const block_q8_1 * x);
float vec_dot_q4_1_q8_1    (int64_t n, const block_q4_1 * w, const block_q8_1 * x);
float vec_dot_q5_0_q8_0_ref(int64_t n, const block_q5_0 * w, const block_q8_0 * x);
float vec_dot_q5_0_q8_0    (int64_t n, const block_q5_0 * w, const block_q8_0 * x);
float vec_dot_q5_1_q8_1_ref(int64_t n, const block_q5_1 * w, const block_q8_1 * x);
float vec_dot_q5_1_q8_1    (int64_t n, const block_q5_1 * w, const block_q8_1 * x);

// ---- K-quants (quant/k-quants.cpp, quant/k-vec-dot.cpp) ------------------------
// `k`/`n` are multiples of QK_K = 256. The quantizers are ggml's reference
// ones (quantize_row_qN_K_ref without an importance matrix): per sub-block a
// scale (and min) search -- make_qkx2_quants for Q2_K/Q4_K/Q5_K, make_q3_quants
// for Q3_K, make_qx_quants for Q6_K -- then the scales quantized to 4, 6 or 8
// bits against the super-block scale and the values requantized with them.
// Dequantization is bit-exact with ggml's dequantize_row_qN_K.
void quantize_row_q2_K_ref(const float * x, block_q2_K * y, int64_t k);
void quantize_row_q3_K_ref(const float * x, block_q3_K * y, int64_t k);
void quantize_row_q4_K_ref(const float * x, block_q4_K * y, int64_t k);
void quantize_row_q5_K_ref(const float * x, block_q5_K * y, int64_t k);
void quantize_row_q6_K_ref(const float * x, block_q6_K * y, int64_t k);
// Q8_K activations: d = max / -127 (max = the value of largest magnitude),
// q = round-half-even(x / d) capped at 127, bsums of 16.
void quantize_row_q8_K_ref(const float * x, block_q8_K * y, int64_t k);
void quantize_row_q8_K    (const float * x, block_q8_K * y, int64_t k);

void dequantize_row_q2_K(const block_q2_K * x, float * y, int64_t k);
void dequantize_row_q3_K(const block_q3_K * x, float * y, int64_t k);
void dequantize_row_q4_K(const block_q4_K * x, float * y, int64_t k);
void dequantize_row_q5_K(const block_q5_K * x, float * y, int64_t k);
void dequantize_row_q6_K(const block_q6_K * x, float * y, int64_t k);
void dequantize_row_q8_K(const block_q8_K * x, float * y, int64_t k);

// Dot products with Q8_K activations. The references sum each super-block
// exactly in int32 -- sum_j sc_j * sum_i q_i x_i and sum_j m_j * bsum_j --
// and combine the super-blocks in float: s += d_x * (d_w * sumi - dmin_w * summ).
float vec_dot_q2_K_q8_K_ref(int64_t n, const block_q2_K * w, const block_q8_K * x);
float vec_dot_q2_K_q8_K    (int64_t n, const block_q2_K * w, const block_q8_K * x);
float vec_dot_q3_K_q8_K_ref(int64_t n, const block_q3_K * w, const block_q8_K * x);
float vec_dot_q3_K_q8_K    (int64_t n, const block_q3_K * w, const block_q8_K * x);
float vec_dot_q4_K_q8_K_ref(int64_t n, const block_q4_K * w, const block_q8_K * x);
float vec_dot_q4_K_q8_K    (int64_t n, const block_q4_K * w, const block_q8_K * x);
float vec_dot_q5_K_q8_K_ref(int64_t n, const block_q5_K * w, const block_q8_K * x);
float vec_dot_q5_K_q8_K    (int64_t n, const block_q5_K * w, const block_q8_K * x);
float vec_dot_q6_K_q8_K_ref(int64_t n, const block_q6_K * w, const block_q8_K * x);
float vec_dot_q6_K_q8_K    (int64_t n, const block_q6_K * w, const block_q8_K * x);

} // namespace gloas
