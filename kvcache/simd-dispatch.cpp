#include "kvcache/simd-dispatch.h"

#include "base/error.h"

// The copies of each kernel the build carries, ns::<variant>::name.
#define GLOAS_SIMD_DECLARE(ns, name, fn) namespace ns::GLOAS_SIMD_V { fn name; }
#define GLOAS_SIMD_ENTRY(ns, name, fn) &ns::GLOAS_SIMD_V::name,

#if defined(GLOAS_ISA_NATIVE)
#define GLOAS_SIMD_V native
GLOAS_SIMD_KERNELS(GLOAS_SIMD_DECLARE)
static const gloas::isa::kernel_table NATIVE_TABLE = {GLOAS_SIMD_KERNELS(GLOAS_SIMD_ENTRY)};
#undef GLOAS_SIMD_V
#else
#define GLOAS_SIMD_V scalar
GLOAS_SIMD_KERNELS(GLOAS_SIMD_DECLARE)
static const gloas::isa::kernel_table SCALAR_TABLE = {GLOAS_SIMD_KERNELS(GLOAS_SIMD_ENTRY)};
#undef GLOAS_SIMD_V
#if defined(GLOAS_ISA_HAVE_AVX2)
#define GLOAS_SIMD_V avx2
GLOAS_SIMD_KERNELS(GLOAS_SIMD_DECLARE)
static const gloas::isa::kernel_table AVX2_TABLE = {GLOAS_SIMD_KERNELS(GLOAS_SIMD_ENTRY)};
#undef GLOAS_SIMD_V
#endif
#if defined(GLOAS_ISA_HAVE_AVX512)
#define GLOAS_SIMD_V avx512
GLOAS_SIMD_KERNELS(GLOAS_SIMD_DECLARE)
static const gloas::isa::kernel_table AVX512_TABLE = {GLOAS_SIMD_KERNELS(GLOAS_SIMD_ENTRY)};
#undef GLOAS_SIMD_V
#endif
#if defined(GLOAS_ISA_HAVE_NEON)
#define GLOAS_SIMD_V neon
GLOAS_SIMD_KERNELS(GLOAS_SIMD_DECLARE)
static const gloas::isa::kernel_table NEON_TABLE = {GLOAS_SIMD_KERNELS(GLOAS_SIMD_ENTRY)};
#undef GLOAS_SIMD_V
#endif
#endif

namespace gloas::isa {

// Native: the one table under the variant it was compiled for (quant/isa.cpp
// names it; the others are never active).
const kernel_table * const TABLES[N_VARIANTS] = {
#if defined(GLOAS_ISA_NATIVE)
    &NATIVE_TABLE, &NATIVE_TABLE, &NATIVE_TABLE, &NATIVE_TABLE,
#else
    &SCALAR_TABLE,
#if defined(GLOAS_ISA_HAVE_AVX2)
    &AVX2_TABLE,
#else
    nullptr,
#endif
#if defined(GLOAS_ISA_HAVE_AVX512)
    &AVX512_TABLE,
#else
    nullptr,
#endif
#if defined(GLOAS_ISA_HAVE_NEON)
    &NEON_TABLE,
#else
    nullptr,
#endif
#endif
};

const kernel_table & kernels(variant v) {
    GLOAS_ASSERT(built(v) && "a SIMD variant this build does not carry");
    return *TABLES[int(v)];
}

} // namespace gloas::isa

#define GLOAS_K(name) gloas::isa::kernels().name

namespace gloas {

void fp16_to_fp32_row(const uint16_t * x, float * y, int64_t n) { GLOAS_K(fp16_to_fp32_row)(x, y, n); }
void fp32_to_fp16_row(const float * x, uint16_t * y, int64_t n) { GLOAS_K(fp32_to_fp16_row)(x, y, n); }
void bf16_to_fp32_row(const uint16_t * x, float * y, int64_t n) { GLOAS_K(bf16_to_fp32_row)(x, y, n); }
void fp32_to_bf16_row(const float * x, uint16_t * y, int64_t n) { GLOAS_K(fp32_to_bf16_row)(x, y, n); }

void quantize_row_q8_0(const float * x, block_q8_0 * y, int64_t k) { GLOAS_K(quantize_row_q8_0)(x, y, k); }
void quantize_row_q8_K(const float * x, block_q8_K * y, int64_t k) { GLOAS_K(quantize_row_q8_K)(x, y, k); }
void quantize_row_q4_0_mse(const float * x, block_q4_0 * y, int64_t k) { GLOAS_K(quantize_row_q4_0_mse)(x, y, k); }

float vec_dot_f32(int64_t n, const float * w, const float * x) { return GLOAS_K(vec_dot_f32)(n, w, x); }
float vec_dot_f16(int64_t n, const uint16_t * w, const float * x) { return GLOAS_K(vec_dot_f16)(n, w, x); }
float vec_dot_bf16(int64_t n, const uint16_t * w, const float * x) { return GLOAS_K(vec_dot_bf16)(n, w, x); }
float vec_dot_q8_0_q8_0(int64_t n, const block_q8_0 * w, const block_q8_0 * x) { return GLOAS_K(vec_dot_q8_0_q8_0)(n, w, x); }
float vec_dot_q4_0_q8_0(int64_t n, const block_q4_0 * w, const block_q8_0 * x) { return GLOAS_K(vec_dot_q4_0_q8_0)(n, w, x); }
float vec_dot_q4_1_q8_1(int64_t n, const block_q4_1 * w, const block_q8_1 * x) { return GLOAS_K(vec_dot_q4_1_q8_1)(n, w, x); }
float vec_dot_q5_0_q8_0(int64_t n, const block_q5_0 * w, const block_q8_0 * x) { return GLOAS_K(vec_dot_q5_0_q8_0)(n, w, x); }
float vec_dot_q5_1_q8_1(int64_t n, const block_q5_1 * w, const block_q8_1 * x) { return GLOAS_K(vec_dot_q5_1_q8_1)(n, w, x); }
float vec_dot_q2_K_q8_K(int64_t n, const block_q2_K * w, const block_q8_K * x) { return GLOAS_K(vec_dot_q2_K_q8_K)(n, w, x); }
float vec_dot_q3_K_q8_K(int64_t n, const block_q3_K * w, const block_q8_K * x) { return GLOAS_K(vec_dot_q3_K_q8_K)(n, w, x); }
float vec_dot_q4_K_q8_K(int64_t n, const block_q4_K * w, const block_q8_K * x) { return GLOAS_K(vec_dot_q4_K_q8_K)(n, w, x); }
float vec_dot_q5_K_q8_K(int64_t n, const block_q5_K * w, const block_q8_K * x) { return GLOAS_K(vec_dot_q5_K_q8_K)(n, w, x); }
float vec_dot_q6_K_q8_K(int64_t n, const block_q6_K * w, const block_q8_K * x) { return GLOAS_K(vec_dot_q6_K_q8_K)(n, w, x); }

uint64_t read_words(const uint64_t * p, size_t n, bool prefetch) { return GLOAS_K(read_words)(p, n, prefetch); }

void page_attend(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                 int32_t n, const float * q, int32_t group, attn_state & s, const void * next, type t_next) {
    GLOAS_K(page_attend)(g, t, page, layer, kv_head, n, q, group, s, next, t_next);
}
void page_attend_multi(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                       int32_t n_q, const int32_t * n_valid, const float * q, int32_t group, attn_state & s) {
    GLOAS_K(page_attend_multi)(g, t, page, layer, kv_head, n_q, n_valid, q, group, s);
}
void page_attend_scalar(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                        int32_t n, const float * q, int32_t group, attn_state & s) {
    GLOAS_K(page_attend_scalar)(g, t, page, layer, kv_head, n, q, group, s);
}
void page_attend_multi_scalar(const page_geometry & g, type t, const void * page, int32_t layer, int32_t kv_head,
                              int32_t n_q, const int32_t * n_valid, const float * q, int32_t group, attn_state & s) {
    GLOAS_K(page_attend_multi_scalar)(g, t, page, layer, kv_head, n_q, n_valid, q, group, s);
}
void page_score_bounds_f16(const float * q, int32_t group, int32_t head_dim, const uint16_t * tiles, int32_t n,
                           float * out) {
    GLOAS_K(page_score_bounds_f16)(q, group, head_dim, tiles, n, out);
}

} // namespace gloas

namespace gloas::ops {

void rmsnorm(float * y, const float * x, const float * g, int64_t n, float eps) { GLOAS_K(rmsnorm)(y, x, g, n, eps); }
void rope_ex(float * x, int64_t n_head, int64_t head_dim, int64_t n_rot, int64_t pos, const rope_params & p) {
    GLOAS_K(rope_ex)(x, n_head, head_dim, n_rot, pos, p);
}
void softmax(float * x, int64_t n) { GLOAS_K(softmax)(x, n); }
void silu_mul(float * y, const float * g, const float * u, int64_t n) { GLOAS_K(silu_mul)(y, g, u, n); }
void add(float * y, const float * x, int64_t n) { GLOAS_K(add)(y, x, n); }
size_t matmul_work_size(type wt, int64_t n_in, int64_t n_tok) { return GLOAS_K(matmul_work_size)(wt, n_in, n_tok); }
void matmul(const tensor & w, const float * x, int64_t n_tok, float * y, void * work) {
    GLOAS_K(matmul)(w, x, n_tok, y, work);
}
void matmul_n(const tensor * const * w, float * const * y, int n, const float * x, int64_t n_tok, void * work) {
    GLOAS_K(matmul_n)(w, y, n, x, n_tok, work);
}

} // namespace gloas::ops
