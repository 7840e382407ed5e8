#include "quant/types.h"

#include "quant/fp16.h"
#include "quant/quant.h"
#include "tensor/error.h"

#include <array>
#include <cctype>
#include <cstring>

namespace gloas {

namespace {

// Adapters from the typed row kernels to the type-erased signatures of the
// traits table.
void f32_to_float(const void * x, float * y, int64_t k) { std::memcpy(y, x, size_t(k) * sizeof(float)); }
void f32_from_float(const float * x, void * y, int64_t k) { std::memcpy(y, x, size_t(k) * sizeof(float)); }
void f16_to_float(const void * x, float * y, int64_t k) { fp16_to_fp32_row(static_cast<const uint16_t *>(x), y, k); }
void f16_from_float(const float * x, void * y, int64_t k) { fp32_to_fp16_row(x, static_cast<uint16_t *>(y), k); }
void bf16_to_float(const void * x, float * y, int64_t k) { bf16_to_fp32_row(static_cast<const uint16_t *>(x), y, k); }
void bf16_from_float(const float * x, void * y, int64_t k) { fp32_to_bf16_row(x, static_cast<uint16_t *>(y), k); }
void q8_0_to_float(const void * x, float * y, int64_t k) { dequantize_row_q8_0(static_cast<const block_q8_0 *>(x), y, k); }
void q8_0_from_float_ref(const float * x, void * y, int64_t k) { quantize_row_q8_0_ref(x, static_cast<block_q8_0 *>(y), k); }
void q8_0_from_float(const float * x, void * y, int64_t k) { quantize_row_q8_0(x, static_cast<block_q8_0 *>(y), k); }
void q4_0_to_float(const void * x, float * y, int64_t k) { dequantize_row_q4_0(static_cast<const block_q4_0 *>(x), y, k); }
void q4_0_from_float_ref(const float * x, void * y, int64_t k) { quantize_row_q4_0_ref(x, static_cast<block_q4_0 *>(y), k); }
void q4_0_from_float(const float * x, void * y, int64_t k) { quantize_row_q4_0(x, static_cast<block_q4_0 *>(y), k); }

// The block types: to_float / from_float / vec_dot adapters for block type B
// with activations A, from the typed row kernels.
template <typename B, void (*F)(const B *, float *, int64_t)>
void to_f(const void * x, float * y, int64_t k) { F(static_cast<const B *>(x), y, k); }
template <typename B, void (*F)(const float *, B *, int64_t)>
void from_f(const float * x, void * y, int64_t k) { F(x, static_cast<B *>(y), k); }
template <typename B, typename A, float (*F)(int64_t, const B *, const A *)>
float dot(int64_t n, const void * w, const void * x) { return F(n, static_cast<const B *>(w), static_cast<const A *>(x)); }


float f32_dot(int64_t n, const void * w, const void * x) {
    return vec_dot_f32(n, static_cast<const float *>(w), static_cast<const float *>(x));
}
float f16_dot(int64_t n, const void * w, const void * x) {
    return vec_dot_f16(n, static_cast<const uint16_t *>(w), static_cast<const float *>(x));
}
float bf16_dot(int64_t n, const void * w, const void * x) {
    return vec_dot_bf16(n, static_cast<const uint16_t *>(w), static_cast<const float *>(x));
}
float q8_0_dot(int64_t n, const void * w, const void * x) {
    return vec_dot_q8_0_q8_0(n, static_cast<const block_q8_0 *>(w), static_cast<const block_q8_0 *>(x));
}
float q4_0_dot(int64_t n, const void * w, const void * x) {
    return vec_dot_q4_0_q8_0(n, static_cast<const block_q4_0 *>(w), static_cast<const block_q8_0 *>(x));
}
float f32_dot_ref(int64_t n, const void * w, const void * x) {
    return vec_dot_f32_ref(n, static_cast<const float *>(w), static_cast<const float *>(x));
}
float f16_dot_ref(int64_t n, const void * w, const void * x) {
    return vec_dot_f16_ref(n, static_cast<const uint16_t *>(w), static_cast<const float *>(x));
}
float bf16_dot_ref(int64_t n, const void * w, const void * x) {
    return vec_dot_bf16_ref(n, static_cast<const uint16_t *>(w), static_cast<const float *>(x));
}

// The activation types Q8_1 and Q8_K dot with themselves (a weight file may
// hold them; nothing else needs these): exact int32 per block, then scaled.
float vec_dot_q8_1_q8_1(int64_t n, const block_q8_1 * w, const block_q8_1 * x) {
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK8_1; ++i) {
        int sumi = 0;
        for (int j = 0; j < QK8_1; ++j) sumi += int(w[i].qs[j]) * int(x[i].qs[j]);
        s += float(sumi) * (fp16_to_fp32(w[i].d) * fp16_to_fp32(x[i].d));
    }
    return s;
}
float vec_dot_q8_K_q8_K(int64_t n, const block_q8_K * w, const block_q8_K * x) {
    float s = 0.0f;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        int sumi = 0;
        for (int j = 0; j < QK_K; ++j) sumi += int(w[i].qs[j]) * int(x[i].qs[j]);
        s += float(sumi) * (w[i].d * x[i].d);
    }
    return s;
}

// Entry i describes the type whose id is i; ids with no type have a null name.
constexpr std::array<type_traits, TYPE_ID_LIMIT> make_table() {
    std::array<type_traits, TYPE_ID_LIMIT> t{};
    // name, blck_size, type_size, is_quantized, to_float, from_float_ref, from_float, vec_dot, vec_dot_type, vec_dot_ref
    t[uint32_t(type::F32)]  = {"f32",  1,     sizeof(float),      false, f32_to_float,  f32_from_float,      f32_from_float,  f32_dot,  type::F32,  f32_dot_ref};
    t[uint32_t(type::F16)]  = {"f16",  1,     sizeof(uint16_t),   false, f16_to_float,  f16_from_float,      f16_from_float,  f16_dot,  type::F32,  f16_dot_ref};
    t[uint32_t(type::BF16)] = {"bf16", 1,     sizeof(uint16_t),   false, bf16_to_float, bf16_from_float,     bf16_from_float, bf16_dot, type::F32,  bf16_dot_ref};
    t[uint32_t(type::Q8_0)] = {"q8_0", QK8_0, sizeof(block_q8_0), true,  q8_0_to_float, q8_0_from_float_ref, q8_0_from_float, q8_0_dot, type::Q8_0,
                               dot<block_q8_0, block_q8_0, vec_dot_q8_0_q8_0_ref>};
    t[uint32_t(type::Q4_0)] = {"q4_0", QK4_0, sizeof(block_q4_0), true,  q4_0_to_float, q4_0_from_float_ref, q4_0_from_float, q4_0_dot, type::Q8_0,
                               dot<block_q4_0, block_q8_0, vec_dot_q4_0_q8_0_ref>};
    t[uint32_t(type::Q4_1)] = {"q4_1", QK4_1, sizeof(block_q4_1), true, to_f<block_q4_1, dequantize_row_q4_1>,
                               from_f<block_q4_1, quantize_row_q4_1_ref>, from_f<block_q4_1, quantize_row_q4_1_ref>,
                               dot<block_q4_1, block_q8_1, vec_dot_q4_1_q8_1>, type::Q8_1, dot<block_q4_1, block_q8_1, vec_dot_q4_1_q8_1_ref>};
    t[uint32_t(type::Q5_0)] = {"q5_0", QK5_0, sizeof(block_q5_0), true, to_f<block_q5_0, dequantize_row_q5_0>,
                               from_f<block_q5_0, quantize_row_q5_0_ref>, from_f<block_q5_0, quantize_row_q5_0_ref>,
                               dot<block_q5_0, block_q8_0, vec_dot_q5_0_q8_0>, type::Q8_0, dot<block_q5_0, block_q8_0, vec_dot_q5_0_q8_0_ref>};
    t[uint32_t(type::Q5_1)] = {"q5_1", QK5_1, sizeof(block_q5_1), true, to_f<block_q5_1, dequantize_row_q5_1>,
                               from_f<block_q5_1, quantize_row_q5_1_ref>, from_f<block_q5_1, quantize_row_q5_1_ref>,
                               dot<block_q5_1, block_q8_1, vec_dot_q5_1_q8_1>, type::Q8_1, dot<block_q5_1, block_q8_1, vec_dot_q5_1_q8_1_ref>};
    t[uint32_t(type::Q8_1)] = {"q8_1", QK8_1, sizeof(block_q8_1), true, to_f<block_q8_1, dequantize_row_q8_1>,
                               from_f<block_q8_1, quantize_row_q8_1_ref>, from_f<block_q8_1, quantize_row_q8_1>,
                               dot<block_q8_1, block_q8_1, vec_dot_q8_1_q8_1>, type::Q8_1, dot<block_q8_1, block_q8_1, vec_dot_q8_1_q8_1>};
    t[uint32_t(type::Q2_K)] = {"q2_K", QK_K, sizeof(block_q2_K), true, to_f<block_q2_K, dequantize_row_q2_K>,
                               from_f<block_q2_K, quantize_row_q2_K_ref>, from_f<block_q2_K, quantize_row_q2_K_ref>,
                               dot<block_q2_K, block_q8_K, vec_dot_q2_K_q8_K>, type::Q8_K, dot<block_q2_K, block_q8_K, vec_dot_q2_K_q8_K_ref>};
    t[uint32_t(type::Q3_K)] = {"q3_K", QK_K, sizeof(block_q3_K), true, to_f<block_q3_K, dequantize_row_q3_K>,
                               from_f<block_q3_K, quantize_row_q3_K_ref>, from_f<block_q3_K, quantize_row_q3_K_ref>,
                               dot<block_q3_K, block_q8_K, vec_dot_q3_K_q8_K>, type::Q8_K, dot<block_q3_K, block_q8_K, vec_dot_q3_K_q8_K_ref>};
    t[uint32_t(type::Q4_K)] = {"q4_K", QK_K, sizeof(block_q4_K), true, to_f<block_q4_K, dequantize_row_q4_K>,
                               from_f<block_q4_K, quantize_row_q4_K_ref>, from_f<block_q4_K, quantize_row_q4_K_ref>,
                               dot<block_q4_K, block_q8_K, vec_dot_q4_K_q8_K>, type::Q8_K, dot<block_q4_K, block_q8_K, vec_dot_q4_K_q8_K_ref>};
    t[uint32_t(type::Q5_K)] = {"q5_K", QK_K, sizeof(block_q5_K), true, to_f<block_q5_K, dequantize_row_q5_K>,
                               from_f<block_q5_K, quantize_row_q5_K_ref>, from_f<block_q5_K, quantize_row_q5_K_ref>,
                               dot<block_q5_K, block_q8_K, vec_dot_q5_K_q8_K>, type::Q8_K, dot<block_q5_K, block_q8_K, vec_dot_q5_K_q8_K_ref>};
    t[uint32_t(type::Q6_K)] = {"q6_K", QK_K, sizeof(block_q6_K), true, to_f<block_q6_K, dequantize_row_q6_K>,
                               from_f<block_q6_K, quantize_row_q6_K_ref>, from_f<block_q6_K, quantize_row_q6_K_ref>,
                               dot<block_q6_K, block_q8_K, vec_dot_q6_K_q8_K>, type::Q8_K, dot<block_q6_K, block_q8_K, vec_dot_q6_K_q8_K_ref>};
    t[uint32_t(type::Q8_K)] = {"q8_K", QK_K, sizeof(block_q8_K), true, to_f<block_q8_K, dequantize_row_q8_K>,
                               from_f<block_q8_K, quantize_row_q8_K_ref>, from_f<block_q8_K, quantize_row_q8_K>,
                               dot<block_q8_K, block_q8_K, vec_dot_q8_K_q8_K>, type::Q8_K, dot<block_q8_K, block_q8_K, vec_dot_q8_K_q8_K>};
    return t;
}

constexpr std::array<type_traits, TYPE_ID_LIMIT> TABLE = make_table();

constexpr bool same(const char * a, const char * b) {
    while (*a && *a == *b) { ++a; ++b; }
    return *a == *b;
}
static_assert(same(TABLE[uint32_t(type::F32)].name, "f32") && TABLE[uint32_t(type::F32)].type_size == 4, "F32 entry");
static_assert(same(TABLE[uint32_t(type::F16)].name, "f16") && TABLE[uint32_t(type::F16)].type_size == 2, "F16 entry");
static_assert(same(TABLE[uint32_t(type::BF16)].name, "bf16") && TABLE[uint32_t(type::BF16)].type_size == 2, "BF16 entry");
static_assert(same(TABLE[uint32_t(type::Q8_0)].name, "q8_0") && TABLE[uint32_t(type::Q8_0)].type_size == 34, "Q8_0 entry");
static_assert(same(TABLE[uint32_t(type::Q4_0)].name, "q4_0") && TABLE[uint32_t(type::Q4_0)].type_size == 18, "Q4_0 entry");
static_assert(same(TABLE[uint32_t(type::Q4_1)].name, "q4_1") && TABLE[uint32_t(type::Q4_1)].type_size == 20, "Q4_1 entry");
static_assert(same(TABLE[uint32_t(type::Q5_0)].name, "q5_0") && TABLE[uint32_t(type::Q5_0)].type_size == 22, "Q5_0 entry");
static_assert(same(TABLE[uint32_t(type::Q5_1)].name, "q5_1") && TABLE[uint32_t(type::Q5_1)].type_size == 24, "Q5_1 entry");
static_assert(same(TABLE[uint32_t(type::Q8_1)].name, "q8_1") && TABLE[uint32_t(type::Q8_1)].type_size == 36, "Q8_1 entry");
static_assert(same(TABLE[uint32_t(type::Q2_K)].name, "q2_K") && TABLE[uint32_t(type::Q2_K)].type_size == 84, "Q2_K entry");
static_assert(same(TABLE[uint32_t(type::Q3_K)].name, "q3_K") && TABLE[uint32_t(type::Q3_K)].type_size == 110, "Q3_K entry");
static_assert(same(TABLE[uint32_t(type::Q4_K)].name, "q4_K") && TABLE[uint32_t(type::Q4_K)].type_size == 144, "Q4_K entry");
static_assert(same(TABLE[uint32_t(type::Q5_K)].name, "q5_K") && TABLE[uint32_t(type::Q5_K)].type_size == 176, "Q5_K entry");
static_assert(same(TABLE[uint32_t(type::Q6_K)].name, "q6_K") && TABLE[uint32_t(type::Q6_K)].type_size == 210, "Q6_K entry");
static_assert(same(TABLE[uint32_t(type::Q8_K)].name, "q8_K") && TABLE[uint32_t(type::Q8_K)].type_size == 292, "Q8_K entry");
static_assert(TABLE[uint32_t(type::Q4_K)].blck_size == 256 && TABLE[uint32_t(type::Q4_1)].blck_size == 32, "block sizes");

} // namespace

bool type_known(uint32_t id) {
    return id < TYPE_ID_LIMIT && TABLE[id].name != nullptr;
}

const type_traits & traits(type t) {
    GLOAS_ASSERT(type_known(uint32_t(t)));
    return TABLE[uint32_t(t)];
}

const char * type_name(type t) {
    return type_known(uint32_t(t)) ? TABLE[uint32_t(t)].name : "unknown";
}

size_t row_size(type t, int64_t n) {
    const type_traits & tr = traits(t);
    GLOAS_ASSERT(n >= 0 && n % tr.blck_size == 0);
    return size_t(n / tr.blck_size) * tr.type_size;
}

bool type_from_name(const char * name, type * out) {
    if (name == nullptr) return false;
    for (uint32_t id = 0; id < TYPE_ID_LIMIT; ++id) {
        const char * tn = TABLE[id].name;
        if (tn == nullptr) continue;
        size_t i = 0;
        while (tn[i] && name[i] &&
               std::tolower(static_cast<unsigned char>(name[i])) == std::tolower(static_cast<unsigned char>(tn[i])))
            ++i;
        if (tn[i] == 0 && name[i] == 0) {
            if (out) *out = type(id);
            return true;
        }
    }
    return false;
}

} // namespace gloas
