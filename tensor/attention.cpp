// Attention of one query token over f32 K/V rows, all heads.
#include "tensor/ops.h"

#include "quant/quant.h"
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

constexpr int KB = 64;  // keys per block of the online softmax: 4 score vectors

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
// NC > 0: head_dim == 16*NC (loops unrolled, no masks); NC == 0: any head_dim
// up to 256.
template <int NC>
void attend_group(float * out, const float * q, const float * k, const float * v, int64_t n_kv,
                  int64_t h0, int64_t h1, int64_t hk, int64_t head_dim, int64_t kv_stride, float scale) {
    constexpr int NCMAX = NC > 0 ? NC : 16;
    const int64_t nc = NC > 0 ? NC : (head_dim + 15) / 16;  // 16-float chunks per head
    GLOAS_ASSERT(nc <= NCMAX);
    __mmask16 cm[NCMAX];                                      // lanes of each chunk inside head_dim
    for (int c = 0; c < NCMAX; ++c) cm[c] = NC > 0 ? __mmask16(0xffff) : simd::tail_mask(std::max<int64_t>(0, head_dim - c * 16));
    const int64_t ng = h1 - h0;
    thread_local std::vector<float> buf;
    buf.resize(size_t(ng * nc * 16 * 2 + KB + 2 * ng) + 16);
    float * qs = reinterpret_cast<float *>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t(63));  // (ng, nc*16) scaled q
    float * os = qs + ng * nc * 16;                 // (ng, nc*16) unnormalized output
    float * pb = os + ng * nc * 16;                 // (KB) probabilities of a block, by key
    float * m = pb + KB;                            // (ng) running max of the scores
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
        for (int64_t g = 0; g < ng; ++g) {
            const float * qg = qs + g * nc * 16;
            // scores of the block by key, in 16-key vectors; -inf past the end
            __m512 sc[KB / 16];
            __m512 mx = _mm512_set1_ps(-INFINITY);
            for (int sb = 0; sb < KB / 16; ++sb) {
                const int n16 = std::max(0, std::min(16, nk - 16 * sb));
                __m512 acc[16];
                for (int j = 0; j < 16; ++j) acc[j] = _mm512_setzero_ps();
                for (int j = 0; j < n16; ++j) {
                    const float * kj = kh + (t0 + 16 * sb + j) * kv_stride;
                    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
                    #pragma GCC unroll 8
                    for (int c = 0; c + 1 < nc; c += 2) {
                        a0 = _mm512_fmadd_ps(_mm512_load_ps(qg + c * 16), _mm512_maskz_loadu_ps(cm[c], kj + c * 16), a0);
                        a1 = _mm512_fmadd_ps(_mm512_load_ps(qg + c * 16 + 16), _mm512_maskz_loadu_ps(cm[c + 1], kj + c * 16 + 16), a1);
                    }
                    if (nc & 1) a0 = _mm512_fmadd_ps(_mm512_load_ps(qg + (nc - 1) * 16), _mm512_maskz_loadu_ps(cm[nc - 1], kj + (nc - 1) * 16), a0);
                    acc[j] = _mm512_add_ps(a0, a1);
                }
                sc[sb] = _mm512_mask_permutexvar_ps(_mm512_set1_ps(-INFINITY), simd::tail_mask(n16), lane_of_key, reduce16(acc));
                mx = _mm512_max_ps(mx, sc[sb]);
            }
            const float m_new = std::fmax(m[g], _mm512_reduce_max_ps(mx));
            const float corr = std::exp(m[g] - m_new);  // 0 on the first block (m = -inf)
            __m512 ls = _mm512_setzero_ps();
            for (int sb = 0; sb < KB / 16; ++sb) {
                const __mmask16 valid = simd::tail_mask(std::max(0, std::min(16, nk - 16 * sb)));
                const __m512 p = _mm512_maskz_mov_ps(valid, simd::exp_ps(_mm512_sub_ps(sc[sb], _mm512_set1_ps(m_new))));
                ls = _mm512_add_ps(ls, p);
                _mm512_store_ps(pb + 16 * sb, p);
            }
            l[g] = l[g] * corr + _mm512_reduce_add_ps(ls);
            m[g] = m_new;
            // o = o*corr + sum_j p_j v_j: one chain per chunk and key parity
            float * og = os + g * nc * 16;
            const __m512 vc = _mm512_set1_ps(corr);
            __m512 o0[NCMAX], o1[NCMAX];
            #pragma GCC unroll 8
            for (int c = 0; c < nc; ++c) {
                o0[c] = _mm512_mul_ps(_mm512_load_ps(og + c * 16), vc);
                o1[c] = _mm512_setzero_ps();
            }
            const float * vb = vh + t0 * kv_stride;
            int j = 0;
            for (; j + 2 <= nk; j += 2) {
                const __m512 p0 = _mm512_set1_ps(pb[j]), p1 = _mm512_set1_ps(pb[j + 1]);
                #pragma GCC unroll 8
                for (int c = 0; c < nc; ++c) {
                    o0[c] = _mm512_fmadd_ps(p0, _mm512_maskz_loadu_ps(cm[c], vb + j * kv_stride + c * 16), o0[c]);
                    o1[c] = _mm512_fmadd_ps(p1, _mm512_maskz_loadu_ps(cm[c], vb + (j + 1) * kv_stride + c * 16), o1[c]);
                }
            }
            if (j < nk) {
                const __m512 p0 = _mm512_set1_ps(pb[j]);
                #pragma GCC unroll 8
                for (int c = 0; c < nc; ++c) o0[c] = _mm512_fmadd_ps(p0, _mm512_maskz_loadu_ps(cm[c], vb + j * kv_stride + c * 16), o0[c]);
            }
            #pragma GCC unroll 8
            for (int c = 0; c < nc; ++c) _mm512_store_ps(og + c * 16, _mm512_add_ps(o0[c], o1[c]));
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
    if (head_dim > 256) {  // beyond the kernel's register arrays: rare, use the reference
        attention_f32_ref(out, q, k, v, n_kv, n_head, n_head_kv, head_dim, kv_stride, scale);
        return;
    }
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
        if (h0 >= h1) continue;
        switch (head_dim) {
        case 64:  attend_group<4>(out, q, k, v, n_kv, h0, h1, hk, head_dim, kv_stride, scale); break;
        case 128: attend_group<8>(out, q, k, v, n_kv, h0, h1, hk, head_dim, kv_stride, scale); break;
        case 32:  attend_group<2>(out, q, k, v, n_kv, h0, h1, hk, head_dim, kv_stride, scale); break;
        case 48:  attend_group<3>(out, q, k, v, n_kv, h0, h1, hk, head_dim, kv_stride, scale); break;
        case 80:  attend_group<5>(out, q, k, v, n_kv, h0, h1, hk, head_dim, kv_stride, scale); break;
        case 96:  attend_group<6>(out, q, k, v, n_kv, h0, h1, hk, head_dim, kv_stride, scale); break;
        default:  attend_group<0>(out, q, k, v, n_kv, h0, h1, hk, head_dim, kv_stride, scale); break;
        }
    }
#else
    // two passes per head: scores (vec_dot_f32, SIMD where the build has it),
    // softmax, then out = sum_t p_t v_t (a loop the compiler vectorizes)
    GLOAS_ASSERT(n_head_kv > 0 && n_head % n_head_kv == 0);
    const int64_t group = n_head / n_head_kv;
    thread_local std::vector<float> att;
    att.resize(size_t(n_kv > 0 ? n_kv : 1));
    for (int64_t h = 0; h < n_head; ++h) {
        const float * qh = q + h * head_dim;
        const int64_t off = (h / group) * head_dim;
        for (int64_t t = 0; t < n_kv; ++t) att[size_t(t)] = vec_dot_f32(head_dim, k + t * kv_stride + off, qh) * scale;
        softmax(att.data(), n_kv);
        float * oh = out + h * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) oh[d] = 0.0f;
        for (int64_t t = 0; t < n_kv; ++t) {
            const float p = att[size_t(t)];
            const float * vt = v + t * kv_stride + off;
            for (int64_t d = 0; d < head_dim; ++d) oh[d] += p * vt[d];
        }
    }
#endif
}

} // namespace gloas::ops
