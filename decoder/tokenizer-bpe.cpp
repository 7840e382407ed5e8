// Byte-level BPE (tokenizer.ggml.model = "gpt2"), special-token partition and
// UTF-8 helpers of decoder/tokenizer.h.
#include "decoder/bigram-merge.h"
#include "decoder/pretokenize.h"
#include "decoder/tokenizer.h"
#include "base/error.h"

#include <algorithm>
#include <functional>
#include <limits>

namespace gloas {

namespace {

// GPT-2's byte-to-unicode table: bytes 0x21..0x7E, 0xA1..0xAC, 0xAE..0xFF
// stand for the code point of the same value, the other 68 bytes for
// U+0100.. in byte order.
struct byte_unicode_table {
    std::string utf8[256];   // UTF-8 of each byte's character
    int16_t byte_of[0x144];  // byte of code points below U+0144, -1 if none

    byte_unicode_table() {
        std::fill(std::begin(byte_of), std::end(byte_of), int16_t(-1));
        uint32_t next = 0x100;
        for (uint32_t b = 0; b < 256; ++b) {
            const bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
            const uint32_t cp = self ? b : next++;
            if (cp < 0x80) {
                utf8[b] = std::string(1, char(cp));
            } else {
                utf8[b] = std::string{char(0xC0 | (cp >> 6)), char(0x80 | (cp & 0x3F))};
            }
            byte_of[cp] = int16_t(b);
        }
        GLOAS_ASSERT(next == 0x144);
    }
};

const byte_unicode_table & byte_unicode() {
    static const byte_unicode_table t;
    return t;
}

// Length of the UTF-8 sequence a lead byte announces (1 for ASCII and for
// bytes that cannot lead).
size_t utf8_seq_len(uint8_t c) { return c >= 0xF0 && c < 0xF8 ? 4 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xC0 && c < 0xE0 ? 2 : 1; }

// Code point of the well-formed-looking UTF-8 character at s[off] and its
// length; an invalid byte is returned alone with cp = -1.
size_t next_char(std::string_view s, size_t off, int32_t & cp) {
    const uint8_t c = uint8_t(s[off]);
    const size_t n = utf8_seq_len(c);
    if (n == 1) {
        cp = c < 0x80 ? int32_t(c) : -1;
        return 1;
    }
    if (off + n > s.size()) {
        cp = -1;
        return 1;
    }
    int32_t v = c & (0x7F >> n);
    for (size_t k = 1; k < n; ++k) {
        const uint8_t x = uint8_t(s[off + k]);
        if ((x & 0xC0) != 0x80) {
            cp = -1;
            return 1;
        }
        v = v << 6 | (x & 0x3F);
    }
    cp = v;
    return n;
}

// Open-addressing hash table from strings (kept here) to ids.
class string_table {
public:
    void reserve(size_t n) {
        size_t cap = 16;
        while (cap < 2 * n) cap *= 2;
        slots_.assign(cap, -1);
        keys_.reserve(n);
        vals_.reserve(n);
    }
    // Adds key -> val; an existing key keeps its value unless `replace`.
    void insert(std::string key, int32_t val, bool replace) {
        GLOAS_ASSERT(!slots_.empty() && 2 * (keys_.size() + 1) <= slots_.size());
        size_t h = slot_of(key);
        if (slots_[h] >= 0) {
            if (replace) vals_[size_t(slots_[h])] = val;
            return;
        }
        slots_[h] = int32_t(keys_.size());
        keys_.push_back(std::move(key));
        vals_.push_back(val);
    }
    int32_t find(std::string_view key) const {
        if (slots_.empty()) return -1;
        const int32_t s = slots_[slot_of(key)];
        return s < 0 ? -1 : vals_[size_t(s)];
    }

private:
    // The slot holding `key`, or the empty slot where it would go.
    size_t slot_of(std::string_view key) const {
        const size_t mask = slots_.size() - 1;
        size_t h = std::hash<std::string_view>{}(key) & mask;
        while (slots_[h] >= 0 && keys_[size_t(slots_[h])] != key) h = (h + 1) & mask;
        return h;
    }
    std::vector<int32_t> slots_;  // -1 or index into keys_
    std::vector<std::string> keys_;
    std::vector<int32_t> vals_;
};

// Symbols are runs of bytes of a word (in byte-to-unicode text).
using symbol = detail::merge_symbol;

// A candidate merge of two adjacent symbols; `size` is their combined length
// when queued, so an entry made stale by another merge can be recognised.
struct bigram {
    int32_t rank;
    int32_t left, right;
    uint32_t size;
};

// Lowest rank first, then leftmost (std heaps keep the largest on top).
struct bigram_order {
    bool operator()(const bigram & a, const bigram & b) const {
        return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
    }
};

} // namespace

struct tokenizer::bpe_data {
    pretokenizer pre = pretokenizer::DEFAULT;
    bool ignore_merges = false;  // a word that is a token is taken whole
    string_table tokens;         // byte-to-unicode text -> id (the last of duplicates)
    string_table merges;         // "left right" -> rank (the first of duplicates)
    std::vector<std::string> text;  // what token_to_piece returns, per id
};

void tokenizer::init_bpe() {
    auto d = std::make_shared<bpe_data>();
    bool add_bos_default;
    if (!pretokenizer_from_name(v_.pre, d->pre, d->ignore_merges, add_bos_default))
        throw error("tokenizer: unknown pre-tokenizer '" + v_.pre + "'");
    const size_t n = v_.pieces.size();
    if (v_.merges.size() > size_t(std::numeric_limits<int32_t>::max() / 4))
        throw error(format("tokenizer: %zu merges are too many", v_.merges.size()));

    d->tokens.reserve(n);
    for (size_t i = 0; i < n; ++i) d->tokens.insert(v_.pieces[i], int32_t(i), true);
    d->merges.reserve(v_.merges.size());
    for (size_t i = 0; i < v_.merges.size(); ++i) {
        // llama.cpp splits at the first space after the first byte; a merge
        // without one pairs two empty strings and can never apply.
        const std::string & m = v_.merges[i];
        if (m.size() < 3 || m.find(' ', 1) == std::string::npos) continue;
        d->merges.insert(m, int32_t(i), false);
    }

    const byte_unicode_table & bu = byte_unicode();
    d->text.resize(n);
    for (size_t i = 0; i < n; ++i) {
        const std::string & p = v_.pieces[i];
        switch (v_.types[i]) {
            case token_type::NORMAL:
            case token_type::UNDEFINED: {
                std::string & t = d->text[i];
                for (size_t off = 0; off < p.size();) {
                    int32_t cp;
                    const size_t len = next_char(p, off, cp);
                    if (cp >= 0 && cp < 0x144 && bu.byte_of[cp] >= 0) t.push_back(char(bu.byte_of[cp]));
                    else t.append(p, off, len);  // not a byte's character: kept as is
                    off += len;
                }
                break;
            }
            case token_type::USER_DEFINED:
                d->text[i] = p;  // stored as raw text
                break;
            case token_type::UNKNOWN:
            case token_type::CONTROL:
            case token_type::UNUSED:
            case token_type::BYTE:
                break;
        }
    }
    bpe_ = std::move(d);
}

int32_t tokenizer::bpe_find_piece(std::string_view piece) const { return bpe_->tokens.find(piece); }

std::string tokenizer::bpe_token_to_piece(int32_t id) const { return bpe_->text[size_t(id)]; }

void tokenizer::encode_bpe(std::string_view text, std::vector<int32_t> & out) const {
    const bpe_data & d = *bpe_;
    const byte_unicode_table & bu = byte_unicode();
    if (text.size() >= size_t(std::numeric_limits<int32_t>::max()))
        throw error(format("tokenizer: text of %zu bytes is too long to encode", text.size()));
    std::vector<std::string_view> words;
    pretokenize(d.pre, text, words);

    std::string w;    // the word in byte-to-unicode text
    std::string key;  // "left right" of a candidate merge
    std::vector<symbol> sym;
    std::vector<bigram> heap;
    for (std::string_view raw : words) {
        w.clear();
        for (char c : raw) w += bu.utf8[uint8_t(c)];
        if (w.size() >= size_t(std::numeric_limits<int32_t>::max()))
            throw error(format("tokenizer: word of %zu bytes is too long to encode", raw.size()));
        if (d.ignore_merges || raw.size() == 1) {
            const int32_t id = d.tokens.find(w);
            if (id >= 0) {
                out.push_back(id);
                continue;
            }
        }

        // One symbol per byte (one character of w).
        sym.clear();
        for (size_t off = 0, i = 0; off < w.size(); ++i) {
            const uint32_t len = uint8_t(w[off]) < 0x80 ? 1 : 2;
            sym.push_back({int32_t(i) - 1, off + len == w.size() ? -1 : int32_t(i) + 1, uint32_t(off), len});
            off += len;
        }
        heap.clear();
        bool seeding = true;  // while true, try_add appends and the heap is made once
        auto try_add = [&](int32_t l, int32_t r) {
            if (l < 0 || r < 0) return;
            const symbol & a = sym[size_t(l)];
            const symbol & b = sym[size_t(r)];
            key.assign(w, a.off, a.n);
            key += ' ';
            key.append(w, b.off, b.n);
            const int32_t rank = d.merges.find(key);
            if (rank < 0) return;
            heap.push_back({rank, l, r, a.n + b.n});
            if (!seeding) std::push_heap(heap.begin(), heap.end(), bigram_order{});
        };
        for (size_t i = 1; i < sym.size(); ++i) try_add(int32_t(i - 1), int32_t(i));
        seeding = false;
        detail::merge_bigrams<bigram, bigram_order>(sym, heap, try_add);

        for (int32_t i = 0; i >= 0; i = sym[size_t(i)].next) {
            const symbol & x = sym[size_t(i)];
            const std::string_view s(w.data() + x.off, x.n);
            const int32_t id = d.tokens.find(s);
            if (id >= 0) {
                out.push_back(id);
                continue;
            }
            // Not a token (a vocabulary without some merge result or byte
            // character): its characters, else the unknown token.
            for (size_t off = 0; off < s.size();) {
                const size_t len = uint8_t(s[off]) < 0x80 ? 1 : 2;
                const int32_t c = d.tokens.find(s.substr(off, len));
                if (c >= 0) out.push_back(c);
                else if (v_.unk >= 0) out.push_back(v_.unk);
                off += len;
            }
        }
    }
}

std::vector<tokenizer::fragment> tokenizer::partition_special(std::string_view text, bool parse_special) const {
    std::vector<fragment> cur, next;
    if (!text.empty()) cur.push_back({0, text.size(), -1});
    for (int32_t id : special_) {
        const token_type t = v_.types[size_t(id)];
        if (!parse_special && (t == token_type::CONTROL || t == token_type::UNKNOWN)) continue;
        const std::string & p = v_.pieces[size_t(id)];
        next.clear();
        for (const fragment & fr : cur) {
            if (fr.id >= 0) {
                next.push_back(fr);
                continue;
            }
            const std::string_view s = text.substr(fr.off, fr.len);
            size_t at = 0;
            for (size_t hit; (hit = s.find(p, at)) != std::string_view::npos; at = hit + p.size()) {
                if (hit > at) next.push_back({fr.off + at, hit - at, -1});
                next.push_back({fr.off + hit, p.size(), id});
            }
            if (at < s.size()) next.push_back({fr.off + at, s.size() - at, -1});
        }
        cur.swap(next);
    }
    return cur;
}

size_t utf8_complete_prefix(std::string_view s) {
    // Walk back over at most 3 continuation bytes to the byte that leads them.
    size_t k = s.size();
    size_t n_cont = 0;
    while (k > 0 && n_cont < 3 && (uint8_t(s[k - 1]) & 0xC0) == 0x80) {
        --k;
        ++n_cont;
    }
    if (k == 0) return s.size();
    const size_t lead = k - 1;
    const size_t need = utf8_seq_len(uint8_t(s[lead]));
    if (need > 1 && n_cont + 1 < need) return lead;  // unfinished: keep it for later
    return s.size();
}

} // namespace gloas
