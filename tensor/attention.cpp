// Attention of one query token over f32 K/V rows, all heads.
#include "tensor/ops.h"

#include "quant/simd.h"
#include "tensor/error.h"

#include <algorithm>

#include <cmath>
#include <vector>

namespace gloas::ops {

void attention_f32_ref(float * out, const float * q, const float * k, const float * v,
                       int64_t n_kv, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                       int64_t kv_stride, float scale) {
    GLOAS_ASSERT(n_head_kv > 0 && n_head % n_head_kv == 0);
    const int64_t group = n_head / n_head_kv;
    std::vector<float> att(size_t(n_kv > 0 ? n_kv : 1));
    for (int64_t h = 0; h < n_head; ++h) {
        const float * qh = q + h * head_dim;
        const int64_t off = (h / group) * head_dim;
        for (int64_t t = 0; t < n_kv; ++t) {
            const float * kt = k + t * kv_stride + off;
            double s = 0.0;
            for (int64_t d = 0; d < head_dim; ++d) s += double(qh[d]) * double(kt[d]);
            att[size_t(t)] = float(s) * scale;
        }
        softmax_ref(att.data(), n_kv);
        float * oh = out + h * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) {
            double s = 0.0;
            for (int64_t t = 0; t < n_kv; ++t) s += double(att[size_t(t)]) * double(v[t * kv_stride + off + d]);
            oh[d] = float(s);
        }
    }
}

#if defined(__AVX512F__)
namespace {

constexpr int KB = 16;  // keys per block: one score vector

// Sums each of a[0..15] over its lanes; lane l of the result holds the sum of
// a[key_of_lane[l]] (a fixed permutation, see LANE_KEY), in 45 shuffles/adds
// instead of 16 full reductions.
inline __m512 reduce16(__m512 * a) {
    __m512 b[8], c[4], d[2];
    for (int i = 0; i < 8; ++i)
        b[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    for (int i = 0; i < 4; ++i)
        c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    for (int i = 0; i < 2; ++i)
        d[i] = _mm512_add_ps(_mm512_shuffle_ps(c[2 * i], c[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(c[2 * i], c[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm512_add_ps(_mm512_shuffle_ps(d[0], d[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_ps(d[0], d[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// Which key's sum lands in each lane of reduce16 (found by running it on
// a[j] = j / 16 in every lane, so lane l sums to key(l)).
struct lane_key {
    alignas(64) int32_t key[16];   // key[l]: key summed into lane l
    alignas(64) int32_t lane[16];  // lane[j]: lane holding key j
    lane_key() {
        __m512 a[16];
        for (int j = 0; j < 16; ++j) a[j] = _mm512_set1_ps(float(j) / 16.0f);
        alignas(64) float r[16];
        _mm512_store_ps(r, reduce16(a));
        for (int l = 0; l < 16; ++l) {
            key[l] = int32_t(std::lround(r[l]));
            lane[key[l]] = l;
        }
    }
};
const lane_key LANE_KEY;

// Query heads [h0, h1) of one group, all reading KV head hk: online softmax
// over blocks of KB keys; scores vectorized over keys, q·k and p·v over head_dim.
void attend_group(float * out, const float * q, const float * k, const float * v, int64_t n_kv,
                  int64_t h0, int64_t h1, int64_t hk, int64_t head_dim, int64_t kv_stride, float scale) {
    const int64_t nc = (head_dim + 15) / 16;        // 16-float chunks per head
    const int64_t ng = h1 - h0;
    thread_local std::vector<float> buf;
    buf.resize(size_t(ng * nc * 16 * 2 + 16 + 2 * ng) + 16);
    float * qs = reinterpret_cast<float *>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t(63));  // (ng, nc*16) scaled q
    float * os = qs + ng * nc * 16;                 // (ng, nc*16) unnormalized output
    float * pb = os + ng * nc * 16;                 // (16) probabilities of a block, by key
    float * m = pb + 16;                            // (ng) running max of the scores
    float * l = m + ng;                             // (ng) running sum of exp(score - m)
    for (int64_t g = 0; g < ng; ++g) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
    }
    for (int64_t g = 0; g < ng; ++g) {
        for (int64_t c = 0; c < nc; ++c) {
            const __mmask16 mk = simd::tail_mask(head_dim - c * 16);
            const __m512 qv = _mm512_maskz_loadu_ps(mk, q + (h0 + g) * head_dim + c * 16);
            _mm512_store_ps(qs + (g * nc + c) * 16, _mm512_mul_ps(qv, _mm512_set1_ps(scale)));
            _mm512_store_ps(os + (g * nc + c) * 16, _mm512_setzero_ps());
        }
    }
    const __m512i lane_of_key = _mm512_load_si512(LANE_KEY.lane);
    const float * kh = k + hk * head_dim;
    const float * vh = v + hk * head_dim;
    for (int64_t t0 = 0; t0 < n_kv; t0 += KB) {
        const int nk = int(std::min<int64_t>(KB, n_kv - t0));
        const __mmask16 valid = simd::tail_mask(nk);
        for (int64_t g = 0; g < ng; ++g) {
            const float * qg = qs + g * nc * 16;
            __m512 acc[KB];
            for (int j = 0; j < KB; ++j) acc[j] = _mm512_setzero_ps();
            for (int j = 0; j < nk; ++j) {
                const float * kj = kh + (t0 + j) * kv_stride;
                __m512 a = _mm512_setzero_ps();
                for (int64_t c = 0; c < nc; ++c)
                    a = _mm512_fmadd_ps(_mm512_load_ps(qg + c * 16), _mm512_maskz_loadu_ps(simd::tail_mask(head_dim - c * 16), kj + c * 16), a);
                acc[j] = a;
            }
            // scores by key, -inf past the end
            const __m512 sc = _mm512_mask_permutexvar_ps(_mm512_set1_ps(-INFINITY), valid, lane_of_key, reduce16(acc));
            const float m_new = std::fmax(m[g], _mm512_reduce_max_ps(sc));
            const float corr = std::exp(m[g] - m_new);
            const __m512 p = _mm512_maskz_mov_ps(valid, simd::exp_ps(_mm512_sub_ps(sc, _mm512_set1_ps(m_new))));
            l[g] = l[g] * corr + _mm512_reduce_add_ps(p);
            m[g] = m_new;
            _mm512_store_ps(pb, p);
            float * og = os + g * nc * 16;
            const __m512 vc = _mm512_set1_ps(corr);
            for (int64_t c = 0; c < nc; ++c) {
                const __mmask16 mk = simd::tail_mask(head_dim - c * 16);
                __m512 o = _mm512_mul_ps(_mm512_load_ps(og + c * 16), vc);
                for (int j = 0; j < nk; ++j)
                    o = _mm512_fmadd_ps(_mm512_set1_ps(pb[j]), _mm512_maskz_loadu_ps(mk, vh + (t0 + j) * kv_stride + c * 16), o);
                _mm512_store_ps(og + c * 16, o);
            }
        }
    }
    for (int64_t g = 0; g < ng; ++g) {
        const __m512 inv = _mm512_set1_ps(l[g] > 0.0f ? 1.0f / l[g] : 0.0f);
        for (int64_t c = 0; c < nc; ++c) {
            const __mmask16 mk = simd::tail_mask(head_dim - c * 16);
            _mm512_mask_storeu_ps(out + (h0 + g) * head_dim + c * 16, mk, _mm512_mul_ps(_mm512_load_ps(os + (g * nc + c) * 16), inv));
        }
    }
}

} // namespace
#endif

void attention_f32(float * out, const float * q, const float * k, const float * v,
                   int64_t n_kv, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                   int64_t kv_stride, float scale) {
#if defined(__AVX512F__)
    GLOAS_ASSERT(n_head_kv > 0 && n_head % n_head_kv == 0);
    const int64_t group = n_head / n_head_kv;
    // tasks: each KV head's query heads, split in `split` parts when there are
    // fewer KV heads than threads
    const int nth = n_threads();
    const int64_t split = std::min<int64_t>(group, (nth + n_head_kv - 1) / n_head_kv);
    const int64_t per = (group + split - 1) / split;
    const int64_t n_tasks = n_head_kv * split;
    const bool par = nth > 1 && n_kv * n_head * head_dim >= (1 << 15);
    #pragma omp parallel for num_threads(nth) schedule(static) if (par)
    for (int64_t task = 0; task < n_tasks; ++task) {
        const int64_t hk = task / split, part = task % split;
        const int64_t h0 = hk * group + part * per, h1 = std::min(hk * group + group, h0 + per);
        if (h0 < h1) attend_group(out, q, k, v, n_kv, h0, h1, hk, head_dim, kv_stride, scale);
    }
#else
    attention_f32_ref(out, q, k, v, n_kv, n_head, n_head_kv, head_dim, kv_stride, scale);
#endif
}

} // namespace gloas::ops
