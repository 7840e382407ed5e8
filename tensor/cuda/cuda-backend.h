// The CUDA backend: the backend interface (tensor/backend.h) on an NVIDIA GPU.
//
// Weights are copied to device memory once (`weight`), activations live in
// device buffers, and every op is a kernel queued on the backend's one stream
// (tensor/cuda/kernels.h states each kernel's error bound against the CPU
// reference). Decode matmuls (at most cuda::MATVEC_MAX_TOK tokens) dequantize
// the weights in registers; larger chunks run cuBLAS on fp16 operands
// (libcublas is loaded when the first backend is made: cublas-loader.h). It
// reads F32, F16, BF16, Q8_0 and Q4_0 weights; a model with other types is
// refused at `weight` (a gloas::error), and the context then runs on the CPU.
// Its memory is not host memory (host_addressable is false): the forward pass
// stages K, V and Q through the host for each sequence's kv_cache, so
// attention and the K/V pages stay on the CPU. Profiling counts nothing
// (the ops are asynchronous).
//
// Without a usable device, or in a build without CUDA (GLOAS_CUDA=OFF, or
// CMake found no CUDA compiler), cuda_usable says why and make_cuda_backend
// throws gloas::error with that reason; nothing aborts.
#pragma once

#include "tensor/backend.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace gloas {

// Whether this build has the CUDA backend.
bool cuda_built();

// Whether CUDA device `device` can run the backend: true, or false with the
// reason in *why (the CUDA runtime's words, e.g. "CUDA driver version is
// insufficient for CUDA runtime version", or that this build has no CUDA).
bool cuda_usable(std::string * why, int device = 0);

// "NAME (N GiB)" of the device, for messages; empty when it is not usable.
std::string cuda_device_name(int device = 0);

// A CUDA backend on `device`. max_tokens: the most rows one matmul takes (a
// context's n_ubatch). Throws gloas::error, with the reason, when the device
// is not usable.
std::unique_ptr<backend> make_cuda_backend(int64_t max_tokens, int device = 0);

// The read bandwidth of `device` in bytes per second: a kernel summing a
// `bytes` buffer, the best of `reps` timed passes after one untimed pass.
// Throws gloas::error without a usable device.
double cuda_read_bandwidth(size_t bytes, int reps, int device = 0);

// Decode attention of one query token on the device (kernels.h's
// cuda::attention_decode), from and to host memory: q (n_head, head_dim),
// k and v (n_kv, kv_stride) of kv_type F32 or F16, out (n_head, head_dim).
// For the tests and kernel benchmarks (it copies everything each call).
// Throws gloas::error without a usable device.
void cuda_attention(const float * q, const void * k, const void * v, type kv_type, int64_t n_kv, int n_head,
                    int n_head_kv, int head_dim, int64_t kv_stride, float scale, float * out);

} // namespace gloas
