// The launches of the CUDA kernels, one op family per file (get-rows.cu,
// rms-norm.cu, rope.cu, elementwise.cu, matmul.cu, attention.cu), as the CUDA backend
// (cuda-backend.cu) calls them. Every pointer is device memory; every launch
// is queued on `s` and throws gloas::error when it cannot be made. Each
// kernel's result and error bound against the CPU reference it mirrors is
// stated at its launch function.
#pragma once

#include "tensor/cuda/common.cuh"
#include "tensor/ops.h"

#include <cublas_v2.h>

namespace gloas::cuda {

// y (n, ncols) = rows ids[i] of w (row_bytes apart), widened or dequantized:
// exact (every value is representable in float).
void get_rows(cudaStream_t s, wtype t, const void * w, size_t row_bytes, int64_t ncols, const int32_t * ids, int64_t n,
              float * y);

// Row-wise ops::rmsnorm: the sum of squares in float (the reference sums in
// double): relative error per value <= ~1e-6 for widths up to 16384.
void rmsnorm(cudaStream_t s, float * y, const float * x, const float * g, int64_t n_rows, int64_t width, float eps);

// ops::rope_ex on each row t at pos[t]: the angle, its cos and sin in double
// as rope_ex_ref, so values differ from the reference only where the device's
// double cos / sin differ in the last bit (the float results then by <= 1 ulp).
void rope(cudaStream_t s, float * y, const float * x, int64_t n_tok, int64_t n_head, int64_t head_dim, int64_t n_rot,
          const int32_t * pos, const ops::rope_params & p);

// Elementwise ops: add and bias exact; silu_mul and gelu_mul with the
// device's expf / tanhf (<= 2 ulp each); scale exact; softcap with tanhf.
void add(cudaStream_t s, float * y, const float * x, int64_t n);
void bias(cudaStream_t s, float * y, const float * b, int64_t n_rows, int64_t width);
void silu_mul(cudaStream_t s, float * y, const float * g, const float * u, int64_t n);
void gelu_mul(cudaStream_t s, float * y, const float * g, const float * u, int64_t n);
void scale(cudaStream_t s, float * y, int64_t n_rows, int64_t width, int64_t n_scaled, float v);
void softcap(cudaStream_t s, float * y, int64_t n, float cap);

// Activations as the matmuls read them.
// x (n_tok, n_in) -> Q8_0 blocks (n_tok, n_in/32), bit for bit
// quantize_row_q8_0_ref (n_in a multiple of 32).
void quantize_q8_0(cudaStream_t s, const float * x, int64_t n_tok, int64_t n_in, block_q8_0 * y);
// n floats -> fp16 bits (round to nearest even; past 65504: inf).
void to_f16(cudaStream_t s, const float * x, int64_t n, uint16_t * y);
// n_rows rows of a weight of type t -> fp16 (n_rows, ncols).
void weight_to_f16(cudaStream_t s, wtype t, const void * w, size_t row_bytes, int64_t ncols, int64_t n_rows, uint16_t * y);

// The most tokens the matvec kernel takes at once.
constexpr int64_t MATVEC_MAX_TOK = 8;
// y (n_tok, n_out) = x · w^T for n_tok <= MATVEC_MAX_TOK: one warp per weight
// row, the row read once for all tokens. Q8_0 / Q4_0 weights read xq, the
// activations quantize_q8_0 made: each block's int32 sum is exact, its float
// share sumi * (d_w * d_x) is that of vec_dot_*_ref, and only the order of
// the float sum over blocks differs (lanes, then a warp tree): relative to
// sum |share|, the error is <= (n_blocks + 5) * 2^-24. F32 / F16 / BF16
// weights read x: products in float, summed in the same order (the
// reference sums in double). So do Q4_1, Q5_0, Q5_1 and Q2_K..Q6_K, each
// weight value dequantized in registers as dequantize_row_* gives it
// (cuda_math::*_value, bit for bit): the float dot of the dequantized row,
// which the CPU's vec_dot approximates through 8-bit activations (Q8_1 /
// Q8_K), so against matmul_ref these differ by that rounding (NMSE ~1e-5).
// Those types take a warp per row and a value per lane, the block's scales
// decoded for each value: correct on every type, not tuned for bandwidth
// as the Q8_0 / Q4_0 block kernel is.
void matvec(cudaStream_t s, wtype t, const void * w, size_t row_bytes, int64_t n_in, int64_t n_out, const float * x,
            const block_q8_0 * xq, int64_t n_tok, float * y);

// Prefill: y (n_tok, n_out) = x · w^T with cuBLAS, F16 operands (w16: the
// weight in fp16, x16 the activations) accumulating in F32 (cublasGemmEx).
// Against matmul_ref, NMSE <= ~1e-5 (fp16 rounding of x and of dequantized
// block values, whose fp16 scale times a small integer may round).
void gemm_f16(cublasHandle_t h, const uint16_t * w16, int64_t n_in, int64_t n_out, const uint16_t * x16, int64_t n_tok,
              float * y);
// The same for F32 weights (cublasSgemm, without TF32).
void gemm_f32(cublasHandle_t h, const float * w, int64_t n_in, int64_t n_out, const float * x, int64_t n_tok, float * y);

// Decode attention of one query token over n_kv contiguous positions, all
// heads (the oracle of tests/test-util.h's attention_ref):
//   q    (n_head, head_dim) f32
//   k, v (n_kv, kv_stride) f32, or fp16 when f16; KV head h_kv at h_kv * head_dim
//   out  (n_head, head_dim)
// Query head h reads KV head h / (n_head / n_head_kv); scores are q·k *
// scale. The positions are split into attention_parts(n_kv) parts, each an
// online softmax (cuda_math::softmax_push) into `part` (n_head,
// attention_parts(n_kv), head_dim + 2) floats of scratch, merged in order by
// cuda_math::softmax_merge. Against the softmax in double: relative error
// <= ~1e-5 (float sums over head_dim and over the positions of a part).
// Not yet called by the forward pass (the kv_caches stay on the CPU).
constexpr int ATTENTION_MAX_HEAD_DIM = 256;
int attention_parts(int64_t n_kv);
void attention_decode(cudaStream_t s, const float * q, const void * k, const void * v, bool f16, int64_t n_kv, int n_head,
                      int n_head_kv, int head_dim, int64_t kv_stride, float scale, float * part, float * out);

} // namespace gloas::cuda
