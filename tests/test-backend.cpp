// The backend interface (tensor/backend.h) on the CPU backend: buffers,
// upload / to_host, weights, every op against the ops.h function it forwards
// to (bit for bit, on random inputs), and the profile counts of ops and groups.
#include "quant/types.h"
#include "tensor/cpu-backend.h"
#include "tensor/ops.h"
#include "tensor/profile.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace gloas;

namespace {

using test::get;
using test::put;
using test::randn;
using test::random_rows;

// Host values into a fresh backend buffer.
bool same_bits(const std::vector<float> & a, const std::vector<float> & b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

const type WEIGHT_TYPES[] = {type::F32, type::F16, type::BF16, type::Q8_0, type::Q4_0, type::Q4_K, type::Q6_K};

} // namespace

TEST_CASE("backend buffers: zeroed, upload / to_host round trip, move hands the memory over") {
    cpu_backend be(4);
    CHECK(std::string(be.name()) == "cpu");
    buffer none = be.alloc(0);
    CHECK(none.data() == nullptr);
    CHECK(none.bytes() == 0);

    buffer b = be.alloc(1000 * sizeof(float));
    REQUIRE(b.data() != nullptr);
    CHECK(b.bytes() == 1000 * sizeof(float));
    CHECK(reinterpret_cast<uintptr_t>(b.data()) % 64 == 0);
    const std::vector<float> zeros(1000, 0.0f);
    CHECK(same_bits(get(be, b, 1000), zeros));

    std::mt19937 rng(1);
    const std::vector<float> x = randn(rng, 1000);
    be.upload(b.data(), x.data(), x.size() * sizeof(float));
    CHECK(same_bits(get(be, b, 1000), x));

    void * const p = b.data();
    buffer c(std::move(b));
    CHECK(c.data() == p);
    CHECK(b.data() == nullptr);
    b = be.alloc(16);
    b = std::move(c);  // frees the 16 bytes, takes c's
    CHECK(b.data() == p);
    CHECK(same_bits(get(be, b, 1000), x));
}

TEST_CASE("backend weight: the CPU backend returns the view itself; an empty tensor stays empty") {
    std::mt19937 rng(2);
    cpu_backend be(8);
    std::vector<char> wb = random_rows(type::Q4_0, 5, 64, rng);
    const tensor w = make_tensor_2d(type::Q4_0, 64, 5, wb.data());
    const tensor r = be.weight(w);
    CHECK(r.data == w.data);
    CHECK(r.t == w.t);
    CHECK(r.ne[0] == 64);
    CHECK(r.ne[1] == 5);
    CHECK(be.work_bytes() >= ops::matmul_work_size(type::Q4_0, 64, 8));
    CHECK(be.weight(tensor()).empty());
}

TEST_CASE("backend get_rows equals ops::get_row per id, every weight type") {
    std::mt19937 rng(3);
    cpu_backend be(8);
    for (type t : WEIGHT_TYPES) {
        const int64_t n_in = 256, n_rows = 9;
        std::vector<char> wb = random_rows(t, n_rows, n_in, rng);
        const tensor w = be.weight(make_tensor_2d(t, n_in, n_rows, wb.data()));
        const std::vector<int32_t> ids = {3, 0, 8, 3, 5};
        const int64_t n = int64_t(ids.size());
        buffer d_ids = put(be, ids);
        buffer y = be.alloc(size_t(n * n_in) * sizeof(float));
        be.get_rows(w, d_ids.i32(), n, y.f32());
        std::vector<float> ref(size_t(n * n_in));
        for (int64_t i = 0; i < n; ++i) ops::get_row(w, ids[size_t(i)], ref.data() + i * n_in);
        CHECK_MESSAGE(same_bits(get(be, y, n * n_in), ref), std::string(type_name(t)));
    }
}

TEST_CASE("backend rmsnorm equals ops::rmsnorm per row, out of place and in place") {
    std::mt19937 rng(4);
    cpu_backend be(8);
    for (int64_t width : {7, 64, 288}) {
        const int64_t n_tok = 5;
        const std::vector<float> x = randn(rng, n_tok * width, 3.0f), g = randn(rng, width);
        std::vector<float> ref(x.size());
        for (int64_t t = 0; t < n_tok; ++t) ops::rmsnorm(ref.data() + t * width, x.data() + t * width, g.data(), width, 1e-5f);
        buffer d_x = put(be, x), d_g = put(be, g);
        buffer d_y = be.alloc(x.size() * sizeof(float));
        be.rmsnorm(d_y.f32(), d_x.f32(), d_g.f32(), n_tok, width, 1e-5f);
        CHECK_MESSAGE(same_bits(get(be, d_y, n_tok * width), ref), "width=", width);
        CHECK(same_bits(get(be, d_x, n_tok * width), x));
        be.rmsnorm(d_x.f32(), d_x.f32(), d_g.f32(), n_tok, width, 1e-5f);
        CHECK_MESSAGE(same_bits(get(be, d_x, n_tok * width), ref), "in place, width=", width);
    }
}

TEST_CASE("backend matmul and matmul_n equal ops::matmul / ops::matmul_n, every weight type, up to the token limit") {
    std::mt19937 rng(5);
    const int64_t max_tok = 40, n_in = 256;
    cpu_backend be(max_tok);
    std::vector<std::vector<char>> bufs;
    std::vector<tensor> ws;
    const int64_t rows[] = {67, 9, 130, 17, 3, 64, 33};
    size_t i = 0;
    for (type t : WEIGHT_TYPES) {
        bufs.push_back(random_rows(t, rows[i], n_in, rng));
        ws.push_back(be.weight(make_tensor_2d(t, n_in, rows[i], bufs.back().data())));
        ++i;
    }
    for (int64_t n_tok : {int64_t(1), int64_t(3), max_tok}) {
        std::vector<char> work(be.work_bytes());
        const std::vector<float> x = randn(rng, n_tok * n_in);
        buffer d_x = put(be, x);
        for (const tensor & w : ws) {
            const int64_t n_out = w.ne[1];
            std::vector<float> ref(size_t(n_tok * n_out));
            ops::matmul(w, x.data(), n_tok, ref.data(), work.data());
            buffer d_y = be.alloc(ref.size() * sizeof(float));
            be.matmul(w, d_x.f32(), n_tok, d_y.f32());
            CHECK_MESSAGE(same_bits(get(be, d_y, n_tok * n_out), ref), std::string(type_name(w.t)), " n_tok=", n_tok);
        }
        // QKV-like: three of one type; a K-quant mix of types
        for (const std::vector<size_t> & set : {std::vector<size_t>{3, 3, 3}, std::vector<size_t>{5, 6, 0, 4}}) {
            const int n = int(set.size());
            std::vector<const tensor *> wp;
            std::vector<std::vector<float>> ref(set.size());
            std::vector<buffer> d_y;
            std::vector<float *> yp, rp;
            for (size_t k = 0; k < set.size(); ++k) {
                const tensor & w = ws[set[k]];
                wp.push_back(&w);
                ref[k].assign(size_t(n_tok * w.ne[1]), 0.0f);
                rp.push_back(ref[k].data());
                d_y.push_back(be.alloc(ref[k].size() * sizeof(float)));
                yp.push_back(d_y.back().f32());
            }
            ops::matmul_n(wp.data(), rp.data(), n, x.data(), n_tok, work.data());
            be.matmul_n(wp.data(), yp.data(), n, d_x.f32(), n_tok);
            for (size_t k = 0; k < set.size(); ++k)
                CHECK_MESSAGE(same_bits(get(be, d_y[k], n_tok * wp[k]->ne[1]), ref[k]), "matrix ", k, " of ", n,
                              " n_tok=", n_tok);
        }
    }
}

TEST_CASE("backend bias, add, silu_mul equal ops::add per row, ops::add, ops::silu_mul") {
    std::mt19937 rng(6);
    cpu_backend be(8);
    const int64_t n_tok = 6, width = 77, n = n_tok * width;
    const std::vector<float> y0 = randn(rng, n), b = randn(rng, width), x = randn(rng, n), u = randn(rng, n);

    std::vector<float> ref = y0;
    for (int64_t t = 0; t < n_tok; ++t) ops::add(ref.data() + t * width, b.data(), width);
    buffer d_y = put(be, y0), d_b = put(be, b);
    be.bias(d_y.f32(), d_b.f32(), n_tok, width);
    CHECK(same_bits(get(be, d_y, n), ref));

    ref = y0;
    ops::add(ref.data(), x.data(), n);
    buffer d_a = put(be, y0), d_x = put(be, x);
    be.add(d_a.f32(), d_x.f32(), n);
    CHECK(same_bits(get(be, d_a, n), ref));

    ref.assign(size_t(n), 0.0f);
    ops::silu_mul(ref.data(), x.data(), u.data(), n);
    buffer d_u = put(be, u), d_s = be.alloc(size_t(n) * sizeof(float));
    be.silu_mul(d_s.f32(), d_x.f32(), d_u.f32(), n);
    CHECK(same_bits(get(be, d_s, n), ref));
    be.silu_mul(d_x.f32(), d_x.f32(), d_u.f32(), n);  // y aliasing g, as the forward pass calls it
    CHECK(same_bits(get(be, d_x, n), ref));
}

TEST_CASE("backend gelu_mul, scale, softcap against their definitions in double") {
    std::mt19937 rng(9);
    cpu_backend be(8);
    const int64_t n = 1000;
    std::vector<float> g = randn(rng, n, 3.0f), u = randn(rng, n);
    g[0] = 0.0f;
    g[1] = -12.0f;  // tanh saturates on both sides: gelu(x) -> 0 and -> x
    g[2] = 12.0f;
    buffer d_g = put(be, g), d_u = put(be, u), d_y = be.alloc(size_t(n) * sizeof(float));
    be.gelu_mul(d_y.f32(), d_g.f32(), d_u.f32(), n);
    std::vector<float> y = get(be, d_y, n);
    for (int64_t i = 0; i < n; ++i) {
        const double x = g[size_t(i)];
        const double want = 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))) * u[size_t(i)];
        CHECK(std::fabs(double(y[size_t(i)]) - want) <= 1e-6 * (1.0 + std::fabs(want)));
    }
    CHECK(y[0] == 0.0f);
    be.gelu_mul(d_g.f32(), d_g.f32(), d_u.f32(), n);  // y aliasing g
    CHECK(same_bits(get(be, d_g, n), y));

    // scale: the first n_scaled values of each row only
    const int64_t rows = 5, width = 12, n_scaled = 8;
    const std::vector<float> x = randn(rng, rows * width);
    buffer d_x = put(be, x);
    be.scale(d_x.f32(), rows, width, n_scaled, 1.5f);
    const std::vector<float> sx = get(be, d_x, rows * width);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < width; ++i)
            CHECK(sx[size_t(r * width + i)] == (i < n_scaled ? x[size_t(r * width + i)] * 1.5f : x[size_t(r * width + i)]));

    // softcap: cap * tanh(x / cap), odd, bounded by cap, near x for small x
    std::vector<float> c = randn(rng, n, 20.0f);
    c[0] = 1e-3f;
    buffer d_c = put(be, c);
    be.softcap(d_c.f32(), n, 5.0f);
    const std::vector<float> sc = get(be, d_c, n);
    for (int64_t i = 0; i < n; ++i) {
        const double want = 5.0 * std::tanh(double(c[size_t(i)]) / 5.0);
        CHECK(std::fabs(double(sc[size_t(i)]) - want) <= 1e-6 * 5.0);
        CHECK(std::fabs(sc[size_t(i)]) <= 5.0f);
    }
    CHECK(sc[0] == doctest::Approx(1e-3).epsilon(1e-5));
}

TEST_CASE("backend rope over a positions array equals ops::rope_ex per token: styles, factors, in and out of place") {
    std::mt19937 rng(7);
    cpu_backend be(8);
    const int64_t n_head = 3, head_dim = 16, row = n_head * head_dim;
    const std::vector<int32_t> pos = {0, 1, 2, 17, 300, 4095, -5};
    const int64_t n_tok = int64_t(pos.size());
    const std::vector<float> factors = {1.0f, 2.0f, 4.0f, 8.0f, 1.5f, 3.0f, 0.5f, 6.0f};  // (head_dim / 2)
    buffer d_pos = put(be, pos), d_factors = put(be, factors);
    for (ops::rope_style style : {ops::rope_style::NORM, ops::rope_style::NEOX}) {
        for (int64_t n_rot : {head_dim, int64_t(12)}) {
            for (bool with_factors : {false, true}) {
                ops::rope_params p;
                p.style = style;
                p.freq_base = 500000.0f;
                p.freq_scale = 0.25f;
                const std::vector<float> x = randn(rng, n_tok * row);
                std::vector<float> ref = x;
                p.factors = with_factors ? factors.data() : nullptr;
                for (int64_t t = 0; t < n_tok; ++t) ops::rope_ex(ref.data() + t * row, n_head, head_dim, n_rot, pos[size_t(t)], p);
                p.factors = with_factors ? d_factors.f32() : nullptr;
                buffer d_x = put(be, x), d_y = be.alloc(x.size() * sizeof(float));
                be.rope(d_y.f32(), d_x.f32(), n_tok, n_head, head_dim, n_rot, d_pos.i32(), p);
                CHECK_MESSAGE(same_bits(get(be, d_y, n_tok * row), ref), std::string(ops::rope_style_name(style)), " n_rot=", n_rot,
                              " factors=", with_factors);
                CHECK(same_bits(get(be, d_x, n_tok * row), x));  // out of place leaves x alone
                be.rope(d_x.f32(), d_x.f32(), n_tok, n_head, head_dim, n_rot, d_pos.i32(), p);
                CHECK(same_bits(get(be, d_x, n_tok * row), ref));
            }
        }
    }
}

TEST_CASE("backend profiling: each op counts as its op type in the current layer; a group counts once") {
    std::mt19937 rng(8);
    cpu_backend be(4);
    const int64_t n = 64;
    buffer d_y = put(be, randn(rng, n)), d_x = put(be, randn(rng, n));
    using profile::op;
    profile::reset();
    profile::enable(true);
    be.set_layer(-1);
    be.add(d_y.f32(), d_x.f32(), n);
    be.set_layer(1);
    be.add(d_y.f32(), d_x.f32(), n);
    be.silu_mul(d_y.f32(), d_y.f32(), d_x.f32(), n);
    {
        backend::group g(be, op::BIAS);
        be.bias(d_y.f32(), d_x.f32(), 2, 32);
        be.bias(d_y.f32(), d_x.f32(), 2, 32);
        be.add(d_y.f32(), d_x.f32(), n);
    }
    profile::enable(false);
    be.add(d_y.f32(), d_x.f32(), n);  // not recorded
    const profile::report r = profile::snapshot();
    profile::reset();
    CHECK(r.op_calls[int(op::ADD)] == 2);
    CHECK(r.op_calls[int(op::FFN_ACT)] == 1);
    CHECK(r.op_calls[int(op::BIAS)] == 1);
    REQUIRE(r.layer_calls.size() == 2);
    CHECK(r.layer_calls[0] == 0);
    CHECK(r.layer_calls[1] == 3);  // add, silu_mul, the group
}

TEST_CASE("profile: op types added by name follow the built-in ones, one per name") {
    const profile::op a = profile::add_op("test_op");
    CHECK(int(a) >= int(profile::op::COUNT));
    CHECK(profile::add_op("test_op") == a);
    CHECK(std::string(profile::op_name(a)) == "test_op");
    CHECK(std::string(profile::op_name(profile::op::FFN_ACT)) == "silu_mul");
    profile::reset();
    profile::record(a, 0, 1000);
    const profile::report r = profile::snapshot();
    profile::reset();
    REQUIRE(r.op_calls.size() > size_t(a));
    CHECK(r.op_calls[size_t(a)] == 1);
    CHECK(r.op_ns[size_t(a)] == 1000);
    CHECK(r.op_calls[size_t(profile::op::MATMUL)] == 0);
}
