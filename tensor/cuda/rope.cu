// rope: one thread per rotated pair of a head of a token.
#include "tensor/cuda/kernels.h"

namespace gloas::cuda {

namespace {

// Grid: (pairs of a token's heads, tokens). y rotated in place (the caller
// copies x into y first when they differ).
__global__ void k_rope(float * y, int64_t n_head, int64_t head_dim, int64_t n_rot, const int32_t * pos, bool neox,
                       float freq_base, float freq_scale, const float * factors) {
    const int64_t half = n_rot / 2;
    const int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (k >= n_head * half) return;
    const int64_t t = blockIdx.y, h = k / half, i = k % half;
    float * yh = y + (t * n_head + h) * head_dim;
    const double theta =
        cuda_math::rope_theta(i, n_rot, pos[t], freq_base, freq_scale, factors ? factors[i] : 1.0f);
    cuda_math::rope_rotate(neox ? yh[i] : yh[2 * i], neox ? yh[i + half] : yh[2 * i + 1], theta);
}

} // namespace

void rope(cudaStream_t s, float * y, const float * x, int64_t n_tok, int64_t n_head, int64_t head_dim, int64_t n_rot,
          const int32_t * pos, const ops::rope_params & p) {
    if (n_tok <= 0) return;
    if (y != x) GLOAS_CUDA_TRY(cudaMemcpyAsync(y, x, size_t(n_tok * n_head * head_dim) * sizeof(float),
                                               cudaMemcpyDeviceToDevice, s));
    const int64_t pairs = n_head * (n_rot / 2);
    if (pairs == 0) return;
    const dim3 grid(unsigned((pairs + 127) / 128), unsigned(n_tok));
    k_rope<<<grid, 128, 0, s>>>(y, n_head, head_dim, n_rot, pos, p.style == ops::rope_style::NEOX, p.freq_base,
                                p.freq_scale, p.factors);
    GLOAS_CUDA_LAUNCHED();
}

} // namespace gloas::cuda
