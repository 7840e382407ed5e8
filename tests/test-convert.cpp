// gloas-convert and its readers: llama2.c -> GGUF must equal llama.cpp's
// conversion value for value and generate the golden text; a Hugging Face
// folder built here from stories260K's weights (safetensors, rotary permutation,
// tokenizer.model or tokenizer.json) converts back to the same model; bad
// safetensors, config.json and tokenizer.model files give clear errors and
// leave no output behind.
#include "decoder/gguf.h"
#include "decoder/llama.h"
#include "decoder/model.h"
#include "decoder/safetensors.h"
#include "decoder/sampler.h"
#include "decoder/spm-model.h"
#include "decoder/tokenizer.h"
#include "quant/fp16.h"
#include "base/error.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <cstring>
#include <map>
#include <string>
#include <sys/stat.h>
#include <vector>

using namespace gloas;

namespace {

using test::contains;
using test::file_exists;

std::string golden(const std::string & name) { return test::read_file(test::data_file("golden/" + name)); }

std::string generate(const model & m, const std::string & prompt, int steps) {
    context_params cp;
    context ctx(m, cp);
    return test::generate_like_llama2c(ctx, prompt, steps);
}

// ---- writing Hugging Face files ------------------------------------------

struct st_tensor {
    std::string name, dtype;
    std::vector<int64_t> shape;
    std::string bytes;
};

// A safetensors image: header padded with spaces to a multiple of 8.
std::string safetensors_image(const std::vector<st_tensor> & ts, const std::string & extra_header = {}) {
    std::string h = "{\"__metadata__\":{\"format\":\"pt\"}";
    std::string data;
    for (const auto & t : ts) {
        h += ",\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":[";
        for (size_t i = 0; i < t.shape.size(); ++i) h += (i ? "," : "") + std::to_string(t.shape[i]);
        h += "],\"data_offsets\":[" + std::to_string(data.size()) + "," + std::to_string(data.size() + t.bytes.size()) + "]}";
        data += t.bytes;
    }
    h += extra_header + "}";
    while (h.size() % 8) h += ' ';
    uint64_t n = h.size();
    std::string out(reinterpret_cast<const char *>(&n), 8);
    return out + h + data;
}

std::string f32_bytes(const float * x, size_t n) { return std::string(reinterpret_cast<const char *>(x), n * 4); }

std::string f16_bytes(const float * x, size_t n) {
    std::vector<uint16_t> h(n);
    for (size_t i = 0; i < n; ++i) h[i] = fp32_to_fp16(x[i]);
    return std::string(reinterpret_cast<const char *>(h.data()), n * 2);
}

// Protobuf encoders for tokenizer.model.
void pb_varint(std::string & o, uint64_t v) {
    while (v >= 0x80) { o += char(uint8_t(v) | 0x80); v >>= 7; }
    o += char(uint8_t(v));
}
void pb_key(std::string & o, uint32_t field, uint32_t wire) { pb_varint(o, uint64_t(field) << 3 | wire); }
void pb_bytes(std::string & o, uint32_t field, const std::string & s) {
    pb_key(o, field, 2);
    pb_varint(o, s.size());
    o += s;
}
void pb_int(std::string & o, uint32_t field, int64_t v) {
    pb_key(o, field, 0);
    pb_varint(o, uint64_t(v));
}

std::string spm_image(const vocab & v) {
    std::string o;
    for (size_t i = 0; i < v.pieces.size(); ++i) {
        std::string sp;
        pb_bytes(sp, 1, v.pieces[i]);
        pb_key(sp, 2, 5);
        sp.append(reinterpret_cast<const char *>(&v.scores[i]), 4);
        if (v.types[i] != token_type::NORMAL) pb_int(sp, 3, int32_t(v.types[i]));
        pb_bytes(o, 1, sp);
    }
    std::string ts;
    pb_bytes(ts, 1, "train.txt");  // a field the reader skips
    pb_int(ts, 3, 2);              // model_type BPE
    pb_int(ts, 4, int64_t(v.pieces.size()));
    pb_int(ts, 35, 1);             // byte_fallback
    pb_int(ts, 40, 0);
    pb_int(ts, 41, 1);
    pb_int(ts, 42, 2);
    pb_int(ts, 43, -1);            // pad_id: a 10-byte varint
    pb_bytes(o, 2, ts);
    std::string ns;
    pb_bytes(ns, 1, "identity");
    pb_int(ns, 3, 1);              // add_dummy_prefix
    pb_bytes(o, 3, ns);
    return o;
}

// The HF layout of stories260K: rows of wq / wk permuted as Hugging Face's
// conversion script does (per head, even rows first, then odd rows).
std::vector<float> hf_permute(const tensor & w, int64_t n_head) {
    const int64_t rows = w.ne[1], cols = w.ne[0], hd = rows / n_head;
    const float * src = static_cast<const float *>(w.data);
    std::vector<float> out(size_t(rows * cols));
    for (int64_t h = 0; h < n_head; ++h)
        for (int64_t i = 0; i < hd / 2; ++i)
            for (int64_t j = 0; j < 2; ++j)
                std::memcpy(&out[size_t((h * hd + j * (hd / 2) + i) * cols)], src + (h * hd + 2 * i + j) * cols, size_t(cols) * 4);
    return out;
}

// Writes a Hugging Face folder holding stories260K. f16: F16 weights in two
// shards with an index (and an explicit lm_head); otherwise one F32 file with
// tied embeddings.
void write_hf_folder(const std::string & dir, const model & m, bool f16) {
    const hparams & hp = m.hp;
    std::vector<st_tensor> ts;
    auto put = [&](const std::string & name, const float * x, std::vector<int64_t> shape) {
        size_t n = 1;
        for (int64_t d : shape) n *= size_t(d);
        ts.push_back({name, f16 ? "F16" : "F32", shape, f16 ? f16_bytes(x, n) : f32_bytes(x, n)});
    };
    auto mat = [&](const std::string & name, const tensor & t) {
        put(name, static_cast<const float *>(t.data), {t.ne[1], t.ne[0]});
    };
    auto vec = [&](const std::string & name, const tensor & t) { put(name, static_cast<const float *>(t.data), {t.ne[0]}); };
    mat("model.embed_tokens.weight", m.tok_embd);
    for (int il = 0; il < hp.n_layer; ++il) {
        const layer_weights & l = m.layers[size_t(il)];
        const std::string b = "model.layers." + std::to_string(il) + ".";
        vec(b + "input_layernorm.weight", l.attn_norm);
        std::vector<float> q = hf_permute(l.wq, hp.n_head), k = hf_permute(l.wk, hp.n_head_kv);
        put(b + "self_attn.q_proj.weight", q.data(), {l.wq.ne[1], l.wq.ne[0]});
        put(b + "self_attn.k_proj.weight", k.data(), {l.wk.ne[1], l.wk.ne[0]});
        mat(b + "self_attn.v_proj.weight", l.wv);
        mat(b + "self_attn.o_proj.weight", l.wo);
        vec(b + "post_attention_layernorm.weight", l.ffn_norm);
        mat(b + "mlp.gate_proj.weight", l.ffn_gate);
        mat(b + "mlp.down_proj.weight", l.ffn_down);
        mat(b + "mlp.up_proj.weight", l.ffn_up);
    }
    vec("model.norm.weight", m.output_norm);
    if (f16) mat("lm_head.weight", m.output);
    // An inverse-frequency buffer older checkpoints carry: skipped by the converter.
    const float inv_freq[4] = {1.0f, 0.1f, 0.01f, 0.001f};
    put("model.layers.0.self_attn.rotary_emb.inv_freq", inv_freq, {4});

    if (!f16) {
        test::write_file(dir + "/model.safetensors", safetensors_image(ts));
    } else {
        const size_t half = ts.size() / 2;
        std::vector<st_tensor> a(ts.begin(), ts.begin() + long(half)), b(ts.begin() + long(half), ts.end());
        test::write_file(dir + "/model-00001-of-00002.safetensors", safetensors_image(a));
        test::write_file(dir + "/model-00002-of-00002.safetensors", safetensors_image(b));
        std::string idx = "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {";
        for (size_t i = 0; i < ts.size(); ++i)
            idx += std::string(i ? ", " : "") + "\"" + ts[i].name + "\": \"model-0000" + (i < half ? "1" : "2") + "-of-00002.safetensors\"";
        idx += "}}";
        test::write_file(dir + "/model.safetensors.index.json", idx);
    }
    test::write_file(dir + "/config.json", format(R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
  "hidden_size": %d, "intermediate_size": %d, "num_hidden_layers": %d,
  "num_attention_heads": %d, "num_key_value_heads": %d, "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0, "max_position_embeddings": %d, "vocab_size": %d,
  "tie_word_embeddings": %s, "rope_scaling": null, "bos_token_id": 1, "eos_token_id": 2,
  "torch_dtype": "%s"
})", hp.n_embd, hp.n_ff, hp.n_layer, hp.n_head, hp.n_head_kv, hp.n_ctx_train, hp.n_vocab, f16 ? "false" : "true",
                                                   f16 ? "float16" : "float32"));
    test::write_file(dir + "/tokenizer.model", spm_image(m.tok.get_vocab()));
}

// A new folder dir/name holding m as a Hugging Face folder; its path.
std::string hf_folder(const std::string & dir, const std::string & name, const model & m, bool f16) {
    const std::string hf = dir + "/" + name;
    REQUIRE(::mkdir(hf.c_str(), 0755) == 0);
    write_hf_folder(hf, m, f16);
    return hf;
}

// Runs gloas-convert, which must succeed.
test::run_result convert_ok(const std::vector<std::string> & args) {
    test::run_result r = test::run_tool("gloas-convert", args);
    INFO(r.err);
    REQUIRE(r.status == 0);
    return r;
}

using test::json_escape;

// tokenizer.json for a SentencePiece vocabulary: merges in score order, each
// splitting a piece into two pieces of the vocabulary.
std::string tokenizer_json(const vocab & v) {
    std::map<std::string, int> ids;
    for (size_t i = 0; i < v.pieces.size(); ++i) ids[v.pieces[i]] = int(i);
    std::vector<std::pair<float, std::string>> merges;
    for (size_t i = 0; i < v.pieces.size(); ++i) {
        if (v.types[i] != token_type::NORMAL) continue;
        const std::string & p = v.pieces[i];
        for (size_t k = 1; k < p.size(); ++k) {
            if ((uint8_t(p[k]) & 0xC0) == 0x80) continue;  // not a character boundary
            if (ids.count(p.substr(0, k)) && ids.count(p.substr(k))) {
                merges.push_back({v.scores[i], json_escape(p.substr(0, k)) + " " + json_escape(p.substr(k))});
                break;
            }
        }
    }
    std::stable_sort(merges.begin(), merges.end(), [](const auto & a, const auto & b) { return a.first > b.first; });
    std::string j = "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},"
                    "{\"id\":1,\"content\":\"<s>\",\"special\":true},{\"id\":2,\"content\":\"</s>\",\"special\":true}],"
                    "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\u2581\"},"
                    "{\"type\":\"Replace\"}]},\"pre_tokenizer\":null,"
                    "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"byte_fallback\":true,\"vocab\":{";
    for (size_t i = 0; i < v.pieces.size(); ++i) j += (i ? "," : "") + std::string("\"") + json_escape(v.pieces[i]) + "\":" + std::to_string(i);
    j += "},\"merges\":[";
    for (size_t i = 0; i < merges.size(); ++i) j += (i ? ",\"" : "\"") + merges[i].second + "\"";
    return j + "]}}";
}

// Every tensor of `a` equals the one of the same name in `b`: type, shape, bytes.
void check_same_tensors(const gguf_file & a, const gguf_file & b, bool all_of_b = true) {
    if (all_of_b) CHECK(a.tensors().size() == b.tensors().size());
    for (const auto & t : a.tensors()) {
        INFO("tensor " << t.name);
        const gguf_tensor_info * u = b.find_tensor(t.name);
        REQUIRE(u != nullptr);
        CHECK(t.t == u->t);
        CHECK(t.n_dims == u->n_dims);
        for (int d = 0; d < 4; ++d) CHECK(t.ne[d] == u->ne[d]);
        REQUIRE(t.nbytes == u->nbytes);
        CHECK(std::memcmp(t.data, u->data, t.nbytes) == 0);
    }
}

void check_same_vocab(const gguf_file & a, const gguf_file & b) {
    CHECK(a.get_str_array("tokenizer.ggml.tokens") == b.get_str_array("tokenizer.ggml.tokens"));
    const auto sa = a.get_f32_array("tokenizer.ggml.scores"), sb = b.get_f32_array("tokenizer.ggml.scores");
    REQUIRE(sa.size() == sb.size());
    CHECK(std::memcmp(sa.data(), sb.data(), sa.size() * 4) == 0);  // -0.0 included
    CHECK(a.get_i32_array("tokenizer.ggml.token_type") == b.get_i32_array("tokenizer.ggml.token_type"));
    for (const char * k : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id"})
        CHECK(a.get_u32(k, 99) == b.get_u32(k, 98));
    CHECK(a.get_str("tokenizer.ggml.model") == b.get_str("tokenizer.ggml.model"));
}

// Values of f16 tensor `h` that are not the f16 rounding of f32 tensor `f`.
int64_t count_f16_diffs(const gguf_tensor_info & h, const gguf_tensor_info & f) {
    REQUIRE(h.t == type::F16);
    REQUIRE(f.t == type::F32);
    REQUIRE(h.ne[0] * h.ne[1] == f.ne[0] * f.ne[1]);
    int64_t n = 0;
    for (int64_t i = 0; i < f.ne[0] * f.ne[1]; ++i)
        n += static_cast<const uint16_t *>(h.data)[i] != fp32_to_fp16(static_cast<const float *>(f.data)[i]);
    return n;
}

const uint8_t * bytes(const std::string & s) { return reinterpret_cast<const uint8_t *>(s.data()); }

std::string parse_error(const std::string & img) {
    return test::error_of([&] { safetensors_file::parse(bytes(img), img.size(), "bad.safetensors"); });
}

std::string spm_error(const std::string & img) {
    return test::error_of([&] { spm_model::parse(bytes(img), img.size(), "bad.model"); });
}

std::string header_image(const std::string & json, const std::string & data) {
    uint64_t n = json.size();
    return std::string(reinterpret_cast<const char *>(&n), 8) + json + data;
}

} // namespace

TEST_CASE("convert: llama2.c stories260K equals llama.cpp's conversion and generates the golden text") {
    const std::string dir = test::temp_dir("convert-llama2c");
    const std::string out = dir + "/stories260K.gguf";
    // The checkpoint's tokenizer (tok512.bin) is found beside it.
    auto r = convert_ok({test::require_model("stories260K.bin"), "-o", out});
    auto ours = gguf_file::open(out);
    auto ref = gguf_file::open(test::require_model("stories260K_f32.gguf"));
    check_same_tensors(*ours, *ref);
    // Same tensor order as llama.cpp's converter.
    for (size_t i = 0; i < ref->tensors().size(); ++i) CHECK(ours->tensors()[i].name == ref->tensors()[i].name);
    check_same_vocab(*ours, *ref);
    // Metadata: every llama.* key of the reference has the same value.
    for (const auto & kv : ref->metadata()) {  // no structured binding: INFO captures k (clang 14)
        const auto & k = kv.first;
        const auto & v = kv.second;
        if (k.rfind("llama.", 0) != 0) continue;
        INFO(k);
        REQUIRE(ours->find(k) != nullptr);
        CHECK(ours->find(k)->type == v.type);
        CHECK(ours->find(k)->u == v.u);
        CHECK(ours->find(k)->f == v.f);
    }
    CHECK(ours->get_u32("general.file_type", 99) == 0);
    CHECK(ours->get_str("general.name") == "stories260K");

    auto m = model::load({out, ""});
    CHECK(m->hp.n_ctx_train == 512);
    CHECK(generate(*m, "Once upon a time", 128) == golden("stories260K_greedy_n128_once_upon_a_time.txt"));

    // An existing output needs --force; f16 matrices then keep norms in f32.
    r = test::run_tool("gloas-convert", {test::require_model("stories260K.bin"), "-o", out, "--outtype", "f16", "-q"});
    CHECK(r.status != 0);
    CHECK(contains(r.err, "--force"));
    r = test::run_tool("gloas-convert", {test::require_model("stories260K.bin"), "-o", out, "--outtype", "f16", "-q", "--force"});
    REQUIRE(r.status == 0);
    auto h = gguf_file::open(out);
    CHECK(h->get_u32("general.file_type", 99) == 1);
    CHECK(h->find_tensor("blk.0.attn_q.weight")->t == type::F16);
    CHECK(h->find_tensor("blk.0.attn_norm.weight")->t == type::F32);
    const gguf_tensor_info * hq = h->find_tensor("blk.1.ffn_down.weight");
    const gguf_tensor_info * fq = ref->find_tensor("blk.1.ffn_down.weight");
    CHECK(count_f16_diffs(*hq, *fq) == 0);
    CHECK(!file_exists(out + ".tmp"));
}

TEST_CASE("convert: command line errors") {
    const std::string dir = test::temp_dir("convert-cli");
    auto r = test::run_tool("gloas-convert", {"--help"});
    CHECK(r.status == 0);
    CHECK(contains(r.out, "--outtype"));
    CHECK(contains(r.out, "--force"));
    r = test::run_tool("gloas-convert", {test::require_model("stories260K.bin")});
    CHECK(r.status == 2);
    CHECK(contains(r.err, "-o"));
    r = test::run_tool("gloas-convert", {test::require_model("stories260K.bin"), "-o", dir + "/x.gguf", "--outtype", "q4_0"});
    CHECK(r.status == 2);
    r = test::run_tool("gloas-convert", {dir + "/missing.bin", "-o", dir + "/x.gguf"});
    CHECK(r.status == 1);
    CHECK(contains(r.err, "missing.bin"));
    r = test::run_tool("gloas-convert", {test::require_model("stories260K_f32.gguf"), "-o", dir + "/x.gguf"});
    CHECK(r.status == 1);
    CHECK(contains(r.err, "already a GGUF"));
    CHECK(!file_exists(dir + "/x.gguf"));
}

TEST_CASE("convert: a llama2.c tokenizer whose piece count is not the model's vocabulary is refused, nothing written") {
    const std::string dir = test::temp_dir("convert-tokenizer");
    const std::string model = test::require_model("stories260K.bin");
    const std::string big = test::require_model("tokenizer.bin");  // 32000 pieces; the model has 512
    auto r = test::run_tool("gloas-convert", {model, "-z", big, "-o", dir + "/x.gguf"});
    CHECK(r.status == 1);
    CHECK_MESSAGE(contains(r.err, big + ": tokenizer has 32000 pieces, the model's vocabulary is 512"), r.err);
    CHECK(!file_exists(dir + "/x.gguf"));
    CHECK(!file_exists(dir + "/x.gguf.tmp"));
    // the long spelling, too
    r = test::run_tool("gloas-convert", {model, "--tokenizer", big, "-o", dir + "/x.gguf"});
    CHECK(r.status == 1);
    CHECK(!file_exists(dir + "/x.gguf"));
    // found beside the model (no tok512.bin there): refused as well, saying how to choose another
    const std::string beside = test::temp_dir("convert-tokenizer-beside");
    test::write_file(beside + "/stories260K.bin", test::read_file(model));
    test::write_file(beside + "/tokenizer.bin", test::read_file(big));
    r = test::run_tool("gloas-convert", {beside + "/stories260K.bin", "-o", dir + "/y.gguf"});
    CHECK(r.status == 1);
    CHECK(contains(r.err, "tokenizer has 32000 pieces, the model's vocabulary is 512"));
    CHECK(contains(r.err, "--tokenizer FILE"));
    CHECK(!file_exists(dir + "/y.gguf"));
    // the matching tokenizer converts
    r = test::run_tool("gloas-convert", {model, "-z", test::require_model("tok512.bin"), "-o", dir + "/z.gguf", "-q"});
    CHECK_MESSAGE(r.status == 0, r.err);
    CHECK(file_exists(dir + "/z.gguf"));
}

TEST_CASE("convert: Hugging Face folder (F32, one file, tied embeddings, tokenizer.model) converts back to stories260K") {
    auto src = model::load({test::require_model("stories260K.bin"), ""});
    const std::string dir = test::temp_dir("convert-hf32");
    const std::string hf = hf_folder(dir, "stories-hf-0.26M", *src, false);
    const std::string out = dir + "/hf.gguf";
    convert_ok({hf, "--outtype", "f32", "-o", out});
    auto ours = gguf_file::open(out);
    auto ref = gguf_file::open(test::require_model("stories260K_f32.gguf"));
    CHECK(ours->find_tensor("output.weight") == nullptr);  // tied
    CHECK(ours->tensors().size() + 1 == ref->tensors().size());
    check_same_tensors(*ours, *ref, false);  // the permutation is undone exactly
    check_same_vocab(*ours, *ref);
    CHECK(ours->get_str("general.name") == "stories-hf-0.26M");
    CHECK(ours->get_u32("llama.context_length", 0) == 512);
    CHECK(ours->get_f32("llama.attention.layer_norm_rms_epsilon", 0) == 1e-5f);
    auto m = model::load({out, ""});
    CHECK(generate(*m, "Once upon a time", 128) == golden("stories260K_greedy_n128_once_upon_a_time.txt"));
}

TEST_CASE("convert: Hugging Face folder (F16, two shards with an index, lm_head) loads and generates") {
    auto src = model::load({test::require_model("stories260K.bin"), ""});
    const std::string dir = test::temp_dir("convert-hf16");
    const std::string hf = hf_folder(dir, "hf", *src, true);
    const std::string out = dir + "/hf16.gguf";
    auto r = convert_ok({hf, "-o", out, "--name", "tiny stories"});  // default outtype: f16
    CHECK(contains(r.err, "model-00002-of-00002.safetensors"));
    auto f = gguf_file::open(out);
    CHECK(f->get_str("general.name") == "tiny stories");
    CHECK(f->get_u32("general.file_type", 99) == 1);
    REQUIRE(f->find_tensor("output.weight") != nullptr);
    // attn_q: the f16 rounding of llama.cpp's f32 values, rows back in GGUF order.
    auto ref = gguf_file::open(test::require_model("stories260K_f32.gguf"));
    for (const char * name : {"blk.2.attn_q.weight", "blk.2.attn_k.weight", "output.weight", "token_embd.weight"}) {
        INFO(name);
        const gguf_tensor_info * a = f->find_tensor(name);
        const gguf_tensor_info * b = ref->find_tensor(name);
        REQUIRE(a->t == type::F16);
        CHECK(count_f16_diffs(*a, *b) == 0);
    }
    CHECK(f->find_tensor("blk.0.ffn_norm.weight")->t == type::F32);
    auto m = model::load({out, ""});
    const std::string text = generate(*m, "Once upon a time", 64);
    CHECK(text.size() > 40);
    CHECK(text.rfind("Once upon a time", 0) == 0);
}

TEST_CASE("convert: tokenizer.json (BPE with byte_fallback) gives the same tokens as tokenizer.model") {
    auto src = model::load({test::require_model("stories260K.bin"), ""});
    const std::string dir = test::temp_dir("convert-tokjson");
    const std::string hf = hf_folder(dir, "hf", *src, false);
    REQUIRE(std::remove((hf + "/tokenizer.model").c_str()) == 0);
    test::write_file(hf + "/tokenizer.json", tokenizer_json(src->tok.get_vocab()));
    const std::string out = dir + "/tj.gguf";
    auto r = convert_ok({hf, "-o", out, "-q"});
    auto m = model::load({out, ""});
    for (const std::string & s : {std::string("Once upon a time, there was a little girl named Lily."),
                                  golden("stories260K_greedy_n128_once_upon_a_time.txt"), std::string("  x\n\ty €ü 日本 ")}) {
        INFO(s);
        CHECK(m->tok.encode(s, true) == src->tok.encode(s, true));
    }

    // A GPT-2-style byte-level vocabulary is refused by name.
    test::write_file(hf + "/tokenizer.json", R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"ByteLevel"}})");
    r = test::run_tool("gloas-convert", {hf, "-o", dir + "/bl.gguf", "-q"});
    CHECK(r.status == 1);
    CHECK(contains(r.err, "tokenizer.json"));
    CHECK(contains(r.err, "byte-level"));
    CHECK(!file_exists(dir + "/bl.gguf"));
}

TEST_CASE("convert: bad Hugging Face folders fail with the file and field, leaving no output") {
    auto src = model::load({test::require_model("stories260K.bin"), ""});
    const std::string dir = test::temp_dir("convert-bad");
    const std::string hf = hf_folder(dir, "hf", *src, false);
    const std::string config = test::read_file(hf + "/config.json");
    const std::string weights = test::read_file(hf + "/model.safetensors");
    const std::string spm = test::read_file(hf + "/tokenizer.model");
    const std::string out = dir + "/out.gguf";

    auto expect_fail = [&](const std::vector<std::string> & words) {
        auto r = test::run_tool("gloas-convert", {hf, "-o", out, "-q"});
        INFO(r.err);
        CHECK(r.status == 1);
        for (const auto & w : words) CHECK(contains(r.err, w));
        CHECK(!file_exists(out));
        CHECK(!file_exists(out + ".tmp"));
    };
    auto replace = [](std::string s, const std::string & a, const std::string & b) {
        size_t p = s.find(a);
        REQUIRE(p != std::string::npos);
        return s.replace(p, a.size(), b);
    };

    SUBCASE("config.json is not JSON") {
        test::write_file(hf + "/config.json", "{\"hidden_size\": 64,");
        expect_fail({"config.json", "invalid JSON"});
    }
    SUBCASE("config.json misses a field") {
        test::write_file(hf + "/config.json", replace(config, "\"hidden_size\"", "\"hidden_sz\""));
        expect_fail({"config.json", "hidden_size"});
    }
    SUBCASE("config.json has a negative field") {
        test::write_file(hf + "/config.json", replace(config, "\"num_hidden_layers\": 5", "\"num_hidden_layers\": -5"));
        expect_fail({"config.json", "num_hidden_layers"});
    }
    SUBCASE("config.json disagrees with the tensors") {
        test::write_file(hf + "/config.json", replace(config, "\"intermediate_size\": 172", "\"intermediate_size\": 128"));
        expect_fail({"model.safetensors", "mlp.gate_proj.weight", "shape"});
    }
    SUBCASE("another architecture") {
        test::write_file(hf + "/config.json", replace(config, "\"model_type\": \"llama\"", "\"model_type\": \"gpt2\""));
        expect_fail({"config.json", "gpt2"});
    }
    SUBCASE("truncated tokenizer.model") {
        test::write_file(hf + "/tokenizer.model", spm.substr(0, spm.size() / 2));
        expect_fail({"tokenizer.model"});
    }
    SUBCASE("tokenizer.model is not a protobuf") {
        test::write_file(hf + "/tokenizer.model", std::string("\x0f\xff\xff\xff", 4));
        expect_fail({"tokenizer.model"});
    }
    SUBCASE("truncated safetensors") {
        test::write_file(hf + "/model.safetensors", weights.substr(0, weights.size() - 100));
        expect_fail({"model.safetensors", "past the end"});
    }
    SUBCASE("safetensors with a bad header length") {
        std::string w = weights;
        w[7] = char(0x40);
        test::write_file(hf + "/model.safetensors", w);
        expect_fail({"model.safetensors", "header length"});
    }
    SUBCASE("a tensor missing") {
        test::write_file(hf + "/model.safetensors", replace(weights, "model.layers.3.mlp.up_proj.weight", "model.layers.3.mlp.up_pr0j.weight"));
        expect_fail({"model.layers.3.mlp.up_proj.weight", "missing"});
    }
    SUBCASE("no tokenizer") {
        REQUIRE(std::remove((hf + "/tokenizer.model").c_str()) == 0);
        expect_fail({"tokenizer"});
    }
}

TEST_CASE("safetensors: a valid image parses") {
    const float x[6] = {1, 2, 3, 4, 5, 6};
    const std::string img = safetensors_image({{"a", "F32", {2, 3}, f32_bytes(x, 6)}, {"b", "BF16", {}, std::string(2, '\0')},
                                               {"empty", "F16", {0, 5}, ""}});
    auto f = safetensors_file::parse(reinterpret_cast<const uint8_t *>(img.data()), img.size(), "ok.safetensors");
    REQUIRE(f->tensors().size() == 3);
    const safetensors_tensor * a = f->find("a");
    REQUIRE(a);
    CHECK(a->t == type::F32);
    CHECK(a->shape == std::vector<int64_t>{2, 3});
    CHECK(a->nelements() == 6);
    CHECK(std::memcmp(a->data, x, 24) == 0);
    CHECK(f->find("b")->t == type::BF16);
    CHECK(f->find("b")->shape.empty());
    CHECK(f->find("empty")->nbytes == 0);
    CHECK(f->metadata().at("format") == "pt");
    CHECK(f->data_offset() % 8 == 0);
}

TEST_CASE("safetensors: malformed headers give clear errors") {
    auto err = [&](const std::string & json, const std::string & data = std::string(16, '\0')) {
        return parse_error(header_image(json, data));
    };
    CHECK(contains(parse_error(""), "too small"));
    CHECK(contains(parse_error(std::string("\x10\0\0\0\0\0\0\0{}", 10)), "past the end"));
    CHECK(contains(parse_error(std::string("\xff\xff\xff\xff\xff\xff\xff\xff{}", 10)), "past the end"));
    CHECK(contains(err("[1, 2]"), "not a JSON object"));
    CHECK(contains(err("{\"a\": "), "header JSON"));
    CHECK(contains(err("{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}} x"), "after the JSON value"));
    CHECK(contains(err("{\"a\": 1, \"a\": 2}"), "duplicate key"));
    CHECK(contains(err("{\"a\": \"\\ud800\"}"), "surrogate"));
    CHECK(contains(err(std::string("{\"a\xff\": 1}")), "UTF-8"));
    CHECK(contains(err(std::string(100, '[') + std::string(100, ']')), "not a JSON object"));
    CHECK(contains(err("{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}"), "nested deeper"));
    CHECK(contains(err("{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 32]}}"), "past the end of the data"));
    CHECK(contains(err("{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [8, 4]}}"), "end before they begin"));
    CHECK(contains(err("{\"w\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 16]}}"), "need 12"));
    CHECK(contains(err("{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                       " \"v\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}"), "overlap"));
    CHECK(contains(err("{\"w\": {\"dtype\": \"Q4\", \"shape\": [4], \"data_offsets\": [0, 16]}}"), "unknown dtype 'Q4'"));
    CHECK(contains(err("{\"w\": {\"dtype\": \"I64\", \"shape\": [2], \"data_offsets\": [0, 16]}}"), "I64 is not supported"));
    CHECK(contains(err("{\"w\": {\"dtype\": \"F32\", \"shape\": [-4], \"data_offsets\": [0, 16]}}"), "shape[0]"));
    CHECK(contains(err("{\"w\": {\"dtype\": \"F32\", \"shape\": [4.0], \"data_offsets\": [0, 16]}}"), "shape[0]"));
    CHECK(contains(err("{\"w\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 16]}}"), "too many elements"));
    CHECK(contains(err("{\"w\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 4]}}"), "dimensions"));
    CHECK(contains(err("{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0]}}"), "data_offsets"));
    CHECK(contains(err("{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 99999999999999999999]}}"), "data_offsets"));
    CHECK(contains(err("{\"w\": {\"shape\": [4], \"data_offsets\": [0, 16]}}"), "missing field dtype"));
    CHECK(contains(err("{\"w\": [1]}"), "expected an object"));
    CHECK(contains(err("{\"__metadata__\": {\"k\": 1}}"), "__metadata__.k"));
    CHECK(err("{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}  ") == "");
    // Every message names the file.
    CHECK(err("{\"w\": {\"dtype\": \"F32\", \"shape\": [5], \"data_offsets\": [0, 16]}}").rfind("bad.safetensors: ", 0) == 0);
}

TEST_CASE("spm-model: Llama 2's tokenizer.model equals llama.cpp's vocabulary") {
    spm_model sm = spm_model::load(test::require_model("tokenizer.model"));
    CHECK(sm.model_type == 2);
    CHECK(sm.byte_fallback);
    CHECK(sm.v.unk == 0);
    CHECK(sm.v.bos == 1);
    CHECK(sm.v.eos == 2);
    CHECK(sm.pad_id == -1);
    CHECK(sm.v.add_space_prefix);
    auto ref = gguf_file::open(test::require_model("vocab/ggml-vocab-llama-spm.gguf"));
    const auto toks = ref->get_str_array("tokenizer.ggml.tokens");
    const auto scores = ref->get_f32_array("tokenizer.ggml.scores");
    const auto types = ref->get_i32_array("tokenizer.ggml.token_type");
    REQUIRE(sm.v.pieces.size() == toks.size());
    size_t diffs = 0;
    for (size_t i = 0; i < toks.size(); ++i)
        diffs += sm.v.pieces[i] != toks[i] || sm.v.scores[i] != scores[i] || int32_t(sm.v.types[i]) != types[i];
    CHECK(diffs == 0);
}

TEST_CASE("spm-model: malformed protobufs give clear errors") {
    vocab v;
    v.pieces = {"<unk>", "<s>", "</s>", "a"};
    v.scores = {0, 0, 0, -1};
    v.types = {token_type::UNKNOWN, token_type::CONTROL, token_type::CONTROL, token_type::NORMAL};
    const std::string good = spm_image(v);
    CHECK(spm_error(good) == "");
    CHECK(spm_model::parse(reinterpret_cast<const uint8_t *>(good.data()), good.size(), "x").v.pieces == v.pieces);
    CHECK(contains(spm_error(""), "empty"));
    // Cut inside a message, an image fails; cut between messages, it may parse.
    size_t n_failed = 0, n_cuts = 0;
    for (size_t n = 1; n < good.size(); n += 3, ++n_cuts) n_failed += spm_error(good.substr(0, n)) != "";
    CHECK(n_failed * 10 > n_cuts * 8);
    CHECK(contains(spm_error(std::string("\x0b", 1)), "groups"));             // field 1, wire type 3
    CHECK(contains(spm_error(std::string("\x0e", 1)), "wire type"));           // wire type 6
    CHECK(contains(spm_error(std::string("\x00\x01", 2)), "field number"));
    CHECK(contains(spm_error(std::string("\x0a\x05\x0a", 3)), "past the end"));
    CHECK(contains(spm_error(std::string(11, '\xff')), "varint"));
    std::string bad_type;
    {
        std::string sp;
        pb_bytes(sp, 1, "x");
        pb_int(sp, 3, 9);
        pb_bytes(bad_type, 1, sp);
    }
    CHECK(contains(spm_error(bad_type), "unknown type 9"));
    std::string bad_utf8;
    {
        std::string sp;
        pb_bytes(sp, 1, "\xc3");
        pb_bytes(bad_utf8, 1, sp);
    }
    CHECK(contains(spm_error(bad_utf8), "UTF-8"));
    std::string bad_id = good;
    {
        std::string ts;
        pb_int(ts, 41, 99);
        pb_bytes(bad_id, 2, ts);
    }
    CHECK(contains(spm_error(bad_id), "bos_id"));
    std::string piece_as_varint;
    pb_int(piece_as_varint, 1, 5);
    CHECK(contains(spm_error(piece_as_varint), "wire type"));
    CHECK(contains(spm_error(std::string("\x12\x00", 2)), "no pieces"));
}
