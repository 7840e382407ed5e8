// Fuzz target for the GGUF reader: parse an arbitrary image and touch every
// value and tensor byte the reader hands out (fuzz-common.h's
// parse_and_touch says what is a bug).
#include "decoder/gguf.h"
#include "base/error.h"
#include "fuzz-common.h"

#include <cstddef>
#include <cstdint>

namespace {

volatile uint64_t g_sink;  // keeps the reads below from being optimized away

void touch(const gloas::gguf_file & f) {
    uint64_t h = f.version() + f.alignment() + f.data_offset();
    for (const auto & [key, v] : f.metadata()) {
        h += key.size() + uint64_t(v.type) + v.u + uint64_t(v.i) + uint64_t(v.f == v.f);
        for (char c : v.str) h += uint8_t(c);
        for (size_t k = 0; k < v.arr_bytes; ++k) h += v.arr_data[k];
        for (auto s : v.arr_str)
            for (char c : s) h += uint8_t(c);
        // The typed getters must either answer or throw gloas::error.
        try { h += f.get_u32(key, 0); } catch (const gloas::error &) { h += 1; }
        try { h += uint64_t(f.get_i64(key, 0)); } catch (const gloas::error &) { h += 1; }
        try { h += uint64_t(f.get_f32(key, 0) != 0); } catch (const gloas::error &) { h += 1; }
        try { h += f.get_bool(key, false); } catch (const gloas::error &) { h += 1; }
        try { h += f.get_str(key).size(); } catch (const gloas::error &) { h += 1; }
        try { h += f.get_str_array(key).size(); } catch (const gloas::error &) { h += 1; }
        try { h += f.get_f32_array(key).size(); } catch (const gloas::error &) { h += 1; }
        try { h += f.get_i32_array(key).size(); } catch (const gloas::error &) { h += 1; }
    }
    for (const auto & t : f.tensors()) {
        h += gloas::fuzz::sum_bytes(static_cast<const uint8_t *>(t.data), t.nbytes);
        const gloas::tensor v = t.view();
        h += v.nbytes() == t.nbytes;
        if (f.find_tensor(t.name) != &t) __builtin_trap();  // the index must agree with the list
    }
    g_sink = h;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    return gloas::fuzz::parse_and_touch<gloas::gguf_file>(data, size, "fuzz.gguf", touch);
}
