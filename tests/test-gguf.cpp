// GGUF reader and writer: real files, round trips through the writer, every
// kind of malformed file, and the random-model generator tool.
#include "decoder/gguf-writer.h"
#include "decoder/gguf.h"
#include "quant/fp16.h"
#include "base/error.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <sys/stat.h>
#include <vector>

using namespace gloas;

namespace {

using test::contains;
using test::file_exists;

// Parses `img` and returns the error message, or "" if it parsed.
std::string parse_error(const std::vector<uint8_t> & img, const std::string & name = "bad.gguf") {
    return test::error_of([&] { gguf_file::parse(img.data(), img.size(), name); });
}

// ---------------------------------------------------------------------------
// A hand-made GGUF image whose every field can be set wrong, with the byte
// offset of each named field recorded in `at` so tests can patch it.
struct raw_opts {
    uint32_t version = 3;
    bool dup_key = false;
    bool dup_tensor = false;
    uint32_t t0_n_dims = 2;
    uint64_t t0_dim = 64;          // every dim of tensor 0
    uint32_t t1_type = 8;          // q8_0
    uint64_t t1_offset = 512;      // tensor 0 is 64*2 f32 = 512 bytes
    uint32_t alignment = 32;
};

struct raw_image {
    std::vector<uint8_t> b;
    std::map<std::string, size_t> at;

    void mark(const std::string & n) { at[n] = b.size(); }
    template <class T> void put(T v) {
        uint8_t tmp[sizeof(T)];
        std::memcpy(tmp, &v, sizeof v);
        b.insert(b.end(), tmp, tmp + sizeof v);
    }
    void str(const std::string & s) { put<uint64_t>(s.size()); b.insert(b.end(), s.begin(), s.end()); }
    template <class T> void patch(const std::string & field, T v) {
        REQUIRE(at.count(field));
        std::memcpy(b.data() + at[field], &v, sizeof v);
    }
};

raw_image make_raw(const raw_opts & o = {}) {
    raw_image r;
    r.put<uint32_t>(0x46554747);
    r.mark("version");
    r.put<uint32_t>(o.version);
    r.mark("n_tensors");
    r.put<uint64_t>(o.dup_tensor ? 3 : 2);
    r.mark("n_kv");
    r.put<uint64_t>(o.dup_key ? 5 : 4);

    r.str("general.architecture");
    r.mark("kv0.type");
    r.put<uint32_t>(8);
    r.mark("kv0.len");
    r.str("llama");

    r.str("general.alignment");
    r.put<uint32_t>(4);
    r.mark("alignment");
    r.put<uint32_t>(o.alignment);

    r.str("test.strings");
    r.put<uint32_t>(9);
    r.mark("arr.type");
    r.put<uint32_t>(8);
    r.mark("arr.count");
    r.put<uint64_t>(2);
    r.mark("arr.s0.len");
    r.str("ab");
    r.str("cde");

    r.str("test.flag");
    r.put<uint32_t>(7);
    r.mark("bool");
    r.put<uint8_t>(1);

    if (o.dup_key) {
        r.str("test.flag");
        r.put<uint32_t>(7);
        r.put<uint8_t>(0);
    }

    r.mark("t0");
    r.str("a");
    r.mark("t0.n_dims");
    r.put<uint32_t>(o.t0_n_dims);
    for (uint32_t d = 0; d < o.t0_n_dims && d < 8; ++d) {
        r.mark("t0.ne" + std::to_string(d));
        r.put<uint64_t>(d == 0 ? o.t0_dim : (o.t0_dim == 64 ? 2 : o.t0_dim));
    }
    r.put<uint32_t>(0);  // f32
    r.mark("t0.offset");
    r.put<uint64_t>(0);

    r.mark("t1");
    r.str("blk.0.attn_q.weight");
    r.put<uint32_t>(2);
    r.mark("t1.ne0");
    r.put<uint64_t>(32);
    r.put<uint64_t>(2);
    r.mark("t1.type");
    r.put<uint32_t>(o.t1_type);
    r.mark("t1.offset");
    r.put<uint64_t>(o.t1_offset);

    if (o.dup_tensor) {
        r.str("a");
        r.put<uint32_t>(1);
        r.put<uint64_t>(32);
        r.put<uint32_t>(0);
        r.put<uint64_t>(640);
    }

    while (r.b.size() % o.alignment) r.b.push_back(0);
    r.mark("data");
    // tensor 0: 512 bytes of f32, tensor 1 (q8_0 32x2) 68 bytes at 512, then room.
    for (int i = 0; i < 1024; ++i) r.b.push_back(uint8_t(i * 7));
    return r;
}

// A small valid file made by the writer: every value type and a few tensors.
struct sample {
    std::vector<float> f32_data;
    std::vector<uint16_t> f16_data;
    std::vector<uint8_t> q8_data;
    std::vector<uint8_t> q4_data;
    std::vector<uint16_t> bf16_data;
    gguf_writer w;
};

void fill_sample(sample & s, uint32_t alignment = 0) {
    gguf_writer & w = s.w;
    w.set_str("general.architecture", "llama");
    if (alignment) w.set_u32("general.alignment", alignment);
    w.set_u8("t.u8", 200);
    w.set_i8("t.i8", -100);
    w.set_u16("t.u16", 60000);
    w.set_i16("t.i16", -30000);
    w.set_u32("t.u32", 4000000000u);
    w.set_i32("t.i32", -2000000000);
    w.set_u64("t.u64", 18000000000000000000ull);
    w.set_i64("t.i64", -9000000000000000000ll);
    w.set_f32("t.f32", 1.5f);
    w.set_f64("t.f64", -2.25e100);
    w.set_bool("t.bool", true);
    w.set_bool("t.bool0", false);
    w.set_str("t.str", std::string("h\0llo", 5));
    w.set_str("t.empty", "");
    w.set_array("t.arr_f32", std::vector<float>{1.0f, -2.5f, 3.25f});
    w.set_array("t.arr_i32", std::vector<int32_t>{-1, 0, 7});
    w.set_array("t.arr_u32", std::vector<uint32_t>{1, 4000000000u});
    const int16_t i16s[] = {-3, 4};
    w.set_array("t.arr_i16", gguf_type::INT16, i16s, 2);
    const double f64s[] = {0.5, 1e300};
    w.set_array("t.arr_f64", gguf_type::FLOAT64, f64s, 2);
    const uint8_t bools[] = {1, 0, 1};
    w.set_array("t.arr_bool", gguf_type::BOOL, bools, 3);
    w.set_array("t.arr_empty", std::vector<float>{});
    w.set_str_array("t.arr_str", std::vector<std::string>{"a", "", "\xe2\x96\x81world"});

    s.f32_data.resize(64 * 3);
    for (size_t i = 0; i < s.f32_data.size(); ++i) s.f32_data[i] = float(i) * 0.25f - 3.0f;
    s.f16_data.resize(32);
    for (size_t i = 0; i < s.f16_data.size(); ++i) s.f16_data[i] = fp32_to_fp16(float(i) - 5.0f);
    s.bf16_data.resize(32 * 2);
    for (size_t i = 0; i < s.bf16_data.size(); ++i) s.bf16_data[i] = fp32_to_bf16(float(i) * 0.5f);
    s.q8_data.resize(34 * 2 * 2);
    for (size_t i = 0; i < s.q8_data.size(); ++i) s.q8_data[i] = uint8_t(i * 13 + 1);
    s.q4_data.resize(18 * 4);
    for (size_t i = 0; i < s.q4_data.size(); ++i) s.q4_data[i] = uint8_t(i * 5 + 3);

    const int64_t ne_f32[] = {64, 3};
    w.add_tensor("token_embd.weight", type::F32, 2, ne_f32, s.f32_data.data());
    const int64_t ne_f16[] = {32};
    w.add_tensor("output_norm.weight", type::F16, 1, ne_f16, s.f16_data.data());
    const int64_t ne_bf16[] = {32, 1, 2};
    w.add_tensor("blk.0.bf16", type::BF16, 3, ne_bf16, s.bf16_data.data());
    const int64_t ne_q8[] = {64, 1, 1, 2};
    w.add_tensor("blk.0.attn_q.weight", type::Q8_0, 4, ne_q8, s.q8_data.data());
    const int64_t ne_q4[] = {32, 4};
    const std::vector<uint8_t> * q4 = &s.q4_data;
    w.add_tensor("blk.0.attn_k.weight", type::Q4_0, 2, ne_q4, [q4](void * dst, int64_t row0, int64_t n) {
        std::memcpy(dst, q4->data() + row0 * 18, size_t(n) * 18);
    });
    w.set_chunk_bytes(20);  // one row per fill call
}

} // namespace

TEST_CASE("gguf: reads stories260K_f32.gguf") {
    const std::string path = test::require_model("stories260K_f32.gguf");
    auto f = gguf_file::open(path);
    CHECK(f->path() == path);
    CHECK(f->version() == 3);
    CHECK(f->alignment() == 32);
    CHECK(f->get_str("general.architecture") == "llama");
    CHECK(f->get_u32("llama.embedding_length", 0) == 64);
    CHECK(f->get_u32("llama.block_count", 0) == 5);
    CHECK(f->get_i64("llama.attention.head_count", 0) == 8);
    CHECK(f->get_f32("llama.attention.layer_norm_rms_epsilon", 0) == doctest::Approx(1e-5));
    CHECK(f->get_u32("absent.key", 77) == 77);
    CHECK(f->get_str("absent.key", "dflt") == "dflt");
    CHECK(f->get_u32("tokenizer.ggml.padding_token_id", 0) == 0xffffffffu);
    CHECK_THROWS_AS(f->get_i32_array("tokenizer.ggml.tokens"), error);
    CHECK_THROWS_AS(f->get_bool("general.architecture", false), error);
    CHECK_THROWS_AS(f->get_str("llama.block_count"), error);
    const auto tokens = f->get_str_array("tokenizer.ggml.tokens");
    const auto scores = f->get_f32_array("tokenizer.ggml.scores");
    const auto types = f->get_i32_array("tokenizer.ggml.token_type");
    CHECK(tokens.size() == 512);
    CHECK(scores.size() == 512);
    CHECK(types.size() == 512);
    CHECK(tokens[1] == "<s>");
    CHECK(f->tensors().size() == 48);
    const gguf_tensor_info * emb = f->find_tensor("token_embd.weight");
    REQUIRE(emb);
    CHECK(emb->t == type::F32);
    CHECK(emb->n_dims == 2);
    CHECK(emb->ne[0] == 64);
    CHECK(emb->ne[1] == 512);
    CHECK(emb->nbytes == 64 * 512 * 4);
    CHECK(static_cast<const uint8_t *>(emb->data) == static_cast<const uint8_t *>(f->tensors()[0].data));
    tensor v = emb->view();
    CHECK(v.ne[1] == 512);
    CHECK(v.nbytes() == emb->nbytes);
    CHECK(std::isfinite(static_cast<const float *>(emb->data)[0]));
    CHECK(f->find_tensor("nope") == nullptr);
    for (const auto & t : f->tensors()) {
        CHECK(t.offset % f->alignment() == 0);
        CHECK(static_cast<const uint8_t *>(t.data) + t.nbytes <= static_cast<const uint8_t *>(f->tensors()[0].data) - f->data_offset() + f->size());
    }
}

TEST_CASE("gguf: reads the vocab files and the K-quant files") {
    for (const char * name : {"vocab/ggml-vocab-llama-spm.gguf", "vocab/ggml-vocab-gpt-2.gguf"}) {
        auto f = gguf_file::open(test::require_model(name));
        CHECK(f->tensors().empty());
        CHECK(f->get_str_array("tokenizer.ggml.tokens").size() > 30000);
    }
    auto spm = gguf_file::open(test::require_model("vocab/ggml-vocab-llama-spm.gguf"));
    CHECK(spm->get_bool("tokenizer.ggml.add_bos_token", false) == true);
    CHECK(spm->get_str("tokenizer.ggml.pre") == "default");
    for (const char * name : {"kquant/synth256_Q4_K.gguf", "kquant/synth256_Q6_K.gguf"}) {
        auto f = gguf_file::open(test::require_model(name));
        CHECK(f->tensors().size() == 12);
        bool any_k = false;
        for (const auto & t : f->tensors()) any_k = any_k || (t.t == type::Q4_K || t.t == type::Q6_K);
        CHECK(any_k);
    }
    auto f32 = gguf_file::open(test::require_model("kquant/synth256_f32.gguf"));
    CHECK(f32->tensors().size() == 12);
}

TEST_CASE("gguf: open errors name the file") {
    std::string msg;
    try {
        gguf_file::open("/nonexistent/dir/x.gguf");
    } catch (const error & e) {
        msg = e.what();
    }
    CHECK(contains(msg, "/nonexistent/dir/x.gguf"));

    const std::string dir = test::temp_dir("gguf-open");
    for (const std::string & content : {std::string(), std::string("GGUF"), std::string("GGUF\x03\0\0\0")}) {
        const std::string path = dir + "/short.gguf";
        test::write_file(path, content);
        msg.clear();
        try {
            gguf_file::open(path);
        } catch (const error & e) {
            msg = e.what();
        }
        CAPTURE(msg);
        CHECK(msg.rfind(path + ": ", 0) == 0);
    }
    msg.clear();
    try {
        gguf_file::open(dir);
    } catch (const error & e) {
        msg = e.what();
    }
    CHECK(contains(msg, dir));
}

TEST_CASE("gguf: writer round trip of every value type and tensor type") {
    for (uint32_t alignment : {0u, 64u, 1u}) {
        CAPTURE(alignment);
        sample s;
        fill_sample(s, alignment);
        const std::vector<uint8_t> img = s.w.write_to_memory();
        auto f = gguf_file::parse(img.data(), img.size(), "mem.gguf");
        CHECK(f->alignment() == (alignment ? alignment : 32));
        CHECK(f->version() == 3);
        CHECK(f->metadata().size() == s.w.n_kv());
        CHECK(f->get_u32("t.u8", 0) == 200);
        CHECK(f->get_i64("t.i8", 0) == -100);
        CHECK(f->get_u32("t.u16", 0) == 60000);
        CHECK(f->get_i64("t.i16", 0) == -30000);
        CHECK(f->get_u32("t.u32", 0) == 4000000000u);
        CHECK(f->get_i64("t.i32", 0) == -2000000000);
        CHECK(f->find("t.u64")->u == 18000000000000000000ull);
        CHECK_THROWS_AS(f->get_i64("t.u64", 0), error);  // does not fit
        CHECK_THROWS_AS(f->get_u32("t.i8", 0), error);   // negative
        CHECK(f->get_i64("t.i64", 0) == -9000000000000000000ll);
        CHECK(f->get_f32("t.f32", 0) == 1.5f);
        CHECK(f->find("t.f64")->f == -2.25e100);
        CHECK(f->get_bool("t.bool", false) == true);
        CHECK(f->get_bool("t.bool0", true) == false);
        CHECK(f->get_str("t.str") == std::string("h\0llo", 5));
        CHECK(f->get_str("t.empty", "x") == "");
        CHECK(f->find("t.u8")->type == gguf_type::UINT8);
        CHECK(f->find("t.f64")->type == gguf_type::FLOAT64);
        CHECK(f->get_f32_array("t.arr_f32") == std::vector<float>{1.0f, -2.5f, 3.25f});
        CHECK(f->get_i32_array("t.arr_i32") == std::vector<int32_t>{-1, 0, 7});
        CHECK_THROWS_AS(f->get_i32_array("t.arr_u32"), error);  // 4e9 does not fit
        CHECK(f->get_i32_array("t.arr_i16") == std::vector<int32_t>{-3, 4});
        CHECK(f->get_f32_array("t.arr_f64") == std::vector<float>{0.5f, float(1e300)});
        CHECK(f->find("t.arr_bool")->arr_type == gguf_type::BOOL);
        CHECK(f->find("t.arr_bool")->arr_n == 3);
        CHECK(f->get_f32_array("t.arr_empty").empty());
        const auto strs = f->get_str_array("t.arr_str");
        REQUIRE(strs.size() == 3);
        CHECK(strs[0] == "a");
        CHECK(strs[1] == "");
        CHECK(strs[2] == "\xe2\x96\x81world");
        CHECK_THROWS_AS(f->get_str_array("t.arr_f32"), error);
        CHECK_THROWS_AS(f->get_f32_array("absent"), error);

        REQUIRE(f->tensors().size() == 5);
        const struct { const char * name; type t; int n_dims; int64_t ne0; const void * data; size_t n; } want[] = {
            {"token_embd.weight", type::F32, 2, 64, s.f32_data.data(), s.f32_data.size() * 4},
            {"output_norm.weight", type::F16, 1, 32, s.f16_data.data(), s.f16_data.size() * 2},
            {"blk.0.bf16", type::BF16, 3, 32, s.bf16_data.data(), s.bf16_data.size() * 2},
            {"blk.0.attn_q.weight", type::Q8_0, 4, 64, s.q8_data.data(), s.q8_data.size()},
            {"blk.0.attn_k.weight", type::Q4_0, 2, 32, s.q4_data.data(), s.q4_data.size()},
        };
        for (size_t i = 0; i < 5; ++i) {
            const gguf_tensor_info & t = f->tensors()[i];
            CAPTURE(t.name);
            CHECK(t.name == want[i].name);
            CHECK(t.t == want[i].t);
            CHECK(t.n_dims == want[i].n_dims);
            CHECK(t.ne[0] == want[i].ne0);
            CHECK(t.nbytes == want[i].n);
            CHECK(t.offset % f->alignment() == 0);
            CHECK((static_cast<const uint8_t *>(t.data) - img.data()) % f->alignment() == 0);
            CHECK(std::memcmp(t.data, want[i].data, want[i].n) == 0);
        }
        CHECK(f->tensors()[3].ne[3] == 2);
    }
}

TEST_CASE("gguf: writer replaces keys, copies values, refuses bad tensors") {
    gguf_writer w;
    w.set_u32("a", 1);
    w.set_str("b", "x");
    w.set_u32("a", 2);
    CHECK(w.n_kv() == 2);
    w.remove("b");
    CHECK(!w.has("b"));
    CHECK(w.has("a"));
    const float x[64] = {};
    const int64_t ne[] = {64, 1};
    w.add_tensor("t", type::F32, 2, ne, x);
    CHECK_THROWS_AS(w.add_tensor("t", type::F32, 2, ne, x), error);
    const int64_t ne_bad[] = {33};
    CHECK_THROWS_AS(w.add_tensor("q", type::Q8_0, 1, ne_bad, x), error);
    const int64_t ne0[] = {0};
    CHECK_THROWS_AS(w.add_tensor("z", type::F32, 1, ne0, x), error);
    CHECK_THROWS_AS(w.add_tensor("d", type::F32, 5, ne, x), error);
    CHECK_THROWS_AS(w.add_tensor("u", type(99), 1, ne, x), error);
    w.set_u32("general.alignment", 48);
    CHECK_THROWS_AS(w.write_to_memory(), error);
    w.set_u32("general.alignment", 16);
    auto img = w.write_to_memory();
    auto f = gguf_file::parse(img.data(), img.size(), "m");
    CHECK(f->get_u32("a", 0) == 2);
    CHECK(f->alignment() == 16);
    CHECK(f->data_offset() % 16 == 0);
}

TEST_CASE("gguf: writer writes atomically and names the file on errors") {
    const std::string dir = test::temp_dir("gguf-writer");
    sample s;
    fill_sample(s);
    const std::string path = dir + "/ok.gguf";
    s.w.write(path);
    CHECK(file_exists(path));
    CHECK(!file_exists(path + ".tmp"));
    auto f = gguf_file::open(path);
    CHECK(f->tensors().size() == 5);
    const std::string mem(reinterpret_cast<const char *>(s.w.write_to_memory().data()), s.w.write_to_memory().size());
    CHECK(test::read_file(path) == mem);

    // A fill callback that fails half-way leaves neither the target nor the .tmp.
    gguf_writer w;
    const int64_t ne[] = {32, 100};
    w.add_tensor("t", type::F32, 2, ne, [](void *, int64_t row0, int64_t) {
        if (row0 >= 50) throw error("generator failed");
    });
    w.set_chunk_bytes(32 * 4 * 10);
    const std::string bad = dir + "/bad.gguf";
    CHECK_THROWS_AS(w.write(bad), error);
    CHECK(!file_exists(bad));
    CHECK(!file_exists(bad + ".tmp"));

    std::string msg;
    try {
        s.w.write(dir + "/no/such/dir/x.gguf");
    } catch (const error & e) {
        msg = e.what();
    }
    CHECK(contains(msg, dir + "/no/such/dir/x.gguf"));
}

TEST_CASE("gguf: re-writing stories260K_f32.gguf gives identical values") {
    auto src = gguf_file::open(test::require_model("stories260K_f32.gguf"));
    gguf_writer w;
    w.copy_metadata(*src);
    for (const auto & t : src->tensors()) w.add_tensor(t.name, t.t, t.n_dims, t.ne, t.data);
    const auto img = w.write_to_memory();
    auto f = gguf_file::parse(img.data(), img.size(), "rewrite.gguf");
    REQUIRE(f->metadata().size() == src->metadata().size());
    for (const auto & kv : src->metadata()) {
        const std::string & key = kv.first;
        const gguf_value & a = kv.second;
        CAPTURE(key);
        const gguf_value * b = f->find(key);
        REQUIRE(b);
        CHECK(a.type == b->type);
        CHECK(a.u == b->u);
        CHECK(a.i == b->i);
        CHECK(a.f == b->f);
        CHECK(a.str == b->str);
        CHECK(a.arr_type == b->arr_type);
        CHECK(a.arr_n == b->arr_n);
        REQUIRE(a.arr_bytes == b->arr_bytes);
        if (a.arr_bytes) CHECK(std::memcmp(a.arr_data, b->arr_data, a.arr_bytes) == 0);
        CHECK(a.arr_str == b->arr_str);
    }
    REQUIRE(f->tensors().size() == src->tensors().size());
    for (size_t i = 0; i < f->tensors().size(); ++i) {
        const auto & a = src->tensors()[i];
        const auto & b = f->tensors()[i];
        CAPTURE(a.name);
        CHECK(a.name == b.name);
        CHECK(a.t == b.t);
        CHECK(a.n_dims == b.n_dims);
        for (int d = 0; d < 4; ++d) CHECK(a.ne[d] == b.ne[d]);
        CHECK(a.offset == b.offset);
        REQUIRE(a.nbytes == b.nbytes);
        CHECK(std::memcmp(a.data, b.data, a.nbytes) == 0);
    }
    // llama.cpp's layout and ours agree byte for byte on this file.
    const std::string orig = test::read_file(test::require_model("stories260K_f32.gguf"));
    CHECK(orig.size() == img.size());
}

TEST_CASE("gguf: the hand-made image is valid") {
    raw_image r = make_raw();
    auto f = gguf_file::parse(r.b.data(), r.b.size(), "raw.gguf");
    CHECK(f->tensors().size() == 2);
    CHECK(f->get_str_array("test.strings").size() == 2);
    CHECK(f->get_bool("test.flag", false));
    CHECK(f->find_tensor("blk.0.attn_q.weight")->t == type::Q8_0);
    raw_opts v2;
    v2.version = 2;
    CHECK(parse_error(make_raw(v2).b) == "");
}

TEST_CASE("gguf: truncation at every byte of the header, metadata and tensor infos throws") {
    sample s;
    fill_sample(s);
    const std::vector<uint8_t> img = s.w.write_to_memory();
    auto f = gguf_file::parse(img.data(), img.size(), "full.gguf");
    const auto & last = f->tensors().back();
    const size_t end = f->data_offset() + last.offset + last.nbytes;  // trailing padding may go
    std::vector<size_t> cuts;
    for (size_t n = 0; n <= f->data_offset(); ++n) cuts.push_back(n);
    for (size_t n = f->data_offset() + 1; n < end; n += 37) cuts.push_back(n);
    cuts.push_back(end - 1);
    for (size_t n : cuts) {
        CAPTURE(n);
        std::vector<uint8_t> cut(img.begin(), img.begin() + std::ptrdiff_t(n));
        const std::string msg = parse_error(cut, "cut.gguf");
        CAPTURE(msg);
        REQUIRE(msg != "");
        CHECK(msg.rfind("cut.gguf: ", 0) == 0);
        CHECK((contains(msg, "truncated") || contains(msg, "past the end") || contains(msg, "bytes left") ||
               contains(msg, "too short")));
        CHECK(contains(msg, "at byte"));
    }
    std::vector<uint8_t> whole(img.begin(), img.begin() + std::ptrdiff_t(end));
    CHECK(parse_error(whole) == "");
}

namespace {

// One field of make_raw()'s image (raw_image::at's name) patched to a wrong
// value of its width, and the parts of the error message; none: any error.
struct bad_field {
    const char * field;
    uint64_t value;
    bool u32;  // else u64
    std::vector<const char *> says;
};

void check_bad_fields(std::initializer_list<bad_field> cases) {
    for (const bad_field & c : cases) {
        CAPTURE(c.field);
        CAPTURE(c.value);
        raw_image r = make_raw();
        if (c.u32) r.patch<uint32_t>(c.field, uint32_t(c.value));
        else r.patch<uint64_t>(c.field, c.value);
        const std::string m = parse_error(r.b);
        if (c.says.empty()) CHECK(m != "");
        for (const char * part : c.says) CHECK_MESSAGE(contains(m, part), part);
    }
}

constexpr bool U32 = true, U64 = false;

} // namespace

TEST_CASE("gguf: bad headers") {
    raw_image r = make_raw();
    r.b[0] = 'G'; r.b[1] = 'G'; r.b[2] = 'M'; r.b[3] = 'L';
    const std::string m = parse_error(r.b);
    CHECK(contains(m, "bad.gguf: "));
    CHECK(contains(m, "magic"));
    check_bad_fields({
        {"version", 1, U32, {"version 1"}},
        {"version", 4, U32, {"version 4"}},
        {"version", 0x03000000, U32, {"big-endian"}},
        {"n_kv", uint64_t(1) << 60, U64, {"metadata count", "impossible"}},
        {"n_kv", ~uint64_t(0), U64, {"metadata count"}},
        {"n_tensors", uint64_t(1) << 60, U64, {"tensor count"}},
        {"n_tensors", 3, U64, {}},  // one too many
    });
}

TEST_CASE("gguf: bad metadata") {
    SUBCASE("patched fields") {
        check_bad_fields({
            {"kv0.len", uint64_t(1) << 62, U64, {"key 'general.architecture'", "length"}},
            {"kv0.len", ~uint64_t(0), U64, {"length"}},
            {"arr.count", uint64_t(1) << 61, U64, {"key 'test.strings'", "array"}},
            {"arr.s0.len", uint64_t(1) << 40, U64, {"key 'test.strings'"}},  // a string inside an array
            {"kv0.type", 13, U32, {"key 'general.architecture'", "unknown value type 13"}},
            {"arr.type", 0xffffffffu, U32, {"unknown array element type"}},
            {"alignment", 48, U32, {"general.alignment"}},  // not a power of two
            {"alignment", 0, U32, {"general.alignment"}},
        });
    }
    SUBCASE("bad bool") {
        raw_image r = make_raw();
        r.b[r.at["bool"]] = 2;
        CHECK(contains(parse_error(r.b), "bool"));
    }
    SUBCASE("duplicate key") {
        raw_opts o;
        o.dup_key = true;
        const std::string m = parse_error(make_raw(o).b);
        CHECK(contains(m, "duplicate key"));
        CHECK(contains(m, "test.flag"));
    }
}

TEST_CASE("gguf: bad tensor infos") {
    SUBCASE("patched fields") {
        check_bad_fields({
            {"t1.type", 99, U32, {"bad.gguf: ", "tensor 'blk.0.attn_q.weight': unknown type 99"}},
            {"t0.ne1", 0, U64, {"tensor 'a'", "dimension 1"}},
            {"t0.ne0", uint64_t(1) << 40, U64, {"past the end"}},  // huge but not overflowing
            {"t1.ne0", 33, U64, {"tensor 'blk.0.attn_q.weight'", "block size"}},  // not a multiple of the block
            {"t1.offset", 1 << 20, U64, {"tensor 'blk.0.attn_q.weight'", "past the end"}},
            {"t1.offset", ~uint64_t(0) - 31, U64, {"past the end"}},
            {"t1.offset", 516, U64, {"not a multiple of the alignment"}},
        });
    }
    SUBCASE("n_dims 0") {
        raw_opts o;
        o.t0_n_dims = 0;
        CHECK(contains(parse_error(make_raw(o).b), "n_dims 0"));
    }
    SUBCASE("n_dims 5") {
        raw_opts o;
        o.t0_n_dims = 5;
        o.t0_dim = 1;
        CHECK(contains(parse_error(make_raw(o).b), "n_dims 5"));
    }
    SUBCASE("element count overflow") {
        raw_image r = make_raw();
        r.patch<uint64_t>("t0.ne0", uint64_t(1) << 40);
        r.patch<uint64_t>("t0.ne1", uint64_t(1) << 40);
        CHECK(contains(parse_error(r.b), "overflow"));
    }
    SUBCASE("duplicate tensor name") {
        raw_opts o;
        o.dup_tensor = true;
        CHECK(contains(parse_error(make_raw(o).b), "duplicate tensor name"));
    }
}

namespace {

// Raw bytes of `depth` nested arrays, the innermost holding two i32.
std::vector<uint8_t> nested_array_elems(int depth, uint32_t * elem_type, uint64_t * n) {
    raw_image r;
    if (depth == 1) {
        r.put<int32_t>(5);
        r.put<int32_t>(-6);
        *elem_type = uint32_t(gguf_type::INT32);
        *n = 2;
        return r.b;
    }
    uint32_t inner_type;
    uint64_t inner_n;
    const std::vector<uint8_t> inner = nested_array_elems(depth - 1, &inner_type, &inner_n);
    for (int k = 0; k < 2; ++k) {
        r.put<uint32_t>(inner_type);
        r.put<uint64_t>(inner_n);
        r.b.insert(r.b.end(), inner.begin(), inner.end());
    }
    *elem_type = uint32_t(gguf_type::ARRAY);
    *n = 2;
    return r.b;
}

std::vector<uint8_t> nested_array_file(int depth) {
    uint32_t et;
    uint64_t n;
    const std::vector<uint8_t> elems = nested_array_elems(depth, &et, &n);
    gguf_value v;
    v.type = gguf_type::ARRAY;
    v.arr_type = gguf_type(et);
    v.arr_n = n;
    v.arr_data = elems.data();
    v.arr_bytes = elems.size();
    gguf_writer w;
    w.set_str("general.architecture", "test");
    w.set_value("t.nested", v);
    return w.write_to_memory();
}

// Small valid GGUF images for the fuzzer's seed corpus.
std::vector<std::pair<std::string, std::vector<uint8_t>>> fuzz_seeds() {
    std::vector<std::pair<std::string, std::vector<uint8_t>>> r;
    {
        sample s;
        fill_sample(s);
        r.emplace_back("all-types.seed", s.w.write_to_memory());
    }
    {
        sample s;
        fill_sample(s, 64);
        r.emplace_back("align64.seed", s.w.write_to_memory());
    }
    {
        raw_opts o;
        o.version = 2;
        r.emplace_back("raw-v2.seed", make_raw(o).b);
    }
    r.emplace_back("nested.seed", nested_array_file(3));
    {
        gguf_writer w;
        w.set_str("general.architecture", "llama");
        std::vector<std::string> toks;
        std::vector<float> scores;
        std::vector<int32_t> types;
        for (int i = 0; i < 40; ++i) {
            toks.push_back(i < 3 ? std::string(i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>") : format("<0x%02X>", i));
            scores.push_back(-float(i));
            types.push_back(i < 3 ? 3 : 6);
        }
        w.set_str("tokenizer.ggml.model", "llama");
        w.set_str_array("tokenizer.ggml.tokens", toks);
        w.set_array("tokenizer.ggml.scores", scores);
        w.set_array("tokenizer.ggml.token_type", types);
        w.set_u32("tokenizer.ggml.bos_token_id", 1);
        r.emplace_back("vocab.seed", w.write_to_memory());
    }
    return r;
}

} // namespace

TEST_CASE("gguf: nested arrays are read up to the depth limit") {
    for (int depth = 1; depth <= 4; ++depth) {
        CAPTURE(depth);
        const auto img = nested_array_file(depth);
        CHECK(parse_error(img) == "");
        auto f = gguf_file::parse(img.data(), img.size(), "n");
        const gguf_value * v = f->find("t.nested");
        REQUIRE(v);
        CHECK(v->arr_n == 2);
        CHECK(v->arr_type == (depth == 1 ? gguf_type::INT32 : gguf_type::ARRAY));
        if (depth > 1) CHECK_THROWS_AS(f->get_i32_array("t.nested"), error);
        // Copying the raw value through the writer keeps it intact.
        gguf_writer w;
        w.set_value("t.nested", *v);
        const auto img2 = w.write_to_memory();
        auto f2 = gguf_file::parse(img2.data(), img2.size(), "n2");
        CHECK(f2->find("t.nested")->arr_bytes == v->arr_bytes);
    }
    const std::string m = parse_error(nested_array_file(5));
    CHECK(contains(m, "nested"));
    CHECK(contains(m, "key 't.nested'"));
}

TEST_CASE("gguf: the fuzz seeds are the writer's current output") {
    const std::string dir = std::string(GLOAS_SOURCE_DIR) + "/tests/fuzz/seeds/fuzz-gguf";
    // GLOAS_WRITE_SEEDS=1 regenerates them (then commit tests/fuzz/seeds).
    const bool rewrite = std::getenv("GLOAS_WRITE_SEEDS") != nullptr;
    for (const auto & seed : fuzz_seeds()) {
        const std::string & name = seed.first;
        const std::vector<uint8_t> & img = seed.second;
        CAPTURE(name);
        CHECK(parse_error(img) == "");
        CHECK(img.size() < 8192);
        if (rewrite) test::write_file(dir + "/" + name, img.data(), img.size());
        REQUIRE(file_exists(dir + "/" + name));
        const std::string on_disk = test::read_file(dir + "/" + name);
        CHECK(on_disk == std::string(img.begin(), img.end()));
    }
}

TEST_CASE("gguf: gloas-gen-model writes a Llama model llama.cpp would accept") {
    const std::string dir = test::temp_dir("gen-model");
    const std::string path = dir + "/tiny-q8_0.gguf";
    auto r = test::run_tool("gloas-gen-model", {"--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2",
                                                "--ffn", "96", "--vocab", "400", "--ctx", "128", "--type", "q8_0",
                                                "--seed", "7", "-o", path});
    INFO(r.err);
    REQUIRE(r.status == 0);
    CHECK(!file_exists(path + ".tmp"));
    auto f = gguf_file::open(path);
    CHECK(f->get_str("general.architecture") == "llama");
    CHECK(f->get_u32("general.file_type", 99) == 7);
    CHECK(f->get_u32("llama.embedding_length", 0) == 64);
    CHECK(f->get_u32("llama.block_count", 0) == 2);
    CHECK(f->get_u32("llama.attention.head_count", 0) == 4);
    CHECK(f->get_u32("llama.attention.head_count_kv", 0) == 2);
    CHECK(f->get_u32("llama.feed_forward_length", 0) == 96);
    CHECK(f->get_u32("llama.context_length", 0) == 128);
    CHECK(f->get_u32("llama.rope.dimension_count", 0) == 16);
    CHECK(f->get_f32("llama.attention.layer_norm_rms_epsilon", 0) > 0);
    const auto toks = f->get_str_array("tokenizer.ggml.tokens");
    REQUIRE(toks.size() == 400);
    CHECK(toks[0] == "<unk>");
    CHECK(toks[1] == "<s>");
    CHECK(toks[2] == "</s>");
    CHECK(toks[3] == "<0x00>");
    CHECK(toks[258] == "<0xFF>");
    CHECK(std::set<std::string_view>(toks.begin(), toks.end()).size() == toks.size());
    CHECK(f->get_f32_array("tokenizer.ggml.scores").size() == 400);
    const auto tt = f->get_i32_array("tokenizer.ggml.token_type");
    CHECK(tt[0] == 2);
    CHECK(tt[1] == 3);
    CHECK(tt[3] == 6);
    CHECK(tt[300] == 1);
    CHECK(f->get_str("tokenizer.ggml.model") == "llama");

    CHECK(f->tensors().size() == 2 + 2 * 9 + 1);
    struct want { std::string name; type t; int64_t ne0, ne1; };
    std::vector<want> ws = {{"token_embd.weight", type::Q8_0, 64, 400}, {"output_norm.weight", type::F32, 64, 1},
                            {"output.weight", type::Q8_0, 64, 400}};
    for (int l = 0; l < 2; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        ws.push_back({p + "attn_norm.weight", type::F32, 64, 1});
        ws.push_back({p + "attn_q.weight", type::Q8_0, 64, 64});
        ws.push_back({p + "attn_k.weight", type::Q8_0, 64, 32});
        ws.push_back({p + "attn_v.weight", type::Q8_0, 64, 32});
        ws.push_back({p + "attn_output.weight", type::Q8_0, 64, 64});
        ws.push_back({p + "ffn_norm.weight", type::F32, 64, 1});
        ws.push_back({p + "ffn_gate.weight", type::Q8_0, 64, 96});
        ws.push_back({p + "ffn_down.weight", type::Q8_0, 96, 64});
        ws.push_back({p + "ffn_up.weight", type::Q8_0, 64, 96});
    }
    for (const auto & w : ws) {
        CAPTURE(w.name);
        const gguf_tensor_info * t = f->find_tensor(w.name);
        REQUIRE(t);
        CHECK(t->t == w.t);
        CHECK(t->ne[0] == w.ne0);
        CHECK(t->ne[1] == w.ne1);
        CHECK(t->n_dims == (w.t == type::F32 ? 1 : 2));
        // Values: norms exactly 1, weights finite with a std near 0.02.
        std::vector<float> x(size_t(t->ne[0] * t->ne[1]));
        traits(t->t).to_float(t->data, x.data(), int64_t(x.size()));
        double s2 = 0;
        for (float v : x) {
            REQUIRE(std::isfinite(v));
            s2 += double(v) * v;
        }
        const double sd = std::sqrt(s2 / double(x.size()));
        if (w.t == type::F32) CHECK(sd == doctest::Approx(1.0));
        else CHECK((sd > 0.015 && sd < 0.025));
    }

    // The same seed gives the same file for any thread count; another seed differs.
    const std::string path2 = dir + "/again.gguf";
    auto r2 = test::run_tool("gloas-gen-model", {"--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2",
                                                 "--ffn", "96", "--vocab", "400", "--ctx", "128", "--type", "q8_0",
                                                 "--seed", "7", "--threads", "1", "-q", "-o", path2});
    REQUIRE(r2.status == 0);
    CHECK(r2.err.empty());
    CHECK(test::read_file(path) == test::read_file(path2));
    auto r3 = test::run_tool("gloas-gen-model", {"--preset", "tiny", "--type", "q4_0", "--seed", "8", "-q", "-o", path2});
    REQUIRE(r3.status == 0);
    auto f3 = gguf_file::open(path2);
    CHECK(f3->find_tensor("blk.0.attn_q.weight")->t == type::Q4_0);
    CHECK(f3->get_u32("general.file_type", 0) == 2);
    CHECK(f3->get_u32("general.quantization_version", 0) == 2);
}

TEST_CASE("gguf: gloas-gen-model copies a tokenizer and refuses bad options") {
    const std::string dir = test::temp_dir("gen-model-vocab");
    const std::string vocab = test::require_model("vocab/ggml-vocab-llama-spm.gguf");
    const std::string path = dir + "/m.gguf";
    auto r = test::run_tool("gloas-gen-model", {"--dim", "32", "--layers", "1", "--heads", "2", "--kv-heads", "1",
                                                "--ffn", "64", "--vocab", vocab, "--type", "bf16", "-q", "-o", path});
    INFO(r.err);
    REQUIRE(r.status == 0);
    auto f = gguf_file::open(path);
    auto v = gguf_file::open(vocab);
    CHECK(f->get_u32("llama.vocab_size", 0) == 32000);
    CHECK(f->find_tensor("output.weight")->ne[1] == 32000);
    CHECK(f->find_tensor("output.weight")->t == type::BF16);
    CHECK(f->get_str_array("tokenizer.ggml.tokens") == v->get_str_array("tokenizer.ggml.tokens"));
    CHECK(f->get_f32_array("tokenizer.ggml.scores") == v->get_f32_array("tokenizer.ggml.scores"));
    CHECK(f->get_bool("tokenizer.ggml.add_bos_token", false));

    CHECK(test::run_tool("gloas-gen-model", {"--type", "q7_k", "-o", path}).status != 0);
    CHECK(test::run_tool("gloas-gen-model", {"--dim", "48", "--heads", "4", "--type", "q4_0", "-o", path}).status != 0);
    CHECK(test::run_tool("gloas-gen-model", {"--dim", "abc", "-o", path}).status != 0);
    CHECK(test::run_tool("gloas-gen-model", {"--preset", "tiny"}).status != 0);
    const auto bad = test::run_tool("gloas-gen-model", {"--preset", "tiny", "--vocab", dir + "/missing.gguf", "-o", path});
    CHECK(bad.status != 0);
    CHECK(contains(bad.err, "missing.gguf"));
    const auto help = test::run_tool("gloas-gen-model", {"--help"});
    CHECK(help.status == 0);
    CHECK(contains(help.out, "--preset"));
}
