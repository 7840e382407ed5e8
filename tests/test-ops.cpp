// Every fast kernel against its scalar reference: dot products, matmul,
// rmsnorm, rope, softmax, silu_mul, add, get_row, attention.
#include "quant/fp16.h"
#include "quant/quant.h"
#include "tensor/ops.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

using namespace gloas;

namespace {

using test::randn;

// Normalized mean squared error, as ggml's test-backend-ops measures it.
double nmse(const float * a, const float * ref, int64_t n) {
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        const double d = double(a[i]) - double(ref[i]);
        num += d * d;
        den += double(ref[i]) * double(ref[i]);
    }
    return den > 0.0 ? num / den : num;
}

const type ALL_TYPES[] = {type::F32, type::F16, type::BF16, type::Q8_0, type::Q4_0};

} // namespace

TEST_CASE("float dot products: fast vs reference on odd sizes and unaligned starts") {
    std::mt19937 rng(1);
    for (int64_t n : {1, 3, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 255, 1000, 4099}) {
        for (int off = 0; off < 2; ++off) {
            std::vector<float> w = randn(rng, n + 1), x = randn(rng, n + 1);
            std::vector<uint16_t> wh(size_t(n) + 1), wb(size_t(n) + 1);
            fp32_to_fp16_row(w.data(), wh.data(), n + 1);
            fp32_to_bf16_row(w.data(), wb.data(), n + 1);
            double mag = 0.0;  // sum |w x|: the scale of rounding error in any order
            for (int64_t i = 0; i < n; ++i) mag += std::fabs(double(w[size_t(i + off)]) * double(x[size_t(i + off)]));
            const double tol = 1e-6 * mag + 1e-30;
            const float * wp = w.data() + off;
            const float * xp = x.data() + off;
            CHECK_MESSAGE(std::fabs(vec_dot_f32(n, wp, xp) - vec_dot_f32_ref(n, wp, xp)) <= tol, "f32 n=", n, " off=", off);
            CHECK_MESSAGE(std::fabs(vec_dot_f16(n, wh.data() + off, xp) - vec_dot_f16_ref(n, wh.data() + off, xp)) <= tol,
                          "f16 n=", n, " off=", off);
            CHECK_MESSAGE(std::fabs(vec_dot_bf16(n, wb.data() + off, xp) - vec_dot_bf16_ref(n, wb.data() + off, xp)) <= tol,
                          "bf16 n=", n, " off=", off);
        }
    }
}

TEST_CASE("block dot products: fast vs reference, odd block counts, unaligned starts") {
    std::mt19937 rng(2);
    for (int64_t nb : {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33, 64, 129}) {
        const int64_t n = nb * 32;
        std::vector<float> w = randn(rng, n + 32), x = randn(rng, n + 32);
        // include extreme blocks: all zero, and one saturating both signs
        for (int j = 0; j < 32; ++j) w[size_t(j)] = 0.0f;
        if (nb > 2) for (int j = 0; j < 32; ++j) x[size_t(64 + j)] = (j & 1) ? 1000.0f : -1000.0f;
        std::vector<block_q8_0> w8(size_t(nb) + 1), x8(size_t(nb) + 1);
        std::vector<block_q4_0> w4(size_t(nb) + 1);
        quantize_row_q8_0_ref(w.data(), w8.data(), n + 32);
        quantize_row_q4_0_ref(w.data(), w4.data(), n + 32);
        quantize_row_q8_0_ref(x.data(), x8.data(), n + 32);
        for (int off = 0; off < 2; ++off) {
            // the same blocks, in any order, give the same int32 sums: only the
            // float accumulation of the scaled block sums may differ
            double mag8 = 0.0, mag4 = 0.0;
            for (int64_t b = off; b < nb + off; ++b) {
                const double s = double(fp16_to_fp32(x8[size_t(b)].d));
                double a8 = 0.0, a4 = 0.0;
                for (int j = 0; j < 32; ++j) {
                    a8 += std::fabs(double(w8[size_t(b)].qs[j]) * x8[size_t(b)].qs[j]);
                    const int q = j < 16 ? (w4[size_t(b)].qs[j] & 15) - 8 : (w4[size_t(b)].qs[j - 16] >> 4) - 8;
                    a4 += std::fabs(double(q) * x8[size_t(b)].qs[j]);
                }
                mag8 += a8 * s * std::fabs(fp16_to_fp32(w8[size_t(b)].d));
                mag4 += a4 * s * std::fabs(fp16_to_fp32(w4[size_t(b)].d));
            }
            const float r8 = vec_dot_q8_0_q8_0_ref(n, w8.data() + off, x8.data() + off);
            const float f8 = vec_dot_q8_0_q8_0(n, w8.data() + off, x8.data() + off);
            CHECK_MESSAGE(std::fabs(double(f8) - r8) <= 1e-6 * mag8 + 1e-30, "q8_0 blocks=", nb, " off=", off, " ", f8, " ", r8);
            const float r4 = vec_dot_q4_0_q8_0_ref(n, w4.data() + off, x8.data() + off);
            const float f4 = vec_dot_q4_0_q8_0(n, w4.data() + off, x8.data() + off);
            CHECK_MESSAGE(std::fabs(double(f4) - r4) <= 1e-6 * mag4 + 1e-30, "q4_0 blocks=", nb, " off=", off, " ", f4, " ", r4);
        }
    }
}

TEST_CASE("matmul vs matmul_ref: every weight type, token counts, odd row counts") {
    std::mt19937 rng(3);
    test::for_thread_counts({1, 2}, [&](int nth) {
        for (type t : ALL_TYPES) {
            for (int64_t n_in : {32, 96, 320}) {
                for (int64_t n_out : {1, 3, 17, 67}) {
                    std::vector<char> wbuf = test::random_rows(t, n_out, n_in, rng, 64);
                    const tensor w = make_tensor_2d(t, n_in, n_out, wbuf.data());
                    for (int64_t n_tok : {1, 2, 3, 7, 33, 64}) {
                        if (nth == 2 && n_in != 96) continue;  // threads: one size is enough
                        std::vector<float> x = randn(rng, n_tok * n_in);
                        std::vector<float> y(size_t(n_tok * n_out), -1.0f), yr(size_t(n_tok * n_out), -2.0f);
                        std::vector<char> work(ops::matmul_work_size(t, n_in, n_tok) + 1);
                        ops::matmul(w, x.data(), n_tok, y.data(), work.data());
                        ops::matmul_ref(w, x.data(), n_tok, yr.data());
                        // element-wise: |y - yr| <= 1e-5 * sum_i |w_i x_i| (bounded by |w|_2 |x|_2)
                        const int bad = test::matmul_mismatches(w, x, n_tok, y, yr, false);
                        CHECK_MESSAGE(bad == 0, type_name(t), " n_in=", n_in, " n_out=", n_out, " n_tok=", n_tok, " threads=", nth);
                    }
                }
            }
        }
    });
}

TEST_CASE("matmul vs matmul_ref: long rows (several reduction segments), many tokens (several chunks)") {
    std::mt19937 rng(31);
    for (type t : ALL_TYPES) {
        for (int64_t n_in : {2144, 5632}) {
            const int64_t n_out = 6, n_tok = n_in == 2144 ? 9 : 161;  // 161 tokens of 5632: more than one chunk
            std::vector<char> wbuf = test::random_rows(t, n_out, n_in, rng, 64);
            const tensor w = make_tensor_2d(t, n_in, n_out, wbuf.data());
            std::vector<float> x = randn(rng, n_tok * n_in);
            std::vector<float> y(size_t(n_tok * n_out)), yr(size_t(n_tok * n_out));
            std::vector<char> work(ops::matmul_work_size(t, n_in, n_tok));
            ops::matmul(w, x.data(), n_tok, y.data(), work.data());
            ops::matmul_ref(w, x.data(), n_tok, yr.data());
            CHECK_MESSAGE(nmse(y.data(), yr.data(), n_tok * n_out) < 1e-10, type_name(t), " n_in=", n_in);
        }
    }
}

// K-quant weights, through the AVX2 tiles when forced to avx2 (matmul_blocks
// or the AVX-512 tiles otherwise): row counts that are not a multiple of the
// 8-row tile, rows of several reduction segments (22 super-blocks), the
// fewest tokens the tiles take and two token chunks; and levels at their top
// (rows 0 and 1) against constant tokens (every 8-bit activation at -127 or
// +127), the largest 16-bit sums the tiles add before widening.
TEST_CASE("matmul vs matmul_ref: K-quant weights, odd rows, long rows, several chunks, largest sums") {
    std::mt19937 rng(34);
    const int64_t n_in = 5632, n_out = 13;
    for (type t : {type::Q4_K, type::Q5_K, type::Q6_K}) {
        std::vector<float> wf = randn(rng, n_out * n_in, 0.5f);
        for (int64_t i = 0; i < n_in; ++i) {
            wf[size_t(i)] = i % 16 ? 1.0f : 0.0f;           // Q4_K/Q5_K: levels 15 / 31
            wf[size_t(n_in + i)] = i % 16 ? -0.97f : 1.0f;   // Q6_K: level 63
        }
        const size_t rb = row_size(t, n_in);
        std::vector<char> wbuf(rb * size_t(n_out) + 64);
        for (int64_t r = 0; r < n_out; ++r) traits(t).from_float_ref(wf.data() + r * n_in, wbuf.data() + size_t(r) * rb, n_in);
        const tensor w = make_tensor_2d(t, n_in, n_out, wbuf.data());
        for (int64_t n_tok : {8, 161}) {
            std::vector<float> x = randn(rng, n_tok * n_in);
            for (int64_t i = 0; i < n_in; ++i) {
                x[size_t(i)] = 1.0f;
                x[size_t(n_in + i)] = -1.0f;
            }
            std::vector<float> yr(size_t(n_tok * n_out));
            ops::matmul_ref(w, x.data(), n_tok, yr.data());
            test::for_thread_counts({1, 3}, [&](int nth) {
                std::vector<float> y(size_t(n_tok * n_out), -1.0f);
                std::vector<char> work(ops::matmul_work_size(t, n_in, n_tok));
                ops::matmul(w, x.data(), n_tok, y.data(), work.data());
                const int bad = test::matmul_mismatches(w, x, n_tok, y, yr, false);
                CHECK_MESSAGE(bad == 0, type_name(t), " n_tok=", n_tok, " threads=", nth);
            });
        }
    }
}

// The float weights take any width: the AVX2 tiles (16 rows, 6 tokens, groups
// of 8 values, reduction segments of a few hundred values) pad the last group
// with zeros; every row and token remainder of a tile, and several chunks.
TEST_CASE("matmul vs matmul_ref: float weights, widths not a multiple of 8, every tile remainder") {
    std::mt19937 rng(34);
    test::for_thread_counts({1, 2}, [&](int nth) {
        for (type t : {type::F32, type::F16, type::BF16}) {
            for (int64_t n_in : {1, 5, 13, 100, 301, 1003}) {
                for (int64_t n_out : {16, 35}) {
                    std::vector<char> wbuf = test::random_rows(t, n_out, n_in, rng, 64);
                    const tensor w = make_tensor_2d(t, n_in, n_out, wbuf.data());
                    for (int64_t n_tok : {2, 5, 6, 11, 40}) {
                        if (nth == 2 && n_tok != 40) continue;
                        std::vector<float> x = randn(rng, n_tok * n_in);
                        std::vector<float> y(size_t(n_tok * n_out), -1.0f), yr(size_t(n_tok * n_out), -2.0f);
                        std::vector<char> work(ops::matmul_work_size(t, n_in, n_tok), char(0xff));  // NaN floats
                        ops::matmul(w, x.data(), n_tok, y.data(), work.data());
                        ops::matmul_ref(w, x.data(), n_tok, yr.data());
                        const int bad = test::matmul_mismatches(w, x, n_tok, y, yr, false);
                        CHECK_MESSAGE(bad == 0, type_name(t), " n_in=", n_in, " n_out=", n_out, " n_tok=", n_tok, " threads=", nth);
                    }
                }
            }
        }
        // 3001 f32 values a token: a chunk of activations holds 60 tokens
        const int64_t n_in = 3001, n_out = 35, n_tok = 130;
        for (type t : {type::F32, type::F16}) {
            std::vector<char> wbuf = test::random_rows(t, n_out, n_in, rng, 64);
            const tensor w = make_tensor_2d(t, n_in, n_out, wbuf.data());
            std::vector<float> x = randn(rng, n_tok * n_in);
            std::vector<float> y(size_t(n_tok * n_out)), yr(size_t(n_tok * n_out));
            std::vector<char> work(ops::matmul_work_size(t, n_in, n_tok));
            ops::matmul(w, x.data(), n_tok, y.data(), work.data());
            ops::matmul_ref(w, x.data(), n_tok, yr.data());
            CHECK_MESSAGE(test::matmul_mismatches(w, x, n_tok, y, yr, false) == 0, type_name(t), " threads=", nth);
        }
    });
}

// A context's logits for a token are the same whether it was evaluated alone
// or in a batch (tests/test-kv-store.cpp compares them bit for bit): float
// weights sum each output in an order that does not depend on the token count.
TEST_CASE("matmul: float weights give each token the same bits, alone or in a batch") {
    std::mt19937 rng(35);
    for (type t : {type::F32, type::F16, type::BF16}) {
        const int64_t n_in = 301, n_out = 35, n_tok = 13;
        std::vector<char> wbuf = test::random_rows(t, n_out, n_in, rng, 64);
        const tensor w = make_tensor_2d(t, n_in, n_out, wbuf.data());
        const std::vector<float> x = randn(rng, n_tok * n_in);
        std::vector<float> y(size_t(n_tok * n_out)), y1(static_cast<size_t>(n_out));
        std::vector<char> work(ops::matmul_work_size(t, n_in, n_tok));
        ops::matmul(w, x.data(), n_tok, y.data(), work.data());
        for (int64_t tk = 0; tk < n_tok; ++tk) {
            ops::matmul(w, x.data() + tk * n_in, 1, y1.data(), work.data());
            CHECK_MESSAGE(std::memcmp(y1.data(), y.data() + tk * n_out, size_t(n_out) * sizeof(float)) == 0,
                          type_name(t), " token ", tk);
        }
    }
}

TEST_CASE("matmul: unaligned activations, output and work; more threads than cores") {
    std::mt19937 rng(32);
    test::for_thread_counts({1, 3}, [&](int nth) {
        for (type t : ALL_TYPES) {
            const int64_t n_in = 160, n_out = 13;
            std::vector<char> wbuf = test::random_rows(t, n_out, n_in, rng, 64);
            const tensor w = make_tensor_2d(t, n_in, n_out, wbuf.data());
            for (int64_t n_tok : {1, 5}) {
                std::vector<float> x = randn(rng, n_tok * n_in + 1);
                std::vector<float> y(size_t(n_tok * n_out) + 2, 7.0f), yr(size_t(n_tok * n_out));
                std::vector<char> work(ops::matmul_work_size(t, n_in, n_tok) + 1);
                ops::matmul(w, x.data() + 1, n_tok, y.data() + 1, work.data() + 1);
                ops::matmul_ref(w, x.data() + 1, n_tok, yr.data());
                CHECK_MESSAGE(nmse(y.data() + 1, yr.data(), n_tok * n_out) < 1e-10, type_name(t), " n_tok=", n_tok, " threads=", nth);
                CHECK(y[0] == 7.0f);                          // nothing written outside y
                CHECK(y[size_t(n_tok * n_out) + 1] == 7.0f);
            }
            ops::matmul(w, nullptr, 0, nullptr, nullptr);   // no tokens: nothing to do
        }
    });
}

TEST_CASE("matmul_n equals matmul on each matrix: one type, and runs of several types") {
    std::mt19937 rng(33);
    test::for_thread_counts({1, 2, 3}, [&](int nth) {
        const int64_t n_in = 256;
        // QKV-like sets (different row counts), and a mix of types as K-quant files have
        const std::vector<std::vector<type>> sets = {
            {type::Q4_0, type::Q4_0, type::Q4_0}, {type::Q8_0, type::Q8_0}, {type::F16, type::F16, type::F16},
            {type::Q4_K, type::Q4_K, type::Q6_K}, {type::Q4_0, type::F32, type::F32, type::Q8_0}};
        for (const auto & types : sets) {
            const int n = int(types.size());
            const int64_t rows[4] = {67, 9, 9, 130};
            std::vector<std::vector<char>> bufs;
            std::vector<tensor> ws;
            size_t work_bytes = 0;
            for (int i = 0; i < n; ++i) bufs.push_back(test::random_rows(types[size_t(i)], rows[i], n_in, rng, 64));
            for (int i = 0; i < n; ++i) ws.push_back(make_tensor_2d(types[size_t(i)], n_in, rows[i], bufs[size_t(i)].data()));
            for (int64_t n_tok : {1, 2, 5, 40}) {
                for (int i = 0; i < n; ++i) work_bytes = std::max(work_bytes, ops::matmul_work_size(types[size_t(i)], n_in, n_tok));
                std::vector<char> work(work_bytes), work1(work_bytes);
                const std::vector<float> x = randn(rng, n_tok * n_in);
                std::vector<std::vector<float>> y(static_cast<size_t>(n)), y1(static_cast<size_t>(n));
                std::vector<const tensor *> wp;
                std::vector<float *> yp;
                for (int i = 0; i < n; ++i) {
                    y[size_t(i)].assign(size_t(n_tok * rows[i]), -1.0f);
                    y1[size_t(i)].assign(size_t(n_tok * rows[i]), -2.0f);
                    wp.push_back(&ws[size_t(i)]);
                    yp.push_back(y[size_t(i)].data());
                }
                ops::matmul_n(wp.data(), yp.data(), n, x.data(), n_tok, work.data());
                for (int i = 0; i < n; ++i) {
                    ops::matmul(ws[size_t(i)], x.data(), n_tok, y1[size_t(i)].data(), work1.data());
                    CHECK_MESSAGE(y[size_t(i)] == y1[size_t(i)], type_name(types[size_t(i)]), " matrix ", i,
                                  " n_tok=", n_tok, " threads=", nth);
                }
            }
        }
    });
}

TEST_CASE("silu_mul: a token's values do not depend on the chunk around it") {
    // The decoder applies silu_mul to a whole chunk at once; results must be
    // bit-identical to one token at a time (the precision rule of kv-sequence.h).
    std::mt19937 rng(34);
    for (int64_t F : {172, 5, 16, 37}) {
        const int64_t n_tok = 7;
        const std::vector<float> g = randn(rng, n_tok * F), u = randn(rng, n_tok * F);
        std::vector<float> all(static_cast<size_t>(n_tok * F)), one(static_cast<size_t>(F));
        ops::silu_mul(all.data(), g.data(), u.data(), n_tok * F);
        for (int64_t t = 0; t < n_tok; ++t) {
            ops::silu_mul(one.data(), g.data() + t * F, u.data() + t * F, F);
            CHECK_MESSAGE(std::memcmp(one.data(), all.data() + t * F, size_t(F) * sizeof(float)) == 0, "F=", F, " token ", t);
        }
    }
}

TEST_CASE("get_row widens / dequantizes one row") {
    std::mt19937 rng(4);
    for (type t : ALL_TYPES) {
        std::vector<char> wbuf = test::random_rows(t, 5, 64, rng, 64);
        const tensor w = make_tensor_2d(t, 64, 5, wbuf.data());
        std::vector<float> y(64), e(64);
        ops::get_row(w, 3, y.data());
        traits(t).to_float(wbuf.data() + 3 * row_size(t, 64), e.data(), 64);
        CHECK(std::memcmp(y.data(), e.data(), sizeof(float) * 64) == 0);
    }
}

TEST_CASE("rmsnorm, softmax, silu_mul, add: fast vs reference") {
    std::mt19937 rng(5);
    for (int64_t n : {1, 5, 16, 17, 33, 64, 100, 288, 2048, 4099}) {
        for (int off = 0; off < 2; ++off) {
            std::vector<float> x = randn(rng, n + 1, 3.0f), g = randn(rng, n + 1), u = randn(rng, n + 1);
            std::vector<float> y(size_t(n) + 1), yr(size_t(n) + 1);
            ops::rmsnorm(y.data() + off, x.data() + off, g.data() + off, n, 1e-5f);
            ops::rmsnorm_ref(yr.data() + off, x.data() + off, g.data() + off, n, 1e-5f);
            CHECK_MESSAGE(nmse(y.data() + off, yr.data() + off, n) < 1e-12, "rmsnorm n=", n);
            // in place (y aliases x)
            std::vector<float> xi = x;
            ops::rmsnorm(xi.data() + off, xi.data() + off, g.data() + off, n, 1e-5f);
            CHECK(nmse(xi.data() + off, yr.data() + off, n) < 1e-12);

            // softmax: wide range of logits, including very negative ones
            std::vector<float> s = randn(rng, n + 1, 20.0f), sr = s;
            ops::softmax(s.data() + off, n);
            ops::softmax_ref(sr.data() + off, n);
            int bad = 0;
            double sum = 0.0;
            for (int64_t i = 0; i < n; ++i) {
                const double a = s[size_t(i + off)], b = sr[size_t(i + off)];
                bad += !(std::fabs(a - b) <= 1e-6 * b + 1e-30);
                sum += a;
            }
            CHECK_MESSAGE(bad == 0, "softmax n=", n);
            CHECK(std::fabs(sum - 1.0) < 1e-5);

            // silu_mul, including y aliasing g
            std::vector<float> gg = randn(rng, n + 1, 6.0f);
            ops::silu_mul(y.data() + off, gg.data() + off, u.data() + off, n);
            ops::silu_mul_ref(yr.data() + off, gg.data() + off, u.data() + off, n);
            bad = 0;
            for (int64_t i = 0; i < n; ++i) {
                const double a = y[size_t(i + off)], b = yr[size_t(i + off)];
                bad += !(std::fabs(a - b) <= 1e-6 * std::fabs(b) + 1e-35);
            }
            CHECK_MESSAGE(bad == 0, "silu_mul n=", n);
            ops::silu_mul(gg.data() + off, gg.data() + off, u.data() + off, n);
            CHECK(nmse(gg.data() + off, yr.data() + off, n) < 1e-12);

            // add
            std::vector<float> a = x;
            ops::add(a.data() + off, g.data() + off, n);
            bad = 0;
            for (int64_t i = 0; i < n; ++i) bad += a[size_t(i + off)] != x[size_t(i + off)] + g[size_t(i + off)];
            CHECK(bad == 0);
        }
    }
    // extremes: softmax of one huge and the rest -inf-ish; silu of large |g|
    std::vector<float> s = {-1e30f, 0.0f, -1e30f, 88.0f, -88.0f};
    std::vector<float> sr = s;
    ops::softmax(s.data(), 5);
    ops::softmax_ref(sr.data(), 5);
    for (size_t i = 0; i < 5; ++i) CHECK(std::fabs(s[i] - sr[i]) <= 1e-6f * sr[i] + 1e-38f);
    std::vector<float> g = {-100.0f, -20.0f, 0.0f, 20.0f, 100.0f, -89.0f, 89.0f}, u(7, 1.0f), y(7), yr(7);
    ops::silu_mul(y.data(), g.data(), u.data(), 7);
    ops::silu_mul_ref(yr.data(), g.data(), u.data(), 7);
    for (size_t i = 0; i < 7; ++i) CHECK(std::fabs(y[i] - yr[i]) <= 1e-6f * std::fabs(yr[i]) + 1e-35f);
}

TEST_CASE("rope: fast vs reference") {
    std::mt19937 rng(6);
    for (int64_t head_dim : {8, 64, 100, 128}) {
        for (int64_t n_rot : {head_dim, head_dim / 2}) {
            for (int64_t pos : {0, 1, 7, 300, 4095}) {
                const int64_t n_head = 5;
                std::vector<float> x = randn(rng, n_head * head_dim + 1), xr = x;
                ops::rope(x.data() + 1, n_head, head_dim, n_rot, pos, 10000.0f);
                ops::rope_ref(xr.data() + 1, n_head, head_dim, n_rot, pos, 10000.0f);
                // angles up to pos radians: allow a relative angle error of a few ulp of pos
                CHECK_MESSAGE(nmse(x.data() + 1, xr.data() + 1, n_head * head_dim) < 1e-10,
                              "head_dim=", head_dim, " n_rot=", n_rot, " pos=", pos);
                CHECK(x[0] == xr[0]);
                if (pos == 0) CHECK(std::memcmp(x.data(), xr.data(), x.size() * sizeof(float)) == 0);
            }
        }
    }
}
