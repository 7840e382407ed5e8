// Quantized block formats, byte-compatible with GGUF / ggml.
// This header is plain C++ with no includes beyond <cstdint> so that both g++
// and nvcc can use it. fp16 fields are stored as uint16_t (IEEE half bits).
#pragma once

#include <cstdint>

namespace gloas {

// ---- legacy formats: blocks of 32 values -------------------------------------

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

constexpr int QK4_1 = 32;
// 20 bytes: x[i] = d * q[i] + m, q in 0..15
struct block_q4_1 {
    uint16_t d;              // scale, fp16
    uint16_t m;              // minimum (offset), fp16
    uint8_t  qs[QK4_1 / 2];  // low nibbles: values 0..15, high nibbles: values 16..31
};
static_assert(sizeof(block_q4_1) == 4 + QK4_1 / 2, "block_q4_1 must be 20 bytes");

constexpr int QK5_0 = 32;
// 22 bytes: x[i] = d * (q[i] - 16), q in 0..31
struct block_q5_0 {
    uint16_t d;              // scale, fp16
    uint8_t  qh[4];          // bit i of the little-endian u32: bit 4 of q[i]
    uint8_t  qs[QK5_0 / 2];  // low 4 bits: low nibbles values 0..15, high nibbles 16..31
};
static_assert(sizeof(block_q5_0) == 2 + 4 + QK5_0 / 2, "block_q5_0 must be 22 bytes");

constexpr int QK5_1 = 32;
// 24 bytes: x[i] = d * q[i] + m, q in 0..31
struct block_q5_1 {
    uint16_t d;              // scale, fp16
    uint16_t m;              // minimum (offset), fp16
    uint8_t  qh[4];          // bit i of the little-endian u32: bit 4 of q[i]
    uint8_t  qs[QK5_1 / 2];  // low 4 bits, as block_q5_0
};
static_assert(sizeof(block_q5_1) == 4 + 4 + QK5_1 / 2, "block_q5_1 must be 24 bytes");

constexpr int QK8_1 = 32;
// 36 bytes, the activation type of Q4_1/Q5_1 dot products: x[i] = d * qs[i];
// s = d * sum(qs), fp16, so the weights' offsets cost one multiply per block.
struct block_q8_1 {
    uint16_t d;          // scale, fp16
    uint16_t s;          // d * sum(qs), fp16
    int8_t   qs[QK8_1];  // values
};
static_assert(sizeof(block_q8_1) == 4 + QK8_1, "block_q8_1 must be 36 bytes");

// ---- K-quants: super-blocks of 256 values ------------------------------------
// A super-block holds 16 sub-blocks of 16 or 8 of 32 values, each with its own
// small integer scale (and min) that the fp16 super-block scale multiplies.

constexpr int QK_K = 256;
constexpr int K_SCALE_SIZE = 12;

// 84 bytes, 2.625 bits per value. 16 sub-blocks of 16:
//   x = d * (scales[j] & 0xF) * q - dmin * (scales[j] >> 4),  q in 0..3.
// qs: value 128*h + 32*s + l (h < 2, s < 4, l < 32) is bits 2s..2s+1 of qs[32*h + l].
struct block_q2_K {
    uint8_t  scales[QK_K / 16];  // low nibble: scale, high nibble: min, of sub-block j
    uint8_t  qs[QK_K / 4];       // 2-bit values
    uint16_t d;                  // super-block scale of the scales, fp16
    uint16_t dmin;               // super-block scale of the mins, fp16
};
static_assert(sizeof(block_q2_K) == QK_K / 16 + QK_K / 4 + 4, "block_q2_K must be 84 bytes");

// 110 bytes, 3.4375 bits per value. 16 sub-blocks of 16:
//   x = d * (sc[j] - 32) * (q - 4 * !hbit),  sc 6-bit, q in 0..3.
// qs: as block_q2_K. hmask: bit b of hmask[l] (l < 32) is the high bit of value 32*b + l.
// scales: 12 bytes of 16 6-bit scales: low 4 bits of sc[j] in nibble j (bytes
// 0..7: j < 8 in the low nibbles, j >= 8 in the high ones), high 2 bits of
// sc[j] in bits 2*(j/4)..+1 of byte 8 + j%4.
struct block_q3_K {
    uint8_t  hmask[QK_K / 8];    // high bits
    uint8_t  qs[QK_K / 4];       // low 2 bits
    uint8_t  scales[12];         // 6-bit scales, packed as above
    uint16_t d;                  // super-block scale, fp16
};
static_assert(sizeof(block_q3_K) == QK_K / 8 + QK_K / 4 + 12 + 2, "block_q3_K must be 110 bytes");

// 144 bytes, 4.5 bits per value. 8 sub-blocks of 32:
//   x = d * sc[j] * q - dmin * m[j],  q in 0..15, sc/m 6-bit.
// scales (K_SCALE_SIZE bytes): j < 4: sc = scales[j] & 63, m = scales[j+4] & 63;
// j >= 4: sc = (scales[j+4] & 0xF) | (scales[j-4] >> 6) << 4,
//         m  = (scales[j+4] >> 4)  | (scales[j]   >> 6) << 4.
// qs: 4 groups of 32 bytes; group g holds sub-block 2g in the low nibbles and
// sub-block 2g+1 in the high nibbles.
struct block_q4_K {
    uint16_t d;                      // super-block scale of the scales, fp16
    uint16_t dmin;                   // super-block scale of the mins, fp16
    uint8_t  scales[K_SCALE_SIZE];   // 6-bit scales and mins
    uint8_t  qs[QK_K / 2];           // 4-bit values
};
static_assert(sizeof(block_q4_K) == 4 + K_SCALE_SIZE + QK_K / 2, "block_q4_K must be 144 bytes");

// 176 bytes, 5.5 bits per value. As block_q4_K with q in 0..31: the low 4
// bits in qs as there, bit 4 of value 32*j + l (sub-block j) is bit j of qh[l].
struct block_q5_K {
    uint16_t d;                      // super-block scale of the scales, fp16
    uint16_t dmin;                   // super-block scale of the mins, fp16
    uint8_t  scales[K_SCALE_SIZE];   // 6-bit scales and mins
    uint8_t  qh[QK_K / 8];           // high bits
    uint8_t  qs[QK_K / 2];           // low 4 bits
};
static_assert(sizeof(block_q5_K) == 4 + K_SCALE_SIZE + QK_K / 8 + QK_K / 2, "block_q5_K must be 176 bytes");

// 210 bytes, 6.5625 bits per value. 16 sub-blocks of 16:
//   x = d * scales[j] * (q - 32),  q in 0..63, scales int8.
// Per half h (128 values, ql[64h..], qh[32h..]), for l < 32:
//   value 128h + l      = ql[64h + l]      & 0xF | ((qh[32h + l] >> 0) & 3) << 4
//   value 128h + l + 32 = ql[64h + l + 32] & 0xF | ((qh[32h + l] >> 2) & 3) << 4
//   value 128h + l + 64 = ql[64h + l]      >> 4  | ((qh[32h + l] >> 4) & 3) << 4
//   value 128h + l + 96 = ql[64h + l + 32] >> 4  | ((qh[32h + l] >> 6) & 3) << 4
struct block_q6_K {
    uint8_t  ql[QK_K / 2];       // low 4 bits
    uint8_t  qh[QK_K / 4];       // high 2 bits
    int8_t   scales[QK_K / 16];  // sub-block scales
    uint16_t d;                  // super-block scale, fp16
};
static_assert(sizeof(block_q6_K) == QK_K / 2 + QK_K / 4 + QK_K / 16 + 2, "block_q6_K must be 210 bytes");

// 292 bytes, the activation type of K-quant dot products: x = d * qs;
// bsums[j] = sum of qs[16j .. 16j+15] (for the mins and offsets).
struct block_q8_K {
    float    d;                  // scale, f32
    int8_t   qs[QK_K];           // values
    int16_t  bsums[QK_K / 16];   // sums of groups of 16
};
static_assert(sizeof(block_q8_K) == 4 + QK_K + QK_K / 8, "block_q8_K must be 292 bytes");

} // namespace gloas
