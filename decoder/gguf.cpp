#include "decoder/gguf.h"

#include "base/error.h"

#include <cmath>
#include <cstring>
#include <limits>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader assumes a little-endian host"
#endif

namespace gloas {

const char * gguf_type_name(gguf_type t) {
    switch (t) {
        case gguf_type::UINT8:   return "u8";
        case gguf_type::INT8:    return "i8";
        case gguf_type::UINT16:  return "u16";
        case gguf_type::INT16:   return "i16";
        case gguf_type::UINT32:  return "u32";
        case gguf_type::INT32:   return "i32";
        case gguf_type::FLOAT32: return "f32";
        case gguf_type::BOOL:    return "bool";
        case gguf_type::STRING:  return "string";
        case gguf_type::ARRAY:   return "array";
        case gguf_type::UINT64:  return "u64";
        case gguf_type::INT64:   return "i64";
        case gguf_type::FLOAT64: return "f64";
    }
    return "unknown";
}

size_t gguf_type_size(gguf_type t) {
    switch (t) {
        case gguf_type::UINT8: case gguf_type::INT8: case gguf_type::BOOL: return 1;
        case gguf_type::UINT16: case gguf_type::INT16: return 2;
        case gguf_type::UINT32: case gguf_type::INT32: case gguf_type::FLOAT32: return 4;
        case gguf_type::UINT64: case gguf_type::INT64: case gguf_type::FLOAT64: return 8;
        default: return 0;
    }
}

namespace {

constexpr uint32_t GGUF_MAGIC = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr int      MAX_ARRAY_DEPTH = 4;      // an array of arrays of ... at most this deep
// Smallest encodings, used to bound counts by the bytes left before allocating.
constexpr size_t MIN_KV_BYTES = 8 + 4 + 1;           // empty key, type, one-byte value
constexpr size_t MIN_TENSOR_BYTES = 8 + 4 + 8 + 4 + 8;  // empty name, n_dims, one dim, type, offset

bool valid_value_type(uint32_t t) { return t <= uint32_t(gguf_type::FLOAT64); }

// Smallest encoding of one array element of type t.
size_t min_elem_bytes(gguf_type t) {
    if (t == gguf_type::STRING) return 8;
    if (t == gguf_type::ARRAY) return 4 + 8;
    return gguf_type_size(t);
}

bool is_unsigned(gguf_type t) {
    return t == gguf_type::UINT8 || t == gguf_type::UINT16 || t == gguf_type::UINT32 || t == gguf_type::UINT64;
}
bool is_signed(gguf_type t) {
    return t == gguf_type::INT8 || t == gguf_type::INT16 || t == gguf_type::INT32 || t == gguf_type::INT64;
}
bool is_float(gguf_type t) { return t == gguf_type::FLOAT32 || t == gguf_type::FLOAT64; }

// Reads scalar number i of type t from raw little-endian bytes into the
// matching field of `v` (u, i or f).
void decode_scalar(gguf_type t, const uint8_t * p, gguf_value & v) {
    switch (t) {
        case gguf_type::UINT8:  case gguf_type::BOOL: v.u = p[0]; break;
        case gguf_type::INT8:   { int8_t x; std::memcpy(&x, p, 1); v.i = x; break; }
        case gguf_type::UINT16: { uint16_t x; std::memcpy(&x, p, 2); v.u = x; break; }
        case gguf_type::INT16:  { int16_t x; std::memcpy(&x, p, 2); v.i = x; break; }
        case gguf_type::UINT32: { uint32_t x; std::memcpy(&x, p, 4); v.u = x; break; }
        case gguf_type::INT32:  { int32_t x; std::memcpy(&x, p, 4); v.i = x; break; }
        case gguf_type::FLOAT32:{ float x; std::memcpy(&x, p, 4); v.f = x; break; }
        case gguf_type::UINT64: { uint64_t x; std::memcpy(&x, p, 8); v.u = x; break; }
        case gguf_type::INT64:  { int64_t x; std::memcpy(&x, p, 8); v.i = x; break; }
        case gguf_type::FLOAT64:{ double x; std::memcpy(&x, p, 8); v.f = x; break; }
        default: GLOAS_ASSERT(false);
    }
}

// Bounds-checked cursor over the image. Every failure names the field being
// read (`ctx` says which key or tensor it belongs to) and its byte offset.
struct cursor {
    const gguf_file & file;
    const uint8_t * base;
    size_t size;
    size_t pos = 0;
    std::string ctx;  // "key 'x': " / "tensor 'y': " / ""

    size_t left() const { return size - pos; }

    [[noreturn]] void fail_at(size_t at, const std::string & msg) const {
        file.fail(format("%s%s, at byte %zu", ctx.c_str(), msg.c_str(), at));
    }
    void need(size_t n, const char * what) const {
        if (n > left())
            fail_at(pos, format("file truncated reading %s (%zu bytes needed, %zu left)", what, n, left()));
    }
    template <class T> T read(const char * what) {
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, base + pos, sizeof v);
        pos += sizeof v;
        return v;
    }
    std::string_view read_str(const char * what) {
        const size_t at = pos;
        const uint64_t n = read<uint64_t>(what);
        if (n > left())
            fail_at(at, format("%s length %llu exceeds the %zu bytes left (file truncated or corrupt)", what,
                               (unsigned long long) n, left()));
        std::string_view s(reinterpret_cast<const char *>(base + pos), size_t(n));
        pos += size_t(n);
        return s;
    }
    gguf_type read_type(const char * what) {
        const size_t at = pos;
        const uint32_t t = read<uint32_t>(what);
        if (!valid_value_type(t)) fail_at(at, format("unknown %s %u", what, t));
        return gguf_type(t);
    }
};

// Printable form of a name read from the file (bounded, control bytes escaped).
std::string printable(std::string_view s) {
    std::string r;
    const size_t max = 80;
    for (size_t i = 0; i < s.size() && i < max; ++i) {
        unsigned char c = (unsigned char) s[i];
        if (c >= 0x20 && c < 0x7f && c != '\'') r += char(c);
        else r += format("\\x%02x", c);
    }
    if (s.size() > max) r += "...";
    return r;
}

// Reads the value of type `t` at the cursor into `v` (depth counts array
// nesting). Arrays bound their count by the bytes left before allocating.
void read_value(cursor & c, gguf_type t, gguf_value & v, int depth);

// Skips (validating) `n` array elements of type `t`; string views are appended
// to `strs` when it is not null.
void read_elems(cursor & c, gguf_type t, uint64_t n, int depth, std::vector<std::string_view> * strs) {
    const size_t at = c.pos;
    const size_t min = min_elem_bytes(t);
    if (n > c.left() / min)
        c.fail_at(at, format("array of %llu %s elements needs at least %llu bytes, %zu left (file truncated or corrupt count)",
                             (unsigned long long) n, gguf_type_name(t),
                             (unsigned long long) (n > std::numeric_limits<uint64_t>::max() / min ? 0 : n * min),
                             c.left()));
    if (t == gguf_type::STRING) {
        if (strs) strs->reserve(size_t(n));
        for (uint64_t k = 0; k < n; ++k) {
            std::string_view s = c.read_str("array string");
            if (strs) strs->push_back(s);
        }
    } else if (t == gguf_type::ARRAY) {
        for (uint64_t k = 0; k < n; ++k) {
            gguf_value sub;
            read_value(c, gguf_type::ARRAY, sub, depth + 1);
        }
    } else if (t == gguf_type::BOOL) {
        for (uint64_t k = 0; k < n; ++k)
            if (c.base[c.pos + k] > 1)
                c.fail_at(c.pos + size_t(k), format("bad bool value %u in array element %llu", c.base[c.pos + k],
                                                    (unsigned long long) k));
        c.pos += size_t(n);
    } else {
        c.pos += size_t(n) * min;
    }
}

void read_value(cursor & c, gguf_type t, gguf_value & v, int depth) {
    v.type = t;
    const size_t at = c.pos;
    switch (t) {
        case gguf_type::STRING:
            v.str = c.read_str("string value");
            return;
        case gguf_type::ARRAY: {
            if (depth >= MAX_ARRAY_DEPTH)
                c.fail_at(at, format("arrays nested more than %d deep", MAX_ARRAY_DEPTH));
            v.arr_type = c.read_type("array element type");
            v.arr_n = c.read<uint64_t>("array length");
            const size_t begin = c.pos;
            read_elems(c, v.arr_type, v.arr_n, depth, v.arr_type == gguf_type::STRING ? &v.arr_str : nullptr);
            v.arr_data = c.base + begin;
            v.arr_bytes = c.pos - begin;
            return;
        }
        default: {
            const size_t n = gguf_type_size(t);
            c.need(n, gguf_type_name(t));
            decode_scalar(t, c.base + c.pos, v);
            if (t == gguf_type::BOOL && v.u > 1) c.fail_at(at, format("bad bool value %llu", (unsigned long long) v.u));
            c.pos += n;
            return;
        }
    }
}

bool mul_ok(uint64_t a, uint64_t b, uint64_t * r) { return !__builtin_mul_overflow(a, b, r); }

// Reads the name (`what`: "key", "tensor name") of entry k of a table and
// makes it the messages' context ("<label> 'name': "); an empty name, or one
// already in `seen`, fails.
template <class Map>
std::string_view read_entry_name(cursor & c, const char * entry, uint64_t k, const char * what, const char * label,
                                 const Map & seen) {
    c.ctx = format("%s %llu: ", entry, (unsigned long long) k);
    const size_t at = c.pos;
    const std::string_view name = c.read_str(what);
    if (name.empty()) c.fail_at(at, format("empty %s", what));
    c.ctx = format("%s '%s': ", label, printable(name).c_str());
    if (seen.count(name)) c.fail_at(at, format("duplicate %s", what));
    return name;
}

} // namespace

void gguf_file::parse_all(const uint8_t * data, size_t size) {
    size_ = size;
    cursor c{*this, data, size, 0, {}};

    // Header.
    if (size < 4) c.fail_at(0, format("not a GGUF file (%zu bytes, too short for the magic)", size));
    const uint32_t magic = c.read<uint32_t>("magic");
    if (magic != GGUF_MAGIC) {
        std::string m = printable(std::string_view(reinterpret_cast<const char *>(data), 4));
        c.fail_at(0, format("not a GGUF file (bad magic '%s', expected 'GGUF')", m.c_str()));
    }
    const uint32_t version = c.read<uint32_t>("version");
    if (version != 2 && version != 3) {
        if (version == 1) c.fail_at(4, "unsupported GGUF version 1 (too old, only 2 and 3 are read)");
        if ((version & 0xffff) == 0 && (version >> 16) != 0)
            c.fail_at(4, format("unsupported GGUF version %u (a big-endian file? only little-endian 2 and 3 are read)", version));
        c.fail_at(4, format("unsupported GGUF version %u (only 2 and 3 are read)", version));
    }
    version_ = version;
    const uint64_t n_tensors = c.read<uint64_t>("tensor count");
    const uint64_t n_kv = c.read<uint64_t>("metadata count");
    {
        const size_t left = c.left();
        if (n_kv > left / MIN_KV_BYTES)
            c.fail_at(16, format("metadata count %llu is impossible in the %zu bytes left (file truncated or corrupt header)",
                                 (unsigned long long) n_kv, left));
        if (n_tensors > left / MIN_TENSOR_BYTES || n_kv * MIN_KV_BYTES + n_tensors * MIN_TENSOR_BYTES > left)
            c.fail_at(8, format("tensor count %llu is impossible in the %zu bytes left (file truncated or corrupt header)",
                                (unsigned long long) n_tensors, left));
    }

    // Metadata.
    size_t alignment_at = 0;  // where general.alignment's value sits, for messages
    for (uint64_t k = 0; k < n_kv; ++k) {
        const std::string_view key = read_entry_name(c, "metadata entry", k, "key", "key", kv_);
        gguf_value v;
        const gguf_type vt = c.read_type("value type");
        if (key == "general.alignment") alignment_at = c.pos;
        read_value(c, vt, v, 0);
        kv_.emplace(std::string(key), std::move(v));
    }
    c.ctx.clear();

    // Alignment.
    if (const gguf_value * a = find("general.alignment")) {
        uint64_t al = 0;
        if (is_unsigned(a->type)) al = a->u;
        else if (is_signed(a->type) && a->i > 0) al = uint64_t(a->i);
        else c.fail_at(alignment_at, format("key 'general.alignment': type %s, expected an integer", gguf_type_name(a->type)));
        if (al == 0 || (al & (al - 1)) != 0 || al > (uint64_t(1) << 30))
            c.fail_at(alignment_at, format("key 'general.alignment': %llu is not a power of two between 1 and 2^30",
                                           (unsigned long long) al));
        alignment_ = size_t(al);
    } else {
        alignment_ = GGUF_DEFAULT_ALIGNMENT;
    }

    // Tensor infos.
    tensors_.reserve(size_t(n_tensors));
    std::vector<size_t> offset_at;  // where each tensor's offset field sits, for messages
    offset_at.reserve(size_t(n_tensors));
    for (uint64_t k = 0; k < n_tensors; ++k) {
        const std::string_view name = read_entry_name(c, "tensor", k, "tensor name", "tensor", tensor_index_);
        gguf_tensor_info ti;
        ti.name = std::string(name);
        const size_t dims_at = c.pos;
        const uint32_t n_dims = c.read<uint32_t>("n_dims");
        if (n_dims < 1 || n_dims > 4) c.fail_at(dims_at, format("n_dims %u out of range 1..4", n_dims));
        ti.n_dims = int(n_dims);
        uint64_t n_elem = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
            const size_t at = c.pos;
            const uint64_t ne = c.read<uint64_t>("dimension");
            if (ne < 1 || ne > uint64_t(std::numeric_limits<int64_t>::max()))
                c.fail_at(at, format("dimension %u is %llu (must be >= 1)", d, (unsigned long long) ne));
            if (!mul_ok(n_elem, ne, &n_elem) || n_elem > uint64_t(std::numeric_limits<int64_t>::max()))
                c.fail_at(at, "element count overflows");
            ti.ne[d] = int64_t(ne);
        }
        const size_t type_at = c.pos;
        const uint32_t tid = c.read<uint32_t>("tensor type");
        if (!type_known(tid) || !traits(type(tid)).to_float)  // (a K/V page type is no tensor's)
            c.fail_at(type_at, format("unknown type %u", tid));
        ti.t = type(tid);
        const type_traits & tr = traits(ti.t);
        if (ti.ne[0] % tr.blck_size != 0)
            c.fail_at(dims_at, format("row length %lld is not a multiple of the %s block size %lld",
                                      (long long) ti.ne[0], tr.name, (long long) tr.blck_size));
        uint64_t nbytes = uint64_t(ti.ne[0] / tr.blck_size);
        if (!mul_ok(nbytes, tr.type_size, &nbytes) || !mul_ok(nbytes, uint64_t(n_elem / uint64_t(ti.ne[0])), &nbytes) ||
            nbytes > uint64_t(std::numeric_limits<size_t>::max()))
            c.fail_at(dims_at, "byte size overflows");
        ti.nbytes = size_t(nbytes);
        const size_t off_at = c.pos;
        ti.offset = c.read<uint64_t>("tensor offset");
        offset_at.push_back(off_at);
        if (ti.offset % alignment_ != 0)
            c.fail_at(off_at, format("data offset %llu is not a multiple of the alignment %zu",
                                     (unsigned long long) ti.offset, alignment_));
        tensor_index_.emplace(ti.name, tensors_.size());
        tensors_.push_back(std::move(ti));
    }
    c.ctx.clear();

    // Data section: starts at the next multiple of the alignment.
    const size_t info_end = c.pos;
    const size_t pad = (alignment_ - info_end % alignment_) % alignment_;
    data_offset_ = info_end + pad;  // no overflow: info_end <= size and alignment_ <= 2^30
    if (!tensors_.empty() && data_offset_ > size)
        c.fail_at(info_end, format("file truncated: the tensor data section would start at byte %zu, past the end (%zu bytes)",
                                   data_offset_, size));
    for (size_t k = 0; k < tensors_.size(); ++k) {
        gguf_tensor_info & ti = tensors_[k];
        const size_t room = data_offset_ <= size ? size - data_offset_ : 0;
        c.ctx = "tensor '" + printable(ti.name) + "': ";
        if (ti.offset > room || ti.nbytes > room - ti.offset)
            c.fail_at(offset_at[k], format("data at offset %llu (%zu bytes) runs past the end of the file "
                                           "(the data section holds %zu bytes; file truncated?)",
                                           (unsigned long long) ti.offset, ti.nbytes, room));
        ti.data = data + data_offset_ + ti.offset;
    }
}

const gguf_value * gguf_file::find(std::string_view key) const {
    auto it = kv_.find(key);
    return it == kv_.end() ? nullptr : &it->second;
}

const gguf_tensor_info * gguf_file::find_tensor(std::string_view name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

// Integer value of a scalar as a signed 128-bit-free pair: true if v is an
// integer type; *neg is set for negative values.
bool int_value(const gguf_value & v, uint64_t * mag, bool * neg) {
    if (is_unsigned(v.type)) { *mag = v.u; *neg = false; return true; }
    if (is_signed(v.type)) {
        *neg = v.i < 0;
        *mag = *neg ? uint64_t(0) - uint64_t(v.i) : uint64_t(v.i);
        return true;
    }
    return false;
}

} // namespace

std::string gguf_file::get_str(std::string_view key, std::string_view def) const {
    const gguf_value * v = find(key);
    if (!v) return std::string(def);
    if (v->type != gguf_type::STRING)
        fail(format("key '%s' has type %s, expected string", std::string(key).c_str(), gguf_type_name(v->type)));
    return std::string(v->str);
}

// The value of `key` as magnitude and sign; null when the key is absent. A
// value that is not an integer fails.
const gguf_value * gguf_file::find_int(std::string_view key, uint64_t * mag, bool * neg) const {
    const gguf_value * v = find(key);
    if (v && !int_value(*v, mag, neg))
        fail(format("key '%s' has type %s, expected an integer", std::string(key).c_str(), gguf_type_name(v->type)));
    return v;
}

uint32_t gguf_file::get_u32(std::string_view key, uint32_t def) const {
    uint64_t mag = 0;
    bool neg = false;
    if (!find_int(key, &mag, &neg)) return def;
    if (neg || mag > std::numeric_limits<uint32_t>::max())
        fail(format("key '%s': value %s%llu does not fit in u32", std::string(key).c_str(), neg ? "-" : "",
                    (unsigned long long) mag));
    return uint32_t(mag);
}

int64_t gguf_file::get_i64(std::string_view key, int64_t def) const {
    uint64_t mag = 0;
    bool neg = false;
    const gguf_value * v = find_int(key, &mag, &neg);
    if (!v) return def;
    if (!neg && mag > uint64_t(std::numeric_limits<int64_t>::max()))
        fail(format("key '%s': value %llu does not fit in i64", std::string(key).c_str(), (unsigned long long) mag));
    return neg ? v->i : int64_t(mag);
}

float gguf_file::get_f32(std::string_view key, float def) const {
    const gguf_value * v = find(key);
    if (!v) return def;
    if (is_float(v->type)) return float(v->f);
    if (is_unsigned(v->type)) return float(v->u);
    if (is_signed(v->type)) return float(v->i);
    fail(format("key '%s' has type %s, expected a number", std::string(key).c_str(), gguf_type_name(v->type)));
}

bool gguf_file::get_bool(std::string_view key, bool def) const {
    const gguf_value * v = find(key);
    if (!v) return def;
    if (v->type != gguf_type::BOOL)
        fail(format("key '%s' has type %s, expected bool", std::string(key).c_str(), gguf_type_name(v->type)));
    return v->u != 0;
}

namespace {

const gguf_value & require_array(const gguf_file & f, std::string_view key) {
    const gguf_value * v = f.find(key);
    if (!v) f.fail(format("key '%s' is missing", std::string(key).c_str()));
    if (v->type != gguf_type::ARRAY)
        f.fail(format("key '%s' has type %s, expected an array", std::string(key).c_str(), gguf_type_name(v->type)));
    return *v;
}

} // namespace

std::vector<std::string_view> gguf_file::get_str_array(std::string_view key) const {
    const gguf_value & v = require_array(*this, key);
    if (v.arr_type != gguf_type::STRING)
        fail(format("key '%s' is an array of %s, expected strings", std::string(key).c_str(), gguf_type_name(v.arr_type)));
    return v.arr_str;
}

std::vector<float> gguf_file::get_f32_array(std::string_view key) const {
    const gguf_value & v = require_array(*this, key);
    if (!is_float(v.arr_type))
        fail(format("key '%s' is an array of %s, expected floats", std::string(key).c_str(), gguf_type_name(v.arr_type)));
    const size_t es = gguf_type_size(v.arr_type);
    std::vector<float> r(size_t(v.arr_n));
    for (size_t k = 0; k < r.size(); ++k) {
        gguf_value e;
        decode_scalar(v.arr_type, v.arr_data + k * es, e);
        r[k] = float(e.f);
    }
    return r;
}

std::vector<int32_t> gguf_file::get_i32_array(std::string_view key) const {
    const gguf_value & v = require_array(*this, key);
    if (!is_signed(v.arr_type) && !is_unsigned(v.arr_type))
        fail(format("key '%s' is an array of %s, expected integers", std::string(key).c_str(), gguf_type_name(v.arr_type)));
    const size_t es = gguf_type_size(v.arr_type);
    std::vector<int32_t> r(size_t(v.arr_n));
    for (size_t k = 0; k < r.size(); ++k) {
        gguf_value e;
        e.type = v.arr_type;
        decode_scalar(v.arr_type, v.arr_data + k * es, e);
        uint64_t mag = 0; bool neg = false;
        int_value(e, &mag, &neg);
        if (neg ? mag > uint64_t(1) << 31 : mag > uint64_t(std::numeric_limits<int32_t>::max()))
            fail(format("key '%s': element %zu (%s%llu) does not fit in i32", std::string(key).c_str(), k,
                        neg ? "-" : "", (unsigned long long) mag));
        r[k] = neg ? int32_t(e.i) : int32_t(mag);
    }
    return r;
}

} // namespace gloas
