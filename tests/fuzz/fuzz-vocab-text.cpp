// Fuzz target for the BPE and SPM tokenizers on arbitrary text against real
// vocabularies: llama.cpp's vocabulary GGUFs models/vocab/ggml-vocab-gpt-2.gguf
// (byte-level BPE, GPT-2 pre-tokenizer) and ggml-vocab-llama-spm.gguf
// (SentencePiece with byte fallback), found as the tests find them; the
// target exits 77 (skipped) when either is missing.
//
// Input: byte 0 picks the options (bit 0: the SPM vocabulary instead of
// GPT-2's; bit 1: add BOS; bit 2: parse_special), the rest is the text, any
// bytes. Every id must be in range, BOS first when asked for, streaming the
// pieces (token_to_piece, utf8_complete_prefix) must give the decoded text,
// and the text must come back exactly: for GPT-2 always without
// parse_special (its 256 byte characters cover any bytes); for SPM with BOS
// and without parse_special, unless the text holds a literal "▁" (U+2581,
// which decodes as a space), its leading space after BOS aside.
#include "decoder/gguf.h"
#include "decoder/tokenizer.h"
#include "fuzz-common.h"
#include "base/error.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace {

const gloas::tokenizer * g_bpe = nullptr;
const gloas::tokenizer * g_spm = nullptr;

const gloas::tokenizer * load(const char * name) {
    const std::string path = gloas::fuzz::need_model(std::string("vocab/") + name);
    auto f = gloas::gguf_file::open(path);
    return new gloas::tokenizer(gloas::tokenizer::from_gguf(*f));
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    g_bpe = load("ggml-vocab-gpt-2.gguf");
    g_spm = load("ggml-vocab-llama-spm.gguf");
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    if (size == 0) return 0;
    if (!g_bpe) LLVMFuzzerInitialize(nullptr, nullptr);
    const uint8_t opt = data[0];
    const bool spm = opt & 1, bos = opt & 2, special = opt & 4;
    const std::string_view text(reinterpret_cast<const char *>(data + 1), size - 1);
    const gloas::tokenizer & tok = spm ? *g_spm : *g_bpe;

    const std::vector<int32_t> ids = tok.encode(text, bos, special);
    for (int32_t id : ids)
        if (id < 0 || id >= tok.n_vocab()) __builtin_trap();
    if (bos && tok.bos() >= 0 && (ids.empty() || ids[0] != tok.bos())) __builtin_trap();
    const std::string back = tok.decode(ids);

    std::string printed, pending;
    int32_t prev = -1;
    for (int32_t id : ids) {
        pending += tok.token_to_piece(prev, id);
        prev = id;
        const size_t n = gloas::utf8_complete_prefix(pending);
        if (n > pending.size()) __builtin_trap();
        printed.append(pending, 0, n);
        pending.erase(0, n);
    }
    if (printed + pending != back) __builtin_trap();

    if (special) return 0;
    if (!spm) {
        if (back != text) __builtin_trap();
    } else if (bos && text.find("\xe2\x96\x81") == std::string_view::npos) {
        std::string expect(text);
        if (!tok.get_vocab().add_space_prefix && !expect.empty() && expect[0] == ' ') expect.erase(0, 1);
        if (back != expect) __builtin_trap();
    }
    return 0;
}
