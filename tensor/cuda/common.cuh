// What the CUDA kernel files share: the error macro, the weight types the
// kernels read, one value of a weight row, and warp / block sums.
#pragma once

#include "tensor/cuda/cuda-math.h"
#include "base/error.h"

#include <cuda_runtime.h>

#include <cstdint>

// Every CUDA runtime call goes through this: a failure throws gloas::error
// naming the call and the runtime's reason (never an abort).
#define GLOAS_CUDA_TRY(call)                                                                              \
    do {                                                                                                  \
        const cudaError_t e_ = (call);                                                                    \
        if (e_ != cudaSuccess) throw ::gloas::error(::gloas::format("CUDA: %s: %s", #call, cudaGetErrorString(e_))); \
    } while (0)
// After a kernel launch: a bad launch (too little memory, a bad geometry) throws.
#define GLOAS_CUDA_LAUNCHED() GLOAS_CUDA_TRY(cudaGetLastError())

namespace gloas::cuda {

// The weight types the kernels read (quant/types.h's, as the kernels see them).
enum class wtype : int32_t { F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K };

// Value j of a weight row of type t.
__device__ __forceinline__ float row_value(wtype t, const void * row, int64_t j) {
    namespace cm = cuda_math;
    switch (t) {
        case wtype::F32: return static_cast<const float *>(row)[j];
        case wtype::F16: return cm::half_to_float(static_cast<const uint16_t *>(row)[j]);
        case wtype::BF16: return cm::bf16_to_float(static_cast<const uint16_t *>(row)[j]);
        case wtype::Q8_0: return cm::q8_0_value(static_cast<const block_q8_0 *>(row)[j / QK8_0], int(j % QK8_0));
        case wtype::Q4_0: return cm::q4_0_value(static_cast<const block_q4_0 *>(row)[j / QK4_0], int(j % QK4_0));
        case wtype::Q4_1: return cm::q4_1_value(static_cast<const block_q4_1 *>(row)[j / QK4_1], int(j % QK4_1));
        case wtype::Q5_0: return cm::q5_0_value(static_cast<const block_q5_0 *>(row)[j / QK5_0], int(j % QK5_0));
        case wtype::Q5_1: return cm::q5_1_value(static_cast<const block_q5_1 *>(row)[j / QK5_1], int(j % QK5_1));
        case wtype::Q2_K: return cm::q2_K_value(static_cast<const block_q2_K *>(row)[j / QK_K], int(j % QK_K));
        case wtype::Q3_K: return cm::q3_K_value(static_cast<const block_q3_K *>(row)[j / QK_K], int(j % QK_K));
        case wtype::Q4_K: return cm::q4_K_value(static_cast<const block_q4_K *>(row)[j / QK_K], int(j % QK_K));
        case wtype::Q5_K: return cm::q5_K_value(static_cast<const block_q5_K *>(row)[j / QK_K], int(j % QK_K));
        case wtype::Q6_K: return cm::q6_K_value(static_cast<const block_q6_K *>(row)[j / QK_K], int(j % QK_K));
    }
    return 0.0f;
}

__device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
__device__ __forceinline__ float warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}
// The sum of x over a block of blockDim.x (a multiple of 32, at most 1024)
// threads, returned to every thread. Uses 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float x) {
    __shared__ float part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    x = warp_sum(x);
    __syncthreads();  // part may still be read by a previous call
    if (lane == 0) part[warp] = x;
    __syncthreads();
    x = lane < n_warps ? part[lane] : 0.0f;
    return warp_sum(x);
}

} // namespace gloas::cuda
