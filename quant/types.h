// Element types and their traits.
//
// The numeric values are GGUF's ggml_type ids, so a tensor type read from a
// GGUF file is a valid `type` after a range/known check (see type_known()).
// Legacy quant blocks hold 32 values, K-quant super-blocks 256; their byte
// layouts are in quant/blocks.h.
//
// One table (quant/types.cpp, a row per type) holds everything the rest of
// the tree knows about a type: its name, block, GGUF file type, the type
// llama.cpp falls back to for odd rows, and its kernels. Loaders, writers and
// tools derive their type lists and checks from it, so a new type is its
// enum value here, its block in blocks.h, its kernels (declared in quant.h)
// and its row.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace gloas {

enum class type : uint32_t {
    F32  = 0,
    F16  = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,   // activations of Q4_1/Q5_1 dot products
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,  // activations of K-quant dot products
    BF16 = 30,
    // A K/V page type, no tensor's: in a page, K rows are Q4_1 blocks and V
    // rows Q4_0 blocks (kvcache/page.h). Its row in the table has no kernels
    // (null to_float, from_float, vec_dot) and type_size 19, the mean of the
    // two rows' 20 and 18 bytes per 32 values.
    Q4_KIVI = 36,
};

constexpr uint32_t TYPE_ID_LIMIT = 40;  // ids at or above this are never known

// Kernel signatures shared by every type. `k` counts values (not blocks) and is
// a multiple of the type's block size.
using to_float_fn   = void (*)(const void * x, float * y, int64_t k);
using from_float_fn = void (*)(const float * x, void * y, int64_t k);
// Dot product of one weight row `w` (of this type) with one activation row `x`
// (of the type's vec_dot_type), `n` values.
using vec_dot_fn    = float (*)(int64_t n, const void * w, const void * x);

// general.file_type of a type no model's weights are stored in (the
// activation types Q8_1 and Q8_K).
constexpr uint32_t NO_FILE_TYPE = UINT32_MAX;

struct type_traits {
    type          id;             // the type this row describes
    const char *  name;           // "f32", "q8_0", ... (GGUF/llama.cpp spelling)
    int64_t       blck_size;      // values per block (1 for float types)
    size_t        type_size;      // bytes per block
    bool          is_quantized;   // blck_size > 1
    // general.file_type (llama.cpp's LLAMA_FTYPE) of a model whose weights
    // are mostly of this type; a K-quant alone is numbered as its _S mix.
    // NO_FILE_TYPE: not a weight type.
    uint32_t      file_type;
    // What llama.cpp's llama-quantize writes instead of this type when a
    // matrix's rows are not a multiple of blck_size (`id` when nothing).
    type          fallback;
    to_float_fn   to_float;       // dequantize / widen
    from_float_fn from_float_ref; // scalar reference quantizer (ggml's rounding)
    // The fastest kernels: the variant (AVX-512, AVX2 or scalar) chosen at
    // start, quant/isa.h.
    from_float_fn from_float;     // fastest quantizer, byte-identical to the reference
    vec_dot_fn    vec_dot;        // fastest dot product against vec_dot_type
    type          vec_dot_type;   // what activations are converted to for vec_dot
    vec_dot_fn    vec_dot_ref;    // scalar reference of vec_dot (what it is tested against)
};

// True when `id` names a type this build implements.
bool type_known(uint32_t id);
// Traits of a known type (asserts on unknown ones: check type_known first).
const type_traits & traits(type t);
const char * type_name(type t);
// Bytes of one row of `n` values; n must be a multiple of the block size.
size_t row_size(type t, int64_t n);
// Parses a type name as type_traits::name spells it ("f32", "q4_0", "q4_K",
// ...), case-insensitive; false if unknown.
bool type_from_name(const char * name, type * out);
// A weight type: one a model's weights may be stored in (it has a file_type).
bool type_is_weight(type t);
// The names of the known types `keep` accepts, in id order, joined by ", "
// (for usage messages: "f32, f16, q4_0, ...").
std::string type_names(bool (*keep)(type t));

} // namespace gloas
