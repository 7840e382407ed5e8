// The run-time dispatch table of the SIMD kernels: every function that a file
// with SIMD paths compiles once per instruction-set variant (quant/isa.h).
//
// It sits in kvcache/, the highest layer it names, and holds the kernels of
// quant/, tensor/ and kvcache/. Each entry is a public function (declared in
// its layer's header, which callers use as before) whose definition here
// calls the active variant's copy, ns::<variant>::name; the copies' type is
// the public declaration's. Adding a kernel: wrap its definition in
// GLOAS_ISA_BEGIN / GLOAS_ISA_END, add a line below and its one-line
// forwarder in simd-dispatch.cpp.
#pragma once

#include "kvcache/page.h"
#include "quant/fp16.h"
#include "quant/isa.h"
#include "quant/quant-mse.h"
#include "quant/quant.h"
#include "tensor/bandwidth.h"
#include "tensor/ops.h"

namespace gloas::isa {

// page_attend with `next` (the overload the other forwards to).
using page_attend_next_fn = void(const page_geometry &, type, const void *, int32_t, int32_t, int32_t, const float *,
                                 int32_t, attn_state &, const void *, type);

} // namespace gloas::isa

// X(namespace, name, function type): one line per kernel.
#define GLOAS_SIMD_KERNELS(X)                                                   \
    X(gloas, fp16_to_fp32_row, decltype(gloas::fp16_to_fp32_row))               \
    X(gloas, fp32_to_fp16_row, decltype(gloas::fp32_to_fp16_row))               \
    X(gloas, bf16_to_fp32_row, decltype(gloas::bf16_to_fp32_row))               \
    X(gloas, fp32_to_bf16_row, decltype(gloas::fp32_to_bf16_row))               \
    X(gloas, quantize_row_q8_0, decltype(gloas::quantize_row_q8_0))             \
    X(gloas, quantize_row_q8_K, decltype(gloas::quantize_row_q8_K))             \
    X(gloas, quantize_row_q4_0_mse, decltype(gloas::quantize_row_q4_0_mse))     \
    X(gloas, vec_dot_f32, decltype(gloas::vec_dot_f32))                         \
    X(gloas, vec_dot_f16, decltype(gloas::vec_dot_f16))                         \
    X(gloas, vec_dot_bf16, decltype(gloas::vec_dot_bf16))                       \
    X(gloas, vec_dot_q8_0_q8_0, decltype(gloas::vec_dot_q8_0_q8_0))             \
    X(gloas, vec_dot_q4_0_q8_0, decltype(gloas::vec_dot_q4_0_q8_0))             \
    X(gloas, vec_dot_q4_1_q8_1, decltype(gloas::vec_dot_q4_1_q8_1))             \
    X(gloas, vec_dot_q5_0_q8_0, decltype(gloas::vec_dot_q5_0_q8_0))             \
    X(gloas, vec_dot_q5_1_q8_1, decltype(gloas::vec_dot_q5_1_q8_1))             \
    X(gloas, vec_dot_q2_K_q8_K, decltype(gloas::vec_dot_q2_K_q8_K))             \
    X(gloas, vec_dot_q3_K_q8_K, decltype(gloas::vec_dot_q3_K_q8_K))             \
    X(gloas, vec_dot_q4_K_q8_K, decltype(gloas::vec_dot_q4_K_q8_K))             \
    X(gloas, vec_dot_q5_K_q8_K, decltype(gloas::vec_dot_q5_K_q8_K))             \
    X(gloas, vec_dot_q6_K_q8_K, decltype(gloas::vec_dot_q6_K_q8_K))             \
    X(gloas::ops, rmsnorm, decltype(gloas::ops::rmsnorm))                       \
    X(gloas::ops, rope_ex, decltype(gloas::ops::rope_ex))                       \
    X(gloas::ops, softmax, decltype(gloas::ops::softmax))                       \
    X(gloas::ops, silu_mul, decltype(gloas::ops::silu_mul))                     \
    X(gloas::ops, add, decltype(gloas::ops::add))                               \
    X(gloas::ops, matmul_work_size, decltype(gloas::ops::matmul_work_size))     \
    X(gloas::ops, matmul, decltype(gloas::ops::matmul))                         \
    X(gloas::ops, matmul_n, decltype(gloas::ops::matmul_n))                     \
    X(gloas, read_words, decltype(gloas::read_words))                           \
    X(gloas, page_attend, gloas::isa::page_attend_next_fn)                      \
    X(gloas, page_attend_multi, decltype(gloas::page_attend_multi))             \
    X(gloas, page_attend_scalar, decltype(gloas::page_attend_scalar))           \
    X(gloas, page_attend_multi_scalar, decltype(gloas::page_attend_multi_scalar)) \
    X(gloas, page_score_bounds_f16, decltype(gloas::page_score_bounds_f16))

namespace gloas::isa {

struct kernel_table {
#define GLOAS_SIMD_MEMBER(ns, name, fn) fn * name;
    GLOAS_SIMD_KERNELS(GLOAS_SIMD_MEMBER)
#undef GLOAS_SIMD_MEMBER
};

// The table of variant v (which this build must carry), and of the active one.
const kernel_table & kernels(variant v);
extern const kernel_table * const TABLES[N_VARIANTS];  // by variant; null where not carried
inline const kernel_table & kernels() { return *TABLES[int(active())]; }

// The entries of the table by name, in its order (for tests).
constexpr const char * KERNEL_NAMES[] = {
#define GLOAS_SIMD_NAME(ns, name, fn) #name,
    GLOAS_SIMD_KERNELS(GLOAS_SIMD_NAME)
#undef GLOAS_SIMD_NAME
};

} // namespace gloas::isa
