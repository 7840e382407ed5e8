// Pre-tokenizers of byte-level BPE vocabularies: the text is cut into words
// before BPE merges run inside each word. Each pre-tokenizer is the list of
// regular expressions llama.cpp applies for a `tokenizer.ggml.pre` name, one
// after another, each splitting every piece the previous ones left into its
// matches and the text between them. They are written here as scanners over
// code points with llama.cpp's semantics (ECMAScript leftmost-first
// alternation; its hand-written splitters for the GPT-2 and Llama 3
// expressions), using Unicode character classes from a generated table
// (decoder/unicode-table.inc, tools/gen-unicode-table.py).
//
// Invalid UTF-8: a byte that does not start a well-formed sequence (overlong
// forms, surrogates and code points past U+10FFFF included) is one character
// of class SYMBOL (where llama.cpp reads U+FFFD), and stays as that byte.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace gloas {

// General category groups, as llama.cpp's tokenizer sees code points.
enum class char_class : uint8_t {
    UNDEFINED = 0,    // Cn (unassigned), and code points past U+10FFFF
    NUMBER = 1,       // Nd Nl No        \p{N}
    LETTER = 2,       // Lu Ll Lt Lm Lo  \p{L}
    SEPARATOR = 3,    // Zs Zl Zp
    MARK = 4,         // Mn Mc Me        \p{M}
    PUNCTUATION = 5,  // Pc Pd Ps Pe Pi Pf Po  \p{P}
    SYMBOL = 6,       // Sm Sc Sk So     \p{S}
    CONTROL = 7,      // Cc Cf Co Cs
};

char_class unicode_class(uint32_t cp);
// Unicode's White_Space property (\s): \t \n \v \f \r, space, U+0085, U+00A0, ...
bool unicode_is_white_space(uint32_t cp);

// The pre-tokenizer families. Rules (what makes a word; "L" letters, "N"
// numbers, "P" punctuation, "\s" white space):
//   GPT2       's 't 're 've 'm 'll 'd (lower case only) | ' '?L+ | ' '?N+ |
//              ' '?[^\sLN]+ | a white-space run, less its last character
//              when a non-space follows (that character starts the next word)
//   LLAMA3     contractions in any case | one non-letter, non-digit (not \r
//              \n) glued before L+ | N in groups of up to 3 | ' '?[^\sLN]+
//              with trailing \r\n | white space up to the last \r\n | as GPT2
//   QWEN2      as LLAMA3 with single digits
//   STARCODER  every N alone, then GPT2 (refact, smollm, ...)
//   FALCON     runs of P and $+<=>^~|` first, then GPT2, then "ddd" ASCII
//              digit triples split off
//   DEFAULT    as FALCON without ` and with N+ runs split off before triples
//   DEEPSEEK_LLM   \r and \n alone; \s? + cased-letter runs; \s? + ASCII and
//              CJK punctuation runs; trailing white space; CJK / Hangul runs;
//              N+ runs
//   DEEPSEEK_CODER \r and \n alone; \s?L+; \s?P+; CJK / Hangul runs; every N alone
enum class pretokenizer : uint8_t {
    DEFAULT, GPT2, LLAMA3, QWEN2, STARCODER, FALCON, DEEPSEEK_LLM, DEEPSEEK_CODER,
};
constexpr int PRETOKENIZER_COUNT = 8;

// The family of a tokenizer.ggml.pre name ("" and "default" are DEFAULT, as
// in llama.cpp); false if the name is not known. `ignore_merges` is set for
// the names whose words are looked up whole before merging (Llama 3), and
// `add_bos` for those that add BOS unless the file says otherwise.
bool pretokenizer_from_name(std::string_view name, pretokenizer & p, bool & ignore_merges, bool & add_bos);
const char * pretokenizer_name(pretokenizer p);

// Appends to `words` the words of `text`: non-empty views into `text` that
// cover it in order. O(n) in the text length; text.size() < 2^32.
void pretokenize(pretokenizer p, std::string_view text, std::vector<std::string_view> & words);

} // namespace gloas
