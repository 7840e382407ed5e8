// The AVX2 tile formats of F32, F16 and BF16 weights (tensor/matmul-impl.h).
#include "tensor/matmul-impl.h"

namespace gloas::ops::mm {
GLOAS_ISA_BEGIN

#if defined(GLOAS_MATMUL_AVX2)
const tile_format * avx2_float_format(type) { return nullptr; }
#endif

GLOAS_ISA_END
} // namespace gloas::ops::mm
