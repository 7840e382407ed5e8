// The elementwise ops: add, bias, silu_mul, gelu_mul, scale, softcap.
#include "tensor/cuda/kernels.h"

namespace gloas::cuda {

namespace {

constexpr unsigned THREADS = 256;
unsigned blocks(int64_t n) { return unsigned((n + THREADS - 1) / THREADS); }

__global__ void k_add(float * y, const float * x, int64_t n) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) y[i] += x[i];
}
__global__ void k_bias(float * y, const float * b, int64_t n, int64_t width) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) y[i] += b[i % width];
}
__global__ void k_silu_mul(float * y, const float * g, const float * u, int64_t n) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) y[i] = cuda_math::silu(g[i]) * u[i];
}
__global__ void k_gelu_mul(float * y, const float * g, const float * u, int64_t n) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) y[i] = cuda_math::gelu_tanh(g[i]) * u[i];
}
__global__ void k_scale(float * y, int64_t n, int64_t width, int64_t n_scaled, float v) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n && i % width < n_scaled) y[i] *= v;
}
__global__ void k_softcap(float * y, int64_t n, float cap) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) y[i] = cap * tanhf(y[i] / cap);
}

} // namespace

void add(cudaStream_t s, float * y, const float * x, int64_t n) {
    if (n <= 0) return;
    k_add<<<blocks(n), THREADS, 0, s>>>(y, x, n);
    GLOAS_CUDA_LAUNCHED();
}
void bias(cudaStream_t s, float * y, const float * b, int64_t n_rows, int64_t width) {
    const int64_t n = n_rows * width;
    if (n <= 0) return;
    k_bias<<<blocks(n), THREADS, 0, s>>>(y, b, n, width);
    GLOAS_CUDA_LAUNCHED();
}
void silu_mul(cudaStream_t s, float * y, const float * g, const float * u, int64_t n) {
    if (n <= 0) return;
    k_silu_mul<<<blocks(n), THREADS, 0, s>>>(y, g, u, n);
    GLOAS_CUDA_LAUNCHED();
}
void gelu_mul(cudaStream_t s, float * y, const float * g, const float * u, int64_t n) {
    if (n <= 0) return;
    k_gelu_mul<<<blocks(n), THREADS, 0, s>>>(y, g, u, n);
    GLOAS_CUDA_LAUNCHED();
}
void scale(cudaStream_t s, float * y, int64_t n_rows, int64_t width, int64_t n_scaled, float v) {
    const int64_t n = n_rows * width;
    if (n <= 0 || n_scaled <= 0) return;
    k_scale<<<blocks(n), THREADS, 0, s>>>(y, n, width, n_scaled, v);
    GLOAS_CUDA_LAUNCHED();
}
void softcap(cudaStream_t s, float * y, int64_t n, float cap) {
    if (n <= 0) return;
    k_softcap<<<blocks(n), THREADS, 0, s>>>(y, n, cap);
    GLOAS_CUDA_LAUNCHED();
}

} // namespace gloas::cuda
