#include "decoder/tokenizer.h"

#include "decoder/gguf.h"
#include "decoder/bigram-merge.h"
#include "decoder/pretokenize.h"
#include "decoder/text.h"
#include "base/error.h"
#include "tensor/mmap.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <algorithm>

namespace gloas {

namespace {

const char k_space_marker[] = "\xe2\x96\x81";  // U+2581 "▁", SentencePiece's space

// Pieces that encode() may produce by merging or as a whole symbol.
bool is_mergeable(token_type t) {
    return t == token_type::NORMAL || t == token_type::USER_DEFINED || t == token_type::UNDEFINED;
}

// Byte of a "<0xXX>" piece, -1 if the piece has another form.
int parse_byte_piece(std::string_view p) {
    if (p.size() != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>') return -1;
    int hi = hex_value(p[3]), lo = hex_value(p[4]);
    if (hi < 0 || lo < 0) return -1;
    return hi * 16 + lo;
}

// Length of the UTF-8 character at s[off]: 2 to 4 for a lead byte followed by
// its continuation bytes, else 1 (ASCII, and each byte of invalid UTF-8 on its
// own, so a bad byte never swallows the characters after it).
size_t utf8_len(std::string_view s, size_t off) {
    const uint8_t c = uint8_t(s[off]);
    const size_t n = c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF8 ? 4 : 1;
    if (n == 1 || off + n > s.size()) return 1;
    for (size_t k = 1; k < n; ++k)
        if ((uint8_t(s[off + k]) & 0xC0) != 0x80) return 1;
    return n;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
    std::string r;
    r.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
        if (s.compare(i, from.size(), from) == 0) {
            r.append(to);
            i += from.size();
        } else {
            r.push_back(s[i++]);
        }
    }
    return r;
}

std::string printable(std::string_view s) {
    std::string r;
    for (char c : s) {
        uint8_t u = uint8_t(c);
        if (u < 0x20 || u == 0x7f || c == '\'') r += format("\\x%02x", u);
        else r.push_back(c);
    }
    return r;
}

size_t hash_piece(std::string_view s) { return std::hash<std::string_view>{}(s); }

// The end-of-turn token of a vocabulary whose file names none, found by its
// text as llama.cpp does; -1 if none (the lowest id among equals).
int32_t find_eot_by_text(const vocab & v) {
    static const char * const k_texts[] = {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>",
        "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>",  // DeepSeek's <｜end▁of▁sentence｜>
    };
    for (size_t i = 0; i < v.pieces.size(); ++i)
        for (const char * t : k_texts)
            if (v.pieces[i] == t) return int32_t(i);
    return -1;
}

} // namespace

tokenizer::tokenizer(vocab v) : v_(std::move(v)) {
    const size_t n = v_.pieces.size();
    if (n == 0) throw error("tokenizer: empty vocabulary");
    if (n > size_t(std::numeric_limits<int32_t>::max() / 4))
        throw error(format("tokenizer: vocabulary of %zu pieces is too large", n));
    if (v_.kind == vocab_kind::BPE && v_.scores.empty()) v_.scores.assign(n, 0.0f);
    if (v_.scores.size() != n || v_.types.size() != n)
        throw error(format("tokenizer: %zu pieces but %zu scores and %zu token types", n,
                           v_.scores.size(), v_.types.size()));
    auto check_id = [&](int32_t id, const char * what) {
        if (id < -1 || id >= int32_t(n))
            throw error(format("tokenizer: %s token id %d out of range [0, %zu)", what, id, n));
    };
    check_id(v_.bos, "BOS");
    check_id(v_.eos, "EOS");
    check_id(v_.unk, "unknown");
    check_id(v_.eot, "end-of-turn");

    for (size_t i = 0; i < n; ++i) {
        const token_type t = v_.types[i];
        if (int32_t(t) < 0 || int32_t(t) > int32_t(token_type::BYTE))
            throw error(format("tokenizer: token %zu has unknown type %d", i, int(t)));
        if ((t == token_type::CONTROL || t == token_type::USER_DEFINED || t == token_type::UNKNOWN) &&
            !v_.pieces[i].empty())
            special_.push_back(int32_t(i));
    }
    std::stable_sort(special_.begin(), special_.end(), [&](int32_t a, int32_t b) {
        return v_.pieces[size_t(a)].size() > v_.pieces[size_t(b)].size();
    });
    if (v_.kind == vocab_kind::BPE) {
        init_bpe();
        return;
    }

    for (int & b : byte_ids_) b = -1;
    size_t n_mergeable = 0;
    for (size_t i = 0; i < n; ++i) {
        const token_type t = v_.types[i];
        if (t == token_type::BYTE) {
            int b = parse_byte_piece(v_.pieces[i]);
            if (b < 0)
                throw error(format("tokenizer: byte token %zu has piece '%s', expected <0xXX>", i,
                                   printable(v_.pieces[i]).c_str()));
            if (byte_ids_[b] < 0) byte_ids_[b] = int32_t(i);
        }
        if (is_mergeable(t)) ++n_mergeable;
    }

    pair_bits_.assign(65536 / 64, 0);
    for (size_t i = 0; i < n; ++i) {
        if (!is_mergeable(v_.types[i])) continue;
        const std::string & p = v_.pieces[i];
        for (size_t j = 1; j < p.size(); ++j) {
            unsigned k = unsigned(uint8_t(p[j - 1])) << 8 | uint8_t(p[j]);
            pair_bits_[k / 64] |= uint64_t(1) << (k % 64);
        }
    }

    size_t cap = 16;
    while (cap < 2 * n_mergeable) cap *= 2;
    table_.assign(cap, -1);
    const size_t mask = cap - 1;
    for (size_t i = 0; i < n; ++i) {
        if (!is_mergeable(v_.types[i])) continue;
        const std::string & p = v_.pieces[i];
        size_t h = hash_piece(p) & mask;
        // A duplicate piece keeps the last id (as llama.cpp's text-to-id map does).
        while (table_[h] >= 0 && v_.pieces[size_t(table_[h])] != p) h = (h + 1) & mask;
        table_[h] = int32_t(i);
    }
}

int32_t tokenizer::find_piece(std::string_view piece) const {
    if (bpe_) return bpe_find_piece(piece);
    if (table_.empty()) return -1;
    const size_t mask = table_.size() - 1;
    for (size_t h = hash_piece(piece) & mask;; h = (h + 1) & mask) {
        int32_t id = table_[h];
        if (id < 0) return -1;
        if (v_.pieces[size_t(id)] == piece) return id;
    }
}

// ---------------------------------------------------------------------------
// Loading

tokenizer tokenizer::from_llama2c(const std::string & path, int32_t n_vocab_expected) {
    // tokenizer.bin: u32 max_token_length, then per token f32 score, i32 length,
    // `length` bytes (spaces as ' '). The vocabulary size is not stored.
    const std::string data = read_whole_file(path);

    const char * p = path.c_str();
    size_t off = 0;
    auto left = [&]() { return data.size() - off; };
    if (left() < 4) throw error(format("%s: truncated header (%zu bytes, need 4)", p, data.size()));
    uint32_t max_len;
    std::memcpy(&max_len, data.data(), 4);
    off = 4;

    vocab v;
    for (int64_t i = 0; n_vocab_expected < 0 ? left() > 0 : i < n_vocab_expected; ++i) {
        if (i >= std::numeric_limits<int32_t>::max() / 4)
            throw error(format("%s: too many tokens", p));
        if (left() < 8)
            throw error(format("%s: token %lld: truncated (score and length need 8 bytes, %zu left)",
                               p, (long long) i, left()));
        float score;
        int32_t len;
        std::memcpy(&score, data.data() + off, 4);
        std::memcpy(&len, data.data() + off + 4, 4);
        off += 8;
        if (len < 0) throw error(format("%s: token %lld: negative length %d", p, (long long) i, len));
        if (size_t(len) > left())
            throw error(format("%s: token %lld: length %d runs past the end of the file (%zu bytes left)",
                               p, (long long) i, len, left()));
        if (uint32_t(len) > max_len)
            throw error(format("%s: token %lld: length %d exceeds max_token_length %u", p,
                               (long long) i, len, max_len));
        std::string piece(data.data() + off, size_t(len));
        off += size_t(len);

        token_type t = token_type::NORMAL;
        if (i == 0) {
            t = token_type::UNKNOWN;
        } else if (i == 1 || i == 2) {
            t = token_type::CONTROL;
            // llama2.c's exporter writes BOS/EOS as "\n<s>\n" and "\n</s>\n".
            if (piece == "\n<s>\n") piece = "<s>";
            if (piece == "\n</s>\n") piece = "</s>";
        } else if (parse_byte_piece(piece) >= 0) {
            t = token_type::BYTE;
        }
        if (t != token_type::BYTE) piece = replace_all(piece, " ", k_space_marker);
        v.pieces.push_back(std::move(piece));
        v.scores.push_back(score);
        v.types.push_back(t);
    }
    if (v.pieces.empty()) throw error(format("%s: no tokens", p));
    v.bos = v.pieces.size() > 1 ? 1 : -1;
    v.eos = v.pieces.size() > 2 ? 2 : -1;
    v.unk = 0;
    try {
        return tokenizer(std::move(v));
    } catch (const error & e) {
        throw error(path + ": " + e.what());
    }
}

tokenizer tokenizer::from_gguf(const gguf_file & f) {
    const std::string model = f.get_str("tokenizer.ggml.model");
    if (model.empty()) f.fail("no tokenizer (tokenizer.ggml.model is missing)");
    if (model != "llama" && model != "gpt2")
        f.fail("tokenizer.ggml.model is '" + printable(model) +
               "'; only 'llama' (SentencePiece BPE) and 'gpt2' (byte-level BPE) are supported");
    const bool bpe = model == "gpt2";

    vocab v;
    bool bpe_add_bos = false;  // the pre-tokenizer's default for add_bos_token
    if (bpe) {
        v.kind = vocab_kind::BPE;
        v.pre = f.get_str("tokenizer.ggml.pre");
        pretokenizer pre;
        bool ignore_merges;
        if (!pretokenizer_from_name(v.pre, pre, ignore_merges, bpe_add_bos))
            f.fail("tokenizer.ggml.pre is '" + printable(v.pre) + "', a pre-tokenizer gloas does not know");
        if (!f.find("tokenizer.ggml.merges")) f.fail("tokenizer.ggml.merges is missing (needed by a 'gpt2' tokenizer)");
        const std::vector<std::string_view> merges = f.get_str_array("tokenizer.ggml.merges");
        v.merges.reserve(merges.size());
        for (auto m : merges) v.merges.emplace_back(m);
    }
    const std::vector<std::string_view> tokens = f.get_str_array("tokenizer.ggml.tokens");
    const size_t n = tokens.size();
    if (n == 0) f.fail("tokenizer.ggml.tokens is empty");
    if (n > size_t(std::numeric_limits<int32_t>::max() / 4))
        f.fail(format("tokenizer.ggml.tokens has too many entries (%zu)", n));
    v.pieces.reserve(n);
    for (auto t : tokens) v.pieces.emplace_back(t);

    if (f.find("tokenizer.ggml.scores")) {
        v.scores = f.get_f32_array("tokenizer.ggml.scores");
        if (v.scores.size() != n)
            f.fail(format("tokenizer.ggml.scores has %zu entries, tokenizer.ggml.tokens %zu",
                          v.scores.size(), n));
    } else {
        v.scores.assign(n, 0.0f);
    }
    if (f.find("tokenizer.ggml.token_type")) {
        const std::vector<int32_t> types = f.get_i32_array("tokenizer.ggml.token_type");
        if (types.size() != n)
            f.fail(format("tokenizer.ggml.token_type has %zu entries, tokenizer.ggml.tokens %zu",
                          types.size(), n));
        v.types.reserve(n);
        for (size_t i = 0; i < n; ++i) {
            if (types[i] < 0 || types[i] > int32_t(token_type::BYTE))
                f.fail(format("tokenizer.ggml.token_type[%zu] = %d is not a token type", i, types[i]));
            v.types.push_back(token_type(types[i]));
        }
    } else {
        v.types.assign(n, token_type::NORMAL);
    }

    auto get_id = [&](const char * key, int32_t def) {
        int64_t id = f.get_i64(key, def);
        // 0xFFFFFFFF (u32) and -1 both mean "none", as llama.cpp writes them.
        if (id == -1 || id == int64_t(UINT32_MAX)) return int32_t(-1);
        if (id < 0 || id >= int64_t(n))
            f.fail(format("%s = %lld is out of range [0, %zu)", key, (long long) id, n));
        return int32_t(id);
    };
    v.bos = get_id("tokenizer.ggml.bos_token_id", bpe ? -1 : n > 1 ? 1 : -1);
    v.eos = get_id("tokenizer.ggml.eos_token_id", bpe ? -1 : n > 2 ? 2 : -1);
    v.unk = get_id("tokenizer.ggml.unknown_token_id", bpe ? -1 : 0);
    v.eot = get_id("tokenizer.ggml.eot_token_id", -1);
    if (v.eot < 0) {
        // Found by its text, it is made a control token (as llama.cpp does),
        // so it is cut out of prompts and gives no text.
        v.eot = find_eot_by_text(v);
        if (v.eot >= 0) v.types[size_t(v.eot)] = token_type::CONTROL;
    }
    v.add_bos = f.get_bool("tokenizer.ggml.add_bos_token", bpe ? bpe_add_bos : true);
    v.add_space_prefix = f.get_bool("tokenizer.ggml.add_space_prefix", !bpe);
    try {
        return tokenizer(std::move(v));
    } catch (const error & e) {
        f.fail(e.what());
    }
}

// ---------------------------------------------------------------------------
// Encoding

namespace {

// Symbols are runs of bytes of the (escaped) text.
using symbol = detail::merge_symbol;

// A candidate merge of two adjacent symbols; `size` is their combined length
// when queued, so an entry made stale by another merge can be recognised.
struct bigram {
    float score;
    int32_t left, right;
    uint32_t size;
};

// Highest score first, then leftmost.
struct bigram_order {
    bool operator()(const bigram & a, const bigram & b) const {
        return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
};

} // namespace

std::vector<int32_t> tokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
    if (v_.pieces.empty()) throw error("tokenizer: no vocabulary loaded");
    std::vector<int32_t> out;
    if (add_bos && v_.bos >= 0) out.push_back(v_.bos);
    if (v_.kind == vocab_kind::SPM && !parse_special) {
        encode_spm(text, v_.add_space_prefix, out);
        return out;
    }
    // Cut the special tokens out, then encode the text between them.
    bool after_special = true;
    for (const fragment & fr : partition_special(text, parse_special)) {
        if (fr.id >= 0) {
            out.push_back(fr.id);
            after_special = true;
            continue;
        }
        const std::string_view t = text.substr(fr.off, fr.len);
        if (v_.kind == vocab_kind::SPM) encode_spm(t, v_.add_space_prefix && after_special, out);
        else encode_bpe(t, out);
        after_special = false;
    }
    return out;
}

void tokenizer::encode_spm(std::string_view text, bool space_prefix, std::vector<int32_t> & out) const {
    if (text.empty()) return;

    // Escape spaces and add the space prefix.
    std::string s;
    s.reserve(text.size() + 3);
    if (space_prefix) s += k_space_marker;
    for (char c : text) {
        if (c == ' ') s += k_space_marker;
        else s.push_back(c);
    }
    if (s.size() >= size_t(std::numeric_limits<int32_t>::max()))
        throw error(format("tokenizer: text of %zu bytes is too long to encode", text.size()));

    // One symbol per UTF-8 character.
    std::vector<symbol> sym;
    sym.reserve(s.size());
    for (size_t off = 0; off < s.size();) {
        size_t len = utf8_len(s, off);
        int32_t idx = int32_t(sym.size());
        sym.push_back({idx - 1, off + len == s.size() ? -1 : idx + 1, uint32_t(off), uint32_t(len)});
        off += len;
    }

    std::vector<bigram> heap;  // max-heap by bigram_order
    bool seeding = false;      // while true, try_add appends and the caller heapifies once
    auto try_add = [&](int32_t l, int32_t r) {
        if (l < 0 || r < 0) return;
        const symbol & a = sym[size_t(l)];
        const symbol & b = sym[size_t(r)];
        std::string_view merged(s.data() + a.off, size_t(a.n) + b.n);
        int32_t id = find_piece(merged);
        if (id < 0) return;
        float score = v_.scores[size_t(id)];
        if (std::isnan(score)) score = -std::numeric_limits<float>::infinity();
        heap.push_back({score, l, r, uint32_t(merged.size())});
        if (!seeding) std::push_heap(heap.begin(), heap.end(), bigram_order{});
    };
    auto spannable = [&](size_t i) {  // can a merge join symbols i-1 and i?
        unsigned k = unsigned(uint8_t(s[sym[i].off - 1])) << 8 | uint8_t(s[sym[i].off]);
        return (pair_bits_[k / 64] >> (k % 64)) & 1;
    };

    // Merge each run of symbols between unspannable boundaries on its own: the
    // runs cannot interact, so this gives the same merges as one queue over the
    // whole text, with small queues.
    for (size_t begin = 0; begin < sym.size();) {
        size_t end = begin + 1;
        while (end < sym.size() && spannable(end)) ++end;
        seeding = true;
        for (size_t i = begin + 1; i < end; ++i) try_add(int32_t(i - 1), int32_t(i));
        seeding = false;
        detail::merge_bigrams<bigram, bigram_order>(sym, heap, try_add);
        begin = end;
    }

    // Every merged symbol is a piece; a single character that is not falls back
    // to the byte tokens of its bytes (or to the unknown token).
    for (int32_t i = 0; i >= 0; i = sym[size_t(i)].next) {
        const symbol & x = sym[size_t(i)];
        std::string_view piece(s.data() + x.off, x.n);
        int32_t id = find_piece(piece);
        if (id >= 0) {
            out.push_back(id);
            continue;
        }
        for (char c : piece) {
            int32_t b = byte_ids_[uint8_t(c)];
            if (b >= 0) out.push_back(b);
            else if (v_.unk >= 0) out.push_back(v_.unk);
        }
    }
}

// ---------------------------------------------------------------------------
// Decoding

std::string tokenizer::token_to_piece(int32_t prev, int32_t id) const {
    if (id < 0 || id >= n_vocab())
        throw error(format("tokenizer: token id %d out of range [0, %d)", id, n_vocab()));
    if (bpe_) return bpe_token_to_piece(id);
    const std::string & p = v_.pieces[size_t(id)];
    switch (v_.types[size_t(id)]) {
        case token_type::BYTE: {
            int b = parse_byte_piece(p);
            GLOAS_ASSERT(b >= 0);  // checked by the constructor
            return std::string(1, char(b));
        }
        case token_type::NORMAL:
        case token_type::USER_DEFINED:
        case token_type::UNDEFINED:
        case token_type::UNKNOWN: {
            std::string r = replace_all(p, k_space_marker, " ");
            if (prev >= 0 && prev == v_.bos && !r.empty() && r[0] == ' ') r.erase(0, 1);
            return r;
        }
        case token_type::CONTROL:
        case token_type::UNUSED:
            break;
    }
    return {};
}

std::string tokenizer::decode(const std::vector<int32_t> & ids) const {
    std::string r;
    int32_t prev = -1;
    for (int32_t id : ids) {
        r += token_to_piece(prev, id);
        prev = id;
    }
    return r;
}

} // namespace gloas
