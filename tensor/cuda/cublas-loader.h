// cuBLAS, loaded when the first CUDA backend is made (dlopen of
// libcublas.so.<major>), not linked: a process that never uses the GPU does
// not map cuBLAS's libraries (over half a GiB) at start.
#pragma once

#include <cublas_v2.h>

namespace gloas::cuda {

// The cuBLAS functions the backend calls.
struct cublas_api {
    cublasStatus_t (*create)(cublasHandle_t *);
    cublasStatus_t (*destroy)(cublasHandle_t);
    cublasStatus_t (*set_stream)(cublasHandle_t, cudaStream_t);
    cublasStatus_t (*set_math_mode)(cublasHandle_t, cublasMath_t);
    cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void *,
                              const void *, cudaDataType, int, const void *, cudaDataType, int, const void *, void *,
                              cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
    cublasStatus_t (*sgemm)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const float *,
                            const float *, int, const float *, int, const float *, float *, int);
};

// The loaded functions (the library stays loaded for the process). Throws
// gloas::error naming the library and the loader's reason when it cannot be
// loaded.
const cublas_api & cublas();

} // namespace gloas::cuda
