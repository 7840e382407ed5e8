// get_rows: token embeddings, one block per row.
#include "tensor/cuda/kernels.h"

namespace gloas::cuda {

namespace {

__global__ void k_get_rows(wtype t, const char * w, size_t row_bytes, int64_t ncols, const int32_t * ids, float * y) {
    const int64_t i = blockIdx.x;
    const void * row = w + size_t(ids[i]) * row_bytes;
    for (int64_t j = threadIdx.x; j < ncols; j += blockDim.x) y[i * ncols + j] = row_value(t, row, j);
}

} // namespace

void get_rows(cudaStream_t s, wtype t, const void * w, size_t row_bytes, int64_t ncols, const int32_t * ids, int64_t n,
              float * y) {
    if (n <= 0) return;
    k_get_rows<<<unsigned(n), 256, 0, s>>>(t, static_cast<const char *>(w), row_bytes, ncols, ids, y);
    GLOAS_CUDA_LAUNCHED();
}

} // namespace gloas::cuda
