#include "quant/types.h"

#include "quant/fp16.h"
#include "quant/quant.h"
#include "base/error.h"

#include <array>
#include <cctype>
#include <cstring>

namespace gloas {

namespace {

void copy_f32(const float * x, float * y, int64_t k) { std::memcpy(y, x, size_t(k) * sizeof(float)); }

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

// Adapters from the typed row kernels (rows of B, activations of A) to the
// type-erased signatures of the table.
template <typename B, void (*F)(const B *, float *, int64_t)>
void to_f(const void * x, float * y, int64_t k) { F(static_cast<const B *>(x), y, k); }
template <typename B, void (*F)(const float *, B *, int64_t)>
void from_f(const float * x, void * y, int64_t k) { F(x, static_cast<B *>(y), k); }
template <typename B, typename A, float (*F)(int64_t, const B *, const A *)>
float dot(int64_t n, const void * w, const void * x) { return F(n, static_cast<const B *>(w), static_cast<const A *>(x)); }

// B and A of a dot kernel, and the type of activation rows of A.
template <typename F> struct dot_sig;
template <typename B, typename A> struct dot_sig<float (*)(int64_t, const B *, const A *)> {
    using block = B;
    using act = A;
};
template <typename A> struct act_type;
template <> struct act_type<float>      { static constexpr type id = type::F32; };
template <> struct act_type<block_q8_0> { static constexpr type id = type::Q8_0; };
template <> struct act_type<block_q8_1> { static constexpr type id = type::Q8_1; };
template <> struct act_type<block_q8_K> { static constexpr type id = type::Q8_K; };

// A row from a type's kernels: dequantize, reference quantizer, fastest
// quantizer, fastest dot, reference dot. The block and activation types come
// from the dot kernel's signature; a kernel of another block does not compile.
template <auto TO, auto FROM_REF, auto FROM, auto DOT, auto DOT_REF>
constexpr type_traits row(type id, const char * name, int64_t blck_size, uint32_t file_type, type fallback) {
    using B = typename dot_sig<decltype(DOT)>::block;
    using A = typename dot_sig<decltype(DOT)>::act;
    return {id, name, blck_size, sizeof(B), blck_size > 1, file_type, fallback,
            to_f<B, TO>, from_f<B, FROM_REF>, from_f<B, FROM>, dot<B, A, DOT>, act_type<A>::id, dot<B, A, DOT_REF>};
}

// One row per type. file_type: llama.cpp's LLAMA_FTYPE (ALL_F32 0, MOSTLY_F16 1,
// MOSTLY_Q4_0 2, ...). fallback: llama-quantize's type for rows that are not
// a multiple of the block.
constexpr type_traits ROWS[] = {
    row<copy_f32, copy_f32, copy_f32, vec_dot_f32, vec_dot_f32_ref>(type::F32, "f32", 1, 0, type::F32),
    row<fp16_to_fp32_row, fp32_to_fp16_row, fp32_to_fp16_row, vec_dot_f16, vec_dot_f16_ref>(type::F16, "f16", 1, 1, type::F16),
    row<bf16_to_fp32_row, fp32_to_bf16_row, fp32_to_bf16_row, vec_dot_bf16, vec_dot_bf16_ref>(type::BF16, "bf16", 1, 32, type::BF16),
    row<dequantize_row_q4_0, quantize_row_q4_0_ref, quantize_row_q4_0, vec_dot_q4_0_q8_0, vec_dot_q4_0_q8_0_ref>(
        type::Q4_0, "q4_0", QK4_0, 2, type::Q4_0),
    row<dequantize_row_q4_1, quantize_row_q4_1_ref, quantize_row_q4_1_ref, vec_dot_q4_1_q8_1, vec_dot_q4_1_q8_1_ref>(
        type::Q4_1, "q4_1", QK4_1, 3, type::Q4_1),
    row<dequantize_row_q5_0, quantize_row_q5_0_ref, quantize_row_q5_0_ref, vec_dot_q5_0_q8_0, vec_dot_q5_0_q8_0_ref>(
        type::Q5_0, "q5_0", QK5_0, 8, type::Q5_0),
    row<dequantize_row_q5_1, quantize_row_q5_1_ref, quantize_row_q5_1_ref, vec_dot_q5_1_q8_1, vec_dot_q5_1_q8_1_ref>(
        type::Q5_1, "q5_1", QK5_1, 9, type::Q5_1),
    row<dequantize_row_q8_0, quantize_row_q8_0_ref, quantize_row_q8_0, vec_dot_q8_0_q8_0, vec_dot_q8_0_q8_0_ref>(
        type::Q8_0, "q8_0", QK8_0, 7, type::Q8_0),
    row<dequantize_row_q8_1, quantize_row_q8_1_ref, quantize_row_q8_1, vec_dot_q8_1_q8_1, vec_dot_q8_1_q8_1>(
        type::Q8_1, "q8_1", QK8_1, NO_FILE_TYPE, type::Q8_1),
    row<dequantize_row_q2_K, quantize_row_q2_K_ref, quantize_row_q2_K_ref, vec_dot_q2_K_q8_K, vec_dot_q2_K_q8_K_ref>(
        type::Q2_K, "q2_K", QK_K, 10, type::Q4_0),
    row<dequantize_row_q3_K, quantize_row_q3_K_ref, quantize_row_q3_K_ref, vec_dot_q3_K_q8_K, vec_dot_q3_K_q8_K_ref>(
        type::Q3_K, "q3_K", QK_K, 11, type::Q4_0),
    row<dequantize_row_q4_K, quantize_row_q4_K_ref, quantize_row_q4_K_ref, vec_dot_q4_K_q8_K, vec_dot_q4_K_q8_K_ref>(
        type::Q4_K, "q4_K", QK_K, 14, type::Q5_0),
    row<dequantize_row_q5_K, quantize_row_q5_K_ref, quantize_row_q5_K_ref, vec_dot_q5_K_q8_K, vec_dot_q5_K_q8_K_ref>(
        type::Q5_K, "q5_K", QK_K, 16, type::Q5_1),
    row<dequantize_row_q6_K, quantize_row_q6_K_ref, quantize_row_q6_K_ref, vec_dot_q6_K_q8_K, vec_dot_q6_K_q8_K_ref>(
        type::Q6_K, "q6_K", QK_K, 18, type::Q8_0),
    row<dequantize_row_q8_K, quantize_row_q8_K_ref, quantize_row_q8_K, vec_dot_q8_K_q8_K, vec_dot_q8_K_q8_K>(
        type::Q8_K, "q8_K", QK_K, NO_FILE_TYPE, type::Q8_K),
    // K/V pages only (types.h): no kernels; page.h reads its rows as Q4_1 and Q4_0
    {type::Q4_KIVI, "q4_kivi", 32, (sizeof(block_q4_1) + sizeof(block_q4_0)) / 2, true, NO_FILE_TYPE, type::Q4_KIVI,
     nullptr, nullptr, nullptr, nullptr, type::Q4_KIVI, nullptr},
};

// The rows placed at their ids; ids with no type have a null name.
constexpr std::array<type_traits, TYPE_ID_LIMIT> make_table() {
    std::array<type_traits, TYPE_ID_LIMIT> t{};
    for (const type_traits & r : ROWS) t[uint32_t(r.id)] = r;
    return t;
}

constexpr std::array<type_traits, TYPE_ID_LIMIT> TABLE = make_table();

// Every row has its own id, an id below the limit, a block, and names
// activation and fallback types that are rows too; the activations come in
// the same blocks, and no two types share a name or a file type.
constexpr bool same(const char * a, const char * b) {
    while (*a && *a == *b) { ++a; ++b; }
    return *a == *b;
}
constexpr bool known(type t) { return uint32_t(t) < TYPE_ID_LIMIT && TABLE[uint32_t(t)].name != nullptr; }
constexpr bool table_consistent() {
    for (const type_traits & r : ROWS) {
        if (uint32_t(r.id) >= TYPE_ID_LIMIT || !same(TABLE[uint32_t(r.id)].name, r.name)) return false;
        if (r.blck_size < 1 || r.type_size < 1 || !known(r.vec_dot_type) || !known(r.fallback)) return false;
        if (TABLE[uint32_t(r.vec_dot_type)].blck_size != r.blck_size) return false;
        for (const type_traits & o : ROWS)
            if (&o != &r && (same(o.name, r.name) || (o.file_type == r.file_type && r.file_type != NO_FILE_TYPE)))
                return false;
    }
    return true;
}
static_assert(table_consistent(), "the type table's rows disagree (see table_consistent)");

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

bool type_is_weight(type t) {
    return type_known(uint32_t(t)) && TABLE[uint32_t(t)].file_type != NO_FILE_TYPE;
}

std::string type_names(bool (*keep)(type t)) {
    std::string s;
    for (uint32_t id = 0; id < TYPE_ID_LIMIT; ++id) {
        if (TABLE[id].name == nullptr || !keep(type(id))) continue;
        if (!s.empty()) s += ", ";
        s += TABLE[id].name;
    }
    return s;
}

} // namespace gloas
