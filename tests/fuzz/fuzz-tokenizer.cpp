// Fuzz target for the tokenizer.
//
// Input: byte 0 picks the options (bit 0: add BOS; bit 1: the built-in
// vocabulary instead of tok512; bit 2: add_space_prefix off), the rest is the
// text, any bytes (invalid UTF-8 included). The ids must be in range, decoding
// must succeed, and with BOS the text must come back exactly unless it holds
// a literal "▁" (U+2581, which decodes as a space). An input starting with
// "GGUF" is instead parsed as a GGUF image and loaded with from_gguf, which
// must either give a working tokenizer or throw gloas::error.
//
// tok512.bin is loaded once from $GLOAS_MODELS or GLOAS_SOURCE_DIR/models; the
// built-in vocabulary is used alone when it is not found.
#include "decoder/gguf.h"
#include "decoder/tokenizer.h"
#include "tensor/error.h"

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

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    static const std::unique_ptr<gloas::tokenizer> tok512 = load_tok512();
    static const gloas::tokenizer builtin = builtin_tokenizer(true);
    static const gloas::tokenizer builtin_no_prefix = builtin_tokenizer(false);

    if (size >= 4 && std::memcmp(data, "GGUF", 4) == 0) {
        try {
            auto f = gloas::gguf_file::parse(data, size, "fuzz.gguf");
            gloas::tokenizer tok = gloas::tokenizer::from_gguf(*f);
            check(tok, "Hello world \xc3\xa9\xff", true);
        } catch (const gloas::error &) {
        }
        return 0;
    }
    if (size == 0) return 0;
    const uint8_t opt = data[0];
    const std::string_view text(reinterpret_cast<const char *>(data + 1), size - 1);
    const bool bos = opt & 1;
    const gloas::tokenizer * tok = (opt & 4) ? &builtin_no_prefix : &builtin;
    if (!(opt & 2) && !(opt & 4) && tok512) tok = tok512.get();
    check(*tok, text, bos);
    return 0;
}
