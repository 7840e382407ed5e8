// The error-minimizing Q4_0 quantizer used for K/V pages.
#include "quant/quant-mse.h"
#include "quant/quant.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

using namespace gloas;

namespace {

double sq_error(const std::vector<float> & x, const std::vector<block_q4_0> & q) {
    std::vector<float> y(x.size());
    dequantize_row_q4_0(q.data(), y.data(), int64_t(x.size()));
    double e = 0;
    for (size_t i = 0; i < x.size(); ++i) e += double(x[i] - y[i]) * double(x[i] - y[i]);
    return e;
}

} // namespace

TEST_CASE("quantize_row_q4_0_mse is never worse than the reference, and better on average") {
    std::mt19937 rng(7);
    std::normal_distribution<float> gauss(0.0f, 1.0f);
    std::student_t_distribution<float> heavy(3.0f);
    for (int dist = 0; dist < 2; ++dist) {
        const int64_t n = 32 * 512;
        std::vector<float> x(static_cast<size_t>(n));
        for (auto & v : x) v = dist == 0 ? gauss(rng) : heavy(rng);
        std::vector<block_q4_0> a(static_cast<size_t>(n / 32)), b(static_cast<size_t>(n / 32));
        quantize_row_q4_0_ref(x.data(), a.data(), n);
        quantize_row_q4_0_mse(x.data(), b.data(), n);
        // block by block
        for (int64_t i = 0; i < n / 32; ++i) {
            std::vector<float> xb(x.begin() + i * 32, x.begin() + (i + 1) * 32);
            CHECK(sq_error(xb, {b[size_t(i)]}) <= sq_error(xb, {a[size_t(i)]}) * (1 + 1e-6));
        }
        const double ea = sq_error(x, a), eb = sq_error(x, b);
        MESSAGE("distribution " << dist << ": squared error ref " << ea << ", mse " << eb);
        CHECK(eb < 0.97 * ea);
    }
    // Zeros stay zeros.
    std::vector<float> z(64, 0.0f);
    std::vector<block_q4_0> q(2);
    quantize_row_q4_0_mse(z.data(), q.data(), 64);
    CHECK(sq_error(z, q) == 0.0);
}

TEST_CASE("quantize_row_q4_0_mse's SIMD path against its scalar twin") {
    std::mt19937 rng(9);
    std::normal_distribution<float> gauss(0.0f, 1.0f);
    const int64_t n = 32 * 4096;
    std::vector<float> x(static_cast<size_t>(n));
    for (auto & v : x) v = gauss(rng) * (rng() % 4 == 0 ? 20.0f : 1.0f);
    std::vector<block_q4_0> a(static_cast<size_t>(n / 32)), b(static_cast<size_t>(n / 32));
    quantize_row_q4_0_mse(x.data(), a.data(), n);
    quantize_row_q4_0_mse_scalar(x.data(), b.data(), n);
    int differ = 0, worse = 0;
    for (int64_t i = 0; i < n / 32; ++i) {
        const bool same = a[size_t(i)].d == b[size_t(i)].d && std::equal(a[size_t(i)].qs, a[size_t(i)].qs + 16, b[size_t(i)].qs);
        differ += !same;
        std::vector<float> xb(x.begin() + i * 32, x.begin() + (i + 1) * 32);
        worse += sq_error(xb, {a[size_t(i)]}) > sq_error(xb, {b[size_t(i)]}) * (1 + 1e-5);
    }
    MESSAGE(differ << " of " << n / 32 << " blocks differ between the SIMD and scalar quantizers");
    CHECK(worse == 0);               // a different pick is a tie, never a worse block
    CHECK(differ <= n / 32 / 100);   // and rare
}
