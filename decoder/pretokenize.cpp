#include "decoder/pretokenize.h"

#include "base/error.h"

#include <algorithm>
#include <cstdint>
#include <iterator>

namespace gloas {

namespace {

#include "decoder/unicode-table.inc"

constexpr uint32_t k_no_codepoint = 0xFFFFFFFF;  // past the end of a piece

} // namespace

char_class unicode_class(uint32_t cp) {
    if (cp >= 0x110000) return char_class::UNDEFINED;
    // Last run whose start is <= cp.
    const uint32_t key = cp << 4 | 0xF;
    const uint32_t * it = std::upper_bound(std::begin(k_unicode_runs), std::end(k_unicode_runs), key);
    return char_class(*(it - 1) & 0xF);
}

bool unicode_is_white_space(uint32_t cp) {
    if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
    if (cp < 0x85 || cp > 0x3000) return false;
    return std::binary_search(std::begin(k_unicode_white_space), std::end(k_unicode_white_space), cp);
}

namespace {

// ---------------------------------------------------------------------------
// Code points of the text with their classes.

constexpr uint8_t F_WS = 8;        // bit of white space; bits 0-2 hold the char_class
constexpr uint8_t F_NONE = 0xFF;   // flags of a position past the end of a piece

struct unit {
    uint32_t cp;   // code point; 0xFFFD for a byte of invalid UTF-8
    uint32_t off;  // byte offset in the text
    uint8_t  f;    // flags
};

// Length of the well-formed UTF-8 sequence at s (n > 0 bytes left) and its
// code point, or 0 if s does not start one.
size_t decode_utf8(const uint8_t * s, size_t n, uint32_t & cp) {
    const uint8_t c = s[0];
    if (c < 0x80) { cp = c; return 1; }
    auto cont = [&](size_t i) { return i < n && (s[i] & 0xC0) == 0x80; };
    if (c < 0xC2) return 0;  // continuation byte, or an overlong 2-byte lead
    if (c < 0xE0) {
        if (!cont(1)) return 0;
        cp = uint32_t(c & 0x1F) << 6 | (s[1] & 0x3F);
        return 2;
    }
    if (c < 0xF0) {
        if (!cont(1) || !cont(2)) return 0;
        cp = uint32_t(c & 0x0F) << 12 | uint32_t(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
        if (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        return 3;
    }
    if (c < 0xF5) {
        if (!cont(1) || !cont(2) || !cont(3)) return 0;
        cp = uint32_t(c & 0x07) << 18 | uint32_t(s[1] & 0x3F) << 12 | uint32_t(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
        if (cp < 0x10000 || cp > 0x10FFFF) return 0;
        return 4;
    }
    return 0;
}

uint8_t flags_of(uint32_t cp) {
    static const struct ascii_table {
        uint8_t f[128];
        ascii_table() {
            for (uint32_t c = 0; c < 128; ++c)
                f[c] = uint8_t(unicode_class(c)) | (unicode_is_white_space(c) ? F_WS : 0);
        }
    } ascii;
    if (cp < 128) return ascii.f[cp];
    return uint8_t(unicode_class(cp)) | (unicode_is_white_space(cp) ? F_WS : 0);
}

std::vector<unit> decode_units(std::string_view text) {
    std::vector<unit> u;
    u.reserve(text.size());
    const uint8_t * s = reinterpret_cast<const uint8_t *>(text.data());
    for (size_t off = 0; off < text.size();) {
        uint32_t cp = 0;
        size_t len = decode_utf8(s + off, text.size() - off, cp);
        uint8_t f;
        if (len == 0) {
            len = 1;
            cp = 0xFFFD;
            f = uint8_t(char_class::SYMBOL);
        } else {
            f = flags_of(cp);
        }
        u.push_back({cp, uint32_t(off), f});
        off += len;
    }
    return u;
}

bool is_ws(uint8_t f) { return f != F_NONE && (f & F_WS); }
bool has_class(uint8_t f, char_class c) { return f != F_NONE && char_class(f & 7) == c; }
bool is_letter(uint8_t f) { return has_class(f, char_class::LETTER); }
bool is_number(uint8_t f) { return has_class(f, char_class::NUMBER); }
bool is_punct(uint8_t f) { return has_class(f, char_class::PUNCTUATION); }
// [^\s\p{L}\p{N}]
bool is_other(uint8_t f) { return f != F_NONE && !(f & F_WS) && !is_letter(f) && !is_number(f); }
bool is_ascii_digit(uint32_t cp) { return cp >= '0' && cp <= '9'; }
uint32_t ascii_lower(uint32_t cp) { return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp; }

// A piece of the text: units [b, e).
struct range {
    uint32_t b, e;
};

// Collects the words one pass makes of one piece.
struct emitter {
    std::vector<range> & out;
    uint32_t start;
    void to(uint32_t end) {
        if (end > start) out.push_back({start, end});
        start = end;
    }
};

// Length of a contraction ('s 't 're 've 'm 'll 'd) at pos, 0 if none.
uint32_t contraction(const unit * u, uint32_t pos, uint32_t e, bool any_case) {
    if (u[pos].cp != '\'' || pos + 1 >= e) return 0;
    auto low = [&](uint32_t p) { return any_case ? ascii_lower(u[p].cp) : u[p].cp; };
    const uint32_t a = low(pos + 1);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (pos + 2 >= e) return 0;
    const uint32_t b = low(pos + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S), as
// llama.cpp's splitter runs it: every character lands in some word.
void split_gpt2(const unit * u, uint32_t b, uint32_t e, std::vector<range> & out) {
    auto F = [&](uint32_t p) { return p < e ? u[p].f : F_NONE; };
    emitter w{out, b};
    for (uint32_t pos = b; pos < e;) {
        const uint32_t c = u[pos].cp;
        if (uint32_t n = contraction(u, pos, e, false)) {
            w.to(pos += n);
            continue;
        }
        const uint8_t f2 = c == ' ' ? F(pos + 1) : u[pos].f;
        bool (*run)(uint8_t) = is_letter(f2) ? is_letter : is_number(f2) ? is_number
                             : is_other(f2) ? is_other : nullptr;
        if (run) {
            pos += c == ' ';
            while (run(F(pos))) ++pos;
            w.to(pos);
            continue;
        }
        uint32_t n_ws = 0;
        while (is_ws(F(pos + n_ws))) ++n_ws;
        if (n_ws > 1 && pos + n_ws < e) {  // \s+(?!\S): leave the last one to the next word
            w.to(pos += n_ws - 1);
        } else if (n_ws > 0) {
            w.to(pos += n_ws);
        } else {
            w.to(++pos);
        }
    }
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
//  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// (llama.cpp's Llama 3 splitter; with max_digits 1 it is the Qwen2 expression,
// which llama.cpp runs through std::regex with the same result).
void split_llama3(const unit * u, uint32_t b, uint32_t e, uint32_t max_digits, std::vector<range> & out) {
    auto F = [&](uint32_t p) { return p < e ? u[p].f : F_NONE; };
    auto C = [&](uint32_t p) { return p < e ? u[p].cp : k_no_codepoint; };
    emitter w{out, b};
    for (uint32_t pos = b; pos < e;) {
        const uint32_t c = u[pos].cp;
        const uint8_t f = u[pos].f;
        if (uint32_t n = contraction(u, pos, e, true)) {
            w.to(pos += n);
            continue;
        }
        if (!(c == '\r' || c == '\n' || is_number(f)) && (is_letter(f) || is_letter(F(pos + 1)))) {
            ++pos;  // a letter, or the one character glued before the letters
            while (is_letter(F(pos))) ++pos;
            w.to(pos);
            continue;
        }
        if (is_number(f)) {
            uint32_t ini = pos;
            while (is_number(F(pos))) {
                if (++pos - ini >= max_digits) {
                    w.to(pos);
                    ini = pos;
                }
            }
            w.to(pos);
            continue;
        }
        const uint8_t f2 = c == ' ' ? F(pos + 1) : f;
        if (is_other(f2)) {
            pos += c == ' ';
            while (is_other(F(pos))) ++pos;
            while (C(pos) == '\r' || C(pos) == '\n') ++pos;
            w.to(pos);
            continue;
        }
        uint32_t n_ws = 0, last_newline_end = 0;
        while (is_ws(F(pos + n_ws))) {
            if (u[pos + n_ws].cp == '\r' || u[pos + n_ws].cp == '\n') last_newline_end = pos + n_ws + 1;
            ++n_ws;
        }
        if (last_newline_end > 0) {  // \s*[\r\n]+
            w.to(pos = last_newline_end);
        } else if (n_ws > 1 && pos + n_ws < e) {
            w.to(pos += n_ws - 1);
        } else if (n_ws > 0) {
            w.to(pos += n_ws);
        } else {
            w.to(++pos);
        }
    }
}

// One regular expression that llama.cpp runs with std::regex: its matches
// and the text between them become words. `match(u, pos, e)` is the length
// of the match starting at pos (0: none); no expression here matches empty.
template <class M>
void split_matches(const unit * u, uint32_t b, uint32_t e, M match, std::vector<range> & out) {
    uint32_t gap = b;
    for (uint32_t pos = b; pos < e;) {
        const uint32_t n = match(u, pos, e);
        if (n == 0) {
            ++pos;
            continue;
        }
        if (pos > gap) out.push_back({gap, pos});
        out.push_back({pos, pos + n});
        pos += n;
        gap = pos;
    }
    if (gap < e) out.push_back({gap, e});
}

// Length of the run of units from pos on that satisfy `pred`.
template <class P>
uint32_t run_length(const unit * u, uint32_t pos, uint32_t e, P pred) {
    uint32_t p = pos;
    while (p < e && pred(u[p])) ++p;
    return p - pos;
}

// X+ and \s?X+ for a class X that holds no white space.
template <class P>
auto plus(P pred) {
    return [pred](const unit * u, uint32_t pos, uint32_t e) { return run_length(u, pos, e, pred); };
}
template <class P>
auto space_opt_plus(P pred) {
    return [pred](const unit * u, uint32_t pos, uint32_t e) -> uint32_t {
        if (is_ws(u[pos].f) && pos + 1 < e && pred(u[pos + 1])) return 1 + run_length(u, pos + 1, e, pred);
        return run_length(u, pos, e, pred);
    };
}

// The tables below list their ranges in order (starts and ends both
// ascending), so the first range ending at or past cp is the only candidate.
template <size_t N>
constexpr bool ascending(const uint32_t (&r)[N][2]) {
    for (size_t i = 0; i < N; ++i)
        if (r[i][0] > r[i][1] || (i > 0 && (r[i][0] < r[i - 1][0] || r[i][1] < r[i - 1][1]))) return false;
    return true;
}
template <size_t N>
bool in_ranges(uint32_t cp, const uint32_t (&r)[N][2]) {
    size_t lo = 0, hi = N;
    while (lo < hi) {
        const size_t mid = (lo + hi) / 2;
        if (r[mid][1] < cp) lo = mid + 1;
        else hi = mid;
    }
    return lo < N && cp >= r[lo][0];
}

// DeepSeek LLM's letter class (cased letters, Lu Ll Lt), as code point ranges.
constexpr uint32_t k_deepseek_letters[][2] = {
    {0x41, 0x5A}, {0x61, 0x7A}, {0xB5, 0xB5}, {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x1BA},
    {0x1BC, 0x1BF}, {0x1C4, 0x293}, {0x295, 0x2AF}, {0x370, 0x373}, {0x376, 0x377},
    {0x37B, 0x37D}, {0x37F, 0x37F}, {0x386, 0x386}, {0x388, 0x38A}, {0x38C, 0x38C},
    {0x38E, 0x3A1}, {0x3A3, 0x3F5}, {0x3F7, 0x481}, {0x48A, 0x52F}, {0x531, 0x556},
    {0x10A0, 0x10C5}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD}, {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF},
    {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77}, {0x1D79, 0x1D9A}, {0x1E00, 0x1F15}, {0x1F18, 0x1F1D},
    {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B},
    {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE},
    {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC},
    {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC}, {0x2102, 0x2102}, {0x2107, 0x2107}, {0x210A, 0x2113},
    {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124}, {0x2126, 0x2126}, {0x2128, 0x2128},
    {0x212A, 0x212D}, {0x212F, 0x2134}, {0x2139, 0x2139}, {0x213C, 0x213F}, {0x2145, 0x2149},
    {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2C7B}, {0x2C7E, 0x2CE4}, {0x2CEB, 0x2CEE},
    {0x2CF2, 0x2CF3}, {0xA640, 0xA66D}, {0xA680, 0xA69B}, {0xA722, 0xA76F}, {0xA771, 0xA787},
    {0xA78B, 0xA78E}, {0xAB70, 0xABBF}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFF21, 0xFF3A},
    {0xFF41, 0xFF5A}, {0x10400, 0x1044F}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB}, {0x10C80, 0x10CB2},
    {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
};
// DeepSeek LLM's punctuation class: ASCII punctuation and symbols, their
// full-width forms, quotation marks U+2018..U+201F, U+3001..U+3002.
constexpr uint32_t k_deepseek_punct[][2] = {
    {0x21, 0x2F}, {0x3A, 0x7E}, {0x2018, 0x201F}, {0x3000, 0x3002}, {0xFF01, 0xFF0F}, {0xFF1A, 0xFF5E},
};
// CJK ideographs, U+0800..U+9FA5 (most scripts past Latin, Greek, Cyrillic,
// Hebrew, Arabic), Hangul syllables: [一-龥ࠀ-一가-퟿].
constexpr uint32_t k_deepseek_cjk[][2] = {{0x0800, 0x4E00}, {0x4E00, 0x9FA5}, {0xAC00, 0xD7FF}};
static_assert(ascending(k_deepseek_letters) && ascending(k_deepseek_punct) && ascending(k_deepseek_cjk));

// llama.cpp hands white space past ASCII to these expressions as U+000B, so
// no class written with code points holds it.
bool ds_letter(const unit & x) { return in_ranges(x.cp, k_deepseek_letters); }
bool ds_punct(const unit & x) { return !is_ws(x.f) && in_ranges(x.cp, k_deepseek_punct); }
bool ds_cjk(const unit & x) { return !is_ws(x.f) && in_ranges(x.cp, k_deepseek_cjk); }
bool letter_unit(const unit & x) { return is_letter(x.f); }
bool number_unit(const unit & x) { return is_number(x.f); }
bool punct_unit(const unit & x) { return is_punct(x.f); }
// [\p{P}\$\+<=>\^~\|`] (Falcon) and the same without ` (default).
bool punct_symbol_unit(const unit & x) {
    return is_punct(x.f) || (x.cp < 128 && x.cp != 0 && std::string_view("$+<=>^~|`").find(char(x.cp)) != std::string_view::npos);
}
bool punct_symbol_no_backtick_unit(const unit & x) { return x.cp != '`' && punct_symbol_unit(x); }

uint32_t match_newline(const unit * u, uint32_t pos, uint32_t) { return u[pos].cp == '\r' || u[pos].cp == '\n'; }
uint32_t match_number(const unit * u, uint32_t pos, uint32_t) { return is_number(u[pos].f); }
uint32_t match_digits3(const unit * u, uint32_t pos, uint32_t e) {
    return pos + 3 <= e && is_ascii_digit(u[pos].cp) && is_ascii_digit(u[pos + 1].cp) && is_ascii_digit(u[pos + 2].cp) ? 3 : 0;
}

// \s+$: the white space that ends the piece, if any.
void split_trailing_ws(const unit * u, uint32_t b, uint32_t e, std::vector<range> & out) {
    uint32_t t = e;
    while (t > b && is_ws(u[t - 1].f)) --t;
    if (t > b) out.push_back({b, t});
    if (t < e) out.push_back({t, e});
}

} // namespace

bool pretokenizer_from_name(std::string_view name, pretokenizer & p, bool & ignore_merges, bool & add_bos) {
    struct entry {
        const char * name;
        pretokenizer p;
        bool ignore_merges, add_bos;
    };
    static const entry k_names[] = {
        {"", pretokenizer::DEFAULT, false, false},
        {"default", pretokenizer::DEFAULT, false, false},
        {"gpt-2", pretokenizer::GPT2, false, false},
        {"phi-2", pretokenizer::GPT2, false, false},
        {"mpt", pretokenizer::GPT2, false, false},
        {"olmo", pretokenizer::GPT2, false, false},
        {"jais", pretokenizer::GPT2, false, false},
        {"trillion", pretokenizer::GPT2, false, false},
        {"exaone4", pretokenizer::GPT2, false, false},
        {"llama3", pretokenizer::LLAMA3, true, true},
        {"llama-v3", pretokenizer::LLAMA3, true, true},
        {"llama-bpe", pretokenizer::LLAMA3, true, true},
        {"falcon3", pretokenizer::LLAMA3, true, true},
        {"pixtral", pretokenizer::LLAMA3, true, true},
        {"dbrx", pretokenizer::LLAMA3, false, false},
        {"smaug-bpe", pretokenizer::LLAMA3, false, false},
        {"qwen2", pretokenizer::QWEN2, false, false},
        {"deepseek-r1-qwen", pretokenizer::QWEN2, false, false},
        {"stablelm2", pretokenizer::QWEN2, false, false},
        {"megrez", pretokenizer::QWEN2, false, false},
        {"hunyuan", pretokenizer::QWEN2, false, false},
        {"starcoder", pretokenizer::STARCODER, false, false},
        {"refact", pretokenizer::STARCODER, false, false},
        {"smollm", pretokenizer::STARCODER, false, false},
        {"command-r", pretokenizer::STARCODER, false, false},
        {"codeshell", pretokenizer::STARCODER, false, false},
        {"exaone", pretokenizer::STARCODER, false, false},
        {"minerva-7b", pretokenizer::STARCODER, false, false},
        {"falcon", pretokenizer::FALCON, false, false},
        {"deepseek-llm", pretokenizer::DEEPSEEK_LLM, false, false},
        {"deepseek-coder", pretokenizer::DEEPSEEK_CODER, false, false},
    };
    for (const entry & x : k_names) {
        if (name == x.name) {
            p = x.p;
            ignore_merges = x.ignore_merges;
            add_bos = x.add_bos;
            return true;
        }
    }
    return false;
}

const char * pretokenizer_name(pretokenizer p) {
    switch (p) {
        case pretokenizer::DEFAULT: return "default";
        case pretokenizer::GPT2: return "gpt-2";
        case pretokenizer::LLAMA3: return "llama-bpe";
        case pretokenizer::QWEN2: return "qwen2";
        case pretokenizer::STARCODER: return "starcoder";
        case pretokenizer::FALCON: return "falcon";
        case pretokenizer::DEEPSEEK_LLM: return "deepseek-llm";
        case pretokenizer::DEEPSEEK_CODER: return "deepseek-coder";
    }
    return "unknown";
}

void pretokenize(pretokenizer p, std::string_view text, std::vector<std::string_view> & words) {
    if (text.empty()) return;
    GLOAS_ASSERT(text.size() < size_t(UINT32_MAX));
    const std::vector<unit> units = decode_units(text);
    const unit * u = units.data();
    std::vector<range> cur{{0, uint32_t(units.size())}}, next;

    // Runs one pass over every piece left by the previous passes.
    auto pass = [&](auto split) {
        next.clear();
        for (const range & r : cur) split(r.b, r.e);
        cur.swap(next);
    };
    auto matches = [&](auto match) {
        pass([&](uint32_t b, uint32_t e) { split_matches(u, b, e, match, next); });
    };
    auto gpt2 = [&]() { pass([&](uint32_t b, uint32_t e) { split_gpt2(u, b, e, next); }); };
    auto llama3 = [&](uint32_t digits) {
        pass([&](uint32_t b, uint32_t e) { split_llama3(u, b, e, digits, next); });
    };

    switch (p) {
        case pretokenizer::DEFAULT:
            matches(plus(punct_symbol_no_backtick_unit));
            gpt2();
            matches(plus(number_unit));
            matches(match_digits3);
            break;
        case pretokenizer::GPT2:
            gpt2();
            break;
        case pretokenizer::LLAMA3:
            llama3(3);
            break;
        case pretokenizer::QWEN2:
            llama3(1);
            break;
        case pretokenizer::STARCODER:
            matches(match_number);
            gpt2();
            break;
        case pretokenizer::FALCON:
            matches(plus(punct_symbol_unit));
            gpt2();
            matches(match_digits3);
            break;
        case pretokenizer::DEEPSEEK_LLM:
            matches(match_newline);
            matches(space_opt_plus(ds_letter));
            matches(space_opt_plus(ds_punct));
            pass([&](uint32_t b, uint32_t e) { split_trailing_ws(u, b, e, next); });
            matches(plus(ds_cjk));
            matches(plus(number_unit));
            break;
        case pretokenizer::DEEPSEEK_CODER:
            matches(match_newline);
            matches(space_opt_plus(letter_unit));
            matches(space_opt_plus(punct_unit));
            matches(plus(ds_cjk));
            matches(match_number);
            break;
    }

    words.reserve(words.size() + cur.size());
    for (const range & r : cur) {
        const size_t begin = u[r.b].off;
        const size_t end = r.e < units.size() ? u[r.e].off : text.size();
        words.push_back(text.substr(begin, end - begin));
    }
}

} // namespace gloas
