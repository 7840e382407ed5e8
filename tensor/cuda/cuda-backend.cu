// The CUDA backend (cuda-backend.h): memory, weights and the op dispatch to
// the kernels of kernels.h.
#include "tensor/cuda/cuda-backend.h"

#include "tensor/cuda/cublas-loader.h"
#include "tensor/cuda/kernels.h"

#include <algorithm>
#include <vector>

namespace gloas {

namespace {

bool wtype_of(type t, cuda::wtype * w) {
    switch (t) {
        case type::F32: *w = cuda::wtype::F32; return true;
        case type::F16: *w = cuda::wtype::F16; return true;
        case type::BF16: *w = cuda::wtype::BF16; return true;
        case type::Q8_0: *w = cuda::wtype::Q8_0; return true;
        case type::Q4_0: *w = cuda::wtype::Q4_0; return true;
        case type::Q4_1: *w = cuda::wtype::Q4_1; return true;
        case type::Q5_0: *w = cuda::wtype::Q5_0; return true;
        case type::Q5_1: *w = cuda::wtype::Q5_1; return true;
        case type::Q2_K: *w = cuda::wtype::Q2_K; return true;
        case type::Q3_K: *w = cuda::wtype::Q3_K; return true;
        case type::Q4_K: *w = cuda::wtype::Q4_K; return true;
        case type::Q5_K: *w = cuda::wtype::Q5_K; return true;
        case type::Q6_K: *w = cuda::wtype::Q6_K; return true;
        default: return false;
    }
}

cuda::wtype wtype_of(const tensor & w) {
    cuda::wtype t = cuda::wtype::F32;
    GLOAS_ASSERT(wtype_of(w.t, &t));  // `weight` refused every other type
    return t;
}

// Device memory that grows to the largest size asked for (at the first
// prefill chunk and the first decode step; then reused).
class scratch {
public:
    scratch() = default;
    scratch(const scratch &) = delete;
    scratch & operator=(const scratch &) = delete;
    ~scratch() {
        if (p_) cudaFree(p_);
    }
    void * get(size_t bytes) {
        if (bytes <= bytes_) return p_;
        if (p_) GLOAS_CUDA_TRY(cudaFree(p_));
        p_ = nullptr;
        bytes_ = 0;
        GLOAS_CUDA_TRY(cudaMalloc(&p_, bytes));
        bytes_ = bytes;
        return p_;
    }

private:
    void * p_ = nullptr;
    size_t bytes_ = 0;
};

class cuda_backend final : public backend {
public:
    cuda_backend(int64_t max_tokens, int device) : max_tokens_(max_tokens), device_(device) {
        GLOAS_CUDA_TRY(cudaSetDevice(device));
        const cuda::cublas_api & blas = cuda::cublas();
        GLOAS_CUDA_TRY(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
        const cublasStatus_t st = blas.create(&blas_);
        if (st != CUBLAS_STATUS_SUCCESS) {
            cudaStreamDestroy(stream_);
            throw error(format("CUDA: cuBLAS could not start (status %d)", int(st)));
        }
        blas.set_stream(blas_, stream_);
        blas.set_math_mode(blas_, CUBLAS_DEFAULT_MATH);  // no TF32 for the F32 GEMM
        // A kernel of this build must run on the device: a GPU the build has no
        // code for fails here, at creation, not in the middle of a forward pass.
        try {
            float * x = static_cast<float *>(probe_.get(sizeof(float) + sizeof(uint16_t)));
            cuda::to_f16(stream_, x, 1, reinterpret_cast<uint16_t *>(x + 1));
            GLOAS_CUDA_TRY(cudaStreamSynchronize(stream_));
        } catch (...) {
            blas.destroy(blas_);
            cudaStreamDestroy(stream_);
            throw;
        }
    }

    ~cuda_backend() override {
        cudaStreamSynchronize(stream_);
        for (void * p : weights_) cudaFree(p);
        cuda::cublas().destroy(blas_);
        cudaStreamDestroy(stream_);
    }

    const char * name() const override { return "cuda"; }
    bool host_addressable() const override { return false; }

    void upload(void * dst, const void * src, size_t bytes) override {
        if (bytes) GLOAS_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    }
    void to_host(void * dst, const void * src, size_t bytes) override {
        if (bytes) GLOAS_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
        GLOAS_CUDA_TRY(cudaStreamSynchronize(stream_));
    }

    tensor weight(const tensor & host) override {
        if (host.empty()) return host;
        cuda::wtype wt;
        if (!wtype_of(host.t, &wt))
            throw error(format("the CUDA backend cannot read %s weights (it reads f32, f16, bf16, q8_0, q4_0, q4_1, "
                               "q5_0, q5_1 and q2_K to q6_K)",
                               type_name(host.t)));
        if (host.nrows() > 1 && host.nb[1] != host.row_bytes())
            throw error("the CUDA backend reads contiguous weights only");
        const size_t bytes = host.nbytes();
        void * d = nullptr;
        GLOAS_CUDA_TRY(cudaMalloc(&d, bytes));
        weights_.push_back(d);
        // On the ops' stream, so that no op reads the weight before it is there
        // (the stream does not wait for the legacy default stream).
        GLOAS_CUDA_TRY(cudaMemcpyAsync(d, host.data, bytes, cudaMemcpyHostToDevice, stream_));
        tensor t = host;
        t.data = d;
        return t;
    }

    void get_rows(const tensor & w, const int32_t * ids, int64_t n, float * y) override {
        cuda::get_rows(stream_, wtype_of(w), w.data, w.nb[1], w.ne[0], ids, n, y);
    }
    void rmsnorm(float * y, const float * x, const float * g, int64_t n_tok, int64_t width, float eps) override {
        cuda::rmsnorm(stream_, y, x, g, n_tok, width, eps);
    }
    void matmul(const tensor & w, const float * x, int64_t n_tok, float * y) override {
        GLOAS_ASSERT(n_tok <= max_tokens_);
        const cuda::wtype t = wtype_of(w);
        const int64_t n_in = w.ne[0], n_out = w.ne[1];
        const bool blocks = t != cuda::wtype::F32 && t != cuda::wtype::F16 && t != cuda::wtype::BF16;
        const bool q8_act = t == cuda::wtype::Q8_0 || t == cuda::wtype::Q4_0;  // the matvec reads Q8_0 activations
        if (n_tok > cuda::MATVEC_MAX_TOK && t != cuda::wtype::BF16) {
            if (t == cuda::wtype::F32) {
                cuda::gemm_f32(blas_, static_cast<const float *>(w.data), n_in, n_out, x, n_tok, y);
                return;
            }
            const uint16_t * w16 = static_cast<const uint16_t *>(w.data);
            if (blocks) {
                uint16_t * d = static_cast<uint16_t *>(w16_.get(size_t(n_in * n_out) * sizeof(uint16_t)));
                cuda::weight_to_f16(stream_, t, w.data, w.nb[1], n_in, n_out, d);
                w16 = d;
            }
            uint16_t * x16 = static_cast<uint16_t *>(x16_.get(size_t(n_in * n_tok) * sizeof(uint16_t)));
            cuda::to_f16(stream_, x, n_in * n_tok, x16);
            cuda::gemm_f16(blas_, w16, n_in, n_out, x16, n_tok, y);
            return;
        }
        for (int64_t t0 = 0; t0 < n_tok; t0 += cuda::MATVEC_MAX_TOK) {
            const int64_t nt = std::min(cuda::MATVEC_MAX_TOK, n_tok - t0);
            const float * xt = x + t0 * n_in;
            block_q8_0 * xq = nullptr;
            if (q8_act) {
                xq = static_cast<block_q8_0 *>(xq_.get(size_t(nt * (n_in / QK8_0)) * sizeof(block_q8_0)));
                cuda::quantize_q8_0(stream_, xt, nt, n_in, xq);
            }
            cuda::matvec(stream_, t, w.data, w.nb[1], n_in, n_out, xt, xq, nt, y + t0 * n_out);
        }
    }
    void matmul_n(const tensor * const * w, float * const * y, int n, const float * x, int64_t n_tok) override {
        for (int i = 0; i < n; ++i) matmul(*w[i], x, n_tok, y[i]);
    }
    void bias(float * y, const float * b, int64_t n_tok, int64_t width) override {
        cuda::bias(stream_, y, b, n_tok, width);
    }
    void add(float * y, const float * x, int64_t n) override { cuda::add(stream_, y, x, n); }
    void rope(float * y, const float * x, int64_t n_tok, int64_t n_head, int64_t head_dim, int64_t n_rot,
              const int32_t * pos, const ops::rope_params & p) override {
        cuda::rope(stream_, y, x, n_tok, n_head, head_dim, n_rot, pos, p);
    }
    void silu_mul(float * y, const float * g, const float * u, int64_t n) override { cuda::silu_mul(stream_, y, g, u, n); }
    void gelu_mul(float * y, const float * g, const float * u, int64_t n) override { cuda::gelu_mul(stream_, y, g, u, n); }
    void scale(float * y, int64_t n_rows, int64_t width, int64_t n_scaled, float s) override {
        cuda::scale(stream_, y, n_rows, width, n_scaled, s);
    }
    void softcap(float * y, int64_t n, float cap) override { cuda::softcap(stream_, y, n, cap); }

    void set_layer(int32_t) override {}

private:
    void * alloc_bytes(size_t bytes) override {
        void * p = nullptr;
        GLOAS_CUDA_TRY(cudaMalloc(&p, bytes));
        const cudaError_t e = cudaMemsetAsync(p, 0, bytes, stream_);
        if (e != cudaSuccess) {
            cudaFree(p);
            GLOAS_CUDA_TRY(e);
        }
        return p;
    }
    void free_bytes(void * p) override {
        cudaStreamSynchronize(stream_);
        cudaFree(p);
    }
    void begin_group(profile::op) override {}
    void end_group() override {}

    int64_t max_tokens_;
    int device_;
    cudaStream_t stream_ = nullptr;
    cublasHandle_t blas_ = nullptr;
    std::vector<void *> weights_;  // device copies of the weights, freed with the backend
    scratch probe_, xq_, x16_, w16_;  // matmul activations as Q8_0 and fp16; a weight as fp16
};

} // namespace

bool cuda_built() { return true; }

bool cuda_usable(std::string * why, int device) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();  // the error is reported here, not by the next call
        if (why) *why = cudaGetErrorString(e);
        return false;
    }
    if (device < 0 || device >= n) {
        if (why) *why = n == 0 ? "no CUDA device found" : format("CUDA device %d asked for, %d found", device, n);
        return false;
    }
    return true;
}

std::string cuda_device_name(int device) {
    if (!cuda_usable(nullptr, device)) return std::string();
    cudaDeviceProp pr;
    if (cudaGetDeviceProperties(&pr, device) != cudaSuccess) return std::string();
    return format("%s, %.0f GiB, sm_%d%d", pr.name, double(pr.totalGlobalMem) / 1073741824.0, pr.major, pr.minor);
}

std::unique_ptr<backend> make_cuda_backend(int64_t max_tokens, int device) {
    std::string why;
    if (!cuda_usable(&why, device)) throw error(why);
    return std::make_unique<cuda_backend>(max_tokens, device);
}

} // namespace gloas
