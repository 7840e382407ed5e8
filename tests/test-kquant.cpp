// K-quant and legacy weight types: dequantization bit-exact with llama.cpp
// (sha256 of every tensor of the reference files), quantizers against
// llama.cpp's error, dot kernels against dequantize-then-multiply, matmul on
// every new type, and a forward pass of a Q4_K_M model against its F32 twin.
#include "decoder/gguf.h"
#include "decoder/llama.h"
#include "decoder/model.h"
#include "quant/fp16.h"
#include "quant/quant.h"
#include "quant/types.h"
#include "tensor/ops.h"
#include "test-util.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace gloas;

namespace {

// ---- SHA-256 (FIPS 180-4), enough for hashing test vectors ---------------------
class sha256 {
public:
    void update(const void * data, size_t n) {
        const uint8_t * p = static_cast<const uint8_t *>(data);
        len_ += n;
        while (n > 0) {
            const size_t take = std::min(n, size_t(64) - fill_);
            std::memcpy(buf_ + fill_, p, take);
            fill_ += take;
            p += take;
            n -= take;
            if (fill_ == 64) {
                block(buf_);
                fill_ = 0;
            }
        }
    }
    std::string hex() {
        const uint64_t bits = len_ * 8;
        const uint8_t pad = 0x80;
        update(&pad, 1);
        const uint8_t zero = 0;
        while (fill_ != 56) update(&zero, 1);
        uint8_t l[8];
        for (int i = 0; i < 8; ++i) l[i] = uint8_t(bits >> (56 - 8 * i));
        update(l, 8);
        static const char * digits = "0123456789abcdef";
        std::string out;
        for (uint32_t v : h_)
            for (int s = 28; s >= 0; s -= 4) out += digits[(v >> s) & 0xF];
        return out;
    }

private:
    static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
    void block(const uint8_t * b) {
        static const uint32_t K[64] = {
            0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
            0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
            0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
            0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
            0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
            0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
            0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
            0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
        uint32_t w[64];
        for (int i = 0; i < 16; ++i)
            w[i] = uint32_t(b[4 * i]) << 24 | uint32_t(b[4 * i + 1]) << 16 | uint32_t(b[4 * i + 2]) << 8 | b[4 * i + 3];
        for (int i = 16; i < 64; ++i) {
            const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
            const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = h_[0], bb = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
        for (int i = 0; i < 64; ++i) {
            const uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
            const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c));
            h = g; g = f; f = e; e = d + t1; d = c; c = bb; bb = a; a = t1 + t2;
        }
        h_[0] += a; h_[1] += bb; h_[2] += c; h_[3] += d; h_[4] += e; h_[5] += f; h_[6] += g; h_[7] += h;
    }
    uint32_t h_[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    uint8_t buf_[64] = {};
    size_t fill_ = 0;
    uint64_t len_ = 0;
};

std::string sha256_hex(const void * p, size_t n) {
    sha256 h;
    h.update(p, n);
    return h.hex();
}

// All values of a tensor as f32 (little-endian on every machine we run on).
std::vector<float> dequantize(const gguf_tensor_info & t) {
    const int64_t rows = t.ne[1] * t.ne[2] * t.ne[3];
    std::vector<float> out(size_t(t.ne[0] * rows));
    const size_t rs = row_size(t.t, t.ne[0]);
    for (int64_t r = 0; r < rows; ++r)
        traits(t.t).to_float(static_cast<const char *>(t.data) + size_t(r) * rs, out.data() + r * t.ne[0], t.ne[0]);
    return out;
}

const char * KQUANT_FILES[] = {"synth256_Q4_K.gguf", "synth256_Q4_K_M.gguf", "synth256_Q5_K.gguf", "synth256_Q6_K.gguf"};

} // namespace

TEST_CASE("sha256: FIPS 180-4 test vectors") {
    CHECK(sha256_hex("", 0) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(sha256_hex("abc", 3) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const std::string two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    CHECK(sha256_hex(two.data(), two.size()) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const std::string mil(1000000, 'a');
    CHECK(sha256_hex(mil.data(), mil.size()) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("dequantization equals llama.cpp's, every tensor of the reference files") {
    const nlohmann::json ref = nlohmann::json::parse(test::read_file(test::data_file("kquant/kquant-dequant-reference.json")));
    for (const char * file : KQUANT_FILES) {
        INFO("file " << file);
        const auto & want = ref.at("models").at(file);
        auto g = gguf_file::open(test::require_model(std::string("kquant/") + file));
        CHECK(g->tensors().size() == want.size());
        for (const gguf_tensor_info & t : g->tensors()) {
            INFO("tensor " << t.name << " (" << type_name(t.t) << ")");
            REQUIRE(want.contains(t.name));
            const auto & w = want.at(t.name);
            CHECK(std::string(w.at("type").get<std::string>()) == [&] {
                std::string n = type_name(t.t);
                for (auto & c : n) c = char(std::toupper(static_cast<unsigned char>(c)));
                return n;
            }());
            const std::vector<float> v = dequantize(t);
            for (size_t i = 0; i < 8 && i < v.size(); ++i) CHECK(v[i] == w.at("first8").at(i).get<float>());
            CHECK(sha256_hex(v.data(), v.size() * sizeof(float)) == w.at("sha256").get<std::string>());
        }
    }
}

namespace {

// RMS of (a - b).
double rms_diff(const std::vector<float> & a, const std::vector<float> & b) {
    double s = 0.0;
    for (size_t i = 0; i < a.size(); ++i) s += (double(a[i]) - double(b[i])) * (double(a[i]) - double(b[i]));
    return std::sqrt(s / double(a.size()));
}

// Quantizes f32 values (rows of ne0) to `t` with its reference quantizer and
// returns the bytes.
std::vector<uint8_t> quantize(const std::vector<float> & x, int64_t ne0, type t) {
    const int64_t rows = int64_t(x.size()) / ne0;
    const size_t rs = row_size(t, ne0);
    std::vector<uint8_t> out(rs * size_t(rows));
    for (int64_t r = 0; r < rows; ++r) traits(t).from_float_ref(x.data() + r * ne0, out.data() + size_t(r) * rs, ne0);
    return out;
}

std::vector<float> dequantize(const std::vector<uint8_t> & q, int64_t ne0, type t) {
    const size_t rs = row_size(t, ne0);
    const int64_t rows = int64_t(q.size() / rs);
    std::vector<float> out(size_t(rows * ne0));
    for (int64_t r = 0; r < rows; ++r) traits(t).to_float(q.data() + size_t(r) * rs, out.data() + r * ne0, ne0);
    return out;
}

} // namespace

// Our reference quantizers reproduce llama-quantize's bytes (so its error too);
// the 5% bound is the issue's, checked on its own in case a tensor differs.
TEST_CASE("quantizers: llama.cpp's bytes, and per-tensor RMS error within 5% of llama.cpp's, on synth256") {
    auto f32 = gguf_file::open(test::require_model("kquant/synth256_f32.gguf"));
    int identical = 0, total = 0;
    for (const char * file : {"synth256_Q4_K.gguf", "synth256_Q5_K.gguf", "synth256_Q6_K.gguf", "synth256_Q4_K_M.gguf"}) {
        auto theirs = gguf_file::open(test::require_model(std::string("kquant/") + file));
        for (const gguf_tensor_info & t : theirs->tensors()) {
            if (!traits(t.t).is_quantized) continue;
            INFO(file << " tensor " << t.name << " (" << type_name(t.t) << ")");
            const gguf_tensor_info * src = f32->find_tensor(t.name);
            REQUIRE(src != nullptr);
            REQUIRE(src->t == type::F32);
            const std::vector<float> x = dequantize(*src);
            const std::vector<uint8_t> ours = quantize(x, t.ne[0], t.t);
            const double e_ours = rms_diff(x, dequantize(ours, t.ne[0], t.t));
            const double e_theirs = rms_diff(x, dequantize(t));
            CHECK(e_ours <= 1.05 * e_theirs);
            ++total;
            const bool same = ours.size() == t.nbytes && std::memcmp(ours.data(), t.data, t.nbytes) == 0;
            CHECK(same);
            identical += same;
        }
    }
    MESSAGE("tensors byte-identical to llama.cpp's: " << identical << " of " << total);
}

namespace {

const type NEW_WEIGHT_TYPES[] = {type::Q4_1, type::Q5_0, type::Q5_1, type::Q2_K,
                                 type::Q3_K, type::Q4_K, type::Q5_K, type::Q6_K};

using test::randn;

// Weight rows of several shapes: gaussian, an all-zero block, one row of
// a constant, one with a large outlier per block, one all positive.
std::vector<float> weight_rows(std::mt19937 & rng, int64_t rows, int64_t n) {
    std::vector<float> w = randn(rng, rows * n, 0.02f);
    for (int64_t r = 0; r < rows; ++r) {
        float * row = w.data() + r * n;
        switch (r % 5) {
        case 1: for (int i = 0; i < 32; ++i) row[i] = 0.0f; break;
        case 2: for (int64_t i = 0; i < n; ++i) row[i] = 0.01f; break;
        case 3: for (int64_t i = 0; i < n; i += 32) row[i] = 0.5f; break;
        case 4: for (int64_t i = 0; i < n; ++i) row[i] = std::fabs(row[i]); break;
        default: break;
        }
    }
    return w;
}

} // namespace

// The dot kernels against dequantize-then-multiply: with w' and x' the
// dequantized weight and activation rows, vec_dot and vec_dot_ref both equal
// sum_i w'_i x'_i in exact arithmetic except for float rounding of the
// per-block scaling (bound 1e-5 * sum_i |w'_i x'_i|) and, for Q4_1/Q5_1, the
// fp16 rounding of the activation's s = d*sum(q) (bound |m_w| * |s| * 2^-11
// per block).
TEST_CASE("dot kernels: fast == reference == dequantize-then-multiply, odd row counts") {
    std::mt19937 rng(5);
    for (type t : NEW_WEIGHT_TYPES) {
        const type_traits & tw = traits(t);
        const type_traits & tv = traits(tw.vec_dot_type);
        for (int64_t n : {256, 768, 2816}) {
            const int64_t rows = 7;
            const std::vector<float> wf = weight_rows(rng, rows, n);
            std::vector<float> xf = randn(rng, n, 1.0f);
            xf[5] = 40.0f;  // an outlier activation
            const size_t wrs = row_size(t, n);
            std::vector<uint8_t> wq(wrs * rows), xq(row_size(tw.vec_dot_type, n));
            for (int64_t r = 0; r < rows; ++r) tw.from_float_ref(wf.data() + r * n, wq.data() + size_t(r) * wrs, n);
            tv.from_float(xf.data(), xq.data(), n);
            std::vector<float> xd(static_cast<size_t>(n)), wd(static_cast<size_t>(n));
            tv.to_float(xq.data(), xd.data(), n);
            for (int64_t r = 0; r < rows; ++r) {
                INFO(type_name(t) << " n=" << n << " row " << r);
                const uint8_t * wr = wq.data() + size_t(r) * wrs;
                tw.to_float(wr, wd.data(), n);
                double exact = 0.0, mag = 0.0;
                for (int64_t i = 0; i < n; ++i) {
                    exact += double(wd[size_t(i)]) * double(xd[size_t(i)]);
                    mag += std::fabs(double(wd[size_t(i)]) * double(xd[size_t(i)]));
                }
                double tol = 1e-5 * mag + 1e-12;
                if (t == type::Q4_1 || t == type::Q5_1) {
                    const block_q8_1 * xb = reinterpret_cast<const block_q8_1 *>(xq.data());
                    for (int64_t b = 0; b < n / 32; ++b) {
                        const uint16_t m = t == type::Q4_1 ? reinterpret_cast<const block_q4_1 *>(wr)[b].m
                                                           : reinterpret_cast<const block_q5_1 *>(wr)[b].m;
                        tol += std::fabs(fp16_to_fp32(m)) * std::fabs(fp16_to_fp32(xb[b].s)) * 0x1p-11;
                    }
                }
                const float ref = tw.vec_dot_ref(n, wr, xq.data());
                const float fast = tw.vec_dot(n, wr, xq.data());
                CHECK(std::fabs(double(ref) - exact) <= tol);
                CHECK(std::fabs(double(fast) - exact) <= tol);
                CHECK(std::fabs(double(fast) - double(ref)) <= tol);
            }
        }
    }
}

// Activations quantized by the fast and the reference quantizer are the same bytes.
TEST_CASE("activation quantizers: fast == reference (q8_K, q8_1)") {
    std::mt19937 rng(6);
    for (int kind = 0; kind < 3; ++kind) {
        std::vector<float> x = randn(rng, 256 * 5, kind == 2 ? 1e-3f : 1.0f);
        if (kind == 1) {
            for (int i = 0; i < 256; ++i) x[size_t(i)] = 0.0f;      // all-zero super-block
            for (int i = 256; i < 512; ++i) x[size_t(i)] = float(i % 7 - 3) * 0.5f;  // ties after scaling
            x[600] = -9.0f;                                          // largest magnitude negative
        }
        std::vector<block_q8_K> a(5), b(5);
        quantize_row_q8_K_ref(x.data(), a.data(), 256 * 5);
        quantize_row_q8_K(x.data(), b.data(), 256 * 5);
        CHECK(std::memcmp(a.data(), b.data(), sizeof(block_q8_K) * 5) == 0);
        std::vector<block_q8_1> c(40), d(40);
        quantize_row_q8_1_ref(x.data(), c.data(), 256 * 5);
        quantize_row_q8_1(x.data(), d.data(), 256 * 5);
        CHECK(std::memcmp(c.data(), d.data(), sizeof(block_q8_1) * 40) == 0);
    }
}

// Round trip: every type reconstructs smooth random rows within a bound on
// its RMS error relative to the row's RMS (loose: a regression guard).
TEST_CASE("quantize -> dequantize: relative RMS error per type") {
    struct bound { type t; double rel; };
    const bound bounds[] = {{type::Q4_1, 0.12}, {type::Q5_0, 0.07}, {type::Q5_1, 0.06}, {type::Q2_K, 0.45},
                            {type::Q3_K, 0.22}, {type::Q4_K, 0.11}, {type::Q5_K, 0.055}, {type::Q6_K, 0.03}};
    std::mt19937 rng(7);
    const int64_t n = 256 * 16;
    const std::vector<float> x = randn(rng, n, 0.02f);
    double xs = 0.0;
    for (float v : x) xs += double(v) * v;
    for (const bound & b : bounds) {
        const std::vector<float> y = dequantize(quantize(x, n, b.t), n, b.t);
        const double rel = rms_diff(x, y) / std::sqrt(xs / double(n));
        INFO(type_name(b.t) << " relative rms " << rel);
        CHECK(rel <= b.rel);
    }
}

namespace {

// Elements of matmul's y that differ from matmul_ref's yr by more than the
// bound of test::matmul_mismatches, which allows for Q4_1/Q5_1's fp16 offsets.
int count_bad(const tensor & w, const std::vector<float> & x, int64_t n_tok, const std::vector<float> & y,
              const std::vector<float> & yr) {
    return test::matmul_mismatches(w, x, n_tok, y, yr, true);
}

} // namespace

TEST_CASE("matmul vs matmul_ref: every new weight type, token counts, odd row counts, threads") {
    std::mt19937 rng(8);
    test::for_thread_counts({1, 2}, [&](int nth) {
        for (type t : NEW_WEIGHT_TYPES) {
            for (int64_t n_in : {256, 768}) {
                for (int64_t n_out : {1, 5, 37}) {
                    const std::vector<float> wf = weight_rows(rng, n_out, n_in);
                    std::vector<uint8_t> wq(row_size(t, n_in) * size_t(n_out));
                    for (int64_t r = 0; r < n_out; ++r)
                        traits(t).from_float_ref(wf.data() + r * n_in, wq.data() + size_t(r) * row_size(t, n_in), n_in);
                    const tensor w = make_tensor_2d(t, n_in, n_out, wq.data());
                    for (int64_t n_tok : {1, 2, 3, 4, 9, 33}) {
                        const std::vector<float> x = randn(rng, n_tok * n_in, 1.0f);
                        std::vector<float> y(size_t(n_tok * n_out), -1.0f), yr(size_t(n_tok * n_out), -2.0f);
                        std::vector<char> work(ops::matmul_work_size(t, n_in, n_tok) + 1);
                        ops::matmul(w, x.data(), n_tok, y.data(), work.data());
                        ops::matmul_ref(w, x.data(), n_tok, yr.data());
                        const int bad = count_bad(w, x, n_tok, y, yr);
                        CHECK_MESSAGE(bad == 0, type_name(t), " n_in=", n_in, " n_out=", n_out, " n_tok=", n_tok, " threads=", nth);
                    }
                }
            }
        }
    });
}

// The K-quant paths: decode (1..3 tokens: AVX-512 direct kernels, weights
// read directly; matmul_blocks elsewhere) and prefill (interleaved tiles of
// 16 rows on AVX-512, 8 on AVX2) on rows longer than one reduction segment
// (9 super-blocks), row counts that are not a multiple of a tile, token
// counts around a micro-kernel's tokens and past one token chunk (~100
// tokens of 2304 values), outlier activations and all-zero, constant and
// one-signed weight rows.
TEST_CASE("matmul vs matmul_ref: K-quant tiles, long rows, many tokens, odd rows and tokens, 1 and 3 threads") {
    std::mt19937 rng(81);
    const int64_t n_in = 2304;
    for (type t : {type::Q4_K, type::Q5_K, type::Q6_K}) {
        const int64_t n_out = 11;
        const std::vector<float> wf = weight_rows(rng, n_out, n_in);
        std::vector<uint8_t> wq(row_size(t, n_in) * size_t(n_out));
        for (int64_t r = 0; r < n_out; ++r)
            traits(t).from_float_ref(wf.data() + r * n_in, wq.data() + size_t(r) * row_size(t, n_in), n_in);
        const tensor w = make_tensor_2d(t, n_in, n_out, wq.data());
        for (int64_t n_tok : {1, 2, 3, 5, 150}) {
            std::vector<float> x = randn(rng, n_tok * n_in, 1.0f);
            for (int64_t tk = 0; tk < n_tok; tk += 2) x[size_t(tk * n_in + 300 + tk)] = -60.0f;  // outliers
            std::vector<float> yr(size_t(n_tok * n_out), -2.0f);
            ops::matmul_ref(w, x.data(), n_tok, yr.data());
            test::for_thread_counts({1, 3}, [&](int nth) {
                std::vector<float> y(size_t(n_tok * n_out), -1.0f);
                std::vector<char> work(ops::matmul_work_size(t, n_in, n_tok));
                ops::matmul(w, x.data(), n_tok, y.data(), work.data());
                const int bad = count_bad(w, x, n_tok, y, yr);
                CHECK_MESSAGE(bad == 0, type_name(t), " n_tok=", n_tok, " threads=", nth);
            });
        }
    }
}

// A token's result does not depend on the other tokens of the call: the
// decode path (1 token) and the prefill path (the token inside a batch)
// agree with each other within the bound above.
TEST_CASE("matmul: K-quant decode and prefill paths agree on the same token") {
    std::mt19937 rng(82);
    const int64_t n_in = 768, n_out = 9, n_tok = 13;
    for (type t : {type::Q4_K, type::Q5_K, type::Q6_K}) {
        const std::vector<float> wf = weight_rows(rng, n_out, n_in);
        std::vector<uint8_t> wq(row_size(t, n_in) * size_t(n_out));
        for (int64_t r = 0; r < n_out; ++r)
            traits(t).from_float_ref(wf.data() + r * n_in, wq.data() + size_t(r) * row_size(t, n_in), n_in);
        const tensor w = make_tensor_2d(t, n_in, n_out, wq.data());
        const std::vector<float> x = randn(rng, n_tok * n_in, 1.0f);
        std::vector<float> yb(size_t(n_tok * n_out));
        std::vector<char> work(ops::matmul_work_size(t, n_in, n_tok));
        ops::matmul(w, x.data(), n_tok, yb.data(), work.data());
        for (int64_t tk = 0; tk < n_tok; tk += 4) {
            const std::vector<float> x1(x.begin() + tk * n_in, x.begin() + (tk + 1) * n_in);
            std::vector<float> y1(static_cast<size_t>(n_out));
            std::vector<float> yb1(yb.begin() + tk * n_out, yb.begin() + (tk + 1) * n_out);
            ops::matmul(w, x1.data(), 1, y1.data(), work.data());
            CHECK_MESSAGE(count_bad(w, x1, 1, y1, yb1) == 0, type_name(t), " token ", tk);
        }
    }
}

namespace {

// Logits of each position of `toks`, one token at a time, then the same tokens as one batch.
std::vector<std::vector<float>> run_logits(const model & m, const std::vector<int32_t> & toks, bool batch) {
    context_params cp;
    cp.n_ctx = 64;
    cp.kv.kv_type = type::F32;
    cp.kv.dir = "";
    context ctx(m, cp);
    std::vector<std::vector<float>> out;
    if (batch) {
        ctx.eval(toks.data(), int32_t(toks.size()), [&](int32_t, const float * l) { out.emplace_back(l, l + m.hp.n_vocab); });
    } else {
        for (int32_t t : toks) {
            const float * l = ctx.eval(&t, 1);
            out.emplace_back(l, l + m.hp.n_vocab);
        }
    }
    return out;
}

} // namespace

// The Q4_K_M file against its F32 original on the same tokens: per position
// the cosine of the logit vectors >= 0.99 and max |diff| <= 0.1 of the F32
// logits' range, decoding one token at a time and as one prefill batch.
TEST_CASE("forward pass: synth256 Q4_K_M logits match the F32 model's") {
    model_params pf, pq;
    pf.path = test::require_model("kquant/synth256_f32.gguf");
    pq.path = test::require_model("kquant/synth256_Q4_K_M.gguf");
    auto mf = model::load(pf);
    auto mq = model::load(pq);
    REQUIRE(mq->hp.n_vocab == mf->hp.n_vocab);
    CHECK(mq->output.t == type::Q6_K);
    CHECK(mq->layers[0].wq.t == type::Q4_K);
    const std::vector<int32_t> toks = {1, 100, 200, 37, 451, 12, 7, 300};
    double worst_cos = 1.0, worst_rel = 0.0;
    for (bool batch : {false, true}) {
        const auto lf = run_logits(*mf, toks, batch);
        const auto lq = run_logits(*mq, toks, batch);
        REQUIRE(lf.size() == toks.size());
        REQUIRE(lq.size() == toks.size());
        for (size_t p = 0; p < toks.size(); ++p) {
            double dot = 0.0, nf = 0.0, nq = 0.0, maxd = 0.0, lo = 1e30, hi = -1e30;
            for (size_t i = 0; i < lf[p].size(); ++i) {
                dot += double(lf[p][i]) * lq[p][i];
                nf += double(lf[p][i]) * lf[p][i];
                nq += double(lq[p][i]) * lq[p][i];
                maxd = std::max(maxd, std::fabs(double(lf[p][i]) - lq[p][i]));
                lo = std::min(lo, double(lf[p][i]));
                hi = std::max(hi, double(lf[p][i]));
            }
            const double cosine = dot / std::sqrt(nf * nq);
            INFO("batch " << batch << " position " << p << ": cosine " << cosine << ", max |diff| " << maxd << ", range " << hi - lo);
            CHECK(cosine >= 0.99);
            CHECK(maxd <= 0.1 * (hi - lo));
            worst_cos = std::min(worst_cos, cosine);
            worst_rel = std::max(worst_rel, maxd / (hi - lo));
        }
    }
    MESSAGE("Q4_K_M vs F32 logits: worst cosine " << worst_cos << ", worst max |diff| / range " << worst_rel);
}
