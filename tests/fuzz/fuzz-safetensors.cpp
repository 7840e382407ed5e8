// Fuzz target for the safetensors reader: parse an arbitrary image and touch
// every tensor byte and metadata string it hands out (fuzz-common.h's
// parse_and_touch says what is a bug).
#include "decoder/safetensors.h"
#include "base/error.h"
#include "fuzz-common.h"

#include <cstddef>
#include <cstdint>

namespace {

volatile uint64_t g_sink;  // keeps the reads below from being optimized away

void touch(const gloas::safetensors_file & f) {
    uint64_t h = f.data_offset();
    for (const auto & [k, v] : f.metadata()) h += k.size() + v.size();
    const gloas::safetensors_tensor * prev = nullptr;
    for (const auto & t : f.tensors()) {
        h += t.name.size() + uint64_t(t.t) + t.shape.size() + uint64_t(t.nelements());
        h += gloas::fuzz::sum_bytes(t.data, t.nbytes);
        if (f.find(t.name) != &t) __builtin_trap();  // the index must agree with the list
        // Sorted by offset, non-empty tensors never overlap.
        if (t.nbytes && prev && t.begin < prev->end) __builtin_trap();
        if (t.nbytes) prev = &t;
    }
    g_sink = h;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    return gloas::fuzz::parse_and_touch<gloas::safetensors_file>(data, size, "fuzz.safetensors", touch);
}
