#include "decoder/spm-model.h"

#include "base/error.h"
#include "tensor/mmap.h"

#include <cstring>

namespace gloas {

namespace {

// Cursor over one message [p, end) of the file; `base` is the start of the
// file for offsets in messages.
class pb_reader {
public:
    pb_reader(const uint8_t * p, const uint8_t * end, const uint8_t * base, const std::string & file, const char * msg)
        : p_(p), end_(end), base_(base), file_(file), msg_(msg) {}

    bool done() const { return p_ >= end_; }
    size_t offset() const { return size_t(p_ - base_); }

    [[noreturn]] void fail(const std::string & what) const {
        throw error(format("%s: %s, byte %zu: %s", file_.c_str(), msg_, offset(), what.c_str()));
    }

    uint64_t varint() {
        uint64_t v = 0;
        for (int i = 0; i < 10; ++i) {
            if (p_ >= end_) fail("truncated varint");
            uint8_t b = *p_++;
            if (i == 9 && b > 1) fail("varint longer than 64 bits");
            v |= uint64_t(b & 0x7F) << (7 * i);
            if (!(b & 0x80)) return v;
        }
        fail("varint longer than 10 bytes");
    }

    // Reads a field key; returns false at the end of the message.
    bool next(uint32_t * field, uint32_t * wire) {
        if (done()) return false;
        uint64_t key = varint();
        *wire = uint32_t(key & 7);
        uint64_t f = key >> 3;
        if (f == 0 || f > 0x1FFFFFFF) fail(format("invalid field number %llu", (unsigned long long) f));
        if (*wire == 3 || *wire == 4) fail(format("field %llu uses groups (wire type %u), which are not supported", (unsigned long long) f, *wire));
        if (*wire != 0 && *wire != 1 && *wire != 2 && *wire != 5)
            fail(format("field %llu has invalid wire type %u", (unsigned long long) f, *wire));
        *field = uint32_t(f);
        return true;
    }

    // A length-delimited value: returns its bytes.
    std::pair<const uint8_t *, size_t> bytes() {
        uint64_t n = varint();
        if (n > uint64_t(end_ - p_)) fail(format("length %llu runs past the end of the message", (unsigned long long) n));
        const uint8_t * s = p_;
        p_ += n;
        return {s, size_t(n)};
    }

    float fixed32_float() {
        if (end_ - p_ < 4) fail("truncated 32-bit value");
        float f;
        std::memcpy(&f, p_, 4);
        p_ += 4;
        return f;
    }

    void skip(uint32_t wire) {
        switch (wire) {
            case 0: varint(); break;
            case 1: if (end_ - p_ < 8) fail("truncated 64-bit value"); p_ += 8; break;
            case 2: bytes(); break;
            case 5: if (end_ - p_ < 4) fail("truncated 32-bit value"); p_ += 4; break;
            default: fail("bad wire type");
        }
    }

    void expect(uint32_t wire, uint32_t want, const char * field) {
        if (wire != want) fail(format("field %s has wire type %u, expected %u", field, wire, want));
    }

    pb_reader sub(const char * msg) {
        auto [s, n] = bytes();
        return pb_reader(s, s + n, base_, file_, msg);
    }

private:
    const uint8_t * p_;
    const uint8_t * end_;
    const uint8_t * base_;
    const std::string & file_;
    const char * msg_;
};

bool valid_utf8(const uint8_t * s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned cp;
        if (c < 0x80) { ++i; continue; }
        if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
        else return false;
        if (n - i < len) return false;
        for (size_t k = 1; k < len; ++k) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

} // namespace

spm_model spm_model::load(const std::string & path) {
    mapped_file m(path);
    return parse(m.data(), m.size(), path);
}

spm_model spm_model::parse(const uint8_t * data, size_t size, const std::string & name) {
    spm_model out;
    vocab & v = out.v;
    int64_t unk = 0, bos = 1, eos = 2, pad = -1;
    bool add_dummy_prefix = true;
    if (size == 0) throw error(name + ": empty file, not a SentencePiece model");

    pb_reader model(data, data + size, data, name, "ModelProto");
    uint32_t field, wire;
    while (model.next(&field, &wire)) {
        if (field == 1) {  // SentencePiece
            model.expect(wire, 2, "pieces");
            pb_reader sp = model.sub("SentencePiece");
            std::string piece;
            bool has_piece = false;
            float score = 0.0f;
            uint64_t ty = 1;
            uint32_t f2, w2;
            while (sp.next(&f2, &w2)) {
                if (f2 == 1) {
                    sp.expect(w2, 2, "piece");
                    auto [s, n] = sp.bytes();
                    if (!valid_utf8(s, n)) sp.fail(format("piece %zu is not valid UTF-8", v.pieces.size()));
                    piece.assign(reinterpret_cast<const char *>(s), n);
                    has_piece = true;
                } else if (f2 == 2) {
                    sp.expect(w2, 5, "score");
                    score = sp.fixed32_float();
                } else if (f2 == 3) {
                    sp.expect(w2, 0, "type");
                    ty = sp.varint();
                    if (ty < 1 || ty > 6) sp.fail(format("piece %zu has unknown type %llu", v.pieces.size(), (unsigned long long) ty));
                } else {
                    sp.skip(w2);
                }
            }
            if (!has_piece) model.fail(format("piece %zu has no text", v.pieces.size()));
            if (v.pieces.size() >= (size_t(1) << 24)) model.fail("more than 2^24 pieces");
            v.pieces.push_back(std::move(piece));
            v.scores.push_back(score);
            v.types.push_back(token_type(int32_t(ty)));
        } else if (field == 2) {  // TrainerSpec
            model.expect(wire, 2, "trainer_spec");
            pb_reader ts = model.sub("TrainerSpec");
            uint32_t f2, w2;
            while (ts.next(&f2, &w2)) {
                auto int32_field = [&](const char * what) {
                    ts.expect(w2, 0, what);
                    return int64_t(int32_t(uint32_t(ts.varint())));  // int32 is sign-extended to 64 bits on the wire
                };
                switch (f2) {
                    case 3: out.model_type = int32_t(int32_field("model_type")); break;
                    case 35: ts.expect(w2, 0, "byte_fallback"); out.byte_fallback = ts.varint() != 0; break;
                    case 40: unk = int32_field("unk_id"); break;
                    case 41: bos = int32_field("bos_id"); break;
                    case 42: eos = int32_field("eos_id"); break;
                    case 43: pad = int32_field("pad_id"); break;
                    default: ts.skip(w2);
                }
            }
        } else if (field == 3) {  // NormalizerSpec
            model.expect(wire, 2, "normalizer_spec");
            pb_reader ns = model.sub("NormalizerSpec");
            uint32_t f2, w2;
            while (ns.next(&f2, &w2)) {
                if (f2 == 3) {
                    ns.expect(w2, 0, "add_dummy_prefix");
                    add_dummy_prefix = ns.varint() != 0;
                } else {
                    ns.skip(w2);
                }
            }
        } else {
            model.skip(wire);
        }
    }

    const int64_t n = int64_t(v.pieces.size());
    if (n == 0) throw error(name + ": no pieces: not a SentencePiece model");
    if (out.model_type < 1 || out.model_type > 4)
        throw error(format("%s: TrainerSpec.model_type %d is unknown", name.c_str(), out.model_type));
    auto check_id = [&](int64_t id, const char * what, bool required) {
        if ((required && id < 0) || id < -1 || id >= n)
            throw error(format("%s: TrainerSpec.%s %lld is out of range (%lld pieces)", name.c_str(), what, (long long) id, (long long) n));
    };
    check_id(unk, "unk_id", true);
    check_id(bos, "bos_id", false);
    check_id(eos, "eos_id", false);
    check_id(pad, "pad_id", false);
    v.unk = int32_t(unk);
    v.bos = int32_t(bos);
    v.eos = int32_t(eos);
    out.pad_id = int32_t(pad);
    v.add_bos = bos >= 0;
    v.add_space_prefix = add_dummy_prefix;
    return out;
}

} // namespace gloas
