// The device read probe of gloas-bench --bandwidth on the GPU.
#include "tensor/cuda/cuda-backend.h"

#include "tensor/cuda/common.cuh"

#include <algorithm>

namespace gloas {

namespace {

// Every thread sums float4s of the buffer (grid-stride); one value per block
// is written so the loads cannot be dropped.
__global__ void k_read(const float4 * x, int64_t n, float * out) {
    float s = 0.0f;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const float4 v = x[i];
        s += v.x + v.y + v.z + v.w;
    }
    s = cuda::block_sum(s);
    if (threadIdx.x == 0) out[blockIdx.x] = s;
}

} // namespace

double cuda_read_bandwidth(size_t bytes, int reps, int device) {
    std::string why;
    if (!cuda_usable(&why, device)) throw error(why);
    GLOAS_CUDA_TRY(cudaSetDevice(device));
    int sms = 0;
    GLOAS_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    const int64_t n = int64_t(bytes / sizeof(float4));
    const unsigned blocks = unsigned(std::max(1, sms * 8));
    float4 * x = nullptr;
    float * out = nullptr;
    cudaEvent_t a = nullptr, b = nullptr;
    double best = 0.0;
    try {
        GLOAS_CUDA_TRY(cudaMalloc(&x, size_t(n) * sizeof(float4)));
        GLOAS_CUDA_TRY(cudaMalloc(&out, blocks * sizeof(float)));
        GLOAS_CUDA_TRY(cudaMemset(x, 0, size_t(n) * sizeof(float4)));
        GLOAS_CUDA_TRY(cudaEventCreate(&a));
        GLOAS_CUDA_TRY(cudaEventCreate(&b));
        for (int r = 0; r <= std::max(1, reps); ++r) {
            GLOAS_CUDA_TRY(cudaEventRecord(a));
            k_read<<<blocks, 512>>>(x, n, out);
            GLOAS_CUDA_LAUNCHED();
            GLOAS_CUDA_TRY(cudaEventRecord(b));
            GLOAS_CUDA_TRY(cudaEventSynchronize(b));
            float ms = 0.0f;
            GLOAS_CUDA_TRY(cudaEventElapsedTime(&ms, a, b));
            if (r > 0 && ms > 0.0f) best = std::max(best, double(n) * sizeof(float4) / (double(ms) * 1e-3));
        }
    } catch (...) {
        cudaFree(x);
        cudaFree(out);
        if (a) cudaEventDestroy(a);
        if (b) cudaEventDestroy(b);
        throw;
    }
    cudaFree(x);
    cudaFree(out);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return best;
}

} // namespace gloas
