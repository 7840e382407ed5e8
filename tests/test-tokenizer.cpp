// Tokenizer: goldens of the Llama 2 SentencePiece tokenizer and llama.cpp's
// SPM test corpus, llama2.c and GGUF loaders, round trips, bad files.
#include "decoder/gguf.h"
#include "decoder/tokenizer.h"
#include "base/error.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

using namespace gloas;
using gloas::test::read_file;
using gloas::test::require_model;
using gloas::test::ids_str;

namespace {

// --- the golden JSON: {"cases": [{"text": "...", "ids": [..]}, ...]} ------
// A minimal reader for this file's shape (strings with \n \t \" \\ \uXXXX
// escapes, integer arrays).
struct golden_case {
    std::string text;
    std::vector<int32_t> ids;
};

struct json_reader {
    const std::string & s;
    size_t i = 0;

    void skip_ws() { while (i < s.size() && std::isspace(uint8_t(s[i]))) ++i; }
    bool at_end() const { return i >= s.size(); }
    void expect(char c) {
        skip_ws();
        REQUIRE_MESSAGE(i < s.size(), "json: expected '" << c << "' at end");
        REQUIRE_MESSAGE(s[i] == c, "json: expected '" << c << "' at " << i);
        ++i;
    }
    static void put_utf8(std::string & out, uint32_t cp) {
        if (cp < 0x80) out += char(cp);
        else if (cp < 0x800) { out += char(0xC0 | (cp >> 6)); out += char(0x80 | (cp & 0x3F)); }
        else if (cp < 0x10000) {
            out += char(0xE0 | (cp >> 12)); out += char(0x80 | ((cp >> 6) & 0x3F));
            out += char(0x80 | (cp & 0x3F));
        } else {
            out += char(0xF0 | (cp >> 18)); out += char(0x80 | ((cp >> 12) & 0x3F));
            out += char(0x80 | ((cp >> 6) & 0x3F)); out += char(0x80 | (cp & 0x3F));
        }
    }
    uint32_t hex4() {
        REQUIRE(i + 4 <= s.size());
        uint32_t v = uint32_t(std::stoul(s.substr(i, 4), nullptr, 16));
        i += 4;
        return v;
    }
    std::string str() {
        expect('"');
        std::string out;
        while (true) {
            REQUIRE(i < s.size());
            char c = s[i++];
            if (c == '"') break;
            if (c != '\\') { out += c; continue; }
            REQUIRE(i < s.size());
            const char e = s[i++];
            if (e == 'u') {
                uint32_t cp = hex4();
                if (cp >= 0xD800 && cp < 0xDC00) {
                    REQUIRE(s.compare(i, 2, "\\u") == 0);
                    i += 2;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (hex4() - 0xDC00);
                }
                put_utf8(out, cp);
                continue;
            }
            // \n \t \r \b \f \" \\ \/: the character at the same place of `to`
            static const std::string from = "ntrbf\"\\/", to = "\n\t\r\b\f\"\\/";
            const size_t k = from.find(e);
            if (k == std::string::npos) FAIL("json: bad escape \\" << e);
            out += to[k];
        }
        return out;
    }
    int64_t integer() {
        skip_ws();
        size_t n = 0;
        int64_t v = std::stoll(s.substr(i, 24), &n);
        i += n;
        return v;
    }
    // Skips any value (used for keys this test does not need).
    void skip_value() {
        skip_ws();
        REQUIRE(i < s.size());
        if (s[i] == '"') { str(); return; }
        if (s[i] == '[' || s[i] == '{') {
            char close = s[i] == '[' ? ']' : '}';
            ++i;
            skip_ws();
            if (s[i] == close) { ++i; return; }
            while (true) {
                if (close == '}') { str(); expect(':'); }
                skip_value();
                skip_ws();
                if (s[i] == ',') { ++i; continue; }
                expect(close);
                return;
            }
        }
        while (i < s.size() && s[i] != ',' && s[i] != ']' && s[i] != '}' && !std::isspace(uint8_t(s[i]))) ++i;
    }
};

std::vector<golden_case> read_golden_cases(const std::string & path) {
    const std::string s = read_file(path);
    json_reader r{s};
    std::vector<golden_case> cases;
    r.expect('{');
    while (true) {
        std::string key = r.str();
        r.expect(':');
        if (key != "cases") {
            r.skip_value();
        } else {
            r.expect('[');
            r.skip_ws();
            while (s[r.i] != ']') {
                golden_case c;
                r.expect('{');
                while (true) {
                    std::string k = r.str();
                    r.expect(':');
                    if (k == "text") {
                        c.text = r.str();
                    } else if (k == "ids") {
                        r.expect('[');
                        r.skip_ws();
                        while (s[r.i] != ']') {
                            c.ids.push_back(int32_t(r.integer()));
                            r.skip_ws();
                            if (s[r.i] == ',') ++r.i;
                            r.skip_ws();
                        }
                        r.expect(']');
                    } else {
                        r.skip_value();
                    }
                    r.skip_ws();
                    if (s[r.i] == ',') { ++r.i; continue; }
                    r.expect('}');
                    break;
                }
                cases.push_back(std::move(c));
                r.skip_ws();
                if (s[r.i] == ',') ++r.i;
                r.skip_ws();
            }
            r.expect(']');
        }
        r.skip_ws();
        if (s[r.i] == ',') { ++r.i; continue; }
        r.expect('}');
        break;
    }
    return cases;
}


const char * k_vocab_base = "vocab/ggml-vocab-llama-spm.gguf";

// Expects the exact ids for every case, and decode(encode(text)) round trips:
// with BOS the text comes back exactly; without BOS it comes back with the
// space prefix (" " + text for a non-empty text).
void check_vocab_cases(const tokenizer & tok, const std::vector<test::vocab_case> & cases) {
    for (size_t k = 0; k < cases.size(); ++k) {
        const test::vocab_case & c = cases[k];
        CAPTURE(k);
        CAPTURE(c.text);
        std::vector<int32_t> got = tok.encode(c.text, false);
        CHECK(ids_str(got) == ids_str(c.ids));
        CHECK(tok.decode(got) == (c.text.empty() ? "" : " " + c.text));
        std::vector<int32_t> with_bos = tok.encode(c.text, true);
        REQUIRE(!with_bos.empty());
        CHECK(with_bos[0] == tok.bos());
        CHECK(std::vector<int32_t>(with_bos.begin() + 1, with_bos.end()) == got);
        CHECK(tok.decode(with_bos) == c.text);
    }
}

// A llama2.c tokenizer.bin image.
struct bin_token {
    float score;
    std::string bytes;
};
std::string make_bin(uint32_t max_len, const std::vector<bin_token> & toks) {
    std::string s(reinterpret_cast<const char *>(&max_len), 4);
    for (const auto & t : toks) {
        int32_t len = int32_t(t.bytes.size());
        s.append(reinterpret_cast<const char *>(&t.score), 4);
        s.append(reinterpret_cast<const char *>(&len), 4);
        s += t.bytes;
    }
    return s;
}

std::string expect_load_error(const std::string & path, int32_t n_vocab = -1) {
    const std::string e = test::error_of([&] { tokenizer::from_llama2c(path, n_vocab); });
    if (e.empty()) FAIL("no error loading " << path);
    return e;
}

// A small vocabulary: <unk> <s> </s>, the 256 byte tokens, then the given pieces.
vocab small_vocab(const std::vector<std::pair<std::string, float>> & pieces) {
    vocab v;
    v.pieces = {"<unk>", "<s>", "</s>"};
    v.types = {token_type::UNKNOWN, token_type::CONTROL, token_type::CONTROL};
    v.scores = {0, 0, 0};
    for (int b = 0; b < 256; ++b) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "<0x%02X>", b);
        v.pieces.push_back(buf);
        v.types.push_back(token_type::BYTE);
        v.scores.push_back(0);
    }
    for (const auto & [p, s] : pieces) {
        v.pieces.push_back(p);
        v.types.push_back(token_type::NORMAL);
        v.scores.push_back(s);
    }
    return v;
}

} // namespace

TEST_CASE("tokenizer: Llama 2 golden ids (tokenizer.bin, BOS prepended)") {
    tokenizer tok = tokenizer::from_llama2c(require_model("tokenizer.bin"));
    REQUIRE(tok.n_vocab() == 32000);
    CHECK(tok.bos() == 1);
    CHECK(tok.eos() == 2);
    auto cases = read_golden_cases(gloas::test::data_file("golden/llama2-tokenizer-cases.json"));
    REQUIRE(cases.size() == 5);
    CHECK(cases[0].text.empty());
    for (const auto & c : cases) {
        CAPTURE(c.text);
        std::vector<int32_t> got = tok.encode(c.text, true);
        CHECK(ids_str(got) == ids_str(c.ids));
        CHECK(tok.decode(got) == c.text);
    }
}

TEST_CASE("tokenizer: llama.cpp SPM vocab corpus (46 cases)") {
    auto cases = test::read_vocab_cases(k_vocab_base);
    REQUIRE(cases.size() == 46);
    // The corpus has an empty case and whitespace-only cases.
    CHECK(cases[2].text.empty());
    CHECK(cases[2].ids.empty());
    CHECK(cases[3].text == " ");
    CHECK(cases[7].text == "\n");
    CHECK(cases[0].text == "ied 4 \xc2\xbd months");

    SUBCASE("GGUF vocabulary") {
        auto f = gguf_file::open(require_model(k_vocab_base));
        tokenizer tok = tokenizer::from_gguf(*f);
        REQUIRE(tok.n_vocab() == 32000);
        CHECK(tok.add_bos());
        check_vocab_cases(tok, cases);
    }
    SUBCASE("the same vocabulary from llama2.c's tokenizer.bin") {
        tokenizer tok = tokenizer::from_llama2c(require_model("tokenizer.bin"), 32000);
        check_vocab_cases(tok, cases);
    }
}

TEST_CASE("tokenizer: tokenizer.bin and the GGUF vocabulary agree piece by piece") {
    tokenizer a = tokenizer::from_llama2c(require_model("tokenizer.bin"));
    auto f = gguf_file::open(require_model(k_vocab_base));
    tokenizer b = tokenizer::from_gguf(*f);
    const vocab & va = a.get_vocab();
    const vocab & vb = b.get_vocab();
    REQUIRE(va.pieces.size() == vb.pieces.size());
    size_t differ = 0;
    for (size_t i = 0; i < va.pieces.size(); ++i)
        if (va.pieces[i] != vb.pieces[i] || va.types[i] != vb.types[i] || va.scores[i] != vb.scores[i]) {
            if (differ++ < 5) CHECK_MESSAGE(false, "token " << i << ": '" << va.pieces[i] << "' vs '" << vb.pieces[i] << "'");
        }
    CHECK(differ == 0);
    CHECK(va.bos == vb.bos);
    CHECK(va.eos == vb.eos);
    CHECK(va.unk == vb.unk);
}

TEST_CASE("tokenizer: tok512 (stories260K)") {
    tokenizer tok = tokenizer::from_llama2c(require_model("tok512.bin"));
    REQUIRE(tok.n_vocab() == 512);
    const vocab & v = tok.get_vocab();
    CHECK(v.pieces[1] == "<s>");
    CHECK(v.pieces[2] == "</s>");
    CHECK(v.types[0] == token_type::UNKNOWN);
    CHECK(v.types[1] == token_type::CONTROL);
    CHECK(v.types[3] == token_type::BYTE);
    CHECK(v.types[258] == token_type::BYTE);
    CHECK(v.pieces[259] == "\xe2\x96\x81t");  // " t" in the file
    CHECK(v.types[259] == token_type::NORMAL);

    const char * texts[] = {
        "Once upon a time",
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.",
        "Tom and Lily went to the park",
        "One day, a big dog came. \"Hello!\" said the dog.\nThe end.",
        "  two leading spaces, tabs\tand unicode: caf\xc3\xa9 \xe2\x9c\x85",
    };
    auto f = gguf_file::open(require_model("stories260K_f32.gguf"));
    tokenizer gg = tokenizer::from_gguf(*f);
    REQUIRE(gg.n_vocab() == 512);
    for (const char * t : texts) {
        CAPTURE(t);
        std::vector<int32_t> ids = tok.encode(t, true);
        CHECK(ids.front() == 1);
        for (int32_t id : ids) CHECK((id >= 0 && id < 512));
        CHECK(tok.decode(ids) == t);
        CHECK(ids_str(gg.encode(t, true)) == ids_str(ids));
    }
    // The prompt's pieces as llama2.c prints them after BOS.
    std::vector<int32_t> ids = tok.encode("Once upon a time", true);
    std::string streamed;
    for (size_t i = 1; i < ids.size(); ++i) streamed += tok.token_to_piece(ids[i - 1], ids[i]);
    CHECK(streamed == "Once upon a time");
    CHECK(tok.token_to_piece(1, ids[1]) == tok.token_to_piece(-1, ids[1]).substr(1));
    // The golden generation starts with the prompt.
    std::string golden = read_file(gloas::test::data_file("golden/stories260K_greedy_n128_once_upon_a_time.txt"));
    CHECK(golden.rfind("Once upon a time", 0) == 0);
}

TEST_CASE("tokenizer: decoding special and byte tokens") {
    tokenizer tok = tokenizer::from_llama2c(require_model("tokenizer.bin"));
    CHECK(tok.token_to_piece(-1, 1).empty());   // <s>
    CHECK(tok.token_to_piece(-1, 2).empty());   // </s>
    CHECK(tok.token_to_piece(-1, 0) == "<unk>");
    CHECK(tok.token_to_piece(-1, 3 + 0x0A) == "\n");
    CHECK(tok.token_to_piece(1, 3 + 0x20) == " ");  // a byte token keeps its space after BOS
    CHECK(tok.token_to_piece(-1, 29871) == " ");
    CHECK(tok.token_to_piece(1, 29871).empty());
    CHECK(tok.token_to_piece(1, 259) == " ");       // "▁▁" after BOS
    CHECK(tok.decode({1, 15043, 2}) == "Hello");
    CHECK_THROWS_AS(tok.token_to_piece(-1, 32000), error);
    CHECK_THROWS_AS(tok.token_to_piece(-1, -1), error);
    CHECK(tok.find_piece("\xe2\x96\x81Hello") == 15043);
    CHECK(tok.find_piece("<s>") == -1);  // control pieces are not produced by merging
    CHECK(tok.find_piece("no such piece") == -1);
    // Literal control text is not a control token.
    std::vector<int32_t> ids = tok.encode("<s>", false);
    for (int32_t id : ids) CHECK(id != 1);
    CHECK(tok.decode(ids) == " <s>");
}

TEST_CASE("tokenizer: merge order, ties, byte fallback") {
    // "ab" and "bc" both merge "abc"; with equal scores the leftmost pair wins.
    SUBCASE("leftmost on ties") {
        vocab v = small_vocab({{"a", 0}, {"b", 0}, {"c", 0}, {"ab", -1}, {"bc", -1}, {"\xe2\x96\x81", 0}});
        v.add_space_prefix = false;
        tokenizer tok(v);
        auto id = [&](const char * p) { return tok.find_piece(p); };
        CHECK(tok.encode("abc", false) == std::vector<int32_t>{id("ab"), id("c")});
        CHECK(tok.encode("abcbc", false) == std::vector<int32_t>{id("ab"), id("c"), id("bc")});
    }
    SUBCASE("higher score first") {
        vocab v = small_vocab({{"a", 0}, {"b", 0}, {"c", 0}, {"ab", -2}, {"bc", -1}});
        v.add_space_prefix = false;
        tokenizer tok(v);
        auto id = [&](const char * p) { return tok.find_piece(p); };
        CHECK(tok.encode("abc", false) == std::vector<int32_t>{id("a"), id("bc")});
    }
    SUBCASE("merges need every step to be a piece") {
        // "abcd" is a piece but "abc" / "bcd" / "cd" are not: stops at ab + c + d.
        vocab v = small_vocab({{"a", 0}, {"b", 0}, {"c", 0}, {"d", 0}, {"ab", -1}, {"abcd", -1}});
        v.add_space_prefix = false;
        tokenizer tok(v);
        auto id = [&](const char * p) { return tok.find_piece(p); };
        CHECK(tok.encode("abcd", false) == std::vector<int32_t>{id("ab"), id("c"), id("d")});
    }
    SUBCASE("byte fallback, and unk when a byte token is missing") {
        vocab v = small_vocab({{"a", 0}, {"\xe2\x96\x81", 0}});
        tokenizer tok(v);
        // 'z' is not a piece: its byte token; "é" -> two byte tokens.
        CHECK(tok.encode("az\xc3\xa9", true) ==
              std::vector<int32_t>{1, tok.find_piece("\xe2\x96\x81"), tok.find_piece("a"), 3 + 'z', 3 + 0xC3, 3 + 0xA9});
        CHECK(tok.decode(tok.encode("az\xc3\xa9", true)) == "az\xc3\xa9");
        vocab w = v;
        w.pieces.erase(w.pieces.begin() + 3, w.pieces.begin() + 3 + 256);  // no byte tokens
        w.types.erase(w.types.begin() + 3, w.types.begin() + 3 + 256);
        w.scores.erase(w.scores.begin() + 3, w.scores.begin() + 3 + 256);
        tokenizer tw(w);
        CHECK(tw.encode("az", false) == std::vector<int32_t>{tw.find_piece("\xe2\x96\x81"), tw.find_piece("a"), 0});
    }
    SUBCASE("NaN scores are ordered last, deterministically") {
        vocab v = small_vocab({{"a", 0}, {"b", 0}, {"c", 0}, {"ab", std::nanf("")}, {"bc", -5}});
        v.add_space_prefix = false;
        tokenizer tok(v);
        auto id = [&](const char * p) { return tok.find_piece(p); };
        CHECK(tok.encode("abc", false) == std::vector<int32_t>{id("a"), id("bc")});
    }
    SUBCASE("invalid UTF-8 round trips through byte tokens") {
        tokenizer tok = tokenizer::from_llama2c(require_model("tok512.bin"));
        const std::string bad = std::string("a\x80\xff\xc3", 4) + std::string("\0b\xf0\x9f", 4);
        auto ids = tok.encode(bad, true);
        CHECK(tok.decode(ids) == bad);
        // A bad lead byte does not swallow the space after it.
        ids = tok.encode("Once\xff upon", true);
        CHECK(tok.decode(ids) == "Once\xff upon");
        const std::vector<int32_t> upon = tok.encode("upon", false);  // "▁upon"
        REQUIRE(ids.size() > upon.size());
        CHECK(std::vector<int32_t>(ids.end() - std::ptrdiff_t(upon.size()), ids.end()) == upon);
    }
}

TEST_CASE("tokenizer: long inputs are not quadratic") {
    // 1 MB of text (256 KB in sanitizer builds, which are ~20x slower): a
    // quadratic merge loop would not finish within the test timeout.
#if defined(__SANITIZE_ADDRESS__)
    const size_t n = size_t(1) << 18;
#else
    const size_t n = size_t(1) << 20;
#endif
    tokenizer tok = tokenizer::from_llama2c(require_model("tokenizer.bin"));
    std::string text;
    const std::string para = "Once upon a time, there was a little girl named Lily. \xe2\x9c\x85 caf\xc3\xa9\n";
    while (text.size() < n) text += para;
    std::vector<int32_t> ids = tok.encode(text, true);
    CHECK(ids.size() > text.size() / 8);
    CHECK(tok.decode(ids) == text);
    // Runs of one character merge as one long chain (no independent segments).
    std::string as(n / 4, 'a');
    CHECK(tok.decode(tok.encode(as, true)) == as);
    std::string sp(n / 4, ' ');
    std::vector<int32_t> sp_ids = tok.encode(sp, true);
    CHECK(sp_ids.size() < sp.size() / 8);
    CHECK(tok.decode(sp_ids) == sp);
}

TEST_CASE("tokenizer: bad tokenizer.bin files") {
    const std::string dir = gloas::test::temp_dir("tokenizer");
    const std::string good = read_file(require_model("tok512.bin"));
    const std::string path = dir + "/bad.bin";

    SUBCASE("truncated anywhere") {
        // Every cut inside the first tokens and the last one, plus a stride through the rest.
        for (size_t cut = 0; cut < good.size(); cut += (cut < 200 || cut + 40 > good.size()) ? 1 : 97) {
            CAPTURE(cut);
            gloas::test::write_file(path, good.data(), cut);
            // Reading to EOF: a cut at a token boundary is a smaller, valid vocabulary.
            try {
                tokenizer t = tokenizer::from_llama2c(path);
                CHECK(t.n_vocab() < 512);
            } catch (const error & e) {
                CHECK(std::string(e.what()).rfind(path, 0) == 0);
            }
            // With the expected vocabulary size, every cut is an error.
            std::string msg = expect_load_error(path, 512);
            CHECK(msg.rfind(path, 0) == 0);
        }
        gloas::test::write_file(path, good);
        CHECK(tokenizer::from_llama2c(path, 512).n_vocab() == 512);
        CHECK(tokenizer::from_llama2c(path, 300).n_vocab() == 300);
        CHECK(expect_load_error(path, 513).find("token 512") != std::string::npos);
    }
    SUBCASE("negative, huge and over-long lengths") {
        std::string s = make_bin(8, {{0, "<unk>"}, {0, "<s>"}, {0, "</s>"}, {0, "ab"}});
        gloas::test::write_file(path, s);
        CHECK(tokenizer::from_llama2c(path).n_vocab() == 4);
        const size_t len3 = 4 + (8 + 5) + (8 + 3) + (8 + 4) + 4;  // length field of token 3
        for (int32_t bad : {-1, std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max(), 3, 9}) {
            CAPTURE(bad);
            std::string b = s;
            std::memcpy(&b[len3], &bad, 4);
            gloas::test::write_file(path, b);
            std::string msg = expect_load_error(path);
            CHECK(msg.rfind(path, 0) == 0);
            CHECK(msg.find("token 3") != std::string::npos);
        }
    }
    SUBCASE("NaN scores load; empty files do not") {
        std::string s = make_bin(8, {{0, "<unk>"}, {0, "<s>"}, {0, "</s>"}, {std::nanf(""), "ab"}, {-INFINITY, "a"}});
        gloas::test::write_file(path, s);
        tokenizer t = tokenizer::from_llama2c(path);
        CHECK(t.n_vocab() == 5);
        // "▁" is neither a piece nor has byte tokens: 3 x <unk>; then "ab".
        CHECK(t.encode("ab", false) == std::vector<int32_t>{0, 0, 0, 3});
        gloas::test::write_file(path, std::string());
        CHECK(expect_load_error(path).find("truncated") != std::string::npos);
        gloas::test::write_file(path, make_bin(8, {}));
        CHECK(expect_load_error(path).find("no tokens") != std::string::npos);
        CHECK(expect_load_error(dir + "/missing.bin").rfind(dir + "/missing.bin", 0) == 0);
    }
}

TEST_CASE("tokenizer: inconsistent vocabularies are refused") {
    vocab v = small_vocab({{"a", 0}});
    CHECK_NOTHROW(tokenizer{v});
    vocab w = v;
    w.scores.pop_back();
    CHECK_THROWS_AS(tokenizer{w}, error);
    w = v;
    w.bos = int32_t(w.pieces.size());
    CHECK_THROWS_AS(tokenizer{w}, error);
    w = v;
    w.types[3] = token_type(42);
    CHECK_THROWS_AS(tokenizer{w}, error);
    w = v;
    w.pieces[3] = "<0xZZ>";  // a BYTE token that is not <0xXX>
    CHECK_THROWS_AS(tokenizer{w}, error);
    CHECK_THROWS_AS(tokenizer{vocab{}}, error);
    tokenizer empty;
    CHECK(empty.n_vocab() == 0);
    CHECK_THROWS_AS(empty.encode("a", true), error);
    CHECK_THROWS_AS(empty.token_to_piece(-1, 0), error);
}

TEST_CASE("tokenizer: the GGUF vocabulary kind is read from tokenizer.ggml.model") {
    // gpt2 vocabularies are byte-level BPE (tests/test-tokenizer-bpe.cpp);
    // the llama-spm corpus file is SentencePiece.
    const std::string gpt2 = require_model("vocab/ggml-vocab-gpt-2.gguf");
    const std::string spm = require_model("vocab/ggml-vocab-llama-spm.gguf");
    CHECK(tokenizer::from_gguf(*gguf_file::open(gpt2)).n_vocab() > 50000);
    CHECK(tokenizer::from_gguf(*gguf_file::open(spm)).n_vocab() == 32000);
}
