// The CUDA kernels' per-element arithmetic (tensor/cuda/cuda-math.h), run on
// the CPU against the `_ref` twins it mirrors, on every machine: fp16
// conversions, Q8_0 block quantization, every block type's values and the
// block dot products (bit for bit), the rope angle and rotation (bit for bit on the host), the
// online-softmax merge of partial attention results (against a softmax in
// double), and Quest's page bound (bit for bit).
#include "kvcache/page.h"
#include "quant/fp16.h"
#include "quant/quant.h"
#include "tensor/cuda/cuda-math.h"
#include "tensor/ops.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace gloas;
namespace cm = gloas::cuda_math;

namespace {

std::vector<float> randn(std::mt19937 & rng, size_t n, float sigma = 1.0f) {
    std::normal_distribution<float> nd(0.0f, sigma);
    std::vector<float> x(n);
    for (auto & v : x) v = nd(rng);
    return x;
}

uint32_t bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

} // namespace

TEST_CASE("cuda-math: fp16 to float equals fp16_to_fp32 for every fp16") {
    for (uint32_t h = 0; h < 65536; ++h) {
        const float a = cm::half_to_float(uint16_t(h)), b = fp16_to_fp32(uint16_t(h));
        if (std::isnan(b)) CHECK(std::isnan(a));
        else if (bits(a) != bits(b)) FAIL_CHECK("fp16 " << h << ": " << a << " != " << b);
    }
}

TEST_CASE("cuda-math: float to fp16 equals fp32_to_fp16 (rounding, denormals, overflow)") {
    std::mt19937 rng(7);
    std::vector<float> xs = {0.0f, -0.0f, 65504.0f, 65519.99f, 65520.0f, -65520.0f, 1e-8f, 2.98e-8f, 2.9802322e-8f,
                             5.9604645e-8f, 6.1035156e-5f, 6.1e-5f, INFINITY, -INFINITY, 1.0f / 3.0f};
    for (int e = -30; e <= 17; ++e)
        for (int k = -4; k <= 4; ++k) xs.push_back(std::ldexp(1.0f + float(k) / 2048.0f, e));
    std::uniform_int_distribution<uint32_t> ub;
    for (int i = 0; i < 400000; ++i) {
        float f;
        const uint32_t u = ub(rng);
        std::memcpy(&f, &u, 4);
        if (!std::isnan(f)) xs.push_back(f);
        xs.push_back(std::ldexp(float(ub(rng) & 0xffffff) / 16777216.0f, int(ub(rng) % 48) - 30));
    }
    int bad = 0;
    for (float x : xs)
        if (cm::float_to_half(x) != fp32_to_fp16(x) && ++bad < 5)
            FAIL_CHECK("x " << x << ": " << cm::float_to_half(x) << " != " << fp32_to_fp16(x));
    CHECK(bad == 0);
    CHECK(std::isnan(fp16_to_fp32(cm::float_to_half(NAN))));
}

TEST_CASE("cuda-math: Q8_0 block quantization and block values equal the references") {
    std::mt19937 rng(1);
    const int64_t n = 32 * 64;
    std::vector<float> x = randn(rng, size_t(n), 2.0f);
    for (int j = 0; j < 32; ++j) x[size_t(j)] = 0.0f;  // an all-zero block: d = 0
    std::vector<block_q8_0> a(size_t(n / 32)), b(size_t(n / 32));
    quantize_row_q8_0_ref(x.data(), b.data(), n);
    for (size_t i = 0; i < a.size(); ++i) cm::quantize_block_q8_0(x.data() + 32 * i, a[i]);
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(block_q8_0)) == 0);

    std::vector<float> ref(static_cast<size_t>(n));
    dequantize_row_q8_0(b.data(), ref.data(), n);
    for (int64_t i = 0; i < n; ++i) REQUIRE(bits(cm::q8_0_value(b[size_t(i / 32)], int(i % 32))) == bits(ref[size_t(i)]));
    std::vector<block_q4_0> q4(size_t(n / 32));
    quantize_row_q4_0_ref(x.data(), q4.data(), n);
    dequantize_row_q4_0(q4.data(), ref.data(), n);
    for (int64_t i = 0; i < n; ++i) REQUIRE(bits(cm::q4_0_value(q4[size_t(i / 32)], int(i % 32))) == bits(ref[size_t(i)]));
}

namespace {

// Blocks of type B: n_real from quantizing gaussian values (from_float_ref),
// then n_raw of random bytes whose fp16 fields (at `halves`, byte offsets)
// hold random finite scales. Value j of each, by cuda_math's `value`, must
// have the bits of the type's to_float (dequantize_row_*).
template <class B, int QK, class F>
void check_values(type t, F value, std::initializer_list<size_t> halves) {
    std::mt19937 rng(11);
    const int n_real = 16, n_raw = 64;
    std::vector<B> b(size_t(n_real + n_raw));
    const std::vector<float> x = randn(rng, size_t(n_real) * QK, 1.5f);
    traits(t).from_float_ref(x.data(), b.data(), int64_t(n_real) * QK);
    std::uniform_int_distribution<int> byte(0, 255);
    std::normal_distribution<float> nd(0.0f, 0.05f);
    for (int i = n_real; i < n_real + n_raw; ++i) {
        auto * p = reinterpret_cast<uint8_t *>(&b[size_t(i)]);
        for (size_t k = 0; k < sizeof(B); ++k) p[k] = uint8_t(byte(rng));
        for (size_t off : halves) {
            const uint16_t h = fp32_to_fp16(nd(rng));
            std::memcpy(p + off, &h, 2);
        }
    }
    const int64_t n = int64_t(b.size()) * QK;
    std::vector<float> ref(static_cast<size_t>(n));
    traits(t).to_float(b.data(), ref.data(), n);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i) bad += bits(value(b[size_t(i / QK)], int(i % QK))) != bits(ref[size_t(i)]);
    CHECK_MESSAGE(bad == 0, std::string(type_name(t)) << ": " << bad << " of " << n << " values differ");
}

} // namespace

TEST_CASE("cuda-math: values of Q4_1, Q5_0, Q5_1 and the K-quant blocks equal dequantize_row_*") {
    check_values<block_q4_1, QK4_1>(type::Q4_1, cm::q4_1_value, {offsetof(block_q4_1, d), offsetof(block_q4_1, m)});
    check_values<block_q5_0, QK5_0>(type::Q5_0, cm::q5_0_value, {offsetof(block_q5_0, d)});
    check_values<block_q5_1, QK5_1>(type::Q5_1, cm::q5_1_value, {offsetof(block_q5_1, d), offsetof(block_q5_1, m)});
    check_values<block_q2_K, QK_K>(type::Q2_K, cm::q2_K_value, {offsetof(block_q2_K, d), offsetof(block_q2_K, dmin)});
    check_values<block_q3_K, QK_K>(type::Q3_K, cm::q3_K_value, {offsetof(block_q3_K, d)});
    check_values<block_q4_K, QK_K>(type::Q4_K, cm::q4_K_value, {offsetof(block_q4_K, d), offsetof(block_q4_K, dmin)});
    check_values<block_q5_K, QK_K>(type::Q5_K, cm::q5_K_value, {offsetof(block_q5_K, d), offsetof(block_q5_K, dmin)});
    check_values<block_q6_K, QK_K>(type::Q6_K, cm::q6_K_value, {offsetof(block_q6_K, d)});
}

TEST_CASE("cuda-math: block dot products sum to vec_dot_*_ref exactly") {
    std::mt19937 rng(2);
    const int64_t n = 32 * 128;
    std::vector<float> w = randn(rng, size_t(n)), x = randn(rng, size_t(n));
    std::vector<block_q8_0> w8(size_t(n / 32)), x8(size_t(n / 32));
    std::vector<block_q4_0> w4(size_t(n / 32));
    quantize_row_q8_0_ref(w.data(), w8.data(), n);
    quantize_row_q4_0_ref(w.data(), w4.data(), n);
    quantize_row_q8_0_ref(x.data(), x8.data(), n);
    float s8 = 0.0f, s4 = 0.0f;
    for (size_t i = 0; i < x8.size(); ++i) {
        // the kernels split a block over lanes: the partial sums add up to the whole
        const int a = cm::block_dot_q8_0_q8_0(w8[i], x8[i], 0, 11) + cm::block_dot_q8_0_q8_0(w8[i], x8[i], 11, 32);
        const int b = cm::block_dot_q4_0_q8_0(w4[i], x8[i], 0, 16) + cm::block_dot_q4_0_q8_0(w4[i], x8[i], 16, 32);
        CHECK(a == cm::block_dot_q8_0_q8_0(w8[i], x8[i]));
        s8 += float(a) * cm::block_scale(w8[i].d, x8[i].d);
        s4 += float(b) * cm::block_scale(w4[i].d, x8[i].d);
    }
    CHECK(bits(s8) == bits(vec_dot_q8_0_q8_0_ref(n, w8.data(), x8.data())));
    CHECK(bits(s4) == bits(vec_dot_q4_0_q8_0_ref(n, w4.data(), x8.data())));
}

TEST_CASE("cuda-math: rope angle and rotation equal rope_ex_ref (NORM, NEOX, scaling, factors)") {
    std::mt19937 rng(3);
    const int64_t n_head = 3, head_dim = 64;
    std::vector<float> factors = randn(rng, 16);
    for (auto & f : factors) f = 1.0f + std::fabs(f);
    for (int style = 0; style < 2; ++style)
        for (int64_t n_rot : {int64_t(64), int64_t(32)})
            for (int64_t pos : {int64_t(0), int64_t(1), int64_t(17), int64_t(4095), int64_t(100000)}) {
                ops::rope_params p;
                p.style = style ? ops::rope_style::NEOX : ops::rope_style::NORM;
                p.freq_base = style ? 1000000.0f : 10000.0f;
                p.freq_scale = n_rot == 32 ? 0.25f : 1.0f;
                p.factors = n_rot == 32 ? factors.data() : nullptr;
                std::vector<float> x = randn(rng, size_t(n_head * head_dim)), y = x;
                ops::rope_ex_ref(x.data(), n_head, head_dim, n_rot, pos, p);
                const int64_t half = n_rot / 2;
                for (int64_t h = 0; h < n_head; ++h)
                    for (int64_t i = 0; i < half; ++i) {
                        const double th = cm::rope_theta(i, n_rot, pos, p.freq_base, p.freq_scale,
                                                         p.factors ? p.factors[i] : 1.0f);
                        float * yh = y.data() + h * head_dim;
                        cm::rope_rotate(style ? yh[i] : yh[2 * i], style ? yh[i + half] : yh[2 * i + 1], th);
                    }
                CHECK(std::memcmp(x.data(), y.data(), x.size() * 4) == 0);
            }
}

TEST_CASE("cuda-math: silu and gelu equal the CPU ops") {
    std::mt19937 rng(4);
    std::vector<float> g = randn(rng, 4096, 4.0f), u = randn(rng, 4096), y(4096);
    ops::silu_mul_ref(y.data(), g.data(), u.data(), 4096);
    for (size_t i = 0; i < g.size(); ++i) REQUIRE(bits(cm::silu(g[i]) * u[i]) == bits(y[i]));
    for (size_t i = 0; i < g.size(); ++i) {
        const double x = g[i];
        const double ref = 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
        REQUIRE(std::fabs(cm::gelu_tanh(g[i]) - ref) <= 1e-5 * (1.0 + std::fabs(ref)));
    }
}

TEST_CASE("cuda-math: merging two online-softmax parts equals the softmax over all keys") {
    // Error bound: each part is an online softmax in float; relative error of
    // the output <= a few float ulps per key (n = 300 keys here): 1e-5.
    std::mt19937 rng(5);
    const int n = 300, dim = 16;
    for (int split : {0, 1, 150, 299, 300}) {
        std::vector<float> s = randn(rng, size_t(n), 8.0f), v = randn(rng, size_t(n * dim));
        double mx = -INFINITY;
        for (float x : s) mx = std::max(mx, double(x));
        std::vector<double> ref(size_t(dim), 0.0);
        double den = 0.0;
        for (int k = 0; k < n; ++k) {
            const double p = std::exp(double(s[size_t(k)]) - mx);
            den += p;
            for (int d = 0; d < dim; ++d) ref[size_t(d)] += p * double(v[size_t(k * dim + d)]);
        }
        auto part = [&](int k0, int k1, std::vector<float> & o) {
            cm::softmax_part a{-INFINITY, 0.0f};
            o.assign(size_t(dim), 0.0f);
            for (int k = k0; k < k1; ++k) {
                float p;
                const float f = cm::softmax_push(a, s[size_t(k)], p);
                for (int d = 0; d < dim; ++d) o[size_t(d)] = o[size_t(d)] * f + p * v[size_t(k * dim + d)];
            }
            return a;
        };
        std::vector<float> oa, ob;
        const cm::softmax_part a = part(0, split, oa), b = part(split, n, ob);
        float fa, fb;
        const cm::softmax_part m = cm::softmax_merge(a, b, fa, fb);
        for (int d = 0; d < dim; ++d) {
            const double out = double(oa[size_t(d)] * fa + ob[size_t(d)] * fb) / double(m.l);
            CHECK(std::fabs(out - ref[size_t(d)] / den) <= 1e-5 * (1.0 + std::fabs(ref[size_t(d)] / den)));
        }
    }
    float fa = 1, fb = 1;
    const cm::softmax_part e = cm::softmax_merge({-INFINITY, 0.0f}, {-INFINITY, 0.0f}, fa, fb);
    CHECK(e.l == 0.0f);
    CHECK(fa == 0.0f);
    CHECK(fb == 0.0f);
}

TEST_CASE("cuda-math: Quest bound equals page_score_bound_ref") {
    std::mt19937 rng(6);
    for (int32_t group : {1, 4, 8})
        for (int32_t hd : {64, 128}) {
            std::vector<float> q = randn(rng, size_t(group * hd)), a = randn(rng, size_t(hd)), b = randn(rng, size_t(hd));
            std::vector<float> kmin(static_cast<size_t>(hd)), kmax(static_cast<size_t>(hd));
            for (int32_t d = 0; d < hd; ++d) {
                kmin[size_t(d)] = std::min(a[size_t(d)], b[size_t(d)]);
                kmax[size_t(d)] = std::max(a[size_t(d)], b[size_t(d)]);
            }
            kmax[0] = INFINITY;  // an unbounded channel
            const float x = cm::quest_bound(q.data(), group, hd, kmin.data(), kmax.data());
            const float y = page_score_bound_ref(q.data(), group, hd, kmin.data(), kmax.data());
            CHECK(bits(x) == bits(y));
        }
}
