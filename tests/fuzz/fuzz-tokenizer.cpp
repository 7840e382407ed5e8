// Fuzz target for the tokenizer.
//
// Input: byte 0 picks the options (bit 0: add BOS; bit 1: the built-in
// vocabulary instead of tok512; bit 2: add_space_prefix off; bit 3: a
// byte-level BPE vocabulary instead, see below), the rest is the text, any
// bytes (invalid UTF-8 included). The ids must be in range, decoding
// must succeed, and with BOS the text must come back exactly unless it holds
// a literal "▁" (U+2581, which decodes as a space). An input starting with
// "GGUF" is instead parsed as a GGUF image and loaded with from_gguf, which
// must either give a working tokenizer or throw gloas::error.
//
// BPE mode (bit 3): bits 4-6 pick the pre-tokenizer, bit 7 parse_special. A
// built-in "gpt2" vocabulary (the 256 byte characters, merges, control and
// user-defined tokens) encodes the text; ids must be in range, the text must
// come back exactly without parse_special, streaming through
// utf8_complete_prefix must give the decoded text, and every pre-tokenizer's
// words must be non-empty and cover the text.
//
// tok512.bin is loaded once from $GLOAS_MODELS or GLOAS_SOURCE_DIR/models; the
// built-in vocabulary is used alone when it is not found.
#include "decoder/gguf.h"
#include "decoder/pretokenize.h"
#include "decoder/tokenizer.h"
#include "base/error.h"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

namespace {

const char k_space[] = "\xe2\x96\x81";

// <unk> <s> </s>, the 256 byte tokens, and pieces with overlapping merges and
// equal scores (ties), multi-byte characters and space runs.
gloas::tokenizer builtin_tokenizer(bool space_prefix) {
    gloas::vocab v;
    auto add = [&](std::string p, float score, gloas::token_type t) {
        v.pieces.push_back(std::move(p));
        v.scores.push_back(score);
        v.types.push_back(t);
    };
    add("<unk>", 0, gloas::token_type::UNKNOWN);
    add("<s>", 0, gloas::token_type::CONTROL);
    add("</s>", 0, gloas::token_type::CONTROL);
    for (int b = 0; b < 256; ++b) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "<0x%02X>", b);
        add(buf, 0, gloas::token_type::BYTE);
    }
    const std::string sp = k_space;
    const char * normal[] = {"a", "b", "c", "ab", "bc", "abc", "ca", "e", "\xc3\xa9", "e\xc3\xa9",
                             "\xe2\x9c\x85", "\n", "\t"};
    float score = 0;
    for (const char * p : normal) add(p, score -= 0.5f, gloas::token_type::NORMAL);
    add(sp, -1, gloas::token_type::NORMAL);
    add(sp + sp, -1, gloas::token_type::NORMAL);          // ties with "ab", "bc"
    add(sp + sp + sp + sp, -2, gloas::token_type::NORMAL);
    add(sp + "a", -1, gloas::token_type::NORMAL);
    add(sp + "ab", -3, gloas::token_type::NORMAL);
    add("xyz", -1, gloas::token_type::USER_DEFINED);      // not reachable: "xy" is no piece
    v.add_space_prefix = space_prefix;
    return gloas::tokenizer(std::move(v));
}

std::unique_ptr<gloas::tokenizer> load_tok512() {
    std::string paths[2];
    if (const char * env = std::getenv("GLOAS_MODELS")) paths[0] = std::string(env) + "/tok512.bin";
#ifdef GLOAS_SOURCE_DIR
    paths[1] = GLOAS_SOURCE_DIR "/models/tok512.bin";
#endif
    for (const auto & p : paths) {
        if (p.empty()) continue;
        if (FILE * f = std::fopen(p.c_str(), "rb")) {
            std::fclose(f);
            return std::make_unique<gloas::tokenizer>(gloas::tokenizer::from_llama2c(p));
        }
    }
    return nullptr;
}

void check(const gloas::tokenizer & tok, std::string_view text, bool bos) {
    const std::vector<int32_t> ids = tok.encode(text, bos);
    for (int32_t id : ids)
        if (id < 0 || id >= tok.n_vocab()) __builtin_trap();
    if (bos && (ids.empty() || ids[0] != tok.bos())) __builtin_trap();
    const std::string back = tok.decode(ids);
    std::string streamed;
    int32_t prev = -1;
    for (int32_t id : ids) {
        streamed += tok.token_to_piece(prev, id);
        prev = id;
    }
    if (streamed != back) __builtin_trap();
    // Exact round trip: needs BOS (a control token; it drops the space
    // prefix), a byte token for every byte, a "▁" piece, and no literal "▁"
    // in the text.
    const gloas::vocab & v = tok.get_vocab();
    bool seen[256] = {};
    int n_bytes = 0;
    for (size_t i = 0; i < v.pieces.size(); ++i) {
        unsigned b;
        char end;
        if (v.types[i] == gloas::token_type::BYTE &&
            std::sscanf(v.pieces[i].c_str(), "<0x%2x%c", &b, &end) == 2 && end == '>' && !seen[b & 255]) {
            seen[b & 255] = true;
            ++n_bytes;
        }
    }
    const bool all_bytes = n_bytes == 256 && v.types[size_t(tok.bos())] == gloas::token_type::CONTROL;
    const bool prefix = tok.get_vocab().add_space_prefix;
    if (bos && all_bytes && (!prefix || tok.find_piece(k_space) >= 0) &&
        text.find(k_space) == std::string_view::npos) {
        // Without the space prefix a leading space of the text itself is dropped after BOS.
        std::string expect(text);
        if (!prefix && !expect.empty() && expect[0] == ' ') expect.erase(0, 1);
        if (back != expect) __builtin_trap();
    }
}

// GPT-2's byte-to-unicode text of raw bytes.
std::string byte_text(std::string_view raw) {
    std::string s;
    for (char ch : raw) {
        const unsigned b = uint8_t(ch);
        auto self = [](unsigned x) { return (x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE; };
        unsigned cp = b;
        if (!self(b)) {
            cp = 0x100;
            for (unsigned x = 0; x < b; ++x) cp += !self(x);
        }
        if (cp < 0x80) s += char(cp);
        else s += {char(0xC0 | (cp >> 6)), char(0x80 | (cp & 0x3F))};
    }
    return s;
}

// The 256 byte characters, merges with ties and chains (digits, spaces,
// letters, a CJK word, an emoji), control and user-defined tokens.
gloas::tokenizer builtin_bpe(gloas::pretokenizer pre) {
    gloas::vocab v;
    v.kind = gloas::vocab_kind::BPE;
    v.pre = gloas::pretokenizer_name(pre);
    auto add = [&](std::string p, gloas::token_type t) {
        v.pieces.push_back(std::move(p));
        v.types.push_back(t);
        return int32_t(v.pieces.size() - 1);
    };
    for (int b = 0; b < 256; ++b) add(byte_text(std::string(1, char(b))), gloas::token_type::NORMAL);
    const char * merges[][2] = {
        {"1", "2"}, {"12", "3"}, {" ", " "}, {"  ", " "}, {"  ", "  "}, {"'", "s"}, {"t", "h"}, {"th", "e"},
        {" ", "the"}, {"e", "r"}, {"r", "e"}, {"er", "e"}, {"\n", "\n"}, {" ", "\n"},
        {"\xe4\xbd", "\xa0"}, {"\xe4", "\xbd"}, {"\xe5", "\xa5"}, {"\xe5\xa5", "\xbd"},
        {"\xe4\xbd\xa0", "\xe5\xa5\xbd"}, {"\xf0\x9f", "\xa6"}, {"\xf0", "\x9f"}, {"\xf0\x9f\xa6", "\x99"},
    };
    for (auto & m : merges) {
        v.merges.push_back(byte_text(m[0]) + " " + byte_text(m[1]));
        add(byte_text(std::string(m[0]) + m[1]), gloas::token_type::NORMAL);
    }
    v.bos = add("<|endoftext|>", gloas::token_type::CONTROL);
    v.eos = v.bos;
    v.eot = add("<|im_end|>", gloas::token_type::CONTROL);
    add("<|im_start|>", gloas::token_type::CONTROL);
    add("<tool>", gloas::token_type::USER_DEFINED);
    add("<tool>x", gloas::token_type::USER_DEFINED);
    v.add_bos = false;
    return gloas::tokenizer(std::move(v));
}

void check_bpe(const gloas::tokenizer & tok, std::string_view text, bool bos, bool parse_special) {
    const std::vector<int32_t> ids = tok.encode(text, bos, parse_special);
    for (int32_t id : ids)
        if (id < 0 || id >= tok.n_vocab()) __builtin_trap();
    if (bos && tok.bos() >= 0 && (ids.empty() || ids[0] != tok.bos())) __builtin_trap();
    const std::string back = tok.decode(ids);
    // Exact unless special tokens were cut out (control tokens give no text)
    // or the vocabulary lacks byte characters (a GGUF image).
    bool all_bytes = true;
    for (int b = 0; b < 256 && all_bytes; ++b) all_bytes = tok.find_piece(byte_text(std::string(1, char(b)))) >= 0;
    if (!parse_special && all_bytes && back != text) __builtin_trap();
    std::string printed, pending;
    for (int32_t id : ids) {
        pending += tok.token_to_piece(-1, id);
        const size_t n = gloas::utf8_complete_prefix(pending);
        if (n > pending.size()) __builtin_trap();
        printed.append(pending, 0, n);
        pending.erase(0, n);
    }
    if (printed + pending != back) __builtin_trap();
    for (int k = 0; k < gloas::PRETOKENIZER_COUNT; ++k) {
        std::vector<std::string_view> words;
        gloas::pretokenize(gloas::pretokenizer(k), text, words);
        size_t off = 0;
        for (std::string_view w : words) {
            if (w.empty() || w.data() != text.data() + off) __builtin_trap();
            off += w.size();
        }
        if (off != text.size()) __builtin_trap();
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    static const std::unique_ptr<gloas::tokenizer> tok512 = load_tok512();
    static const gloas::tokenizer builtin = builtin_tokenizer(true);
    static const gloas::tokenizer builtin_no_prefix = builtin_tokenizer(false);

    if (size >= 4 && std::memcmp(data, "GGUF", 4) == 0) {
        try {
            auto f = gloas::gguf_file::parse(data, size, "fuzz.gguf");
            gloas::tokenizer tok = gloas::tokenizer::from_gguf(*f);
            if (tok.kind() == gloas::vocab_kind::BPE) check_bpe(tok, "Hello world \xc3\xa9\xff 123", true, true);
            else check(tok, "Hello world \xc3\xa9\xff", true);
        } catch (const gloas::error &) {
        }
        return 0;
    }
    if (size == 0) return 0;
    const uint8_t opt = data[0];
    const std::string_view text(reinterpret_cast<const char *>(data + 1), size - 1);
    const bool bos = opt & 1;
    if (opt & 8) {
        static const std::vector<gloas::tokenizer> bpe = [] {
            std::vector<gloas::tokenizer> t;
            for (int k = 0; k < gloas::PRETOKENIZER_COUNT; ++k) t.push_back(builtin_bpe(gloas::pretokenizer(k)));
            return t;
        }();
        check_bpe(bpe[size_t((opt >> 4) & 7) % bpe.size()], text, bos, opt & 0x80);
        return 0;
    }
    const gloas::tokenizer * tok = (opt & 4) ? &builtin_no_prefix : &builtin;
    if (!(opt & 2) && !(opt & 4) && tok512) tok = tok512.get();
    check(*tok, text, bos);
    return 0;
}
