// The AVX2 tile formats of Q4_K, Q5_K and Q6_K weights (tensor/matmul-impl.h).
#include "tensor/matmul-impl.h"

namespace gloas::ops::mm {
GLOAS_ISA_BEGIN

#if defined(GLOAS_MATMUL_AVX2)
const tile_format * avx2_k_format(type) { return nullptr; }
#endif

GLOAS_ISA_END
} // namespace gloas::ops::mm
