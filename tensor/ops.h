// CPU ops used by the decoder.
//
// Every op has a scalar reference (`*_ref`) that defines its result and a fast
// version (AVX-512 / AVX2 inside the kernel, scalar tail) tested against it.
// Ops that are worth it split their work over the threads of the pool
// (tensor/thread-pool.h, set_n_threads); the small ones run on the calling
// thread.
//
// Shapes are given as (rows, cols) with the last index fastest.
#pragma once

#include "tensor/tensor.h"

#include <cstddef>
#include <cstdint>

namespace gloas::ops {

// Threads used by parallel ops (and by OpenMP regions that name no count);
// n <= 0: the default, one per physical core not busy with other work
// (thread-pool.h default_threads).
void set_n_threads(int n);
int  n_threads();

// Bytes of scratch that matmul needs for activations x of (n_tok, n_in)
// converted to w's vec_dot_type (0 when that is F32). The bytes may be more
// than n_tok rows of vec_dot_type: with AVX-512 VNNI, Q4_0 / Q8_0 weights pair
// with Q8_0 activations and Q4_K / Q5_K / Q6_K weights with Q8_K activations,
// in a layout private to tensor/matmul.cpp (values, f32 scales and block
// sums, 64-byte aligned), defined by matmul_ref's result.
size_t matmul_work_size(type wt, int64_t n_in, int64_t n_tok);

// y (n_tok, n_out) = x (n_tok, n_in) · w^T, with w of shape (n_out, n_in)
// (w.ne = {n_in, n_out}) in any known type. Activations are converted to w's
// vec_dot_type once per row into `work` (matmul_work_size bytes), then every
// weight row is read once per chunk of tokens (a few hundred KiB of
// activations) and reused from registers across 4 tokens at a time.
// matmul differs from matmul_ref only by float rounding: integer block sums
// are exact, float sums run in another order (the float references sum in
// double).
void matmul    (const tensor & w, const float * x, int64_t n_tok, float * y, void * work);
void matmul_ref(const tensor & w, const float * x, int64_t n_tok, float * y);
// y[i] (n_tok, rows of w[i]) = x · w[i]^T for n matrices of the same input
// width (the projections of one normed input: Q, K, V; gate and up): the
// activations are converted once per run of matrices of one type and those
// are computed in one job of the thread pool. work: the largest matmul_work_size of
// the matrices. Results equal matmul's for each matrix.
void matmul_n(const tensor * const * w, float * const * y, int n, const float * x, int64_t n_tok, void * work);

// y (n) = row `i` of w (dequantized / widened).
void get_row(const tensor & w, int64_t i, float * y);

// y = x / sqrt(mean(x^2) + eps) * g, n values. y may alias x.
void rmsnorm    (float * y, const float * x, const float * g, int64_t n, float eps);
void rmsnorm_ref(float * y, const float * x, const float * g, int64_t n, float eps);

// Rotary embedding in place on x (n_head, head_dim) at position `pos`, rotating
// the first n_rot dims of each head as adjacent pairs (x[2i], x[2i+1]) with
// angle pos * freq_base^(-2i/n_rot) (GGUF/llama.cpp "NORM" ordering, as
// llama2.c).
// rope is rope_ex with rope_params{NORM, freq_base} (bit for bit).
void rope    (float * x, int64_t n_head, int64_t head_dim, int64_t n_rot, int64_t pos, float freq_base);
void rope_ref(float * x, int64_t n_head, int64_t head_dim, int64_t n_rot, int64_t pos, float freq_base);

// Which dims of a head rotate together (llama.cpp's rope types; the values are
// its LLAMA_ROPE_TYPE_* numbers).
enum class rope_style : int32_t {
    NORM = 0,  // pairs (x[2i], x[2i+1]): Llama, Mistral, TinyLlama, SmolLM, llama2.c
    NEOX = 2,  // pairs (x[i], x[i + n_rot/2]): Qwen2, GPT-NeoX
};
const char * rope_style_name(rope_style s);  // "norm", "neox"

struct rope_params {
    rope_style style = rope_style::NORM;
    float freq_base = 10000.0f;
    float freq_scale = 1.0f;          // linear scaling: 1 / rope.scaling.factor
    const float * factors = nullptr;  // (n_rot/2) or null: Llama 3 rope_freqs.weight
};

// Rotary embedding in place on x (n_head, head_dim) at position `pos`: pair i
// of the first n_rot dims of each head (dims past n_rot are left alone) turns
// by the angle
//   theta_i = pos * freq_scale * freq_base^(-2i/n_rot) / factors[i]
// (factors[i] taken as 1 when null), as llama.cpp's ggml_rope_ext with
// freq_factors. The angle is linear in pos and pos may be negative, so
// rope_ex(pos) followed by rope_ex(-d) equals rope_ex(pos - d) up to float
// rounding (re-positioning cached keys relies on this).
// Preconditions (GLOAS_ASSERT): n_rot even, 0 < n_rot <= head_dim.
void rope_ex    (float * x, int64_t n_head, int64_t head_dim, int64_t n_rot, int64_t pos, const rope_params & p);
void rope_ex_ref(float * x, int64_t n_head, int64_t head_dim, int64_t n_rot, int64_t pos, const rope_params & p);

// In-place softmax over n values.
void softmax    (float * x, int64_t n);
void softmax_ref(float * x, int64_t n);

// y = silu(g) * u, n values. y may alias g or u.
void silu_mul    (float * y, const float * g, const float * u, int64_t n);
void silu_mul_ref(float * y, const float * g, const float * u, int64_t n);

// y += x, n values.
void add(float * y, const float * x, int64_t n);

} // namespace gloas::ops
