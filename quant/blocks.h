// Quantized block formats, byte-compatible with GGUF / ggml.
// This header is plain C++ with no includes beyond <cstdint> so that both g++
// and nvcc can use it.
#pragma once

#include <cstdint>

namespace gloas {

constexpr int QK8_0 = 32;
// 34 bytes: x[i] = d * qs[i]
struct block_q8_0 {
    uint16_t d;          // scale, fp16
    int8_t   qs[QK8_0];  // values
};
static_assert(sizeof(block_q8_0) == 2 + QK8_0, "block_q8_0 must be 34 bytes");

constexpr int QK4_0 = 32;
// 18 bytes: x[i] = d * (q[i] - 8)
struct block_q4_0 {
    uint16_t d;              // scale, fp16
    uint8_t  qs[QK4_0 / 2];  // low nibbles: values 0..15, high nibbles: values 16..31
};
static_assert(sizeof(block_q4_0) == 2 + QK4_0 / 2, "block_q4_0 must be 18 bytes");

} // namespace gloas
