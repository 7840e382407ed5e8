// GGUF v3 writer: collects metadata and tensor infos, then writes the file in
// one pass (layout in decoder/gguf.h).
//
// Metadata keys keep their insertion order; setting a key again replaces its
// value in place. Tensors are written in the order they were added, each at the
// next multiple of `general.alignment` (default 32) within the data section.
// Tensor bytes come from a pointer (which must stay valid until write()) or from
// a fill callback called for consecutive row ranges, so a model larger than
// memory can be streamed out one chunk at a time.
//
// write(path) writes `<path>.tmp` and renames it over `path` only when every
// byte is written and flushed: a failed or interrupted write never leaves a
// half-written file under the target name. Errors throw gloas::error naming
// the file.
#pragma once

#include "decoder/gguf.h"
#include "quant/types.h"

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace gloas {

class gguf_writer {
public:
    // Fills rows [row0, row0 + n_rows) of a tensor viewed as 2-D
    // (ne[0], ne[1]*ne[2]*ne[3]) into `dst` (n_rows * row_size bytes). It may
    // use threads; it is called with increasing, non-overlapping ranges.
    using fill_fn = std::function<void(void * dst, int64_t row0, int64_t n_rows)>;
    // Progress after each chunk: tensors finished, total tensors, bytes of
    // tensor data written, total bytes of tensor data.
    using progress_fn = std::function<void(size_t i_tensor, size_t n_tensors, uint64_t done, uint64_t total)>;

    // Scalars.
    void set_u8 (std::string_view key, uint8_t v);
    void set_i8 (std::string_view key, int8_t v);
    void set_u16(std::string_view key, uint16_t v);
    void set_i16(std::string_view key, int16_t v);
    void set_u32(std::string_view key, uint32_t v);
    void set_i32(std::string_view key, int32_t v);
    void set_u64(std::string_view key, uint64_t v);
    void set_i64(std::string_view key, int64_t v);
    void set_f32(std::string_view key, float v);
    void set_f64(std::string_view key, double v);
    void set_bool(std::string_view key, bool v);
    void set_str(std::string_view key, std::string_view v);
    // Arrays of numbers: `n` elements of scalar type `elem` (not STRING/ARRAY)
    // read from `data` as little-endian raw values.
    void set_array(std::string_view key, gguf_type elem, const void * data, uint64_t n);
    void set_array(std::string_view key, const std::vector<float> & v);
    void set_array(std::string_view key, const std::vector<int32_t> & v);
    void set_array(std::string_view key, const std::vector<uint32_t> & v);
    // Arrays of strings.
    void set_str_array(std::string_view key, const std::vector<std::string> & v);
    void set_str_array(std::string_view key, const std::vector<std::string_view> & v);
    // Any value read by gguf_file (nested arrays included).
    void set_value(std::string_view key, const gguf_value & v);
    // Copies every key of `src` that starts with `prefix` (all keys when empty).
    void copy_metadata(const gguf_file & src, std::string_view prefix = {});

    bool has(std::string_view key) const { return index_.count(key) != 0; }
    void remove(std::string_view key);
    size_t n_kv() const { return kvs_.size(); }

    // Tensors. `ne` has n_dims (1..4) entries; ne[0] must be a multiple of the
    // type's block size. Throws gloas::error on a bad shape, unknown type or
    // duplicate name.
    void add_tensor(std::string_view name, type t, int n_dims, const int64_t * ne, const void * data);
    void add_tensor(std::string_view name, type t, int n_dims, const int64_t * ne, fill_fn fill);
    size_t n_tensors() const { return tensors_.size(); }

    void set_progress(progress_fn fn) { progress_ = std::move(fn); }
    // Bytes per fill chunk (rounded to whole rows, at least one row).
    void set_chunk_bytes(size_t n) { chunk_bytes_ = n ? n : 1; }

    // Alignment the file will use (general.alignment or 32); throws if the key
    // holds something other than a power of two.
    size_t alignment() const;

    // Writes `path` atomically (via `path`.tmp).
    void write(const std::string & path) const;
    // The same bytes, in memory (tests, fuzz seeds).
    std::vector<uint8_t> write_to_memory() const;

private:
    struct kv {
        std::string key;
        gguf_type type;
        std::vector<uint8_t> bytes;  // the encoded value (after the type field)
    };
    struct tensor_entry {
        std::string name;
        type t;
        int n_dims;
        int64_t ne[4];
        size_t nbytes;
        const void * data;
        fill_fn fill;
    };
    struct sink;

    void set_raw(std::string_view key, gguf_type t, std::vector<uint8_t> bytes);
    void add_entry(tensor_entry e);
    void write_all(sink & out) const;

    std::vector<kv> kvs_;
    std::map<std::string, size_t, std::less<>> index_;
    std::vector<tensor_entry> tensors_;
    std::map<std::string, size_t, std::less<>> tensor_index_;
    progress_fn progress_;
    size_t chunk_bytes_ = size_t(16) << 20;
};

} // namespace gloas
