// Fuzz target for the safetensors reader: parse an arbitrary image and touch
// every tensor byte and metadata string it hands out. A gloas::error is the
// expected outcome for a bad image; anything else (a crash, a sanitizer
// report, another exception) is a bug.
#include "decoder/safetensors.h"
#include "base/error.h"

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
        // First and last byte, and a stride through it.
        if (t.nbytes) h += t.data[0] + t.data[t.nbytes - 1];
        for (size_t k = 0; k < t.nbytes; k += 4093) h += t.data[k];
        if (f.find(t.name) != &t) __builtin_trap();  // the index must agree with the list
        // Sorted by offset, non-empty tensors never overlap.
        if (t.nbytes && prev && t.begin < prev->end) __builtin_trap();
        if (t.nbytes) prev = &t;
    }
    g_sink = h;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    try {
        auto f = gloas::safetensors_file::parse(data, size, "fuzz.safetensors");
        touch(*f);
    } catch (const gloas::error &) {
    }
    return 0;
}
