// Matmuls: the decode matvec (quantized weights dequantized in registers) and
// the prefill GEMM through cuBLAS on fp16 operands.
#include "tensor/cuda/kernels.h"

#include "tensor/cuda/cublas-loader.h"

namespace gloas::cuda {

namespace cm = cuda_math;

namespace {

constexpr unsigned THREADS = 256;

__global__ void k_quantize_q8_0(const float * x, int64_t n_blocks, block_q8_0 * y) {
    const int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (b < n_blocks) cm::quantize_block_q8_0(x + b * QK8_0, y[b]);
}

__global__ void k_to_f16(const float * x, int64_t n, uint16_t * y) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) y[i] = cm::float_to_half(x[i]);
}

__global__ void k_weight_to_f16(wtype t, const char * w, size_t row_bytes, int64_t ncols, int64_t n, uint16_t * y) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) y[i] = cm::float_to_half(row_value(t, w + size_t(i / ncols) * row_bytes, i % ncols));
}

// One warp per weight row r; lane l takes blocks l, l + 32, ...; every token's
// sum kept in registers (n_tok <= MATVEC_MAX_TOK).
template <class B>
__global__ void k_matvec_q(const char * w, size_t row_bytes, int64_t nb, int64_t n_out, const block_q8_0 * xq,
                           int n_tok, float * y) {
    const int lane = threadIdx.x & 31;
    const int64_t r = int64_t(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5);
    if (r >= n_out) return;
    const B * row = reinterpret_cast<const B *>(w + size_t(r) * row_bytes);
    float acc[MATVEC_MAX_TOK];
#pragma unroll
    for (int t = 0; t < MATVEC_MAX_TOK; ++t) acc[t] = 0.0f;
    for (int64_t b = lane; b < nb; b += 32) {
        const B wb = row[b];
#pragma unroll
        for (int t = 0; t < MATVEC_MAX_TOK; ++t) {
            if (t >= n_tok) break;
            const block_q8_0 & xb = xq[t * nb + b];
            int sumi;
            if constexpr (sizeof(B) == sizeof(block_q8_0)) sumi = cm::block_dot_q8_0_q8_0(wb, xb);
            else sumi = cm::block_dot_q4_0_q8_0(wb, xb);
            acc[t] += float(sumi) * cm::block_scale(wb.d, xb.d);
        }
    }
#pragma unroll
    for (int t = 0; t < MATVEC_MAX_TOK; ++t) {
        if (t >= n_tok) break;
        const float v = warp_sum(acc[t]);
        if (lane == 0) y[t * n_out + r] = v;
    }
}

template <wtype T>
__global__ void k_matvec_f(const char * w, size_t row_bytes, int64_t n_in, int64_t n_out, const float * x, int n_tok,
                           float * y) {
    const int lane = threadIdx.x & 31;
    const int64_t r = int64_t(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5);
    if (r >= n_out) return;
    const void * row = w + size_t(r) * row_bytes;
    float acc[MATVEC_MAX_TOK];
#pragma unroll
    for (int t = 0; t < MATVEC_MAX_TOK; ++t) acc[t] = 0.0f;
    for (int64_t j = lane; j < n_in; j += 32) {
        const float wv = row_value(T, row, j);
#pragma unroll
        for (int t = 0; t < MATVEC_MAX_TOK; ++t) {
            if (t >= n_tok) break;
            acc[t] += wv * x[t * n_in + j];
        }
    }
#pragma unroll
    for (int t = 0; t < MATVEC_MAX_TOK; ++t) {
        if (t >= n_tok) break;
        const float v = warp_sum(acc[t]);
        if (lane == 0) y[t * n_out + r] = v;
    }
}

const char * cublas_reason(cublasStatus_t st) {
    switch (st) {
        case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
        case CUBLAS_STATUS_ALLOC_FAILED: return "out of device memory";
        case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
        case CUBLAS_STATUS_ARCH_MISMATCH: return "not supported on this GPU";
        case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
        case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
        default: return "error";
    }
}

void cublas_try(cublasStatus_t st, const char * what) {
    if (st != CUBLAS_STATUS_SUCCESS) throw error(format("CUDA: cuBLAS %s: %s (status %d)", what, cublas_reason(st), int(st)));
}

} // namespace

void quantize_q8_0(cudaStream_t s, const float * x, int64_t n_tok, int64_t n_in, block_q8_0 * y) {
    const int64_t nb = n_tok * (n_in / QK8_0);
    if (nb <= 0) return;
    k_quantize_q8_0<<<unsigned((nb + 127) / 128), 128, 0, s>>>(x, nb, y);
    GLOAS_CUDA_LAUNCHED();
}

void to_f16(cudaStream_t s, const float * x, int64_t n, uint16_t * y) {
    if (n <= 0) return;
    k_to_f16<<<unsigned((n + THREADS - 1) / THREADS), THREADS, 0, s>>>(x, n, y);
    GLOAS_CUDA_LAUNCHED();
}

void weight_to_f16(cudaStream_t s, wtype t, const void * w, size_t row_bytes, int64_t ncols, int64_t n_rows, uint16_t * y) {
    const int64_t n = ncols * n_rows;
    if (n <= 0) return;
    k_weight_to_f16<<<unsigned((n + THREADS - 1) / THREADS), THREADS, 0, s>>>(t, static_cast<const char *>(w), row_bytes,
                                                                              ncols, n, y);
    GLOAS_CUDA_LAUNCHED();
}

void matvec(cudaStream_t s, wtype t, const void * w, size_t row_bytes, int64_t n_in, int64_t n_out, const float * x,
            const block_q8_0 * xq, int64_t n_tok, float * y) {
    GLOAS_ASSERT(n_tok >= 1 && n_tok <= MATVEC_MAX_TOK);
    const unsigned rows_per_block = THREADS / 32;
    const unsigned grid = unsigned((n_out + rows_per_block - 1) / rows_per_block);
    const char * wc = static_cast<const char *>(w);
    const int nt = int(n_tok);
    switch (t) {
        case wtype::Q8_0: k_matvec_q<block_q8_0><<<grid, THREADS, 0, s>>>(wc, row_bytes, n_in / QK8_0, n_out, xq, nt, y); break;
        case wtype::Q4_0: k_matvec_q<block_q4_0><<<grid, THREADS, 0, s>>>(wc, row_bytes, n_in / QK4_0, n_out, xq, nt, y); break;
        case wtype::F32: k_matvec_f<wtype::F32><<<grid, THREADS, 0, s>>>(wc, row_bytes, n_in, n_out, x, nt, y); break;
        case wtype::F16: k_matvec_f<wtype::F16><<<grid, THREADS, 0, s>>>(wc, row_bytes, n_in, n_out, x, nt, y); break;
        case wtype::BF16: k_matvec_f<wtype::BF16><<<grid, THREADS, 0, s>>>(wc, row_bytes, n_in, n_out, x, nt, y); break;
        case wtype::Q4_1: k_matvec_f<wtype::Q4_1><<<grid, THREADS, 0, s>>>(wc, row_bytes, n_in, n_out, x, nt, y); break;
        case wtype::Q5_0: k_matvec_f<wtype::Q5_0><<<grid, THREADS, 0, s>>>(wc, row_bytes, n_in, n_out, x, nt, y); break;
        case wtype::Q5_1: k_matvec_f<wtype::Q5_1><<<grid, THREADS, 0, s>>>(wc, row_bytes, n_in, n_out, x, nt, y); break;
        case wtype::Q2_K: k_matvec_f<wtype::Q2_K><<<grid, THREADS, 0, s>>>(wc, row_bytes, n_in, n_out, x, nt, y); break;
        case wtype::Q3_K: k_matvec_f<wtype::Q3_K><<<grid, THREADS, 0, s>>>(wc, row_bytes, n_in, n_out, x, nt, y); break;
        case wtype::Q4_K: k_matvec_f<wtype::Q4_K><<<grid, THREADS, 0, s>>>(wc, row_bytes, n_in, n_out, x, nt, y); break;
        case wtype::Q5_K: k_matvec_f<wtype::Q5_K><<<grid, THREADS, 0, s>>>(wc, row_bytes, n_in, n_out, x, nt, y); break;
        case wtype::Q6_K: k_matvec_f<wtype::Q6_K><<<grid, THREADS, 0, s>>>(wc, row_bytes, n_in, n_out, x, nt, y); break;
    }
    GLOAS_CUDA_LAUNCHED();
}

// Row-major y (n_tok, n_out) = x (n_tok, n_in) · w (n_out, n_in)^T is, in
// cuBLAS's column-major terms, C (n_out, n_tok) = A^T B with A = w seen as
// (n_in, n_out) and B = x seen as (n_in, n_tok).
void gemm_f16(cublasHandle_t h, const uint16_t * w16, int64_t n_in, int64_t n_out, const uint16_t * x16, int64_t n_tok,
              float * y) {
    const float one = 1.0f, zero = 0.0f;
    cublas_try(cublas().gemm_ex(h, CUBLAS_OP_T, CUBLAS_OP_N, int(n_out), int(n_tok), int(n_in), &one, w16, CUDA_R_16F,
                            int(n_in), x16, CUDA_R_16F, int(n_in), &zero, y, CUDA_R_32F, int(n_out),
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx");
}

void gemm_f32(cublasHandle_t h, const float * w, int64_t n_in, int64_t n_out, const float * x, int64_t n_tok, float * y) {
    const float one = 1.0f, zero = 0.0f;
    cublas_try(cublas().sgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, int(n_out), int(n_tok), int(n_in), &one, w, int(n_in), x,
                           int(n_in), &zero, y, int(n_out)),
               "cublasSgemm");
}

} // namespace gloas::cuda
