// IEEE half and bfloat16 conversions, stored as uint16_t.
// Rounding is round-to-nearest-even, as ggml's reference and F16C do, so a
// value we convert is bit-identical to one llama.cpp converts.
#pragma once

#include <cstdint>
#include <cstring>

namespace gloas {

inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float    f32_from_bits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// fp16 <-> fp32, exact for every fp16 (denormals, inf, nan included).
float    fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);

// bf16 is the top half of an fp32; rounding to nearest even, NaN kept quiet.
inline float bf16_to_fp32(uint16_t h) { return f32_from_bits(uint32_t(h) << 16); }
inline uint16_t fp32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffff) > 0x7f800000) return uint16_t((u >> 16) | 64);  // quiet NaN
    return uint16_t((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

// Row conversions (SIMD where available; scalar loops otherwise).
void fp16_to_fp32_row(const uint16_t * x, float * y, int64_t n);
void fp32_to_fp16_row(const float * x, uint16_t * y, int64_t n);
void bf16_to_fp32_row(const uint16_t * x, float * y, int64_t n);
void fp32_to_bf16_row(const float * x, uint16_t * y, int64_t n);

} // namespace gloas
