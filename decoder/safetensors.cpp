#include "decoder/safetensors.h"

#include "base/error.h"
#include "decoder/text.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <utility>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the safetensors reader assumes a little-endian host"
#endif

namespace gloas {

namespace {

constexpr uint64_t MAX_HEADER_BYTES = 100000000;  // the limit of the reference implementation
constexpr int      MAX_JSON_DEPTH = 32;
constexpr size_t   MAX_DIMS = 8;

// A JSON value. Numbers keep their text; only what the header needs is
// interpreted (non-negative integers).
struct jvalue {
    enum kind_t { NUL, BOOL, NUMBER, STRING, ARRAY, OBJECT } kind = NUL;
    bool b = false;
    std::string s;  // STRING: the decoded text; NUMBER: the literal
    std::vector<jvalue> arr;
    std::vector<std::pair<std::string, jvalue>> obj;  // in file order, keys unique
};

const char * kind_name(jvalue::kind_t k) {
    switch (k) {
        case jvalue::NUL: return "null";
        case jvalue::BOOL: return "a boolean";
        case jvalue::NUMBER: return "a number";
        case jvalue::STRING: return "a string";
        case jvalue::ARRAY: return "an array";
        case jvalue::OBJECT: return "an object";
    }
    return "?";
}

// Strict RFC 8259 parser over [p, end). Errors throw gloas::error with the
// byte offset within the header.
class json_parser {
public:
    json_parser(const char * p, const char * end, const std::string & file) : begin_(p), p_(p), end_(end), file_(file) {}

    jvalue parse_document() {
        skip_ws();
        jvalue v = parse_value(0);
        skip_ws();
        if (p_ != end_) fail("unexpected bytes after the JSON value");
        return v;
    }

private:
    [[noreturn]] void fail(const std::string & msg) const {
        throw error(format("%s: header JSON, byte %zu: %s", file_.c_str(), size_t(p_ - begin_), msg.c_str()));
    }

    void skip_ws() {
        while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
    }

    void expect_literal(const char * lit) {
        size_t n = std::strlen(lit);
        if (size_t(end_ - p_) < n || std::memcmp(p_, lit, n) != 0) fail("invalid literal");
        p_ += n;
    }

    jvalue parse_value(int depth) {
        if (depth > MAX_JSON_DEPTH) fail(format("nested deeper than %d levels", MAX_JSON_DEPTH));
        if (p_ >= end_) fail("unexpected end of the header");
        jvalue v;
        switch (*p_) {
            case '{': v.kind = jvalue::OBJECT; parse_object(v, depth); break;
            case '[': v.kind = jvalue::ARRAY; parse_array(v, depth); break;
            case '"': v.kind = jvalue::STRING; v.s = parse_string(); break;
            case 't': expect_literal("true"); v.kind = jvalue::BOOL; v.b = true; break;
            case 'f': expect_literal("false"); v.kind = jvalue::BOOL; break;
            case 'n': expect_literal("null"); break;
            default:
                if (*p_ == '-' || (*p_ >= '0' && *p_ <= '9')) { v.kind = jvalue::NUMBER; v.s = parse_number(); break; }
                fail(format("unexpected character 0x%02x", unsigned(uint8_t(*p_))));
        }
        return v;
    }

    void parse_object(jvalue & v, int depth) {
        ++p_;  // '{'
        std::set<std::string, std::less<>> keys;
        skip_ws();
        if (p_ < end_ && *p_ == '}') { ++p_; return; }
        for (;;) {
            skip_ws();
            if (p_ >= end_ || *p_ != '"') fail("expected a string key");
            std::string key = parse_string();
            if (!keys.insert(key).second) fail("duplicate key '" + key + "'");
            skip_ws();
            if (p_ >= end_ || *p_ != ':') fail("expected ':'");
            ++p_;
            skip_ws();
            jvalue member = parse_value(depth + 1);
            v.obj.emplace_back(std::move(key), std::move(member));
            skip_ws();
            if (p_ >= end_) fail("unterminated object");
            if (*p_ == ',') { ++p_; continue; }
            if (*p_ == '}') { ++p_; return; }
            fail("expected ',' or '}'");
        }
    }

    void parse_array(jvalue & v, int depth) {
        ++p_;  // '['
        skip_ws();
        if (p_ < end_ && *p_ == ']') { ++p_; return; }
        for (;;) {
            skip_ws();
            v.arr.push_back(parse_value(depth + 1));
            skip_ws();
            if (p_ >= end_) fail("unterminated array");
            if (*p_ == ',') { ++p_; continue; }
            if (*p_ == ']') { ++p_; return; }
            fail("expected ',' or ']'");
        }
    }

    std::string parse_number() {
        const char * s = p_;
        if (p_ < end_ && *p_ == '-') ++p_;
        auto digits = [&]() {
            const char * d = p_;
            while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
            if (p_ == d) fail("malformed number");
        };
        if (p_ < end_ && *p_ == '0') ++p_;
        else digits();
        if (p_ < end_ && *p_ == '.') { ++p_; digits(); }
        if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
            ++p_;
            if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
            digits();
        }
        return std::string(s, size_t(p_ - s));
    }

    unsigned hex4() {
        if (end_ - p_ < 4) fail("truncated \\u escape");
        unsigned v = 0;
        for (int i = 0; i < 4; ++i) {
            const int h = hex_value(*p_++);
            if (h < 0) fail("bad hex digit in \\u escape");
            v = v << 4 | unsigned(h);
        }
        return v;
    }

    // Length of the valid UTF-8 sequence at p (0 if invalid).
    size_t utf8_len(const unsigned char * p, size_t left) const {
        unsigned c = p[0];
        size_t n;
        unsigned cp;
        if (c < 0x80) return 1;
        if (c >= 0xC2 && c <= 0xDF) { n = 2; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { n = 3; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { n = 4; cp = c & 0x07; }
        else return 0;
        if (left < n) return 0;
        for (size_t i = 1; i < n; ++i) {
            if ((p[i] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        return n;
    }

    std::string parse_string() {
        ++p_;  // '"'
        std::string out;
        for (;;) {
            if (p_ >= end_) fail("unterminated string");
            unsigned char c = uint8_t(*p_);
            if (c == '"') { ++p_; return out; }
            if (c < 0x20) fail("control character in a string");
            if (c == '\\') {
                ++p_;
                if (p_ >= end_) fail("unterminated escape");
                const char e = *p_++;
                if (const int ch = json_escape(e); ch >= 0) {
                    out += char(ch);
                    continue;
                }
                switch (e) {
                    case 'u': {
                        unsigned cp = hex4();
                        if (cp >= 0xDC00 && cp <= 0xDFFF) fail("lone low surrogate in \\u escape");
                        if (cp >= 0xD800 && cp <= 0xDBFF) {
                            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') fail("high surrogate without a low surrogate");
                            p_ += 2;
                            unsigned lo = hex4();
                            if (lo < 0xDC00 || lo > 0xDFFF) fail("high surrogate without a low surrogate");
                            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        }
                        append_utf8(out, cp);
                        break;
                    }
                    default: fail("invalid escape");
                }
                continue;
            }
            size_t n = utf8_len(reinterpret_cast<const unsigned char *>(p_), size_t(end_ - p_));
            if (!n) fail("invalid UTF-8 in a string");
            out.append(p_, n);
            p_ += n;
        }
    }

    const char * begin_;
    const char * p_;
    const char * end_;
    const std::string & file_;
};

// A non-negative integer literal that fits in 2^62 (false otherwise).
bool to_u62(const jvalue & v, uint64_t * out) {
    if (v.kind != jvalue::NUMBER || v.s.empty() || v.s.size() > 19) return false;
    uint64_t x = 0;
    for (char c : v.s) {
        if (c < '0' || c > '9') return false;  // negative, fraction or exponent
        x = x * 10 + uint64_t(c - '0');
    }
    if (x > (uint64_t(1) << 62)) return false;
    *out = x;
    return true;
}

struct dtype_info {
    const char * name;
    bool supported;
    type t;
    size_t size;
};

const dtype_info DTYPES[] = {
    {"F32", true, type::F32, 4},   {"F16", true, type::F16, 2},    {"BF16", true, type::BF16, 2},
    {"F64", false, type::F32, 8},  {"I64", false, type::F32, 8},   {"U64", false, type::F32, 8},
    {"I32", false, type::F32, 4},  {"U32", false, type::F32, 4},   {"I16", false, type::F32, 2},
    {"U16", false, type::F32, 2},  {"I8", false, type::F32, 1},    {"U8", false, type::F32, 1},
    {"BOOL", false, type::F32, 1}, {"F8_E4M3", false, type::F32, 1}, {"F8_E5M2", false, type::F32, 1},
};

} // namespace

int64_t safetensors_tensor::nelements() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

const safetensors_tensor * safetensors_file::find(std::string_view name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors_[it->second];
}

void safetensors_file::parse_all(const uint8_t * data, size_t size) {
    if (size < 8) fail(format("too small for a safetensors file (%zu bytes; the header length alone is 8)", size));
    uint64_t n;
    std::memcpy(&n, data, 8);
    if (n > size - 8)
        fail(format("header length %llu is past the end of the file (%zu bytes)", (unsigned long long) n, size));
    if (n > MAX_HEADER_BYTES)
        fail(format("header length %llu is larger than the %llu-byte limit", (unsigned long long) n,
                    (unsigned long long) MAX_HEADER_BYTES));
    if (n < 2 || data[8] != '{') fail("header is not a JSON object (it must start with '{')");
    data_offset_ = size_t(8 + n);
    const uint8_t * base = data + data_offset_;
    const uint64_t data_size = size - data_offset_;

    const char * h = reinterpret_cast<const char *>(data + 8);
    jvalue root = json_parser(h, h + n, name_).parse_document();
    if (root.kind != jvalue::OBJECT) fail("header is not a JSON object");

    for (auto & [key, v] : root.obj) {
        if (key == "__metadata__") {
            if (v.kind != jvalue::OBJECT) fail(format("__metadata__ is %s, expected an object", kind_name(v.kind)));
            for (auto & [mk, mv] : v.obj) {
                if (mv.kind != jvalue::STRING)
                    fail(format("__metadata__.%s is %s, expected a string", mk.c_str(), kind_name(mv.kind)));
                metadata_[mk] = mv.s;
            }
            continue;
        }
        const char * tn = key.c_str();
        if (key.empty()) fail("a tensor has an empty name");
        if (v.kind != jvalue::OBJECT) fail(format("tensor '%s' is %s, expected an object", tn, kind_name(v.kind)));
        const jvalue * dtype = nullptr, * shape = nullptr, * offsets = nullptr;
        for (auto & [f, fv] : v.obj) {
            if (f == "dtype") dtype = &fv;
            else if (f == "shape") shape = &fv;
            else if (f == "data_offsets") offsets = &fv;
        }
        if (!dtype) fail(format("tensor '%s': missing field dtype", tn));
        if (!shape) fail(format("tensor '%s': missing field shape", tn));
        if (!offsets) fail(format("tensor '%s': missing field data_offsets", tn));

        safetensors_tensor t;
        t.name = key;
        if (dtype->kind != jvalue::STRING) fail(format("tensor '%s': dtype is %s, expected a string", tn, kind_name(dtype->kind)));
        const dtype_info * di = nullptr;
        for (const auto & d : DTYPES)
            if (dtype->s == d.name) di = &d;
        if (!di) fail(format("tensor '%s': unknown dtype '%s'", tn, dtype->s.c_str()));
        if (!di->supported)
            fail(format("tensor '%s': dtype %s is not supported (F32, F16 and BF16 are)", tn, di->name));
        t.t = di->t;

        if (shape->kind != jvalue::ARRAY) fail(format("tensor '%s': shape is %s, expected an array", tn, kind_name(shape->kind)));
        if (shape->arr.size() > MAX_DIMS)
            fail(format("tensor '%s': shape has %zu dimensions (at most %zu)", tn, shape->arr.size(), MAX_DIMS));
        uint64_t nel = 1;
        bool zero = false;
        for (size_t i = 0; i < shape->arr.size(); ++i) {
            uint64_t d;
            if (!to_u62(shape->arr[i], &d)) fail(format("tensor '%s': shape[%zu] is not a non-negative integer", tn, i));
            if (d == 0) zero = true;
            else if (!zero && nel > (uint64_t(1) << 60) / d)
                fail(format("tensor '%s': shape has too many elements", tn));
            if (!zero) nel *= d;
            t.shape.push_back(int64_t(d));
        }
        if (zero) nel = 0;
        const uint64_t want = nel * di->size;

        if (offsets->kind != jvalue::ARRAY || offsets->arr.size() != 2)
            fail(format("tensor '%s': data_offsets must be an array of two integers", tn));
        if (!to_u62(offsets->arr[0], &t.begin) || !to_u62(offsets->arr[1], &t.end))
            fail(format("tensor '%s': data_offsets are not non-negative integers", tn));
        if (t.begin > t.end)
            fail(format("tensor '%s': data_offsets [%llu, %llu] end before they begin", tn,
                        (unsigned long long) t.begin, (unsigned long long) t.end));
        if (t.end > data_size)
            fail(format("tensor '%s': data_offsets [%llu, %llu] are past the end of the data (%llu bytes)", tn,
                        (unsigned long long) t.begin, (unsigned long long) t.end, (unsigned long long) data_size));
        if (t.end - t.begin != want)
            fail(format("tensor '%s': data_offsets [%llu, %llu] hold %llu bytes, but shape and dtype %s need %llu", tn,
                        (unsigned long long) t.begin, (unsigned long long) t.end,
                        (unsigned long long) (t.end - t.begin), di->name, (unsigned long long) want));
        t.data = base + t.begin;
        t.nbytes = size_t(t.end - t.begin);
        tensors_.push_back(std::move(t));
    }

    std::stable_sort(tensors_.begin(), tensors_.end(), [](const safetensors_tensor & a, const safetensors_tensor & b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    const safetensors_tensor * prev = nullptr;
    for (const auto & t : tensors_) {
        if (t.nbytes == 0) continue;
        if (prev && t.begin < prev->end)
            fail(format("tensors '%s' and '%s' overlap (data_offsets [%llu, %llu] and [%llu, %llu])", prev->name.c_str(),
                        t.name.c_str(), (unsigned long long) prev->begin, (unsigned long long) prev->end,
                        (unsigned long long) t.begin, (unsigned long long) t.end));
        prev = &t;
    }
    for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

} // namespace gloas
