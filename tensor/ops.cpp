// Element-wise and row ops: get_row, rmsnorm, rope, softmax, silu_mul, add.
#include "tensor/ops.h"

#include "quant/simd.h"
#include "base/error.h"

#include <cmath>
#include <vector>


namespace gloas::ops {

#if GLOAS_ISA_BASE
void get_row(const tensor & w, int64_t i, float * y) {
    GLOAS_ASSERT(i >= 0 && i < w.nrows());
    traits(w.t).to_float(w.row(i), y, w.ne[0]);
}

void rmsnorm_ref(float * y, const float * x, const float * g, int64_t n, float eps) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += double(x[i]) * double(x[i]);
    const float r = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * r * g[i];
}
#endif

GLOAS_ISA_BEGIN

void rmsnorm(float * y, const float * x, const float * g, int64_t n, float eps) {
#if defined(__AVX512F__)
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
        a0 = _mm512_fmadd_ps(v0, v0, a0);
        a1 = _mm512_fmadd_ps(v1, v1, a1);
    }
    for (; i < n; i += 16) {
        const __m512 v = _mm512_maskz_loadu_ps(simd::tail_mask(n - i), x + i);
        a0 = _mm512_fmadd_ps(v, v, a0);
    }
    const float ss = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    const __m512 r = _mm512_set1_ps(float(1.0 / std::sqrt(double(ss) / double(n) + double(eps))));
    for (i = 0; i < n; i += 16) {
        const __mmask16 m = simd::tail_mask(n - i);
        const __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), r), _mm512_maskz_loadu_ps(m, g + i));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
#elif defined(__AVX2__) && defined(__FMA__)
    __m256 a0 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        a0 = _mm256_fmadd_ps(v, v, a0);
    }
    float ss = simd::hsum256(a0);
    for (; i < n; ++i) ss += x[i] * x[i];
    const float r = float(1.0 / std::sqrt(double(ss) / double(n) + double(eps)));
    const __m256 vr = _mm256_set1_ps(r);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vr), _mm256_loadu_ps(g + i)));
    for (; i < n; ++i) y[i] = x[i] * r * g[i];
#else
    rmsnorm_ref(y, x, g, n, eps);
#endif
}

GLOAS_ISA_END

#if GLOAS_ISA_BASE
const char * rope_style_name(rope_style s) {
    switch (s) {
        case rope_style::NORM: return "norm";
        case rope_style::NEOX: return "neox";
    }
    return "unknown";
}
#endif

namespace {

// Angle of pair i at `pos` (ops.h), in double.
double rope_theta(int64_t i, int64_t n_rot, int64_t pos, const rope_params & p) {
    double theta = double(pos) * std::pow(double(p.freq_base), -2.0 * double(i) / double(n_rot));
    if (p.freq_scale != 1.0f) theta *= double(p.freq_scale);
    if (p.factors) theta /= double(p.factors[i]);
    return theta;
}

} // namespace

#if GLOAS_ISA_BASE
void rope_ex_ref(float * x, int64_t n_head, int64_t head_dim, int64_t n_rot, int64_t pos, const rope_params & p) {
    GLOAS_ASSERT(n_rot >= 0 && n_rot % 2 == 0 && n_rot <= head_dim);
    const int64_t half = n_rot / 2;
    const bool neox = p.style == rope_style::NEOX;
    for (int64_t h = 0; h < n_head; ++h) {
        float * xh = x + h * head_dim;
        for (int64_t i = 0; i < half; ++i) {
            const double theta = rope_theta(i, n_rot, pos, p);
            const float c = float(std::cos(theta));
            const float s = float(std::sin(theta));
            float * a = neox ? xh + i : xh + 2 * i;
            float * b = neox ? xh + i + half : xh + 2 * i + 1;
            const float x0 = *a, x1 = *b;
            *a = x0 * c - x1 * s;
            *b = x0 * s + x1 * c;
        }
    }
}

void rope_ref(float * x, int64_t n_head, int64_t head_dim, int64_t n_rot, int64_t pos, float freq_base) {
    rope_params p;
    p.freq_base = freq_base;
    rope_ex_ref(x, n_head, head_dim, n_rot, pos, p);
}
#endif

GLOAS_ISA_BEGIN

// The angles are the reference's, computed once per call instead of once per
// head. NORM is vectorized over pairs: y = x*c + swap(x)*(-s, s); NEOX rotates
// the two halves as whole vectors (the compiler vectorizes that loop).
void rope_ex(float * x, int64_t n_head, int64_t head_dim, int64_t n_rot, int64_t pos, const rope_params & p) {
    GLOAS_ASSERT(n_rot >= 0 && n_rot % 2 == 0 && n_rot <= head_dim);
    // NORM: (n_rot) cos per pair, twice; then (n_rot) (-sin, sin)
    // NEOX: (n_rot/2) cos, then (n_rot/2) sin
    float * const cs = static_cast<float *>(isa::thread_scratch(isa::scratch_slot::rope, sizeof(float) * size_t(2 * n_rot)));
    const int64_t half = n_rot / 2;
    if (p.style == rope_style::NEOX) {
        float * c = cs;
        float * s = cs + half;
        for (int64_t i = 0; i < half; ++i) {
            const double theta = rope_theta(i, n_rot, pos, p);
            c[i] = float(std::cos(theta));
            s[i] = float(std::sin(theta));
        }
        for (int64_t h = 0; h < n_head; ++h) {
            float * a = x + h * head_dim;
            float * b = a + half;
            for (int64_t i = 0; i < half; ++i) {
                const float x0 = a[i], x1 = b[i];
                a[i] = x0 * c[i] - x1 * s[i];
                b[i] = x0 * s[i] + x1 * c[i];
            }
        }
        return;
    }
    float * c = cs;
    float * s = cs + n_rot;
    for (int64_t i = 0; i < half; ++i) {
        const double theta = rope_theta(i, n_rot, pos, p);
        const float ci = float(std::cos(theta)), si = float(std::sin(theta));
        c[2 * i] = c[2 * i + 1] = ci;
        s[2 * i] = -si;
        s[2 * i + 1] = si;
    }
    for (int64_t h = 0; h < n_head; ++h) {
        float * xh = x + h * head_dim;
        int64_t i = 0;
#if defined(__AVX512F__)
        for (; i < n_rot; i += 16) {
            const __mmask16 m = simd::tail_mask(n_rot - i);
            const __m512 v = _mm512_maskz_loadu_ps(m, xh + i);
            const __m512 sw = _mm512_permute_ps(v, 0xb1);  // (x1, x0) per pair
            const __m512 r = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(m, c + i), _mm512_mul_ps(sw, _mm512_maskz_loadu_ps(m, s + i)));
            _mm512_mask_storeu_ps(xh + i, m, r);
        }
#endif
        for (; i < n_rot; i += 2) {
            const float x0 = xh[i], x1 = xh[i + 1];
            xh[i]     = x0 * c[i] + x1 * s[i];
            xh[i + 1] = x1 * c[i] + x0 * s[i + 1];
        }
    }
}

GLOAS_ISA_END

#if GLOAS_ISA_BASE
void rope(float * x, int64_t n_head, int64_t head_dim, int64_t n_rot, int64_t pos, float freq_base) {
    rope_params p;
    p.freq_base = freq_base;
    rope_ex(x, n_head, head_dim, n_rot, pos, p);
}

void softmax_ref(float * x, int64_t n) {
    if (n <= 0) return;
    float mx = x[0];
    for (int64_t i = 1; i < n; ++i) mx = std::fmax(mx, x[i]);
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        x[i] = std::exp(x[i] - mx);
        sum += x[i];
    }
    const float inv = float(1.0 / sum);
    for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}
#endif

GLOAS_ISA_BEGIN

void softmax(float * x, int64_t n) {
#if defined(__AVX512F__)
    if (n <= 0) return;
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n; i += 16) mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mx, simd::tail_mask(n - i), x + i));
    const __m512 vm = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = simd::tail_mask(n - i);
        const __m512 e = simd::exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vm));
        _mm512_mask_storeu_ps(x + i, m, e);
        sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, e));
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = simd::tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
    }
#elif defined(__AVX2__) && defined(__FMA__)
    if (n <= 0) return;
    int64_t i = 0;
    float mx = x[0];
    if (n >= 8) {
        __m256 vm = _mm256_loadu_ps(x);
        for (i = 8; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
        mx = simd::hmax256(vm);
    }
    for (; i < n; ++i) mx = std::fmax(mx, x[i]);
    const __m256 vmx = _mm256_set1_ps(mx);
    __m256 vs = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 e = simd::exp256_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
        _mm256_storeu_ps(x + i, e);
        vs = _mm256_add_ps(vs, e);
    }
    float sum = simd::hsum256(vs);
    for (; i < n; ++i) sum += (x[i] = std::exp(x[i] - mx));
    const float inv = 1.0f / sum;
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(inv)));
    for (; i < n; ++i) x[i] *= inv;
#else
    softmax_ref(x, n);
#endif
}

GLOAS_ISA_END

#if GLOAS_ISA_BASE
void silu_mul_ref(float * y, const float * g, const float * u, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const float gi = g[i];
        y[i] = gi / (1.0f + std::exp(-gi)) * u[i];
    }
}
#endif

GLOAS_ISA_BEGIN

void silu_mul(float * y, const float * g, const float * u, int64_t n) {
#if defined(__AVX512F__)
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = simd::tail_mask(n - i);
        const __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
        const __m512 uv = _mm512_maskz_loadu_ps(m, u + i);
        const __m512 e = simd::exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(one, e)), uv));
    }
#elif defined(__AVX2__) && defined(__FMA__)
    // The tail goes through the same vector exp (masked), so an element's
    // result does not depend on where the array ends: a chunk of tokens gives
    // each token the values it gets alone.
    for (int64_t i = 0; i < n; i += 8) {
        const int r = int(std::min<int64_t>(8, n - i));
        const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        const __m256 gv = _mm256_maskload_ps(g + i, m);
        const __m256 e = simd::exp256_ps(_mm256_sub_ps(_mm256_setzero_ps(), gv));
        const __m256 yv = _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), _mm256_maskload_ps(u + i, m));
        _mm256_maskstore_ps(y + i, m, yv);
    }
#else
    silu_mul_ref(y, g, u, n);
#endif
}

void add(float * y, const float * x, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_add_ps(_mm512_loadu_ps(y + i), _mm512_loadu_ps(x + i)));
#elif defined(__AVX2__)
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
#endif
    for (; i < n; ++i) y[i] += x[i];
}

GLOAS_ISA_END

} // namespace gloas::ops
