// Safetensors reader over a read-only mapping (Hugging Face checkpoints).
//
// File layout:
//   u64 N (little-endian) | N bytes of UTF-8 JSON header | data section
// The header is one JSON object. Every member but "__metadata__" describes a
// tensor:
//   "name": {"dtype": "F32", "shape": [rows, cols], "data_offsets": [begin, end]}
// (tensor data is not aligned in general: copy before reading it as f16/f32)
// shape is row-major (outermost dimension first, the reverse of GGUF's ne);
// [begin, end) is a byte range relative to the start of the data section.
// "__metadata__", when present, maps strings to strings. The header may be
// padded with trailing spaces.
//
// Everything is validated before use: N against the file size (and at most
// 100 MiB), the JSON syntax (a small strict parser: no duplicate keys, depth
// limit, valid UTF-8 escapes), the member types, the dtype (F32, F16 and BF16
// are accepted; any other is refused by name), dims (at most 8, each >= 0,
// element count without overflow), data_offsets (begin <= end, inside the data
// section, end - begin = elements x dtype size) and overlaps between tensors.
// A bad file throws gloas::error whose message starts with the file name and
// names the tensor and field.
#pragma once

#include "decoder/file-image.h"
#include "quant/types.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace gloas {

struct safetensors_tensor {
    std::string name;
    type t = type::F32;              // F32, F16 or BF16
    std::vector<int64_t> shape;      // row-major, outermost first (may be empty: a scalar)
    uint64_t begin = 0, end = 0;     // byte range within the data section
    const uint8_t * data = nullptr;  // into the mapping (or the parsed buffer)
    size_t nbytes = 0;

    int64_t nelements() const;
};

// open(path), parse(bytes), path() and fail(msg) are file_image's.
class safetensors_file : public file_image<safetensors_file> {
public:
    // Tensors in the order of their data offsets.
    const std::vector<safetensors_tensor> & tensors() const { return tensors_; }
    const safetensors_tensor * find(std::string_view name) const;
    const std::map<std::string, std::string> & metadata() const { return metadata_; }
    // Byte offset of the data section in the file (8 + N).
    size_t data_offset() const { return data_offset_; }

private:
    friend class file_image<safetensors_file>;
    safetensors_file() = default;
    void parse_all(const uint8_t * data, size_t size);

    size_t data_offset_ = 0;
    std::vector<safetensors_tensor> tensors_;
    std::map<std::string, size_t, std::less<>> index_;
    std::map<std::string, std::string> metadata_;
};

} // namespace gloas
