// Decode attention over contiguous K/V in device memory, split over the
// positions (flash-decoding): each part is an online softmax, one combine
// step merges the parts in order.
#include "tensor/cuda/kernels.h"

#include "tensor/cuda/cuda-backend.h"

#include <algorithm>
#include <vector>

namespace gloas::cuda {

namespace cm = cuda_math;

namespace {

constexpr int MAX_PER_LANE = ATTENTION_MAX_HEAD_DIM / 32;

template <bool F16>
__device__ __forceinline__ float kv_value(const void * p, int64_t i) {
    if constexpr (F16) return cm::half_to_float(static_cast<const uint16_t *>(p)[i]);
    else return static_cast<const float *>(p)[i];
}

// One warp per (query head, part): lane l keeps dims l, l + 32, ... of q and
// of the part's o. part (n_head, n_part, head_dim + 2) = o, then m and l.
template <bool F16>
__global__ void k_attend_part(const float * q, const void * k, const void * v, int64_t n_kv, int64_t per_part,
                              int n_part, int group, int head_dim, int64_t kv_stride, float scale, float * part) {
    const int h = blockIdx.x, j = blockIdx.y, lane = threadIdx.x;
    const int hk = h / group;
    float qr[MAX_PER_LANE], o[MAX_PER_LANE];
#pragma unroll
    for (int e = 0; e < MAX_PER_LANE; ++e) {
        const int d = lane + 32 * e;
        qr[e] = d < head_dim ? q[h * head_dim + d] : 0.0f;
        o[e] = 0.0f;
    }
    cm::softmax_part st{-INFINITY, 0.0f};
    const int64_t t0 = int64_t(j) * per_part, t1 = t0 + per_part < n_kv ? t0 + per_part : n_kv;
    for (int64_t t = t0; t < t1; ++t) {
        const int64_t row = t * kv_stride + int64_t(hk) * head_dim;
        float s = 0.0f;
#pragma unroll
        for (int e = 0; e < MAX_PER_LANE; ++e) {
            const int d = lane + 32 * e;
            if (d < head_dim) s += qr[e] * kv_value<F16>(k, row + d);
        }
        s = warp_sum(s) * scale;
        float p;
        const float f = cm::softmax_push(st, s, p);
#pragma unroll
        for (int e = 0; e < MAX_PER_LANE; ++e) {
            const int d = lane + 32 * e;
            if (d < head_dim) o[e] = o[e] * f + p * kv_value<F16>(v, row + d);
        }
    }
    float * out = part + (int64_t(h) * n_part + j) * (head_dim + 2);
#pragma unroll
    for (int e = 0; e < MAX_PER_LANE; ++e) {
        const int d = lane + 32 * e;
        if (d < head_dim) out[d] = o[e];
    }
    if (lane == 0) {
        out[head_dim] = st.m;
        out[head_dim + 1] = st.l;
    }
}

// One warp per query head: the parts merged in order, then out = o / l.
__global__ void k_attend_combine(const float * part, int n_part, int head_dim, float * out) {
    const int h = blockIdx.x, lane = threadIdx.x;
    float o[MAX_PER_LANE];
#pragma unroll
    for (int e = 0; e < MAX_PER_LANE; ++e) o[e] = 0.0f;
    cm::softmax_part st{-INFINITY, 0.0f};
    for (int j = 0; j < n_part; ++j) {
        const float * pj = part + (int64_t(h) * n_part + j) * (head_dim + 2);
        float fa, fb;
        st = cm::softmax_merge(st, {pj[head_dim], pj[head_dim + 1]}, fa, fb);
#pragma unroll
        for (int e = 0; e < MAX_PER_LANE; ++e) {
            const int d = lane + 32 * e;
            if (d < head_dim) o[e] = o[e] * fa + pj[d] * fb;
        }
    }
#pragma unroll
    for (int e = 0; e < MAX_PER_LANE; ++e) {
        const int d = lane + 32 * e;
        if (d < head_dim) out[h * head_dim + d] = st.l > 0.0f ? o[e] / st.l : 0.0f;
    }
}

} // namespace

int attention_parts(int64_t n_kv) { return int(std::clamp<int64_t>((n_kv + 255) / 256, 1, 64)); }

void attention_decode(cudaStream_t s, const float * q, const void * k, const void * v, bool f16, int64_t n_kv, int n_head,
                      int n_head_kv, int head_dim, int64_t kv_stride, float scale, float * part, float * out) {
    GLOAS_ASSERT(head_dim <= ATTENTION_MAX_HEAD_DIM && n_head % n_head_kv == 0 && n_kv >= 1);
    const int n_part = attention_parts(n_kv);
    const int64_t per_part = (n_kv + n_part - 1) / n_part;
    const dim3 grid{unsigned(n_head), unsigned(n_part)};
    const int group = n_head / n_head_kv;
    if (f16) k_attend_part<true><<<grid, 32, 0, s>>>(q, k, v, n_kv, per_part, n_part, group, head_dim, kv_stride, scale, part);
    else k_attend_part<false><<<grid, 32, 0, s>>>(q, k, v, n_kv, per_part, n_part, group, head_dim, kv_stride, scale, part);
    GLOAS_CUDA_LAUNCHED();
    k_attend_combine<<<unsigned(n_head), 32, 0, s>>>(part, n_part, head_dim, out);
    GLOAS_CUDA_LAUNCHED();
}

} // namespace gloas::cuda

namespace gloas {

void cuda_attention(const float * q, const void * k, const void * v, type kv_type, int64_t n_kv, int n_head,
                    int n_head_kv, int head_dim, int64_t kv_stride, float scale, float * out) {
    std::string why;
    if (!cuda_usable(&why)) throw error(why);
    if (kv_type != type::F32 && kv_type != type::F16)
        throw error(format("cuda_attention: K/V type %s, expected f32 or f16", type_name(kv_type)));
    const size_t qb = size_t(n_head) * size_t(head_dim) * sizeof(float);
    const size_t kvb = size_t(n_kv) * size_t(kv_stride) * (kv_type == type::F16 ? 2 : 4);
    const size_t pb = size_t(n_head) * size_t(cuda::attention_parts(n_kv)) * size_t(head_dim + 2) * sizeof(float);
    std::vector<void *> mem;
    auto dev = [&](size_t bytes) {
        void * p = nullptr;
        GLOAS_CUDA_TRY(cudaMalloc(&p, bytes));
        mem.push_back(p);
        return p;
    };
    try {
        float * dq = static_cast<float *>(dev(qb));
        void * dk = dev(kvb);
        void * dv = dev(kvb);
        float * dp = static_cast<float *>(dev(pb));
        float * dout = static_cast<float *>(dev(qb));
        GLOAS_CUDA_TRY(cudaMemcpy(dq, q, qb, cudaMemcpyHostToDevice));
        GLOAS_CUDA_TRY(cudaMemcpy(dk, k, kvb, cudaMemcpyHostToDevice));
        GLOAS_CUDA_TRY(cudaMemcpy(dv, v, kvb, cudaMemcpyHostToDevice));
        cuda::attention_decode(nullptr, dq, dk, dv, kv_type == type::F16, n_kv, n_head, n_head_kv, head_dim, kv_stride,
                               scale, dp, dout);
        GLOAS_CUDA_TRY(cudaMemcpy(out, dout, qb, cudaMemcpyDeviceToHost));
    } catch (...) {
        for (void * p : mem) cudaFree(p);
        throw;
    }
    for (void * p : mem) cudaFree(p);
}

} // namespace gloas
