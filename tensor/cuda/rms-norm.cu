// rmsnorm: one block per row.
#include "tensor/cuda/kernels.h"

namespace gloas::cuda {

namespace {

// y (row) = x / sqrt(mean(x^2) + eps) * g; y may alias x (each value is read
// before it is written, by the same thread).
__global__ void k_rmsnorm(float * y, const float * x, const float * g, int64_t width, float eps) {
    const float * xr = x + blockIdx.x * width;
    float * yr = y + blockIdx.x * width;
    float ss = 0.0f;
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) ss += xr[j] * xr[j];
    ss = block_sum(ss);
    const float r = 1.0f / sqrtf(ss / float(width) + eps);
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) yr[j] = xr[j] * r * g[j];
}

} // namespace

void rmsnorm(cudaStream_t s, float * y, const float * x, const float * g, int64_t n_rows, int64_t width, float eps) {
    if (n_rows <= 0) return;
    const unsigned threads = width >= 1024 ? 512 : width >= 256 ? 256 : 64;
    k_rmsnorm<<<unsigned(n_rows), threads, 0, s>>>(y, x, g, width, eps);
    GLOAS_CUDA_LAUNCHED();
}

} // namespace gloas::cuda
