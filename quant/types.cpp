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

// Entry i describes the type whose id is i; ids with no type have a null name.
constexpr std::array<type_traits, TYPE_ID_LIMIT> make_table() {
    std::array<type_traits, TYPE_ID_LIMIT> t{};
    t[uint32_t(type::F32)]  = {"f32",  1,     sizeof(float),      false, f32_to_float,  f32_from_float,      f32_from_float,  f32_dot,  type::F32};
    t[uint32_t(type::F16)]  = {"f16",  1,     sizeof(uint16_t),   false, f16_to_float,  f16_from_float,      f16_from_float,  f16_dot,  type::F32};
    t[uint32_t(type::BF16)] = {"bf16", 1,     sizeof(uint16_t),   false, bf16_to_float, bf16_from_float,     bf16_from_float, bf16_dot, type::F32};
    t[uint32_t(type::Q8_0)] = {"q8_0", QK8_0, sizeof(block_q8_0), true,  q8_0_to_float, q8_0_from_float_ref, q8_0_from_float, q8_0_dot, type::Q8_0};
    t[uint32_t(type::Q4_0)] = {"q4_0", QK4_0, sizeof(block_q4_0), true,  q4_0_to_float, q4_0_from_float_ref, q4_0_from_float, q4_0_dot, type::Q8_0};
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
        while (tn[i] && name[i] && std::tolower(static_cast<unsigned char>(name[i])) == tn[i]) ++i;
        if (tn[i] == 0 && name[i] == 0) {
            if (out) *out = type(id);
            return true;
        }
    }
    return false;
}

} // namespace gloas
