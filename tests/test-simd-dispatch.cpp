// The run-time SIMD dispatch (quant/isa.h, kvcache/simd-dispatch.h): every
// kernel of the table under every variant this build carries and this CPU
// runs, against the scalar variant on the same inputs; the choice of variant
// and GLOAS_FORCE_SIMD's refusals.
#include "kvcache/simd-dispatch.h"

#include "quant/fp16.h"
#include "quant/quant-mse.h"
#include "quant/quant.h"
#include "tensor/bandwidth.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

using namespace gloas;

namespace {

// What one kernel run produced: floats compared within rounding, bytes
// compared exactly.
struct output {
    std::vector<float> f;
    std::vector<uint8_t> b;
    void add(const float * x, size_t n) { f.insert(f.end(), x, x + n); }
    template <typename T> void add_bytes(const T * x, size_t n) {
        const uint8_t * p = reinterpret_cast<const uint8_t *>(x);
        b.insert(b.end(), p, p + n * sizeof(T));
    }
    // An output of n floats, or of n values' bytes, alone.
    static output floats(const float * x, size_t n) {
        output o;
        o.add(x, n);
        return o;
    }
    template <typename T> static output bytes(const T * x, size_t n) {
        output o;
        o.add_bytes(x, n);
        return o;
    }
};

using test::randn;
using test::random_rows;

// Every dot product of a weight type against its activation type.
float dot_of(type wt, int64_t n, const std::vector<char> & w, const std::vector<char> & x) {
    switch (wt) {
    case type::F32:  return vec_dot_f32(n, reinterpret_cast<const float *>(w.data()), reinterpret_cast<const float *>(x.data()));
    case type::F16:  return vec_dot_f16(n, reinterpret_cast<const uint16_t *>(w.data()), reinterpret_cast<const float *>(x.data()));
    case type::BF16: return vec_dot_bf16(n, reinterpret_cast<const uint16_t *>(w.data()), reinterpret_cast<const float *>(x.data()));
#define GLOAS_DOT(W, X) reinterpret_cast<const block_##W *>(w.data()), reinterpret_cast<const block_##X *>(x.data())
    case type::Q8_0: return vec_dot_q8_0_q8_0(n, GLOAS_DOT(q8_0, q8_0));
    case type::Q4_0: return vec_dot_q4_0_q8_0(n, GLOAS_DOT(q4_0, q8_0));
    case type::Q4_1: return vec_dot_q4_1_q8_1(n, GLOAS_DOT(q4_1, q8_1));
    case type::Q5_0: return vec_dot_q5_0_q8_0(n, GLOAS_DOT(q5_0, q8_0));
    case type::Q5_1: return vec_dot_q5_1_q8_1(n, GLOAS_DOT(q5_1, q8_1));
    case type::Q2_K: return vec_dot_q2_K_q8_K(n, GLOAS_DOT(q2_K, q8_K));
    case type::Q3_K: return vec_dot_q3_K_q8_K(n, GLOAS_DOT(q3_K, q8_K));
    case type::Q4_K: return vec_dot_q4_K_q8_K(n, GLOAS_DOT(q4_K, q8_K));
    case type::Q5_K: return vec_dot_q5_K_q8_K(n, GLOAS_DOT(q5_K, q8_K));
    case type::Q6_K: return vec_dot_q6_K_q8_K(n, GLOAS_DOT(q6_K, q8_K));
#undef GLOAS_DOT
    default: FAIL("no dot product for ", type_name(wt)); return 0.0f;
    }
}

// 16 dot products of rows of 512 values (two K-quant super-blocks).
output dots(type wt) {
    std::mt19937 rng(uint32_t(wt) + 1);
    const int64_t n = 512;
    const type vt = traits(wt).vec_dot_type;
    output o;
    for (int i = 0; i < 16; ++i) {
        const std::vector<char> w = random_rows(wt, 1, n, rng), x = random_rows(vt, 1, n, rng);
        const float d = dot_of(wt, n, w, x);
        o.add(&d, 1);
    }
    return o;
}

// A small page of every attention type: P = 32, 1 layer, 2 KV heads, D = 64.
struct page_case {
    page_geometry g;
    std::vector<float> q;
    std::vector<std::vector<char>> pages;  // F16, Q8_0, Q4_0, F32, Q4_KIVI
    static constexpr type TYPES[5] = {type::F16, type::Q8_0, type::Q4_0, type::F32, type::Q4_KIVI};
    static constexpr int GROUP = 4;
    page_case() {
        g.page_tokens = 32;
        g.n_layer = 1;
        g.n_head_kv = 2;
        g.head_dim = 64;
        std::mt19937 rng(7);
        std::vector<float> open(size_t(g.n_rows()) * size_t(g.page_tokens));
        for (int tok = 0; tok < g.page_tokens; ++tok) {
            const std::vector<float> k = randn(rng, size_t(g.n_embd_kv())), v = randn(rng, size_t(g.n_embd_kv()));
            page_put_token(g, open.data(), 0, tok, k.data(), v.data());
        }
        for (type t : TYPES) {
            pages.emplace_back(g.page_bytes(t));
            page_quantize(g, open.data(), t, pages.back().data());
        }
        q = randn(rng, size_t(3 * GROUP * g.head_dim), 0.125f);
    }
};

// One kind of page attention over every type, head and a few lengths.
output attend(bool multi, bool scalar_twin) {
    static const page_case pc;
    const int D = pc.g.head_dim, G = page_case::GROUP;
    output o;
    for (size_t i = 0; i < pc.pages.size(); ++i) {
        const type t = page_case::TYPES[i];
        for (int h = 0; h < pc.g.n_head_kv; ++h) {
            for (int n : {32, 19, 1}) {
                const int n_q = multi ? 3 : 1;
                std::vector<float> m(size_t(n_q * G)), l(m.size()), acc(m.size() * size_t(D)), out(acc.size());
                attn_state s{m.data(), l.data(), acc.data()};
                attn_state_init(s, n_q * G, D);
                const void * p = pc.pages[i].data();
                const int32_t n_valid[3] = {n, 32, n / 2};
                if (multi && scalar_twin) page_attend_multi_scalar(pc.g, t, p, 0, h, n_q, n_valid, pc.q.data(), G, s);
                else if (multi) page_attend_multi(pc.g, t, p, 0, h, n_q, n_valid, pc.q.data(), G, s);
                else if (scalar_twin) page_attend_scalar(pc.g, t, p, 0, h, n, pc.q.data(), G, s);
                else page_attend(pc.g, t, p, 0, h, n, pc.q.data(), G, s, p, t);  // with `next`: the one dispatched
                attn_state_finish(s, n_q * G, D, out.data());
                o.add(out.data(), out.size());
            }
        }
    }
    return o;
}

// matmul or matmul_n over every weight type, decode (1 token) and prefill.
output matmuls(bool n_at_once) {
    const type TYPES[] = {type::F32, type::F16, type::BF16, type::Q8_0, type::Q4_0, type::Q4_1, type::Q5_0,
                          type::Q5_1, type::Q2_K, type::Q3_K, type::Q4_K, type::Q5_K, type::Q6_K};
    const int64_t n_in = 512, n_out = 19;
    output o;
    for (type t : TYPES) {
        std::mt19937 rng(uint32_t(t) + 100);
        std::vector<char> w0 = random_rows(t, n_out, n_in, rng), w1 = random_rows(t, n_out + 4, n_in, rng);
        const tensor ws[2] = {make_tensor_2d(t, n_in, n_out, w0.data()), make_tensor_2d(t, n_in, n_out + 4, w1.data())};
        for (int64_t n_tok : {1, 9}) {
            const std::vector<float> x = randn(rng, size_t(n_in * n_tok));
            std::vector<char> work(ops::matmul_work_size(t, n_in, n_tok));
            std::vector<float> y0(size_t(n_out * n_tok)), y1(size_t((n_out + 4) * n_tok));
            if (n_at_once) {
                const tensor * wp[2] = {&ws[0], &ws[1]};
                float * yp[2] = {y0.data(), y1.data()};
                ops::matmul_n(wp, yp, 2, x.data(), n_tok, work.data());
            } else {
                ops::matmul(ws[0], x.data(), n_tok, y0.data(), work.data());
                ops::matmul(ws[1], x.data(), n_tok, y1.data(), work.data());
            }
            o.add(y0.data(), y0.size());
            o.add(y1.data(), y1.size());
        }
    }
    return o;
}

// Each table entry's run, by name; exact: byte outputs only.
std::map<std::string, std::function<output()>> kernel_runs() {
    std::map<std::string, std::function<output()>> r;
    const size_t N = 1000;  // not a multiple of any vector width
    r["fp16_to_fp32_row"] = [=] {
        std::mt19937 rng(1);
        std::vector<uint16_t> h(N);
        for (auto & v : h) v = uint16_t(rng() & 0x7bff);  // finite halves of both signs' patterns
        std::vector<float> y(N);
        fp16_to_fp32_row(h.data(), y.data(), int64_t(N));
        return output::bytes(y.data(), N);
    };
    r["fp32_to_fp16_row"] = [=] {
        std::mt19937 rng(2);
        std::vector<float> x = randn(rng, N, 1000.0f);
        x[0] = 1e-7f, x[1] = 70000.0f, x[2] = -0.0f;  // subnormal, overflow, signed zero
        std::vector<uint16_t> y(N);
        fp32_to_fp16_row(x.data(), y.data(), int64_t(N));
        return output::bytes(y.data(), N);
    };
    r["bf16_to_fp32_row"] = [=] {
        std::mt19937 rng(3);
        std::vector<uint16_t> h(N);
        for (auto & v : h) v = uint16_t(rng());
        std::vector<float> y(N);
        bf16_to_fp32_row(h.data(), y.data(), int64_t(N));
        return output::bytes(y.data(), N);
    };
    r["fp32_to_bf16_row"] = [=] {
        std::mt19937 rng(4);
        std::vector<float> x = randn(rng, N);
        x[0] = std::nanf(""), x[1] = 1e-40f;  // NaN, subnormal
        std::vector<uint16_t> y(N);
        fp32_to_bf16_row(x.data(), y.data(), int64_t(N));
        return output::bytes(y.data(), N);
    };
    r["quantize_row_q8_0"] = [] {
        std::mt19937 rng(5);
        const std::vector<float> x = randn(rng, 32 * 33);
        std::vector<block_q8_0> y(33);
        quantize_row_q8_0(x.data(), y.data(), 32 * 33);
        return output::bytes(y.data(), y.size());
    };
    r["quantize_row_q8_K"] = [] {
        std::mt19937 rng(6);
        std::vector<float> x = randn(rng, 256 * 3);
        std::fill(x.begin() + 256, x.begin() + 512, 0.0f);  // an all-zero super-block
        std::vector<block_q8_K> y(3);
        quantize_row_q8_K(x.data(), y.data(), 256 * 3);
        return output::bytes(y.data(), y.size());
    };
    r["quantize_row_q4_0_mse"] = [] {
        // The variants sum the block's errors in another order, so a near tie
        // between two scales may go either way: compared is the squared error
        // of the whole row, within 1e-3.
        std::mt19937 rng(7);
        const std::vector<float> x = randn(rng, 32 * 64);
        std::vector<block_q4_0> y(64);
        quantize_row_q4_0_mse(x.data(), y.data(), 32 * 64);
        std::vector<float> back(x.size());
        dequantize_row_q4_0(y.data(), back.data(), int64_t(x.size()));
        double e = 0.0;
        for (size_t i = 0; i < x.size(); ++i) e += double(x[i] - back[i]) * double(x[i] - back[i]);
        const float ef = float(e);
        return output::floats(&ef, 1);
    };
    const std::pair<const char *, type> vec_dots[] = {
        {"vec_dot_f32", type::F32},        {"vec_dot_f16", type::F16},        {"vec_dot_bf16", type::BF16},
        {"vec_dot_q8_0_q8_0", type::Q8_0}, {"vec_dot_q4_0_q8_0", type::Q4_0}, {"vec_dot_q4_1_q8_1", type::Q4_1},
        {"vec_dot_q5_0_q8_0", type::Q5_0}, {"vec_dot_q5_1_q8_1", type::Q5_1}, {"vec_dot_q2_K_q8_K", type::Q2_K},
        {"vec_dot_q3_K_q8_K", type::Q3_K}, {"vec_dot_q4_K_q8_K", type::Q4_K}, {"vec_dot_q5_K_q8_K", type::Q5_K},
        {"vec_dot_q6_K_q8_K", type::Q6_K}};
    for (const auto & [name, t] : vec_dots) r[name] = [t = t] { return dots(t); };
    r["rmsnorm"] = [=] {
        std::mt19937 rng(8);
        const std::vector<float> x = randn(rng, N), g = randn(rng, N);
        std::vector<float> y(N);
        ops::rmsnorm(y.data(), x.data(), g.data(), int64_t(N), 1e-5f);
        return output::floats(y.data(), N);
    };
    r["rope_ex"] = [] {
        output o;
        for (ops::rope_style st : {ops::rope_style::NORM, ops::rope_style::NEOX}) {
            std::mt19937 rng(9);
            std::vector<float> x = randn(rng, 4 * 72);
            ops::rope_params p;
            p.style = st;
            ops::rope_ex(x.data(), 4, 72, 40, 1234, p);  // a partial rotation of odd width
            o.add(x.data(), x.size());
        }
        return o;
    };
    r["softmax"] = [=] {
        std::mt19937 rng(10);
        std::vector<float> x = randn(rng, N, 4.0f);
        ops::softmax(x.data(), int64_t(N));
        return output::floats(x.data(), N);
    };
    r["silu_mul"] = [=] {
        std::mt19937 rng(11);
        const std::vector<float> g = randn(rng, N, 3.0f), u = randn(rng, N);
        std::vector<float> y(N);
        ops::silu_mul(y.data(), g.data(), u.data(), int64_t(N));
        return output::floats(y.data(), N);
    };
    r["add"] = [=] {
        std::mt19937 rng(12);
        std::vector<float> y = randn(rng, N);
        const std::vector<float> x = randn(rng, N);
        ops::add(y.data(), x.data(), int64_t(N));
        return output::bytes(y.data(), N);
    };
    // Its value is each variant's own layout; matmul below runs in that much.
    r["matmul_work_size"] = [] { return output(); };
    r["matmul"] = [] { return matmuls(false); };
    r["matmul_n"] = [] { return matmuls(true); };
    r["read_words"] = [] {
        std::vector<uint64_t> w(1000 + 8);
        uint64_t * p = w.data();
        while (reinterpret_cast<uintptr_t>(p) % 64) ++p;
        for (size_t i = 0; i < 1000; ++i) p[i] = i * 0x9E3779B97F4A7C15ull;
        const uint64_t x[2] = {read_words(p, 1000, false), read_words(p, 999, true)};
        return output::bytes(x, 2);
    };
    r["page_attend"] = [] { return attend(false, false); };
    r["page_attend_multi"] = [] { return attend(true, false); };
    r["page_attend_scalar"] = [] { return attend(false, true); };
    r["page_attend_multi_scalar"] = [] { return attend(true, true); };
    r["page_score_bounds_f16"] = [] {
        std::mt19937 rng(13);
        const int32_t group = 4, hd = 64, n = 45;
        std::vector<uint16_t> tiles(size_t((n + SUMMARY_TILE - 1) / SUMMARY_TILE) * 2 * hd * SUMMARY_TILE);
        for (int32_t c = 0; c < n; ++c)
            for (int32_t d = 0; d < hd; ++d) {
                const float a = randn(rng, 1)[0], b = randn(rng, 1)[0];
                tiles[summary_index(hd, c, 0, d)] = fp16_floor(std::min(a, b));
                tiles[summary_index(hd, c, 1, d)] = fp16_ceil(std::max(a, b));
            }
        const std::vector<float> q = randn(rng, size_t(group * hd));
        std::vector<float> out(static_cast<size_t>(n));
        page_score_bounds_f16(q.data(), group, hd, tiles.data(), n, out.data());
        return output::floats(out.data(), out.size());
    };
    return r;
}

// Restores the variant the process chose when a test case ends.
struct keep_variant {
    isa::variant v = isa::active();
    ~keep_variant() { isa::select(v); }
};

} // namespace

TEST_CASE("every kernel of the dispatch table, under every variant this CPU runs, against the scalar variant") {
    keep_variant keep;
    const auto runs = kernel_runs();
    for (const char * name : isa::KERNEL_NAMES) CHECK_MESSAGE(runs.count(name) == 1, "no test run for ", name);
    if (isa::native_build()) {
        MESSAGE("GLOAS_NATIVE=ON: one variant, ", std::string(isa::active_name()), ", nothing to compare");
        return;
    }

    REQUIRE(isa::select(isa::variant::scalar));
    std::map<std::string, output> scalar;
    for (const auto & [name, run] : runs) scalar[name] = run();

    int n_variants = 0;
    for (int vi = 1; vi < isa::N_VARIANTS; ++vi) {
        const isa::variant v = isa::variant(vi);
        if (!isa::supported(v)) continue;
        ++n_variants;
        REQUIRE(isa::select(v));
        REQUIRE(isa::active() == v);
        for (const auto & nr : runs) {  // no structured binding: CAPTURE captures name (clang 14)
            const auto & name = nr.first;
            const auto & run = nr.second;
            CAPTURE(isa::name(v));
            CAPTURE(name);
            const output o = run(), & s = scalar[name];
            CHECK(o.b == s.b);
            REQUIRE(o.f.size() == s.f.size());
            float mag = 1.0f, diff = 0.0f;
            for (size_t i = 0; i < s.f.size(); ++i) {
                REQUIRE(std::isfinite(o.f[i]) == std::isfinite(s.f[i]));
                if (!std::isfinite(s.f[i])) continue;
                mag = std::max(mag, std::fabs(s.f[i]));
                diff = std::max(diff, std::fabs(o.f[i] - s.f[i]));
            }
            // float rounding in another order (and FMA) only
            CHECK(diff <= 1e-3f * mag);
        }
    }
    MESSAGE("variants compared with scalar: ", n_variants, " (active at start: ", std::string(isa::name(keep.v)), ")");
#if defined(__x86_64__) || defined(__i386__)
    if (!isa::native_build() && __builtin_cpu_supports("avx2")) CHECK(n_variants >= 1);
#endif
#if defined(__aarch64__)
    // qemu-user's -cpu max (tests/aarch64-qemu.sh) has both extensions
    if (!isa::native_build() && isa::supported(isa::variant::neon)) CHECK(n_variants == 1);
#endif
}

TEST_CASE("the variants carried: scalar always, the best the CPU runs chosen, none it lacks selectable") {
    keep_variant keep;
    if (!isa::native_build()) {
        CHECK(isa::built(isa::variant::scalar));
        CHECK(isa::supported(isa::variant::scalar));
    }
    const char * force = std::getenv("GLOAS_FORCE_SIMD");
    if (!force || !*force) {
        // the best supported one
        for (int vi = int(keep.v) + 1; vi < isa::N_VARIANTS; ++vi) CHECK_FALSE(isa::supported(isa::variant(vi)));
    } else {
        CHECK(std::string(isa::name(keep.v)) == force);
    }
    for (int vi = 0; vi < isa::N_VARIANTS; ++vi) {
        const isa::variant v = isa::variant(vi);
        CHECK(isa::select(v) == isa::supported(v));
        if (isa::supported(v)) {
            CHECK(isa::active() == v);
            CHECK(&isa::kernels() == &isa::kernels(v));
        }
    }
    CHECK(std::string(isa::active_name()).find(isa::name(isa::active())) == 0);
}

namespace {

// Runs the choice of variant in a child process under GLOAS_FORCE_SIMD=value:
// its exit status and what it wrote to stderr.
std::pair<int, std::string> choose_with(const char * value) {
    int fd[2];
    REQUIRE(pipe(fd) == 0);
    std::fflush(stdout);  // the child's exit flushes what it inherited
    std::fflush(stderr);
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 2);
        setenv("GLOAS_FORCE_SIMD", value, 1);
        isa::g_active.store(-1);
        isa::active();
        _exit(0);
    }
    close(fd[1]);
    std::string err;
    char buf[256];
    for (ssize_t k; (k = read(fd[0], buf, sizeof buf)) > 0;) err.append(buf, size_t(k));
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, err};
}

} // namespace

TEST_CASE("GLOAS_FORCE_SIMD: a variant the CPU runs is taken; an unknown one or one it lacks is refused, status 2") {
    auto [st, err] = choose_with("sse9");
    CHECK(st == 2);
    CHECK(err.find("GLOAS_FORCE_SIMD=sse9") != std::string::npos);
    CHECK(err.find("scalar, avx2, avx512 or neon") != std::string::npos);
    for (int vi = 0; vi < isa::N_VARIANTS; ++vi) {
        const isa::variant v = isa::variant(vi);
        CAPTURE(isa::name(v));
        std::tie(st, err) = choose_with(isa::name(v));
        if (isa::supported(v)) {
            CHECK(st == 0);
            CHECK(err.empty());
        } else {
            CHECK(st == 2);
            CHECK(err.find(std::string("GLOAS_FORCE_SIMD=") + isa::name(v)) != std::string::npos);
        }
    }
}

namespace {

// The page attention of every variant against the scalar twin (page_attend_scalar,
// page_attend_multi_scalar) of the same variant, on a geometry the shared
// case above lacks: two windows of 32 tokens, head_dim D (40: the register
// kernels' any-width path; 6: not a multiple of 4, the portable kernels),
// a group of 3.
void check_page_twins(int D) {
    page_geometry g;
    g.page_tokens = 64;
    g.n_layer = 2;
    g.n_head_kv = 2;
    g.head_dim = D;
    std::mt19937 rng{uint32_t(D)};
    std::vector<float> open(size_t(g.n_rows()) * size_t(g.page_tokens));
    for (int layer = 0; layer < g.n_layer; ++layer)
        for (int tok = 0; tok < g.page_tokens; ++tok) {
            const std::vector<float> k = randn(rng, size_t(g.n_embd_kv())), v = randn(rng, size_t(g.n_embd_kv()));
            page_put_token(g, open.data(), layer, tok, k.data(), v.data());
        }
    const int G = 3, NQ = 2;
    const std::vector<float> q = randn(rng, size_t(NQ * G * D), 0.3f);
    for (type t : {type::F16, type::Q8_0, type::Q4_0, type::F32, type::Q4_KIVI}) {
        std::vector<char> page(g.page_bytes(t));
        page_quantize(g, open.data(), t, page.data());
        for (int n : {64, 37, 1}) {
            for (bool multi : {false, true}) {
                CAPTURE(type_name(t));
                CAPTURE(n);
                CAPTURE(multi);
                const int nq = multi ? NQ : 1;
                const int32_t n_valid[NQ] = {n, 64 - n / 2};
                std::vector<float> out[2];
                for (int twin = 0; twin < 2; ++twin) {
                    std::vector<float> m(size_t(nq * G)), l(m.size()), acc(m.size() * size_t(D));
                    out[twin].resize(acc.size());
                    attn_state s{m.data(), l.data(), acc.data()};
                    attn_state_init(s, nq * G, D);
                    for (int layer = 0; layer < g.n_layer; ++layer) {  // two pages' worth of state
                        if (multi && twin) page_attend_multi_scalar(g, t, page.data(), layer, 1, nq, n_valid, q.data(), G, s);
                        else if (multi) page_attend_multi(g, t, page.data(), layer, 1, nq, n_valid, q.data(), G, s);
                        else if (twin) page_attend_scalar(g, t, page.data(), layer, 1, n, q.data(), G, s);
                        else page_attend(g, t, page.data(), layer, 1, n, q.data(), G, s);
                    }
                    attn_state_finish(s, nq * G, D, out[twin].data());
                }
                float diff = 0.0f, mag = 1.0f;
                for (size_t i = 0; i < out[0].size(); ++i) {
                    mag = std::max(mag, std::fabs(out[1][i]));
                    diff = std::max(diff, std::fabs(out[0][i] - out[1][i]));
                }
                CHECK(diff <= 1e-4f * mag);
            }
        }
    }
}

} // namespace

TEST_CASE("every variant's kernels at odd sizes (tails, partial tiles, other head sizes) against their scalar twins") {
    keep_variant keep;
    for (int vi = 0; vi < isa::N_VARIANTS; ++vi) {
        const isa::variant v = isa::variant(vi);
        if (!isa::supported(v)) continue;
        REQUIRE(isa::select(v));
        CAPTURE(isa::name(v));
        // dot products: an odd number of blocks, super-blocks, or of floats
        for (type wt : {type::F32, type::F16, type::BF16, type::Q8_0, type::Q4_0, type::Q4_K, type::Q5_K, type::Q6_K}) {
            CAPTURE(type_name(wt));
            const int64_t n = traits(wt).blck_size == 1 ? 1003 : traits(wt).blck_size * (wt == type::Q8_0 || wt == type::Q4_0 ? 7 : 3);
            std::mt19937 rng(uint32_t(wt) + 50);
            for (int i = 0; i < 4; ++i) {
                const std::vector<char> w = random_rows(wt, 1, n, rng), x = random_rows(traits(wt).vec_dot_type, 1, n, rng);
                const float d = dot_of(wt, n, w, x), r = traits(wt).vec_dot_ref(n, w.data(), x.data());
                CHECK(std::fabs(d - r) <= 1e-4f * std::max(1.0f, std::fabs(r)) + 1e-3f);
            }
        }
        // Quest bounds: a partial last tile, an odd group and head size
        {
            std::mt19937 rng(14);
            const int32_t group = 3, hd = 40, n = 77;
            std::vector<uint16_t> tiles(size_t((n + SUMMARY_TILE - 1) / SUMMARY_TILE) * 2 * hd * SUMMARY_TILE, 0x7e00);
            for (int32_t c = 0; c < n; ++c)
                for (int32_t d = 0; d < hd; ++d) {
                    const float a = randn(rng, 1)[0], b = randn(rng, 1)[0];
                    tiles[summary_index(hd, c, 0, d)] = fp16_floor(std::min(a, b));
                    tiles[summary_index(hd, c, 1, d)] = fp16_ceil(std::max(a, b));
                }
            tiles[summary_index(hd, 5, 1, 3)] = 0x7c00;  // +inf: its page's bound is +inf
            std::vector<float> q = randn(rng, size_t(group * hd));
            std::vector<float> out(static_cast<size_t>(n)), ref(static_cast<size_t>(n));
            page_score_bounds_f16(q.data(), group, hd, tiles.data(), n, out.data());
            page_score_bounds_f16_ref(q.data(), group, hd, tiles.data(), n, ref.data());
            for (int32_t c = 0; c < n; ++c) {
                CAPTURE(c);
                if (std::isinf(ref[size_t(c)])) CHECK(out[size_t(c)] == ref[size_t(c)]);
                else CHECK(std::fabs(out[size_t(c)] - ref[size_t(c)]) <= 1e-4f * std::max(1.0f, std::fabs(ref[size_t(c)])));
            }
        }
        check_page_twins(40);
        check_page_twins(6);
    }
}
