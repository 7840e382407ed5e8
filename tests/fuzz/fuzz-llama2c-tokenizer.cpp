// Fuzz target for llama2.c's tokenizer.bin reader
// (gloas::tokenizer::from_llama2c): the input is the file. Byte 0 of the
// input, when the file is at least 5 bytes, also picks how many tokens the
// caller expects (-1: as many as the file holds, as gloas reads it for a
// model whose vocabulary size it knows otherwise: 1..8). A gloas::error is
// the expected outcome for a bad file; a tokenizer that loads must encode
// and decode text with every id in range.
#include "decoder/tokenizer.h"
#include "fuzz-common.h"
#include "base/error.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    const int32_t expected = size >= 5 && (data[0] & 0x80) ? int32_t(data[0] & 7) + 1 : -1;
    gloas::fuzz::memory_file f(data, size);
    try {
        const gloas::tokenizer tok = gloas::tokenizer::from_llama2c(f.path(), expected);
        if (expected > 0 && tok.n_vocab() != expected) __builtin_trap();
        for (const char * text : {"Once upon a time", "  \xe2\x96\x81x\n\xf0\x9f\xa6\x99\xff", ""}) {
            for (bool bos : {false, true}) {
                const std::vector<int32_t> ids = tok.encode(text, bos);
                for (int32_t id : ids)
                    if (id < 0 || id >= tok.n_vocab()) __builtin_trap();
                std::string streamed;
                int32_t prev = -1;
                for (int32_t id : ids) {
                    streamed += tok.token_to_piece(prev, id);
                    prev = id;
                }
                if (streamed != tok.decode(ids)) __builtin_trap();
            }
        }
    } catch (const gloas::error &) {
    }
    return 0;
}
