// gloas-quantize: every quantized tensor equals the reference quantizer applied
// to the input's values, kept tensors are unchanged, metadata is copied, and
// the quantized models load and generate.
#include "decoder/gguf.h"
#include "decoder/llama-gguf.h"
#include "decoder/llama.h"
#include "decoder/model.h"
#include "decoder/sampler.h"
#include "quant/fp16.h"
#include "quant/quant.h"
#include "base/error.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <sys/stat.h>
#include <vector>

using namespace gloas;

namespace {

using test::contains;
using test::file_exists;

// Greedy text of `n` new tokens after `prompt`.
std::string generate(const model & m, const std::string & prompt, int n) {
    context_params cp;
    context ctx(m, cp);
    std::vector<int32_t> toks = m.tok.encode(prompt, true);
    sampler_params sp;
    sp.temp = 0.0f;
    sampler smp(sp, m.hp.n_vocab);
    const float * logits = ctx.eval(toks.data(), int32_t(toks.size()));
    std::string out;
    int32_t prev = toks.back();
    for (int i = 0; i < n; ++i) {
        int32_t next = smp.sample(logits);
        out += m.tok.token_to_piece(prev, next);
        prev = next;
        logits = ctx.eval(&next, 1);
    }
    return out;
}

// The bytes the reference quantizer gives for tensor `t` (f32, f16 or bf16) as type q.
std::vector<uint8_t> reference(const gguf_tensor_info & t, type q) {
    const int64_t ne0 = t.ne[0], rows = t.ne[1] * t.ne[2] * t.ne[3];
    const size_t rs = row_size(q, ne0);
    std::vector<uint8_t> out(rs * size_t(rows));
    std::vector<float> x(static_cast<size_t>(ne0));
    for (int64_t r = 0; r < rows; ++r) {
        if (t.t == type::F32) std::memcpy(x.data(), static_cast<const float *>(t.data) + r * ne0, size_t(ne0) * 4);
        else {
            const uint16_t * h = static_cast<const uint16_t *>(t.data) + r * ne0;
            for (int64_t i = 0; i < ne0; ++i) x[size_t(i)] = t.t == type::F16 ? fp16_to_fp32(h[i]) : bf16_to_fp32(h[i]);
        }
        uint8_t * o = out.data() + size_t(r) * rs;
        if (q == type::Q8_0) quantize_row_q8_0_ref(x.data(), reinterpret_cast<block_q8_0 *>(o), ne0);
        else if (q == type::Q4_0) quantize_row_q4_0_ref(x.data(), reinterpret_cast<block_q4_0 *>(o), ne0);
        else FAIL("unexpected type");
    }
    return out;
}

// Checks `out` against `in`: each tensor has the expected type (from `want`),
// quantized ones equal the reference bytes, kept ones equal the input bytes.
template <typename F>
void check_quantized(const gguf_file & in, const gguf_file & out, F want) {
    REQUIRE(out.tensors().size() == in.tensors().size());
    for (size_t i = 0; i < in.tensors().size(); ++i) {
        const gguf_tensor_info & a = in.tensors()[i];
        const gguf_tensor_info & b = out.tensors()[i];
        INFO("tensor " << a.name);
        CHECK(a.name == b.name);
        CHECK(a.n_dims == b.n_dims);
        for (int d = 0; d < 4; ++d) CHECK(a.ne[d] == b.ne[d]);
        const type w = want(a);
        REQUIRE(b.t == w);
        if (w == a.t) {
            REQUIRE(a.nbytes == b.nbytes);
            CHECK(std::memcmp(a.data, b.data, a.nbytes) == 0);
        } else {
            const std::vector<uint8_t> ref = reference(a, w);
            REQUIRE(ref.size() == b.nbytes);
            CHECK(std::memcmp(ref.data(), b.data, b.nbytes) == 0);
        }
    }
    // Metadata: everything copied, file type updated.
    for (const auto & kv : in.metadata()) {  // no structured binding: INFO captures it (clang 14)
        const auto & k = kv.first;
        INFO(k);
        CHECK(out.find(k) != nullptr);
    }
}

} // namespace

TEST_CASE("quantize: stories260K to q8_0 and q4_0 equals the reference quantizers") {
    const std::string dir = test::temp_dir("quantize");
    const std::string src = test::require_model("stories260K_f32.gguf");
    auto in = gguf_file::open(src);
    for (type q : {type::Q8_0, type::Q4_0}) {
        INFO(type_name(q));
        const std::string out = dir + "/s-" + type_name(q) + ".gguf";
        auto r = test::run_tool("gloas-quantize", {src, out, type_name(q), "-t", "2"});
        INFO(r.err);
        REQUIRE(r.status == 0);
        CHECK(contains(r.err, "MiB ->"));
        auto f = gguf_file::open(out);
        // 1-D tensors and the 172-wide ffn_down rows keep f32; output.weight is
        // q8_0 by default; token_embd.weight (untied here) takes the target type.
        check_quantized(*in, *f, [&](const gguf_tensor_info & t) {
            if (t.n_dims < 2 || t.ne[0] % 32 != 0) return t.t;
            if (t.name == "output.weight") return type::Q8_0;
            return q;
        });
        CHECK(f->get_u32("general.file_type", 99) == (q == type::Q8_0 ? 7u : 2u));
        CHECK(f->get_u32("general.quantization_version", 0) == 2);
        auto m = model::load({out, ""});
        CHECK(m->layers[0].wq.t == q);
        CHECK(m->layers[0].ffn_down.t == type::F32);
        CHECK(generate(*m, "Once upon a time", 24).size() > 20);
    }
}

TEST_CASE("quantize: a model with 32-multiple dims quantizes every matrix; output and embedding types are selectable") {
    const std::string dir = test::temp_dir("quantize-tiny");
    const std::string src = dir + "/tiny-f16.gguf";
    auto r = test::run_tool("gloas-gen-model", {"--preset", "tiny", "--type", "f16", "--seed", "3", "-q", "-o", src});
    INFO(r.err);
    REQUIRE(r.status == 0);
    auto in = gguf_file::open(src);
    const std::string out = dir + "/tiny-q4_0.gguf";
    r = test::run_tool("gloas-quantize", {src, out, "q4_0", "--output-type", "q4_0", "--embd-type", "q8_0", "-q"});
    REQUIRE(r.status == 0);
    auto f = gguf_file::open(out);
    check_quantized(*in, *f, [&](const gguf_tensor_info & t) {
        if (t.n_dims < 2) return t.t;
        if (t.name == "token_embd.weight") return type::Q8_0;
        return type::Q4_0;
    });
    auto m = model::load({out, ""});
    CHECK(m->weight_type == type::Q4_0);
    CHECK(generate(*m, "hello", 8).size() > 0);

    // Output types that are not quantized are also accepted.
    const std::string out2 = dir + "/tiny-q8_0.gguf";
    r = test::run_tool("gloas-quantize", {src, out2, "q8_0", "--output-type", "f16", "-q"});
    REQUIRE(r.status == 0);
    auto f2 = gguf_file::open(out2);
    CHECK(f2->find_tensor("output.weight")->t == type::F16);
    CHECK(f2->find_tensor("token_embd.weight")->t == type::Q8_0);
    CHECK(f2->find_tensor("blk.1.ffn_down.weight")->t == type::Q8_0);

    // A quantized input needs --allow-requantize.
    const std::string out3 = dir + "/tiny-requant.gguf";
    r = test::run_tool("gloas-quantize", {out2, out3, "q4_0", "-q"});
    CHECK(r.status == 1);
    CHECK(contains(r.err, "--allow-requantize"));
    CHECK(!file_exists(out3));
    r = test::run_tool("gloas-quantize", {out2, out3, "q4_0", "-q", "--allow-requantize"});
    CHECK(r.status == 0);
    CHECK(gguf_file::open(out3)->find_tensor("blk.0.attn_q.weight")->t == type::Q4_0);
}

TEST_CASE("quantize: command line and input errors") {
    const std::string dir = test::temp_dir("quantize-cli");
    const std::string src = test::require_model("stories260K_f32.gguf");
    auto r = test::run_tool("gloas-quantize", {"--help"});
    CHECK(r.status == 0);
    CHECK(contains(r.out, "--output-type"));
    CHECK(contains(r.out, "--embd-type"));
    CHECK(contains(r.out, "  q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q3_K, q4_K, q5_K, q6_K"));
    r = test::run_tool("gloas-quantize", {src, dir + "/x.gguf"});
    CHECK(r.status == 2);
    r = test::run_tool("gloas-quantize", {src, dir + "/x.gguf", "q7_k"});
    CHECK(r.status == 2);
    CHECK(contains(r.err, "q7_k"));
    r = test::run_tool("gloas-quantize", {src, dir + "/x.gguf", "q8_K"});  // an activation type
    CHECK(r.status == 2);
    // the lists come from the type table: every quantized weight type, then the mixes
    CHECK(contains(r.err, "(q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q3_K, q4_K, q5_K, q6_K, "));
    CHECK(contains(r.err, ", q4_K_M, q5_K_M)"));
    CHECK(!contains(r.err, "f32"));
    r = test::run_tool("gloas-quantize", {"--output-type", "q8_1", src, dir + "/x.gguf", "q4_0"});
    CHECK(r.status == 2);
    CHECK(contains(r.err, "--output-type: unknown type 'q8_1' (f32, f16, q4_0,"));
    r = test::run_tool("gloas-quantize", {"--dequantize", "q4_0", src, dir + "/x.gguf"});
    CHECK(r.status == 2);
    r = test::run_tool("gloas-quantize", {"--dequantize", "f32", src, dir + "/x.gguf", "q8_0"});
    CHECK(r.status == 2);
    r = test::run_tool("gloas-quantize", {src, dir + "/x.gguf", "f16"});
    CHECK(r.status == 2);
    r = test::run_tool("gloas-quantize", {dir + "/missing.gguf", dir + "/x.gguf", "q8_0"});
    CHECK(r.status == 1);
    CHECK(contains(r.err, "missing.gguf"));
    test::write_file(dir + "/bad.gguf", std::string("GGUF\x03\0\0\0", 8));
    r = test::run_tool("gloas-quantize", {dir + "/bad.gguf", dir + "/x.gguf", "q8_0"});
    CHECK(r.status == 1);
    CHECK(contains(r.err, "bad.gguf"));
    CHECK(!file_exists(dir + "/x.gguf"));
    // An existing output needs --force.
    test::write_file(dir + "/x.gguf", "keep");
    r = test::run_tool("gloas-quantize", {src, dir + "/x.gguf", "q8_0", "-q"});
    CHECK(r.status == 1);
    CHECK(contains(r.err, "--force"));
    CHECK(test::read_file(dir + "/x.gguf") == "keep");
    r = test::run_tool("gloas-quantize", {src, dir + "/x.gguf", "q8_0", "-q", "--force"});
    CHECK(r.status == 0);
    CHECK(gguf_file::open(dir + "/x.gguf")->find_tensor("blk.0.attn_q.weight")->t == type::Q8_0);
}

// K-quants: our files equal llama-quantize's, tensor for tensor and byte for
// byte (--pure files: every matrix of the type, hence --output-type; the
// Q4_K_M mix: its per-tensor types), and --dequantize reads them back.
TEST_CASE("quantize: q4_K / q5_K / q6_K and the q4_K_M mix equal llama.cpp's files") {
    const std::string dir = test::temp_dir("quantize-kquant");
    const std::string src = test::require_model("kquant/synth256_f32.gguf");
    const std::string q4_k_m = test::require_model("kquant/synth256_Q4_K_M.gguf");
    struct job { const char * type; const char * theirs; bool pure; };
    const job jobs[] = {{"q4_K", "synth256_Q4_K.gguf", true}, {"q5_K", "synth256_Q5_K.gguf", true},
                        {"q6_K", "synth256_Q6_K.gguf", true}, {"q4_K_M", "synth256_Q4_K_M.gguf", false}};
    for (const job & j : jobs) {
        INFO(j.type);
        const std::string out = dir + "/ours-" + j.type + ".gguf";
        std::vector<std::string> args = {src, out, j.type, "-q", "-t", "2"};
        if (j.pure) { args.push_back("--output-type"); args.push_back(j.type); }
        auto r = test::run_tool("gloas-quantize", args);
        INFO(r.err);
        REQUIRE(r.status == 0);
        auto ours = gguf_file::open(out);
        auto theirs = gguf_file::open(test::require_model(std::string("kquant/") + j.theirs));
        REQUIRE(ours->tensors().size() == theirs->tensors().size());
        for (const gguf_tensor_info & b : theirs->tensors()) {
            INFO(b.name);
            const gguf_tensor_info * a = ours->find_tensor(b.name);
            REQUIRE(a != nullptr);
            CHECK(a->t == b.t);
            REQUIRE(a->nbytes == b.nbytes);
            CHECK(std::memcmp(a->data, b.data, b.nbytes) == 0);
        }
        CHECK(ours->get_u32("general.file_type", 0) == (std::string(j.type) == "q4_K_M" ? 15u : std::string(j.type) == "q4_K" ? 14u
                                                        : std::string(j.type) == "q5_K" ? 16u : 18u));
    }
    // q5_K_M: q5_K with q6_K where q4_K_M has it
    const std::string m5 = dir + "/ours-q5_K_M.gguf";
    REQUIRE(test::run_tool("gloas-quantize", {src, m5, "q5_K_M", "-q"}).status == 0);
    auto f5 = gguf_file::open(m5);
    auto t4 = gguf_file::open(q4_k_m);
    for (const gguf_tensor_info & b : t4->tensors()) {
        INFO(b.name);
        const type want = b.t == type::Q4_K ? type::Q5_K : b.t;
        CHECK(f5->find_tensor(b.name)->t == want);
    }
    CHECK(f5->get_u32("general.file_type", 0) == 17u);

    // --dequantize: every value as the library dequantizes it (f32), or that rounded to f16
    for (const char * to : {"f32", "f16"}) {
        INFO(to);
        const std::string out = dir + std::string("/back-") + to + ".gguf";
        auto r = test::run_tool("gloas-quantize", {"--dequantize", to, q4_k_m, out, "-q"});
        INFO(r.err);
        REQUIRE(r.status == 0);
        auto back = gguf_file::open(out);
        CHECK(back->get_u32("general.file_type", 99) == (std::string(to) == "f32" ? 0u : 1u));
        for (const gguf_tensor_info & q : t4->tensors()) {
            INFO(q.name);
            const gguf_tensor_info * b = back->find_tensor(q.name);
            REQUIRE(b != nullptr);
            const type want = q.t == type::F32 ? type::F32 : (std::string(to) == "f32" ? type::F32 : type::F16);
            REQUIRE(b->t == want);
            const int64_t n = q.ne[0] * q.ne[1];
            std::vector<float> v(static_cast<size_t>(n));
            for (int64_t r0 = 0; r0 < q.ne[1]; ++r0)
                traits(q.t).to_float(static_cast<const char *>(q.data) + size_t(r0) * row_size(q.t, q.ne[0]), v.data() + r0 * q.ne[0], q.ne[0]);
            int bad = 0;
            for (int64_t i = 0; i < n; ++i) {
                if (want == type::F32) bad += static_cast<const float *>(b->data)[i] != v[size_t(i)];
                else bad += static_cast<const uint16_t *>(b->data)[i] != fp32_to_fp16(v[size_t(i)]);
            }
            CHECK(bad == 0);
        }
        // and the result runs
        auto m = model::load({out, ""});
        CHECK(m->n_params > 0);
    }
}

TEST_CASE("llama_gguf_set_hparams: general.file_type from the type table; activation types refused") {
    llama_gguf_hparams hp;  // a small shape: only the metadata is written
    hp.n_vocab = hp.n_ctx = hp.n_ff = 16;
    hp.n_embd = 8;
    hp.n_head = 2;
    hp.n_head_kv = hp.n_layer = 1;
    for (type t : {type::F32, type::F16, type::BF16, type::Q5_1, type::Q4_K}) {
        hp.wtype = t;
        gguf_writer w;
        llama_gguf_set_hparams(w, hp);
        const std::string path = test::temp_dir("set-hparams") + "/m.gguf";
        w.write(path);
        auto f = gguf_file::open(path);
        CHECK(f->get_u32("general.file_type", 99) == traits(t).file_type);
        CHECK(f->get_u32("general.quantization_version", 0) == (traits(t).is_quantized ? 2u : 0u));
    }
    hp.wtype = type::Q8_K;
    gguf_writer w;
    try {
        llama_gguf_set_hparams(w, hp);
        FAIL("an activation type was accepted");
    } catch (const error & e) {
        CHECK(contains(e.what(), "q8_K"));
    }
}
