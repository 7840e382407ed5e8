// Error-minimizing quantizers: the same block formats as quant.h, with the
// scale of each block searched for the least squared error instead of taken
// from the largest value. Used for K/V pages, which are quantized once and read
// many times and need no byte-identity with another program; weights keep
// ggml's reference rounding (quant.h).
#pragma once

#include "quant/blocks.h"

#include <cstdint>

namespace gloas {

// Q4_0 blocks (x = d * (q - 8), q in 0..15) with d chosen per block among
// candidates around the reference scale and refined by least squares; never
// worse than quantize_row_q4_0_ref in squared error.
void quantize_row_q4_0_mse(const float * x, block_q4_0 * y, int64_t k);
// Its scalar twin: the same candidates, the errors summed in another order
// (the two may pick different scales only where two candidates' errors tie
// within float rounding).
void quantize_row_q4_0_mse_scalar(const float * x, block_q4_0 * y, int64_t k);

} // namespace gloas
