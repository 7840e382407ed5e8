// Fuzz target for SentencePiece's tokenizer.model reader (decoder/spm-model.h):
// parse an arbitrary protobuf image; a gloas::error is the expected outcome
// for a bad one. A model that parses must give a tokenizer (or a
// gloas::error from its consistency checks) that encodes and decodes text
// with every id in range, as gloas-convert uses it.
#include "decoder/spm-model.h"
#include "decoder/tokenizer.h"
#include "base/error.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    gloas::spm_model m;
    try {
        m = gloas::spm_model::parse(data, size, "fuzz.model");
    } catch (const gloas::error &) {
        return 0;
    }
    if (m.v.pieces.size() != m.v.scores.size() || m.v.pieces.size() != m.v.types.size()) __builtin_trap();
    try {
        const gloas::tokenizer tok(std::move(m.v));
        for (const char * text : {"Hello world", " a  b\n\xc3\xa9\xff", ""}) {
            const std::vector<int32_t> ids = tok.encode(text, true);
            for (int32_t id : ids)
                if (id < 0 || id >= tok.n_vocab()) __builtin_trap();
            (void) tok.decode(ids);
        }
    } catch (const gloas::error &) {
    }
    return 0;
}
