// GGUF v2/v3 reader over a read-only mapping.
//
// File layout (little-endian), as llama.cpp writes it:
//   magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv x   { string key | u32 value_type | value }
//   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 type | u64 offset }
//   padding to `general.alignment` (default 32)
//   tensor data; each tensor at data_start + offset, offset a multiple of alignment
// string = u64 length + bytes (no NUL); array = u32 elem_type + u64 count + elems.
//
// Everything is validated before use: magic, version, counts against the bytes
// left, string and array lengths, value types, duplicate keys and tensor names,
// tensor types, dims (1..4, each >= 1, element count without overflow, rows a
// multiple of the block size), offsets (aligned, in bounds, non-overlapping is not
// required) and sizes against the file size. A bad file throws gloas::error whose
// message starts with the file name and says what is wrong and where.
#pragma once

#include "decoder/file-image.h"
#include "quant/types.h"
#include "tensor/tensor.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace gloas {

enum class gguf_type : uint32_t {
    UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6,
    BOOL = 7, STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char * gguf_type_name(gguf_type t);  // "u8", "string", ...; "unknown" otherwise
// Bytes of one scalar of type t (0 for STRING, ARRAY and unknown types).
size_t gguf_type_size(gguf_type t);

constexpr uint32_t GGUF_DEFAULT_ALIGNMENT = 32;

// One metadata value. Scalars are widened into the matching field (u for
// unsigned integers and bool, i for signed integers, f for floats); strings are
// views into the mapping; arrays keep their element type, count and a pointer to
// the first element in the mapping (string arrays are also pre-split into
// views). Nested arrays (arr_type ARRAY) are validated but only kept raw.
struct gguf_value {
    gguf_type type = gguf_type::UINT8;
    uint64_t  u = 0;      // unsigned integers and bool
    int64_t   i = 0;      // signed integers
    double    f = 0.0;    // floats
    std::string_view str; // STRING
    gguf_type arr_type = gguf_type::UINT8;     // ARRAY: element type
    uint64_t  arr_n = 0;                       // ARRAY: element count
    const uint8_t * arr_data = nullptr;        // ARRAY: raw elements as stored (any element type)
    size_t    arr_bytes = 0;                   // ARRAY: bytes of the raw elements
    std::vector<std::string_view> arr_str;     // ARRAY of strings
};

struct gguf_tensor_info {
    std::string name;
    type        t = type::F32;
    int         n_dims = 0;
    int64_t     ne[4] = {1, 1, 1, 1};
    uint64_t    offset = 0;        // relative to the data section
    const void * data = nullptr;   // into the mapping
    size_t      nbytes = 0;

    tensor view() const { return make_tensor(t, n_dims, ne, data); }
};

// open(path), parse(bytes), path() and fail(msg) are file_image's.
class gguf_file : public file_image<gguf_file> {
public:
    uint32_t version() const { return version_; }
    size_t alignment() const { return alignment_; }
    // Byte offset of the tensor data section in the file (a multiple of
    // alignment(); past the end of a file that has no tensors and no padding).
    size_t data_offset() const { return data_offset_; }
    // Bytes of the whole image.
    size_t size() const { return size_; }

    // Metadata. `find` returns nullptr when the key is absent. The typed getters
    // return `def` when absent and throw when present with an incompatible type
    // or an out-of-range value (integer getters accept any integer type whose
    // value fits; get_f32 also takes f64 and integers; get_bool only bool).
    const gguf_value * find(std::string_view key) const;
    const std::map<std::string, gguf_value, std::less<>> & metadata() const { return kv_; }
    std::string get_str(std::string_view key, std::string_view def = {}) const;
    uint32_t get_u32(std::string_view key, uint32_t def) const;
    int64_t  get_i64(std::string_view key, int64_t def) const;
    float    get_f32(std::string_view key, float def) const;
    bool     get_bool(std::string_view key, bool def) const;
    // Array getters throw when the key is absent or has the wrong element type.
    std::vector<std::string_view> get_str_array(std::string_view key) const;
    std::vector<float>            get_f32_array(std::string_view key) const;
    std::vector<int32_t>          get_i32_array(std::string_view key) const;  // any integer element type that fits

    // Tensors.
    const std::vector<gguf_tensor_info> & tensors() const { return tensors_; }
    const gguf_tensor_info * find_tensor(std::string_view name) const;

private:
    friend class file_image<gguf_file>;
    gguf_file() = default;
    void parse_all(const uint8_t * data, size_t size);
    const gguf_value * find_int(std::string_view key, uint64_t * mag, bool * neg) const;

    uint32_t version_ = 0;
    size_t alignment_ = 32;
    size_t data_offset_ = 0;
    size_t size_ = 0;
    std::map<std::string, gguf_value, std::less<>> kv_;
    std::vector<gguf_tensor_info> tensors_;
    std::map<std::string, size_t, std::less<>> tensor_index_;
};

} // namespace gloas
