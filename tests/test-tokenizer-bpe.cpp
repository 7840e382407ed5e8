// Byte-level BPE tokenizer (tokenizer.ggml.model = "gpt2"): llama.cpp's GPT-2
// vocab corpus, the pre-tokenizers' splits, merges on a hand-built vocabulary,
// special tokens, streaming of partial UTF-8, bad GGUF vocabularies.
#include "decoder/gguf-writer.h"
#include "decoder/gguf.h"
#include "decoder/pretokenize.h"
#include "decoder/tokenizer.h"
#include "base/error.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <functional>
#include <iterator>
#include <sstream>
#include <utility>

using namespace gloas;
using test::ids_str;
using test::require_model;

namespace {


const char * k_gpt2_vocab = "vocab/ggml-vocab-gpt-2.gguf";

// GPT-2's byte-to-unicode text of raw bytes, written out here independently
// of the tokenizer: bytes 0x21..0x7E, 0xA1..0xAC, 0xAE..0xFF stand for
// themselves, the other 68 for U+0100.. in byte order.
std::string bu(std::string_view raw) {
    std::string s;
    for (char ch : raw) {
        const unsigned b = uint8_t(ch);
        unsigned cp = b;
        if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
            unsigned n = 0;  // rank of b among the remapped bytes
            for (unsigned x = 0; x < b; ++x)
                if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE)) ++n;
            cp = 0x100 + n;
        }
        if (cp < 0x80) {
            s += char(cp);
        } else {
            s += char(0xC0 | (cp >> 6));
            s += char(0x80 | (cp & 0x3F));
        }
    }
    return s;
}

// A small byte-level vocabulary: the 256 byte characters (id = byte value),
// then the tokens the merges make, in merge order, and any added tokens.
struct bpe_builder {
    vocab v;
    explicit bpe_builder(std::string pre) {
        v.kind = vocab_kind::BPE;
        v.pre = std::move(pre);
        v.bos = v.eos = v.unk = -1;
        v.add_bos = false;
        v.add_space_prefix = false;
        for (int b = 0; b < 256; ++b) add(bu(std::string(1, char(b))));
    }
    int32_t add(std::string piece, token_type t = token_type::NORMAL) {
        v.pieces.push_back(std::move(piece));
        v.types.push_back(t);
        return int32_t(v.pieces.size() - 1);
    }
    // Merge of two raw byte strings (the next rank); adds their token.
    bpe_builder & merge(std::string_view left, std::string_view right) {
        v.merges.push_back(bu(left) + " " + bu(right));
        add(bu(std::string(left) + std::string(right)));
        return *this;
    }
    tokenizer build() const { return tokenizer(v); }
};

// The raw text of each token encode() gives.
std::vector<std::string> encode_pieces(const tokenizer & tok, std::string_view text, bool parse_special = false) {
    std::vector<std::string> r;
    for (int32_t id : tok.encode(text, false, parse_special)) r.push_back(tok.decode({id}));
    return r;
}

std::vector<std::string> words_of(pretokenizer p, std::string_view text) {
    std::vector<std::string_view> w;
    pretokenize(p, text, w);
    return std::vector<std::string>(w.begin(), w.end());
}

} // namespace

TEST_CASE("bpe: llama.cpp GPT-2 vocab corpus") {
    const auto cases = test::read_vocab_cases(k_gpt2_vocab);
    REQUIRE(cases.size() == 46);
    CHECK(cases[2].text.empty());
    CHECK(cases[7].text == "\n");

    auto f = gguf_file::open(require_model(k_gpt2_vocab));
    tokenizer tok = tokenizer::from_gguf(*f);
    REQUIRE(tok.kind() == vocab_kind::BPE);
    REQUIRE(tok.n_vocab() == 50257);
    CHECK(tok.bos() == 50256);
    CHECK(tok.eos() == 50256);
    CHECK(tok.eot() == 50256);  // <|endoftext|>, found by its text
    CHECK(tok.is_eog(50256));
    CHECK_FALSE(tok.is_eog(198));
    CHECK_FALSE(tok.add_bos());  // no add_bos_token key: GPT-2 adds none
    CHECK(tok.get_vocab().pre == "gpt-2");

    for (size_t k = 0; k < cases.size(); ++k) {
        const test::vocab_case & c = cases[k];
        CAPTURE(k);
        CAPTURE(c.text);
        const std::vector<int32_t> got = tok.encode(c.text, false);
        CHECK(ids_str(got) == ids_str(c.ids));
        CHECK(tok.decode(got) == c.text);
        // BOS (a control token) adds nothing to the text.
        const std::vector<int32_t> with_bos = tok.encode(c.text, true);
        REQUIRE(!with_bos.empty());
        CHECK(with_bos[0] == 50256);
        CHECK(std::vector<int32_t>(with_bos.begin() + 1, with_bos.end()) == got);
        CHECK(tok.decode(with_bos) == c.text);
    }
}

TEST_CASE("bpe: GPT-2 special tokens, streaming and pieces") {
    auto f = gguf_file::open(require_model(k_gpt2_vocab));
    tokenizer tok = tokenizer::from_gguf(*f);

    // <|endoftext|> is a control token: one id only when parse_special.
    const std::string text = "Hello<|endoftext|> world";
    const std::vector<int32_t> plain = tok.encode(text, false);
    CHECK(std::count(plain.begin(), plain.end(), 50256) == 0);
    CHECK(tok.decode(plain) == text);
    const std::vector<int32_t> special = tok.encode(text, false, true);
    CHECK(ids_str(special) == " 15496 50256 995");  // "Hello" <|endoftext|> " world"
    CHECK(tok.decode(special) == "Hello world");

    CHECK(tok.find_piece("Hello") == 15496);
    CHECK(tok.find_piece("\xc4\xa0world") == 995);  // "Ġworld"
    CHECK(tok.find_piece("no such piece") == -1);

    // " this is 🦙.cpp": the llama is three tokens, each a part of its UTF-8
    // bytes. A streaming caller prints the complete prefix and keeps the rest.
    const std::string llama = " this is \xf0\x9f\xa6\x99.cpp";
    const std::vector<int32_t> ids = tok.encode(llama, false);
    CHECK(ids_str(ids) == " 428 318 12520 99 247 13 20322");
    CHECK(tok.token_to_piece(-1, 12520) == " \xf0\x9f");
    std::string printed, pending;
    std::vector<std::string> prints;
    for (int32_t id : ids) {
        pending += tok.token_to_piece(-1, id);
        const size_t n = utf8_complete_prefix(pending);
        prints.push_back(pending.substr(0, n));
        printed += prints.back();
        pending.erase(0, n);
    }
    CHECK(pending.empty());
    CHECK(printed == llama);
    CHECK(prints[2] == " ");                 // " \xf0\x9f": the lead bytes wait
    CHECK(prints[3] == "");                  // "\xa6": still unfinished
    CHECK(prints[4] == "\xf0\x9f\xa6\x99");  // "\x99" completes the llama
}

TEST_CASE("bpe: utf8_complete_prefix") {
    // text, the length of its longest prefix of whole characters
    const std::pair<const char *, size_t> complete[] = {
        {"", 0}, {"abc", 3}, {"a\xc3", 1}, {"a\xc3\xa9", 3}, {"\xe4\xbd", 0}, {"\xe4\xbd\xa0", 3},
        {"x\xf0\x9f\xa6", 1}, {"x\xf0\x9f\xa6\x99", 5},
        // Invalid bytes never complete, so they are not held back.
        {"\xff", 1}, {"\x80\x80", 2}, {"a\x80\x80\x80\x80", 5}, {"\xc3\xa9\xa9", 3},
    };
    for (size_t i = 0; i < std::size(complete); ++i) {
        INFO("case " << i);
        CHECK(utf8_complete_prefix(complete[i].first) == complete[i].second);
    }
}

// Words each pre-tokenizer makes; the expected splits come from the
// pre-tokenizers' regular expressions run by a Unicode regex engine (Python's
// `regex` module) with llama.cpp's conventions. See pretokenize.h for each
// family's rules; what each case shows:
//   gpt-2: contractions only in lower case ('M is not one), unbounded digit
//          runs, a space run gives its last space to the next word
//   llama-bpe: contractions in any case, digits in threes, one non-letter
//          glued before letters ("\tb"; in " (x)" the space takes "(" first),
//          white space up to its last newline is one word
//   qwen2: single digits; starcoder: single digits, then gpt-2
//   falcon/default: punctuation and symbol runs, ASCII digit triples
//   deepseek-llm: CJK runs apart from letters, trailing white space, ASCII
//          letters inside non-ASCII words split off (its punctuation class
//          [:-~] covers them, as in llama.cpp)
//   deepseek-coder: combining marks are no letters, single digits
TEST_CASE("bpe: pre-tokenizer splits") {
    struct split_case {
        const char * pre;
        const char * text;
        std::vector<std::string> words;
    };
    const split_case cases[] = {
        {"gpt-2", "Hello world's 1234 ab!!  x\n\n y",
         {"Hello", " world", "'s", " 1234", " ab", "!!", " ", " x", "\n\n", " y"}},
        {"gpt-2", "I'M don't",
         {"I", "'", "M", " don", "'t"}},
        {"gpt-2", "a\xc3\xa9\xe4\xbd\xa0\xe5\xa5\xbd 12\xc2\xb2 \xf0\x9f\xa6\x99!",
         {"a\xc3\xa9\xe4\xbd\xa0\xe5\xa5\xbd", " 12\xc2\xb2", " \xf0\x9f\xa6\x99!"}},
        {"llama-bpe", "I'M 12345 (x) \r\n\n  y\xe4\xbd\xa0\xe5\xa5\xbd",
         {"I", "'M", " ", "123", "45", " (", "x", ")", " \r\n\n", " ", " y\xe4\xbd\xa0\xe5\xa5\xbd"}},
        {"llama-bpe", "a  \n\tb...\n\nc",
         {"a", "  \n", "\tb", "...\n\n", "c"}},
        {"qwen2", "I'M 12345 (x)",
         {"I", "'M", " ", "1", "2", "3", "4", "5", " (", "x", ")"}},
        {"qwen2", "v1.25\n\n",
         {"v", "1", ".", "2", "5", "\n\n"}},
        {"starcoder", "x2024 v1.5 it's",
         {"x", "2", "0", "2", "4", " v", "1", ".", "5", " it", "'s"}},
        {"falcon", "a+b=c; 1234567 `x`",
         {"a", "+", "b", "=", "c", ";", " ", "123", "456", "7", " ", "`", "x", "`"}},
        {"default", "$x << 1234567 `x`",
         {"$", "x", " ", "<<", " ", "123", "456", "7", " `", "x", "`"}},
        {"deepseek-llm", "Hello, \xe4\xb8\x96\xe7\x95\x8c! 123 \n\xc3\xa9t\xc3\xa9  ",
         {"Hello", ",", " ", "\xe4\xb8\x96\xe7\x95\x8c", "!", " ", "123", " ", "\n", "\xc3\xa9", "t", "\xc3\xa9", "  "}},
        {"deepseek-llm", "\xd0\xb6\xd0\xb7 \xef\xbc\x81\xef\xbc\x81",
         {"\xd0\xb6\xd0\xb7", " \xef\xbc\x81\xef\xbc\x81"}},
        {"deepseek-coder", "int x=42;// \xe6\xb3\xa8\xe9\x87\x8a\n",
         {"int", " x", "=", "4", "2", ";//", " ", "\xe6\xb3\xa8\xe9\x87\x8a", "\n"}},
        {"deepseek-coder", "a\xcc\x81" "b 12",
         {"a", "\xcc\x81", "b", " ", "1", "2"}},
    };
    for (const split_case & c : cases) {
        CAPTURE(c.pre);
        CAPTURE(c.text);
        pretokenizer p;
        bool ignore_merges, add_bos;
        REQUIRE(pretokenizer_from_name(c.pre, p, ignore_merges, add_bos));
        CHECK(words_of(p, c.text) == c.words);
    }
}

// Merges never cross word boundaries, so the same vocabulary encodes the same
// text differently under each pre-tokenizer.
TEST_CASE("bpe: merges on a hand-built vocabulary, per pre-tokenizer") {
    auto make = [](const char * pre) {
        bpe_builder b(pre);
        b.merge("1", "2").merge("12", "3").merge("123", "4");            // digit grouping
        b.merge(" ", " ").merge("  ", " ");                              // space runs
        b.merge("'", "s").merge("'", "S");                               // contractions
        b.merge("h", "i").merge(" ", "hi").merge("hi", "!");             // "hi!" crosses a boundary
        b.merge("\xe4", "\xbd").merge("\xe4\xbd", "\xa0")                // 你
         .merge("\xe5", "\xa5").merge("\xe5\xa5", "\xbd")                // 好
         .merge("\xe4\xbd\xa0", "\xe5\xa5\xbd")                          // 你好
         .merge("hi", "\xe4\xbd\xa0\xe5\xa5\xbd");                       // hi你好
        b.add(bu("abc"));  // a token no merge makes
        return b.build();
    };
    using V = std::vector<std::string>;
    SUBCASE("gpt-2") {
        tokenizer t = make("gpt-2");
        CHECK(encode_pieces(t, "1234") == V{"1234"});
        CHECK(encode_pieces(t, "hi!") == V{"hi", "!"});
        CHECK(encode_pieces(t, "   hi") == V{"  ", " hi"});
        CHECK(encode_pieces(t, "it's") == V{"i", "t", "'s"});
        CHECK(encode_pieces(t, "IT'S") == V{"I", "T", "'", "S"});  // upper case: no contraction
        CHECK(encode_pieces(t, "hi\xe4\xbd\xa0\xe5\xa5\xbd") == V{"hi\xe4\xbd\xa0\xe5\xa5\xbd"});
        CHECK(encode_pieces(t, "abc") == V{"a", "b", "c"});  // merges only
    }
    SUBCASE("default (no tokenizer.ggml.pre)") {
        tokenizer t = make("");
        CHECK(encode_pieces(t, "1234") == V{"123", "4"});
        CHECK(encode_pieces(t, "hi!") == V{"hi", "!"});
    }
    SUBCASE("llama-bpe (Llama 3): digits in threes, whole-word tokens") {
        tokenizer t = make("llama-bpe");
        CHECK(t.add_bos() == false);  // set by from_gguf only; see the GGUF test
        CHECK(encode_pieces(t, "1234") == V{"123", "4"});
        CHECK(encode_pieces(t, "IT'S") == V{"I", "T", "'S"});  // any case
        CHECK(encode_pieces(t, "abc") == V{"abc"});  // ignore_merges: the word is a token
        CHECK(encode_pieces(t, "   hi") == V{"  ", " hi"});
    }
    SUBCASE("qwen2, starcoder, refact, smollm: single digits") {
        for (const char * pre : {"qwen2", "starcoder", "refact", "smollm"}) {
            CAPTURE(pre);
            tokenizer t = make(pre);
            CHECK(encode_pieces(t, "x1234") == V{"x", "1", "2", "3", "4"});
            CHECK(encode_pieces(t, "abc") == V{"a", "b", "c"});
        }
    }
    SUBCASE("falcon: digit triples") {
        tokenizer t = make("falcon");
        CHECK(encode_pieces(t, "1234567") == V{"123", "4", "5", "6", "7"});
        CHECK(encode_pieces(t, "hi!!") == V{"hi", "!", "!"});
    }
    SUBCASE("deepseek-llm and deepseek-coder: CJK apart from letters") {
        tokenizer t = make("deepseek-llm");
        CHECK(encode_pieces(t, "hi\xe4\xbd\xa0\xe5\xa5\xbd") == V{"hi", "\xe4\xbd\xa0\xe5\xa5\xbd"});
        CHECK(encode_pieces(t, "1234") == V{"1234"});  // \p{N}+ runs
        tokenizer c = make("deepseek-coder");
        CHECK(encode_pieces(c, "hi\xe4\xbd\xa0\xe5\xa5\xbd") == V{"hi", "\xe4\xbd\xa0\xe5\xa5\xbd"});
        CHECK(encode_pieces(c, "1234") == V{"1", "2", "3", "4"});
    }
}

TEST_CASE("bpe: merge ranks decide, lowest first and leftmost on ties") {
    bpe_builder b("gpt-2");
    b.merge("b", "c");   // rank 0
    b.merge("a", "b");   // rank 1: loses to "b c" in "abc"
    b.merge("a", "bc");  // rank 2
    b.merge("x", "x");   // rank 3: "xxx" -> "xx" + "x" (leftmost first)
    tokenizer t = b.build();
    using V = std::vector<std::string>;
    CHECK(encode_pieces(t, "abc") == V{"abc"});
    CHECK(encode_pieces(t, "ab") == V{"ab"});
    CHECK(encode_pieces(t, "xxx") == V{"xx", "x"});
    CHECK(encode_pieces(t, "xxxx") == V{"xx", "xx"});
    // A duplicate merge keeps its first rank.
    bpe_builder d("gpt-2");
    d.merge("a", "b").merge("b", "c");
    d.v.merges.push_back(bu("a") + " " + bu("b"));  // "a b" again, rank 2
    tokenizer td = d.build();
    CHECK(encode_pieces(td, "abc") == V{"ab", "c"});
}

TEST_CASE("bpe: special tokens are cut out first, longest first") {
    bpe_builder b("qwen2");
    b.merge("h", "i");
    const int32_t im_start = b.add("<|im_start|>", token_type::CONTROL);
    const int32_t im_end = b.add("<|im_end|>", token_type::CONTROL);
    const int32_t tool = b.add("<tool>", token_type::USER_DEFINED);
    const int32_t tool_call = b.add("<tool>call", token_type::USER_DEFINED);
    b.v.eot = im_end;
    tokenizer t = b.build();
    CHECK(t.is_eog(im_end));
    CHECK_FALSE(t.is_eog(im_start));

    const std::string chat = "<|im_start|>user\nhi<tool>call<tool><|im_end|>";
    const std::vector<int32_t> ids = t.encode(chat, false, true);
    REQUIRE(ids.size() >= 5);
    CHECK(ids.front() == im_start);
    CHECK(ids.back() == im_end);
    CHECK(std::count(ids.begin(), ids.end(), tool_call) == 1);  // longer than "<tool>"
    CHECK(std::count(ids.begin(), ids.end(), tool) == 1);
    // Control tokens give no text; user-defined ones give theirs.
    CHECK(t.decode(ids) == "user\nhi<tool>call<tool>");
    CHECK(t.token_to_piece(-1, im_start) == "");
    CHECK(t.token_to_piece(-1, tool) == "<tool>");

    // Without parse_special only the user-defined tokens are cut, and the
    // text comes back exactly.
    const std::vector<int32_t> plain = t.encode(chat, false);
    CHECK(std::count(plain.begin(), plain.end(), im_start) == 0);
    CHECK(std::count(plain.begin(), plain.end(), tool_call) == 1);
    CHECK(t.decode(plain) == chat);
}

TEST_CASE("bpe: SPM vocabularies cut special tokens when parse_special") {
    auto f = gguf_file::open(require_model("vocab/ggml-vocab-llama-spm.gguf"));
    tokenizer tok = tokenizer::from_gguf(*f);
    REQUIRE(tok.kind() == vocab_kind::SPM);
    const std::vector<int32_t> hello = tok.encode("Hello", false);
    // Text after a special token gets the space prefix again, as in llama.cpp.
    std::vector<int32_t> expect{1};
    expect.insert(expect.end(), hello.begin(), hello.end());
    expect.push_back(2);
    CHECK(ids_str(tok.encode("<s>Hello</s>", false, true)) == ids_str(expect));
    // By default "<s>" is text.
    const std::vector<int32_t> plain = tok.encode("<s>Hello", false);
    CHECK(std::count(plain.begin(), plain.end(), 1) == 0);
}

TEST_CASE("bpe: any bytes round-trip, words cover the text") {
    using namespace std::string_literals;
    bpe_builder b("llama-bpe");
    b.merge("\xc3", "\xa9").merge(" ", " ");
    tokenizer t = b.build();
    const std::string texts[] = {
        "\xff\xfe a\xc3\x28 \xed\xa0\x80 \xf4\x90\x80\x80 \xc0\xaf \xe2\x82"s,
        "nul\0byte\x01\x1f \x7f"s,
        "\xc3\xa9t\xc3\xa9 \xe2\x80\xa8 \xe3\x80\x80x \xc2\x85 \xf0\x9f\xa6\x99\xcc\x81",
    };
    for (const std::string & s : texts) {
        CAPTURE(s);
        CHECK(t.decode(t.encode(s, false)) == s);
        for (int k = 0; k < PRETOKENIZER_COUNT; ++k) {
            std::string joined;
            for (const std::string & w : words_of(pretokenizer(k), s)) {
                CHECK(!w.empty());
                joined += w;
            }
            CHECK(joined == s);
        }
    }
}

TEST_CASE("bpe: pre-tokenizer names and Unicode classes") {
    pretokenizer p;
    bool ignore_merges = false, add_bos = false;
    CHECK(pretokenizer_from_name("llama-bpe", p, ignore_merges, add_bos));
    CHECK(p == pretokenizer::LLAMA3);
    CHECK(ignore_merges);
    CHECK(add_bos);
    CHECK(pretokenizer_from_name("smollm", p, ignore_merges, add_bos));
    CHECK(p == pretokenizer::STARCODER);
    CHECK_FALSE(ignore_merges);
    CHECK(pretokenizer_from_name("", p, ignore_merges, add_bos));
    CHECK(p == pretokenizer::DEFAULT);
    CHECK_FALSE(pretokenizer_from_name("no-such-pre", p, ignore_merges, add_bos));
    for (int k = 0; k < PRETOKENIZER_COUNT; ++k) {
        CHECK(pretokenizer_from_name(pretokenizer_name(pretokenizer(k)), p, ignore_merges, add_bos));
        CHECK(int(p) == k);
    }

    CHECK(unicode_class('a') == char_class::LETTER);
    CHECK(unicode_class(0x4F60) == char_class::LETTER);     // 你
    CHECK(unicode_class(0xAC00) == char_class::LETTER);     // 가 (a range in UnicodeData.txt)
    CHECK(unicode_class('7') == char_class::NUMBER);
    CHECK(unicode_class(0x00B2) == char_class::NUMBER);     // ²
    CHECK(unicode_class(0x216B) == char_class::NUMBER);     // Ⅻ
    CHECK(unicode_class('!') == char_class::PUNCTUATION);
    CHECK(unicode_class('$') == char_class::SYMBOL);
    CHECK(unicode_class(0x1F999) == char_class::SYMBOL);    // 🦙
    CHECK(unicode_class(0x0301) == char_class::MARK);
    CHECK(unicode_class(0x00A0) == char_class::SEPARATOR);
    CHECK(unicode_class('\n') == char_class::CONTROL);
    CHECK(unicode_class(0xE000) == char_class::CONTROL);    // private use
    CHECK(unicode_class(0x0378) == char_class::UNDEFINED);  // unassigned
    CHECK(unicode_class(0x110000) == char_class::UNDEFINED);
    CHECK(unicode_is_white_space(' '));
    CHECK(unicode_is_white_space(0x3000));
    CHECK(unicode_is_white_space(0x0085));
    CHECK_FALSE(unicode_is_white_space(0x200B));  // zero-width space is no white space
    CHECK_FALSE(unicode_is_white_space(0x1C));
}

namespace {

// A GGUF image of a small gpt2 vocabulary; `edit` changes it before writing.
std::vector<uint8_t> gpt2_gguf(const std::function<void(gguf_writer &)> & edit) {
    bpe_builder b("qwen2");
    b.merge("h", "i");
    const int32_t eos = b.add("<|im_end|>", token_type::CONTROL);
    gguf_writer w;
    w.set_str("tokenizer.ggml.model", "gpt2");
    w.set_str("tokenizer.ggml.pre", "llama-bpe");
    w.set_str_array("tokenizer.ggml.tokens", b.v.pieces);
    std::vector<int32_t> types;
    for (token_type t : b.v.types) types.push_back(int32_t(t));
    w.set_array("tokenizer.ggml.token_type", types);
    w.set_str_array("tokenizer.ggml.merges", b.v.merges);
    w.set_u32("tokenizer.ggml.eos_token_id", uint32_t(eos));
    edit(w);
    return w.write_to_memory();
}

tokenizer load(const std::vector<uint8_t> & image) {
    auto f = gguf_file::parse(image.data(), image.size(), "vocab.gguf");
    return tokenizer::from_gguf(*f);
}

} // namespace

TEST_CASE("bpe: GGUF vocabularies, good and bad") {
    SUBCASE("defaults from the pre-tokenizer; end of turn by text") {
        tokenizer t = load(gpt2_gguf([](gguf_writer &) {}));
        CHECK(t.kind() == vocab_kind::BPE);
        CHECK(t.add_bos());  // llama-bpe adds BOS unless the file says no
        CHECK(t.bos() == -1);
        CHECK(t.eot() == t.eos());
        CHECK(t.encode("hi", true) == std::vector<int32_t>{t.find_piece("hi")});  // no BOS id to add
        tokenizer u = load(gpt2_gguf([](gguf_writer & w) {
            w.set_bool("tokenizer.ggml.add_bos_token", false);
            w.set_u32("tokenizer.ggml.bos_token_id", 104);
        }));
        CHECK_FALSE(u.add_bos());
        CHECK(u.encode("hi", true).front() == 104);
    }
    auto fails_with = [](const std::function<void(gguf_writer &)> & edit, const char * what) {
        const std::vector<uint8_t> image = gpt2_gguf(edit);
        try {
            load(image);
            FAIL("no error, expected one about " << what);
        } catch (const error & e) {
            const std::string msg = e.what();
            CHECK_MESSAGE(msg.find("vocab.gguf") == 0, msg);
            CHECK_MESSAGE(msg.find(what) != std::string::npos, msg);
        }
    };
    fails_with([](gguf_writer & w) { w.remove("tokenizer.ggml.merges"); }, "tokenizer.ggml.merges");
    fails_with([](gguf_writer & w) { w.set_str("tokenizer.ggml.pre", "martian"); }, "martian");
    fails_with([](gguf_writer & w) { w.set_u32("tokenizer.ggml.merges", 3); }, "tokenizer.ggml.merges");
    fails_with([](gguf_writer & w) { w.set_u32("tokenizer.ggml.eot_token_id", 1u << 20); }, "eot_token_id");
    fails_with([](gguf_writer & w) { w.set_str("tokenizer.ggml.model", "t5"); }, "t5");
}

TEST_CASE("bpe: gloas --tokenize prints the ids of a gpt2 vocabulary") {
    // Needs the gloas tool built (it is part of every full build).
    auto r = gloas::test::run_tool("gloas", {"--tokenize", "-m", require_model(k_gpt2_vocab), "-p", "Hello world"});
    CHECK_MESSAGE(r.status == 0, r.err);
    CHECK(r.out.find("15496 995") != std::string::npos);
}
