#include "decoder/gguf-writer.h"

#include "base/error.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <unistd.h>

namespace gloas {

namespace {

constexpr uint32_t GGUF_MAGIC = 0x46554747;  // "GGUF"
constexpr uint32_t GGUF_VERSION = 3;

template <class T> void put(std::vector<uint8_t> & b, T v) {
    uint8_t tmp[sizeof(T)];
    std::memcpy(tmp, &v, sizeof v);
    b.insert(b.end(), tmp, tmp + sizeof v);
}

void put_str(std::vector<uint8_t> & b, std::string_view s) {
    put<uint64_t>(b, s.size());
    b.insert(b.end(), s.begin(), s.end());
}

bool is_scalar_number(gguf_type t) { return gguf_type_size(t) != 0; }

} // namespace

// Destination of the bytes: a file or a memory buffer.
struct gguf_writer::sink {
    std::string name;
    FILE * f = nullptr;
    std::vector<uint8_t> * mem = nullptr;
    uint64_t pos = 0;

    void write(const void * p, size_t n) {
        if (n == 0) return;
        if (mem) {
            const uint8_t * b = static_cast<const uint8_t *>(p);
            mem->insert(mem->end(), b, b + n);
        } else if (std::fwrite(p, 1, n, f) != n) {
            throw error(format("%s: write failed at byte %llu: %s", name.c_str(), (unsigned long long) pos,
                               std::strerror(errno)));
        }
        pos += n;
    }
    void pad_to(size_t alignment) {
        static const uint8_t zeros[256] = {};
        while (pos % alignment != 0) {
            size_t n = size_t(alignment - pos % alignment);
            write(zeros, n < sizeof zeros ? n : sizeof zeros);
        }
    }
};

void gguf_writer::set_raw(std::string_view key, gguf_type t, std::vector<uint8_t> bytes) {
    if (key.empty()) throw error("gguf writer: empty metadata key");
    auto it = index_.find(key);
    if (it != index_.end()) {
        kvs_[it->second].type = t;
        kvs_[it->second].bytes = std::move(bytes);
        return;
    }
    index_.emplace(std::string(key), kvs_.size());
    kvs_.push_back(kv{std::string(key), t, std::move(bytes)});
}

void gguf_writer::remove(std::string_view key) {
    auto it = index_.find(key);
    if (it == index_.end()) return;
    kvs_.erase(kvs_.begin() + std::ptrdiff_t(it->second));
    index_.clear();
    for (size_t i = 0; i < kvs_.size(); ++i) index_.emplace(kvs_[i].key, i);
}

#define GLOAS_GGUF_SETTER(fn, ctype, gtype)                          \
    void gguf_writer::fn(std::string_view key, ctype v) {            \
        std::vector<uint8_t> b;                                      \
        put<ctype>(b, v);                                            \
        set_raw(key, gguf_type::gtype, std::move(b));                \
    }
GLOAS_GGUF_SETTER(set_u8, uint8_t, UINT8)
GLOAS_GGUF_SETTER(set_i8, int8_t, INT8)
GLOAS_GGUF_SETTER(set_u16, uint16_t, UINT16)
GLOAS_GGUF_SETTER(set_i16, int16_t, INT16)
GLOAS_GGUF_SETTER(set_u32, uint32_t, UINT32)
GLOAS_GGUF_SETTER(set_i32, int32_t, INT32)
GLOAS_GGUF_SETTER(set_u64, uint64_t, UINT64)
GLOAS_GGUF_SETTER(set_i64, int64_t, INT64)
GLOAS_GGUF_SETTER(set_f32, float, FLOAT32)
GLOAS_GGUF_SETTER(set_f64, double, FLOAT64)
#undef GLOAS_GGUF_SETTER

void gguf_writer::set_bool(std::string_view key, bool v) {
    set_raw(key, gguf_type::BOOL, {uint8_t(v ? 1 : 0)});
}

void gguf_writer::set_str(std::string_view key, std::string_view v) {
    std::vector<uint8_t> b;
    put_str(b, v);
    set_raw(key, gguf_type::STRING, std::move(b));
}

void gguf_writer::set_array(std::string_view key, gguf_type elem, const void * data, uint64_t n) {
    if (!is_scalar_number(elem))
        throw error(format("gguf writer: key '%s': set_array takes numbers, not %s", std::string(key).c_str(),
                           gguf_type_name(elem)));
    const size_t bytes = size_t(n) * gguf_type_size(elem);
    std::vector<uint8_t> b;
    b.reserve(12 + bytes);
    put<uint32_t>(b, uint32_t(elem));
    put<uint64_t>(b, n);
    const uint8_t * p = static_cast<const uint8_t *>(data);
    if (bytes) b.insert(b.end(), p, p + bytes);
    set_raw(key, gguf_type::ARRAY, std::move(b));
}

void gguf_writer::set_array(std::string_view key, const std::vector<float> & v) {
    set_array(key, gguf_type::FLOAT32, v.data(), v.size());
}
void gguf_writer::set_array(std::string_view key, const std::vector<int32_t> & v) {
    set_array(key, gguf_type::INT32, v.data(), v.size());
}
void gguf_writer::set_array(std::string_view key, const std::vector<uint32_t> & v) {
    set_array(key, gguf_type::UINT32, v.data(), v.size());
}

template <class S> static std::vector<uint8_t> encode_str_array(const std::vector<S> & v) {
    size_t total = 12;
    for (const auto & s : v) total += 8 + s.size();
    std::vector<uint8_t> b;
    b.reserve(total);
    put<uint32_t>(b, uint32_t(gguf_type::STRING));
    put<uint64_t>(b, v.size());
    for (const auto & s : v) put_str(b, s);
    return b;
}

void gguf_writer::set_str_array(std::string_view key, const std::vector<std::string> & v) {
    set_raw(key, gguf_type::ARRAY, encode_str_array(v));
}
void gguf_writer::set_str_array(std::string_view key, const std::vector<std::string_view> & v) {
    set_raw(key, gguf_type::ARRAY, encode_str_array(v));
}

void gguf_writer::set_value(std::string_view key, const gguf_value & v) {
    std::vector<uint8_t> b;
    switch (v.type) {
        case gguf_type::UINT8:   put<uint8_t>(b, uint8_t(v.u)); break;
        case gguf_type::BOOL:    put<uint8_t>(b, uint8_t(v.u)); break;
        case gguf_type::INT8:    put<int8_t>(b, int8_t(v.i)); break;
        case gguf_type::UINT16:  put<uint16_t>(b, uint16_t(v.u)); break;
        case gguf_type::INT16:   put<int16_t>(b, int16_t(v.i)); break;
        case gguf_type::UINT32:  put<uint32_t>(b, uint32_t(v.u)); break;
        case gguf_type::INT32:   put<int32_t>(b, int32_t(v.i)); break;
        case gguf_type::UINT64:  put<uint64_t>(b, v.u); break;
        case gguf_type::INT64:   put<int64_t>(b, v.i); break;
        case gguf_type::FLOAT32: put<float>(b, float(v.f)); break;
        case gguf_type::FLOAT64: put<double>(b, v.f); break;
        case gguf_type::STRING:  put_str(b, v.str); break;
        case gguf_type::ARRAY:
            put<uint32_t>(b, uint32_t(v.arr_type));
            put<uint64_t>(b, v.arr_n);
            if (v.arr_bytes) b.insert(b.end(), v.arr_data, v.arr_data + v.arr_bytes);
            break;
        default:
            throw error(format("gguf writer: key '%s': unknown value type %u", std::string(key).c_str(),
                               unsigned(v.type)));
    }
    set_raw(key, v.type, std::move(b));
}

void gguf_writer::copy_metadata(const gguf_file & src, std::string_view prefix) {
    for (const auto & [key, v] : src.metadata())
        if (key.compare(0, prefix.size(), prefix) == 0) set_value(key, v);
}

void gguf_writer::add_entry(tensor_entry e) {
    const std::string where = "gguf writer: tensor '" + e.name + "'";
    if (e.name.empty()) throw error("gguf writer: empty tensor name");
    if (tensor_index_.count(e.name)) throw error(where + ": duplicate tensor name");
    if (!type_known(uint32_t(e.t))) throw error(format("%s: unknown type %u", where.c_str(), unsigned(e.t)));
    if (e.n_dims < 1 || e.n_dims > 4) throw error(format("%s: n_dims %d out of range 1..4", where.c_str(), e.n_dims));
    const type_traits & tr = traits(e.t);
    uint64_t nrows = 1;
    for (int d = 0; d < 4; ++d) {
        if (d >= e.n_dims) e.ne[d] = 1;
        if (e.ne[d] < 1) throw error(format("%s: dimension %d is %lld (must be >= 1)", where.c_str(), d, (long long) e.ne[d]));
        if (d > 0 && __builtin_mul_overflow(nrows, uint64_t(e.ne[d]), &nrows))
            throw error(where + ": element count overflows");
    }
    if (e.ne[0] % tr.blck_size != 0)
        throw error(format("%s: row length %lld is not a multiple of the %s block size %lld", where.c_str(),
                           (long long) e.ne[0], tr.name, (long long) tr.blck_size));
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(uint64_t(row_size(e.t, e.ne[0])), nrows, &nbytes) ||
        nbytes > uint64_t(std::numeric_limits<int64_t>::max()))
        throw error(where + ": byte size overflows");
    e.nbytes = size_t(nbytes);
    tensor_index_.emplace(e.name, tensors_.size());
    tensors_.push_back(std::move(e));
}

void gguf_writer::add_tensor(std::string_view name, type t, int n_dims, const int64_t * ne, const void * data) {
    tensor_entry e{std::string(name), t, n_dims, {1, 1, 1, 1}, 0, data, nullptr};
    for (int d = 0; d < n_dims && d < 4; ++d) e.ne[d] = ne[d];
    add_entry(std::move(e));
}

void gguf_writer::add_tensor(std::string_view name, type t, int n_dims, const int64_t * ne, fill_fn fill) {
    tensor_entry e{std::string(name), t, n_dims, {1, 1, 1, 1}, 0, nullptr, std::move(fill)};
    for (int d = 0; d < n_dims && d < 4; ++d) e.ne[d] = ne[d];
    add_entry(std::move(e));
}

size_t gguf_writer::alignment() const {
    auto it = index_.find("general.alignment");
    if (it == index_.end()) return GGUF_DEFAULT_ALIGNMENT;
    const kv & a = kvs_[it->second];
    uint64_t al = 0;
    if (a.type == gguf_type::UINT32) { uint32_t x; std::memcpy(&x, a.bytes.data(), 4); al = x; }
    else if (a.type == gguf_type::UINT64) std::memcpy(&al, a.bytes.data(), 8);
    else throw error(format("gguf writer: key 'general.alignment' must be u32, not %s", gguf_type_name(a.type)));
    if (al == 0 || (al & (al - 1)) != 0 || al > (uint64_t(1) << 30))
        throw error(format("gguf writer: key 'general.alignment': %llu is not a power of two", (unsigned long long) al));
    return size_t(al);
}

void gguf_writer::write_all(sink & out) const {
    const size_t align = alignment();
    std::vector<uint8_t> head;
    put<uint32_t>(head, GGUF_MAGIC);
    put<uint32_t>(head, GGUF_VERSION);
    put<uint64_t>(head, tensors_.size());
    put<uint64_t>(head, kvs_.size());
    for (const kv & e : kvs_) {
        put_str(head, e.key);
        put<uint32_t>(head, uint32_t(e.type));
        head.insert(head.end(), e.bytes.begin(), e.bytes.end());
    }
    uint64_t offset = 0, total = 0;
    for (const tensor_entry & t : tensors_) {
        put_str(head, t.name);
        put<uint32_t>(head, uint32_t(t.n_dims));
        for (int d = 0; d < t.n_dims; ++d) put<uint64_t>(head, uint64_t(t.ne[d]));
        put<uint32_t>(head, uint32_t(t.t));
        put<uint64_t>(head, offset);
        offset += t.nbytes;
        offset += (align - offset % align) % align;
        total += t.nbytes;
    }
    out.write(head.data(), head.size());
    out.pad_to(align);

    uint64_t done = 0;
    std::vector<uint8_t> buf;
    for (size_t i = 0; i < tensors_.size(); ++i) {
        const tensor_entry & t = tensors_[i];
        if (t.data) {
            out.write(t.data, t.nbytes);
            done += t.nbytes;
        } else {
            const size_t rs = row_size(t.t, t.ne[0]);
            const int64_t nrows = int64_t(t.nbytes / rs);
            const int64_t chunk = std::max<int64_t>(1, int64_t(chunk_bytes_ / rs));
            buf.resize(size_t(std::min<int64_t>(chunk, nrows)) * rs);
            for (int64_t r = 0; r < nrows; r += chunk) {
                const int64_t n = std::min(chunk, nrows - r);
                t.fill(buf.data(), r, n);
                out.write(buf.data(), size_t(n) * rs);
                done += uint64_t(n) * rs;
                if (progress_) progress_(i, tensors_.size(), done, total);
            }
        }
        out.pad_to(align);
        if (progress_) progress_(i + 1, tensors_.size(), done, total);
    }
}

std::vector<uint8_t> gguf_writer::write_to_memory() const {
    std::vector<uint8_t> mem;
    sink out;
    out.name = "<memory>";
    out.mem = &mem;
    write_all(out);
    return mem;
}

void gguf_writer::write(const std::string & path) const {
    const std::string tmp = path + ".tmp";
    FILE * f = std::fopen(tmp.c_str(), "wb");
    if (!f) throw error(format("%s: cannot create: %s", tmp.c_str(), std::strerror(errno)));
    std::vector<char> iobuf(size_t(1) << 20);
    std::setvbuf(f, iobuf.data(), _IOFBF, iobuf.size());
    sink out;
    out.name = tmp;
    out.f = f;
    try {
        write_all(out);
        if (std::fflush(f) != 0 || ::fsync(fileno(f)) != 0)
            throw error(format("%s: write failed: %s", tmp.c_str(), std::strerror(errno)));
    } catch (const error & e) {
        std::fclose(f);
        std::remove(tmp.c_str());
        std::string msg = e.what();
        // Messages about the file itself already name it; others get the target's name.
        if (msg.compare(0, tmp.size(), tmp) != 0) msg = path + ": " + msg;
        throw error(msg);
    } catch (...) {
        std::fclose(f);
        std::remove(tmp.c_str());
        throw;
    }
    if (std::fclose(f) != 0) {
        std::remove(tmp.c_str());
        throw error(format("%s: write failed: %s", tmp.c_str(), std::strerror(errno)));
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        int e = errno;
        std::remove(tmp.c_str());
        throw error(format("%s: cannot rename %s to it: %s", path.c_str(), tmp.c_str(), std::strerror(e)));
    }
}

} // namespace gloas
