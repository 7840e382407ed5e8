// The YAML subset parser and the run configuration: the specification's file
// loads as it is, examples/gloas.yaml gives the same settings as its
// command-line flags, every kind of bad input fails on the right line, and
// the model's shape is checked.
#include "decoder/config.h"
#include "decoder/model.h"
#include "decoder/options.h"
#include "decoder/strategy.h"
#include "decoder/yaml.h"
#include "kvcache/page.h"
#include "base/error.h"
#include "test-util.h"

#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

using namespace gloas;

namespace {

// The message of the gloas::error f throws; "" (and a failed check) if none.
template <class F> std::string error_of(F && f) {
    try {
        f();
    } catch (const error & e) {
        return e.what();
    }
    FAIL_CHECK("no error thrown");
    return "";
}

std::string yaml_error(const std::string & text) {
    return error_of([&] { yaml_parse(text, "t.yaml"); });
}

std::string config_error(const std::string & text) {
    return error_of([&] { config_parse(text, "cfg.yaml"); });
}

bool starts_with(const std::string & s, const std::string & p) { return s.compare(0, p.size(), p) == 0; }

bool has_warning(const run_config & c, const std::string & part) {
    for (const auto & w : c.warnings)
        if (w.find(part) != std::string::npos) return true;
    return false;
}

// The flags examples/gloas.yaml's header says it is equivalent to.
std::vector<std::string> example_flags() {
    const std::string text = test::read_file(std::string(GLOAS_SOURCE_DIR) + "/examples/gloas.yaml");
    const size_t at = text.find("#   -c ");
    REQUIRE(at != std::string::npos);
    std::vector<std::string> args;
    for (size_t p = at; p < text.size() && text.compare(p, 4, "#   ") == 0;) {
        const size_t e = text.find('\n', p);
        for (size_t w = p + 4; w < e;) {
            const size_t sp = std::min(text.find(' ', w), e);
            if (sp > w) args.push_back(text.substr(w, sp - w));
            w = sp + 1;
        }
        p = e + 1;
    }
    return args;
}

// The lines of a gloas run's stderr that report its settings: the context and
// threads, the sparse ratio, the K/V pages and policy.
std::string settings_of(const std::string & err) {
    std::string r;
    for (const char * key : {"; context ", "sparse decode attention: ratio ", "gloas: kv "}) {
        const size_t at = err.find(key);
        if (at == std::string::npos) continue;
        const size_t e = err.find_first_of(":\n", at + std::strlen(key));
        r += err.substr(at, e - at) + (err.find("(compressed)", at) < err.find('\n', at) ? " compressed" : "") + "\n";
    }
    return r;
}

// The specification's file as it is (../shared/spec/gloas-config.yaml),
// kept here so the test runs where the shared folder is not.
const char * SPEC = R"(# The configuration shape from the project's specification. gloas must accept
# this file as it is (see DESIGN.md, "tools/"), mapping every key to a real
# setting; training-only keys are accepted with a warning.
gloas:
  ultra_kv_cache:
    max_cache_size: 8192
    cache_chunk_size: 512
    max_sequence_length: 4096
    cache_dtype: float16
    use_compression: true
    compression_ratio: 0.3
    use_memory_mapping: true
    memory_layout: hierarchical
    cache_strategy: adaptive
    use_async_loading: true
    use_parallel_processing: true
    num_workers: 4
    use_cuda_streams: true
    use_quantization: true
    quantization_bits: 8
    use_sparse_attention: true
    sparse_attention_ratio: 0.1
    
  ultra_decoder:
    d_model: 512
    n_heads: 8
    n_layers: 6
    d_ff: 2048
    vocab_size: 50000
    max_sequence_length: 4096
    use_sparse_attention: true
    sparse_attention_ratio: 0.1
    memory_strategy: balanced
    use_gradient_checkpointing: true
    use_activation_checkpointing: true
    use_mixed_precision: true
    use_parallel_processing: true
    num_workers: 4
    use_cuda_streams: true
    use_async_processing: true
    use_quantization: true
    quantization_bits: 8
    use_compression: true
    compression_ratio: 0.3
    
  cache_strategies:
    lru: true
    lfu: true
    fifo: true
    adaptive: true
    compressed: true
    
  memory_strategies:
    aggressive: true
    balanced: true
    speed: true
)";

void check_spec_settings(const run_config & c) {
    CHECK(c.capacity.u == kv_capacity::unit::TOKENS);
    CHECK(c.capacity.n == 8192);
    CHECK(c.ctx.n_ubatch == 512);          // cache_chunk_size > 64: prefill chunk
    CHECK(c.ctx.kv.page_tokens == 32);     // unchanged
    CHECK(c.ctx.n_ctx == 4096);
    CHECK(c.ctx.kv.kv_type == type::Q8_0); // use_quantization wins over cache_dtype
    CHECK(c.ctx.kv.compressed_share == doctest::Approx(0.3));
    CHECK(c.kv_file);
    CHECK(c.ctx.kv.policy == evict_policy::ADAPTIVE);
    CHECK(c.prefetch);
    CHECK(c.ctx.n_threads == 4);
    CHECK(c.use_cuda_streams);
    CHECK(c.use_sparse_attention);
    CHECK(c.sparse_ratio == doctest::Approx(0.1));
    CHECK(c.shape.d_model == 512);
    CHECK(c.shape.n_heads == 8);
    CHECK(c.shape.n_layers == 6);
    CHECK(c.shape.d_ff == 2048);
    CHECK(c.shape.vocab_size == 50000);
    CHECK(c.strategy == "balanced");
    CHECK(c.async_writeback);
    CHECK(c.weight_type == type::Q8_0);
    for (bool b : c.policy_enabled) CHECK(b);
    for (bool b : c.strategy_enabled) CHECK(b);
}

// The context settings a file or flags give, as one line to compare.
std::string ctx_text(const context_params & c) {
    return format("n_ctx %d, ubatch %d, threads %d, %s pages of %d in '%s', capacity %zu, %s policy (share %.17g)",
                  c.n_ctx, c.n_ubatch, c.n_threads, type_name(c.kv.kv_type), c.kv.page_tokens, c.kv.dir.c_str(),
                  c.kv.capacity_bytes, evict_policy_name(c.kv.policy), c.kv.compressed_share);
}

// The settings of a run_config that only a file gives or that have no effect.
std::string file_text(const run_config & r) {
    std::string s = format("prefetch %d, writeback %d, cuda %d, strategy %s, sparse %d (%.17g)", r.prefetch,
                           r.async_writeback, r.use_cuda_streams, r.strategy.c_str(), r.use_sparse_attention, r.sparse_ratio);
    s += format("; page file %d, shape %d %d %d %d %d, %s weights; enabled", r.kv_file, r.shape.d_model, r.shape.n_heads,
                r.shape.n_layers, r.shape.d_ff, r.shape.vocab_size, type_name(r.weight_type));
    for (bool b : r.policy_enabled) s += b ? " 1" : " 0";
    for (bool b : r.strategy_enabled) s += b ? " 1" : " 0";
    return s;
}

// Every setting of a run_config (warnings and path aside).
void check_same_settings(const run_config & a, const run_config & b) {
    CHECK(ctx_text(a.ctx) == ctx_text(b.ctx));
    CHECK(file_text(a) == file_text(b));
}

} // namespace

TEST_CASE("yaml: mappings, sequences, flow collections, scalars") {
    const yaml_node n = yaml_parse(
        "# comment\n"
        "---\n"
        "a:\n"
        "  b: 1        # trailing comment\n"
        "  c:\n"
        "    d: -2.5e3\n"
        "  e: \"x: #y\\t\\u00e9\\\"\"\n"
        "  'f g': 'it''s'\n"
        "\n"
        "list:\n"
        "- one\n"
        "- name: two\n"
        "  size: 2\n"
        "-\n"
        "  - nested\n"
        "indented:\n"
        "  - [1, [2, 3], {k: v, q: \"w\"}, ]\n"
        "empty:\n"
        "tilde: ~\n"
        "url: http://x.org/a#b\r\n"
        "flags: [true, False, NULL]\n",
        "t.yaml");
    REQUIRE(n.kind == yaml_kind::MAP);
    REQUIRE(n.entries.size() == 7);
    const yaml_node * a = n.find("a");
    REQUIRE(a);
    CHECK(a->line == 4);
    CHECK(a->find("b")->as_int() == 1);
    CHECK(a->find("c")->find("d")->as_float() == doctest::Approx(-2500.0));
    CHECK(a->find("c")->find("d")->as_int() == std::nullopt);
    CHECK(a->find("e")->text == "x: #y\t\xc3\xa9\"");
    CHECK(a->find("e")->quoted);
    CHECK(a->find("f g")->text == "it's");
    const yaml_node * l = n.find("list");
    REQUIRE(l);
    REQUIRE(l->kind == yaml_kind::SEQ);
    REQUIRE(l->items.size() == 3);
    CHECK(l->items[0].text == "one");
    CHECK(l->items[1].find("name")->text == "two");
    CHECK(l->items[1].find("size")->as_int() == 2);
    CHECK(l->items[1].line == 12);
    REQUIRE(l->items[2].kind == yaml_kind::SEQ);
    CHECK(l->items[2].items[0].text == "nested");
    const yaml_node & f = n.find("indented")->items.at(0);
    REQUIRE(f.kind == yaml_kind::SEQ);
    REQUIRE(f.items.size() == 3);
    CHECK(f.items[1].items[1].as_int() == 3);
    CHECK(f.items[2].find("k")->text == "v");
    CHECK(f.items[2].find("q")->quoted);
    CHECK(n.find("empty")->kind == yaml_kind::NUL);
    CHECK(n.find("empty")->line == 18);
    CHECK(n.find("tilde")->kind == yaml_kind::NUL);
    CHECK(n.find("url")->text == "http://x.org/a#b");
    const yaml_node * fl = n.find("flags");
    CHECK(fl->items[0].as_bool() == true);
    CHECK(fl->items[1].as_bool() == false);
    CHECK(fl->items[2].kind == yaml_kind::NUL);
    CHECK(n.find("missing") == nullptr);

    CHECK(yaml_parse("", "t.yaml").kind == yaml_kind::NUL);
    CHECK(yaml_parse("# only a comment\n\n", "t.yaml").kind == yaml_kind::NUL);
    CHECK(yaml_parse("\xef\xbb\xbfk: v\n", "t.yaml").find("k")->text == "v");
}

TEST_CASE("yaml: typed reads") {
    auto scalar = [](const std::string & v) { return yaml_parse("k: " + v, "t.yaml").entries.at(0).value; };
    CHECK(scalar("true").as_bool() == true);
    CHECK(scalar("TRUE").as_bool() == true);
    CHECK(scalar("yes").as_bool() == std::nullopt);
    CHECK(scalar("\"true\"").as_bool() == std::nullopt);
    CHECK(scalar("+42").as_int() == 42);
    CHECK(scalar("-7").as_int() == -7);
    CHECK(scalar("99999999999999999999").as_int() == std::nullopt);
    CHECK(scalar("0x10").as_int() == std::nullopt);
    CHECK(scalar("'8'").as_int() == std::nullopt);
    CHECK(scalar("4").as_float() == doctest::Approx(4.0));
    CHECK(scalar(".5").as_float() == doctest::Approx(0.5));
    CHECK(scalar("1e400").as_float() == std::nullopt);
    CHECK(scalar("inf").as_float() == std::nullopt);
    CHECK(scalar("nan").as_float() == std::nullopt);
    CHECK(scalar("1e").as_float() == std::nullopt);
    CHECK(scalar("four").describe() == "'four'");
    CHECK(scalar("\"4\"").describe() == "the string \"4\"");
}

TEST_CASE("yaml: refused input names the line and the feature") {
    // The input and its whole message.
    const std::pair<std::string, std::string> whole[] = {
        {"a:\n\tb: 1\n", "t.yaml:2: tab character in indentation (indent with spaces)"},
        {"a: 1\na: 2\n", "t.yaml:2: duplicate key 'a' (first at line 1)"},
        {"a:\n  b: 1\n   c: 2\n", "t.yaml:3: bad indentation: 3 spaces, expected 2"},
        {"a:\n    b: 1\n  c: 2\n", "t.yaml:3: bad indentation: 2 spaces, but the levels around are indented 0 and 4"},
        {"a: &x 1\n", "t.yaml:1: anchors ('&') are not supported"},
        {"a: 1\nb: *x\n", "t.yaml:2: aliases ('*') are not supported"},
        {"a: !!str 1\n", "t.yaml:1: tags ('!') are not supported"},
        {"a: |\n  text\n", "t.yaml:1: block scalars ('|', '>') are not supported"},
        {"a: 1\n---\nb: 2\n", "t.yaml:2: multiple documents ('---') are not supported"},
        {"a: 1\n...\n", "t.yaml:2: document end markers ('...') are not supported"},
        {"%YAML 1.2\na: 1\n", "t.yaml:1: directives (%YAML, %TAG) are not supported"},
        {"? a\n: b\n", "t.yaml:1: complex keys ('? ') are not supported"},
        {"<<: {a: 1}\n", "t.yaml:1: merge keys ('<<') are not supported"},
    };
    for (const auto & [in, want] : whole) CHECK(yaml_error(in) == want);
    // The input and how its message starts.
    const std::pair<std::string, std::string> start[] = {
        {"a: 1\n  b: 2\n", "t.yaml:2: bad indentation"},
        {"a: \"open\n", "t.yaml:1: unterminated quoted string"},
        {"a: [1, 2\n", "t.yaml:1: unterminated flow sequence"},
        {"a: {b: 1\n", "t.yaml:1: unterminated flow mapping"},
        {"a: [1,, 2]\n", "t.yaml:1: empty entry"},
        {"a: \"x\" y\n", "t.yaml:1: unexpected text after the value"},
        {"a: b: c\n", "t.yaml:1: a mapping ('key: value') cannot start inside a value"},
        {"a: 1\n- b\n", "t.yaml:2: a sequence item"},
        {"a: 1\njust text\n", "t.yaml:2: expected 'key: value'"},
        {"a: \"\\q\"\n", "t.yaml:1: unknown escape"},
        {"a: \"\\ud800\"\n", "t.yaml:1: escape U+D800"},
        {"a: 1\x01\n", "t.yaml:1: control character 0x01"},
        {"a: {b: 1, b: 2}\n", "t.yaml:1: duplicate key 'b'"},
        {std::string(100, '[') + std::string(100, ']') + "\n", "t.yaml:1: nesting deeper than 64"},
    };
    for (const auto & [in, want] : start) CHECK(starts_with(yaml_error(in), want));
    std::string deep;
    for (int i = 0; i < 100; ++i) deep += std::string(size_t(i), ' ') + "k:\n";
    CHECK(starts_with(yaml_error(deep), "t.yaml:"));
    CHECK(yaml_error(deep).find("nesting deeper than 64") != std::string::npos);
}

TEST_CASE("config: the specification's file loads as it is") {
    const run_config c = config_parse(SPEC, "gloas-config.yaml");
    check_spec_settings(c);
    CHECK(has_warning(c, "gloas-config.yaml:34: ultra_decoder.use_gradient_checkpointing: training only"));
    CHECK(has_warning(c, "gloas-config.yaml:35: ultra_decoder.use_activation_checkpointing: training only"));
    // The shared copy, when this checkout has the shared folder beside it.
    const std::string shared = std::string(GLOAS_SOURCE_DIR) + "/../shared/spec/gloas-config.yaml";
    if (FILE * f = std::fopen(shared.c_str(), "rb")) {
        std::fclose(f);
        const run_config s = config_load(shared);
        check_spec_settings(s);
        CHECK(s.warnings.size() == c.warnings.size());
        CHECK(test::read_file(shared) == SPEC);
    } else {
        MESSAGE("not found (checked the built-in copy only): " << shared);
    }

    // Without a model the shape defines a random-weight one.
    const llama_gguf_hparams hp = config_random_model_shape(c);
    CHECK(format("embd %lld, heads %lld/%lld of %lld, layers %lld, ff %lld, vocab %lld, ctx %lld, %s", (long long) hp.n_embd,
                 (long long) hp.n_head, (long long) hp.n_head_kv, (long long) hp.head_dim, (long long) hp.n_layer,
                 (long long) hp.n_ff, (long long) hp.n_vocab, (long long) hp.n_ctx, type_name(hp.wtype)) ==
          "embd 512, heads 8/8 of 64, layers 6, ff 2048, vocab 50000, ctx 4096, q8_0");
}

TEST_CASE("config: examples/gloas.yaml gives the same settings as the equivalent flags") {
    const std::string path = std::string(GLOAS_SOURCE_DIR) + "/examples/gloas.yaml";
    const run_config y = config_load(path);
    CHECK(y.warnings.empty());

    // The flags the file's header lists instead of --config, read as gloas and
    // gloas-server read them: config_apply_flag, then config_override over the
    // strategy's defaults.
    const std::vector<std::string> args = example_flags();
    run_config f;
    for (size_t i = 0; i < args.size();) {
        const size_t used = config_apply_flag(f, args, i);
        REQUIRE_MESSAGE(used > 0, args[i]);
        i += used;
    }

    const std::string mp = test::require_model("stories260K.bin");
    const auto m = model::load({mp, ""});
    config_check_model(y, m->hp, "stories260K.bin");  // the example's shape is stories260K's
    const context_params a = config_context_params(y, m->hp, "/tmp/kv");
    context_params b;
    b.kv.dir = "/tmp/kv";
    memory_strategy st = memory_strategy::SPEED;
    REQUIRE(memory_strategy_from_name(f.strategy.c_str(), &st));
    apply_strategy(st, b);
    config_override(f, m->hp, b);
    CHECK(b.sparse.ratio == doctest::Approx(y.sparse_ratio));
    CHECK(ctx_text(a) == ctx_text(b));
    const std::string rest = file_text(y);
    CHECK(rest.substr(0, rest.find(';')) == file_text(f).substr(0, rest.find(';')));
    // ... and the values themselves.
    page_geometry g(32, m->hp);
    CHECK(ctx_text(a) == format("n_ctx 512, ubatch 512, threads 2, q8_0 pages of 32 in '/tmp/kv', capacity %zu, compressed "
                                "policy (share 0.25)", 128 * g.page_bytes(type::Q8_0)));
    CHECK(rest.substr(0, rest.find(';')) == "prefetch 1, writeback 1, cuda 0, strategy balanced, sparse 1 (0.25)");
    CHECK(y.weight_type == type::F16);
    CHECK_FALSE(y.policy_enabled[int(evict_policy::FIFO)]);
    CHECK_FALSE(y.strategy_enabled[memory_strategy_index("aggressive")]);

    // Flags given after the file override it; disabled choices stay refused.
    run_config o = y;
    const std::vector<std::string> over = {"--kv-type", "q4_0", "-c", "256", "--kv-dir", "none", "--kv-capacity", "1000t"};
    for (size_t i = 0; i < over.size(); i += config_apply_flag(o, over, i)) {}
    const context_params c = config_context_params(o, m->hp, "/tmp/kv");
    CHECK(c.kv.kv_type == type::Q4_0);
    CHECK(c.n_ctx == 256);
    CHECK(c.kv.dir.empty());
    CHECK(c.kv.capacity_bytes == 32 * g.page_bytes(type::Q4_0));  // ceil(1000 / 32) pages
    CHECK(c.n_threads == 2);
    const std::vector<std::string> fifo = {"--kv-policy", "fifo"};
    CHECK(error_of([&] { config_apply_flag(o, fifo, 0); }).find("'fifo' is disabled by cache_strategies") !=
          std::string::npos);
    const std::vector<std::string> aggr = {"--strategy", "aggressive"};
    CHECK(error_of([&] { config_apply_flag(o, aggr, 0); }).find("disabled by memory_strategies") != std::string::npos);
    const std::vector<std::string> unknown = {"-p", "hello"};
    CHECK(config_apply_flag(o, unknown, 0) == 0);

    // A model-shape mismatch names the key, the configured and the model's value.
    run_config bad = config_parse("gloas:\n  ultra_decoder:\n    d_model: 64\n    n_layers: 6\n", "cfg.yaml");
    CHECK(error_of([&] { config_check_model(bad, m->hp, "stories260K.bin"); }) ==
          "cfg.yaml:4: ultra_decoder.n_layers: 6, but the model stories260K.bin has 5");
}

TEST_CASE("config: bad files fail on the right line") {
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n    max_cache_size: 10\n    cache_sizee: 3\n") ==
          "cfg.yaml:4: ultra_kv_cache.cache_sizee: unknown key (known keys: max_cache_size, cache_chunk_size, "
          "max_sequence_length, cache_dtype, use_compression, compression_ratio, use_memory_mapping, memory_layout, "
          "cache_strategy, use_async_loading, use_sparse_attention, sparse_attention_ratio, use_parallel_processing, "
          "num_workers, use_cuda_streams, use_quantization, quantization_bits)");
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n\n\n\n\n    cache_dtype: float8\n") ==
          "cfg.yaml:7: ultra_kv_cache.cache_dtype: expected one of float32, float16, bfloat16, int8, int4, or a "
          "--kv-type value (f32, f16, q8_0, q4_0 or q4_kivi), got 'float8'");
    // One ultra_kv_cache key (line 3), and the error after "cfg.yaml:3: ultra_kv_cache.". Keys that are a
    // shared option take what its flag takes, with its message.
    const std::pair<const char *, const char *> one_key[] = {
        {"num_workers: four", "num_workers: expected an integer in [-1, 1024], got 'four'"},
        {"num_workers: \"4\"", "num_workers: expected an integer, got the string \"4\""},
        {"use_compression: yes", "use_compression: expected true or false, got 'yes'"},
        {"compression_ratio: [1]", "compression_ratio: expected a number, got a sequence"},
        {"num_workers: 5000", "num_workers: expected an integer in [-1, 1024], got '5000'"},
        {"sparse_attention_ratio: 1.5", "sparse_attention_ratio: expected a number in (0, 1], got '1.5'"},
        {"cache_strategy: mru", "cache_strategy takes lru, lfu, fifo, adaptive or compressed, got 'mru'"},
    };
    for (const auto & [key, want] : one_key)
        CHECK(config_error(std::string("gloas:\n  ultra_kv_cache:\n    ") + key + "\n") == std::string("cfg.yaml:3: ultra_kv_cache.") + want);
    // A file and its whole message; the parser's errors (indentation, tabs,
    // duplicates) carry the line too.
    const std::pair<std::string, std::string> files[] = {
        {"gloas:\n  ultra_kv_cache:\n    use_quantization: true\n    quantization_bits: 16\n",
         "cfg.yaml:4: ultra_kv_cache.quantization_bits: expected 4 or 8, got 16"},
        {"gloas:\n  ultra_kv_cache:\n    cache_chunk_size: 48\n    cache_dtype: int8\n",
         "cfg.yaml:3: ultra_kv_cache: cache_dtype: q8_0 needs cache_chunk_size to be a multiple of 32 (each page row "
         "holds one channel's tokens in blocks of 32), got cache_chunk_size: 48; use cache_chunk_size: 64 or "
         "cache_dtype: f16"},
        {"gloas:\n  ultra_kv_cache:\n    cache_chunk_size: 16\n    cache_strategy: compressed\n",
         "cfg.yaml:3: ultra_kv_cache: cache_strategy: compressed re-quantizes evicted pages to q4_0, which needs "
         "cache_chunk_size to be a multiple of 32, got cache_chunk_size: 16; use cache_chunk_size: 32 or another "
         "cache_strategy"},
        {"other: 1\n",
         "cfg.yaml:1: other: unknown key (the configuration is under 'gloas:')"},
        {"gloas:\n  ultra_kv_cache: 3\n",
         "cfg.yaml:2: ultra_kv_cache: expected a mapping, got '3' (an integer)"},
        {"gloas:\n  ultra_kv_cache:\n    num_workers: 4\n   max_cache_size: 8\n",
         "cfg.yaml:4: bad indentation: 3 spaces, but the levels around are indented 2 and 4"},
        {"gloas:\n  ultra_kv_cache:\n\tnum_workers: 4\n",
         "cfg.yaml:3: tab character in indentation (indent with spaces)"},
        {"gloas:\n  ultra_kv_cache:\n    num_workers: 4\n    num_workers: 8\n",
         "cfg.yaml:4: duplicate key 'num_workers' (first at line 3)"},
        {"",
         "cfg.yaml: empty configuration (expected 'gloas:' at the top)"},
    };
    for (const auto & [text, want] : files) CHECK(config_error(text) == want);
    // A file and how its message starts.
    const std::pair<std::string, std::string> starts[] = {
        {"gloas:\n  ultra_decoder:\n    d_modle: 64\n",
         "cfg.yaml:3: ultra_decoder.d_modle: unknown key"},
        {"gloas:\n  ultra_decoder:\n    cache_dtype: int8\n",
         "cfg.yaml:3: ultra_decoder.cache_dtype: unknown key"},
        {"gloas:\n  ultra_cache:\n    a: 1\n",
         "cfg.yaml:2: gloas.ultra_cache: unknown section"},
        {"gloas:\n  cache_strategies:\n    mru: true\n",
         "cfg.yaml:3: cache_strategies.mru: unknown key"},
    };
    for (const auto & [text, want] : starts) CHECK(starts_with(config_error(text), want));
    CHECK(error_of([] { config_load("/nonexistent/cfg.yaml"); }).find("/nonexistent/cfg.yaml: cannot open") == 0);
}

TEST_CASE("config: choices must be enabled; sections must agree") {
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n    cache_strategy: lfu\n  cache_strategies:\n    lfu: false\n") ==
          "cfg.yaml:3: ultra_kv_cache.cache_strategy: 'lfu' is disabled in cache_strategies (line 4)");
    CHECK(config_error("gloas:\n  ultra_decoder:\n    memory_strategy: speed\n  memory_strategies:\n    speed: false\n") ==
          "cfg.yaml:3: ultra_decoder.memory_strategy: 'speed' is disabled in memory_strategies (line 4)");
    CHECK(config_error("gloas:\n  cache_strategies:\n    lru: false\n    lfu: false\n    fifo: false\n    adaptive: false\n"
                       "    compressed: false\n") ==
          "cfg.yaml:2: cache_strategies: every eviction policy is disabled; enable at least one");
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n    num_workers: 4\n  ultra_decoder:\n    num_workers: 8\n") ==
          "cfg.yaml:5: ultra_decoder.num_workers: 8 disagrees with ultra_kv_cache.num_workers: 4 (line 3)");
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n    use_compression: false\n    cache_strategy: compressed\n") ==
          "cfg.yaml:4: ultra_kv_cache.cache_strategy: 'compressed' needs use_compression: true (line 3 says false)");

    // Defaults follow what is enabled; use_compression alone picks the compressed policy.
    run_config c = config_parse("gloas:\n  cache_strategies:\n    lru: false\n", "cfg.yaml");
    CHECK(c.ctx.kv.policy == evict_policy::LFU);
    c = config_parse("gloas:\n  ultra_kv_cache:\n    use_compression: true\n    compression_ratio: 0.5\n", "cfg.yaml");
    CHECK(c.ctx.kv.policy == evict_policy::COMPRESSED);
    CHECK(c.ctx.kv.compressed_share == doctest::Approx(0.5));
    c = config_parse("gloas:\n", "cfg.yaml");
    const run_config d;
    CHECK(c.ctx.kv.policy == d.ctx.kv.policy);
    CHECK(c.ctx.kv.kv_type == d.ctx.kv.kv_type);
    CHECK(c.ctx.n_ctx == d.ctx.n_ctx);
    CHECK(c.capacity.u == kv_capacity::unit::DEFAULT);
    CHECK(c.warnings.empty());

    // Keys that change less than they seem say so.
    c = config_parse("gloas:\n  ultra_kv_cache:\n    cache_dtype: bfloat16\n    use_memory_mapping: true\n"
                     "    memory_layout: flat\n    use_parallel_processing: false\n    num_workers: 8\n",
                     "cfg.yaml");
    CHECK(c.ctx.kv.kv_type == type::F16);
    CHECK_FALSE(c.kv_file);
    CHECK(c.ctx.n_threads == 1);
    CHECK(has_warning(c, "cfg.yaml:3: ultra_kv_cache.cache_dtype: K/V pages have no bfloat16 type"));
    CHECK(has_warning(c, "cfg.yaml:4: ultra_kv_cache.use_memory_mapping: no page file with memory_layout: flat"));
    CHECK(has_warning(c, "cfg.yaml:7: num_workers: ignored"));
    c = config_parse("gloas:\n  ultra_kv_cache:\n    cache_chunk_size: 64\n    cache_dtype: int4\n", "cfg.yaml");
    CHECK(c.ctx.kv.page_tokens == 64);
    CHECK(c.ctx.kv.kv_type == type::Q4_0);
    CHECK(c.ctx.n_ubatch == d.ctx.n_ubatch);
}

TEST_CASE("config: random-weight model shapes") {
    auto shape = [](const std::string & dec) { return config_parse("gloas:\n  ultra_decoder:\n" + dec, "cfg.yaml"); };
    CHECK(error_of([&] { config_random_model_shape(shape("    d_model: 64\n    n_heads: 4\n")); }) ==
          "cfg.yaml: ultra_decoder.n_layers is needed to make a random-weight model (no model given)");
    CHECK(error_of([&] { config_random_model_shape(shape("    d_model: 64\n    n_heads: 5\n    n_layers: 2\n")); }) ==
          "cfg.yaml:4: ultra_decoder.n_heads: d_model 64 is not a multiple of n_heads 5");
    CHECK(error_of([&] {
              config_random_model_shape(shape("    d_model: 80\n    n_heads: 4\n    n_layers: 2\n    use_quantization: true\n"));
          }) == "cfg.yaml:3: ultra_decoder.d_model: 80 is not a multiple of 32, the block of q8_0 weights");
    const llama_gguf_hparams hp = config_random_model_shape(shape("    d_model: 64\n    n_heads: 4\n    n_layers: 2\n"));
    CHECK(hp.n_ff == 256);
    CHECK(hp.n_vocab == 32000);
    CHECK(hp.n_ctx == 2048);
    CHECK(hp.wtype == type::F16);
}

TEST_CASE("config: config_to_yaml writes settings that read back the same") {
    const std::string example = std::string(GLOAS_SOURCE_DIR) + "/examples/gloas.yaml";
    run_config from_flags;
    const std::vector<std::string> args = {"-c", "1024", "-ub", "128", "--kv-type", "f32", "--kv-capacity", "10p",
                                           "--kv-policy", "lfu", "-t", "1", "--kv-compressed-share", "0.7",
                                           "--strategy", "speed"};
    for (size_t i = 0; i < args.size(); i += config_apply_flag(from_flags, args, i)) {}
    // Keys without a flag (they have no effect in this build) still read back.
    from_flags.prefetch = false;
    from_flags.async_writeback = false;
    from_flags.use_cuda_streams = true;
    const run_config cases[] = {config_parse(SPEC, "spec.yaml"), config_load(example), run_config(), from_flags};
    for (const run_config & c : cases) {
        const std::string y = config_to_yaml(c);
        INFO(y);
        const run_config back = config_parse(y, "back.yaml");
        CHECK(back.warnings.empty());
        const hparams hp{{5, 4, 8}, 512, 512, 64, 172, 8, 8, 1e-5f, 10000.0f};  // {n_layer, n_head_kv, head_dim}, n_vocab, ...
        CHECK(config_context_params(back, hp).kv.capacity_bytes == config_context_params(c, hp).kv.capacity_bytes);
        check_same_settings(back, c);
        CHECK(config_to_yaml(back) == y);
    }
    // What the specification's keys cannot hold is said in a comment.
    run_config both = from_flags;
    const std::vector<std::string> page = {"--kv-page", "64", "--kv-capacity", "1G"};
    for (size_t i = 0; i < page.size(); i += config_apply_flag(both, page, i)) {}
    const std::string y = config_to_yaml(both);
    CHECK(y.find("    cache_chunk_size: 64\n    # prefill chunk 128 tokens (-ub 128)\n") != std::string::npos);
    CHECK(y.find("# max_cache_size not set: 1073741824 bytes of pages (--kv-capacity 1073741824)") != std::string::npos);
}

TEST_CASE("config: --kv-capacity in pages or tokens stays within max_cache_size's bound, and is written back") {
    const std::string most = std::to_string(MAX_CACHE_TOKENS);
    CHECK(parse_kv_capacity("--kv-capacity", most + "t").n == uint64_t(MAX_CACHE_TOKENS));
    CHECK(parse_kv_capacity("--kv-capacity", most + "p").n == uint64_t(MAX_CACHE_TOKENS));
    for (const char * unit : {"t", "p"}) {
        INFO(unit);
        CHECK(error_of([&] { parse_kv_capacity("--kv-capacity", std::to_string(MAX_CACHE_TOKENS + 1) + unit); }) ==
              "--kv-capacity: '" + std::to_string(MAX_CACHE_TOKENS + 1) + unit + "': at most " + most +
                  (std::string(unit) == "t" ? " tokens" : " pages"));
        CHECK(error_of([&] { parse_kv_capacity("--kv-capacity", std::string("819198191929000") + unit); }) != "");
    }
    // Past size_t in bytes: the largest size, never a wrapped small one.
    CHECK(kv_capacity_bytes(parse_kv_capacity("--kv-capacity", most + "p"), size_t(1) << 30, 32, 0) == SIZE_MAX);
    CHECK(kv_capacity_bytes(parse_kv_capacity("--kv-capacity", "3p"), 1000, 32, 0) == 3000);
    CHECK(kv_capacity_bytes(parse_kv_capacity("--kv-capacity", "33t"), 1000, 32, 0) == 2000);
    // Pages whose tokens pass the file's bound: said in a comment, and the file still reads.
    run_config c;
    const std::vector<std::string> args = {"--kv-capacity", most + "p"};
    for (size_t i = 0; i < args.size(); i += config_apply_flag(c, args, i)) {}
    const std::string y = config_to_yaml(c);
    INFO(y);
    CHECK(y.find("# max_cache_size not set: " + most + " pages of 32 tokens is past its bound") != std::string::npos);
    CHECK(config_parse(y, "back.yaml").warnings.empty());
}

// ---- The shared option table (decoder/options.h) ----

namespace {

std::string cli_error_of(run_config & cfg, const std::vector<std::string> & args) {
    try {
        for (size_t i = 0; i < args.size();) {
            const size_t used = config_apply_flag(cfg, args, i);
            if (used == 0) return "not a shared flag: " + args[i];
            i += used;
        }
        config_flags_check(cfg);
    } catch (const cli_error & e) {
        return e.what();
    }
    return "";
}

} // namespace

TEST_CASE("options: every row is reachable by each spelling, ids match their index, help lists every spelling") {
    std::string help;
    for (const char * g : {OPT_GROUP_CONTEXT, OPT_GROUP_KV, OPT_GROUP_SAMPLING, OPT_GROUP_MODEL})
        help += options_usage(SHARED_OPTIONS, N_SHARED_OPTS, g);
    for (int k = 0; k < N_SHARED_OPTS; ++k) {
        const option_def & d = SHARED_OPTIONS[k];
        INFO(d.names);
        CHECK(d.id == k);
        CHECK(std::string(d.help).size() > 10);
        std::string names = d.names;
        for (size_t at = 0; at <= names.size();) {
            size_t e = names.find('|', at);
            if (e == std::string::npos) e = names.size();
            const std::string s = names.substr(at, e - at);
            CHECK(option_find(SHARED_OPTIONS, N_SHARED_OPTS, s) == &d);
            CHECK(help.find(s) != std::string::npos);
            at = e + 1;
        }
    }
    CHECK(option_find(SHARED_OPTIONS, N_SHARED_OPTS, "--no-such") == nullptr);
    // Every help line fits in 80 columns.
    for (size_t at = 0, e; (e = help.find('\n', at)) != std::string::npos; at = e + 1) CHECK(e - at < 80);
}

TEST_CASE("options: values are checked by kind and range; errors name the spelling typed") {
    run_config c;
    CHECK(cli_error_of(c, {"--ctx-size", "4096", "-ub", "64", "-b", "32", "-t", "-1", "--temp", "0", "--seed", "-1",
                           "--repeat-last-n", "-1", "--presence-penalty", "-0.5", "--frequency-penalty", "1",
                           "-ctk", "q8_0", "-ctv", "q8_0", "--kv-ram", "0", "--kv-read", "copy", "-ngl", "33",
                           "--mlock", "--no-mmap", "--ctx-slide"}) == "");
    CHECK(c.ctx.n_ctx == 4096);
    CHECK(c.ctx.n_ubatch == 64);
    CHECK(c.n_batch == 32);
    CHECK(c.ctx.n_threads == 0);
    CHECK(c.sampling.temp == 0.0f);
    CHECK(c.sampling.seed == SEED_RANDOM);
    CHECK(c.sampling.presence_penalty == -0.5f);
    CHECK(c.sampling.frequency_penalty == 1.0f);
    CHECK(c.ctx.kv.kv_type == type::Q8_0);
    CHECK(c.kv_type_v == type::Q8_0);
    CHECK(c.kv_ram.u == kv_capacity::unit::BYTES);
    CHECK(c.kv_ram.n == 0);
    CHECK(c.ctx.kv.read_copy);
    CHECK(c.n_gpu_layers == 33);
    CHECK(c.mlock);
    CHECK(c.no_mmap);
    CHECK_FALSE(c.mmap);
    CHECK(c.ctx.slide.on);
    CHECK(c.flag_given(OPT_KV_TYPE_K));
    CHECK_FALSE(c.flag_given(OPT_KV_TYPE));
    CHECK(config_sampling(c, 300).repeat_last_n == 300);
    CHECK(c.sampling.repeat_last_n == -1);

    // --mmap and --no-mmap: the last one given counts.
    run_config m;
    CHECK(cli_error_of(m, {"--no-mmap", "--mmap"}) == "");
    CHECK(m.mmap);
    CHECK_FALSE(m.no_mmap);
    CHECK(cli_error_of(m, {"--no-mmap"}) == "");
    CHECK_FALSE(m.mmap);
    CHECK(m.no_mmap);

    run_config d;
    CHECK(cli_error_of(d, {"-c", "x"}) == "-c: expected an integer in [0, 16777216], got 'x'");
    CHECK(cli_error_of(d, {"--ctx-size", "-5"}) == "--ctx-size: expected an integer in [0, 16777216], got '-5'");
    CHECK(cli_error_of(d, {"--repeat-penalty", "0"}) == "--repeat-penalty: expected a number in (0, 100], got '0'");
    CHECK(cli_error_of(d, {"--top-p", "inf"}) == "--top-p: expected a number in [0, 1], got 'inf'");
    CHECK(cli_error_of(d, {"--cache-type-v", "q5_0"}) == "--cache-type-v takes f32, f16, q8_0, q4_0 or q4_kivi, got 'q5_0'");
    CHECK(cli_error_of(d, {"--kv-capacity", "0"}).find("--kv-capacity: '0': the bound must be more than 0") == 0);
    CHECK(cli_error_of(d, {"--kv-capacity", "-3p"}).find("must be more than 0") != std::string::npos);
    CHECK(cli_error_of(d, {"-s", "18446744073709551615"}).find("-s: expected -1 (random) or an integer") == 0);
    CHECK(cli_error_of(d, {"--kv-page"}) == "--kv-page needs a value (N)");
    run_config e;
    CHECK(cli_error_of(e, {"--kv-type", "f16", "-ctv", "q4_0"}) ==
          "--kv-type f16 and -ctv q4_0: K and V pages have one type in this build; give the same type to both "
          "(or --kv-type T)");
    run_config v;  // -ctv alone sets both
    CHECK(cli_error_of(v, {"-ctv", "q4_0"}) == "");
}

TEST_CASE("options: the K/V type, page size and policy check refuses exactly what cannot work") {
    for (type t : {type::F32, type::F16, type::Q8_0, type::Q4_0, type::BF16}) {
        for (int32_t page = 1; page <= 130; ++page)
            for (evict_policy p : {evict_policy::LRU, evict_policy::COMPRESSED}) {
                const bool block = t == type::Q8_0 || t == type::Q4_0;
                const bool ok = kv_type_supported(t) && (page % 32 == 0 || (!block && p != evict_policy::COMPRESSED));
                const std::string why = kv_options_problem(t, page, p);
                INFO(type_name(t) << " " << page << " " << evict_policy_name(p) << ": " << why);
                CHECK(why.empty() == ok);
                if (!ok && kv_type_supported(t)) CHECK(why.find("--kv-page " + std::to_string(page)) != std::string::npos);
            }
    }
    CHECK(kv_options_problem(type::F16, 0, evict_policy::LRU).find("--kv-page 0") == 0);
    CHECK(kv_options_problem(type::F16, 5000, evict_policy::LRU).find("--kv-page 5000") == 0);
    CHECK_FALSE(kv_type_supported(type::BF16));

    // What the check allows, the library runs; what it refuses, the library
    // refuses with an error (never an assertion), also without the tools.
    const auto m = model::load({test::require_model("stories260K.bin"), ""});
    for (type t : {type::F16, type::Q4_0})
        for (int32_t page : {16, 32})
            for (evict_policy p : {evict_policy::LRU, evict_policy::COMPRESSED}) {
                context_params cp;
                cp.kv.dir.clear();
                cp.kv.kv_type = t;
                cp.kv.page_tokens = page;
                cp.kv.policy = p;
                INFO(type_name(t) << " " << page << " " << evict_policy_name(p));
                if (kv_options_problem(t, page, p).empty()) CHECK_NOTHROW(context(*m, cp));
                else CHECK_THROWS_AS(context(*m, cp), error);
            }

    // Settings changed after the file was read are checked again, naming the
    // file and its keys.
    run_config y = config_parse("gloas:\n  ultra_kv_cache:\n    cache_chunk_size: 32\n    cache_strategy: compressed\n", "c.yaml");
    y.ctx.kv.page_tokens = 16;
    CHECK(error_of([&] { config_context_params(y, m->hp); }).find("c.yaml: cache_strategy: compressed") == 0);
}

TEST_CASE("options: config_override lays only the flags given over the context parameters, then checks them") {
    const hparams hp{{5, 4, 8}, 512, 512, 64, 172, 8, 8, 1e-5f, 10000.0f};  // {n_layer, n_head_kv, head_dim}, n_vocab, ...
    context_params base;
    base.n_ctx = 256;
    base.n_ubatch = 128;
    base.kv.kv_type = type::Q8_0;
    base.kv.page_tokens = 32;
    base.kv.dir = "/somewhere";
    base.sparse.ratio = 0.5f;

    run_config none;
    context_params a = base;
    config_override(none, hp, a);
    CHECK(a.n_ctx == 256);
    CHECK(a.n_ubatch == 128);
    CHECK(a.kv.kv_type == type::Q8_0);
    CHECK(a.kv.dir == "/somewhere");
    CHECK(a.sparse.ratio == 0.5f);

    run_config f;
    const std::vector<std::string> args = {"-b", "64", "--kv-dir", "none", "--no-sparse", "-ctv", "f16", "--kv-capacity", "10p"};
    for (size_t i = 0; i < args.size(); i += config_apply_flag(f, args, i)) {}
    context_params b = base;
    config_override(f, hp, b);
    CHECK(b.n_ctx == 256);
    CHECK(b.n_ubatch == 64);  // -b caps the chunk
    CHECK(b.kv.kv_type == type::F16);
    CHECK(b.kv.dir.empty());
    CHECK(b.sparse.ratio == 1.0f);
    const page_geometry g(32, hp);
    CHECK(b.kv.capacity_bytes == 10 * g.page_bytes(type::F16));

    run_config s;
    const std::vector<std::string> slide = {"--ctx-slide", "-c", "64"};
    for (size_t i = 0; i < slide.size(); i += config_apply_flag(s, slide, i)) {}
    context_params c = base;
    try {
        config_override(s, hp, c);
        FAIL("no error");
    } catch (const cli_error & e) {
        CHECK(std::string(e.what()).find("--ctx-slide needs a context of at least 96 positions") == 0);
    }
    run_config p;
    const std::vector<std::string> page = {"--kv-page", "16"};  // q8_0 from the base, a strategy's say
    for (size_t i = 0; i < page.size(); i += config_apply_flag(p, page, i)) {}
    context_params d = base;
    CHECK_THROWS_AS(config_override(p, hp, d), cli_error);
}

TEST_CASE("options: model_find looks in the model folders, adds .gguf/.bin and follows the manifest") {
    test::require_model("stories260K.bin");
    test::require_model("stories260K_f32.gguf");
    const model_search a = model_find("stories260K");
    CHECK(a.path.find("stories260K.bin") != std::string::npos);
    CHECK(a.manifest_file == "stories260K.bin");
    CHECK(model_find("stories260K_f32").path.find("stories260K_f32.gguf") != std::string::npos);
    CHECK(model_find("/no/such/dir/x.bin").path == "/no/such/dir/x.bin");  // a path is used as given
    const model_search miss = model_find("no-such-model");
    CHECK(miss.path.empty());
    REQUIRE(miss.tried.size() >= 2);
    CHECK(miss.tried[0] == "./models");
    CHECK(miss.tried.back().find("shared/models") != std::string::npos);
    const std::string msg = model_not_found("no-such-model", miss);
    CHECK(msg.find("no-such-model: no model of that name; looked in ./models, ") == 0);
    CHECK(msg.find("models/fetch.sh") != std::string::npos);
}

TEST_CASE("config: a --kv-dir with control characters stays inside its comment") {
    run_config c;
    const std::vector<std::string> args = {"--kv-dir", "kv\nmax_cache_size: 1\x03"};
    CHECK(config_apply_flag(c, args, 0) == 2);
    const std::string y = config_to_yaml(c);
    CHECK(y.find("# page folder kv\\x0amax_cache_size: 1\\x03 (--kv-dir)\n") != std::string::npos);
    const run_config back = config_parse(y, "back.yaml");
    CHECK(back.capacity.u == kv_capacity::unit::DEFAULT);
    CHECK(back.warnings.empty());
}

TEST_CASE("config: gloas run with examples/gloas.yaml and with the flags its header lists reports the same settings") {
    const std::string model = test::require_model("stories260K.bin");
    const std::vector<std::string> run = {"-m", model, "-p", "Once", "-n", "1", "--temp", "0", "--kv-dir", "none"};
    const auto file = test::run_tool("gloas", test::with_args(run, {"--config", std::string(GLOAS_SOURCE_DIR) + "/examples/gloas.yaml"}));
    REQUIRE_MESSAGE(file.status == 0, file.err);
    const auto flags = test::run_tool("gloas", test::with_args(run, example_flags()));
    REQUIRE_MESSAGE(flags.status == 0, flags.err);
    const std::string s = settings_of(file.err);
    CHECK(s == settings_of(flags.err));
    CHECK(s.find("context 512, 2 threads") != std::string::npos);
    CHECK(s.find("ratio 0.25") != std::string::npos);
    CHECK(s.find("kv q8_0 pages of 32 tokens in memory compressed") != std::string::npos);
}

TEST_CASE("options: gloas, gloas-bench, gloas-perplexity, the configuration file and the C API take the same K/V types and values") {
    const std::string model = test::require_model("stories260K.bin");
    const std::string text = test::require_data("tinystories-valid-excerpt.txt");
    // A short run of each tool; the flags under test go at its end.
    struct tool {
        const char * name;
        std::vector<std::string> run;
    };
    const std::vector<tool> tools = {
        {"gloas", {"-m", model, "-p", "Once", "-n", "1", "--kv-dir", "none"}},
        {"gloas-bench", {"-m", model, "-p", "0", "-n", "1", "-r", "1"}},
        {"gloas-perplexity", {"-m", model, "-f", text, "--chunks", "1", "-c", "64"}},
    };
    auto refused = [&](const tool & t, const std::vector<std::string> & extra, const std::string & msg) {
        const auto r = test::run_tool(t.name, test::with_args(t.run, extra));
        CHECK_MESSAGE(r.status == 2, t.name, " ", extra[0], " ", extra[1], ": ", r.err);
        CHECK_MESSAGE(r.err.find(msg) != std::string::npos, t.name, ": ", r.err, " lacks ", msg);
    };

    // Every type the library knows: --kv-type takes exactly kv_type_supported's,
    // in every tool and in the file (whose own names map onto them).
    std::string supported;
    for (uint32_t id = 0; id < TYPE_ID_LIMIT; ++id) {
        if (!type_known(id)) continue;
        const type t = type(id);
        const std::string name = type_name(t);
        INFO(name);
        run_config c;
        const std::string msg = cli_error_of(c, {"--kv-type", name});
        const std::string file = "gloas:\n  ultra_kv_cache:\n    cache_dtype: " + name + "\n";
        if (kv_type_supported(t)) {
            CHECK(msg.empty());
            CHECK(config_parse(file, "k.yaml").ctx.kv.kv_type == t);
            CHECK(kv_options_problem(t, 32, evict_policy::LRU).empty());
            supported += (supported.empty() ? "" : ",") + name;
            continue;
        }
        CHECK(msg == "--kv-type takes " + kv_type_list() + ", got '" + name + "'");
        CHECK(config_error(file).find("a --kv-type value (" + kv_type_list() + "), got '" + name + "'") != std::string::npos);
        CHECK(kv_options_problem(t, 32, evict_policy::LRU) == "--kv-type " + name + ": K/V pages are " + kv_type_list());
        for (const tool & tl : tools) refused(tl, {"--kv-type", name}, msg);
    }
    CHECK(supported == "f32,f16,q4_0,q8_0,q4_kivi");
    CHECK(kv_type_list() == "f32, f16, q8_0, q4_0 or q4_kivi");
    // ... and each supported one runs in each tool (gloas-bench takes them as one list).
    for (const tool & tl : tools) {
        std::vector<std::vector<std::string>> runs;
        if (std::string(tl.name) == "gloas-bench") runs.push_back({"--kv-type", supported});
        else
            for (const char * t : {"f32", "f16", "q8_0", "q4_0"}) runs.push_back({"--kv-type", t});
        for (const auto & extra : runs) {
            const auto r = test::run_tool(tl.name, test::with_args(tl.run, extra));
            CHECK_MESSAGE(r.status == 0, tl.name, " ", extra[1], ": ", r.err);
        }
    }

    // Bad values: one message, from config_apply_flag (and config_flags_check /
    // kv_options_problem for what needs two flags), in every tool that takes
    // the flag.
    const std::vector<std::vector<std::string>> bad = {
        {"-ub", "0"}, {"-t", "-2"}, {"--strategy", "fast"}, {"--kv-page", "0"}, {"--kv-page", "5000"},
        {"--kv-ram", "5x"}, {"-ctk", "q4_K"}, {"-ctk", "q8_0", "-ctv", "f16"}, {"-b", "0"},
    };
    for (const auto & args : bad) {
        run_config c;
        const std::string msg = cli_error_of(c, args);
        INFO(args[0] << " " << args[1] << ": " << msg);
        REQUIRE(!msg.empty());
        for (const tool & tl : tools) refused(tl, args, msg);
    }
    // The page size the type needs: kv_options_problem's message everywhere.
    const std::string page = kv_options_problem(type::Q8_0, 16, evict_policy::LRU);
    CHECK(page == "--kv-type q8_0 needs --kv-page to be a multiple of 32 (each page row holds one channel's tokens "
                  "in blocks of 32), got --kv-page 16; use --kv-page 32 or --kv-type f16");
    for (const tool & tl : tools) refused(tl, {"--kv-type", "q8_0", "--kv-page", "16"}, page);
    // gloas and gloas-perplexity (-c, --sparse-ratio), gloas and gloas-bench (--kv-read).
    for (const auto & args : std::vector<std::vector<std::string>>{{"-c", "-5"}, {"--sparse-ratio", "1.5"}, {"--kv-read", "mmap"}}) {
        run_config c;
        const std::string msg = cli_error_of(c, args);
        for (const tool & tl : tools)
            if (std::string(tl.name) != (args[0] == "--kv-read" ? "gloas-perplexity" : "gloas-bench")) refused(tl, args, msg);
    }

    // The file's keys that are shared options: the flag's message after the key.
    const std::vector<std::pair<std::string, std::vector<std::string>>> keys = {
        {"num_workers: -2", {"-t", "-2"}},
        {"cache_chunk_size: 0", {"-ub", "0"}},
        {"max_sequence_length: -5", {"-c", "-5"}},
        {"sparse_attention_ratio: 1.5", {"--sparse-ratio", "1.5"}},
        {"compression_ratio: 0", {"--kv-compressed-share", "0"}},
        {"cache_strategy: mru", {"--kv-policy", "mru"}},
    };
    for (const auto & kv : keys) {  // no structured binding: INFO captures key, which clang 14 refuses
        const auto & key = kv.first;
        const auto & args = kv.second;
        run_config c;
        const std::string msg = cli_error_of(c, args);
        const std::string err = config_error("gloas:\n  ultra_kv_cache:\n    " + key + "\n");
        INFO(key << ": " << err << " vs " << msg);
        CHECK(err == "cfg.yaml:3: ultra_kv_cache." + key.substr(0, key.find(':')) + msg.substr(args[0].size()));
    }
    CHECK(config_error("gloas:\n  ultra_decoder:\n    memory_strategy: fast\n") ==
          "cfg.yaml:3: ultra_decoder.memory_strategy takes speed, balanced, aggressive or auto, got 'fast'");
    // A file's page size and type, and the C API's fields (test-capi.c runs
    // them), get kv_options_problem's message in their own names.
    CHECK(config_error("gloas:\n  ultra_kv_cache:\n    cache_dtype: q8_0\n    cache_chunk_size: 16\n") ==
          "cfg.yaml:4: ultra_kv_cache: cache_dtype: q8_0 needs cache_chunk_size to be a multiple of 32 (each page row "
          "holds one channel's tokens in blocks of 32), got cache_chunk_size: 16; use cache_chunk_size: 32 or "
          "cache_dtype: f16");
    std::string capi = page;
    for (const auto & [flag, field] : {std::pair<std::string, std::string>{"--kv-type", "kv_type"}, {"--kv-page", "kv_page_tokens"}})
        for (size_t at; (at = capi.find(flag)) != std::string::npos;) capi.replace(at, flag.size(), field);
    CHECK(kv_options_problem(type::Q8_0, 16, evict_policy::LRU, {"kv_type", "kv_page_tokens", "kv_policy", " "}) == capi);
}
