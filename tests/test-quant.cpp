// Element types, fp16/bf16 conversions and the Q8_0/Q4_0 block formats.
#include "quant/fp16.h"
#include "quant/quant.h"
#include "quant/types.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

using namespace gloas;

namespace {

// Every type the table has with kernels (not the K/V page types), in id order.
std::vector<type> all_types() {
    std::vector<type> v;
    for (uint32_t id = 0; id < TYPE_ID_LIMIT; ++id)
        if (type_known(id) && traits(type(id)).to_float) v.push_back(type(id));
    return v;
}

std::vector<float> pad32(std::vector<float> v) {
    v.resize(32, 0.0f);
    return v;
}

// One block of 32 values through the reference quantizer and the fast one:
// the reference gives scale d and the bytes qs (`what` names one of them in
// a failure), the fast one the same block.
template <typename block>
void check_block(void (*quantize_ref)(const float *, block *, int64_t), void (*quantize)(const float *, block *, int64_t),
                 const std::vector<float> & x, uint16_t d, const std::vector<int> & qs, const char * what) {
    REQUIRE(x.size() == 32);
    REQUIRE(qs.size() == sizeof(block::qs));
    block ref{}, fast{};
    quantize_ref(x.data(), &ref, 32);
    quantize(x.data(), &fast, 32);
    CHECK(ref.d == d);
    for (size_t j = 0; j < qs.size(); ++j) CHECK_MESSAGE(int(ref.qs[j]) == qs[j], what, j);
    CHECK(std::memcmp(&ref, &fast, sizeof ref) == 0);
}

void check_q8(const std::vector<float> & x, uint16_t d, const std::vector<int> & q) {
    check_block(quantize_row_q8_0_ref, quantize_row_q8_0, x, d, q, "value ");
}

void check_q4(const std::vector<float> & x, uint16_t d, const std::vector<int> & qs) {
    check_block(quantize_row_q4_0_ref, quantize_row_q4_0, x, d, qs, "byte ");
}

// Random rows of several shapes: gaussian, uniform, values on a grid that
// lands on rounding ties after scaling, and blocks with zeros.
std::vector<float> random_row(std::mt19937 & rng, int64_t n, int kind) {
    std::vector<float> x(static_cast<size_t>(n));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::uniform_real_distribution<float> ud(-3.0f, 3.0f);
    std::uniform_int_distribution<int> id(-127, 127);
    for (int64_t i = 0; i < n; ++i) {
        switch (kind % 4) {
        case 0: x[size_t(i)] = nd(rng); break;
        case 1: x[size_t(i)] = ud(rng) * 1e-3f; break;
        case 2: x[size_t(i)] = float(id(rng)) + 0.5f; break;  // amax 127.5 or less: ties everywhere
        default: x[size_t(i)] = (i / 32) % 3 == 0 ? 0.0f : nd(rng) * 100.0f; break;
        }
    }
    return x;
}

} // namespace

TEST_CASE("traits: entry i describes type i") {
    for (type t : all_types()) {
        const type_traits & tr = traits(t);
        INFO(tr.name);
        CHECK(tr.id == t);
        type back{};
        REQUIRE(type_from_name(tr.name, &back));
        CHECK(back == t);
        CHECK(std::strcmp(type_name(t), tr.name) == 0);
        CHECK(bool(tr.to_float));
        CHECK(bool(tr.from_float_ref));
        CHECK(bool(tr.from_float));
        CHECK(bool(tr.vec_dot));
        CHECK(bool(tr.vec_dot_ref));
        REQUIRE(type_known(uint32_t(tr.vec_dot_type)));
        CHECK(traits(tr.vec_dot_type).blck_size == tr.blck_size);
        CHECK(tr.is_quantized == (tr.blck_size > 1));
        CHECK(row_size(t, 2 * tr.blck_size) == 2 * tr.type_size);
        REQUIRE(type_known(uint32_t(tr.fallback)));
        CHECK(type_is_weight(tr.fallback) == type_is_weight(t));
        CHECK(type_is_weight(t) == (tr.file_type != NO_FILE_TYPE));
    }
    CHECK(traits(type::F32).blck_size == 1);
    CHECK(traits(type::F32).type_size == 4);
    CHECK(traits(type::F16).type_size == 2);
    CHECK(traits(type::BF16).type_size == 2);
    CHECK(traits(type::Q8_0).blck_size == 32);
    CHECK(traits(type::Q8_0).type_size == 34);
    CHECK(traits(type::Q4_0).blck_size == 32);
    CHECK(traits(type::Q4_0).type_size == 18);
    CHECK(traits(type::Q4_0).vec_dot_type == type::Q8_0);
    CHECK(traits(type::Q8_0).vec_dot_type == type::Q8_0);
    CHECK(traits(type::Q4_0).is_quantized);
    CHECK_FALSE(traits(type::F16).is_quantized);
    CHECK(std::strcmp(traits(type::Q4_0).name, "q4_0") == 0);
    CHECK(std::strcmp(traits(type::BF16).name, "bf16") == 0);

    for (uint32_t id = TYPE_ID_LIMIT; id < TYPE_ID_LIMIT + 5; ++id) CHECK_FALSE(type_known(id));
    CHECK_FALSE(type_known(4));  // ggml's removed Q4_2
    CHECK_FALSE(type_known(5));
    CHECK_FALSE(type_known(0xffffffffu));

    type t{};
    for (const char * bad : {"q8", "q8_0x", ""}) CHECK_FALSE(type_from_name(bad, &t));

    CHECK(row_size(type::F32, 7) == 28);
    CHECK(row_size(type::F16, 7) == 14);
    CHECK(row_size(type::Q8_0, 64) == 68);
    CHECK(row_size(type::Q4_0, 4096) == 128 * 18);
    CHECK(row_size(type::Q4_K, 4096) == 16 * 144);
    CHECK(row_size(type::Q6_K, 512) == 2 * 210);
    CHECK(traits(type::Q4_K).vec_dot_type == type::Q8_K);
    CHECK(traits(type::Q4_1).vec_dot_type == type::Q8_1);
    CHECK(traits(type::Q5_0).vec_dot_type == type::Q8_0);
    // names are matched without regard to case
    const std::pair<const char *, type> names[] = {
        {"Q8_0", type::Q8_0}, {"BF16", type::BF16}, {"q4_k", type::Q4_K}, {"Q6_K", type::Q6_K}};
    for (const auto & nw : names) {  // no structured binding: INFO captures name (clang 14)
        const char * name = nw.first;
        INFO(name);
        CHECK(type_from_name(name, &t));
        CHECK(t == nw.second);
    }
    CHECK(std::strcmp(type_name(type::Q5_K), "q5_K") == 0);
}

TEST_CASE("traits: llama.cpp's file types and fallbacks") {
    // LLAMA_FTYPE_ALL_F32, MOSTLY_F16, ...; a K-quant alone as its _S mix
    const std::pair<type, uint32_t> file_types[] = {
        {type::F32, 0},  {type::F16, 1},   {type::Q4_0, 2},  {type::Q4_1, 3},  {type::Q8_0, 7},
        {type::Q5_0, 8}, {type::Q5_1, 9},  {type::Q2_K, 10}, {type::Q3_K, 11}, {type::Q4_K, 14},
        {type::Q5_K, 16}, {type::Q6_K, 18}, {type::BF16, 32}};
    for (const auto & ft : file_types) {
        INFO(type_name(ft.first));
        CHECK(traits(ft.first).file_type == ft.second);
        CHECK(type_is_weight(ft.first));
    }
    CHECK(traits(type::Q8_1).file_type == NO_FILE_TYPE);
    CHECK(traits(type::Q8_K).file_type == NO_FILE_TYPE);
    CHECK_FALSE(type_is_weight(type::Q8_K));
    CHECK_FALSE(type_is_weight(type(4)));
    // llama_tensor_get_type's choices for rows that are not a multiple of 256
    CHECK(traits(type::Q2_K).fallback == type::Q4_0);
    CHECK(traits(type::Q3_K).fallback == type::Q4_0);
    CHECK(traits(type::Q4_K).fallback == type::Q5_0);
    CHECK(traits(type::Q5_K).fallback == type::Q5_1);
    CHECK(traits(type::Q6_K).fallback == type::Q8_0);
    CHECK(traits(type::Q4_0).fallback == type::Q4_0);
    // id order, only the types `keep` accepts
    const std::string weights = type_names(type_is_weight);
    CHECK(weights.rfind("f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q3_K, q4_K, q5_K, q6_K, ", 0) == 0);
    CHECK(weights.find("q8_K") == std::string::npos);
    CHECK(weights.find("q8_1") == std::string::npos);
    CHECK(type_names([](type t) { return t == type::BF16 || t == type::Q8_1; }) == "q8_1, bf16");
}

// Every row of the table: the fast quantizer writes the reference's bytes and
// the fast dot product equals the reference one up to float rounding.
TEST_CASE("traits: every type's fast kernels against its references") {
    std::mt19937 rng(21);
    for (type t : all_types()) {
        const type_traits & tw = traits(t);
        const type_traits & tv = traits(tw.vec_dot_type);
        for (int kind = 0; kind < 4; ++kind) {
            for (int64_t n : {256, 768}) {
                INFO(tw.name << " kind " << kind << " n " << n);
                const std::vector<float> w = random_row(rng, n, kind), x = random_row(rng, n, kind + 1);
                std::vector<uint8_t> wr(row_size(t, n)), wf(row_size(t, n)), xq(row_size(tw.vec_dot_type, n));
                tw.from_float_ref(w.data(), wr.data(), n);
                tw.from_float(w.data(), wf.data(), n);
                CHECK(std::memcmp(wr.data(), wf.data(), wr.size()) == 0);
                tv.from_float(x.data(), xq.data(), n);
                std::vector<float> wd(static_cast<size_t>(n)), xd(static_cast<size_t>(n));
                tw.to_float(wr.data(), wd.data(), n);
                tv.to_float(xq.data(), xd.data(), n);
                double mag = 0.0;
                for (int64_t i = 0; i < n; ++i) mag += std::fabs(double(wd[size_t(i)]) * double(xd[size_t(i)]));
                const float ref = tw.vec_dot_ref(n, wr.data(), xq.data());
                const float fast = tw.vec_dot(n, wr.data(), xq.data());
                CHECK(std::fabs(double(fast) - double(ref)) <= 1e-5 * mag + 1e-30);
            }
        }
    }
}

TEST_CASE("q8_0: ggml's reference bytes") {
    // all zero: d = 0, q = 0
    check_q8(pad32({}), 0x0000, std::vector<int>(32, 0));
    // amax 127 gives d = 1, so x*id = x: ties round half away from zero, and
    // the float just below 0.5 rounds to 0 (trunc(x + 0.5) would give 1)
    const float bh = std::nextafter(0.5f, 0.0f);
    check_q8(pad32({2.5f, -2.5f, 0.5f, -0.5f, 1.5f, -1.5f, 127.0f, 0.0f, 3.5f, -3.5f, 126.5f, -126.5f, bh, -bh,
                    std::nextafter(1.5f, 0.0f), std::nextafter(2.5f, 3.0f)}), 0x3c00,
             {3, -3, 1, -1, 2, -2, 127, 0, 4, -4, 127, -127, 0, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
    // largest magnitude negative (and first): d = 4/127
    {
        std::vector<float> x(32);
        x[0] = -4.0f;
        for (int j = 1; j < 32; ++j) x[size_t(j)] = 0.25f * float(j - 15);
        check_q8(x, 0x2808, {-127, -111, -103, -95, -87, -79, -71, -64, -56, -48, -40, -32, -24, -16, -8, 0,
                             8, 16, 24, 32, 40, 48, 56, 64, 71, 79, 87, 95, 103, 111, 119, 127});
    }
    // a ramp of inexact values
    {
        std::vector<float> x(32);
        for (int j = 0; j < 32; ++j) x[size_t(j)] = float(0.1 * (j - 16));
        check_q8(x, 0x2273, {-127, -119, -111, -103, -95, -87, -79, -71, -64, -56, -48, -40, -32, -24, -16, -8,
                             0, 8, 16, 24, 32, 40, 48, 56, 64, 71, 79, 87, 95, 103, 111, 119});
    }
}

TEST_CASE("q4_0: ggml's reference bytes") {
    // all zero: d = 0 / -8 = -0 (fp16 0x8000), every value (0*0 + 8.5) -> 8
    check_q4(pad32({}), 0x8000, std::vector<int>(16, 0x88));
    // largest magnitude negative: max = -8, d = 1; q = min(15, trunc(x + 8.5));
    // 0.49999997 + 8.5 rounds to 9.0 in float, so it lands on 9 as in ggml
    const float below_half = std::nextafter(0.5f, 0.0f);
    check_q4(pad32({-8.0f, 7.0f, 7.5f, 0.5f, -0.5f, 1.5f, below_half, -7.6f}), 0x3c00,
             {0x80, 0x8f, 0x8f, 0x89, 0x88, 0x8a, 0x89, 0x80, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88});
    // largest magnitude positive: d = -1, so 8 -> 0 and -8 -> 16.5, clamped to 15
    check_q4(pad32({8.0f, -8.0f, -7.0f, 0.5f, -0.5f}), 0xbc00,
             {0x80, 0x8f, 0x8f, 0x88, 0x89, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88});
    // equal magnitudes: the first one seen sets the sign of d
    check_q4(pad32({4.0f, -4.0f, 1.0f, -1.0f}), 0xb800,
             {0x80, 0x8f, 0x86, 0x8a, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88});
    check_q4(pad32({-4.0f, 4.0f, 1.0f, -1.0f}), 0x3800,
             {0x80, 0x8f, 0x8a, 0x86, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88});
    // a ramp: both nibbles in use (low = values 0..15, high = values 16..31)
    {
        std::vector<float> x(32);
        for (int j = 0; j < 32; ++j) x[size_t(j)] = float(0.1 * (j - 16));
        check_q4(x, 0x3266, {0x80, 0x91, 0x91, 0xa2, 0xa2, 0xb3, 0xb3, 0xc4, 0xc4, 0xd5, 0xd5, 0xe6, 0xe6, 0xf7, 0xf7, 0xf8});
    }
}

TEST_CASE("quantizers: fast == reference, byte for byte, on random rows") {
    std::mt19937 rng(1234);
    for (int kind = 0; kind < 4; ++kind) {
        for (int64_t nb : {1, 2, 3, 7, 64, 129}) {
            const int64_t n = nb * 32;
            std::vector<float> x = random_row(rng, n + 1, kind);
            for (int off = 0; off < 2; ++off) {  // off = 1: start not 64-byte aligned
                std::vector<block_q8_0> r8(size_t(nb) + 1), f8(size_t(nb) + 1);
                quantize_row_q8_0_ref(x.data() + off, r8.data(), n);
                quantize_row_q8_0(x.data() + off, f8.data() + off, n);
                CHECK_MESSAGE(std::memcmp(r8.data(), f8.data() + off, size_t(nb) * sizeof(block_q8_0)) == 0,
                              "q8_0 kind ", kind, " blocks ", nb, " offset ", off);
                std::vector<block_q4_0> r4(static_cast<size_t>(nb)), f4(static_cast<size_t>(nb));
                quantize_row_q4_0_ref(x.data() + off, r4.data(), n);
                quantize_row_q4_0(x.data() + off, f4.data(), n);
                CHECK(std::memcmp(r4.data(), f4.data(), size_t(nb) * sizeof(block_q4_0)) == 0);
                // the traits table points at the same kernels
                std::vector<block_q8_0> t8(static_cast<size_t>(nb));
                traits(type::Q8_0).from_float(x.data() + off, t8.data(), n);
                CHECK(std::memcmp(r8.data(), t8.data(), size_t(nb) * sizeof(block_q8_0)) == 0);
            }
        }
    }
}

TEST_CASE("quantizers: round trip error within half a step (q8_0) / one step (q4_0)") {
    // The bound adds what rounding d to fp16 costs: |q| * |d - fp16(d)|, with
    // |q| <= 127 (q8_0) or 8 (q4_0); it matters for subnormal fp16 scales.
    std::mt19937 rng(99);
    const int64_t n = 32 * 50;
    for (int kind = 0; kind < 4; ++kind) {
        std::vector<float> x = random_row(rng, n, kind), y(static_cast<size_t>(n));
        std::vector<float> amax(static_cast<size_t>(n / 32), 0.0f);
        for (int64_t i = 0; i < n; ++i) amax[size_t(i / 32)] = std::fmax(amax[size_t(i / 32)], std::fabs(x[size_t(i)]));
        std::vector<block_q8_0> q8(static_cast<size_t>(n / 32));
        quantize_row_q8_0(x.data(), q8.data(), n);
        dequantize_row_q8_0(q8.data(), y.data(), n);
        int bad = 0;
        for (int64_t i = 0; i < n; ++i) {
            const double d = double(amax[size_t(i / 32)]) / 127.0;
            const double d16 = fp16_to_fp32(q8[size_t(i / 32)].d);
            const double bound = 0.5 * d + 127.0 * std::fabs(d - d16) + 1e-6 * d;
            bad += std::fabs(double(x[size_t(i)]) - double(y[size_t(i)])) > bound;
        }
        CHECK_MESSAGE(bad == 0, "q8_0 kind ", kind);
        std::vector<block_q4_0> q4(static_cast<size_t>(n / 32));
        quantize_row_q4_0(x.data(), q4.data(), n);
        dequantize_row_q4_0(q4.data(), y.data(), n);
        bad = 0;
        for (int64_t i = 0; i < n; ++i) {
            const double d = double(amax[size_t(i / 32)]) / 8.0;
            const double d16 = std::fabs(fp16_to_fp32(q4[size_t(i / 32)].d));
            const double bound = d + 8.0 * std::fabs(d - d16) + 1e-6 * d;
            bad += std::fabs(double(x[size_t(i)]) - double(y[size_t(i)])) > bound;
        }
        CHECK_MESSAGE(bad == 0, "q4_0 kind ", kind);
    }
}

TEST_CASE("fp16: edge values") {
    const float inf = std::numeric_limits<float>::infinity();
    CHECK(fp32_to_fp16(0.0f) == 0x0000);
    CHECK(fp32_to_fp16(-0.0f) == 0x8000);
    CHECK(fp32_to_fp16(1.0f) == 0x3c00);
    CHECK(fp32_to_fp16(-2.0f) == 0xc000);
    CHECK(fp32_to_fp16(65504.0f) == 0x7bff);                 // max finite
    CHECK(fp32_to_fp16(65519.99f) == 0x7bff);                // below the halfway point to 65536
    CHECK(fp32_to_fp16(65520.0f) == 0x7c00);                 // tie: rounds to even, i.e. inf
    CHECK(fp32_to_fp16(1e10f) == 0x7c00);
    CHECK(fp32_to_fp16(inf) == 0x7c00);
    CHECK(fp32_to_fp16(-inf) == 0xfc00);
    CHECK(fp32_to_fp16(std::ldexp(1.0f, -14)) == 0x0400);    // min normal
    CHECK(fp32_to_fp16(std::ldexp(1023.0f, -24)) == 0x03ff); // max subnormal
    CHECK(fp32_to_fp16(std::ldexp(1.0f, -24)) == 0x0001);    // min subnormal
    CHECK(fp32_to_fp16(std::ldexp(1.0f, -25)) == 0x0000);    // tie: to even (0)
    CHECK(fp32_to_fp16(std::ldexp(1.0f, -25) * 1.0000001f) == 0x0001);
    CHECK(fp32_to_fp16(std::ldexp(3.0f, -25)) == 0x0002);    // tie between 1 and 2: to 2
    CHECK(fp32_to_fp16(std::ldexp(1.0f, -26)) == 0x0000);
    CHECK(fp32_to_fp16(-std::ldexp(1.0f, -30)) == 0x8000);
    CHECK(fp32_to_fp16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);       // tie: to even
    CHECK(fp32_to_fp16(1.0f + std::ldexp(3.0f, -11)) == 0x3c02);       // tie: to even
    CHECK(fp32_to_fp16(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)) == 0x3c01);
    CHECK(fp32_to_fp16(std::ldexp(2047.0f, -25)) == 0x0400); // rounds up into the normals
    CHECK(fp32_to_fp16(std::numeric_limits<float>::denorm_min()) == 0x0000);
    const uint16_t hn = fp32_to_fp16(std::numeric_limits<float>::quiet_NaN());
    CHECK((hn & 0x7c00) == 0x7c00);
    CHECK((hn & 0x03ff) != 0);

    CHECK(fp16_to_fp32(0x3c00) == 1.0f);
    CHECK(fp16_to_fp32(0x7bff) == 65504.0f);
    CHECK(fp16_to_fp32(0x0001) == std::ldexp(1.0f, -24));
    CHECK(fp16_to_fp32(0x03ff) == std::ldexp(1023.0f, -24));
    CHECK(fp16_to_fp32(0x0400) == std::ldexp(1.0f, -14));
    CHECK(fp16_to_fp32(0x7c00) == inf);
    CHECK(fp16_to_fp32(0xfc00) == -inf);
    CHECK(std::isnan(fp16_to_fp32(0x7e00)));
    CHECK(std::isnan(fp16_to_fp32(0x7c01)));
    CHECK(std::signbit(fp16_to_fp32(0x8000)));
}

TEST_CASE("fp16: every half round-trips; rows match the scalar conversions") {
    std::vector<uint16_t> h(65536 + 1), h2(65536 + 1);
    std::vector<float> f(65536 + 1), f2(65536 + 1);
    for (uint32_t i = 0; i < 65536; ++i) h[i + 1] = uint16_t(i);
    fp16_to_fp32_row(h.data() + 1, f.data() + 1, 65536);  // unaligned start
    int bad_widen = 0, bad_trip = 0;
    for (uint32_t i = 0; i < 65536; ++i) {
        const float s = fp16_to_fp32(uint16_t(i));
        bad_widen += f32_bits(s) != f32_bits(f[i + 1]);
        const bool nan = std::isnan(s);
        if (nan) {
            bad_trip += !((fp32_to_fp16(s) & 0x7c00) == 0x7c00 && (fp32_to_fp16(s) & 0x3ff) != 0);
        } else {
            bad_trip += fp32_to_fp16(s) != uint16_t(i);
        }
    }
    CHECK(bad_widen == 0);
    CHECK(bad_trip == 0);

    // fp32 -> fp16 on random bit patterns and on values near half ties
    std::mt19937 rng(7);
    const int64_t n = 200003;
    for (int64_t i = 0; i < n; ++i) {
        uint32_t u = rng();
        if (i % 3 == 1) u = (u & 0x80000000u) | (0x33000000u + (u % 0x14800000u));  // the half range
        if (i % 3 == 2) u = (u & ~0x1fffu) | 0x1000u | (u & 1u ? 0x2000u : 0u);      // exact ties
        f2[size_t(i % 65536)] = f32_from_bits(u);
        if (i % 65536 == 65535 || i == n - 1) {
            const int64_t m = i % 65536 + 1;
            fp32_to_fp16_row(f2.data(), h2.data(), m);
            int bad = 0;
            for (int64_t j = 0; j < m; ++j) bad += h2[size_t(j)] != fp32_to_fp16(f2[size_t(j)]);
            CHECK(bad == 0);
        }
    }
}

TEST_CASE("bf16: edge values, ties to even, rows match the scalar conversions") {
    CHECK(fp32_to_bf16(1.0f) == 0x3f80);
    CHECK(fp32_to_bf16(f32_from_bits(0x3f808000)) == 0x3f80);  // tie: to even
    CHECK(fp32_to_bf16(f32_from_bits(0x3f818000)) == 0x3f82);  // tie: to even
    CHECK(fp32_to_bf16(f32_from_bits(0x3f808001)) == 0x3f81);
    CHECK(fp32_to_bf16(f32_from_bits(0x7f7fffff)) == 0x7f80);  // max finite f32 rounds to inf
    CHECK(fp32_to_bf16(f32_from_bits(0x7f7f0000)) == 0x7f7f);  // max finite bf16
    CHECK(fp32_to_bf16(std::numeric_limits<float>::infinity()) == 0x7f80);
    CHECK(fp32_to_bf16(-std::numeric_limits<float>::infinity()) == 0xff80);
    CHECK(fp32_to_bf16(f32_from_bits(0x7f800001)) == 0x7fc0);  // signaling nan: quieted, not inf
    CHECK(fp32_to_bf16(f32_from_bits(0xffc00001)) == 0xffc0);
    CHECK(fp32_to_bf16(f32_from_bits(0x00008000)) == 0x0000);  // subnormal tie
    CHECK(fp32_to_bf16(f32_from_bits(0x00018000)) == 0x0002);
    CHECK(fp32_to_bf16(f32_from_bits(0x80000001)) == 0x8000);
    CHECK(bf16_to_fp32(0x3f80) == 1.0f);
    CHECK(bf16_to_fp32(0x0001) == f32_from_bits(0x00010000));

    std::vector<uint16_t> h(65537), h2(65537);
    std::vector<float> f(65537);
    for (uint32_t i = 0; i < 65536; ++i) h[i + 1] = uint16_t(i);
    bf16_to_fp32_row(h.data() + 1, f.data() + 1, 65536);
    fp32_to_bf16_row(f.data() + 1, h2.data() + 1, 65536);
    int bad = 0;
    for (uint32_t i = 0; i < 65536; ++i) {
        bad += f32_bits(f[i + 1]) != (i << 16);
        const bool nan = (i & 0x7fff) > 0x7f80;
        bad += nan ? h2[i + 1] != (i | 64) : h2[i + 1] != i;
    }
    CHECK(bad == 0);

    std::mt19937 rng(11);
    std::vector<float> x(4099);
    for (auto & v : x) v = f32_from_bits(rng());
    for (size_t i = 0; i < x.size(); i += 5) x[i] = f32_from_bits((f32_bits(x[i]) & ~0xffffu) | 0x8000u);  // ties
    std::vector<uint16_t> y(x.size());
    fp32_to_bf16_row(x.data() + 1, y.data() + 1, int64_t(x.size()) - 1);
    bad = 0;
    for (size_t i = 1; i < x.size(); ++i) bad += y[i] != fp32_to_bf16(x[i]);
    CHECK(bad == 0);
}
